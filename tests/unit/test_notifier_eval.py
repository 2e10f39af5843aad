"""The embedded Notifier's evaluation: Aodh's event-alarm semantics, the index, the store."""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from doctor.redact import redact_url as redact
from notifier.actions import ActionDispatcher
from notifier.config import NotifierConfig
from notifier.embedded import EmbeddedNotifier
from notifier.evaluator import ALARM, Evaluator, Firing, utc_iso
from testkit.eventsink import free_port
from tests.waiting import wait_until

VM = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def alarm(query=None, event_type="compute.instance.update", project="p1", **fields):
    data = {
        "alarm_id": str(uuid.uuid4()), "name": f"alarm-{uuid.uuid4().hex[:8]}",
        "type": "event", "state": "insufficient data", "severity": "critical",
        "enabled": True, "repeat_actions": False, "project_id": project, "user_id": "u1",
        "alarm_actions": ["http://127.0.0.1:12346/failure"], "ok_actions": [],
        "insufficient_data_actions": [], "time_constraints": [],
        "description": "", "state_reason": "", "timestamp": "", "state_timestamp": "",
        "event_rule": {"event_type": event_type, "query": [
            {"field": f, "op": op, "value": v, "type": ""}
            for f, op, v in (query if query is not None else
                             [("traits.instance_id", "eq", VM), ("traits.state", "eq", "error")])
        ]},
    }
    data.update(fields)
    return data


def event(event_type="compute.instance.update", traits=None, project="p1", tenant=None):
    traits = list(traits if traits is not None else
                  [["instance_id", 1, VM], ["state", 1, "error"], ["host", 1, "compute-1"]])
    if project is not None:
        traits.append(["project_id", 1, project])
    if tenant is not None:
        traits.append(["tenant_id", 1, tenant])
    return {"message_id": str(uuid.uuid4()), "event_type": event_type,
            "generated": "2026-11-21T10:00:00+00:00", "raw": {}, "traits": traits}


def fired(evaluator, *events):
    return [f.alarm_id for f in evaluator.evaluate(list(events)).firings]


def with_alarms(*alarms):
    evaluator = Evaluator()
    for data in alarms:
        evaluator.add(data)
    return evaluator


# -- matching ---------------------------------------------------------------------------------

def test_a_matching_event_fires_with_aodhs_payload_and_moves_the_alarm_to_alarm():
    a = alarm()
    evaluator = with_alarms(a)
    e = event()
    result = evaluator.evaluate([e], now=1_795_000_000.5)
    [firing] = result.firings
    assert firing.previous == "insufficient data" and firing.current == ALARM
    assert firing.instance_id == VM and firing.actions == a["alarm_actions"]
    payload = firing.payload()
    assert set(payload) == {"alarm_name", "alarm_id", "severity", "previous", "current",
                            "reason", "reason_data"}
    assert payload["reason_data"] == {"type": "event", "event": e}
    assert e["message_id"] in payload["reason"] and "compute.instance.update" in payload["reason"]
    stored = evaluator.get(a["alarm_id"])
    assert stored.state == ALARM and stored.version == 2
    assert stored.data["state_timestamp"] == utc_iso(1_795_000_000.5)
    assert a["state"] == "insufficient data", "the alarm dict handed in is never mutated"
    [(data, version)] = result.changed.values()
    assert data["state"] == ALARM and version == 2
    [entry] = result.history()
    assert entry["type"] == "state transition" and json.loads(entry["detail"])["state"] == ALARM


@pytest.mark.parametrize("pattern, event_type, matches", [
    ("compute.instance.update", "compute.instance.update", True),
    ("compute.instance.*", "compute.instance.update", True),
    ("compute.instance.*", "compute.host.down", False),
    ("*", "anything.at.all", True),
    ("compute.instance.updat?", "compute.instance.update", True),
    ("compute.[ih]*.update", "compute.host.update", True),
    ("compute.instance.*", "Compute.Instance.Update", False),  # case-sensitive, as on Linux
    ("compute.instance", "compute.instance.update", False),
])
def test_event_type_matches_as_a_shell_wildcard(pattern, event_type, matches):
    a = alarm(event_type=pattern)
    assert fired(with_alarms(a), event(event_type)) == ([a["alarm_id"]] if matches else [])


