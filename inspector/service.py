"""The Inspector's logic: accept host events once, and act on each at once.

On ``compute.host.down`` it looks the host's VMs up in memory, then at the same
time (Doctor's "shortcut"):
- publishes one ``compute.instance.update`` (state error) per VM to the
  Notifier, without waiting for the controller;
- marks the host down and resets every VM to error through the controller,
  ``workers`` calls in parallel, none skipped, each retried while the
  controller is unreachable.
On ``compute.host.up`` it clears the host's forced-down flag; the VMs stay in
error until recovered.

Every accepted event is in the event log before the 202; a restarted Inspector
resumes what is pending, and skips the notification if it was already sent.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from controller.base import Controller, ControllerError, NotFound, Server
from doctor import clock
from doctor.events import HOST_DOWN, HostEvent, instance_update
from doctor.logs import escape
from doctor.profiler import Profiler
from doctor.retry import Backoff, RetryError, retry
from inspector.base import Inspector
from inspector.config import InspectorConfig
from inspector.hostmap import HostMap
from inspector.store import DONE, EventLog
from notifier.base import EventPublisher, PublishError

LOG = logging.getLogger(__name__)
PRUNE_EVERY_S = 3600.0  # how often finished events past event_retention_s are removed
RESET_BATCH = 500  # VMs per reset call to a controller that resets many at once


@dataclass
class HostRecord:
    """A host as the Inspector knows it: the outcome of its latest event."""

    state: str  # "up" | "down"
    event: HostEvent
    handled_at: float | None = None


class InspectorService(Inspector):
    """Event intake, the host map, and fault handling."""

    def __init__(self, config: InspectorConfig, controller: Controller,
                 publisher: EventPublisher, log: EventLog) -> None:
        self.config = config
        self.controller = controller
        self.publisher = publisher
        self.log = log
        self.hostmap = HostMap()
        self.profiler = Profiler(config.profile_file)
        self._hosts: dict[str, HostRecord] = {}
        self._hosts_lock = threading.Lock()
        self._queue: queue.Queue[HostEvent | None] = queue.Queue()
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="inspector-call")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._map_ready = threading.Event()
        # The latest controller failure not yet followed by a success: (message, since).
        self._controller_error: tuple[str, float] | None = None

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        clamped = self.log.clamp_future(self.config.event_max_future_s)
        if clamped:
            LOG.warning("event log: %d events were stamped more than %.0f s after they were "
                        "received; their time is now when they were received", clamped,
                        self.config.event_max_future_s)
        for stored in self.log.latest_by_host().values():
            if stored.status == DONE:
                self._hosts[stored.event.hostname] = HostRecord(
                    stored.event.status, stored.event, stored.done_at)
        self._spawn(self._keep_map_fresh, "inspector-resync")
        self._spawn(self._prune_log, "inspector-prune")
        resumed = self.log.pending()
        if resumed:
            LOG.warning("resuming %d events accepted before a restart: %s", len(resumed),
                        escape(", ".join(s.event.monitor_event_id for s in resumed), 2000))
        for stored in resumed:
            self._queue.put(stored.event)
        self._spawn(self._work, "inspector-worker")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        for thread in self._threads:
            thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.publisher.close()
        self.controller.close()

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the host map has been loaded from the controller."""
        return self._map_ready.wait(timeout_s)

    # -- intake ---------------------------------------------------------------

    def submit(self, events: list[HostEvent]) -> tuple[list[HostEvent], list[HostEvent]]:
        """Persist, then queue, the events not seen before: (new, duplicates)."""
        new = self.log.accept(events)
        new_ids = {e.monitor_event_id for e in new}
        for event in new:
            self._queue.put(event)
        duplicates = [e for e in events if e.monitor_event_id not in new_ids]
        if duplicates:
            LOG.info("already accepted, not acted on again: %s",
                     escape(", ".join(e.monitor_event_id for e in duplicates), 2000))
        return new, duplicates

    def on_notifications(self, events: list[dict[str, Any]]) -> None:
        """The controller's notifications of VM changes keep the host map fresh."""
        for event in events:
            self.hostmap.apply(event)

    # -- reading --------------------------------------------------------------

    def host(self, name: str) -> dict[str, Any] | None:
        with self._hosts_lock:
            record = self._hosts.get(name)
        servers = self.hostmap.count(name)
        if record is None and not servers:
            return None
        return {
            "name": name,
            "state": record.state if record else "unknown",
            "servers": servers,
            "last_event": record.event.to_doctor() if record else None,
            "handled_at": clock.isoformat(record.handled_at)
            if record and record.handled_at else None,
            # accepted, but its controller calls have not all ended yet
            "pending": bool(record and record.handled_at is None),
        }

    def status(self) -> dict[str, Any]:
        """Whether the controller answers, and how many accepted events wait on it."""
        error = self._controller_error
        return {
            "controller": {"reachable": error is None,
                           "error": error[0] if error else None,
                           "failing_since": clock.isoformat(error[1]) if error else None},
            "pending_events": len(self.log.pending()),
            "host_map_loaded": self._map_ready.is_set(),
        }

    def hosts(self) -> list[dict[str, Any]]:
        with self._hosts_lock:
            names = set(self._hosts)
        names.update(self.hostmap.hosts())
        return [h for h in (self.host(n) for n in sorted(names)) if h is not None]

    # -- the work -------------------------------------------------------------

    def _keep_map_fresh(self) -> None:
        while not self._stop.is_set():
            try:
                # The controller may be down: say so, keep trying (0.1 s doubling to 10 s).
                unknown = retry(self._load_map, backoff=Backoff(0.1, 10.0), stop=self._stop,
                                on_failure=self._load_failed)
            except RetryError:
                return
            self._controller_back()
            if not self._map_ready.is_set():
                LOG.info("host->VM map loaded: %d hosts", len(self.hostmap.hosts()))
                self._map_ready.set()
            elif unknown:
                LOG.warning("host->VM map resync: %d servers were not in the map (or on "
                            "another host): their notifications had not arrived", unknown)
            if not self.config.resync_interval_s or self._stop.wait(
                    self.config.resync_interval_s):
                return

    def _load_map(self) -> int:
        self.hostmap.begin_load()
        return self.hostmap.load(self.controller.list_servers())

    def _load_failed(self, exc: BaseException, _attempt: int, delay: float | None) -> None:
        if self._controller_error is None:
            self._controller_error = (str(exc), clock.now())
        if delay is not None:
            LOG.error("cannot load the host->VM map from the controller: %s; retrying "
                      "in %.1f s", escape(exc, 500), delay)
        else:
            LOG.error("cannot load the host->VM map from the controller: %s",
                      escape(exc, 500))

    def _prune_log(self) -> None:
        """Keep the event log bounded: at start, then every PRUNE_EVERY_S."""
        while True:
            try:
                gone = self.log.prune(self.config.event_retention_s)
                if gone:
                    LOG.info("event log: removed %d events finished more than %.0f s ago",
                             gone, self.config.event_retention_s)
            except Exception:  # noqa: BLE001  (a busy or unreachable database: next time)
                LOG.exception("event log: pruning failed; trying again in %.0f s",
                              PRUNE_EVERY_S)
            if self._stop.wait(PRUNE_EVERY_S):
                return

    def _work(self) -> None:
        while not self._map_ready.wait(0.5):  # acting on an empty map would miss the VMs
            if self._stop.is_set():
                return
        while not self._stop.is_set():
            event = self._queue.get()
            if event is None:
                return
            try:
                self._handle(event)
            except Exception:
                LOG.exception("handling %s failed; it stays pending for a restart",
                              escape(event.monitor_event_id))

    def _handle(self, event: HostEvent) -> None:
        with self._hosts_lock:
            record = self._hosts.get(event.hostname)
            if record is not None and record.event.time > event.time:
                stale = True
            else:
                stale = False
                self._hosts[event.hostname] = HostRecord(event.status, event)
        if stale:
            LOG.warning("%s for %s is older than the last event handled; not acted on",
                        escape(event.monitor_event_id), escape(event.hostname))
            self.log.mark_done(event.monitor_event_id, {"skipped": "stale"})
            return
        if event.type == HOST_DOWN:
            self._host_down(event)
        else:
            self._host_up(event)

    def _host_down(self, event: HostEvent) -> None:
        host, event_id = event.hostname, event.monitor_event_id
        servers = self.hostmap.servers_on(host)
        found_at = clock.now()
        self.profiler.record("T02", found_at, hostname=host, servers=len(servers))
        LOG.warning("%s is down (%s): %d VMs affected", escape(host), escape(event_id),
                    len(servers))
        if self.config.shortcut:
            # Published before the controller calls start: those run in many threads, which
            # would hold this one (and the GIL) back from the POST the consumers wait for.
            self._shortcut(event_id, host, servers)
        else:
            self.log.mark_notified(event_id)  # the controller's own notifications carry it
        progress = _Progress(host, len(servers), self.profiler,
                             lambda outcome: self._finish(event, outcome))
        self._pool.submit(self._call, f"force {host} down", self.controller.force_down,
                          host, True).add_done_callback(progress.host_marked_down)
        if self.controller.batch_reset:  # a few calls for all of them (embedded controller)
            ids = [s.id for s in servers]
            for start in range(0, len(ids), RESET_BATCH):
                self._pool.submit(self._reset_many, host, ids[start:start + RESET_BATCH],
                                  progress)
            return
        for server in servers:
            self._pool.submit(self._call, f"reset {server.id} on {host} to error",
                              self.controller.reset_state, server.id, "error"
                              ).add_done_callback(progress.vm_reset)

    def _reset_many(self, host: str, ids: list[str], progress: _Progress) -> None:
        """One call resets ``ids`` to error (retried as one); the ids not found count as
        failed, as they do when reset one by one."""
        missing: list[list[str]] = []
        ok = self._call(f"reset {len(ids)} VMs on {host} to error",
                        self.controller.reset_states, ids, "error", keep=missing)
        gone = missing[0] if ok and missing else []
        if gone:
            LOG.error("%d VMs of %s not found at the controller: %s", len(gone), escape(host),
                      escape(", ".join(gone[:10]), 500))
        progress.vms_reset(len(ids) - len(gone) if ok else 0, len(gone) if ok else len(ids))

    def _shortcut(self, event_id: str, host: str, servers: list[Server]) -> None:
        stored = self.log.get(event_id)
        if stored is not None and stored.notified_at is not None:
            LOG.info("%s: VM errors were notified before a restart; not again",
                     escape(event_id))
            return
        notes = [instance_update(s.id, "error", host, s.project_id) for s in servers]
        self._notify(event_id, host, notes)

    def _notify(self, event_id: str, host: str, notes: list[dict[str, Any]]) -> None:
        if notes:
            try:
                self.publisher.publish(notes)
            except PublishError as exc:
                LOG.error("notifying %d VM errors on %s failed: %s; retrying in the "
                          "background", len(notes), escape(host), escape(exc, 500))
                self._pool.submit(self._call, f"notify {len(notes)} VM errors on {host}",
                                  self.publisher.publish, notes).add_done_callback(
                    lambda f: self._notified_late(f, event_id))
                return
            self.profiler.record("T05", hostname=host, servers=len(notes))
        self.log.mark_notified(event_id)

    def _notified_late(self, future: Future, event_id: str) -> None:
        """The background retry of a shortcut notification ended: noted if it got through."""
        if future.result():
            self.log.mark_notified(event_id)

    def _host_up(self, event: HostEvent) -> None:
        LOG.warning("%s is up again (%s): clearing its forced-down flag",
                    escape(event.hostname), escape(event.monitor_event_id))
        future = self._pool.submit(self._call, f"clear {event.hostname}'s forced-down flag",
                                   self.controller.force_down, event.hostname, False)
        future.add_done_callback(
            lambda f: self._finish(event, {"host_marked_up": bool(f.result())}))

    def _finish(self, event: HostEvent, outcome: dict[str, Any]) -> None:
        with self._hosts_lock:  # before the log says done, so a reader of both sees it so
            record = self._hosts.get(event.hostname)
            if record is not None and record.event is event:
                record.handled_at = clock.now()
        self.log.mark_done(event.monitor_event_id, outcome)
        LOG.info("%s handled: %s", escape(event.monitor_event_id), outcome)

    def _call(self, what: str, function: Callable[..., Any], *args: Any,
              keep: list[Any] | None = None) -> bool:
        """One controller call, retried with backoff; False if it finally failed. ``keep``
        receives the call's return value."""
        controller_call = getattr(function, "__self__", None) is self.controller
        tries = 0

        def attempt() -> bool:
            nonlocal tries
            tries += 1
            try:
                value = function(*args)
                if keep is not None:
                    keep.append(value)
            except NotFound as exc:
                LOG.error("%s: %s; not retrying", escape(what, 500), escape(exc, 500))
                return False
            if tries > 1:
                LOG.warning("%s: done at attempt %d", escape(what, 500), tries)
            if controller_call and self._controller_error:
                self._controller_back()
            return True

        def failed(exc: BaseException, attempts: int, delay: float | None) -> None:
            if controller_call and self._controller_error is None:
                self._controller_error = (str(exc), clock.now())
                LOG.error("the controller fails: %s; the events stay accepted and are "
                          "acted on when it answers again", escape(exc, 500))
            if delay is None:
                LOG.error("%s: failed after %d attempts: %s", escape(what, 500), attempts,
                          escape(exc, 500))
            elif attempts == 1 or attempts % 10 == 0:
                LOG.error("%s: %s; retrying for up to %.0f s", escape(what, 500),
                          escape(exc, 500),
                          self.config.call_retry_for_s)

        try:
            return retry(attempt, backoff=Backoff(0.05, 5.0),
                         transient=(ControllerError, PublishError, OSError),
                         deadline=clock.monotonic() + self.config.call_retry_for_s,
                         stop=self._stop, on_failure=failed)
        except RetryError:
            return False

    def _controller_back(self) -> None:
        error = self._controller_error
        self._controller_error = None
        if error is not None:
            LOG.warning("the controller answers again after %.1f s of failures",
                        clock.now() - error[1])


