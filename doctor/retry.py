"""The one retry loop: exponential backoff, bounded by attempts, a deadline or a stop event.

``Backoff(first, cap, factor=2)`` yields the delays ``first, first*factor, ...`` up to
``cap``; ``retry(call, backoff=...)`` calls until ``call`` returns, waiting the next delay
after each failure that is ``transient`` (anything else is raised at once). It gives up
with ``GaveUp`` when ``attempts`` were made, ``deadline`` (``clock.monotonic()``) has
passed, or ``stop`` is set after a failed attempt; with ``Stopped`` when ``stop`` is set
during a wait. Both carry the last failure and the number of attempts.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from doctor import clock

R = TypeVar("R")


class Backoff:
    """Delays of an exponential backoff: ``first``, then times ``factor``, at most ``cap``.

    The first delay is ``first`` even above ``cap``; the next ones are capped.
    """

    __slots__ = ("first", "cap", "factor", "_next")

    def __init__(self, first: float, cap: float = math.inf, factor: float = 2.0) -> None:
        if first < 0 or factor <= 0:
            raise ValueError(f"not a backoff: first {first}, factor {factor}")
        self.first = first
        self.cap = cap
        self.factor = factor
        self._next = first

    def __iter__(self) -> Backoff:
        return self

    def __next__(self) -> float:
        delay = self._next
        self._next = min(delay * self.factor, self.cap)
        return delay

    def reset(self) -> None:
        """Start again from ``first`` (after a success)."""
        self._next = self.first


class RetryError(Exception):
    """The call did not succeed; ``last`` is its last failure, after ``attempts`` attempts."""

    def __init__(self, last: BaseException, attempts: int) -> None:
        super().__init__(f"{last} (after {attempts} attempts)")
        self.last = last
        self.attempts = attempts


class GaveUp(RetryError):
    """No attempt is left: the attempts or the deadline are used up, or stop was set."""


class Stopped(RetryError):
    """Stop was set while waiting for the next attempt."""


def retry(call: Callable[[], R], *, backoff: Backoff,
          transient: tuple[type[BaseException], ...] = (Exception,),
          attempts: int | None = None, deadline: float | None = None,
          stop: threading.Event | None = None,
          on_failure: Callable[[BaseException, int, float | None], object] | None = None,
          ) -> R:
    """``call()``'s result, calling again after each ``transient`` failure (see the module).

    ``on_failure(exc, attempt, delay)`` is told of every transient failure, before the wait:
    ``delay`` is the wait before the next attempt, None when no other attempt will be made.
    The wait is ``stop.wait``, so a stop interrupts it, or ``time.sleep`` without a stop.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except transient as exc:
            last = exc
        if ((attempts is not None and attempt >= attempts)
                or (deadline is not None and clock.monotonic() >= deadline)
                or (stop is not None and stop.is_set())):
            if on_failure is not None:
                on_failure(last, attempt, None)
            raise GaveUp(last, attempt) from last
        delay = next(backoff)
        if on_failure is not None:
            on_failure(last, attempt, delay)
        if stop is None:
            time.sleep(delay)
        elif stop.wait(delay):
            raise Stopped(last, attempt) from last
