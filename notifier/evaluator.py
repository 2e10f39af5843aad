"""Event alarms evaluated with Aodh's semantics, in memory, indexed for batches.

An event fires an alarm when:
- the alarm is enabled;
- the event's ``event_type`` matches the alarm's ``event_rule.event_type``
  as a shell wildcard (``compute.instance.*``);
- the alarm's project is the event's ``project_id`` or ``tenant_id`` trait
  (an event of another project, or of none, never fires it);
- every condition of ``event_rule.query`` holds (they are ANDed). A
  condition on ``traits.<name>`` compares typed: the trait's type (1 string,
  2 integer, 3 float, 4 datetime) decides how the query's text value is
  converted, so ``traits.load gt 5`` compares numbers and
  ``traits.instance_id eq 5`` compares text. A condition on a trait the event
  lacks, or whose value does not convert, does not hold. Other fields
  (``event_type``, ``message_id``, dotted paths into the event) compare as text.

On a match the alarm goes to state ``alarm`` with a reason and a history
entry, and its ``alarm_actions`` fire. With ``repeat_actions=false`` that
happens only on the transition into ``alarm``: an alarm already in ``alarm``
stays silent until it is set back to ``ok`` (or ``insufficient data``)
through the API. With ``repeat_actions=true`` every matching event fires it.

Speed: alarms are indexed by event type (exact, or the few wildcard patterns),
then project, then the value of their ``traits.instance_id eq`` condition when
they have one, so an event only looks at the alarms that could match it.
The Evaluator is not thread-safe; its owner serializes calls.
"""

from __future__ import annotations

import fnmatch
import json
import operator
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from doctor import clock
from doctor.events import TRAIT_DATETIME, TRAIT_FLOAT, TRAIT_INTEGER, TRAIT_STRING

ALARM, OK, INSUFFICIENT_DATA = "alarm", "ok", "insufficient data"
STATES = (OK, ALARM, INSUFFICIENT_DATA)
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}
PROJECT_TRAITS = ("project_id", "tenant_id")
INDEX_TRAIT = "instance_id"
TRAITS_PREFIX = "traits."
WILDCARD_CHARS = frozenset("*?[")

# Query value types a client may declare (aodhclient's ``field=type::value``); the trait's
# own type still decides the comparison, the declared one is only checked at create time.
QUERY_TYPES = {"": TRAIT_STRING, "string": TRAIT_STRING, "integer": TRAIT_INTEGER,
               "float": TRAIT_FLOAT, "datetime": TRAIT_DATETIME, "boolean": None}

_UNCONVERTIBLE = object()


def utc_iso(epoch: float) -> str:
    """Aodh's timestamp format: ISO 8601, UTC, without an offset."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).replace(tzinfo=None).isoformat(
        timespec="microseconds")


def convert(value: Any, trait_type: int) -> Any:
    """``value`` as trait type ``trait_type`` would hold it; ValueError if it is not one."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a trait value")
    if trait_type == TRAIT_INTEGER:
        return int(value)
    if trait_type == TRAIT_FLOAT:
        return float(value)
    if trait_type == TRAIT_DATETIME:
        if isinstance(value, (int, float)):
            return float(value)
        return clock.parse_iso(str(value))
    return value if isinstance(value, str) else str(value)


def parse_traits(event: dict[str, Any]) -> dict[str, tuple[int, Any]]:
    """An event's traits by name, as (type, typed value); a value that does not convert to
    its declared type is kept as unconvertible, and no condition on it holds."""
    parsed: dict[str, tuple[int, Any]] = {}
    for name, trait_type, value in event.get("traits") or ():
        try:
            parsed[name] = (trait_type, convert(value, trait_type))
        except (ValueError, TypeError):
            parsed[name] = (trait_type, _UNCONVERTIBLE)
    return parsed


