"""What a Monitor promises the pipeline."""

from __future__ import annotations

import abc

from doctor.lifecycle import Part


class Monitor(Part):
    """Watches hosts and tells the Inspector when one goes down or comes back; ``stop``
    still delivers what is already queued."""

    @abc.abstractmethod
    def host_states(self) -> dict[str, str]:
        """Each watched host's state: unknown, up, suspect or down."""
