"""The monitor manager: exactly one monitor per VIM, none of them a thread.

A *monitor* is a record (VIM id, monitor id, address, last verdict) that the manager drives;
the probing is the Monitor's ``ProbeScheduler``: one raw ICMP socket, one thread, every VIM
address (VIMs on one host share one probe target). One manager thread does the rest:

- applies the prober's verdicts (UP -> REACHABLE, DOWN -> UNREACHABLE; UNKNOWN and SUSPECT
  are no verdict) and the optional HTTP checks' results, through ``VimStore.update_statuses``,
  which refuses a report whose monitor id is no longer the VIM's (``bad_action``): that
  monitor stops at once;
- reconciles what should run with what runs: every ``reconcile_interval_ms``, and at once
  when poked by the API. It reads only the rows changed since the last revision it saw (a
  full reload every ``full_resync_s``). A VIM it owns whose monitor id is not one it issued
  (new, updated auth_url, or the previous server process's) is *claimed*: a new monitor id,
  written only if the old one is still there. Only then does the monitor start;
- replaces monitors that are not progressing: an address whose probe sequence has not
  advanced for ``stall_intervals`` intervals gets a fresh probe target and its VIMs new
  monitor ids; a dead probe thread is restarted with a new socket, and every VIM reclaimed.

``owns(vim_id)`` (every VIM by default) restricts which VIMs this server monitors, for the
sharing of VIMs among servers; ``set_owns`` changes it and reconciles at once.
"""

from __future__ import annotations

import functools
import heapq
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from doctor import clock
from doctor.events import vim_status_update
from doctor.http import HttpClient, HttpError
from doctor.logs import escape
from doctor.outbox import Outbox, OutboxClosed
from doctor.retry import RetryError
from monitor.config import MonitorConfig, Target
from monitor.detector import HostState
from notifier.base import EventPublisher, PublishError, publish_until_taken
from vim.base import VimMonitoring
from vim.config import VimConfig
from vim.store import (
    REACHABLE,
    UNREACHABLE,
    StatusReport,
    StatusResult,
    VimRecord,
    VimStore,
)

LOG = logging.getLogger(__name__)

REPORT_BATCH = 500  # status reports per transaction
EVENT_BATCH = 1000  # status events per publish call
EVENT_RETRY_FOR_S = 600.0  # a batch the notifier does not take is retried this long
HTTP_READ_LIMIT = 65536
# A scheduler as the manager needs it: ProbeScheduler, or a fake in the unit tests.
SchedulerFactory = Callable[[MonitorConfig, Callable[..., None]], Any]


def probe_config(config: VimConfig) -> MonitorConfig:
    """The prober's options from the VIM server's."""
    return MonitorConfig(
        name="vim-monitor", interval_ms=config.interval_ms, timeout_ms=config.timeout_ms,
        suspect_interval_ms=config.suspect_interval_ms,
        misses_before_down=config.misses_before_down,
        replies_before_up=config.replies_before_up,
        reference_hosts=list(config.reference_hosts),
        coordination_url=config.coordination_url)


def check_http(auth_url: str, cert_verify: bool, timeout_s: float) -> tuple[bool, str]:
    """GET ``auth_url``: (True, "HTTP 300") for any answer below 500, else (False, why).

    A client per check, closed after it: a kept-alive connection per VIM and worker would
    hold thousands of sockets open between checks.
    """
    client = HttpClient(timeout_s, verify=cert_verify)
    try:
        answer = client.get(auth_url, limit=HTTP_READ_LIMIT)
    except HttpError as exc:
        return False, exc.reason
    finally:
        client.close()
    return answer.status < 500, f"HTTP {answer.status}"


