"""The OpenStack test bed (tools/testbed/openstack.sh) works with the real clients.

Real Keystone, Nova, Placement, Glance, Neutron, Aodh and Ceilometer on 127.0.0.1: these tests run
tools/testbed/smoke.py once and report each of its checks as a test. They need the bed up and
its environment (OS_TESTBED=1 and the DOCTOR_* URLs and ids):

    tools/testbed/openstack.sh install && tools/testbed/openstack.sh up    (as root)
    eval "$(tools/testbed/openstack.sh env)"

Without OS_TESTBED=1 they are skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.functional.conftest import require_keystone_bed, require_testbed

SMOKE = Path(__file__).resolve().parents[2] / "tools" / "testbed" / "smoke.py"
DEFAULT_PYTHON = "/opt/doctor-testbed/venvs/aodh/bin/python"


def _checks() -> list[str]:
    # smoke.py imports only the standard library at module level: its check names load here.
    spec = importlib.util.spec_from_file_location("testbed_smoke", SMOKE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.CHECKS)



@pytest.fixture(scope="module", autouse=True)
def _testbed():
    require_testbed()


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    python = os.environ.get("DOCTOR_TESTBED_PYTHON") or DEFAULT_PYTHON
    if not os.access(python, os.X_OK):
        pytest.fail(f"OS_TESTBED=1 but {python} is missing: run tools/testbed/openstack.sh install")
    out = tmp_path_factory.mktemp("testbed") / "smoke.json"
    try:
        proc = subprocess.run([python, str(SMOKE), "--json", str(out)], capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"smoke.py did not finish in 300 s:\n{exc.stdout}\n{exc.stderr}")
    print(proc.stdout)  # the timings, shown with pytest -s or on failure
    if not out.exists():
        pytest.fail(f"smoke.py wrote no results (exit {proc.returncode}):\n{proc.stdout}\n"
                    f"{proc.stderr[-4000:]}")
    return json.loads(out.read_text())["checks"]


@pytest.mark.parametrize("check", _checks())
def test_testbed(smoke_results, check):
    if check == "keystone_scope":
        require_keystone_bed()
    result = smoke_results.get(check)
    assert result is not None, f"smoke.py did not report {check}"
    assert result["ok"], f"{check}: {result['detail']}"
