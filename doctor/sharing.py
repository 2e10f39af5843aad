"""Work shared by several processes through a tooz group and a consistent hash ring.

Each process of a group (monitors sharing targets, VIM servers sharing VIMs) knows the whole
work list and keeps the items the ring over the *live* members gives it. Every member
heartbeats every quarter of the membership timeout and reads the live members every
``tick_s``; when the set changes (a member joined, left, or died and its membership expired)
it rebuilds the ring and hands the new ownership to its owner. So a killed member's items are
taken by the others about one membership timeout after its last heartbeat.

When the backend cannot be reached for longer than the membership timeout, a member cannot
know who else is alive: it takes *every* item (work done twice beats work done by nobody)
and returns to its share when the backend answers.

``ShareOf`` keeps one member's share of a list of items, each keyed by a string (the monitors
share their targets by host name: a target keeps its detector only while the same monitor owns
it, and a monitor taking a target over starts it as UNKNOWN, so it neither reports an "up" it
did not see nor a "down" without its own ``misses_before_down`` misses).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from doctor import coordination
from doctor.redact import redact_url
from doctor.threads import name_os_thread

LOG = logging.getLogger(__name__)

Item = TypeVar("Item")


def member_id(name: str) -> bytes:
    """This process's id in a group: its name and its pid."""
    return f"{name}.{os.getpid()}".encode()


class Ownership:
    """Which items this member owns: by the ring, or all of them (``ring`` None)."""

    def __init__(self, member: bytes, ring: Any = None) -> None:
        self.member = member
        self.ring = ring

    def __call__(self, key: str) -> bool:
        return self.ring is None or self.member in self.ring.get_nodes(key.encode())


class RingMembership:
    """Membership of one tooz group; ``on_change(Ownership)`` whenever the ring changes."""

    def __init__(self, url: str, group: str, name: str, on_change: Callable[[Ownership], None],
                 membership_timeout_s: float = 1.0, tick_s: float = 0.2, partitions: int = 64,
                 thread_name: str = "ring-member") -> None:
        coordination.load_tooz()  # from the main thread first (see load_tooz)
        self.url = url
        self.group = group.encode()
        self.member = member_id(name)
        self.on_change = on_change
        self.membership_timeout_s = membership_timeout_s
        self.tick_s = tick_s
        self.partitions = partitions
        self.thread_name = thread_name
        self._coordinator: Any = None
        self._members: frozenset[bytes] = frozenset()
        self._joined = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self.ownership = Ownership(self.member)  # all, until the group is read
        self.changes = 0  # ring rebuilds, for tests and logs

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

    @property
    def members(self) -> frozenset[bytes]:
        return self._members

    def _run(self) -> None:
        name_os_thread(self.thread_name)
        beat_every = self.membership_timeout_s / 4
        last_beat = 0.0
        failing_since: float | None = None
        url = redact_url(self.url)
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
                    LOG.warning("the membership of %s in %s expired; joining again",
                                self.member.decode(), self.group.decode())
                    self._joined = False
                if failing_since is not None:
                    LOG.warning("coordination backend %s answers again; back to this "
                                "member's share", url)
                    failing_since = None
                self._assign(members | {self.member})
            except Exception as exc:  # tooz raises per driver; all mean "backend trouble"
                if failing_since is None:
                    failing_since = now
                    LOG.error("coordination backend %s: %s: %s", url, type(exc).__name__, exc)
                if now - failing_since > self.membership_timeout_s and self._members:
                    LOG.error("coordination backend %s unreachable for %.1f s: taking every "
                              "item of %s until it answers", url, now - failing_since,
                              self.group.decode())
                    self._members = frozenset()
                    self.ownership = Ownership(self.member)
                    self.on_change(self.ownership)
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
        LOG.info("joined group %s on %s as %s", self.group.decode(),
                 redact_url(self.url), self.member.decode())

    def _assign(self, members: frozenset[bytes]) -> None:
        if members == self._members:
            return
        from tooz import hashring

        self._members = members
        self.changes += 1
        self.ownership = Ownership(self.member, hashring.HashRing(sorted(members),
                                                                  partitions=self.partitions))
        LOG.info("group %s: %d members", self.group.decode(), len(members))
        self.on_change(self.ownership)


class ShareOf(Generic[Item]):
    """This member's share of ``items`` (each named by ``key(item)``), fed to ``on_share``
    whenever it changes."""

    def __init__(self, url: str, group: str, name: str, items: Iterable[Item],
                 key: Callable[[Item], str], on_share: Callable[[list[Item]], None],
                 membership_timeout_s: float = 1.0, tick_s: float = 0.2, partitions: int = 64,
                 what: str = "items", thread_name: str = "ring-share") -> None:
        self.on_share = on_share
        self.key = key
        self.what = what
        self._items = list(items)
        self._lock = threading.Lock()
        self._share: list[Item] | None = None
        self.membership = RingMembership(url, group, name, self._on_change,
                                         membership_timeout_s, tick_s, partitions,
                                         thread_name=thread_name)

    def start(self) -> None:
        self.membership.start()

    def stop(self) -> None:
        self.membership.stop()

    def set_items(self, items: Iterable[Item]) -> None:
        """A new full list (items added or removed); the share follows at once."""
        with self._lock:
            self._items = list(items)
        self._on_change(self.membership.ownership)

    def _on_change(self, owns: Ownership) -> None:
        with self._lock:
            share = [item for item in self._items if owns(self.key(item))]
            total = len(self._items)
            if share == self._share:
                return
            self._share = share
        LOG.info("this member has %d of %d %s", len(share), total, self.what)
        self.on_share(share)


def _lost_membership(exc: Exception) -> bool:
    tooz = coordination.load_tooz()
    return isinstance(exc, (tooz.MemberNotJoined, tooz.GroupNotCreated,
                            coordination.CoordinationError))
