"""Nothing lost: the notifier killed (SIGKILL) in the middle of a 1000-alarm fan-out, restarted
on the same database, still delivers every alarm; a slow consumer does not hold up the others.

Real processes on 127.0.0.1 only (no namespaces, no root): the notifier is ``python -m
notifier.cli`` as in test_notifier.py, the consumers are real HTTP endpoints.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from http.server import BaseHTTPRequestHandler

import requests

from notifier.api import create_app
from notifier.config import NotifierConfig
from notifier.embedded import EmbeddedNotifier
from testkit.eventsink import LoopbackServer
from tests.functional.test_notifier import (
    INSTANCE_UPDATE,
    SERVICE_TOKEN,
    NotifierProcess,
    project,
    token_of,
    vm_error,
)
from tests.waiting import wait_until

REQUEST_ID = "X-OpenStack-Request-Id"


class CountingConsumer(LoopbackServer):
    """Records every alarm POST by alarm id with its request id, then answers 200 (after
    ``delay_s``, or once ``gate`` is set, at most ``gate_s``)."""

    request_queue_size = 512

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None,
                 gate_s: float = 5.0) -> None:
        super().__init__()
        self.delay_s, self.gate, self.gate_s = delay_s, gate, gate_s
        self.posts: dict[str, list[str]] = defaultdict(list)  # alarm id -> request ids
        self.count = 0
        self.waiting = 0  # POSTs received and not answered yet

    @property
    def url(self) -> str:
        return f"{super().url}/failure"

    def start(self) -> CountingConsumer:
        consumer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with consumer.lock:
                    consumer.posts[body["alarm_id"]].append(self.headers.get(REQUEST_ID, ""))
                    consumer.count += 1
                    consumer.waiting += 1
                if consumer.gate is not None:
                    consumer.gate.wait(consumer.gate_s)
                elif consumer.delay_s:
                    time.sleep(consumer.delay_s)
                with consumer.lock:
                    consumer.waiting -= 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.serve(Handler)
        return self

    def snapshot(self) -> dict[str, list[str]]:
        with self.lock:
            return {alarm_id: list(ids) for alarm_id, ids in self.posts.items()}


def alarm_body(name: str, vm: str, url: str) -> dict:
    return {"name": name, "type": "event", "severity": "critical", "repeat_actions": False,
            "alarm_actions": [url],
            "event_rule": {"event_type": INSTANCE_UPDATE, "query": [
                {"field": "traits.instance_id", "op": "eq", "value": vm, "type": "string"},
                {"field": "traits.state", "op": "eq", "value": "error", "type": "string"}]}}


def outbox_rows(notifier: NotifierProcess) -> int:
    with sqlite3.connect(notifier.state_dir / "notifier.db", timeout=10) as db:
        return db.execute("SELECT count(*) FROM action_outbox").fetchone()[0]


def test_a_notifier_killed_mid_fan_out_delivers_every_alarm_after_its_restart(tmp_path):
    alarms = 1000
    consumer = CountingConsumer(delay_s=0.02).start()  # 1000 x 20 ms / 16 workers: ~1.3 s
    notifier = NotifierProcess(tmp_path, "--action-workers", "16").start()
    http = requests.Session()
    try:
        tenant = project()
        headers = {"X-Auth-Token": token_of(tenant)}
        vms = [str(uuid.uuid4()) for _ in range(alarms)]
        ids = []
        for i, vm in enumerate(vms):
            response = http.post(notifier.url + "/v2/alarms", headers=headers, timeout=10,
                                 json=alarm_body(f"vm-{i}", vm, consumer.url))
            assert response.status_code == 201, response.text
            ids.append(response.json()["alarm_id"])
        events = [vm_error(vm, tenant) for vm in vms]
        for part in (events[:500], events[500:]):  # two inbox rows
            response = http.post(notifier.url + "/v1/events", json=part, timeout=10,
                                 headers={"X-Auth-Token": SERVICE_TOKEN})
            assert response.status_code == 202, response.text
        wait_until(lambda: consumer.count >= 150, timeout_s=30, what="150 alarm POSTs")
        notifier.kill()  # SIGKILL mid fan-out: nothing flushed or closed
        at_kill = consumer.count
        assert at_kill < alarms, "the fan-out was over before the kill; nothing tested"

        notifier.start()
        wait_until(lambda: len(consumer.snapshot()) >= alarms, timeout_s=60,
                   what=f"all {alarms} alarms")
        wait_until(lambda: outbox_rows(notifier) == 0, timeout_s=30,
                   what="the outbox to empty")
        posts = consumer.snapshot()
        assert set(posts) == set(ids)
        duplicates = {alarm_id: found for alarm_id, found in posts.items() if len(found) > 1}
        print(f"\n{alarms} alarms; {at_kill} POSTs received before the kill; after the "
              f"restart every alarm arrived; {len(duplicates)} delivered more than once:")
        for alarm_id, found in sorted(duplicates.items())[:20]:
            print(f"  alarm {alarm_id}: {len(found)} POSTs, request ids {sorted(set(found))}")
        if len(duplicates) > 20:
            print(f"  ... and {len(duplicates) - 20} more")
        for alarm_id, found in duplicates.items():
            assert set(found) == {found[0]}, f"alarm {alarm_id} re-sent with another request id"
        assert all(found[0].startswith("req-") for found in posts.values())
        log = notifier.log()
        assert "alarm actions of the last run sent again" in log or not duplicates
        state = http.get(f"{notifier.url}/v2/alarms/{ids[0]}/state", headers=headers,
                         timeout=10)
        assert state.json() == "alarm"
    finally:
        http.close()
        if notifier.process is not None and notifier.process.poll() is None:
            assert notifier.stop() == 0, notifier.log()
        consumer.stop()


def test_a_slow_consumer_does_not_hold_up_the_others(tmp_path):
    gate = threading.Event()
    slow = CountingConsumer(gate=gate, gate_s=5.0).start()  # answers after 5 s at the latest
    fast = CountingConsumer().start()
    config = NotifierConfig(database=f"sqlite:///{tmp_path}/notifier.db", token="s3cret",
                            action_workers=16, action_timeout_ms=10_000)
    service = EmbeddedNotifier(config).start()
    try:
        tenant = project()
        # The slow consumer's alarms come first, more of them than there are workers.
        targets = [slow.url] * 20 + [fast.url] * 100
        for i, url in enumerate(targets):
            body = alarm_body(f"vm-{i}", f"vm-{i}", url)
            service.create_alarm({
                **body, "alarm_id": str(uuid.uuid4()), "state": "insufficient data",
                "enabled": True, "project_id": tenant, "user_id": "u",
                "timestamp": "2026-11-21T10:00:00"}, "u", tenant)
        service.submit([vm_error(f"vm-{i}", tenant) for i in range(len(targets))])
        wait_until(lambda: fast.count >= 100, timeout_s=4.5, what="the fast consumer's alarms")
        with slow.lock:  # it answered none yet, and holds only its share of the workers
            assert slow.waiting == slow.count == service.dispatcher.per_target == 12
        gate.set()
        wait_until(lambda: slow.count == 20 and slow.waiting == 0, what="the slow ones")
        wait_until(lambda: service.dispatcher.counts["delivered"] == 120, what="all delivered")
    finally:
        gate.set()
        service.stop()
        slow.stop()
        fast.stop()


def test_a_full_event_queue_answers_503_and_keeps_nothing(tmp_path, monkeypatch):
    import notifier.embedded as embedded

    monkeypatch.setattr(embedded, "QUEUE_BATCHES", 1)
    config = NotifierConfig(database=f"sqlite:///{tmp_path}/notifier.db", token="s3cret")
    service = EmbeddedNotifier(config)  # not started: the one queued batch stays queued
    service._outbox.maxsize = 1
    client = create_app(service, token="s3cret").test_client()
    try:
        events = [vm_error("vm", "p")]
        token = {"X-Auth-Token": "s3cret"}
        assert client.post("/v1/events", json=events, headers=token).status_code == 202
        refused = client.post("/v1/events", json=events, headers=token)
        assert refused.status_code == 503 and "overloaded" in refused.get_json()["error"]
        assert len(service.store.load_inbox()) == 1
    finally:
        service.stop(timeout_s=0.5)
