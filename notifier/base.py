"""What the Notifier role promises: take instance events, fire the alarms that match.

Producers (the Inspector's shortcut, the Controller's conservative path) hold
an ``EventPublisher``; which one is configuration: ``http`` posts to the
embedded Notifier's ``POST /v1/events``, and an in-process embedded Notifier
is a publisher itself.
"""

from __future__ import annotations

import abc
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
