"""VIM storage (passwords under Fernet), the API's answers, and the refusal of stale monitors."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from doctor.config import build
from doctor.events import traits
from doctor.store import make_engine
from monitor.detector import HostState
from tests.fakes import ListPublisher
from vim.api import create_app
from vim.config import VimConfig
from vim.crypto import KeyFileError, PasswordBox, load_or_create_key
from vim.manager import MonitorManager
from vim.store import BAD_ACTION, PENDING, REACHABLE, UNREACHABLE, VimStore

PASSWORD = "Very-Secret-Pa55word"
TOKEN = "t0ken"
SPEC = {"auth_url": "http://127.0.0.1:5000/v3", "username": "admin", "password": PASSWORD,
        "project_name": "demo", "project_domain_name": "Default",
        "user_domain_name": "Default", "cert_verify": True}


@pytest.fixture
def store(tmp_path):
    box = PasswordBox.from_key_file(str(tmp_path / "keys" / "vim.key"))
    return VimStore(make_engine(f"sqlite:///{tmp_path / 'vim.db'}"), box)


def test_key_file_is_made_0600_and_reused(tmp_path):
    path = str(tmp_path / "k" / "vim.key")
    key = load_or_create_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(KeyFileError, match="bad.key"):
        load_or_create_key(str(tmp_path / "bad.key"))


def test_password_is_encrypted_at_rest(tmp_path, store):
    record = store.create("vim-1", SPEC, "127.0.0.1")
    store.update(record.id, {"password": PASSWORD + "2"})
    store.engine.dispose()
    for name in os.listdir(tmp_path):
        if name.startswith("vim.db"):
            data = (tmp_path / name).read_bytes()
            assert PASSWORD.encode() not in data, name
    with store.engine.connect() as conn:
        token = conn.exec_driver_sql("SELECT password FROM vims").scalar_one()
    assert store.passwords.decrypt(token) == PASSWORD + "2"
    other = PasswordBox(load_or_create_key(str(tmp_path / "other.key")))
    with pytest.raises(KeyFileError):
        other.decrypt(token)


def test_api_never_returns_or_logs_the_password(store, caplog):
    app = create_app(store, TOKEN)
    client = app.test_client()
    headers = {"X-Auth-Token": TOKEN}
    caplog.set_level(logging.DEBUG)
    created = client.post("/v1/vims", json={"name": "vim-1", **SPEC}, headers=headers)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["status"] == PENDING and "password" not in body
    answers = [created,
               client.get("/v1/vims", headers=headers),
               client.get(f"/v1/vims/{body['id']}", headers=headers),
               client.patch(f"/v1/vims/{body['id']}", json={"password": PASSWORD},
                            headers=headers),
               client.post("/v1/vims", json={"name": "vim-1", **SPEC}, headers=headers),
               client.post("/v1/vims", json={"name": "vim-2", **SPEC, "password": 7},
                           headers=headers)]
    for answer in answers:
        assert PASSWORD not in answer.get_data(as_text=True)
    assert answers[4].status_code == 409
    assert answers[5].status_code == 400 and answers[5].get_json()["field"] == "password"
    assert PASSWORD not in caplog.text


def test_api_errors(store):
    client = create_app(store, TOKEN).test_client()
    headers = {"X-Auth-Token": TOKEN}
    assert client.get("/v1/vims").status_code == 401
    assert client.get("/v1/vims/nope", headers=headers).status_code == 404
    assert client.delete("/v1/vims/nope", headers=headers).status_code == 404
    bad = client.post("/v1/vims", json={"name": "x", **SPEC, "auth_url": "keystone"},
                      headers=headers)
    assert bad.status_code == 400 and bad.get_json()["field"] == "auth_url"
    missing = client.post("/v1/vims", json=SPEC, headers=headers)
    assert missing.get_json()["field"] == "name"
    unknown = client.post("/v1/vims", json={"name": "x", **SPEC, "color": "red"},
                          headers=headers)
    assert unknown.get_json()["field"] == "color"
    assert store.find() == []  # nothing stored by a refused request


def test_stale_monitor_is_refused(store, caplog):
    record = store.create("vim-1", SPEC, "127.0.0.1")
    old = store.claim([(record.id, None)])[record.id]
    assert store.update_status(record.id, old, REACHABLE).changed
    store.update(record.id, {"auth_url": "http://127.0.0.2/"}, "127.0.0.2")
    new = store.claim([(record.id, None)])[record.id]
    caplog.set_level(logging.WARNING)
    late = store.update_status(record.id, old, UNREACHABLE)
    assert late.refused and late.reason.startswith(BAD_ACTION)
    assert old in caplog.text and BAD_ACTION in caplog.text
    assert store.get(record.id).status == PENDING
    fresh = store.update_status(record.id, new, UNREACHABLE)
    assert not fresh.refused and fresh.changed and fresh.previous_status == PENDING
    store.delete(record.id)
    assert store.update_status(record.id, new, REACHABLE).refused
    with pytest.raises(ValueError, match="status"):
        store.update_status(record.id, new, PENDING)


def test_claim_only_from_the_expected_monitor(store):
    record = store.create("vim-1", SPEC, "127.0.0.1")
    first = store.claim([(record.id, None)])[record.id]
    store.claim([(record.id, None)])  # someone else's stale view: must not take it
    assert store.get(record.id).monitor_id == first
    revision, rows, gone = store.changes_since(0)
    assert [r.id for r in rows] == [record.id] and gone == []
    store.delete(record.id)
    assert store.changes_since(revision)[2] == [record.id]


class FakeScheduler:
    """The ProbeScheduler's surface the manager uses; transitions are fed by the test."""

    def __init__(self, config, on_transition) -> None:
        self.on_transition = on_transition
        self.targets_given: list = []
        self.stats = None
        self.sock = None

    def run(self, stop) -> None:
        stop.wait()

    def update_targets(self, targets) -> None:
        self.targets_given = list(targets)

    def target(self, name):
        raise KeyError(name)

    def fire(self, address: str, state: HostState) -> None:
        for target in self.targets_given:
            if target.address == address:
                probe = type("Probe", (), {"hostname": target.hostname})()
                self.on_transition(probe, HostState.UNKNOWN, state, 0.0)


