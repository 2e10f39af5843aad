#!/usr/bin/env bash
# Install what the project needs on a fresh machine, idempotently:
# system tools for the namespaced test hosts, redis-server for the service list's tests,
# PostgreSQL for the VIM servers sharing a database, and a virtualenv in .venv with the project.
# Usage: scripts/setup.sh            (sourced by run.sh and test.sh; safe to run twice)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
# The benchmarks' test hosts answer on kernel threads of their own (threaded NAPI on a veth).
command -v ethtool >/dev/null || need+=(ethtool)
command -v setpriv >/dev/null || need+=(util-linux)
# The service list's Redis backend: the tests start their own redis-server on a free port.
# Without root it is left out (its tests then skip, except with CI=true).
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    need+=(redis-server)
  else
    echo "setup: redis-server missing (apt-get install redis-server); its tests will skip" >&2
  fi
fi
# doctor-vim servers sharing one database: the tests start their own PostgreSQL cluster.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    need+=(postgresql)
  else
    echo "setup: PostgreSQL missing (apt-get install postgresql); its tests will skip" >&2
  fi
fi
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat setup.py | sha1sum | cut -c1-12)
if [ ! -e "$stamp" ]; then
  echo "setup: installing the project, its test and benchmark tools into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test,bench,openstack,postgresql]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
