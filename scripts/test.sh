#!/usr/bin/env bash
# The README's test command: installs what is missing, then ruff, mypy, the unit tests, the
# functional tests on namespaced test hosts, and the tests against real OpenStack services
# (tools/testbed/openstack.sh, started here and stopped at the end). The namespace and OpenStack
# tests need root; without it they skip and say why, except with CI=true, where a skip of them
# is a failure. DOCTOR_TESTBED=0 leaves the OpenStack bed out (its tests then skip).
# Usage, as root: scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ "$(id -u)" -eq 0 ] && [ "${DOCTOR_TESTBED:-1}" != 0 ]; then
  echo "== OpenStack test bed" >&2
  tools/testbed/openstack.sh install
  if ! tools/testbed/openstack.sh status >/dev/null 2>&1; then
    # Started here, so stopped here, also when a test fails; a bed already up stays up.
    trap 'tools/testbed/openstack.sh down >/dev/null 2>&1 || true' EXIT
    tools/testbed/openstack.sh up
  fi
  eval "$(tools/testbed/openstack.sh env)"
fi
echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
.venv/bin/python -m pytest -ra tests "$@"
