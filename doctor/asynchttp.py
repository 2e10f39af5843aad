"""A small asyncio HTTP/1.1 client for fan-outs: many short POSTs from one event loop.

``doctor.http.HttpClient`` costs one blocking thread per request in flight; the
notifier's alarm actions fan one failure out to a thousand consumers, and there the
threads, their locks and ``http.client`` cost about 120-180 µs of CPU per POST on the
machine that also runs the inspector and the consumer. This client sends the same POST
from one event loop for about a third of that (``python -m bench.action_cost``; aiohttp's
client measured no cheaper than the threads).

What it does, and no more: one request at a time per connection (no pipelining), a pool
of kept-alive connections per scheme://host:port; a reused connection the server closed
meanwhile (it never read the request) is retried once on a new one; a deadline of
``timeout_s`` over connecting (TLS handshake included) and the whole exchange; https with
the certificate and host name verified against the system's CAs (unless ``verify`` is
off); answers with Content-Length, chunked, or read to the close, of which at most
``limit`` bytes of body are kept (a connection whose answer was not read to its end is
closed, not reused). Errors are ``doctor.http.HttpError`` with a ``reason`` that holds no
URL. Not safe to share between event loops; no redirects, no proxies, no cookies, no
credentials from the URL.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import sys
from collections.abc import Awaitable
from functools import lru_cache
from typing import TypeVar
from urllib.parse import urlsplit

from doctor.http import HttpError, HttpResponse

_T = TypeVar("_T")

MAX_HEAD = 64 * 1024  # status line and headers of one answer, at most
_NO_BODY = (204, 304)
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # what may not be in a request's path or host


class _Stale(Exception):
    """A reused connection was closed before any answer came: the request is sent again."""


if sys.version_info >= (3, 11):
    async def _within(seconds: float, work: Awaitable[_T]) -> _T:
        async with asyncio.timeout(seconds):
            return await work
else:  # pragma: no cover  (3.10: wait_for, one task more per request)
    async def _within(seconds: float, work: Awaitable[_T]) -> _T:
        return await asyncio.wait_for(work, seconds)


@lru_cache(maxsize=4096)
def _split(url: str) -> tuple[tuple[str, str, int], bytes, bytes]:
    """(scheme, host, port), the Host header's value, and the request target."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise HttpError("not an http(s) URL", "not an http(s) URL") from None
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host or _UNSAFE.search(host):
        raise HttpError("not an http(s) URL", "not an http(s) URL")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if _UNSAFE.search(path):
        raise HttpError("the URL's path holds spaces or control characters",
                        "the URL's path holds spaces or control characters")
    default = 443 if parts.scheme == "https" else 80
    named = f"[{host}]" if ":" in host else host
    host_header = named if port in (None, default) else f"{named}:{port}"
    try:
        path_bytes, host_bytes = path.encode("ascii"), host_header.encode("idna")
    except UnicodeError:
        raise HttpError("not an http(s) URL", "not an http(s) URL") from None
    return (parts.scheme, host, port or default), host_bytes, path_bytes


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class AsyncHttpClient:
    """POSTs (or any method with a body) from one event loop, over kept-alive connections."""

    def __init__(self, timeout_s: float, headers: dict[str, str] | None = None,
                 verify: bool = True, limit: int = 64 * 1024) -> None:
        """``headers`` go with every request; ``limit``: bytes of an answer's body kept."""
        self.timeout_s = timeout_s
        self.limit = limit
        self._fixed = "".join(f"{name}: {value}\r\n"
                              for name, value in (headers or {}).items()).encode("latin-1")
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None
        self.verify = verify

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            context = ssl.create_default_context()
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls = context
        return self._tls

    async def post(self, url: str, body: bytes, headers: dict[str, str] | None = None
                   ) -> HttpResponse:
        return await self.request("POST", url, body, headers)

    async def request(self, method: str, url: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> HttpResponse:
        """Send one request and read its answer; HttpError if there is none in time."""
        target, host_header, path = _split(url)
        length = b"Content-Length: %d\r\n" % len(body) \
            if body or method in ("POST", "PUT", "PATCH") else b""
        head = b"".join((method.encode("ascii"), b" ", path, b" HTTP/1.1\r\nHost: ",
                         host_header, b"\r\n", length, self._fixed,
                         "".join(f"{name}: {value}\r\n"
                                 for name, value in (headers or {}).items()).encode("latin-1"),
                         b"\r\n"))
        try:
            return await _within(self.timeout_s, self._exchange(target, head + body))
        except (TimeoutError, asyncio.TimeoutError):
            reason = "timed out"
        except ssl.SSLCertVerificationError as exc:
            reason = f"certificate verify failed: {exc.verify_message}"
        except (OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
            reason = _reason(exc)
        # Scheme, host and port only: the path and query may hold a secret.
        raise HttpError(f"{method} {target[0]}://{host_header.decode()}: {reason}", reason)

    async def _exchange(self, target: tuple[str, str, int], request: bytes) -> HttpResponse:
        idle = self._idle.get(target)
        while idle:
            conn = idle.pop()
            if not conn.usable():
                conn.close()
                continue
            try:
                return await self._send(target, conn, request, reused=True)
            except _Stale:
                break  # the server closed it meanwhile: a new connection, once
        conn = await self._connect(target)
        return await self._send(target, conn, request, reused=False)

    async def _connect(self, target: tuple[str, str, int]) -> _Connection:
        scheme, host, port = target
        if scheme == "https":
            reader, writer = await asyncio.open_connection(
                host, port, ssl=self._context(), server_hostname=host, limit=MAX_HEAD)
        else:
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD)
        return _Connection(reader, writer)

    async def _send(self, target: tuple[str, str, int], conn: _Connection, request: bytes,
                    reused: bool) -> HttpResponse:
        keep = False
        try:
            conn.writer.write(request)
            try:
                head = await conn.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
                if reused and not getattr(exc, "partial", b""):
                    raise _Stale() from None
                raise
            answer, keep = await self._answer(conn.reader, head, request.startswith(b"HEAD "))
            return answer
        finally:
            if keep:
                self._idle.setdefault(target, []).append(conn)
            else:
                conn.close()

    async def _answer(self, reader: asyncio.StreamReader, head: bytes, bodiless: bool = False
                      ) -> tuple[HttpResponse, bool]:
        """The answer whose head (status line and headers) is ``head``, and whether the
        connection may be reused. ``bodiless``: the answer to a HEAD, whose length headers
        tell of a body not sent."""
        while True:
            line, _, block = head[:-4].partition(b"\r\n")
            version, status = _status(line)
            headers = _headers(block)
            if status >= 200 or status == 101:
                break
            head = await reader.readuntil(b"\r\n\r\n")  # 1xx: the final answer follows
        connection = headers.get("connection", "").lower()
        keep = "close" not in connection if version == "HTTP/1.1" \
            else "keep-alive" in connection
        if bodiless or status in _NO_BODY:
            return HttpResponse(status, headers, b""), keep
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, complete = await self._chunked(reader)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ValueError("a bad Content-Length") from None
            if length < 0:
                raise ValueError("a bad Content-Length")
            body = await reader.readexactly(min(length, self.limit))
            complete = length <= self.limit
        else:  # read to the close
            body = await reader.read(self.limit)
            while body and len(body) < self.limit and not reader.at_eof():
                more = await reader.read(self.limit - len(body))
                if not more:
                    break
                body += more
            complete, keep = False, False
        return HttpResponse(status, headers, body), keep and complete

    async def _chunked(self, reader: asyncio.StreamReader) -> tuple[bytes, bool]:
        """The first ``limit`` bytes of a chunked body, and whether it was read to its end."""
        parts: list[bytes] = []
        kept = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ValueError("a bad chunk size") from None
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(parts), True
            if kept + size > self.limit:
                parts.append(await reader.readexactly(self.limit - kept))
                return b"".join(parts), False
            parts.append(await reader.readexactly(size))
            kept += size
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("a chunk without its CRLF")

    async def close(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _status(line: bytes) -> tuple[str, int]:
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit() \
            or len(parts[1]) != 3:
        raise ValueError("not an HTTP/1.x answer")
    return parts[0], int(parts[1])


def _headers(block: bytes) -> dict[str, str]:
    """Header names in lower case; a repeated header's values joined with commas."""
    headers: dict[str, str] = {}
    for raw in block.decode("latin-1").split("\r\n"):
        if not raw:
            continue
        name, sep, value = raw.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError("a bad header line")
        name, value = name.lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection lost (the answer was cut)"
    if isinstance(exc, asyncio.LimitOverrunError):
        return "the answer's head is too long"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return f"connection lost ({type(exc).__name__})"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
