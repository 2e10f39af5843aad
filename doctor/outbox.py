"""The one batching outbox: a worker thread that drains a queue, in order, into a callable.

Producers ``put`` items and never wait on the delivery; the worker hands whatever is
waiting (up to ``max_batch``) to ``deliver`` in one call, so a burst is one request, not
hundreds. Items are delivered in the order they were put, one batch at a time.

``flush(timeout_s)`` waits until everything put so far was delivered; ``close(timeout_s)``
stops taking items, delivers what is queued within ``timeout_s``, stops the worker and
returns the items it never delivered, for the owner to log. A ``deliver`` that raises is
logged and the worker goes on with the next batch; retrying is the callable's business.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from doctor import clock

LOG = logging.getLogger(__name__)
T = TypeVar("T")


class OutboxClosed(RuntimeError):
    """The outbox was closed: the items were not taken."""


class OutboxFull(RuntimeError):
    """A bounded outbox holds ``maxsize`` items already: the items were not taken."""


class Outbox(Generic[T]):
    """Items queued for one worker thread that delivers them in batches, in order.

    ``max_batch`` bounds a batch by the sum of ``weight(item)`` (1 per item by default; the
    first item of a batch is always taken). ``maxsize`` (0: unbounded) bounds the items
    waiting. Not started, nothing is delivered; ``start`` returns the outbox.
    """

    def __init__(self, deliver: Callable[[list[T]], object], *, name: str,
                 max_batch: int = 1000, maxsize: int = 0,
                 weight: Callable[[T], int] | None = None) -> None:
        self.deliver = deliver
        self.name = name
        self.max_batch = max_batch
        self.maxsize = maxsize
        self._weight = weight
        self._pending: deque[T] = deque()
        self._busy = False  # a batch is with ``deliver``
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- producers ------------------------------------------------------------------------

    def put(self, item: T) -> None:
        """Queue one item; OutboxClosed or OutboxFull if it was not taken."""
        self.put_many((item,))

    def put_many(self, items: Iterable[T]) -> None:
        """Queue items together (all or none); OutboxClosed or OutboxFull if not taken."""
        batch = list(items)
        with self._changed:
            if self._closed:
                raise OutboxClosed(f"{self.name} is closed")
            if self.maxsize and len(self._pending) + len(batch) > self.maxsize:
                raise OutboxFull(f"{self.name} holds {len(self._pending)} items")
            self._pending.extend(batch)
            self._changed.notify_all()

    def pending(self) -> int:
        """Items waiting, not counting a batch being delivered."""
        with self._changed:
            return len(self._pending)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> Outbox[T]:
        self._thread.start()
        return self

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def flush(self, timeout_s: float) -> bool:
        """Wait at most ``timeout_s`` until every item put so far was delivered.

        True if so; without a worker (never started, or closed) only if none is waiting.
        """
        deadline = clock.monotonic() + timeout_s
        with self._changed:
            while self._pending or self._busy:
                if not self.started or not self._thread.is_alive():
                    return False
                remaining = deadline - clock.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def close(self, timeout_s: float = 0.0, join_s: float = 1.0) -> list[T]:
        """Stop taking items, deliver what is queued within ``timeout_s``, stop the worker
        (waiting at most ``join_s`` more for a batch in delivery) and return the items that
        were never handed to ``deliver``. Closing again returns nothing."""
        if self._closed:
            return []
        self.flush(timeout_s)
        with self._changed:
            lost = list(self._pending)
            self._pending.clear()
            self._closed = True
            self._changed.notify_all()
        if self.started:
            self._thread.join(join_s)
        return lost

    def alive(self) -> bool:
        """True while the worker runs (e.g. still in a delivery after ``close`` gave up)."""
        return self._thread.is_alive()

    # -- the worker ------------------------------------------------------------------------

    def _take(self) -> list[T]:
        """The next batch, called with the lock held and items waiting."""
        if self._weight is None:
            return [self._pending.popleft()
                    for _ in range(min(len(self._pending), self.max_batch))]
        batch = [self._pending.popleft()]
        total = self._weight(batch[0])
        while self._pending and total < self.max_batch:
            item = self._pending.popleft()
            batch.append(item)
            total += self._weight(item)
        return batch

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                batch = self._take()
                self._busy = True
            try:
                self.deliver(batch)
            except Exception:  # noqa: BLE001  (one bad batch must not stop the next ones)
                LOG.exception("%s: delivering %d items failed", self.name, len(batch))
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
