"""What a VIM is made of, as a user gives it: Tacker's config file, or the API's JSON body.

One validation for both, so ``doctor vim register --config-file F`` and ``POST /v1/vims`` refuse
the same things with the same words: an unknown key, a missing ``auth_url``, a URL that is not
http(s), a value of the wrong type. ``VimSpecError.field`` names the culprit.
"""

from __future__ import annotations

import re
import socket
import urllib.parse
from typing import Any

# The keys of Tacker's VIM config file (``openstack vim register --config-file``).
CONFIG_KEYS = ("auth_url", "username", "password", "project_name", "project_domain_name",
               "user_domain_name", "cert_verify")
REQUIRED = ("auth_url", "username", "password", "project_name")
DEFAULTS: dict[str, Any] = {"project_domain_name": "Default", "user_domain_name": "Default",
                            "cert_verify": True}
# Tacker's sample files quote the boolean ('True'); both spellings are taken.
_BOOL_TEXT = {"true": True, "false": False}
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")
MAX_TEXT = 255


class VimSpecError(ValueError):
    """A VIM definition that cannot be used; ``field`` names the offending key."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def parse_auth_url(value: Any, field: str = "auth_url") -> str:
    """An http(s) URL with a host (Keystone's endpoint, e.g. https://keystone:5000/v3)."""
    if not isinstance(value, str) or not value.strip():
        raise VimSpecError(field, "required, an http(s) URL such as http://keystone:5000/v3")
    url = value.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise VimSpecError(field, f"{url!r} is not an http(s) URL with a host")
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise VimSpecError(field, f"{url!r} has a port that is not a number 0-65535") from None
    if parts.username or parts.password:
        raise VimSpecError(field, "must not hold credentials; give username and password "
                                  "apart")
    return url


def auth_url_host(auth_url: str) -> str:
    return urllib.parse.urlsplit(auth_url).hostname or ""


def resolve_ipv4(auth_url: str) -> str:
    """The IPv4 address the auth_url's host stands for (resolved once, by the caller)."""
    host = auth_url_host(auth_url)
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_RAW)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise VimSpecError("auth_url", f"host {host!r} does not resolve to an IPv4 address "
                                       f"({reason})") from None
    return str(infos[0][4][0])


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise VimSpecError(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise VimSpecError(field, "must not be empty")
    if len(value) > MAX_TEXT:
        raise VimSpecError(field, f"longer than {MAX_TEXT} characters")
    return value


def _bool(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[value.strip().lower()]
    raise VimSpecError(field, f"must be true or false, got {value!r}")


def parse_name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not _NAME.match(value) or not value.strip():
        raise VimSpecError(field, "required, 1-255 characters without control characters")
    return value


def validate(values: Any, *, partial: bool = False, where: str = "",
             allowed: tuple[str, ...] = CONFIG_KEYS) -> dict[str, Any]:
    """The VIM's fields, checked and typed; defaults filled in unless ``partial`` (an update).

    ``where`` prefixes field names in errors (e.g. the file name).
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(values, dict):
        raise VimSpecError(where or "body", "must be a mapping of "
                           + ", ".join(allowed))
    unknown = sorted(str(k) for k in values if k not in allowed)
    if unknown:
        raise VimSpecError(unknown[0], f"{prefix}unknown key; known: {', '.join(allowed)}")
    result: dict[str, Any] = {}
    for key, value in values.items():
        try:
            if key == "auth_url":
                result[key] = parse_auth_url(value)
            elif key == "cert_verify":
                result[key] = _bool(key, value)
            elif key == "name":
                result[key] = parse_name(value)
            else:
                result[key] = _text(key, value)
        except VimSpecError as exc:
            raise VimSpecError(exc.field, prefix + exc.problem) from None
    if not partial:
        for key in REQUIRED:
            if key not in result and key in allowed:
                problem = "required" + (", an http(s) URL" if key == "auth_url" else "")
                raise VimSpecError(key, prefix + problem)
        for key, value in DEFAULTS.items():
            result.setdefault(key, value)
    return result


def load_config_file(path: str, partial: bool = False) -> dict[str, Any]:
    """A Tacker VIM config file (YAML), validated; VimSpecError names the field (or the file).

    ``partial``: an update's file, which may hold only the keys that change.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise VimSpecError("config_file", f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise VimSpecError("config_file", f"{path}: not valid YAML{at}") from None
    if not isinstance(data, dict):
        raise VimSpecError("config_file", f"{path}: must be a mapping of "
                                          f"{', '.join(CONFIG_KEYS)}")
    return validate(data, partial=partial, where=path)
