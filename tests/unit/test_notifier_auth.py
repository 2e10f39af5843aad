"""The Notifier with auth_strategy = token (its default): the caller is its token, never a
header; one project cannot read, change or fire another's alarms; POST /v1/events is the
service's. Flask's test client over the real app and service."""

from __future__ import annotations

import os
import stat

import pytest

from doctor.config import ConfigError
from notifier.api import create_app
from notifier.caller import SERVICE, Caller, load_api_tokens, write_api_tokens
from notifier.config import NotifierConfig
from notifier.embedded import EmbeddedNotifier

SERVICE_TOKEN = "the-service-token"
ALICE, BOB = "alice-token-of-project-a", "bob-token-of-project-b"
CALLERS = [("alice", ALICE, Caller("alice", "project-a", frozenset({"member"}))),
           ("bob", BOB, Caller("bob", "project-b", frozenset({"member"})))]


def event_rule(vm: str) -> dict:
    return {"event_type": "compute.instance.update", "query": [
        {"field": "traits.instance_id", "op": "eq", "value": vm, "type": "string"}]}


def alarm_body(name: str, vm: str = "vm-1", action: str = "http://127.0.0.1:9/failure",
               **more) -> dict:
    return {"name": name, "type": "event", "event_rule": event_rule(vm),
            "alarm_actions": [action], **more}


@pytest.fixture
def notifier(tmp_path):
    tokens = str(tmp_path / "api-tokens")
    write_api_tokens(tokens, CALLERS)
    config = NotifierConfig(database=f"sqlite:///{tmp_path}/notifier.db", token=SERVICE_TOKEN,
                            api_tokens_file=tokens)
    assert config.auth_strategy == "token"  # the default
    service = EmbeddedNotifier(config)
    app = create_app(service, config.token, config.auth_strategy,
                     load_api_tokens(tokens, config.token))
    yield service, app.test_client()
    service.stop()


def as_(token: str, **headers: str) -> dict:
    return {"X-Auth-Token": token, **headers}


def test_without_a_known_token_nothing_answers(notifier):
    _service, http = notifier
    for method, path in [("GET", "/"), ("GET", "/v2/alarms"), ("POST", "/v2/alarms"),
                         ("POST", "/v2/query/alarms"), ("GET", "/v2/alarms/x"),
                         ("POST", "/v1/events")]:
        for headers in ({}, {"X-Auth-Token": "guess"},
                        {"X-Project-Id": "project-a", "X-User-Id": "u", "X-Roles": "admin"}):
            response = http.open(path, method=method, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers)
            assert response.json["field"] == "X-Auth-Token"


def test_the_identity_comes_from_the_token_and_a_changed_x_project_id_does_nothing(notifier):
    service, http = notifier
    headers = as_(ALICE, **{"X-Project-Id": "project-b", "X-User-Id": "bob"})
    created = http.post("/v2/alarms", json=alarm_body("a1"), headers=headers)
    assert created.status_code == 201, created.json
    assert (created.json["project_id"], created.json["user_id"]) == ("project-a", "alice")
    bobs = http.post("/v2/alarms", json=alarm_body("b1"), headers=as_(BOB)).json
    assert bobs["project_id"] == "project-b"
    listed = http.get("/v2/alarms", headers=headers).json
    assert [a["name"] for a in listed] == ["a1"]
    # Naming the other project in the body is refused, as Aodh refuses it to a non-admin.
    refused = http.post("/v2/alarms", headers=headers,
                        json=alarm_body("a2", project_id="project-b"))
    assert refused.status_code == 401
    assert {a["name"] for a in service.list_alarms()} == {"a1", "b1"}


def test_a_project_token_cannot_see_change_rearm_or_delete_another_projects_alarm(notifier):
    service, http = notifier
    victim = http.post("/v2/alarms", json=alarm_body("victim"), headers=as_(BOB)).json
    before = service.get_alarm(victim["alarm_id"])
    path = f"/v2/alarms/{victim['alarm_id']}"
    attacker = as_(ALICE, **{"X-Project-Id": "project-b"})
    hijack = {**victim, "alarm_actions": ["http://attacker.example/steal"]}
    for method, url, body in [("GET", path, None), ("PUT", path, hijack),
                              ("DELETE", path, None), ("GET", path + "/state", None),
                              ("PUT", path + "/state", "ok"), ("GET", path + "/history", None)]:
        response = http.open(url, method=method, json=body, headers=attacker)
        assert response.status_code == 404, (method, url, response.json)
    found = http.post("/v2/query/alarms", json={}, headers=attacker).json
    assert found == []
    assert service.get_alarm(victim["alarm_id"]) == before
    assert http.get(path, headers=as_(BOB)).json["alarm_actions"] == victim["alarm_actions"]


