"""What a Consumer promises the pipeline: receive alarms, and tell what it received."""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Notification:
    """One alarm as received: when (epoch seconds, doctor.clock), which alarm, which VM (or,
    for a VIM's status alarm, which VIM)."""

    received_at: float
    alarm_id: str
    alarm_name: str
    instance_id: str
    vim_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Consumer(abc.ABC):
    """Listens for the Notifier's alarm actions about the VMs it runs."""

    @abc.abstractmethod
    def start(self) -> None:
        """Begin listening, in the background."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop listening and finish or drop pending work, within a bounded time."""

    @abc.abstractmethod
    def notifications(self, since: float | None = None) -> list[Notification]:
        """What was received, oldest first; with ``since``, only what came after it."""
