"""The embedded Controller as a real daemon: its REST API, its CLI, its client, its events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from controller.base import ControllerError, NotFound, Server
from controller.client import ControllerClient
from doctor.events import INSTANCE_UPDATE, parse_ceilometer_event, traits
from testkit.eventsink import EventSink, free_port
from tests.waiting import wait_answering

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "functional-secret"


def start_controller(tmp_path: Path, *flags: str, token: str = TOKEN
                     ) -> tuple[subprocess.Popen, str, Path]:
    """A ``doctor-controller serve`` process on a free port, its ``token`` in its environment
    (DOCTOR_CONTROLLER_TOKEN); returns it, its URL, its log."""
    port = free_port()
    log = tmp_path / f"controller-{port}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "serve", "--port", str(port),
             "--database", f"sqlite:///{tmp_path}/controller-{port}.db", *flags],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "DOCTOR_CONTROLLER_TOKEN": token})
    url = f"http://127.0.0.1:{port}"
    wait_answering(process, url + "/v1/hosts", log, "controller")  # any answer, 401 too
    return process, url, log


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def events():
    sink = EventSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def controller(tmp_path_factory, events):
    process, url, log = start_controller(tmp_path_factory.mktemp("controller"),
                                         "--notify-urls", events.url)
    yield url
    stop(process)
    assert process.returncode == 0, log.read_text()
    assert TOKEN not in log.read_text()


@pytest.fixture
def client(controller):
    client = ControllerClient(controller, TOKEN, timeout_s=5)
    yield client
    client.close()


def cli(url: str, *argv: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCTOR_CONTROLLER_URL": url, "DOCTOR_CONTROLLER_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "controller.cli", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)


def published(sink: EventSink, instance_id: str, count: int, timeout_s: float = 5) -> list:
    """The events about ``instance_id`` that reached the sink, once ``count`` of them did."""
    deadline = time.monotonic() + timeout_s
    while True:
        with sink.lock:
            found = [e for _, body in sink.requests for e in body
                     if traits(e).get("instance_id") == instance_id]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def test_cli_boots_lists_resets_migrates_and_deletes(controller):
    booted = cli(controller, "boot", "--host", "cli-1", "--project", "tenant-cli", "vnf",
                 "--count", "3")
    assert booted.returncode == 0, booted.stderr
    ids = booted.stdout.split()
    assert len(ids) == 3

    listed = cli(controller, "list", "--host", "cli-1", "-f", "json")
    assert listed.returncode == 0, listed.stderr
    servers = json.loads(listed.stdout)
    assert [s["id"] for s in servers] == ids
    assert [s["name"] for s in servers] == ["vnf-1", "vnf-2", "vnf-3"]
    assert "| id " in cli(controller, "list").stdout

    assert cli(controller, "host-status", ids[0]).stdout.strip() == "UP"
    assert cli(controller, "force-down", "cli-1").returncode == 0
    assert cli(controller, "host-status", ids[0]).stdout.strip() == "DOWN"
    assert cli(controller, "reset-state", ids[0]).returncode == 0
    assert cli(controller, "migrate", ids[0], "--host", "cli-2").returncode == 0
    shown = json.loads(cli(controller, "show", ids[0], "-f", "json").stdout)
    assert shown == {"id": ids[0], "name": "vnf-1", "project_id": "tenant-cli", "host": "cli-2",
                     "state": "error", "host_status": "UP"}
    assert cli(controller, "force-down", "cli-1", "--up").returncode == 0
    assert cli(controller, "host-status", ids[1]).stdout.strip() == "UP"

    assert cli(controller, "delete", ids[0]).returncode == 0
    gone = cli(controller, "show", ids[0])
    assert gone.returncode == 1
    assert f"HTTP 404: no server {ids[0]}" in gone.stderr


def test_cli_errors_name_the_field_and_exit_2_for_usage_1_for_the_server(controller):
    usage = cli(controller, "boot", "vnf", "--project", "p")
    assert usage.returncode == 2 and "--host" in usage.stderr
    count = cli(controller, "boot", "vnf", "--host", "h", "--project", "p", "--count", "0")
    assert count.returncode == 2 and "--count: must be >= 1" in count.stderr
    state = cli(controller, "reset-state", "some-id", "--state", "broken")
    assert state.returncode == 2 and "--state" in state.stderr
    token = cli(controller, "list", token="wrong")
    assert token.returncode == 1 and "HTTP 401" in token.stderr
    unknown = cli(controller, "force-down", "no-such-host")
    assert unknown.returncode == 1 and "no host no-such-host" in unknown.stderr
    unreachable = cli(f"http://127.0.0.1:{free_port()}", "list")
    assert unreachable.returncode == 1 and "controller unreachable" in unreachable.stderr


def test_client_implements_the_controller_over_http(client):
    server = client.create_server("vnf", "tenant-client", "client-1")
    assert isinstance(server, Server) and server.state == "active"
    assert client.get_server(server.id) == server
    assert server in client.list_servers("client-1")
    assert server not in client.list_servers("client-2")
    client.reset_state(server.id)
    assert client.get_server(server.id).state == "error"
    client.force_down("client-1")
    assert client.host_status(server.id) == "DOWN"
    assert any(h.name == "client-1" and h.forced_down for h in client.list_hosts())
    client.migrate_server(server.id, "client-2")
    assert client.host_status(server.id) == "UP"
    client.delete_server(server.id)
    with pytest.raises(NotFound) as caught:
        client.get_server(server.id)
    assert caught.value.status == 404
    with pytest.raises(ControllerError, match="HTTP 409: .*client-1 is forced down"):
        client.create_server("vnf", "tenant-client", "client-1")


def test_client_without_the_token_is_refused(controller):
    anonymous = ControllerClient(controller, timeout_s=5)
    with pytest.raises(ControllerError, match="HTTP 401") as caught:
        anonymous.list_servers()
    assert caught.value.status == 401
    anonymous.close()


@pytest.mark.parametrize("method, path, body, field", [
    ("POST", "/v1/servers", {"name": "vnf", "host": "h"}, "project_id"),
    ("POST", "/v1/servers", {"name": "", "project_id": "p", "host": "h"}, "name"),
    ("POST", "/v1/servers", ["not", "an", "object"], "body"),
    ("POST", "/v1/servers", "{not json", "body"),
    ("POST", "/v1/servers/ID/action", {"reboot": {}}, "body"),
    ("POST", "/v1/servers/ID/action", {"reset-state": {"state": "broken"}}, "reset-state.state"),
    ("POST", "/v1/servers/ID/action", {"reset-state": "error"}, "reset-state"),
    ("POST", "/v1/servers/ID/action", {"migrate": {}}, "migrate.host"),
    ("PUT", "/v1/hosts/api-1", {"forced_down": "yes"}, "forced_down"),
    ("PUT", "/v1/hosts/api-1", None, "body"),
])
def test_bad_bodies_are_400_naming_the_field(controller, client, method, path, body, field):
    server = client.create_server("vnf", "tenant-api", "api-1")
    headers = {"X-Auth-Token": TOKEN, "Content-Type": "application/json"}
    data = body if isinstance(body, str) else (json.dumps(body) if body is not None else None)
    response = requests.request(method, controller + path.replace("ID", server.id),
                                data=data, headers=headers, timeout=5)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert field in response.json()["error"]
    assert client.get_server(server.id) == server  # nothing changed


def test_unknown_ids_are_404(controller):
    headers = {"X-Auth-Token": TOKEN}
    for method, path, body in [
        ("GET", "/v1/servers/nope", None), ("DELETE", "/v1/servers/nope", None),
        ("POST", "/v1/servers/nope/action", {"reset-state": {"state": "error"}}),
        ("POST", "/v1/servers/nope/action", {"migrate": {"host": "h"}}),
        ("PUT", "/v1/hosts/nope", {"forced_down": True}),
    ]:
        response = requests.request(method, controller + path, json=body, headers=headers,
                                    timeout=5)
        assert response.status_code == 404, (method, path, response.text)
        assert "nope" in response.json()["error"]


def test_events_reach_the_receivers_given_as_notify_urls(client, events):
    server = client.create_server("vnf", "tenant-events", "events-1")
    client.reset_state(server.id, "error")
    client.migrate_server(server.id, "events-2")
    client.delete_server(server.id)
    found = published(events, server.id, 4)
    assert [e["event_type"] for e in found] == [
        "compute.instance.create.end", INSTANCE_UPDATE, INSTANCE_UPDATE,
        "compute.instance.delete.end"]
    for event in found:
        parse_ceilometer_event(event)
        assert traits(event)["project_id"] == traits(event)["tenant_id"] == "tenant-events"
    assert [traits(e)["state"] for e in found] == ["active", "error", "error", "deleted"]
    assert [traits(e)["host"] for e in found] == ["events-1", "events-1", "events-2", "events-2"]


def test_parallel_resets_over_http_all_land_and_are_published(client, events):
    from concurrent.futures import ThreadPoolExecutor

    ids = [client.create_server(f"vnf-{i}", "tenant-bulk", "bulk-1").id for i in range(100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(client.reset_state, ids))
    assert {s.state for s in client.list_servers("bulk-1")} == {"error"}
    for server_id in ids:
        assert [traits(e)["state"] for e in published(events, server_id, 2)] == [
            "active", "error"]


def test_a_bad_config_value_exits_2_naming_it(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "serve", "--port", "70000"], cwd=ROOT,
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "[controller] port: must be <= 65535, got 70000 (in flags)" in result.stderr
