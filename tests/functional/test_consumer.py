"""The sample Consumer as a real daemon: Aodh-shaped alarms in, kept and listed, VMs recovered."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from controller.client import ControllerClient
from doctor import clock
from doctor.events import instance_update
from doctor.profiler import read
from doctor.signing import SIGNATURE_HEADER, sign
from testkit.eventsink import free_port
from tests.functional.test_controller_api import start_controller, stop
from tests.waiting import wait_answering, wait_until

ROOT = Path(__file__).resolve().parents[2]
CONTROLLER_TOKEN = "consumer-test-secret"
TOKEN, ALARM_SECRET = "consumer-token", "notifier-action-secret"
AUTH = {"X-Auth-Token": TOKEN}  # the consumer's own API: /failures


def signed(payload: dict) -> dict:
    """requests' keywords of an alarm POST signed as the embedded notifier signs it."""
    data = json.dumps(payload).encode()
    return {"data": data, "headers": {"Content-Type": "application/json",
                                      SIGNATURE_HEADER: sign(ALARM_SECRET, data)}}


def alarm_payload(instance_id: str, alarm_id: str = "", project: str = "tenant") -> dict:
    """What Aodh's REST notifier POSTs for an event alarm on compute.instance.update."""
    alarm_id = alarm_id or str(uuid.uuid4())
    event = instance_update(instance_id, "error", "compute-1", project)
    return {
        "alarm_name": f"doctor-alarm-{instance_id[:8]}", "alarm_id": alarm_id,
        "severity": "moderate", "previous": "insufficient data", "current": "alarm",
        "reason": f"Event <id={event['message_id']},event_type=compute.instance.update> "
                  f"hits the query <query=[traits.instance_id eq {instance_id}, "
                  f"traits.state eq error]>.",
        "reason_data": {"type": "event", "event": event},
    }


def start_consumer(tmp_path: Path, *flags: str, env: dict | None = None
                   ) -> tuple[subprocess.Popen, str, Path]:
    """A ``doctor-consumer`` process on a free port, its token and alarm secret in its
    environment; returns it, its base URL, its log."""
    port = free_port()
    log = tmp_path / f"consumer-{port}.log"
    env = {**os.environ, "DOCTOR_CONSUMER_TOKEN": TOKEN,
           "DOCTOR_CONSUMER_ALARM_SECRET": ALARM_SECRET, **(env or {})}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "consumer.cli", "--port", str(port),
                                    *flags], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env=env)
    url = f"http://127.0.0.1:{port}"
    wait_answering(process, url + "/failures", log, "consumer")
    return process, url, log


