#!/usr/bin/env bash
# A test bed of real OpenStack services on one machine, on 127.0.0.1: Keystone, RabbitMQ, a
# private MariaDB, Placement, Nova (api, conductor, scheduler, two fake computes), Glance,
# Neutron (API only), Aodh (api, listener, notifier) and Ceilometer's notification agent.
# TESTBED_AUTH=keystone (the default): every API behind keystonemiddleware's auth_token, users
# and projects in Keystone; TESTBED_AUTH=noauth: no Keystone, identity in headers (faster).
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
# choices: tools/testbed/README.md, 'Why it is built this way'.
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

# Pinned versions (why: tools/testbed/README.md, 'Why it is built this way'); the clients used
# by smoke.py share aodh's venv.
GUNICORN=gunicorn==27.0.1
# auth_token's shared token cache (memcached): one validation per token for all workers.
MEMCACHE=python-memcached==1.62
UV_VERSION=uv==0.13.9
declare -A VENV_REQS=(
  [nova]="nova==34.0.0 openstack-placement==16.0.0 PyMySQL==1.2.4 $GUNICORN $MEMCACHE"
  [glance]="glance==33.0.0 $GUNICORN $MEMCACHE"
  [neutron]="neutron==29.0.0 PyMySQL==1.2.4 $GUNICORN $MEMCACHE"
  [keystone]="keystone==30.0.0 PyMySQL==1.2.4 $GUNICORN"
  [aodh]="aodh==23.0.0 ceilometer==27.0.0 PyMySQL==1.2.4 $GUNICORN $MEMCACHE python-novaclient==18.13.1 aodhclient==3.12.0"
)
VENV_NAMES=(keystone nova glance neutron aodh)
declare -A WARM_IMPORTS=(
  [keystone]="keystone.server.wsgi keystone.server.flask.application keystone.cmd.cli
    keystone.api keystone.token.providers.fernet.core keystone.identity.backends.sql
    keystone.assignment.backends.sql keystone.resource.backends.sql keystone.catalog.backends.sql
    gunicorn.app.wsgiapp gunicorn.workers.gthread pymysql"
  [nova]="nova.cmd.conductor nova.cmd.scheduler nova.cmd.compute nova.virt.fake
    nova.api.openstack.compute.routes nova.api.openstack.wsgi_app nova.conductor.manager
    nova.scheduler.manager nova.compute.manager placement.wsgi placement.handler
    placement.cmd.manage placement.db.sqlalchemy.migration gunicorn.app.wsgiapp
    gunicorn.workers.gthread pymysql | nova.cmd.manage"
  [glance]="glance.common.wsgi_app glance.api.v2.router glance.cmd.manage glance.db.sqlalchemy.api
    glance_store._drivers.filesystem gunicorn.app.wsgiapp gunicorn.workers.gthread"
  [neutron]="neutron.server.api neutron.plugins.ml2.plugin neutron.db.migration.cli
    neutron.api.v2.router neutron.pecan_wsgi.app neutron.services.l3_router.l3_router_plugin
    gunicorn.app.wsgiapp gunicorn.workers.gthread pymysql"
  [aodh]="aodh.api.app aodh.api.controllers.v2.root aodh.cmd.alarm aodh.cmd.storage aodh.event
    aodh.notifier.rest aodh.storage.impl_sqlalchemy ceilometer.cmd.agent_notification
    ceilometer.notification ceilometer.event.converter ceilometer.publisher.messaging
    ceilometer.pipeline.event novaclient.client novaclient.v2.client aodhclient.v2.client
    oslo_messaging gunicorn.app.wsgiapp gunicorn.workers.gthread pymysql"
)
DEBS=(rabbitmq-server mariadb-server memcached curl)

# keystone (the default): Keystone, Fernet tokens of TOKEN_EXPIRATION s, every API behind
# auth_token; noauth: no Keystone (tools/testbed/README.md, 'Without Keystone').
# Unless told, the mode the data directory was made in (`up` refuses to switch: purge first).
AUTH=${TESTBED_AUTH:-$(cat "$DATA/.auth-mode" 2>/dev/null || echo keystone)}
KEYSTONE_PORT=5000
KEYSTONE_URL=http://127.0.0.1:$KEYSTONE_PORT
MEMCACHED_PORT=${TESTBED_MEMCACHED_PORT:-11311}
TOKEN_EXPIRATION=${TESTBED_TOKEN_EXPIRATION:-240}
# The bed's generated passwords (admin, doctor, vnfm, other, the service users), 0600.
PASSWORDS=$DATA/passwords.env

# Loopback ports. Aodh keeps its own port 8042 (the embedded notifier's default too: run one).
MYSQL_PORT=${TESTBED_MYSQL_PORT:-13306}
RABBIT_PORT=5672
PLACEMENT_PORT=8778
NOVA_PORT=8774
# nova-api's gunicorn workers: with one, parallel reset-state calls queue behind each other and
# heavy benchmark load made it reset connections; two use both cores of the reference machine.
NOVA_API_WORKERS=${TESTBED_NOVA_API_WORKERS:-2}
GLANCE_PORT=9292
NEUTRON_PORT=9696
AODH_PORT=${TESTBED_AODH_PORT:-8042}
AODH_EVENT_CACHE_TTL=${TESTBED_AODH_EVENT_CACHE_TTL:-2}
AODH_LISTENER_WORKERS=${TESTBED_AODH_LISTENER_WORKERS:-2}
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

# Bytecode: the install writes that of the modules the services import (compiling every file
# would cost ~50 s more, most are never imported); the services write the rest on first import,
# which an inherited PYTHONDONTWRITEBYTECODE would turn into a compile at every start.
unset PYTHONDONTWRITEBYTECODE

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
  [ "$name" = neutron ] && stamp_want+=" bind-any $(cat "$HERE"/neutron_bind_any/*.py "$HERE"/neutron_bind_any/pyproject.toml | sha1sum | cut -c1-12)"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.testbed-installed" 2>/dev/null)" = "$stamp_want" ]; then
    log "venv $name present"
    return 0
  fi
  rm -rf "$venv"
  "$PREFIX/uv/bin/uv" venv -q --python "$python" "$venv"
  # shellcheck disable=SC2086
  "$PREFIX/uv/bin/uv" pip install -q --python "$venv/bin/python" $reqs
  if [ "$name" = neutron ]; then # the ML2 driver that binds ports without agents (built in a copy:
    local src                   # a build leaves build/ and *.egg-info beside its sources)
    src=$(mktemp -d)
    cp -r "$HERE/neutron_bind_any" "$src/"
    "$PREFIX/uv/bin/uv" pip install -q --python "$venv/bin/python" "$src/neutron_bind_any"
    rm -rf "$src"
  fi
  # Write the bytecode of what the services import (a fraction of all files) while apt runs,
  # so a cold `up` does not compile it on two busy cores. A failed import only costs time later.
  # One process per "|"-separated group (nova-manage uses eventlet, the services must not).
  local group
  while IFS= read -r -d '|' group; do
    # shellcheck disable=SC2086
    "$venv/bin/python" -W ignore -c "import importlib, sys
