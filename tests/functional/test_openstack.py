"""The Inspector against real Nova and Aodh (the test bed of tools/testbed/openstack.sh).

Runs when the bed is up and its variables are set (``source <(tools/testbed/openstack.sh
env)``); otherwise skipped, saying so. With Keystone (the bed's default) the servers and
alarms are the VNFM's, a member of their project; the Inspector is the operator, an admin.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from doctor.config import build
from doctor.events import HOST_DOWN, HostEvent
from doctor.openstack import open_cloud
from doctor.store import make_engine
from inspector.cli import build_controller, build_publisher
from inspector.config import InspectorConfig
from inspector.service import InspectorService
from inspector.store import EventLog
from scenario.alarms import aodh_cache_ttl_s, cloud_aodh_client, vm_error_alarm, wait_alarms_seen
from scenario.clouds import host_zone, nova_client, operator_cloud, vnfm_cloud
from scenario.pipeline import Pipeline, nova_settings
from tests.functional.conftest import require_keystone_bed, require_testbed
from tests.tcpgate import TcpGate
from tests.waiting import wait_until


@pytest.fixture(scope="module", autouse=True)
def _testbed():
    require_testbed()

ENV = os.environ




@pytest.fixture
def nova():
    """The operator's novaclient (admin)."""
    return nova_client(operator_cloud(ENV), ENV)


@pytest.fixture
def tenant_nova():
    """The VNFM's novaclient: it boots the servers."""
    return nova_client(vnfm_cloud(ENV), ENV)


def boot(tenant_nova, name, host):
    return tenant_nova.servers.create(name, ENV["DOCTOR_IMAGE_ID"], ENV["DOCTOR_FLAVOR_ID"],
                                      nics=[{"net-id": ENV["DOCTOR_NETWORK_ID"]}],
                                      availability_zone=host_zone(ENV, host))


@pytest.fixture
def servers(nova, tenant_nova):
    """Two servers booted on compute1; deleted and compute1 brought back afterwards."""
    booted = [boot(tenant_nova, f"doctor-test-{uuid.uuid4().hex[:6]}", "compute1")
              for _ in range(2)]
    wait_until(lambda: all(nova.servers.get(s.id).status == "ACTIVE" for s in booted), 120,
               "servers ACTIVE")
    yield [s.id for s in booted]
    for service in nova.services.list(host="compute1", binary="nova-compute"):
        nova.services.force_down(service.id, False)
    for server in booted:
        nova.servers.delete(server.id)


