"""The start-up skeleton every daemon's ``main()`` follows, in one order.

1. parse the flags, set up logging and load the config (a bad value: exit 2, field named);
2. build the role's parts; each part that has started registers how it stops
   (``on_stop``), and a part that cannot start ends the process with a message
   (``fail``: exit 1, after stopping what had started);
3. listen for HTTP (``listen``), if the role serves an API: its request bodies are limited to
   the config's ``max_body_bytes`` (``doctor.config.body_limit_option``);
4. join the service list (``register``);
5. run until SIGTERM or Ctrl-C (or ``--duration-s``), then stop the HTTP server and
   every part, the last started first (``run``).

So every role starts, fails and stops the same way, and ``main()`` says only what is its
own::

    daemon = Daemon(build_parser(), argv)
    config = daemon.load(InspectorConfig, "inspector")
    service = build_service(config)
    service.start()
    daemon.on_stop(service.stop)
    daemon.listen(create_app(service), config.host, config.port, name="inspector")
    daemon.register("InspectorWorker worker(0)", config)
    return daemon.run()
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from doctor import config as cfg
from doctor import coordination
from doctor.signals import wait_for_stop
from doctor.wsgi import HttpServer

LOG = logging.getLogger(__name__)
T = TypeVar("T")


def daemon_parser(prog: str, config: type, description: str, epilog: str = "",
                  duration: bool = False, section: str = "") -> argparse.ArgumentParser:
    """A daemon's flags: ``--config-file``, ``--log-level``, one per option of ``config``
    (its secrets have none: ``section``, by default ``prog`` without ``doctor-``, names
    their environment variables) and, with ``duration``, ``--duration-s`` (stop by
    itself)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if duration:
        parser.add_argument("--duration-s", type=float, default=None,
                            help="stop by itself after this many seconds (default: run until "
                                 "SIGTERM or Ctrl-C)")
    cfg.add_common_flags(parser, config, section or prog.removeprefix("doctor-"))
    return parser


class Daemon:
    """One role's process: its flags, its config, what it started, and how it stops."""

    def __init__(self, parser: argparse.ArgumentParser, argv: list[str] | None = None,
                 args: argparse.Namespace | None = None) -> None:
        """Parses ``argv`` with ``parser``, unless the caller has parsed them (``args``)."""
        self.parser = parser
        self.prog = parser.prog
        self.args = args if args is not None else parser.parse_args(argv)
        self.server: HttpServer | None = None
        self.config: Any = None
        self._stops: list[Callable[[], Any]] = []

    def load(self, cls: type[T], section: str) -> T:
        """The config of ``section``: defaults, the config file, the environment's secrets,
        then the flags (logging is set up first); a bad value exits with status 2 and names
        the field (so does ``auth_strategy = token`` without a token). With ``auth_strategy
        = noauth`` a warning says that the API answers anyone."""
        self.config = cfg.from_args(self.parser, self.args, cls, section)
        if getattr(self.config, "auth_strategy", None) == cfg.NOAUTH:
            LOG.warning("[%s] auth_strategy = noauth: the API answers anyone, without a "
                        "token; use it on a closed test machine only", section)
        return self.config

    def fail(self, status: int, message: str) -> NoReturn:
        """Stop what has started, then exit with ``status`` and ``prog: error: message``."""
        self._stop_parts()
        self.parser.exit(status, f"{self.prog}: error: {message}\n")

    def on_stop(self, stop: Callable[[], Any]) -> None:
        """Call ``stop`` at the end; the parts stop in the reverse order of their calls."""
        self._stops.append(stop)

    def listen(self, app: Any, host: str, port: int, what: str = "", **kwargs: Any) -> HttpServer:
        """An HTTP server for ``app`` (it serves from ``run``); a port that cannot be bound
        fails the start (``what`` prefixes the message, e.g. ``[notifier] host/port: ``).

        A loaded config with ``max_body_bytes`` sets the app's request-body limit."""
        limit = getattr(self.config, "max_body_bytes", None)
        if limit is not None:
            from doctor.api import limit_body

            limit_body(app, limit)
        try:
            self.server = HttpServer(app, host, port, **kwargs)
        except OSError as exc:
            self.fail(1, f"{what}cannot listen on {host}:{port}: {exc.strerror or exc}")
        return self.server

    def register(self, name: str, config: Any) -> None:
        """Join the service list (``config.coordination_url``) as ``name`` until the end."""
        self.on_stop(coordination.register(name, config).stop)

    def run(self, duration_s: float | None = None) -> int:
        """Serve until SIGTERM or SIGINT (or ``duration_s``), then stop everything; 0."""
        if self.server is not None:
            self.server.start()
        wait_for_stop(duration_s)
        if self.server is not None:
            LOG.info("%s stopping", self.server.name)
            self.server.stop()
        self._stop_parts()
        return 0

    def _stop_parts(self) -> None:
        while self._stops:
            self._stops.pop()()