@pytest.fixture(scope="module")
def consumer(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("consumer")
    profile = workdir / "profile.jsonl"
    process, url, log = start_consumer(workdir, "--profile-file", str(profile))
    yield url, log, profile
    stop(process)
    assert process.returncode == 0, log.read_text()




def test_an_alarm_is_answered_recorded_logged_and_listed(consumer):
    url, log, profile = consumer
    requests.delete(url + "/failures", headers=AUTH, timeout=5).raise_for_status()
    instance_id = str(uuid.uuid4())
    payload = alarm_payload(instance_id)
    before = clock.now()
    response = requests.post(url + "/failure", **signed(payload), timeout=5)
    after = clock.now()
    assert response.status_code == 200, response.text

    [kept] = requests.get(url + "/failures", headers=AUTH, timeout=5).json()
    assert kept["alarm_id"] == payload["alarm_id"]
    assert kept["alarm_name"] == payload["alarm_name"]
    assert kept["instance_id"] == instance_id
    assert before <= kept["received_at"] <= after

    line = wait_until(lambda: re.search(r"doctor consumer notified at (\d+\.\d{6}) alarm (\S+) "
                                      r"instance (\S+)", log.read_text()), what="the log line")
    assert float(line.group(1)) == pytest.approx(kept["received_at"], abs=1e-6)
    assert line.group(2, 3) == (payload["alarm_id"], instance_id)

    [checkpoint] = [c for c in read(str(profile)) if c.get("instance_id") == instance_id]
    assert checkpoint["checkpoint"] == "T09"
    assert checkpoint["time"] == pytest.approx(kept["received_at"], abs=1e-6)


def test_an_unsigned_alarm_and_an_anonymous_listing_get_401_and_nothing_is_recorded(consumer):
    url, log, _profile = consumer
    requests.delete(url + "/failures", headers=AUTH, timeout=5).raise_for_status()
    forged = requests.post(url + "/failure", json=alarm_payload(str(uuid.uuid4())), timeout=5)
    assert forged.status_code == 401 and forged.json()["field"] == SIGNATURE_HEADER
    assert requests.get(url + "/failures", timeout=5).status_code == 401
    assert requests.delete(url + "/failures", timeout=5).status_code == 401
    assert requests.get(url + "/failures", headers=AUTH, timeout=5).json() == []
    # Real Aodh cannot sign: its action URL carries the token (never logged).
    aodh = requests.post(url + f"/failure?token={TOKEN}", json=alarm_payload("vm-aodh"),
                         timeout=5)
    assert aodh.status_code == 200
    assert TOKEN not in log.read_text()


def test_failures_since_and_clear(consumer):
    url, _log, _profile = consumer
    requests.delete(url + "/failures", headers=AUTH, timeout=5).raise_for_status()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    requests.post(url + "/failure", **signed(alarm_payload(first)), timeout=5
                  ).raise_for_status()
    middle = clock.now()
    requests.post(url + "/failure", **signed(alarm_payload(second)), timeout=5
                  ).raise_for_status()
    everything = requests.get(url + "/failures", headers=AUTH, timeout=5).json()
    assert [n["instance_id"] for n in everything] == [first, second]
    recent = requests.get(url + "/failures", params={"since": middle}, headers=AUTH,
                          timeout=5).json()
    assert [n["instance_id"] for n in recent] == [second]
    bad_since = requests.get(url + "/failures", params={"since": "yesterday"}, headers=AUTH,
                             timeout=5)
    assert bad_since.status_code == 400 and bad_since.json()["field"] == "since"
    assert requests.delete(url + "/failures", headers=AUTH, timeout=5).status_code == 204
    assert requests.get(url + "/failures", headers=AUTH, timeout=5).json() == []


def _without(payload: dict, *path: str) -> dict:
    target = payload
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return payload


@pytest.mark.parametrize("make_body, field", [
    (lambda: None, "body"),
    (lambda: "[1, 2]", "body"),
    (lambda: "{not json", "body"),
    (lambda: _without(alarm_payload("vm"), "alarm_id"), "alarm_id"),
    (lambda: _without(alarm_payload("vm"), "reason_data"), "reason_data"),
    (lambda: {**alarm_payload("vm"), "reason_data": {"type": "threshold"}}, "reason_data.type"),
    (lambda: _without(alarm_payload("vm"), "reason_data", "event"), "reason_data.event"),
    (lambda: _without(alarm_payload("vm"), "reason_data", "event", "generated"),
     "reason_data.event.generated"),
    (lambda: {**alarm_payload("vm"), "reason_data": {"type": "event", "event": {
        **alarm_payload("vm")["reason_data"]["event"], "traits": [["state", 1, "error"]]}}},
     "reason_data.event.traits.instance_id"),
])
def test_a_malformed_alarm_is_400_naming_the_field_and_not_recorded(consumer, make_body, field):
    url, _log, _profile = consumer
    before = requests.get(url + "/failures", headers=AUTH, timeout=5).json()
    body = make_body()
    data = body if isinstance(body, str) or body is None else json.dumps(body)
    # Signed as the notifier signs: a well-authenticated body that is still malformed.
    data = (data or "").encode()
    response = requests.post(url + "/failure", data=data, timeout=5,
                             headers={"Content-Type": "application/json",
                                      SIGNATURE_HEADER: sign(ALARM_SECRET, data)})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert requests.get(url + "/failures", headers=AUTH, timeout=5).json() == before


def test_recovery_recreates_the_failed_vm_on_a_healthy_host_once(tmp_path):
    controller_process, controller_url, controller_log = start_controller(
        tmp_path, token=CONTROLLER_TOKEN)
    consumer_process = None
    controller = ControllerClient(controller_url, CONTROLLER_TOKEN, timeout_s=5)
    try:
        failed = controller.create_server("vnf", "tenant-r", "compute-1")
        bystander = controller.create_server("other", "tenant-r", "compute-1")
        controller.create_server("filler", "tenant-r", "compute-2")
        controller.create_server("filler", "tenant-r", "compute-3")
        controller.force_down("compute-1")
        controller.force_down("compute-2")  # the first host by name that is up is compute-3
        # What the inspector does to a failed host's VMs; recovery acts only on what the
        # controller confirms (tests/unit/test_consumer_auth.py).
        controller.reset_state(failed.id, "error")

        consumer_process, url, log = start_consumer(
            tmp_path, "--recovery", "recreate", "--controller-url", controller_url,
            env={"DOCTOR_CONSUMER_CONTROLLER_TOKEN": CONTROLLER_TOKEN})
        payload = alarm_payload(failed.id, project="tenant-r")
        for _ in range(3):  # a repeated alarm must not recover the VM again
            response = requests.post(url + "/failure", **signed(payload), timeout=5)
            assert response.status_code == 200, response.text

        def recovered():
            servers = controller.list_servers()
            if any(s.id == failed.id for s in servers):
                return None
            return [s for s in servers if s.name == "vnf"]

        [replacement] = wait_until(recovered, 10, what="the failed VM to be recreated")
        assert replacement.host == "compute-3" and replacement.project_id == "tenant-r"
        assert replacement.state == "active" and replacement.id != failed.id
        assert controller.get_server(bystander.id).host == "compute-1"  # no alarm, no action
        wait_until(lambda: "recovered: recreated as" in log.read_text(), 10,
                   what="the recovery log")
        time.sleep(0.2)  # a second recovery, if any, would have shown by now
        assert [s.name for s in controller.list_servers()].count("vnf") == 1
        assert log.read_text().count("recovered: recreated as") == 1
    finally:
        controller.close()
        if consumer_process is not None:
            stop(consumer_process)
        stop(controller_process)
    assert consumer_process.returncode == 0
    for secret in (CONTROLLER_TOKEN, TOKEN, ALARM_SECRET):
        assert secret not in log.read_text() + controller_log.read_text()


def test_recreate_without_a_controller_url_exits_2_naming_it():
    result = subprocess.run([sys.executable, "-m", "consumer.cli", "--recovery", "recreate"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30,
                            env={**os.environ, "DOCTOR_CONSUMER_TOKEN": TOKEN})
    assert result.returncode == 2
    assert "[consumer] controller_url: required when recovery = recreate" in result.stderr
