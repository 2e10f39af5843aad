"""The probe loop: one thread, one raw socket, every target.

Per iteration the loop (1) drains every reply the kernel holds, (2) turns
probes past their deadline into misses, (3) sends the probes that are due,
then sleeps in ``epoll`` until the next send or deadline. Sends are kept in a
heap by due time; deadlines in a FIFO, since every probe has the same timeout.

Two guards keep the monitor from accusing hosts of its own faults:
- a late loop (a pause, CPU starvation) does not count the timeouts that
  expired while it was not running; they get one more timeout to answer;
- when all reference hosts miss, or most hosts miss at once, down verdicts
  are held and the monitor says it suspects itself.
"""

from __future__ import annotations

import heapq
import logging
import os
import select
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from doctor import clock
from monitor.config import MonitorConfig, Target
from monitor.detector import MISSING, HostDetector, HostState
from monitor.icmp import (
    PAYLOAD_LEN,
    EchoPacket,
    open_icmp_socket,
    parse_echo_reply,
    random_identifier,
)

LOG = logging.getLogger(__name__)

# Sends due within this many seconds are batched into the current wake-up, so
# the loop wakes at most ~1000 times a second whatever the number of targets.
SEND_SLACK_S = 0.001

TransitionCallback = Callable[["ProbeTarget", HostState, HostState, float], None]


class ProbeTarget:
    """A watched address with its prebuilt packet, detector and probes in flight."""

    __slots__ = ("hostname", "address", "sockaddr", "addr_bytes", "packet", "detector",
                 "index", "seq", "inflight", "token", "reference", "active", "probes_sent",
                 "replies", "last_rtt_s")

    def __init__(self, target: Target, packet: EchoPacket, detector: HostDetector,
                 index: int, reference: bool = False) -> None:
        self.hostname = target.hostname
        self.address = target.address
        self.sockaddr = (target.address, 0)
        self.addr_bytes = socket.inet_aton(target.address)
        self.packet = packet
        self.detector = detector
        self.index = index  # position in the scheduler's target list
        self.seq = 0
        self.inflight: dict[int, float] = {}  # seq -> monotonic send time
        self.token = 0  # bumps to invalidate this target's older heap entries
        self.reference = reference
        self.active = True
        self.probes_sent = 0
        self.replies = 0
        self.last_rtt_s: float | None = None

    @property
    def state(self) -> HostState:
        return self.detector.state


@dataclass
class ProbeStats:
    """Counters of the loop's work, for logs, tests and the benchmark."""

    sent: int = 0
    replies: int = 0
    misses: int = 0
    send_errors: int = 0
    ignored_replies: int = 0  # wrong identifier, source, sequence or payload
    stalls: int = 0
    timeouts_excused: int = 0
    held_verdicts: int = 0
    wakeups: int = 0
    errors_by_errno: dict[int, int] = field(default_factory=dict)


