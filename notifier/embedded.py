"""The embedded Notifier: alarm store, evaluator, action dispatcher and the evaluation worker.

It is an ``EventPublisher`` itself, so a producer in the same process hands it
events directly (``publish``); over HTTP the same events arrive through
``POST /v1/events`` (``notifier.api``). Either way the producer never waits:
events are queued, and one worker thread evaluates them in batches (whatever
queued up while it was busy is evaluated together), dispatches the alarm
actions, and only then persists the state changes, because the alarm POSTs
are what the latency budget is for. If the process dies between the two, an
alarm may fire again after a restart: at least once, never lost.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

from doctor import clock
from doctor.events import EventError, parse_ceilometer_event
from doctor.logs import escape
from doctor.outbox import Outbox, OutboxClosed, OutboxFull
from doctor.profiler import Profiler
from notifier.actions import ActionDispatcher
from notifier.base import EventPublisher, PublishError
from notifier.config import NotifierConfig
from notifier.evaluator import Evaluator, history_entry, utc_iso
from notifier.store import AlarmStore
from notifier.targets import ActionTargets, Resolver, system_resolve
from notifier.validation import AlarmLimits

LOG = logging.getLogger(__name__)

QUEUE_BATCHES = 10_000  # event lists waiting for evaluation before producers are refused
MAX_EVALUATION = 10_000  # events evaluated under one lock hold and one store transaction
MANUAL_REASON = "Manually set via API"


class AlarmNotFound(LookupError):
    """No alarm with this id."""


class AlarmConflict(ValueError):
    """Another alarm of the project has this name (Aodh answers 409)."""


class AlarmQuotaExceeded(ValueError):
    """The project has ``project_alarm_quota`` alarms already (Aodh answers 403)."""


class EmbeddedNotifier(EventPublisher):
    """Aodh's event alarms in one process: ``start()``, ``publish(events)``, ``stop()``.

    ``resolve`` looks host names of action URLs up (the system's resolver by default)."""

    def __init__(self, config: NotifierConfig, resolve: Resolver = system_resolve) -> None:
        self.config = config
        self.profiler = Profiler(config.profile_file)
        self.store = AlarmStore(config.database)
        self.evaluator = Evaluator()
        # Where actions may go; the own port is known once listening (listening_at).
        self.targets = ActionTargets(config.action_url_allow, config.action_url_deny,
                                     resolve=resolve)
        if config.port:
            self.targets.listening_at(config.host, config.port)
        self.alarm_limits = AlarmLimits(config.alarm_max_actions, self.targets)
        self.dispatcher = ActionDispatcher(
            timeout_s=config.action_timeout_ms / 1000, retry_for_s=config.action_retry_for_s,
            retry_initial_s=config.action_retry_initial_ms / 1000,
            retry_max_s=config.action_retry_max_ms / 1000, workers=config.action_workers,
            profiler=self.profiler, check_url=self._check_url, secret=config.action_secret)
        # One lock for the evaluator's alarms and every API change to them.
        self.lock = threading.RLock()
        # Event lists; a batch takes lists until it holds MAX_EVALUATION events or more.
        self._outbox: Outbox[list[dict[str, Any]]] = Outbox(
            self._evaluate_lists, name="notifier-evaluator", max_batch=MAX_EVALUATION,
            maxsize=QUEUE_BATCHES, weight=len)
        self._stopped = threading.Event()
        self.evaluated = 0  # events evaluated so far
        self._names: dict[tuple[str, str], str] = {}  # (project, name) -> alarm id: unique
        self._per_project: Counter[str] = Counter()  # alarms by project, for the quota
        for data, version in self.store.load_alarms():
            self.evaluator.add(data, version)
            self._names[_name_key(data)] = data["alarm_id"]
            self._per_project[_project(data)] += 1
        LOG.info("notifier: %d alarms loaded from %s", len(self.evaluator.alarms),
                 make_url(config.database).render_as_string(hide_password=True))

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> EmbeddedNotifier:
        self.dispatcher.start()
        self._outbox.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Evaluate what is queued, let POSTs in flight finish, all within about ``timeout_s``."""
        if self._stopped.is_set():
            return
        deadline = clock.monotonic() + timeout_s
        self._stopped.set()
        if self._outbox.started:
            drained = self._outbox.flush(max(0.0, deadline - clock.monotonic()) / 2)
            lost = self._outbox.close(0.0, join_s=0.0)  # an idle worker ends at once
            if not drained:
                LOG.warning("notifier: evaluation still running at stop; giving up on it "
                            "(%d events not evaluated)", sum(len(events) for events in lost))
        self.dispatcher.stop(max(0.5, deadline - clock.monotonic()))
        self.store.close()

    def close(self) -> None:
        self.stop()

    def listening_at(self, host: str, port: int) -> None:
        """The API serves on ``host:port``: alarm actions may not target it."""
        self.targets.listening_at(host, port)

    def _check_url(self, url: str) -> None:
        """At send time, without resolving names (they were checked when stored): refuses
        what a stored alarm from before the rules may still hold."""
        self.targets.check(url, resolve=False)

    # -- events -------------------------------------------------------------------------

    def publish(self, events: list[dict[str, Any]]) -> None:
        """Validate and queue ``events`` (Ceilometer's format) for evaluation."""
        try:
            checked = [parse_ceilometer_event(e, f"events[{i}]") for i, e in enumerate(events)]
        except EventError as exc:
            raise PublishError(f"invalid event: {exc}") from None
        self.submit(checked)

    def submit(self, events: list[dict[str, Any]]) -> None:
        """Queue already validated events; PublishError when stopped or overloaded."""
        if self._stopped.is_set():
            raise PublishError("the notifier is stopped")
        if not events:
            return
        try:
            self._outbox.put(list(events))
        except OutboxFull:
            raise PublishError(f"the notifier is overloaded: {QUEUE_BATCHES} event batches "
                               "are waiting for evaluation") from None
        except OutboxClosed:
            raise PublishError("the notifier is stopped") from None

    def _evaluate_lists(self, lists: list[list[dict[str, Any]]]) -> None:
        events = [event for events in lists for event in events]
        try:
            self._evaluate(events)
        except Exception:  # one bad batch must not stop the alarms of all the next ones
            LOG.exception("notifier: evaluating %d events failed", len(events))

    def _evaluate(self, events: list[dict[str, Any]]) -> None:
        with self.lock:
            result = self.evaluator.evaluate(events)
        self.evaluated += len(events)
        if not result.firings:
            return
        queued = self.dispatcher.dispatch(result.firings)
        for firing in result.firings:
            self.profiler.record("T07", at=firing.at, alarm_id=firing.alarm_id,
                                 instance_id=firing.instance_id)
            LOG.debug("alarm %s (%s): %s -> alarm", firing.alarm_id,
                      escape(firing.alarm_name), firing.previous)
        names = ", ".join(f.alarm_id for f in result.firings[:5])
        more = f" and {len(result.firings) - 5} more" if len(result.firings) > 5 else ""
        LOG.info("notifier: %d events fired %d alarms (%s%s); %d actions queued",
                 len(events), len(result.firings), names, more, queued)
        try:
            self.store.update_alarms(list(result.changed.values()), result.history())
        except Exception:
            LOG.exception("notifier: persisting the state of %d alarms failed; they stay in "
                          "memory", len(result.changed))

    # -- alarms (the REST API's operations) -----------------------------------------------

    def list_alarms(self) -> list[dict[str, Any]]:
        """Every alarm as the API shows it (shared, read-only dicts)."""
        with self.lock:
            return [alarm.data for alarm in self.evaluator.alarms.values()]

    def get_alarm(self, alarm_id: str) -> dict[str, Any] | None:
        with self.lock:
            alarm = self.evaluator.get(alarm_id)
            return None if alarm is None else alarm.data

    def _check_name(self, data: dict[str, Any]) -> None:
        """Aodh's rule: an alarm's name is unique within its project (called with the lock)."""
        holder = self._names.get(_name_key(data))
        if holder is not None and holder != data["alarm_id"]:
            raise AlarmConflict(f"Alarm with name='{data['name']}' exists")

    def _check_quota(self, project: str) -> None:
        """Room for one more alarm in ``project`` (called with the lock)."""
        if self._per_project[project] >= self.config.project_alarm_quota:
            raise AlarmQuotaExceeded(f"Alarm quota exceeded for project {project}: "
                                     f"{self.config.project_alarm_quota} alarms")

    def create_alarm(self, data: dict[str, Any], user_id: str, project_id: str) -> dict[str, Any]:
        """Store and arm a validated alarm; AlarmConflict if its name is taken in its project,
        AlarmQuotaExceeded if the project has project_alarm_quota alarms already."""
        with self.lock:
            self._check_name(data)
            self._check_quota(_project(data))
            entry = history_entry(data, "creation", data, data["timestamp"], user_id, project_id)
            self.store.insert_alarm(data, 1, [entry])
            self.evaluator.add(data, 1)
            self._names[_name_key(data)] = data["alarm_id"]
            self._per_project[_project(data)] += 1
        LOG.info("alarm %s (%s) created in project %s", data["alarm_id"], escape(data["name"]),
                 escape(data.get("project_id")))
        return data

    def update_alarm(self, alarm_id: str, change: Callable[[dict[str, Any]], dict[str, Any]],
                     user_id: str, project_id: str) -> dict[str, Any]:
        """Replace the alarm with ``change(current)``, computed under the lock so that a state
        the evaluator set meanwhile is seen."""
        with self.lock:
            current = self.evaluator.get(alarm_id)
            if current is None:
                raise AlarmNotFound(alarm_id)
            data = change(current.data)
            self._check_name(data)
            moved = _project(data) != _project(current.data)
            if moved:
                self._check_quota(_project(data))
            changed = {k: v for k, v in data.items() if current.data.get(k) != v
                       and k not in ("timestamp", "state_timestamp")}
            version = current.version + 1
            entry = history_entry(data, "rule change", changed, data["timestamp"], user_id,
                                  project_id)
            self.store.update_alarms([(data, version)], [entry])
            self.evaluator.add(data, version)
            self._names.pop(_name_key(current.data), None)
            self._names[_name_key(data)] = data["alarm_id"]
            if moved:
                self._per_project[_project(current.data)] -= 1
                self._per_project[_project(data)] += 1
        return data

    def set_state(self, alarm_id: str, state: str, user_id: str, project_id: str) -> str:
        """Set the state by hand; ``ok`` re-arms an alarm that fired without repeat_actions."""
        now = utc_iso(clock.now())

        def change(current: dict[str, Any]) -> dict[str, Any]:
            return {**current, "state": state, "state_reason": MANUAL_REASON,
                    "state_timestamp": now}

        with self.lock:
            current = self.evaluator.get(alarm_id)
            if current is None:
                raise AlarmNotFound(alarm_id)
            data = change(current.data)
            version = current.version + 1
            entry = history_entry(data, "state transition",
                                  {"state": state, "state_reason": MANUAL_REASON}, now,
                                  user_id, project_id)
            self.store.update_alarms([(data, version)], [entry])
            self.evaluator.add(data, version)
        LOG.info("alarm %s set to %r through the API", alarm_id, state)
        return state

    def delete_alarm(self, alarm_id: str, user_id: str, project_id: str) -> None:
        with self.lock:
            alarm = self.evaluator.get(alarm_id)
            if alarm is None:
                raise AlarmNotFound(alarm_id)
            entry = history_entry(alarm.data, "deletion", alarm.data, utc_iso(clock.now()),
                                  user_id, project_id)
            self.store.delete_alarm(alarm_id, [entry])
            self.evaluator.remove(alarm_id)
            self._names.pop(_name_key(alarm.data), None)
            self._per_project[_project(alarm.data)] -= 1
        LOG.info("alarm %s deleted", alarm_id)

    def history(self, alarm_id: str, on_behalf_of: str | None = None) -> list[dict[str, Any]]:
        """The alarm's changes, newest first (also after its deletion, as Aodh keeps them)."""
        return self.store.history(alarm_id, on_behalf_of)

    def status(self) -> dict[str, Any]:
        """Counters for the root document and the tests."""
        with self.lock:
            alarms = len(self.evaluator.alarms)
        return {"alarms": alarms, "events_evaluated": self.evaluated,
                "events_queued": self._outbox.pending(), "actions": dict(self.dispatcher.counts),
                "actions_pending": self.dispatcher.pending()}


def _name_key(data: dict[str, Any]) -> tuple[str, str]:
    return (_project(data), data["name"])


def _project(data: dict[str, Any]) -> str:
    return data.get("project_id") or ""

