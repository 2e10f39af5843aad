"""The VIM server's options (section ``[vim]``): API, database, key file, probing, events.

Probing defaults (1 s interval): a VIM whose host stops answering is UNREACHABLE after at most
about interval + timeout + (misses_before_down - 1) x (suspect_interval + ...) =
1000 + 500 + 2 x 200 + 500 ~ 2.4 s; three misses in a row, so one lost packet is not a verdict.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from doctor import config as cfg
from doctor import coordination
from doctor import keystone as ks
from doctor.config import ConfigError, option
from doctor.store import database_option, state_dir
from monitor.config import parse_ipv4


@dataclass
class VimConfig(ks.KeystoneOptions):
    """Options of the ``[vim]`` section (flags: ``--port`` etc.)."""

    host: str = cfg.host_option()
    port: int = cfg.port_option(9890, "/v1/vims")
    max_body_bytes: int = cfg.body_limit_option()
    auth_strategy: str = cfg.auth_strategy_option()
    token: str = cfg.token_option("clients send it as X-Auth-Token; requests without it get 401 "
                                  "(never logged)")
    database: str = database_option("vim", "the VIM table (PostgreSQL when several "
                                           "servers share it)")
    key_file: str = option(default_factory=lambda: os.path.join(state_dir(), "vim.key"),
                           default_doc="$DOCTOR_STATE_DIR/vim.key",
                           help="Fernet key that encrypts VIM passwords, kept outside the "
                                "database; created (mode 0600) if missing; every server of "
                                "one database needs the same file")
    notifier_url: str = option("", help="the notifier's base URL: status changes are "
                                        "POSTed to <url>/v1/events as vim.status.update "
                                        "events (empty: only logged)")
    notifier_token: str = cfg.token_option("token for the notifier's event intake: its "
                                           "[notifier] token")
    keystone_cloud: str = cfg.keystone_cloud_option("the notifier (notifier_url)",
                                                    "notifier_token")
    event_project_id: str = option(
        "", help="project_id and tenant_id traits of the events (an alarm sees only its "
                 "project's events); empty: the VIM's project_name")
    interval_ms: int = option(1000, min=1, max=3_600_000, help="ICMP probe interval per VIM "
                                                               "address, ms")
    timeout_ms: int = option(500, min=1, max=60_000,
                             help="a probe unanswered for this long is a miss, ms")
    suspect_interval_ms: int = option(200, min=1, max=60_000,
                                      help="re-probe interval after a miss, ms")
    misses_before_down: int = option(3, min=1, max=1000,
                                     help="consecutive misses that make a VIM UNREACHABLE")
    replies_before_up: int = option(2, min=1, max=1000,
                                    help="consecutive replies that make an UNREACHABLE VIM "
                                         "REACHABLE again")
    reference_hosts: list[str] = option(
        [], parse=parse_ipv4,
        help="addresses (e.g. the gateway) pinged to check the server's own link; when all "
             "of them miss, no VIM is declared UNREACHABLE")
    http_check: bool = option(False, help="also GET each VIM's auth_url (any HTTP answer "
                                          "below 500 counts as up); REACHABLE needs both")
    http_interval_s: float = option(10.0, min=0.1, help="HTTP check interval per VIM, s")
    http_timeout_ms: int = option(2000, min=1, max=60_000,
                                  help="timeout of one HTTP check (connect and answer), ms")
    http_workers: int = option(4, min=1, max=64, help="HTTP checks in parallel (one shared "
                                                      "pool, not a thread per VIM)")
    reconcile_interval_ms: int = option(
        1000, min=10, max=60_000,
        help="the manager compares the database with the running monitors this often (and "
             "at once when the API changes a VIM), ms")
    stall_intervals: int = option(5, min=2, max=1000,
                                  help="a monitor whose address was not probed for this "
                                       "many intervals is replaced (new monitor id)")
    full_resync_s: float = option(60.0, min=1, help="full reload of the VIM table, s (in "
                                                    "between, only changed rows are read)")
    coordination_url: str = coordination.url_option()
    heartbeat_timeout_s: float = coordination.heartbeat_option()
    share_group: str = option(
        "", help="share the VIMs with the other doctor-vim servers of this tooz group (a "
                 "consistent hash ring on coordination_url, one database): each VIM is "
                 "monitored by one of them, and a dead server's VIMs are taken over. Empty: "
                 "this server monitors every VIM")
    membership_timeout_s: float = option(
        1.0, min=0.5, max=60, help="share_group: a server that has not heartbeated for this "
                                   "long leaves the ring and its VIMs move to the others, s")

    def __post_init__(self) -> None:
        cfg.check_auth("vim", self.auth_strategy, self.token)
        ks.check_config("vim", self)
        if self.notifier_url and not re.match(r"^https?://[^/\s]+", self.notifier_url):
            raise ConfigError(f"notifier_url: {self.notifier_url!r} is not an http(s) URL")
