"""``doctor-inspector``: the Inspector daemon (REST API on port 12345 by default)."""

from __future__ import annotations

import argparse
import os
import sys

from doctor import config as cfg
from doctor import coordination
from doctor.store import make_engine
from doctor.wsgi import Server
from inspector.config import InspectorConfig

# The name in the service list (one worker per process for now).
SERVICE_NAME = "InspectorWorker worker(0)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="doctor-inspector",
        description="Take Doctor host events from monitors (PUT /events), mark the host down "
                    "in the controller, set its VMs to error and notify at once.",
        epilog="example: doctor-inspector --token $TOKEN --controller-url "
               "http://127.0.0.1:12347 --notifier-url http://127.0.0.1:8042")
    cfg.add_common_flags(parser, InspectorConfig)
    return parser


def build_controller(config: InspectorConfig):  # noqa: ANN201  (a Controller; lazy imports)
    timeout_s = config.call_timeout_ms / 1000.0
    if config.controller == "nova":
        from controller.nova import NovaController
        from doctor.openstack import open_cloud

        cloud = open_cloud(config.nova_cloud, config.nova_noauth_url, config.os_project_id,
                           config.os_user_id, timeout_s=timeout_s)
        return NovaController(cloud.session, config.nova_microversion,
                              cloud.endpoint("compute"))
    from controller.client import ControllerClient

    return ControllerClient(config.controller_url, config.controller_token, timeout_s)


def build_publisher(config: InspectorConfig):  # noqa: ANN201  (an EventPublisher)
    if config.notifier == "aodh":
        from notifier.aodh import AodhPublisher

        return AodhPublisher(config.aodh_transport_url, config.aodh_topic)
    from notifier.http import HttpPublisher

    return HttpPublisher(config.notifier_url, config.notifier_token,
                         config.call_timeout_ms / 1000.0)


def build_service(config: InspectorConfig):  # noqa: ANN201  (InspectorService; lazy imports)
    from inspector.service import InspectorService
    from inspector.store import EventLog

    return InspectorService(config, build_controller(config), build_publisher(config),
                            EventLog(make_engine(config.database)))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = cfg.from_args(parser, args, InspectorConfig, "inspector")
    from controller.base import ControllerError
    from doctor.openstack import OpenStackConfigError
    from inspector.api import create_app

    try:
        service = build_service(config)
    except (ControllerError, OpenStackConfigError) as exc:
        parser.exit(1, f"doctor-inspector: error: [inspector] controller: {exc}\n")
    service.start()
    if config.controller == "nova" and config.nova_transport_url:
        from inspector.nova_listener import NovaListener

        pool = config.nova_listener_pool or \
            f"doctor-inspector-{coordination.local_hostname()}-{config.port or os.getpid()}"
        NovaListener(config.nova_transport_url, service.on_notifications, pool=pool).start()
    try:
        server = Server(create_app(service, config.token, config.coordination_url,
                                   config.heartbeat_timeout_s),
                        config.host, config.port, name="inspector")
    except OSError as exc:
        service.stop()
        parser.exit(1, f"doctor-inspector: error: cannot listen on {config.host}:"
                       f"{config.port}: {exc.strerror}\n")
    registration = coordination.register(SERVICE_NAME, config)

    def stop() -> None:
        registration.stop()
        service.stop()

    server.serve_forever(on_stop=stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
