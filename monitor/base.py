"""What a Monitor promises the pipeline."""

from __future__ import annotations

import abc


class Monitor(abc.ABC):
    """Watches hosts and tells the Inspector when one goes down or comes back."""

    @abc.abstractmethod
    def start(self) -> None:
        """Begin watching, in the background."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop watching; deliver what is already queued, within a bounded time."""

    @abc.abstractmethod
    def host_states(self) -> dict[str, str]:
        """Each watched host's state: unknown, up, suspect or down."""