@pytest.fixture
def consumer():
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((time.time(), json.loads(self.rfile.read(
                int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/failure", received
    httpd.shutdown()


def assert_failed_over(nova, servers) -> None:
    """compute1 forced down in Nova, and every one of ``servers`` in error."""
    assert all(getattr(nova.servers.get(vm), "OS-EXT-STS:vm_state") == "error"
               for vm in servers)
    [compute] = nova.services.list(host="compute1", binary="nova-compute")
    assert compute.forced_down


def inspector_config(tmp_path, **settings) -> InspectorConfig:
    """The inspector's config on the bed: Nova as the operator, Aodh on the bus."""
    return build(InspectorConfig, "inspector", {
        "token": "t", "database": f"sqlite:///{tmp_path}/inspector.db", "controller": "nova",
        **nova_settings(ENV), "notifier": "aodh",
        "aodh_transport_url": ENV["DOCTOR_TRANSPORT_URL"], **settings})


def inspector_for_the_bed(tmp_path) -> InspectorService:
    config = inspector_config(tmp_path, resync_interval_s="5")
    service = InspectorService(config, build_controller(config), build_publisher(config),
                               EventLog(make_engine(config.database)))
    service.start()
    assert service.wait_ready(30)
    return service


def test_host_down_forces_nova_compute_down_errors_every_server_and_fires_aodh(
        tmp_path, nova, servers, consumer):
    url, received = consumer
    aodh = cloud_aodh_client(ENV)
    alarms = [aodh.alarm.create(vm_error_alarm(vm, url))["alarm_id"] for vm in servers]
    created_at = time.monotonic()
    service = inspector_for_the_bed(tmp_path)
    try:
        wait_until(lambda: {s.id for s in service.hostmap.servers_on("compute1")} >= set(servers),
                   30, "the host map to hold the servers")
        # Aodh's listener may hold the project's alarms from before these were created.
        wait_alarms_seen(created_at, aodh_cache_ttl_s(openstack=True))
        event = HostEvent.new(HOST_DOWN, "compute1", "test")
        service.submit([event])
        wait_until(lambda: len({body["alarm_id"] for _, body in received}) == len(alarms), 30,
                   "Aodh's alarms at the consumer")
        wait_until(lambda: service.log.get(event.monitor_event_id).status == "done", 60,
                   "the inspector to finish")
        assert all(nova.servers.get(vm).host_status == "DOWN" for vm in servers)
        assert_failed_over(nova, servers)
    finally:
        service.stop()
        for alarm in alarms:
            aodh.alarm.delete(alarm)


def test_a_server_booted_after_the_inspector_started_is_mapped_from_notifications(
        tmp_path, nova, tenant_nova):
    from doctor.nova_listener import NovaListener

    config = inspector_config(tmp_path, resync_interval_s="0")
    service = InspectorService(config, build_controller(config), build_publisher(config),
                               EventLog(make_engine(config.database)))
    service.start()  # resync 0: the map is loaded once, then only notifications change it
    listener = NovaListener(ENV["DOCTOR_TRANSPORT_URL"], service.on_notifications,
                            pool=f"doctor-inspector-test-{uuid.uuid4().hex[:8]}")
    listener.start()
    server = None
    try:
        assert service.wait_ready(30)
        server = boot(tenant_nova, f"doctor-late-{uuid.uuid4().hex[:6]}", "compute2")
        wait_until(lambda: server.id in {s.id for s in service.hostmap.servers_on("compute2")},
                   60, "the new server in the host map")
    finally:
        listener.stop()
        service.stop()
        if server is not None:
            nova.servers.delete(server.id)


def gated_clouds_yaml(tmp_path, nova_url: str) -> str:
    """The bed's clouds.yaml, its operator's Nova endpoint replaced by ``nova_url``."""
    import yaml

    with open(ENV["DOCTOR_CLOUDS_YAML"], encoding="utf-8") as handle:
        clouds = yaml.safe_load(handle)
    clouds["clouds"][ENV["DOCTOR_OS_CLOUD"]]["compute_endpoint_override"] = nova_url
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump(clouds))
    path.chmod(0o600)
    return str(path)


def test_nova_unreachable_the_event_is_kept_and_acted_on_when_nova_returns(
        tmp_path, nova, servers, monkeypatch):
    """Nova's API goes away after the map is loaded: the inspector says so, keeps the event
    and acts on it when Nova answers again."""
    nova_url = urlsplit(ENV["DOCTOR_NOVA_URL"])
    gate = TcpGate((nova_url.hostname, nova_url.port)).open()
    gated = nova_url._replace(netloc=f"127.0.0.1:{gate.port}").geturl()
    bed = {**{k: v for k, v in ENV.items() if k.startswith("DOCTOR_")},
           "DOCTOR_NOVA_URL": gated}
    if ENV.get("DOCTOR_OS_CLOUD"):  # with Keystone: the operator's cloud, Nova behind the gate
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", gated_clouds_yaml(tmp_path, gated))
    pipeline = Pipeline(str(tmp_path), openstack=bed).start()
    http = pipeline.client()
    inspector = pipeline.url("inspector")
    try:
        wait_until(lambda: http.get(f"{inspector}/status").json()["host_map_loaded"], 60,
                   "the inspector to load its host map from Nova")
        wait_until(lambda: http.get(f"{inspector}/hosts/compute1").json().get("servers", 0)
                   >= len(servers), 60, "the inspector to map the servers")
        gate.close()
        event = HostEvent.new(HOST_DOWN, "compute1", "test")
        assert http.put(f"{inspector}/events", json=[event.to_doctor()]).status == 202

        status = wait_until(lambda: (lambda s: s if not s["controller"]["reachable"] else None)(
            http.get(f"{inspector}/status").json()), 10, "the inspector to report Nova down")
        assert "Unable to establish connection" in status["controller"]["error"], status
        assert status["pending_events"] == 1
        host = http.get(f"{inspector}/hosts/compute1").json()
        assert host["pending"] is True, host
        time.sleep(2)  # Nova stays away a while; nothing has reached it
        assert all(getattr(nova.servers.get(vm), "OS-EXT-STS:vm_state") == "active"
                   for vm in servers)
        log = open(pipeline.parts["inspector"].log_path).read()
        assert "the controller fails" in log and "events stay accepted" in log

        gate.open()
        wait_until(lambda: all(getattr(nova.servers.get(vm), "OS-EXT-STS:vm_state") == "error"
                               for vm in servers), 30, "every server in error after Nova returns")
        wait_until(lambda: not http.get(f"{inspector}/hosts/compute1").json()["pending"], 30,
                   "the event handled")
        [compute] = nova.services.list(host="compute1", binary="nova-compute")
        assert compute.forced_down
        assert all(nova.servers.get(vm).host_status == "DOWN" for vm in servers)
        status = http.get(f"{inspector}/status").json()
        assert status["controller"]["reachable"] and status["pending_events"] == 0, status
        assert "answers again" in open(pipeline.parts["inspector"].log_path).read()
    finally:
        pipeline.stop()
        gate.close()


def test_the_nova_driver_works_across_the_expiry_of_its_first_token(tmp_path, nova, servers):
    """With Keystone: the Inspector, given a password (clouds.yaml), still marks a host down
    after the token it started with has expired (the bed's tokens live DOCTOR_TOKEN_EXPIRATION
    s): its keeper renewed the token ahead of the expiry and showed Nova the new one."""
    require_keystone_bed()
    service = inspector_for_the_bed(tmp_path)
    try:
        auth = service.controller._session.auth
        first = auth.auth_ref
        assert first is not None, "the host map was loaded without a token"
        keystone = operator_cloud(ENV).session

        def expired() -> bool:  # Keystone itself says the first token is no longer valid
            answer = keystone.get(ENV["DOCTOR_KEYSTONE_URL"] + "/auth/tokens",
                                  headers={"X-Subject-Token": first.auth_token},
                                  raise_exc=False)
            return answer.status_code == 404

        lifetime = float(ENV["DOCTOR_TOKEN_EXPIRATION"])
        wait_until(expired, lifetime + 60, "the inspector's first token to expire", 5)
        assert service.controller.renewals >= 1
        assert auth.auth_ref.auth_token != first.auth_token
        event = HostEvent.new(HOST_DOWN, "compute1", "test")
        service.submit([event])
        wait_until(lambda: service.log.get(event.monitor_event_id).status == "done", 60,
                   "the inspector to finish")
        assert_failed_over(nova, servers)
    finally:
        service.stop()


def test_aodhs_trust_action_reaches_a_keystone_consumer_with_a_trust_token(tmp_path, nova,
                                                                           servers):
    """With Keystone: an alarm whose action is ``trust+http://`` (the VNFM's, a member) fires
    through Nova -> Ceilometer -> Aodh, and Aodh posts with a token of the trust the VNFM
    gave Aodh's user; the consumer, with auth_strategy = keystone, takes it because it is
    scoped to the VNFM's project, and answers nobody without a token."""
    import subprocess
    import sys

    import requests
    import yaml

    from testkit.eventsink import free_port

    require_keystone_bed()
    with open(ENV["DOCTOR_CLOUDS_YAML"], encoding="utf-8") as handle:
        operator = yaml.safe_load(handle)["clouds"][ENV["DOCTOR_OS_CLOUD"]]["auth"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DOCTOR_STATE_DIR": str(tmp_path / "state"),
           # the consumer validates tokens as the operator (admin); never on its command line
           "DOCTOR_CONSUMER_KEYSTONE_PASSWORD": operator["password"]}
    log_path = tmp_path / "consumer.log"
    with open(log_path, "w") as log:
        consumer = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "--port", str(port), "--auth-strategy",
             "keystone", "--keystone-auth-url", operator["auth_url"], "--keystone-username",
             operator["username"], "--keystone-project-name", operator["project_name"],
             "--keystone-alarm-project-id", ENV["DOCTOR_PROJECT_ID"],
             "--coordination-url", f"file://{tmp_path / 'coordination'}"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    aodh = cloud_aodh_client(ENV)
    alarm = None
    try:
        def answers() -> bool:
            try:
                return requests.get(url + "/failures", timeout=2).status_code == 401
            except requests.ConnectionError:
                assert consumer.poll() is None, log_path.read_text()
                return False

        wait_until(answers, 30, "the consumer to answer (401 without a token)")
        vm = servers[0]
        alarm = aodh.alarm.create(vm_error_alarm(vm, f"trust+{url}/failure"))["alarm_id"]
        wait_alarms_seen(time.monotonic(), aodh_cache_ttl_s(openstack=True))
        nova.servers.reset_state(vm, "error")  # the operator; the alarm is the VNFM's
        vnfm = {"X-Auth-Token": vnfm_cloud(ENV).session.get_token()}

        def delivered() -> list:
            answer = requests.get(url + "/failures", headers=vnfm, timeout=5)
            assert answer.status_code == 200, answer.text
            return [n for n in answer.json() if n.get("alarm_id") == alarm]

        [notice] = wait_until(delivered, 60, "Aodh's trust+http POST at the consumer")
        assert notice["instance_id"] == vm
        other = open_cloud(ENV["DOCTOR_OTHER_CLOUD"]).session  # a member of another project
        refused = requests.get(url + "/failures", timeout=5,
                               headers={"X-Auth-Token": other.get_token()})
        assert refused.status_code == 403, refused.text
    finally:
        if alarm is not None:
            aodh.alarm.delete(alarm)
        consumer.terminate()
        consumer.wait(10)
