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
import tempfile
import time
from typing import Any

from doctor import clock, profiler
from doctor.tables import table
from scenario.alarms import aodh_cache_ttl_s, create_vm_alarms, vnfm_aodh_client, wait_alarms_seen
from scenario.clouds import LocalCloud, OpenStackCloud, ScenarioError, wait_for
from scenario.pipeline import Pipeline
from testkit.hosts import TestHostNetwork

LOG = logging.getLogger(__name__)
PASS_UNDER_S = 1.0
# The test bed's nova-compute hosts; the embedded controller takes the same names.
FAILED_HOST, HEALTHY_HOST = "compute1", "compute2"


def notifications(pipeline: Pipeline) -> list[dict[str, Any]]:
    response = pipeline.client().get(pipeline.url("consumer") + "/failures")
    if not response.ok:
        raise ScenarioError(f"the consumer answered HTTP {response.status}: {response.text}")
    return response.json()


def inspector_host(pipeline: Pipeline, name: str) -> dict[str, Any]:
    response = pipeline.client().get(f"{pipeline.url('inspector')}/hosts/{name}")
    return response.json() if response.ok else {}


def profile_rows(path: str, until: float = float("inf")
                 ) -> tuple[list[list[Any]], dict[str, Any]]:
    """Per checkpoint: first and last time after T00 (ms), and how often it was seen.

    Only what was recorded by ``until`` (epoch s), the end of the measurement: deleting the
    servers afterwards makes Nova send updates that Aodh, whose listeners cache the alarms
    for a while, may still fire on.
    """
    seen: dict[str, list[float]] = {}
    for line in profiler.read(path):
        if line["time"] <= until:
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


BED_NEEDS = ("DOCTOR_NOVA_URL", "DOCTOR_AODH_URL", "DOCTOR_TRANSPORT_URL", "DOCTOR_USER_ID",
             "DOCTOR_PROJECT_ID", "DOCTOR_IMAGE_ID", "DOCTOR_FLAVOR_ID", "DOCTOR_NETWORK_ID")
CLOUD_NEEDS = ("DOCTOR_TRANSPORT_URL", "DOCTOR_IMAGE_ID", "DOCTOR_FLAVOR_ID",
               "DOCTOR_NETWORK_ID")


def openstack_env(cloud: str = "", prog: str = "doctor run",
                  vnfm_cloud: str = "") -> dict[str, str]:
    """What the OpenStack installer needs, from the test bed's variables or from a cloud.

    Without ``cloud``, with the bed's ``DOCTOR_*`` variables set (``eval "$(tools/testbed/
    openstack.sh env)"``) and no ``DOCTOR_OS_CLOUD`` among them: the bed without Keystone;
    each run in a project of its own. Otherwise the cloud ``cloud`` of clouds.yaml (default
    ``DOCTOR_OS_CLOUD``, the bed's operator with Keystone; or the ``OS_*`` variables when
    empty): Nova and Aodh from its catalog or its ``*_endpoint_override``. The VMs and their
    alarms are the VNFM's: those of the cloud ``vnfm_cloud`` (default ``DOCTOR_VNFM_CLOUD``)
    in its project, else of ``cloud``. RabbitMQ's URL and the image, flavor and network to
    boot from still come from ``DOCTOR_*`` variables, as no clouds.yaml holds them.
    """
    cloud = cloud or os.environ.get("DOCTOR_OS_CLOUD", "")
    vnfm_cloud = vnfm_cloud or os.environ.get("DOCTOR_VNFM_CLOUD", "")
    if not cloud and not vnfm_cloud and os.environ.get("DOCTOR_NOVA_URL"):
        missing = [name for name in BED_NEEDS if not os.environ.get(name)]
        if missing:
            raise SystemExit(f"{prog}: error: --installer openstack on the test bed needs "
                             f"{', '.join(missing)} (eval \"$(tools/testbed/openstack.sh env)\")")
        return {name: os.environ[name] for name in BED_NEEDS}
    from doctor.openstack import OpenStackConfigError, open_cloud

    missing = [name for name in CLOUD_NEEDS if not os.environ.get(name)]
    if missing:
        raise SystemExit(f"{prog}: error: --installer openstack needs {', '.join(missing)} "
                         "(RabbitMQ's transport URL, and the ids to boot the test VMs from)")
    try:
        found = open_cloud(cloud, timeout_s=10.0, resolve_project=True)
        endpoints = {kind: found.endpoint(kind) or found.session.get_endpoint(
            service_type=kind, interface="public") for kind in ("compute", "alarming")}
        vnfm = open_cloud(vnfm_cloud, timeout_s=10.0, resolve_project=True) \
            if vnfm_cloud else found
    except OpenStackConfigError as exc:
        raise SystemExit(f"{prog}: error: {exc}") from None
    except Exception as exc:  # the catalog lookup: Keystone unreachable or no such service
        raise SystemExit(f"{prog}: error: no Nova or Aodh endpoint for "
                         f"{cloud or 'the OS_* cloud'}: {exc}") from None
    if not vnfm.project_id:
        raise SystemExit(f"{prog}: error: the cloud {vnfm_cloud or cloud or '(OS_*)'} has no "
                         "project scope")
    env = {name: os.environ[name] for name in CLOUD_NEEDS}
    env.update({"DOCTOR_OS_CLOUD": cloud or os.environ.get("OS_CLOUD", ""),
                "DOCTOR_VNFM_CLOUD": vnfm_cloud,
                "DOCTOR_HOST_ZONE": os.environ.get("DOCTOR_HOST_ZONE", ""),
                "DOCTOR_NOVA_URL": endpoints["compute"] or "",
                "DOCTOR_AODH_URL": endpoints["alarming"] or "",
                "DOCTOR_PROJECT_ID": vnfm.project_id, "DOCTOR_USER_ID": ""})
    return env


