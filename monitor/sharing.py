"""Several monitors share the targets through a tooz group and a consistent hash ring.

Every monitor of a group gets the whole target list and probes only the targets the
ring gives it. Each one heartbeats its membership every quarter of the membership
timeout and reads the live members every ``tick_s``; when the set changes (a monitor
joined, left, or died and its membership expired) it rebuilds the ring and hands the
prober its new share. So a killed monitor's targets are probed by the others about one
membership timeout after its last heartbeat.

A target keeps its detector only while the same monitor owns it; a monitor taking a
target over starts it as UNKNOWN, so it neither reports an "up" it did not see
(UNKNOWN -> UP is not an event) nor a "down" without its own ``misses_before_down``
misses.

When the backend cannot be reached for longer than the membership timeout, a monitor
cannot know who else is alive: it probes every target (a host probed twice is better
than a host probed by nobody) and returns to its share when the backend answers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from doctor import coordination
from doctor.threads import name_os_thread
from monitor.config import Target

LOG = logging.getLogger(__name__)


def member_id(name: str) -> bytes:
    """This process's id in the group: the monitor's name and its pid."""
    return f"{name}.{os.getpid()}".encode()


class TargetSharing:
    """Keeps ``on_share`` fed with this monitor's part of the targets."""

    def __init__(self, url: str, group: str, name: str, targets: Iterable[Target],
                 on_share: Callable[[list[Target]], None], membership_timeout_s: float = 1.0,
                 tick_s: float = 0.2, partitions: int = 64) -> None:
        coordination.load_tooz()  # from the main thread first (see load_tooz)
        self.url = url
        self.group = group.encode()
        self.member = member_id(name)
        self.on_share = on_share
        self.membership_timeout_s = membership_timeout_s
        self.tick_s = tick_s
        self.partitions = partitions
        self._targets = list(targets)
        self._targets_lock = threading.Lock()
        self._coordinator: Any = None
        self._members: frozenset[bytes] = frozenset()
        self._share: list[Target] | None = None
        self._joined = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="target-sharing", daemon=True)
        self.changes = 0  # ring rebuilds, for tests and logs

    # -- public ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._coordinator is None:
            return
        try:
            if self._joined:
                self._coordinator.leave_group(self.group).get()
            self._coordinator.stop()
        except Exception as exc:  # leaving is best effort: the membership expires anyway
            LOG.warning("leaving group %s: %s", self.group.decode(), exc)

    def set_targets(self, targets: Iterable[Target]) -> None:
        """A new full target list (hosts added or removed); the share follows at once."""
        with self._targets_lock:
            self._targets = list(targets)
        self._assign(self._members, force=True)

    @property
    def members(self) -> frozenset[bytes]:
        return self._members

    # -- the loop -------------------------------------------------------------

    def _run(self) -> None:
        name_os_thread("target-sharing")
        beat_every = self.membership_timeout_s / 4
        last_beat = 0.0
        failing_since: float | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if not self._joined:
                    self._join()
                if now - last_beat >= beat_every:
                    self._coordinator.heartbeat()
                    last_beat = now
                members = frozenset(self._coordinator.get_members(self.group).get())
                if self.member not in members:  # expired (a stall) and removed by a peer
                    LOG.warning("this monitor's membership expired; joining again")
                    self._joined = False
                if failing_since is not None:
                    LOG.warning("coordination backend %s answers again; back to this "
                                "monitor's share", coordination.redact_url(self.url))
                    failing_since = None
                self._assign(members | {self.member})
            except Exception as exc:  # tooz raises per driver; all mean "backend trouble"
                if failing_since is None:
                    failing_since = now
                    LOG.error("coordination backend %s: %s: %s", coordination.redact_url(self.url),
                              type(exc).__name__, exc)
                if now - failing_since > self.membership_timeout_s and self._members:
                    LOG.error("coordination backend %s unreachable for %.1f s: probing every "
                              "target until it answers", coordination.redact_url(self.url),
                              now - failing_since)
                    self._members = frozenset()
                    self._give_all()
                self._joined = self._joined and not _lost_membership(exc)
            self._stop.wait(self.tick_s)

    def _join(self) -> None:
        tooz = coordination.load_tooz()
        if self._coordinator is None:
            self._coordinator = coordination.connect(self.url, self.member,
                                                     self.membership_timeout_s)
        try:
            self._coordinator.create_group(self.group).get()
        except tooz.GroupAlreadyExist:
            pass
        try:
            self._coordinator.join_group(self.group).get()
        except tooz.MemberAlreadyExist:
            pass
        self._joined = True
        LOG.info("joined monitor group %s on %s as %s", self.group.decode(),
                 coordination.redact_url(self.url), self.member.decode())

    def _assign(self, members: frozenset[bytes], force: bool = False) -> None:
        if not members:
            return
        if members == self._members and not force:
            return
        from tooz import hashring

        ring = hashring.HashRing(sorted(members), partitions=self.partitions)
        with self._targets_lock:
            share = [t for t in self._targets
                     if self.member in ring.get_nodes(t.hostname.encode())]
        if members != self._members:
            self.changes += 1
            LOG.info("monitor group %s: %d members; this one probes %d of %d targets",
                     self.group.decode(), len(members), len(share), len(self._targets))
        self._members = members
        self._hand(share)

    def _give_all(self) -> None:
        with self._targets_lock:
            self._hand(list(self._targets))

    def _hand(self, share: list[Target]) -> None:
        if share != self._share:
            self._share = share
            self.on_share(share)


def _lost_membership(exc: Exception) -> bool:
    tooz = coordination.load_tooz()
    return isinstance(exc, (tooz.MemberNotJoined, tooz.GroupNotCreated,
                            coordination.CoordinationError))
