"""Fixtures for tests on real namespaced hosts (root only; in CI a skip is a failure)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile

import pytest

from testkit.eventsink import EventSink
from testkit.hosts import TestHostNetwork, cleanup_prefix
from testkit.postgres_server import PostgresServer, postgres_bin_dir
from testkit.redis_server import RedisServer, redis_server_binary

# Each test gets its own /24 (index) so a leftover of one cannot disturb another.
_indexes = itertools.count(10)


def _require(found: bool, reason: str) -> None:
    """Skip without ``found``; in CI, where setup.sh installs everything, fail instead."""
    if found:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; in CI a skip is a failure")
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() == 0:
        return
    reason = "namespaced test hosts need root (CAP_NET_ADMIN, CAP_NET_RAW)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI runs as root, so this is a failure, not a skip")
    pytest.skip(reason)


def require_testbed() -> None:
    """The OpenStack test bed's tests run when it is up (scripts/test.sh starts it as root)."""
    _require(os.environ.get("OS_TESTBED") == "1",
             "needs the OpenStack test bed: as root, tools/testbed/openstack.sh install && up, "
             "then eval \"$(tools/testbed/openstack.sh env)\" (scripts/test.sh does this)")


def require_keystone_bed() -> None:
    """Tests of Keystone's part need the bed in its default mode (TESTBED_AUTH=keystone),
    which CI runs; a bed brought up with TESTBED_AUTH=noauth skips them."""
    require_testbed()
    _require(os.environ.get("DOCTOR_TESTBED_AUTH") == "keystone",
             "needs the test bed with Keystone (TESTBED_AUTH=keystone, the default of "
             "tools/testbed/openstack.sh up)")


@pytest.fixture(scope="module")
def keystone():
    """A throw-away Keystone (testkit.keystone_server) for the tests of one module."""
    from testkit.keystone_server import KeystoneServer, keystone_venv

    _require(keystone_venv() is not None,
             "needs the Keystone venv (as root: tools/testbed/openstack.sh install; or "
             "DOCTOR_KEYSTONE_VENV)")
    workdir = tempfile.mkdtemp(prefix="doctor-keystone-")
    server = KeystoneServer(workdir, token_expiration_s=900).start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def require_redis() -> None:
    """Redis tests need Debian's redis-server (scripts/setup.sh installs it)."""
    _require(redis_server_binary() is not None,
             "needs redis-server (apt-get install redis-server; scripts/setup.sh does it)")


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of the test's own on a free loopback port, stopped at the end."""
    require_redis()
    server = RedisServer(str(tmp_path / "redis")).start()
    yield server
    server.stop()


def require_postgres() -> None:
    """Tests of several servers on one database need PostgreSQL (scripts/setup.sh, as root)."""
    _require(postgres_bin_dir() is not None,
             "needs PostgreSQL (apt-get install postgresql; scripts/setup.sh does it)")


@pytest.fixture
def postgres_server():
    """A PostgreSQL cluster of the test's own on a free loopback port, removed at the end.

    Under /tmp rather than tmp_path: as root the server runs as the postgres user, who cannot
    enter pytest's private directories."""
    require_postgres()
    server = PostgresServer(tempfile.mkdtemp(prefix="doctor-pg-")).start()
    yield server
    server.remove()


@pytest.fixture(scope="session", autouse=True)
def _state_dir_of_the_tests(tmp_path_factory):
    """Daemons started without DOCTOR_STATE_DIR keep their state (e.g. the service list's
    file backend) in the tests' own directory, never in /var/lib/doctor."""
    if "DOCTOR_STATE_DIR" in os.environ:
        yield
        return
    os.environ["DOCTOR_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    os.environ.pop("DOCTOR_STATE_DIR", None)


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers():
    yield
    if os.geteuid() == 0:
        cleanup_prefix("dtf")


@pytest.fixture
def network():
    require_root()
    with TestHostNetwork(prefix="dtf", index=next(_indexes)) as net:
        yield net


@pytest.fixture
def sink():
    events = EventSink().start()
    yield events
    events.stop()
