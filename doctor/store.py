"""SQLAlchemy engines: SQLite by default (one file per role), PostgreSQL when shared."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

DEFAULT_STATE_DIR = "/var/lib/doctor"


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
                  default_doc=f"sqlite:///$DOCTOR_STATE_DIR/{role}.db",
                  help=f"SQLAlchemy URL of {what}")


def make_engine(url: str) -> Engine:
    """An engine; for SQLite, WAL and a busy timeout so readers never block the writer.

    With WAL and synchronous=NORMAL a committed row survives the process being
    killed (it is in the OS's page cache); only a power loss may lose the last
    transactions.
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
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
