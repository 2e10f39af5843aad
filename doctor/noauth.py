"""A keystoneauth1 plugin for OpenStack test clouds without Keystone (``doctor-noauth``).

Services whose paste pipeline builds the request context from headers (Nova's
``keystonecontext`` without ``authtoken``, Aodh's ``noauth``) need the caller's identity in
``X-User-Id``, ``X-Project-Id`` and ``X-Roles``, and Nova also passes a token on to Glance and
Neutron. This plugin sends all four with every request, so a test bed can be a plain
``clouds.yaml`` entry::

    clouds:
      doctor-testbed:
        auth_type: doctor-noauth
        auth: {user_id: U, project_id: P, roles: admin}
        compute_endpoint_override: http://127.0.0.1:8774/v2.1
        alarming_endpoint_override: http://127.0.0.1:8042

It authenticates nothing: never point it at a production cloud.
"""

from __future__ import annotations

from typing import Any

from keystoneauth1 import loading, plugin

PLACEHOLDER_TOKEN = "doctor-noauth"


class NoAuth(plugin.BaseAuthPlugin):
    """The identity headers and a placeholder token on every request."""

    def __init__(self, user_id: str, project_id: str, roles: str = "admin",
                 endpoint: str | None = None) -> None:
        super().__init__()
        self.user_id = user_id
        self.project_id = project_id
        self.roles = roles
        self.endpoint = endpoint

    def get_headers(self, session: Any, **kwargs: Any) -> dict[str, str]:
        return {"X-Auth-Token": PLACEHOLDER_TOKEN, "X-User-Id": self.user_id,
                "X-Project-Id": self.project_id, "X-Roles": self.roles}

    def get_token(self, session: Any, **kwargs: Any) -> str:
        return PLACEHOLDER_TOKEN

    def get_user_id(self, session: Any, **kwargs: Any) -> str:
        return self.user_id

    def get_project_id(self, session: Any, **kwargs: Any) -> str:
        return self.project_id

    def get_endpoint(self, session: Any, **kwargs: Any) -> str | None:
        """The one endpoint given, if any; per-service endpoints come from overrides."""
        return self.endpoint


class NoAuthLoader(loading.BaseLoader):
    """Lets clouds.yaml and ``--os-auth-type`` name the plugin ``doctor-noauth``."""

    plugin_class = NoAuth

    def get_options(self) -> list[Any]:
        return [*super().get_options(),
                loading.Opt("user-id", required=True, help="user id sent as X-User-Id"),
                loading.Opt("project-id", required=True, help="project id sent as X-Project-Id"),
                loading.Opt("roles", default="admin", help="roles sent as X-Roles"),
                loading.Opt("endpoint", help="endpoint of every service, unless overridden")]
