"""``doctor-inspector``: the Inspector daemon (REST API on port 12345 by default)."""

from __future__ import annotations

import argparse
import os
import sys

from controller.base import Controller
from doctor import config as cfg
from doctor import coordination, drivers, keystone
from doctor.daemon import Daemon, daemon_parser
from inspector.config import InspectorConfig
from notifier.base import EventPublisher

# The name in the service list (one worker per process for now).
SERVICE_NAME = "InspectorWorker worker(0)"


def build_parser() -> argparse.ArgumentParser:
    return daemon_parser(
        "doctor-inspector", InspectorConfig,
        "Take Doctor host events from monitors (PUT /events), mark the host down in the "
        "controller, set its VMs to error and notify at once.",
        "example: DOCTOR_INSPECTOR_TOKEN=... DOCTOR_INSPECTOR_CONTROLLER_TOKEN=... "
        "doctor-inspector --controller-url http://127.0.0.1:12347 --notifier-url "
        "http://127.0.0.1:8042 (tokens and other secrets: the config file's [inspector] or "
        "DOCTOR_INSPECTOR_<OPTION>, never a flag)")


def build_controller(config: InspectorConfig) -> Controller:
    """The ``[inspector] controller`` driver."""
    return drivers.load(drivers.CONTROLLER, config.controller)(config)


def build_publisher(config: InspectorConfig) -> EventPublisher:
    """The ``[inspector] notifier`` driver."""
    return drivers.load(drivers.NOTIFIER, config.notifier)(config)


def build_service(config: InspectorConfig):  # noqa: ANN201  (InspectorService; lazy imports)
    from doctor.store import make_engine
    from inspector.service import InspectorService
    from inspector.store import EventLog

    return InspectorService(config, build_controller(config), build_publisher(config),
                            EventLog(make_engine(config.database)))


def main(argv: list[str] | None = None) -> int:
    daemon = Daemon(build_parser(), argv)
    config = daemon.load(InspectorConfig, "inspector")
    from controller.base import ControllerError
    from doctor.openstack import OpenStackConfigError
    from inspector.api import create_app

    try:
        service = build_service(config)
    except cfg.ConfigError as exc:  # keystone_cloud
        daemon.fail(2, str(exc))
    except (ControllerError, OpenStackConfigError) as exc:
        daemon.fail(1, f"[inspector] controller: {exc}")
    service.start()
    daemon.on_stop(service.stop)
    if config.controller == "nova" and config.nova_transport_url:
        from doctor.nova_listener import NovaListener

        pool = config.nova_listener_pool or \
            f"doctor-inspector-{coordination.local_hostname()}-{config.port or os.getpid()}"
        NovaListener(config.nova_transport_url, service.on_notifications, pool=pool).start()
    daemon.listen(create_app(service, config.token, config.coordination_url,
                             config.heartbeat_timeout_s, config.auth_strategy,
                             keystone.settings_of(config)), config.host,
                  config.port, name="inspector")
    daemon.register(SERVICE_NAME, config)
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
