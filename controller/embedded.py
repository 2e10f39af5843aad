"""The embedded Controller: a tiny Nova, hosts and VMs in SQLite (or PostgreSQL) via SQLAlchemy.

Every change is published after its commit, in Ceilometer's event format, to
every publisher (``compute.instance.create.end``, ``compute.instance.delete.end``,
and ``compute.instance.update`` on a state change or a migration). That is
Doctor's conservative path, and how the Inspector keeps its host -> VM map
fresh. Each publisher has its own worker thread and queue, so a call returns
as soon as its row is committed, and a slow or failing publisher delays
nobody else.

Nothing is lost to a crash: a change's events are stored, one row per publisher, in the
change's own transaction (table ``notifications``). A row is deleted once its publisher
took the event; a publisher that fails is retried, in order, with backoff, for
``retry_for_s``, and what is left at a stop or a kill -9 is sent at the next start, with
the same ``message_id`` (at least once). A receiver's refusal (a 4xx) is final: logged
with the VM ids and dropped.
"""

from __future__ import annotations

import contextlib
import json
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
    Integer,
    MetaData,
    String,
    Table,
    Text,
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
from doctor.retry import RetryError
from notifier.base import EventPublisher, PublishError, publish_until_taken

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
# Events not yet taken by their publisher (``publisher``: its index in the list given).
notifications = Table(
    "notifications", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("publisher", Integer, nullable=False, index=True),
    Column("event", Text, nullable=False),  # the event's JSON
    Column("created_at", Float, nullable=False),
)
DEFAULT_RETRY_FOR_S = 3600.0  # a publisher failing longer loses what it had not taken
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


Staged = tuple[int, dict[str, Any]]  # a notification's row id and its event




def _instance_ids(events: Iterable[dict[str, Any]]) -> str:
    return escape(", ".join(str(traits(event).get("instance_id")) for event in events), 2000)


