"""The Inspector's options (section ``[inspector]``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from doctor import config as cfg
from doctor import coordination, drivers
from doctor import keystone as ks
from doctor.config import ConfigError, option
from doctor.store import database_option


@dataclass
class InspectorConfig(ks.KeystoneOptions):
    """Options of the ``[inspector]`` section (flags: ``--port`` etc.)."""

    host: str = cfg.host_option()
    port: int = cfg.port_option(12345)
    max_body_bytes: int = cfg.body_limit_option()
    auth_strategy: str = cfg.auth_strategy_option()
    token: str = cfg.token_option("clients (monitors, the controller) send it as X-Auth-Token; "
                                  "requests without it get 401 (never logged)")
    database: str = database_option("inspector", "the event log (accepted events are "
                                                 "stored here before the 202)")
    controller: str = option("embedded", help="controller driver (entry points "
                                              "doctor.controller: embedded, nova)")
    controller_url: str = option("http://127.0.0.1:12347",
                                 help="the embedded controller's REST API")
    controller_token: str = cfg.token_option("token for the controller's API: its [controller] "
                                             "token")
    nova_cloud: str = option("", help="controller=nova: the clouds.yaml entry to use; empty: "
                                      "the OS_* variables")
    nova_noauth_url: str = option("", help="controller=nova on a test cloud without Keystone: "
                                           "Nova's endpoint (e.g. http://127.0.0.1:8774/v2.1)")
    os_project_id: str = option("", help="project id sent as X-Project-Id without Keystone")
    os_user_id: str = option("", help="user id sent as X-User-Id without Keystone")
    nova_microversion: str = option("auto", help="Nova API microversion; auto: the newest "
                                                 "both sides speak (2.16 at least)")
    nova_transport_url: str = option(
        "", secret=True, help="controller=nova: oslo.messaging URL of Nova's notification bus; the "
                 "inspector listens to compute.instance.* there to keep its host map fresh "
                 "(empty: only the periodic resync)")
    nova_listener_pool: str = option(
        "", default_doc="doctor-inspector-HOSTNAME-PORT",
        help="controller=nova: the listener's pool, i.e. its own queue of Nova's "
             "notifications. Every inspector needs a pool of its own: inspectors sharing one "
             "would each get a share of the notifications and miss the rest. Stable across "
             "restarts, so what was notified while an inspector was down is still delivered")
    notifier: str = option("http", help="notifier driver (entry points doctor.notifier; http: "
                                        "the embedded notifier's POST /v1/events; aodh: "
                                        "oslo.messaging straight to Aodh's listener)")
    aodh_transport_url: str = option(
        "", secret=True, help="notifier=aodh: oslo.messaging transport URL "
                              "(rabbit://user:password@host:5672/vhost)")
    aodh_topic: str = option("alarm.all", help="notifier=aodh: the topic Aodh's listener "
                                               "consumes (priority sample)")
    notifier_url: str = option("http://127.0.0.1:8042", help="the notifier's base URL")
    notifier_token: str = cfg.token_option("token for the notifier's event intake: its "
                                           "[notifier] token")
    keystone_cloud: str = cfg.keystone_cloud_option(
        "the embedded controller (controller = embedded) and the embedded notifier "
        "(notifier = http)", "controller_token and notifier_token")
    shortcut: bool = option(True, help="publish compute.instance.update (state error) for "
                                       "every VM of a failed host at once, in parallel with "
                                       "the controller calls (Doctor's shortcut); false: "
                                       "only the controller's own notifications tell the "
                                       "notifier (the conservative path)")
    max_events_per_request: int = cfg.max_events_option("PUT /events or POST /v1/events")
    event_max_future_s: float = option(
        300.0, min=0, max=86_400,
        help="a host event whose time is further ahead of the inspector's clock is refused "
             "(400 naming time): a monitor's clock that far off, or a forged time, s")
    event_max_age_s: float = option(
        86_400.0, min=60, max=365 * 86_400.0,
        help="a host event older than this is refused (400 naming time): too late to act "
             "on, s")
    workers: int = option(32, min=1, max=1024,
                          help="controller calls in parallel (force-down, VM resets)")
    call_timeout_ms: int = option(5000, min=1, help="timeout of one controller call, ms")
    call_retry_for_s: float = option(
        300.0, min=0, help="a controller call that fails for a reachable reason (5xx, refused "
                           "connection) is retried with backoff this long, then logged as "
                           "failed with the VM and the error, s")
    resync_interval_s: float = option(60.0, min=0, help="full reload of the host->VM map from "
                                                        "the controller, s (0: never)")
    event_retention_s: float = option(
        7 * 86400.0, min=60.0,
        help="finished events done longer ago than this leave the event log, s (checked "
             "hourly; never an unfinished event, nor a host's latest one)")
    profile_file: str = cfg.profile_option()
    coordination_url: str = coordination.url_option()
    heartbeat_timeout_s: float = coordination.heartbeat_option()

    @property
    def call_timeout_s(self) -> float:
        """``call_timeout_ms`` in seconds, as the drivers take it."""
        return self.call_timeout_ms / 1000.0

    def __post_init__(self) -> None:
        cfg.check_auth("inspector", self.auth_strategy, self.token)
        ks.check_config("inspector", self)
        for name, namespace in (("controller", drivers.CONTROLLER),
                                ("notifier", drivers.NOTIFIER)):
            known = drivers.names(namespace)
            if getattr(self, name) not in known:
                raise ConfigError(f"{name}: unknown driver {getattr(self, name)!r}; known: "
                                  f"{', '.join(known) or 'none (is the project installed?)'}")
        if self.notifier == "aodh" and not self.aodh_transport_url:
            raise ConfigError("aodh_transport_url: required with notifier = aodh")
        for name in ("controller_url", "notifier_url"):
            if not re.match(r"^https?://[^/\s]+", getattr(self, name)):
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not an http(s) URL")
