"""Who is asking the Notifier's ``/v2`` API: Aodh's noauth mode, as the request headers say.

The caller is whoever ``X-User-Id``, ``X-Project-Id`` and ``X-Roles`` name
(aodhclient's ``aodh-noauth`` plugin sends them). An alarm belongs to the
caller's project; only a caller with the ``admin`` role may name another
project, or see other projects' alarms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import request

from doctor.api import ApiError


@dataclass(frozen=True)
class Caller:
    """Who is asking, as Aodh's noauth mode takes it from the request headers."""

    user_id: str
    project_id: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def may_see(self, alarm: dict[str, Any]) -> bool:
        return self.is_admin or alarm.get("project_id") == self.project_id


def current_caller() -> Caller:
    """The caller of the request being served; 401 without ``X-Project-Id``."""
    project = request.headers.get("X-Project-Id", "").strip()
    if not project:
        raise ApiError(401, "X-Project-Id header required (Aodh's noauth mode: aodhclient "
                            "--os-auth-type aodh-noauth --project-id ... sends it)",
                       "X-Project-Id")
    roles = {r.strip().lower() for r in request.headers.get("X-Roles", "").split(",")}
    return Caller(request.headers.get("X-User-Id", "").strip(), project,
                  frozenset(r for r in roles if r))
