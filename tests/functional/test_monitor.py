"""The Monitor on real namespaced hosts: real links, real loss, real raw ICMP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from doctor import clock
from doctor.config import build
from doctor.events import HOST_DOWN, HOST_UP, parse_host_events
from monitor.config import MonitorConfig
from monitor.detector import HostState
from monitor.ping import PingMonitor
from testkit.eventsink import EventSink, free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def config_for(net, url: str = "", **options) -> MonitorConfig:
    targets = ",".join(f"{h.name}={h.address}" for h in net.hosts.values()
                       if not h.name.startswith(("ref", "forger")))
    return build(MonitorConfig, "monitor", {"name": "test-monitor", "targets": targets,
                                            "inspector_url": url, **options})




def all_up(monitor: PingMonitor) -> bool:
    return all(state == "up" for state in monitor.host_states().values())


def start_monitor_process(argv: list[str], log_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "monitor.cli", *argv],
                            cwd=ROOT, stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def test_link_down_is_reported_once_with_the_contract_json_and_up_after_return(
        network, sink, tmp_path):
    hosts = network.add_hosts(["compute-1", "compute-2"])
    argv = ["--name", "mon-1", "--inspector-url", sink.url, "--duration-s", "30"]
    for host in hosts:
        argv += ["--target", f"{host.name}={host.address}"]
    process = start_monitor_process(argv, tmp_path / "monitor.log")
    try:
        time.sleep(1.0)  # hosts answer; nothing to report yet
        assert sink.events() == []
        cut_at = clock.now()
        network.link_down("compute-1")
        [down] = sink.wait_for(HOST_DOWN, "compute-1", timeout_s=3)
        assert set(down) == {"time", "type", "details"}
        assert set(down["details"]) == {"hostname", "status", "monitor", "monitor_event_id"}
        assert down["details"]["status"] == "down" and down["details"]["monitor"] == "mon-1"
        [event] = parse_host_events([down])
        assert cut_at < event.time < cut_at + 1.0
        time.sleep(1.0)  # still down: not reported again, and the healthy host never
        assert len(sink.events(HOST_DOWN)) == 1
        network.link_up("compute-1")
        [up] = sink.wait_for(HOST_UP, "compute-1", timeout_s=3)
        assert up["details"]["status"] == "up"
        assert up["details"]["monitor_event_id"] != down["details"]["monitor_event_id"]
        assert sink.events(hostname="compute-2") == []
        log = (tmp_path / "monitor.log").read_text()
        assert "doctor monitor detected at" in log
    finally:
        stop_process(process)


def test_five_percent_random_loss_on_ten_hosts_for_a_minute_gives_no_down(network, sink):
    network.add_hosts([f"compute-{i}" for i in range(1, 11)])
    for name in network.hosts:
        network.set_loss(name, 5)
    monitor = PingMonitor(config_for(network, sink.url))
    transitions = []
    report = monitor.scheduler.on_transition

    def record(probe, old, new, at):
        transitions.append((probe.hostname, new))
        report(probe, old, new, at)

    monitor.scheduler.on_transition = record
    monitor.start()
    time.sleep(60.0)
    monitor.stop()
    stats = monitor.scheduler.stats
    assert stats.sent > 10 * 60 * 15
    # The loss was real (about 5 % of probes missed, each a suspicion) ...
    assert 0.02 < stats.misses / stats.sent < 0.09, stats
    assert sum(1 for _, new in transitions if new is HostState.SUSPECT) > 100
    # ... and not one host was called down.
    assert [t for t in transitions if t[1] is HostState.DOWN] == []
    assert sink.events() == []


FORGER = """
import sys, time
from scapy.all import ICMP, IP, Raw, send
monitor, dead, other, ident, seq, payload = sys.argv[1:7]
ident, seq, payload = int(ident), int(seq), bytes.fromhex(payload)
wrong_id = [IP(src=dead, dst=monitor)
            / ICMP(type=0, id=(ident + 1) & 0xFFFF, seq=(seq + i) & 0xFFFF)
            / Raw(payload) for i in range(200)]
wrong_seq = [IP(src=dead, dst=monitor) / ICMP(type=0, id=ident, seq=(seq + 20000 + i) & 0xFFFF)
             / Raw(payload) for i in range(200)]
wrong_src = [IP(src=other, dst=monitor) / ICMP(type=0, id=ident, seq=(seq + i) & 0xFFFF)
             / Raw(payload) for i in range(200)]
end = time.monotonic() + float(sys.argv[7])
while time.monotonic() < end:
    send(wrong_id + wrong_seq + wrong_src, verbose=False)
