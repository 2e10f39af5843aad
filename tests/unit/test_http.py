"""The one HTTP client: timeouts, kept-alive connections, and servers that drop them."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from doctor.http import HttpClient, HttpError


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    seen: list[str] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Handler.seen.append(self.headers.get("X-Auth-Token", ""))
        if self.path == "/slow":
            time.sleep(1.0)
        answer = json.dumps({"echo": json.loads(body), "path": self.path}).encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        if self.path == "/then-close":  # as a server whose keep-alive timer ran out
            self.close_connection = True

    do_PUT = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url(server, path="/x"):
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_json_round_trip_with_token_and_params(server):
    client = HttpClient(2.0, token="secret")
    response = client.post(url(server), json={"a": 1}, params={"q": "a b"})
    assert response.status == 201 and response.ok
    assert response.json() == {"echo": {"a": 1}, "path": "/x?q=a+b"}
    assert Handler.seen[-1] == "secret"
    client.close()


def test_a_connection_the_server_dropped_is_replaced(server):
    client = HttpClient(2.0)
    assert client.post(url(server, "/then-close"), json=1).ok
    time.sleep(0.1)  # the server has closed its end of the kept-alive connection
    assert client.post(url(server), json=2).json()["echo"] == 2
    client.close()


def test_timeout_is_an_http_error_naming_it(server):
    client = HttpClient(0.2)
    started = time.monotonic()
    with pytest.raises(HttpError, match="timed out"):
        client.post(url(server, "/slow"), json={})
    assert time.monotonic() - started < 1.0


def test_refused_and_bad_urls_are_http_errors():
    client = HttpClient(1.0)
    with pytest.raises(HttpError, match="ConnectionRefusedError"):
        client.get("http://127.0.0.1:9/")
    with pytest.raises(HttpError, match="not an http"):
        client.get("ftp://example.invalid/")


def test_threads_use_their_own_connections(server):
    client = HttpClient(2.0)
    errors = []

    def work(n):
        try:
            for i in range(20):
                assert client.put(url(server), json=[n, i]).json()["echo"] == [n, i]
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(client._all) == 8
    client.close()


def test_tls_is_verified_unless_told_not_to(tls_server):
    client = HttpClient(2.0)
    with pytest.raises(HttpError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get(tls_server + "/")
    client.close()
    unverified = HttpClient(2.0, verify=False)
    assert unverified.get(tls_server + "/").body == b"small"
    unverified.close()


def test_limit_reads_the_start_of_a_body_and_replaces_the_connection(tls_server):
    client = HttpClient(2.0, verify=False)
    assert len(client.get(tls_server + "/big", limit=1000).body) == 1000
    assert client._all == []  # not read to the end: not kept for the next request
    assert client.get(tls_server + "/").body == b"small"
    assert len(client._all) == 1  # read to the end: kept alive
    client.close()


# -- a token source instead of a static token ---------------------------------------------------


class TokenHandler(BaseHTTPRequestHandler):
    """Answers 200 to a token in ``valid``, 401 to any other (recording every token seen)."""

    protocol_version = "HTTP/1.1"
    valid: set[str] = set()
    seen: list[str] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        token = self.headers.get("X-Auth-Token", "")
        TokenHandler.seen.append(token)
        status = 200 if token in TokenHandler.valid else 401
        answer = json.dumps({"status": status}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def token_server():
    TokenHandler.valid, TokenHandler.seen = set(), []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), TokenHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


class Tokens:
    """A token source: tok-1, then tok-2 once tok-1 is invalidated, and so on."""

    def __init__(self) -> None:
        self.number = 1
        self.calls = 0
        self.invalidated: list[str] = []

    def __call__(self) -> str:
        self.calls += 1
        return f"tok-{self.number}"

    def invalidate(self, token: str) -> None:
        self.invalidated.append(token)
        self.number += 1


def test_a_token_source_is_asked_for_each_request_and_its_token_sent(token_server):
    TokenHandler.valid = {"tok-1"}
    tokens = Tokens()
    client = HttpClient(2.0, token=tokens)
    assert client.post(url(token_server), json={}).status == 200
    assert client.post(url(token_server), json={}).status == 200
    assert TokenHandler.seen == ["tok-1", "tok-1"] and tokens.calls == 2
    assert "X-Auth-Token" not in client.headers  # nothing static kept
    client.close()


def test_a_401_invalidates_the_refused_token_and_retries_once_with_a_new_one(token_server):
    TokenHandler.valid = {"tok-2"}
    tokens = Tokens()
    client = HttpClient(2.0, token=tokens)
    response = client.post(url(token_server), json={"a": 1})
    assert response.status == 200
    assert TokenHandler.seen == ["tok-1", "tok-2"] and tokens.invalidated == ["tok-1"]
    client.close()


def test_a_second_401_is_the_answer_no_more_retries(token_server):
    TokenHandler.valid = set()
    tokens = Tokens()
    client = HttpClient(2.0, token=tokens)
    response = client.post(url(token_server), json={})
    assert response.status == 401
    assert TokenHandler.seen == ["tok-1", "tok-2"] and tokens.invalidated == ["tok-1"]
    client.close()


def test_a_plain_callable_is_a_token_source_and_a_401_is_retried_once(token_server):
    issued = iter(["old", "new"])
    client = HttpClient(2.0, token=lambda: next(issued))
    TokenHandler.valid = {"new"}
    assert client.post(url(token_server), json={}).status == 200
    assert TokenHandler.seen == ["old", "new"]
    client.close()


def test_a_static_token_is_not_retried_on_a_401(token_server):
    client = HttpClient(2.0, token="static")
    assert client.post(url(token_server), json={}).status == 401
    assert TokenHandler.seen == ["static"]
    client.close()


def test_no_token_from_the_source_is_an_http_error_and_nothing_is_sent(token_server):
    def broken() -> str:
        raise RuntimeError("cloud c: no Keystone token: ConnectFailure: refused")

    for source, reason in ((broken, "ConnectFailure"), (lambda: "", "empty")):
        client = HttpClient(2.0, token=source)
        with pytest.raises(HttpError) as caught:
            client.post(url(token_server), json={})
        assert "no token to send" in str(caught.value) and reason in caught.value.reason
        client.close()
    assert TokenHandler.seen == []


def test_a_request_s_own_x_auth_token_wins_over_the_source(token_server):
    TokenHandler.valid = {"mine"}
    tokens = Tokens()
    client = HttpClient(2.0, token=tokens)
    assert client.post(url(token_server), json={}, headers={"X-Auth-Token": "mine"}).status == 200
    assert TokenHandler.seen == ["mine"] and tokens.calls == 0
    client.close()