class Inventory(Controller):
    """Hosts and servers in a database; thread-safe, every change published as an event.

    Takes ownership of ``publishers``: ``close`` delivers what is queued, then
    closes them.
    """

    def __init__(self, engine: Engine, publishers: Iterable[EventPublisher] = (),
                 retry_for_s: float = DEFAULT_RETRY_FOR_S) -> None:
        if engine.dialect.name not in _DIALECT_INSERTS or not engine.dialect.update_returning:
            raise ControllerError(f"database {engine.dialect.name} is not supported; "
                                  "use SQLite (3.35+) or PostgreSQL")
        self.engine = engine
        metadata.create_all(engine)
        # SQLite has one writer at a time; waiting on this lock is much cheaper than
        # SQLite's busy handler, which sleeps in milliseconds. Other databases lock rows.
        self._write_lock: Any = (threading.Lock() if engine.dialect.name == "sqlite"
                                 else contextlib.nullcontext())
        self.retry_for_s = retry_for_s
        self._closing = threading.Event()
        publishers = list(publishers)
        self._outboxes = [(p, self._outbox(p, i)) for i, p in enumerate(publishers)]
        self._resume(len(publishers))
        for _, outbox in self._outboxes:
            outbox.start()

    def _outbox(self, publisher: EventPublisher, index: int) -> Outbox[Staged]:
        """One publisher's outbox: a worker thread that publishes what is waiting in one
        call, retried until it is taken, then deletes its rows."""

        def publish(batch: list[Staged]) -> None:
            events = [event for _, event in batch]

            def failed(exc: BaseException, attempts: int, delay: float | None) -> None:
                if attempts == 1 or attempts % 10 == 0:
                    LOG.error("publishing %d events via %s failed (instances %s): %s; "
                              "retrying", len(events), type(publisher).__name__,
                              _instance_ids(events), escape(exc, 500))

            try:
                publish_until_taken(publisher, events, retry_for_s=self.retry_for_s,
                                    stop=self._closing, on_failure=failed)
            except PublishError as exc:  # final: refused
                LOG.error("%s refused %d events (instances %s): %s; not sent again",
                          type(publisher).__name__, len(events), _instance_ids(events),
                          escape(exc, 500))
            except RetryError as exc:
                if self._closing.is_set():  # kept: sent at the next start
                    LOG.warning("controller stopping: %d events for %s kept for the next "
                                "start", len(events), type(publisher).__name__)
                    return
                LOG.error("%d events for %s lost after %.0f s of failures (instances %s): "
                          "%s", len(events), type(publisher).__name__, self.retry_for_s,
                          _instance_ids(events), escape(exc, 500))
            except Exception as exc:  # noqa: BLE001  (a bug must not stop the worker)
                LOG.exception("publishing %d events via %s failed unexpectedly (instances "
                              "%s): %s", len(events), type(publisher).__name__,
                              _instance_ids(events), escape(exc, 500))
            self._forget([row_id for row_id, _ in batch])

        return Outbox(publish, name=f"controller-publish-{index}", max_batch=MAX_BATCH)

    def _resume(self, count: int) -> None:
        """Queue what a previous run had not delivered, oldest first; rows of a publisher
        that is no longer configured are dropped, said so."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(notifications.c.id, notifications.c.publisher,
                                       notifications.c.event)
                                .order_by(notifications.c.id)).all()
        if not rows:
            return
        orphans = [r.id for r in rows if not 0 <= r.publisher < count]
        for index, (_, outbox) in enumerate(self._outboxes):
            outbox.put_many([(r.id, json.loads(r.event)) for r in rows if r.publisher == index])
        LOG.warning("%d notifications from before a restart are sent again",
                    len(rows) - len(orphans))
        if orphans:
            LOG.error("%d notifications for publishers no longer configured dropped",
                      len(orphans))
            self._forget(orphans)

    def _stage(self, conn: Connection, events: list[dict[str, Any]]) -> list[list[Staged]]:
        """Store ``events`` for each publisher within the caller's transaction."""
        if not self._outboxes or not events:
            return []
        now = clock.now()
        texts = [json.dumps(e) for e in events]
        staged = []
        for index in range(len(self._outboxes)):
            ids = conn.execute(
                insert(notifications).returning(notifications.c.id,
                                                sort_by_parameter_order=True),
                [{"publisher": index, "event": t, "created_at": now} for t in texts]
            ).scalars().all()
            staged.append(list(zip(ids, events, strict=True)))
        return staged

    def _forget(self, row_ids: list[int]) -> None:
        for start in range(0, len(row_ids), _IN_CHUNK):
            with self._writing() as conn:
                conn.execute(delete(notifications).where(
                    notifications.c.id.in_(row_ids[start:start + _IN_CHUNK])))

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
            staged = self._stage(conn, [_instance_event(INSTANCE_CREATE_END, server)])
        self._queue(staged)
        return server

    def delete_server(self, server_id: str) -> None:
        with self._writing() as conn:
            server = self._get(conn, server_id, for_update=True)
            conn.execute(delete(servers).where(servers.c.id == server_id))
            staged = self._stage(conn, [_instance_event(INSTANCE_DELETE_END, server,
                                                        state="deleted")])
        self._queue(staged)

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
            staged = self._stage(conn, [_instance_event(INSTANCE_UPDATE, moved)])
        self._queue(staged)

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
            staged = self._stage(conn, [_instance_event(INSTANCE_UPDATE, server)])
        self._queue(staged)

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
            staged = self._stage(conn, [_instance_event(INSTANCE_UPDATE, s) for s in changed])
        self._queue(staged)
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
        """Publish what is queued (waiting at most ``timeout_s``), then stop the workers;
        what is left stays stored for the next start."""
        deadline = clock.monotonic() + timeout_s
        for _, outbox in self._outboxes:
            outbox.flush(max(0.0, deadline - clock.monotonic()))
        self._closing.set()  # a publisher still retrying gives up now
        for publisher, outbox in self._outboxes:
            if outbox.closed:
                continue
            left = outbox.close(max(0.0, deadline - clock.monotonic()))
            if left:
                LOG.warning("controller closing: %d events not yet published, kept for the "
                            "next start (instances %s)", len(left),
                            _instance_ids(e for _, e in left))
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

    def _queue(self, staged: list[list[Staged]]) -> None:
        """Hand committed notifications to their publishers' workers."""
        for (_, outbox), items in zip(self._outboxes, staged, strict=False):
            try:
                outbox.put_many(items)
            except OutboxClosed:  # stored: the next start sends them
                LOG.warning("controller closed: %d events kept for the next start",
                            len(items))
