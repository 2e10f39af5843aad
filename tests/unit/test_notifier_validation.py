"""notifier.validation: the body of POST and PUT /v2/alarms, checked and completed."""

import pytest

from doctor.api import ApiError
from notifier.caller import Caller
from notifier.evaluator import utc_iso
from notifier.validation import action_url, validate_alarm, validate_event_rule, validate_query

ADMIN = Caller("u1", "p1", frozenset({"admin"}))
MEMBER = Caller("u2", "p2", frozenset({"member"}))
RULE = {"event_type": "compute.instance.update",
        "query": [{"field": "traits.instance_id", "value": "vm1"}]}
NOW = 1_800_000_000.0


def body(**fields):
    data = {"name": "a1", "type": "event", "event_rule": RULE,
            "alarm_actions": ["http://127.0.0.1:12346/failure"]}
    data.update(fields)
    return data


def refused(call, *args, **kwargs):
    with pytest.raises(ApiError) as raised:
        call(*args, **kwargs)
    return raised.value.status, raised.value.field, raised.value.message


def test_a_create_body_is_completed_with_aodhs_defaults():
    data = validate_alarm(body(), MEMBER, now=NOW)
    stamp = utc_iso(NOW)
    assert len(data.pop("alarm_id")) == 36
    assert data == {
        "name": "a1", "description": "Alarm when compute.instance.update event occurred.",
        "type": "event",
        "event_rule": {"event_type": "compute.instance.update", "query": [
            {"field": "traits.instance_id", "op": "eq", "value": "vm1", "type": ""}]},
        "state": "insufficient data", "state_reason": "Not evaluated yet", "severity": "low",
        "enabled": True, "repeat_actions": False,
        "alarm_actions": ["http://127.0.0.1:12346/failure"], "ok_actions": [],
        "insufficient_data_actions": [], "time_constraints": [], "project_id": "p2",
        "user_id": "u2", "timestamp": stamp, "state_timestamp": stamp,
    }


def test_flags_severity_state_and_urls_are_normalized():
    data = validate_alarm(body(enabled="False", repeat_actions=True, severity="critical",
                               state="ok", ok_actions=[" https://h:1/y "], description="d",
                               event_rule={"event_type": " compute.* "}), ADMIN, now=NOW)
    assert (data["enabled"], data["repeat_actions"], data["severity"], data["state"]) \
        == (False, True, "critical", "ok")
    assert data["ok_actions"] == ["https://h:1/y"] and data["description"] == "d"
    assert data["event_rule"] == {"event_type": "compute.*", "query": []}


def test_an_update_keeps_what_the_body_leaves_out_and_its_read_only_fields():
    current = validate_alarm(body(), MEMBER, now=NOW)
    same = validate_alarm({"description": "changed", "alarm_id": "x", "timestamp": "t"},
                          MEMBER, current, now=NOW + 60)
    assert same["alarm_id"] == current["alarm_id"] and same["description"] == "changed"
    assert same["name"] == "a1" and same["timestamp"] == utc_iso(NOW + 60)
    assert (same["state_reason"], same["state_timestamp"]) \
        == ("Not evaluated yet", utc_iso(NOW))
    moved = validate_alarm({"state": "alarm"}, MEMBER, current, now=NOW + 60)
    assert (moved["state_reason"], moved["state_timestamp"]) \
        == ("Manually set via API", utc_iso(NOW + 60))


@pytest.mark.parametrize("fields, field, problem", [
    ({"colour": "red"}, "colour", "unknown attribute for an alarm"),
    ({"type": None}, "type", "required"),
    ({"type": "threshold"}, "type", "'threshold' alarms are not supported"),
    ({"type": "weird"}, "type", "unknown alarm type 'weird'"),
    ({"threshold_rule": {"x": 1}}, "threshold_rule", "does not apply to an event alarm"),
    ({"name": " "}, "name", "must be 1 to 255 characters"),
    ({"name": "x" * 256}, "name", "must be 1 to 255 characters"),
    ({"name": 5}, "name", "must be a string, got int"),
    ({"event_rule": None}, "event_rule", "required for an event alarm"),
    ({"event_rule": {"event_type": "e", "q": 1}}, "event_rule.q", "unknown attribute"),
    ({"event_rule": {"event_type": ""}}, "event_rule.event_type", "required"),
    ({"event_rule": {"event_type": "e", "query": [{"field": "a", "op": "like", "value": 1}]}},
     "event_rule.query[0].op", "'like' is not one of eq, ne, lt, le, gt, ge"),
    ({"severity": "huge"}, "severity", "'huge' is not one of low, moderate, critical"),
    ({"state": "on"}, "state", "'on' is not one of ok, alarm, insufficient data"),
    ({"enabled": "maybe"}, "enabled", "must be true or false, got 'maybe'"),
    ({"alarm_actions": "http://a/"}, "alarm_actions", "must be a list of URLs"),
    ({"alarm_actions": ["log://"]}, "alarm_actions[0]", "unsupported action scheme 'log'"),
    ({"ok_actions": ["http://a/", " http://a/"]}, "ok_actions", "duplicate actions are found"),
    ({"time_constraints": "x"}, "time_constraints", "must be a list"),
    ({"time_constraints": [{"x": 1}]}, "time_constraints", "not supported"),
])
def test_a_bad_body_is_a_400_naming_the_field(fields, field, problem):
    status, named, message = refused(validate_alarm, body(**fields), ADMIN)
    assert (status, named) == (400, field)
    assert message.startswith(f"{field}: {problem}")


