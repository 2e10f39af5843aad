"""Serving the parts' Flask apps with a production WSGI server (waitress), never Flask's own.

One way for every role: ``HttpServer(app, host, port).start()`` serves in a thread; a
daemon's ``main()`` hands it to ``doctor.daemon.Daemon``, which serves until SIGTERM.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

LOG = logging.getLogger(__name__)


class HttpServer:
    """A waitress server for ``app`` on host:port (port 0 picks a free one)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 threads: int = 8, name: str = "api") -> None:
        self.name = name
        # clear_untrusted_proxy_headers: we sit behind no proxy we trust.
        self._server = create_server(app, host=host, port=port, threads=threads,
                                     clear_untrusted_proxy_headers=True, ident=name,
                                     channel_timeout=30)
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
        LOG.info("%s listening on %s", self.name, self.url)
        return self

    def stop(self) -> None:
        self._server.close()
        # close() only stops listening; open client connections would keep waitress's loop
        # (and this join) alive for up to a 5 s poll, so they are closed too.
        wasyncore.close_all(self._server._map)
        if self._thread is not None:
            self._thread.join(5)
