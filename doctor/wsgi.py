"""Serving the parts' Flask apps with a production WSGI server (waitress), never Flask's own.

One way for every role: ``HttpServer(app, host, port).start()`` serves in a thread; a
daemon's ``main()`` hands it to ``doctor.daemon.Daemon``, which serves until SIGTERM.

Slow and idle clients
---------------------
waitress reads requests in one event loop (``wasyncore``) and hands a request to a worker
thread only once it is complete, headers and body (``HTTPChannel.received`` calls
``server.add_task`` only when the parser says ``completed``); a worker writes the answer into
the connection's buffer and is free again, and the loop sends it. So a client that sends
slowly, or not at all, costs a connection (a socket and a few kilobytes), never a thread: what
bounds slow clients is the number of connections the loop holds. waitress's default is 100
(``connection_limit``), which 110 slow connections used up: the Inspector then accepted no
monitor's event. Every setting below is therefore chosen here, on purpose:

- ``CONNECTION_LIMIT`` 4096 client connections (waitress counts its listening socket and its
  wake-up pipe too, so it is given 4098). Past it waitress stops accepting; new connections
  wait in the listen backlog. The issue's goal is 1,000 slow connections with every API
  still answering within 1 s; 4096 leaves four times that. The loop's cost grows with the
  count: it walks every connection once per wake-up.
- ``asyncore_use_poll`` True: ``select()`` cannot watch a file descriptor numbered 1024 or
  more (``FD_SETSIZE``), and Python's raises ``ValueError`` on one, which would end the
  loop; ``poll()`` has no such limit.
- The open-files limit: each connection needs one descriptor, and up to three when a
  request body or an answer spills to a temporary file (below). At start the process's
  ``RLIMIT_NOFILE`` soft limit is raised toward the hard limit, to
  ``3 * CONNECTION_LIMIT + RESERVED_FILES`` (12,544), and the result is logged. If the hard
  limit is lower, the connection limit is lowered to fit it, with a warning: waitress's
  ``accept()`` failing with EMFILE would spin the loop, not wait.
- ``channel_timeout`` 30 s: a connection with no complete request and no bytes for 30 s is
  closed (an idle keep-alive connection, or one that never sends). Our clients reconnect.
- ``REQUEST_TIMEOUT_S`` 30 s, doctor's own (waitress has no read deadline): a request whose
  first byte came 30 s ago and that is still not complete is closed. ``channel_timeout``
  alone never closes a client that sends one header line every 3 s, since every byte counts
  as activity; with this deadline no connection holds its slot for more than about 35 s
  without a complete request. A request is small (1 MB at most) on a data-centre network.
- ``cleanup_interval`` 5 s (waitress: 30 s): how often both timeouts are checked, so a
  connection is closed 30–35 s after it went quiet or late, not 30–60 s.
- ``backlog`` 1024 (the kernel caps it at ``net.core.somaxconn``, 4096 on current Linux):
  connections the kernel completes but the server has not accepted yet, during a burst or
  past the connection limit.
- ``max_request_header_size`` 32 KiB (waitress: 256 KiB): our requests' headers are a few
  hundred bytes (a Keystone Fernet token is under 255); it bounds what a connection that
  never finishes its headers can make the loop buffer.
- ``max_request_body_size`` 2 MiB (waitress: 1 GiB): above the APIs' own body limit (1 MB
  by default), so a body between the two gets the API's 413 with a JSON error, and
  waitress's plain 413 is only the backstop: no body past 2 MiB is ever buffered, whatever
  an app's limit.
- ``inbuf_overflow`` 512 KiB: a request body past it goes to a temporary file instead of
  memory. The largest body of the hot path (the Inspector's one publish of 1,000 VM errors
  to the Notifier, about 390 KB) stays in memory.
- ``outbuf_overflow`` 1 MiB and ``outbuf_high_watermark`` 16 MiB (waitress's defaults): an
  answer past 1 MiB is buffered in a temporary file; a worker thread waits for a client that
  does not read only when more than 16 MiB of its answer is pending, which no answer of ours
  reaches, so a slow reader does not hold a worker either.
- ``threads`` per role (8; the Notifier 16): workers only ever see complete requests.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer

LOG = logging.getLogger(__name__)

CONNECTION_LIMIT = 4096
CHANNEL_TIMEOUT_S = 30
REQUEST_TIMEOUT_S = 30.0
CLEANUP_INTERVAL_S = 5
BACKLOG = 1024
MAX_REQUEST_HEADER_BYTES = 32 * 1024
MAX_REQUEST_BODY_BYTES = 2 * 1024 * 1024
INBUF_OVERFLOW_BYTES = 512 * 1024
OUTBUF_OVERFLOW_BYTES = 1024 * 1024
OUTBUF_HIGH_WATERMARK_BYTES = 16 * 1024 * 1024
FILES_PER_CONNECTION = 3  # the socket, a body's and an answer's temporary files
RESERVED_FILES = 256  # the rest of the process: databases, logs, outgoing connections
_WAITRESS_OWN = 2  # the listening socket and the wake-up pipe count in waitress's limit


def open_files_for(connections: int) -> int:
    """The open-files soft limit that ``connections`` need at worst."""
    return FILES_PER_CONNECTION * connections + RESERVED_FILES


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit toward ``wanted`` (at most the hard
    limit; never lowered); the soft limit then in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted if soft == resource.RLIM_INFINITY else soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target <= soft:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        LOG.warning("could not raise the open files soft limit from %d to %d: %s", soft,
                    target, exc)
        return soft
    LOG.info("open files soft limit raised from %d to %d (hard limit %s)", soft, target,
             "unlimited" if hard == resource.RLIM_INFINITY else hard)
    return target


def connections_within(open_files: int, wanted: int) -> int:
    """The connection limit that ``open_files`` allows, at most ``wanted`` (at least 1)."""
    return max(1, min(wanted, (open_files - RESERVED_FILES) // FILES_PER_CONNECTION))


class _TimedParser(HTTPRequestParser):
    """waitress's request parser, noting when the request's first bytes came."""

    def __init__(self, adj: Any) -> None:
        super().__init__(adj)
        self.first_byte_at = time.monotonic()


class _Channel(HTTPChannel):
    parser_class = _TimedParser


class _Server(TcpWSGIServer):
    """waitress's TCP server, which also closes connections whose request is not complete
    ``request_timeout_s`` after its first byte (waitress itself closes only idle ones)."""

    channel_class = _Channel
    request_timeout_s = REQUEST_TIMEOUT_S
    late_closed = 0  # connections closed for a late request, so far

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle connections: channel_timeout
        cutoff = time.monotonic() - self.request_timeout_s
        late = 0
        for channel in list(self.active_channels.values()):
            request = channel.request
            if (request is not None and not channel.requests and not channel.will_close
                    and getattr(request, "first_byte_at", cutoff) < cutoff):
                channel.will_close = True
                late += 1
        if late:
            self.late_closed += late
            LOG.info("%s: closed %d connections whose request was not complete after %g s",
                     self.adj.ident, late, self.request_timeout_s)


class HttpServer:
    """A waitress server for ``app`` on host:port (port 0 picks a free one), with the limits
    and timeouts of this module's docstring (the keyword arguments are for tests)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 threads: int = 8, name: str = "api", connection_limit: int = CONNECTION_LIMIT,
                 channel_timeout_s: int = CHANNEL_TIMEOUT_S,
                 request_timeout_s: float = REQUEST_TIMEOUT_S,
                 cleanup_interval_s: int = CLEANUP_INTERVAL_S) -> None:
        self.name = name
        self.open_files = raise_open_files_limit(open_files_for(connection_limit))
        self.connection_limit = connections_within(self.open_files, connection_limit)
        if self.connection_limit < connection_limit:
            LOG.warning("%s: the open files limit (%d) allows %d connections, not %d; raise "
                        "the hard limit (LimitNOFILE= in the systemd unit) to at least %d",
                        name, self.open_files, self.connection_limit, connection_limit,
                        open_files_for(connection_limit))
        adj = Adjustments(
            host=host, port=port, threads=threads, ident=name,
            # we sit behind no proxy we trust
            clear_untrusted_proxy_headers=True,
            connection_limit=self.connection_limit + _WAITRESS_OWN,
            asyncore_use_poll=True, channel_timeout=channel_timeout_s,
            cleanup_interval=cleanup_interval_s, backlog=BACKLOG,
            max_request_header_size=MAX_REQUEST_HEADER_BYTES,
            max_request_body_size=MAX_REQUEST_BODY_BYTES,
            inbuf_overflow=INBUF_OVERFLOW_BYTES, outbuf_overflow=OUTBUF_OVERFLOW_BYTES,
            outbuf_high_watermark=OUTBUF_HIGH_WATERMARK_BYTES)
        self._server = _Server(app, adj=adj)  # the first address of host, as create_server
        self._server.request_timeout_s = request_timeout_s
        self.host = host
        self.port = self._server.effective_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> HttpServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.run, name=f"{self.name}-http",
                                        daemon=True)
        self._thread.start()
        adj = self._server.adj
        LOG.info("%s listening on %s (up to %d connections, open files limit %d; idle ones "
                 "closed after %d s, incomplete requests after %g s)", self.name, self.url,
                 self.connection_limit, self.open_files, adj.channel_timeout,
                 self._server.request_timeout_s)
        return self

    def stop(self) -> None:
        self._server.close()
        # close() only stops listening; open client connections would keep waitress's loop
        # (and this join) alive for up to a 5 s poll, so they are closed too.
        wasyncore.close_all(self._server._map)
        if self._thread is not None:
            self._thread.join(5)
