"""The Doctor event schema shared by the Monitor and the Inspector.

Monitor -> Inspector events are a JSON list of objects (a bare object is also
accepted, as older monitors sent one)::

    [{"time": "2026-11-21T10:00:00.123456+00:00", "type": "compute.host.down",
      "details": {"hostname": "compute-1", "status": "down",
                  "monitor": "<monitor name>", "monitor_event_id": "<unique id>"}}]

``monitor_event_id`` names one incident: a retried event carries the same id,
so the receiver acts on it once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from doctor import clock

HOST_DOWN = "compute.host.down"
HOST_UP = "compute.host.up"
STATUS_BY_TYPE = {HOST_DOWN: "down", HOST_UP: "up"}


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
            monitor_event_id=f"{monitor}:{hostname}:{uuid.uuid4().hex}",
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
    return value


def parse_host_event(obj: Any, where: str = "event") -> HostEvent:
    """Validate one Doctor event object; errors name the offending field."""
    if not isinstance(obj, dict):
        raise EventError(where, "must be a JSON object")
    type_ = _text(obj, "type", where)
    if type_ not in STATUS_BY_TYPE:
        raise EventError(f"{where}.type", f"unknown event type {type_!r}; "
                         f"expected one of {sorted(STATUS_BY_TYPE)}")
    try:
        at = clock.parse_iso(_text(obj, "time", where))
    except ValueError as exc:
        raise EventError(f"{where}.time", f"not an ISO 8601 time ({exc})") from None
    details = obj.get("details")
    if not isinstance(details, dict):
        raise EventError(f"{where}.details", "required, a JSON object")
    dwhere = f"{where}.details"
    status = details.get("status", STATUS_BY_TYPE[type_])
    if status != STATUS_BY_TYPE[type_]:
        raise EventError(f"{dwhere}.status", f"{status!r} contradicts type {type_!r}")
    return HostEvent(
        type=type_,
        hostname=_text(details, "hostname", dwhere),
        time=at,
        monitor=_text(details, "monitor", dwhere),
        monitor_event_id=_text(details, "monitor_event_id", dwhere),
    )


def parse_host_events(body: Any) -> list[HostEvent]:
    """A request body (list or bare object) as events, or EventError naming the field."""
    if isinstance(body, dict):
        return [parse_host_event(body)]
    if not isinstance(body, list) or not body:
        raise EventError("body", "must be a non-empty JSON list of events (or one event object)")
    return [parse_host_event(item, f"body[{i}]") for i, item in enumerate(body)]


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


def parse_ceilometer_event(obj: Any, where: str = "event") -> dict[str, Any]:
    """Validate one event in Ceilometer's format; EventError names the field."""
    if not isinstance(obj, dict):
        raise EventError(where, "must be a JSON object")
    for key in ("message_id", "event_type", "generated"):
        _text(obj, key, where)
    try:
        clock.parse_iso(obj["generated"])
    except ValueError as exc:
        raise EventError(f"{where}.generated", f"not an ISO 8601 time ({exc})") from None
    items = obj.get("traits", [])
    if not isinstance(items, list):
        raise EventError(f"{where}.traits", "must be a list of [name, type, value]")
    for i, trait in enumerate(items):
        if (not isinstance(trait, list) or len(trait) != 3 or not isinstance(trait[0], str)
                or trait[1] not in TRAIT_TYPES):
            raise EventError(f"{where}.traits[{i}]",
                             "must be [name, type 1-4, value]")
    return obj
