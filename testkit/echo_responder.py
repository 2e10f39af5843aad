"""A userspace ICMP echo responder that answers late: delay and jitter for test hosts.

This kernel has no netem qdisc, so a test host cannot delay packets in the kernel. Instead the
host's namespace stops answering echo requests itself (``net.ipv4.icmp_echo_ignore_all=1``) and
this process answers them, each after ``delay ± uniform jitter`` milliseconds. It runs inside the
namespace (``ip netns exec NS python -m testkit.echo_responder --delay-ms 30``), so it sees exactly
the echo requests addressed to that namespace, AnyIP blocks included.

One thread: a raw ICMP socket, a heap of replies ordered by due time, and ``select`` with a timeout
that ends at the next due reply. Bounded: it stops on SIGTERM/SIGINT (after sending, for at
most ``DRAIN_MAX_S``, the replies already scheduled, as a link delivers what is in flight),
after ``--duration-s`` (default one hour), when the optional ``--parent-pid`` is gone, and it
never holds more than ``MAX_PENDING`` replies (a flood beyond that is dropped, as a congested
link would).
"""

from __future__ import annotations

import argparse
import heapq
import random
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from monitor.icmp import checksum
from testkit.hosts import pid_alive

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
MAX_PENDING = 65_536
# Reads per wake-up, so a flood cannot starve the sending of due replies.
MAX_READS_PER_WAKEUP = 1_024
# How often the parent process is checked when nothing else wakes the loop.
PARENT_CHECK_S = 0.5
# Linux raw-socket option: a bitmask of ICMP types the socket does NOT receive.
SOL_RAW = 255
ICMP_FILTER = 1
DEFAULT_DURATION_S = 3600.0
# On SIGTERM, replies already scheduled are still sent, if due within this many seconds.
DRAIN_MAX_S = 1.5


def echo_reply_for(packet: bytes) -> tuple[bytes, str] | None:
    """The IP packet answering ``packet`` (an IPv4 echo request), and where to send it.

    Returns None for anything that is not a well-formed echo request: the raw socket also sees
    other ICMP traffic of the namespace (and, on loopback, its own replies). The reply is a full
    IPv4 header (sent with IP_HDRINCL) whose source is the request's destination, so an address
    of an AnyIP block answers from itself, not from the namespace's primary address.
    """
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header_len = (packet[0] & 0x0F) * 4
    if header_len < 20 or len(packet) < header_len + 8 or packet[9] != socket.IPPROTO_ICMP:
        return None
    icmp = packet[header_len:]
    if icmp[0] != ICMP_ECHO_REQUEST or icmp[1] != 0 or checksum(icmp) != 0:
        return None
    source, destination = packet[12:16], packet[16:20]
    if destination[0] >= 224:  # multicast or limited broadcast: the kernel ignores those too
        return None
    body = bytes((ICMP_ECHO_REPLY, 0, 0, 0)) + icmp[4:]  # same id, sequence and payload
    reply = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    # Total length, id and header checksum are left 0: with IP_HDRINCL the kernel fills them.
    ip_header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, packet[1], 0, 0, 0, 64, socket.IPPROTO_ICMP, 0,
        destination, source,
    )
    return ip_header + reply, socket.inet_ntoa(source)


@dataclass(order=True)
class PendingReply:
    """One reply waiting in the heap until ``due`` (monotonic seconds)."""

    due: float
    order: int
    packet: bytes = field(compare=False)
    destination: str = field(compare=False)


class _Stop(Exception):
    """Raised from the signal handler to leave ``select`` at once."""


def _on_signal(signum: int, frame: object) -> None:
    raise _Stop(signum)


