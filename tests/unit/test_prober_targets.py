"""The probe loop's target list changes while it runs (monitors sharing targets)."""

from __future__ import annotations

import dataclasses
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
