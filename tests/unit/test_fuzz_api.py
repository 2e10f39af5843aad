"""Property-based fuzzing of every JSON endpoint of every part (issue 12).

Hypothesis sends each endpoint, with the right credentials so the body reaches the
handler: arbitrary JSON (huge integers, 1e400, control characters, deep-ish lists and
objects), valid-looking bodies with one field replaced by arbitrary JSON or removed, and
bytes that are not JSON. Whatever comes in, the answer is never a 5xx, is JSON, and a 400
or 413 names the field in ``field``; each call returns within the deadline. Derandomized
with no example database, so every run (and CI) sends the same cases. Flask's test
client, no sockets; names never resolve (only IP literals do, without a resolver).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.config import ConsumerConfig
from consumer.sample import SampleConsumer
from consumer.sample import create_app as consumer_app
from controller.api import create_app as controller_app
from controller.embedded import Inventory
from doctor import clock
from doctor.events import instance_update
from doctor.store import make_engine
from inspector.api import create_app as inspector_app
from notifier.api import create_app as notifier_app
from notifier.config import NotifierConfig
from notifier.embedded import EmbeddedNotifier
from tests.unit.test_bounded_api import ADMIN, TOKEN, inspector_service
from vim.api import create_app as vim_app
from vim.crypto import PasswordBox
from vim.store import VimStore

FUZZ = settings(max_examples=400, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
QUERY_FUZZ = settings(FUZZ, max_examples=100)

# -- what is sent -------------------------------------------------------------------------------

HUGE = st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 2**64, 10**18])
TEXT = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Z", "Cc", "Cf"]),
               max_size=40) | st.sampled_from(["", " ", "\x00", "\u202e", "x" * 300, "1e400",
                                                "ok", "alarm", "admin", "eq", "event"])
LEAVES = (st.none() | st.booleans() | st.integers() | HUGE | TEXT
          | st.floats(allow_nan=False))  # infinities are sent as 1e400 (see encode)
JSON = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(TEXT, inner, max_size=5), max_leaves=25)
NOT_JSON = st.binary(max_size=200).filter(lambda b: not _is_json(b)) | st.sampled_from([
    b"{", b"[1,", b'{"a": NaN}', b"Infinity", b"\xff\xfe", b"{'a': 1}", b"null null",
    b'"\\ud800"', b"[" * 3000 + b"]" * 3000])


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


def encode(value: Any) -> bytes:
    """JSON text of ``value``; inf becomes 1e400, which Python's json reads as inf."""
    return json.dumps(value).replace("Infinity", "1e400").encode()


