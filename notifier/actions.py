"""Alarm actions: POST Aodh's alarm body to each ``alarm_actions`` URL, concurrently, with retries.

Every POST goes from one event loop thread through ``doctor.asynchttp`` (kept-alive
connections per consumer; about a third of the CPU of a blocking POST per thread, which
matters when one failure fans out to a thousand consumers: ``python -m bench.action_cost``),
each with a timeout. At most ``workers`` POSTs are in flight at once, and at most
``per_target`` (three quarters of ``workers`` by default) to one target (scheme, host,
port): the others wait in that target's queue, so a slow Consumer leaves the rest to the
others. Unlike Aodh's REST notifier (no timeout, no retry: a Consumer that is down loses the
alarm), a failed POST (connection error, timeout, 5xx) is retried with exponential backoff
until ``retry_for_s`` after the first attempt, then logged as lost with the alarm id and the
URL. A 4xx (or a redirect) is the Consumer's final answer. A retry waits on a timer, holding
no slot, so a Consumer that is down never holds up the alarms of another.

Every request carries ``X-OpenStack-Request-Id`` (as Aodh sends it), the same
on every retry, so a Consumer can tell a retry from a second alarm; with a
``secret``, also ``X-Doctor-Signature: sha256=<hex>``, the HMAC-SHA256 of the
body under it (``doctor.signing``), so a Consumer takes only what this Notifier
sent. Headers are never logged, and URLs are logged through ``doctor.redact``
(no credentials, no query values).

Durable actions (``dispatch_stored``: rows of the notifier's ``action_outbox``,
``notifier.store``) carry their stored body and request id, and report when
they are final (delivered, refused, or out of retries) through ``on_final`` (called on the
dispatcher's thread), so their row is deleted. One the dispatcher gives up on because it is
stopping is not final: it is counted ``deferred``, its row stays, and it is
sent again, with the same request id, when the notifier starts next.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from doctor import clock
from doctor.asynchttp import AsyncHttpClient
from doctor.http import HttpError
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
    target: str = ""  # scheme://host:port, for the per-target bound (set when admitted)


class ActionDispatcher:
    """Sends alarm actions from one event loop thread; ``dispatch`` never blocks on the
    network."""

    def __init__(self, timeout_s: float = 2.0, retry_for_s: float = 60.0,
                 retry_initial_s: float = 0.05, retry_max_s: float = 2.0, workers: int = 32,
                 profiler: Profiler | None = None,
                 check_url: Callable[[str], object] | None = None, secret: str = "",
                 per_target: int = 0) -> None:
        """``workers``: most POSTs in flight at once. ``check_url`` raises ValueError for a
        URL no action may go to: never POSTed, counted as refused. ``secret``: sign every
        body with it (X-Doctor-Signature); empty: unsigned. ``per_target``: most POSTs in
        flight to one target (0: three quarters of ``workers``, at least 1)."""
        self.timeout_s = timeout_s
        self.workers = workers
        self.per_target = per_target or max(1, workers * 3 // 4)
        self.check_url = check_url
        self.retry_for_s = retry_for_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.profiler = profiler or Profiler()
        self._secret = secret
        # Alarm actions go straight to the consumer (no proxy), over kept-alive connections.
        self._client = AsyncHttpClient(timeout_s, headers={"Content-Type": "application/json"})
        # Shared with the callers' threads, under the lock: what dispatch() handed over and
        # the loop has not taken yet, the actions not ended yet, and the counts.
        self._lock = threading.Lock()
        self._incoming: list[_Delivery] = []
        self._pending = 0
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.counts = {"sent": 0, "delivered": 0, "refused": 0, "retried": 0, "lost": 0,
                       "deferred": 0}
        # The loop's own, touched on its thread only.
        self._running = 0  # POSTs in flight
        self._active: Counter[str] = Counter()  # POSTs in flight by target
        self._parked: dict[str, deque[_Delivery]] = {}  # by target, over per_target
        self._waiting: deque[_Delivery] = deque()  # under per_target, over workers
        self._tasks: dict[asyncio.Task, _Delivery] = {}
        self._retries: dict[asyncio.TimerHandle, _Delivery] = {}

    def start(self) -> ActionDispatcher:
        """Start the loop's thread (the first dispatch starts it too)."""
        with self._lock:
            self._started()
        return self

    def _started(self) -> asyncio.AbstractEventLoop:
        """The loop, its thread started if it was not; called with the lock held."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever,
                                            name="alarm-actions", daemon=True)
            self._thread.start()
        return self._loop

    def dispatch(self, firings: list[Firing]) -> int:
        """Queue one POST per firing and action URL; returns how many were queued."""
        deliveries = []
        for firing in firings:
            if not firing.actions:
                continue
            payload = firing.payload()
            for url in firing.actions:
                deliveries.append(_Delivery(firing.alarm_id, firing.instance_id, url, payload,
                                            backoff=Backoff(self.retry_initial_s,
                                                            self.retry_max_s)))
        self._submit(deliveries)
        return len(deliveries)

    def dispatch_stored(self, actions: Iterable[StoredAction],
                        on_final: Callable[[str], object]) -> int:
        """Queue one POST per stored action (its body and request id as stored);
        ``on_final(request_id)`` once it is delivered, refused or out of retries."""
        deliveries = [_Delivery(action.alarm_id, action.instance_id, action.url, {},
                                body=action.body.encode(), request_id=action.request_id,
                                backoff=Backoff(self.retry_initial_s, self.retry_max_s),
                                on_final=on_final)
                      for action in actions]
        self._submit(deliveries)
        return len(deliveries)

    def _submit(self, deliveries: list[_Delivery]) -> None:
        """From any thread: hand the deliveries to the loop (one wake-up per batch)."""
        if not deliveries:
            return
        with self._lock:
            stopping = self._stopping.is_set()
            if not stopping:
                self._pending += len(deliveries)
                wake = not self._incoming  # else a _take is on its way
                self._incoming.extend(deliveries)
                loop = self._started()
        if stopping:
            for delivery in deliveries:
                self._lose(delivery, "the notifier is stopping", pending=False)
        elif wake:
            loop.call_soon_threadsafe(self._take)

    # -- on the loop --------------------------------------------------------------------

    def _take(self) -> None:
        with self._lock:
            taken, self._incoming = self._incoming, []
        for delivery in taken:
            self._admit(delivery)

    def _admit(self, delivery: _Delivery) -> None:
        """Send it now, or queue it behind its target's or everyone's POSTs in flight."""
        if self._stopping.is_set():
            self._lose(delivery, "the notifier stopped before it was sent")
            return
        target = delivery.target = delivery.target or _target(delivery.url)
        if self._active[target] >= self.per_target:
            self._parked.setdefault(target, deque()).append(delivery)
        elif self._running >= self.workers:
            self._waiting.append(delivery)
        else:
            self._active[target] += 1
            self._running += 1
            assert self._loop is not None
            task = self._loop.create_task(self._attempt(delivery))
            self._tasks[task] = delivery
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        delivery = self._tasks.pop(task)
        if task.cancelled():
            self._lose(delivery, "still in flight when the notifier stopped")
        target = delivery.target
        self._running -= 1
        self._active[target] -= 1
        if self._active[target] <= 0:
            del self._active[target]
        parked = self._parked.get(target)
        if parked:
            following = parked.popleft()
            if not parked:
                del self._parked[target]
            self._admit(following)
        while self._waiting and self._running < self.workers:
            self._admit(self._waiting.popleft())

    async def _attempt(self, delivery: _Delivery) -> None:
        try:
            await self._post(delivery)
        except Exception:  # a bug must not be silent, nor leave the action pending forever
            LOG.exception("alarm %s: action to %s failed unexpectedly", delivery.alarm_id,
                          redact_url(delivery.url))
            self._lose(delivery, "an unexpected error")

    async def _post(self, delivery: _Delivery) -> None:
        if self.check_url is not None and delivery.attempts == 0:
            try:
                self.check_url(delivery.url)
            except ValueError as exc:
                LOG.warning("alarm %s: action to %s not sent: %s", delivery.alarm_id,
                            redact_url(delivery.url), escape(exc))
                self._end(delivery, "refused")
                return
        if not delivery.body:  # encoded here, on the loop, so dispatch() returns at once
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
            response = await self._client.post(delivery.url, delivery.body, headers)
        except HttpError as exc:
            # Its reason, not its text: the text repeats the URL with its query string.
            problem = exc.reason
        else:
            status = response.status
            if 200 <= status < 300:
                self.profiler.record("T08", at=sent_at, alarm_id=delivery.alarm_id,
                                     instance_id=delivery.instance_id)
                LOG.debug("alarm %s: action to %s delivered (HTTP %d, attempt %d)",
                          delivery.alarm_id, redact_url(delivery.url), status, delivery.attempts)
                self._end(delivery, "delivered")
                return
            if status < 500:
                LOG.warning("alarm %s: action to %s refused with HTTP %d; not retried",
                            delivery.alarm_id, redact_url(delivery.url), status)
                self._end(delivery, "refused")
                return
            problem = f"HTTP {status}"
        self._retry(delivery, problem)

    def _retry(self, delivery: _Delivery, problem: str) -> None:
        if self._stopping.is_set():
            self._lose(delivery, f"{problem}; the notifier is stopping")
            return
        elapsed = clock.monotonic() - delivery.first_at
        delay_s = next(delivery.backoff)
        if elapsed + delay_s > self.retry_for_s:
            self._lose(delivery, f"{problem}; gave up after {delivery.attempts} attempts "
                                 f"in {elapsed:.1f} s", final=True)
            return
        if delivery.attempts == 1:
            LOG.warning("alarm %s: action to %s failed (%s); retrying for up to %g s",
                        delivery.alarm_id, redact_url(delivery.url), problem, self.retry_for_s)
        with self._lock:
            self.counts["retried"] += 1
        assert self._loop is not None
        handle: asyncio.TimerHandle

        def due() -> None:
            self._retries.pop(handle, None)
            self._admit(delivery)

        handle = self._loop.call_later(delay_s, due)
        self._retries[handle] = delivery

    # -- the end of an action, on any thread ----------------------------------------------

    def _end(self, delivery: _Delivery, outcome: str) -> None:
        """Delivered or refused: final."""
        with self._lock:
            self.counts[outcome] += 1
            self._pending -= 1
        self._final(delivery)

    def _final(self, delivery: _Delivery) -> None:
        """The delivery is over for good: a stored one's row may go."""
        if delivery.on_final is not None:
            try:
                delivery.on_final(delivery.request_id)
            except Exception:  # noqa: BLE001  (the row stays: sent again at the next start)
                LOG.exception("alarm %s: recording its action as done failed",
                              delivery.alarm_id)

    def _lose(self, delivery: _Delivery, why: str, final: bool = False,
              pending: bool = True) -> None:
        """Not delivered. ``final``: out of retries; otherwise the dispatcher is stopping,
        and a stored action is only deferred to the next start. ``pending``: it was counted
        among the pending ones."""
        deferred = delivery.on_final is not None and not final
        with self._lock:
            self.counts["deferred" if deferred else "lost"] += 1
            if pending:
                self._pending -= 1
        if deferred:
            LOG.warning("alarm %s: action to %s not delivered yet (%s); kept in the outbox, "
                        "sent again at the next start", delivery.alarm_id,
                        redact_url(delivery.url), why)
            return
        LOG.error("alarm %s: action to %s lost: %s", delivery.alarm_id, redact_url(delivery.url),
                  why)
        if final:
            self._final(delivery)

    # -- the callers' side --------------------------------------------------------------

    def pending(self) -> int:
        """Actions queued, in flight or waiting to be retried."""
        with self._lock:
            return self._pending

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop within about ``timeout_s``: POSTs in flight may finish; the rest is logged
        lost (a stored action: deferred)."""
        deadline = clock.monotonic() + timeout_s
        with self._lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            loop = self._loop
        if loop is None or self._thread is None:  # never started
            self._take()
            return
        shutdown = asyncio.run_coroutine_threadsafe(self._shutdown(deadline), loop)
        try:
            shutdown.result(max(0.0, deadline - clock.monotonic()) + 0.5)
        except Exception:  # noqa: BLE001  (timed out or failed: the loop stops anyway)
            LOG.exception("notifier: stopping the alarm actions failed")
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(max(0.1, deadline - clock.monotonic()))
        if not self._thread.is_alive():
            loop.close()

    async def _shutdown(self, deadline: float) -> None:
        self._take()  # lost: the dispatcher is stopping
        for handle, delivery in list(self._retries.items()):
            handle.cancel()
            self._lose(delivery, "the notifier stopped before its retry")
        self._retries.clear()
        queued = [d for queue in self._parked.values() for d in queue] + list(self._waiting)
        self._parked.clear()
        self._waiting.clear()
        for delivery in queued:
            self._lose(delivery, "the notifier stopped before it was sent")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, deadline - clock.monotonic()))
        for task in list(self._tasks):
            task.cancel()  # _done: lost (a stored action: deferred)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=0.5)
        await self._client.close()


def _target(url: str) -> str:
    """Where a POST goes, for the per-target bound: scheme, host and port."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port}"
    except ValueError:
        return url
