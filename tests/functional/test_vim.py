"""VIM monitoring against real namespaced hosts as VIM endpoints (root only).

The VIMs' auth_urls point at test hosts in 198.18.<index>.0/24 (behind the blackhole route);
nothing else is ever probed. Faults are real: the host's link goes down in its namespace.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from doctor.http import HttpClient
from scenario.alarms import vim_status_alarm
from testkit.eventsink import free_port
from tests.waiting import wait_until

TOKEN = "vim-test-token"
# Outgoing frames reach only ETH_P_ALL packet sockets, so that is bound, and IPv4 filtered here.
ETH_P_ALL = 0x0003
# Fast probing for the tests: a dead host is UNREACHABLE ~50 + 2 x 40 + 3 x 10 = 160 ms after.
FAST = ["--interval-ms", "50", "--timeout-ms", "40", "--suspect-interval-ms", "10",
        "--misses-before-down", "5", "--replies-before-up", "3"]


def spec(address: str) -> dict:
    return {"auth_url": f"http://{address}:5000/v3", "username": "admin",
            "password": "test-only-password", "project_name": "demo"}


class EchoRequestCounter:
    """Counts ICMP echo requests to one address on a bridge (an AF_PACKET socket)."""

    def __init__(self, bridge: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((bridge, 0))
        self.sock.setblocking(False)

    def count(self, address: str, window_s: float) -> int:
        """Echo requests to ``address`` sent during the next ``window_s``."""
        wanted = socket.inet_aton(address)
        seen = 0
        for _ in range(100_000):  # what the socket holds from before the window
            try:
                self.sock.recv(2048)
            except BlockingIOError:
                break
        end = time.monotonic() + window_s
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([self.sock], [], [], min(left, 0.05))
            if not readable:
                continue
            for _ in range(10_000):  # bounded drain
                try:
                    frame = self.sock.recv(2048)
                except BlockingIOError:
                    break
                if frame[12:14] != b"\x08\x00":
                    continue  # not IPv4
                ip = frame[14:]  # after the Ethernet header
                ihl = (ip[0] & 0x0F) * 4
                if ip[9] == 1 and ip[16:20] == wanted and ip[ihl] == 8:
                    seen += 1
        return seen

    def close(self) -> None:
        self.sock.close()


class VimServer:
    """``doctor-vim`` as a process, with its state kept across restarts."""

    def __init__(self, workdir, notifier_url: str = "", extra: list[str] | None = None) -> None:
        self.workdir = str(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.notifier_url = notifier_url
        self.extra = extra or []
        self.process: subprocess.Popen | None = None
        self.client = HttpClient(5.0, token=TOKEN)

    def start(self) -> VimServer:
        argv = [sys.executable, "-m", "vim.cli", "--port", str(self.port),
                "--log-level", "INFO", *FAST, *self.extra]
        env = {**os.environ, "DOCTOR_STATE_DIR": os.path.join(self.workdir, "state"),
               "DOCTOR_VIM_TOKEN": TOKEN}
        if self.notifier_url:
            argv += ["--notifier-url", self.notifier_url, "--event-project-id", "vnfm"]
            env["DOCTOR_VIM_NOTIFIER_TOKEN"] = TOKEN
        with open(os.path.join(self.workdir, "vim.log"), "a") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: self._answers(), 30, "doctor-vim to serve")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"doctor-vim exited:\n{self.log()}")
        try:
            return self.client.get(self.url + "/v1/vims").ok
        except OSError:
            return False

    def log(self) -> str:
        with open(os.path.join(self.workdir, "vim.log"), errors="replace") as handle:
            return handle.read()

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            self.process.wait(10)
        self.client.close()

    def register(self, name: str, address: str) -> dict:
        answer = self.client.post(self.url + "/v1/vims", json={"name": name, **spec(address)})
        assert answer.status == 201, answer.text
        return answer.json()

    def vim(self, vim_id: str) -> dict:
        return self.client.get(f"{self.url}/v1/vims/{vim_id}").json()

    def status(self, vim_id: str) -> str:
        return self.vim(vim_id)["status"]

    def wait_status(self, vim_id: str, status: str, timeout_s: float) -> float:
        start = time.monotonic()
        wait_until(lambda: self.status(vim_id) == status, timeout_s,
                   f"VIM {vim_id} to be {status}", interval_s=0.01)
        return time.monotonic() - start


@pytest.fixture
def vim_server(tmp_path):
    servers: list[VimServer] = []

    def make(**kwargs) -> VimServer:
        servers.append(VimServer(tmp_path, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.kill(signal.SIGTERM)


def test_register_reachable_down_up_delete(network, vim_server):
    host_a, host_b = network.add_hosts(["vim-a", "vim-b"])
    server = vim_server().start()
    counter = EchoRequestCounter(network.bridge)
    try:
        a = server.register("vim-a", host_a.address)
        assert a["status"] == "PENDING"
        server.register("vim-b", host_b.address)
        assert server.wait_status(a["id"], "REACHABLE", 2.0) < 2.0

        network.link_down("vim-a")
        took = server.wait_status(a["id"], "UNREACHABLE", 1.0)
        assert took < 1.0
        network.link_up("vim-a")
        server.wait_status(a["id"], "REACHABLE", 2.0)

        assert counter.count(host_a.address, 0.3) > 0
        assert server.client.delete(f"{server.url}/v1/vims/{a['id']}").status == 204
        time.sleep(0.3)  # the manager applies it at once; the probe loop within 100 ms
        assert counter.count(host_a.address, 1.0) == 0
        assert counter.count(host_b.address, 0.3) > 0  # the other VIM is still probed
    finally:
        counter.close()


def test_update_auth_url_refuses_the_old_monitor(network, vim_server):
    host_a, host_b = network.add_hosts(["vim-a", "vim-b"])
    server = vim_server().start()
    counter = EchoRequestCounter(network.bridge)
    try:
        vim = server.register("vim-1", host_a.address)
        server.wait_status(vim["id"], "REACHABLE", 2.0)
        old_monitor = server.vim(vim["id"])["monitor_id"]
        answer = server.client.request("PATCH", f"{server.url}/v1/vims/{vim['id']}",
                                       json={"auth_url": f"https://{host_b.address}/identity"})
        assert answer.status == 200 and answer.json()["status"] == "PENDING"
        # The old monitor's late verdict is refused (bad_action), as the seed's conductor does.
        late = server.client.post(f"{server.url}/v1/vims/{vim['id']}/status",
                                  json={"monitor_id": old_monitor, "status": "UNREACHABLE"})
        assert late.status == 409 and "bad_action" in late.json()["error"]
        server.wait_status(vim["id"], "REACHABLE", 2.0)
        new_monitor = server.vim(vim["id"])["monitor_id"]
        assert new_monitor not in (None, old_monitor)
        assert counter.count(host_a.address, 0.5) == 0
        assert counter.count(host_b.address, 0.3) > 0
        network.link_down("vim-b")
        server.wait_status(vim["id"], "UNREACHABLE", 1.0)
        assert "stops: its monitor id is now" in server.log()
    finally:
        counter.close()


def test_monitoring_resumes_after_kill_9(network, vim_server):
    (host,) = network.add_hosts(["vim-a"])
    server = vim_server().start()
    vim = server.register("vim-1", host.address)
    server.wait_status(vim["id"], "REACHABLE", 2.0)
    before = server.vim(vim["id"])
    server.kill(signal.SIGKILL)

    again = vim_server().start()  # same state directory: same database and key file
    after = wait_until(lambda: (v := again.vim(vim["id"]))["monitor_id"] != before["monitor_id"]
                       and v["status_at"] != before["status_at"] and v, 3.0,
                       "a new monitor's first verdict")
    assert after["status"] == "REACHABLE"
    network.link_down("vim-a")
    again.wait_status(vim["id"], "UNREACHABLE", 1.0)
    network.link_up("vim-a")
    again.wait_status(vim["id"], "REACHABLE", 2.0)


def test_bad_config_file_from_the_cli(tmp_path, network, vim_server):
    (host,) = network.add_hosts(["vim-a"])
    server = vim_server().start()
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"auth_url: {host.address}:5000\nusername: u\npassword: p\n"
                   "project_name: d\n")
    env = {**os.environ, "DOCTOR_VIM_URL": server.url, "DOCTOR_VIM_TOKEN": TOKEN}
    run = subprocess.run([sys.executable, "-m", "client.main", "vim", "register",
                          "--config-file", str(bad), "vim-1"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert run.returncode != 0
    assert "auth_url" in run.stderr and "Traceback" not in run.stderr
    good = tmp_path / "good.yaml"
    good.write_text(f"auth_url: http://{host.address}:5000/v3\nusername: u\npassword: p\n"
                    "project_name: d\ncert_verify: 'False'\n")
    run = subprocess.run([sys.executable, "-m", "client.main", "vim", "register",
                          "--config-file", str(good), "vim-1", "-f", "value", "-c", "status"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "PENDING"
    listed = server.client.get(server.url + "/v1/vims").json()
    assert [v["name"] for v in listed] == ["vim-1"]  # the bad file stored nothing


def test_status_event_fires_an_alarm_and_reaches_a_consumer(tmp_path, network, vim_server):
    (host,) = network.add_hosts(["vim-a"])
    from notifier.caller import Caller, write_api_tokens

    ports = {"notifier": free_port(), "consumer": free_port()}
    # The VNFM's project token on the notifier; its action secret is the consumer's.
    tokens, vnfm_token = str(tmp_path / "api-tokens"), "vnfm-project-token"
    write_api_tokens(tokens, [("vnfm", vnfm_token,
                               Caller("vnfm", "vnfm", frozenset({"admin"})))])
    env = {**os.environ, "DOCTOR_STATE_DIR": str(tmp_path / "state"),
           "DOCTOR_NOTIFIER_TOKEN": TOKEN, "DOCTOR_NOTIFIER_ACTION_SECRET": "action-secret",
           "DOCTOR_CONSUMER_TOKEN": TOKEN, "DOCTOR_CONSUMER_ALARM_SECRET": "action-secret"}
    processes = []
    try:
        for name, argv in (("notifier", ["--api-tokens-file", tokens]), ("consumer", [])):
            with open(tmp_path / f"{name}.log", "a") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", f"{name}.cli", "--port", str(ports[name]), *argv],
                    stdout=log, stderr=subprocess.STDOUT, env=env))
        notifier = f"http://127.0.0.1:{ports['notifier']}"
        consumer = f"http://127.0.0.1:{ports['consumer']}"
        vnfm = HttpClient(5.0, token=vnfm_token)  # the VNFM's alarms, in project vnfm
        client = HttpClient(5.0, token=TOKEN)  # the consumer's /failures

        def up(url: str) -> bool:
            try:
                return client.get(url).ok
            except OSError:
                return False

        wait_until(lambda: up(notifier + "/v2/alarms") and up(consumer + "/failures"), 30,
                   "notifier and consumer")
        alarm = vnfm.post(notifier + "/v2/alarms",
                          json=vim_status_alarm(consumer + "/failure")).json()
        server = vim_server(notifier_url=notifier).start()
        vim = server.register("vim-1", host.address)
        server.wait_status(vim["id"], "REACHABLE", 2.0)
        assert client.get(consumer + "/failures").json() == []  # reachable: not this alarm
        network.link_down("vim-a")
        server.wait_status(vim["id"], "UNREACHABLE", 1.0)
        got = wait_until(lambda: client.get(consumer + "/failures").json(), 2.0,
                         "the consumer to be told")
        assert got[0]["vim_id"] == vim["id"] and got[0]["alarm_id"] == alarm["alarm_id"]
        state = vnfm.get(f"{notifier}/v2/alarms/{alarm['alarm_id']}").json()["state"]
        assert state == "alarm"
        client.close()
        vnfm.close()
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_servers_share_the_vims_and_one_killed_has_its_vims_taken_over(
        network, vim_server, redis_server, database, request):
    """Two doctor-vim servers on one database (one SQLite file on one machine, or PostgreSQL)
    and one Redis: each VIM probed by exactly one of them (read off the wire, by ICMP
    identifier); kill -9 one, the other takes its VIMs."""
    from bench.takeover import ProbeCapture, wait_steady

    # 12 VIMs: the ring (over random VIM ids) gives them all to one server with odds 2/4096;
    # with 6 it was 1/32, and wait_steady never saw both servers probing.
    hosts = network.add_hosts([f"vim-{i}" for i in range(12)])
    shared = ["--share-group", "vims", "--coordination-url", redis_server.url]
    if database == "postgresql":
        shared += ["--database", request.getfixturevalue("postgres_server").url]
    first = vim_server(extra=shared).start()
    second = vim_server(extra=shared).start()
    vims = [first.register(f"vim-{i}", h.address) for i, h in enumerate(hosts)]
    if database == "postgresql":  # the servers keep them there, not in a file of their own
        from doctor.store import make_engine

        engine = make_engine(shared[-1])
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM vims").scalar_one() == len(vims)
        engine.dispose()
    capture = ProbeCapture(network.bridge).start()
    try:
        for vim in vims:
            first.wait_status(vim["id"], "REACHABLE", 15.0)  # PostgreSQL, 12 VIMs: a busy CI host
        addresses = {h.address for h in hosts}
        owners = wait_steady(capture, addresses, 2)
        assert len(set().union(*owners.values())) == 2  # both servers have a share
        first.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        wait_steady(capture, addresses, 1, timeout_s=10)
        print(f"\nVIMs taken over {time.monotonic() - killed_at:.2f} s after kill -9 "
              "(measured to the end of the first 1 s window with one server probing all)")
        assert all(second.status(v["id"]) == "REACHABLE" for v in vims)
        network.link_down(hosts[0].name)  # still watched, now by the survivor
        second.wait_status(vims[0]["id"], "UNREACHABLE", 3.0)
    finally:
        capture.stop()