class ProbeScheduler:
    """Probe every target on one raw socket and run each host's detector."""

    def __init__(self, config: MonitorConfig, on_transition: TransitionCallback,
                 sock: socket.socket | None = None) -> None:
        self.config = config
        self.on_transition = on_transition
        self.sock = sock if sock is not None else open_icmp_socket()
        self.ident = random_identifier()
        self._nonce = os.urandom(PAYLOAD_LEN - 4)
        self.stats = ProbeStats()
        self._interval = config.interval_ms / 1000.0
        self._suspect_interval = config.suspect_interval_ms / 1000.0
        self._timeout = config.timeout_ms / 1000.0
        self._max_lag = config.max_loop_lag_ms / 1000.0
        self._targets: list[ProbeTarget] = []
        self._by_addr: dict[bytes, ProbeTarget] = {}
        self._by_name: dict[str, ProbeTarget] = {}
        self._references: list[ProbeTarget] = []
        self._heap: list[tuple[float, int, int]] = []  # (due, target index, token)
        self._deadlines: deque[tuple[float, ProbeTarget, int, bool]] = deque()
        self._missing = 0  # non-reference targets currently SUSPECT or DOWN
        self._doubting = False
        self._pending: list[Target] | None = None
        self._pending_lock = threading.Lock()
        self._next_serial = 0
        start = clock.monotonic()
        for address in config.reference_hosts:
            self._add(Target(f"reference:{address}", address), start, reference=True)
        self._apply_targets(config.targets, start)

    # -- targets --------------------------------------------------------------

    @property
    def targets(self) -> list[ProbeTarget]:
        return [t for t in self._targets if t.active and not t.reference]

    def target(self, hostname: str) -> ProbeTarget:
        return self._by_name[hostname]

    def update_targets(self, targets: Iterable[Target]) -> None:
        """Replace the watched hosts; applied by the loop thread at its next wake-up."""
        with self._pending_lock:
            self._pending = list(targets)

    def _add(self, target: Target, due: float, reference: bool = False) -> None:
        serial = self._next_serial
        self._next_serial += 1
        payload = self._nonce + serial.to_bytes(4, "big")
        index = len(self._targets)
        probe = ProbeTarget(target, EchoPacket(self.ident, payload),
                            HostDetector(self.config.misses_before_down,
                                         self.config.replies_before_up), index, reference)
        self._targets.append(probe)
        self._by_addr[probe.addr_bytes] = probe
        if reference:
            self._references.append(probe)
        else:
            self._by_name[probe.hostname] = probe
        heapq.heappush(self._heap, (due, index, probe.token))

    def _apply_targets(self, targets: Iterable[Target], now: float) -> None:
        wanted = {t.hostname: t for t in targets}
        for name, probe in list(self._by_name.items()):
            if name not in wanted or wanted[name].address != probe.address:
                self._remove(probe)
        new = [t for name, t in wanted.items() if name not in self._by_name]
        spread = self._interval / max(len(new), 1)
        for i, target in enumerate(new):
            # Spread first probes over one interval: no burst of thousands at start.
            self._add(target, now + i * spread)
        if new or len(wanted) != len(self._by_name):
            LOG.info("watching %d hosts (%d references)", len(self._by_name),
                     len(self._references))

    def _remove(self, probe: ProbeTarget) -> None:
        probe.active = False
        probe.inflight.clear()
        if probe.state in MISSING:
            self._missing -= 1
        del self._by_name[probe.hostname]
        if self._by_addr.get(probe.addr_bytes) is probe:
            del self._by_addr[probe.addr_bytes]

    # -- the loop -------------------------------------------------------------

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        """Probe until ``stop`` is set (or ``duration_s`` has passed)."""
        poller = select.epoll()
        poller.register(self.sock.fileno(), select.EPOLLIN)
        view = memoryview(bytearray(2048))
        end = None if duration_s is None else clock.monotonic() + duration_s
        planned = clock.monotonic()
        try:
            while not stop.is_set():
                now = clock.monotonic()
                if end is not None and now >= end:
                    break
                stalled = now - planned > self._max_lag
                if stalled:
                    self.stats.stalls += 1
                if self._pending is not None:
                    with self._pending_lock:
                        pending, self._pending = self._pending, None
                    self._apply_targets(pending, now)
                self._drain(view, now)
                self._expire(now, stalled)
                self._send_due(now)
                wake = self._next_wake(now)
                if end is not None:
                    wake = min(wake, end)
                planned = wake
                self.stats.wakeups += 1
                poller.poll(max(0.0, wake - clock.monotonic()))
        finally:
            poller.close()

    def _next_wake(self, now: float) -> float:
        wake = now + 0.5  # also the cadence at which `stop` is noticed
        if self._heap:
            wake = min(wake, self._heap[0][0])
        if self._deadlines:
            wake = min(wake, self._deadlines[0][0])
        return wake

    def _drain(self, view: memoryview, now: float) -> None:
        recv_into = self.sock.recv_into
        ident = self.ident
        by_addr = self._by_addr
        stats = self.stats
        while True:
            try:
                length = recv_into(view)
            except (BlockingIOError, InterruptedError):
                return
            reply = parse_echo_reply(view, length)
            if reply is None:
                stats.ignored_replies += 1
                continue
            source, reply_ident, seq, offset = reply
            probe = by_addr.get(source)
            if (probe is None or reply_ident != ident
                    or view[offset:offset + PAYLOAD_LEN] != probe.packet.payload):
                stats.ignored_replies += 1
                continue
            sent = probe.inflight.pop(seq, None)
            if sent is None:  # late (already a miss), duplicated, or a forged sequence
                stats.ignored_replies += 1
                continue
            stats.replies += 1
            probe.replies += 1
            probe.last_rtt_s = now - sent
            old = probe.detector.state
            new = probe.detector.on_reply()
            if new is not None:
                self._transition(probe, old, new, now)

    def _expire(self, now: float, stalled: bool) -> None:
        deadlines = self._deadlines
        excused = []
        while deadlines and deadlines[0][0] <= now:
            _deadline, probe, seq, extended = deadlines.popleft()
            if probe.inflight.get(seq) is None:
                continue  # answered, or the target was removed
            if stalled and not extended:
                # We were not running when it expired: give it one more timeout.
                excused.append((now + self._timeout, probe, seq, True))
                continue
            del probe.inflight[seq]
            self.stats.misses += 1
            old = probe.detector.state
            new = probe.detector.on_miss(probe.reference or self._may_go_down(probe))
            if new is not None:
                self._transition(probe, old, new, now)
        if excused:
            self.stats.timeouts_excused += len(excused)
            deadlines.extend(excused)
            LOG.warning("probe loop was late; %d timeouts get another %d ms before they count",
                        len(excused), self.config.timeout_ms)

    def _send_due(self, now: float) -> None:
        heap = self._heap
        targets = self._targets
        sendto = self.sock.sendto
        horizon = now + SEND_SLACK_S
        deadline = now + self._timeout
        while heap and heap[0][0] <= horizon:
            due, index, token = heapq.heappop(heap)
            probe = targets[index]
            if not probe.active or token != probe.token:
                continue
            seq = (probe.seq + 1) & 0xFFFF
            probe.seq = seq
            try:
                sendto(probe.packet.for_seq(seq), probe.sockaddr)
            except BlockingIOError:
                heapq.heappush(heap, (now + SEND_SLACK_S, index, token))  # buffer full
                break
            except OSError as exc:
                # No route, host unreachable: the probe is lost, let it time out.
                self.stats.send_errors += 1
                errors = self.stats.errors_by_errno
                errors[exc.errno] = errors.get(exc.errno, 0) + 1
            probe.inflight[seq] = now
            probe.probes_sent += 1
            self.stats.sent += 1
            self._deadlines.append((deadline, probe, seq, False))
            interval = (self._suspect_interval if probe.detector.state is HostState.SUSPECT
                        else self._interval)
            due += interval
            if due < now:  # fell behind by more than an interval: do not burst to catch up
                due = now + interval
            heapq.heappush(heap, (due, index, token))

    # -- verdicts -------------------------------------------------------------

    def _transition(self, probe: ProbeTarget, old: HostState, new: HostState,
                    now: float) -> None:
        if new is HostState.SUSPECT:
            # Re-probe now and then every suspect_interval_ms.
            probe.token += 1
            heapq.heappush(self._heap, (now, probe.index, probe.token))
        if not probe.reference:
            self._missing += (new in MISSING) - (old in MISSING)
        if probe.reference:
            LOG.info("reference host %s is %s", probe.address, new.value)
        elif new is not HostState.UNKNOWN:
            self.on_transition(probe, old, new, clock.now())
        if self._doubting and new is HostState.UP and self._self_suspect() is None:
            self._trust_again()

    def _self_suspect(self) -> str | None:
        """Why the monitor doubts its own view (None if it does not)."""
        refs = self._references
        if refs:
            if all(r.detector.state in MISSING for r in refs):
                return (f"all reference hosts ({', '.join(r.address for r in refs)}) "
                        f"stopped answering")
            return None
        total = len(self._by_name)
        if (total >= self.config.self_suspect_min_hosts
                and self._missing >= self.config.self_suspect_fraction * total):
            return (f"{self._missing} of {total} hosts stopped answering at once "
                    f"(configure reference_hosts to tell a monitor fault from a mass failure)")
        return None

    def _may_go_down(self, probe: ProbeTarget) -> bool:
        if probe.detector.misses + 1 < probe.detector.misses_before_down:
            return True  # not a verdict yet: no need to ask
        reason = self._self_suspect()
        if reason is None:
            return True
        self.stats.held_verdicts += 1
        if not self._doubting:
            self._doubting = True
            LOG.error("monitor suspects itself: %s; holding down verdicts until it can "
                      "trust its own link", reason)
        return False

    def _trust_again(self) -> None:
        """Held verdicts start over: misses seen while the monitor was cut off prove nothing."""
        self._doubting = False
        held = [p for p in self._by_name.values() if p.detector.verdict_due]
        for probe in held:
            probe.detector.misses = 0
        LOG.warning("monitor trusts its own link again; %d held hosts are probed afresh",
                    len(held))
