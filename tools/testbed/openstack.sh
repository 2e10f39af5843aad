#!/usr/bin/env bash
# A test bed of real OpenStack services on one machine, on 127.0.0.1, without Keystone:
# RabbitMQ, a private MariaDB, Placement, Nova (api, conductor, scheduler, two fake computes),
# Glance, Neutron (API only), Aodh (api, listener, notifier) and Ceilometer's notification agent.
#
#   tools/testbed/openstack.sh install   # Debian packages + virtualenvs (idempotent, stamped)
#   tools/testbed/openstack.sh up        # configure and start everything, wait until it answers
#   eval "$(tools/testbed/openstack.sh env)"   # exports for the tests (OS_TESTBED=1, URLs, ids)
#   tools/testbed/openstack.sh status    # which services run (by PID) and answer
#   tools/testbed/openstack.sh down      # stop everything `up` started, by PID (idempotent)
#   tools/testbed/openstack.sh purge     # down, then remove the data (next `up` is cold)
#
# Run as root. Installed files go to /opt/doctor-testbed, data, logs and PIDs to
# /var/lib/doctor-testbed (override with TESTBED_PREFIX / TESTBED_DATA). Facts behind the
# choices: shared/design/OPENSTACK-TESTBED.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${TESTBED_PREFIX:-/opt/doctor-testbed}
DATA=${TESTBED_DATA:-/var/lib/doctor-testbed}
VENVS=$PREFIX/venvs
ETC=$DATA/etc
LOGS=$DATA/log
PIDS=$DATA/pids
RUN=$DATA/run
STATE=$DATA/state.env

# Pinned versions (OPENSTACK-TESTBED.md); the clients used by smoke.py share aodh's venv.
GUNICORN=gunicorn==27.0.1
UV_VERSION=uv==0.13.9
declare -A VENV_REQS=(
  [nova]="nova==34.0.0 openstack-placement==16.0.0 PyMySQL==1.2.4 $GUNICORN"
  [glance]="glance==33.0.0 $GUNICORN"
  [neutron]="neutron==29.0.0 PyMySQL==1.2.4 $GUNICORN"
  [aodh]="aodh==23.0.0 ceilometer==27.0.0 PyMySQL==1.2.4 $GUNICORN python-novaclient==18.13.1 aodhclient==3.12.0"
)
VENV_NAMES=(nova glance neutron aodh)
DEBS=(rabbitmq-server mariadb-server curl)

# Loopback ports. Aodh keeps its own port 8042 (the embedded notifier's default too: run one).
MYSQL_PORT=${TESTBED_MYSQL_PORT:-13306}
RABBIT_PORT=5672
PLACEMENT_PORT=8778
NOVA_PORT=8774
GLANCE_PORT=9292
NEUTRON_PORT=9696
AODH_PORT=${TESTBED_AODH_PORT:-8042}
VHOST=doctor-testbed
TRANSPORT_URL="rabbit://guest:guest@127.0.0.1:$RABBIT_PORT/$VHOST"
DB_USER=doctor
DB_PASS=doctor-testbed
DB="mysql+pymysql://$DB_USER:$DB_PASS@127.0.0.1:$MYSQL_PORT"
NOTIFICATION_TTL_MS=${TESTBED_NOTIFICATION_TTL_MS:-30000}
COMPUTES=(compute1 compute2)
# The identity every request of the bed carries (no Keystone: Nova's keystonecontext and Aodh's
# noauth take it from the headers). Fixed, so `env` needs no service to answer.
PROJECT_ID=${TESTBED_PROJECT_ID:-7e57bed0000000000000000000000001}
USER_ID=${TESTBED_USER_ID:-7e57bed0000000000000000000000002}
FLAVOR_NAME=doctor.tiny
IMAGE_NAME=doctor-tiny
NETWORK_NAME=doctor-net

log() { printf '%s testbed: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and owns $DATA)"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# install

install_debs() {
  local missing=() p
  for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "debian packages present"
    return 0
  fi
  log "apt-get install ${missing[*]}"
  # Never let the packages start their own daemons: `up` starts private instances.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy && made_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends "${missing[@]}"
  } >"$PREFIX/apt.log" 2>&1 || rc=$?
  ((made_policy)) && rm -f $policy
  if ((rc)); then
    tail -n 30 "$PREFIX/apt.log" >&2
    die "apt-get failed (full log: $PREFIX/apt.log)"
  fi
}

install_uv() { # uv installs the venvs ~8x faster than pip (12 s instead of 105 s here)
  local python
  python=$(python3 -c 'import sys; print(sys.executable)')
  [ -x "$PREFIX/uv/bin/uv" ] && [ "$("$PREFIX/uv/bin/uv" --version)" = "uv ${UV_VERSION#uv==}" ] && return 0
  rm -rf "$PREFIX/uv"
  "$python" -m venv "$PREFIX/uv"
  "$PREFIX/uv/bin/python" -m pip install -q --no-input "$UV_VERSION"
}

install_venv() { # name
  local name=$1 venv=$VENVS/$1 reqs=${VENV_REQS[$1]} python stamp_want
  python=$(python3 -c 'import sys; print(sys.executable)')
  stamp_want="$($python --version 2>&1) $reqs"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.testbed-installed" 2>/dev/null)" = "$stamp_want" ]; then
    log "venv $name present"
    return 0
  fi
  rm -rf "$venv"
  "$PREFIX/uv/bin/uv" venv -q --python "$python" "$venv"
  # shellcheck disable=SC2086
  "$PREFIX/uv/bin/uv" pip install -q --python "$venv/bin/python" $reqs
  printf '%s' "$stamp_want" >"$venv/.testbed-installed"
  log "venv $name installed"
}

cmd_install() {
  need_root
  command -v python3 >/dev/null || die "python3 is missing"
  mkdir -p "$VENVS"
  local t0 name pids=() failed=()
  t0=$(now)
  # The venvs (mostly downloads) and apt run side by side.
  install_debs >"$PREFIX/install-debs.log" 2>&1 &
  pids+=("$!:debs")
  install_uv >"$PREFIX/install-uv.log" 2>&1 || { cat "$PREFIX/install-uv.log" >&2; die "could not install $UV_VERSION"; }
  for name in "${VENV_NAMES[@]}"; do
    install_venv "$name" >"$PREFIX/install-$name.log" 2>&1 &
    pids+=("$!:$name")
  done
  local item
  for item in "${pids[@]}"; do
    if ! wait "${item%%:*}"; then
      failed+=("${item#*:}")
      log "install of ${item#*:} failed; its log ($PREFIX/install-${item#*:}.log) ends:"
      tail -n 25 "$PREFIX/install-${item#*:}.log" >&2
    fi
  done
  ((${#failed[@]} == 0)) || die "install failed: ${failed[*]}"
  cat "$PREFIX"/install-*.log | grep 'testbed:' >&2 || true
  log "install done in $(since "$t0") s"
}

case "${1:-}" in
  install) cmd_install ;;
  *) echo "usage: $0 install|up|env|status|down|purge" >&2; exit 2 ;;
esac
