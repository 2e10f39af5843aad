"""The Inspector's logic with an in-memory controller and publisher (fakes of one class each)."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from controller.base import Controller, ControllerError, NotFound, Server
from doctor.config import build
from doctor.events import HOST_DOWN, HOST_UP, HostEvent, traits
from doctor.store import make_engine
from inspector.config import InspectorConfig
from inspector.service import InspectorService
from inspector.store import EventLog
from notifier.base import EventPublisher
from tests.waiting import wait_until


class FakeController(Controller):
    def __init__(self, servers):
        self.servers = {s.id: s for s in servers}
        self.forced: dict[str, bool] = {}
        self.calls: list[tuple] = []
        self.failures_left = 0
        self.lock = threading.Lock()

    def _maybe_fail(self):
        with self.lock:
            if self.failures_left:
                self.failures_left -= 1
                raise ControllerError("controller unreachable")

    def list_servers(self, host=None):
        return [s for s in self.servers.values() if host is None or s.host == host]

    def force_down(self, host, down=True):
        self._maybe_fail()
        self.calls.append(("force_down", host, down))
        self.forced[host] = down

    def reset_state(self, server_id, state="error"):
        self._maybe_fail()
        if server_id not in self.servers:
            raise NotFound(f"no server {server_id}")
        self.calls.append(("reset_state", server_id, state))
        self.servers[server_id] = dataclasses.replace(self.servers[server_id], state=state)

    def host_status(self, server_id):
        return "DOWN" if self.forced.get(self.servers[server_id].host) else "UP"

    def close(self):
        pass


class BatchController(FakeController):
    """A controller that resets many servers in one call, as the embedded one does."""

    batch_reset = True

    def reset_states(self, server_ids, state="error"):
        self._maybe_fail()
        self.calls.append(("reset_states", len(server_ids), state))
        missing = [i for i in server_ids if i not in self.servers]
        for server_id in server_ids:
            if server_id in self.servers:
                self.servers[server_id] = dataclasses.replace(self.servers[server_id],
                                                              state=state)
        return missing


class RecordingPublisher(EventPublisher):
    def __init__(self):
        self.batches = []

    def publish(self, events):
        self.batches.append(events)


def servers_on(host, count, project="p1"):
    return [Server(id=f"{host}-vm{i}", name=f"vm{i}", project_id=project, host=host,
                   state="active") for i in range(count)]


def make_service(tmp_path, controller, publisher=None, **options):
    config = build(InspectorConfig, "inspector", {
        "token": "t", "database": f"sqlite:///{tmp_path}/inspector.db",
        "call_retry_for_s": "5", **options})
    service = InspectorService(config, controller, publisher or RecordingPublisher(),
                               EventLog(make_engine(config.database)))
    service.start()
    assert service.wait_ready(5)
    return service




def down(host, at=None):
    return HostEvent.new(HOST_DOWN, host, "mon", at)


def test_host_down_resets_every_vm_marks_host_and_notifies_each(tmp_path):
    controller = FakeController(servers_on("c1", 50) + servers_on("c2", 3))
    publisher = RecordingPublisher()
    service = make_service(tmp_path, controller, publisher)
    try:
        event = down("c1")
        new, duplicates = service.submit([event])
        assert new == [event] and duplicates == []
        wait_until(lambda: service.log.get(event.monitor_event_id).status == "done")
        assert controller.forced == {"c1": True}
        assert sorted(c[1] for c in controller.calls if c[0] == "reset_state") == sorted(
            s.id for s in controller.list_servers("c1"))
        [notes] = publisher.batches
        assert {traits(n)["instance_id"] for n in notes} == {f"c1-vm{i}" for i in range(50)}
        assert all(traits(n)["state"] == "error" and traits(n)["project_id"] == "p1"
                   for n in notes)
        outcome = service.log.get(event.monitor_event_id).outcome
        assert outcome == {"host_marked_down": True, "vms_set_error": 50, "vms_failed": 0}
        assert service.host("c1")["state"] == "down"
        assert service.host("c2")["state"] == "unknown"
    finally:
        service.stop()


def test_a_batch_controller_gets_a_few_calls_and_a_missing_vm_counts_as_failed(tmp_path):
    controller = BatchController(servers_on("c1", 1200))
    controller.failures_left = 1  # the first call fails once: retried as a whole
    service = make_service(tmp_path, controller)
    try:
        del controller.servers["c1-vm7"]  # gone from the controller, still in the host map
        event = down("c1")
        service.submit([event])
        wait_until(lambda: service.log.get(event.monitor_event_id).status == "done")
        resets = [c for c in controller.calls if c[0] == "reset_states"]
        assert sorted(c[1] for c in resets) == [200, 500, 500]
        assert all(s.state == "error" for s in controller.servers.values())
        outcome = service.log.get(event.monitor_event_id).outcome
        assert outcome == {"host_marked_down": True, "vms_set_error": 1199, "vms_failed": 1}
    finally:
        service.stop()


def test_a_duplicate_event_is_acted_on_once(tmp_path):
    controller = FakeController(servers_on("c1", 2))
    publisher = RecordingPublisher()
    service = make_service(tmp_path, controller, publisher)
    try:
        event = down("c1")
        service.submit([event])
        new, duplicates = service.submit([event, event])
        assert new == [] and len(duplicates) == 2
        wait_until(lambda: service.log.get(event.monitor_event_id).status == "done")
        time.sleep(0.1)
        assert len(publisher.batches) == 1
        assert [c for c in controller.calls if c[0] == "force_down"] == [
            ("force_down", "c1", True)]
    finally:
        service.stop()


def test_up_clears_the_flag_and_a_stale_down_is_skipped(tmp_path):
    controller = FakeController(servers_on("c1", 1))
    service = make_service(tmp_path, controller)
    try:
        first = down("c1", at=time.time() - 10)
        up = HostEvent.new(HOST_UP, "c1", "mon")
        service.submit([up])
        wait_until(lambda: service.log.get(up.monitor_event_id).status == "done")
        service.submit([first])  # older than the up already handled: a late retry
        wait_until(lambda: service.log.get(first.monitor_event_id).status == "done")
        assert service.log.get(first.monitor_event_id).outcome == {"skipped": "stale"}
        assert controller.forced == {"c1": False}
        assert service.host("c1")["state"] == "up"
    finally:
        service.stop()


def test_controller_failures_are_retried_and_no_vm_is_skipped(tmp_path):
    controller = FakeController(servers_on("c1", 20))
    controller.failures_left = 12
    service = make_service(tmp_path, controller, workers="4", call_retry_for_s="60")
    try:
        event = down("c1")
        service.submit([event])
        wait_until(lambda: service.log.get(event.monitor_event_id).status == "done", 20)
        assert all(s.state == "error" for s in controller.list_servers("c1"))
        assert controller.forced == {"c1": True}
    finally:
        service.stop()


def test_status_says_the_controller_fails_until_it_answers_again(tmp_path):
    controller = FakeController(servers_on("c1", 2))
    service = make_service(tmp_path, controller, call_retry_for_s="60")
    try:
        assert service.status()["controller"] == {"reachable": True, "error": None,
                                                  "failing_since": None}
        controller.failures_left = 10**6
        event = down("c1")
        service.submit([event])
        status = wait_until(lambda: (lambda s: s if not s["controller"]["reachable"] else None)(
            service.status()), 5, "the failure reported")
        assert status["controller"]["error"] == "controller unreachable"
        assert status["pending_events"] == 1
        assert service.host("c1")["pending"] is True
        controller.failures_left = 0
        wait_until(lambda: service.log.get(event.monitor_event_id).status == "done", 20)
        status = service.status()
        assert status["controller"]["reachable"] and status["pending_events"] == 0
        assert service.host("c1")["pending"] is False
    finally:
        service.stop()


def test_pending_events_resume_after_a_restart_without_a_second_notification(tmp_path):
    controller = FakeController(servers_on("c1", 3))
    publisher = RecordingPublisher()
    config = build(InspectorConfig, "inspector", {
        "token": "t", "database": f"sqlite:///{tmp_path}/inspector.db"})
    log = EventLog(make_engine(config.database))
    accepted = down("c1")
    notified = down("c2")
    log.accept([accepted, notified])  # as if killed right after the 202 ...
    log.mark_notified(notified.monitor_event_id)  # ... and once after notifying
    controller.servers.update({s.id: s for s in servers_on("c2", 2)})
    service = InspectorService(config, controller, publisher, log)
    service.start()
    try:
        wait_until(lambda: all(log.get(e.monitor_event_id).status == "done"
                               for e in (accepted, notified)))
        notified_vms = {traits(n)["instance_id"] for batch in publisher.batches for n in batch}
        assert notified_vms == {"c1-vm0", "c1-vm1", "c1-vm2"}
        assert controller.forced == {"c1": True, "c2": True}
    finally:
        service.stop()


def test_host_map_follows_controller_notifications(tmp_path):
    from doctor.events import instance_update

    controller = FakeController(servers_on("c1", 1))
    service = make_service(tmp_path, controller)
    try:
        created = instance_update("new-vm", "active", "c1", "p1")
        created["event_type"] = "compute.instance.create.end"
        service.on_notifications([created])
        assert {s.id for s in service.hostmap.servers_on("c1")} == {"c1-vm0", "new-vm"}
        service.on_notifications([instance_update("new-vm", "active", "c2", "p1")])
        assert {s.id for s in service.hostmap.servers_on("c2")} == {"new-vm"}
        deleted = instance_update("new-vm", "active", "c2", "p1")
        deleted["event_type"] = "compute.instance.delete.end"
        service.on_notifications([deleted])
        assert service.hostmap.servers_on("c2") == []
    finally:
        service.stop()


@pytest.mark.parametrize("options, field", [
    ({"token": ""}, "token"),
    ({"token": "t", "controller": "nova2"}, "controller"),
    ({"token": "t", "notifier_url": "localhost:8042"}, "notifier_url"),
    ({"token": "t", "workers": "0"}, "workers"),
    ({"token": "t", "notifier": "aodh"}, "aodh_transport_url"),
])
def test_bad_config_names_the_field(options, field):
    from doctor.config import ConfigError

    with pytest.raises(ConfigError, match=field):
        build(InspectorConfig, "inspector", options)


def test_a_listing_older_than_a_notification_does_not_undo_it():
    from doctor.events import instance_update
    from inspector.hostmap import HostMap

    hostmap = HostMap()
    hostmap.begin_load()  # the controller is asked for its listing ...
    created = instance_update("vm-late", "active", "c1", "p1")
    created["event_type"] = "compute.instance.create.end"
    hostmap.apply(created)  # ... a VM is created meanwhile and notified ...
    deleted = instance_update("vm-gone", "active", "c1", "p1")
    deleted["event_type"] = "compute.instance.delete.end"
    hostmap.apply(deleted)  # ... and one deleted ...
    hostmap.load(servers_on("c1", 1) + [Server("vm-gone", "g", "p1", "c1", "active")])
    # ... and the listing, taken before both, arrives last.
    assert {s.id for s in hostmap.servers_on("c1")} == {"c1-vm0", "vm-late"}


def test_a_resync_counts_the_servers_notifications_had_not_brought():
    from inspector.hostmap import HostMap

    hostmap = HostMap()
    hostmap.begin_load()
    assert hostmap.load(servers_on("c1", 2)) == 2  # the first load: all new
    hostmap.begin_load()
    assert hostmap.load(servers_on("c1", 2)) == 0
    moved = [dataclasses.replace(servers_on("c1", 2)[1], host="c2")]
    hostmap.begin_load()
    assert hostmap.load(servers_on("c1", 1) + moved + servers_on("c3", 1)) == 2
    assert hostmap.count("c2") == 1 and hostmap.count("c1") == 1


def test_the_event_log_keeps_the_unfinished_and_each_hosts_latest_when_pruned(tmp_path,
                                                                              monkeypatch):
    from inspector import store

    log = EventLog(make_engine(f"sqlite:///{tmp_path}/inspector.db"))
    now = [1_000_000.0]
    monkeypatch.setattr(store.clock, "now", lambda: now[0])
    old_c1, old_c2 = down("c1", at=100.0), down("c2", at=100.0)
    up_c1 = HostEvent.new(HOST_UP, "c1", "mon", 200.0)
    unfinished = down("c3", at=150.0)
    log.accept([old_c1, old_c2, up_c1, unfinished])
    for event in (old_c1, old_c2, up_c1):
        log.mark_done(event.monitor_event_id, {})
    now[0] += 8 * 86400  # all of them done 8 days ago
    newest_c2 = down("c2", at=300.0)
    log.accept([newest_c2])
    log.mark_done(newest_c2.monitor_event_id, {})

    assert log.prune(7 * 86400) == 2  # c1's down (c1's up is its latest), c2's old down
    assert log.get(old_c1.monitor_event_id) is None
    assert log.get(old_c2.monitor_event_id) is None
    latest = log.latest_by_host()
    assert {h: s.event.monitor_event_id for h, s in latest.items()} == {
        "c1": up_c1.monitor_event_id, "c2": newest_c2.monitor_event_id,
        "c3": unfinished.monitor_event_id}
    assert [s.event.monitor_event_id for s in log.pending()] == [unfinished.monitor_event_id]
    assert log.prune(7 * 86400) == 0


# -- times stored by older versions --------------------------------------------------------------

def stored_event(log, host, at, type_=HOST_DOWN):
    """An event stored as a version that took any time would have stored it, then done."""
    event = HostEvent.new(type_, host, "mon", at)
    assert log.accept([event]) == [event]
    log.mark_done(event.monitor_event_id, {"old": True})
    return event


def test_a_stored_year_0001_or_9999_event_does_not_fail_get_hosts(tmp_path):
    from doctor import clock
    from inspector.api import create_app

    log = EventLog(make_engine(f"sqlite:///{tmp_path}/inspector.db"))
    stored_event(log, "ancient", clock.parse_iso("0001-01-01T00:00:00+05:00"))
    stored_event(log, "future", clock.parse_iso("9999-12-31T23:59:59-05:00"), HOST_UP)
    log.engine.dispose()
    service = make_service(tmp_path, FakeController([]))
    try:
        client = create_app(service, "t").test_client()
        response = client.get("/hosts", headers={"X-Auth-Token": "t"})
        assert response.status_code == 200, response.get_json()
        hosts = {h["name"]: h for h in response.get_json()["hosts"]}
        assert hosts["ancient"]["last_event"]["time"] == "0001-01-01T00:00:00+00:00"
        assert client.get("/hosts/future", headers={"X-Auth-Token": "t"}).status_code == 200
    finally:
        service.stop()


def test_a_stored_far_future_event_does_not_make_later_events_stale(tmp_path):
    from doctor import clock

    log = EventLog(make_engine(f"sqlite:///{tmp_path}/inspector.db"))
    stored_event(log, "c1", clock.parse_iso("9999-12-31T23:59:59+00:00"), HOST_UP)
    log.engine.dispose()
    controller = FakeController(servers_on("c1", 2))
    service = make_service(tmp_path, controller)
    try:
        service.submit([down("c1")])
        wait_until(lambda: controller.forced.get("c1") is True)
        assert service.host("c1")["state"] == "down"
    finally:
        service.stop()
    # and after a restart the host's latest event is the real latest, not the clamped one
    service = make_service(tmp_path, FakeController(servers_on("c1", 2)))
    try:
        assert service.host("c1")["state"] == "down"
    finally:
        service.stop()


def test_host_names_and_event_ids_are_logged_escaped(tmp_path, caplog):
    controller = FakeController(servers_on("c1", 1))
    service = make_service(tmp_path, controller)
    forged = "c1\n2026-12-01 12:00:00.000 1 WARNING inspector.service: \x1b[31mforged"
    try:
        with caplog.at_level("INFO", logger="inspector.service"):
            event = down(forged)
            service.submit([event])
            service.submit([event])  # a duplicate is logged with its id too
            wait_until(lambda: service.host(forged) is not None
                       and not service.host(forged)["pending"])
        messages = [r.getMessage() for r in caplog.records]
        assert any("c1\\n2026" in m for m in messages)
        assert not any("\n" in m or "\x1b" in m for m in messages), messages
        long_name = "h" * 100_000
        caplog.clear()
        with caplog.at_level("INFO", logger="inspector.service"):
            service.submit([down(long_name)])
            wait_until(lambda: service.host(long_name) is not None
                       and not service.host(long_name)["pending"])
        assert all(len(r.getMessage()) < 2000 for r in caplog.records)
    finally:
        service.stop()
