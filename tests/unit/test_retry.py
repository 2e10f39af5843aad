"""The one retry loop: its backoff figures, and when it gives up."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from doctor import clock
from doctor.retry import Backoff, GaveUp, Stopped, retry


def test_backoff_doubles_up_to_its_cap_and_resets():
    backoff = Backoff(0.05, 1.0)
    assert list(itertools.islice(backoff, 7)) == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert next(backoff) == 0.05
    assert list(itertools.islice(Backoff(0.05), 4)) == [0.05, 0.1, 0.2, 0.4]  # no cap
    assert list(itertools.islice(Backoff(2.0, 1.0), 3)) == [2.0, 1.0, 1.0]  # first above cap
    assert list(itertools.islice(Backoff(1.0, 10.0, factor=3), 4)) == [1.0, 3.0, 9.0, 10.0]
    with pytest.raises(ValueError):
        Backoff(-1.0)


class Flaky:
    """Fails ``failures`` times with ``error``, then returns how many calls it took."""

    def __init__(self, failures, error=None):
        self.failures = failures
        self.error = error or OSError("refused")
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


def test_transient_failures_are_retried_with_the_backoffs_delays():
    seen = []
    started = time.monotonic()
    result = retry(Flaky(3), backoff=Backoff(0.01, 0.02),
                   on_failure=lambda exc, n, delay: seen.append((str(exc), n, delay)))
    assert result == 4
    assert seen == [("refused", 1, 0.01), ("refused", 2, 0.02), ("refused", 3, 0.02)]
    assert time.monotonic() - started >= 0.05


def test_a_failure_that_is_not_transient_is_raised_at_once():
    call = Flaky(5, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        retry(call, backoff=Backoff(0.01), transient=(OSError,))
    assert call.calls == 1


def test_gives_up_after_its_attempts_telling_the_last_failure():
    seen = []
    call = Flaky(10)
    with pytest.raises(GaveUp) as caught:
        retry(call, backoff=Backoff(0.001), attempts=3,
              on_failure=lambda exc, n, delay: seen.append((n, delay)))
    assert call.calls == 3 and caught.value.attempts == 3
    assert str(caught.value.last) == "refused"
    assert seen == [(1, 0.001), (2, 0.002), (3, None)]  # None: no other attempt


def test_gives_up_once_the_deadline_has_passed():
    call = Flaky(1000)
    started = time.monotonic()
    with pytest.raises(GaveUp):
        retry(call, backoff=Backoff(0.01), deadline=clock.monotonic() + 0.1)
    assert 0.1 <= time.monotonic() - started < 1.0
    assert 2 <= call.calls < 10  # waits of 0.01, 0.02, 0.04, 0.08 s: 5 attempts at most


def test_a_stop_interrupts_the_wait_and_one_already_set_gives_up():
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Stopped) as caught:
        retry(Flaky(1000), backoff=Backoff(0.05, 60.0), stop=stop)
    assert time.monotonic() - started < 1.0 and caught.value.attempts >= 1
    with pytest.raises(GaveUp) as caught:
        retry(Flaky(1000), backoff=Backoff(60.0), stop=stop)
    assert caught.value.attempts == 1
    assert retry(Flaky(0), backoff=Backoff(60.0), stop=stop) == 1  # a success still counts
