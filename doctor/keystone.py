"""``auth_strategy = keystone``: Keystone tokens, validated by keystonemiddleware.

Every part's REST API can hand its requests to ``keystonemiddleware.auth_token``: the
middleware wraps the Flask app's ``wsgi_app``, removes whatever identity headers the client
sent (``X-Identity-Status``, ``X-Project-Id``, ``X-Roles``, ...), validates the request's
``X-Auth-Token`` with Keystone and, for a valid token only, sets those headers from the
token. A request without a valid token never reaches the app: the middleware answers 401
with ``WWW-Authenticate: Keystone uri="<keystone_auth_url>"``. What a valid token may do is
``doctor.policy``'s.

The middleware authenticates itself to Keystone as the part's service user (the
``keystone_*`` options below: the same fields in every part's section). Its configuration is
a dict, never oslo.config's global object nor a file of its own, so a part reads nothing
but its own config file. Every call it makes to Keystone has a timeout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from flask import Flask, request

from doctor.config import KEYSTONE, ConfigError, env_name, option

DEFAULT_TIMEOUT_S = 10
DEFAULT_TOKEN_CACHE_S = 300

# The fields of a part's config that keystone mode needs (the others have defaults).
REQUIRED = ("keystone_auth_url", "keystone_username", "keystone_password",
            "keystone_project_name")


def auth_url_option() -> Any:
    return option("", help="with auth_strategy = keystone: Keystone's public URL, e.g. "
                           "http://keystone:5000/v3 (also the URL in the 401's "
                           "WWW-Authenticate header)")


def username_option() -> Any:
    return option("", help="with auth_strategy = keystone: the service user the part "
                           "validates tokens as (it needs Keystone's service or admin role)")


def password_option() -> Any:
    return option("", secret=True,
                  help="with auth_strategy = keystone: keystone_username's password "
                       "(never logged)")


def project_name_option() -> Any:
    return option("", help="with auth_strategy = keystone: keystone_username's project, "
                           "e.g. service")


def user_domain_option() -> Any:
    return option("Default", help="with auth_strategy = keystone: keystone_username's "
                                  "domain")


def project_domain_option() -> Any:
    return option("Default", help="with auth_strategy = keystone: keystone_project_name's "
                                  "domain")


def cafile_option() -> Any:
    return option("", help="with auth_strategy = keystone: a PEM file of the CAs that "
                           "sign Keystone's HTTPS certificate (empty: the system's)")


def timeout_option() -> Any:
    return option(DEFAULT_TIMEOUT_S, min=1, max=300,
                  help="with auth_strategy = keystone: timeout of each call to Keystone, "
                       "whole s")


def token_cache_option() -> Any:
    return option(DEFAULT_TOKEN_CACHE_S, min=0, max=3600,
                  help="with auth_strategy = keystone: how long a validated token is "
                       "trusted without asking Keystone again, whole s (0: ask every "
                       "time). A token revoked in Keystone is still accepted for up to "
                       "this long")


def policy_file_option() -> Any:
    return option("", help="with auth_strategy = keystone: a YAML or JSON file of "
                           "oslo.policy rules that override the built-in defaults "
                           "(doctor config-doc lists the rules); empty: the defaults")


@dataclass
class KeystoneOptions:
    """The ``keystone_*`` fields and ``policy_file`` of a part with an API: its config class
    inherits them (``doctor config-doc`` and ``--help`` list them after the part's own)."""

    keystone_auth_url: str = auth_url_option()
    keystone_username: str = username_option()
    keystone_password: str = password_option()
    keystone_project_name: str = project_name_option()
    keystone_user_domain_name: str = user_domain_option()
    keystone_project_domain_name: str = project_domain_option()
    keystone_cafile: str = cafile_option()
    keystone_timeout_s: int = timeout_option()
    keystone_token_cache_s: int = token_cache_option()
    policy_file: str = policy_file_option()


@dataclass(frozen=True)
class KeystoneSettings:
    """What the middleware and the policy need from a part's config."""

    auth_url: str
    username: str
    password: str = dataclasses.field(repr=False)
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    cafile: str = ""
    timeout_s: int = DEFAULT_TIMEOUT_S
    token_cache_s: int = DEFAULT_TOKEN_CACHE_S
    policy_file: str = ""
    # True: a request without a valid token still reaches the app, marked
    # X-Identity-Status: Invalid, and the app decides (the consumer's signed alarms).
    delay_auth_decision: bool = False

    @classmethod
    def from_config(cls, config: Any) -> KeystoneSettings:
        """The settings of a part's config dataclass (its ``keystone_*`` fields and
        ``policy_file``)."""
        return cls(auth_url=config.keystone_auth_url, username=config.keystone_username,
                   password=config.keystone_password,
                   project_name=config.keystone_project_name,
                   user_domain_name=config.keystone_user_domain_name,
                   project_domain_name=config.keystone_project_domain_name,
                   cafile=config.keystone_cafile, timeout_s=int(config.keystone_timeout_s),
                   token_cache_s=int(config.keystone_token_cache_s),
                   policy_file=config.policy_file)

    def middleware_conf(self) -> dict[str, Any]:
        """keystonemiddleware.auth_token's configuration, as a dict."""
        from oslo_config import cfg as oslo_cfg

        own = oslo_cfg.ConfigOpts()  # never the global CONF, never a file of its own
        own([], project="doctor", default_config_files=[], default_config_dirs=[])
        conf: dict[str, Any] = {
            "oslo_config_config": own,
            "auth_type": "password",
            "auth_url": self.auth_url,
            "username": self.username,
            "password": self.password,
            "project_name": self.project_name,
            "user_domain_name": self.user_domain_name,
            "project_domain_name": self.project_domain_name,
            "www_authenticate_uri": self.auth_url,
            "delay_auth_decision": self.delay_auth_decision,
            "http_connect_timeout": self.timeout_s,
            "http_request_max_retries": 1,
            "include_service_catalog": False,
            "token_cache_time": self.token_cache_s or -1,
            "log_name": "doctor.keystone",
        }
        if self.cafile:
            conf["cafile"] = self.cafile
        return conf


def check_config(section: str, config: Any) -> None:
    """For a config's ``__post_init__``: with ``auth_strategy = keystone``, every field the
    middleware needs is set (a ConfigError names the first missing one)."""
    if getattr(config, "auth_strategy", None) != KEYSTONE:
        return
    for name in REQUIRED:
        if not str(getattr(config, name, "") or "").strip():
            where = (f"the config file's [{section}] section or the environment variable "
                     f"{env_name(section, name)}" if name == "keystone_password"
                     else f"the config file's [{section}] section or --"
                          f"{name.replace('_', '-')}")
            raise ConfigError(f"{name}: required with auth_strategy = keystone; set it in "
                              f"{where}")
    url = config.keystone_auth_url
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"keystone_auth_url: {url!r} is not an http(s) URL")
    if config.policy_file:
        check_policy_file(config.policy_file)


