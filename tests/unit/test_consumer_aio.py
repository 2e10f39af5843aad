"""The Consumer on aiohttp answers as the Consumer on Flask does, for every route and auth
mode, and keeps its bounds: bodies past the limit, deep or invalid JSON, slow and idle
clients. Each request goes to the Flask app (test client) and to a real aiohttp server
(``doctor.aio.AioServer`` on a loopback port, in this process), each with its own consumer."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.aio import create_aio_app
from consumer.config import ConsumerConfig
from consumer.sample import REQUEST_ID_HEADER, SampleConsumer, create_app
from doctor.aio import AioServer
from doctor.config import ConfigError
from doctor.profiler import read
from doctor.signing import SIGNATURE_HEADER, sign
from tests.unit.test_consumer_auth import SECRET, TOKEN, payload
from tests.unit.test_fuzz_api import ENDPOINTS, FUZZ

LIMIT = 200_000  # max_body_bytes: room for JSON nested too deeply to parse
TIMEOUT_S = 10.0  # every socket of these tests


def config_of(**options) -> ConsumerConfig:
    return ConsumerConfig(**{"token": TOKEN, "alarm_secret": SECRET, "max_body_bytes": LIMIT,
                             **options})


def signed(data: bytes) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(SECRET, data), "Content-Type": "application/json"}


def alarm(**changes) -> bytes:
    body = payload(str(uuid.uuid4()))
    body.update(changes)
    return json.dumps(body).encode()


# (name, method, path with query, headers, body): every route, with and without credentials.
AUTH = {"X-Auth-Token": TOKEN}
GOOD = alarm()
REQUESTS = [
    ("signed alarm", "POST", "/failure", signed(GOOD), GOOD),
    ("unsigned alarm", "POST", "/failure", {}, GOOD),
    ("wrong signature", "POST", "/failure", {SIGNATURE_HEADER: "sha256=00"}, GOOD),
    ("alarm with ?token", "POST", f"/failure?token={TOKEN}", {}, GOOD),
    ("alarm with a wrong ?token", "POST", "/failure?token=guess", {}, GOOD),
    ("alarm with X-Auth-Token", "POST", "/failure", AUTH, GOOD),
    ("empty body", "POST", "/failure", signed(b""), b""),
    ("not JSON", "POST", "/failure", signed(b"{nope"), b"{nope"),
    ("NaN", "POST", "/failure", signed(b"NaN"), b"NaN"),
    ("nested too deeply", "POST", "/failure", signed(b"[" * 100_000), b"[" * 100_000),
    ("a list", "POST", "/failure", signed(b"[]"), b"[]"),
    ("no alarm_id", "POST", "/failure", signed(alarm(alarm_id="")), alarm(alarm_id="")),
    ("not an event alarm", "POST", "/failure",
     signed(alarm(reason_data={"type": "threshold"})), alarm(reason_data={"type": "threshold"})),
    ("GET the alarm path", "GET", "/failure", AUTH, b""),
    ("GET the alarm path signed", "GET", "/failure", signed(b""), b""),
    ("list without a token", "GET", "/failures", {}, b""),
    ("list with the token in the URL", "GET", f"/failures?token={TOKEN}", {}, b""),
    ("list", "GET", "/failures", AUTH, b""),
    ("list since", "GET", "/failures?since=0", AUTH, b""),
    ("list since garbage", "GET", "/failures?since=yesterday", AUTH, b""),
    ("HEAD the list", "HEAD", "/failures", AUTH, b""),
    ("OPTIONS the list", "OPTIONS", "/failures", AUTH, b""),
    ("PUT the list", "PUT", "/failures", AUTH, b"{}"),
    ("clear without a token", "DELETE", "/failures", {}, b""),
    ("clear", "DELETE", "/failures", AUTH, b""),
    ("unknown path", "GET", "/nowhere", {}, b""),
    ("unknown path with the token", "GET", "/nowhere", AUTH, b""),
    ("unknown path POST", "POST", "/nowhere", AUTH, b"{}"),
]


@pytest.fixture
def served():
    """Start an aiohttp server for a consumer; yields a function of the config options."""
    servers: list[AioServer] = []

    def start(consumer: SampleConsumer, **options) -> AioServer:
        server = AioServer(create_aio_app(consumer, **options), "127.0.0.1", 0,
                           name="consumer").start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def ask(port: int, method: str, path: str, headers: dict[str, str], body: bytes):
    """(status, headers, body) of one request on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body if body or method in ("POST", "PUT") else None,
                     headers=headers)
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()


