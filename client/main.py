"""``doctor``: the project's command line (the run, benchmarks, test hosts, config docs).

``doctor service ...`` (and later families of OpenStack-style commands) is handed to the cliff
app in ``client.shell``, for cliff's output formats.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from doctor import logs

# The command families handed to the cliff app in client.shell (its FAMILIES; kept here so
# that `doctor run` need not import cliff).
SHELL_FAMILIES = {
    "service": "the service list: `doctor service list [-f json|yaml|csv|table|value] "
               "[-c COLUMN]` (every running Doctor process); `doctor service list --help`",
    "vim": "VIMs and their monitoring: `doctor vim register --config-file F NAME`, "
           "`vim list [--name N]`, `vim show|update|delete ID|NAME` (-f, -c as service list); "
           "talks to doctor-vim (--vim-url; the token in DOCTOR_VIM_TOKEN)",
}


# `doctor bench NAME`: the module that adds its arguments and runs it, and its help.
BENCHMARKS = {
    "detect": ("bench.detect", "fault-to-detection latency and probe CPU cost on namespaced "
                               "hosts (needs root)"),
    "notify": ("bench.notify", "host down at the inspector -> every consumer notified, at 1 "
                               "to 1000 VMs, shortcut and conservative paths (no root needed)"),
    "membership": ("bench.membership", "the service list's cost (heartbeat CPU per process, "
                                       "Redis traffic) and how fast a killed process leaves it "
                                       "(no root needed)"),
    "takeover": ("bench.takeover", "monitors sharing targets: time until a monitor killed "
                                   "with -9 has its targets probed by the others (needs root)"),
    "vim": ("bench.vim", "VIM monitoring at scale: register rate, CPU per second of "
                         "monitoring, resume after kill -9, with 10,000 VIMs on namespaced "
                         "addresses (needs root)"),
    "consumer": ("bench.consumer_cost", "the sample consumer's CPU per alarm POST and wall "
                                        "time of a batch, per HTTP server (aiohttp, "
                                        "waitress; no root needed)"),
    "slowclients": ("bench.slowclients", "each part's API while 1,000 slow or idle "
                                         "connections are open to it: connections held, "
                                         "latency of normal requests (no root needed but for "
                                         "the VIM server)"),
}


def _add_module_command(commands: Any, name: str, module: str, text: str) -> None:
    """A subcommand whose module has ``add_arguments(parser)`` and ``run(args)``."""
    implementation = importlib.import_module(module)
    parser = commands.add_parser(name, help=text)
    implementation.add_arguments(parser)
    parser.set_defaults(func=implementation.run)


def _config_doc(_args: argparse.Namespace) -> int:
    from consumer.config import ConsumerConfig
    from controller.config import ControllerConfig
    from doctor.config import doc_table
    from inspector.config import InspectorConfig
    from monitor.config import MonitorConfig
    from notifier.config import NotifierConfig
    from vim.config import VimConfig

    roles = [(MonitorConfig, "monitor"), (InspectorConfig, "inspector"),
             (ControllerConfig, "controller"), (NotifierConfig, "notifier"),
             (ConsumerConfig, "consumer"), (VimConfig, "vim")]
    print("\n\n".join(doc_table(cls, section) for cls, section in roles))
    from consumer import policies as consumer_policies
    from controller import policies as controller_policies
    from doctor.policy import sample
    from inspector import policies as inspector_policies
    from notifier import policies as notifier_policies
    from vim import policies as vim_policies

    print("\n\nPolicy rules of auth_strategy = keystone (oslo.policy; a part's policy_file "
          "overrides them by name):")
    for name, module in [("inspector", inspector_policies), ("controller", controller_policies),
                         ("notifier", notifier_policies), ("consumer", consumer_policies),
                         ("vim", vim_policies)]:
        print(f"\n`[{name}]`\n\n{sample(module.RULES)}")
    return 0


def _hosts(args: argparse.Namespace) -> int:
    from testkit import hosts as testhosts

    return testhosts.main(args.rest)


def _command_index(argv: list[str]) -> int:
    """Where the command is in ``argv`` (after doctor's own options)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] == "--log-level" else 1
    return i


def _shell_argv(argv: list[str]) -> list[str] | None:
    """The cliff app's arguments when ``argv`` names one of its families, else None."""
    i = _command_index(argv)
    if i >= len(argv) or argv[i] not in SHELL_FAMILIES:
        return None
    rest = argv[i + 1:]
    if not rest or rest[0] in ("-h", "--help"):
        return ["--help"]  # the cliff app's help lists its commands
    return [argv[i], *rest]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="doctor", description="Doctor fault management: tools around the pipeline.")
    parser.add_argument("--log-level", default="WARNING", choices=logs.LEVELS, type=str.upper)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser("bench", help="measure the pipeline (prints a table and JSON)")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for name, (module, text) in BENCHMARKS.items():
        _add_module_command(benches, name, module, text)
    _add_module_command(commands, "run", "scenario.fault_management",
                        "the fault-management case on namespaced test hosts: inject a host "
                        "failure, report the notification time and profile (needs root)")

    hosts = commands.add_parser(
        "hosts", add_help=False,
        help="create test hosts (network namespaces), inject faults, clean up; "
             "`doctor hosts --help` for details")
    hosts.add_argument("rest", nargs=argparse.REMAINDER)
    hosts.set_defaults(func=_hosts)

    # Listed here for `doctor --help`; main() hands these to the cliff app before parsing.
    for family, text in SHELL_FAMILIES.items():
        commands.add_parser(family, add_help=False, help=text)

    doc = commands.add_parser("config-doc", help="print the options of every role as "
                                                 "Markdown tables")
    doc.set_defaults(func=_config_doc)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    shell_argv = _shell_argv(argv)
    if shell_argv is not None:  # cliff parses these itself (and sets up logging: -v, --debug)
        from client import shell

        return shell.main(shell_argv)
    i = _command_index(argv)
    if i < len(argv) and argv[i] == "hosts":  # its own parser, its own --help
        args = build_parser().parse_args([*argv[:i], "hosts"])
        logs.setup(args.log_level)
        args.rest = argv[i + 1:]
        return args.func(args)
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
