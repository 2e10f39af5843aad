"""Sessions on an OpenStack cloud, the ecosystem's usual way, or without Keystone.

- ``cloud``: a ``clouds.yaml`` entry, or the ``OS_*`` variables (openstacksdk's
  config loader reads both);
- ``noauth_url``: a test cloud without Keystone. The endpoint is used as it is,
  and the caller's identity goes in headers (``doctor.noauth``; the same plugin
  serves a ``clouds.yaml`` entry with ``auth_type: doctor-noauth``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class OpenStackConfigError(ValueError):
    """The cloud's credentials cannot be loaded; the message says what is missing."""


@dataclass
class Cloud:
    """A session on one cloud, the project it acts in, and the endpoints it was told."""

    session: Any
    project_id: str
    endpoints: dict[str, str] = field(default_factory=dict)

    def endpoint(self, service_type: str) -> str | None:
        """The configured endpoint of a service (``compute``, ``alarming``), if any; else the
        session finds it in Keystone's catalog."""
        return self.endpoints.get(service_type)


def open_cloud(cloud: str = "", noauth_url: str = "", project_id: str = "",
               user_id: str = "", roles: str = "admin,member,reader",
               timeout_s: float = 10.0, resolve_project: bool = False) -> Cloud:
    """A cloud whose every request has ``timeout_s``: ``noauth_url``, else clouds.yaml/OS_*.

    Nothing is sent until the first call, unless ``resolve_project`` asks for the project
    id at once (which authenticates to Keystone).
    """
    from keystoneauth1 import session

    if noauth_url:
        from doctor.noauth import NoAuth

        if not project_id or not user_id:
            raise OpenStackConfigError("noauth needs a project id and a user id")
        return Cloud(session.Session(auth=NoAuth(user_id, project_id, roles, noauth_url),
                                     timeout=timeout_s), project_id, {"compute": noauth_url})
    try:
        import openstack.config
    except ImportError:
        raise OpenStackConfigError("clouds.yaml / OS_* credentials need openstacksdk: "
                                   "pip install 'doctor-fm[openstack]'") from None
    where = f"cloud {cloud}" if cloud else "the cloud of the OS_* variables"
    try:
        region = openstack.config.get_cloud_region(cloud=cloud or None)
        sess = region.get_session()
    except Exception as exc:  # openstacksdk raises several kinds; all mean "no credentials"
        raise OpenStackConfigError(f"cannot load the credentials of {where}: {exc}") from None
    sess.timeout = timeout_s
    endpoints = {t: url for t in ("compute", "alarming") if (url := region.get_endpoint(t))}
    project = region.auth.get("project_id", "")
    if resolve_project and not project:
        try:
            project = sess.get_project_id() or ""
        except Exception as exc:  # authenticating: Keystone unreachable, credentials refused
            raise OpenStackConfigError(f"cannot authenticate to {where}: {exc}") from None
    return Cloud(sess, project, endpoints)
