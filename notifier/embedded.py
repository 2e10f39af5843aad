"""The embedded Notifier: alarm store, evaluator, action dispatcher and the evaluation worker.

It is an ``EventPublisher`` itself, so a producer in the same process hands it
events directly (``publish``); over HTTP the same events arrive through
``POST /v1/events`` (``notifier.api``). Nothing accepted is lost, even to kill -9:

1. ``submit`` commits the batch to the store's ``event_inbox`` (one commit),
   then queues it; only then does the producer get its answer (the API's 202).
   A full queue is a PublishError (the API's 503), and nothing is stored.
2. One worker thread evaluates whatever queued up, in order, and commits in ONE
   transaction the alarms' new states and history, one ``action_outbox`` row
   per alarm action (its body and request id), and the removal of the evaluated
   inbox rows. Only then are the actions dispatched. If that commit fails, the
   in-memory states are put back and the batch is tried again a few times, then
   left in the inbox for the next start.
3. An action that is final (delivered, refused, out of retries) has its row
   deleted, in batches, by a cleaner thread: no commit per POST.

At start, the inbox rows left (accepted, never evaluated) are evaluated before
anything new, and every outbox row left is sent again, with the same
``X-OpenStack-Request-Id`` and a fresh retry budget (``action_retry_for_s``
from the start). A Consumer may so see an action twice (the notifier died
after the POST and before the row's deletion): at least once, never lost; the
request id tells the duplicate.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
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
from notifier.evaluator import Evaluation, Evaluator, Firing, history_entry, utc_iso
from notifier.store import AlarmStore, StoredAction
from notifier.targets import ActionTargets, Resolver, system_resolve
from notifier.validation import AlarmLimits

LOG = logging.getLogger(__name__)

QUEUE_BATCHES = 10_000  # event lists waiting for evaluation before producers are refused
MAX_EVALUATION = 10_000  # events evaluated under one lock hold and one store transaction
MAX_ACTIONS_PENDING = 100_000  # actions queued or retrying before evaluation waits for room
EVALUATION_ATTEMPTS = 5  # tries of a batch whose transaction fails, then it waits for a start
CLEAN_INTERVAL_S = 0.1  # final actions gather this long before their rows go, in one DELETE
InboxItem = tuple[list[int], list[dict[str, Any]]]  # (inbox row ids, their events)
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
        self._outbox: Outbox[InboxItem] = Outbox(
            self._evaluate_lists, name="notifier-evaluator", max_batch=MAX_EVALUATION,
            maxsize=QUEUE_BATCHES, weight=lambda item: len(item[1]))
        self._stopped = threading.Event()
        # Request ids of final actions whose outbox rows the cleaner deletes.
        self._final: list[str] = []
        self._final_changed = threading.Condition()
        self._cleaner_stopping = threading.Event()
        self._cleaner = threading.Thread(target=self._clean_outbox, name="notifier-outbox-clean",
                                         daemon=True)
        self.evaluated = 0  # events evaluated so far
        self._names: dict[tuple[str, str], str] = {}  # (project, name) -> alarm id: unique
        self._per_project: Counter[str] = Counter()  # alarms by project, for the quota
        for data, version in self.store.load_alarms():
            self.evaluator.add(data, version)
            self._names[_name_key(data)] = data["alarm_id"]
            self._per_project[_project(data)] += 1
        # What the last run left: read now, before anything new can be stored.
        self._left_inbox = self.store.load_inbox()
        self._left_actions = self.store.pending_actions()
        LOG.info("notifier: %d alarms loaded from %s; %d event batches to evaluate and %d "
                 "alarm actions to send left from the last run", len(self.evaluator.alarms),
                 make_url(config.database).render_as_string(hide_password=True),
                 len(self._left_inbox), len(self._left_actions))

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> EmbeddedNotifier:
        """Send the actions and evaluate the events the last run left, then take new ones
        (queued meanwhile, they wait: the order is kept)."""
        self.dispatcher.start()
        self._cleaner.start()
        left, self._left_actions = self._left_actions, []
        if left:
            self.dispatcher.dispatch_stored(left, self._action_final)
            LOG.warning("notifier: %d alarm actions of the last run sent again (same request "
                        "ids)", len(left))
        batches, self._left_inbox = self._left_inbox, []
        if batches:
            LOG.warning("notifier: evaluating %d event batches the last run accepted but did "
                        "not evaluate", len(batches))
        for item in _chunks(batches):
            self._evaluate_lists([item])
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
            left = self._outbox.close(0.0, join_s=0.0)  # an idle worker ends at once
            if not drained:
                LOG.warning("notifier: evaluation still running at stop; %d events left in "
                            "the inbox, evaluated at the next start",
                            sum(len(events) for _, events in left))
        self.dispatcher.stop(max(0.5, deadline - clock.monotonic()))
        self._cleaner_stopping.set()
        with self._final_changed:
            self._final_changed.notify_all()
        if self._cleaner.ident is not None:
            self._cleaner.join(max(0.5, deadline - clock.monotonic()))
        self._remove_final()  # what came in after the cleaner's last round
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
        """Store, then queue, already validated events: when it returns they survive a
        crash. PublishError when stopped, overloaded or the store fails (nothing kept)."""
        if self._stopped.is_set():
            raise PublishError("the notifier is stopped")
        if not events:
            return
        overloaded = (f"the notifier is overloaded: {QUEUE_BATCHES} event batches are waiting "
                      "for evaluation")
        if self._outbox.pending() >= QUEUE_BATCHES:  # refused before it costs a commit
            raise PublishError(overloaded)
        events = list(events)
        try:
            row_id = self.store.add_inbox(events, clock.now())
        except Exception as exc:  # noqa: BLE001  (the caller is told; it sends them again)
            LOG.error("notifier: storing %d events failed: %s", len(events),
                      escape(getattr(exc, "orig", None) or exc, 300))
            raise PublishError(f"the notifier cannot store the events "
                               f"({type(exc).__name__})") from None
        try:
            self._outbox.put(([row_id], events))
        except (OutboxFull, OutboxClosed) as exc:
            # Refused after all (the queue filled, or it stopped, meanwhile): the caller
            # sends them again, so the stored copy must go.
            self._forget_inbox(row_id)
            raise PublishError(overloaded if isinstance(exc, OutboxFull)
                               else "the notifier is stopped") from None

    def _forget_inbox(self, row_id: int) -> None:
        try:
            self.store.remove_inbox([row_id])
        except Exception as exc:  # noqa: BLE001
            LOG.error("notifier: refused event batch %d stays in the inbox (%s): it will be "
                      "evaluated at the next start", row_id, escape(exc, 300))

    def _evaluate_lists(self, items: list[InboxItem]) -> None:
        ids = [row_id for row_ids, _ in items for row_id in row_ids]
        events = [event for _, events in items for event in events]
        for attempt in range(1, EVALUATION_ATTEMPTS + 1):
            try:
                self._evaluate(events, ids)
                return
            except Exception:  # one bad batch must not stop the alarms of all the next ones
                LOG.exception("notifier: evaluating %d events failed (attempt %d of %d)",
                              len(events), attempt, EVALUATION_ATTEMPTS)
            if self._stopped.wait(0.1 * 2 ** attempt):
                break
        LOG.error("notifier: %d events (inbox rows %s) not evaluated; they stay in the inbox "
                  "and are evaluated at the next start", len(events),
                  ", ".join(map(str, ids[:10])) or "none")

    def _evaluate(self, events: list[dict[str, Any]], inbox_ids: list[int] | None = None) -> None:
        """Evaluate ``events``; commit the new states, the actions and the inbox rows'
        removal at once, then dispatch the actions. Raises (having undone the evaluation in
        memory) if the commit fails."""
        ids = inbox_ids or []
        while self.dispatcher.pending() >= MAX_ACTIONS_PENDING and not self._stopped.is_set():
            self._stopped.wait(0.05)  # bounded backpressure: the event queue fills, then 503
        with self.lock:
            result = self.evaluator.evaluate(events)
            actions = stored_actions(result.firings)
            if result.firings or ids:
                try:
                    self.store.commit_evaluation(list(result.changed.values()),
                                                 result.history(), actions, ids)
                except Exception:
                    result.undo()
                    raise
        self.evaluated += len(events)
        if not result.firings:
            return
        queued = self.dispatcher.dispatch_stored(actions, self._action_final)
        self._log_firings(events, result, queued)

    def _log_firings(self, events: list[dict[str, Any]], result: Evaluation,
                     queued: int) -> None:
        for firing in result.firings:
            self.profiler.record("T07", at=firing.at, alarm_id=firing.alarm_id,
                                 instance_id=firing.instance_id)
            LOG.debug("alarm %s (%s): %s -> alarm", firing.alarm_id,
                      escape(firing.alarm_name), firing.previous)
        names = ", ".join(f.alarm_id for f in result.firings[:5])
        more = f" and {len(result.firings) - 5} more" if len(result.firings) > 5 else ""
        LOG.info("notifier: %d events fired %d alarms (%s%s); %d actions queued",
                 len(events), len(result.firings), names, more, queued)

    # -- the action outbox's cleaning ---------------------------------------------------

    def _action_final(self, request_id: str) -> None:
        """The dispatcher is done with this action: its row may go (in the next batch)."""
        with self._final_changed:
            self._final.append(request_id)
            self._final_changed.notify_all()

    def _remove_final(self) -> bool:
        """Delete the rows of the final actions in one transaction; False if it failed."""
        with self._final_changed:
            ids, self._final = self._final, []
        if not ids:
            return True
        try:
            self.store.remove_actions(ids)
        except Exception as exc:  # noqa: BLE001  (kept: tried again; at worst re-sent)
            LOG.error("notifier: deleting %d delivered actions from the outbox failed: %s",
                      len(ids), escape(getattr(exc, "orig", None) or exc, 300))
            with self._final_changed:
                self._final[:0] = ids
            return False
        return True

    def _clean_outbox(self) -> None:
        while not self._cleaner_stopping.is_set():
            with self._final_changed:
                while not self._final and not self._cleaner_stopping.is_set():
                    self._final_changed.wait()
            # Let more gather: one DELETE for a whole fan-out, not one per POST.
            self._cleaner_stopping.wait(CLEAN_INTERVAL_S)
            if not self._remove_final():
                self._cleaner_stopping.wait(1.0)

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


def stored_actions(firings: list[Firing]) -> list[StoredAction]:
    """The outbox rows of these firings: one per firing and action URL, each with its
    own request id; the body is encoded once per firing."""
    actions = []
    for firing in firings:
        if not firing.actions:
            continue
        body = json.dumps(firing.payload())
        for url in firing.actions:
            actions.append(StoredAction(f"req-{uuid.uuid4()}", firing.alarm_id,
                                        firing.instance_id, url, body, firing.at))
    return actions


def _chunks(batches: list[tuple[int, list[dict[str, Any]]]]) -> list[InboxItem]:
    """Stored batches merged into items of about MAX_EVALUATION events, in order."""
    items: list[InboxItem] = []
    for row_id, events in batches:
        if items and len(items[-1][1]) + len(events) <= MAX_EVALUATION:
            items[-1][0].append(row_id)
            items[-1][1].extend(events)
        else:
            items.append(([row_id], list(events)))
    return items


def _name_key(data: dict[str, Any]) -> tuple[str, str]:
    return (_project(data), data["name"])


def _project(data: dict[str, Any]) -> str:
    return data.get("project_id") or ""