class VimMonitor:
    """One VIM's monitor: its id, what it watches, and its last verdict. Not a thread."""

    __slots__ = ("vim_id", "monitor_id", "name", "project_name", "address", "auth_url",
                 "cert_verify", "ping", "http_ok", "reported", "started_at")

    def __init__(self, record: VimRecord) -> None:
        self.vim_id = record.id
        self.monitor_id: str = record.monitor_id or ""
        self.name = record.name
        self.project_name = record.project_name
        self.address = record.address
        self.auth_url = record.auth_url
        self.cert_verify = record.cert_verify
        self.ping = HostState.UNKNOWN
        self.http_ok: bool | None = None
        self.reported: str | None = None  # the last verdict sent to the store
        self.started_at = clock.monotonic()


@dataclass
class AddressTarget:
    """A probed address and the VIMs whose auth_url points at it."""

    name: str  # the prober's target name: address#generation
    state: HostState = HostState.UNKNOWN
    vim_ids: set[str] = field(default_factory=set)
    last_seq: int = -1
    last_progress: float = 0.0


@dataclass
class ManagerStats:
    """Counters for the API's /v1/monitoring, the tests and the benchmark."""

    reports: int = 0
    refused: int = 0
    changes: int = 0
    claims: int = 0
    replaced: int = 0
    prober_restarts: int = 0
    http_checks: int = 0
    events_published: int = 0
    events_failed: int = 0


class VimEventSender:
    """Publishes status events from an outbox's thread, in order, batched; never blocks the
    manager. Without a publisher the events are only counted (the change is logged). A
    batch the notifier does not take is retried, in order, with backoff, for
    ``retry_for_s`` (a 4xx is final); what is still queued at a stop is lost, said so."""

    def __init__(self, publisher: EventPublisher | None, stats: ManagerStats,
                 retry_for_s: float = EVENT_RETRY_FOR_S) -> None:
        self.publisher = publisher
        self.stats = stats
        self.retry_for_s = retry_for_s
        self._stopping = threading.Event()
        self._outbox: Outbox[dict[str, Any]] = Outbox(self._publish, name="vim-events",
                                                      max_batch=EVENT_BATCH)

    def start(self) -> None:
        if self.publisher is not None:
            self._outbox.start()

    def submit(self, event: dict[str, Any]) -> None:
        if self.publisher is not None:
            try:
                self._outbox.put(event)
            except OutboxClosed:
                self._lost(1, "the VIM server is stopping")

    def stop(self, timeout_s: float = 5.0) -> None:
        self._outbox.flush(timeout_s / 2)
        self._stopping.set()  # a batch still retrying gives up now
        lost = self._outbox.close(timeout_s / 2)
        if lost:
            self._lost(len(lost), f"not published within {timeout_s:g} s of the stop")
        if self.publisher is not None:
            self.publisher.close()

    def _publish(self, batch: list[dict[str, Any]]) -> None:
        assert self.publisher is not None

        def failed(exc: BaseException, attempts: int, delay: float | None) -> None:
            if delay is not None and (attempts == 1 or attempts % 10 == 0):
                LOG.warning("%d vim.status.update events not taken yet (%s); retrying",
                            len(batch), escape(exc, 500))

        try:
            publish_until_taken(self.publisher, batch, retry_for_s=self.retry_for_s,
                                stop=self._stopping, on_failure=failed)
            self.stats.events_published += len(batch)
        except (PublishError, RetryError) as exc:
            self._lost(len(batch), str(getattr(exc, "last", exc)))

    def _lost(self, count: int, why: str) -> None:
        self.stats.events_failed += count
        LOG.error("vim.status.update events lost: %s", why)


