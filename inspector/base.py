"""What an Inspector promises the pipeline.

It takes Doctor host events from the monitors and answers at once; an accepted event is
acted on exactly once, even across a restart (kill -9 included). On ``compute.host.down``
it tells the Notifier that every VM of the host is in error (``compute.instance.update``,
Doctor's shortcut), forces the host down and resets its VMs to error in the Controller;
on ``compute.host.up`` it clears the forced-down flag. The host -> VM map it needs is kept
fresh by the Controller's notifications of VM changes.
"""

from __future__ import annotations

import abc
from typing import Any

from doctor.events import HostEvent
from doctor.lifecycle import Part


class Inspector(Part):
    """Event intake, the host -> VM map, and fault handling. ``start`` loads the host map
    and resumes the events accepted but not finished; after ``stop``, what was accepted
    stays in the event log, to be resumed."""

    @abc.abstractmethod
    def submit(self, events: list[HostEvent]) -> tuple[list[HostEvent], list[HostEvent]]:
        """Persist, then queue, the events not seen before; (new, duplicates). Once this
        returns, the new events will be acted on, once."""

    @abc.abstractmethod
    def on_notifications(self, events: list[dict[str, Any]]) -> None:
        """The Controller's notifications of VM changes (Ceilometer's format)."""

    @abc.abstractmethod
    def host(self, name: str) -> dict[str, Any] | None:
        """What is known of one host (state, its VMs' count, last event), or None."""

    @abc.abstractmethod
    def hosts(self) -> list[dict[str, Any]]:
        """``host`` for every known host, sorted by name."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """Whether the Controller answers, and how many accepted events wait on it."""
