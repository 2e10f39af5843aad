"""SQLAlchemy engines: SQLite by default (one file per role), PostgreSQL when shared.

What a role keeps is for its own user alone: the state directory is created with mode 0700
and a SQLite file with 0600 (SQLite gives its -wal and -shm files the database file's mode);
a state directory or database file found open to others is closed (chmod) at start, with
a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

LOG = logging.getLogger(__name__)
DEFAULT_STATE_DIR = "/var/lib/doctor"
DIR_MODE, FILE_MODE = 0o700, 0o600


def state_dir() -> str:
    """Where the roles keep their databases: $DOCTOR_STATE_DIR or /var/lib/doctor."""
    return os.environ.get("DOCTOR_STATE_DIR", DEFAULT_STATE_DIR)


def default_url(role: str) -> str:
    return f"sqlite:///{os.path.join(state_dir(), role + '.db')}"


def database_option(role: str, what: str) -> Any:
    """The ``database`` field of ``role``: a SQLAlchemy URL, SQLite in the state dir by
    default; ``what`` says what is kept there."""
    from doctor.config import option

    return option(default_factory=lambda: default_url(role),
                  default_doc=f"sqlite:///$DOCTOR_STATE_DIR/{role}.db", url_with_password=True,
                  help=f"SQLAlchemy URL of {what}")


def _close_to_others(path: str, mode: int) -> None:
    """chmod ``path`` to ``mode`` if others may use it (and it is ours to change)."""
    try:
        found = stat.S_IMODE(os.stat(path).st_mode)
        if found & 0o077:
            os.chmod(path, mode)
            LOG.warning("%s was open to others (mode %o); now %o", path, found, mode)
    except OSError as exc:
        LOG.warning("%s: cannot check or fix its mode: %s", path, exc.strerror or exc)


def private_dir(path: str) -> str:
    """``path`` as a directory of this user alone: created 0700 (parents too), or made 0700
    when it is the state directory. Another existing directory (e.g. /tmp, where a test
    puts its database) keeps its mode: the files in it are 0600."""
    path = os.path.abspath(path)
    missing = []
    ancestor = path
    while not os.path.isdir(ancestor):
        missing.append(ancestor)
        ancestor = os.path.dirname(ancestor)
    for directory in reversed(missing):  # makedirs would give the parents the umask's mode
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:  # another process made it meanwhile
            continue
        os.chmod(directory, DIR_MODE)  # mkdir's mode is masked by the umask too
    if not missing and path == os.path.abspath(state_dir()):
        _close_to_others(path, DIR_MODE)
    return path


def private_file(path: str) -> str:
    """``path`` as a file of this user alone: created empty with mode 0600, or made 0600;
    its directory as ``private_dir``."""
    private_dir(os.path.dirname(os.path.abspath(path)))
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        _close_to_others(path, FILE_MODE)
    return path


def make_engine(url: str) -> Engine:
    """An engine; for SQLite, WAL and a busy timeout so readers never block the writer.

    With WAL and synchronous=NORMAL a committed row survives the process being
    killed (it is in the OS's page cache); only a power loss may lose the last
    transactions. A SQLite file and its directory are private (see the module).
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):].split("?", 1)[0]
        if path and path != ":memory:" and not path.startswith("file:"):
            private_file(path)
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                  "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)
