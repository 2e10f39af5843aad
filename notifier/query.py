"""Aodh's query language over alarms: what the listings of ``/v2`` filter, sort and page by.

- ``GET /v2/alarms``: simple filters, ``q.field=&q.op=&q.value=`` per
  condition (ANDed), the pseudo-field ``all_projects``, ``sort=field:dir``,
  ``limit`` and ``marker``;
- ``POST /v2/query/alarms``: the complex query, ``{filter, orderby, limit}``
  with ``filter`` an expression such as ``{"and": [{"=": {"name": "x"}},
  {"not": {"in": {"severity": ["low"]}}}]}`` (and, or, not, in, and the
  comparisons ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` or their names);
- ``GET /v2/alarms/{id}/history``: ``sort`` over timestamp, type or
  event_id, ``limit`` and ``marker``.

Conditions apply to an alarm's scalar fields; ``enabled`` and
``repeat_actions`` compare as booleans, every other field as text. Every
error is a 400 naming the parameter (``q.field[0]``, ``filter.and[1]``,
``orderby[0]``, ``limit``), or a 401 for ``all_projects`` without the admin role.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from werkzeug.datastructures import MultiDict

from notifier.caller import Caller
from notifier.errors import fail
from notifier.evaluator import OPERATORS

Check = Callable[[dict[str, Any]], bool]
"""Whether an alarm matches."""

SCALAR_FIELDS = ("alarm_id", "name", "description", "type", "state", "state_reason",
                 "severity", "enabled", "repeat_actions", "project_id", "user_id", "timestamp",
                 "state_timestamp")
COMPLEX_OPS = {"=": "eq", "==": "eq", "eq": "eq", "!=": "ne", "ne": "ne", "<": "lt",
               "lt": "lt", "<=": "le", "=<": "le", "le": "le", ">": "gt", "gt": "gt",
               ">=": "ge", "=>": "ge", "ge": "ge"}
MAX_FILTER_DEPTH = 32  # and/or/not levels of a complex query filter
MAX_LIMIT = 1_000_000  # the largest limit a listing takes


# -- conditions -----------------------------------------------------------------------------

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


def _condition(field: str, op: str, given: Any, where: str) -> Check:
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


def simple_filters(args: MultiDict[str, str], caller: Caller) -> tuple[list[Check], bool]:
    """The ``q.*`` conditions of a list request's ``args``, and whether it spans all projects."""
    fields = args.getlist("q.field")
    ops = args.getlist("q.op")
    values = args.getlist("q.value")
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


def complex_filter(expr: Any, where: str = "filter", depth: int = 0) -> Check:
    """Aodh's complex query filter (``{"and": [{"=": {"name": "x"}}, ...]}``) as a predicate;
    at most MAX_FILTER_DEPTH levels of and, or and not."""
    if depth >= MAX_FILTER_DEPTH:
        raise fail(where.split(".")[0], f"nested more than {MAX_FILTER_DEPTH} levels deep")
    if not isinstance(expr, dict) or len(expr) != 1:
        raise fail(where, "each expression is one {operator: operand} object")
    ((op, operand),) = expr.items()
    op = op.lower()
    if op in ("and", "or"):
        if not isinstance(operand, list) or not operand:
            raise fail(where, f"{op!r} takes a non-empty list of expressions")
        parts = [complex_filter(e, f"{where}.{op}[{i}]", depth + 1)
                 for i, e in enumerate(operand)]
        combine = all if op == "and" else any
        return lambda alarm: combine(part(alarm) for part in parts)
    if op == "not":
        inner = complex_filter(operand, f"{where}.not", depth + 1)
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


