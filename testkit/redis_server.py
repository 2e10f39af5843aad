"""A throw-away Redis server for the tests and the membership benchmark.

Debian's ``redis-server`` binary, started as a child process on a loopback port, without
persistence, and stopped by PID; never the system's service.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

from doctor.signals import terminate_all
from testkit.eventsink import free_port

READY_TIMEOUT_S = 10.0


class RedisNotInstalled(RuntimeError):
    """No ``redis-server`` on the PATH (``apt-get install redis-server``; setup.sh does it)."""


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    """``redis-server --port N --bind 127.0.0.1 --save '' --appendonly no`` as a child process.

    ``stop()`` and ``start()`` again keep the port, so clients see the same URL go away and
    come back, with its data gone (nothing is persisted).
    """

    def __init__(self, workdir: str, port: int = 0) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RedisNotInstalled("redis-server not found; apt-get install redis-server "
                                    "(scripts/setup.sh does it)")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = os.path.join(workdir, f"redis-{self.port}.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.workdir, "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start (see {self.log_path})")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server not ready within {READY_TIMEOUT_S:g} s")
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            terminate_all([process])

    def client(self):  # noqa: ANN201  (a redis.Redis; imported lazily)
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
