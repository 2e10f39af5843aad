"""The embedded Notifier's REST API: Aodh's ``/v2/alarms`` subset for event alarms, and
``POST /v1/events``, the intake for events in Ceilometer's format.

What python-aodhclient (3.x) sends, and so what is served:

- ``alarm.create``: ``POST /v2/alarms`` (201)
- ``alarm.list(filters, limit, marker, sorts)``: ``GET /v2/alarms`` with
  ``q.field=&q.op=&q.value=`` per filter, ``limit``, ``marker``, ``sort=field:dir``
- ``alarm.get``: ``GET /v2/alarms/{id}``
- ``alarm.update``: ``GET``, then ``PUT /v2/alarms/{id}`` with the whole alarm
- ``alarm.delete``: ``DELETE /v2/alarms/{id}`` (204)
- ``alarm.get_state`` / ``set_state``: ``GET`` / ``PUT /v2/alarms/{id}/state`` (a JSON string)
- ``alarm_history.get``: ``GET /v2/alarms/{id}/history``
- ``alarm.query`` (the CLI's ``--name`` and its lookups of a name):
  ``POST /v2/query/alarms`` with Aodh's complex query filter

Authentication is Aodh's noauth mode: the caller is whoever ``X-User-Id``,
``X-Project-Id`` and ``X-Roles`` say (aodhclient's ``aodh-noauth`` plugin
sends them). An alarm belongs to the caller's project; only a caller with
the ``admin`` role may name another project, or see other projects' alarms.
Errors are JSON with ``error`` and ``field``, plus Aodh's
``error_message.faultstring``, which is what aodhclient shows.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from doctor.api import TOKEN_HEADER, ApiError, json_app, json_body
from doctor.events import EventError, parse_ceilometer_event
from notifier.base import PublishError
from notifier.caller import Caller, current_caller
from notifier.embedded import AlarmConflict, AlarmNotFound, EmbeddedNotifier
from notifier.errors import aodh_error, fail
from notifier.evaluator import OPERATORS, STATES
from notifier.validation import validate_alarm

SCALAR_FIELDS = ("alarm_id", "name", "description", "type", "state", "state_reason",
                 "severity", "enabled", "repeat_actions", "project_id", "user_id", "timestamp",
                 "state_timestamp")


# -- listing: Aodh's simple q.field/q.op/q.value queries and its complex query ---------------

def _comparable(alarm_value: Any, given: Any) -> tuple[Any, Any]:
    """Both sides as one type: booleans for enabled/repeat_actions, text otherwise."""
    if isinstance(alarm_value, bool):
        if isinstance(given, bool):
            return alarm_value, given
        text = str(given).lower()
        if text not in ("true", "false"):
            raise ValueError(f"{given!r} is not true or false")
        return alarm_value, text == "true"
    return ("" if alarm_value is None else str(alarm_value)), str(given)


def _condition(field: str, op: str, given: Any, where: str) -> Callable[[dict[str, Any]], bool]:
    if field not in SCALAR_FIELDS:
        raise fail(where, f"cannot filter on {field!r}; fields: {', '.join(SCALAR_FIELDS)}")
    compare = OPERATORS[op]
    if field in ("enabled", "repeat_actions"):
        try:
            _comparable(True, given)
        except ValueError as exc:
            raise fail(where, str(exc)) from None

    def check(alarm: dict[str, Any]) -> bool:
        left, right = _comparable(alarm.get(field), given)
        return bool(compare(left, right))

    return check


def simple_filters(caller: Caller) -> tuple[list[Callable[[dict[str, Any]], bool]], bool]:
    """The ``q.*`` conditions of a list request, and whether it spans all projects."""
    fields = request.args.getlist("q.field")
    ops = request.args.getlist("q.op")
    values = request.args.getlist("q.value")
    if len(values) != len(fields) or (ops and len(ops) != len(fields)):
        raise fail("q", "every q.field needs a q.value (and a q.op, or none at all)")
    checks = []
    all_projects = False
    for i, field in enumerate(fields):
        op = ops[i] if ops else "eq"
        if op not in OPERATORS:
            raise fail(f"q.op[{i}]", f"{op!r} is not one of {', '.join(OPERATORS)}")
        if field == "all_projects":
            all_projects = values[i].lower() == "true"
            if all_projects and not caller.is_admin:
                raise fail("q.field", "all_projects=true needs the admin role", 401)
            continue
        checks.append(_condition(field, op, values[i], f"q.field[{i}]"))
        if field == "project_id" and caller.is_admin:
            all_projects = True  # an admin naming a project looks there, not in its own
    return checks, all_projects


COMPLEX_OPS = {"=": "eq", "==": "eq", "eq": "eq", "!=": "ne", "ne": "ne", "<": "lt",
               "lt": "lt", "<=": "le", "=<": "le", "le": "le", ">": "gt", "gt": "gt",
               ">=": "ge", "=>": "ge", "ge": "ge"}


def complex_filter(expr: Any, where: str = "filter") -> Callable[[dict[str, Any]], bool]:
    """Aodh's complex query filter (``{"and": [{"=": {"name": "x"}}, ...]}``) as a predicate."""
    if not isinstance(expr, dict) or len(expr) != 1:
        raise fail(where, "each expression is one {operator: operand} object")
    ((op, operand),) = expr.items()
    op = op.lower()
    if op in ("and", "or"):
        if not isinstance(operand, list) or not operand:
            raise fail(where, f"{op!r} takes a non-empty list of expressions")
        parts = [complex_filter(e, f"{where}.{op}[{i}]") for i, e in enumerate(operand)]
        combine = all if op == "and" else any
        return lambda alarm: combine(part(alarm) for part in parts)
    if op == "not":
        inner = complex_filter(operand, f"{where}.not")
        return lambda alarm: not inner(alarm)
    if not isinstance(operand, dict) or len(operand) != 1:
        raise fail(where, f"{op!r} takes one {{field: value}}")
    ((field, value),) = operand.items()
    field = field.lower()
    if op == "in":
        if not isinstance(value, list):
            raise fail(where, "'in' takes a list of values")
        options = [_condition(field, "eq", v, where) for v in value]
        return lambda alarm: any(option(alarm) for option in options)
    if op not in COMPLEX_OPS:
        raise fail(where, f"unknown operator {op!r}")
    return _condition(field, COMPLEX_OPS[op], value, where)


