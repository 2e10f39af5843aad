"""What the parts keep is their user's alone: state directories 0700, SQLite files 0600 (made
so when found open), profile files 0600."""

from __future__ import annotations

import os
import stat

import pytest
from sqlalchemy import text

from doctor.profiler import Profiler
from doctor.store import make_engine


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def usual_umask():
    """The usual umask (022): what is created must be closed on purpose, not by the umask."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def test_a_new_state_directory_is_0700_and_a_new_database_0600(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCTOR_STATE_DIR", str(tmp_path / "state"))
    database = tmp_path / "state" / "inner" / "inspector.db"
    engine = make_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert mode(tmp_path / "state") == 0o700 and mode(database.parent) == 0o700
    assert mode(database) == 0o600
    for suffix in ("-wal", "-shm"):  # SQLite gives them the database file's mode
        side = database.with_name(database.name + suffix)
        if side.exists():
            assert mode(side) == 0o600
    engine.dispose()


def test_an_existing_open_database_and_state_directory_are_closed(tmp_path, monkeypatch):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    monkeypatch.setenv("DOCTOR_STATE_DIR", str(state))
    database = state / "notifier.db"
    database.write_bytes(b"")
    os.chmod(database, 0o644)
    make_engine(f"sqlite:///{database}").dispose()
    assert mode(state) == 0o700 and mode(database) == 0o600


def test_another_existing_directory_keeps_its_mode_its_database_is_0600(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCTOR_STATE_DIR", str(tmp_path / "elsewhere"))
    shared = tmp_path / "shared"  # e.g. /tmp: never chmod'ed
    shared.mkdir()
    os.chmod(shared, 0o1777)
    make_engine(f"sqlite:///{shared}/controller.db").dispose()
    assert mode(shared) == 0o1777 and mode(shared / "controller.db") == 0o600


def test_profile_files_are_0600(tmp_path):
    path = tmp_path / "profile.jsonl"
    Profiler(str(path)).record("T01")
    assert mode(path) == 0o600
    older = tmp_path / "older.jsonl"
    older.write_text("")
    os.chmod(older, 0o644)
    Profiler(str(older)).record("T02")
    assert mode(older) == 0o600