def test_every_condition_must_hold():
    a = alarm()
    evaluator = with_alarms(a)
    running = [["instance_id", 1, VM], ["state", 1, "active"]]
    assert fired(evaluator, event(traits=running)) == []
    other_vm = [["instance_id", 1, "another-vm"], ["state", 1, "error"]]
    assert fired(evaluator, event(traits=other_vm)) == []
    assert fired(evaluator, event()) == [a["alarm_id"]]


@pytest.mark.parametrize("trait, op, value, matches", [
    (["load", 2, 10], "gt", "5", True),          # integers: 10 > 5 (as text "10" < "5")
    (["load", 2, 10], "lt", "9", False),
    (["load", 2, "10"], "eq", "10", True),       # an integer trait sent as text still converts
    (["load", 2, 10], "eq", "ten", False),       # the query value does not convert: no match
    (["ratio", 3, 0.75], "ge", "0.5", True),
    (["ratio", 3, 0.75], "eq", "0.750", True),
    (["name", 1, "10"], "gt", "5", False),       # strings compare as text
    (["name", 1, "vm-b"], "gt", "vm-a", True),
    (["name", 1, "x"], "ne", "y", True),
    (["when", 4, "2026-11-21T10:00:00+01:00"], "eq", "2026-11-21T09:00:00Z", True),
    (["when", 4, "2026-11-21T10:00:00"], "lt", "2026-11-21T10:00:01", True),
    (["when", 4, "not a time"], "ne", "2026-11-21T10:00:00", False),
])
def test_conditions_compare_as_the_trait_type_says(trait, op, value, matches):
    a = alarm(query=[(f"traits.{trait[0]}", op, value)])
    assert fired(with_alarms(a), event(traits=[trait])) == ([a["alarm_id"]] if matches else [])


@pytest.mark.parametrize("op", ["eq", "ne"])
def test_a_condition_on_a_missing_trait_does_not_hold(op):
    a = alarm(query=[("traits.flavor", op, "m1.small")])
    assert fired(with_alarms(a), event()) == []


def test_conditions_on_event_fields_compare_as_text():
    a = alarm(query=[("event_type", "eq", "compute.instance.update"),
                     ("traits.state", "eq", "error")], event_type="*")
    evaluator = with_alarms(a)
    assert fired(evaluator, event("compute.instance.delete")) == []
    assert fired(evaluator, event()) == [a["alarm_id"]]


# -- projects ---------------------------------------------------------------------------------

def test_events_of_another_project_never_fire_the_alarm():
    a = alarm(project="p1")
    evaluator = with_alarms(a)
    assert fired(evaluator, event(project="p2")) == []
    assert fired(evaluator, event(project=None)) == [], "an event without a project fires none"
    assert fired(evaluator, event(project=None, tenant="p1")) == [a["alarm_id"]]


def test_the_same_rule_in_two_projects_fires_only_the_events_project():
    mine, theirs = alarm(project="p1"), alarm(project="p2")
    evaluator = with_alarms(mine, theirs)
    assert fired(evaluator, event(project="p2", tenant="p2")) == [theirs["alarm_id"]]


# -- repeat_actions, re-arming, disabled ---------------------------------------------------------

def test_without_repeat_actions_the_alarm_fires_once_until_rearmed():
    a = alarm(repeat_actions=False)
    evaluator = with_alarms(a)
    assert fired(evaluator, event(), event()) == [a["alarm_id"]]
    assert fired(evaluator, event()) == []
    current = evaluator.get(a["alarm_id"])
    evaluator.add({**current.data, "state": "ok"}, current.version + 1)  # PUT state "ok"
    [firing] = evaluator.evaluate([event()]).firings
    assert firing.previous == "ok"


def test_with_repeat_actions_every_matching_event_fires():
    a = alarm(repeat_actions=True)
    evaluator = with_alarms(a)
    result = evaluator.evaluate([event(), event(), event()])
    assert [f.previous for f in result.firings] == ["insufficient data", ALARM, ALARM]
    assert evaluator.get(a["alarm_id"]).version == 4


