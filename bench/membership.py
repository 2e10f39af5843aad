"""``doctor bench membership``: what the service list costs, and how fast a dead process leaves.

For each backend (a redis-server of the bench's own on a loopback port, and tooz's file
driver in a temporary directory) and each member count N, N processes do nothing but keep a
``ServiceRegistration`` alive. Over a window the bench measures:
- the CPU each member spends heartbeating (its threads' run time from /proc/PID/task/*/schedstat,
  nanoseconds, so a fraction of a millisecond per second is seen);
- on Redis, the traffic (INFO's total_net_input_bytes and total_net_output_bytes, the bench's
  own two INFO calls subtracted), the commands per second and redis-server's own CPU.
Then it kills members with -9, one at a time at a random phase of their heartbeat, and times
how long until ``list_services`` no longer shows them.

Run as ``python -m bench.membership member NAME URL TIMEOUT``, this module is one
such member.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench import report
from bench.report import emit, summary_ms
from doctor import clock, coordination
from doctor.tables import table
from testkit.redis_server import RedisServer

PROG = "doctor bench membership"
READY_TIMEOUT_S = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--members", default="1,10,50",
                        help="member processes, comma separated counts (default 1,10,50)")
    parser.add_argument("--backends", default="redis,file",
                        help="redis, file or both (default)")
    parser.add_argument("--window-s", type=float, default=10.0,
                        help="how long the cost is measured per count, s (default 10)")
    parser.add_argument("--kills", type=int, default=10,
                        help="members killed with -9 per backend, one at a time (default 10)")
    parser.add_argument("--heartbeat-timeout-s", type=float, default=3.0,
                        help="the members' heartbeat timeout, s (default 3)")
    parser.add_argument("--json", default="", metavar="PATH", help="also write the JSON here")


def _parse(args: argparse.Namespace) -> tuple[list[int], list[str]]:
    counts = report.counts(PROG, "--members", args.members, 1, 500)
    backends = report.choices(PROG, "--backends", args.backends, {"redis", "file"},
                              "redis, file or both")
    if not 1 <= args.kills <= 100:
        raise SystemExit(f"{PROG}: error: --kills {args.kills}: 1..100")
    if not 1 <= args.window_s <= 600 or not 0.3 <= args.heartbeat_timeout_s <= 60:
        raise SystemExit(f"{PROG}: error: --window-s 1..600, --heartbeat-timeout-s 0.3..60")
    return counts, backends


def cpu_seconds(pid: int, thread: str = "") -> float:
    """CPU time of every thread of ``pid`` (or those named ``thread``) so far, s."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            if thread:
                with open(os.path.join(os.path.dirname(path), "comm")) as comm:
                    if comm.read().strip() != thread[:15]:
                        continue
            with open(path) as handle:  # run time in nanoseconds
                total += int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total / 1e9


class Members:
    """N member processes registering at ``url``; killed at the end."""

    def __init__(self, url: str, heartbeat_timeout_s: float, workdir: str) -> None:
        self.url = url
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.workdir = workdir
        self.processes: list[subprocess.Popen] = []

    def spawn(self, count: int) -> None:
        log = open(os.path.join(self.workdir, "members.log"), "a")
        for _ in range(count):
            index = len(self.processes)
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "bench.membership", "member",
                 f"BenchMember worker({index})", self.url, str(self.heartbeat_timeout_s)],
                stdout=log, stderr=subprocess.STDOUT))
        log.close()

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.processes if p.poll() is None]

    def wait_listed(self) -> None:
        wanted = {p.pid for p in self.alive()}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if wanted <= listed_pids(self.url, self.heartbeat_timeout_s):
                    return
            except coordination.CoordinationError:
                pass  # the file backend's directory appears with the first member
            time.sleep(0.2)
        raise SystemExit(f"{PROG}: error: {len(wanted)} members not listed within "
                         f"{READY_TIMEOUT_S:.0f} s (see {self.workdir}/members.log)")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def listed_pids(url: str, heartbeat_timeout_s: float) -> set[int]:
    return {row["Process Id"] for row in coordination.list_services(url, heartbeat_timeout_s)}


def redis_totals(redis_client: Any) -> tuple[int, int]:
    stats = redis_client.info("stats")
    return (stats["total_net_input_bytes"] + stats["total_net_output_bytes"],
            stats["total_commands_processed"])


