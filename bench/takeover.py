"""Monitors sharing targets: who probes what, and how fast a killed monitor's share moves.

``doctor bench takeover`` starts N ``doctor-monitor`` processes in one share group over
namespaced target addresses, watches every echo request on the test bridge (which
monitor sent it, by ICMP identifier; to which target), then kills one monitor with
SIGKILL and measures the time until every target it probed has been probed by another
one. Repeated ``--kills`` times; prints JSON and a table. The functional tests use the
same pieces (``ProbeCapture``, ``MonitorGroup``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from typing import Any

from bench.membership import cpu_seconds, redis_totals
from bench.report import summary_ms
from doctor.signals import terminate_all
from doctor.tables import table
from testkit.eventsink import EventSink
from testkit.hosts import TestHostNetwork

ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003
IDENT_RE = re.compile(r"ICMP identifier (\d+)")
MAX_CAPTURED = 5_000_000  # bounds the capture's memory whatever the rate


class ProbeCapture:
    """Every ICMP echo request seen on ``interface``: (time, identifier, destination)."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.seen: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        # ETH_P_ALL: a socket bound to one protocol sees incoming frames only, not the echo
        # requests the monitors send out through the bridge.
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind((interface, 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, name="probe-capture", daemon=True)

    def start(self) -> ProbeCapture:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _run(self) -> None:
        recv = self._sock.recvfrom
        while not self._stop.is_set() and len(self.seen) < MAX_CAPTURED:
            try:
                frame, address = recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[1] != ETH_P_IP or address[2] != socket.PACKET_OUTGOING:
                continue  # requests leave the root namespace through the bridge once each
            ip = frame[14:]
            if len(ip) < 28 or ip[9] != 1:  # ICMP
                continue
            header_len = (ip[0] & 0x0F) * 4
            icmp = ip[header_len:header_len + 8]
            if len(icmp) < 8 or icmp[0] != 8:  # echo request
                continue
            ident = struct.unpack("!H", icmp[4:6])[0]
            self.seen.append((time.monotonic(), ident, socket.inet_ntoa(ip[16:20])))

    def owners(self, since: float, until: float) -> dict[str, set[int]]:
        """Destination -> identifiers that probed it in [since, until)."""
        owners: dict[str, set[int]] = defaultdict(set)
        for at, ident, dst in list(self.seen):
            if since <= at < until:
                owners[dst].add(ident)
        return owners

    def first_probe_by_other(self, targets: set[str], dead: int, after: float) -> dict[str, float]:
        """For each target, when a monitor other than ``dead`` first probed it after ``after``."""
        first: dict[str, float] = {}
        for at, ident, dst in list(self.seen):
            if at >= after and ident != dead and dst in targets and dst not in first:
                first[dst] = at
        return first


class MonitorGroup:
    """``count`` doctor-monitor processes sharing one config file's targets."""

    def __init__(self, workdir: str, config_file: str, coordination_url: str, inspector_url: str,
                 count: int, group: str = "bench-monitors", extra: list[str] | None = None) -> None:
        self.workdir = workdir
        self.config_file = config_file
        self.argv = ["--config-file", config_file, "--share-group", group,
                     "--coordination-url", coordination_url, "--inspector-url", inspector_url,
                     "--log-level", "INFO", "--duration-s", "900", *(extra or [])]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.count = count

    def start_all(self) -> MonitorGroup:
        for i in range(self.count):
            self.start(f"mon{i}")
        return self

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = open(self.log_path(name), "ab")
        process = subprocess.Popen([sys.executable, "-m", "monitor.cli", "--name", name,
                                    *self.argv], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.processes[name] = process
        return process

    def log_path(self, name: str) -> str:
        return os.path.join(self.workdir, f"{name}.log")

    def ident(self, name: str, timeout_s: float = 10.0) -> int:
        """The ICMP identifier the monitor logged at start (its latest start)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with open(self.log_path(name)) as log:
                found = IDENT_RE.findall(log.read())
            if found:
                return int(found[-1])
            time.sleep(0.05)
        raise RuntimeError(f"{name} logged no ICMP identifier within {timeout_s:g} s")

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(10)

    def stop(self) -> None:
        terminate_all(self.processes.values())


def write_targets(path: str, targets: dict[str, str], interval_ms: int) -> None:
    """A monitor config file: the options, and the [targets] section monitors re-read."""
    lines = ["[monitor]", f"interval_ms = {interval_ms}", "", "[targets]"]
    lines += [f"{name} = {address}" for name, address in targets.items()]
    tmp = path + ".tmp"
    with open(tmp, "w") as out:
        out.write("\n".join(lines) + "\n")
    os.replace(tmp, path)  # the monitors never read half a file


def wait_steady(capture: ProbeCapture, addresses: set[str], members: int,
                timeout_s: float = 20.0, window_s: float = 1.0) -> dict[str, set[int]]:
    """Wait for a window where every address is probed by exactly one of ``members``."""
    deadline = time.monotonic() + timeout_s
    owners: dict[str, set[int]] = {}
    while time.monotonic() < deadline:
        time.sleep(window_s)
        now = time.monotonic()
        owners = capture.owners(now - window_s, now)
        idents = set().union(*owners.values()) if owners else set()
        if set(owners) == addresses and len(idents) == members \
                and all(len(o) == 1 for o in owners.values()):
            return owners
    raise RuntimeError(
        f"no steady share within {timeout_s:g} s: {len(owners)} of {len(addresses)} "
        f"addresses probed, {sum(len(o) > 1 for o in owners.values())} by more than one")


def membership_cost(group: MonitorGroup, redis_client: Any, window_s: float) -> dict[str, Any]:
    """Over ``window_s`` of steady state: CPU of each monitor's sharing thread, and on Redis
    the traffic and commands per monitor (its service-list registration included)."""
    pids = [p.pid for p in group.processes.values() if p.poll() is None]
    cpu0 = [cpu_seconds(pid, "target-sharing") for pid in pids]
    net0 = redis_totals(redis_client) if redis_client else (0, 0)
    start = time.monotonic()
    time.sleep(window_s)
    elapsed = time.monotonic() - start
    cpu = [(cpu_seconds(pid, "target-sharing") - c) / elapsed * 1000
           for pid, c in zip(pids, cpu0, strict=True)]
    cost: dict[str, Any] = {"window_s": round(elapsed, 2),
                            "sharing_thread_cpu_ms_per_s": round(sum(cpu) / len(cpu), 3)}
    if redis_client:
        net1 = redis_totals(redis_client)
        cost["redis_bytes_per_s_per_monitor"] = round((net1[0] - net0[0]) / elapsed / len(pids))
        cost["redis_commands_per_s_per_monitor"] = round(
            (net1[1] - net0[1]) / elapsed / len(pids), 1)
    return cost


def measure(kills: int, targets: int, monitors: int, coordination_url: str,
            interval_ms: int = 100, index: int = 247, redis_client: Any = None,
            cost_window_s: float = 10.0) -> dict[str, Any]:
    """Takeover after SIGKILL, ``kills`` times (the killed monitor is started again), and the
    membership's cost at steady state first."""
    takeovers: list[float] = []
    cost: dict[str, Any] = {}
    sink = EventSink().start()
    with TestHostNetwork(prefix="dbt", index=index) as net:
        addresses = net.add_address_block(targets)
        workdir = tempfile.mkdtemp(prefix="doctor-bench-takeover-")
        config = os.path.join(workdir, "monitor.conf")
        write_targets(config, {f"t{i}": a for i, a in enumerate(addresses)}, interval_ms)
        group = MonitorGroup(workdir, config, coordination_url, sink.url, monitors,
                             group=f"bench-{os.getpid()}")
        capture = ProbeCapture(net.bridge).start()
        try:
            group.start_all()
            wanted = set(addresses)
            wait_steady(capture, wanted, monitors)
            cost = membership_cost(group, redis_client, cost_window_s)
            for round_ in range(kills):
                owners = wait_steady(capture, wanted, monitors)
                victim = f"mon{round_ % monitors}"
                ident = group.ident(victim)
                orphaned = {dst for dst, o in owners.items() if ident in o}
                killed_at = time.monotonic()
                group.kill(victim)
                deadline = killed_at + 10.0
                first: dict[str, float] = {}
                while time.monotonic() < deadline:
                    first = capture.first_probe_by_other(orphaned, ident, killed_at)
                    if len(first) == len(orphaned):
                        break
                    time.sleep(0.05)
                if len(first) < len(orphaned):
                    raise RuntimeError(f"{len(orphaned) - len(first)} targets of {victim} "
                                       "not taken over within 10 s")
                takeovers.append(max(first.values()) - killed_at if first else 0.0)
                group.start(victim)
                capture.seen.clear()
        finally:
            capture.stop()
            group.stop()
            sink.stop()
        downs = sum(1 for _, body in sink.requests for e in body
                    if e["details"]["status"] == "down")
    return {"kills": kills, "targets": targets, "monitors": monitors,
            "coordination": coordination_url.split("://", 1)[0],
            "takeover_ms": summary_ms(takeovers), "false_downs": downs,
            "membership_cost": cost}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kills", type=int, default=20, help="monitors killed (default 20)")
    parser.add_argument("--targets", type=int, default=300, help="target addresses (300)")
    parser.add_argument("--monitors", type=int, default=3, help="monitor processes (3)")
    parser.add_argument("--coordination-url", default="",
                        help="tooz backend (default: a redis-server of its own on loopback)")
    parser.add_argument("--json", default="", help="also write the JSON here")


def run(args: argparse.Namespace) -> int:
    from testkit.redis_server import RedisServer

    if args.kills < 1 or args.monitors < 2 or args.targets < 1:
        raise SystemExit("doctor bench takeover: error: need --kills >= 1, --monitors >= 2, "
                         "--targets >= 1")
    redis = None
    url = args.coordination_url
    if not url:
        redis = RedisServer(tempfile.mkdtemp(prefix="doctor-bench-redis-")).start()
        url = redis.url
    try:
        result = measure(args.kills, args.targets, args.monitors, url,
                         redis_client=redis.client() if redis else None)
    finally:
        if redis is not None:
            redis.stop()
    t = result["takeover_ms"]
    print(table(["monitors", "targets", "kills", "takeover p50 ms", "max ms", "false downs"],
                [[result["monitors"], result["targets"], result["kills"], t["p50"], t["max"],
                  result["false_downs"]]]))
    c = result["membership_cost"]
    print(table(["sharing thread CPU ms/s per monitor", "Redis bytes/s per monitor",
                 "Redis commands/s per monitor"],
                [[c["sharing_thread_cpu_ms_per_s"], c.get("redis_bytes_per_s_per_monitor", "-"),
                  c.get("redis_commands_per_s_per_monitor", "-")]]))
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2, sort_keys=True)
    return 0