"""


def test_forged_replies_do_not_keep_a_dead_host_alive(network, sink):
    network.add_hosts(["compute-1", "compute-2"])
    forger = network.add_host("forger")
    monitor = PingMonitor(config_for(network, sink.url))
    monitor.start()
    try:
        wait_until(lambda: all_up(monitor), 3, "hosts up")
        dead = monitor.scheduler.target("compute-1")
        other = network.hosts["compute-2"].address
        network.link_down("compute-1")
        forging = network.netns_exec(
            "forger",
            [sys.executable, "-c", FORGER, network.monitor_address, dead.address, other,
             str(monitor.scheduler.ident), str(dead.seq), dead.packet.payload.hex(), "2.0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            sink.wait_for(HOST_DOWN, "compute-1", timeout_s=5)
        finally:
            out, err = forging.communicate(timeout=30)
        assert forging.returncode == 0, err.decode()
        # The forgeries did reach the monitor's socket, and it threw them away.
        assert monitor.scheduler.stats.ignored_replies >= 100
        assert forger.address  # the forger lived on the same wire
        assert sink.events(hostname="compute-2") == []
    finally:
        monitor.stop()


def test_events_survive_an_inspector_down_for_ten_seconds_and_arrive_once(network, tmp_path):
    network.add_hosts(["compute-1"])
    port = free_port()  # nothing listens here yet: connections are refused
    host = network.hosts["compute-1"]
    process = start_monitor_process(
        ["--inspector-url", f"http://127.0.0.1:{port}", "--target", f"compute-1={host.address}",
         "--duration-s", "40"], tmp_path / "monitor.log")
    sink = EventSink(port=port)
    try:
        time.sleep(1.0)
        network.link_down("compute-1")
        time.sleep(10.0)
        sink.start()
        [down] = sink.wait_for(HOST_DOWN, "compute-1", timeout_s=5)
        network.link_up("compute-1")
        sink.wait_for(HOST_UP, "compute-1", timeout_s=5)
        time.sleep(1.0)
        incident = down["details"]["monitor_event_id"]
        assert [e["details"]["monitor_event_id"] for e in sink.events(HOST_DOWN)] == [incident]
        assert len(sink.events(HOST_UP)) == 1
        log = (tmp_path / "monitor.log").read_text()
        assert "ConnectionRefusedError" in log  # it did try while the inspector was away
    finally:
        stop_process(process)
        sink.stop()


def test_monitor_that_loses_its_own_link_suspects_itself_not_the_hosts(network, sink):
    reference = network.add_host("ref-gw")
    network.add_hosts([f"compute-{i}" for i in range(1, 6)])
    monitor = PingMonitor(config_for(network, sink.url, reference_hosts=reference.address))
    monitor.start()
    try:
        wait_until(lambda: all_up(monitor), 3, "hosts up")
        subprocess.run(["ip", "link", "set", network.bridge, "down"], check=True, timeout=10)
        time.sleep(1.5)
        subprocess.run(["ip", "link", "set", network.bridge, "up"], check=True, timeout=10)
        wait_until(lambda: all_up(monitor), 5, "hosts up again")
        assert monitor.scheduler.stats.held_verdicts > 0  # it did doubt itself
        time.sleep(0.5)
        assert sink.events() == []
        # Its own link fine again, a real failure of one host is reported as usual.
        network.link_down("compute-3")
        sink.wait_for(HOST_DOWN, "compute-3", timeout_s=3)
        assert len(sink.events()) == 1
    finally:
        monitor.stop()


def test_mass_miss_without_reference_hosts_is_held_and_said(network, sink, caplog):
    network.add_hosts([f"compute-{i}" for i in range(1, 5)])
    monitor = PingMonitor(config_for(network, sink.url))
    monitor.start()
    try:
        wait_until(lambda: all_up(monitor), 3, "hosts up")
        for name in list(network.hosts):
            network.link_down(name)
        time.sleep(1.0)
        assert sink.events() == []
        assert "monitor suspects itself: 4 of 4 hosts stopped answering" in caplog.text
    finally:
        monitor.stop()


def test_without_cap_net_raw_the_monitor_says_so():
    if os.geteuid() != 0:
        pytest.skip("needs root, to drop the capability")
    result = subprocess.run(
        ["setpriv", "--bounding-set", "-net_raw", sys.executable, "-m", "monitor.cli",
         "--target", "a=127.0.0.1", "--duration-s", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "needs CAP_NET_RAW" in result.stderr
