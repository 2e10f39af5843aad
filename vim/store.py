"""Registered VIMs in a SQLAlchemy database (SQLite by default, PostgreSQL when shared).

Besides the VIMs, two small tables let a monitor manager follow changes without reading every
row every second: ``vim_revision`` holds one counter, bumped by every change of what must be
monitored (register, update, delete, a new monitor id), and each VIM row records the revision
of its last change; ``vim_deletions`` remembers deleted ids by revision. Bumping the counter is
each such transaction's first statement, so writers take the lock at once (SQLite never has to
upgrade a read transaction) and revisions commit in order.

Status changes do not bump the revision: they go through ``update_status`` /
``update_statuses``, which apply a report only if its monitor id is still the VIM's current
one. Otherwise the report is refused (the seed's ``bad_action``) and the monitor must stop.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
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
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from doctor import clock
from doctor.logs import escape
from vim.base import PENDING, REACHABLE, UNREACHABLE
from vim.crypto import PasswordBox

LOG = logging.getLogger(__name__)

STATUSES = (PENDING, REACHABLE, UNREACHABLE)
# What a monitor may report: PENDING is only the state before its first verdict.
VERDICTS = (REACHABLE, UNREACHABLE)
BAD_ACTION = "bad_action"
_CHUNK = 500  # ids per IN (...) clause
_SCHEMA_LOCK = 0x0D0C_7031  # PostgreSQL advisory lock key: making the schema

metadata = MetaData()
vims = Table(
    "vims", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("auth_url", Text, nullable=False),
    Column("address", String(45), nullable=False),  # the auth_url host's IPv4, resolved once
    Column("username", String(255), nullable=False),
    Column("password", Text, nullable=False),  # Fernet token, never the password itself
    Column("project_name", String(255), nullable=False),
    Column("project_domain_name", String(255), nullable=False),
    Column("user_domain_name", String(255), nullable=False),
    Column("cert_verify", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("previous_status", String(16)),
    Column("status_at", Float),  # the current monitor's last verdict
    Column("monitor_id", String(36)),  # NULL: no monitor yet (a manager claims it)
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("revision", Integer, nullable=False, index=True),
)
revision_table = Table(
    "vim_revision", metadata,
    Column("id", Integer, primary_key=True),
    Column("revision", Integer, nullable=False),
)
deletions = Table(
    "vim_deletions", metadata,
    Column("vim_id", String(36), primary_key=True),
    Column("revision", Integer, nullable=False, index=True),
    Column("deleted_at", Float, nullable=False),
)

# Columns a reader gets; the password column is never among them.
PUBLIC_COLUMNS = [c for c in vims.c if c.name not in ("password", "previous_status")]


class DuplicateName(ValueError):
    """Another VIM has this name."""


@dataclass(frozen=True)
class VimRecord:
    """One VIM as stored, without its password."""

    id: str
    name: str
    auth_url: str
    address: str
    username: str
    project_name: str
    project_domain_name: str
    user_domain_name: str
    cert_verify: bool
    status: str
    status_at: float | None
    monitor_id: str | None
    created_at: float
    updated_at: float
    revision: int

    @classmethod
    def from_row(cls, row: Any) -> VimRecord:
        return cls(**{c.name: row._mapping[c.name] for c in PUBLIC_COLUMNS})

    def to_api(self) -> dict[str, Any]:
        """The API's view: no password, no revision; times in ISO 8601 UTC."""
        return {
            "id": self.id, "name": self.name, "auth_url": self.auth_url,
            "address": self.address, "username": self.username,
            "project_name": self.project_name,
            "project_domain_name": self.project_domain_name,
            "user_domain_name": self.user_domain_name, "cert_verify": self.cert_verify,
            "status": self.status, "monitor_id": self.monitor_id,
            "status_at": clock.isoformat(self.status_at) if self.status_at else None,
            "created_at": clock.isoformat(self.created_at),
            "updated_at": clock.isoformat(self.updated_at),
        }


@dataclass(frozen=True)
class StatusReport:
    """A monitor's verdict on its VIM."""

    vim_id: str
    monitor_id: str
    status: str


@dataclass(frozen=True)
class StatusResult:
    """What became of a report: applied (``changed`` or a confirmation) or refused."""

    report: StatusReport
    refused: bool
    changed: bool = False
    previous_status: str = ""
    name: str = ""
    project_name: str = ""
    reason: str = ""


