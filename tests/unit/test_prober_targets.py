"""The probe loop's target list changes while it runs (monitors sharing targets)."""

from __future__ import annotations

import dataclasses
import socket
import threading

from doctor.config import build
from monitor.config import MonitorConfig
from monitor.prober import ProbeScheduler


class SilentSocket:
    """Takes every probe, never answers (a fake of the raw socket only)."""

    def __init__(self):
        self.sent: list[tuple[str, int]] = []

    def sendto(self, packet, address):
        self.sent.append(address)
        return len(packet)

    def recv_into(self, view):
        raise BlockingIOError

    def close(self):
        pass


def targets(count):
    return [f"h{i}=198.18.200.{10 + i}" for i in range(count)]


def test_removing_targets_behind_the_cursor_keeps_the_loop_running():
    config = build(MonitorConfig, "monitor", {"name": "t", "interval_ms": "50",
                                              "targets": targets(10)})
    sock = SilentSocket()
    scheduler = ProbeScheduler(config, lambda *args: None, sock=sock)
    stop = threading.Event()
    scheduler.run(stop, duration_s=0.12)
    scheduler._cursor = 9  # the next probe is the ring's last
    kept = config.targets[:3]
    scheduler.update_targets(kept)
    sock.sent.clear()
    scheduler.run(stop, duration_s=0.2)  # raised IndexError before the fix
    assert {address for address, _ in sock.sent} == {t.address for t in kept}


def test_the_loop_wakes_once_a_tick_a_fifth_of_its_shortest_period():
    """The host monitor's defaults keep a 2 ms tick; the VIM server's 1 s interval (timeout
    500 ms, suspect interval 200 ms) is capped by half the 30 ms lag it tolerates: 15 ms."""
    from vim.config import VimConfig
    from vim.manager import probe_config

    host_monitor = build(MonitorConfig, "monitor", {"name": "t", "targets": targets(100)})
    vim_server = dataclasses.replace(probe_config(build(VimConfig, "vim", {"token": "t"})),
                                     targets=host_monitor.targets)
    for config, tick_s in [(host_monitor, 0.002), (vim_server, 0.015)]:
        scheduler = ProbeScheduler(config, lambda *args: None, sock=SilentSocket())
        scheduler.run(threading.Event(), duration_s=0.6)
        expected = 0.6 / tick_s
        assert 0.6 * expected <= scheduler.stats.wakeups <= 1.1 * expected, (
            tick_s, scheduler.stats.wakeups)


class EchoingSocket(SilentSocket):
    """Answers the probes to the addresses in ``answer`` (a fake of the raw socket only)."""

    def __init__(self, answer):
        super().__init__()
        self.answer = set(answer)
        self.replies: list[bytes] = []

    def sendto(self, packet, address):
        if address[0] in self.answer:
            ip = bytes([0x45]) + bytes(11) + socket.inet_aton(address[0]) + bytes(4)
            self.replies.append(ip + bytes([0, 0]) + bytes(packet[2:]))  # type 0: echo reply
        return super().sendto(packet, address)

    def recv_into(self, view):
        if not self.replies:
            raise BlockingIOError
        reply = self.replies.pop(0)
        view[:len(reply)] = reply
        return len(reply)


def test_timeouts_count_once_for_the_unanswered_only_and_a_stall_excuses_them_once():
    config = build(MonitorConfig, "monitor", {"name": "t", "interval_ms": "1000",
                                              "timeout_ms": "100", "targets": targets(6)})
    answered = [f"198.18.200.{10 + i}" for i in range(3)]
    sock = EchoingSocket(answered)
    scheduler = ProbeScheduler(config, lambda *args: None, sock=sock)
    probes = scheduler.targets
    now = 1000.0
    for probe in probes:
        assert scheduler._send(probe, now)
    scheduler._drain(memoryview(bytearray(2048)), now + 0.01)
    assert scheduler.stats.replies == 3

    # The loop was not running when the 3 unanswered probes timed out: one more timeout.
    scheduler._expire(now + 0.2, stalled=True)
    assert (scheduler.stats.misses, scheduler.stats.timeouts_excused) == (0, 3)
    scheduler._expire(now + 0.25, stalled=True)  # not due yet
    assert scheduler.stats.misses == 0
    scheduler._expire(now + 0.31, stalled=True)  # excused once only
    assert (scheduler.stats.misses, scheduler.stats.timeouts_excused) == (3, 3)
    assert all(not p.inflight for p in probes) and not scheduler._deadlines

    # A late reply, after its miss, is ignored; a new round whose replies all came expires
    # without a miss.
    sock.answer = {p.address for p in probes}
    for probe in probes:
        scheduler._send(probe, now + 1)
    scheduler._drain(memoryview(bytearray(2048)), now + 1.01)
    scheduler._expire(now + 1.2, stalled=False)
    assert (scheduler.stats.replies, scheduler.stats.misses) == (9, 3)
