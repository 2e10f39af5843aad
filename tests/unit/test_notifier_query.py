"""notifier.query: Aodh's query language over alarms (q.* filters, the complex query, pages)."""

import json

import pytest
from werkzeug.datastructures import MultiDict

from doctor.api import ApiError
from notifier import query
from notifier.caller import Caller

ADMIN = Caller("u1", "p1", frozenset({"admin"}))
MEMBER = Caller("u2", "p2", frozenset({"member"}))


def alarm(alarm_id, name, severity="low", enabled=True, project="p1", timestamp="2026-01-01"):
    return {"alarm_id": alarm_id, "name": name, "severity": severity, "enabled": enabled,
            "project_id": project, "timestamp": timestamp}


ALARMS = [alarm("1", "x", timestamp="2026-01-03"), alarm("2", "y", "critical", False),
          alarm("3", "z", "critical", project="p2", timestamp="2026-01-02")]


def matching(check):
    return [a["name"] for a in ALARMS if check(a)]


def refused(call, *args):
    with pytest.raises(ApiError) as raised:
        call(*args)
    return raised.value.status, raised.value.field, raised.value.message


def test_a_complex_query_as_aodhclient_sends_it():
    check, sorts, limit = query.complex_query({
        "filter": json.dumps({"or": [{"and": [{"=": {"severity": "critical"}},
                                              {"not": {"==": {"NAME": "y"}}}]},
                                     {"in": {"name": ["x", "nope"]}}]}),
        "orderby": json.dumps([{"NAME": "DESC"}]), "limit": "5"})
    assert (matching(check), sorts, limit) == (["x", "z"], [("name", True)], 5)
    check, sorts, limit = query.complex_query({"filter": {">=": {"name": "y"}}})
    assert (matching(check), sorts, limit) == (["y", "z"], [("timestamp", True)], None)
    check, _, _ = query.complex_query({})
    assert matching(check) == ["x", "y", "z"]


def test_the_comparisons_and_their_names_and_booleans():
    for op, names in [("=", ["y"]), ("eq", ["y"]), ("!=", ["x", "z"]), ("<", ["x"]),
                      ("=<", ["x", "y"]), ("le", ["x", "y"]), (">", ["z"]), ("=>", ["y", "z"])]:
        assert matching(query.complex_filter({op: {"name": "y"}})) == names, op
    assert matching(query.complex_filter({"=": {"enabled": "False"}})) == ["y"]
    assert matching(query.complex_filter({"!=": {"enabled": True}})) == ["y"]


@pytest.mark.parametrize("expr, field, problem", [
    ({"and": [{"=": {"name": "x"}}, {"~": {"name": "y"}}]}, "filter.and[1]",
     "unknown operator '~'"),
    ({"not": {"or": [{"like": {"name": "x"}}]}}, "filter.not.or[0]", "unknown operator 'like'"),
    ({"=": {"colour": "red"}}, "filter", "cannot filter on 'colour'; fields: alarm_id, name"),
    ({"=": {"enabled": "maybe"}}, "filter", "'maybe' is not true or false"),
    ({"and": []}, "filter", "'and' takes a non-empty list of expressions"),
    ({"in": {"name": "x"}}, "filter", "'in' takes a list of values"),
    ({"=": {"name": "x", "severity": "low"}}, "filter", "'=' takes one {field: value}"),
    ({"=": {"name": "x"}, "!=": {"name": "y"}}, "filter",
     "each expression is one {operator: operand} object"),
])
def test_a_bad_filter_is_a_400_naming_where_it_is(expr, field, problem):
    status, named, message = refused(query.complex_query, {"filter": json.dumps(expr)})
    assert (status, named) == (400, field)
    assert message.startswith(f"{field}: {problem}")


def test_a_bad_body_orderby_or_json_names_its_parameter():
    assert refused(query.complex_query, [])[:2] == (400, "body")
    assert refused(query.complex_query, {"filter": "{bad"})[:2] == (400, "filter")
    assert refused(query.complex_query, {"orderby": "{bad"})[:2] == (400, "orderby")
    assert refused(query.complex_query, {"orderby": ["name"]}) \
        == (400, "orderby[0]", "orderby[0]: must be {field: asc|desc}")
    assert refused(query.complex_query, {"orderby": [{"name": "asc"}, {"name": "sideways"}]})[:2] \
        == (400, "orderby[1]")
    assert refused(query.complex_query, {"orderby": [{"x": "y"}], "limit": 0})[1] == "orderby[0]"


@pytest.mark.parametrize("value", [0, -1, "0", "x", "1.5", [1]])
def test_a_limit_is_a_positive_integer(value):
    assert refused(query.parse_limit, value, "limit") \
        == (400, "limit", f"limit: {value!r} is not a positive integer")
    assert refused(query.complex_query, {"limit": value})[1] == "limit"