def test_disabled_alarms_are_skipped():
    a = alarm(enabled=False)
    evaluator = with_alarms(a)
    assert fired(evaluator, event()) == []
    assert evaluator.matching(event()) == []
    evaluator.add({**a, "enabled": True})
    assert fired(evaluator, event()) == [a["alarm_id"]]


# -- the index --------------------------------------------------------------------------------

def test_alarms_without_an_instance_condition_see_every_instance():
    any_vm = alarm(query=[("traits.state", "eq", "error")])
    one_vm = alarm()
    evaluator = with_alarms(any_vm, one_vm)
    other = [["instance_id", 1, "vm-2"], ["state", 1, "error"]]
    assert fired(evaluator, event(traits=other)) == [any_vm["alarm_id"]]
    assert sorted(fired(evaluator, event())) == sorted([one_vm["alarm_id"]])


def test_an_instance_id_trait_of_another_type_still_compares_by_value():
    a = alarm(query=[("traits.instance_id", "eq", "42")])
    assert fired(with_alarms(a), event(traits=[["instance_id", 2, 42]])) == [a["alarm_id"]]


def test_replacing_and_removing_alarms_keeps_the_index_right():
    a = alarm()
    evaluator = with_alarms(a)
    moved = alarm(query=[("traits.instance_id", "eq", "vm-2")], alarm_id=a["alarm_id"])
    evaluator.add(moved)
    assert fired(evaluator, event()) == []
    assert fired(evaluator, event(traits=[["instance_id", 1, "vm-2"]])) == [a["alarm_id"]]
    wild = alarm(event_type="compute.*", query=[])
    evaluator.add(wild)
    assert evaluator.remove(a["alarm_id"]) is not None
    assert evaluator.remove(wild["alarm_id"]) is not None
    assert evaluator.remove(wild["alarm_id"]) is None
    assert fired(evaluator, event(traits=[["instance_id", 1, "vm-2"]])) == []
    assert not evaluator.alarms and not evaluator._exact and not evaluator._wild


def test_an_event_looks_only_at_the_alarms_its_index_entry_holds():
    """10,000 alarms, 1000 events: each event is checked against its own VM's alarm and the
    project's wildcard alarm, never the other 9,999 (the index by type, project, instance)."""
    from notifier.evaluator import parse_traits

    evaluator = Evaluator()
    for i in range(10_000):
        evaluator.add(alarm(query=[("traits.instance_id", "eq", f"vm-{i}"),
                                   ("traits.state", "eq", "error")], project=f"p{i % 10}"))
    evaluator.add(alarm(event_type="compute.*", query=[("traits.state", "eq", "deleted")],
                        project="p0"))
    events = [event(traits=[["instance_id", 1, f"vm-{i * 7}"], ["state", 1, "error"]],
                    project=f"p{i * 7 % 10}") for i in range(1000)]
    looked_at = [len(list(evaluator.candidates(e, parse_traits(e)))) for e in events]
    assert max(looked_at) <= 2 and min(looked_at) == 1
    result = evaluator.evaluate(events)
    assert sorted(f.instance_id for f in result.firings) == sorted(f"vm-{i * 7}"
                                                                     for i in range(1000))
    assert evaluator.evaluate(events).firings == []  # all in alarm already


# -- the service: store, restart, re-arm through the API's operations ---------------------------

SERVICE_TOKEN = "notifier-service-token"


def service_at(tmp_path, **options):
    return EmbeddedNotifier(NotifierConfig(database=f"sqlite:///{tmp_path}/notifier.db",
                                           **{"token": SERVICE_TOKEN, **options}))


