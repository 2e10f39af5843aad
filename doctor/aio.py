"""Serving an aiohttp application in a thread of its own, with doctor's limits for slow and
idle clients (``doctor.wsgi`` says why each exists; here is how aiohttp meets them).

aiohttp parses requests in one asyncio event loop with a C parser (llhttp) and calls the
handler once a request's headers are complete; the handler then reads the body. One loop
serves every connection, so an idle or slow client costs a connection (a socket and a few
kilobytes), never a thread, and a request costs no thread hand-off: about a third of the
CPU of Flask on waitress for the Consumer's alarm (``python -m bench.consumer_cost``).

- Idle and late connections: aiohttp's ``keepalive_timeout`` (``CHANNEL_TIMEOUT_S``, 30 s)
  runs from the connection's start or its last answer, and closes it if no complete request
  head came by then, however slowly bytes trickle in (so it is also waitress's
  ``channel_timeout`` plus doctor's ``REQUEST_TIMEOUT_S`` for request heads). A body must be
  complete ``REQUEST_TIMEOUT_S`` after its head: ``read_body`` answers 408 otherwise, and
  the connection is closed ``LINGERING_TIME_S`` later (the rest of a refused body read
  and dropped meanwhile, so the client sees the answer, not a reset).
- Request heads: a request line of at most ``MAX_LINE_BYTES`` (8 KiB), a header name and
  a value of at most ``MAX_FIELD_BYTES`` (4 KiB) each, at most ``MAX_HEADERS`` (32)
  headers; past that, aiohttp's own 400. aiohttp has no limit on a head's total, so one
  connection may make the loop hold up to about 264 KiB of head, where waitress's 32 KiB
  bound holds (our heads are a few hundred bytes).
- Bodies: at most the API's body limit, checked by Content-Length before reading and while
  reading (a chunked body): 413 naming ``body`` (``read_body``).
- The open-files limit is raised as ``doctor.wsgi.HttpServer`` does; asyncio pauses
  accepting for a second on EMFILE (no spin). There is no connection limit but open files:
  the loop waits on epoll, so its cost grows with the busy connections, not all of them.
- ``backlog`` 1024, as waitress's.
- A request aiohttp cannot parse (a header too long, a control character, Content-Length
  with chunked) gets aiohttp's plain-text 400. aiohttp's log of it carries the request's
  bytes (a URL with ``?token=``, an ``X-Auth-Token`` line), so ``QuietLog`` logs only what
  kind of error it was.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from doctor.api import ApiError, body_too_large
from doctor.wsgi import (
    BACKLOG,
    CHANNEL_TIMEOUT_S,
    CONNECTION_LIMIT,
    REQUEST_TIMEOUT_S,
    open_files_for,
    raise_open_files_limit,
)

LOG = logging.getLogger(__name__)

MAX_LINE_BYTES = 8190  # aiohttp's default: the request line
MAX_FIELD_BYTES = 4096  # a header's name, and its value (a Keystone token is under 255)
MAX_HEADERS = 32
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
SHUTDOWN_TIMEOUT_S = 2.0  # for the handlers under way, at stop
# After an answer to a request whose body is not all read (a 413, a 408), what more comes
# is read and dropped for this long, then the connection is closed (aiohttp's default: 10).
LINGERING_TIME_S = 2.0


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


async def read_body(request: web.BaseRequest, limit: int,
                    timeout_s: float = REQUEST_TIMEOUT_S) -> bytes:
    """The request's whole body: at most ``limit`` bytes (else an ApiError 413 naming
    ``body``), complete within ``timeout_s`` (else an ApiError 408). A body already received
    (the usual case: a small body comes with its head) is returned without waiting."""
    length = request.content_length
    if length is not None and length > limit:
        raise body_too_large(limit)
    if request.content.is_eof():
        return await _read(request, limit)
    if (request.version >= (1, 1)
            and request.headers.get("Expect", "").lower() == "100-continue"):
        # The client (curl, say) waits for this before it sends the body; aiohttp's
        # router would send it, its low-level server leaves it to the handler.
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # not the answer's bytes
    try:
        return await asyncio.wait_for(_read(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, f"body: not complete within {timeout_s:g} s", "body") from None


async def _read(request: web.BaseRequest, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)


class QuietLog(logging.LoggerAdapter):
    """aiohttp's server logger, without what a client sent: for an error parsing a request,
    one line naming the error's kind and status, at INFO (the client's fault)."""

    def log(self, level: int, msg: object, *args: Any, exc_info: Any = None,
            **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else None
        if error is None and exc_info:
            error = sys.exc_info()[1]
        if isinstance(error, HttpProcessingError):
            self.logger.info("%s: refused a request it could not parse: %s (%s)",
                             self.extra["name"] if self.extra else "api",
                             type(error).__name__, error.code)
            return
        self.logger.log(level, msg, *args, exc_info=exc_info, **kwargs)


class AioServer:
    """aiohttp's low-level server (no router, no middleware: ``handler`` answers every
    request) on host:port (port 0 picks a free one), in a thread of its own: ``start``
    returns once it listens (or raises its OSError), ``stop`` closes every connection. The
    keyword arguments are for tests."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0,
                 name: str = "api", keepalive_timeout_s: float = CHANNEL_TIMEOUT_S) -> None:
        self.handler = handler
        self.name = name
        self.host = host
        self.port = port
        self.keepalive_timeout_s = keepalive_timeout_s
        self.open_files = raise_open_files_limit(open_files_for(CONNECTION_LIMIT))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.ServerRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> AioServer:
        """Serve in a background thread, once listening."""
        self._thread = threading.Thread(target=self._serve, name=f"{self.name}-http",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise OSError(f"{self.name}: not listening after {START_TIMEOUT_S:g} s")
        if self._failed is not None:
            raise self._failed
        LOG.info("%s listening on %s (aiohttp; open files limit %d; connections without a "
                 "complete request closed after %g s, bodies not complete after %g s)",
                 self.name, self.url, self.open_files, self.keepalive_timeout_s,
                 REQUEST_TIMEOUT_S)
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # noqa: BLE001  (handed to start())
            self._failed = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _listen(self) -> None:
        server = web.Server(self.handler, access_log=None,
                            keepalive_timeout=self.keepalive_timeout_s,
                            max_line_size=MAX_LINE_BYTES, max_field_size=MAX_FIELD_BYTES,
                            max_headers=MAX_HEADERS, lingering_time=LINGERING_TIME_S,
                            logger=QuietLog(LOG, {"name": self.name}))
        runner = web.ServerRunner(server, handle_signals=False,
                                  shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=BACKLOG, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = _port_of(runner.addresses)

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None or loop.is_closed():
            return
        try:  # stops listening, closes every connection
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(STOP_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001  (stopping: say so and go on)
            LOG.warning("%s: stopping its HTTP server: %s", self.name, exc)
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # closed already
            pass
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)


def _port_of(addresses: list[Any]) -> int:
    return int(addresses[0][1])