def complex_query(body: Any) -> tuple[Check, list[tuple[str, bool]], int | None]:
    """A ``POST /v2/query/alarms`` body: its filter, its sort keys and its limit.

    ``filter`` and ``orderby`` may be JSON text (as aodhclient sends them) or
    JSON; ``orderby`` is a list of ``{field: asc|desc}``, newest first without.
    """
    if not isinstance(body, dict):
        raise fail("body", "must be a JSON object {filter, orderby, limit}")
    expr = body.get("filter")
    orderby = body.get("orderby")
    expr, orderby = _json_text(expr, "filter"), _json_text(orderby, "orderby")
    check = complex_filter(expr) if expr else (lambda alarm: True)
    if orderby is not None and not isinstance(orderby, list):
        raise fail("orderby", "must be a list of {field: asc|desc}")
    sorts = []
    for i, item in enumerate(orderby or []):
        if not isinstance(item, dict) or len(item) != 1:
            raise fail(f"orderby[{i}]", "must be {field: asc|desc}")
        ((field, direction),) = item.items()
        sorts += sort_keys([f"{field.lower()}:{str(direction).lower()}"], f"orderby[{i}]")
    return check, sorts or [("timestamp", True)], parse_limit(body.get("limit"), "limit")


def _json_text(value: Any, where: str) -> Any:
    """``value`` read as JSON if it is text (as aodhclient sends it), else as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise fail(where, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise fail(where, "nested too deeply") from None


# -- order and pages ------------------------------------------------------------------------

def sort_keys(specs: list[str], where: str) -> list[tuple[str, bool]]:
    """``field:asc|desc`` specs as ``(field, descending)``; newest first without."""
    sorts = []
    for spec in specs:
        field, _, direction = spec.partition(":")
        direction = direction or "asc"
        if field not in SCALAR_FIELDS or direction not in ("asc", "desc"):
            raise fail(where, f"{spec!r} is not field:asc or field:desc over "
                              f"{', '.join(SCALAR_FIELDS)}")
        sorts.append((field, direction == "desc"))
    return sorts or [("timestamp", True)]


def _sort_key(field: str) -> Callable[[dict[str, Any]], Any]:
    """An alarm's ``field`` as it sorts: booleans as they are, text otherwise."""
    def key(alarm: dict[str, Any]) -> Any:
        value = alarm.get(field)
        return value if isinstance(value, bool) else ("" if value is None else str(value))

    return key


def sort_alarms(alarms: list[dict[str, Any]],
                sorts: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    """The alarms in the order of ``sorts``, the first key first; ties by alarm_id."""
    ordered = sorted(alarms, key=lambda a: a["alarm_id"])
    for field, descending in reversed(sorts):  # stable sorts, the last key first
        ordered.sort(key=_sort_key(field), reverse=descending)
    return ordered


def _history_key(field: str) -> Callable[[dict[str, Any]], Any]:
    """A history entry's ``field`` as it sorts (a missing one first)."""
    def key(entry: dict[str, Any]) -> Any:
        return entry.get(field) or ""

    return key


def sort_history(entries: list[dict[str, Any]], specs: list[str]) -> list[dict[str, Any]]:
    """An alarm's history in the order of ``sort`` specs, newest first without."""
    ordered = list(entries)
    for spec in reversed(specs or ["timestamp:desc"]):
        field, _, direction = spec.partition(":")
        if field not in ("timestamp", "type", "event_id") or direction not in ("", "asc",
                                                                              "desc"):
            raise fail("sort", f"{spec!r} is not timestamp, type or event_id "
                               "with :asc or :desc")
        ordered.sort(key=_history_key(field), reverse=direction == "desc")
    return ordered


def parse_limit(value: Any, where: str) -> int | None:
    """A ``limit``: a positive integer up to MAX_LIMIT (text or JSON), or None for none.
    Infinity (``1e400`` in JSON), NaN, booleans and huge numbers are a 400."""
    if value is None or value == "":
        return None
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise fail(where, f"{shown} is not a positive integer")
    try:
        limit = int(value)
    except (TypeError, ValueError, OverflowError):
        raise fail(where, f"{shown} is not a positive integer") from None
    if limit < 1:
        raise fail(where, f"{shown} is not a positive integer")
    if limit > MAX_LIMIT:
        raise fail(where, f"{shown} is more than {MAX_LIMIT}")
    return limit


def page(items: list[dict[str, Any]], key: str, marker: str | None,
         limit: int | None) -> list[dict[str, Any]]:
    """The ``limit`` items after the one whose ``key`` is ``marker`` (from the first without)."""
    if marker:
        for i, item in enumerate(items):
            if item[key] == marker:
                items = items[i + 1:]
                break
        else:
            raise fail("marker", f"invalid marker {marker!r}: no such {key}")
    return items[:limit] if limit else items
