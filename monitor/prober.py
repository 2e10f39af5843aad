"""The probe loop: one thread, one raw socket, every target.

Each wake-up the loop (1) drains every reply the kernel holds, (2) turns probes
past their deadline into misses, (3) sends the probes that are due, then
sleeps until the next send or deadline. It does not wake per reply: replies
wait in the socket buffer and are drained before any deadline is judged, so a
reply that came in time always counts.

Healthy hosts sit on a ring, probed in turn at evenly spread times, one round
per ``interval_ms``: no per-probe heap work, however many hosts. Suspect hosts
leave the ring for a small heap that re-probes them every
``suspect_interval_ms``. Deadlines sit in a FIFO, since every probe has the
same timeout.

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
import socket
import threading
import time
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

# The loop sleeps at least a tick between wake-ups, and sends what falls due within it
# early: at most a few hundred wake-ups a second, whatever the number of hosts. Deadlines
# are judged up to a tick late. A tick is a fifth of the shortest period the loop keeps
# (interval, timeout, suspect interval), at most half the lag it tolerates and at most
# MAX_TICK_S: 2 ms with the monitor's defaults, 15 ms with the VIM server's 1 s interval,
# where each wake-up saved is CPU saved (the loop alone at 10,000 targets x 1/s: 13 % of a
# core with a 2 ms tick, 9 % with 20 ms).
MAX_TICK_S = 0.02
TICKS_PER_PERIOD = 5
HELD_LOG_EVERY_S = 10.0

TransitionCallback = Callable[["ProbeTarget", HostState, HostState, float], None]


class ProbeTarget:
    """A watched address with its prebuilt packet, detector and probes in flight."""

    __slots__ = ("hostname", "address", "sockaddr", "addr_bytes", "packet", "detector",
                 "serial", "seq", "inflight", "token", "reference", "active")

    def __init__(self, target: Target, packet: EchoPacket, detector: HostDetector,
                 serial: int, reference: bool = False) -> None:
        self.hostname = target.hostname
        self.address = target.address
        self.sockaddr = (target.address, 0)
        self.addr_bytes = socket.inet_aton(target.address)
        self.packet = packet
        self.detector = detector
        self.serial = serial  # unique per scheduler; also in the probe's payload
        self.seq = 0
        self.inflight: dict[int, _Sent] = {}  # seq -> the batch it was sent in
        self.token = 0  # bumps to invalidate this target's older fast-probe entries
        self.reference = reference
        self.active = True

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


class _Sent:
    """The probes sent at one moment, which time out together.

    A reply only decrements ``unanswered``; a batch whose probes were all answered expires
    without touching them. The probes stay in memory for a timeout, and at 10,000 targets a
    per-probe check at expiry was the probe loop's largest Python cost (cache misses on
    targets last seen a timeout earlier).
    """

    __slots__ = ("deadline", "probes", "seqs", "unanswered", "extended")

    def __init__(self, deadline: float, extended: bool = False) -> None:
        self.deadline = deadline
        self.probes: list[ProbeTarget] = []
        self.seqs: list[int] = []
        self.unanswered = 0
        self.extended = extended  # already given one more timeout after a stall

    def add(self, probe: ProbeTarget, seq: int) -> None:
        self.probes.append(probe)
        self.seqs.append(seq)
        self.unanswered += 1
        probe.inflight[seq] = self


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
        self._tick = min(MAX_TICK_S, self._max_lag / 2,
                         min(self._interval, self._timeout, self._suspect_interval)
                         / TICKS_PER_PERIOD)
        self._probes: dict[int, ProbeTarget] = {}  # by serial
        self._by_addr: dict[bytes, ProbeTarget] = {}
        self._by_name: dict[str, ProbeTarget] = {}
        self._references: list[ProbeTarget] = []
        self._ring: list[ProbeTarget] = []  # every probe, in the order of its turn
        self._cursor = 0
        self._round_start = clock.monotonic()
        self._fast: list[tuple[float, int, int]] = []  # suspects: (due, serial, token)
        self._deadlines: deque[_Sent] = deque()  # by deadline
        self._sending: _Sent | None = None  # the batch of the current moment
        # Non-reference targets per state, kept as they change: the mass-miss test is O(1).
        self._counts = {state: 0 for state in HostState}
        self._doubting = False
        self._held_logged_at = 0.0
        self._pending: list[Target] | None = None
        self._pending_lock = threading.Lock()
        self._next_serial = 0
        for address in config.reference_hosts:
            self._add(Target(f"reference:{address}", address), reference=True)
        self._apply_targets(config.targets)

    # -- targets --------------------------------------------------------------

    @property
    def targets(self) -> list[ProbeTarget]:
        return list(self._by_name.values())

    def target(self, hostname: str) -> ProbeTarget:
        return self._by_name[hostname]

    def update_targets(self, targets: Iterable[Target]) -> None:
        """Replace the watched hosts; applied by the loop thread at its next wake-up."""
        with self._pending_lock:
            self._pending = list(targets)

    def _add(self, target: Target, reference: bool = False) -> None:
        serial = self._next_serial
        self._next_serial += 1
        payload = self._nonce + serial.to_bytes(4, "big")
        probe = ProbeTarget(target, EchoPacket(self.ident, payload),
                            HostDetector(self.config.misses_before_down,
                                         self.config.replies_before_up), serial, reference)
        self._probes[serial] = probe
        self._by_addr[probe.addr_bytes] = probe
        self._ring.append(probe)
        if reference:
            self._references.append(probe)
        else:
            self._by_name[probe.hostname] = probe
            self._counts[HostState.UNKNOWN] += 1

    def _apply_targets(self, targets: Iterable[Target]) -> None:
        wanted = {t.hostname: t for t in targets}
        removed = [p for name, p in self._by_name.items()
                   if name not in wanted or wanted[name].address != p.address]
        for probe in removed:
            self._remove(probe)
        added = [t for name, t in wanted.items() if name not in self._by_name]
        for target in added:
            self._add(target)
        if removed:
            self._ring = [p for p in self._ring if p.active]
            if self._cursor >= len(self._ring):  # past the end: the next round starts over
                self._cursor = 0
        if added or removed:
            LOG.info("watching %d hosts (%d added, %d removed, %d references)",
                     len(self._by_name), len(added), len(removed), len(self._references))

    def _remove(self, probe: ProbeTarget) -> None:
        probe.active = False
        probe.inflight.clear()
        self._counts[probe.state] -= 1
        del self._by_name[probe.hostname]
        del self._probes[probe.serial]
        if self._by_addr.get(probe.addr_bytes) is probe:
            del self._by_addr[probe.addr_bytes]

    # -- the loop -------------------------------------------------------------

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        """Probe until ``stop`` is set (or ``duration_s`` has passed)."""
        view = memoryview(bytearray(2048))
        end = None if duration_s is None else clock.monotonic() + duration_s
        planned = clock.monotonic()
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
                self._apply_targets(pending)
            self._drain(view, now)
            self._expire(now, stalled)
            self._send_ring(now)
            self._send_fast(now)
            wake = self._next_wake(now)
            if end is not None:
                wake = min(wake, end)
            planned = wake
            self.stats.wakeups += 1
            pause = wake - clock.monotonic()
            if pause > 0:
                time.sleep(pause)

    def _next_wake(self, now: float) -> float:
        wake = now + 0.1  # also the cadence at which `stop` is noticed
        if self._ring:
            wake = min(wake, self._round_start + self._cursor * self._interval / len(self._ring))
        if self._fast:
            wake = min(wake, self._fast[0][0])
        if self._deadlines:
            wake = min(wake, self._deadlines[0].deadline)
        return max(wake, now + self._tick)

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
            if sent is None:
                stats.ignored_replies += 1  # late (already a miss), duplicated, or forged
                continue
            sent.unanswered -= 1
            stats.replies += 1
            old = probe.detector.state
            new = probe.detector.on_reply()
            if new is not None:
                self._transition(probe, old, new, now)

    def _expire(self, now: float, stalled: bool) -> None:
        deadlines = self._deadlines
        excused = _Sent(now + self._timeout, extended=True)
        while deadlines and deadlines[0].deadline <= now:
            sent = deadlines.popleft()
            if not sent.unanswered:
                continue  # every probe of it answered
            for probe, seq in zip(sent.probes, sent.seqs, strict=True):
                if probe.inflight.get(seq) is not sent:
                    continue  # answered, or the target was removed
                if stalled and not sent.extended:
                    # We were not running when it expired: give it one more timeout.
                    excused.add(probe, seq)
                    continue
                del probe.inflight[seq]
                self.stats.misses += 1
                old = probe.detector.state
                new = probe.detector.on_miss(probe.reference or self._may_go_down(probe))
                if new is not None:
                    self._transition(probe, old, new, now)
        if excused.unanswered:
            self.stats.timeouts_excused += excused.unanswered
            deadlines.append(excused)
            LOG.warning("probe loop was late; %d timeouts get another %d ms before they count",
                        excused.unanswered, self.config.timeout_ms)

    def _send(self, probe: ProbeTarget, now: float) -> bool:
        """One echo request; False when the socket buffer is full (try again later)."""
        seq = (probe.seq + 1) & 0xFFFF
        try:
            self.sock.sendto(probe.packet.for_seq(seq), probe.sockaddr)
        except BlockingIOError:
            return False
        except OSError as exc:
            # No route, host unreachable: the probe is lost, and will time out as a miss.
            self.stats.send_errors += 1
            errors = self.stats.errors_by_errno
            errno = exc.errno or 0
            errors[errno] = errors.get(errno, 0) + 1
        probe.seq = seq
        sending = self._sending
        if sending is None or sending.deadline != now + self._timeout:
            sending = self._sending = _Sent(now + self._timeout)
            self._deadlines.append(sending)
        sending.add(probe, seq)
        return True

    def _send_ring(self, now: float) -> None:
        ring = self._ring
        count = len(ring)
        if not count:
            return
        step = self._interval / count
        if self._round_start + self._cursor * step < now - self._interval:
            # More than a round behind (a stall): carry on from here, no burst to catch up.
            self._round_start = now - self._cursor * step
        horizon = now + self._tick
        cursor, start, sent = self._cursor, self._round_start, 0
        suspect = HostState.SUSPECT
        while start + cursor * step <= horizon and sent < count:
            probe = ring[cursor]
            if probe.detector.state is not suspect:  # suspects are on the fast heap
                if not self._send(probe, now):
                    break
                sent += 1
            cursor += 1
            if cursor == count:
                cursor, start = 0, start + self._interval
        self._cursor, self._round_start = cursor, start
        self.stats.sent += sent

    def _send_fast(self, now: float) -> None:
        fast = self._fast
        horizon = now + self._tick
        while fast and fast[0][0] <= horizon:
            due, serial, token = fast[0]
            probe = self._probes.get(serial)
            if probe is None or token != probe.token or probe.state is not HostState.SUSPECT:
                heapq.heappop(fast)  # removed, or no longer suspect: back on the ring
                continue
            if not self._send(probe, now):
                break
            self.stats.sent += 1
            heapq.heapreplace(fast, (max(due + self._suspect_interval, now), serial, token))

    # -- verdicts -------------------------------------------------------------

    def _transition(self, probe: ProbeTarget, old: HostState, new: HostState,
                    now: float) -> None:
        if new is HostState.SUSPECT:
            # Re-probe now and then every suspect_interval_ms.
            probe.token += 1
            heapq.heappush(self._fast, (now, probe.serial, probe.token))
        if not probe.reference:
            self._counts[old] -= 1
            self._counts[new] += 1
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
        # Without references, the hosts that still answer vouch for the monitor's link: it
        # doubts itself only when most hosts not already down went missing together.
        suspects = self._counts[HostState.SUSPECT]
        live = len(self._by_name) - self._counts[HostState.DOWN]
        if suspects >= max(self.config.self_suspect_min_hosts,
                           self.config.self_suspect_fraction * live):
            return (f"{suspects} of {live} hosts stopped answering at once "
                    f"(configure reference_hosts to tell a monitor fault from a mass failure)")
        return None

    def _may_go_down(self, probe: ProbeTarget) -> bool:
        if probe.detector.misses + 1 < probe.detector.misses_before_down:
            return True  # not a verdict yet: no need to ask
        reason = self._self_suspect()
        if reason is None:
            return True
        self.stats.held_verdicts += 1
        now = clock.monotonic()
        if not self._doubting or now - self._held_logged_at > HELD_LOG_EVERY_S:
            self._doubting = True
            self._held_logged_at = now
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