def make_manager(store, publisher=None):
    config = build(VimConfig, "vim", {"token": "t", "coordination_url": "file:///tmp/x"})
    schedulers: list[FakeScheduler] = []

    def factory(probe_config, on_transition):
        schedulers.append(FakeScheduler(probe_config, on_transition))
        return schedulers[-1]

    manager = MonitorManager(store, config, publisher, scheduler_factory=factory)
    manager._start_prober()
    return manager, schedulers[0]


def settle(manager) -> None:
    for _ in range(5):
        manager.step()


def test_manager_claims_reports_and_stops_a_stale_monitor(store, caplog):
    publisher = ListPublisher()
    manager, scheduler = make_manager(store, publisher)
    manager.events.start()
    record = store.create("vim-1", SPEC, "127.0.0.1")
    settle(manager)
    monitor_id = store.get(record.id).monitor_id
    assert monitor_id and manager.monitors[record.id].monitor_id == monitor_id
    assert [t.address for t in scheduler.targets_given] == ["127.0.0.1"]
    scheduler.fire("127.0.0.1", HostState.UP)
    manager.step()
    assert store.get(record.id).status == REACHABLE
    # The auth_url changes behind the manager's back (no poke); the old monitor's next
    # verdict is refused and that monitor stops.
    store.update(record.id, {"auth_url": "http://127.0.0.2/"}, "127.0.0.2")
    caplog.set_level(logging.INFO)
    scheduler.fire("127.0.0.1", HostState.DOWN)
    manager._take_verdicts()
    assert manager.stats.refused == 1
    assert record.id not in manager.monitors or \
        manager.monitors[record.id].monitor_id != monitor_id
    assert "refused" in caplog.text
    settle(manager)
    current = store.get(record.id)
    assert current.monitor_id not in (None, monitor_id)
    assert manager.monitors[record.id].monitor_id == current.monitor_id
    assert [t.address for t in scheduler.targets_given] == ["127.0.0.2"]
    assert current.status == PENDING
    scheduler.fire("127.0.0.2", HostState.DOWN)
    manager.step()
    assert store.get(record.id).status == UNREACHABLE
    manager.events.stop()
    events = [traits(e) for e in publisher.events]
    assert [(e["status"], e["previous_status"]) for e in events] == [
        ("reachable", "pending"), ("unreachable", "pending")]
    assert {e["vim_id"] for e in events} == {record.id}
    assert events[0]["name"] == "vim-1" and events[0]["project"] == "demo"
    assert events[0]["project_id"] == events[0]["tenant_id"] == "demo"
    assert {e["event_type"] for e in publisher.events} == {"vim.status.update"}


def test_manager_restart_takes_over_with_new_ids_and_deletes(store):
    first, _ = make_manager(store)
    a = store.create("vim-a", SPEC, "127.0.0.1")
    b = store.create("vim-b", {**SPEC, "auth_url": "http://127.0.0.3/"}, "127.0.0.3")
    settle(first)
    old_ids = {v: store.get(v).monitor_id for v in (a.id, b.id)}
    second, scheduler = make_manager(store)  # a new process on the same database
    settle(second)
    for vim_id, old in old_ids.items():
        assert store.get(vim_id).monitor_id not in (None, old)
    scheduler.fire("127.0.0.3", HostState.UP)
    second.step()
    assert store.get(b.id).status == REACHABLE
    first._take_verdicts()
    first.monitors[a.id].ping = HostState.UP
    first._evaluate(first.monitors[a.id])
    first._flush_reports()  # the old process's late word
    assert first.stats.refused == 1 and store.get(a.id).status == PENDING
    store.delete(a.id)
    second.poke()
    settle(second)
    assert a.id not in second.monitors
    assert [t.address for t in scheduler.targets_given] == ["127.0.0.3"]


def test_owns_restricts_the_monitored_vims(store):
    manager, scheduler = make_manager(store)
    a = store.create("vim-a", SPEC, "127.0.0.1")
    store.create("vim-b", {**SPEC, "auth_url": "http://127.0.0.3/"}, "127.0.0.3")
    settle(manager)
    assert len(manager.monitors) == 2
    manager.set_owns(lambda vim_id: vim_id == a.id)
    settle(manager)
    assert list(manager.monitors) == [a.id]
    assert [t.address for t in scheduler.targets_given] == ["127.0.0.1"]
