"""The VIM monitor manager repairing itself and checking auth_urls over HTTP (issue 6).

A real SQLite VimStore in tmp_path; the probe scheduler is a fake with a loop thread of its
own (no raw socket): it advances each given target's probe sequence every interval, except a
target the test freezes, and its loop can be made to return or raise. The manager runs its
own thread, as in doctor-vim. VIM addresses are loopback ones; the fake sends nothing, and
the only real traffic is the HTTP check against a server on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import threading
import time
from types import SimpleNamespace

import pytest
from sqlalchemy.exc import OperationalError

from doctor.config import build
from doctor.events import traits
from doctor.store import make_engine
from monitor.detector import HostState
from tests.fakes import ListPublisher
from tests.waiting import wait_until
from vim.config import VimConfig
from vim.crypto import PasswordBox
from vim.manager import MonitorManager, check_http
from vim.store import BAD_ACTION, PENDING, REACHABLE, UNREACHABLE, VimStore

# Fast: probes every 20 ms; an address is stalled after 15 x 20 + 20 = 320 ms without
# progress, wide enough that a loaded CI machine does not starve a progressing one that long.
FAST = {"interval_ms": "20", "timeout_ms": "20", "stall_intervals": "15",
        "reconcile_interval_ms": "20", "full_resync_s": "1"}
STALL_S = 15 * 0.020 + 0.020


def spec(address: str, port: int = 5000) -> dict:
    return {"auth_url": f"http://{address}:{port}/v3", "username": "admin",
            "password": "test-only-password", "project_name": "demo",
            "project_domain_name": "Default", "user_domain_name": "Default",
            "cert_verify": True}


class FakeScheduler:
    """The ProbeScheduler's surface the manager uses, with a loop that advances sequences."""

    def __init__(self, config, on_transition) -> None:
        self.on_transition = on_transition
        self.interval_s = config.interval_ms / 1000.0
        self.frozen: set[str] = set()  # target names whose probing is stuck
        self.die = threading.Event()
        self.die_by = "return"
        self.lock = threading.Lock()
        self.probes: dict = {}  # target name -> SimpleNamespace(hostname, address, seq)
        self.stats = None
        self.sock = None

    def run(self, stop) -> None:
        while not stop.wait(self.interval_s):
            if self.die.is_set():
                if self.die_by == "raise":
                    raise RuntimeError("the fake probe loop crashed")
                return
            with self.lock:
                for probe in self.probes.values():
                    if probe.hostname not in self.frozen:
                        probe.seq = (probe.seq + 1) & 0xFFFF

    def update_targets(self, targets) -> None:
        with self.lock:
            self.probes = {
                t.hostname: self.probes.get(t.hostname)
                or SimpleNamespace(hostname=t.hostname, address=t.address, seq=0)
                for t in targets}

    def target(self, name):
        return self.probes[name]  # KeyError for a name not given (yet), as the real one

    def names(self) -> list[str]:
        return sorted(self.probes)

    def fire(self, address: str, state: HostState) -> None:
        for probe in list(self.probes.values()):
            if probe.address == address:
                self.on_transition(probe, HostState.UNKNOWN, state, 0.0)


@pytest.fixture
def store(tmp_path):
    box = PasswordBox.from_key_file(str(tmp_path / "keys" / "vim.key"))
    return VimStore(make_engine(f"sqlite:///{tmp_path / 'vim.db'}"), box)


@pytest.fixture
def run_manager(store):
    """run_manager(**options) -> (manager, schedulers made so far); stopped at teardown."""
    started = []

    def run(publisher=None, **options):
        config = build(VimConfig, "vim", {"token": "t", "coordination_url": "file:///tmp/x",
                                          **FAST, **options})
        schedulers: list[FakeScheduler] = []

        def factory(probe_config, on_transition):
            schedulers.append(FakeScheduler(probe_config, on_transition))
            return schedulers[-1]

        manager = MonitorManager(store, config, publisher, scheduler_factory=factory)
        started.append(manager)
        return manager.start(), schedulers

    yield run
    for manager in started:
        manager.stop()


def running_id(store, manager, vim_id, not_in=()):
    """The VIM's monitor id once the manager runs a monitor with it (and it is not one of
    ``not_in``), else None."""
    current = store.get(vim_id).monitor_id
    monitor = manager.monitors.get(vim_id)
    if current is None or current in not_in or monitor is None:
        return None
    return current if monitor.monitor_id == current else None


