"""Publishing events straight to Aodh's listener with oslo.messaging.

Aodh's listener consumes topic ``alarm.all`` at priority **sample** (an
``info`` notification is never consumed), events in Ceilometer's format: so
the Inspector's shortcut reaches real Aodh without Ceilometer.
"""

from __future__ import annotations

import logging
from typing import Any

from notifier.base import EventPublisher, PublishError

LOG = logging.getLogger(__name__)


class AodhPublisher(EventPublisher):
    """Sends event lists as one ``sample`` notification on ``topic``."""

    def __init__(self, transport_url: str, topic: str = "alarm.all",
                 publisher_id: str = "doctor.inspector") -> None:
        import oslo_messaging
        from oslo_config import cfg

        self._conf = cfg.ConfigOpts()
        self._conf([], project="doctor")
        self.transport = oslo_messaging.get_notification_transport(self._conf,
                                                                   url=transport_url)
        self.notifier = oslo_messaging.Notifier(self.transport, driver="messagingv2",
                                                topics=[topic], publisher_id=publisher_id)

    def publish(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        try:
            self.notifier.sample({}, "event", events)
        except Exception as exc:  # oslo.messaging's errors depend on the driver
            raise PublishError(f"{len(events)} events not published to Aodh: "
                               f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self.transport.cleanup()
