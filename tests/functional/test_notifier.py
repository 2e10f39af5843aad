"""The embedded Notifier over real HTTP, as a real process, driven by aodhclient as a VNFM would.

No namespaces: everything listens on 127.0.0.1, so these run without root. The notifier runs
with its defaults' auth_strategy = token: each test project has its tokens (one per role) in
the notifier's api_tokens_file, and aodhclient sends them (keystoneauth1's token_endpoint).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests
from aodhclient import client as aodh_client
from aodhclient import exceptions as aodh_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.token_endpoint import Token

from doctor import profiler
from doctor.events import instance_update
from doctor.wsgi import HttpServer
from notifier.api import create_app
from notifier.caller import Caller, write_api_tokens
from notifier.config import NotifierConfig
from notifier.embedded import EmbeddedNotifier
from notifier.http import HttpPublisher
from testkit.eventsink import LoopbackServer, free_port

ROOT = Path(__file__).resolve().parents[2]
AODH_CLI = Path(sys.executable).parent / "aodh"
INSTANCE_UPDATE = "compute.instance.update"
SERVICE_TOKEN = "notifier-service-token"  # what the inspector sends on POST /v1/events
ROLES = ("admin", "member")
# The test projects, each with a token per role: (project, roles) -> token.
PROJECT_TOKENS = {(f"tenant-{i:02d}", roles): f"token-{i:02d}-{roles}-{uuid.uuid4().hex}"
                  for i in range(40) for roles in ROLES}
_projects = iter(sorted({project for project, _ in PROJECT_TOKENS}))


def project() -> str:
    """A project of its own for a test (each has its tokens in the api_tokens_file)."""
    return next(_projects)


def token_of(project: str, roles: str = "admin") -> str:
    return PROJECT_TOKENS[(project, roles)]


def write_tokens_file(path: Path) -> Path:
    write_api_tokens(str(path), [(f"{project}-{roles}", token,
                                  Caller("vnfm", project, frozenset({roles})))
                                 for (project, roles), token in PROJECT_TOKENS.items()])
    return path


class Consumer(LoopbackServer):
    """The VNFM side: a real HTTP endpoint on 127.0.0.1 recording the alarm POSTs."""

    request_queue_size = 256

    def __init__(self, port: int = 0, delay_s: float = 0.0, status: int = 200) -> None:
        super().__init__(port)
        self.delay_s = delay_s
        self.status = status
        self.received: list[tuple[float, str, dict, dict]] = []  # time, path, headers, body
        self.active = 0
        self.max_active = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/failure"

    def start(self) -> Consumer:
        consumer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                with consumer.lock:
                    consumer.active += 1
                    consumer.max_active = max(consumer.max_active, consumer.active)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(consumer.delay_s)
                with consumer.lock:
                    consumer.received.append((time.time(), self.path, dict(self.headers), body))
                    consumer.active -= 1
                self.send_response(consumer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.serve(Handler)
        return self

    def alarms(self, alarm_id: str | None = None) -> list[dict]:
        with self.lock:
            return [body for _, _, _, body in self.received
                    if alarm_id is None or body["alarm_id"] == alarm_id]

    def wait_for(self, alarm_id: str, count: int = 1, timeout_s: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.alarms(alarm_id)
            if len(found) >= count:
                return found
            time.sleep(0.01)
        raise AssertionError(f"{count} POSTs of alarm {alarm_id} not received in {timeout_s} s; "
                             f"got {len(self.alarms(alarm_id))}")


class NotifierProcess:
    """``python -m notifier.cli`` (the future ``doctor-notifier``) with its own state dir."""

    def __init__(self, state_dir: Path, *flags: str) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.profile = state_dir / "profile.jsonl"
        self.log_path = state_dir / "notifier.log"
        tokens = write_tokens_file(state_dir / "api-tokens.conf")
        self.flags = ["--port", str(self.port), "--action-retry-initial-ms", "50",
                      "--action-retry-max-ms", "500", "--profile-file", str(self.profile),
                      "--api-tokens-file", str(tokens), *flags]
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> NotifierProcess:
        env = {**os.environ, "DOCTOR_STATE_DIR": str(self.state_dir),
               "DOCTOR_NOTIFIER_TOKEN": SERVICE_TOKEN}
        log = open(self.log_path, "ab")  # noqa: SIM115  (the child holds it)
        self.process = subprocess.Popen([sys.executable, "-m", "notifier.cli", *self.flags],
                                        cwd=ROOT, env=env, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"notifier exited with {self.process.returncode}:\n"
                                     f"{self.log()}")
            try:
                if requests.get(self.url + "/", headers={"X-Auth-Token": SERVICE_TOKEN},
                                timeout=1).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"notifier did not answer within {timeout_s} s:\n{self.log()}")

    def stop(self, timeout_s: float = 10.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"notifier did not stop within {timeout_s} s") from None

    def kill(self) -> None:
        """A crash: SIGKILL, nothing flushed or closed."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def aodh(url: str, project: str, roles: str = "admin"):
    """aodhclient as a VNFM builds it with a token (keystoneauth1's token_endpoint): the
    project's token of that role."""
    auth = Token(url, token_of(project, roles))
    return aodh_client.Client("2", session=ks_session.Session(auth=auth, timeout=10))


