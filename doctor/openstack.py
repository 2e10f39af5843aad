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

# For the parts that call each other with Keystone tokens (``keystone_cloud``): ``CloudToken``
# and ``outgoing_token`` below.


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


KEYSTONE_TIMEOUT_S = 10.0  # each call a token source makes to Keystone


class CloudToken:
    """The current Keystone token of a clouds.yaml cloud: ``doctor.http.HttpClient``'s token
    source for a part whose ``keystone_cloud`` is set.

    The session is keystoneauth1's (openstacksdk's loader, ``open_cloud``): it authenticates
    at the first call, keeps the token and fetches a new one shortly before it expires
    (keystoneauth's margin, 2 minutes), one thread at a time. ``invalidate`` drops a token
    a server refused, so that the next call fetches a new one. The token is never logged nor
    part of a message, the repr or an exception.
    """

    def __init__(self, cloud: str, timeout_s: float = KEYSTONE_TIMEOUT_S) -> None:
        """OpenStackConfigError if the cloud's credentials cannot be loaded (nothing is sent
        to Keystone before the first call)."""
        if not cloud:
            raise OpenStackConfigError("a token source needs a clouds.yaml cloud")
        self.cloud = cloud
        self._session = open_cloud(cloud, timeout_s=timeout_s).session

    def __call__(self) -> str:
        """The token to send now; TokenError (naming the cloud, never a secret) if Keystone
        cannot be reached or refuses the credentials."""
        try:
            token = self._session.get_token()
        except Exception as exc:  # keystoneauth raises many kinds: unreachable, 401, ...
            raise TokenError(f"cloud {self.cloud}: no Keystone token: "
                             f"{type(exc).__name__}: {exc}") from None
        if not token:
            raise TokenError(f"cloud {self.cloud}: no Keystone token: none was issued")
        return str(token)

    def invalidate(self, refused: str) -> None:
        """Forget the token ``refused`` (a 401 answered it), unless another thread has already
        replaced it: parallel calls refused together fetch one new token, not one each."""
        current = getattr(getattr(self._session, "auth", None), "auth_ref", None)
        if current is not None and getattr(current, "auth_token", None) == refused:
            self._session.invalidate()

    def __repr__(self) -> str:
        return f"CloudToken(cloud={self.cloud!r})"


class TokenError(RuntimeError):
    """No Keystone token: the message names the cloud and the reason, never a secret."""


def outgoing_token(section: str, keystone_cloud: str, static: str) -> str | CloudToken:
    """What a part sends as X-Auth-Token when it calls another part: the token source of
    ``keystone_cloud`` when set, else the ``static`` token. A cloud whose credentials cannot
    be loaded is a ConfigError naming ``[section] keystone_cloud``."""
    from doctor.config import ConfigError

    cloud = keystone_cloud.strip()
    if not cloud:
        return static
    try:
        return CloudToken(cloud)
    except OpenStackConfigError as exc:
        raise ConfigError(f"[{section}] keystone_cloud: {exc}") from None
