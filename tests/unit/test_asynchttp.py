"""doctor.asynchttp: the event-loop client of the alarm actions, against scripted servers."""

from __future__ import annotations

import asyncio

import pytest

from doctor.asynchttp import AsyncHttpClient
from doctor.http import HttpError
from testkit.eventsink import free_port
from tests.unit.conftest import OK


def run(client: AsyncHttpClient, *requests):
    """Send the requests one after another on one loop; their answers or errors."""
    async def main():
        results = []
        for method, url in requests:
            try:
                body = b'{"a": 1}' if method == "POST" else b""
                results.append(await client.request(method, url, body))
            except HttpError as exc:
                results.append(exc)
        await client.close()
        return results

    return asyncio.run(main())


def test_connections_are_kept_alive_and_reused(scripted):
    server = scripted(lambda conn, req, head: OK)
    answers = run(AsyncHttpClient(2), *[("POST", server.url + "/failure")] * 3)
    assert [a.status for a in answers] == [200, 200, 200] and answers[0].body == b"ok"
    assert server.connections == 1 and len(server.requests) == 3
    head = server.requests[0]
    assert head.startswith(b"POST /failure HTTP/1.1\r\n")
    assert f"Host: {server.url[7:]}\r\n".encode() in head
    assert b"Content-Length: 8\r\n" in head


def test_a_stale_kept_alive_connection_is_retried_once_on_a_new_one(scripted):
    # Each connection answers its first request only, then closes without answering: what
    # a server does that closed an idle connection as the next request came.
    server = scripted(lambda conn, req, head: OK if req == 1 else None)
    answers = run(AsyncHttpClient(2), *[("POST", server.url + "/failure")] * 3)
    assert [a.status for a in answers] == [200, 200, 200]
    assert server.connections == 3


def test_a_new_connection_closed_without_an_answer_is_an_error_not_a_loop(scripted):
    server = scripted(lambda conn, req, head: None)
    [error] = run(AsyncHttpClient(2), ("POST", server.url + "/failure"))
    assert isinstance(error, HttpError) and "connection lost" in error.reason
    assert server.connections == 1


def test_chunked_answers_are_read_and_the_connection_reused(scripted):
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    server = scripted(lambda conn, req, head: chunked)
    answers = run(AsyncHttpClient(2), *[("POST", server.url + "/")] * 2)
    assert [a.body for a in answers] == [b"hello world"] * 2
    assert server.connections == 1


def test_bodies_are_read_up_to_the_limit_and_such_a_connection_is_not_reused(scripted):
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    big_chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"1388\r\n" + b"y" * 5000 + b"\r\n0\r\n\r\n")
    server = scripted(lambda conn, req, head: big if b"/big " in head else big_chunked)
    answers = run(AsyncHttpClient(2, limit=1000), ("POST", server.url + "/big"),
                  ("POST", server.url + "/chunked"))
    assert [a.body for a in answers] == [b"x" * 1000, b"y" * 1000]
    assert server.connections == 2


def test_an_answer_without_length_is_read_to_the_close(scripted):
    server = scripted(lambda conn, req, head: (b"HTTP/1.0 200 OK\r\n\r\nall of it", "close"))
    answers = run(AsyncHttpClient(2), *[("POST", server.url + "/")] * 2)
    assert [(a.status, a.body) for a in answers] == [(200, b"all of it")] * 2
    assert server.connections == 2


def test_connection_close_is_honoured_and_204_has_no_body(scripted):
    server = scripted(lambda conn, req, head: b"HTTP/1.1 204 No Content\r\n"
                                              b"Connection: close\r\n\r\n")
    answers = run(AsyncHttpClient(2), *[("POST", server.url + "/")] * 2)
    assert [(a.status, a.body) for a in answers] == [(204, b"")] * 2
    assert server.connections == 2


def test_an_interim_100_answer_is_skipped(scripted):
    server = scripted(lambda conn, req, head: b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    assert run(AsyncHttpClient(2), ("POST", server.url + "/"))[0].body == b"ok"


def test_no_answer_in_time_is_a_timeout_naming_no_path(scripted):
    server = scripted(lambda conn, req, head: server.release.wait(5) and None)
    [error] = run(AsyncHttpClient(0.2), ("POST", server.url + "/failure?token=secret"))
    assert isinstance(error, HttpError) and error.reason == "timed out"
    assert "secret" not in str(error) and "/failure" not in str(error)


def test_a_refused_connection_and_a_garbled_answer_are_errors(scripted):
    garbled = scripted(lambda conn, req, head: b"SMTP ready\r\n\r\n")
    refused, bad = run(AsyncHttpClient(2), ("POST", f"http://127.0.0.1:{free_port()}/"),
                       ("POST", garbled.url + "/"))
    assert isinstance(refused, HttpError) and "ConnectionRefusedError" in refused.reason
    assert isinstance(bad, HttpError) and "not an HTTP/1.x answer" in bad.reason


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "http:///nohost", "http://h/a b",
                                 "http://h/a\r\nX-Evil: 1", "http://h:99999/"])
def test_urls_that_are_not_http_or_would_split_the_request_are_refused(url):
    [error] = run(AsyncHttpClient(2), ("POST", url))
    assert isinstance(error, HttpError)


def test_tls_is_verified_unless_told_not_to(tls_server):
    [refused] = run(AsyncHttpClient(2), ("GET", tls_server + "/"))
    assert isinstance(refused, HttpError) and "certificate verify failed" in refused.reason
    small, big = run(AsyncHttpClient(2, verify=False, limit=1000), ("GET", tls_server + "/"),
                     ("GET", tls_server + "/big"))
    assert small.body == b"small" and big.body == b"x" * 1000


def test_the_answer_to_a_head_has_no_body_whatever_its_length_says(scripted):
    server = scripted(lambda conn, req, head: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
                      if head.startswith(b"HEAD ") else OK)
    head, post = run(AsyncHttpClient(2), ("HEAD", server.url + "/"), ("POST", server.url + "/"))
    assert (head.status, head.body, post.body) == (200, b"", b"ok")
    assert server.connections == 1