def test_x_roles_admin_is_ignored_in_token_mode(notifier):
    _service, http = notifier
    http.post("/v2/alarms", json=alarm_body("theirs"), headers=as_(BOB))
    mine = as_(ALICE, **{"X-Roles": "admin"})
    everything = http.get("/v2/alarms?q.field=all_projects&q.op=eq&q.value=true", headers=mine)
    assert everything.status_code == 401
    assert http.get("/v2/alarms?q.field=project_id&q.op=eq&q.value=project-b",
                    headers=mine).json == []
    assert http.post("/v2/query/alarms", json={}, headers=mine).json == []


def test_the_service_token_is_admin_of_project_service_and_alone_posts_events(notifier):
    service, http = notifier
    http.post("/v2/alarms", json=alarm_body("theirs"), headers=as_(BOB))
    listed = http.get("/v2/alarms?q.field=all_projects&q.op=eq&q.value=true",
                      headers=as_(SERVICE_TOKEN)).json
    assert [a["name"] for a in listed] == ["theirs"]
    created = http.post("/v2/alarms", json=alarm_body("own"), headers=as_(SERVICE_TOKEN)).json
    assert (created["project_id"], created["user_id"]) == (SERVICE.project_id, SERVICE.user_id)
    events = [{"message_id": "m1", "event_type": "compute.instance.update",
               "generated": "2026-11-21T10:00:00", "traits": [["instance_id", 1, "vm-1"],
                                                              ["project_id", 1, "project-b"]]}]
    assert http.post("/v1/events", json=events).status_code == 401
    forged = http.post("/v1/events", json=events, headers=as_(ALICE))
    assert forged.status_code == 403 and forged.json["field"] == "X-Auth-Token"
    assert service.evaluated == 0 and service.status()["events_queued"] == 0
    assert http.post("/v1/events", json=events, headers=as_(SERVICE_TOKEN)).status_code == 202


def test_an_unauthenticated_post_v1_events_is_401_with_the_default_config(tmp_path):
    config = NotifierConfig(database=f"sqlite:///{tmp_path}/n.db", token=SERVICE_TOKEN)
    service = EmbeddedNotifier(config)
    try:
        http = create_app(service, config.token).test_client()
        response = http.post("/v1/events", json=[])
        assert response.status_code == 401
        assert http.get("/v2/alarms", headers={"X-Project-Id": "p",
                                               "X-Roles": "admin"}).status_code == 401
    finally:
        service.stop()
    with pytest.raises(ConfigError, match=r"token: required with auth_strategy = token"):
        NotifierConfig(database=f"sqlite:///{tmp_path}/n.db")


def test_the_api_tokens_file_is_0600_and_checked(tmp_path):
    path = str(tmp_path / "tokens")
    write_api_tokens(path, CALLERS)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_api_tokens(path) == [(token, caller) for _name, token, caller in CALLERS]
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"\[notifier\] api_tokens_file: .* mode 644; "
                                          r"chmod 600 it"):
        load_api_tokens(path)
    write_api_tokens(path, CALLERS)  # rewriting it closes it again
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(ConfigError, match="same token"):
        load_api_tokens(path, service_token=ALICE)
    for text, problem in [("[x]\nproject_id = p\n", "token: required"),
                          ("[x]\ntoken = t\n", "project_id: required"),
                          ("[x]\ntoken = t\nproject_id = p\ncolour = red\n", "colour"),
                          ("[x]\ntoken = t\nproject_id = p\n[y]\ntoken = t\nproject_id = q\n",
                           "same token")]:
        with open(path, "w") as handle:
            handle.write(text)
        with pytest.raises(ConfigError, match=problem):
            load_api_tokens(path)


def test_noauth_is_aodhs_noauth_mode_the_headers_name_the_caller(tmp_path):
    service = EmbeddedNotifier(NotifierConfig(database=f"sqlite:///{tmp_path}/n.db",
                                              auth_strategy="noauth"))
    try:
        http = create_app(service, auth_strategy="noauth").test_client()
        created = http.post("/v2/alarms", json=alarm_body("n"),
                            headers={"X-Project-Id": "p9", "X-User-Id": "u9"})
        assert created.status_code == 201 and created.json["project_id"] == "p9"
        assert http.get("/v2/alarms").status_code == 401  # no X-Project-Id, as before
        assert http.post("/v1/events", json=[]).status_code == 202
    finally:
        service.stop()