def test_a_body_that_is_not_an_object_names_the_body():
    assert refused(validate_alarm, [body()], ADMIN)[:2] == (400, "body")


def test_a_member_may_not_name_another_project_or_user():
    assert refused(validate_alarm, body(project_id="p1"), MEMBER) \
        == (401, "project_id", "project_id: Not Authorized to access project p1")
    assert refused(validate_alarm, body(user_id="u9"), MEMBER) \
        == (401, "user_id", "user_id: Not Authorized to access user u9")
    current = validate_alarm(body(), MEMBER, now=NOW)
    assert refused(validate_alarm, {"project_id": "p1"}, MEMBER, current)[:2] \
        == (401, "project_id")
    assert validate_alarm({"user_id": "u9"}, MEMBER, current)["user_id"] == "u9"
    assert validate_alarm(body(project_id="p9", user_id="u9"), ADMIN)["project_id"] == "p9"


def test_event_rule_conditions_are_normalized_and_typed_values_checked():
    assert validate_query([{"field": "traits.load", "op": "gt", "value": 1.5},
                           {"field": "traits.up", "value": True, "type": "boolean"},
                           {"field": "traits.n", "value": "7", "type": "integer"}]) == [
        {"field": "traits.load", "op": "gt", "value": "1.5", "type": ""},
        {"field": "traits.up", "op": "eq", "value": "true", "type": "boolean"},
        {"field": "traits.n", "op": "eq", "value": "7", "type": "integer"},
    ]
    assert validate_query(None) == []
    for condition, field in [({"field": "traits.", "value": 1}, "event_rule.query[0].field"),
                             ({"field": "a b", "value": 1}, "event_rule.query[0].field"),
                             ({"field": "a", "value": None}, "event_rule.query[0].value"),
                             ({"field": "a", "value": "x", "type": "float"},
                              "event_rule.query[0].value"),
                             ({"field": "a", "value": "x", "type": "blob"},
                              "event_rule.query[0].type"),
                             ({"field": "a", "value": 1, "bad": 1}, "event_rule.query[0].bad")]:
        assert refused(validate_query, [condition])[:2] == (400, field), condition
    assert refused(validate_query, "x")[:2] == (400, "event_rule.query")
    assert refused(validate_event_rule, "x")[:2] == (400, "event_rule")


def test_an_action_is_an_http_or_https_url_with_a_host():
    assert action_url(" https://h:8443/x ", "w") == "https://h:8443/x"
    for url, problem in [("", "must be a non-empty URL string"),
                         ("trust+http://a/", "unsupported action scheme 'trust+http'"),
                         ("nohost", "unsupported action scheme '(none)'"),
                         ("http://", "the URL has no host"),
                         ("http://h:99999/", "not a valid URL")]:
        status, field, message = refused(action_url, url, "alarm_actions[2]")
        assert (status, field) == (400, "alarm_actions[2]"), url
        assert message.startswith(f"alarm_actions[2]: {problem}"), (url, message)


@pytest.mark.parametrize("key", ["op", "type"])
@pytest.mark.parametrize("value", [[None], {"a": 1}])
def test_an_op_or_type_that_is_a_list_or_object_is_a_400_not_a_500(key, value):
    # Found by tests/unit/test_fuzz_api.py: `[None] in OPERATORS` raised TypeError.
    condition = {"field": "traits.instance_id", "value": "vm1", key: value}
    assert refused(validate_query, [condition])[:2] == (400, f"event_rule.query[0].{key}")