for m in sys.argv[1:]:
    try:
        importlib.import_module(m)
    except Exception as exc:
        print('testbed: warm import of', m, 'failed:', exc)" $group || true
  done <<<"${WARM_IMPORTS[$name]}|"
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


check_installed() {
  local name
  for name in "${VENV_NAMES[@]}"; do
    [ -e "$VENVS/$name/.testbed-installed" ] || die "venv $name is missing: run '$0 install' first"
  done
  command -v mariadbd >/dev/null && command -v rabbitmq-server >/dev/null &&
    command -v memcached >/dev/null ||
    die "rabbitmq-server, mariadb-server or memcached is missing: run '$0 install' first"
}

# ---------------------------------------------------------------------------------------------
# processes: one PID file per service, "PID MODE STARTTIME". MODE group: the service leads its
# own process group (started with setsid) and the whole group is signalled; pid: that PID only.
# STARTTIME (from /proc) guards against a reused PID.

starttime() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; }

pid_of() { # name -> prints the PID if that process still runs
  local f=$PIDS/$1.pid pid mode st
  [ -r "$f" ] || return 1
  read -r pid mode st <"$f" || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && [ "$(starttime "$pid")" = "$st" ] || return 1
  echo "$pid"
}

record_pid() { # name pid mode
  echo "$2 $3 $(starttime "$2")" >"$PIDS/$1.pid"
}

start_service() { # name env-assignments... -- command...
  local name=$1 pid
  shift
  if pid=$(pid_of "$name"); then
    log "$name already runs (pid $pid)"
    return 0
  fi
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  printf '\n==== %s start: %s\n' "$(date -Is)" "$*" >>"$LOGS/$name.log"
  local nice=()
  [[ " ${NICED[*]} " == *" $name "* ]] && nice=(nice -n 10)
  # From a neutral directory (gunicorn puts its cwd on sys.path: the repository's own top-level
  # packages must not shadow anything), exec'd, and setsid does not fork (this shell leads no
  # process group): $! is the service itself, leader of its own process group.
  (cd "$RUN" && exec env "${envs[@]}" setsid "${nice[@]}" "$@") >>"$LOGS/$name.log" 2>&1 </dev/null &
  pid=$!
  record_pid "$name" "$pid" group
}

service_failed() { # name reason
  log "$1: $2; the end of $LOGS/$1.log:"
  tail -n 40 "$LOGS/$1.log" 2>/dev/null | sed 's/^/    /' >&2
  die "$1 did not come up (other logs: $LOGS/; '$0 down' stops what did)"
}

wait_http() { # name url timeout-s [extra curl args...]: bounded; any HTTP answer < 500 counts
  local name=$1 url=$2 timeout=$3 code deadline
  shift 3
  deadline=$(($(date +%s) + timeout))
  while :; do
    code=$(curl -m 3 -s -o /dev/null -w '%{http_code}' "$@" "$url" 2>/dev/null) || code=000
    case $code in [1-4]??) return 0 ;; esac
    pid_of "$name" >/dev/null || service_failed "$name" "its process exited"
    (($(date +%s) < deadline)) || service_failed "$name" "$url did not answer in ${timeout}s (last: HTTP $code)"
    sleep 0.3
  done
}

# ---------------------------------------------------------------------------------------------
# MariaDB and RabbitMQ

MYSQL_SOCK=$RUN/mysqld.sock
mysql_root() { timeout 30 mariadb --no-defaults --protocol=socket --socket="$MYSQL_SOCK" -uroot "$@"; }