def status(store, vim_id):
    return store.get(vim_id).status


def test_stalled_address_gets_new_monitors_and_the_old_id_is_refused(store, run_manager):
    manager, schedulers = run_manager()
    scheduler = schedulers[0]
    stuck = store.create("vim-stuck", spec("127.0.0.1"), "127.0.0.1")
    fine = store.create("vim-fine", spec("127.0.0.2"), "127.0.0.2")
    old = {v.id: wait_until(lambda v=v: running_id(store, manager, v.id), 2.0,
                            f"{v.name}'s monitor") for v in (stuck, fine)}
    assert scheduler.names() == ["127.0.0.1#0", "127.0.0.2#0"]
    for address in ("127.0.0.1", "127.0.0.2"):
        scheduler.fire(address, HostState.UP)
    wait_until(lambda: status(store, stuck.id) == status(store, fine.id) == REACHABLE, 2.0,
               "both VIMs REACHABLE")
    wait_until(lambda: scheduler.target("127.0.0.1#0").seq > 3, 2.0, "probes to 127.0.0.1")

    frozen_at = time.monotonic()
    scheduler.frozen.add("127.0.0.1#0")  # its probe sequence stops advancing
    new = wait_until(lambda: running_id(store, manager, stuck.id, not_in=[old[stuck.id]]),
                     2.0, "a new monitor for the stalled address")
    took = time.monotonic() - frozen_at
    assert STALL_S - 0.1 <= took < STALL_S + 1.0, took
    assert manager.stats.replaced == 1
    wait_until(lambda: scheduler.names() == ["127.0.0.1#1", "127.0.0.2#0"], 1.0,
               "a fresh probe target for 127.0.0.1")

    # The old monitor's report is refused (bad_action); its target's late word is ignored.
    late = store.update_status(stuck.id, old[stuck.id], UNREACHABLE)
    assert late.refused and late.reason.startswith(BAD_ACTION), late
    scheduler.on_transition(SimpleNamespace(hostname="127.0.0.1#0"), HostState.UP,
                            HostState.DOWN, 0.0)
    # The new monitor reports: its first verdict from the fresh target.
    scheduler.fire("127.0.0.1", HostState.DOWN)
    wait_until(lambda: status(store, stuck.id) == UNREACHABLE, 2.0, "the new monitor's word")

    # The progressing address kept its monitor through a further stall window, and so does
    # the fresh target (no replacement loop).
    time.sleep(STALL_S * 1.5)
    assert store.get(fine.id).monitor_id == old[fine.id] == manager.monitors[fine.id].monitor_id
    assert store.get(stuck.id).monitor_id == new
    assert manager.stats.replaced == 1 and manager.stats.refused == 0
    assert status(store, fine.id) == REACHABLE
    assert len(schedulers) == 1 and manager.stats.prober_restarts == 0


