#!/usr/bin/env bash
# The functest case, on the embedded default (no OpenStack): installs what is missing, creates
# test hosts as network namespaces, starts the parts, cuts a host's link, and reports the
# notification time with the per-step profile. Exit status 0 = pass.
# Usage, as root: scripts/run.sh [--vm-count N] [--index I]   (doctor run --help: all options)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "run.sh: needs root (network namespaces and raw ICMP sockets); run it as root" >&2
  exit 2
fi
scripts/setup.sh
exec .venv/bin/doctor --log-level WARNING run "$@"