def create_vm_alarm(client, name: str, vm: str, action_url: str, repeat: bool = False) -> dict:
    """The contract's alarm: the VM's compute.instance.update events with state error."""
    return client.alarm.create({
        "name": name, "type": "event", "severity": "critical", "repeat_actions": repeat,
        "alarm_actions": [action_url],
        "event_rule": {"event_type": INSTANCE_UPDATE, "query": [
            {"field": "traits.instance_id", "op": "eq", "value": vm, "type": "string"},
            {"field": "traits.state", "op": "eq", "value": "error", "type": "string"}]},
    })


def vm_error(vm: str, project: str) -> dict:
    return instance_update(vm, "error", "compute-1", project)


@pytest.fixture(scope="module")
def consumer():
    receiver = Consumer().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def notifier(tmp_path_factory):
    process = NotifierProcess(tmp_path_factory.mktemp("notifier")).start()
    yield process
    if process.process.poll() is None:
        assert process.stop() == 0, process.log()


@pytest.fixture
def publisher(notifier):
    producer = HttpPublisher(notifier.url, SERVICE_TOKEN)
    yield producer
    producer.close()


def test_a_vnfm_manages_and_receives_an_event_alarm_with_aodhclient(notifier, consumer,
                                                                   publisher):
    tenant, vm = project(), str(uuid.uuid4())
    client = aodh(notifier.url, tenant)
    created = create_vm_alarm(client, "vm1-error", vm, consumer.url)
    alarm_id = created["alarm_id"]
    assert created["state"] == "insufficient data" and created["project_id"] == tenant
    assert created["event_rule"]["event_type"] == INSTANCE_UPDATE
    assert {q["field"] for q in created["event_rule"]["query"]} == {"traits.instance_id",
                                                                   "traits.state"}
    for key in ("ok_actions", "insufficient_data_actions", "time_constraints", "user_id",
                "timestamp", "state_timestamp", "state_reason", "description", "enabled"):
        assert key in created
    assert client.alarm.get(alarm_id) == created
    for filters in ({"name": "vm1-error"}, {"type": "event"}, {"state": "insufficient data"},
                    {"alarm_id": alarm_id}):
        assert [a["alarm_id"] for a in client.alarm.list(filters=filters)] == [alarm_id]
    assert client.alarm.list(filters={"state": "alarm"}) == []
    assert client.alarm.get_state(alarm_id) == "insufficient data"

    publisher.publish([vm_error(vm, tenant)])
    [body] = consumer.wait_for(alarm_id)
    assert body["alarm_name"] == "vm1-error" and body["severity"] == "critical"
    assert (body["previous"], body["current"]) == ("insufficient data", "alarm")
    assert body["reason_data"]["type"] == "event"
    assert ["instance_id", 1, vm] in body["reason_data"]["event"]["traits"]
    assert client.alarm.get_state(alarm_id) == "alarm"

    # repeat_actions=false: in "alarm" already, the next failure does not fire again ...
    publisher.publish([vm_error(vm, tenant)])
    time.sleep(0.5)
    assert len(consumer.alarms(alarm_id)) == 1
    # ... until the VNFM resets it to ok.
    assert client.alarm.set_state(alarm_id, "ok") == "ok"
    publisher.publish([vm_error(vm, tenant)])
    second = consumer.wait_for(alarm_id, 2)[1]
    assert second["previous"] == "ok"

    history = client.alarm_history.get(alarm_id)
    assert [h["type"] for h in history] == ["state transition"] * 3 + ["creation"]
    assert json.loads(history[0]["detail"])["state"] == "alarm"

    updated = client.alarm.update(alarm_id, {"severity": "moderate", "repeat_actions": True})
    assert (updated["severity"], updated["repeat_actions"], updated["state"]) == (
        "moderate", True, "alarm")

    checkpoints = [c for c in profiler.read(str(notifier.profile))
                   if c.get("alarm_id") == alarm_id]
    t07 = [c for c in checkpoints if c["checkpoint"] == "T07"]
    t08 = [c for c in checkpoints if c["checkpoint"] == "T08"]
    assert len(t07) == 2 and len(t08) == 2 and t07[0]["instance_id"] == vm
    assert t07[0]["time"] <= t08[0]["time"]

    client.alarm.delete(alarm_id)
    assert client.alarm.list(filters={"name": "vm1-error"}) == []
    with pytest.raises(aodh_exc.NotFound):
        client.alarm.get(alarm_id)


