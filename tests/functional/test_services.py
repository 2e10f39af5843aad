"""The service list over real processes: Redis (a redis-server of the test's own) and tooz's
file backend; ``doctor service list`` and the Inspector's ``GET /v1/services``."""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from doctor import coordination
from doctor.config import url_flag_or_env
from doctor.http import HttpClient
from doctor.signals import terminate_all
from scenario.pipeline import Pipeline
from testkit.eventsink import free_port
from testkit.redis_server import RedisServer
from tests.functional.conftest import require_redis, require_root
from tests.waiting import wait_until

TOKEN = "services-test-token"
# Every daemon's token, in its environment (never a flag).
SECRETS_ENV = {"DOCTOR_INSPECTOR_TOKEN": TOKEN, "DOCTOR_NOTIFIER_TOKEN": TOKEN,
               "DOCTOR_CONSUMER_TOKEN": TOKEN, "DOCTOR_MONITOR_INSPECTOR_TOKEN": TOKEN}
HEARTBEAT_TIMEOUT_S = 3.0
# What a loaded 2-core machine may add to the timeout before a killed member is gone.
MARGIN_S = 1.5


class Daemons:
    """Doctor's console scripts as real processes, all registering at one coordination URL."""

    def __init__(self, workdir, url: str) -> None:
        self.workdir = str(workdir)
        self.url = url
        self.processes: dict[str, subprocess.Popen] = {}
        self.inspector_urls: list[str] = []

    def start(self, key: str, module: str, *argv: str, env: dict | None = None
              ) -> subprocess.Popen:
        log = open(os.path.join(self.workdir, f"{key}.log"), "a")
        # A URL with a password never goes on a command line: the part's environment.
        url_flag, where = url_flag_or_env(module.split(".")[0], "coordination_url", self.url)
        process = subprocess.Popen(
            [sys.executable, "-m", module, *argv, *url_flag,
             "--heartbeat-timeout-s", str(HEARTBEAT_TIMEOUT_S), "--log-level", "INFO"],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "DOCTOR_STATE_DIR": os.path.join(self.workdir, "state"),
                 **SECRETS_ENV, **where, **(env or {})})
        log.close()
        self.processes[key] = process
        return process

    def inspector(self, key: str) -> subprocess.Popen:
        port = free_port()
        process = self.start(key, "inspector.cli", "--port", str(port),
                             "--controller-url", f"http://127.0.0.1:{free_port()}",
                             "--resync-interval-s", "0", "--database",
                             f"sqlite:///{os.path.join(self.workdir, key + '.db')}")
        url = f"http://127.0.0.1:{port}"
        client = HttpClient(2.0, token=TOKEN)
        try:
            wait_until(lambda: process.poll() is None and _answers(client, url + "/hosts"),
                       30, f"{key} to serve")
        finally:
            client.close()
        self.inspector_urls.append(url)
        return process

    def consumer(self, key: str, env: dict | None = None) -> subprocess.Popen:
        return self.start(key, "consumer.cli", "--port", str(free_port()), env=env)

    def notifier(self, key: str) -> subprocess.Popen:
        return self.start(key, "notifier.cli", "--port", str(free_port()))

    def monitor(self, key: str, name: str, target: str) -> subprocess.Popen:
        # Loopback targets only; the run is bounded by --duration-s (and stopped at the end).
        return self.start(key, "monitor.cli", "--name", name, "--target", f"{name}-t={target}",
                          "--duration-s", "180", "--inspector-url", self.inspector_urls[0])

    def log(self, key: str) -> str:
        with open(os.path.join(self.workdir, f"{key}.log"), errors="replace") as handle:
            return handle.read()

    def stop_all(self) -> None:
        terminate_all(self.processes.values())


def _answers(client: HttpClient, url: str) -> bool:
    try:
        return client.get(url).ok
    except OSError:
        return False


