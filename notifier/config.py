"""The embedded Notifier's options (section ``[notifier]``): one place, with units and defaults.

Port 8042 is Aodh's, so a VNFM's aodhclient set-up works unchanged against either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from doctor import config as cfg
from doctor import coordination
from doctor import keystone as ks
from doctor.config import ConfigError, option
from doctor.store import database_option
from notifier.targets import DEFAULT_DENY, check_entry, parse_allow, parse_endpoint


@dataclass
class NotifierConfig(ks.KeystoneOptions):
    """Options of the ``[notifier]`` section (flags: ``--port`` etc.)."""

    host: str = cfg.host_option()
    port: int = cfg.port_option(8042, "Aodh's /v2/alarms and POST /v1/events")
    max_body_bytes: int = cfg.body_limit_option()
    database: str = database_option("notifier", "the alarm store (sqlite:///PATH or "
                                                "postgresql+psycopg://...)")
    auth_strategy: str = cfg.auth_strategy_option(
        "the API (/v2 and POST /v1/events)",
        "token: a /v2 caller is whoever its token is (token, api_tokens_file); noauth: "
        "whoever X-User-Id, X-Project-Id, X-Roles say, as in Aodh's noauth mode")
    token: str = cfg.token_option(
        "the service's token (the inspector, the controller, doctor-vim send it as "
        "X-Auth-Token): the only one POST /v1/events accepts; on /v2 it acts as admin of "
        "project service (never logged)")
    api_tokens_file: str = option(
        "", help="with auth_strategy = token: an INI file (mode 0600) of the /v2 callers, one "
                 "section per caller with token, user_id, project_id, roles (comma "
                 "separated); a request whose X-Auth-Token is one of them acts as that user "
                 "in that project. X-User-Id, X-Project-Id, X-Roles are then ignored")
    action_secret: str = cfg.token_option(
        "sign every alarm action: X-Doctor-Signature: sha256=<HMAC-SHA256 of the body under "
        "this secret, hex> (the consumer's alarm_secret); empty: unsigned (never logged)")
    nova_transport_url: str = option(
        "", secret=True,
        help="oslo.messaging URL of Nova's notification bus: the notifier then evaluates "
             "Nova's compute.instance.* notifications against its alarms itself, as "
             "Ceilometer would turn them into events for Aodh (a cloud without Telemetry; the "
             "conservative path); empty: only the events posted to /v1/events")
    nova_listener_pool: str = option(
        "", default_doc="doctor-notifier-HOSTNAME-PORT",
        help="with nova_transport_url: the listener's pool, i.e. its own queue of Nova's "
             "notifications (stable across restarts, so what Nova said meanwhile is still "
             "delivered)")
    max_events_per_request: int = cfg.max_events_option("POST /v1/events")
    project_alarm_quota: int = option(
        10_000, min=1, max=10_000_000,
        help="most alarms one project may have (Aodh's project_alarm_quota); creating one "
             "more is a 403")
    alarm_max_actions: int = option(
        10, min=1, max=1000,
        help="most URLs in each of an alarm's alarm_actions, ok_actions and "
             "insufficient_data_actions (Aodh's alarm_max_actions); more is a 400")
    action_url_allow: list[str] = option(
        [], parse=check_entry(parse_allow),
        help="CIDRs or host names that alarm actions may target even where the rules refuse "
             "them (link-local and metadata addresses, unspecified, multicast, the "
             "pipeline's own APIs), comma separated; empty: the rules alone decide")
    action_url_deny: list[str] = option(
        list(DEFAULT_DENY), parse=check_entry(parse_endpoint),
        help="HOST[:PORT] or CIDR entries alarm actions may not target, besides the "
             "notifier's own host and port: the pipeline's other APIs (by default the "
             "inspector's, the controller's and the VIM server's default ports on "
             "loopback; a loopback entry stands for every loopback address); add "
             "127.0.0.0/8, ::1 to refuse loopback consumers altogether")
    action_timeout_ms: int = option(2000, min=1, max=600_000,
                                    help="timeout of one alarm action POST, ms")
    action_retry_for_s: float = option(
        60.0, min=0, max=86_400,
        help="a failed alarm action POST (connection error, timeout, 5xx) is retried with "
             "backoff for this long, then logged as lost; 4xx is final, s")
    action_retry_initial_ms: int = option(50, min=1, max=600_000,
                                          help="first retry delay of an alarm action, ms")
    action_retry_max_ms: int = option(2000, min=1, max=600_000,
                                      help="retry delay cap of an alarm action, ms")
    action_workers: int = option(16, min=1, max=1024,
                                 help="alarm action POSTs in flight at once")
    profile_file: str = cfg.profile_option("latency checkpoints T07 (evaluated event) and T08 "
                                           "(fired alarm)")
    coordination_url: str = coordination.url_option()
    heartbeat_timeout_s: float = coordination.heartbeat_option()

    def __post_init__(self) -> None:
        cfg.check_auth("notifier", self.auth_strategy, self.token)
        ks.check_config("notifier", self)
        if not self.host.strip():
            raise ConfigError("host: must not be empty")
        if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", self.database):
            raise ConfigError(f"database: {self.database!r} is not an SQLAlchemy URL "
                              "(e.g. sqlite:////var/lib/doctor/notifier.db)")
        if self.action_retry_max_ms < self.action_retry_initial_ms:
            raise ConfigError(f"action_retry_max_ms: {self.action_retry_max_ms} is below "
                              f"action_retry_initial_ms ({self.action_retry_initial_ms})")
