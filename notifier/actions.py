"""Alarm actions: POST Aodh's alarm body to each ``alarm_actions`` URL, concurrently, with retries.

Each action is one POST from a bounded thread pool, every POST with a timeout.
Unlike Aodh's REST notifier (no timeout, no retry: a Consumer that is down
loses the alarm), a failed POST (connection error, timeout, 5xx) is retried
with exponential backoff until ``retry_for_s`` after the first attempt, then
logged as lost with the alarm id and the URL. A 4xx (or a redirect) is the
Consumer's final answer. Retries wait on a timer heap, not in a worker, so a
Consumer that is down never holds up the alarms of another, and one target
(scheme, host, port) has at most ``per_target`` POSTs in flight (three quarters
of the workers by default): the others wait for it in its own queue, so a slow
Consumer leaves workers to the others.

Every request carries ``X-OpenStack-Request-Id`` (as Aodh sends it), the same
on every retry, so a Consumer can tell a retry from a second alarm; with a
``secret``, also ``X-Doctor-Signature: sha256=<hex>``, the HMAC-SHA256 of the
body under it (``doctor.signing``), so a Consumer takes only what this Notifier
sent. Headers are never logged, and URLs are logged through ``doctor.redact``
(no credentials, no query values).

Durable actions (``dispatch_stored``: rows of the notifier's ``action_outbox``,
``notifier.store``) carry their stored body and request id, and report when
they are final (delivered, refused, or out of retries) through ``on_final``,
so their row is deleted. One the dispatcher gives up on because it is
stopping is not final: it is counted ``deferred``, its row stays, and it is
sent again, with the same request id, when the notifier starts next.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from doctor import clock
from doctor.http import HttpClient, HttpError
from doctor.logs import escape
from doctor.profiler import Profiler
from doctor.redact import redact_url
from doctor.retry import Backoff
from doctor.signing import SIGNATURE_HEADER, sign
from notifier.evaluator import Firing
from notifier.store import StoredAction

LOG = logging.getLogger(__name__)


@dataclass
class _Delivery:
    """One alarm action: a body for one URL, and how its attempts went."""

    alarm_id: str
    instance_id: str | None
    url: str
    payload: dict
    body: bytes = b""
    signature: str = ""
    request_id: str = field(default_factory=lambda: f"req-{uuid.uuid4()}")
    first_at: float = field(default_factory=clock.monotonic)
    attempts: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(0.0))  # the waits between them
    on_final: Callable[[str], object] | None = None  # a stored action: told its request id


class ActionDispatcher:
    """Sends alarm actions from ``workers`` threads; ``dispatch`` never blocks on the network."""

    def __init__(self, timeout_s: float = 2.0, retry_for_s: float = 60.0,
                 retry_initial_s: float = 0.05, retry_max_s: float = 2.0, workers: int = 32,
                 profiler: Profiler | None = None,
                 check_url: Callable[[str], object] | None = None, secret: str = "",
                 per_target: int = 0) -> None:
        """``check_url`` raises ValueError for a URL no action may go to: never POSTed,
        counted as refused. ``secret``: sign every body with it (X-Doctor-Signature);
        empty: unsigned. ``per_target``: most POSTs in flight to one target (0: three
        quarters of ``workers``, at least 1)."""
        self.timeout_s = timeout_s
        self.per_target = per_target or max(1, workers * 3 // 4)
        self._active: Counter[str] = Counter()  # POSTs in flight (or queued in the pool)
        self._parked: dict[str, deque[_Delivery]] = {}  # by target, over per_target
        self.check_url = check_url
        self.retry_for_s = retry_for_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.profiler = profiler or Profiler()
        self._secret = secret
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="alarm-action")
        # Alarm actions go straight to the consumer (no proxy), one kept-alive connection
        # per worker thread and consumer.
        self._client = HttpClient(timeout_s, headers={"Content-Type": "application/json"})
        self._lock = threading.Condition()
        self._retries: list[tuple[float, int, _Delivery]] = []  # heap of (due, seq, delivery)
        self._seq = itertools.count()
        self._inflight: dict[int, _Delivery] = {}  # by submission ticket
        self._stopping = threading.Event()
        self._scheduler: threading.Thread | None = None
        self.counts = {"sent": 0, "delivered": 0, "refused": 0, "retried": 0, "lost": 0,
                       "deferred": 0}

    def start(self) -> ActionDispatcher:
        self._scheduler = threading.Thread(target=self._schedule_retries,
                                           name="alarm-action-retries", daemon=True)
        self._scheduler.start()
        return self

    def dispatch(self, firings: list[Firing]) -> int:
        """Queue one POST per firing and action URL; returns how many were queued."""
        queued = 0
        for firing in firings:
            if not firing.actions:
                continue
            payload = firing.payload()
            for url in firing.actions:
                self._submit(_Delivery(firing.alarm_id, firing.instance_id, url, payload,
                                       backoff=Backoff(self.retry_initial_s,
                                                       self.retry_max_s)))
                queued += 1
        return queued

    def dispatch_stored(self, actions: Iterable[StoredAction],
                        on_final: Callable[[str], object]) -> int:
        """Queue one POST per stored action (its body and request id as stored);
        ``on_final(request_id)`` once it is delivered, refused or out of retries."""
        queued = 0
        for action in actions:
            self._submit(_Delivery(action.alarm_id, action.instance_id, action.url, {},
                                   body=action.body.encode(), request_id=action.request_id,
                                   backoff=Backoff(self.retry_initial_s, self.retry_max_s),
                                   on_final=on_final))
            queued += 1
        return queued

    def _final(self, delivery: _Delivery) -> None:
        """The delivery is over for good: a stored one's row may go."""
        if delivery.on_final is not None:
            try:
                delivery.on_final(delivery.request_id)
            except Exception:  # noqa: BLE001  (the row stays: sent again at the next start)
                LOG.exception("alarm %s: recording its action as done failed",
                              delivery.alarm_id)

    def _submit(self, delivery: _Delivery) -> None:
        target = _target(delivery.url)
        with self._lock:
            if self._stopping.is_set():
                self._lose(delivery, "the notifier is stopping")
                return
            if self._active[target] >= self.per_target:
                self._parked.setdefault(target, deque()).append(delivery)
                return
            self._active[target] += 1
            ticket = next(self._seq)
            self._inflight[ticket] = delivery
        self._start(ticket, target, delivery)

    def _start(self, ticket: int, target: str, delivery: _Delivery) -> None:
        try:
            future = self._pool.submit(self._attempt, delivery)
        except RuntimeError:  # the pool shut down between the check and the submit
            with self._lock:
                self._inflight.pop(ticket, None)
                self._active[target] -= 1
                self._lose(delivery, "the notifier is stopping")
            return
        # A callback, not a finally in _attempt: it also runs for attempts cancelled at stop.
        future.add_done_callback(lambda f: self._done(f, ticket, target, delivery))

    def _done(self, future: Future, ticket: int, target: str, delivery: _Delivery) -> None:
        following = None
        with self._lock:
            self._inflight.pop(ticket, None)
            if future.cancelled():
                self._lose(delivery, "the notifier stopped before it was sent")
            self._active[target] -= 1
            parked = self._parked.get(target)
            if parked and not self._stopping.is_set():
                following = parked.popleft()
                if not parked:
                    del self._parked[target]
                self._active[target] += 1
                next_ticket = next(self._seq)
                self._inflight[next_ticket] = following
            elif self._active[target] <= 0:
                del self._active[target]
            self._lock.notify_all()
        if following is not None:
            self._start(next_ticket, target, following)

    def _attempt(self, delivery: _Delivery) -> None:
        try:
            self._post(delivery)
        except Exception:  # a bug must not kill the worker silently
            LOG.exception("alarm %s: action to %s failed unexpectedly", delivery.alarm_id,
                          redact_url(delivery.url))

    def _post(self, delivery: _Delivery) -> None:
        if self.check_url is not None and delivery.attempts == 0:
            try:
                self.check_url(delivery.url)
            except ValueError as exc:
                with self._lock:
                    self.counts["refused"] += 1
                LOG.warning("alarm %s: action to %s not sent: %s", delivery.alarm_id,
                            redact_url(delivery.url), escape(exc))
                self._final(delivery)
                return
        if not delivery.body:  # encoded here, in the pool, so dispatch() returns at once
            delivery.body = json.dumps(delivery.payload).encode()
        if self._secret and not delivery.signature:
            delivery.signature = sign(self._secret, delivery.body)
        headers = {"X-OpenStack-Request-Id": delivery.request_id}
        if delivery.signature:
            headers[SIGNATURE_HEADER] = delivery.signature
        delivery.attempts += 1
        sent_at = clock.now()
        with self._lock:
            self.counts["sent"] += 1
        try:
            response = self._client.post(delivery.url, data=delivery.body, headers=headers)
        except HttpError as exc:
            # Its reason, not its text: the text repeats the URL with its query string.
            problem = exc.reason
        else:
            status = response.status
            if 200 <= status < 300:
                with self._lock:
                    self.counts["delivered"] += 1
                self.profiler.record("T08", at=sent_at, alarm_id=delivery.alarm_id,
                                     instance_id=delivery.instance_id)
                LOG.debug("alarm %s: action to %s delivered (HTTP %d, attempt %d)",
                          delivery.alarm_id, redact_url(delivery.url), status, delivery.attempts)
                self._final(delivery)
                return
            if status < 500:
                with self._lock:
                    self.counts["refused"] += 1
                LOG.warning("alarm %s: action to %s refused with HTTP %d; not retried",
                            delivery.alarm_id, redact_url(delivery.url), status)
                self._final(delivery)
                return
            problem = f"HTTP {status}"
        self._retry(delivery, problem)

    def _retry(self, delivery: _Delivery, problem: str) -> None:
        elapsed = clock.monotonic() - delivery.first_at
        with self._lock:
            if self._stopping.is_set():
                self._lose(delivery, f"{problem}; the notifier is stopping")
                return
            delay_s = next(delivery.backoff)
            if elapsed + delay_s > self.retry_for_s:
                self._lose(delivery, f"{problem}; gave up after {delivery.attempts} attempts "
                                     f"in {elapsed:.1f} s", final=True)
                return
            if delivery.attempts == 1:
                LOG.warning("alarm %s: action to %s failed (%s); retrying for up to %g s",
                            delivery.alarm_id, redact_url(delivery.url), problem, self.retry_for_s)
            self.counts["retried"] += 1
            heapq.heappush(self._retries, (clock.monotonic() + delay_s, next(self._seq),
                                           delivery))
            self._lock.notify_all()

    def _lose(self, delivery: _Delivery, why: str, final: bool = False) -> None:
        """Called with the lock held. ``final``: out of retries; otherwise the dispatcher is
        stopping, and a stored action is only deferred to the next start."""
        if delivery.on_final is not None and not final:
            self.counts["deferred"] += 1
            LOG.warning("alarm %s: action to %s not delivered yet (%s); kept in the outbox, "
                        "sent again at the next start", delivery.alarm_id,
                        redact_url(delivery.url), why)
            return
        self.counts["lost"] += 1
        LOG.error("alarm %s: action to %s lost: %s", delivery.alarm_id, redact_url(delivery.url),
                  why)
        if final:
            self._final(delivery)

    def _schedule_retries(self) -> None:
        while True:
            with self._lock:
                while not self._stopping.is_set():
                    now = clock.monotonic()
                    if self._retries and self._retries[0][0] <= now:
                        break
                    self._lock.wait(self._retries[0][0] - now if self._retries else None)
                if self._stopping.is_set():
                    return
                due = []
                now = clock.monotonic()
                while self._retries and self._retries[0][0] <= now:
                    due.append(heapq.heappop(self._retries)[2])
            for delivery in due:
                self._submit(delivery)

    def pending(self) -> int:
        """Actions queued, in flight or waiting to be retried."""
        with self._lock:
            return (len(self._inflight) + len(self._retries)
                    + sum(len(parked) for parked in self._parked.values()))

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop within about ``timeout_s``: POSTs in flight may finish; the rest is logged lost."""
        deadline = clock.monotonic() + timeout_s
        with self._lock:
            self._stopping.set()
            self._lock.notify_all()
            waiting = [entry[2] for entry in self._retries]
            self._retries.clear()
            for delivery in waiting:
                self._lose(delivery, "the notifier stopped before its retry")
            parked = [d for queue in self._parked.values() for d in queue]
            self._parked.clear()
            for delivery in parked:
                self._lose(delivery, "the notifier stopped before it was sent")
        if self._scheduler is not None:
            self._scheduler.join(max(0.0, deadline - clock.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            while self._inflight and clock.monotonic() < deadline:
                self._lock.wait(max(0.0, deadline - clock.monotonic()))
            for delivery in list(self._inflight.values()):
                self._lose(delivery, "still in flight when the notifier stopped")
            self._inflight.clear()
        self._client.close()


def _target(url: str) -> str:
    """Where a POST goes, for the per-target bound: scheme, host and port."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port}"
    except ValueError:
        return url
