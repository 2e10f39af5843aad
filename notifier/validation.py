"""What an alarm may be: the body of ``POST`` and ``PUT /v2/alarms``, checked and completed.

An event alarm (``type=event``) with its ``event_rule`` (an event type, and
conditions on the event's traits), its actions (http:// and https:// URLs that
``notifier.targets`` allows, at most ``alarm_max_actions`` of each kind),
severity, state and flags; Aodh's other alarm types are known and refused.
Texts are bounded: names, ids, event types and query values at most 255
characters, the description 4096, at most 100 query conditions.
Every error is a 400 naming the field (``event_rule.query[0].op``), or a 401
when a non-admin names another project or user.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from doctor import clock
from notifier.caller import Caller
from notifier.errors import fail
from notifier.evaluator import OPERATORS, QUERY_TYPES, STATES, utc_iso
from notifier.targets import ActionTargets, TargetRefused

SEVERITIES = ("low", "moderate", "critical")
# Aodh's other alarm types: known, refused with a clear message rather than "unknown".
OTHER_TYPES = ("threshold", "gnocchi_resources_threshold",
               "gnocchi_aggregation_by_metrics_threshold",
               "gnocchi_aggregation_by_resources_threshold", "composite", "prometheus",
               "loadbalancer_member_health")
ACTION_FIELDS = ("alarm_actions", "ok_actions", "insufficient_data_actions")
ALARM_FIELDS = ("alarm_id", "name", "description", "type", "event_rule", "state",
                "state_reason", "severity", "enabled", "repeat_actions", *ACTION_FIELDS,
                "time_constraints", "project_id", "user_id", "timestamp", "state_timestamp")
READ_ONLY = ("alarm_id", "timestamp", "state_timestamp", "state_reason", "evaluate_timestamp")
QUERY_FIELD_RE = re.compile(r"^[A-Za-z0-9_.',-]+$")  # the characters Aodh allows in a field
MAX_NAME = 255  # name, ids, event type, a query's fields and values
MAX_DESCRIPTION = 4096
MAX_CONDITIONS = 100  # conditions of one event rule
DEFAULT_MAX_ACTIONS = 10  # Aodh's alarm_max_actions: URLs in each of the three action lists


@dataclass(frozen=True)
class AlarmLimits:
    """What an alarm may hold: ``max_actions`` URLs per action list, each allowed by
    ``targets``. The default resolves no name, so it only refuses addresses written out."""

    max_actions: int = DEFAULT_MAX_ACTIONS
    targets: ActionTargets = field(default_factory=lambda: ActionTargets(resolve=None))


def _text(body: dict[str, Any], key: str, required: bool = False,
          default: str | None = None, limit: int | None = MAX_NAME) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise fail(key, "required")
        return default
    if not isinstance(value, str):
        raise fail(key, f"must be a string, got {type(value).__name__}")
    if limit is not None and len(value) > limit:
        raise fail(key, f"longer than {limit} characters")
    return value


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise fail(key, f"must be true or false, got {value!r}")


def _choice(body: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = _text(body, key, default=default)
    if value not in choices:
        raise fail(key, f"{value!r} is not one of {', '.join(choices)}")
    return value


def action_url(value: Any, where: str, targets: ActionTargets | None = None) -> str:
    """An alarm action URL: only http and https are supported (no log://, trust+http://),
    and only where ``targets`` lets actions go (``notifier.targets``)."""
    if not isinstance(value, str) or not value.strip():
        raise fail(where, "must be a non-empty URL string")
    try:
        return (targets or AlarmLimits().targets).check(value)
    except TargetRefused as exc:
        raise fail(where, str(exc), 503 if exc.retry else 400) from None


def _actions(body: dict[str, Any], key: str, limits: AlarmLimits) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(key, "must be a list of URLs")
    if len(value) > limits.max_actions:
        raise fail(key, f"{len(value)} actions; at most {limits.max_actions} "
                        "(alarm_max_actions)")
    urls = [action_url(item, f"{key}[{i}]", limits.targets) for i, item in enumerate(value)]
    if len(set(urls)) != len(urls):
        raise fail(key, "duplicate actions are found")
    return urls


def _query_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        if len(value) > MAX_NAME:
            raise fail(where, f"longer than {MAX_NAME} characters")
        return value
    raise fail(where, "required, a string or a number")


def _check_typed(value: str, type_: str, where: str) -> None:
    try:
        if type_ == "integer":
            int(value)
        elif type_ == "float":
            float(value)
        elif type_ == "datetime":
            clock.parse_iso(value)
        elif type_ == "boolean" and value.lower() not in ("true", "false"):
            raise ValueError("expected true or false")
    except ValueError:
        raise fail(where, f"{value!r} is not a valid {type_}") from None


def validate_query(query: Any, where: str = "event_rule.query") -> list[dict[str, str]]:
    """An event rule's conditions, normalized to ``{"field", "op", "value", "type"}``."""
    if query is None:
        return []
    if not isinstance(query, list):
        raise fail(where, "must be a list of {field, op, value} conditions")
    if len(query) > MAX_CONDITIONS:
        raise fail(where, f"{len(query)} conditions; at most {MAX_CONDITIONS}")
    conditions = []
    for i, item in enumerate(query):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise fail(at, "must be an object {field, op, value}")
        unknown = sorted(set(item) - {"field", "op", "value", "type"})
        if unknown:
            raise fail(f"{at}.{unknown[0]}", "unknown attribute")
        field = item.get("field")
        if (not isinstance(field, str) or len(field) > MAX_NAME
                or not QUERY_FIELD_RE.match(field)
                or field == "traits." or field.endswith(".")):
            raise fail(f"{at}.field", f"{field!r} is not a field such as traits.instance_id")
        op = item.get("op") or "eq"
        if not isinstance(op, str) or op not in OPERATORS:
            raise fail(f"{at}.op", f"{op!r} is not one of {', '.join(OPERATORS)}")
        value = _query_value(item.get("value"), f"{at}.value")
        type_ = item.get("type") or ""
        if not isinstance(type_, str) or type_ not in QUERY_TYPES:
            raise fail(f"{at}.type", f"{type_!r} is not one of "
                                     f"{', '.join(t for t in QUERY_TYPES if t)}")
        if type_:
            _check_typed(value, type_, f"{at}.value")
        conditions.append({"field": field, "op": op, "value": value, "type": type_})
    return conditions


def validate_event_rule(rule: Any) -> dict[str, Any]:
    """An alarm's ``event_rule``: its event type stripped, its conditions normalized."""
    if not isinstance(rule, dict):
        raise fail("event_rule", "required for an event alarm: "
                                 "{event_type, query: [{field, op, value}]}")
    unknown = sorted(set(rule) - {"event_type", "query"})
    if unknown:
        raise fail(f"event_rule.{unknown[0]}", "unknown attribute")
    event_type = rule.get("event_type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise fail("event_rule.event_type", "required, an event type or a shell wildcard "
                                            "such as compute.instance.*")
    if len(event_type) > MAX_NAME:
        raise fail("event_rule.event_type", f"longer than {MAX_NAME} characters")
    return {"event_type": event_type.strip(), "query": validate_query(rule.get("query"))}


def validate_alarm(body: Any, caller: Caller, current: dict[str, Any] | None = None,
                   now: float | None = None, limits: AlarmLimits | None = None
                   ) -> dict[str, Any]:
    """The alarm to store, from a create body or (with ``current``) an update body.

    Raises ApiError 400 naming the field, or 401 when a non-admin names another
    project or user (503 when an action's host cannot be resolved just now). An update
    keeps what the body leaves out. ``limits`` bounds the actions (AlarmLimits' defaults
    without).
    """
    limits = limits or AlarmLimits()
    if not isinstance(body, dict):
        raise fail("body", "must be a JSON object (an alarm)")
    known = set(ALARM_FIELDS) | set(READ_ONLY) | {f"{t}_rule" for t in OTHER_TYPES}
    unknown = sorted(set(body) - known)
    if unknown:
        raise fail(unknown[0], "unknown attribute for an alarm")
    if current is not None:
        body = {**current, **{k: v for k, v in body.items() if k not in READ_ONLY}}
    type_ = _text(body, "type", required=True)
    if type_ in OTHER_TYPES:
        raise fail("type", f"{type_!r} alarms are not supported: this notifier evaluates "
                           "event alarms only (type=event)")
    if type_ != "event":
        raise fail("type", f"unknown alarm type {type_!r}; this notifier supports 'event'")
    for other in OTHER_TYPES:
        if body.get(f"{other}_rule") not in (None, {}, []):
            raise fail(f"{other}_rule", "does not apply to an event alarm; give event_rule")
    name = _text(body, "name", required=True, limit=None) or ""  # its own message below
    if not name.strip() or len(name) > MAX_NAME:
        raise fail("name", f"must be 1 to {MAX_NAME} characters")
    rule = validate_event_rule(body.get("event_rule"))
    project = _text(body, "project_id", default=caller.project_id) or caller.project_id
    user = _text(body, "user_id", default=caller.user_id) or caller.user_id
    if not caller.is_admin:
        owner = current.get("project_id") if current is not None else caller.project_id
        if project != owner:
            raise fail("project_id", f"Not Authorized to access project {project}", 401)
        if current is None and user != caller.user_id:
            raise fail("user_id", f"Not Authorized to access user {user}", 401)
    constraints = body.get("time_constraints")
    if constraints not in (None, []):
        if not isinstance(constraints, list):
            raise fail("time_constraints", "must be a list")
        raise fail("time_constraints", "not supported by the embedded notifier: an event "
                                       "alarm here is evaluated at any time")
    stamp = utc_iso(clock.now() if now is None else now)
    state = _choice(body, "state", STATES, "insufficient data")
    data = {
        "alarm_id": current["alarm_id"] if current is not None else str(uuid.uuid4()),
        "name": name,
        "description": _text(body, "description", limit=MAX_DESCRIPTION)
        or f"Alarm when {rule['event_type']} event occurred.",
        "type": "event",
        "event_rule": rule,
        "state": state,
        "state_reason": "Not evaluated yet",
        "severity": _choice(body, "severity", SEVERITIES, "low"),
        "enabled": _flag(body, "enabled", True),
        "repeat_actions": _flag(body, "repeat_actions", False),
        **{key: _actions(body, key, limits) for key in ACTION_FIELDS},
        "time_constraints": [],
        "project_id": project,
        "user_id": user,
        "timestamp": stamp,
        "state_timestamp": stamp,
    }
    if current is not None:
        if state == current["state"]:
            data["state_reason"] = current.get("state_reason", "")
            data["state_timestamp"] = current.get("state_timestamp", stamp)
        else:
            data["state_reason"] = "Manually set via API"
    return data
