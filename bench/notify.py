"""``doctor bench notify``: host failure at the Inspector -> every consumer notified.

The parts run as their own processes (``scenario.pipeline``), real HTTP between
them. Each round sends the Inspector a ``compute.host.down`` event stamped
with the moment it is sent (standing for the monitor's detection: ``bench
detect`` measures the part before), and waits until the Consumer has received
the alarm of every VM on that host. Then the host comes back, the alarms are
re-armed and the VMs reset, and the next round starts.

Measured for 1, 10, 50, 100 and 1000 VMs on the failed host, on the shortcut
path (the Inspector notifies the VM errors itself) and the conservative path
(only the controller's notifications of the VM resets reach the Notifier);
and 100 hosts with 20 VMs each failing at once.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from typing import Any

from bench import report
from bench.report import emit, summary_ms
from doctor import clock
from doctor.events import HOST_DOWN, HOST_UP, HostEvent
from doctor.tables import table
from scenario.alarms import (
    aodh_cache_ttl_s,
    create_vm_alarms,
    rearm,
    vnfm_aodh_client,
    wait_alarms_seen,
)
from scenario.clouds import LocalCloud, OpenStackCloud
from scenario.fault_management import openstack_env
from scenario.pipeline import Pipeline

PROG = "doctor bench notify"
ROUND_TIMEOUT_S = 30.0


class Bed:
    """A running pipeline with VMs and alarms on named hosts."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        openstack = pipeline.openstack or {}
        cloud_project = openstack.get("DOCTOR_OS_CLOUD") and openstack["DOCTOR_PROJECT_ID"]
        self.project = cloud_project or pipeline.vnfm_project
        self.cloud: Any = OpenStackCloud(pipeline.openstack, self.project) \
            if pipeline.openstack else LocalCloud(pipeline)
        self.aodh = vnfm_aodh_client(pipeline, self.project)
        self.http = pipeline.client()
        self.cache_ttl_s = aodh_cache_ttl_s(pipeline.aodh)
        self.vms: dict[str, list[str]] = {}
        self.alarms: dict[str, list[str]] = {}

    def populate(self, host: str, count: int) -> None:
        vms = self.cloud.boot(count, host, self.project)
        self.vms[host] = vms
        self.alarms[host] = create_vm_alarms(self.aodh, vms, self.pipeline.action_url())
        created_at = time.monotonic()
        self._wait(lambda: self._inspector_host(host).get("servers", 0) >= count,
                   f"the inspector to map {count} VMs on {host}")
        wait_alarms_seen(created_at, self.cache_ttl_s)

    def _inspector_host(self, host: str) -> dict[str, Any]:
        response = self.http.get(f"{self.pipeline.url('inspector')}/hosts/{host}")
        return response.json() if response.ok else {}

    @staticmethod
    def _wait(predicate: Any, what: str, timeout_s: float = ROUND_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.01)

    def _notified(self) -> list[dict[str, Any]]:
        return self.http.get(self.pipeline.url("consumer") + "/failures").json()

    def fail(self, hosts: list[str]) -> tuple[float, float]:
        """Fail the hosts at once; (first, last) consumer notification after the event."""
        self.http.delete(self.pipeline.url("consumer") + "/failures")
        expected = sum(len(self.vms[h]) for h in hosts)
        events = [HostEvent.new(HOST_DOWN, h, "bench") for h in hosts]
        sent_at = events[0].time
        response = self.http.put(self.pipeline.url("inspector") + "/events",
                                 json=[e.to_doctor() for e in events])
        if response.status != 202:
            raise RuntimeError(f"the inspector answered HTTP {response.status}: "
                               f"{response.text}")
        got: list[dict[str, Any]] = []

        def all_notified() -> bool:
            got[:] = self._notified()
            return len(got) >= expected

        self._wait(all_notified, f"{expected} notifications")
        received = sorted(n["received_at"] for n in got)
        return received[0] - sent_at, received[-1] - sent_at

    def recover(self, hosts: list[str]) -> None:
        events = [HostEvent.new(HOST_UP, h, "bench") for h in hosts]
        response = self.http.put(self.pipeline.url("inspector") + "/events",
                                 json=[e.to_doctor() for e in events])
        if response.status != 202:
            raise RuntimeError(f"the inspector answered HTTP {response.status}: "
                               f"{response.text}")
        for host in hosts:
            for vm in self.vms[host]:
                self.cloud.reset(vm, "active")
            self._wait(lambda h=host: self._inspector_host(h).get("state") == "up",
                       f"{host} up at the inspector")
        # With Nova, its own notifications of the resets to error reach Aodh through
        # Ceilometer after the shortcut's: let them land before re-arming, or they would
        # fire the re-armed alarms again.
        time.sleep(1.0 if self.pipeline.aodh else 0.2)
        for host in hosts:
            rearm(self.aodh, self.alarms[host])
            self._wait(lambda h=host: all(self.aodh.alarm.get(a)["state"] == "ok"
                                          for a in self.alarms[h]),
                       f"the alarms of {host} re-armed")
        wait_alarms_seen(time.monotonic(), self.cache_ttl_s)


