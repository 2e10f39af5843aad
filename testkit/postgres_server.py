"""A throw-away PostgreSQL server for the tests: several doctor-vim servers share one database.

Debian's PostgreSQL binaries (``/usr/lib/postgresql/N/bin``), a cluster made with ``initdb`` in
a directory of the test's own, started as a child process on a loopback port (and a Unix
socket in that directory), trust authentication, no fsync; stopped by PID. Never the system's
service. PostgreSQL refuses to run as root: as root the cluster belongs to, and runs as, the
``postgres`` user that Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time

from doctor.signals import terminate_all
from testkit.eventsink import free_port

READY_TIMEOUT_S = 20.0
DATABASE = "doctor"


class PostgresNotInstalled(RuntimeError):
    """No PostgreSQL server binaries (``apt-get install postgresql``; setup.sh does it)."""


def postgres_bin_dir() -> str | None:
    """The newest ``/usr/lib/postgresql/N/bin`` that has ``initdb`` and ``postgres``."""
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin")
             if os.access(os.path.join(d, "initdb"), os.X_OK)
             and os.access(os.path.join(d, "postgres"), os.X_OK)]
    found.sort(key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    return found[-1] if found else None


class PostgresServer:
    """One cluster in ``workdir``; ``url`` is SQLAlchemy's URL of its database ``doctor``."""

    def __init__(self, workdir: str, port: int = 0) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise PostgresNotInstalled("PostgreSQL not found; apt-get install postgresql "
                                       "(scripts/setup.sh does it)")
        self.bin_dir = bin_dir
        self.workdir = os.path.abspath(workdir)
        self.data_dir = os.path.join(self.workdir, "data")
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = os.path.join(self.workdir, "postgres.log")
        self._user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if self._user is None:
            return argv
        return ["setpriv", f"--reuid={self._user.pw_uid}", f"--regid={self._user.pw_gid}",
                "--clear-groups", "--", *argv]

    def _own(self, path: str) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def start(self) -> PostgresServer:
        os.makedirs(self.workdir, exist_ok=True)
        self._own(self.workdir)
        if not os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            initdb = subprocess.run(
                self._as_owner([os.path.join(self.bin_dir, "initdb"), "-D", self.data_dir,
                                "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync",
                                "--no-instructions"]),
                capture_output=True, text=True, timeout=60, cwd=self.workdir)
            if initdb.returncode != 0:
                raise RuntimeError(f"initdb failed: {initdb.stderr.strip()[-500:]}")
        log = open(self.log_path, "a")  # noqa: SIM115  (the server's, closed with it below)
        self._own(self.log_path)
        try:
            self.process = subprocess.Popen(
                self._as_owner([os.path.join(self.bin_dir, "postgres"), "-D", self.data_dir,
                                "-p", str(self.port), "-k", self.workdir,
                                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                "-c", "max_connections=100"]),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=self.workdir)
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._create_database():
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited at start (see {self.log_path})")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres not ready within {READY_TIMEOUT_S:g} s "
                                   f"(see {self.log_path})")
            time.sleep(0.05)
        return self

    def _create_database(self) -> bool:
        """True once the server answers and the database exists."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        import psycopg

        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                 dbname="postgres", autocommit=True,
                                 connect_timeout=2) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (DATABASE,)).fetchone() is None:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
        except psycopg.OperationalError:  # still starting up
            return False
        return True

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            terminate_all([process], 15.0, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