class _Progress:
    """Counts the controller calls of one fault; when the last ends, reports the outcome."""

    def __init__(self, host: str, servers: int, profiler: Profiler,
                 finish: Callable[[dict[str, Any]], None]) -> None:
        self.host = host
        self.profiler = profiler
        self._left = servers + 1  # the VMs and the host itself
        self._lock = threading.Lock()
        self._finish = finish
        self.outcome: dict[str, Any] = {"host_marked_down": False, "vms_set_error": 0,
                                        "vms_failed": 0}

    @staticmethod
    def _ok(future: Future) -> bool:
        return not future.cancelled() and future.exception() is None and bool(future.result())

    def host_marked_down(self, future: Future) -> None:
        ok = self._ok(future)
        if ok:
            self.profiler.record("T04", hostname=self.host)
        self._count("host_marked_down", ok)

    def vm_reset(self, future: Future) -> None:
        self._count("vms_set_error" if self._ok(future) else "vms_failed", True)

    def vms_reset(self, done: int, failed: int) -> None:
        """One call for many VMs ended: ``done`` reset, ``failed`` not."""
        with self._lock:
            self.outcome["vms_set_error"] += done
            self.outcome["vms_failed"] += failed
            self._left -= done + failed
            last = self._left == 0
        if last:
            self._last()

    def _count(self, key: str, value: bool) -> None:
        with self._lock:
            if key == "host_marked_down":
                self.outcome[key] = value
            else:
                self.outcome[key] += 1
            self._left -= 1
            last = self._left == 0
        if last:
            self._last()

    def _last(self) -> None:
        if self.outcome["vms_set_error"]:
            self.profiler.record("T03", hostname=self.host,
                                 servers=self.outcome["vms_set_error"])
        self._finish(self.outcome)
