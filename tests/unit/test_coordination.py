"""The service list's pieces without a backend: URL redaction in errors, capabilities, options."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from doctor import coordination
from doctor.config import ConfigError, build
from inspector.config import InspectorConfig


def test_a_backend_error_never_carries_the_password():
    url = "redis://:p%40ss-s3cret@127.0.0.1:1?sentinel_password=other-s3cret"
    error = coordination.CoordinationError(
        url, "AUTH p%40ss-s3cret failed; sentinel said other-s3cret")
    assert "s3cret" not in str(error)
    assert str(error).startswith("coordination backend redis://:***@127.0.0.1:1")
    assert error.url == "redis://:***@127.0.0.1:1?sentinel_password=***"


def test_an_unreachable_port_is_named_without_the_password():
    with pytest.raises(coordination.CoordinationError) as caught:
        coordination.list_services("redis://:topsecret@127.0.0.1:1")
    message = str(caught.value)
    assert "topsecret" not in message
    assert "redis://:***@127.0.0.1:1" in message and "127.0.0.1:1" in message


SAMPLE = coordination.ServiceInfo(name="Monitor compute-gw", hostname="controller-1",
                                  pid=23161, created_at="2019-02-10T11:07:15+00:00",
                                  boot_id="b0", pid_start=12345,
                                  pid_namespace="pid:[4026531836]")


def test_capabilities_round_trip_and_give_the_seeds_row():
    caps = SAMPLE.to_capabilities()
    assert coordination.ServiceInfo.from_capabilities(caps) == SAMPLE
    assert SAMPLE.row() == {"Name": "Monitor compute-gw", "Process Id": 23161,
                            "Hostname": "controller-1",
                            "Created At": "2019-02-10T11:07:15+00:00"}
    assert list(SAMPLE.row()) == list(coordination.COLUMNS)


def test_capabilities_survive_the_drivers_msgpack_encoding():
    from tooz import utils

    decoded = utils.loads(utils.dumps(SAMPLE.to_capabilities()))
    assert coordination.ServiceInfo.from_capabilities(decoded) == SAMPLE
    as_bytes = {k.encode(): (v.encode() if isinstance(v, str) else v)
                for k, v in SAMPLE.to_capabilities().items()}
    assert coordination.ServiceInfo.from_capabilities(as_bytes) == SAMPLE


def test_capabilities_from_an_older_member_without_the_liveness_fields():
    info = coordination.ServiceInfo.from_capabilities(
        {"name": "Notifier", "hostname": "h", "pid": 7, "created_at": "2026-01-01T00:00:00+00:00"})
    assert info.row()["Name"] == "Notifier"
    assert info.alive_here() is None  # nothing to judge it by: the driver's timeout decides


@pytest.mark.parametrize("caps", [None, "x", {"name": "a"}, {**SAMPLE.to_capabilities(),
                                                              "pid": "12"},
                                  {**SAMPLE.to_capabilities(), "pid": True}])
def test_what_no_doctor_process_wrote_is_refused(caps):
    with pytest.raises(ValueError):
        coordination.ServiceInfo.from_capabilities(caps)


def test_this_process_is_alive_and_a_finished_one_is_not(monkeypatch):
    me = coordination.ServiceInfo.for_this_process("Test")
    assert me.pid == os.getpid() and me.alive_here() is True
    assert me.created_at.endswith("+00:00") and "." not in me.created_at
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = coordination.ServiceInfo(**{**me.__dict__, "pid": child.pid,
                                       "pid_start": coordination.process_start_ticks(
                                           os.getpid())})
    assert gone.alive_here() is False
    # The same pid with another start time is another process: a reused pid does not count.
    reused = coordination.ServiceInfo(**{**me.__dict__, "pid_start": me.pid_start + 1})
    assert reused.alive_here() is False
    elsewhere = coordination.ServiceInfo(**{**me.__dict__, "boot_id": "another-boot"})
    assert elsewhere.alive_here() is None
    monkeypatch.setenv("HOST_HOSTNAME", "compute-host-3")
    assert coordination.ServiceInfo.for_this_process("x").hostname == "compute-host-3"


def test_driver_options_follow_the_heartbeat_timeout_unless_the_url_sets_them():
    redis = coordination.driver_options("redis://h:6379", 3.0)
    assert redis["membership_timeout"] == "3.0" and redis["socket_timeout"] == "2.0"
    assert "membership_timeout" not in coordination.driver_options(
        "redis://h:6379?membership_timeout=9", 3.0)
    assert coordination.driver_options("file:///x", 2.5)["timeout"] == "3"
    assert coordination.driver_options("zookeeper://h", 0.4)["timeout"] == "1"


def test_the_option_takes_tooz_urls_and_names_a_bad_one_without_its_password(monkeypatch):
    monkeypatch.setenv("DOCTOR_STATE_DIR", "/srv/doctor")
    config = build(InspectorConfig, "inspector", {"token": "t"})
    assert config.coordination_url == "file:///srv/doctor/coordination"
    assert config.heartbeat_timeout_s == coordination.DEFAULT_HEARTBEAT_TIMEOUT_S
    with pytest.raises(ConfigError) as caught:
        build(InspectorConfig, "inspector", {"token": "t",
                                             "coordination_url": "redis:/:pw@nohost"})
    assert "coordination_url" in str(caught.value) and "pw" not in str(caught.value)
    with pytest.raises(ConfigError, match="heartbeat_timeout_s"):
        build(InspectorConfig, "inspector", {"token": "t", "heartbeat_timeout_s": "0"})


def test_a_file_backend_that_does_not_exist_is_an_error_not_an_empty_list(tmp_path):
    with pytest.raises(coordination.CoordinationError, match="no such directory"):
        coordination.list_services(f"file://{tmp_path}/typo")
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("argv, handed", [
    (["service", "list", "-f", "json"], ["service", "list", "-f", "json"]),
    (["--log-level", "INFO", "service", "list"], ["service", "list"]),
    (["service"], ["--help"]),
    (["service", "--help"], ["--help"]),
    (["run", "--vm-count", "1"], None),
    (["hosts", "service"], None),
])
def test_doctor_hands_its_cliff_families_to_the_cliff_app(argv, handed):
    from client import main as cli
    from client import shell

    assert cli._shell_argv(argv) == handed
    assert list(cli.SHELL_FAMILIES) == shell.FAMILIES
