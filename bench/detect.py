"""``doctor bench detect``: how fast and how cheaply the Monitor detects a host failure.

Two measurements on real namespaced test hosts:
- detection: link down inside a host's namespace -> the Monitor's down verdict
  (the event's time), over many injected faults, with the configured defaults;
- probe cost: CPU of the probe loop (user and system) watching N addresses at
  R probes per second each, on one namespace that answers for a whole block.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import threading
import time
from typing import Any

from bench.report import emit, summary_ms
from doctor import clock
from doctor.config import build
from doctor.events import HOST_DOWN, HostEvent
from doctor.tables import table
from monitor.config import MonitorConfig
from monitor.ping import PingMonitor
from monitor.prober import ProbeScheduler
from testkit.eventsink import EventSink
from testkit.hosts import TestHostNetwork, thread_cpu_s

PREFIX = "dtb"


def measure_detection(faults: int, hosts: int, index: int = 250) -> dict[str, Any]:
    """Inject ``faults`` link-down faults round-robin over ``hosts`` hosts."""
    with TestHostNetwork(prefix=PREFIX, index=index) as net:
        names = [f"bench-{i}" for i in range(1, hosts + 1)]
        net.add_hosts(names)
        sink = EventSink().start()
        downs: dict[str, tuple[threading.Event, list[HostEvent]]] = {
            n: (threading.Event(), []) for n in names}

        def on_event(event: HostEvent) -> None:
            if event.type == HOST_DOWN:
                flag, seen = downs[event.hostname]
                seen.append(event)
                flag.set()

        config = build(MonitorConfig, "monitor", {
            "name": "bench", "inspector_url": sink.url,
            "targets": [f"{h.name}={h.address}" for h in net.hosts.values()]})
        monitor = PingMonitor(config, on_event=on_event)
        monitor.start()
        latencies, delivery, injection, undetected = [], [], [], 0
        try:
            for i in range(faults):
                name = names[i % hosts]
                _wait(lambda n=name: monitor.host_states()[n] == "up", 5.0)
                # A random phase: the host came up right after a probe, and a fault always
                # injected then would always wait a whole interval for the next probe.
                time.sleep(random.uniform(0.0, 2 * config.interval_ms / 1000.0))
                flag, seen = downs[name]
                flag.clear()
                before = clock.now()
                net.link_down(name)
                injection.append(clock.now() - before)
                if flag.wait(5.0):
                    event = seen[-1]
                    latencies.append(event.time - before)
                    received = _received_at(sink, event.monitor_event_id, 2.0)
                    if received is not None:
                        delivery.append(received - event.time)
                else:
                    undetected += 1
                net.link_up(name)
        finally:
            monitor.stop()
            sink.stop()
    return {
        "faults": faults, "hosts": hosts, "undetected": undetected,
        "config": {k: getattr(config, k) for k in (
            "interval_ms", "timeout_ms", "suspect_interval_ms", "misses_before_down")},
        "detection_ms": summary_ms(latencies),
        "event_delivery_ms": summary_ms(delivery),
        "fault_injection_ms": summary_ms(injection),
    }


def _wait(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)


def _received_at(sink: EventSink, event_id: str, timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sink.lock:
            for received, body in sink.requests:
                if any(e["details"]["monitor_event_id"] == event_id for e in body):
                    return received
        time.sleep(0.002)
    return None


def measure_probe_cost(targets: int, rate_hz: float, duration_s: float,
                       index: int = 251) -> dict[str, Any]:
    """CPU of the probe loop for ``targets`` addresses at ``rate_hz`` probes/s each.

    The test host answers on a kernel thread of its own, as remote hosts answer on their own
    CPUs; that thread's CPU is reported apart (``test_host_thread_cpu_percent``).
    """
    with TestHostNetwork(prefix=PREFIX, index=index) as net:
        addresses = net.add_address_block(targets, own_thread=True)
        config = build(MonitorConfig, "monitor", {
            "name": "bench", "interval_ms": max(1, round(1000.0 / rate_hz)),
            "targets": [f"t{i}={a}" for i, a in enumerate(addresses)]})
        scheduler = ProbeScheduler(config, lambda *args: None)
        stop = threading.Event()
        try:
            scheduler.run(stop, duration_s=1.5)  # warm-up: first probes spread, all hosts up
            before = scheduler.stats.sent, scheduler.stats.replies, scheduler.stats.misses
            cpu0, wall0 = os.times(), time.monotonic()
            echo0 = thread_cpu_s(net.block_threads)
            scheduler.run(stop, duration_s=duration_s)
            cpu1, wall = os.times(), time.monotonic() - wall0
            echo = thread_cpu_s(net.block_threads) - echo0
            floor = _syscall_floor(scheduler, rate_hz, duration_s)
        finally:
            scheduler.sock.close()
    stats = scheduler.stats
    sent = stats.sent - before[0]
    user, system = cpu1.user - cpu0.user, cpu1.system - cpu0.system
    return {
        "targets": targets, "rate_hz_per_target": rate_hz, "seconds": round(wall, 2),
        "probes_per_s": round(sent / wall), "replies": stats.replies - before[1],
        "misses": stats.misses - before[2], "sent": sent,
        "cpu_percent_of_one_core": round(100 * (user + system) / wall, 2),
        "user_percent": round(100 * user / wall, 2),
        "system_percent": round(100 * system / wall, 2),
        "cpu_us_per_probe": round(1e6 * (user + system) / max(sent, 1), 2),
        "up": sum(1 for t in scheduler.targets if t.state.value == "up"),
        "test_host_thread_cpu_percent": round(100 * echo / wall, 2),
        "syscall_floor_cpu_percent": floor,
    }


def _syscall_floor(scheduler: ProbeScheduler, rate_hz: float, duration_s: float) -> float:
    """CPU % of the bare minimum: the same echoes sent and received, no bookkeeping at all.

    The test host answers on its own thread, so this is the sender's kernel and syscall cost;
    the difference from the scheduler's figure is what the monitor's own logic costs.
    """
    sock, targets = scheduler.sock, scheduler.targets
    view = memoryview(bytearray(2048))
    per_tick = max(1, round(len(targets) * rate_hz * 0.002))  # one batch every 2 ms
    cpu0, start = os.times(), time.monotonic()
    end, tick, index = start + duration_s, start, 0
    while time.monotonic() < end:
        for _ in range(per_tick):
            probe = targets[index % len(targets)]
            index += 1
            sock.sendto(probe.packet.for_seq(index & 0xFFFF), probe.sockaddr)
        try:
            while True:
                sock.recv_into(view)
        except BlockingIOError:
            pass
        tick += 0.002
        pause = tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    cpu1, wall = os.times(), time.monotonic() - start
    return round(100 * (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / wall, 2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faults", type=int, default=100,
                        help="link-down faults to inject (default 100)")
    parser.add_argument("--hosts", type=int, default=4,
                        help="hosts the faults rotate over (default 4)")
    parser.add_argument("--cost", action="append", default=None, metavar="TARGETSxRATE",
                        help="probe-cost run: TARGETS addresses at RATE probes/s each "
                             "(repeatable; default 1000x20 and 10000x1)")
    parser.add_argument("--cost-seconds", type=float, default=10.0,
                        help="measured seconds per probe-cost run (default 10)")
    parser.add_argument("--json", default="", metavar="PATH", help="also write the JSON here")


def _parse_cost(text: str) -> tuple[int, float]:
    targets, sep, rate = text.lower().partition("x")
    try:
        value = int(targets), float(rate)
    except ValueError:
        value = (0, 0.0)
    if not sep or value[0] < 1 or value[0] > 16000 or value[1] <= 0 or value[1] > 1000:
        raise SystemExit(f"doctor bench detect: error: --cost {text!r}: expected "
                         f"TARGETSxRATE, 1..16000 targets at 0..1000 probes/s (e.g. 1000x20)")
    return value


def run(args: argparse.Namespace) -> int:
    logging.getLogger("monitor").setLevel(logging.ERROR)  # one line per fault is noise here
    if args.faults < 1 or args.hosts < 1:
        raise SystemExit("doctor bench detect: error: --faults and --hosts must be >= 1")
    costs = [_parse_cost(c) for c in (args.cost or ["1000x20", "10000x1"])]
    detection = measure_detection(args.faults, args.hosts)
    cost_runs = [measure_probe_cost(n, rate, args.cost_seconds) for n, rate in costs]
    result = {"benchmark": "detect", "when": clock.isoformat(clock.now()),
              "machine": f"{platform.machine()}, {platform.python_implementation()} "
                         f"{platform.python_version()}",
              "detection": detection, "probe_cost": cost_runs}
    d = detection["detection_ms"]
    tables = [
        table(["faults", "undetected", "p50 ms", "p90 ms", "p99 ms", "max ms",
               "event to inspector p50 ms"],
              [[detection["faults"], detection["undetected"], d.get("p50"), d.get("p90"),
                d.get("p99"), d.get("max"), detection["event_delivery_ms"].get("p50")]]),
        table(["targets", "probes/s each", "probes/s", "CPU % of a core", "user %", "system %",
               "µs per probe", "misses", "bare syscalls CPU %", "test host's thread %"],
              [[c["targets"], c["rate_hz_per_target"], c["probes_per_s"],
                c["cpu_percent_of_one_core"], c["user_percent"], c["system_percent"],
                c["cpu_us_per_probe"], c["misses"], c["syscall_floor_cpu_percent"],
                c["test_host_thread_cpu_percent"]]
               for c in cost_runs]),
    ]
    emit(result, tables, args.json)
    return 0 if detection["undetected"] == 0 else 1
