"""What VIM monitoring promises (Tacker's VIM monitor, on one server or several).

Every registered VIM that this server owns has exactly one monitor, known by its monitor
id; a report from a monitor whose id is no longer the VIM's is refused, so a replaced
monitor never changes a status. A VIM starts PENDING, becomes REACHABLE or UNREACHABLE as
its auth_url's host answers or not (and, with the HTTP check, its auth_url), and each change
of status is published as a ``vim.status.update`` event, which fires the VIM's alarms.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from doctor.lifecycle import Part

PENDING, REACHABLE, UNREACHABLE = "PENDING", "REACHABLE", "UNREACHABLE"


class VimMonitoring(Part):
    """Runs the VIMs' monitors and writes their verdicts to the VIM store; ``start`` opens
    the prober (RawSocketPermissionError without CAP_NET_RAW)."""

    @abc.abstractmethod
    def poke(self) -> None:
        """The registrations changed: reconcile the monitors with the store now."""

    @abc.abstractmethod
    def set_owns(self, owns: Callable[[str], bool]) -> None:
        """Monitor only the VIMs for which ``owns(vim_id)`` is true (the sharing ring)."""

    @abc.abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """Counters and sizes (GET /v1/monitoring)."""
