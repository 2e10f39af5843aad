"""The README's main job and the benchmark, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.conftest import require_root, require_testbed

ROOT = Path(__file__).resolve().parents[2]


def doctor(*argv: str, timeout_s: float = 300,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client.main", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s, env=env)


@pytest.mark.parametrize("vm_count, path", [(1, "shortcut"), (50, "shortcut"),
                                           (10, "conservative")])
def test_doctor_run_passes_end_to_end(vm_count, path):
    require_root()
    result = doctor("run", "--index", "150", "--vm-count", str(vm_count), "--path", path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout[result.stdout.index("\n{") + 1:
                                      result.stdout.rindex("}") + 1])
    assert report["passed"] and report["host_status_down"]
    assert report["notified"] == vm_count
    assert 0 < report["first_notification_s"] <= report["notification_time_s"] < 1.0
    profile = report["profile"]
    for checkpoint in ("T00", "T01", "T02", "T03", "T04", "T07", "T08", "T09"):
        assert checkpoint in profile, checkpoint
    assert profile["T09"]["count"] == vm_count
    assert ("T05" in profile) == (path == "shortcut")
    assert "PASS" in result.stdout.splitlines()[-1]


@pytest.mark.parametrize("vm_count, path, cloud, notifier", [
    (1, "shortcut", False, "aodh"), (10, "shortcut", False, "aodh"),
    (1, "conservative", False, "aodh"), (10, "conservative", False, "aodh"),
    (1, "shortcut", True, "aodh"), (1, "conservative", True, "aodh"),
    (10, "shortcut", False, "embedded"), (10, "conservative", False, "embedded")])
def test_doctor_run_passes_against_real_nova_and_aodh(vm_count, path, cloud, notifier):
    """cloud: the bed as clouds.yaml clouds (``--os-cloud``), as a user's cloud is given;
    with Keystone (the bed's default) the operator's and the VNFM's, by password.
    notifier embedded: Nova beside the embedded notifier, no Aodh (a cloud without
    Telemetry); on the conservative path it reads Nova's notifications itself."""
    require_root()
    require_testbed()
    argv = ["run", "--installer", "openstack", "--index", "151", "--vm-count", str(vm_count),
            "--path", path, "--notifier", notifier]
    env = None
    if cloud:
        argv += ["--os-cloud", "doctor-testbed"]
        if os.environ.get("DOCTOR_VNFM_CLOUD"):
            argv += ["--vnfm-cloud", os.environ["DOCTOR_VNFM_CLOUD"]]
        env = {**os.environ, "OS_CLIENT_CONFIG_FILE": os.environ["DOCTOR_CLOUDS_YAML"]}
    result = doctor(*argv, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout[result.stdout.index("\n{") + 1:
                                      result.stdout.rindex("}") + 1])
    assert report["passed"] and report["host_status_down"] and report["notified"] == vm_count
    assert report["installer"] == "openstack" and report["notifier"] == notifier
    # Every alarm reached the consumer; real Aodh may fire one twice: its two listener
    # processes each cache the alarms, and on the shortcut path both the Inspector's event
    # and Nova's own (through Ceilometer) match. The embedded notifier fires once (above).
    assert report["profile"]["T09"]["count"] >= vm_count
    if notifier == "embedded":  # exactly once: the embedded notifier fires an alarm once
        assert report["profile"]["T09"]["count"] == vm_count
    if cloud:  # in the cloud's own project, not one made up for the run
        assert f"in the project {os.environ['DOCTOR_PROJECT_ID']}" in result.stdout


def test_doctor_run_on_a_cloud_that_is_not_there_says_so():
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": "/nonexistent/clouds.yaml",
           "DOCTOR_TRANSPORT_URL": "rabbit://x", "DOCTOR_IMAGE_ID": "i",
           "DOCTOR_FLAVOR_ID": "f", "DOCTOR_NETWORK_ID": "n"}
    result = doctor("run", "--installer", "openstack", "--os-cloud", "nowhere", env=env)
    assert result.returncode != 0
    assert "doctor run: error: cannot load the credentials of cloud nowhere" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_detect_prints_a_table_and_json(tmp_path):
    require_root()
    out = tmp_path / "bench.json"
    result = doctor("bench", "detect", "--faults", "3", "--hosts", "2", "--cost", "200x5",
                    "--cost-seconds", "1", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| faults | undetected | p50 ms" in result.stdout
    data = json.loads(out.read_text())
    assert data["detection"]["detection_ms"]["n"] == 3
    [cost] = data["probe_cost"]
    assert cost["targets"] == 200 and cost["up"] == 200 and cost["sent"] > 0


def test_bench_rejects_a_malformed_cost_naming_it():
    result = doctor("bench", "detect", "--cost", "lots")
    assert result.returncode != 0
    assert "--cost 'lots': expected TARGETSxRATE" in result.stderr