def test_stalled_address_claim_failure_is_retried_with_a_new_id(store, run_manager):
    # The claim that replaces a stalled monitor fails once (a database hiccup): the VIM must
    # get a new monitor in the next round, not at the next full resync (60 s here), and
    # never again the old id.
    manager, schedulers = run_manager(full_resync_s="60")
    vim = store.create("vim-stuck", spec("127.0.0.1"), "127.0.0.1")
    old = wait_until(lambda: running_id(store, manager, vim.id), 2.0, "the VIM's monitor")
    real_claim, failed = store.claim, []

    def claim_failing_once(claims):
        if not failed:
            failed.append(list(claims))
            raise OperationalError("UPDATE vims", {}, Exception("database is locked"))
        return real_claim(claims)

    store.claim = claim_failing_once
    schedulers[0].frozen.add("127.0.0.1#0")
    wait_until(lambda: failed, 2.0, "the replacement's claim (failing)")
    assert failed == [[(vim.id, old)]]
    failed_at = time.monotonic()
    new = wait_until(lambda: running_id(store, manager, vim.id, not_in=[old]), 1.5,
                     "a new monitor after the failed claim")
    assert time.monotonic() - failed_at < 1.5 and manager.stats.replaced == 1
    assert store.update_status(vim.id, old, REACHABLE).refused
    assert manager.monitors[vim.id].monitor_id == new


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("die_by", ["return", "raise"])
def test_dead_probe_loop_is_restarted_and_every_vim_reclaimed(store, run_manager, die_by):
    manager, schedulers = run_manager()
    vims = [store.create("vim-a", spec("127.0.0.1"), "127.0.0.1"),
            store.create("vim-b", spec("127.0.0.1", 5001), "127.0.0.1"),
            store.create("vim-c", spec("127.0.0.2"), "127.0.0.2")]
    old = {v.id: wait_until(lambda v=v: running_id(store, manager, v.id), 2.0,
                            f"{v.name}'s monitor") for v in vims}
    first = schedulers[0]
    first.fire("127.0.0.1", HostState.UP)
    wait_until(lambda: status(store, vims[0].id) == REACHABLE, 2.0, "vim-a REACHABLE")

    first.die_by = die_by
    first.die.set()
    new = {v.id: wait_until(lambda v=v: running_id(store, manager, v.id, not_in=[old[v.id]]),
                            2.0, f"a new monitor for {v.name}") for v in vims}
    assert len(schedulers) == 2, "scheduler_factory called once more"
    assert manager.stats.prober_restarts == 1 and manager.stats.replaced == 3
    assert manager.snapshot()["prober_alive"]
    second = schedulers[1]
    wait_until(lambda: second.names() == ["127.0.0.1#1", "127.0.0.2#1"], 1.0,
               "the new probe loop given every address")
    assert first.names() == ["127.0.0.1#0", "127.0.0.2#0"]  # nothing new went to the dead one
    for vim in vims:
        late = store.update_status(vim.id, old[vim.id], UNREACHABLE)
        assert late.refused and late.reason.startswith(BAD_ACTION), late
    second.fire("127.0.0.2", HostState.UP)
    wait_until(lambda: status(store, vims[2].id) == REACHABLE, 2.0,
               "the new loop's verdict stored")
    # One restart only: the new loop lives on, and so do the new monitors.
    time.sleep(STALL_S * 1.5)
    assert len(schedulers) == 2 and manager.stats.prober_restarts == 1
    assert {v.id: store.get(v.id).monitor_id for v in vims} == new


