"""The Doctor event schema shared by the Monitor and the Inspector.

Monitor -> Inspector events are a JSON list of objects (a bare object is also
accepted, as older monitors sent one)::

    [{"time": "2026-11-21T10:00:00.123456+00:00", "type": "compute.host.down",
      "details": {"hostname": "compute-1", "status": "down",
                  "monitor": "<monitor name>", "monitor_event_id": "<unique id>"}}]

``monitor_event_id`` names one incident: a retried event carries the same id,
so the receiver acts on it once.

Both schemas are bounded: names and ids are at most ``MAX_TEXT`` characters, a host event's
``time`` lies within a window around now (``max_future_s`` ahead, ``max_age_s`` behind), a
Ceilometer event has at most ``MAX_TRAITS`` traits whose values are strings or finite
numbers, and a request at most as many events as its receiver allows. Every violation is
an ``EventError`` naming the field.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from doctor import clock

HOST_DOWN = "compute.host.down"
HOST_UP = "compute.host.up"
STATUS_BY_TYPE = {HOST_DOWN: "down", HOST_UP: "up"}

MAX_TEXT = 255  # host and monitor names, event ids, event types, trait names and text values
MAX_TRAITS = 256  # traits of one Ceilometer event
MAX_RAW_DEPTH = 32  # nesting of a Ceilometer event's "raw" object
DEFAULT_MAX_FUTURE_S = 300.0  # a host event stamped further ahead of now is refused
DEFAULT_MAX_AGE_S = 86_400.0  # a host event older than this is refused
DEFAULT_MAX_EVENTS = 1000  # events in one request


class EventError(ValueError):
    """A Doctor event that does not follow the contract; ``field`` names the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class HostEvent:
    """A host went down or came back, as one monitor saw it."""

    type: str
    hostname: str
    time: float  # epoch seconds on the shared clock: the moment of detection
    monitor: str
    monitor_event_id: str

    @property
    def status(self) -> str:
        return STATUS_BY_TYPE[self.type]

    @classmethod
    def new(cls, type_: str, hostname: str, monitor: str, at: float | None = None) -> HostEvent:
        """A fresh incident with its own id."""
        return cls(
            type=type_,
            hostname=hostname,
            time=clock.now() if at is None else at,
            monitor=monitor,
            # <monitor>:<host>:<uuid>, the names cut so that the id fits in MAX_TEXT.
            monitor_event_id=f"{monitor}:{hostname}"[:MAX_TEXT - 33] + f":{uuid.uuid4().hex}",
        )

    def to_doctor(self) -> dict[str, Any]:
        """The contract's JSON object for this event."""
        return {
            "time": clock.isoformat(self.time),
            "type": self.type,
            "details": {
                "hostname": self.hostname,
                "status": self.status,
                "monitor": self.monitor,
                "monitor_event_id": self.monitor_event_id,
            },
        }


