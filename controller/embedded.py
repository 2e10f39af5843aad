"""The embedded Controller: a tiny Nova, hosts and VMs in SQLite (or PostgreSQL) via SQLAlchemy.

Every change is published after its commit, in Ceilometer's event format, to
every publisher (``compute.instance.create.end``, ``compute.instance.delete.end``,
and ``compute.instance.update`` on a state change or a migration). That is
Doctor's conservative path, and how the Inspector keeps its host -> VM map
fresh. Each publisher has its own worker thread and queue, so a call returns
as soon as its row is committed, and a slow or failing publisher delays
nobody else.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from controller.base import (
    HOST_DOWN,
    HOST_UNKNOWN,
    HOST_UP,
    VM_STATES,
    Controller,
    ControllerError,
    Host,
    NotFound,
    Server,
)
from doctor import clock
from doctor.events import INSTANCE_UPDATE, instance_update, traits
from doctor.logs import escape
from doctor.outbox import Outbox, OutboxClosed
from notifier.base import EventPublisher

LOG = logging.getLogger(__name__)

INSTANCE_CREATE_END = "compute.instance.create.end"
INSTANCE_DELETE_END = "compute.instance.delete.end"
MAX_NAME = 255
MAX_BATCH = 1000  # events per publish call: a 1000-VM host failure is one request

metadata = MetaData()
hosts = Table(
    "hosts", metadata,
    Column("name", String(MAX_NAME), primary_key=True),
    Column("forced_down", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),  # epoch seconds, doctor.clock
)
servers = Table(
    "servers", metadata,
    Column("id", String(36), primary_key=True),  # a uuid4 in text form
    Column("name", String(MAX_NAME), nullable=False),
    Column("project_id", String(MAX_NAME), nullable=False),
    Column("host", String(MAX_NAME), ForeignKey("hosts.name"), nullable=False, index=True),
    Column("state", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
# Their inserts have on_conflict_do_nothing(); the generic Insert has not.
_DIALECT_INSERTS: dict[str, Callable[..., Any]] = {"sqlite": sqlite.insert,
                                                   "postgresql": postgresql.insert}
_SERVER_COLUMNS = (servers.c.id, servers.c.name, servers.c.project_id, servers.c.host,
                   servers.c.state)

# The hot statements are built once: building one per call cost 3/4 of a reset_state.
_GET_SERVER = select(*_SERVER_COLUMNS).where(servers.c.id == bindparam("server_id"))
# Locks the row on PostgreSQL until the change commits; SQLite relies on the write lock.
_GET_SERVER_FOR_UPDATE = _GET_SERVER.with_for_update()
_RESET_STATE = (update(servers)
                .where(servers.c.id == bindparam("server_id"),
                       servers.c.state != bindparam("new_state"))
                .values(state=bindparam("new_state"), updated_at=bindparam("now"))
                .returning(servers.c.name, servers.c.project_id, servers.c.host))
_IN_CHUNK = 500  # ids per IN (...) list, well under SQLite's bound on parameters
_HOST_STATUS = (select(servers.c.id, hosts.c.forced_down)
                .select_from(servers.outerjoin(hosts, servers.c.host == hosts.c.name))
                .where(servers.c.id == bindparam("server_id")))


def _server(row: Any) -> Server:
    return Server(id=row.id, name=row.name, project_id=row.project_id, host=row.host,
                  state=row.state)


def _check_text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ControllerError(f"{field}: required, a non-empty string", 400)
    if len(value) > MAX_NAME:
        raise ControllerError(f"{field}: longer than {MAX_NAME} characters", 400)
    return value


def _check_state(state: Any) -> str:
    if state not in VM_STATES:
        raise ControllerError(f"state: {state!r} is not a vm_state; expected one of "
                              f"{', '.join(VM_STATES)}", 400)
    return state


def _instance_event(event_type: str, server: Server, state: str | None = None) -> dict[str, Any]:
    event = instance_update(server.id, state or server.state, server.host, server.project_id)
    event["event_type"] = event_type
    return event


def _publisher_outbox(publisher: EventPublisher, index: int) -> Outbox[dict[str, Any]]:
    """One publisher's outbox: a worker thread that publishes what is waiting in one call."""

    def publish(batch: list[dict[str, Any]]) -> None:
        try:
            publisher.publish(batch)
        except Exception as exc:  # noqa: BLE001  (a publisher's failure must not stop the worker)
            LOG.error("publishing %d events via %s failed (instances %s): %s", len(batch),
                      type(publisher).__name__, _instance_ids(batch), escape(exc, 500))

    return Outbox(publish, name=f"controller-publish-{index}", max_batch=MAX_BATCH).start()