def run(args: argparse.Namespace) -> int:
    if args.vm_count < 1:
        raise SystemExit("doctor run: error: --vm-count (VM_COUNT) must be >= 1")
    if args.failed_host == args.healthy_host:
        raise SystemExit("doctor run: error: --failed-host and --healthy-host must differ")
    if args.notifier == "aodh" and args.installer != "openstack":
        raise SystemExit("doctor run: error: --notifier aodh needs --installer openstack")
    notifier = args.notifier or ("aodh" if args.installer == "openstack" else "embedded")
    env = openstack_env(args.os_cloud, vnfm_cloud=args.vnfm_cloud) \
        if args.installer == "openstack" else None
    workdir = args.workdir or tempfile.mkdtemp(prefix="doctor-run-")
    pipeline = Pipeline(workdir, shortcut=args.path == "shortcut", openstack=env,
                        notifier=notifier)
    result: dict[str, Any] = {"vm_count": args.vm_count, "path": args.path,
                              "installer": args.installer, "failed_host": args.failed_host,
                              "notifier": notifier,
                              "workdir": workdir}
    try:
        with TestHostNetwork(prefix="drun", index=args.index) as net:
            try:
                measured_until = _run_steps(args, net, pipeline, result)
            finally:
                pipeline.stop()
    except (ScenarioError, RuntimeError) as exc:  # RuntimeError: a part did not start
        print(f"FAIL: {exc} (logs in {workdir})")
        return 1
    rows, result["profile"] = profile_rows(pipeline.profile_file, measured_until)
    passed = (result["notification_time_s"] < PASS_UNDER_S and result["host_status_down"]
              and result["notified"] == args.vm_count)
    result["passed"] = passed
    print()
    print(table(["checkpoint", "step", "first ms", "last ms", "count"], rows))
    print()
    print(json.dumps(result, indent=2, sort_keys=True))
    print()
    print(f"notification time {result['notification_time_s'] * 1000:.1f} ms (monitor "
          f"detection -> last of {args.vm_count} consumer notifications, {args.path} path, "
          f"{args.installer}): {'PASS' if passed else 'FAIL'} (under {PASS_UNDER_S:g} s, "
          f"every VM notified, host_status DOWN)")
    return 0 if passed else 1


def _run_steps(args: argparse.Namespace, net: TestHostNetwork, pipeline: Pipeline,
               result: dict[str, Any]) -> float:
    """The eight steps; returns when the measurement ended (epoch s), before the clean-up."""
    step = _Steps(8)
    failed = args.failed_host
    hosts = [failed, args.healthy_host]
    step(f"creating test hosts {', '.join(hosts)} and a gateway as network namespaces")
    net.add_hosts([*hosts, "gateway"])
    parts = ("inspector, consumer (Nova, Aodh)" if pipeline.aodh else
             "notifier, inspector, consumer (Nova)") if pipeline.openstack else \
        "controller, notifier, inspector, consumer"
    step(f"starting {parts} ({args.path} path; logs in {pipeline.workdir})")
    pipeline.start()
    step(f"starting doctor-monitor on {', '.join(hosts)} (reference: the gateway)")
    monitor = pipeline.start_monitor(
        ["--name", "doctor-run", "--reference-hosts", net.hosts["gateway"].address,
         "--duration-s", "600", *[f"--target={n}={net.hosts[n].address}" for n in hosts]])
    # A project of its own per run, except on a real cloud (its credentials' project).
    own_project = not (pipeline.openstack or {}).get("DOCTOR_OS_CLOUD")
    project = pipeline.vnfm_project if own_project else \
        (pipeline.openstack or {})["DOCTOR_PROJECT_ID"]
    cloud = OpenStackCloud(pipeline.openstack, project) if pipeline.openstack \
        else LocalCloud(pipeline)
    try:
        step(f"{'creating the test project' if own_project else 'in the project'} {project}: "
             f"booting {args.vm_count} VMs on {failed}")
        vms = cloud.boot(args.vm_count, failed, project)
        step(f"creating {len(vms)} event alarms with aodhclient")
        aodh = vnfm_aodh_client(pipeline, project)
        alarms = create_vm_alarms(aodh, vms, pipeline.action_url())
        created_at = time.monotonic()
        try:
            # From the controller's notifications, at once; should one be missed, the
            # inspector's periodic resync (every 60 s by default) brings the VM in.
            wait_for("the inspector to map the VMs to their host",
                     lambda: inspector_host(pipeline, failed).get("servers") == len(vms), 75)
            wait_alarms_seen(created_at, aodh_cache_ttl_s(pipeline.aodh))
            return _fail_and_measure(net, pipeline, cloud, vms, monitor, step, result, failed)
        finally:
            for alarm in alarms:
                aodh.alarm.delete(alarm)
    finally:
        cloud.cleanup()