def _text(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise EventError(f"{where}.{key}", "required, a non-empty string")
    if len(value) > MAX_TEXT:
        raise EventError(f"{where}.{key}", f"longer than {MAX_TEXT} characters")
    return value


def check_time(at: float, field: str, now: float | None = None,
               max_future_s: float = DEFAULT_MAX_FUTURE_S,
               max_age_s: float = DEFAULT_MAX_AGE_S) -> float:
    """``at`` (epoch seconds) if it lies within ``max_future_s`` ahead of ``now`` and
    ``max_age_s`` behind it; else EventError naming ``field``."""
    now = clock.now() if now is None else now
    if not math.isfinite(at) or at > now + max_future_s:
        raise EventError(field, f"more than {max_future_s:g} s in the future (is the "
                                "sender's clock right?)")
    if at < now - max_age_s:
        raise EventError(field, f"older than {max_age_s:g} s: too late to act on")
    return at


def parse_host_event(obj: Any, where: str = "event", now: float | None = None,
                     max_future_s: float = DEFAULT_MAX_FUTURE_S,
                     max_age_s: float = DEFAULT_MAX_AGE_S) -> HostEvent:
    """Validate one Doctor event object; errors name the offending field. Its ``time`` must
    lie within ``max_future_s`` ahead of ``now`` (the clock's now by default) and
    ``max_age_s`` behind it."""
    if not isinstance(obj, dict):
        raise EventError(where, "must be a JSON object")
    type_ = _text(obj, "type", where)
    if type_ not in STATUS_BY_TYPE:
        raise EventError(f"{where}.type", f"unknown event type {type_!r}; "
                         f"expected one of {sorted(STATUS_BY_TYPE)}")
    try:
        at = clock.parse_iso(_text(obj, "time", where))
    except (ValueError, OverflowError) as exc:
        raise EventError(f"{where}.time", f"not an ISO 8601 time ({exc})") from None
    details = obj.get("details")
    if not isinstance(details, dict):
        raise EventError(f"{where}.details", "required, a JSON object")
    dwhere = f"{where}.details"
    status = details.get("status", STATUS_BY_TYPE[type_])
    if status != STATUS_BY_TYPE[type_]:
        raise EventError(f"{dwhere}.status", f"{status!r} contradicts type {type_!r}")
    event = HostEvent(
        type=type_,
        hostname=_text(details, "hostname", dwhere),
        time=at,
        monitor=_text(details, "monitor", dwhere),
        monitor_event_id=_text(details, "monitor_event_id", dwhere),
    )
    check_time(at, f"{where}.time", now, max_future_s, max_age_s)
    return event


def check_count(items: list[Any], max_events: int, where: str = "body") -> None:
    """EventError naming ``where`` if ``items`` holds more than ``max_events`` events."""
    if len(items) > max_events:
        raise EventError(where, f"{len(items)} events in one request; at most {max_events}")


def parse_host_events(body: Any, now: float | None = None,
                      max_future_s: float = DEFAULT_MAX_FUTURE_S,
                      max_age_s: float = DEFAULT_MAX_AGE_S,
                      max_events: int = DEFAULT_MAX_EVENTS) -> list[HostEvent]:
    """A request body (list or bare object) as events, or EventError naming the field."""
    if isinstance(body, dict):
        return [parse_host_event(body, "body", now, max_future_s, max_age_s)]
    if not isinstance(body, list) or not body:
        raise EventError("body", "must be a non-empty JSON list of events (or one event object)")
    check_count(body, max_events)
    now = clock.now() if now is None else now
    return [parse_host_event(item, f"body[{i}]", now, max_future_s, max_age_s)
            for i, item in enumerate(body)]


# -- Inspector/Controller -> Notifier: Ceilometer's event format ------------------------

INSTANCE_UPDATE = "compute.instance.update"
TRAIT_STRING, TRAIT_INTEGER, TRAIT_FLOAT, TRAIT_DATETIME = 1, 2, 3, 4
TRAIT_TYPES = (TRAIT_STRING, TRAIT_INTEGER, TRAIT_FLOAT, TRAIT_DATETIME)


def instance_update(instance_id: str, state: str, host: str, project_id: str,
                    at: float | None = None) -> dict[str, Any]:
    """A ``compute.instance.update`` event as Ceilometer publishes it to Aodh.

    Aodh matches an alarm only to events whose ``project_id`` or ``tenant_id``
    trait is the alarm's project, so both are set.
    """
    return ceilometer_event(INSTANCE_UPDATE, at, instance_id=instance_id, state=state,
                            host=host, project_id=project_id, tenant_id=project_id)


def ceilometer_event(event_type: str, at: float | None, **string_traits: str) -> dict[str, Any]:
    """An event in Ceilometer's format: a new message id, ``generated`` at ``at`` (now by
    default), and string traits in the order given."""
    return {
        "message_id": str(uuid.uuid4()),
        "event_type": event_type,
        "generated": clock.isoformat(clock.now() if at is None else at),
        "raw": {},
        "traits": [[name, TRAIT_STRING, value] for name, value in string_traits.items()],
    }


VIM_STATUS_UPDATE = "vim.status.update"


def vim_status_update(vim_id: str, name: str, status: str, previous_status: str,
                      project: str, project_id: str, at: float | None = None) -> dict[str, Any]:
    """A VIM's status changed (``vim.status.update``), in the same format as host events.

    Statuses are lower case in the traits (``traits.status eq unreachable``), as instance
    states are; ``project`` is the VIM's own project (project_name), ``project_id`` and
    ``tenant_id`` the project whose alarms may see the event.
    """
    return ceilometer_event(VIM_STATUS_UPDATE, at, vim_id=vim_id, name=name,
                            status=status.lower(), previous_status=previous_status.lower(),
                            project=project, project_id=project_id, tenant_id=project_id)


def traits(event: dict[str, Any]) -> dict[str, Any]:
    """An event's traits by name."""
    return {name: value for name, _type, value in event.get("traits", [])}


def _trait_problem(trait: Any) -> str | None:
    """What is wrong with one ``[name, type, value]`` trait, if anything."""
    if (not isinstance(trait, list) or len(trait) != 3 or not isinstance(trait[0], str)
            or type(trait[1]) is not int or trait[1] not in TRAIT_TYPES):
        return "must be [name, type 1-4, value]"
    name, _type, value = trait
    if not name or len(name) > MAX_TEXT:
        return f"the name must be 1 to {MAX_TEXT} characters"
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            return f"the value is longer than {MAX_TEXT} characters"
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"the value must be a string or a number, not {type(value).__name__}"
    elif not math.isfinite(value):
        return "the value must be a finite number"
    return None


def _depth(value: Any, limit: int) -> int:
    """How many levels of lists and objects ``value`` nests, counted up to ``limit + 1``."""
    depth, level = 0, [value] if isinstance(value, (dict, list)) else []
    while level and depth <= limit:
        depth += 1
        level = [child for item in level
                 for child in (item.values() if isinstance(item, dict) else item)
                 if isinstance(child, (dict, list))]
    return depth


def parse_ceilometer_event(obj: Any, where: str = "event") -> dict[str, Any]:
    """Validate one event in Ceilometer's format; EventError names the field."""
    if not isinstance(obj, dict):
        raise EventError(where, "must be a JSON object")
    for key in ("message_id", "event_type", "generated"):
        _text(obj, key, where)
    try:
        clock.parse_iso(obj["generated"])
    except (ValueError, OverflowError) as exc:
        raise EventError(f"{where}.generated", f"not an ISO 8601 time ({exc})") from None
    items = obj.get("traits", [])
    if not isinstance(items, list):
        raise EventError(f"{where}.traits", "must be a list of [name, type, value]")
    if len(items) > MAX_TRAITS:
        raise EventError(f"{where}.traits", f"{len(items)} traits; at most {MAX_TRAITS}")
    for i, trait in enumerate(items):
        problem = _trait_problem(trait)
        if problem:
            raise EventError(f"{where}.traits[{i}]", problem)
    raw = obj.get("raw", {})
    if not isinstance(raw, dict):
        raise EventError(f"{where}.raw", "must be a JSON object")
    if raw and _depth(raw, MAX_RAW_DEPTH) > MAX_RAW_DEPTH:
        raise EventError(f"{where}.raw", f"nested more than {MAX_RAW_DEPTH} levels deep")
    return obj


def parse_ceilometer_events(items: list[Any], max_events: int = DEFAULT_MAX_EVENTS,
                            where: str = "body") -> list[dict[str, Any]]:
    """A request's list of Ceilometer events, each validated, at most ``max_events``."""
    check_count(items, max_events, where)
    return [parse_ceilometer_event(e, f"{where}[{i}]") for i, e in enumerate(items)]
