"""The OpenStack-style commands of ``doctor`` (cliff): ``doctor service list``, ``doctor vim ...``.

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
from cliff.command import Command
from cliff.commandmanager import CommandManager
from cliff.lister import Lister
from cliff.show import ShowOne

from doctor import config as cfg
from doctor import coordination

DEFAULT_INSPECTOR_URL = "http://127.0.0.1:12345"
DEFAULT_VIM_URL = "http://127.0.0.1:9890"


class CommandFailed(Exception):
    """What a command could not do, said in one line (cliff prints it, exit status 1)."""


class ServiceList(Lister):
    """List the running Doctor processes (monitors, inspectors, notifier, consumer, ...).

    Reads the Inspector's GET /v1/services (its token in the environment variable
    DOCTOR_INSPECTOR_TOKEN, never a flag), or with --coordination-url the coordination
    backend itself. A process that died is gone within its heartbeat timeout (3 s by default).
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--inspector-url", metavar="URL",
            default=os.environ.get("DOCTOR_INSPECTOR_URL", DEFAULT_INSPECTOR_URL),
            help="the Inspector's base URL (env DOCTOR_INSPECTOR_URL; default "
                 f"{DEFAULT_INSPECTOR_URL})")
        cfg.refuse_flag(parser, "--token", "the environment variable DOCTOR_INSPECTOR_TOKEN "
                                           "(the Inspector's token, sent as X-Auth-Token)")
        parser.add_argument(
            "--coordination-url", metavar="URL",
            default=os.environ.get("DOCTOR_COORDINATION_URL", ""),
            help="read the coordination backend directly instead of asking the Inspector, "
                 "e.g. redis://127.0.0.1:6379 or file:///var/lib/doctor/coordination "
                 "(env DOCTOR_COORDINATION_URL)")
        parser.add_argument(
            "--heartbeat-timeout-s", type=cfg.positive_float,
            default=coordination.DEFAULT_HEARTBEAT_TIMEOUT_S,
            help="with --coordination-url: the processes' heartbeat timeout, s (default "
                 "%(default)s)")
        parser.add_argument("--timeout-s", type=cfg.positive_float, default=10.0,
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
        client = HttpClient(parsed_args.timeout_s,
                            token=os.environ.get("DOCTOR_INSPECTOR_TOKEN", ""))
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


# -- doctor vim ... : the VIM server's /v1/vims ----------------------------------------------

VIM_LIST_COLUMNS = ("id", "name", "auth_url", "project_name", "status")
VIM_SHOW_COLUMNS = ("id", "name", "auth_url", "address", "username", "project_name",
                    "project_domain_name", "user_domain_name", "cert_verify", "status",
                    "monitor_id", "status_at", "created_at", "updated_at")
_UUID = __import__("re").compile(r"^[0-9a-fA-F-]{36}$")


class VimApi:
    """The VIM server's REST API as the commands use it; failures are CommandFailed."""

    def __init__(self, parsed_args: argparse.Namespace) -> None:
        from doctor.http import HttpClient

        self.base = parsed_args.vim_url.rstrip("/")
        self.client = HttpClient(parsed_args.timeout_s,
                                 token=os.environ.get("DOCTOR_VIM_TOKEN", ""))

    def call(self, method: str, path: str, json: Any = None,
             params: dict[str, str] | None = None, missing_ok: bool = False) -> Any:
        from doctor.http import HttpError

        try:
            answer = self.client.request(method, self.base + path, json=json, params=params)
        except HttpError as exc:
            raise CommandFailed(f"cannot reach the VIM server at {self.base}: "
                                f"{exc.reason}") from None
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.status == 404 and missing_ok:
            return None
        if not answer.ok:
            error = body.get("error") if isinstance(body, dict) else answer.text[:200]
            raise CommandFailed(f"{error} (the VIM server answered {answer.status})")
        return body

    def find(self, ident: str) -> dict[str, Any]:
        """The VIM with this id, else the one with this name."""
        if _UUID.match(ident):
            found = self.call("GET", f"/v1/vims/{ident}", missing_ok=True)
            if found is not None:
                return found
        matches = self.call("GET", "/v1/vims", params={"name": ident})
        if not matches:
            raise CommandFailed(f"no VIM with id or name {ident!r}")
        return matches[0]

    def close(self) -> None:
        self.client.close()


def _add_vim_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--vim-url", metavar="URL", default=os.environ.get("DOCTOR_VIM_URL", DEFAULT_VIM_URL),
        help=f"the VIM server's base URL (env DOCTOR_VIM_URL; default {DEFAULT_VIM_URL})")
    cfg.refuse_flag(parser, "--token", "the environment variable DOCTOR_VIM_TOKEN (the VIM "
                                       "server's token, sent as X-Auth-Token)")
    parser.add_argument("--timeout-s", type=cfg.positive_float, default=10.0,
                        help="timeout of each request, s (default %(default)s)")


