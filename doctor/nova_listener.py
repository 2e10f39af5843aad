"""Nova's own notifications, in Ceilometer's event format, for the parts that read them.

Listens with oslo.messaging to ``compute.instance.*`` on the ``notifications`` topic, in
a pool of its own (one queue per listening process), so that Ceilometer's consumers and
every other listener still get every message, and hands each change on as a
``compute.instance.*`` event (``doctor.events.instance_update``'s traits). The Inspector
keeps its host map fresh with them (controller = nova); the embedded Notifier evaluates
them against its alarms where a cloud runs no Ceilometer (its ``nova_transport_url``: the
conservative path without Telemetry).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from doctor.events import instance_update
from doctor.logs import escape

LOG = logging.getLogger(__name__)
REQUEUE = "requeue"  # oslo_messaging.NotificationResult.REQUEUE
WATCHED = ("compute.instance.create.end", "compute.instance.delete.end",
           "compute.instance.update", "compute.instance.live_migration.post.dest.end",
           "compute.instance.resize.confirm.end", "compute.instance.rebuild.end",
           "compute.instance.evacuate")


class _Endpoint:
    def __init__(self, apply: Callable[[list[dict[str, Any]]], None]) -> None:
        self.apply = apply

    def info(self, _ctxt: Any, _publisher_id: str, event_type: str, payload: dict[str, Any],
             _metadata: Any) -> str | None:
        if event_type not in WATCHED or not isinstance(payload, dict):
            return None
        instance_id = payload.get("instance_id")
        host = payload.get("host") or ""
        if not instance_id:
            return None
        event = instance_update(instance_id, payload.get("state", ""), host,
                                payload.get("tenant_id", ""))
        event["event_type"] = event_type
        try:
            self.apply([event])
        except Exception as exc:  # e.g. the notifier is overloaded: the bus keeps it
            LOG.warning("nova's %s of instance %s not taken (%s); requeued", event_type,
                        escape(instance_id), exc)
            return REQUEUE
        return None


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
            executor="threading", pool=pool, allow_requeue=True)

    def start(self) -> None:
        self.listener.start()
        LOG.info("listening to nova's notifications (pool %s)", self.pool)

    def stop(self) -> None:
        self.listener.stop()
        self.listener.wait()
