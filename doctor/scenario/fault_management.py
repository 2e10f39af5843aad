"""Doctor's fault-management case on the embedded default, end to end.

The flow of OPNFV Doctor's functest: create the test hosts, start the parts,
create a test project, boot VMs on the host to fail, create one event alarm per
VM with aodhclient, cut the host's link inside its namespace, check that the
VMs' host_status is DOWN, and report the notification time (monitor
detection -> consumer notified; pass when under 1 s) with the per-step
profile T00-T09 on one clock, as a table and as JSON.
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
import uuid
from typing import Any

from doctor import profiler
from doctor.alarms import aodh_client, create_vm_alarms
from doctor.bench.report import table
from doctor.pipeline import Pipeline
from doctor.testhosts import TestHostNetwork

LOG = logging.getLogger(__name__)
PASS_UNDER_S = 1.0
FAILED_HOST = "compute-1"


class ScenarioError(RuntimeError):
    """A step failed; the message says which and why."""


def wait_for(what: str, predicate: Any, timeout_s: float, interval_s: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise ScenarioError(f"timed out after {timeout_s:g} s waiting for {what}")


def notifications(pipeline: Pipeline) -> list[dict[str, Any]]:
    response = pipeline.client().get(pipeline.url("consumer") + "/failures")
    if not response.ok:
        raise ScenarioError(f"the consumer answered HTTP {response.status}: {response.text}")
    return response.json()


def inspector_host(pipeline: Pipeline, name: str) -> dict[str, Any]:
    response = pipeline.client().get(f"{pipeline.url('inspector')}/hosts/{name}")
    return response.json() if response.ok else {}


def profile_rows(path: str) -> tuple[list[list[Any]], dict[str, Any]]:
    """Per checkpoint: first and last time after T00 (ms), and how often it was seen."""
    seen: dict[str, list[float]] = {}
    for line in profiler.read(path):
        seen.setdefault(line["checkpoint"], []).append(line["time"])
    base = min(seen["T00"])
    rows, data = [], {}
    for checkpoint, step in profiler.CHECKPOINTS.items():
        times = sorted(seen.get(checkpoint, []))
        if not times:
            rows.append([checkpoint, step, "-", "-", 0])
            continue
        first, last = (times[0] - base) * 1000, (times[-1] - base) * 1000
        rows.append([checkpoint, step, f"{first:.1f}", f"{last:.1f}", len(times)])
        data[checkpoint] = {"step": step, "first_ms": round(first, 2),
                            "last_ms": round(last, 2), "count": len(times)}
    return rows, data


def run(args: argparse.Namespace) -> int:
    if args.vm_count < 1:
        raise SystemExit("doctor run: error: --vm-count (VM_COUNT) must be >= 1")
    workdir = args.workdir or tempfile.mkdtemp(prefix="doctor-run-")
    pipeline = Pipeline(workdir, shortcut=args.path == "shortcut")
    monitor = None
    result: dict[str, Any] = {"vm_count": args.vm_count, "path": args.path,
                              "failed_host": FAILED_HOST, "workdir": workdir}
    try:
        with TestHostNetwork(prefix="drun", index=args.index) as net:
            try:
                monitor = _run_steps(args, net, pipeline, result)
            finally:
                if monitor is not None:
                    monitor.terminate()
                    monitor.wait(10)
                pipeline.stop()
    except ScenarioError as exc:
        print(f"FAIL: {exc} (logs in {workdir})")
        return 1
    rows, result["profile"] = profile_rows(pipeline.profile_file)
    passed = (result["notification_time_s"] < PASS_UNDER_S and result["host_status_down"]
              and result["notified"] == args.vm_count)
    result["passed"] = passed
    print()
    print(table(["checkpoint", "step", "first ms", "last ms", "count"], rows))
    print()
    print(json.dumps(result, indent=2, sort_keys=True))
    print()
    print(f"notification time {result['notification_time_s'] * 1000:.1f} ms (monitor "
          f"detection -> last of {args.vm_count} consumer notifications, {args.path} path): "
          f"{'PASS' if passed else 'FAIL'} (under {PASS_UNDER_S:g} s, every VM notified, "
          f"host_status DOWN)")
    return 0 if passed else 1


def _run_steps(args: argparse.Namespace, net: TestHostNetwork, pipeline: Pipeline,
               result: dict[str, Any]) -> subprocess.Popen:
    from controller.client import ControllerClient

    step = _Steps(8)
    step("creating test hosts compute-1, compute-2 and a gateway as network namespaces")
    net.add_hosts(["compute-1", "compute-2", "gateway"])
    step(f"starting controller, notifier, inspector, consumer ({args.path} path; logs in "
         f"{pipeline.workdir})")
    pipeline.start()
    step("starting doctor-monitor on compute-1 and compute-2 (reference: the gateway)")
    with open(os.path.join(pipeline.workdir, "monitor.log"), "w") as log:
        monitor = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "--name", "doctor-run",
             "--inspector-url", pipeline.url("inspector"), "--inspector-token", pipeline.token,
             "--reference-hosts", net.hosts["gateway"].address,
             "--profile-file", pipeline.profile_file, "--duration-s", "600",
             *[f"--target={n}={net.hosts[n].address}" for n in ("compute-1", "compute-2")]],
            stdout=log, stderr=subprocess.STDOUT)
    project = uuid.uuid4().hex
    step(f"creating the test project {project} and booting {args.vm_count} VMs on "
         f"{FAILED_HOST}")
    controller = ControllerClient(pipeline.url("controller"), pipeline.token)
    vms = [controller.create_server(f"doctor_vm{i}", project, FAILED_HOST).id
           for i in range(args.vm_count)]
    step(f"creating {len(vms)} event alarms with aodhclient")
    aodh = aodh_client(pipeline.url("notifier"), project)
    create_vm_alarms(aodh, vms, pipeline.url("consumer") + "/failure")
    wait_for("the inspector to map the VMs to their host",
             lambda: inspector_host(pipeline, FAILED_HOST).get("servers") == len(vms), 10)
    time.sleep(0.5)  # the monitor has seen every host answer
    if monitor.poll() is not None:
        raise ScenarioError("doctor-monitor exited; see monitor.log")
    step(f"injecting the fault: link down inside {FAILED_HOST}'s namespace")
    profiler.Profiler(pipeline.profile_file).record("T00")
    net.link_down(FAILED_HOST)
    got = wait_for(f"{len(vms)} consumer notifications",
                   lambda: (lambda n: n if len(n) >= len(vms) else None)(notifications(pipeline)),
                   10)
    step("checking the VMs' host_status")
    statuses = {vm: controller.host_status(vm) for vm in vms}
    result["host_status_down"] = all(s == "DOWN" for s in statuses.values())
    if not result["host_status_down"]:
        LOG.error("host_status not DOWN: %s", {k: v for k, v in statuses.items()
                                                if v != "DOWN"})
    detected = [c["time"] for c in profiler.read(pipeline.profile_file)
                if c["checkpoint"] == "T01"]
    if not detected:
        raise ScenarioError("the monitor recorded no detection (T01)")
    received = sorted(n["received_at"] for n in got)
    result["notified"] = len({n["instance_id"] for n in got})
    result["notification_time_s"] = round(received[-1] - detected[0], 6)
    result["first_notification_s"] = round(received[0] - detected[0], 6)
    step(f"restoring {FAILED_HOST}'s link")
    net.link_up(FAILED_HOST)
    wait_for(f"{FAILED_HOST} up again at the inspector",
             lambda: inspector_host(pipeline, FAILED_HOST).get("state") == "up", 10)
    controller.close()
    return monitor


class _Steps:
    def __init__(self, total: int) -> None:
        self.total, self.count = total, 0

    def __call__(self, text: str) -> None:
        self.count += 1
        print(f"[{self.count}/{self.total}] {text}", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vm-count", type=int, default=int(os.environ.get("VM_COUNT", 1)),
                        help="VMs on the host that fails (default: $VM_COUNT or 1)")
    parser.add_argument("--path", choices=("shortcut", "conservative"), default="shortcut",
                        help="shortcut: the inspector notifies the VM errors itself; "
                             "conservative: only the controller's own notifications do")
    parser.add_argument("--index", type=int, default=100,
                        help="test network index: its subnet is 198.18.INDEX.0/24 (default 100)")
    parser.add_argument("--workdir", default="", help="where logs, state and the profile go "
                                                      "(default: a new temporary directory)")
