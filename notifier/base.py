"""What the Notifier role promises: take instance events, fire the alarms that match.

Producers (the Inspector's shortcut, the Controller's conservative path) hold
an ``EventPublisher``; which one is configuration: ``http`` posts to the
embedded Notifier's ``POST /v1/events``, and an in-process embedded Notifier
is a publisher itself.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from typing import Any


class EventPublisher(abc.ABC):
    """Delivers events in Ceilometer's format (``doctor.events.instance_update``)."""

    @abc.abstractmethod
    def publish(self, events: list[dict[str, Any]]) -> None:
        """Deliver ``events`` (one call, however many); raises PublishError if it could not."""

    def close(self) -> None:  # noqa: B027  (optional hook: most publishers hold nothing)
        """Release connections."""


class PublishError(RuntimeError):
    """The events could not be delivered; ``final``: the receiver refused them (a 4xx),
    so sending them again would not help."""

    def __init__(self, message: str, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


class _Refused(Exception):
    def __init__(self, error: PublishError) -> None:
        super().__init__(str(error))
        self.error = error


def publish_until_taken(publisher: EventPublisher, events: list[dict[str, Any]], *,
                        retry_for_s: float, stop: threading.Event,
                        on_failure: Callable[[BaseException, int, float | None], object]
                        ) -> None:
    """``publisher.publish(events)``, again with backoff (0.05 s doubling to 5 s) while it
    fails, for ``retry_for_s`` or until ``stop``: then ``doctor.retry.RetryError``. A final
    refusal (``PublishError.final``, a 4xx) is raised at once, as that PublishError."""
    from doctor import clock
    from doctor.retry import Backoff, retry

    def attempt() -> None:
        try:
            publisher.publish(events)
        except PublishError as exc:
            if exc.final:
                raise _Refused(exc) from None
            raise

    try:
        retry(attempt, backoff=Backoff(0.05, 5.0), transient=(PublishError, OSError),
              deadline=clock.monotonic() + retry_for_s, stop=stop, on_failure=on_failure)
    except _Refused as refused:
        raise refused.error from None
