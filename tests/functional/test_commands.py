"""The README's main job and the benchmark, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.conftest import require_root, require_testbed

ROOT = Path(__file__).resolve().parents[2]


def doctor(*argv: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "doctor.cli", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s)


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


# The conservative path with 10 VMs takes 0.7-1.3 s on the bed, whose single nova-api worker
# serializes the resets: at the edge of the 1 s pass rule, so it is not a CI case yet.
@pytest.mark.parametrize("vm_count, path", [(1, "shortcut"), (10, "shortcut"),
                                           (1, "conservative")])
def test_doctor_run_passes_against_real_nova_and_aodh(vm_count, path):
    require_root()
    require_testbed()
    result = doctor("run", "--installer", "openstack", "--index", "151", "--vm-count",
                    str(vm_count), "--path", path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout[result.stdout.index("\n{") + 1:
                                      result.stdout.rindex("}") + 1])
    assert report["passed"] and report["host_status_down"] and report["notified"] == vm_count
    assert report["installer"] == "openstack"
    assert report["profile"]["T09"]["count"] == vm_count


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
