"""The sample Consumer checks who sends it an alarm, and recovers only what the Controller
confirms: a forged POST /failure does not delete a healthy VM. The Consumer's Flask app
(test client), the embedded Controller's Inventory in the same process."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from consumer.config import ConsumerConfig
from consumer.sample import SampleConsumer, create_app
from controller.embedded import Inventory
from doctor.events import instance_update
from doctor.signing import SIGNATURE_HEADER, sign, verify
from doctor.store import make_engine
from notifier.actions import ActionDispatcher
from notifier.evaluator import ALARM, Firing
from tests.unit.test_notifier_eval import Receiver
from tests.waiting import wait_until

TOKEN, SECRET = "consumer-token", "shared-action-secret"


def payload(instance_id: str, project: str = "tenant") -> dict:
    """Aodh's alarm action body for an instance's error."""
    return {"alarm_name": f"alarm-{instance_id[:8]}", "alarm_id": str(uuid.uuid4()),
            "severity": "critical", "previous": "ok", "current": "alarm", "reason": "r",
            "reason_data": {"type": "event",
                            "event": instance_update(instance_id, "error", "compute-1",
                                                     project)}}


@pytest.fixture
def inventory(tmp_path):
    found = Inventory(make_engine(f"sqlite:///{tmp_path}/controller.db"))
    yield found
    found.close()


def consumer_of(inventory=None, **options) -> SampleConsumer:
    config = ConsumerConfig(**{"token": TOKEN, "alarm_secret": SECRET, **options})
    return SampleConsumer(config, controller=inventory)


def post(http, body: dict, secret: str | None = SECRET, query: str = "", **headers: str):
    data = json.dumps(body).encode()
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, data)
    return http.post("/failure" + query, data=data, headers=headers,
                     content_type="application/json")


def test_an_alarm_is_taken_only_signed_or_with_the_token(inventory):
    consumer = consumer_of()
    http = create_app(consumer).test_client()
    body = payload(str(uuid.uuid4()))
    for refused in (post(http, body, secret=None), post(http, body, secret="guessed"),
                    post(http, body, secret=None, query="?token=wrong"),
                    post(http, body, secret=None, **{SIGNATURE_HEADER: "sha256=00"})):
        assert refused.status_code == 401
        assert refused.json["field"] == SIGNATURE_HEADER
    assert consumer.notifications() == []
    # A body changed after signing no longer matches its signature.
    data = json.dumps(body).encode()
    tampered = http.post("/failure", data=data.replace(b"critical", b"low"),
                         headers={SIGNATURE_HEADER: sign(SECRET, data)},
                         content_type="application/json")
    assert tampered.status_code == 401 and consumer.notifications() == []

    assert post(http, body).status_code == 200  # the embedded notifier's signature
    assert post(http, body, secret=None, query=f"?token={TOKEN}").status_code == 200  # Aodh
    assert post(http, body, secret=None, **{"X-Auth-Token": TOKEN}).status_code == 200
    assert len(consumer.notifications()) == 3


def test_the_failures_list_needs_the_token(inventory):
    consumer = consumer_of()
    http = create_app(consumer).test_client()
    post(http, payload(str(uuid.uuid4())))
    assert http.get("/failures").status_code == 401
    assert http.delete("/failures").status_code == 401
    assert http.get("/failures?token=" + TOKEN).status_code == 401  # the header, not the URL
    assert len(consumer.notifications()) == 1
    assert len(http.get("/failures", headers={"X-Auth-Token": TOKEN}).json) == 1
    assert http.delete("/failures", headers={"X-Auth-Token": TOKEN}).status_code == 204


def recreating(inventory, confirm_s):
    """A VM on compute-1 and one on compute-2, and a consumer that recreates failed VMs (its
    recovery started) with its test client: (the first VM, consumer, client)."""
    vm = inventory.create_server("vnf", "tenant", "compute-1")
    inventory.create_server("other", "tenant", "compute-2")
    consumer = consumer_of(inventory, recovery="recreate", controller_url="http://c:1",
                           recovery_confirm_s=confirm_s)
    consumer.recovery.start()
    return vm, consumer, create_app(consumer).test_client()


def test_a_forged_failure_does_not_delete_a_healthy_vm(inventory):
    healthy, consumer, http = recreating(inventory, 0.3)
    try:
        # The attack of the issue: an unsigned POST /failure naming a healthy VM.
        assert post(http, payload(healthy.id), secret=None).status_code == 401
        assert consumer.notifications() == []
        # Even signed (a replay, a buggy sender), the controller has it active on a host up:
        assert post(http, payload(healthy.id)).status_code == 200
        wait_until(lambda: consumer.recovery.skipped == [healthy.id], 5)
        assert inventory.get_server(healthy.id) == healthy
        assert [s.name for s in inventory.list_servers()] == ["vnf", "other"]
        # In error but its host up: still not a failure to recover.
        inventory.reset_state(healthy.id, "error")
        assert post(http, payload(healthy.id)).status_code == 200
        wait_until(lambda: consumer.recovery.skipped == [healthy.id] * 2, 5)
        assert inventory.get_server(healthy.id).host == "compute-1"
        assert consumer.recovery.recovered == {}
    finally:
        consumer.recovery.stop()


def test_a_confirmed_failure_is_recovered_also_when_the_alarm_came_first(inventory):
    failed, consumer, http = recreating(inventory, 10)
    try:
        # The shortcut notifies before the inspector's controller calls have landed.
        assert post(http, payload(failed.id)).status_code == 200
        time.sleep(0.7)
        assert consumer.recovery.recovered == {}
        inventory.force_down("compute-1")
        inventory.reset_state(failed.id, "error")
        wait_until(lambda: failed.id in consumer.recovery.recovered, 5)
        [replacement] = [s for s in inventory.list_servers() if s.name == "vnf"]
        assert replacement.host == "compute-2" and replacement.id != failed.id
        assert consumer.recovery.skipped == []
    finally:
        consumer.recovery.stop()


def test_noauth_takes_any_alarm_but_still_recovers_only_what_is_confirmed(inventory):
    healthy = inventory.create_server("vnf", "tenant", "compute-1")
    consumer = SampleConsumer(ConsumerConfig(auth_strategy="noauth", recovery="recreate",
                                             controller_url="http://c:1",
                                             recovery_confirm_s=0.2), controller=inventory)
    consumer.recovery.start()
    try:
        http = create_app(consumer).test_client()
        assert post(http, payload(healthy.id), secret=None).status_code == 200
        assert http.get("/failures").status_code == 200
        wait_until(lambda: consumer.recovery.skipped == [healthy.id], 5)
        assert inventory.get_server(healthy.id) == healthy
    finally:
        consumer.recovery.stop()


def test_the_notifier_signs_every_alarm_action_with_its_action_secret():
    receiver = Receiver()
    dispatcher = ActionDispatcher(timeout_s=2, secret=SECRET).start()
    unsigned = ActionDispatcher(timeout_s=2).start()
    try:
        firing = Firing(alarm_id="a1", alarm_name="n", severity="low", previous="ok",
                        current=ALARM, reason="r",
                        event=instance_update("vm-1", "error", "compute-1", "tenant"),
                        actions=[receiver.url + "/failure"], instance_id="vm-1",
                        at=time.time(), alarm={})
        dispatcher.dispatch([firing])
        unsigned.dispatch([firing])
        wait_until(lambda: len(receiver.calls) == 2, 5)
    finally:
        dispatcher.stop()
        unsigned.stop()
        receiver.stop()
    signatures = [headers.get(SIGNATURE_HEADER) for _path, headers, _body in receiver.calls]
    assert signatures.count(None) == 1
    [signature] = [s for s in signatures if s]
    body = json.dumps(receiver.calls[0][2]).encode()
    assert signature.startswith("sha256=") and verify(SECRET, body, signature)
    assert not verify("another secret", body, signature)