class VimStore:
    """The VIM table and its change log."""

    def __init__(self, engine: Engine, passwords: PasswordBox) -> None:
        self.engine = engine
        self.passwords = passwords
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Servers starting at once on one database: one makes the tables (DDL is
                # transactional there), the others wait and find them.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            metadata.create_all(conn)
            if conn.execute(select(revision_table.c.revision)).first() is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(revision_table).values(id=1, revision=0))
                except IntegrityError:
                    pass  # another server made it at the same time (SQLite)

    # -- the change log -----------------------------------------------------------------

    @staticmethod
    def _bump(conn: Connection) -> int:
        conn.execute(update(revision_table).where(revision_table.c.id == 1)
                     .values(revision=revision_table.c.revision + 1))
        return conn.execute(select(revision_table.c.revision)).scalar_one()

    def revision(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(revision_table.c.revision)).scalar_one()

    def changes_since(self, revision: int) -> tuple[int, list[VimRecord], list[str]]:
        """(current revision, VIMs changed after ``revision``, ids deleted after it)."""
        with self.engine.begin() as conn:
            now = conn.execute(select(revision_table.c.revision)).scalar_one()
            if now == revision:
                return now, [], []
            rows = conn.execute(select(*PUBLIC_COLUMNS).where(
                and_(vims.c.revision > revision, vims.c.revision <= now))).all()
            gone = conn.execute(select(deletions.c.vim_id).where(
                and_(deletions.c.revision > revision, deletions.c.revision <= now))).all()
        return now, [VimRecord.from_row(r) for r in rows], [g[0] for g in gone]

    def snapshot(self) -> tuple[int, list[VimRecord]]:
        """(current revision, every VIM), read in one transaction."""
        with self.engine.begin() as conn:
            now = conn.execute(select(revision_table.c.revision)).scalar_one()
            rows = conn.execute(select(*PUBLIC_COLUMNS)).all()
        return now, [VimRecord.from_row(r) for r in rows]

    def prune_deletions(self, older_than_s: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(deletions).where(
                deletions.c.deleted_at < clock.now() - older_than_s))

    # -- what users do ------------------------------------------------------------------

    def create(self, name: str, spec: dict[str, Any], address: str) -> VimRecord:
        """A new VIM in PENDING, without a monitor yet; DuplicateName if the name is taken."""
        now = clock.now()
        vim_id = str(uuid.uuid4())
        values = {
            "id": vim_id, "name": name, "auth_url": spec["auth_url"], "address": address,
            "username": spec["username"],
            "password": self.passwords.encrypt(spec["password"]),
            "project_name": spec["project_name"],
            "project_domain_name": spec["project_domain_name"],
            "user_domain_name": spec["user_domain_name"],
            "cert_verify": spec["cert_verify"], "status": PENDING, "status_at": None,
            "monitor_id": None, "created_at": now, "updated_at": now,
        }
        try:
            with self.engine.begin() as conn:
                values["revision"] = self._bump(conn)
                conn.execute(insert(vims).values(**values))
        except IntegrityError:
            raise DuplicateName(f"a VIM named {name!r} exists already") from None
        return self.get(vim_id)  # type: ignore[return-value]

    def get(self, vim_id: str) -> VimRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*PUBLIC_COLUMNS).where(vims.c.id == vim_id)).first()
        return VimRecord.from_row(row) if row is not None else None

    def find(self, name: str | None = None) -> list[VimRecord]:
        query = select(*PUBLIC_COLUMNS).order_by(vims.c.name)
        if name is not None:
            query = query.where(vims.c.name == name)
        with self.engine.connect() as conn:
            return [VimRecord.from_row(r) for r in conn.execute(query).all()]

    def update(self, vim_id: str, changes: dict[str, Any],
               address: str | None = None) -> VimRecord | None:
        """Apply ``changes`` (validated fields, maybe ``name``); None if there is no such VIM.

        A new auth_url (with its resolved ``address``) ends the current monitor: the monitor
        id is cleared, the status goes back to PENDING, and a manager claims the VIM anew.
        """
        values: dict[str, Any] = {k: v for k, v in changes.items() if k != "password"}
        if "password" in changes:
            values["password"] = self.passwords.encrypt(changes["password"])
        try:
            with self.engine.begin() as conn:
                revision = self._bump(conn)
                current = conn.execute(select(vims.c.auth_url).where(vims.c.id == vim_id)).first()
                if current is None:
                    return None
                if "auth_url" in values and values["auth_url"] != current[0]:
                    values.update(address=address, monitor_id=None, status=PENDING,
                                  status_at=None, previous_status=None)
                values.update(updated_at=clock.now(), revision=revision)
                conn.execute(update(vims).where(vims.c.id == vim_id).values(**values))
        except IntegrityError:
            raise DuplicateName(f"a VIM named {changes.get('name')!r} exists already") from None
        return self.get(vim_id)

    def delete(self, vim_id: str) -> bool:
        with self.engine.begin() as conn:
            revision = self._bump(conn)
            gone = conn.execute(delete(vims).where(vims.c.id == vim_id)).rowcount
            if gone:
                conn.execute(delete(deletions).where(deletions.c.vim_id == vim_id))
                conn.execute(insert(deletions).values(vim_id=vim_id, revision=revision,
                                                      deleted_at=clock.now()))
        return bool(gone)

    # -- what monitor managers do -------------------------------------------------------

    def claim(self, claims: Iterable[tuple[str, str | None]]) -> dict[str, str]:
        """New monitor ids for VIMs, each only if its monitor id is still the ``old`` one given
        (so two managers never both take a VIM). Returns vim id -> the new monitor id asked
        for; whether it was taken shows in the VIM's row (read it through ``changes_since``).
        """
        claims = list(claims)
        if not claims:
            return {}
        new_ids = {vim_id: str(uuid.uuid4()) for vim_id, _old in claims}
        with self.engine.begin() as conn:
            revision = self._bump(conn)
            from_none = [{"vid": v, "new": new_ids[v]} for v, old in claims if old is None]
            from_old = [{"vid": v, "old": old, "new": new_ids[v]} for v, old in claims
                        if old is not None]
            if from_none:
                conn.execute(update(vims).where(and_(vims.c.id == bindparam("vid"),
                                                     vims.c.monitor_id.is_(None)))
                             .values(monitor_id=bindparam("new"), revision=revision),
                             from_none)
            if from_old:
                conn.execute(update(vims).where(and_(vims.c.id == bindparam("vid"),
                                                     vims.c.monitor_id == bindparam("old")))
                             .values(monitor_id=bindparam("new"), revision=revision),
                             from_old)
        return new_ids

    def update_status(self, vim_id: str, monitor_id: str, status: str) -> StatusResult:
        """Apply one monitor's verdict; refused (``bad_action``) unless ``monitor_id`` is the
        VIM's current monitor. The one way a VIM's status changes (see update_statuses)."""
        return self.update_statuses([StatusReport(vim_id, monitor_id, status)])[0]

    def update_statuses(self, reports: list[StatusReport]) -> list[StatusResult]:
        """``update_status`` for many reports in one transaction (the manager's batches).

        Each row is updated only where its monitor id is the report's, as the transaction's
        first statements; so a report is applied or refused atomically, even with several
        servers on one PostgreSQL database.
        """
        for report in reports:
            if report.status not in VERDICTS:
                raise ValueError(f"status: {report.status!r} is not one of "
                                 f"{', '.join(VERDICTS)}")
        results: list[StatusResult] = []
        if not reports:
            return results
        now = clock.now()
        applied: list[StatusReport] = []
        with self.engine.begin() as conn:
            statement = (update(vims)
                         .where(and_(vims.c.id == bindparam("vid"),
                                     vims.c.monitor_id == bindparam("mid")))
                         .values(previous_status=vims.c.status, status=bindparam("st"),
                                 status_at=now))
            for report in reports:
                done = conn.execute(statement, {"vid": report.vim_id,
                                                "mid": report.monitor_id,
                                                "st": report.status}).rowcount
                if done:
                    applied.append(report)
            rows: dict[str, Any] = {}
            ids = [r.vim_id for r in reports]
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                for found in conn.execute(select(vims.c.id, vims.c.name, vims.c.project_name,
                                                 vims.c.status, vims.c.previous_status,
                                                 vims.c.monitor_id)
                                          .where(vims.c.id.in_(chunk))):
                    rows[found.id] = found
        applied_set = {id(r) for r in applied}
        for report in reports:
            row: Any = rows.get(report.vim_id)
            if id(report) in applied_set:
                results.append(StatusResult(report, refused=False,
                                            changed=row.previous_status != row.status,
                                            previous_status=row.previous_status or "",
                                            name=row.name, project_name=row.project_name))
                continue
            if row is None:
                reason = f"{BAD_ACTION}: VIM {report.vim_id} no longer exists"
            else:
                reason = (f"{BAD_ACTION}: monitor {report.monitor_id} is not the current "
                          f"monitor of VIM {row.name} ({report.vim_id}), "
                          f"{row.monitor_id or 'none'} is")
            LOG.warning("status %s refused: %s", report.status, escape(reason, 600))
            results.append(StatusResult(report, refused=True, reason=reason))
        return results