def test_alarms_and_their_state_survive_a_restart_and_ok_rearms(tmp_path):
    service = service_at(tmp_path)
    a = alarm(timestamp=utc_iso(time.time()))
    service.create_alarm(a, "u1", "p1")
    service._evaluate([event()])
    service.stop()
    service = service_at(tmp_path)
    try:
        assert service.get_alarm(a["alarm_id"])["state"] == ALARM
        assert service.evaluator.evaluate([event()]).firings == []
        assert service.set_state(a["alarm_id"], "ok", "u1", "p1") == "ok"
        assert fired(service.evaluator, event()) == [a["alarm_id"]]
        types = [h["type"] for h in service.history(a["alarm_id"])]
        assert types == ["state transition", "state transition", "creation"]
    finally:
        service.stop()


def test_an_older_version_never_overwrites_a_newer_one(tmp_path):
    service = service_at(tmp_path)
    try:
        a = alarm(timestamp=utc_iso(time.time()))
        service.create_alarm(a, "u1", "p1")
        service.store.update_alarms([({**a, "state": "ok"}, 5)])
        service.store.update_alarms([({**a, "state": ALARM}, 3)])  # a late, stale write
        [(data, version)] = service.store.load_alarms()
        assert (data["state"], version) == ("ok", 5)
    finally:
        service.stop()


def test_publish_validates_and_refuses_after_stop(tmp_path):
    from notifier.base import PublishError

    service = service_at(tmp_path).start()
    with pytest.raises(PublishError, match=r"events\[0\]\.event_type"):
        service.publish([{"message_id": "m", "generated": "2026-11-21T10:00:00"}])
    service.publish([event()])
    service.stop()
    with pytest.raises(PublishError, match="stopped"):
        service.publish([event()])


# -- alarm actions ----------------------------------------------------------------------------