@pytest.fixture
def daemons_factory(tmp_path):
    started = []

    def make(url: str) -> Daemons:
        daemons = Daemons(tmp_path, url)
        started.append(daemons)
        return daemons

    yield make
    for daemons in started:
        daemons.stop_all()


def api_services(inspector_url: str):
    """(status, body) of GET /v1/services."""
    client = HttpClient(10.0, token=TOKEN)
    try:
        answer = client.get(inspector_url + "/v1/services")
        return answer.status, answer.json()
    finally:
        client.close()


def listed_pids(inspector_url: str) -> set[int]:
    status, body = api_services(inspector_url)
    return {row["Process Id"] for row in body} if status == 200 else set()


def service_list(*argv: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    """``doctor service list`` with the Inspector's token in DOCTOR_INSPECTOR_TOKEN."""
    return subprocess.run([sys.executable, "-m", "client.main", "service", "list", *argv],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DOCTOR_INSPECTOR_TOKEN": token})


def seconds_until_gone(process: subprocess.Popen, still_listed) -> float:
    """kill -9 ``process``; the seconds until ``still_listed()`` is false (bounded)."""
    killed_at = time.monotonic()
    process.send_signal(signal.SIGKILL)
    process.wait(5)
    wait_until(lambda: not still_listed(), HEARTBEAT_TIMEOUT_S + 10,
               f"pid {process.pid} to leave the service list", interval_s=0.05)
    return time.monotonic() - killed_at


def test_seven_processes_over_redis_kill_one_stop_and_restart_redis(daemons_factory,
                                                                    redis_server):
    require_root()  # the monitors' raw ICMP socket
    daemons = daemons_factory(redis_server.url)
    inspector_a = daemons.inspector("inspector-a")
    inspector_b = daemons.inspector("inspector-b")
    notifier = daemons.notifier("notifier")
    consumer = daemons.consumer("consumer", env={"HOST_HOSTNAME": "container-host-7"})
    monitors = [daemons.monitor(f"monitor-{i}", f"mon{i}", f"127.0.0.{i + 2}")
                for i in range(3)]
    expected = {inspector_a.pid: "InspectorWorker worker(0)",
                inspector_b.pid: "InspectorWorker worker(0)", notifier.pid: "Notifier",
                consumer.pid: "Consumer",
                **{m.pid: f"Monitor mon{i}" for i, m in enumerate(monitors)}}
    url_a, url_b = daemons.inspector_urls
    wait_until(lambda: listed_pids(url_a) == set(expected), 30, "all 7 processes listed")

    result = service_list("--inspector-url", url_a, "-f", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 7
    assert {row["Process Id"]: row["Name"] for row in rows} == expected
    assert all(list(row) == list(coordination.COLUMNS) for row in rows)
    hostnames = {row["Process Id"]: row["Hostname"] for row in rows}
    assert hostnames[consumer.pid] == "container-host-7"
    assert hostnames[notifier.pid] == socket.gethostname()
    for row in rows:
        created = datetime.fromisoformat(row["Created At"])
        assert created.utcoffset().total_seconds() == 0
        assert abs(created.timestamp() - datetime.now(timezone.utc).timestamp()) < 120
    # Both inspectors read the same list; the table has the seed's columns.
    assert listed_pids(url_b) == set(expected)
    table = service_list("--inspector-url", url_b)
    assert table.returncode == 0
    header = table.stdout.splitlines()[1]
    assert [cell.strip() for cell in header.strip("|").split("|")] == list(coordination.COLUMNS)
    only = service_list("--inspector-url", url_a, "-f", "value",
                        "-c", "Process Id")
    assert sorted(map(int, only.stdout.split())) == sorted(expected)

    victim = monitors[1]
    gone_after_s = seconds_until_gone(victim, lambda: victim.pid in listed_pids(url_a))
    print(f"redis: a member killed with -9 left the list after {gone_after_s:.2f} s "
          f"(heartbeat timeout {HEARTBEAT_TIMEOUT_S:g} s)")
    assert gone_after_s <= HEARTBEAT_TIMEOUT_S + MARGIN_S
    del expected[victim.pid]
    assert listed_pids(url_a) == set(expected)

    # Redis stops: the API says 503 naming the backend, the CLI the same; nothing crashes.
    redis_server.stop()
    status, body = api_services(url_a)
    assert status == 503
    assert redis_server.url in body["error"] and "unreachable" in body["error"]
    result = service_list("--inspector-url", url_a, "-f", "json")
    assert result.returncode != 0
    assert body["error"] in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    direct = service_list("--coordination-url", redis_server.url)
    assert direct.returncode != 0 and redis_server.url in direct.stderr
    time.sleep(HEARTBEAT_TIMEOUT_S)  # long enough for every registration to notice
    assert all(daemons.processes[k].poll() is None for k in daemons.processes
               if daemons.processes[k] is not victim)
    client = HttpClient(5.0, token=TOKEN)
    assert client.get(url_a + "/hosts").ok
    client.close()

    # Redis is back (empty: nothing was persisted): every process joins again.
    back_at = time.monotonic()
    redis_server.start()
    wait_until(lambda: listed_pids(url_a) == set(expected), 20, "the 6 processes to re-join")
    print(f"redis: back after a restart, all 6 listed again within "
          f"{time.monotonic() - back_at:.2f} s")
    assert "service list" in daemons.log("consumer")  # the warning while it was down


def test_file_backend_drops_a_killed_process_at_once(daemons_factory, tmp_path):
    url = f"file://{tmp_path}/coordination"
    daemons = daemons_factory(url)
    inspector = daemons.inspector("inspector")
    consumers = [daemons.consumer(f"consumer-{i}") for i in range(2)]
    notifier = daemons.notifier("notifier")
    (inspector_url,) = daemons.inspector_urls
    everyone = {inspector.pid, notifier.pid, *(c.pid for c in consumers)}
    wait_until(lambda: listed_pids(inspector_url) == everyone, 30, "4 processes listed")

    result = service_list("--coordination-url", url, "-f", "csv")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == '"Name","Process Id","Hostname","Created At"'
    assert len(lines) == 5

    entries = os.path.join(str(tmp_path), "coordination", "groups", "*", "*.raw")
    assert len(glob.glob(entries)) == 4
    # tooz's file driver would keep a dead member's entry for ever (and list it for its
    # `timeout`); the pid check drops it at the next listing, and removes the entry.
    victim = consumers[0]
    gone_after_s = seconds_until_gone(victim, lambda: victim.pid in listed_pids(inspector_url))
    print(f"file: a member killed with -9 left the list after {gone_after_s:.2f} s")
    assert gone_after_s < 1.0
    assert len(glob.glob(entries)) == 3

    # A process that stops leaves the group itself.
    consumers[1].terminate()
    consumers[1].wait(10)
    assert listed_pids(inspector_url) == {inspector.pid, notifier.pid}
    assert len(glob.glob(entries)) == 2


def test_file_backend_hides_a_silent_member_it_cannot_check_after_the_timeout(tmp_path):
    """A member from another machine (another boot id) that stops heartbeating: no pid check
    applies, tooz's file driver hides it once its entry is older than the timeout."""
    url = f"file://{tmp_path}/coordination"
    tooz_coordination = coordination.load_tooz()
    elsewhere = coordination.ServiceInfo(name="Monitor elsewhere", hostname="other-host",
                                         pid=4242, created_at="2026-11-22T10:00:00+00:00",
                                         boot_id="another-boot", pid_start=1)
    member = coordination.connect(url, b"other-host:4242:x", HEARTBEAT_TIMEOUT_S)
    try:
        try:
            member.create_group(coordination.GROUP).get()
        except tooz_coordination.GroupAlreadyExist:
            pass
        member.join_group(coordination.GROUP, elsewhere.to_capabilities()).get()
        joined_at = time.monotonic()
        assert coordination.list_services(url, HEARTBEAT_TIMEOUT_S) == [elsewhere.row()]
        wait_until(lambda: coordination.list_services(url, HEARTBEAT_TIMEOUT_S) == [],
                   HEARTBEAT_TIMEOUT_S + 5, "the silent member to be hidden", interval_s=0.1)
        hidden_after_s = time.monotonic() - joined_at
        print(f"file: a silent member of another machine hidden after {hidden_after_s:.2f} s")
        assert HEARTBEAT_TIMEOUT_S - 0.5 <= hidden_after_s <= HEARTBEAT_TIMEOUT_S + MARGIN_S
    finally:
        member.stop()


def test_a_part_started_before_its_backend_joins_when_the_backend_comes(daemons_factory,
                                                                        tmp_path):
    require_redis()
    redis = RedisServer(str(tmp_path / "redis"))  # not started yet
    secret_url = f"redis://:hush-{os.getpid()}@127.0.0.1:{redis.port}"
    daemons = daemons_factory(secret_url)
    consumer = daemons.consumer("consumer")
    port = int(consumer.args[consumer.args.index("--port") + 1])
    client = HttpClient(2.0, token=TOKEN)
    try:
        # Its job does not wait for the backend.
        wait_until(lambda: _answers(client, f"http://127.0.0.1:{port}/failures"), 20,
                   "the consumer to serve")
        wait_until(lambda: "unreachable" in daemons.log("consumer"), 10, "the warning")
        log = daemons.log("consumer")
        assert f"redis://:***@127.0.0.1:{redis.port}" in log and "hush" not in log
        with redis:
            redis.client().config_set("requirepass", f"hush-{os.getpid()}")
            started = time.monotonic()
            wait_until(lambda: coordination.list_services(secret_url), 15,
                       "the consumer to register", interval_s=0.2)
            print(f"registered {time.monotonic() - started:.2f} s after the backend came")
            (row,) = coordination.list_services(secret_url)
            assert row["Process Id"] == consumer.pid and row["Name"] == "Consumer"
            assert _answers(client, f"http://127.0.0.1:{port}/failures")
    finally:
        client.close()
    assert "hush" not in daemons.log("consumer")


def test_bench_membership_prints_its_tables_and_json(tmp_path):
    require_redis()
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "client.main", "bench", "membership", "--members", "2",
         "--window-s", "2", "--kills", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| backend | members | CPU ms/s per member" in result.stdout
    data = json.loads(out.read_text())
    redis, file = data["runs"]
    assert redis["backend"] == "redis" and redis["costs"][0]["members"] == 2
    assert redis["costs"][0]["redis_bytes_per_member_per_s"] > 0
    assert redis["killed_member_gone_ms"]["n"] == 2
    assert redis["killed_member_gone_ms"]["max"] <= (HEARTBEAT_TIMEOUT_S + MARGIN_S) * 1000
    assert file["killed_member_gone_ms"]["max"] < 1000


def test_the_pipelines_parts_share_one_service_list(tmp_path):
    pipeline = Pipeline(str(tmp_path)).start()
    try:
        assert pipeline.service_list_url == f"file://{tmp_path}/state/coordination"
        parts = {part.process.pid: name for name, part in pipeline.parts.items()}
        wait_until(lambda: {r["Process Id"] for r in coordination.list_services(
            pipeline.service_list_url)} == set(parts), 30, "the 4 parts listed")
        result = service_list("--inspector-url", pipeline.url("inspector"), "-f", "value",
                              "-c", "Name", token=pipeline.token)
        assert result.returncode == 0, result.stderr
        assert sorted(result.stdout.splitlines()) == ["Consumer", "Controller",
                                                      "InspectorWorker worker(0)", "Notifier"]
    finally:
        pipeline.stop()
    assert coordination.list_services(pipeline.service_list_url) == []