def _sort_key(field: str) -> Callable[[dict[str, Any]], Any]:
    """An alarm's ``field`` as it sorts: booleans as they are, text otherwise."""
    def key(alarm: dict[str, Any]) -> Any:
        value = alarm.get(field)
        return value if isinstance(value, bool) else ("" if value is None else str(value))

    return key


def _sorted(alarms: list[dict[str, Any]], sorts: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    ordered = sorted(alarms, key=lambda a: a["alarm_id"])
    for field, descending in reversed(sorts):  # stable sorts, the last key first
        ordered.sort(key=_sort_key(field), reverse=descending)
    return ordered


def _sort_keys(specs: list[str], where: str) -> list[tuple[str, bool]]:
    sorts = []
    for spec in specs:
        field, _, direction = spec.partition(":")
        direction = direction or "asc"
        if field not in SCALAR_FIELDS or direction not in ("asc", "desc"):
            raise fail(where, f"{spec!r} is not field:asc or field:desc over "
                              f"{', '.join(SCALAR_FIELDS)}")
        sorts.append((field, direction == "desc"))
    return sorts or [("timestamp", True)]


def _history_key(field: str) -> Callable[[dict[str, Any]], Any]:
    """A history entry's ``field`` as it sorts (a missing one first)."""
    def key(entry: dict[str, Any]) -> Any:
        return entry.get(field) or ""

    return key


def _limit(value: Any, where: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise fail(where, f"{value!r} is not a positive integer") from None
    if limit < 1:
        raise fail(where, f"{value!r} is not a positive integer")
    return limit


def _page(items: list[dict[str, Any]], key: str, marker: str | None,
          limit: int | None) -> list[dict[str, Any]]:
    if marker:
        for i, item in enumerate(items):
            if item[key] == marker:
                items = items[i + 1:]
                break
        else:
            raise fail("marker", f"invalid marker {marker!r}: no such {key}")
    return items[:limit] if limit else items


# -- the app ---------------------------------------------------------------------------------

def create_app(service: EmbeddedNotifier, token: str = "") -> Flask:
    """The Notifier's Flask app; with ``token``, ``POST /v1/events`` requires it.

    ``/v2`` takes no token, as Aodh in noauth mode: the caller is read from the
    X-User-Id, X-Project-Id and X-Roles headers.
    """
    app = json_app("notifier")
    expected_token = token.encode()

    # Aodh's error shape too: aodhclient shows error_message.faultstring to its user.
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> tuple[Response, int]:
        return aodh_error(error.status, error.message, error.field)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        return aodh_error(error.code or 500, error.description or error.name)

    def visible(alarm_id: str, caller: Caller) -> dict[str, Any]:
        alarm = service.get_alarm(alarm_id)
        if alarm is None or not caller.may_see(alarm):
            raise ApiError(404, f"Alarm {alarm_id} not found", "alarm_id")
        return alarm

    @app.get("/")
    def root() -> Response:
        return jsonify({"versions": {"values": [{"id": "v2", "status": "stable"}]},
                       "notifier": service.status()})

    @app.post("/v1/events")
    def post_events() -> tuple[Response, int]:
        if expected_token and not hmac.compare_digest(
                request.headers.get(TOKEN_HEADER, "").encode(), expected_token):
            raise ApiError(401, f"missing or wrong {TOKEN_HEADER}", TOKEN_HEADER)
        body = json_body()
        items = [body] if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise fail("body", "must be a JSON list of events in Ceilometer's format")
        try:
            events = [parse_ceilometer_event(e, f"body[{i}]") for i, e in enumerate(items)]
        except EventError as exc:
            raise ApiError(400, str(exc), exc.field) from None
        try:
            service.submit(events)
        except PublishError as exc:
            raise ApiError(503, str(exc)) from None
        return jsonify({"accepted": len(events)}), 202

    @app.post("/v2/alarms")
    def create_alarm() -> tuple[Response, int]:
        caller = current_caller()
        data = validate_alarm(json_body(), caller)
        try:
            service.create_alarm(data, caller.user_id, caller.project_id)
        except AlarmConflict as exc:
            raise ApiError(409, str(exc), "name") from None
        return jsonify(data), 201

    @app.get("/v2/alarms")
    def list_alarms() -> Response:
        caller = current_caller()
        checks, all_projects = simple_filters(caller)
        sorts = _sort_keys(request.args.getlist("sort"), "sort")
        limit = _limit(request.args.get("limit"), "limit")
        found = [a for a in service.list_alarms()
                 if (all_projects or a.get("project_id") == caller.project_id)
                 and caller.may_see(a) and all(check(a) for check in checks)]
        return jsonify(_page(_sorted(found, sorts), "alarm_id", request.args.get("marker"),
                             limit))

    @app.post("/v2/query/alarms")
    def query_alarms() -> Response:
        caller = current_caller()
        body = json_body()
        if not isinstance(body, dict):
            raise fail("body", "must be a JSON object {filter, orderby, limit}")
        expr = body.get("filter")
        orderby = body.get("orderby")
        try:
            expr = json.loads(expr) if isinstance(expr, str) else expr
            orderby = json.loads(orderby) if isinstance(orderby, str) else orderby
        except ValueError as exc:
            raise fail("filter", f"not valid JSON ({exc})") from None
        check = complex_filter(expr) if expr else (lambda alarm: True)
        sorts = []
        for i, item in enumerate(orderby or []):
            if not isinstance(item, dict) or len(item) != 1:
                raise fail(f"orderby[{i}]", "must be {field: asc|desc}")
            ((field, direction),) = item.items()
            sorts += _sort_keys([f"{field.lower()}:{str(direction).lower()}"], f"orderby[{i}]")
        found = [a for a in service.list_alarms() if caller.may_see(a) and check(a)]
        return jsonify(_page(_sorted(found, sorts or [("timestamp", True)]), "alarm_id", None,
                             _limit(body.get("limit"), "limit")))

    @app.get("/v2/alarms/<alarm_id>")
    def show_alarm(alarm_id: str) -> Response:
        return jsonify(visible(alarm_id, current_caller()))

    @app.put("/v2/alarms/<alarm_id>")
    def update_alarm(alarm_id: str) -> Response:
        caller = current_caller()
        visible(alarm_id, caller)
        body = json_body()

        def change(current: dict[str, Any]) -> dict[str, Any]:
            return validate_alarm(body, caller, current)

        try:
            data = service.update_alarm(alarm_id, change, caller.user_id, caller.project_id)
        except AlarmNotFound:
            raise ApiError(404, f"Alarm {alarm_id} not found", "alarm_id") from None
        except AlarmConflict as exc:
            raise ApiError(409, str(exc), "name") from None
        return jsonify(data)

    @app.delete("/v2/alarms/<alarm_id>")
    def delete_alarm(alarm_id: str) -> tuple[str, int]:
        caller = current_caller()
        visible(alarm_id, caller)
        try:
            service.delete_alarm(alarm_id, caller.user_id, caller.project_id)
        except AlarmNotFound:
            raise ApiError(404, f"Alarm {alarm_id} not found", "alarm_id") from None
        return "", 204

    @app.get("/v2/alarms/<alarm_id>/state")
    def get_state(alarm_id: str) -> Response:
        return jsonify(visible(alarm_id, current_caller())["state"])

    @app.put("/v2/alarms/<alarm_id>/state")
    def put_state(alarm_id: str) -> Response:
        caller = current_caller()
        visible(alarm_id, caller)
        state = json_body()
        if state not in STATES:
            raise fail("state", f"{state!r} is not one of {', '.join(STATES)} (send a JSON "
                                f'string, e.g. "ok")')
        try:
            return jsonify(service.set_state(alarm_id, state, caller.user_id,
                                             caller.project_id))
        except AlarmNotFound:
            raise ApiError(404, f"Alarm {alarm_id} not found", "alarm_id") from None

    @app.get("/v2/alarms/<alarm_id>/history")
    def history(alarm_id: str) -> Response:
        caller = current_caller()
        alarm = service.get_alarm(alarm_id)
        if alarm is not None and not caller.may_see(alarm):
            raise ApiError(404, f"Alarm {alarm_id} not found", "alarm_id")
        # A deleted alarm's history stays readable, but only for its own project.
        entries = service.history(alarm_id, None if caller.is_admin else caller.project_id)
        sorts = request.args.getlist("sort") or ["timestamp:desc"]
        for spec in reversed(sorts):
            field, _, direction = spec.partition(":")
            if field not in ("timestamp", "type", "event_id") or direction not in ("", "asc",
                                                                                  "desc"):
                raise fail("sort", f"{spec!r} is not timestamp, type or event_id "
                                   "with :asc or :desc")
            entries.sort(key=_history_key(field), reverse=direction == "desc")
        return jsonify(_page(entries, "event_id", request.args.get("marker"),
                             _limit(request.args.get("limit"), "limit")))

    return app