def check_policy_file(path: str) -> None:
    """A ``policy_file`` that cannot be read, or is not a YAML or JSON mapping of rule names
    to check strings, is a ConfigError naming the option."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"policy_file: {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy_file: {path}: not YAML or JSON: {exc}") from None
    if data is None:
        return
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(f"policy_file: {path}: must map rule names to check strings")


def protect(app: Flask, settings: KeystoneSettings) -> None:
    """Put keystonemiddleware's auth_token around ``app``: only requests with a valid token
    reach it (with ``settings.delay_auth_decision``, the others too, marked invalid), and
    their identity headers are the token's. A 401 of the app gets the middleware's
    WWW-Authenticate header."""
    from keystonemiddleware.auth_token import AuthProtocol

    app.wsgi_app = AuthProtocol(app.wsgi_app, settings.middleware_conf())  # type: ignore[method-assign]


@dataclass(frozen=True)
class Identity:
    """Who a validated token is: the credentials oslo.policy checks."""

    user_id: str
    project_id: str
    roles: frozenset[str]
    domain_id: str = ""
    system_scope: str = ""

    def credentials(self) -> dict[str, Any]:
        creds: dict[str, Any] = {"user_id": self.user_id, "project_id": self.project_id,
                                 "roles": sorted(self.roles)}
        if self.domain_id:
            creds["domain_id"] = self.domain_id
        if self.system_scope:
            creds["system"] = self.system_scope
        return creds


def identity() -> Identity | None:
    """The identity of the request being served, as the middleware set it from a valid
    token; None when it did not confirm one (such a request gets this far only with
    ``delay_auth_decision``; without it a check here costs nothing)."""
    headers = request.headers
    if headers.get("X-Identity-Status") != "Confirmed":
        return None
    roles = frozenset(r.strip().lower() for r in headers.get("X-Roles", "").split(",")
                      if r.strip())
    return Identity(user_id=headers.get("X-User-Id", ""),
                    project_id=headers.get("X-Project-Id", ""), roles=roles,
                    domain_id=headers.get("X-Domain-Id", ""),
                    system_scope=headers.get("OpenStack-System-Scope", ""))


def settings_of(config: Any) -> KeystoneSettings | None:
    """A part's Keystone settings when its ``auth_strategy`` is keystone, else None."""
    if getattr(config, "auth_strategy", None) != KEYSTONE:
        return None
    return KeystoneSettings.from_config(config)
