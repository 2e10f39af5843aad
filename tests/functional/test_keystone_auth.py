"""``auth_strategy = keystone`` against a real Keystone (testkit.keystone_server).

Every part with a REST API runs as a real process over real HTTP on 127.0.0.1, its tokens
validated by keystonemiddleware against a throw-away Keystone 30, its rules oslo.policy's
defaults. No namespaces: these run without root. Needs the Keystone venv
(``tools/testbed/openstack.sh install``); in CI its absence is a failure.
"""

from __future__ import annotations

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
from testkit.eventsink import free_port
from testkit.keystone_server import Credentials, KeystoneAdmin
from tests.waiting import wait_answering

ROOT = Path(__file__).resolve().parents[2]
GARBAGE = "gAAAAAB-not-a-token-" + "x" * 100
TIMEOUT_S = 10


@dataclass
class Cloud:
    url: str
    admin: KeystoneAdmin
    service: Credentials  # the parts' service user (admin on project service)
    alice: Credentials  # member of project A
    bob: Credentials  # member of project B
    aodh: Credentials  # the trustee of trust+http alarms (as Aodh's service user)

    @property
    def admin_token(self) -> str:
        return self.admin.token


@pytest.fixture(scope="module")
def cloud(keystone):
    admin = keystone.admin()
    service = admin.create_project("service")
    project_a, project_b = admin.create_project("project-a"), admin.create_project("project-b")
    return Cloud(
        url=keystone.url, admin=admin,
        service=admin.create_user("doctor", service, "service", roles=("admin",)),
        alice=admin.create_user("alice", project_a, "project-a"),
        bob=admin.create_user("bob", project_b, "project-b"),
        aodh=admin.create_user("aodh", service, "service", roles=("member",)))


@dataclass
class Part:
    name: str
    url: str
    process: subprocess.Popen
    log: Path


def start_part(cloud: Cloud, workdir: Path, section: str, argv: list[str],
               extra: str = "") -> Part:
    """``python -m <argv>`` with ``auth_strategy = keystone`` in its config file's
    [section] (no token cache: a revoked token is refused at once), the service user's
    password in its environment."""
    port = free_port()
    config = workdir / f"{section}.conf"
    config.write_text(
        f"[{section}]\nauth_strategy = keystone\nkeystone_auth_url = {cloud.url}\n"
        f"keystone_username = {cloud.service.username}\nkeystone_project_name = service\n"
        f"keystone_token_cache_s = 0\n{extra}")
    log = workdir / f"{section}.log"
    env = {**os.environ, "DOCTOR_STATE_DIR": str(workdir / f"{section}-state"),
           f"DOCTOR_{section.upper()}_KEYSTONE_PASSWORD": cloud.service.password}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *argv, "--config-file", str(config), "--port", str(port)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_answering(process, url + "/", log, section, timeout_s=30)
    return Part(section, url, process, log)


def stop(part: Part, cloud: Cloud) -> None:
    terminate_all([part.process])
    text = part.log.read_text()
    assert cloud.service.password not in text  # the service user's password is never logged


