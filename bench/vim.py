"""``doctor bench vim``: one VIM server monitoring many VIMs (needs root).

The VIMs' auth_urls point at the addresses of an AnyIP block on one namespaced test host
(``TestHostNetwork.add_address_block``: every address of 198.19.x answers pings), so each VIM
has its own address to probe. The bench measures, on a real ``doctor-vim`` process:
- the register rate through the API (``--clients`` requests in parallel);
- the time until every VIM is REACHABLE;
- the server's CPU while it only monitors (utime + stime from /proc over ``--window-s``), as
  a share of one core, and the probes per second it sent. The test host answers on a kernel
  thread of its own (``add_address_block(own_thread=True)``), as remote VIM hosts answer on
  their own CPUs; that thread's CPU is reported beside the server's. ``--echo-in-sender``
  measures the default veth instead, where the host's echo work is charged to the server;
- the time to resume after ``kill -9``: a new process on the same database, until every VIM's
  status was confirmed by a new monitor (``status_at`` later than the kill).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.report import emit
from doctor import clock
from doctor.http import HttpClient, HttpError
from doctor.tables import table
from testkit.eventsink import free_port
from testkit.hosts import TestHostNetwork, require_root, thread_cpu_s

PROG = "doctor bench vim"
PREFIX = "dbv"
TOKEN = "bench-vim-token"
READY_TIMEOUT_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vims", type=int, default=10_000,
                        help="VIMs registered, each on its own address (default 10000, "
                             "at most 16382)")
    parser.add_argument("--interval-ms", type=int, default=1000,
                        help="the server's probe interval (default 1000)")
    parser.add_argument("--window-s", type=float, default=20.0,
                        help="how long the monitoring CPU is measured, s (default 20)")
    parser.add_argument("--clients", type=int, default=8,
                        help="registrations in parallel (default 8)")
    parser.add_argument("--timeout-s", type=float, default=300.0,
                        help="bound on each wait (all REACHABLE, resume), s (default 300)")
    parser.add_argument("--echo-in-sender", action="store_true",
                        help="the test host's echo replies run in the server's own time "
                             "(a plain veth), as on the bed without threaded NAPI")
    parser.add_argument("--index", type=int, default=252,
                        help="test network index (198.18.<index>.0/24; default 252)")
    parser.add_argument("--json", default="", metavar="PATH", help="also write the JSON here")


class VimServerProcess:
    """The ``doctor-vim`` process under test."""

    def __init__(self, workdir: str, interval_ms: int) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.interval_ms = interval_ms
        self.process: subprocess.Popen | None = None
        self.client = HttpClient(60.0, token=TOKEN)

    def start(self) -> float:
        """Start it; the seconds until its API answered."""
        started = time.monotonic()
        argv = [sys.executable, "-m", "vim.cli", "--port", str(self.port),
                "--interval-ms", str(self.interval_ms), "--log-level", "WARNING"]
        env = {**os.environ, "DOCTOR_STATE_DIR": os.path.join(self.workdir, "state"),
               "DOCTOR_VIM_TOKEN": TOKEN}
        with open(os.path.join(self.workdir, "vim.log"), "a") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = started + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{PROG}: doctor-vim exited; see {self.workdir}/vim.log")
            try:
                if self.client.get(self.url + "/v1/monitoring").ok:
                    return time.monotonic() - started
            except HttpError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"{PROG}: doctor-vim not ready within {READY_TIMEOUT_S:.0f} s")

    def vims(self) -> list[dict[str, Any]]:
        return self.client.get(self.url + "/v1/vims").json()

    def monitoring(self) -> dict[str, Any]:
        return self.client.get(self.url + "/v1/monitoring").json()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _wait(predicate: Any, timeout_s: float, what: str, interval_s: float = 1.0) -> float:
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"{PROG}: timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def _register_all(server: VimServerProcess, addresses: list[str], clients: int) -> float:
    def register(item: tuple[int, str]) -> None:
        number, address = item
        body = {"name": f"bench-vim-{number:05d}", "auth_url": f"http://{address}:5000/v3",
                "username": "admin", "password": f"bench-password-{number}",
                "project_name": "bench"}
        answer = server.client.post(server.url + "/v1/vims", json=body)
        if answer.status != 201:
            raise SystemExit(f"{PROG}: register failed: {answer.status} {answer.text[:200]}")

    start = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(register, enumerate(addresses)))
    return time.monotonic() - start


def measure(args: argparse.Namespace) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="doctor-bench-vim-")
    result: dict[str, Any] = {"vims": args.vims, "interval_ms": args.interval_ms,
                              "machine": {"cpus": os.cpu_count(),
                                          "python": platform.python_version()},
                              "workdir": workdir}
    with TestHostNetwork(prefix=PREFIX, index=args.index) as net:
        addresses = net.add_address_block(args.vims, own_thread=not args.echo_in_sender)
        server = VimServerProcess(workdir, args.interval_ms)
        try:
            server.start()
            took = _register_all(server, addresses, args.clients)
            result["register"] = {"seconds": round(took, 2),
                                  "per_s": round(args.vims / took, 1), "clients": args.clients}

            def all_reachable() -> bool:
                return all(v["status"] == "REACHABLE" for v in server.vims())

            result["all_reachable_after_register_s"] = round(
                _wait(all_reachable, args.timeout_s, "every VIM REACHABLE"), 2)
            time.sleep(2 * args.interval_ms / 1000.0)  # past the first rounds
            assert server.process is not None
            pids = [server.process.pid]
            sent_before = server.monitoring()["probes_sent"]
            cpu_before, t_before = thread_cpu_s(pids), time.monotonic()
            echo_before = thread_cpu_s(net.block_threads)
            time.sleep(args.window_s)
            cpu_after, t_after = thread_cpu_s(pids), time.monotonic()
            echo_after = thread_cpu_s(net.block_threads)
            sent_after = server.monitoring()["probes_sent"]
            elapsed = t_after - t_before
            result["monitoring"] = {
                "window_s": round(elapsed, 1),
                "cpu_percent_of_one_core": round(100.0 * (cpu_after - cpu_before) / elapsed, 2),
                "echo_work": "test host's own thread" if net.block_threads
                             else "in the server's time",
                "test_host_thread_cpu_percent": round(
                    100.0 * (echo_after - echo_before) / elapsed, 2),
                "probes_per_s": round((sent_after - sent_before) / elapsed, 1),
            }
            killed_at = clock.now()
            server.stop(signal.SIGKILL)
            restart_started = time.monotonic()
            api_after_s = server.start()

            def all_refreshed() -> bool:
                return all(v["status_at"] and clock.parse_iso(v["status_at"]) > killed_at
                           and v["status"] == "REACHABLE" for v in server.vims())

            _wait(all_refreshed, args.timeout_s, "every VIM refreshed by a new monitor", 0.5)
            result["resume"] = {
                "api_answers_after_s": round(api_after_s, 2),
                "all_refreshed_after_start_s": round(time.monotonic() - restart_started, 2),
            }
            result["server_counters"] = server.monitoring()
        finally:
            server.stop()
    return result


def run(args: argparse.Namespace) -> int:
    require_root()
    if not 1 <= args.vims <= 16_382:
        raise SystemExit(f"{PROG}: error: --vims {args.vims}: 1..16382")
    result = measure(args)
    rows = [
        ["VIMs", result["vims"]],
        ["probe interval", f"{result['interval_ms']} ms"],
        ["register rate (API)", f"{result['register']['per_s']} VIMs/s "
                                f"({result['register']['clients']} clients)"],
        ["all REACHABLE after the last register", f"{result['all_reachable_after_register_s']} s"],
        ["CPU while monitoring", f"{result['monitoring']['cpu_percent_of_one_core']} % of one "
                                 "core"],
        ["the test host's echo work", f"{result['monitoring']['echo_work']}: "
                                      f"{result['monitoring']['test_host_thread_cpu_percent']} "
                                      "% of one core"],
        ["probes sent", f"{result['monitoring']['probes_per_s']} /s"],
        ["resume after kill -9: API answers", f"{result['resume']['api_answers_after_s']} s"],
        ["resume after kill -9: every status refreshed",
         f"{result['resume']['all_refreshed_after_start_s']} s"],
    ]
    emit(result, [table(["what", "measured"], rows)], args.json)
    return 0
