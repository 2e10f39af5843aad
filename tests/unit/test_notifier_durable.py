"""Nothing accepted is lost: the notifier's event inbox and action outbox (notifier.store), the
service's restart from them, and the sample consumer dropping a re-sent alarm."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import sqlalchemy as sa

from consumer.config import ConsumerConfig
from consumer.sample import REQUEST_ID_HEADER, SampleConsumer, create_app
from notifier.base import PublishError
from notifier.config import NotifierConfig
from notifier.embedded import EmbeddedNotifier
from notifier.evaluator import ALARM, utc_iso
from notifier.store import AlarmStore, StoredAction, action_table, inbox_table
from tests.unit.test_notifier_eval import Receiver, alarm, event
from tests.waiting import wait_until


def stored(alarm_id: str = "a1", url: str = "http://127.0.0.1:9/failure") -> StoredAction:
    return StoredAction(f"req-{uuid.uuid4()}", alarm_id, "vm", url, '{"alarm_id": "a1"}',
                        time.time())


def rows(store: AlarmStore, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


# -- the store ----------------------------------------------------------------------------------

def test_the_inbox_keeps_batches_in_order_until_an_evaluation_removes_them(tmp_path):
    store = AlarmStore(f"sqlite:///{tmp_path}/n.db")
    try:
        a = alarm()
        store.insert_alarm(a, 1)
        one = event()
        first = store.add_inbox([one], time.time())
        second = store.add_inbox([event(), event()], time.time())
        assert [(i, len(e)) for i, e in store.load_inbox()] == [(first, 1), (second, 2)]
        assert store.load_inbox()[0][1] == [one]

        actions = [stored(a["alarm_id"]) for _ in range(3)]
        store.commit_evaluation([({**a, "state": ALARM}, 2)], [], actions, [first])
        assert [i for i, _ in store.load_inbox()] == [second]
        assert {s.request_id for s in store.pending_actions()} == {s.request_id for s in actions}
        assert store.pending_actions()[0] in actions  # every field as written
        [(data, version)] = store.load_alarms()
        assert (data["state"], version) == (ALARM, 2)

        store.remove_inbox([second])
        assert store.load_inbox() == []
    finally:
        store.close()


def test_an_evaluation_is_committed_all_or_nothing(tmp_path):
    store = AlarmStore(f"sqlite:///{tmp_path}/n.db")
    try:
        a = alarm()
        store.insert_alarm(a, 1)
        batch = store.add_inbox([event()], time.time())
        taken = stored(a["alarm_id"])
        store.commit_evaluation([], [], [taken], [])
        # The same request id again violates the outbox's key: nothing of it may stay.
        with pytest.raises(sa.exc.IntegrityError):
            store.commit_evaluation([({**a, "state": ALARM}, 2)], [], [stored(), taken],
                                    [batch])
        assert [i for i, _ in store.load_inbox()] == [batch]
        assert store.pending_actions() == [taken]
        assert store.load_alarms()[0][0]["state"] == "insufficient data"
    finally:
        store.close()


def test_final_actions_are_removed_in_one_call_beyond_a_chunk(tmp_path):
    store = AlarmStore(f"sqlite:///{tmp_path}/n.db")
    try:
        actions = [stored() for _ in range(1200)]  # more than one DELETE ... IN chunk
        store.commit_evaluation([], [], actions, [])
        store.remove_actions([s.request_id for s in actions[:1100]])
        assert store.pending_actions() == sorted(actions[1100:], key=lambda s: (
            s.created_at, s.request_id))
    finally:
        store.close()


def test_the_database_runs_in_wal_mode_with_synchronous_normal(tmp_path):
    store = AlarmStore(f"sqlite:///{tmp_path}/n.db")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        store.close()


# -- the service ----------------------------------------------------------------------------------

def service_at(tmp_path, **options) -> EmbeddedNotifier:
    return EmbeddedNotifier(NotifierConfig(database=f"sqlite:///{tmp_path}/notifier.db",
                                           token="t", action_retry_initial_ms=10,
                                           action_retry_max_ms=50, **options))


def test_events_accepted_but_never_evaluated_are_evaluated_at_the_next_start(tmp_path):
    receiver = Receiver()
    try:
        crashed = service_at(tmp_path)  # never started: as if killed right after the 202
        a = alarm(alarm_actions=[receiver.url + "/failure"], timestamp=utc_iso(time.time()))
        crashed.create_alarm(a, "u1", "p1")
        crashed.submit([event()])
        assert rows(crashed.store, inbox_table) == 1 and receiver.calls == []
        crashed.store.close()

        service = service_at(tmp_path).start()
        try:
            wait_until(lambda: receiver.calls, what="the alarm of the stored event")
            assert receiver.calls[0][2]["alarm_id"] == a["alarm_id"]
            assert service.get_alarm(a["alarm_id"])["state"] == ALARM
            assert rows(service.store, inbox_table) == 0
            wait_until(lambda: rows(service.store, action_table) == 0,
                       what="the delivered action's row to go")
        finally:
            service.stop()
    finally:
        receiver.stop()


def test_actions_left_in_the_outbox_are_sent_again_with_their_request_id(tmp_path):
    receiver = Receiver()
    try:
        left = service_at(tmp_path)
        action = stored("a9", receiver.url + "/failure")
        left.store.commit_evaluation([], [], [action], [])
        left.store.close()
        service = service_at(tmp_path).start()
        try:
            wait_until(lambda: receiver.calls, what="the stored action")
            _path, headers, body = receiver.calls[0]
            assert headers[REQUEST_ID_HEADER] == action.request_id
            assert body == json.loads(action.body)
            wait_until(lambda: rows(service.store, action_table) == 0,
                       what="its row to go once delivered")
        finally:
            service.stop()
        assert len(receiver.calls) == 1
    finally:
        receiver.stop()


def test_an_action_still_failing_at_stop_stays_for_the_next_start(tmp_path):
    receiver = Receiver([503])
    try:
        service = service_at(tmp_path).start()
        a = alarm(alarm_actions=[receiver.url + "/failure"], timestamp=utc_iso(time.time()))
        service.create_alarm(a, "u1", "p1")
        service.submit([event()])
        wait_until(lambda: len(receiver.calls) >= 2, what="a retry")
        service.stop(timeout_s=1)
        assert service.dispatcher.counts["deferred"] == 1
        assert service.dispatcher.counts["lost"] == 0
        request_id = receiver.calls[0][1][REQUEST_ID_HEADER]
        receiver.statuses = [200]
        again = service_at(tmp_path).start()
        try:
            wait_until(lambda: rows(again.store, action_table) == 0, what="the re-sent action")
        finally:
            again.stop()
        assert {h[REQUEST_ID_HEADER] for _, h, _ in receiver.calls} == {request_id}
        assert receiver.statuses == [200] and receiver.calls[-1][2]["alarm_id"] == a["alarm_id"]
    finally:
        receiver.stop()


def test_a_failed_commit_dispatches_nothing_and_undoes_the_evaluation(tmp_path, monkeypatch):
    receiver = Receiver()
    service = service_at(tmp_path)
    try:
        a = alarm(alarm_actions=[receiver.url + "/failure"], timestamp=utc_iso(time.time()))
        service.create_alarm(a, "u1", "p1")
        batch = service.store.add_inbox([event()], time.time())

        def broken(*_args, **_kwargs):
            raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))

        monkeypatch.setattr(service.store, "commit_evaluation", broken)
        with pytest.raises(sa.exc.OperationalError):
            service._evaluate([event()], [batch])
        assert service.get_alarm(a["alarm_id"])["state"] == "insufficient data"
        assert service.dispatcher.pending() == 0 and receiver.calls == []
        assert [i for i, _ in service.store.load_inbox()] == [batch]
        monkeypatch.undo()
        service._evaluate([event()], [batch])  # the retry fires it, once
        wait_until(lambda: receiver.calls, what="the alarm after the retry")
        assert service.store.load_inbox() == []
    finally:
        service.stop()
        receiver.stop()


def test_a_full_queue_is_a_clear_error_and_keeps_nothing(tmp_path, monkeypatch):
    import notifier.embedded as embedded

    monkeypatch.setattr(embedded, "QUEUE_BATCHES", 2)
    service = service_at(tmp_path)  # not started: nothing is evaluated
    try:
        service._outbox.maxsize = 2
        service.submit([event()])
        service.submit([event()])
        with pytest.raises(PublishError, match="overloaded: 2 event batches"):
            service.submit([event()])
        assert rows(service.store, inbox_table) == 2
    finally:
        service.stop(timeout_s=0.5)


# -- the sample consumer -----------------------------------------------------------------------

def test_the_sample_consumer_drops_a_re_sent_alarm_by_its_request_id():
    consumer = SampleConsumer(ConsumerConfig(token="ct", auth_strategy="token"))
    http = create_app(consumer).test_client()
    body = {"alarm_name": "n", "alarm_id": "a1", "severity": "critical", "previous": "ok",
            "current": "alarm", "reason": "r", "reason_data": {"type": "event",
                                                              "event": event()}}
    headers = {"X-Auth-Token": "ct", REQUEST_ID_HEADER: "req-1"}
    first = http.post("/failure", json=body, headers=headers)
    again = http.post("/failure", json=body, headers=headers)
    other = http.post("/failure", json=body, headers={**headers, REQUEST_ID_HEADER: "req-2"})
    assert (first.status_code, again.status_code, other.status_code) == (200, 200, 200)
    assert again.get_json() == first.get_json()
    assert len(consumer.notifications()) == 2 and consumer.duplicates == 1
    unnamed = http.post("/failure", json=body, headers={"X-Auth-Token": "ct"})
    assert unnamed.status_code == 200 and len(consumer.notifications()) == 3
