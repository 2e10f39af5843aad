"""Nova's own notifications keep the Inspector's host map fresh (controller = nova).

Listens with oslo.messaging to ``compute.instance.*`` on the ``notifications``
topic, in a pool of its own (one queue per inspector) so that Ceilometer's consumers
and every other inspector still get every message, and hands each change to the host
map in Ceilometer's event format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from doctor.events import instance_update

LOG = logging.getLogger(__name__)
WATCHED = ("compute.instance.create.end", "compute.instance.delete.end",
           "compute.instance.update", "compute.instance.live_migration.post.dest.end",
           "compute.instance.resize.confirm.end", "compute.instance.rebuild.end",
           "compute.instance.evacuate")


class _Endpoint:
    def __init__(self, apply: Callable[[list[dict[str, Any]]], None]) -> None:
        self.apply = apply

    def info(self, _ctxt: Any, _publisher_id: str, event_type: str, payload: dict[str, Any],
             _metadata: Any) -> None:
        if event_type not in WATCHED or not isinstance(payload, dict):
            return
        instance_id = payload.get("instance_id")
        host = payload.get("host") or ""
        if not instance_id:
            return
        event = instance_update(instance_id, payload.get("state", ""), host,
                                payload.get("tenant_id", ""))
        event["event_type"] = event_type
        self.apply([event])


class NovaListener:
    """A background oslo.messaging notification listener."""

    def __init__(self, transport_url: str, apply: Callable[[list[dict[str, Any]]], None],
                 pool: str, topic: str = "notifications", exchange: str = "nova") -> None:
        import oslo_messaging
        from oslo_config import cfg

        self.pool = pool
        conf = cfg.ConfigOpts()
        conf([], project="doctor")
        transport = oslo_messaging.get_notification_transport(conf, url=transport_url)
        self.listener = oslo_messaging.get_notification_listener(
            # Nova publishes on its own exchange (its control_exchange), not "openstack".
            transport, [oslo_messaging.Target(topic=topic, exchange=exchange)],
            [_Endpoint(apply)],
            executor="threading", pool=pool)

    def start(self) -> None:
        self.listener.start()
        LOG.info("listening to nova's notifications (pool %s)", self.pool)

    def stop(self) -> None:
        self.listener.stop()
        self.listener.wait()