def _instance_ids(events: Iterable[dict[str, Any]]) -> str:
    return escape(", ".join(str(traits(event).get("instance_id")) for event in events), 2000)


class Inventory(Controller):
    """Hosts and servers in a database; thread-safe, every change published as an event.

    Takes ownership of ``publishers``: ``close`` delivers what is queued, then
    closes them.
    """

    def __init__(self, engine: Engine, publishers: Iterable[EventPublisher] = ()) -> None:
        if engine.dialect.name not in _DIALECT_INSERTS or not engine.dialect.update_returning:
            raise ControllerError(f"database {engine.dialect.name} is not supported; "
                                  "use SQLite (3.35+) or PostgreSQL")
        self.engine = engine
        metadata.create_all(engine)
        # SQLite has one writer at a time; waiting on this lock is much cheaper than
        # SQLite's busy handler, which sleeps in milliseconds. Other databases lock rows.
        self._write_lock: Any = (threading.Lock() if engine.dialect.name == "sqlite"
                                 else contextlib.nullcontext())
        self._outboxes = [(p, _publisher_outbox(p, i)) for i, p in enumerate(publishers)]

    # -- reads -----------------------------------------------------------------------------

    def list_servers(self, host: str | None = None) -> list[Server]:
        query = select(*_SERVER_COLUMNS).order_by(servers.c.created_at, servers.c.id)
        if host is not None:
            query = query.where(servers.c.host == host)
        with self.engine.connect() as conn:
            return [_server(row) for row in conn.execute(query)]

    def get_server(self, server_id: str) -> Server:
        with self.engine.connect() as conn:
            return self._get(conn, server_id)

    def list_hosts(self) -> list[Host]:
        query = select(hosts.c.name, hosts.c.forced_down).order_by(hosts.c.name)
        with self.engine.connect() as conn:
            return [Host(name=row.name, forced_down=bool(row.forced_down))
                    for row in conn.execute(query)]

    def host_status(self, server_id: str) -> str:
        with self.engine.connect() as conn:
            row = conn.execute(_HOST_STATUS, {"server_id": server_id}).first()
        if row is None:
            raise NotFound(f"no server {server_id}")
        if row.forced_down is None:
            return HOST_UNKNOWN
        return HOST_DOWN if row.forced_down else HOST_UP

    # -- changes ---------------------------------------------------------------------------

    def create_server(self, name: str, project_id: str, host: str) -> Server:
        """A new active server on ``host`` (a host is created on first use)."""
        server = Server(id=str(uuid.uuid4()), name=_check_text("name", name),
                        project_id=_check_text("project_id", project_id),
                        host=_check_text("host", host), state="active")
        now = clock.now()
        with self._writing() as conn:
            self._check_host_usable(conn, host, now)
            conn.execute(insert(servers).values(**server.to_dict(), created_at=now,
                                                updated_at=now))
        self._publish([_instance_event(INSTANCE_CREATE_END, server)])
        return server

    def delete_server(self, server_id: str) -> None:
        with self._writing() as conn:
            server = self._get(conn, server_id, for_update=True)
            conn.execute(delete(servers).where(servers.c.id == server_id))
        self._publish([_instance_event(INSTANCE_DELETE_END, server, state="deleted")])

    def migrate_server(self, server_id: str, host: str) -> None:
        """Move a server to ``host`` (created on first use); not to where it is, nor a down host."""
        _check_text("host", host)
        now = clock.now()
        with self._writing() as conn:
            server = self._get(conn, server_id, for_update=True)
            if server.host == host:
                raise ControllerError(f"server {server_id} is already on host {host}", 409)
            self._check_host_usable(conn, host, now)
            conn.execute(update(servers).where(servers.c.id == server_id)
                         .values(host=host, updated_at=now))
        moved = Server(server.id, server.name, server.project_id, host, server.state)
        self._publish([_instance_event(INSTANCE_UPDATE, moved)])

    def reset_state(self, server_id: str, state: str = "error") -> None:
        _check_state(state)
        now = clock.now()
        # One statement for the common case: the row changes and tells what the event needs.
        with self._writing() as conn:
            row = conn.execute(_RESET_STATE, {"server_id": server_id, "new_state": state,
                                              "now": now}).first()
            if row is None:
                self._get(conn, server_id)  # NotFound, or already in that state: no change
                return
        server = Server(server_id, row.name, row.project_id, row.host, state)
        self._publish([_instance_event(INSTANCE_UPDATE, server)])

    batch_reset = True

    def reset_states(self, server_ids: list[str], state: str = "error") -> list[str]:
        """One transaction for them all, one notification batch; the ids not found."""
        _check_state(state)
        now = clock.now()
        wanted = list(dict.fromkeys(server_ids))
        changed: list[Server] = []
        with self._writing() as conn:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start:start + _IN_CHUNK]
                rows = conn.execute(
                    update(servers).where(servers.c.id.in_(chunk), servers.c.state != state)
                    .values(state=state, updated_at=now)
                    .returning(servers.c.id, servers.c.name, servers.c.project_id,
                               servers.c.host)).all()
                changed += [Server(r.id, r.name, r.project_id, r.host, state) for r in rows]
            found = {s.id for s in changed}
            unchanged = [i for i in wanted if i not in found]
            existing: set[str] = set()
            for start in range(0, len(unchanged), _IN_CHUNK):  # already in that state?
                chunk = unchanged[start:start + _IN_CHUNK]
                existing.update(conn.execute(select(servers.c.id).where(
                    servers.c.id.in_(chunk))).scalars())
        if changed:
            self._publish([_instance_event(INSTANCE_UPDATE, s) for s in changed])
        return [i for i in unchanged if i not in existing]

    def force_down(self, host: str, down: bool = True) -> None:
        with self._writing() as conn:
            result = conn.execute(update(hosts).where(hosts.c.name == host)
                                  .values(forced_down=bool(down)))
            if result.rowcount == 0:
                raise NotFound(f"no host {host}")

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every event so far was handed to its publisher (tests, shutdown)."""
        return all(outbox.flush(timeout_s) for _, outbox in self._outboxes)

    def close(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued (waiting at most ``timeout_s``), then stop the workers."""
        for publisher, outbox in self._outboxes:
            if outbox.closed:
                continue
            lost = outbox.close(timeout_s)
            if lost:
                LOG.error("controller closing: %d events still unpublished after %.1f s "
                          "(instances %s)", len(lost), timeout_s, _instance_ids(lost))
            publisher.close()

    # -- inside -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    @staticmethod
    def _get(conn: Connection, server_id: str, for_update: bool = False) -> Server:
        query = _GET_SERVER_FOR_UPDATE if for_update else _GET_SERVER
        row = conn.execute(query, {"server_id": server_id}).first()
        if row is None:
            raise NotFound(f"no server {server_id}")
        return _server(row)

    @staticmethod
    def _check_host_usable(conn: Connection, host: str, now: float) -> None:
        """Create ``host`` if new; refuse a forced-down one, as Nova's scheduler would."""
        # INSERT ... ON CONFLICT DO NOTHING: two callers may bring the same new host at once.
        dialect_insert = _DIALECT_INSERTS[conn.dialect.name]
        conn.execute(dialect_insert(hosts).values(name=host, forced_down=False, created_at=now)
                     .on_conflict_do_nothing())
        if conn.execute(select(hosts.c.forced_down).where(hosts.c.name == host)).scalar():
            raise ControllerError(f"host {host} is forced down", 409)

    def _publish(self, events: list[dict[str, Any]]) -> None:
        for _, outbox in self._outboxes:
            try:
                outbox.put_many(events)
            except OutboxClosed:
                LOG.error("controller closed: %d events not published (instances %s)",
                          len(events), _instance_ids(events))
