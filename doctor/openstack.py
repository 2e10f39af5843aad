"""Sessions on an OpenStack cloud, the ecosystem's usual way, or without Keystone.

- ``cloud``: a ``clouds.yaml`` entry, or the ``OS_*`` variables (openstacksdk's
  config loader reads both);
- ``noauth_url``: a test cloud without Keystone. The endpoint is used as it is,
  with a dummy token, and the caller's identity goes in the ``X-User-Id``,
  ``X-Project-Id`` and ``X-Roles`` headers (Nova's keystonecontext middleware
  and Aodh's noauth mode read them).
"""

from __future__ import annotations

from typing import Any


class OpenStackConfigError(ValueError):
    """The cloud's credentials cannot be loaded; the message says what is missing."""


def make_session(cloud: str = "", noauth_url: str = "", project_id: str = "",
                 user_id: str = "", roles: str = "admin,member,reader",
                 timeout_s: float = 10.0) -> Any:
    """A keystoneauth1 session whose every request has ``timeout_s``."""
    from keystoneauth1 import session

    if noauth_url:
        from keystoneauth1 import token_endpoint

        if not project_id or not user_id:
            raise OpenStackConfigError("noauth needs a project id and a user id")
        return session.Session(
            auth=token_endpoint.Token(noauth_url, "admin"), timeout=timeout_s,
            additional_headers={"X-User-Id": user_id, "X-Project-Id": project_id,
                                "X-Roles": roles})
    try:
        import openstack.config
    except ImportError:
        raise OpenStackConfigError("clouds.yaml / OS_* credentials need openstacksdk: "
                                   "pip install 'doctor-fm[openstack]'") from None
    try:
        region = openstack.config.get_cloud_region(cloud=cloud or None)
    except Exception as exc:  # openstacksdk raises several kinds; all mean "no credentials"
        raise OpenStackConfigError(f"cannot load the credentials of cloud "
                                   f"{cloud or '(from OS_* variables)'}: {exc}") from None
    sess = region.get_session()
    sess.timeout = timeout_s
    return sess
