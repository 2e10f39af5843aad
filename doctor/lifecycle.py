"""What every part that works in the background promises: it starts, and it stops in time."""

from __future__ import annotations

import abc
from typing import Any


class Part(abc.ABC):
    """Works in background threads between ``start`` and ``stop``."""

    @abc.abstractmethod
    def start(self) -> Any:
        """Begin the work, in the background, and return."""

    @abc.abstractmethod
    def stop(self) -> None:
        """End the work within a bounded time; what the role keeps (queued events, the
        event log) is delivered or kept, as its own base says."""
