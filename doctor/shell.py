"""The OpenStack-style commands of ``doctor`` (cliff): ``doctor service list`` and, later, more.

``doctor`` itself is argparse (run, bench, hosts, config-doc); it hands ``doctor service ...``
to the cliff app here, so these commands get cliff's output options (``-f json|yaml|csv|
table|value``, ``-c COLUMN``) as the OpenStack clients do. New command families join by adding
their commands to ``COMMANDS`` and their first word to ``FAMILIES``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cliff.app import App
from cliff.commandmanager import CommandManager
from cliff.lister import Lister

from doctor import coordination

DEFAULT_INSPECTOR_URL = "http://127.0.0.1:12345"


class CommandFailed(Exception):
    """What a command could not do, said in one line (cliff prints it, exit status 1)."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


class ServiceList(Lister):
    """List the running Doctor processes (monitors, inspectors, notifier, consumer, ...).

    Reads the Inspector's GET /v1/services, or with --coordination-url the coordination
    backend itself. A process that died is gone within its heartbeat timeout (3 s by default).
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--inspector-url", metavar="URL",
            default=os.environ.get("DOCTOR_INSPECTOR_URL", DEFAULT_INSPECTOR_URL),
            help="the Inspector's base URL (env DOCTOR_INSPECTOR_URL; default "
                 f"{DEFAULT_INSPECTOR_URL})")
        parser.add_argument(
            "--token", default=os.environ.get("DOCTOR_INSPECTOR_TOKEN", ""),
            help="the Inspector's token, sent as X-Auth-Token (env DOCTOR_INSPECTOR_TOKEN)")
        parser.add_argument(
            "--coordination-url", metavar="URL",
            default=os.environ.get("DOCTOR_COORDINATION_URL", ""),
            help="read the coordination backend directly instead of asking the Inspector, "
                 "e.g. redis://127.0.0.1:6379 or file:///var/lib/doctor/coordination "
                 "(env DOCTOR_COORDINATION_URL)")
        parser.add_argument(
            "--heartbeat-timeout-s", type=_positive_float,
            default=coordination.DEFAULT_HEARTBEAT_TIMEOUT_S,
            help="with --coordination-url: the processes' heartbeat timeout, s (default "
                 "%(default)s)")
        parser.add_argument("--timeout-s", type=_positive_float, default=10.0,
                            help="timeout of the request to the Inspector, s (default "
                                 "%(default)s)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple[str, ...], list]:
        try:
            if parsed_args.coordination_url:
                rows = self._from_backend(parsed_args)
            else:
                rows = self._from_inspector(parsed_args)
        except CommandFailed as exc:
            raise CommandFailed(f"doctor service list: error: {exc}") from None
        return coordination.COLUMNS, [tuple(row[c] for c in coordination.COLUMNS)
                                      for row in rows]

    @staticmethod
    def _from_backend(parsed_args: argparse.Namespace) -> list[dict[str, Any]]:
        try:
            coordination.parse_url(parsed_args.coordination_url)
            return coordination.list_services(parsed_args.coordination_url,
                                              parsed_args.heartbeat_timeout_s)
        except (coordination.CoordinationError, ValueError) as exc:
            raise CommandFailed(str(exc)) from None

    @staticmethod
    def _from_inspector(parsed_args: argparse.Namespace) -> list[dict[str, Any]]:
        from doctor.http import HttpClient, HttpError

        base = parsed_args.inspector_url.rstrip("/")
        client = HttpClient(parsed_args.timeout_s, token=parsed_args.token)
        try:
            answer = client.get(base + "/v1/services")
        except HttpError as exc:
            raise CommandFailed(f"cannot reach the Inspector at {base}: {exc.reason}") from None
        finally:
            client.close()
        try:
            body = answer.json()
        except ValueError:
            body = None
        if not answer.ok:
            error = body.get("error") if isinstance(body, dict) else answer.text[:200]
            raise CommandFailed(f"{error} (the Inspector at {base} answered "
                                f"{answer.status})")
        if not isinstance(body, list) or not all(
                isinstance(row, dict) and set(coordination.COLUMNS) <= set(row) for row in body):
            raise CommandFailed(f"the Inspector at {base} answered something that is not a "
                                "service list")
        return body


# Command name -> class; the first word of each name is a family ``doctor`` hands over here.
COMMANDS: dict[str, type] = {"service list": ServiceList}
FAMILIES = sorted({name.split()[0] for name in COMMANDS})


class DoctorShell(App):
    """The cliff app behind ``doctor service ...``."""

    def __init__(self) -> None:
        manager = CommandManager("doctor.shell", convert_underscores=True)
        for name, command in COMMANDS.items():
            manager.add_command(name, command)
        from importlib.metadata import PackageNotFoundError, version

        try:
            release = version("doctor-fm")
        except PackageNotFoundError:
            release = "unknown"
        super().__init__(description="Doctor fault management: the OpenStack-style commands.",
                         version=release, command_manager=manager, deferred_help=True)

    def interact(self) -> None:
        # No interactive shell: without a command, say what there is.
        self.print_help_if_requested()
        self.parser.print_help(self.stderr)

    def build_option_parser(self, description: str | None, version: str | None,
                            argparse_kwargs: dict[str, Any] | None = None,
                            ) -> argparse.ArgumentParser:
        return super().build_option_parser(description, version,
                                           {**(argparse_kwargs or {}), "prog": "doctor"})


def main(argv: list[str] | None = None) -> int:
    """Run one command, e.g. ``["service", "list", "-f", "json"]``; its exit status."""
    return DoctorShell().run(sys.argv[1:] if argv is None else argv)