def _vim_file(path: str, partial: bool, command: str) -> dict[str, Any]:
    from vim.spec import VimSpecError, load_config_file

    try:
        return load_config_file(path, partial=partial)
    except VimSpecError as exc:
        raise CommandFailed(f"doctor vim {command}: error: {exc}") from None


def _show(record: dict[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    return VIM_SHOW_COLUMNS, tuple(record.get(c) for c in VIM_SHOW_COLUMNS)


_VIM_ARGUMENT = (("vim",), {"metavar": "ID|NAME"})
_VIM_FILE_HELP = ("YAML: auth_url, username, password, project_name, project_domain_name, "
                  "user_domain_name, cert_verify")


class _VimCommand:
    """What every ``doctor vim`` command shares: the server options, its own ``arguments``
    (``add_argument``'s names and keywords), errors with the verb."""

    verb = ""
    arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = ()

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)  # type: ignore[misc]
        _add_vim_server_options(parser)
        for names, keywords in self.arguments:
            parser.add_argument(*names, **keywords)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        api = VimApi(parsed_args)
        try:
            return self.act(api, parsed_args)
        except CommandFailed as exc:
            text = str(exc)
            if not text.startswith("doctor vim"):
                text = f"doctor vim {self.verb}: error: {text}"
            raise CommandFailed(text) from None
        finally:
            api.close()

    def act(self, api: VimApi, parsed_args: argparse.Namespace) -> Any:
        raise NotImplementedError


class VimRegister(_VimCommand, ShowOne):
    """Register a VIM from a Tacker-style config file; it starts PENDING, then is probed."""

    verb = "register"
    arguments = ((("--config-file",), {"required": True, "metavar": "FILE",
                                       "help": _VIM_FILE_HELP}),
                 (("name",), {"metavar": "NAME", "help": "the VIM's name (unique)"}))

    def act(self, api: VimApi, parsed_args: argparse.Namespace) -> Any:
        values = _vim_file(parsed_args.config_file, partial=False, command=self.verb)
        return _show(api.call("POST", "/v1/vims", json={"name": parsed_args.name, **values}))


class VimList(_VimCommand, Lister):
    """List the registered VIMs and their status."""

    verb = "list"
    arguments = ((("--name",), {"help": "only the VIM with this name"}),)

    def act(self, api: VimApi, parsed_args: argparse.Namespace) -> Any:
        params = {"name": parsed_args.name} if parsed_args.name is not None else None
        rows = api.call("GET", "/v1/vims", params=params)
        return VIM_LIST_COLUMNS, [tuple(r.get(c) for c in VIM_LIST_COLUMNS) for r in rows]


class VimShow(_VimCommand, ShowOne):
    """Show one VIM (never its password)."""

    verb = "show"
    arguments = (_VIM_ARGUMENT,)

    def act(self, api: VimApi, parsed_args: argparse.Namespace) -> Any:
        return _show(api.find(parsed_args.vim))


class VimUpdate(_VimCommand, ShowOne):
    """Change a VIM; a new auth_url restarts its monitoring (new monitor id, PENDING)."""

    verb = "update"
    arguments = ((("--config-file",), {"metavar": "FILE",
                                       "help": "YAML with the keys that change (as for "
                                               "register)"}),
                 (("--name",), {"dest": "new_name", "metavar": "NEW_NAME", "help": "rename it"}),
                 _VIM_ARGUMENT)

    def act(self, api: VimApi, parsed_args: argparse.Namespace) -> Any:
        values: dict[str, Any] = {}
        if parsed_args.config_file:
            values.update(_vim_file(parsed_args.config_file, partial=True, command=self.verb))
        if parsed_args.new_name is not None:
            values["name"] = parsed_args.new_name
        if not values:
            raise CommandFailed("nothing to change: give --config-file FILE or --name")
        record = api.find(parsed_args.vim)
        return _show(api.call("PATCH", f"/v1/vims/{record['id']}", json=values))


class VimDelete(_VimCommand, Command):
    """Delete a VIM; its monitoring stops."""

    verb = "delete"
    arguments = (_VIM_ARGUMENT,)

    def act(self, api: VimApi, parsed_args: argparse.Namespace) -> int:
        record = api.find(parsed_args.vim)
        api.call("DELETE", f"/v1/vims/{record['id']}")
        self.app.stdout.write(f"Deleted VIM {record['name']} ({record['id']})\n")
        return 0


# Command name -> class; the first word of each name is a family ``doctor`` hands over here.
COMMANDS: dict[str, type] = {"service list": ServiceList, "vim register": VimRegister,
                             "vim list": VimList, "vim show": VimShow,
                             "vim update": VimUpdate, "vim delete": VimDelete}
FAMILIES = sorted({name.split()[0] for name in COMMANDS})


class DoctorShell(App):
    """The cliff app behind ``doctor service ...`` and ``doctor vim ...``."""

    def __init__(self) -> None:
        manager = CommandManager("client.shell", convert_underscores=True)
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
