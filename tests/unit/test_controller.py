"""The embedded Controller's inventory: hosts and VMs in SQLite, and the events it publishes."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import delete, func, select

from controller.base import ControllerError, Host, NotFound
from controller.embedded import (
    INSTANCE_CREATE_END,
    INSTANCE_DELETE_END,
    Inventory,
    hosts,
    notifications,
)
from doctor.events import INSTANCE_UPDATE, parse_ceilometer_event, traits
from doctor.store import make_engine
from notifier.base import EventPublisher, PublishError


class RecordingPublisher(EventPublisher):
    """Keeps every publish call's events; optionally slow or failing."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.calls: list[list[dict]] = []
        self.delay_s = delay_s
        self.fail = fail
        self.closed = False
        self.lock = threading.Lock()

    def publish(self, events):
        time.sleep(self.delay_s)
        with self.lock:
            self.calls.append(list(events))
        if self.fail:
            raise PublishError("notifier is down")

    def close(self):
        self.closed = True

    @property
    def events(self) -> list[dict]:
        with self.lock:
            return [event for call in self.calls for event in call]


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/controller.db")
    yield engine
    engine.dispose()


@pytest.fixture
def publisher():
    return RecordingPublisher()


@pytest.fixture
def inventory(engine, publisher):
    inventory = Inventory(engine, [publisher])
    yield inventory
    inventory.close()


def test_create_list_by_host_get_and_delete(inventory):
    a = inventory.create_server("vnf-a", "tenant-1", "compute-1")
    b = inventory.create_server("vnf-b", "tenant-1", "compute-1")
    c = inventory.create_server("vnf-c", "tenant-2", "compute-2")
    assert a.state == "active" and a.host == "compute-1" and len(a.id) == 36
    assert inventory.list_servers() == [a, b, c]
    assert inventory.list_servers("compute-1") == [a, b]
    assert inventory.list_servers("compute-9") == []
    assert inventory.get_server(c.id) == c
    assert inventory.list_hosts() == [Host("compute-1", False), Host("compute-2", False)]
    inventory.delete_server(b.id)
    assert inventory.list_servers("compute-1") == [a]
    with pytest.raises(NotFound, match=b.id):
        inventory.get_server(b.id)
    with pytest.raises(NotFound):
        inventory.delete_server(b.id)


def test_migrate_moves_a_server_and_refuses_its_own_or_a_down_host(inventory):
    server = inventory.create_server("vnf", "tenant", "compute-1")
    inventory.migrate_server(server.id, "compute-2")
    assert inventory.get_server(server.id).host == "compute-2"
    assert inventory.list_servers("compute-1") == []
    with pytest.raises(ControllerError, match="already on host compute-2") as caught:
        inventory.migrate_server(server.id, "compute-2")
    assert caught.value.status == 409
    inventory.force_down("compute-1")
    with pytest.raises(ControllerError, match="compute-1 is forced down"):
        inventory.migrate_server(server.id, "compute-1")
    with pytest.raises(NotFound):
        inventory.migrate_server("no-such-id", "compute-1")


def test_reset_state_sets_the_state_and_checks_it(inventory):
    server = inventory.create_server("vnf", "tenant", "compute-1")
    inventory.reset_state(server.id)
    assert inventory.get_server(server.id).state == "error"
    inventory.reset_state(server.id, "active")
    assert inventory.get_server(server.id).state == "active"
    with pytest.raises(NotFound):
        inventory.reset_state("no-such-id")
    with pytest.raises(ControllerError, match="'broken' is not a vm_state") as caught:
        inventory.reset_state(server.id, "broken")
    assert caught.value.status == 400


def test_bad_names_are_refused_naming_the_field(inventory):
    with pytest.raises(ControllerError, match="^project_id: required"):
        inventory.create_server("vnf", " ", "compute-1")
    with pytest.raises(ControllerError, match="^host: longer than 255"):
        inventory.create_server("vnf", "tenant", "h" * 256)
    assert inventory.list_servers() == [] and inventory.list_hosts() == []


def test_force_down_and_host_status(inventory, engine):
    server = inventory.create_server("vnf", "tenant", "compute-1")
    other = inventory.create_server("vnf", "tenant", "compute-2")
    assert inventory.host_status(server.id) == "UP"
    inventory.force_down("compute-1")
    assert inventory.host_status(server.id) == "DOWN"
    assert inventory.host_status(other.id) == "UP"
    assert inventory.list_hosts() == [Host("compute-1", True), Host("compute-2", False)]
    with pytest.raises(ControllerError, match="compute-1 is forced down"):
        inventory.create_server("new", "tenant", "compute-1")
    inventory.force_down("compute-1", down=False)
    assert inventory.host_status(server.id) == "UP"
    with pytest.raises(NotFound, match="no host compute-9"):
        inventory.force_down("compute-9")
    with pytest.raises(NotFound):
        inventory.host_status("no-such-id")
    # A server whose host row is gone (SQLite does not enforce the foreign key by default).
    with engine.begin() as conn:
        conn.execute(delete(hosts).where(hosts.c.name == "compute-2"))
    assert inventory.host_status(other.id) == "UNKNOWN"


