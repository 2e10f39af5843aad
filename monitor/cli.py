"""``doctor-monitor``: watch hosts with raw ICMP and report them to the Inspector."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable

from doctor import config as cfg
from doctor import logs
from doctor.daemon import Daemon, daemon_parser
from monitor.config import MonitorConfig, Target
from monitor.icmp import RawSocketPermissionError

LOG = logging.getLogger("monitor")

EXAMPLES = """\
examples:
  doctor-monitor --target compute-1=198.18.0.10 --target compute-2=198.18.0.11 \\
      --inspector-url http://127.0.0.1:12345
  doctor-monitor --config-file /etc/doctor/doctor.conf

config file (INI; every option below also goes in [monitor]):
  [monitor]
  inspector_url = http://inspector:12345
  reference_hosts = 192.0.2.1
  [targets]
  compute-1 = 10.0.0.11
  compute-2 = 10.0.0.12

The [targets] section is re-read when the file changes (no restart). Monitors given
the same share_group (and coordination_url) split the targets between them.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = daemon_parser(
        "doctor-monitor", MonitorConfig,
        "Ping compute hosts with one raw ICMP socket and send Doctor events (compute.host.down "
        "/ compute.host.up) to the Inspector. Needs CAP_NET_RAW.", EXAMPLES, duration=True)
    parser.add_argument("--target", action="append", default=[], metavar="HOSTNAME=ADDRESS",
                        help="a host to watch (repeatable), e.g. compute-1=198.18.0.10")
    return parser


def load_config(args: argparse.Namespace) -> MonitorConfig:
    """Defaults, then the config file's [monitor] and [targets], then flags."""
    flags = cfg.flag_values(args, MonitorConfig)
    targets: list[str] = cfg.split_list(flags.pop("targets", ""))
    if args.config_file:
        ini = cfg.read_ini(args.config_file)
        if ini.has_section("targets"):
            targets += [f"{name}={address}" for name, address in ini["targets"].items()]
        if ini.has_section("monitor") and "targets" in ini["monitor"]:
            targets = cfg.split_list(ini["monitor"]["targets"]) + targets
    targets += args.target
    extra = {"targets": targets} if targets else {}
    config = cfg.load(MonitorConfig, "monitor", args.config_file, flags, extra)
    if not config.targets:
        raise cfg.ConfigError("[monitor] targets: no host to watch; give --target "
                              "HOSTNAME=ADDRESS or a [targets] section")
    return config


def main(argv: list[str] | None = None) -> int:
    daemon = Daemon(build_parser(), argv)
    args = daemon.args
    logs.setup(args.log_level)
    try:
        config = load_config(args)
    except cfg.ConfigError as exc:
        daemon.fail(2, str(exc))
    from monitor.ping import PingMonitor

    try:
        monitor = PingMonitor(config)
    except cfg.ConfigError as exc:
        daemon.fail(2, str(exc))
    except RawSocketPermissionError as exc:
        daemon.fail(1, str(exc))
    daemon.on_stop(monitor.stop)
    daemon.register(f"Monitor {config.name}", config)
    apply: Callable[[Iterable[Target]], None] = monitor.scheduler.update_targets
    sharing = None
    if config.share_group:
        from doctor.sharing import ShareOf

        sharing = ShareOf(config.coordination_url, config.share_group, config.name,
                          config.targets, lambda target: target.hostname, apply,
                          config.membership_timeout_s, what="targets",
                          thread_name="target-sharing")
        apply = sharing.set_items
    reloader = TargetReloader(args, config, apply)
    monitor.start()
    if sharing is not None:
        sharing.start()
        daemon.on_stop(sharing.stop)
    reloader.start()
    daemon.on_stop(reloader.stop)
    daemon.run(args.duration_s)
    return 1 if monitor.failed is not None else 0


class TargetReloader:
    """Re-reads the config file's targets when the file changes; no restart needed."""

    def __init__(self, args: argparse.Namespace, config: MonitorConfig,
                 apply: Callable[[list[Target]], None]) -> None:
        self.args = args
        self.apply = apply
        self.interval_s = config.reload_interval_s
        self.targets = list(config.targets)
        self._mtime = self._stat()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="target-reload", daemon=True)

    def _stat(self) -> float | None:
        try:
            return os.stat(self.args.config_file).st_mtime if self.args.config_file else None
        except OSError:
            return None

    def start(self) -> None:
        if self.args.config_file:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            mtime = self._stat()
            if mtime == self._mtime:
                continue
            self._mtime = mtime
            try:
                targets = load_config(self.args).targets
            except (cfg.ConfigError, OSError) as exc:
                LOG.error("%s changed but is not valid, keeping the %d targets: %s",
                          self.args.config_file, len(self.targets), exc)
                continue
            if targets != self.targets:
                old, new = {t.hostname for t in self.targets}, {t.hostname for t in targets}
                LOG.warning("targets reloaded from %s: %d hosts (added: %s; removed: %s)",
                            self.args.config_file, len(targets),
                            ", ".join(sorted(new - old)) or "none",
                            ", ".join(sorted(old - new)) or "none")
                self.targets = targets
                self.apply(targets)


if __name__ == "__main__":
    sys.exit(main())
