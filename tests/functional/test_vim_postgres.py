"""The VIM store on a real PostgreSQL, as several doctor-vim servers share it.

Each "server" here is a VimStore on an engine of its own (its own connection pool), all on one
database of a throw-away PostgreSQL cluster, working from threads at once.
"""

from __future__ import annotations

import threading

import pytest

from doctor.store import make_engine
from vim.crypto import PasswordBox
from vim.store import BAD_ACTION, REACHABLE, UNREACHABLE, VimStore

SPEC = {"auth_url": "http://198.18.0.1:5000/v3", "username": "admin",
        "password": "test-only-password", "project_name": "demo",
        "project_domain_name": "Default", "user_domain_name": "Default", "cert_verify": True}


@pytest.fixture
def servers(postgres_server, tmp_path):
    """make(n): n stores on the cluster's database, each with an engine of its own."""
    engines = []
    box = PasswordBox.from_key_file(str(tmp_path / "vim.key"))

    def make(count: int) -> list[VimStore]:
        made: list[VimStore | None] = [None] * count
        errors: list[BaseException] = []
        gate = threading.Barrier(count)

        def start(index: int) -> None:
            engine = make_engine(postgres_server.url)
            engines.append(engine)
            gate.wait(10)
            try:
                made[index] = VimStore(engine, box)
            except BaseException as exc:  # noqa: BLE001  (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        return made  # type: ignore[return-value]

    yield make
    for engine in engines:
        engine.dispose()


def run_at_once(*work) -> None:
    errors: list[BaseException] = []
    gate = threading.Barrier(len(work))

    def run(job) -> None:
        gate.wait(10)
        try:
            job()
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors


def test_servers_starting_at_once_make_the_schema_once(servers):
    stores = servers(4)
    with stores[0].engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM vim_revision").scalar_one() == 1
    record = stores[1].create("vim-1", SPEC, "198.18.0.1")
    assert stores[3].get(record.id).name == "vim-1"


def test_two_servers_claiming_at_once_each_vim_goes_to_one(servers):
    first, second = servers(2)
    ids = [first.create(f"vim-{i}", SPEC, "198.18.0.1").id for i in range(200)]
    asked: dict[str, dict[str, str]] = {}

    def claim(name: str, store: VimStore) -> None:
        asked[name] = {}
        for start in range(0, len(ids), 20):  # the manager's batches, interleaving
            asked[name].update(store.claim([(i, None) for i in ids[start:start + 20]]))

    run_at_once(lambda: claim("first", first), lambda: claim("second", second))
    won = {"first": 0, "second": 0}
    for vim_id in ids:
        monitor_id = second.get(vim_id).monitor_id
        winners = [n for n in asked if asked[n][vim_id] == monitor_id]
        assert len(winners) == 1, vim_id
        won[winners[0]] += 1
    assert sum(won.values()) == 200
    # The loser's monitor reports are refused: it must stop.
    loser_id = ids[0]
    loser = next(n for n in asked if asked[n][loser_id] != first.get(loser_id).monitor_id)
    late = first.update_status(loser_id, asked[loser][loser_id], REACHABLE)
    assert late.refused and late.reason.startswith(BAD_ACTION)


def test_a_stale_monitor_is_refused_across_servers(servers):
    first, second = servers(2)
    record = first.create("vim-1", SPEC, "198.18.0.1")
    old = first.claim([(record.id, None)])[record.id]
    assert first.update_status(record.id, old, REACHABLE).changed
    new = second.claim([(record.id, old)])[record.id]  # the other server takes it over
    assert first.update_status(record.id, old, UNREACHABLE).refused
    applied = second.update_status(record.id, new, UNREACHABLE)
    assert not applied.refused and applied.previous_status == REACHABLE
    assert first.get(record.id).status == UNREACHABLE


def test_a_follower_misses_no_change_while_two_servers_write(servers):
    """changes_since, polled while two servers register and claim: every change is seen, as
    the revision counter orders the writers on PostgreSQL too (READ COMMITTED)."""
    writer_a, writer_b, reader = servers(3)
    done = threading.Event()
    seen: dict[str, str | None] = {}
    gone: set[str] = set()

    def write(store: VimStore, prefix: str) -> None:
        for i in range(100):
            record = store.create(f"{prefix}-{i}", SPEC, "198.18.0.1")
            store.claim([(record.id, None)])
            if i % 10 == 0:
                store.delete(record.id)

    def follow() -> None:
        revision = 0
        for _ in range(100_000):  # bounded; ends once the writers have and all is read
            finished = done.is_set()
            revision, rows, deleted = reader.changes_since(revision)
            seen.update({r.id: r.monitor_id for r in rows})
            gone.update(deleted)
            if finished:
                return

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        run_at_once(lambda: write(writer_a, "a"), lambda: write(writer_b, "b"))
    finally:
        done.set()
        follower.join(60)
    now = {r.id: r.monitor_id for r in reader.find()}
    assert len(now) == 180 and len(gone) == 20
    assert {k: v for k, v in seen.items() if k not in gone} == now
    assert all(now.values())  # every claim seen with its monitor id
