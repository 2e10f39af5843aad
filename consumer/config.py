"""The sample Consumer's options (``[consumer]``; flags ``--port`` etc.)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from doctor import config as cfg
from doctor import coordination
from doctor import keystone as ks
from doctor.config import ConfigError, option

RECOVERY_ACTIONS = ("none", "recreate")
HTTP_SERVERS = ("auto", "aiohttp", "waitress")
URL_RE = re.compile(r"^https?://[^/\s]+")


@dataclass
class ConsumerConfig(ks.KeystoneOptions):
    """Options of the ``[consumer]`` section."""

    host: str = cfg.host_option("the alarm endpoint")
    port: int = cfg.port_option(12346, "the alarm endpoint")
    max_body_bytes: int = cfg.body_limit_option()
    path: str = option("/failure", help="path of the alarm endpoint (the alarm action URL's "
                                        "path)")
    auth_strategy: str = cfg.auth_strategy_option(
        "the consumer", "token: an alarm (POST to path) is taken only when signed with "
                        "alarm_secret or when its URL carries ?token=<token>; keystone: "
                        "with a token of keystone_alarm_project_id (or an admin's), or "
                        "signed with alarm_secret when it is set; /failures only with such "
                        "a token")
    http_server: str = option(
        "auto", help="what serves the alarm endpoint: aiohttp (one event loop, about a third "
                     "of waitress's CPU per alarm), waitress (Flask on waitress, as the other "
                     "parts), or auto: aiohttp, but waitress with auth_strategy = keystone "
                     "(keystonemiddleware is WSGI middleware)")
    token: str = cfg.token_option(
        "X-Auth-Token of GET and DELETE /failures; also accepted as ?token=<token> in the "
        "alarm action URL, for Aodh, which cannot sign (never logged)")
    keystone_alarm_project_id: str = option(
        "", help="with auth_strategy = keystone: the id of the project whose tokens may "
                 "deliver alarms and read /failures: the alarm owner's project (Aodh's "
                 "trust+http actions carry a trust-scoped token of it); admin tokens may too")
    alarm_secret: str = cfg.token_option(
        "an alarm is taken when its X-Doctor-Signature is sha256=<HMAC-SHA256 of the body "
        "under this secret, hex>: the embedded notifier's action_secret")
    recovery: str = option(
        "none", help="what to do for a failed VM: none, or recreate (a new VM with the same "
                     "name and project on a healthy host, through the Controller, then delete "
                     "the failed one)")
    controller_url: str = option("", help="the Controller's base URL; needed by "
                                          "recovery = recreate")
    controller_token: str = cfg.token_option("token sent as X-Auth-Token to the Controller (never "
                                             "logged): its [controller] token")
    keystone_cloud: str = cfg.keystone_cloud_option("the Controller (recovery = recreate)",
                                                    "controller_token")
    recovery_confirm_s: float = option(
        30.0, min=0, max=3600,
        help="recovery = recreate acts only once the Controller confirms that the VM is in "
             "error and its host down (host_status DOWN or forced down); an alarm not "
             "confirmed within this long is logged and skipped, s")
    profile_file: str = cfg.profile_option()
    coordination_url: str = coordination.url_option()
    heartbeat_timeout_s: float = coordination.heartbeat_option()

    def __post_init__(self) -> None:
        cfg.check_auth("consumer", self.auth_strategy, self.token)
        ks.check_config("consumer", self)
        if self.auth_strategy == cfg.KEYSTONE and not self.keystone_alarm_project_id.strip():
            raise ConfigError("keystone_alarm_project_id: required with auth_strategy = "
                              "keystone; set it in the config file's [consumer] section or "
                              "--keystone-alarm-project-id")
        if not self.path.startswith("/") or any(c.isspace() for c in self.path):
            raise ConfigError(f"path: {self.path!r} must start with / and have no spaces")
        if self.path == "/failures":
            raise ConfigError("path: /failures is the list of notifications; choose another")
        if self.http_server not in HTTP_SERVERS:
            raise ConfigError(f"http_server: {self.http_server!r} is not one of "
                              f"{', '.join(HTTP_SERVERS)}")
        if self.http_server == "aiohttp" and self.auth_strategy == cfg.KEYSTONE:
            raise ConfigError("http_server: aiohttp cannot check Keystone tokens "
                              "(keystonemiddleware is WSGI middleware); with auth_strategy = "
                              "keystone use auto or waitress")
        if self.recovery not in RECOVERY_ACTIONS:
            raise ConfigError(f"recovery: {self.recovery!r} is not one of "
                              f"{', '.join(RECOVERY_ACTIONS)}")
        if self.controller_url and not URL_RE.match(self.controller_url):
            raise ConfigError(f"controller_url: {self.controller_url!r} is not an http(s) URL")
        if self.recovery == "recreate" and not self.controller_url:
            raise ConfigError("controller_url: required when recovery = recreate")

    @property
    def server(self) -> str:
        """The HTTP server that serves the endpoint: aiohttp or waitress (``http_server``)."""
        if self.http_server == "auto":
            return "waitress" if self.auth_strategy == cfg.KEYSTONE else "aiohttp"
        return self.http_server