def test_every_change_is_published_with_the_contract_traits(inventory, publisher):
    server = inventory.create_server("vnf", "tenant-7", "compute-1")
    inventory.reset_state(server.id, "error")
    inventory.reset_state(server.id, "error")  # no change: no event
    inventory.migrate_server(server.id, "compute-2")
    inventory.force_down("compute-2")  # a host, not an instance: no event
    inventory.delete_server(server.id)
    assert inventory.flush()
    events = publisher.events
    assert [e["event_type"] for e in events] == [
        INSTANCE_CREATE_END, INSTANCE_UPDATE, INSTANCE_UPDATE, INSTANCE_DELETE_END]
    for event in events:
        parse_ceilometer_event(event)
    expected = [("active", "compute-1"), ("error", "compute-1"), ("error", "compute-2"),
                ("deleted", "compute-2")]
    assert [(traits(e)["state"], traits(e)["host"]) for e in events] == expected
    for event in events:
        assert traits(event)["instance_id"] == server.id
        assert traits(event)["project_id"] == traits(event)["tenant_id"] == "tenant-7"
    assert len({e["message_id"] for e in events}) == 4


def test_each_publisher_gets_every_event_and_a_slow_one_gets_batches(engine):
    fast, slow = RecordingPublisher(), RecordingPublisher(delay_s=0.05)
    inventory = Inventory(engine, [fast, slow])
    try:
        ids = [inventory.create_server(f"vnf-{i}", "t", "compute-1").id for i in range(50)]
        started = time.monotonic()
        for server_id in ids:
            inventory.reset_state(server_id)
        # Publishing is off the caller's thread: 50 resets do not wait for 50 slow publishes.
        assert time.monotonic() - started < 0.5
        assert inventory.flush()
        for publisher in (fast, slow):
            assert len(publisher.events) == 100
        assert len(slow.calls) < 20  # what waited went out together
    finally:
        inventory.close()
    assert fast.closed and slow.closed


def test_a_failed_publish_is_logged_with_the_vm_ids_and_retried_until_taken(engine, caplog):
    failing = RecordingPublisher(fail=True)
    inventory = Inventory(engine, [failing])
    try:
        with caplog.at_level(logging.ERROR, logger="controller.embedded"):
            server = inventory.create_server("vnf", "t", "compute-1")
            inventory.reset_state(server.id)
            assert not inventory.flush(0.5)  # still failing: kept, not dropped
        assert inventory.get_server(server.id).state == "error"
        assert any(server.id in r.getMessage() and "notifier is down" in r.getMessage()
                   for r in caplog.records)
        failing.fail = False
        assert inventory.flush()
        taken = [traits(e)["state"] for e in failing.events if
                 traits(e)["instance_id"] == server.id]
        assert taken[-2:] == ["active", "error"]  # in order, after the failures
    finally:
        inventory.close()


def test_what_a_publisher_had_not_taken_is_sent_at_the_next_start(engine):
    down = RecordingPublisher(fail=True)
    inventory = Inventory(engine, [down])
    server = inventory.create_server("vnf", "t", "compute-1")
    inventory.reset_state(server.id)
    inventory.close(timeout_s=0.3)  # as a stop, or a kill -9 would leave them stored
    up = RecordingPublisher()
    again = Inventory(engine, [up])
    try:
        assert again.flush()
        states = [traits(e)["state"] for e in up.events]
        assert states == ["active", "error"]
        # The same events, not new ones: what the failing publisher was offered comes again.
        assert up.events[0]["message_id"] == down.events[0]["message_id"]
    finally:
        again.close()
    with engine.connect() as conn:  # taken: nothing left stored
        assert conn.execute(select(func.count()).select_from(notifications)).scalar() == 0


def test_a_refused_publish_is_final(engine, caplog):
    class Refusing(RecordingPublisher):
        def publish(self, events):
            self.calls.append(list(events))
            raise PublishError("HTTP 400: bad event", final=True)

    refusing = Refusing()
    inventory = Inventory(engine, [refusing])
    try:
        with caplog.at_level(logging.ERROR, logger="controller.embedded"):
            inventory.create_server("vnf", "t", "compute-1")
            assert inventory.flush()
        assert len(refusing.calls) == 1
        assert any("not sent again" in r.getMessage() for r in caplog.records)
    finally:
        inventory.close()


def test_concurrent_reset_state_of_1000_vms_from_32_threads(inventory, publisher):
    ids = [inventory.create_server(f"vnf-{i}", "t", f"compute-{i % 4}").id for i in range(1000)]
    assert inventory.flush()
    publisher.calls.clear()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(inventory.reset_state, ids))
    assert {s.id for s in inventory.list_servers() if s.state == "error"} == set(ids)
    assert inventory.flush()
    events = publisher.events
    assert len(events) == 1000
    assert {traits(e)["instance_id"] for e in events} == set(ids)
    assert all(traits(e)["state"] == "error" for e in events)


def test_reset_states_sets_many_at_once_and_names_the_missing(inventory, publisher):
    ids = [inventory.create_server(f"vnf-{i}", "t", "compute-1").id for i in range(1200)]
    inventory.reset_state(ids[0], "error")  # already there: no change, no event
    assert inventory.flush()
    publisher.calls.clear()
    missing = inventory.reset_states([*ids, "no-such-vm", ids[1]], "error")
    assert missing == ["no-such-vm"]
    assert {s.id for s in inventory.list_servers() if s.state == "error"} == set(ids)
    assert inventory.flush()
    events = publisher.events
    assert sorted(traits(e)["instance_id"] for e in events) == sorted(ids[1:])
    assert all(traits(e)["state"] == "error" for e in events)
    with pytest.raises(ControllerError, match="state: 'on fire' is not a vm_state"):
        inventory.reset_states(ids[:1], "on fire")