def test_an_alarm_of_another_project_is_neither_fired_nor_shown(notifier, consumer,
                                                                publisher):
    mine, theirs, vm = project(), project(), str(uuid.uuid4())
    owner = aodh(notifier.url, mine, roles="member")
    alarm_id = create_vm_alarm(owner, "mine", vm, consumer.url)["alarm_id"]
    stranger = aodh(notifier.url, theirs, roles="member")
    assert stranger.alarm.list() == []
    with pytest.raises(aodh_exc.NotFound):
        stranger.alarm.get(alarm_id)
    with pytest.raises(aodh_exc.NotFound):
        stranger.alarm.set_state(alarm_id, "ok")
    with pytest.raises(aodh_exc.Unauthorized, match="Not Authorized to access project"):
        stranger.alarm.create({"name": "x", "type": "event", "project_id": mine,
                               "event_rule": {"event_type": INSTANCE_UPDATE}})

    publisher.publish([vm_error(vm, theirs)])  # the same VM id, but another tenant's event
    time.sleep(0.5)
    assert consumer.alarms(alarm_id) == []
    assert owner.alarm.get_state(alarm_id) == "insufficient data"
    publisher.publish([vm_error(vm, mine)])
    consumer.wait_for(alarm_id)


def test_bad_bodies_are_refused_with_400_naming_the_field(notifier):
    events_url = notifier.url + "/v1/events"
    service = {"X-Auth-Token": SERVICE_TOKEN}
    good = vm_error("vm", "p")
    bad = json.loads(json.dumps(good))
    bad["traits"][0] = ["instance_id", 9, "vm"]
    response = requests.post(events_url, json=[good, good, good, bad], headers=service,
                             timeout=5)
    assert response.status_code == 400 and response.json()["field"] == "body[3].traits[0]"
    response = requests.post(events_url, data=b"{not json", headers=service, timeout=5)
    assert response.status_code == 400 and response.json()["field"] == "body"
    response = requests.post(events_url, json=[{**good, "event_type": ""}], headers=service,
                             timeout=5)
    assert response.json()["field"] == "body[0].event_type"

    tenant = project()
    client = aodh(notifier.url, tenant)
    rule = {"event_type": INSTANCE_UPDATE,
            "query": [{"field": "traits.instance_id", "op": "eq", "value": "vm"}]}
    cases = [
        ({"event_rule": {"query": []}}, "event_rule.event_type"),
        ({"event_rule": {**rule, "query": [{"field": "traits.state", "op": "like",
                                            "value": "err%"}]}}, "event_rule.query[0].op"),
        ({"event_rule": {**rule, "query": [{"field": "traits.load", "op": "gt",
                                            "value": "x", "type": "integer"}]}},
         "event_rule.query[0].value"),
        ({"type": "threshold", "threshold_rule": {"meter_name": "cpu"}}, "type"),
        ({"type": "sideways"}, "type"),
        ({"alarm_actions": ["ftp://consumer/failure"]}, "alarm_actions[0]"),
        ({"alarm_actions": ["http://"]}, "alarm_actions[0]"),
        ({"severity": "apocalyptic"}, "severity"),
        ({"bogus": 1}, "bogus"),
    ]
    headers = {"X-Auth-Token": token_of(tenant)}  # an admin of its project
    for change, field in cases:
        body = {"name": f"bad-{uuid.uuid4().hex[:6]}", "type": "event", "event_rule": rule,
                **change}
        response = requests.post(notifier.url + "/v2/alarms", json=body, headers=headers,
                                 timeout=5)
        assert (response.status_code, response.json().get("field")) == (400, field), \
            (change, response.text)
        # aodhclient shows Aodh's faultstring, which names the field too.
        with pytest.raises(aodh_exc.BadRequest, match=field.replace("[", r"\[")):
            client.alarm.create(dict(body))
    response = requests.put(notifier.url + "/v2/alarms/none/state", json="ok", headers=headers,
                            timeout=5)
    assert response.status_code == 404
    refused = requests.post(notifier.url + "/v2/alarms", headers=headers, timeout=5,
                            json={"name": "t", "type": "threshold"}).json()
    assert "evaluates event alarms only" in refused["error"]
    assert refused["error_message"]["faultstring"] == refused["error"]
    response = requests.get(notifier.url + "/v2/alarms", timeout=5)
    assert response.status_code == 401 and response.json()["field"] == "X-Auth-Token"