class AuthUrl(http.server.BaseHTTPRequestHandler):
    """A Keystone-ish endpoint: answers every GET with ``server.answer``."""

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        self.server.paths.append(self.path)
        body = b'{"version": {"id": "v3.14"}}'
        self.send_response(self.server.answer)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class LocalServer:
    """An HTTP server on 127.0.0.1 (loopback only) that can be stopped and started again on
    the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.paths: list[str] = []
        self.answer = 200
        self.server = None

    def start(self) -> LocalServer:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), AuthUrl)
        server.paths, server.answer = self.paths, self.answer
        self.server, self.port = server, server.server_address[1]
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def set_answer(self, code: int) -> None:
        self.answer = self.server.answer = code

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()  # the port is closed: connections are refused
            self.server = None


@pytest.fixture
def auth_server():
    server = LocalServer().start()
    yield server
    server.stop()


HTTP = {"http_check": "true", "http_interval_s": "0.1", "http_timeout_ms": "500",
        "http_workers": "2"}


def test_http_check_unreachable_while_the_auth_url_does_not_answer(store, run_manager,
                                                                   auth_server):
    publisher = ListPublisher()
    manager, schedulers = run_manager(publisher, **HTTP)
    vim = store.create("vim-http", spec("127.0.0.1", auth_server.port), "127.0.0.1")
    wait_until(lambda: running_id(store, manager, vim.id), 2.0, "the VIM's monitor")
    wait_until(lambda: "/v3" in auth_server.paths, 2.0, "an HTTP check of the auth_url")
    assert status(store, vim.id) == PENDING  # HTTP alone is no verdict: no ICMP one yet
    schedulers[0].fire("127.0.0.1", HostState.UP)
    wait_until(lambda: status(store, vim.id) == REACHABLE, 2.0, "REACHABLE (ICMP + HTTP)")

    auth_server.stop()  # ICMP still UP, but nothing listens on the auth_url's port
    wait_until(lambda: status(store, vim.id) == UNREACHABLE, 2.0,
               "UNREACHABLE while the auth_url does not answer")
    assert manager.monitors[vim.id].ping is HostState.UP

    checks = manager.stats.http_checks
    auth_server.start()  # the same port again
    wait_until(lambda: status(store, vim.id) == REACHABLE, 2.0,
               "REACHABLE once the auth_url answers again")
    assert manager.stats.http_checks > checks
    wait_until(lambda: len(publisher.events) == 3, 2.0, "three status events")
    assert [(e["status"], e["previous_status"]) for e in map(traits, publisher.events)] == [
        ("reachable", "pending"), ("unreachable", "reachable"), ("reachable", "unreachable")]
    assert manager.stats.refused == 0


def test_http_check_reachable_needs_an_icmp_reply_and_an_answer_below_500(
        store, run_manager, auth_server):
    manager, schedulers = run_manager(**HTTP)
    vim = store.create("vim-http", spec("127.0.0.1", auth_server.port), "127.0.0.1")
    wait_until(lambda: running_id(store, manager, vim.id), 2.0, "the VIM's monitor")
    scheduler = schedulers[0]
    scheduler.fire("127.0.0.1", HostState.UP)
    wait_until(lambda: status(store, vim.id) == REACHABLE, 2.0, "REACHABLE")
    scheduler.fire("127.0.0.1", HostState.DOWN)  # the auth_url still answers
    wait_until(lambda: status(store, vim.id) == UNREACHABLE, 2.0, "UNREACHABLE on ICMP DOWN")
    assert manager.monitors[vim.id].http_ok is True
    scheduler.fire("127.0.0.1", HostState.UP)
    wait_until(lambda: status(store, vim.id) == REACHABLE, 2.0, "REACHABLE on ICMP UP")
    auth_server.set_answer(503)  # an answer, but a server error
    wait_until(lambda: status(store, vim.id) == UNREACHABLE, 2.0, "UNREACHABLE on HTTP 503")
    auth_server.set_answer(401)  # Keystone without a token: the service is there
    wait_until(lambda: status(store, vim.id) == REACHABLE, 2.0, "REACHABLE on HTTP 401")


def test_http_check_of_a_tls_auth_url_verifies_the_certificate_as_the_vim_says(tls_server):
    assert check_http(tls_server + "/v3", cert_verify=False, timeout_s=2.0) == (True, "HTTP 200")
    ok, detail = check_http(tls_server + "/v3", cert_verify=True, timeout_s=2.0)
    assert not ok and "CERTIFICATE_VERIFY_FAILED" in detail
    assert check_http(tls_server + "/big", cert_verify=False, timeout_s=2.0) == (True, "HTTP 200")


class _FlakyPublisher(ListPublisher):
    """Refuses the first ``failures`` publishes (PublishError), then takes them."""

    def __init__(self, failures: int, final: bool = False) -> None:
        super().__init__()
        self.failures = failures
        self.final = final
        self.attempts = 0

    def publish(self, events):
        from notifier.base import PublishError

        self.attempts += 1
        if self.attempts <= self.failures:
            raise PublishError("notifier is down", final=self.final)
        super().publish(events)


def test_status_events_the_notifier_does_not_take_are_retried_in_order():
    from vim.manager import ManagerStats, VimEventSender

    publisher = _FlakyPublisher(failures=3)
    stats = ManagerStats()
    sender = VimEventSender(publisher, stats)
    sender.start()
    try:
        for i in range(3):
            sender.submit({"event_type": "vim.status.update", "n": i})
        wait_until(lambda: stats.events_published == 3, 10, "the events taken")
        assert [e["n"] for e in publisher.events] == [0, 1, 2]
        assert stats.events_failed == 0 and publisher.attempts > 3
    finally:
        sender.stop()


def test_a_refused_status_event_is_counted_lost_not_retried():
    from vim.manager import ManagerStats, VimEventSender

    publisher = _FlakyPublisher(failures=1, final=True)
    stats = ManagerStats()
    sender = VimEventSender(publisher, stats)
    sender.start()
    try:
        sender.submit({"event_type": "vim.status.update", "n": 0})
        wait_until(lambda: stats.events_failed == 1, 10, "the refusal counted")
        assert publisher.attempts == 1
    finally:
        sender.stop()
