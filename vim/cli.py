"""``doctor-vim``: the VIM server (``/v1/vims`` on port 9890, and the VIMs' monitoring)."""

from __future__ import annotations

import argparse
import sys

from doctor import coordination, keystone
from doctor.daemon import Daemon, daemon_parser
from vim.config import VimConfig

# The name in the service list.
SERVICE_NAME = "VimWorker worker(0)"


def build_parser() -> argparse.ArgumentParser:
    return daemon_parser(
        "doctor-vim", VimConfig,
        "Register VIMs (POST /v1/vims) and monitor them: PENDING, then REACHABLE or "
        "UNREACHABLE as their auth_url's host answers; status changes go to the notifier as "
        "vim.status.update events.",
        "example: DOCTOR_VIM_TOKEN=... doctor-vim --notifier-url http://127.0.0.1:8042 (the "
        "token: [vim] token in the config file, or DOCTOR_VIM_TOKEN; needs CAP_NET_RAW for "
        "the ICMP probes)")


def main(argv: list[str] | None = None) -> int:
    daemon = Daemon(build_parser(), argv)
    config = daemon.load(VimConfig, "vim")
    from doctor.config import ConfigError
    from doctor.openstack import outgoing_token
    from doctor.store import make_engine
    from monitor.icmp import RawSocketPermissionError
    from notifier.http import HttpPublisher
    from vim.api import create_app
    from vim.crypto import KeyFileError, PasswordBox
    from vim.manager import MonitorManager
    from vim.store import VimStore

    try:
        store = VimStore(make_engine(config.database), PasswordBox.from_key_file(config.key_file))
    except KeyFileError as exc:
        daemon.fail(1, f"[vim] key_file: {exc}")
    try:
        token = outgoing_token("vim", config.keystone_cloud, config.notifier_token)
    except ConfigError as exc:
        daemon.fail(2, str(exc))
    publisher = HttpPublisher(config.notifier_url, token) if config.notifier_url else None
    # Sharing: nothing is this server's until it has read the group (or found it unreachable).
    manager = MonitorManager(store, config, publisher,
                             owns=(lambda _vim_id: False) if config.share_group else None)
    try:
        manager.start()
    except RawSocketPermissionError as exc:
        daemon.fail(1, str(exc))
    daemon.on_stop(manager.stop)
    daemon.listen(create_app(store, config.token, manager, config.auth_strategy,
                             keystone.settings_of(config)), config.host,
                  config.port, name="vim")
    daemon.register(SERVICE_NAME, config)
    if config.share_group:
        from doctor.sharing import RingMembership

        sharing = RingMembership(config.coordination_url, config.share_group,
                                 f"vim-{coordination.local_hostname()}", manager.set_owns,
                                 config.membership_timeout_s, thread_name="vim-sharing")
        sharing.start()
        daemon.on_stop(sharing.stop)
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
