"""The parts call each other with Keystone tokens (``keystone_cloud``), against a real
throw-away Keystone (testkit.keystone_server), every part a real process on 127.0.0.1 with
``auth_strategy = keystone``.

- the monitor's InspectorSender, with an admin's cloud, delivers to the inspector; a
  member's cloud is refused (403, logged, not claimed as delivered); a cloud whose password
  Keystone refuses never gets anything through; a revoked token is replaced after the 401;
- the inspector's http notifier publisher, with an admin's cloud;
- the consumer takes an alarm signed with alarm_secret (no token) and a trust token, and
  refuses an unsigned tokenless one; /failures still needs a token;
- end to end: monitor sender -> inspector -> controller (force-down, reset) -> controller's
  notifications -> notifier -> signed alarm -> consumer, which recreates the VM through the
  controller: every call carries a Keystone token of the caller's cloud, but the alarm,
  which carries none.

Run on its own: ``pytest --noconftest -p no:cacheprovider tests/functional/
test_keystone_calls.py`` (the functional conftest's fixtures need root; these do not).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from doctor.events import HOST_DOWN, HostEvent, instance_update
from doctor.signals import terminate_all
from doctor.signing import SIGNATURE_HEADER, sign
from monitor.sender import Delivery, InspectorSender
from testkit.eventsink import free_port
from testkit.keystone_server import Credentials, KeystoneAdmin
from tests.waiting import wait_answering, wait_until

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 10
WAIT_S = 30  # a real Keystone issues and validates the tokens of every step


@dataclass
class Users:
    url: str
    admin: KeystoneAdmin
    service: Credentials  # the parts' service user, validating tokens (admin on service)
    ops: Credentials  # the cloud the parts call each other with (admin on service)
    alice: Credentials  # member of project A: owns the alarm, her VMs
    aodh: Credentials  # the trustee of trust+http alarms
    clouds_yaml: Path
    secrets: tuple[str, ...]  # never in a log


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def cloud_entry(name: str, url: str, user: Credentials, password: str) -> str:
    return (f"  {name}:\n    auth:\n      auth_url: {url}\n      username: {user.username}\n"
            f"      password: {password}\n      project_name: {user.project_name}\n"
            f"      user_domain_name: Default\n      project_domain_name: Default\n"
            f"    identity_api_version: 3\n")


@pytest.fixture(scope="module")
def users(keystone, tmp_path_factory):
    admin = keystone.admin()
    service = admin.create_project("service")
    project_a = admin.create_project("project-a")
    made = Users(
        url=keystone.url, admin=admin,
        service=admin.create_user("doctor", service, "service", roles=("admin",)),
        ops=admin.create_user("doctor-ops", service, "service", roles=("admin",)),
        alice=admin.create_user("alice", project_a, "project-a"),
        aodh=admin.create_user("aodh", service, "service", roles=("member",)),
        clouds_yaml=tmp_path_factory.mktemp("clouds") / "clouds.yaml", secrets=())
    wrong = "not-" + made.ops.password
    write_private(made.clouds_yaml, "clouds:\n"
                  + cloud_entry("ops", keystone.url, made.ops, made.ops.password)
                  + cloud_entry("member", keystone.url, made.alice, made.alice.password)
                  + cloud_entry("badpass", keystone.url, made.ops, wrong))
    made.secrets = (made.service.password, made.ops.password, made.alice.password, wrong)
    return made


@pytest.fixture
def clouds(users, monkeypatch):
    """This process's clouds.yaml (for the in-process senders)."""
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(users.clouds_yaml))
    for name in [n for n in os.environ if n.startswith("OS_") and n != "OS_CLIENT_CONFIG_FILE"]:
        monkeypatch.delenv(name)
    return users


@dataclass
class Part:
    name: str
    url: str
    process: subprocess.Popen
    log: Path