def comparable(status: int, headers, body: bytes) -> tuple:
    """What both servers must agree on: the status, the JSON (when it is JSON; its
    received_at only present), the Allow header's methods."""
    document = json.loads(body) if body else None
    if isinstance(document, dict) and "received_at" in document:
        document["received_at"] = "a time"
    if isinstance(document, list):
        document = [{**item, "received_at": "a time"} for item in document]
    allow = {m.strip() for m in headers.get("Allow", "").split(",") if m.strip()}
    return status, document, allow


@pytest.mark.parametrize("strategy", ["token", "noauth"])
def test_every_route_answers_as_the_flask_app_does(strategy, served):
    options = {"auth_strategy": strategy} if strategy == "noauth" else {}
    flask_consumer = SampleConsumer(config_of(**options))
    aio_consumer = SampleConsumer(config_of(**options))
    flask = create_app(flask_consumer).test_client()
    server = served(aio_consumer)
    for name, method, path, headers, body in REQUESTS:
        expected = flask.open(path, method=method, headers=headers, data=body)
        want = comparable(expected.status_code, expected.headers, expected.data)
        got = comparable(*ask(server.port, method, path, headers, body))
        assert got == want, name
    assert ([n.alarm_id for n in aio_consumer.notifications()]
            == [n.alarm_id for n in flask_consumer.notifications()])


def test_a_body_past_the_limit_is_413_naming_body_by_length_or_chunked(served):
    consumer = SampleConsumer(config_of(max_body_bytes=1000))
    server = served(consumer)
    big = alarm(reason="x" * 2000)
    status, _, body = ask(server.port, "POST", "/failure", signed(big), big)
    assert status == 413
    assert json.loads(body) == {"error": "body: larger than the limit of 1000 bytes",
                                "field": "body"}
    # Chunked: no Content-Length to refuse it by; refused while it is read.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT_S)
    try:
        conn.request("POST", "/failure", body=iter([big[:600], big[600:]]),
                     headers=signed(big), encode_chunked=True)
        answer = conn.getresponse()
        assert answer.status == 413 and json.loads(answer.read())["field"] == "body"
    finally:
        conn.close()
    assert consumer.notifications() == []


def test_an_alarm_is_kept_logged_escaped_and_profiled_with_the_time_it_came(
        served, tmp_path, caplog):
    consumer = SampleConsumer(config_of(profile_file=str(tmp_path / "profile.jsonl")))
    server = served(consumer)
    data = alarm(alarm_id="evil\nINFO forged line")
    with caplog.at_level(logging.INFO, logger="consumer.sample"):
        status, _, body = ask(server.port, "POST", "/failure", signed(data), data)
    assert status == 200
    answer = json.loads(body)
    [kept] = consumer.notifications()
    assert answer == kept.to_dict()
    [t09] = read(str(tmp_path / "profile.jsonl"))
    assert t09["checkpoint"] == "T09" and t09["time"] == kept.received_at
    assert t09["instance_id"] == kept.instance_id
    [line] = [r.getMessage() for r in caplog.records if "notified at" in r.getMessage()]
    assert "evil\\nINFO forged line" in line and "\n" not in line


def test_a_resent_alarm_is_answered_with_the_first_and_kept_once(served):
    consumer = SampleConsumer(config_of())
    server = served(consumer)
    data = alarm()
    headers = {**signed(data), REQUEST_ID_HEADER: "req-" + str(uuid.uuid4())}
    first = ask(server.port, "POST", "/failure", headers, data)
    again = ask(server.port, "POST", "/failure", headers, data)
    assert first[0] == again[0] == 200 and first[2] == again[2]
    assert len(consumer.notifications()) == 1 and consumer.duplicates == 1


def test_a_body_that_never_completes_gets_408_and_others_are_answered_meanwhile(served):
    consumer = SampleConsumer(config_of())
    server = served(consumer, body_timeout_s=0.5)
    data = alarm()
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S)
    try:
        head = (f"POST /failure HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"{SIGNATURE_HEADER}: {sign(SECRET, data)}\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        stalled.sendall(head + data[:10])
        # Meanwhile another client is served.
        assert ask(server.port, "GET", "/failures", AUTH, b"")[0] == 200
        answer = b""
        while chunk := stalled.recv(65536):  # the server closes the connection after it
            answer += chunk
    finally:
        stalled.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
        "error": "body: not complete within 0.5 s", "field": "body"}
    assert consumer.notifications() == []


