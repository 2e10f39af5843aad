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

import sqlalchemy as sa

from doctor.store import make_engine

metadata = sa.MetaData()

alarm_table = sa.Table(
    "alarm", metadata,
    sa.Column("alarm_id", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.String(255), index=True),
    sa.Column("name", sa.String(255)),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)

history_table = sa.Table(
    "alarm_history", metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("alarm_id", sa.String(64), index=True, nullable=False),
    sa.Column("timestamp", sa.String(32), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("user_id", sa.String(255)),
    sa.Column("project_id", sa.String(255)),
    sa.Column("on_behalf_of", sa.String(255), index=True),
    sa.Column("severity", sa.String(32)),
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
            rows = conn.execute(sa.select(alarm_table.c.body, alarm_table.c.version)).all()
        return [(json.loads(body), version) for body, version in rows]

    def insert_alarm(self, alarm: dict[str, Any], version: int,
                     history: Iterable[dict[str, Any]] = ()) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.insert(alarm_table).values(_alarm_row(alarm, version)))
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
                    sa.update(alarm_table)
                    .where(sa.and_(alarm_table.c.alarm_id == sa.bindparam("b_alarm_id"),
                                   alarm_table.c.version < sa.bindparam("b_version")))
                    .values(project_id=sa.bindparam("b_project_id"),
                            name=sa.bindparam("b_name"), version=sa.bindparam("b_version"),
                            body=sa.bindparam("b_body")))
                conn.execute(statement, rows)
            _insert_history(conn, history)

    def delete_alarm(self, alarm_id: str, history: Iterable[dict[str, Any]] = ()) -> None:
        """Remove the alarm; its history stays (Aodh keeps it, with a deletion entry)."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(alarm_table).where(alarm_table.c.alarm_id == alarm_id))
            _insert_history(conn, history)

    def history(self, alarm_id: str, on_behalf_of: str | None = None) -> list[dict[str, Any]]:
        """The alarm's changes, newest first; ``on_behalf_of`` limits them to one project."""
        query = sa.select(history_table).where(history_table.c.alarm_id == alarm_id)
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
        conn.execute(sa.insert(history_table), rows)