def start(users: Users, workdir: Path, section: str, argv: list[str], extra: str = "",
          port: int = 0, secrets: dict[str, str] | None = None) -> Part:
    """``python -m <argv>`` with ``auth_strategy = keystone`` and ``keystone_cloud = ops``
    (when the part calls others) in its [section]; the passwords and ``secrets`` (option ->
    value) in its environment, never on its command line; the clouds.yaml its
    OS_CLIENT_CONFIG_FILE."""
    port = port or free_port()
    config = workdir / f"{section}.conf"
    config.write_text(
        f"[{section}]\nauth_strategy = keystone\nkeystone_auth_url = {users.url}\n"
        f"keystone_username = {users.service.username}\nkeystone_project_name = service\n"
        f"keystone_token_cache_s = 0\n{extra}")
    log = workdir / f"{section}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update({"DOCTOR_STATE_DIR": str(workdir / f"{section}-state"),
                "OS_CLIENT_CONFIG_FILE": str(users.clouds_yaml),
                f"DOCTOR_{section.upper()}_KEYSTONE_PASSWORD": users.service.password})
    for name, value in (secrets or {}).items():
        env[f"DOCTOR_{section.upper()}_{name.upper()}"] = value
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *argv, "--config-file", str(config), "--port", str(port),
             "--log-level", "DEBUG"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_answering(process, url + "/", log, section, timeout_s=30)
    return Part(section, url, process, log)


def stop(part: Part, users: Users, tokens: list[str]) -> None:
    terminate_all([part.process])
    text = part.log.read_text()
    for secret in (*users.secrets, *tokens):  # no password nor token in any log
        assert secret not in text, part.name


@dataclass
class Pipeline:
    parts: dict[str, Part]
    alarm_secret: str
    tokens: list[str]  # tokens seen by the test, checked absent from every log


