"""Where the embedded Notifier keeps its alarms and their history (SQLAlchemy; SQLite default).

Alarms live in memory for evaluation (``notifier.evaluator``); this store is
their durable copy, read back at start. Each alarm is one row holding its
Aodh-shaped JSON body and a version number: writes carry the in-memory
version and only ever replace an older one, so a slow write (the evaluator
persists after it has dispatched the actions) can never undo a newer change
made through the API meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    insert,
    select,
    update,
)

from doctor.store import make_engine

metadata = MetaData()

alarm_table = Table(
    "alarm", metadata,
    Column("alarm_id", String(64), primary_key=True),
    Column("project_id", String(255), index=True),
    Column("name", String(255)),
    Column("version", Integer, nullable=False),
    Column("body", Text, nullable=False),
)

history_table = Table(
    "alarm_history", metadata,
    Column("event_id", String(64), primary_key=True),
    Column("alarm_id", String(64), index=True, nullable=False),
    Column("timestamp", String(32), nullable=False),
    Column("type", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("user_id", String(255)),
    Column("project_id", String(255)),
    Column("on_behalf_of", String(255), index=True),
    Column("severity", String(32)),
)

HISTORY_FIELDS = ("event_id", "alarm_id", "timestamp", "type", "detail", "user_id",
                  "project_id", "on_behalf_of", "severity")


class AlarmStore:
    """The alarm and history tables behind one engine; thread-safe (one transaction per call)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        metadata.create_all(self.engine)

    def load_alarms(self) -> list[tuple[dict[str, Any], int]]:
        """Every stored alarm with its version."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(alarm_table.c.body, alarm_table.c.version)).all()
        return [(json.loads(body), version) for body, version in rows]

    def insert_alarm(self, alarm: dict[str, Any], version: int,
                     history: Iterable[dict[str, Any]] = ()) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(alarm_table).values(_alarm_row(alarm, version)))
            _insert_history(conn, history)

    def update_alarms(self, alarms: Iterable[tuple[dict[str, Any], int]],
                      history: Iterable[dict[str, Any]] = ()) -> None:
        """Write these alarm versions (each only over an older one) and history, at once."""
        # bindparam names must differ from the column names an UPDATE sets.
        rows = [{"b_" + key: value for key, value in _alarm_row(alarm, version).items()}
                for alarm, version in alarms]
        history = list(history)
        if not rows and not history:
            return
        with self.engine.begin() as conn:
            if rows:
                statement = (
                    update(alarm_table)
                    .where(and_(alarm_table.c.alarm_id == bindparam("b_alarm_id"),
                                alarm_table.c.version < bindparam("b_version")))
                    .values(project_id=bindparam("b_project_id"), name=bindparam("b_name"),
                            version=bindparam("b_version"), body=bindparam("b_body")))
                conn.execute(statement, rows)
            _insert_history(conn, history)

    def delete_alarm(self, alarm_id: str, history: Iterable[dict[str, Any]] = ()) -> None:
        """Remove the alarm; its history stays (Aodh keeps it, with a deletion entry)."""
        with self.engine.begin() as conn:
            conn.execute(delete(alarm_table).where(alarm_table.c.alarm_id == alarm_id))
            _insert_history(conn, history)

    def history(self, alarm_id: str, on_behalf_of: str | None = None) -> list[dict[str, Any]]:
        """The alarm's changes, newest first; ``on_behalf_of`` limits them to one project."""
        query = select(history_table).where(history_table.c.alarm_id == alarm_id)
        if on_behalf_of is not None:
            query = query.where(history_table.c.on_behalf_of == on_behalf_of)
        query = query.order_by(history_table.c.timestamp.desc(), history_table.c.event_id)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def close(self) -> None:
        self.engine.dispose()


def _alarm_row(alarm: dict[str, Any], version: int) -> dict[str, Any]:
    return {"alarm_id": alarm["alarm_id"], "project_id": alarm.get("project_id"),
            "name": alarm.get("name"), "version": version,
            "body": json.dumps(alarm, sort_keys=True)}


def _insert_history(conn: Any, history: Iterable[dict[str, Any]]) -> None:
    rows = [{field: entry.get(field) for field in HISTORY_FIELDS} for entry in history]
    if rows:
        conn.execute(insert(history_table), rows)