class EchoResponder:
    """Answers echo requests on a raw socket after a per-packet delay (see the module doc)."""

    def __init__(
        self,
        delay_ms: float,
        jitter_ms: float = 0.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if delay_ms < 0 or jitter_ms < 0:
            raise ValueError("delay_ms and jitter_ms must not be negative")
        self.delay_s = delay_ms / 1000.0
        self.jitter_s = jitter_ms / 1000.0
        self.rng = rng or random.Random()
        self.clock = clock
        self.pending: list[PendingReply] = []
        self._order = 0
        self.answered = 0
        self.dropped = 0
        self.send_errors = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        # Only echo requests reach us: the kernel filters the rest (our own replies included).
        self.sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", ~(1 << ICMP_ECHO_REQUEST)
                                                            & 0xFFFFFFFF))
        self.sock.setblocking(False)

    def close(self) -> None:
        """Close the socket; pending replies are dropped, like packets on a link that goes away."""
        self.sock.close()

    def _delay_s(self) -> float:
        if self.jitter_s:
            return max(0.0, self.delay_s + self.rng.uniform(-self.jitter_s, self.jitter_s))
        return self.delay_s

    def receive(self) -> None:
        """Read what the socket holds (bounded) and schedule a reply for each echo request."""
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                packet = self.sock.recv(65_535)
            except (BlockingIOError, InterruptedError):
                return
            arrived = self.clock()
            answer = echo_reply_for(packet)
            if answer is None:
                continue
            if len(self.pending) >= MAX_PENDING:
                self.dropped += 1
                continue
            self._order += 1
            heapq.heappush(
                self.pending, PendingReply(arrived + self._delay_s(), self._order, *answer)
            )

    def send_due(self) -> None:
        """Send every reply whose time has come."""
        now = self.clock()
        while self.pending and self.pending[0].due <= now:
            reply = heapq.heappop(self.pending)
            try:
                self.sock.sendto(reply.packet, (reply.destination, 0))
                self.answered += 1
            except OSError:
                # Link down or no route back: the reply is lost, as it would be on the wire.
                self.send_errors += 1

    def drain(self, max_s: float = DRAIN_MAX_S) -> None:
        """Send the replies still pending, each at its time, then return (on SIGTERM).

        A host whose delay is changed or cleared still answers what it has already received,
        as a real link delivers what is in flight; replies due after ``max_s`` are dropped.
        """
        deadline = self.clock() + max_s
        while self.pending and self.pending[0].due <= deadline:
            self.send_due()
            if self.pending:
                time.sleep(max(0.0, min(self.pending[0].due, deadline) - self.clock()))

    def run(self, duration_s: float, parent_pid: int | None = None) -> None:
        """Serve until ``duration_s`` has passed or the parent is gone (signals raise _Stop)."""
        deadline = self.clock() + duration_s
        while True:
            self.send_due()
            now = self.clock()
            if now >= deadline or (parent_pid is not None and not pid_alive(parent_pid)):
                return
            timeout = min(deadline - now, PARENT_CHECK_S)
            if self.pending:
                timeout = min(timeout, max(0.0, self.pending[0].due - now))
            readable, _, _ = select.select([self.sock], [], [], timeout)
            if readable:
                self.receive()


def build_parser() -> argparse.ArgumentParser:
    """Command line of ``python -m testkit.echo_responder``."""
    parser = argparse.ArgumentParser(
        prog="python -m testkit.echo_responder",
        description="Answer ICMP echo requests in this network namespace after a delay. "
        "Run it inside a test host's namespace with net.ipv4.icmp_echo_ignore_all=1 there, "
        "so that only this process answers. Prints 'ready' once the socket is open.",
    )
    parser.add_argument("--delay-ms", type=float, required=True, help="base delay, milliseconds")
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0,
        help="uniform jitter, ± milliseconds around the delay (a delay never goes below 0)",
    )
    parser.add_argument(
        "--duration-s", type=float, default=DEFAULT_DURATION_S,
        help="stop by itself after this many seconds (default %(default)s)",
    )
    parser.add_argument(
        "--parent-pid", type=int, default=None,
        help="stop when this process is gone (so a crashed test leaves no responder behind)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, open the socket, announce readiness, serve until stopped."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("delay_ms", "jitter_ms", "duration_s"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    responder = None
    try:
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        responder = EchoResponder(args.delay_ms, args.jitter_ms)
        print("ready", flush=True)
        responder.run(args.duration_s, args.parent_pid)
    except _Stop:
        if responder is not None:
            try:
                responder.drain()
            except _Stop:  # a second signal: stop at once
                pass
    except PermissionError as error:
        print(f"echo_responder: a raw socket needs CAP_NET_RAW: {error}", file=sys.stderr)
        return 1
    finally:
        if responder is not None:
            responder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