class MonitorManager(VimMonitoring):
    """Keeps one monitor per owned VIM, in one thread (see the module's docstring)."""

    def __init__(self, store: VimStore, config: VimConfig,
                 publisher: EventPublisher | None = None,
                 owns: Callable[[str], bool] | None = None,
                 scheduler_factory: SchedulerFactory | None = None) -> None:
        self.store = store
        self.config = config
        self.stats = ManagerStats()
        self.events = VimEventSender(publisher, self.stats)
        self._owns: Callable[[str], bool] = owns or (lambda _vim_id: True)
        self._scheduler_factory = scheduler_factory or _probe_scheduler
        self._probe_config = probe_config(config)
        self._interval_s = config.interval_ms / 1000.0
        self._stall_s = config.stall_intervals * self._interval_s + config.timeout_ms / 1000.0
        self._reconcile_s = config.reconcile_interval_ms / 1000.0
        self.monitors: dict[str, VimMonitor] = {}
        self.targets: dict[str, AddressTarget] = {}  # by address
        self._target_address: dict[str, str] = {}  # prober target name -> address
        self._generation: dict[str, int] = {}  # by address; bumped when a target is replaced
        self._claimed: dict[str, str] = {}  # vim id -> the monitor id this manager issued
        self._revision = -1
        self._targets_dirty = False
        self._reports: list[StatusReport] = []
        self._transitions: deque[tuple[str, HostState]] = deque()
        self._http_results: deque[tuple[str, str, bool, str]] = deque()
        self._http_due: list[tuple[float, str, str]] = []
        self._http_inflight = 0
        self._http_pool: ThreadPoolExecutor | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._sync_requested = True
        self._full_due = 0.0
        self._next_reconcile = 0.0
        self._next_progress_check = 0.0
        self._lock = threading.Lock()  # guards the monitors' snapshot for readers
        self._thread: threading.Thread | None = None
        self._scheduler: Any = None
        self._prober_stop = threading.Event()
        self._prober_thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> MonitorManager:
        """Open the prober (raw socket: RawSocketPermissionError without CAP_NET_RAW), then
        run the manager's thread."""
        self._start_prober()
        if self.config.http_check:
            self._http_pool = ThreadPoolExecutor(self.config.http_workers,
                                                 thread_name_prefix="vim-http")
        self.events.start()
        self._thread = threading.Thread(target=self._run, name="vim-manager", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._stop_prober()
        if self._http_pool is not None:
            self._http_pool.shutdown(wait=False, cancel_futures=True)
        self.events.stop()

    def poke(self) -> None:
        """Reconcile now (the API calls this after every change it commits)."""
        self._sync_requested = True
        self._wake.set()

    def set_owns(self, owns: Callable[[str], bool]) -> None:
        """Monitor only the VIMs for which ``owns(vim_id)`` is true (reconciled at once)."""
        self._owns = owns
        self._full_due = 0.0
        self.poke()

    def snapshot(self) -> dict[str, Any]:
        """Counters and sizes, for GET /v1/monitoring."""
        scheduler = self._scheduler
        probe = scheduler.stats if scheduler is not None else None
        with self._lock:
            monitors, targets = len(self.monitors), len(self.targets)
        return {
            "monitors": monitors, "addresses": targets,
            "prober_alive": bool(self._prober_thread and self._prober_thread.is_alive()),
            "probes_sent": probe.sent if probe else 0,
            "probe_replies": probe.replies if probe else 0,
            "probe_misses": probe.misses if probe else 0,
            **{k: getattr(self.stats, k) for k in ManagerStats.__dataclass_fields__},
        }

    # -- the prober ---------------------------------------------------------------------

    def _start_prober(self) -> None:
        self._prober_stop = threading.Event()
        self._scheduler = self._scheduler_factory(self._probe_config, self._on_transition)
        self._prober_thread = threading.Thread(target=self._scheduler.run,
                                               args=(self._prober_stop,), name="vim-probe-loop",
                                               daemon=True)
        self._prober_thread.start()
        self._targets_dirty = True

    def _stop_prober(self) -> None:
        self._prober_stop.set()
        if self._prober_thread is not None:
            self._prober_thread.join(2.0)
        sock = getattr(self._scheduler, "sock", None)
        if sock is not None:
            sock.close()

    def _on_transition(self, probe: Any, _old: HostState, new: HostState, _at: float) -> None:
        # In the probe loop's thread: hand over, never touch the database here.
        self._transitions.append((probe.hostname, new))
        self._wake.set()

    # -- the manager's loop -------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001  (the manager must outlive one bad round)
                LOG.exception("VIM monitor manager: round failed; retrying in 1 s")
                self._stopping.wait(1.0)
                self._sync_requested = True
            if self._sync_requested:
                continue  # claimed VIMs come back from the database: start them now
            wake = self._next_reconcile
            if self._http_due:
                wake = min(wake, self._http_due[0][0])
            self._wake.wait(max(0.0, wake - clock.monotonic()))
            self._wake.clear()

    def step(self) -> None:
        """One round: verdicts in, reconcile when due, HTTP checks out (public for tests)."""
        self._take_verdicts()
        now = clock.monotonic()
        if self._sync_requested or now >= self._next_reconcile:
            self._sync_requested = False
            full = now >= self._full_due
            if full:
                self._full_due = now + self.config.full_resync_s
            self._sync(full)
            self._next_reconcile = now + self._reconcile_s
            if full:
                self._prune()
        if now >= self._next_progress_check:
            # A walk over every address: twice per stall period is enough to replace a stalled
            # one within 1.5 stall periods, and cheaper than every reconcile at 10,000 VIMs.
            self._check_progress(now)
            self._next_progress_check = now + max(self._reconcile_s, self._stall_s / 2)
        self._schedule_http(now)
        self._flush_reports()

    # -- verdicts -----------------------------------------------------------------------

    def _take_verdicts(self) -> None:
        while self._transitions:
            name, state = self._transitions.popleft()
            address = self._target_address.get(name)
            target = self.targets.get(address) if address is not None else None
            if target is None or target.name != name:
                continue  # a replaced or removed target's last word
            target.state = state
            for vim_id in target.vim_ids:
                monitor = self.monitors[vim_id]
                monitor.ping = state
                self._evaluate(monitor)
        while self._http_results:
            vim_id, monitor_id, ok, detail = self._http_results.popleft()
            self._http_inflight -= 1
            checked = self.monitors.get(vim_id)
            if checked is None or checked.monitor_id != monitor_id:
                continue
            if ok != checked.http_ok:
                LOG.info("VIM %s: HTTP check of its auth_url %s (%s)", escape(checked.name),
                         "passes" if ok else "fails", escape(detail, 500))
            checked.http_ok = ok
            self._evaluate(checked)
        self._flush_reports()

    def _verdict(self, monitor: VimMonitor) -> str | None:
        if monitor.ping is HostState.DOWN:
            return UNREACHABLE
        if monitor.ping is HostState.UP:
            if not self.config.http_check:
                return REACHABLE
            if monitor.http_ok is None:
                return None
            return REACHABLE if monitor.http_ok else UNREACHABLE
        return None  # UNKNOWN: no verdict yet; SUSPECT: not a verdict

    def _evaluate(self, monitor: VimMonitor) -> None:
        verdict = self._verdict(monitor)
        if verdict is not None and verdict != monitor.reported:
            monitor.reported = verdict
            self._reports.append(StatusReport(monitor.vim_id, monitor.monitor_id, verdict))

    def _flush_reports(self) -> None:
        while self._reports:
            # One report per VIM and batch (the last): a batch is one transaction.
            batch = list({r.vim_id: r for r in self._reports[:REPORT_BATCH]}.values())
            taken = min(len(self._reports), REPORT_BATCH)
            try:
                results = self.store.update_statuses(batch)
            except SQLAlchemyError as exc:
                LOG.error("cannot store %d VIM status reports (%s); retrying in the next "
                          "round", len(batch), type(exc).__name__)
                return
            del self._reports[:taken]
            self.stats.reports += len(batch)
            for result in results:
                self._after_report(result)

    def _after_report(self, result: StatusResult) -> None:
        report = result.report
        if result.refused:
            self.stats.refused += 1
            monitor = self.monitors.get(report.vim_id)
            if monitor is not None and monitor.monitor_id == report.monitor_id:
                self._stop_monitor(report.vim_id, f"its report was refused ({result.reason})")
                self._sync_requested = True
            return
        if not result.changed:
            return
        self.stats.changes += 1
        previous = result.previous_status
        LOG.warning("VIM %s (%s) is %s (was %s)", escape(result.name), report.vim_id,
                    report.status, previous)
        self.events.submit(vim_status_update(
            report.vim_id, result.name, report.status, previous, result.project_name,
            self.config.event_project_id or result.project_name))

    # -- reconciling --------------------------------------------------------------------

    def _sync(self, full: bool) -> None:
        if full:
            revision, rows = self.store.snapshot()
            present = {row.id for row in rows}
            for vim_id in [v for v in self.monitors if v not in present]:
                self._stop_monitor(vim_id, "the VIM was deleted")
                self._claimed.pop(vim_id, None)
        else:
            revision, rows, gone = self.store.changes_since(self._revision)
            for vim_id in gone:
                if vim_id in self.monitors:
                    self._stop_monitor(vim_id, "the VIM was deleted")
                self._claimed.pop(vim_id, None)
        self._revision = revision
        to_claim: list[tuple[str, str | None]] = []
        for row in rows:
            monitor = self.monitors.get(row.id)
            if not self._owns(row.id):
                if monitor is not None:
                    self._stop_monitor(row.id, "another server monitors it now")
                self._claimed.pop(row.id, None)
                continue
            if monitor is not None and monitor.monitor_id == row.monitor_id:
                monitor.name, monitor.project_name = row.name, row.project_name
                monitor.cert_verify = row.cert_verify
                continue
            if monitor is not None:
                self._stop_monitor(row.id, f"its monitor id is now {row.monitor_id or 'none'}")
            if row.monitor_id is not None and row.monitor_id == self._claimed.get(row.id):
                self._start_monitor(row)
            else:
                to_claim.append((row.id, row.monitor_id))
        if to_claim:
            self._claim(to_claim)
        self._push_targets()

    def _claim(self, claims: list[tuple[str, str | None]]) -> None:
        try:
            issued = self.store.claim(claims)
        except SQLAlchemyError as exc:
            # Their rows will not come back as changes: reread every row in the next round.
            LOG.error("cannot claim %d VIMs (%s); retrying in the next round", len(claims),
                      type(exc).__name__)
            self._full_due = 0.0
            return
        self._claimed.update(issued)
        self.stats.claims += len(issued)
        self._sync_requested = True  # their rows come back with the new ids: then they start

    def _start_monitor(self, row: VimRecord) -> None:
        monitor = VimMonitor(row)
        target = self.targets.get(row.address)
        if target is None:
            generation = self._generation.get(row.address, 0)
            target = AddressTarget(name=f"{row.address}#{generation}",
                                   last_progress=clock.monotonic())
            self.targets[row.address] = target
            self._target_address[target.name] = row.address
            self._targets_dirty = True
        target.vim_ids.add(row.id)
        monitor.ping = target.state
        with self._lock:
            self.monitors[row.id] = monitor
        LOG.info("VIM %s (%s): monitor %s started, probing %s", escape(row.name), row.id,
                 monitor.monitor_id, row.address)
        if self.config.http_check:
            heapq.heappush(self._http_due, (clock.monotonic(), row.id, monitor.monitor_id))
        self._evaluate(monitor)

    def _stop_monitor(self, vim_id: str, reason: str) -> None:
        with self._lock:
            monitor = self.monitors.pop(vim_id, None)
        if monitor is None:
            return
        LOG.info("VIM %s (%s): monitor %s stops: %s", escape(monitor.name), vim_id,
                 monitor.monitor_id, escape(reason, 600))
        target = self.targets.get(monitor.address)
        if target is not None:
            target.vim_ids.discard(vim_id)
            if not target.vim_ids:
                del self.targets[monitor.address]
                self._target_address.pop(target.name, None)
                self._targets_dirty = True
        self._reports = [r for r in self._reports
                         if not (r.vim_id == vim_id and r.monitor_id == monitor.monitor_id)]

    def _push_targets(self) -> None:
        if self._targets_dirty:
            self._targets_dirty = False
            self._scheduler.update_targets(
                [Target(t.name, address) for address, t in self.targets.items()])

    def _check_progress(self, now: float) -> None:
        if self._prober_thread is not None and not self._prober_thread.is_alive():
            LOG.error("the probe loop is gone; starting a new one and new monitors for all "
                      "%d VIMs", len(self.monitors))
            self.stats.prober_restarts += 1
            self._stop_prober()
            self._start_prober()
            self._replace(list(self.targets))
            return
        stalled = []
        for address, target in self.targets.items():
            try:
                seq = self._scheduler.target(target.name).seq
            except KeyError:
                seq = -1  # not (yet) taken by the probe loop
            if seq != target.last_seq:
                target.last_seq, target.last_progress = seq, now
            elif now - target.last_progress > self._stall_s:
                stalled.append(address)
        if stalled:
            LOG.error("%d VIM addresses not probed for %.1f s (%s...): their monitors are "
                      "replaced", len(stalled), self._stall_s, ", ".join(stalled[:3]))
            self._replace(stalled)

    def _replace(self, addresses: list[str]) -> None:
        claims: list[tuple[str, str | None]] = []
        for address in addresses:
            self._generation[address] = self._generation.get(address, 0) + 1
            target = self.targets.get(address)
            for vim_id in list(target.vim_ids) if target is not None else []:
                monitor = self.monitors[vim_id]
                claims.append((vim_id, monitor.monitor_id))
                self._claimed.pop(vim_id, None)  # never run again, even if the claim fails
                self._stop_monitor(vim_id, "not progressing")
        self.stats.replaced += len(claims)
        self._push_targets()
        if claims:
            self._claim(claims)

    def _prune(self) -> None:
        try:
            self.store.prune_deletions(older_than_s=max(3600.0, 10 * self.config.full_resync_s))
        except SQLAlchemyError as exc:
            LOG.warning("cannot prune the deletion log: %s", type(exc).__name__)

    # -- HTTP checks --------------------------------------------------------------------

    def _schedule_http(self, now: float) -> None:
        pool = self._http_pool
        if pool is None:
            return
        limit = self.config.http_workers * 2  # a bounded backlog; the rest wait in the heap
        interval_s = self.config.http_interval_s
        timeout_s = self.config.http_timeout_ms / 1000.0
        while self._http_due and self._http_due[0][0] <= now and self._http_inflight < limit:
            due, vim_id, monitor_id = heapq.heappop(self._http_due)
            monitor = self.monitors.get(vim_id)
            if monitor is None or monitor.monitor_id != monitor_id:
                continue
            self._http_inflight += 1
            self.stats.http_checks += 1
            future = pool.submit(check_http, monitor.auth_url, monitor.cert_verify, timeout_s)
            future.add_done_callback(functools.partial(self._http_done, vim_id, monitor_id))
            heapq.heappush(self._http_due, (max(due + interval_s, now), vim_id, monitor_id))

    def _http_done(self, vim_id: str, monitor_id: str, future: Any) -> None:
        try:
            ok, detail = future.result()
        except Exception as exc:  # noqa: BLE001  (cancelled at shutdown, or a bug)
            ok, detail = False, type(exc).__name__
        self._http_results.append((vim_id, monitor_id, ok, detail))
        self._wake.set()


def _probe_scheduler(config: MonitorConfig, on_transition: Callable[..., None]) -> Any:
    from monitor.prober import ProbeScheduler

    return ProbeScheduler(config, on_transition)