start_mariadb() {
  if pid_of mariadb >/dev/null; then return 0; fi
  if [ ! -d "$DATA/mysql/mysql" ]; then
    log "initialising MariaDB in $DATA/mysql"
    rm -rf "$DATA/mysql"
    mariadb-install-db --no-defaults --user=root --datadir="$DATA/mysql" \
      --auth-root-authentication-method=socket --skip-test-db >"$LOGS/mariadb-install.log" 2>&1 ||
      { tail -n 20 "$LOGS/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  start_service mariadb -- mariadbd --no-defaults --user=root --datadir="$DATA/mysql" \
    --socket="$MYSQL_SOCK" --port="$MYSQL_PORT" --bind-address=127.0.0.1 \
    --pid-file="$RUN/mysqld.pid" --log-error="$LOGS/mariadb.log" --skip-name-resolve \
    --max-connections=2000 --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=0 \
    --innodb-doublewrite=0 --innodb-flush-method=nosync --skip-sync-frm --skip-log-bin \
    --performance-schema=OFF \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
}

wait_mariadb() {
  local deadline=$(($(date +%s) + 60))
  until timeout 5 mariadb-admin --no-defaults --socket="$MYSQL_SOCK" -uroot ping >/dev/null 2>&1; do
    pid_of mariadb >/dev/null || service_failed mariadb "mariadbd exited"
    (($(date +%s) < deadline)) || service_failed mariadb "no answer on $MYSQL_SOCK in 60s"
    sleep 0.2
  done
  local db sql=""
  for db in keystone nova_api nova_cell0 nova placement neutron aodh; do
    sql+="CREATE DATABASE IF NOT EXISTS $db;"
  done
  sql+="CREATE USER IF NOT EXISTS '$DB_USER'@'%' IDENTIFIED BY '$DB_PASS';"
  sql+="GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'%';"
  mysql_root -e "$sql"
}

RABBIT_PIDFILE=/var/lib/rabbitmq/mnesia/rabbit@$(hostname -s).pid
rabbit_running() { # a broker runs already (ours or not)
  local pid
  pid=$(cat "$RABBIT_PIDFILE" 2>/dev/null) && [ -n "$pid" ] && [ -d "/proc/$pid" ] &&
    grep -q beam "/proc/$pid/cmdline" 2>/dev/null
}

start_rabbitmq() { # start the broker unless one runs; then the bed's vhost, permissions, policy
  local epmd_before pid
  if pid_of rabbitmq >/dev/null || rabbit_running; then
    pid_of rabbitmq >/dev/null || log "RabbitMQ already runs (not started by the bed: down leaves it)"
  else
    epmd_before=$(pgrep -x epmd || true)
    rm -f "$RABBIT_PIDFILE"
    printf '\n==== %s start\n' "$(date -Is)" >>"$LOGS/rabbitmq.log"
    timeout 60 rabbitmq-server -detached >>"$LOGS/rabbitmq.log" 2>&1 ||
      service_failed rabbitmq "rabbitmq-server -detached failed"
    timeout 90 rabbitmqctl -q wait --timeout 60 "$RABBIT_PIDFILE" >>"$LOGS/rabbitmq.log" 2>&1 ||
      { tail -n 20 /var/log/rabbitmq/*.log >>"$LOGS/rabbitmq.log" 2>/dev/null;
        service_failed rabbitmq "not running after 60s (also see /var/log/rabbitmq/)"; }
    pid=$(cat "$RABBIT_PIDFILE")
    record_pid rabbitmq "$pid" pid
    if [ -z "$epmd_before" ] && pid=$(pgrep -x epmd); then record_pid epmd "$pid" pid; fi
  fi
  log "broker runs"
  # Each rabbitmqctl call boots an Erlang VM (~1 s): one look first, the set-up only if needed.
  local policy="{\"max-length\":100000,\"message-ttl\":$NOTIFICATION_TTL_MS}"
  # The inspectors' own queues (one per inspector: its listener pool) are also dropped after
  # 10 min without a consumer, so the bed does not collect those of every test run.
  local pools="{\"expires\":600000,\"max-length\":100000,\"message-ttl\":$NOTIFICATION_TTL_MS}"
  if timeout 30 rabbitmqctl -q list_policies -p "$VHOST" 2>/dev/null | grep -qF "$pools"; then
    return 0
  fi
  timeout 30 rabbitmqctl -q list_vhosts 2>/dev/null | grep -qx "$VHOST" ||
    timeout 30 rabbitmqctl -q add_vhost "$VHOST" >>"$LOGS/rabbitmq.log" 2>&1
  timeout 30 rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >>"$LOGS/rabbitmq.log" 2>&1
  # Nothing reads versioned notifications unless a test does: bound every notification queue.
  timeout 30 rabbitmqctl -q set_policy -p "$VHOST" --apply-to queues doctor-testbed-notifications \
    '^(versioned_)?notifications\.' "$policy" >>"$LOGS/rabbitmq.log" 2>&1 ||
    service_failed rabbitmq "could not set up vhost $VHOST"
  timeout 30 rabbitmqctl -q set_policy -p "$VHOST" --apply-to queues doctor-testbed-inspectors \
    '^doctor-inspector' "$pools" >>"$LOGS/rabbitmq.log" 2>&1 ||
    service_failed rabbitmq "could not set up vhost $VHOST"
  log "vhost $VHOST set up"
}

# ---------------------------------------------------------------------------------------------
# configuration files

ensure_passwords() { # once per data directory; `purge` removes them with the users
  [ -s "$PASSWORDS" ] && return 0
  local name
  (umask 077
   for name in ADMIN DOCTOR VNFM OTHER SERVICE; do
     printf '%s_PASSWORD=%s\n' "$name" "$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
   done >"$PASSWORDS.tmp")
  mv "$PASSWORDS.tmp" "$PASSWORDS"
}

authtoken() { # service-user: a service's [keystone_authtoken] section (keystone mode)
  cat <<EOF
[keystone_authtoken]
www_authenticate_uri = $KEYSTONE_URL
auth_url = $KEYSTONE_URL
auth_type = password
username = $1
password = $SERVICE_PASSWORD
project_name = service
user_domain_name = Default
project_domain_name = Default
http_request_max_retries = 1
http_connect_timeout = 10
# Validated tokens, shared by the service's workers (as a deployment does it): without it each
# worker validates each new token itself, and ten parallel calls with a fresh token cost ~1 s.
memcached_servers = 127.0.0.1:$MEMCACHED_PORT
EOF
}

service_auth() { # service-user: password auth of a service's client of another service
  cat <<EOF
auth_type = password
auth_url = $KEYSTONE_URL
username = $1
password = $SERVICE_PASSWORD
project_name = service
user_domain_name = Default
project_domain_name = Default
EOF
}

write_configs() {
  mkdir -p "$ETC"/{keystone,nova,placement,glance,neutron,aodh,ceilometer}
  chmod 700 "$ETC" # service passwords inside
  local nova_paste=$VENVS/nova/etc/nova/api-paste.ini

  cat >"$ETC/keystone/keystone.conf" <<EOF
[database]
connection = $DB/keystone?charset=utf8

[token]
provider = fernet
# Short, so that tokens expire during the tests.
expiration = $TOKEN_EXPIRATION

[fernet_tokens]
key_repository = $DATA/keystone/fernet-keys

[fernet_receipts]
key_repository = $DATA/keystone/fernet-keys

[credential]
key_repository = $DATA/keystone/credential-keys
EOF

  if [ "$AUTH" = keystone ]; then
    # Nova's own paste file: authtoken validates every token with Keystone.
    cp "$nova_paste" "$ETC/nova/api-paste.ini"
  else
    # No authtoken filter: keystonecontext builds the context from X-User-Id, X-Project-Id,
    # X-Roles. A token header must still come along: Nova forwards it to Glance and Neutron.
    sed -e 's/ authtoken keystonecontext / keystonecontext /' "$nova_paste" >"$ETC/nova/api-paste.ini"
    if grep -E '^keystone = .*authtoken' "$ETC/nova/api-paste.ini" >/dev/null; then
      die "could not remove authtoken from $nova_paste"
    fi
  fi
  # What differs between the modes, per service.
  local nova_auth placement_auth glance_auth neutron_auth neutron_authtoken aodh_auth
  if [ "$AUTH" = keystone ]; then
    nova_auth="$(authtoken nova)

[placement]
$(service_auth nova)
region_name = RegionOne
valid_interfaces = internal,public

[glance]
valid_interfaces = internal,public

[neutron]
$(service_auth nova)
region_name = RegionOne
valid_interfaces = internal,public

[service_user]
send_service_user_token = False"
    placement_auth="[api]
auth_strategy = keystone

$(authtoken placement)"
    glance_auth="[paste_deploy]
flavor = keystone
config_file = $ETC/glance/glance-api-paste.ini

$(authtoken glance)"
    neutron_auth="auth_strategy = keystone"
    neutron_authtoken="$(authtoken neutron)"
    # Aodh's middlewares load their settings by project name (/etc/aodh/aodh.conf): a copy of
    # its paste file that names the bed's file.
    sed -e "s|^oslo_config_project = aodh\$|&\noslo_config_file = $ETC/aodh/aodh.conf|" \
      "$VENVS"/aodh/lib/python3*/site-packages/aodh/api/api-paste.ini >"$ETC/aodh/api-paste.ini"
    aodh_auth="[api]
auth_mode = keystone
paste_config = $ETC/aodh/api-paste.ini

$(authtoken aodh)

[service_credentials]
$(service_auth aodh)
region_name = RegionOne
interface = internal"
  else
    nova_auth="[placement]
auth_type = admin_token
token = admin
endpoint_override = http://127.0.0.1:$PLACEMENT_PORT

[glance]
endpoint_override = http://127.0.0.1:$GLANCE_PORT

[neutron]
auth_type = none
endpoint_override = http://127.0.0.1:$NEUTRON_PORT"
    placement_auth="[api]
auth_strategy = noauth2"
    glance_auth="[paste_deploy]
config_file = $ETC/glance/glance-api-paste.ini"
    neutron_auth="auth_strategy = noauth"
    neutron_authtoken=""
    aodh_auth="[api]
auth_mode = noauth

[service_credentials]
auth_type = none"
  fi
  cat >"$ETC/nova/nova.conf" <<EOF
# The test bed's Nova (written by tools/testbed/openstack.sh up). No database settings here:
# the computes read this file; api, conductor, scheduler and nova-manage add nova-db.conf.
[DEFAULT]
transport_url = $TRANSPORT_URL
state_path = $DATA/nova
my_ip = 127.0.0.1
compute_driver = fake.FakeDriverWithoutFakeNodes
graceful_shutdown_timeout = 5
heal_instance_info_cache_interval = -1
# The computes share the API's 2 cores here, unlike on a real cloud: their resource audit
# (a placement round trip per server, every 60 s by default) would land in some measured
# failures and steal the API's CPU. Every 10 min is enough for a bed whose inventory is static.
update_resources_interval = 600
vif_plugging_is_fatal = False
vif_plugging_timeout = 0

[api]
auth_strategy = keystone

[wsgi]
api_paste_config = $ETC/nova/api-paste.ini

[conductor]
workers = 1

[scheduler]
workers = 1
discover_hosts_in_cells_interval = -1

[quota]
driver = nova.quota.NoopQuotaDriver

$nova_auth

[notifications]
# Nova's default: only the legacy notifications, which Ceilometer and the Inspector read.
# 'both' would build a versioned payload per change that nothing consumes.
notification_format = unversioned
notify_on_state_change = vm_and_task_state

[oslo_messaging_notifications]
driver = messagingv2

[oslo_concurrency]
lock_path = \$state_path/lock

[vnc]
enabled = False
EOF
  cat >"$ETC/nova/nova-db.conf" <<EOF
[api_database]
connection = $DB/nova_api?charset=utf8

[database]
connection = $DB/nova?charset=utf8
EOF
  local c
  for c in "${COMPUTES[@]}"; do
    cat >"$ETC/nova/$c.conf" <<EOF
[DEFAULT]
host = $c
state_path = $DATA/nova/$c
EOF
    mkdir -p "$DATA/nova/$c"
  done

  cat >"$ETC/placement/placement.conf" <<EOF
$placement_auth

[placement_database]
connection = $DB/placement?charset=utf8
EOF

  cp "$VENVS/glance/etc/glance/glance-api-paste.ini" "$ETC/glance/glance-api-paste.ini"
  cat >"$ETC/glance/glance-api.conf" <<EOF
[DEFAULT]
enabled_backends = fs:file

[database]
connection = sqlite:///$DATA/glance/glance.sqlite

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = $DATA/glance/images/

[os_glance_staging_store]
filesystem_store_datadir = $DATA/glance/staging/

[os_glance_tasks_store]
filesystem_store_datadir = $DATA/glance/tasks/

$glance_auth

[oslo_policy]
enforce_new_defaults = False
enforce_scope = False

[oslo_concurrency]
lock_path = $DATA/glance/lock
EOF
  mkdir -p "$DATA"/glance/{images,staging,tasks,lock}

  cp "$VENVS/neutron/etc/neutron/api-paste.ini" "$ETC/neutron/api-paste.ini"
  cat >"$ETC/neutron/neutron.conf" <<EOF
# API only: no agents, no RPC workers, no notifications to Nova.
[DEFAULT]
core_plugin = ml2
service_plugins = router
$neutron_auth
transport_url = $TRANSPORT_URL
state_path = $DATA/neutron
api_paste_config = $ETC/neutron/api-paste.ini
api_workers = 1
rpc_workers = 0
rpc_state_report_workers = 0
notify_nova_on_port_status_changes = False
notify_nova_on_port_data_changes = False

[database]
connection = $DB/neutron?charset=utf8

[oslo_concurrency]
lock_path = $DATA/neutron/lock

[oslo_policy]
enforce_new_defaults = False
enforce_scope = False

$neutron_authtoken
EOF
  cat >"$ETC/neutron/ml2_conf.ini" <<EOF
[ml2]
type_drivers = flat
tenant_network_types =
# No agents, so no real driver would bind a port (Nova: "Binding failed"): bind them all.
mechanism_drivers = doctor_bind_any
extension_drivers = port_security

[ml2_type_flat]
flat_networks = physnet1
EOF
  mkdir -p "$DATA/neutron/lock"

  cat >"$ETC/aodh/aodh.conf" <<EOF
[DEFAULT]
transport_url = $TRANSPORT_URL
# The listener caches a project's event alarms for this long (Aodh's default is 60 s; 0 reloads
# them from the database for every event, about 50 ms each here, which serialised a 50-VM
# failure into seconds). An alarm created or re-armed within the TTL of the project's last
# load is not seen yet: \`env\` exports the TTL so the scenario and the benchmark can wait it out.
event_alarm_cache_ttl = $AODH_EVENT_CACHE_TTL
# One INFO line per alarm per event that does not match it (O(events x alarms)) is not wanted.
default_log_levels = aodh.evaluator.event=WARN,oslo_db.sqlalchemy.utils=ERROR,amqp=WARN,amqplib=WARN,sqlalchemy=WARN,oslo.messaging=INFO,urllib3.connectionpool=WARN,stevedore=WARN,keystonemiddleware=WARN

$aodh_auth

[database]
connection = $DB/aodh?charset=utf8

[listener]
event_alarm_topic = alarm.all
# Each fired alarm costs the listener about 25 ms (database update, history, notify) on a loaded
# machine; two processes share the queue.
workers = $AODH_LISTENER_WORKERS
batch_size = 1

[notifier]
workers = 1
batch_size = 1
EOF

  cat >"$ETC/ceilometer/ceilometer.conf" <<EOF
# Notification agent only, event pipeline only: Nova's compute.instance.* -> Aodh's alarm.all.
[DEFAULT]
transport_url = $TRANSPORT_URL
event_pipeline_cfg_file = $ETC/ceilometer/event_pipeline.yaml

[notification]
pipelines = event
notification_control_exchanges = nova
batch_size = 1
workers = 1

[oslo_messaging_notifications]
topics = notifications

[event]
definitions_cfg_file = $ETC/ceilometer/event_definitions.yaml
drop_unmatched_notifications = True

[publisher_notifier]
telemetry_driver = messagingv2

[service_credentials]
auth_type = none
EOF
  cat >"$ETC/ceilometer/event_pipeline.yaml" <<'EOF'
---
sources:
  - name: doctor_instance_events
    events:
      - "compute.instance.*"
    sinks:
      - aodh
sinks:
  - name: aodh
    publishers:
      - notifier://?topic=alarm.all
EOF
  cat >"$ETC/ceilometer/event_definitions.yaml" <<'EOF'
---
# The traits Aodh's event alarms need (instance_id, state) and match the project with.
- event_type: compute.instance.*
  traits:
    instance_id:
      fields: payload.instance_id
    state:
      fields: payload.state
    host:
      fields: payload.host
    project_id:
      fields: payload.tenant_id
    tenant_id:
      fields: payload.tenant_id
    user_id:
      fields: payload.user_id
EOF
}

# ---------------------------------------------------------------------------------------------
# the OpenStack services. One chain per component runs in the background: its schema sync (only
# when the stamp with the installed versions differs, i.e. on a cold start), then its services.
# The APIs connect to the bus lazily; the services that consume from it at start wait for
# RabbitMQ's vhost first. While `up` runs, what is off its critical path (nova's schemas ->
# RabbitMQ -> nova-conductor -> computes -> discover_hosts) runs niced, so that path gets the
# two cores first; `up` sets the services back to normal priority when everything answers.
NICED=(nova-api nova-scheduler glance-api neutron-api aodh-api aodh-listener aodh-notifier
       ceilometer-notification)
NICED_SYNCS=(glance neutron aodh)

dbsync_stamp_want() { cat "$VENVS"/*/.testbed-installed; }

gunicorn_args() { # port [workers]: one worker unless told, a few threads, loopback only
  echo --no-control-socket --workers "${2:-1}" --threads 8 --bind "127.0.0.1:$1" --timeout 120 \
    --graceful-timeout 3 --pythonpath "$HERE/wsgi"
}

API_SERVICES=(keystone-api placement-api nova-api glance-api neutron-api aodh-api)
WORKER_SERVICES=(nova-conductor nova-scheduler aodh-listener aodh-notifier ceilometer-notification)
ALL_SERVICES=("${API_SERVICES[@]}" "${WORKER_SERVICES[@]}")
for c in "${COMPUTES[@]}"; do ALL_SERVICES+=("nova-compute-$c"); done

wait_rabbit_ready() { # bounded: the chain exits 20 if the broker is not ready in time
  local deadline=$(($(date +%s) + 150))
  until [ -e "$RUN/rabbit.ready" ]; do
    [ ! -e "$RUN/rabbit.failed" ] && (($(date +%s) < deadline)) || exit 20
    sleep 0.2
  done
}

synced() { # component command...: the schema sync, logged; the chain exits 10 if it fails
  local comp=$1
  shift
  ((SYNC)) || return 0
  local nice=()
  [[ " ${NICED_SYNCS[*]} " == *" $comp "* ]] && nice=(nice -n 10)
  "${nice[@]}" "$@" >"$LOGS/dbsync-$comp.log" 2>&1 || exit 10
}

chain_keystone() { # keystone mode only: schema, keys, bootstrap (idempotent), then the API
  # However this chain ends without the identity set up, the chains waiting for it stop waiting.
  trap '[ -e "$RUN/identity.ready" ] || touch "$RUN/identity.failed"' EXIT
  ((SYNC)) || wait_rabbit_ready # warm: let the broker boot alone first (it is the slow one)
  local KC=(--config-file "$ETC/keystone/keystone.conf")
  synced keystone "$VENVS/keystone/bin/keystone-manage" "${KC[@]}" db_sync
  mkdir -p "$DATA/keystone"
  if [ ! -e "$DATA/keystone/fernet-keys/0" ]; then
    "$VENVS/keystone/bin/keystone-manage" "${KC[@]}" fernet_setup --keystone-user root \
      --keystone-group root >>"$LOGS/dbsync-keystone.log" 2>&1 || exit 10
    "$VENVS/keystone/bin/keystone-manage" "${KC[@]}" credential_setup --keystone-user root \
      --keystone-group root >>"$LOGS/dbsync-keystone.log" 2>&1 || exit 10
  fi
  if [ ! -e "$DATA/.keystone-bootstrapped" ]; then
    # The admin password from the environment, never the command line.
    OS_BOOTSTRAP_PASSWORD=$ADMIN_PASSWORD "$VENVS/keystone/bin/keystone-manage" "${KC[@]}" \
      bootstrap --bootstrap-username admin --bootstrap-project-name admin \
      --bootstrap-role-name admin --bootstrap-region-id RegionOne \
      --bootstrap-admin-url "$KEYSTONE_URL/v3" --bootstrap-internal-url "$KEYSTONE_URL/v3" \
      --bootstrap-public-url "$KEYSTONE_URL/v3" >>"$LOGS/dbsync-keystone.log" 2>&1 || exit 10
    touch "$DATA/.keystone-bootstrapped"
  fi
  # shellcheck disable=SC2046
  start_service keystone-api OS_KEYSTONE_CONFIG_DIR="$ETC/keystone" -- \
    "$VENVS/keystone/bin/gunicorn" $(gunicorn_args $KEYSTONE_PORT) keystone_api:application
  wait_http keystone-api "$KEYSTONE_URL/v3" 90
  # Projects, users (the services' too: they authenticate at start), roles, the catalog.
  provision identity >"$DATA/identity.env.tmp" 2>>"$LOGS/provision.log" || exit 30
  mv "$DATA/identity.env.tmp" "$DATA/identity.env"
  touch "$RUN/identity.ready"
}

wait_identity_ready() { # keystone mode: the services' users exist; the chain exits 30 if not
  [ "$AUTH" = keystone ] || return 0
  local deadline=$(($(date +%s) + 150))
  until [ -e "$RUN/identity.ready" ]; do
    [ ! -e "$RUN/identity.failed" ] && (($(date +%s) < deadline)) || exit 30
    sleep 0.2
  done
}

chain_placement() {
  ((SYNC)) || wait_rabbit_ready # warm: let the broker boot alone first (it is the slow one)
  synced placement "$VENVS/nova/bin/placement-manage" \
    --config-file "$ETC/placement/placement.conf" db sync
  # shellcheck disable=SC2046
  start_service placement-api OS_PLACEMENT_CONFIG_DIR="$ETC/placement" -- \
    "$VENVS/nova/bin/gunicorn" $(gunicorn_args $PLACEMENT_PORT) placement.wsgi.api:application
}

chain_nova() {
  ((SYNC)) || wait_rabbit_ready # warm: let the broker boot alone first (it is the slow one)
  # api_db sync, map_cell0, db sync, create_cell: nova-manage's commands in one process
  synced nova "$VENVS/nova/bin/python" "$HERE/nova_db_setup.py" "$ETC/nova/nova.conf" \
    "$ETC/nova/nova-db.conf" "$DB/nova_cell0?charset=utf8" "$DB/nova?charset=utf8" \
    "$TRANSPORT_URL"
  local NC=(--config-file "$ETC/nova/nova.conf" --config-file "$ETC/nova/nova-db.conf")
  # shellcheck disable=SC2046
  start_service nova-api OS_NOVA_CONFIG_DIR="$ETC/nova" \
    OS_NOVA_CONFIG_FILES="api-paste.ini;nova.conf;nova-db.conf" -- \
    "$VENVS/nova/bin/gunicorn" $(gunicorn_args $NOVA_PORT "$NOVA_API_WORKERS") nova_api:application
  wait_rabbit_ready
  wait_identity_ready
  start_service nova-conductor -- "$VENVS/nova/bin/nova-conductor" "${NC[@]}"
  start_service nova-scheduler -- "$VENVS/nova/bin/nova-scheduler" "${NC[@]}"
}

chain_glance() {
  ((SYNC)) || wait_rabbit_ready # warm: let the broker boot alone first (it is the slow one)
  synced glance "$VENVS/glance/bin/glance-manage" --config-file "$ETC/glance/glance-api.conf" db_sync
  # shellcheck disable=SC2046
  start_service glance-api OS_GLANCE_CONFIG_DIR="$ETC/glance" -- \
    "$VENVS/glance/bin/gunicorn" $(gunicorn_args $GLANCE_PORT) glance.wsgi.api:application
}

chain_neutron() {
  ((SYNC)) || wait_rabbit_ready # warm: let the broker boot alone first (it is the slow one)
  synced neutron "$VENVS/neutron/bin/neutron-db-manage" --config-file "$ETC/neutron/neutron.conf" \
    --config-file "$ETC/neutron/ml2_conf.ini" upgrade heads
  # shellcheck disable=SC2046
  start_service neutron-api OS_NEUTRON_CONFIG_DIR="$ETC/neutron" \
    OS_NEUTRON_CONFIG_FILES="neutron.conf;ml2_conf.ini" -- \
    "$VENVS/neutron/bin/gunicorn" $(gunicorn_args $NEUTRON_PORT) neutron_api:application
}

chain_aodh() {
  ((SYNC)) || wait_rabbit_ready # warm: let the broker boot alone first (it is the slow one)
  synced aodh "$VENVS/aodh/bin/aodh-dbsync" --config-file "$ETC/aodh/aodh.conf"
  local A=(--config-file "$ETC/aodh/aodh.conf")
  # shellcheck disable=SC2046
  start_service aodh-api TESTBED_AODH_CONF="$ETC/aodh/aodh.conf" -- \
    "$VENVS/aodh/bin/gunicorn" $(gunicorn_args "$AODH_PORT") aodh_api:application
  wait_rabbit_ready
  wait_identity_ready
  start_service aodh-listener -- "$VENVS/aodh/bin/aodh-listener" "${A[@]}"
  start_service aodh-notifier -- "$VENVS/aodh/bin/aodh-notifier" "${A[@]}"
  start_service ceilometer-notification -- "$VENVS/aodh/bin/ceilometer-agent-notification" \
    --config-file "$ETC/ceilometer/ceilometer.conf"
}

run_chains() { # all chains side by side; bounded by their own waits
  local comp item rc failed=()
  local jobs=()
  local comps=(placement nova glance neutron aodh)
  [ "$AUTH" = keystone ] && comps=(keystone "${comps[@]}")
  for comp in "${comps[@]}"; do
    "chain_$comp" &
    jobs+=("$!:$comp")
  done
  for item in "${jobs[@]}"; do
    rc=0
    wait "${item%%:*}" || rc=$?
    comp=${item#*:}
    case $rc in
      0) ;;
      10) log "database sync of $comp failed; $LOGS/dbsync-$comp.log ends:"
          tail -n 25 "$LOGS/dbsync-$comp.log" | sed 's/^/    /' >&2; failed+=("$comp") ;;
      20) log "$comp: RabbitMQ was not ready in time"; failed+=("$comp") ;;
      30) log "$comp: Keystone's users and catalog are not set up; $LOGS/provision.log ends:"
          tail -n 25 "$LOGS/provision.log" | sed 's/^/    /' >&2; failed+=("$comp") ;;
      *) log "$comp: failed to start (exit $rc)"; failed+=("$comp") ;;
    esac
  done
  ((${#failed[@]} == 0)) || die "could not start: ${failed[*]}"
}

start_computes() {
  local c
  for c in "${COMPUTES[@]}"; do
    start_service "nova-compute-$c" -- "$VENVS/nova/bin/nova-compute" \
      --config-file "$ETC/nova/nova.conf" --config-file "$ETC/nova/$c.conf"
  done
}

# Services without an HTTP API answer on RabbitMQ: each consumes its queue once it is ready
# (a nova-compute only after it registered its node with Nova and Placement).
declare -A QUEUE_OF=(
  [nova-conductor]=conductor
  [nova-scheduler]=scheduler
  [aodh-listener]=alarm.all.sample
  [aodh-notifier]=alarming.sample
  [ceilometer-notification]=notifications.info
)
for c in "${COMPUTES[@]}"; do QUEUE_OF[nova-compute-$c]=compute.$c; done

queues_with_consumers() {
  timeout 20 rabbitmqctl -q list_queues -p "$VHOST" name consumers 2>/dev/null |
    awk '$2 > 0 { print $1 }'
}

wait_queues() { # timeout-s services...
  local timeout=$1 deadline have s missing
  shift
  deadline=$(($(date +%s) + timeout))
  while :; do
    have=$(queues_with_consumers)
    missing=()
    for s in "$@"; do
      grep -qxF "${QUEUE_OF[$s]}" <<<"$have" || missing+=("$s")
    done
    ((${#missing[@]} == 0)) && return 0
    for s in "${missing[@]}"; do
      pid_of "$s" >/dev/null || service_failed "$s" "its process exited"
    done
    (($(date +%s) < deadline)) ||
      service_failed "${missing[0]}" "no consumer on queue ${QUEUE_OF[${missing[0]}]} after ${timeout}s (waiting for: ${missing[*]})"
    sleep 1
  done
}

provision() { # subcommand...: tools/testbed/provision.py with the bed's identity
  TESTBED_AUTH=$AUTH TESTBED_KEYSTONE_URL=$KEYSTONE_URL TESTBED_PASSWORDS=$PASSWORDS \
    TESTBED_PROJECT_ID=$PROJECT_ID TESTBED_USER_ID=$USER_ID \
    TESTBED_NOVA_URL="http://127.0.0.1:$NOVA_PORT/v2.1" \
    TESTBED_GLANCE_URL="http://127.0.0.1:$GLANCE_PORT" \
    TESTBED_NEUTRON_URL="http://127.0.0.1:$NEUTRON_PORT" \
    TESTBED_COMPUTES="${COMPUTES[*]}" FLAVOR_NAME=$FLAVOR_NAME IMAGE_NAME=$IMAGE_NAME \
    NETWORK_NAME=$NETWORK_NAME python3 "$HERE/provision.py" "$@"
}

check_ports() { # fail fast when another program holds a port of a service not yet running
  local pair name port holders
  for pair in mariadb:$MYSQL_PORT memcached:$MEMCACHED_PORT keystone-api:$KEYSTONE_PORT placement-api:$PLACEMENT_PORT nova-api:$NOVA_PORT \
              glance-api:$GLANCE_PORT neutron-api:$NEUTRON_PORT aodh-api:$AODH_PORT; do
    name=${pair%%:*} port=${pair#*:}
    pid_of "$name" >/dev/null && continue
    holders=$(ss -Hltnp "sport = :$port" 2>/dev/null)
    [ -z "$holders" ] || die "port $port ($name) is in use: $holders"
  done
}

unnice() { # back to normal priority once everything answers
  local s pid
  for s in "${NICED[@]}"; do
    pid=$(pid_of "$s") && renice -n 0 -g "$pid" >/dev/null 2>&1 || true
  done
}

cmd_up() {
  need_root
  check_installed
  mkdir -p "$ETC" "$LOGS" "$PIDS" "$RUN"
  rm -f "$RUN/rabbit.ready" "$RUN/rabbit.failed" "$RUN/identity.ready" "$RUN/identity.failed"
  local t0 cold=warm
  t0=$(now)
  [ -d "$DATA/mysql/mysql" ] || cold=cold
  case $AUTH in keystone | noauth) ;; *) die "TESTBED_AUTH=$AUTH: use keystone or noauth" ;; esac
  local made_in=noauth # data from before the bed had Keystone
  [ "$cold" = cold ] && made_in=$AUTH
  [ -e "$DATA/.auth-mode" ] && made_in=$(cat "$DATA/.auth-mode")
  [ "$made_in" = "$AUTH" ] ||
    die "the data in $DATA was made with TESTBED_AUTH=$made_in; '$0 purge' first to switch to $AUTH"
  log "up ($cold start, $AUTH), data in $DATA"
  check_ports
  ensure_passwords
  # shellcheck disable=SC1090
  . "$PASSWORDS"
  write_configs
  echo "$AUTH" >"$DATA/.auth-mode"

  start_mariadb
  # keystone mode: the services' shared cache of validated tokens (loopback, no UDP).
  [ "$AUTH" = keystone ] && start_service memcached -- memcached -u root -l 127.0.0.1 \
    -p "$MEMCACHED_PORT" -U 0 -m 64
  { if (start_rabbitmq); then touch "$RUN/rabbit.ready"; else touch "$RUN/rabbit.failed"; fi; } \
    >"$LOGS/rabbitmq-setup.log" 2>&1 &
  local rabbit_job=$!
  wait_mariadb
  log "MariaDB ready on 127.0.0.1:$MYSQL_PORT ($(since "$t0") s)"
  SYNC=0
  [ "$(cat "$DATA/.dbsync-done" 2>/dev/null)" = "$(dbsync_stamp_want)" ] || SYNC=1
  ((SYNC)) && log "syncing the database schemas"
  run_chains
  ((SYNC)) && dbsync_stamp_want >"$DATA/.dbsync-done"
  if ! wait "$rabbit_job" || [ ! -e "$RUN/rabbit.ready" ]; then
    cat "$LOGS/rabbitmq-setup.log" >&2
    die "RabbitMQ did not come up"
  fi
  log "schemas ready, services started ($(since "$t0") s)"

  local H=(-H "X-Auth-Token: admin" -H "X-User-Id: $USER_ID" -H "X-Project-Id: $PROJECT_ID"
           -H "X-Roles: admin,member,reader")
  if [ "$AUTH" = keystone ]; then
    # shellcheck disable=SC1091
    . "$DATA/identity.env"
    PROJECT_ID=$VNF_PROJECT_ID USER_ID=$VNFM_USER_ID
    # The admin's token for the readiness probes, in a 0600 file (curl -H @file), not in argv.
    (umask 077; provision token >"$RUN/admin-token.header" 2>>"$LOGS/provision.log") ||
      die "no admin token from Keystone"
    H=(-H "@$RUN/admin-token.header")
    log "Keystone answers, users and catalog set up ($(since "$t0") s)"
  fi
  wait_http placement-api "http://127.0.0.1:$PLACEMENT_PORT/" 90
  # A compute started before the conductor consumes waits for it in 10 s steps.
  wait_queues 90 nova-conductor
  start_computes
  wait_http nova-api "http://127.0.0.1:$NOVA_PORT/v2.1/flavors" 120 "${H[@]}"
  wait_http glance-api "http://127.0.0.1:$GLANCE_PORT/v2/images" 90 "${H[@]}"
  wait_http neutron-api "http://127.0.0.1:$NEUTRON_PORT/v2.0/networks" 120 "${H[@]}"
  # Neutron's first port listing is slow; warm it up before Nova asks (tools/testbed/README.md,
  # 'Why it is built this way').
  curl -m 20 -s -o /dev/null "${H[@]}" "http://127.0.0.1:$NEUTRON_PORT/v2.0/security-groups" || true
  wait_http aodh-api "http://127.0.0.1:$AODH_PORT/v2/alarms" 90 "${H[@]}"
  log "APIs answer ($(since "$t0") s)"
  provision resources >"$DATA/resources.env.tmp" 2>"$LOGS/provision.log" &
  local prov_job=$!
  local workers=("${WORKER_SERVICES[@]}")
  for c in "${COMPUTES[@]}"; do workers+=("nova-compute-$c"); done
  wait_queues 150 "${workers[@]}"
  log "conductor, scheduler, computes, aodh, ceilometer consume their queues ($(since "$t0") s)"
  if [ "$(cat "$DATA/.hosts-discovered" 2>/dev/null)" != "${COMPUTES[*]}" ]; then
    timeout 120 "$VENVS/nova/bin/nova-manage" --config-file "$ETC/nova/nova.conf" \
      --config-file "$ETC/nova/nova-db.conf" cell_v2 discover_hosts --verbose \
      >"$LOGS/discover-hosts.log" 2>&1 ||
      { cat "$LOGS/discover-hosts.log" >&2; die "nova-manage cell_v2 discover_hosts failed"; }
    echo "${COMPUTES[*]}" >"$DATA/.hosts-discovered"
    log "nova-manage cell_v2 discover_hosts mapped ${COMPUTES[*]} ($(since "$t0") s)"
  fi
  provision computes 2>>"$LOGS/provision.log" ||
    { tail -n 20 "$LOGS/provision.log" >&2; die "the computes are not up in Nova"; }
  if ! wait "$prov_job"; then
    tail -n 20 "$LOGS/provision.log" >&2
    die "could not create the image, flavor or network"
  fi
  mv "$DATA/resources.env.tmp" "$DATA/resources.env"
  unnice
  write_state
  log "up in $(since "$t0") s ($cold start); eval \"\$($0 env)\" for the tests"
}

write_state() {
  # shellcheck disable=SC1091
  . "$DATA/resources.env"
  local py
  py=$VENVS/aodh/bin/python
  {
    echo "OS_TESTBED=1"
    echo "DOCTOR_NOVA_URL=http://127.0.0.1:$NOVA_PORT/v2.1"
    echo "DOCTOR_AODH_URL=http://127.0.0.1:$AODH_PORT"
    echo "DOCTOR_AODH_EVENT_CACHE_TTL=$AODH_EVENT_CACHE_TTL"
    echo "DOCTOR_PLACEMENT_URL=http://127.0.0.1:$PLACEMENT_PORT"
    echo "DOCTOR_GLANCE_URL=http://127.0.0.1:$GLANCE_PORT"
    echo "DOCTOR_NEUTRON_URL=http://127.0.0.1:$NEUTRON_PORT"
    echo "DOCTOR_TRANSPORT_URL=$TRANSPORT_URL"
    echo "DOCTOR_COMPUTE_HOSTS=$(IFS=,; echo "${COMPUTES[*]}")"
    echo "DOCTOR_PROJECT_ID=$PROJECT_ID"
    echo "DOCTOR_USER_ID=$USER_ID"
    echo "DOCTOR_IMAGE_ID=$IMAGE_ID"
    echo "DOCTOR_FLAVOR_ID=$FLAVOR_ID"
    echo "DOCTOR_NETWORK_ID=$NETWORK_ID"
    echo "DOCTOR_SUBNET_ID=$SUBNET_ID"
    echo "DOCTOR_TESTBED_PYTHON=$py"
    echo "DOCTOR_CLOUDS_YAML=$DATA/clouds.yaml"
    echo "DOCTOR_TESTBED_AUTH=$AUTH"
    if [ "$AUTH" = keystone ]; then
      echo "DOCTOR_KEYSTONE_URL=$KEYSTONE_URL/v3"
      echo "DOCTOR_TOKEN_EXPIRATION=$TOKEN_EXPIRATION"
      echo "OS_CLIENT_CONFIG_FILE=$DATA/clouds.yaml"
      # The operator (admin; the Inspector's Nova driver), the VNFM (a member of the project
      # vnf, where the servers and alarms are) and a member of another project.
      echo "DOCTOR_OS_CLOUD=doctor-testbed"
      echo "DOCTOR_VNFM_CLOUD=doctor-testbed-vnfm"
      echo "DOCTOR_OTHER_CLOUD=doctor-testbed-other"
      # Each compute is an availability zone of its own, so a member can boot on it.
      echo "DOCTOR_HOST_ZONE=doctor-{host}"
    fi
  } >"$STATE"
  if [ "$AUTH" = keystone ]; then
    write_clouds_keystone
    return 0
  fi
  # The bed as a clouds.yaml cloud, for `doctor run --installer openstack --os-cloud
  # doctor-testbed` (with OS_CLIENT_CONFIG_FILE=$DATA/clouds.yaml): no Keystone, so aodhclient's
  # doctor-noauth plugin (doctor/noauth.py) sends the identity headers, every endpoint is given.
  cat >"$DATA/clouds.yaml" <<EOF
clouds:
  doctor-testbed:
    auth_type: doctor-noauth
    auth:
      user_id: $USER_ID
      project_id: $PROJECT_ID
      roles: admin
    compute_endpoint_override: http://127.0.0.1:$NOVA_PORT/v2.1
    alarming_endpoint_override: http://127.0.0.1:$AODH_PORT
EOF
}

write_clouds_keystone() { # the bed's three users as clouds.yaml clouds (0600: passwords)
  local cloud user project pass
  (umask 077
   { echo "clouds:"
   for cloud in doctor-testbed:doctor:doctor:$DOCTOR_PASSWORD \
                doctor-testbed-vnfm:vnfm:vnf:$VNFM_PASSWORD \
                doctor-testbed-other:other:other:$OTHER_PASSWORD \
                doctor-testbed-admin:admin:admin:$ADMIN_PASSWORD; do
     IFS=: read -r cloud user project pass <<<"$cloud"
     cat <<EOF
  $cloud:
    auth:
      auth_url: $KEYSTONE_URL/v3
      username: $user
      password: $pass
      project_name: $project
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
EOF
   done; } >"$DATA/clouds.yaml.tmp")
  mv "$DATA/clouds.yaml.tmp" "$DATA/clouds.yaml"
}

cmd_env() {
  [ -r "$STATE" ] || die "the test bed is not up (no $STATE): run '$0 up' first"
  local line
  while IFS= read -r line; do
    printf "export %s='%s'\n" "${line%%=*}" "${line#*=}" # values hold no single quote
  done <"$STATE"
}

# ---------------------------------------------------------------------------------------------
# status and down

cmd_status() {
  local s pid have="" rc=0 url
  pid_of rabbitmq >/dev/null || rabbit_running && have=$(queues_with_consumers)
  printf '%-26s %-8s %s\n' SERVICE PID STATE
  for s in mariadb rabbitmq memcached "${ALL_SERVICES[@]}"; do
    [ "$AUTH" = noauth ] && [[ $s == keystone-api || $s == memcached ]] && continue
    if pid=$(pid_of "$s"); then
      case $s in
        memcached) state="answers"
                   timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$MEMCACHED_PORT" 2>/dev/null ||
                     state="no answer" ;;
        mariadb) timeout 5 mariadb-admin --no-defaults --socket="$MYSQL_SOCK" -uroot ping \
                   >/dev/null 2>&1 && state=answers || state="no answer" ;;
        rabbitmq) [ -n "$have" ] && state="answers" || state="no answer" ;;
        keystone-api) url=$KEYSTONE_URL/v3 ;;
        placement-api) url=http://127.0.0.1:$PLACEMENT_PORT/ ;;
        nova-api) url=http://127.0.0.1:$NOVA_PORT/ ;;
        glance-api) url=http://127.0.0.1:$GLANCE_PORT/versions ;;
        neutron-api) url=http://127.0.0.1:$NEUTRON_PORT/ ;;
        aodh-api) url=http://127.0.0.1:$AODH_PORT/ ;;
        *) grep -qxF "${QUEUE_OF[$s]}" <<<"$have" && state="consumes ${QUEUE_OF[$s]}" ||
             state="not consuming ${QUEUE_OF[$s]}" ;;
      esac
      case $s in
        *-api) curl -m 3 -s -o /dev/null "$url" && state="answers on ${url%/*}" || state="no answer" ;;
      esac
      [[ $state == answers* || $state == consumes* ]] || rc=1
    else
      pid=-
      if [ "$s" = rabbitmq ] && rabbit_running; then state="runs (not started by the bed)"
      else state="stopped"; rc=1; fi
    fi
    printf '%-26s %-8s %s\n' "$s" "$pid" "$state"
  done
  return $rc
}

stop_names() { # names...: TERM, wait (bounded), KILL
  local s pid mode st live=() deadline
  for s in "$@"; do
    pid=$(pid_of "$s") || { rm -f "$PIDS/$s.pid"; continue; }
    read -r pid mode st <"$PIDS/$s.pid"
    if [ "$mode" = group ]; then kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    else kill -TERM "$pid" 2>/dev/null || true; fi
    live+=("$s")
  done
  ((${#live[@]})) || return 0
  log "stopping ${live[*]}"
  deadline=$(($(date +%s) + 20))
  while :; do
    local still=()
    for s in "${live[@]}"; do
      read -r pid mode st <"$PIDS/$s.pid"
      if pid_of "$s" >/dev/null || { [ "$mode" = group ] && kill -0 -- "-$pid" 2>/dev/null; }; then
        still+=("$s")
      fi
    done
    ((${#still[@]})) || break
    if (($(date +%s) >= deadline)); then
      log "killing ${still[*]} (no exit 20 s after TERM)"
      for s in "${still[@]}"; do
        read -r pid mode st <"$PIDS/$s.pid"
        if [ "$mode" = group ]; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
        pid_of "$s" >/dev/null && kill -KILL "$pid" 2>/dev/null || true
      done
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  for s in "${live[@]}"; do rm -f "$PIDS/$s.pid"; done
}

cmd_down() {
  need_root
  [ -d "$PIDS" ] || { log "nothing to stop"; return 0; }
  local t0
  t0=$(now)
  stop_names "${ALL_SERVICES[@]}"
  stop_names mariadb memcached rabbitmq
  # epmd outlives the broker; stop it only if `up` started it and no other node uses it.
  if pid_of epmd >/dev/null; then
    if epmd -names 2>/dev/null | grep -q '^name '; then
      log "epmd still serves another Erlang node: left running"
      rm -f "$PIDS/epmd.pid"
    else
      stop_names epmd
    fi
  fi
  rm -f "$STATE"
  log "down in $(since "$t0") s"
}

cmd_purge() {
  cmd_down
  rm -rf "$DATA"
  log "removed $DATA (installed files stay in $PREFIX)"
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  env) cmd_env ;;
  status) cmd_status ;;
  down) cmd_down ;;
  purge) cmd_purge ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