@pytest.fixture(scope="module")
def parts(cloud, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("keystone-parts")
    started: dict[str, Part] = {}
    try:
        started["inspector"] = start_part(cloud, workdir, "inspector", [
            "inspector.cli", "--controller-url", f"http://127.0.0.1:{free_port()}",
            "--resync-interval-s", "0", "--database", f"sqlite:///{workdir}/inspector.db"])
        started["controller"] = start_part(cloud, workdir, "controller", [
            "controller.cli", "serve", "--database", f"sqlite:///{workdir}/controller.db"])
        started["notifier"] = start_part(cloud, workdir, "notifier", ["notifier.cli"])
        started["consumer"] = start_part(
            cloud, workdir, "consumer", ["consumer.cli"],
            f"keystone_alarm_project_id = {cloud.alice.project_id}\n")
        started["vim"] = start_part(cloud, workdir, "vim", ["vim.cli"])
        yield started
    finally:
        for part in started.values():
            stop(part, cloud)


def call(method: str, url: str, token: str | None = None, **kwargs) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["X-Auth-Token"] = token
    return requests.request(method, url, headers=headers, timeout=TIMEOUT_S, **kwargs)


# A read of each part that an admin token may do.
READS = {"inspector": "/hosts", "controller": "/v1/hosts", "notifier": "/v2/alarms",
         "consumer": "/failures", "vim": "/v1/vims"}


@pytest.mark.parametrize("name", sorted(READS))
def test_every_part_answers_401_without_or_with_a_garbage_token_and_an_admin_token_passes(
        parts, cloud, name):
    url = parts[name].url + READS[name]
    for token in (None, GARBAGE):
        response = call("GET", url, token)
        assert response.status_code == 401, (token, response.text)
        assert response.headers["WWW-Authenticate"] == f'Keystone uri="{cloud.url}"'
    # A forged identity without a token is no identity.
    forged = call("GET", url, headers={"X-Identity-Status": "Confirmed", "X-Roles": "admin",
                                       "X-Project-Id": cloud.alice.project_id})
    assert forged.status_code == 401
    accepted = call("GET", url, cloud.admin_token)
    assert accepted.status_code == 200, accepted.text


def host_events() -> list[dict]:
    return [HostEvent.new(HOST_DOWN, "compute-9", "keystone-test").to_doctor()]


def test_a_members_token_is_refused_on_admin_only_calls_and_an_admins_accepted(parts, cloud):
    member = cloud.admin.token_for(cloud.alice)
    host = "compute-ks1"  # the embedded controller knows a host once a server runs on it
    assert call("POST", parts["controller"].url + "/v1/servers", cloud.admin_token, json={
        "name": "vm-admin", "project_id": cloud.alice.project_id, "host": host}
    ).status_code == 201
    notification = [instance_update(str(uuid.uuid4()), "error", host, cloud.alice.project_id)]
    admin_only = [
        ("PUT", parts["inspector"].url + "/events", host_events(), "inspector:events:create",
         202),
        ("PUT", parts["controller"].url + f"/v1/hosts/{host}", {"forced_down": True},
         "controller:hosts:update", 200),
        ("POST", parts["notifier"].url + "/v1/events", notification,
         "notifier:events:create", 202),
        ("GET", parts["vim"].url + "/v1/vims", None, "vim:vims:read", 200),
    ]
    for method, url, body, rule, accepted in admin_only:
        refused = call(method, url, member, json=body)
        assert refused.status_code == 403, (url, refused.text)
        assert rule in refused.text
        assert call(method, url, cloud.admin_token, json=body).status_code == accepted, url
    # The member's change did not happen; the admin's did.
    after = call("GET", parts["controller"].url + "/v1/hosts", cloud.admin_token).json()
    assert {h["name"]: h["forced_down"] for h in after["hosts"]}[host] is True


def test_a_members_token_cannot_reset_a_server_state_but_may_see_its_own_server(parts, cloud):
    url = parts["controller"].url
    member = cloud.admin.token_for(cloud.alice)
    host = "compute-ks2"
    created = call("POST", url + "/v1/servers", member, json={
        "name": "vm-a", "project_id": cloud.alice.project_id, "host": host})
    assert created.status_code == 201, created.text
    server_id = created.json()["server"]["id"]
    assert call("GET", url + f"/v1/servers/{server_id}", member).status_code == 200
    bobs = cloud.admin.token_for(cloud.bob)
    assert call("GET", url + f"/v1/servers/{server_id}", bobs).status_code == 403
    assert call("GET", url + "/v1/servers", bobs).json() == {"servers": []}
    reset = call("POST", url + f"/v1/servers/{server_id}/action", member,
                 json={"reset-state": {"state": "error"}})
    assert reset.status_code == 403 and "controller:servers:reset_state" in reset.text
    assert call("POST", url + f"/v1/servers/{server_id}/action", cloud.admin_token,
                json={"reset-state": {"state": "error"}}).status_code == 202


def alarm_body(name: str, **more) -> dict:
    return {"name": name, "type": "event", "alarm_actions": ["http://127.0.0.1:9/failure"],
            "event_rule": {"event_type": "compute.instance.update", "query": [
                {"field": "traits.instance_id", "op": "eq", "value": "vm-1",
                 "type": "string"}]}, **more}


def test_project_a_cannot_see_or_change_project_bs_alarms_even_with_a_forged_header(
        parts, cloud):
    url = parts["notifier"].url
    alice, bob = cloud.admin.token_for(cloud.alice), cloud.admin.token_for(cloud.bob)
    victim = call("POST", url + "/v2/alarms", bob, json=alarm_body("bobs"))
    assert victim.status_code == 201, victim.text
    victim_id = victim.json()["alarm_id"]
    assert victim.json()["project_id"] == cloud.bob.project_id
    forged = {"X-Project-Id": cloud.bob.project_id, "X-Roles": "admin",
              "X-Identity-Status": "Confirmed"}
    # alice's own alarm lands in her project, whatever the header says
    mine = call("POST", url + "/v2/alarms", alice, json=alarm_body("alices"), headers=forged)
    assert mine.status_code == 201 and mine.json()["project_id"] == cloud.alice.project_id
    listed = call("GET", url + "/v2/alarms", alice, headers=forged).json()
    assert victim_id not in {a["alarm_id"] for a in listed}
    queried = call("POST", url + "/v2/query/alarms", alice, json={}, headers=forged).json()
    assert victim_id not in {a["alarm_id"] for a in queried}
    for method, path, body in [("GET", "", None), ("PUT", "", alarm_body("stolen")),
                               ("PUT", "/state", "ok"), ("GET", "/history", None),
                               ("DELETE", "", None)]:
        response = call(method, f"{url}/v2/alarms/{victim_id}{path}", alice, json=body,
                        headers=forged)
        assert response.status_code == 404, (method, path, response.text)
    # naming project B in the body is an admin's right only
    named = call("POST", url + "/v2/alarms", alice,
                 json=alarm_body("into-b", project_id=cloud.bob.project_id))
    assert named.status_code == 401 and named.json()["field"] == "project_id"  # Aodh's answer
    # bob's alarm is intact; the admin sees every project's alarms
    assert call("GET", f"{url}/v2/alarms/{victim_id}", bob).json()["name"] == "bobs"
    everyone = call("POST", url + "/v2/query/alarms", cloud.admin_token, json={}).json()
    assert {victim_id, mine.json()["alarm_id"]} <= {a["alarm_id"] for a in everyone}
    assert "into-b" not in {a["name"] for a in everyone}


def test_a_revoked_token_gets_401(parts, cloud):
    token = cloud.admin.token_for(cloud.bob)
    url = parts["notifier"].url + "/v2/alarms"
    assert call("GET", url, token).status_code == 200
    cloud.admin.revoke(token)
    response = call("GET", url, token)
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers


def alarm_payload() -> dict:
    instance_id = str(uuid.uuid4())
    event = instance_update(instance_id, "error", "compute-1", "tenant")
    return {"alarm_name": "doctor-alarm", "alarm_id": str(uuid.uuid4()), "severity": "moderate",
            "previous": "insufficient data", "current": "alarm", "reason": "event",
            "reason_data": {"type": "event", "event": event}}


def test_the_consumer_takes_a_trust_token_of_its_project_and_refuses_another_projects(
        parts, cloud):
    url = parts["consumer"].url
    alice = cloud.admin.token_for(cloud.alice)
    # As Aodh's trust+http: the alarm owner (alice, project A) trusts Aodh's user, whose
    # trust-scoped token is of project A.
    trust_token = cloud.admin.trust_token(cloud.alice, alice, cloud.aodh)
    taken = call("POST", url + "/failure", trust_token, json=alarm_payload())
    assert taken.status_code == 200, taken.text
    alarm_id = taken.json()["alarm_id"]
    other = alarm_payload()
    refused = call("POST", url + "/failure", cloud.admin.token_for(cloud.bob), json=other)
    assert refused.status_code == 403 and "consumer:alarms:deliver" in refused.text
    assert call("POST", url + "/failure", None, json=alarm_payload()).status_code == 401
    received = {n["alarm_id"] for n in call("GET", url + "/failures", alice).json()}
    assert alarm_id in received and other["alarm_id"] not in received
