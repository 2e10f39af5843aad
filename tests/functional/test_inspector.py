"""The Inspector as a daemon, with the real controller, notifier and consumer processes."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from controller.client import ControllerClient
from doctor.events import HOST_DOWN, HostEvent
from scenario.alarms import vm_error_alarm, vnfm_aodh_client
from scenario.pipeline import Pipeline
from tests.waiting import wait_until


@pytest.fixture
def pipeline(tmp_path):
    running = Pipeline(str(tmp_path)).start()
    yield running
    running.stop()


def put_events(pipeline, body, token=None, method="PUT"):
    headers = {"X-Auth-Token": pipeline.token if token is None else token}
    return requests.request(method, pipeline.url("inspector") + "/events", json=body,
                            headers=headers, timeout=5)


def failures(pipeline):
    """What the consumer was told (its token in X-Auth-Token)."""
    return requests.get(pipeline.url("consumer") + "/failures", headers=pipeline.headers(),
                        timeout=5).json()


def test_requests_without_the_token_get_401(pipeline):
    event = HostEvent.new(HOST_DOWN, "compute-1", "m").to_doctor()
    assert put_events(pipeline, [event], token="").status_code == 401
    assert put_events(pipeline, [event], token="wrong").status_code == 401
    response = requests.get(pipeline.url("inspector") + "/hosts", timeout=5)
    assert response.status_code == 401


def test_no_secret_is_on_a_command_line_and_the_state_is_private(pipeline):
    import os
    import stat

    secrets = (pipeline.token, pipeline.action_secret, pipeline.vnfm_token)
    for part in pipeline.parts.values():
        with open(f"/proc/{part.process.pid}/cmdline", "rb") as handle:
            command_line = handle.read().decode()
        assert not any(secret in command_line for secret in secrets), part.name
    for path, mode in ((pipeline.state_dir, 0o700), (pipeline.api_tokens_file, 0o600),
                       (os.path.join(pipeline.state_dir, "inspector.db"), 0o600),
                       (os.path.join(pipeline.state_dir, "notifier.db"), 0o600),
                       (pipeline.profile_file, 0o600)):
        if os.path.exists(path) or path != pipeline.profile_file:
            assert stat.S_IMODE(os.stat(path).st_mode) == mode, path


@pytest.mark.parametrize("body, field", [
    ("not json", "body"),
    ([], "body"),
    ([{"type": "compute.host.down", "time": "yesterday",
       "details": {"hostname": "c1", "monitor": "m", "monitor_event_id": "1"}}],
     "body[0].time"),
    ([{"type": "compute.host.down", "time": "2026-11-22T00:00:00Z",
       "details": {"hostname": "c1", "monitor": "m"}}], "body[0].details.monitor_event_id"),
])
def test_malformed_events_get_400_naming_the_field(pipeline, body, field):
    if body == "not json":
        response = requests.put(pipeline.url("inspector") + "/events", data="{oops",
                                headers={"X-Auth-Token": pipeline.token}, timeout=5)
    else:
        response = put_events(pipeline, body)
    assert response.status_code == 400
    assert response.json()["field"] == field


def test_post_and_a_bare_object_are_accepted_too(pipeline):
    event = HostEvent.new(HOST_DOWN, "compute-9", "m").to_doctor()
    response = put_events(pipeline, event, method="POST")
    assert response.status_code == 202
    assert response.json()["accepted"] == [event["details"]["monitor_event_id"]]
    again = put_events(pipeline, [event])
    assert again.json() == {"accepted": [], "duplicates": [event["details"]["monitor_event_id"]]}


def test_killed_after_the_202_the_event_is_acted_on_once_after_restart(pipeline):
    project = pipeline.vnfm_project  # the project of the VNFM's token
    controller = ControllerClient(pipeline.url("controller"), pipeline.token)
    vms = [controller.create_server(f"vm{i}", project, "compute-1").id for i in range(3)]
    aodh = vnfm_aodh_client(pipeline, project)
    for vm in vms:  # repeat_actions: a second notification would show as a second alarm
        aodh.alarm.create({**vm_error_alarm(vm, pipeline.action_url()),
                           "repeat_actions": True})
    headers = {"X-Auth-Token": pipeline.token}
    wait_until(lambda: requests.get(pipeline.url("inspector") + "/hosts/compute-1",
                                    headers=headers, timeout=5).json().get("servers") == 3,
               10, "the host map")
    pipeline.parts["controller"].stop()  # the inspector cannot finish the controller calls
    event = HostEvent.new(HOST_DOWN, "compute-1", "m").to_doctor()
    assert put_events(pipeline, [event]).status_code == 202
    notified = wait_until(lambda: (lambda n: n if len(n) >= 3 else None)(
        failures(pipeline)),
        10, "the shortcut notifications")
    pipeline.parts["inspector"].stop(signal.SIGKILL)
    pipeline.restart("controller")
    pipeline.restart("inspector")
    wait_until(lambda: all(controller.host_status(vm) == "DOWN" for vm in vms), 15,
               "host_status DOWN")
    servers = controller.list_servers("compute-1")
    wait_until(lambda: all(s.state == "error" for s in controller.list_servers("compute-1")),
               15, "every VM in error")
    assert {s.id for s in servers} == set(vms)
    host = requests.get(pipeline.url("inspector") + "/hosts/compute-1", headers=headers,
                        timeout=5).json()
    assert host["state"] == "down"
    assert host["last_event"]["details"]["monitor_event_id"] == \
        event["details"]["monitor_event_id"]
    time.sleep(1.0)  # had the restarted inspector notified again, alarms would fire again
    final = failures(pipeline)
    assert len(final) == len(notified) == 3
    log = open(pipeline.parts["inspector"].log_path).read()
    assert "resuming 1 events accepted before a restart" in log
    assert "were notified before a restart; not again" in log


def test_host_map_follows_vms_created_moved_and_deleted_without_a_restart(pipeline):
    controller = ControllerClient(pipeline.url("controller"), pipeline.token)
    headers = {"X-Auth-Token": pipeline.token}

    def servers_on(host):
        response = requests.get(f"{pipeline.url('inspector')}/hosts/{host}", headers=headers,
                                timeout=5)
        return response.json()["servers"] if response.ok else 0

    vm = controller.create_server("vm", "p", "compute-1")
    other = controller.create_server("other", "p", "compute-2")
    wait_until(lambda: servers_on("compute-1") == 1 and servers_on("compute-2") == 1, 5,
               "created VMs in the map")
    controller.migrate_server(vm.id, "compute-2")
    wait_until(lambda: servers_on("compute-1") == 0 and servers_on("compute-2") == 2, 5,
               "the moved VM in the map")
    controller.delete_server(other.id)
    wait_until(lambda: servers_on("compute-2") == 1, 5, "the deleted VM out of the map")


def test_two_inspectors_act_on_an_event_sent_to_both_once_and_both_are_listed(pipeline):
    """Two Inspector processes on one database: whichever stores the event first acts."""
    project = pipeline.vnfm_project  # the project of the VNFM's token
    controller = ControllerClient(pipeline.url("controller"), pipeline.token)
    vms = [controller.create_server(f"vm{i}", project, "compute-1").id for i in range(3)]
    aodh = vnfm_aodh_client(pipeline, project)
    for vm in vms:  # repeat_actions: acting twice would notify twice
        aodh.alarm.create({**vm_error_alarm(vm, pipeline.action_url()),
                           "repeat_actions": True})
    second = pipeline.start_another("inspector", "inspector2")
    headers = {"X-Auth-Token": pipeline.token}
    for url in (pipeline.url("inspector"), second.url):
        wait_until(lambda u=url: requests.get(u + "/hosts/compute-1", headers=headers,
                                              timeout=5).json().get("servers") == 3,
                   10, f"the host map of {url}")
    event = HostEvent.new(HOST_DOWN, "compute-1", "m").to_doctor()
    with ThreadPoolExecutor(2) as pool:  # at the same time, as two monitors would
        answers = list(pool.map(lambda url: requests.put(url + "/events", json=[event],
                                                         headers=headers, timeout=5),
                                (pipeline.url("inspector"), second.url)))
    assert [a.status_code for a in answers] == [202, 202]
    event_id = event["details"]["monitor_event_id"]
    assert sorted(len(a.json()["accepted"]) for a in answers) == [0, 1]
    assert sorted(len(a.json()["duplicates"]) for a in answers) == [0, 1]
    wait_until(lambda: len(failures(pipeline)) >= 3, 10, "the notifications")
    wait_until(lambda: all(s.state == "error" for s in controller.list_servers("compute-1")),
               15, "every VM in error")
    time.sleep(1.0)  # a second inspector acting would fire the alarms again
    assert len(failures(pipeline)) == 3
    acted = [part.name for part in (pipeline.parts["inspector"], second)
             if f"compute-1 is down ({event_id})" in open(part.log_path).read()]
    assert len(acted) == 1, acted

    services = requests.get(pipeline.url("inspector") + "/v1/services", headers=headers,
                            timeout=5).json()
    inspectors = {s["Process Id"] for s in services if s["Name"].startswith("InspectorWorker")}
    assert inspectors == {pipeline.parts["inspector"].process.pid, second.process.pid}
