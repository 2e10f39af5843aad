"""A real HTTP endpoint recording Doctor events: the stand-in Inspector of tests and benches."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1:port (a free one by default), the base of the
    tests' stand-ins; ``serve(Handler)`` starts it in a thread."""

    request_queue_size = 5  # the listen backlog

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        server_class = type("Server", (ThreadingHTTPServer,),
                            {"allow_reuse_address": True,
                             "request_queue_size": self.request_queue_size})
        self._server = server_class(("127.0.0.1", self.port), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class EventSink(LoopbackServer):
    """Listens on 127.0.0.1:port; answers each PUT/POST /events with ``status``."""

    def __init__(self, port: int = 0, status: int = 202) -> None:
        super().__init__(port)
        self.status = status
        self.requests: list[tuple[float, list]] = []  # (receive time, body as sent)

    def start(self) -> EventSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with sink.lock:
                    sink.requests.append((time.time(), body if isinstance(body, list)
                                          else [body]))
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT

            def log_message(self, *args):
                pass

        self.serve(Handler)
        return self

    def events(self, type_: str | None = None, hostname: str | None = None) -> list[dict]:
        with self.lock:
            found = [e for _, body in self.requests for e in body]
        return [e for e in found if (type_ is None or e["type"] == type_)
                and (hostname is None or e["details"]["hostname"] == hostname)]

    def wait_for(self, type_: str, hostname: str, count: int = 1,
                 timeout_s: float = 5.0) -> list[dict]:
        """The events once ``count`` of them arrived; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.events(type_, hostname)
            if len(found) >= count:
                return found
            time.sleep(0.01)
        raise AssertionError(f"no {type_} for {hostname} within {timeout_s} s; "
                             f"got {self.events()}")