class Receiver:
    """A real HTTP endpoint answering ``status`` (or a status per call from ``statuses``)."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.calls = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.calls.append((self.path, dict(self.headers), body))
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 \
                    else receiver.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def a_firing(url):
    return Firing(alarm_id="a1", alarm_name="n", severity="low", previous="ok",
                  current=ALARM, reason="r", event=event(), actions=[url],
                  instance_id=VM, at=time.time(), alarm={})




def test_server_errors_are_retried_with_the_same_request_id_and_4xx_is_final():
    receiver = Receiver([503, 502, 200])
    dispatcher = ActionDispatcher(timeout_s=1, retry_initial_s=0.01, retry_max_s=0.02).start()
    try:
        dispatcher.dispatch([a_firing(receiver.url + "/failure?token=secret")])
        wait_until(lambda: dispatcher.counts["delivered"] == 1)
        assert len(receiver.calls) == 3 and dispatcher.counts["retried"] == 2
        ids = {headers["X-OpenStack-Request-Id"] for _, headers, _ in receiver.calls}
        assert len(ids) == 1
        receiver.statuses = [404]
        dispatcher.dispatch([a_firing(receiver.url + "/gone")])
        wait_until(lambda: dispatcher.counts["refused"] == 1)
        time.sleep(0.1)
        assert len(receiver.calls) == 4
    finally:
        dispatcher.stop()
        receiver.stop()


def test_an_unreachable_consumer_is_given_up_after_retry_for_and_logged(caplog):
    url = f"http://user:pw@127.0.0.1:{free_port()}/failure?token=secret"
    dispatcher = ActionDispatcher(timeout_s=0.5, retry_for_s=0.3, retry_initial_s=0.02,
                                  retry_max_s=0.05).start()
    try:
        dispatcher.dispatch([a_firing(url)])
        # Lost when its last attempt gives up; no longer pending once that attempt returns.
        wait_until(lambda: dispatcher.counts["lost"] == 1 and dispatcher.pending() == 0)
        assert dispatcher.counts["sent"] >= 4
    finally:
        dispatcher.stop()
    lost = [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]
    assert lost and "a1" in lost[0] and redact(url) in lost[0]
    assert "secret" not in caplog.text and "pw" not in caplog.text
    assert redact(url) == url.replace("user:pw@", "***:***@").replace("=secret", "=***")


def test_stop_is_bounded_while_retries_wait():
    dispatcher = ActionDispatcher(timeout_s=0.2, retry_for_s=60, retry_initial_s=0.05,
                                  retry_max_s=1).start()
    dispatcher.dispatch([a_firing(f"http://127.0.0.1:{free_port()}/failure")] * 50)
    wait_until(lambda: dispatcher.counts["retried"] >= 50)
    started = time.monotonic()
    dispatcher.stop(timeout_s=1)
    assert time.monotonic() - started < 2
    assert dispatcher.counts["lost"] == 50


# -- the API's listing and queries (Flask's test client) -----------------------------------------

@pytest.fixture
def api(tmp_path):
    from notifier.api import create_app

    service = service_at(tmp_path)
    # Aodh's noauth mode: the headers below name the caller.
    app = create_app(service, auth_strategy="noauth")
    yield service, app.test_client()
    service.stop()


ADMIN = {"X-User-Id": "u1", "X-Project-Id": "p1", "X-Roles": "admin"}
MEMBER = {"X-User-Id": "u2", "X-Project-Id": "p2", "X-Roles": "member"}


def test_listing_filters_sorts_pages_and_scopes_by_project(api):
    service, http = api
    for name, project, enabled in [("b", "p1", True), ("a", "p1", False), ("c", "p2", True)]:
        service.create_alarm(alarm(name=name, project=project, enabled=enabled,
                                   timestamp=utc_iso(time.time())), "u", project)

    def names(query, headers=ADMIN):
        response = http.get("/v2/alarms?" + query, headers=headers)
        assert response.status_code == 200, response.json
        return [a["name"] for a in response.json]

    assert names("sort=name:asc") == ["a", "b"]  # an admin sees its own project by default
    assert names("sort=name:asc&q.field=all_projects&q.op=eq&q.value=true") == ["a", "b", "c"]
    assert names("q.field=project_id&q.op=eq&q.value=p2") == ["c"]
    assert names("q.field=enabled&q.op=eq&q.value=False") == ["a"]
    assert names("sort=enabled:desc&sort=name:asc") == ["b", "a"]
    assert names("sort=name:desc&limit=1") == ["b"]
    first = http.get("/v2/alarms?sort=name:asc&limit=1", headers=ADMIN).json[0]["alarm_id"]
    assert names(f"sort=name:asc&marker={first}") == ["b"]
    assert names("sort=name:asc", MEMBER) == ["c"]
    assert names("q.field=project_id&q.op=eq&q.value=p1", MEMBER) == []
    for query, field in [("q.field=colour&q.op=eq&q.value=red", "q.field[0]"),
                         ("q.field=name&q.op=like&q.value=a", "q.op[0]"),
                         ("q.field=enabled&q.value=maybe", "q.field[0]"),
                         ("sort=name:sideways", "sort"), ("limit=0", "limit"),
                         ("marker=nope", "marker")]:
        response = http.get("/v2/alarms?" + query, headers=ADMIN)
        assert (response.status_code, response.json["field"]) == (400, field), query


def test_the_complex_query_that_the_cli_uses_to_find_names(api):
    service, http = api
    for name, severity in [("x", "low"), ("y", "critical"), ("z", "critical")]:
        service.create_alarm(alarm(name=name, severity=severity,
                                   timestamp=utc_iso(time.time())), "u", "p1")

    def query(expr, orderby=None):
        body = {"filter": json.dumps(expr)}
        if orderby:
            body["orderby"] = json.dumps(orderby)
        response = http.post("/v2/query/alarms", json=body, headers=ADMIN)
        assert response.status_code == 200, response.json
        return [a["name"] for a in response.json]

    assert query({"=": {"name": "y"}}) == ["y"]
    assert query({"and": [{"=": {"severity": "critical"}}, {"not": {"=": {"name": "y"}}}]}) \
        == ["z"]
    assert query({"or": [{"=": {"name": "x"}}, {"in": {"name": ["z"]}}]},
                 [{"name": "desc"}]) == ["z", "x"]
    other_project = http.post("/v2/query/alarms", headers=MEMBER,
                              json={"filter": json.dumps({"=": {"name": "y"}})})
    assert other_project.status_code == 200 and other_project.json == []
    response = http.post("/v2/query/alarms", json={"filter": '{"~": {"name": "y"}}'},
                         headers=ADMIN)
    assert response.status_code == 400 and "unknown operator" in response.json["error"]
