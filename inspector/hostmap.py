"""The host -> VM map, held in memory so a fault costs no controller round trip.

Built from the controller at start, kept fresh from the controller's
notifications (VM created, moved, deleted) and by a periodic full resync.
"""

from __future__ import annotations

import threading
from typing import Any

from controller.base import Server
from doctor.events import traits

DELETED = "compute.instance.delete.end"


class HostMap:
    """Which servers run on which host; safe to use from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_host: dict[str, dict[str, Server]] = {}
        self._host_of: dict[str, str] = {}
        # Notifications applied while a listing is in flight: the listing may predate
        # them, so they are applied again on top of it.
        self._during_load: list[dict[str, Any]] | None = None

    def begin_load(self) -> None:
        """Call before asking the controller for the listing that ``load`` will get."""
        with self._lock:
            self._during_load = []

    def load(self, servers: list[Server]) -> int:
        """Replace the whole map (a resync), keeping changes notified since ``begin_load``.

        Returns how many servers the listing has that the map did not have on that host:
        changes whose notifications had not arrived (yet), or were lost.
        """
        by_host: dict[str, dict[str, Server]] = {}
        for server in servers:
            by_host.setdefault(server.host, {})[server.id] = server
        with self._lock:
            unknown = sum(1 for s in servers if self._host_of.get(s.id) != s.host)
            self._by_host = by_host
            self._host_of = {s.id: s.host for s in servers}
            replay, self._during_load = self._during_load or [], None
            for event in replay:
                self._apply(event)
        return unknown

    def servers_on(self, host: str) -> list[Server]:
        with self._lock:
            return list(self._by_host.get(host, {}).values())

    def count(self, host: str) -> int:
        with self._lock:
            return len(self._by_host.get(host, {}))

    def hosts(self) -> list[str]:
        with self._lock:
            return [h for h, servers in self._by_host.items() if servers]

    def apply(self, event: dict[str, Any]) -> None:
        """Update from one controller notification (Ceilometer's event format)."""
        with self._lock:
            if self._during_load is not None:
                self._during_load.append(event)
            self._apply(event)

    def _apply(self, event: dict[str, Any]) -> None:  # with the lock held
        values = traits(event)
        server_id = values.get("instance_id")
        if not server_id:
            return
        old_host = self._host_of.pop(server_id, None)
        old = self._by_host.get(old_host, {}).pop(server_id, None) if old_host else None
        if event.get("event_type") == DELETED:
            return
        host = values.get("host") or old_host
        if not host:
            return
        server = Server(
            id=server_id, name=values.get("display_name", old.name if old else server_id),
            project_id=values.get("project_id") or (old.project_id if old else ""),
            host=host, state=values.get("state") or (old.state if old else ""))
        self._by_host.setdefault(host, {})[server_id] = server
        self._host_of[server_id] = host