class Condition:
    """One ``{"field", "op", "value"}`` item of an event rule's query."""

    __slots__ = ("field", "op", "value", "trait", "path", "_compare", "_typed")

    def __init__(self, field: str, op: str, value: str) -> None:
        self.field = field
        self.op = op
        self.value = value
        self.trait = field[len(TRAITS_PREFIX):] if field.startswith(TRAITS_PREFIX) else None
        self.path = None if self.trait is not None else field.split(".")
        self._compare = OPERATORS[op]
        self._typed: dict[int, Any] = {}  # the query value converted, per trait type seen

    def _expected(self, trait_type: int) -> Any:
        try:
            return self._typed[trait_type]
        except KeyError:
            try:
                typed = convert(self.value, trait_type)
            except (ValueError, TypeError):
                typed = _UNCONVERTIBLE
            self._typed[trait_type] = typed
            return typed

    def holds(self, traits: dict[str, tuple[int, Any]], event: dict[str, Any]) -> bool:
        if self.trait is not None:
            found = traits.get(self.trait)
            if found is None or found[1] is _UNCONVERTIBLE:
                return False
            expected = self._expected(found[0])
            if expected is _UNCONVERTIBLE:
                return False
            try:
                return bool(self._compare(found[1], expected))
            except TypeError:
                return False
        value: Any = event
        for part in self.path or ():
            value = value.get(part) if isinstance(value, dict) else None
        if value is None or isinstance(value, (dict, list)):
            return False
        return bool(self._compare(str(value), self.value))


class EventRule:
    """An alarm's ``event_rule``, compiled for matching."""

    __slots__ = ("event_type", "query", "query_json", "conditions", "wildcard", "index_key")

    def __init__(self, rule: dict[str, Any]) -> None:
        self.event_type: str = rule["event_type"]
        self.query: list[dict[str, Any]] = list(rule.get("query") or [])
        self.query_json = json.dumps(self.query, sort_keys=True)  # for the firing's reason
        self.conditions = [Condition(q["field"], q.get("op") or "eq", str(q["value"]))
                           for q in self.query]
        self.wildcard = bool(WILDCARD_CHARS.intersection(self.event_type))
        self.index_key: str | None = next(
            (c.value for c in self.conditions if c.trait == INDEX_TRAIT and c.op == "eq"), None)

    def conditions_hold(self, traits: dict[str, tuple[int, Any]], event: dict[str, Any]) -> bool:
        return all(c.holds(traits, event) for c in self.conditions)


class Alarm:
    """An alarm as the API shows it (``data``, replaced, never mutated, on each change),
    its compiled rule, and a version that orders its writes to the store."""

    __slots__ = ("data", "rule", "version")

    def __init__(self, data: dict[str, Any], version: int = 1) -> None:
        self.data = data
        self.rule = EventRule(data["event_rule"])
        self.version = version

    @property
    def alarm_id(self) -> str:
        return self.data["alarm_id"]

    @property
    def project_id(self) -> str:
        return self.data.get("project_id") or ""

    @property
    def state(self) -> str:
        return self.data["state"]


@dataclass
class Firing:
    """An alarm fired by an event: what its actions POST, and for whom."""

    alarm_id: str
    alarm_name: str
    severity: str
    previous: str
    current: str
    reason: str
    event: dict[str, Any]
    actions: list[str]
    instance_id: str | None
    at: float
    alarm: dict[str, Any] = field(repr=False, default_factory=dict)  # the alarm as it fired

    def payload(self) -> dict[str, Any]:
        """Aodh's alarm action body."""
        return {"alarm_name": self.alarm_name, "alarm_id": self.alarm_id,
                "severity": self.severity, "previous": self.previous, "current": self.current,
                "reason": self.reason, "reason_data": {"type": "event", "event": self.event}}


@dataclass
class Evaluation:
    """What one batch of events did: the firings, and the alarm versions to persist."""

    firings: list[Firing] = field(default_factory=list)
    changed: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)
    # The alarms as they were before the batch, to undo it if it cannot be persisted.
    before: dict[str, tuple[Alarm, dict[str, Any], int]] = field(default_factory=dict)

    def undo(self) -> None:
        """Put the alarms back as they were before this batch (its owner still holding the
        lock it evaluated under, so nothing else changed them meanwhile)."""
        for alarm, data, version in self.before.values():
            alarm.data, alarm.version = data, version

    def history(self) -> list[dict[str, Any]]:
        """One state transition record per firing, built on demand."""
        return [history_entry(f.alarm, "state transition",
                              {"state": f.current, "transition_reason": f.reason},
                              utc_iso(f.at)) for f in self.firings]