def test_idle_and_half_sent_connections_are_closed_and_do_not_block_others(served):
    consumer = SampleConsumer(config_of())
    server = AioServer(create_aio_app(consumer), "127.0.0.1", 0, name="consumer",
                       keepalive_timeout_s=0.5).start()
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S)
                for _ in range(50)]
        half = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S)
        half.sendall(b"GET /failures HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        assert ask(server.port, "GET", "/failures", AUTH, b"")[0] == 200
        for conn in [*idle, half]:
            assert conn.recv(65536) == b""  # closed by the server, nothing answered
            conn.close()
    finally:
        server.stop()


def test_a_header_too_long_is_a_4xx_not_a_crash(served):
    server = served(SampleConsumer(config_of()))
    status, _, _ = ask(server.port, "GET", "/failures", {**AUTH, "X-Big": "x" * 20_000}, b"")
    assert 400 <= status < 500
    assert ask(server.port, "GET", "/failures", AUTH, b"")[0] == 200


def test_keystone_is_served_by_flask_and_aiohttp_refuses_it():
    keystone = {"auth_strategy": "keystone", "keystone_auth_url": "http://keystone:5000/v3",
                "keystone_username": "consumer", "keystone_password": "p",
                "keystone_project_name": "service", "keystone_alarm_project_id": "p1"}
    assert config_of(**keystone).server == "waitress"
    assert config_of().server == "aiohttp"
    assert config_of(http_server="waitress").server == "waitress"
    with pytest.raises(ConfigError, match="http_server"):
        config_of(http_server="aiohttp", **keystone)
    with pytest.raises(ConfigError, match="http_server"):
        config_of(http_server="tornado")
    with pytest.raises(ValueError, match="keystone"):
        create_aio_app(SampleConsumer(config_of(**keystone)))


@pytest.mark.parametrize("http_server", ["aiohttp", "waitress"])
def test_the_consumer_starts_the_server_it_is_configured_with(http_server):
    consumer = SampleConsumer(config_of(http_server=http_server))
    consumer.start()
    try:
        port = int(consumer.url.rsplit(":", 1)[1].split("/")[0])
        data = alarm()
        assert ask(port, "POST", "/failure", signed(data), data)[0] == 200
        assert len(consumer.notifications()) == 1
    finally:
        consumer.stop()


@pytest.fixture(scope="module")
def twins():
    """A noauth consumer on Flask (test client) and one on aiohttp, for the fuzzing."""
    flask = create_app(SampleConsumer(config_of(auth_strategy="noauth"))).test_client()
    server = AioServer(create_aio_app(SampleConsumer(config_of(auth_strategy="noauth"))),
                       "127.0.0.1", 0, name="consumer").start()
    yield flask, server
    server.stop()


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_fuzzed_alarms_get_the_answer_flask_gives_never_a_5xx(twins, data):
    [endpoint] = [e for e in ENDPOINTS if e.part == "consumer" and e.method == "POST"]
    body = data.draw(endpoint.bodies, label="body")
    flask, server = twins
    headers = {"Content-Type": "application/json"}
    expected = flask.post("/failure", data=body, headers=headers)
    status, answer_headers, answer = ask(server.port, "POST", "/failure", headers, body)
    assert status < 500, answer[:500]
    assert (comparable(status, answer_headers, answer)
            == comparable(expected.status_code, expected.headers, expected.data))


def test_a_client_that_expects_100_continue_gets_it_then_its_answer(served):
    consumer = SampleConsumer(config_of())
    server = served(consumer)
    data = alarm()
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S)
    try:
        conn.sendall((f"POST /failure HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                      f"{SIGNATURE_HEADER}: {sign(SECRET, data)}\r\n"
                      f"Content-Length: {len(data)}\r\n\r\n").encode())
        assert conn.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any body
        conn.sendall(data)
        answer = conn.recv(65536)
    finally:
        conn.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert len(consumer.notifications()) == 1


def test_a_request_that_cannot_be_parsed_is_400_and_logged_without_what_it_carried(
        served, caplog):
    server = served(SampleConsumer(config_of()))
    raws = [f"POST /failure?token={TOKEN}{'x' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            f"GET /failures HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOKEN}\x01\x1b[31m\r\n\r\n"
            .encode(),
            f"POST /failure?token={TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n".encode()]
    with caplog.at_level(logging.DEBUG):
        for raw in raws:
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S)
            try:
                conn.sendall(raw)
                assert conn.recv(65536).startswith(b"HTTP/1.0 400")
            finally:
                conn.close()
        assert ask(server.port, "GET", "/failures", AUTH, b"")[0] == 200
    logged = caplog.text + "".join(str(r.exc_info) for r in caplog.records)
    assert TOKEN not in logged and "\x1b" not in logged
    assert logged.count("refused a request it could not parse") == len(raws)