def test_a_limit_may_be_left_out():
    assert [query.parse_limit(v, "limit") for v in (None, "", "3", 2, 1.9)] == [None, None, 3, 2, 1]


def test_simple_filters_and_all_projects():
    def filters(caller, *pairs):
        return query.simple_filters(MultiDict(pairs), caller)

    checks, all_projects = filters(ADMIN, ("q.field", "severity"), ("q.value", "critical"),
                                   ("q.field", "enabled"), ("q.value", "TRUE"))
    assert not all_projects and matching(lambda a: all(c(a) for c in checks)) == ["z"]
    checks, all_projects = filters(ADMIN, ("q.field", "name"), ("q.op", "gt"),
                                   ("q.value", "x"))
    assert matching(checks[0]) == ["y", "z"] and not all_projects
    assert filters(ADMIN, ("q.field", "all_projects"), ("q.value", "True")) == ([], True)
    assert filters(MEMBER, ("q.field", "all_projects"), ("q.value", "false")) == ([], False)
    assert filters(ADMIN, ("q.field", "project_id"), ("q.value", "p2"))[1] is True
    assert filters(MEMBER, ("q.field", "project_id"), ("q.value", "p1"))[1] is False
    assert filters(ADMIN) == ([], False)
    for caller, pairs, expected in [
        (MEMBER, [("q.field", "all_projects"), ("q.value", "true")], (401, "q.field")),
        (ADMIN, [("q.field", "name")], (400, "q")),
        (ADMIN, [("q.field", "name"), ("q.value", "x"), ("q.op", "eq"), ("q.op", "eq")],
         (400, "q")),
        (ADMIN, [("q.field", "name"), ("q.value", "x"), ("q.op", "like")], (400, "q.op[0]")),
        (ADMIN, [("q.field", "name"), ("q.value", "x"), ("q.field", "colour"),
                 ("q.value", "red")], (400, "q.field[1]")),
        (ADMIN, [("q.field", "enabled"), ("q.value", "maybe")], (400, "q.field[0]")),
    ]:
        assert refused(filters, caller, *pairs)[:2] == expected, pairs


def test_sorting_alarms_the_first_key_first_and_ties_by_id():
    assert query.sort_keys([], "sort") == [("timestamp", True)]
    assert query.sort_keys(["enabled:desc", "name"], "sort") == [("enabled", True), ("name", False)]
    for spec in ["name:sideways", "colour:asc", "event_rule"]:
        assert refused(query.sort_keys, [spec], "sort")[:2] == (400, "sort"), spec

    def names(sorts):
        return [a["name"] for a in query.sort_alarms(list(reversed(ALARMS)), sorts)]

    assert names(query.sort_keys([], "sort")) == ["x", "z", "y"]
    assert names([("severity", False)]) == ["y", "z", "x"]
    assert names([("enabled", True), ("name", True)]) == ["z", "x", "y"]


def test_history_sorts_newest_first_by_default_and_pages_by_event_id():
    entries = [{"event_id": "e1", "type": "creation", "timestamp": "2026-01-01"},
               {"event_id": "e2", "type": "rule change", "timestamp": "2026-01-03"},
               {"event_id": "e3", "type": "creation", "timestamp": "2026-01-02"}]

    def ids(specs):
        return [e["event_id"] for e in query.sort_history(entries, specs)]

    assert ids([]) == ["e2", "e3", "e1"]
    assert ids(["type:desc", "timestamp:asc"]) == ["e2", "e1", "e3"]
    assert ids(["event_id"]) == ["e1", "e2", "e3"]
    assert [e["event_id"] for e in entries] == ["e1", "e2", "e3"]  # sorted as a copy
    assert refused(query.sort_history, entries, ["severity"]) == (
        400, "sort", "sort: 'severity' is not timestamp, type or event_id with :asc or :desc")
    assert [e["event_id"] for e in query.page(entries, "event_id", "e1", 1)] == ["e2"]
    assert query.page(entries, "event_id", None, None) == entries
    assert refused(query.page, entries, "event_id", "nope", None) \
        == (400, "marker", "marker: invalid marker 'nope': no such event_id")


@pytest.mark.parametrize("orderby", [1, True, "1", "true", {"name": "asc"}])
def test_an_orderby_that_is_not_a_list_is_a_400_naming_it(orderby):
    # Found by tests/unit/test_fuzz_api.py: iterating the int 1 raised TypeError.
    assert refused(query.complex_query, {"orderby": orderby})[:2] == (400, "orderby")
