"""Where the embedded Notifier keeps its alarms, their history, the events not yet
evaluated and the alarm actions not yet delivered (SQLAlchemy; SQLite default).

Alarms live in memory for evaluation (``notifier.evaluator``); this store is
their durable copy, read back at start. Each alarm is one row holding its
Aodh-shaped JSON body and a version number: writes carry the in-memory
version and only ever replace an older one, so a late write can never undo a
newer change made through the API meanwhile.

Nothing accepted is lost to a crash (kill -9; SQLite runs in WAL mode with
synchronous=NORMAL, ``doctor.store``):

- ``event_inbox``: one row per accepted ``POST /v1/events`` batch, committed
  before the 2xx (``add_inbox``). Rows still there at start were not
  evaluated: they are evaluated first.
- ``action_outbox``: one row per alarm action (one firing, one URL), with the
  exact body and the ``X-OpenStack-Request-Id`` every attempt carries. It is
  written in the same transaction as the alarm's state change and the removal
  of the evaluated inbox rows (``commit_evaluation``), and deleted, in
  batches, once the action is final (delivered, refused, or out of retries).
  Rows still there at start are sent again, with the same request id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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

inbox_table = sa.Table(
    "event_inbox", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("events", sa.Text, nullable=False),  # the JSON list, as validated
)

action_table = sa.Table(
    "action_outbox", metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),  # X-OpenStack-Request-Id
    sa.Column("alarm_id", sa.String(64), nullable=False),
    sa.Column("instance_id", sa.String(255)),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the JSON body, exactly as POSTed
    sa.Column("created_at", sa.Float, nullable=False),  # epoch seconds of the firing
)

DELETE_CHUNK = 500  # ids per DELETE ... IN (...): well within every backend's bound


@dataclass(frozen=True)
class StoredAction:
    """One alarm action as the outbox keeps it: POST ``body`` to ``url``."""

    request_id: str
    alarm_id: str
    instance_id: str | None
    url: str
    body: str
    created_at: float


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
        alarms, history = list(alarms), list(history)
        if not alarms and not history:
            return
        with self.engine.begin() as conn:
            _update_alarms(conn, alarms)
            _insert_history(conn, history)

    # -- the event inbox and the action outbox -------------------------------------------

    def add_inbox(self, events: list[dict[str, Any]], received_at: float) -> int:
        """Keep an accepted batch of events until it is evaluated; its row id."""
        with self.engine.begin() as conn:
            result = conn.execute(sa.insert(inbox_table).values(
                received_at=received_at, events=json.dumps(events, separators=(",", ":"))))
            key = result.inserted_primary_key
            if key is None:
                raise RuntimeError("event_inbox: the database returned no row id")
            return int(key[0])

    def remove_inbox(self, ids: Sequence[int]) -> None:
        """Forget batches (a batch refused after all, e.g. the queue filled up meanwhile)."""
        with self.engine.begin() as conn:
            _delete_in(conn, inbox_table.c.id, ids)

    def load_inbox(self) -> list[tuple[int, list[dict[str, Any]]]]:
        """The batches not evaluated yet, oldest first: (row id, events)."""
        query = sa.select(inbox_table.c.id, inbox_table.c.events).order_by(inbox_table.c.id)
        with self.engine.connect() as conn:
            return [(row_id, json.loads(events)) for row_id, events in conn.execute(query)]

    def commit_evaluation(self, alarms: Iterable[tuple[dict[str, Any], int]],
                          history: Iterable[dict[str, Any]], actions: Iterable[StoredAction],
                          inbox_ids: Sequence[int]) -> None:
        """One transaction: the alarms' new versions and history, their actions in the
        outbox, and the evaluated batches out of the inbox. All or nothing."""
        rows = [_action_row(action) for action in actions]
        with self.engine.begin() as conn:
            _update_alarms(conn, list(alarms))
            _insert_history(conn, history)
            if rows:
                conn.execute(sa.insert(action_table), rows)
            _delete_in(conn, inbox_table.c.id, inbox_ids)

    def pending_actions(self) -> list[StoredAction]:
        """Every action not yet final, oldest first."""
        query = sa.select(action_table).order_by(action_table.c.created_at,
                                                 action_table.c.request_id)
        with self.engine.connect() as conn:
            return [StoredAction(**row._mapping) for row in conn.execute(query)]

    def remove_actions(self, request_ids: Sequence[str]) -> None:
        """Forget final actions, all in one transaction."""
        if request_ids:
            with self.engine.begin() as conn:
                _delete_in(conn, action_table.c.request_id, request_ids)

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


def _update_alarms(conn: Any, alarms: list[tuple[dict[str, Any], int]]) -> None:
    """Write these alarm versions, each only over an older one."""
    if not alarms:
        return
    # bindparam names must differ from the column names an UPDATE sets.
    rows = [{"b_" + key: value for key, value in _alarm_row(alarm, version).items()}
            for alarm, version in alarms]
    statement = (
        sa.update(alarm_table)
        .where(sa.and_(alarm_table.c.alarm_id == sa.bindparam("b_alarm_id"),
                       alarm_table.c.version < sa.bindparam("b_version")))
        .values(project_id=sa.bindparam("b_project_id"), name=sa.bindparam("b_name"),
                version=sa.bindparam("b_version"), body=sa.bindparam("b_body")))
    conn.execute(statement, rows)


def _action_row(action: StoredAction) -> dict[str, Any]:
    return {"request_id": action.request_id, "alarm_id": action.alarm_id,
            "instance_id": action.instance_id, "url": action.url, "body": action.body,
            "created_at": action.created_at}


def _delete_in(conn: Any, column: Any, values: Sequence[Any]) -> None:
    for start in range(0, len(values), DELETE_CHUNK):
        conn.execute(sa.delete(column.table).where(
            column.in_(list(values[start:start + DELETE_CHUNK]))))


def _insert_history(conn: Any, history: Iterable[dict[str, Any]]) -> None:
    rows = [{field: entry.get(field) for field in HISTORY_FIELDS} for entry in history]
    if rows:
        conn.execute(sa.insert(history_table), rows)