@pytest.fixture(scope="module")
def pipeline(users, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("keystone-calls")
    alarm_secret = uuid.uuid4().hex
    parts: dict[str, Part] = {}
    tokens: list[str] = []
    controller_port, inspector_port = free_port(), free_port()
    try:
        parts["notifier"] = start(users, workdir, "notifier", ["notifier.cli"],
                                  secrets={"action_secret": alarm_secret})
        parts["consumer"] = start(
            users, workdir, "consumer", ["consumer.cli"],
            f"keystone_alarm_project_id = {users.alice.project_id}\nkeystone_cloud = ops\n"
            f"recovery = recreate\nrecovery_confirm_s = 20\n"
            f"controller_url = http://127.0.0.1:{controller_port}\n",
            secrets={"alarm_secret": alarm_secret})
        parts["controller"] = start(
            users, workdir, "controller", ["controller.cli", "serve", "--database",
                                           f"sqlite:///{workdir}/controller.db"],
            f"keystone_cloud = ops\nnotify_urls = {parts['notifier'].url}\n",
            port=controller_port)
        parts["inspector"] = start(
            users, workdir, "inspector", ["inspector.cli", "--database",
                                          f"sqlite:///{workdir}/inspector.db"],
            f"keystone_cloud = ops\ncontroller_url = http://127.0.0.1:{controller_port}\n"
            f"notifier_url = {parts['notifier'].url}\nshortcut = false\n"
            f"resync_interval_s = 1\n", port=inspector_port)
        yield Pipeline(parts, alarm_secret, tokens)
    finally:
        for part in reversed(list(parts.values())):
            stop(part, users, tokens)


def call(method: str, url: str, token: str | None = None, **kwargs) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["X-Auth-Token"] = token
    return requests.request(method, url, headers=headers, timeout=TIMEOUT_S, **kwargs)


def sender_of(pipeline: Pipeline, cloud: str, deliveries: list[Delivery]) -> InspectorSender:
    from doctor.openstack import outgoing_token

    sender = InspectorSender(pipeline.parts["inspector"].url,
                             outgoing_token("monitor", cloud, ""), timeout_s=TIMEOUT_S,
                             retry_initial_s=0.05, retry_max_s=0.5,
                             on_delivered=deliveries.append)
    sender.start()
    return sender


def test_a_monitor_with_an_admins_cloud_delivers_its_event_to_a_keystone_inspector(
        pipeline, clouds, caplog):
    caplog.set_level(logging.INFO, logger="monitor.sender")
    deliveries: list[Delivery] = []
    sender = sender_of(pipeline, "ops", deliveries)
    try:
        event = HostEvent.new(HOST_DOWN, "compute-ks-sender", "ks-monitor")
        sender.submit(event)
        wait_until(lambda: deliveries, WAIT_S, "the delivery")
        pipeline.tokens.append(sender.session._token_source())  # type: ignore[misc]
    finally:
        sender.stop()
    assert [(d.event.monitor_event_id, d.status) for d in deliveries] == \
        [(event.monitor_event_id, 202)]
    assert f"inspector accepted {event.monitor_event_id}" in caplog.text
    # the inspector took it: it knows the host, and its state is the event's
    hosts = call("GET", pipeline.parts["inspector"].url + "/hosts",
                 clouds.admin.token).json()["hosts"]
    assert "compute-ks-sender" in {h["name"] for h in hosts}
    for secret in (*clouds.secrets, *pipeline.tokens):
        assert secret not in caplog.text


def test_a_members_cloud_is_refused_logged_and_not_claimed_delivered(pipeline, clouds, caplog):
    caplog.set_level(logging.INFO, logger="monitor.sender")
    deliveries: list[Delivery] = []
    sender = sender_of(pipeline, "member", deliveries)
    try:
        event = HostEvent.new(HOST_DOWN, "compute-ks-member", "ks-monitor")
        sender.submit(event)
        wait_until(lambda: deliveries, WAIT_S, "the refusal")
    finally:
        sender.stop()
    assert [d.status for d in deliveries] == [403]
    assert f"inspector refused {event.monitor_event_id} with HTTP 403" in caplog.text
    assert "inspector:events:create" in caplog.text  # the inspector's reason: its rule
    assert "inspector accepted" not in caplog.text and "stopped before" not in caplog.text
    hosts = call("GET", pipeline.parts["inspector"].url + "/hosts",
                 clouds.admin.token).json()["hosts"]
    assert "compute-ks-member" not in {h["name"] for h in hosts}


def test_a_cloud_whose_password_keystone_refuses_gets_nothing_through(pipeline, clouds,
                                                                      caplog):
    caplog.set_level(logging.INFO, logger="monitor.sender")
    deliveries: list[Delivery] = []
    sender = sender_of(pipeline, "badpass", deliveries)
    event = HostEvent.new(HOST_DOWN, "compute-ks-badpass", "ks-monitor")
    sender.submit(event)
    wait_until(lambda: "no token to send" in caplog.text, WAIT_S, "the failed attempt")
    sender.stop(timeout_s=0.5)
    # retried as any failure (no answer), given up at stop: never delivered, never refused
    assert [d.status for d in deliveries] == [None]
    assert "cloud badpass: no Keystone token: Unauthorized" in caplog.text
    assert f"inspector accepted {event.monitor_event_id} (HTTP" not in caplog.text
    assert "inspector refused" not in caplog.text
    assert f"stopped before the inspector accepted {event.monitor_event_id}" in caplog.text
    for secret in clouds.secrets:
        assert secret not in caplog.text


def test_a_revoked_token_is_answered_401_then_replaced_and_the_event_delivered(
        pipeline, clouds):
    deliveries: list[Delivery] = []
    sender = sender_of(pipeline, "ops", deliveries)
    source = sender.session._token_source
    try:
        sender.submit(HostEvent.new(HOST_DOWN, "compute-ks-revoke-1", "ks-monitor"))
        wait_until(lambda: deliveries, WAIT_S, "the first delivery")
        first = source()  # type: ignore[misc]
        clouds.admin.revoke(first)  # the inspector caches no token: it sees this at once
        sender.submit(HostEvent.new(HOST_DOWN, "compute-ks-revoke-2", "ks-monitor"))
        wait_until(lambda: len(deliveries) == 2, WAIT_S, "the second delivery")
        second = source()  # type: ignore[misc]
    finally:
        sender.stop()
    pipeline.tokens.extend([first, second])
    assert [d.status for d in deliveries] == [202, 202]
    assert deliveries[1].attempts == 1  # the 401's retry is inside one attempt
    assert second != first


def test_the_inspectors_notifier_publisher_sends_its_clouds_token(pipeline, clouds):
    from inspector.config import InspectorConfig
    from notifier import drivers
    from notifier.base import PublishError

    url = pipeline.parts["notifier"].url
    event = [instance_update(str(uuid.uuid4()), "error", "compute-ks-pub",
                             clouds.alice.project_id)]
    for cloud, refused in (("ops", None), ("member", "notifier:events:create"), ("", "401")):
        options = InspectorConfig(auth_strategy="noauth", notifier_url=url,
                                  keystone_cloud=cloud, notifier_token="not-keystones")
        publisher = drivers.http(options)
        try:
            if refused is None:
                publisher.publish(event)
            else:
                with pytest.raises(PublishError, match=refused):
                    publisher.publish(event)
        finally:
            publisher.close()


def alarm_payload(instance_id: str = "") -> dict:
    event = instance_update(instance_id or str(uuid.uuid4()), "error", "compute-1", "tenant")
    return {"alarm_name": "doctor-alarm", "alarm_id": str(uuid.uuid4()), "severity": "moderate",
            "previous": "insufficient data", "current": "alarm", "reason": "event",
            "reason_data": {"type": "event", "event": event}}


def test_the_keystone_consumer_takes_a_signed_alarm_or_a_trust_token_and_refuses_the_rest(
        pipeline, users):
    url = pipeline.parts["consumer"].url
    alice = users.admin.token_for(users.alice)
    pipeline.tokens.append(alice)
    signed = alarm_payload()
    body = json.dumps(signed).encode()
    taken = call("POST", url + "/failure", data=body, headers={
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(pipeline.alarm_secret, body)})
    assert taken.status_code == 200, taken.text
    trust_token = users.admin.trust_token(users.alice, alice, users.aodh)
    pipeline.tokens.append(trust_token)
    trusted = alarm_payload()
    assert call("POST", url + "/failure", trust_token, json=trusted).status_code == 200
    refused = []
    for headers in ({}, {SIGNATURE_HEADER: sign("another secret", body)},
                    {"X-Auth-Token": "gAAAAAB-garbage"}):
        answer = call("POST", url + "/failure", data=body,
                      headers={"Content-Type": "application/json", **headers})
        refused.append((answer.status_code, answer.headers.get("WWW-Authenticate")))
    assert refused == [(401, f'Keystone uri="{users.url}"')] * 3
    # a signature opens only the alarm endpoint
    listed = call("GET", url + "/failures",
                  headers={SIGNATURE_HEADER: sign(pipeline.alarm_secret, b"")})
    assert listed.status_code == 401
    received = {n["alarm_id"] for n in call("GET", url + "/failures", alice).json()}
    assert {signed["alarm_id"], trusted["alarm_id"]} <= received


def test_a_keystone_pipeline_talks_end_to_end(pipeline, clouds):
    parts, admin = pipeline.parts, clouds.admin.token
    alice = clouds.admin.token_for(clouds.alice)
    pipeline.tokens.append(alice)
    controller = parts["controller"].url
    project = clouds.alice.project_id
    created = call("POST", controller + "/v1/servers", admin, json={
        "name": "vm-e2e", "project_id": project, "host": "compute-e2e-a"})
    assert created.status_code == 201, created.text
    failed_id = created.json()["server"]["id"]
    assert call("POST", controller + "/v1/servers", admin, json={
        "name": "vm-spare", "project_id": project, "host": "compute-e2e-b"}).status_code == 201
    consumer = parts["consumer"].url + "/failure"
    alarm = call("POST", parts["notifier"].url + "/v2/alarms", alice, json={
        "name": "e2e", "type": "event", "alarm_actions": [consumer],
        "event_rule": {"event_type": "compute.instance.update", "query": [
            {"field": "traits.instance_id", "op": "eq", "value": failed_id,
             "type": "string"}]}})
    assert alarm.status_code == 201, alarm.text
    # the inspector loads its host map from the controller with its cloud's token
    wait_until(lambda: any(
        h["name"] == "compute-e2e-a" and h.get("servers")
        for h in call("GET", parts["inspector"].url + "/hosts", admin).json()["hosts"]),
        WAIT_S, "the inspector's host map")
    deliveries: list[Delivery] = []
    sender = sender_of(pipeline, "ops", deliveries)
    try:
        sender.submit(HostEvent.new(HOST_DOWN, "compute-e2e-a", "ks-monitor"))
        wait_until(lambda: deliveries, WAIT_S, "the delivery")
    finally:
        sender.stop()
    assert deliveries[0].status == 202
    # inspector -> controller: forced down, VM in error; controller -> notifier -> consumer
    received = wait_until(lambda: [n for n in call(
        "GET", parts["consumer"].url + "/failures", alice).json()
        if n["instance_id"] == failed_id], WAIT_S, "the alarm at the consumer")
    assert received[0]["alarm_id"] == alarm.json()["alarm_id"]
    hosts = {h["name"]: h for h in call("GET", controller + "/v1/hosts", admin).json()["hosts"]}
    assert hosts["compute-e2e-a"]["forced_down"] is True
    # consumer -> controller: the VM recreated on the healthy host, the failed one deleted
    def recreated():
        servers = call("GET", controller + "/v1/servers", admin).json()["servers"]
        if failed_id in {s["id"] for s in servers}:
            return None
        return [s for s in servers if s["name"] == "vm-e2e"]

    replacement = wait_until(recreated, WAIT_S, "the recreated VM")
    assert [s["host"] for s in replacement] == ["compute-e2e-b"]