def _fail_and_measure(net: TestHostNetwork, pipeline: Pipeline, cloud: Any, vms: list[str],
                      monitor: Any, step: Any, result: dict[str, Any], failed: str) -> float:
    time.sleep(0.5)  # the monitor has seen every host answer
    if not monitor.alive():
        raise ScenarioError("doctor-monitor exited; see monitor.log")
    step(f"injecting the fault: link down inside {failed}'s namespace")
    profiler.Profiler(pipeline.profile_file).record("T00")
    net.link_down(failed)
    got = wait_for(f"{len(vms)} consumer notifications",
                   lambda: (lambda n: n if len(n) >= len(vms) else None)(notifications(pipeline)),
                   10)
    step("checking the VMs' host_status")
    # On the shortcut path the consumers may hear before the controller has the host
    # down: the state must follow, within a bound.
    statuses: dict[str, str] = {}

    def all_down() -> bool:
        statuses.update({vm: cloud.host_status(vm) for vm in vms
                         if statuses.get(vm) != "DOWN"})
        return all(s == "DOWN" for s in statuses.values())

    try:
        wait_for("host_status DOWN", all_down, 10, interval_s=0.1)
        result["host_status_down"] = True
    except ScenarioError:
        result["host_status_down"] = False
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
    step(f"restoring {failed}'s link")
    net.link_up(failed)
    wait_for(f"{failed} up again at the inspector",
             lambda: inspector_host(pipeline, failed).get("state") == "up", 10)
    return clock.now()


class _Steps:
    def __init__(self, total: int) -> None:
        self.total, self.count = total, 0

    def __call__(self, text: str) -> None:
        self.count += 1
        print(f"[{self.count}/{self.total}] {text}", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vm-count", type=int, default=int(os.environ.get("VM_COUNT", 1)),
                        help="VMs on the host that fails (default: $VM_COUNT or 1)")
    parser.add_argument("--installer", choices=("local", "openstack"), default="local",
                        help="local: the embedded controller and notifier; openstack: Nova "
                             "and Aodh of the test bed (its DOCTOR_* variables, from "
                             "`tools/testbed/openstack.sh env`)")
    parser.add_argument("--os-cloud", default="", metavar="NAME",
                        help="--installer openstack on a cloud of clouds.yaml (or of the OS_* "
                             "variables when the bed's DOCTOR_NOVA_URL is not set); also needs "
                             "DOCTOR_TRANSPORT_URL, DOCTOR_IMAGE_ID, DOCTOR_FLAVOR_ID and "
                             "DOCTOR_NETWORK_ID; default $DOCTOR_OS_CLOUD (the test bed "
                             "with Keystone sets it: its operator, an admin)")
    parser.add_argument("--vnfm-cloud", default="", metavar="NAME",
                        help="the VNFM's cloud of clouds.yaml, whose user boots the VMs and "
                             "owns their alarms in its project (default $DOCTOR_VNFM_CLOUD, "
                             "else the --os-cloud user); its VMs go on a host through the zone "
                             "$DOCTOR_HOST_ZONE names ({host} replaced; default nova:{host}, "
                             "which needs an admin)")
    parser.add_argument("--failed-host", default=FAILED_HOST, metavar="HOST",
                        help=f"the compute host whose link is cut (a namespace of that name "
                             f"stands in for it; default {FAILED_HOST})")
    parser.add_argument("--healthy-host", default=HEALTHY_HOST, metavar="HOST",
                        help=f"a compute host that stays up (default {HEALTHY_HOST})")
    parser.add_argument("--notifier", choices=("aodh", "embedded"), default=None,
                        help="--installer openstack: aodh (real Aodh, its default) or embedded "
                             "(the embedded notifier beside Nova, serving Aodh's alarm API, for "
                             "a cloud without Telemetry; on the conservative path it listens "
                             "to Nova's notifications on DOCTOR_TRANSPORT_URL itself)")
    parser.add_argument("--path", choices=("shortcut", "conservative"), default="shortcut",
                        help="shortcut: the inspector notifies the VM errors itself; "
                             "conservative: only the controller's own notifications do")
    parser.add_argument("--index", type=int, default=100,
                        help="test network index: its subnet is 198.18.INDEX.0/24 (default 100)")
    parser.add_argument("--workdir", default="", help="where logs, state and the profile go "
                                                      "(default: a new temporary directory)")
