"""Who is asking the Notifier's ``/v2`` API, and whether ``POST /v1/events`` is the service.

Three strategies, as ``[notifier] auth_strategy`` says:

- ``token`` (the default): the caller is whoever its ``X-Auth-Token`` is, never what a
  header claims. The part's own ``token`` is the service (the inspector, the controller,
  doctor-vim): the only caller of ``POST /v1/events``, and on ``/v2`` the admin of project
  ``service``. The ``api_tokens_file`` names the other callers: one INI section per caller,
  with ``token``, ``user_id``, ``project_id`` and ``roles`` (mode 0600). ``X-User-Id``,
  ``X-Project-Id`` and ``X-Roles`` are ignored, so one project cannot act as another.
- ``keystone``: the caller is the Keystone token's user and project (keystonemiddleware
  validated it and set the identity headers, after removing any the client sent), and
  ``notifier.policies`` decides what it may do; admin is its ``notifier:alarms:all_projects``.
- ``noauth``: Aodh's noauth mode. The caller is whoever ``X-User-Id``, ``X-Project-Id`` and
  ``X-Roles`` name (aodhclient's ``aodh-noauth`` plugin sends them); anyone may post events.

Either way an alarm belongs to the caller's project; only a caller with the ``admin`` role may
name another project, or see other projects' alarms. Tokens are compared in constant time
(each against every entry, with no early exit) and never logged.
"""

from __future__ import annotations

import configparser
import hmac
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import Response, g, jsonify, request

from doctor.api import TOKEN_HEADER, ApiError, unauthorized
from doctor.config import NOAUTH, TOKEN, ConfigError, split_list

SERVICE_USER, SERVICE_PROJECT = "doctor", "service"
EVENTS_PATH = "/v1/events"


@dataclass(frozen=True)
class Caller:
    """Who is asking: a user in a project, with roles."""

    user_id: str
    project_id: str
    roles: frozenset[str]
    # Whether the caller is an admin, when a policy decided it (auth_strategy = keystone);
    # None: the admin role says so.
    admin: bool | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles if self.admin is None else self.admin

    def may_see(self, alarm: dict[str, Any]) -> bool:
        return self.is_admin or alarm.get("project_id") == self.project_id


SERVICE = Caller(SERVICE_USER, SERVICE_PROJECT, frozenset({"admin"}))


def _roles(text: str) -> frozenset[str]:
    return frozenset(r.strip().lower() for r in text.split(",") if r.strip())


def noauth_caller() -> Caller:
    """Aodh's noauth mode: the caller the request's headers name; 401 without
    ``X-Project-Id``."""
    project = request.headers.get("X-Project-Id", "").strip()
    if not project:
        raise ApiError(401, "X-Project-Id header required (Aodh's noauth mode: aodhclient "
                            "--os-auth-type aodh-noauth --project-id ... sends it)",
                       "X-Project-Id")
    return Caller(request.headers.get("X-User-Id", "").strip(), project,
                  _roles(request.headers.get("X-Roles", "")))


def current_caller() -> Caller:
    """The caller of the request being served, as ``CallerAuth`` found it (with
    ``noauth``: as the headers say)."""
    caller = g.get("doctor_caller")
    if caller is not None:
        return caller
    if g.get("doctor_noauth"):
        return noauth_caller()
    # Only CallerAuth lets a request in: a route it did not guard gets no caller.
    raise ApiError(401, f"missing or wrong {TOKEN_HEADER}", TOKEN_HEADER)


def load_api_tokens(path: str, service_token: str = "") -> list[tuple[str, Caller]]:
    """The callers of an ``api_tokens_file``, as (token, caller).

    One section per caller (its name is the user id unless ``user_id`` says otherwise):
    ``token`` and ``project_id`` are required, ``roles`` is comma separated. A file that
    others may read or write, a missing key, or a token given twice (or the service's
    ``service_token``) is a ConfigError naming ``[notifier] api_tokens_file``.
    """
    where = f"[notifier] api_tokens_file: {path}"
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{where}: holds tokens but has mode {stat.S_IMODE(mode):o}; "
                          f"chmod 600 it")
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error) as exc:
        raise ConfigError(f"{where}: {getattr(exc, 'strerror', None) or exc}") from None
    entries: list[tuple[str, Caller]] = []
    seen: set[str] = set()
    for name in parser.sections():
        section = parser[name]
        unknown = sorted(set(section) - {"token", "user_id", "project_id", "roles"})
        if unknown:
            raise ConfigError(f"{where}: [{name}] {unknown[0]}: unknown key; known: token, "
                              "user_id, project_id, roles")
        token = section.get("token", "").strip()
        project = section.get("project_id", "").strip()
        for key, value in (("token", token), ("project_id", project)):
            if not value:
                raise ConfigError(f"{where}: [{name}] {key}: required")
        if token in seen or token == service_token:
            raise ConfigError(f"{where}: [{name}] token: another caller (or [notifier] token) "
                              "has the same token")
        seen.add(token)
        user = section.get("user_id", "").strip() or name
        entries.append((token, Caller(user, project, frozenset(
            r.lower() for r in split_list(section.get("roles", ""))))))
    return entries


def write_api_tokens(path: str, callers: Iterable[tuple[str, str, Caller]]) -> None:
    """An ``api_tokens_file`` (mode 0600) of (section name, token, caller) entries."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when it existed
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for name, token, caller in callers:
            handle.write(f"[{name}]\ntoken = {token}\nuser_id = {caller.user_id}\n"
                         f"project_id = {caller.project_id}\n"
                         f"roles = {','.join(sorted(caller.roles))}\n\n")


class CallerAuth:
    """The Notifier's request check (``doctor.api.json_app``'s ``authenticate``): it finds
    the caller, or answers 401.

    ``token``: ``service_token`` is the service (``SERVICE``), ``callers`` are the other
    tokens, and ``POST /v1/events`` is for the service alone (403 for another token).
    ``noauth``: the headers name the caller (``noauth_caller``, asked when a ``/v2`` route
    needs it), and anyone may post events.
    """

    def __init__(self, strategy: str = TOKEN, service_token: str = "",
                 callers: Iterable[tuple[str, Caller]] = ()) -> None:
        if strategy not in (TOKEN, NOAUTH):
            raise ValueError(f"auth_strategy: {strategy!r} is not token or noauth")
        if strategy == TOKEN and not service_token:
            raise ValueError("auth_strategy token needs the service's token")
        self.strategy = strategy
        # The service first: identify() tells it by its index.
        self.tokens = [(service_token.encode(), SERVICE), *(
            (token.encode(), caller) for token, caller in callers)]
        if strategy == TOKEN and len({t for t, _ in self.tokens}) != len(self.tokens):
            raise ValueError("two callers have the same token")

    def identify(self, given: str) -> tuple[Caller, bool] | None:
        """(the caller whose token is ``given``, whether it is the service), or None. Every
        entry is compared, in constant time, with no early exit."""
        data = given.encode()
        found = None
        for index, (token, caller) in enumerate(self.tokens):
            if hmac.compare_digest(data, token):
                found = (caller, index == 0)
        return found

    def __call__(self) -> tuple[Response, int] | None:
        if self.strategy == NOAUTH:
            g.doctor_noauth = True
            return None
        found = self.identify(request.headers.get(TOKEN_HEADER, ""))
        if found is None:
            return unauthorized()
        caller, is_service = found
        if request.path == EVENTS_PATH and not is_service:
            return jsonify({"error": f"only the service's token may post to {EVENTS_PATH}",
                            "field": TOKEN_HEADER}), 403
        g.doctor_caller = caller
        return None