def history_entry(alarm: dict[str, Any], type_: str, detail: dict[str, Any], timestamp: str,
                  user_id: str | None = None, project_id: str | None = None) -> dict[str, Any]:
    """One of Aodh's alarm change records (types: creation, rule change, state transition,
    deletion); ``detail`` is kept as JSON text, as Aodh returns it."""
    return {"event_id": str(uuid.uuid4()), "alarm_id": alarm["alarm_id"], "type": type_,
            "detail": json.dumps(detail, sort_keys=True), "timestamp": timestamp,
            "user_id": user_id if user_id is not None else alarm.get("user_id"),
            "project_id": project_id if project_id is not None else alarm.get("project_id"),
            "on_behalf_of": alarm.get("project_id"), "severity": alarm.get("severity")}


class _Bucket:
    """The alarms of one event type (or pattern) and one project."""

    __slots__ = ("by_instance", "others")

    def __init__(self) -> None:
        self.by_instance: dict[str, dict[str, Alarm]] = {}
        self.others: dict[str, Alarm] = {}

    def empty(self) -> bool:
        return not self.by_instance and not self.others


_WILDCARD_CACHE_MAX = 10_000


class Evaluator:
    """The alarms in memory, indexed, and Aodh's event-alarm evaluation over them."""

    def __init__(self) -> None:
        self.alarms: dict[str, Alarm] = {}
        self._exact: dict[str, dict[str, _Bucket]] = {}
        self._wild: dict[str, dict[str, _Bucket]] = {}
        self._wild_for_type: dict[str, tuple[str, ...]] = {}  # event type -> patterns it matches

    # -- the set of alarms --------------------------------------------------------------

    def add(self, data: dict[str, Any], version: int = 1) -> Alarm:
        """Add the alarm, or replace the one with its id (and re-index it)."""
        self.remove(data["alarm_id"])
        alarm = Alarm(data, version)
        self.alarms[alarm.alarm_id] = alarm
        bucket = self._bucket(alarm, create=True)
        assert bucket is not None
        if alarm.rule.index_key is not None:
            bucket.by_instance.setdefault(alarm.rule.index_key, {})[alarm.alarm_id] = alarm
        else:
            bucket.others[alarm.alarm_id] = alarm
        return alarm

    def remove(self, alarm_id: str) -> Alarm | None:
        alarm = self.alarms.pop(alarm_id, None)
        if alarm is None:
            return None
        bucket = self._bucket(alarm, create=False)
        if bucket is not None:
            key = alarm.rule.index_key
            if key is not None:
                group = bucket.by_instance.get(key, {})
                group.pop(alarm_id, None)
                if not group:
                    bucket.by_instance.pop(key, None)
            else:
                bucket.others.pop(alarm_id, None)
            if bucket.empty():
                self._drop_bucket(alarm)
        return alarm

    def get(self, alarm_id: str) -> Alarm | None:
        return self.alarms.get(alarm_id)

    def _bucket(self, alarm: Alarm, create: bool) -> _Bucket | None:
        table = self._wild if alarm.rule.wildcard else self._exact
        by_project = table.get(alarm.rule.event_type)
        if by_project is None:
            if not create:
                return None
            by_project = table[alarm.rule.event_type] = {}
            if alarm.rule.wildcard:
                self._wild_for_type.clear()  # a new pattern: cached matches are stale
        bucket = by_project.get(alarm.project_id)
        if bucket is None and create:
            bucket = by_project[alarm.project_id] = _Bucket()
        return bucket

    def _drop_bucket(self, alarm: Alarm) -> None:
        table = self._wild if alarm.rule.wildcard else self._exact
        by_project = table[alarm.rule.event_type]
        del by_project[alarm.project_id]
        if not by_project:
            del table[alarm.rule.event_type]
            if alarm.rule.wildcard:
                self._wild_for_type.clear()

    # -- evaluation ---------------------------------------------------------------------

    def _patterns_for(self, event_type: str) -> tuple[str, ...]:
        patterns = self._wild_for_type.get(event_type)
        if patterns is None:
            if len(self._wild_for_type) >= _WILDCARD_CACHE_MAX:
                self._wild_for_type.clear()
            # Case-sensitive, as fnmatch is on the Linux hosts Aodh runs on.
            patterns = tuple(p for p in self._wild if fnmatch.fnmatchcase(event_type, p))
            self._wild_for_type[event_type] = patterns
        return patterns

    def candidates(self, event: dict[str, Any],
                   traits: dict[str, tuple[int, Any]]) -> Iterator[Alarm]:
        """The alarms whose event type, project and instance index fit ``event``."""
        projects = {value for name in PROJECT_TRAITS if name in traits
                    for value in (traits[name][1],) if isinstance(value, str)}
        if not projects:
            return  # Aodh: an event that names no project fires no project's alarm
        instance = traits.get(INDEX_TRAIT)
        key = instance[1] if instance is not None and instance[0] == TRAIT_STRING else None
        # A typed (non-string) instance_id compares by value, not by its text: scan them all.
        scan_all = instance is not None and instance[0] != TRAIT_STRING
        event_type = event.get("event_type", "")
        tables = [self._exact.get(event_type)]
        tables += [self._wild[p] for p in self._patterns_for(event_type)] if self._wild else []
        for by_project in tables:
            if not by_project:
                continue
            for project in projects:
                bucket = by_project.get(project)
                if bucket is None:
                    continue
                yield from bucket.others.values()
                if scan_all:
                    for group in bucket.by_instance.values():
                        yield from group.values()
                elif key is not None and key in bucket.by_instance:
                    yield from bucket.by_instance[key].values()

    def matching(self, event: dict[str, Any]) -> list[Alarm]:
        """The enabled alarms ``event`` satisfies, whatever their state."""
        traits = parse_traits(event)
        return [a for a in self.candidates(event, traits)
                if a.data.get("enabled", True) and a.rule.conditions_hold(traits, event)]

    def evaluate(self, events: list[dict[str, Any]], now: float | None = None) -> Evaluation:
        """Apply ``events`` in order: update the alarms' states and say which fired."""
        result = Evaluation()
        for event in events:
            traits = parse_traits(event)
            at = now
            # Materialized first: firing replaces alarm data, never the index, but be safe.
            for alarm in list(self.candidates(event, traits)):
                data = alarm.data
                if not data.get("enabled", True):
                    continue
                if data["state"] == ALARM and not data.get("repeat_actions", False):
                    continue  # fires once until re-armed (set to ok through the API)
                if alarm.rule.conditions_hold(traits, event):
                    if at is None:
                        at = clock.now()
                    self._fire(alarm, event, traits, at, result)
        return result

    def _fire(self, alarm: Alarm, event: dict[str, Any], traits: dict[str, tuple[int, Any]],
              at: float, result: Evaluation) -> None:
        previous = alarm.data["state"]
        result.before.setdefault(alarm.alarm_id, (alarm, alarm.data, alarm.version))
        reason = (f"Event <id={event.get('message_id')},event_type={event.get('event_type')}> "
                  f"hits the query <query={alarm.rule.query_json}>.")
        data = {**alarm.data, "state": ALARM, "state_reason": reason}
        if previous != ALARM:
            data["state_timestamp"] = utc_iso(at)
        alarm.data = data
        alarm.version += 1
        result.changed[alarm.alarm_id] = (data, alarm.version)
        instance = traits.get(INDEX_TRAIT)
        instance_id = None if instance is None or instance[1] is _UNCONVERTIBLE \
            else str(instance[1])
        result.firings.append(Firing(
            alarm_id=alarm.alarm_id, alarm_name=data.get("name", ""),
            severity=data.get("severity", "low"), previous=previous, current=ALARM,
            reason=reason, event=event, actions=list(data.get("alarm_actions") or []),
            instance_id=instance_id, at=at, alarm=data))