def aodh_cli(url: str, tenant: str, *argv: str) -> subprocess.CompletedProcess:
    """The aodh CLI with the project's token (keystoneauth1's admin_token plugin; the token
    in its environment, OS_TOKEN, not on its command line)."""
    command = [str(AODH_CLI), "--os-auth-type", "admin_token", "--os-endpoint", url,
               "--aodh-endpoint", url, *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OS_TOKEN": token_of(tenant)})


def test_the_aodh_cli_creates_shows_and_resets_an_event_alarm(notifier, consumer, publisher):
    tenant, vm = project(), str(uuid.uuid4())
    result = aodh_cli(notifier.url, tenant, "alarm", "create", "--type", "event",
                      "--name", "cli-alarm", "--event-type", INSTANCE_UPDATE,
                      "--query", f"traits.instance_id={vm};traits.state=string::error",
                      "--alarm-action", consumer.url, "--repeat-actions", "false",
                      "--severity", "critical", "-f", "json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    alarm_id = created["alarm_id"]
    assert created["state"] == "insufficient data" and created["event_type"] == INSTANCE_UPDATE
    assert f"traits.instance_id = {vm}" in created["query"]

    publisher.publish([vm_error(vm, tenant)])
    consumer.wait_for(alarm_id)
    # By name: the CLI looks it up with Aodh's complex query (POST /v2/query/alarms).
    shown = aodh_cli(notifier.url, tenant, "alarm", "show", "--name", "cli-alarm", "-f", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "alarm"
    reset = aodh_cli(notifier.url, tenant, "alarm", "state", "set", "--state", "ok", alarm_id)
    assert reset.returncode == 0 and "ok" in reset.stdout, reset.stderr
    refused = aodh_cli(notifier.url, tenant, "alarm", "create", "--type", "event", "--name",
                       "no-type", "--alarm-action", consumer.url)
    assert refused.returncode != 0 and "event_rule.event_type" in refused.stderr


def test_a_consumer_down_for_10_s_still_gets_the_alarm_once(notifier, publisher):
    tenant, vm = project(), str(uuid.uuid4())
    late = Consumer()  # its port stays closed for now: connections are refused
    alarm_id = create_vm_alarm(aodh(notifier.url, tenant), "late", vm, late.url)["alarm_id"]
    publisher.publish([vm_error(vm, tenant)])
    time.sleep(10)
    late.start()
    try:
        [body] = late.wait_for(alarm_id, timeout_s=3)
        assert body["current"] == "alarm"
        time.sleep(1)
        assert len(late.alarms(alarm_id)) == 1
        request_ids = {headers.get("X-OpenStack-Request-Id") for _, _, headers, _ in
                       late.received}
        assert len(request_ids) == 1 and None not in request_ids
    finally:
        late.stop()
    log = notifier.log()
    assert f"alarm {alarm_id}: action to {late.url} failed (ConnectionRefusedError" in log
    assert "X-Auth-Token" not in log


def test_a_restarted_or_crashed_notifier_keeps_its_alarms_and_their_state(notifier, consumer,
                                                                          publisher):
    tenant, vm = project(), str(uuid.uuid4())
    client = aodh(notifier.url, tenant)
    alarm_id = create_vm_alarm(client, "durable", vm, consumer.url)["alarm_id"]
    publisher.publish([vm_error(vm, tenant)])
    consumer.wait_for(alarm_id)
    assert notifier.stop() == 0, notifier.log()  # SIGTERM: a graceful, bounded stop
    notifier.start()
    assert client.alarm.get(alarm_id)["state"] == "alarm"
    publisher.publish([vm_error(vm, tenant)])  # still in alarm: silent until reset
    time.sleep(0.5)
    assert len(consumer.alarms(alarm_id)) == 1

    client.alarm.set_state(alarm_id, "ok")
    publisher.publish([vm_error(vm, tenant)])
    consumer.wait_for(alarm_id, 2)
    time.sleep(0.3)  # the state is committed just after the POST is dispatched
    notifier.kill()  # SIGKILL: what was committed must survive a crash too
    notifier.start()
    assert re.search(r"notifier: [1-9][0-9]* alarms loaded", notifier.log())
    assert client.alarm.get(alarm_id)["state"] == "alarm"
    assert [h["type"] for h in client.alarm_history.get(alarm_id)] == [
        "state transition", "state transition", "state transition", "creation"]


def test_2000_alarms_firing_at_once_are_dispatched_concurrently(tmp_path):
    slow = Consumer(delay_s=0.02).start()  # 2000 x 20 ms = 40 s if sent one after another
    config = NotifierConfig(database=f"sqlite:///{tmp_path}/notifier.db", action_workers=32,
                            token="s3cret")
    service = EmbeddedNotifier(config).start()
    server = HttpServer(create_app(service, token="s3cret"), port=0, name="notifier").start()
    try:
        tenant = project()
        for i in range(2000):
            service.create_alarm({
                "alarm_id": str(uuid.uuid4()), "name": f"vm-{i}", "type": "event",
                "state": "insufficient data", "severity": "critical", "enabled": True,
                "repeat_actions": False, "project_id": tenant, "user_id": "u",
                "alarm_actions": [slow.url], "timestamp": "2026-11-21T10:00:00",
                "event_rule": {"event_type": INSTANCE_UPDATE, "query": [
                    {"field": "traits.instance_id", "op": "eq", "value": f"vm-{i}"}]}},
                "u", tenant)
        events = [vm_error(f"vm-{i}", tenant) for i in range(2000)]
        url = server.url + "/v1/events"
        http = requests.Session()
        assert http.post(url, json=events[:1], timeout=5).status_code == 401
        started = time.monotonic()
        # Two requests: one may carry at most max_events_per_request (1000) events.
        for part in (events[:1000], events[1000:]):
            response = http.post(url, json=part, headers={"X-Auth-Token": "s3cret"}, timeout=5)
            assert response.status_code == 202, response.text
        answered_s = time.monotonic() - started
        deadline = time.monotonic() + 15
        while len(slow.alarms()) < 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
        took_s = time.monotonic() - started
        print(f"2000 alarms: accepted in {answered_s * 1000:.0f} ms, all POSTs received in "
              f"{took_s:.2f} s, {slow.max_active} at once")
        assert len(slow.alarms()) == 2000 and len({b["alarm_id"] for b in slow.alarms()}) == 2000
        assert slow.max_active >= 16 and took_s < 10
        assert answered_s < 1.0, "the producer does not wait for the alarm actions"
        # The /v2 API takes the token too: the service's is the admin of project service.
        listed = http.get(server.url + "/v2/alarms", params={
            "limit": 5, "q.field": "project_id", "q.op": "eq", "q.value": tenant},
            headers={"X-Auth-Token": "s3cret"}, timeout=5)
        assert listed.status_code == 200 and len(listed.json()) == 5
    finally:
        server.stop()
        service.stop()
        slow.stop()


def test_bad_configuration_exits_2_naming_the_field_and_help_explains(tmp_path):
    run = [sys.executable, "-m", "notifier.cli"]
    result = subprocess.run([*run, "--action-workers", "0"], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "[notifier] action_workers: must be >= 1, got 0 (in flags)" in result.stderr
    config = tmp_path / "doctor.conf"
    config.write_text("[notifier]\nport = eighty\n")
    result = subprocess.run([*run, "--config-file", str(config)], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "[notifier] port:" in result.stderr
    assert str(config) in result.stderr
    result = subprocess.run([*run, "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0
    for text in ("aodh-noauth", "/v1/events", "--action-retry-for-s", "[notifier]"):
        assert text in result.stdout
