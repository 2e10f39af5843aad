"""The Inspector's event log: every accepted event, stored before the 202.

The primary key is the monitor's ``monitor_event_id``, so an event that
arrives twice (a retry, two monitors, two inspectors sharing the database) is
stored once and acted on once. Each event records how far its handling got,
so a restarted Inspector finishes what a killed one left, without notifying
twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from doctor import clock
from doctor.events import HostEvent

PENDING, DONE = "pending", "done"

metadata = MetaData()
events_table = Table(
    "events", metadata,
    Column("monitor_event_id", String(255), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("hostname", String(255), nullable=False, index=True),
    Column("time", Float, nullable=False),
    Column("monitor", String(255), nullable=False),
    Column("received_at", Float, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("notified_at", Float),  # shortcut events published (not redone after a restart)
    Column("done_at", Float),
    Column("outcome", Text),  # JSON summary of what was done
)


@dataclass
class StoredEvent:
    event: HostEvent
    received_at: float
    status: str
    notified_at: float | None
    done_at: float | None
    outcome: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {**self.event.to_doctor(), "received_at": clock.isoformat(self.received_at),
                "status": self.status, "outcome": self.outcome}


class EventLog:
    """Accepted events and their progress, in a SQLAlchemy database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def accept(self, events: list[HostEvent]) -> list[HostEvent]:
        """Store the events; returns those not seen before (in order)."""
        new = []
        now = clock.now()
        with self.engine.begin() as db:
            for event in events:
                try:
                    with db.begin_nested():
                        db.execute(insert(events_table).values(
                            monitor_event_id=event.monitor_event_id, type=event.type,
                            hostname=event.hostname, time=event.time, monitor=event.monitor,
                            received_at=now, status=PENDING))
                except IntegrityError:
                    continue  # seen before: stored and acted on once already
                new.append(event)
        return new

    def mark_notified(self, event_id: str) -> None:
        self._update(event_id, notified_at=clock.now())

    def mark_done(self, event_id: str, outcome: dict[str, Any]) -> None:
        self._update(event_id, status=DONE, done_at=clock.now(), outcome=json.dumps(outcome))

    def _update(self, event_id: str, **values: Any) -> None:
        with self.engine.begin() as db:
            db.execute(update(events_table)
                       .where(events_table.c.monitor_event_id == event_id).values(**values))

    def pending(self) -> list[StoredEvent]:
        """Events accepted but not finished (a restart resumes them), oldest first."""
        query = (select(events_table).where(events_table.c.status == PENDING)
                 .order_by(events_table.c.received_at))
        return self._rows(query)

    def get(self, event_id: str) -> StoredEvent | None:
        rows = self._rows(select(events_table)
                          .where(events_table.c.monitor_event_id == event_id))
        return rows[0] if rows else None

    def latest_by_host(self) -> dict[str, StoredEvent]:
        """Each host's most recent event (by the monitor's time), read as one row per host."""
        newest = (select(events_table.c.hostname, func.max(events_table.c.time).label("time"))
                  .group_by(events_table.c.hostname).subquery())
        query = (select(events_table)
                 .join(newest, and_(events_table.c.hostname == newest.c.hostname,
                                    events_table.c.time == newest.c.time))
                 .order_by(events_table.c.time, events_table.c.received_at))
        return {stored.event.hostname: stored for stored in self._rows(query)}

    def clamp_future(self, max_ahead_s: float) -> int:
        """Set the time of every event stamped more than ``max_ahead_s`` after it was
        received to when it was received; returns how many there were.

        Such rows come from versions that took any time. Left as they were, a year-9999
        event would stay its host's latest for ever, and every later event of the host would
        be skipped as older."""
        with self.engine.begin() as db:
            return db.execute(update(events_table)
                              .where(events_table.c.time
                                     > events_table.c.received_at + max_ahead_s)
                              .values(time=events_table.c.received_at)).rowcount

    def prune(self, older_than_s: float) -> int:
        """Remove finished events done more than ``older_than_s`` ago; returns how many.

        Never an unfinished event (a restart must resume it), nor a host's latest event (a
        restart rebuilds the hosts' states from them). A pruned event's id is forgotten: a
        monitor re-sending it that much later would have it acted on again, which is why
        the retention is days, far beyond any monitor's retries.
        """
        newer = events_table.alias("newer")
        newest_time = (select(func.max(newer.c.time))
                       .where(newer.c.hostname == events_table.c.hostname).scalar_subquery())
        with self.engine.begin() as db:
            return db.execute(delete(events_table).where(
                events_table.c.status == DONE,
                events_table.c.done_at < clock.now() - older_than_s,
                events_table.c.time < newest_time)).rowcount

    def _rows(self, query: Any) -> list[StoredEvent]:
        with self.engine.connect() as db:
            rows = db.execute(query).mappings().all()
        return [StoredEvent(
            event=HostEvent(type=r["type"], hostname=r["hostname"], time=r["time"],
                            monitor=r["monitor"], monitor_event_id=r["monitor_event_id"]),
            received_at=r["received_at"], status=r["status"], notified_at=r["notified_at"],
            done_at=r["done_at"], outcome=json.loads(r["outcome"]) if r["outcome"] else None)
            for r in rows]