def measure(path: str, sizes: list[int], rounds: int, big_rounds: int,
            fleet: tuple[int, int] | None, openstack: dict[str, str] | None,
            notifier: str = "aodh") -> dict[str, Any]:
    pipeline = Pipeline(tempfile.mkdtemp(prefix=f"doctor-bench-{path}-"),
                        shortcut=path == "shortcut", openstack=openstack,
                        notifier=notifier).start()
    results: dict[str, Any] = {"path": path, "installer": "openstack" if openstack else "local",
                               "notifier": "aodh" if pipeline.aodh else "embedded",
                               "sizes": [], "workdir": pipeline.workdir}
    bed = None
    try:
        bed = Bed(pipeline)
        for size in sizes:
            # Nova's hosts are the bed's computes: the sizes take turns on compute1.
            host = "compute1" if openstack else f"bench-{size}"
            bed.populate(host, size)
            firsts, lasts = [], []
            for _ in range(big_rounds if size >= 1000 else rounds):
                first, last = bed.fail([host])
                firsts.append(first)
                lasts.append(last)
                bed.recover([host])
            results["sizes"].append({"vms": size, "last_notified_ms": summary_ms(lasts),
                                     "first_notified_ms": summary_ms(firsts)})
            if openstack:
                bed.cloud.cleanup()  # the next size starts from an empty compute1
        if fleet:
            hosts_count, per_host = fleet
            hosts = [f"fleet-{i}" for i in range(hosts_count)]
            for host in hosts:
                bed.populate(host, per_host)
            first, last = bed.fail(hosts)
            results["fleet"] = {"hosts": hosts_count, "vms_per_host": per_host,
                                "first_notified_ms": round(first * 1000, 2),
                                "last_notified_ms": round(last * 1000, 2)}
    finally:
        if bed is not None:
            bed.cloud.cleanup()
        pipeline.stop()
    return results