def mutated(valid: Callable[[], Any], paths: list[tuple[Any, ...]]) -> st.SearchStrategy[bytes]:
    """``valid()`` with the value at one of ``paths`` replaced by arbitrary JSON, or removed."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        body = valid()
        *parents, last = draw(st.sampled_from(paths))
        target = body
        for key in parents:
            target = target[key]
        if draw(st.booleans()) or isinstance(target, list):
            target[last] = draw(JSON)
        else:
            target.pop(last, None)
        return encode(body)

    return build()


def bodies(valid: Callable[[], Any] | None = None,
           paths: list[tuple[Any, ...]] | None = None) -> st.SearchStrategy[bytes]:
    choices = [JSON.map(encode), NOT_JSON]
    if valid is not None:
        choices.append(st.just(valid).map(lambda v: encode(v())))
        if paths:
            choices += [mutated(valid, paths)] * 2
    return st.one_of(*choices)


# -- valid-looking bodies -----------------------------------------------------------------------

_COUNT = iter(range(10**9))


def host_events() -> list[dict[str, Any]]:
    return [{"type": "compute.host.down", "time": clock.isoformat(clock.now()),
             "details": {"hostname": "c1", "monitor": "m",
                         "monitor_event_id": f"m:c1:{next(_COUNT)}"}}]


def notes() -> list[dict[str, Any]]:
    return [instance_update("vm-1", "error", "c1", "p1")]


EVENT_PATHS = [(0,), (0, "message_id"), (0, "event_type"), (0, "generated"), (0, "raw"),
               (0, "traits"), (0, "traits", 0), (0, "traits", 0, 0), (0, "traits", 0, 1),
               (0, "traits", 0, 2)]


def alarm() -> dict[str, Any]:
    return {"name": f"a{next(_COUNT)}", "type": "event", "description": "d",
            "severity": "critical", "repeat_actions": False, "enabled": True,
            "event_rule": {"event_type": "compute.instance.update", "query": [
                {"field": "traits.instance_id", "op": "eq", "value": "vm-1",
                 "type": "string"}]},
            "alarm_actions": ["http://127.0.0.1:9/failure"], "ok_actions": [],
            "insufficient_data_actions": [], "time_constraints": []}


ALARM_PATHS = [(k,) for k in alarm()] + [
    ("project_id",), ("user_id",), ("state",), ("alarm_id",), ("event_rule", "event_type"),
    ("event_rule", "query"), ("event_rule", "query", 0), ("event_rule", "query", 0, "field"),
    ("event_rule", "query", 0, "op"), ("event_rule", "query", 0, "value"),
    ("event_rule", "query", 0, "type"), ("alarm_actions", 0)]


def complex_query() -> dict[str, Any]:
    return {"filter": json.dumps({"and": [{"=": {"type": "event"}}, {">": {"severity": "low"}}]}),
            "orderby": json.dumps([{"name": "asc"}]), "limit": 10}


def consumer_alarm() -> dict[str, Any]:
    return {"alarm_id": "a1", "alarm_name": "n", "current": "alarm", "previous": "ok",
            "reason": "r", "reason_data": {"type": "event", "event": notes()[0]}}


def vim_spec() -> dict[str, Any]:
    return {"name": f"vim{next(_COUNT)}", "auth_url": "http://127.0.0.1:5000/v3",
            "username": "admin", "password": "pw", "project_name": "demo",
            "project_domain_name": "Default", "user_domain_name": "Default",
            "cert_verify": True}


def body(valid: Callable[[], Any], paths: list[tuple[Any, ...]] | None = None) -> dict[str, Any]:
    return {"valid": valid, "paths": paths or []}


@dataclass(frozen=True)
class Endpoint:
    part: str
    method: str
    path: str
    valid: Callable[[], Any] | None = field(default=None, repr=False)  # a body it takes
    paths: list[tuple[Any, ...]] = field(default_factory=list, repr=False)  # what to change
    query: tuple[str, ...] = ()  # a GET's parameters, fuzzed in its query string

    @cached_property
    def bodies(self) -> st.SearchStrategy[bytes]:
        return bodies(self.valid, self.paths)

    def __str__(self) -> str:
        return f"{self.part} {self.method} {self.path}"


ENDPOINTS = [
    Endpoint("inspector", "PUT", "/events", **body(host_events, [
        (0,), (0, "type"), (0, "time"), (0, "details"), (0, "details", "hostname"),
        (0, "details", "monitor"), (0, "details", "monitor_event_id")])),
    Endpoint("inspector", "POST", "/events", **body(host_events, [(0, "time")])),
    Endpoint("inspector", "POST", "/v1/events", **body(notes, EVENT_PATHS)),
    Endpoint("controller", "POST", "/v1/servers", **body(
        lambda: {"name": "vm", "project_id": "p1", "host": "c1"},
        [("name",), ("project_id",), ("host",)])),
    Endpoint("controller", "POST", "/v1/servers/{server}/action", **body(
        lambda: {"reset-state": {"state": "error"}},
        [("reset-state",), ("reset-state", "state")])),
    Endpoint("controller", "POST", "/v1/servers/{server}/action", **body(
        lambda: {"migrate": {"host": "c2"}}, [("migrate",), ("migrate", "host")])),
    Endpoint("controller", "POST", "/v1/servers/reset-state", **body(
        lambda: {"servers": ["vm-a", "vm-b"], "state": "error"},
        [("servers",), ("servers", 0), ("state",)])),
    Endpoint("controller", "PUT", "/v1/hosts/c1", **body(
        lambda: {"forced_down": False}, [("forced_down",)])),
    Endpoint("notifier", "POST", "/v2/alarms", **body(alarm, ALARM_PATHS)),
    Endpoint("notifier", "PUT", "/v2/alarms/{alarm}", **body(alarm, ALARM_PATHS)),
    Endpoint("notifier", "PUT", "/v2/alarms/{alarm}/state", **body(lambda: "ok")),
    Endpoint("notifier", "POST", "/v2/query/alarms", **body(complex_query, [
        ("filter",), ("orderby",), ("limit",)])),
    Endpoint("notifier-events", "POST", "/v1/events", **body(notes, EVENT_PATHS)),
    Endpoint("consumer", "POST", "/failure", **body(consumer_alarm, [
        ("alarm_id",), ("alarm_name",), ("reason_data",), ("reason_data", "type"),
        ("reason_data", "event")] + [("reason_data", "event", *p[1:]) for p in EVENT_PATHS])),
    Endpoint("vim", "POST", "/v1/vims", **body(vim_spec, [(k,) for k in vim_spec()])),
    Endpoint("vim", "PATCH", "/v1/vims/{vim}", **body(
        lambda: {"username": "u2"}, [(k,) for k in vim_spec()])),
    Endpoint("vim", "PUT", "/v1/vims/{vim}", **body(lambda: {"auth_url": "http://127.0.0.2/"})),
    Endpoint("vim", "POST", "/v1/vims/{vim}/status", **body(
        lambda: {"monitor_id": "m1", "status": "REACHABLE"}, [("monitor_id",), ("status",)])),
]
GETS = [
    Endpoint("inspector", "GET", "/hosts"), Endpoint("inspector", "GET", "/status"),
    Endpoint("inspector", "GET", "/v1/services"),
    Endpoint("controller", "GET", "/v1/servers", query=("host",)),
    Endpoint("controller", "GET", "/v1/hosts"),
    Endpoint("notifier", "GET", "/v2/alarms",
             query=("q.field", "q.op", "q.value", "q.type", "sort", "limit", "marker")),
    Endpoint("notifier", "GET", "/v2/alarms/{alarm}/history", query=("sort", "limit", "marker")),
    Endpoint("consumer", "GET", "/failures", query=("since",)),
    Endpoint("vim", "GET", "/v1/vims", query=("name",)),
]
COUNT = {"body": FUZZ.max_examples * len(ENDPOINTS), "query": QUERY_FUZZ.max_examples * len(GETS)}

# -- the apps -----------------------------------------------------------------------------------


def numeric_only(real: Callable[..., Any]) -> Callable[..., Any]:
    """getaddrinfo that takes IP literals only: a name is a gaierror, never a DNS query."""

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                    flags: int = 0) -> Any:
        return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    return getaddrinfo


def no_names(name: str) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, "not resolved in the fuzz test")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "coordination").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", numeric_only(socket.getaddrinfo))
        token = {"X-Auth-Token": TOKEN}
        engine = make_engine(f"sqlite:///{tmp}/controller.db")
        inventory = Inventory(engine, [])
        server = inventory.create_server("vm", "p1", "c1")
        notifiers = [EmbeddedNotifier(NotifierConfig(
            database=f"sqlite:///{tmp}/notifier{i}.db", auth_strategy="noauth"),
            resolve=no_names) for i in (1, 2)]
        vims = VimStore(make_engine(f"sqlite:///{tmp}/vim.db"),
                        PasswordBox.from_key_file(str(tmp / "vim.key")))
        record = vims.create("the-vim", {k: v for k, v in vim_spec().items() if k != "name"},
                             "127.0.0.1")
        clients = {
            "inspector": (inspector_app(inspector_service(tmp), TOKEN, f"file://{tmp}/coordination"
                                       ).test_client(), token),
            "controller": (controller_app(inventory, TOKEN).test_client(), token),
            "notifier": (notifier_app(notifiers[0], "", "noauth").test_client(), ADMIN),
            "notifier-events": (notifier_app(notifiers[1], "", "noauth").test_client(), {}),
            "consumer": (consumer_app(SampleConsumer(ConsumerConfig(
                auth_strategy="noauth"))).test_client(), {}),
            "vim": (vim_app(vims, TOKEN).test_client(), token),
        }
        created = clients["notifier"][0].post("/v2/alarms", json=alarm(), headers=ADMIN)
        assert created.status_code == 201, created.get_json()
        yield clients, {"server": server.id, "alarm": created.get_json()["alarm_id"],
                        "vim": record.id}
        for notifier in notifiers:
            notifier.stop()
        inventory.close()
        engine.dispose()


def check(endpoint: Endpoint, response: Any) -> None:
    where = f"{endpoint} answered {response.status_code}"
    assert response.status_code < 500, (where, response.get_data()[:500])
    if response.status_code < 300 and not response.get_data():
        return  # 204, and the controller's 202 to an action
    body = response.get_json(silent=True)
    assert body is not None, (where, "not JSON", response.get_data()[:200])
    if 400 <= response.status_code < 500:
        assert isinstance(body, dict) and isinstance(body.get("error"), str), (where, body)
        if response.status_code in (400, 413):
            assert isinstance(body.get("field"), str), (where, body)
        if endpoint.part.startswith("notifier"):
            assert body["error_message"]["faultstring"] == body["error"], (where, body)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@FUZZ
@given(data=st.data())
def test_no_body_makes_an_endpoint_fail(parts, endpoint, data):
    clients, ids = parts
    client, headers = clients[endpoint.part]
    body = data.draw(endpoint.bodies, label="body")
    response = client.open(endpoint.path.format(**ids), method=endpoint.method, data=body,
                           headers=headers, content_type="application/json")
    check(endpoint, response)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_the_valid_bodies_are_taken(parts, endpoint):
    """So the fuzzed bodies, one change away from these, reach the handlers' checks."""
    clients, ids = parts
    client, headers = clients[endpoint.part]
    assert endpoint.valid is not None
    if endpoint.part == "controller":  # the fuzzed host updates may have left c1 forced down
        up = client.put("/v1/hosts/c1", json={"forced_down": False}, headers=headers)
        assert up.status_code == 200, up.get_json()
    if "{server}" in endpoint.path:  # a server of its own, on c1: the fuzzing may have moved
        created = client.post("/v1/servers", json={"name": "vm", "project_id": "p1",
                                                   "host": "c1"}, headers=headers)
        assert created.status_code == 201, created.get_json()
        ids = {**ids, "server": created.get_json()["server"]["id"]}
    response = client.open(endpoint.path.format(**ids), method=endpoint.method,
                           data=encode(endpoint.valid()), headers=headers,
                           content_type="application/json")
    # A status from a monitor the VIM has not been given is the handler's last check (409).
    refused = endpoint.path.endswith("/status") and response.status_code == 409
    assert 200 <= response.status_code < 300 or refused, (str(endpoint), response.get_json())


QUERY_VALUE = TEXT | st.integers().map(str) | HUGE.map(str) | st.floats().map(str)


@pytest.mark.parametrize("endpoint", GETS, ids=str)
@QUERY_FUZZ
@given(data=st.data())
def test_no_query_string_makes_a_listing_fail(parts, endpoint, data):
    clients, ids = parts
    client, headers = clients[endpoint.part]
    keys = list(endpoint.query) + ["other"]
    args = data.draw(st.lists(st.tuples(st.sampled_from(keys), QUERY_VALUE), max_size=6),
                     label="args")
    response = client.open(endpoint.path.format(**ids), method="GET", query_string=args,
                           headers=headers)
    check(endpoint, response)
