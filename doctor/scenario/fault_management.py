"""Doctor's fault-management case on the embedded default, end to end as far as it goes.

The flow of OPNFV Doctor's functest (scenario/fault_management.py there):
create the test hosts, start the parts, inject a real fault (the host's link
goes down inside its namespace), check that it is detected, and report the
notification time with a per-step profile on one clock.

Built so far: the Monitor stage (T00 link down -> T01 monitor detected ->
event received by the Inspector endpoint). The Inspector, Controller,
Notifier and Consumer stages join this flow as they land.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from doctor import clock, profiler
from doctor.bench.report import table
from doctor.events import HOST_DOWN, HOST_UP, parse_host_events
from doctor.eventsink import EventSink
from doctor.testhosts import TestHostNetwork

LOG = logging.getLogger(__name__)
PASS_UNDER_S = 1.0


def _wait_for(sink: EventSink, type_: str, hostname: str, timeout_s: float) -> dict | None:
    try:
        return sink.wait_for(type_, hostname, timeout_s=timeout_s)[-1]
    except AssertionError:
        return None


def run(args: argparse.Namespace) -> int:
    workdir = tempfile.mkdtemp(prefix="doctor-run-")
    profile_path = os.path.join(workdir, "profile.jsonl")
    prof = profiler.Profiler(profile_path)
    failed_host = "compute-1"
    names = [f"compute-{i}" for i in range(1, args.hosts + 1)]
    result: dict[str, Any] = {"failed_host": failed_host, "workdir": workdir}
    monitor = None
    sink = EventSink().start()
    with TestHostNetwork(prefix="drun", index=args.index) as net:
        try:
            print(f"[1/5] creating {len(names)} test hosts and a gateway as network namespaces")
            net.add_hosts(names + ["gateway"])
            targets = [f"--target={n}={net.hosts[n].address}" for n in names]
            print(f"[2/5] starting doctor-monitor (inspector endpoint {sink.url})")
            monitor_log = os.path.join(workdir, "monitor.log")
            with open(monitor_log, "w") as log_file:
                monitor = subprocess.Popen(
                    [sys.executable, "-m", "monitor.cli", "--name", "doctor-run",
                     "--inspector-url", sink.url, "--reference-hosts",
                     net.hosts["gateway"].address, "--profile-file", profile_path,
                     "--duration-s", "120", *targets],
                    stdout=log_file, stderr=subprocess.STDOUT)
            time.sleep(1.0)  # a few rounds of probes: every host answers
            if monitor.poll() is not None:
                raise RuntimeError(f"doctor-monitor exited: see {monitor_log}")
            print(f"[3/5] injecting the fault: link down inside {failed_host}'s namespace")
            prof.record("T00")
            link_down_at = clock.now()
            net.link_down(failed_host)
            down = _wait_for(sink, HOST_DOWN, failed_host, 5.0)
            if down is None:
                raise RuntimeError(f"no {HOST_DOWN} for {failed_host} within 5 s")
            received_at = next(t for t, body in sink.requests for e in body if e is down)
            detected_at = parse_host_events([down])[0].time
            print(f"[4/5] {failed_host} reported down; restoring its link")
            net.link_up(failed_host)
            up = _wait_for(sink, HOST_UP, failed_host, 5.0)
            print(f"[5/5] {failed_host} reported up again" if up else
                  f"[5/5] {failed_host} was not reported up within 5 s")
            result.update({
                "detection_s": round(detected_at - link_down_at, 6),
                "event_received_s": round(received_at - link_down_at, 6),
                "recovered": up is not None,
                "false_downs": [e["details"]["hostname"] for e in sink.events(HOST_DOWN)
                                if e["details"]["hostname"] != failed_host],
            })
        finally:
            if monitor is not None:
                monitor.terminate()
                monitor.wait(10)
            sink.stop()
    checkpoints = profiler.read(profile_path)
    base = min(c["time"] for c in checkpoints if c["checkpoint"] == "T00")
    rows = [[c["checkpoint"], profiler.CHECKPOINTS[c["checkpoint"]],
             f"{(c['time'] - base) * 1000:.1f}"] for c in checkpoints]
    rows.append(["-", "event received by the inspector endpoint",
                 f"{result['event_received_s'] * 1000:.1f}"])
    result["profile_ms"] = {r[0] + " " + r[1] if r[0] != "-" else r[1]: float(r[2])
                            for r in rows}
    passed = (result["event_received_s"] < PASS_UNDER_S and result["recovered"]
              and not result["false_downs"])
    result["passed"] = passed
    print()
    print(table(["checkpoint", "step", "ms since link down"], rows))
    print()
    print(json.dumps(result, indent=2, sort_keys=True))
    print()
    print(f"detection {result['detection_s'] * 1000:.1f} ms, event at the inspector "
          f"{result['event_received_s'] * 1000:.1f} ms after the link went down: "
          f"{'PASS' if passed else 'FAIL'} (under {PASS_UNDER_S:g} s, host back up, "
          f"no false down)")
    return 0 if passed else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hosts", type=int, default=2, help="test hosts to create (default 2)")
    parser.add_argument("--index", type=int, default=100,
                        help="test network index: its subnet is 198.18.INDEX.0/24 (default 100)")