def plot(runs: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        sizes = [s["vms"] for s in run["sizes"]]
        for stat, style in (("p50", "-o"), ("p99", "--^")):
            axes.plot(sizes, [s["last_notified_ms"][stat] for s in run["sizes"]], style,
                      label=f"{run['path']} {stat}")
    doctor_sizes, doctor_ms = [1, 10, 25, 50], [122, 201, 320, 584]
    axes.plot(doctor_sizes, doctor_ms, ":s", color="grey", label="OPNFV Doctor 2017 (shortcut)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("VMs on the failed host")
    axes.set_ylabel("host down event -> last consumer notified (ms)")
    axes.set_title("doctor bench notify")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="1,10,50,100,1000",
                        help="VMs on the failed host, comma separated (default 1,10,50,100,1000)")
    parser.add_argument("--rounds", type=int, default=20,
                        help="failures per size (default 20)")
    parser.add_argument("--big-rounds", type=int, default=5,
                        help="failures per size of 1000 VMs or more (default 5)")
    parser.add_argument("--paths", default="shortcut,conservative",
                        help="shortcut, conservative or both (default)")
    parser.add_argument("--fleet", default="100x20", metavar="HOSTSxVMS",
                        help="then fail this many hosts with this many VMs each at once "
                             "(default 100x20; 'none' to skip)")
    parser.add_argument("--notifier", choices=("aodh", "embedded"), default="aodh",
                        help="--installer openstack: real Aodh, or the embedded notifier beside "
                             "Nova (a cloud without Telemetry)")
    parser.add_argument("--installer", choices=("local", "openstack"), default="local",
                        help="openstack: real Nova and Aodh of the test bed (its DOCTOR_* "
                             "variables); the fleet run is then skipped")
    parser.add_argument("--json", default="", metavar="PATH", help="also write the JSON here")
    parser.add_argument("--plot", default="bench-notify.png", metavar="PATH",
                        help="PNG plot of the figures (default bench-notify.png; '' for none)")


def _parse(args: argparse.Namespace) -> tuple[list[int], list[str], tuple[int, int] | None]:
    sizes = report.counts(PROG, "--sizes", args.sizes, 1, 5000)
    paths = report.choices(PROG, "--paths", args.paths, {"shortcut", "conservative"},
                           "shortcut and/or conservative")
    if args.rounds < 1 or args.big_rounds < 1:
        raise SystemExit("doctor bench notify: error: --rounds and --big-rounds must be >= 1")
    fleet = None
    if args.fleet != "none":
        hosts, sep, vms = args.fleet.lower().partition("x")
        if not sep or not hosts.isdigit() or not vms.isdigit() or not int(hosts) or not int(vms):
            raise SystemExit(f"doctor bench notify: error: --fleet {args.fleet!r}: HOSTSxVMS "
                             "(e.g. 100x20) or none")
        fleet = (int(hosts), int(vms))
    return sizes, paths, fleet


def run(args: argparse.Namespace) -> int:
    sizes, paths, fleet = _parse(args)
    openstack = openstack_env(prog="doctor bench notify") if args.installer == "openstack" \
        else None
    if args.notifier == "embedded" and not openstack:
        raise SystemExit("doctor bench notify: error: --notifier embedded is for --installer "
                         "openstack (the local installer's notifier is the embedded one)")
    runs = [measure(path, sizes, args.rounds, args.big_rounds,
                    fleet if path == "shortcut" and not openstack else None, openstack,
                    args.notifier)
            for path in paths]
    result = {"benchmark": "notify", "when": clock.isoformat(clock.now()),
              "machine": f"{platform.machine()}, {platform.python_implementation()} "
                         f"{platform.python_version()}", "runs": runs}
    rows = []
    for run_ in runs:
        for size in run_["sizes"]:
            last = size["last_notified_ms"]
            rows.append([run_["path"], size["vms"], last["n"], last["p50"], last["p99"],
                         last["max"], size["first_notified_ms"]["p50"]])
    tables = [table(["path", "VMs", "failures", "p50 ms", "p99 ms", "max ms",
                     "first notified p50 ms"], rows)]
    fleet_runs = [r["fleet"] for r in runs if "fleet" in r]
    if fleet_runs:
        f = fleet_runs[0]
        tables.append(table(["hosts failing at once", "VMs each", "first notified ms",
                             "last notified ms"],
                            [[f["hosts"], f["vms_per_host"], f["first_notified_ms"],
                              f["last_notified_ms"]]]))
    if args.plot:
        plot(runs, args.plot)
        result["plot"] = args.plot
    emit(result, tables, args.json)
    return 0
