#!/usr/bin/env bash
# The README's test command: installs what is missing, then ruff, the unit tests and the
# functional tests on namespaced test hosts (those need root; without it they skip and say why,
# except with CI=true, where a skip of them is a failure).
# Usage: sudo scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== ruff" >&2
.venv/bin/ruff check .
echo "== pytest" >&2
.venv/bin/python -m pytest -ra tests "$@"
