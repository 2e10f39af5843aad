"""``doctor-controller``: the embedded Controller's daemon (``serve``) and its client commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable

from controller.base import VM_STATES, ControllerError
from controller.client import ControllerClient
from controller.config import ControllerConfig
from doctor import config as cfg
from doctor import keystone, logs
from doctor.daemon import Daemon
from doctor.tables import table

LOG = logging.getLogger(__name__)
PROG = "doctor-controller"
DEFAULT_URL = "http://127.0.0.1:12347"
SERVER_COLUMNS = ("id", "name", "project_id", "host", "state")

EXAMPLES = f"""\
examples:
  doctor-controller serve --database sqlite:////tmp/controller.db \\
      --notify-urls http://127.0.0.1:12348,http://127.0.0.1:12345
  doctor-controller boot --host compute-1 --project demo vnf --count 3
  doctor-controller list --host compute-1
  doctor-controller force-down compute-1
  doctor-controller reset-state 6f1c... --state error

client commands talk to --url (env DOCTOR_CONTROLLER_URL, default {DEFAULT_URL}) with the
token in the environment variable DOCTOR_CONTROLLER_TOKEN (never a flag: ps shows flags).

config file (INI; every serve option also goes in [controller]; the token only there or in
DOCTOR_CONTROLLER_TOKEN):
  [controller]
  port = 12347
  token = <a long random string>
  database = sqlite:////var/lib/doctor/controller.db
  notify_urls = http://notifier:12348
"""


# -- the daemon ----------------------------------------------------------------------------


def serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Serve the REST API over the inventory until SIGTERM."""
    daemon = Daemon(parser, args=args)
    config = daemon.load(ControllerConfig, "controller")
    # Imported here so that the client commands stay quick to start.
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from controller.api import create_app
    from controller.embedded import Inventory
    from doctor.config import ConfigError
    from doctor.openstack import outgoing_token
    from doctor.store import make_engine
    from notifier.http import HttpPublisher

    try:  # one token source for every receiver
        token = outgoing_token("controller", config.keystone_cloud, config.notify_token)
    except ConfigError as exc:
        daemon.fail(2, str(exc))
    publishers = [HttpPublisher(url, token) for url in config.notify_urls]
    try:
        engine = make_engine(config.database)
        daemon.on_stop(engine.dispose)
        inventory = Inventory(engine, publishers)
    except ArgumentError as exc:
        daemon.fail(2, f"[controller] database: {exc}")
    except (OSError, ImportError, SQLAlchemyError, ControllerError) as exc:
        # ImportError: the URL names a database whose driver is not installed.
        daemon.fail(1, f"[controller] database: cannot open it: {exc}")
    daemon.on_stop(inventory.close)
    daemon.listen(create_app(inventory, config.token, config.auth_strategy,
                             keystone.settings_of(config)), config.host,
                  config.port, name="controller")
    LOG.info("inventory in %s; events to %s", engine.url.render_as_string(hide_password=True),
             ", ".join(config.notify_urls) or "nobody")
    daemon.register("Controller", config)
    return daemon.run()


# -- client commands -------------------------------------------------------------------------


def boot(client: ControllerClient, args: argparse.Namespace) -> int:
    # Nova names the servers of a multiple boot NAME-1, NAME-2, ...
    names = [args.name] if args.count == 1 else [f"{args.name}-{i}"
                                                 for i in range(1, args.count + 1)]
    for name in names:
        print(client.create_server(name, args.project, args.host).id, flush=True)
    return 0


def list_servers(client: ControllerClient, args: argparse.Namespace) -> int:
    found = client.list_servers(args.host)
    if args.format == "json":
        print(json.dumps([s.to_dict() for s in found], indent=2))
    else:
        print(table(SERVER_COLUMNS, [[getattr(s, c) for c in SERVER_COLUMNS] for s in found]))
    return 0


def show(client: ControllerClient, args: argparse.Namespace) -> int:
    details = {**client.get_server(args.id).to_dict(),
               "host_status": client.host_status(args.id)}
    if args.format == "json":
        print(json.dumps(details, indent=2))
    else:
        print(table(("field", "value"), list(details.items())))
    return 0


def delete(client: ControllerClient, args: argparse.Namespace) -> int:
    client.delete_server(args.id)
    return 0


def reset_state(client: ControllerClient, args: argparse.Namespace) -> int:
    client.reset_state(args.id, args.state)
    return 0


def migrate(client: ControllerClient, args: argparse.Namespace) -> int:
    client.migrate_server(args.id, args.host)
    return 0


def force_down(client: ControllerClient, args: argparse.Namespace) -> int:
    client.force_down(args.host, down=not args.up)
    return 0


def host_status(client: ControllerClient, args: argparse.Namespace) -> int:
    print(client.host_status(args.id))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="The embedded Controller (a tiny Nova: hosts and VMs): run it, "
                               "or drive a running one.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    daemon = commands.add_parser("serve", help="run the Controller's REST API (the daemon)")
    cfg.add_common_flags(daemon, ControllerConfig, "controller")
    daemon.set_defaults(func=None)

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--url", default=os.environ.get("DOCTOR_CONTROLLER_URL", DEFAULT_URL),
                        help="the Controller's base URL (env DOCTOR_CONTROLLER_URL; "
                             "default %(default)s)")
    cfg.refuse_flag(remote, "--token", "the environment variable DOCTOR_CONTROLLER_TOKEN")
    remote.add_argument("--timeout-s", type=cfg.positive_float, default=10.0,
                        help="timeout of each request, s (default %(default)s)")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("-f", "--format", choices=("table", "json"), default="table")

    def command(name: str, func: Callable[[ControllerClient, argparse.Namespace], int],
                help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, parents=[remote, *parents])
        sub.set_defaults(func=func)
        return sub

    sub = command("boot", boot, "create servers (prints their ids)")
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--host", required=True, help="compute host (created on first use)")
    sub.add_argument("--project", required=True, help="project (tenant) id")
    sub.add_argument("--count", type=cfg.positive_int, default=1,
                     help="how many; they are named NAME-1..NAME-N (default 1)")
    sub = command("list", list_servers, "list servers", output)
    sub.add_argument("--host", help="only the servers on this host")
    command("show", show, "one server, with its host_status", output).add_argument("id")
    command("delete", delete, "delete a server").add_argument("id")
    sub = command("reset-state", reset_state, "set a server's vm_state (Nova's reset-state)")
    sub.add_argument("id")
    sub.add_argument("--state", default="error", choices=VM_STATES, metavar="STATE",
                     help=f"one of {', '.join(VM_STATES)} (default error)")
    sub = command("migrate", migrate, "move a server to another host")
    sub.add_argument("id")
    sub.add_argument("--host", required=True, help="the destination host")
    sub = command("force-down", force_down, "mark a host's compute service forced down")
    sub.add_argument("host", metavar="HOST")
    sub.add_argument("--up", action="store_true", help="clear forced down instead")
    command("host-status", host_status, "UP, DOWN or UNKNOWN: the state of a server's host"
            ).add_argument("id")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.func is None:
        return serve(parser, args)
    logs.setup("WARNING")
    client = ControllerClient(args.url, os.environ.get("DOCTOR_CONTROLLER_TOKEN", ""),
                              timeout_s=args.timeout_s)
    try:
        return args.func(client, args)
    except ControllerError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
