"""The Controller drivers (entry points ``doctor.controller``, see ``doctor.drivers``).

Each takes the options of the part that calls the Controller (the Inspector's config) and
returns a ``controller.base.Controller``.
"""

from __future__ import annotations

from typing import Protocol

from controller.base import Controller


class ControllerOptions(Protocol):
    """What the drivers read from their user's config."""

    @property
    def call_timeout_s(self) -> float: ...

    controller_url: str
    controller_token: str
    keystone_cloud: str
    nova_cloud: str
    nova_noauth_url: str
    os_project_id: str
    os_user_id: str
    nova_microversion: str


def embedded(options: ControllerOptions) -> Controller:
    """The embedded Controller, over its REST API (``controller_url``), with
    ``keystone_cloud``'s Keystone token when set, else ``controller_token``."""
    from controller.client import ControllerClient
    from doctor.openstack import outgoing_token

    token = outgoing_token("inspector", options.keystone_cloud, options.controller_token)
    return ControllerClient(options.controller_url, token, timeout_s=options.call_timeout_s)


def nova(options: ControllerOptions) -> Controller:
    """OpenStack Nova through python-novaclient, on a clouds.yaml/OS_* cloud or a test cloud
    without Keystone (``nova_noauth_url``)."""
    from controller.nova import NovaController
    from doctor.openstack import open_cloud

    cloud = open_cloud(options.nova_cloud, options.nova_noauth_url, options.os_project_id,
                       options.os_user_id, timeout_s=options.call_timeout_s)
    return NovaController(cloud.session, options.nova_microversion, cloud.endpoint("compute"))
