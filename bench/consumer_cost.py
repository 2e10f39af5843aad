"""``doctor bench consumer``: what one alarm costs the sample Consumer's intake, per HTTP server.

A host failure that fans out to 1,000 VMs is 1,000 alarm POSTs at once, and the Consumer's
CPU competes with the Notifier's. For each server (``[consumer] http_server``: aiohttp,
waitress), this starts ``python -m consumer.cli --port P --http-server S`` as its own
process (its token and alarm secret in its environment, never on its command line), sends
it a warm-up, then ``--posts`` signed alarms (each its own alarm id, instance and
X-OpenStack-Request-Id, as the embedded Notifier sends them) from ``--connections``
keep-alive connections, and reads the consumer's CPU time (user + system, from
``/proc/PID/stat``) before and after. Reported: the consumer's CPU µs per POST, the wall
time of the batch, and each POST's latency as the client saw it (queueing included). The
servers take turns, ``--repeat`` times; the medians are what to quote (the machine is
shared). Run from the repository: ``python -m bench.consumer_cost`` (or ``doctor bench
consumer``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import report
from bench.report import emit, summary_ms
from doctor.events import instance_update
from doctor.http import HttpClient, HttpError
from doctor.signing import SIGNATURE_HEADER, sign
from doctor.tables import table
from testkit.eventsink import free_port

PROG = "doctor bench consumer"
ROOT = Path(__file__).resolve().parents[1]
SERVERS = ("aiohttp", "waitress")
WARM_UP = 64
READY_TIMEOUT_S = 30.0
POST_TIMEOUT_S = 10.0


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alarm(secret: str, number: int) -> tuple[bytes, dict[str, str]]:
    """One alarm action as the embedded Notifier sends it: body and headers."""
    body = json.dumps({
        "alarm_name": f"doctor-alarm-{number}", "alarm_id": f"alarm-{number}",
        "severity": "critical", "previous": "ok", "current": "alarm", "reason": "bench",
        "reason_data": {"type": "event", "event": instance_update(
            f"vm-{number}", "error", "compute-1", "tenant")}}).encode()
    return body, {SIGNATURE_HEADER: sign(secret, body),
                  "X-OpenStack-Request-Id": f"req-{secrets.token_hex(8)}-{number}"}


class ConsumerProcess:
    """``consumer.cli`` on a free loopback port with ``--http-server server``."""

    def __init__(self, server: str, workdir: str, log_level: str) -> None:
        self.server = server
        self.token = secrets.token_hex(16)
        self.secret = secrets.token_hex(16)
        self.port = free_port()
        self.log_path = os.path.join(workdir, f"consumer-{server}-{self.port}.log")
        env = {**os.environ, "DOCTOR_CONSUMER_TOKEN": self.token,
               "DOCTOR_CONSUMER_ALARM_SECRET": self.secret,
               "DOCTOR_STATE_DIR": os.path.join(workdir, "state")}
        with open(self.log_path, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "consumer.cli", "--port", str(self.port),
                 "--http-server", server, "--log-level", log_level],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, client: HttpClient) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{PROG}: the consumer ({self.server}) exited with "
                                 f"{self.process.returncode}; see {self.log_path}")
            try:
                if client.get(self.url + "/failures",
                              headers={"X-Auth-Token": self.token}).status == 200:
                    return
            except HttpError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"{PROG}: the consumer ({self.server}) did not answer within "
                         f"{READY_TIMEOUT_S:g} s; see {self.log_path}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def one_run(server: str, posts: int, connections: int, workdir: str,
            log_level: str) -> dict[str, Any]:
    """One batch of ``posts`` alarms to a new consumer process served by ``server``."""
    consumer = ConsumerProcess(server, workdir, log_level)
    client = HttpClient(POST_TIMEOUT_S, headers={"Content-Type": "application/json"})
    try:
        consumer.wait_ready(client)
        url = consumer.url + "/failure"
        warm = [alarm(consumer.secret, -1 - i) for i in range(WARM_UP)]
        batch = [alarm(consumer.secret, i) for i in range(posts)]
        latencies: list[float] = []
        failed: list[int] = []

        def post(item: tuple[bytes, dict[str, str]]) -> None:
            body, headers = item
            started = time.perf_counter()
            status = client.post(url, data=body, headers=headers).status
            latencies.append(time.perf_counter() - started)
            if status != 200:
                failed.append(status)

        with ThreadPoolExecutor(connections) as pool:
            list(pool.map(post, warm))
            latencies.clear()
            time.sleep(0.2)  # the warm-up's log lines written
            cpu_before, started = cpu_seconds(consumer.process.pid), time.perf_counter()
            list(pool.map(post, batch))
            wall_s = time.perf_counter() - started
            cpu_s = cpu_seconds(consumer.process.pid) - cpu_before
        if failed:
            raise SystemExit(f"{PROG}: {len(failed)} POSTs to the consumer ({server}) were "
                             f"not 200 (e.g. {failed[0]}); see {consumer.log_path}")
        return {"server": server, "posts": posts, "cpu_us_per_post": round(cpu_s / posts * 1e6, 1),
                "wall_ms": round(wall_s * 1000, 1), "posts_per_s": round(posts / wall_s),
                "latency_ms": summary_ms(latencies)}
    finally:
        client.close()
        consumer.stop()


def measure(servers: list[str], posts: int, connections: int, repeat: int,
            log_level: str = "INFO") -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in servers}
    with tempfile.TemporaryDirectory(prefix="doctor-consumer-cost-") as workdir:
        for _ in range(repeat):
            for server in servers:  # taking turns: a busy moment hits both
                runs[server].append(one_run(server, posts, connections, workdir, log_level))
    medians = {server: {
        "cpu_us_per_post": statistics.median(r["cpu_us_per_post"] for r in found),
        "wall_ms": statistics.median(r["wall_ms"] for r in found),
        "posts_per_s": statistics.median(r["posts_per_s"] for r in found),
        "latency_p50_ms": statistics.median(r["latency_ms"]["p50"] for r in found),
        "latency_p99_ms": statistics.median(r["latency_ms"]["p99"] for r in found),
    } for server, found in runs.items()}
    return {"bench": "consumer_cost", "posts": posts, "connections": connections,
            "repeat": repeat, "log_level": log_level, "cpus": os.cpu_count(),
            "python": platform.python_version(), "medians": medians, "runs": runs}


def tables(result: dict[str, Any]) -> list[str]:
    rows = [[server, m["cpu_us_per_post"], m["wall_ms"], m["posts_per_s"], m["latency_p50_ms"],
             m["latency_p99_ms"],
             " ".join(str(r["cpu_us_per_post"]) for r in result["runs"][server])]
            for server, m in result["medians"].items()]
    title = (f"{result['posts']} signed alarms from {result['connections']} keep-alive "
             f"connections, medians of {result['repeat']} runs (consumer log level "
             f"{result['log_level']})")
    return [title + "\n\n" + table(
        ["server", "consumer CPU µs/POST", "wall ms", "POSTs/s", "p50 ms", "p99 ms",
         "CPU µs/POST of each run"], rows)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"some of {', '.join(SERVERS)} (default: both)")
    parser.add_argument("--posts", type=int, default=2000,
                        help="alarms per run (default 2000)")
    parser.add_argument("--connections", type=int, default=32,
                        help="keep-alive connections sending them (default 32)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per server (default 3)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"),
                        help="the consumer's (INFO, its default, logs each alarm)")
    parser.add_argument("--json", default="", metavar="PATH", help="also write the JSON here")


def run(args: argparse.Namespace) -> int:
    servers = report.choices(PROG, "--servers", args.servers, set(SERVERS), ", ".join(SERVERS))
    if not 1 <= args.posts <= 100_000 or not 1 <= args.connections <= 256 \
            or not 1 <= args.repeat <= 50:
        raise SystemExit(f"{PROG}: error: --posts 1..100000, --connections 1..256, "
                         f"--repeat 1..50")
    result = measure(servers, args.posts, args.connections, args.repeat, args.log_level)
    emit(result, tables(result), args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.consumer_cost",
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