def measure_cost(members: Members, window_s: float, redis: RedisServer | None
                 ) -> dict[str, Any]:
    """CPU per member and, on Redis, traffic over ``window_s`` of steady heartbeating."""
    pids = [p.pid for p in members.alive()]
    client = redis.client() if redis else None
    overhead_bytes = overhead_commands = 0
    if client is not None:
        # What the bench's own INFO costs, to take it out of the figures.
        first, second = redis_totals(client), redis_totals(client)
        overhead_bytes, overhead_commands = second[0] - first[0], second[1] - first[1]
    time.sleep(members.heartbeat_timeout_s / 3.0)  # past any join
    cpu_before = {pid: cpu_seconds(pid) for pid in pids}
    redis_cpu_before = cpu_seconds(redis.process.pid) if redis and redis.process else 0.0
    totals_before = redis_totals(client) if client is not None else (0, 0)
    started = time.monotonic()
    time.sleep(window_s)
    elapsed = time.monotonic() - started
    cpu = [(cpu_seconds(pid) - cpu_before[pid]) / elapsed for pid in pids]
    result: dict[str, Any] = {
        "members": len(pids), "window_s": round(elapsed, 2),
        "cpu_ms_per_member_per_s": round(1000.0 * sum(cpu) / len(cpu), 3),
        "cpu_ms_per_member_per_s_max": round(1000.0 * max(cpu), 3)}
    if client is not None and redis is not None and redis.process is not None:
        totals_after = redis_totals(client)
        traffic = totals_after[0] - totals_before[0] - overhead_bytes
        commands = totals_after[1] - totals_before[1] - overhead_commands
        redis_cpu = cpu_seconds(redis.process.pid) - redis_cpu_before
        result.update({
            "redis_bytes_per_s": round(traffic / elapsed, 1),
            "redis_bytes_per_member_per_s": round(traffic / elapsed / len(pids), 1),
            "redis_commands_per_member_per_s": round(commands / elapsed / len(pids), 2),
            "redis_server_cpu_ms_per_s": round(1000.0 * redis_cpu / elapsed, 3)})
        client.close()
    return result


def measure_kills(members: Members, kills: int) -> dict[str, Any]:
    """Kill ``kills`` members with -9 one at a time; seconds until each is no longer listed."""
    gone_after: list[float] = []
    bound_s = members.heartbeat_timeout_s + 30.0
    for process in members.alive()[:kills]:
        time.sleep(random.uniform(0, members.heartbeat_timeout_s / 3.0))  # a random phase
        killed_at = time.monotonic()
        process.send_signal(signal.SIGKILL)
        process.wait(5)
        while process.pid in listed_pids(members.url, members.heartbeat_timeout_s):
            if time.monotonic() - killed_at > bound_s:
                raise SystemExit(f"{PROG}: error: a killed member still listed after "
                                 f"{bound_s:.0f} s")
            time.sleep(0.02)
        gone_after.append(time.monotonic() - killed_at)
    return summary_ms(gone_after)


def measure_backend(backend: str, counts: list[int], args: argparse.Namespace,
                    workdir: str) -> dict[str, Any]:
    os.makedirs(workdir, exist_ok=True)
    redis = RedisServer(os.path.join(workdir, "redis")).start() if backend == "redis" else None
    url = redis.url if redis else f"file://{os.path.join(workdir, 'coordination')}"
    members = Members(url, args.heartbeat_timeout_s, workdir)
    try:
        costs = []
        for count in sorted(counts):
            members.spawn(count - len(members.alive()))
            members.wait_listed()
            costs.append(measure_cost(members, args.window_s, redis))
            print(f"{backend}: {costs[-1]}", file=sys.stderr, flush=True)
        if len(members.alive()) < args.kills:
            members.spawn(args.kills - len(members.alive()))
            members.wait_listed()
        kills = measure_kills(members, args.kills)
        print(f"{backend}: killed member gone after {kills}", file=sys.stderr, flush=True)
    finally:
        members.stop()
        if redis:
            redis.stop()
    return {"backend": backend, "heartbeat_timeout_s": args.heartbeat_timeout_s,
            "heartbeat_interval_s": round(args.heartbeat_timeout_s / 3.0, 3),
            "costs": costs, "killed_member_gone_ms": kills}


def run(args: argparse.Namespace) -> int:
    counts, backends = _parse(args)
    with tempfile.TemporaryDirectory(prefix="doctor-bench-membership-") as workdir:
        runs = [measure_backend(b, counts, args, os.path.join(workdir, b)) for b in backends]
    result = {"benchmark": "membership", "when": clock.isoformat(clock.now()),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"{platform.python_implementation()} {platform.python_version()}",
              "runs": runs}
    cost_rows, kill_rows = [], []
    for run_ in runs:
        for cost in run_["costs"]:
            cost_rows.append([run_["backend"], cost["members"], cost["cpu_ms_per_member_per_s"],
                              cost["cpu_ms_per_member_per_s_max"],
                              cost.get("redis_bytes_per_member_per_s", "-"),
                              cost.get("redis_commands_per_member_per_s", "-"),
                              cost.get("redis_server_cpu_ms_per_s", "-")])
        gone = run_["killed_member_gone_ms"]
        kill_rows.append([run_["backend"], run_["heartbeat_timeout_s"], gone["n"], gone["p50"],
                          gone["max"]])
    tables = [table(["backend", "members", "CPU ms/s per member (mean)", "max",
                     "Redis bytes/s per member", "Redis commands/s per member",
                     "redis-server CPU ms/s"], cost_rows),
              table(["backend", "heartbeat timeout s", "kills", "gone after p50 ms",
                     "max ms"], kill_rows)]
    emit(result, tables, args.json)
    return 0


def member(argv: list[str]) -> int:
    """One member: register as NAME at URL with TIMEOUT and heartbeat until SIGTERM."""
    from doctor import logs
    from doctor.signals import wait_for_stop

    name, url, timeout_s = argv
    logs.setup("WARNING")
    registration = coordination.ServiceRegistration(name, url, float(timeout_s)).start()
    wait_for_stop()
    registration.stop()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "member":
        sys.exit(member(sys.argv[2:]))
    sys.exit(f"usage: python -m bench.membership member NAME URL TIMEOUT_S "
             f"(the benchmark itself: {PROG})")
