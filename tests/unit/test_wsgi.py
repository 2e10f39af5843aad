"""doctor.wsgi: the open-files budget, the request deadline and waitress's limits as set."""

from __future__ import annotations

import resource
import socket
import time

import pytest

from doctor import wsgi
from doctor.wsgi import HttpServer


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture
def server():
    started = HttpServer(app, channel_timeout_s=1, request_timeout_s=0.5,
                         cleanup_interval_s=1, name="test").start()
    yield started
    started.stop()


def closed_within(sock: socket.socket, timeout_s: float) -> bool:
    """The server closed ``sock`` within ``timeout_s`` (EOF or reset)."""
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def get(server: HttpServer, extra: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n")
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass  # refused before the whole request was read: the answer came first
    return answer


def test_the_open_files_budget_and_the_connections_it_allows():
    assert wsgi.open_files_for(wsgi.CONNECTION_LIMIT) == 3 * 4096 + 256
    assert wsgi.connections_within(wsgi.open_files_for(4096), 4096) == 4096
    assert wsgi.connections_within(1024, 4096) == (1024 - 256) // 3
    assert wsgi.connections_within(100, 4096) == 1


def test_the_soft_limit_is_raised_toward_the_hard_limit_never_lowered(monkeypatch):
    limits = {"now": (1024, 8192)}
    monkeypatch.setattr(resource, "getrlimit", lambda _which: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", lambda _which, value: limits.update(now=value))
    assert wsgi.raise_open_files_limit(4000) == 4000
    assert limits["now"] == (4000, 8192)
    assert wsgi.raise_open_files_limit(100_000) == 8192  # the hard limit
    assert limits["now"] == (8192, 8192)
    assert wsgi.raise_open_files_limit(2000) == 8192  # never lowered


def test_a_hard_limit_too_low_lowers_the_connection_limit(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 1024))
    monkeypatch.setattr(resource, "setrlimit", lambda _which, _value: None)
    server = HttpServer(app, name="test")
    try:
        assert server.connection_limit == (1024 - 256) // 3
        assert server._server.adj.connection_limit == server.connection_limit + 2
    finally:
        server.stop()


def test_waitress_is_given_the_settings_of_the_docstring(server):
    adj = server._server.adj
    assert adj.asyncore_use_poll is True
    assert adj.connection_limit == wsgi.CONNECTION_LIMIT + 2
    assert (adj.max_request_header_size, adj.max_request_body_size) == (32768, 2 * 1024 * 1024)
    assert (adj.backlog, adj.cleanup_interval, adj.channel_timeout) == (1024, 1, 1)


def test_a_request_never_completed_is_closed_after_the_deadline_an_answer_still_comes(server):
    slow = socket.create_connection(("127.0.0.1", server.port))
    idle = socket.create_connection(("127.0.0.1", server.port))
    try:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert get(server).startswith(b"HTTP/1.1 200")
        for i in range(20):  # bytes keep coming, so only the request deadline closes it
            time.sleep(0.2)
            try:
                slow.sendall(b"X-Slow-%d: 1\r\n" % i)
            except OSError:
                break
        assert closed_within(slow, 1.0)
        assert time.monotonic() - started < 3.0  # 0.5 s deadline, checked every 1 s
        assert closed_within(idle, 3.0)  # channel_timeout
        assert server._server.late_closed == 1
    finally:
        slow.close()
        idle.close()


def test_oversized_headers_and_bodies_are_refused_by_waitress(server):
    assert b" 431 " in get(server, b"X-Big: " + b"a" * 40000 + b"\r\n")[:16]
    too_long = b"Content-Length: %d\r\n" % (3 * 1024 * 1024)
    assert b" 413 " in get(server, too_long)[:16]
