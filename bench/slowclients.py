"""``doctor bench slowclients``: the parts' APIs while 1,000 slow or idle connections are open.

Each part (inspector, controller, notifier, consumer, VIM server) runs as its own process on
127.0.0.1, started with an open-files soft limit of 1024 (a common default, so the server's
own raise of it is exercised). Against it, one thread of this process opens N connections
with non-blocking sockets (``SlowClients``): half stay idle after connecting, half send a
request line and then one header line every ~3 s, never finishing their request. While they
are open, normal requests, each on a new connection, go to the part's API (the Inspector's
``PUT /events`` with a valid event, a simple GET or POST for the others); the bench reports
how many connections the server held (accepted: ``/proc/net/tcp``) and the latency of the
normal requests, and the same latency before the slow connections were opened.

The functional test ``tests/functional/test_slow_clients.py`` uses the same pieces.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import os
import platform
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import report
from bench.report import emit, summary_ms
from doctor import clock
from doctor.events import HOST_UP, HostEvent, instance_update
from doctor.redact import redact_url
from doctor.signals import terminate_all
from doctor.tables import table
from testkit.eventsink import free_port

PROG = "doctor bench slowclients"
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "slowclients-bench-secret"
PARTS = ("inspector", "controller", "notifier", "consumer", "vim")
CHILD_NOFILE = 1024  # the parts start with this soft limit of open files
READY_TIMEOUT_S = 30.0
HOLD_LIMIT_S = 120.0  # the slow connections are closed after this, whatever happens


def ensure_nofile(wanted: int) -> None:
    """This process may open ``wanted`` files (its soft limit raised toward the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@dataclass
class _Conn:
    sock: socket.socket
    trickle: bool
    next_line_at: float
    connected: bool = False
    lines: int = 0


class SlowClients:
    """``count`` connections to host:port from one thread, with non-blocking sockets: the
    even-numbered ones idle after connecting, the odd ones sending a request line and then
    one header line every ``line_every_s`` (spread over that interval), never a blank line.
    Closed at ``stop`` or after ``limit_s``, whichever comes first."""

    def __init__(self, host: str, port: int, count: int, line_every_s: float = 3.0,
                 limit_s: float = HOLD_LIMIT_S) -> None:
        self.host, self.port, self.count = host, port, count
        self.line_every_s = line_every_s
        self.limit_s = limit_s
        self.connected = 0  # the handshake completed (accepted by the server or queued)
        self.failed = 0  # the connect failed
        self.closed_by_server = 0
        self.lines_sent = 0
        self.trickling = count // 2
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def start(self) -> SlowClients:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait_connected(self, timeout_s: float) -> int:
        """Until every connection has connected or failed (bounded); how many connected."""
        deadline = time.monotonic() + timeout_s
        while self.connected + self.failed < self.count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.connected

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        conns: dict[int, _Conn] = {}
        start = time.monotonic()
        try:
            for i in range(self.count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                code = sock.connect_ex((self.host, self.port))
                if code not in (0, errno.EINPROGRESS):
                    sock.close()
                    self.failed += 1
                    continue
                conn = _Conn(sock, trickle=i % 2 == 1,
                             next_line_at=start + self.line_every_s * i / self.count)
                conns[sock.fileno()] = conn
                selector.register(sock, selectors.EVENT_WRITE, conn)
            deadline = start + self.limit_s
            while not self._stop.is_set() and time.monotonic() < deadline and conns:
                for key, events in selector.select(timeout=0.05):
                    self._ready(selector, conns, key.data, events)
                self._trickle(conns.values())
        finally:
            for conn in conns.values():
                conn.sock.close()
            selector.close()

    def _ready(self, selector: selectors.BaseSelector, conns: dict[int, _Conn], conn: _Conn,
               events: int) -> None:
        if not conn.connected and events & selectors.EVENT_WRITE:
            if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.failed += 1
                self._drop(selector, conns, conn)
                return
            conn.connected = True
            self.connected += 1
            selector.modify(conn.sock, selectors.EVENT_READ, conn)
            return
        if events & selectors.EVENT_READ:
            try:
                data = conn.sock.recv(65536)
            except OSError:
                data = b""
            if not data:  # the server closed it (or reset it)
                self.closed_by_server += 1
                self._drop(selector, conns, conn)

    @staticmethod
    def _drop(selector: selectors.BaseSelector, conns: dict[int, _Conn], conn: _Conn) -> None:
        selector.unregister(conn.sock)
        del conns[conn.sock.fileno()]
        conn.sock.close()

    def _trickle(self, conns: Any) -> None:
        now = time.monotonic()
        for conn in conns:
            if not (conn.trickle and conn.connected and conn.next_line_at <= now):
                continue
            line = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" if conn.lines == 0
                    else b"X-Slow-%d: %d\r\n" % (conn.sock.fileno(), conn.lines))
            try:
                conn.sock.send(line)
            except (BlockingIOError, InterruptedError):
                pass  # the server reads nothing yet: try again next interval
            except OSError:
                continue  # closed: the read side notices
            else:
                conn.lines += 1
                self.lines_sent += 1
            conn.next_line_at = now + self.line_every_s


def held_by_server(port: int) -> int:
    """Established TCP connections to ``port`` that a process has accepted (the kernel's
    /proc/net/tcp{,6}: local port ``port``, state ESTABLISHED, an inode, which a connection
    still in the listen backlog does not have yet)."""
    held = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    if local_port == port and fields[3] == "01" and fields[9] != "0":
                        held += 1
        except OSError:
            continue
    return held


def open_files_limit(pid: int) -> int:
    """The soft limit of open files of process ``pid`` (/proc/PID/limits), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/limits") as handle:
            for line in handle:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class Request:
    """One normal request to a part's API, and the status that means it was served."""

    method: str
    path: str
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def send(self, port: int, timeout_s: float) -> tuple[float, int | str]:
        """On a new connection: (seconds until the whole answer, status or error)."""
        body = self.body() if callable(self.body) else self.body
        payload = b"" if body is None else json.dumps(body).encode()
        headers = {**self.headers, "Connection": "close"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        try:
            connection.request(self.method, self.path, body=payload or None, headers=headers)
            answer = connection.getresponse()
            answer.read()
            outcome: int | str = answer.status
        except OSError as exc:
            outcome = type(exc).__name__
        finally:
            connection.close()
        return time.perf_counter() - started, outcome


def _host_event() -> list[dict[str, Any]]:
    return [HostEvent.new(HOST_UP, "slow-clients-host", "slowclients").to_doctor()]


def _alarm() -> dict[str, Any]:
    instance_id = str(uuid.uuid4())
    event = instance_update(instance_id, "error", "compute-1", "slowclients")
    return {"alarm_name": f"doctor_alarm_{instance_id}", "alarm_id": str(uuid.uuid4()),
            "severity": "critical", "previous": "ok", "current": "alarm",
            "reason": "slow clients bench", "reason_data": {"type": "event", "event": event}}


def _instance_event() -> list[dict[str, Any]]:
    return [instance_update(str(uuid.uuid4()), "active", "compute-1", "slowclients")]


AUTH = {"X-Auth-Token": TOKEN}
# The request measured per part, and the path that says it is up.
REQUESTS: dict[str, tuple[Request, str]] = {
    "inspector": (Request("PUT", "/events", 202, _host_event, AUTH), "/status"),
    "controller": (Request("GET", "/v1/hosts", 200, None, AUTH), "/v1/hosts"),
    "notifier": (Request("POST", "/v1/events", 202, _instance_event, AUTH), "/"),
    # as real Aodh sends it: the consumer's token in the action URL
    "consumer": (Request("POST", f"/failure?token={TOKEN}", 200, _alarm), "/failures"),
    "vim": (Request("GET", "/v1/vims", 200, None, AUTH), "/v1/vims"),
}


def part_argv(name: str, port: int, workdir: str) -> list[str]:
    """``python -m <part>.cli`` on 127.0.0.1:port, its state in ``workdir``."""
    database = f"sqlite:///{workdir}/{name}.db"
    common = ["--port", str(port), "--log-level", "INFO"]
    unused = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    argv = {
        "inspector": ["inspector.cli", *common, "--database", database,
                      "--controller-url", unused, "--notifier-url", unused,
                      "--call-retry-for-s", "0", "--resync-interval-s", "0"],
        "controller": ["controller.cli", "serve", *common, "--database", database],
        "notifier": ["notifier.cli", *common, "--database", database],
        "consumer": ["consumer.cli", *common],
        "vim": ["vim.cli", *common, "--database", database],
    }[name]
    return [sys.executable, "-m", *argv]


class PartProcess:
    """One part as its own process on a free loopback port, open files soft limit
    ``CHILD_NOFILE``."""

    def __init__(self, name: str, workdir: str) -> None:
        self.name = name
        self.port = free_port()
        self.workdir = workdir
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.process: subprocess.Popen | None = None

    def start(self) -> PartProcess:
        # The part's token through the environment, never its command line.
        env = {**os.environ, "DOCTOR_STATE_DIR": os.path.join(self.workdir, "state"),
               f"DOCTOR_{self.name.upper()}_TOKEN": TOKEN}
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                part_argv(self.name, self.port, self.workdir), cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_child_limits)
        request, ready = REQUESTS[self.name]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            _, outcome = Request("GET", ready, 200, None, AUTH).send(self.port, 1.0)
            if isinstance(outcome, int):
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def stop(self) -> None:
        if self.process is not None:
            terminate_all([self.process])


def _child_limits() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = CHILD_NOFILE if hard == resource.RLIM_INFINITY else min(CHILD_NOFILE, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def latencies(request: Request, port: int, count: int, timeout_s: float,
              pause_s: float) -> tuple[list[float], list[int | str]]:
    """``count`` requests one after the other, each on a new connection."""
    seconds, outcomes = [], []
    for _ in range(count):
        took, outcome = request.send(port, timeout_s)
        seconds.append(took)
        outcomes.append(outcome)
        time.sleep(pause_s)
    return seconds, outcomes


def measure(name: str, workdir: str, connections: int = 1000, requests: int = 20,
            timeout_s: float = 5.0, line_every_s: float = 3.0,
            pause_s: float = 0.02) -> dict[str, Any]:
    """One part under ``connections`` slow connections: what the server held, and the normal
    requests' latency before and while they are open."""
    ensure_nofile(connections + 256)
    os.makedirs(workdir, exist_ok=True)
    part = PartProcess(name, workdir).start()
    assert part.process is not None
    request = REQUESTS[name][0]
    try:
        before, _ = latencies(request, part.port, requests, timeout_s, pause_s)
        clients = SlowClients("127.0.0.1", part.port, connections, line_every_s).start()
        try:
            clients.wait_connected(10.0)
            # until the server holds them all and every trickling one has sent a line
            # (bounded: one round of lines and time to accept what it will)
            deadline = time.monotonic() + line_every_s + 5.0
            held = held_by_server(part.port)
            while time.monotonic() < deadline and (
                    held < connections or clients.lines_sent < clients.trickling):
                time.sleep(0.1)
                held = held_by_server(part.port)
            during, outcomes = latencies(request, part.port, requests, timeout_s, pause_s)
            held_after = held_by_server(part.port)
        finally:
            clients.stop()
        nofile = open_files_limit(part.process.pid)
    finally:
        part.stop()
    answered = [s for s, o in zip(during, outcomes, strict=True) if o == request.status]
    return {
        "part": name, "request": f"{request.method} {redact_url(request.path)}",
        "expected_status": request.status, "connections": connections,
        "connected": clients.connected, "connect_failed": clients.failed,
        "held_by_server": held, "held_by_server_after": held_after,
        "closed_by_server": clients.closed_by_server, "header_lines_sent": clients.lines_sent,
        "open_files_soft_limit": nofile, "requests": requests, "answered": len(answered),
        "outcomes": sorted({str(o) for o in outcomes}), "timeout_s": timeout_s,
        "latency_ms": summary_ms(during), "baseline_latency_ms": summary_ms(before),
        "log": part.log_path,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"some of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--connections", type=int, default=1000,
                        help="slow connections per part, half idle, half trickling header "
                             "lines (default 1000)")
    parser.add_argument("--requests", type=int, default=200,
                        help="normal requests per part, one after the other, each on a new "
                             "connection, while they are open (default 200)")
    parser.add_argument("--line-every-s", type=float, default=3.0,
                        help="a trickling connection's header line interval, s (default 3)")
    parser.add_argument("--json", default="", metavar="PATH", help="also write the JSON here")


def run(args: argparse.Namespace) -> int:
    parts = report.choices(PROG, "--parts", args.parts, set(PARTS), ", ".join(PARTS))
    if not 1 <= args.connections <= 10000 or not 1 <= args.requests <= 10000:
        raise SystemExit(f"{PROG}: error: --connections 1..10000, --requests 1..10000")
    if not 0.1 <= args.line_every_s <= 60:
        raise SystemExit(f"{PROG}: error: --line-every-s 0.1..60")
    if "vim" in parts and os.geteuid() != 0:
        print(f"{PROG}: vim left out: doctor-vim opens a raw ICMP socket (CAP_NET_RAW), run "
              f"as root", file=sys.stderr)
        parts.remove("vim")
    with tempfile.TemporaryDirectory(prefix="doctor-bench-slowclients-") as workdir:
        runs = [measure(p, os.path.join(workdir, p), args.connections, args.requests,
                        line_every_s=args.line_every_s) for p in parts]
    for run_ in runs:
        del run_["log"]
    result = {"benchmark": "slowclients", "when": clock.isoformat(clock.now()),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"{platform.python_implementation()} {platform.python_version()}",
              "goal": "every request answered within 1 s", "runs": runs}
    rows = [[r["part"], r["request"], r["connections"], r["held_by_server"],
             r["closed_by_server"], f"{r['answered']}/{r['requests']}",
             r["baseline_latency_ms"]["p50"], r["latency_ms"].get("p50", "-"),
             r["latency_ms"].get("p99", "-"), r["latency_ms"].get("max", "-")] for r in runs]
    emit(result, [table(["part", "request", "slow connections", "held by server",
                         "closed by server", "answered", "alone p50 ms", "p50 ms", "p99 ms",
                         "max ms"], rows)], args.json)
    return 0
