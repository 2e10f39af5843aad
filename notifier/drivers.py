"""How events reach a Notifier (entry points ``doctor.notifier``, see ``doctor.drivers``).

Each takes the options of the part that publishes (the Inspector's config) and returns a
``notifier.base.EventPublisher``.
"""

from __future__ import annotations

from typing import Protocol

from notifier.base import EventPublisher


class PublisherOptions(Protocol):
    """What the drivers read from their user's config."""

    @property
    def call_timeout_s(self) -> float: ...

    notifier_url: str
    notifier_token: str
    keystone_cloud: str
    aodh_transport_url: str
    aodh_topic: str


def http(options: PublisherOptions) -> EventPublisher:
    """The embedded Notifier's ``POST /v1/events`` (``notifier_url``), with
    ``keystone_cloud``'s Keystone token when set, else ``notifier_token``."""
    from doctor.openstack import outgoing_token
    from notifier.http import HttpPublisher

    token = outgoing_token("inspector", options.keystone_cloud, options.notifier_token)
    return HttpPublisher(options.notifier_url, token, options.call_timeout_s)


def aodh(options: PublisherOptions) -> EventPublisher:
    """Straight to Aodh's listener over oslo.messaging (``aodh_transport_url``)."""
    from notifier.aodh import AodhPublisher

    return AodhPublisher(options.aodh_transport_url, options.aodh_topic)
