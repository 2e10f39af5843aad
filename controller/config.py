"""The embedded Controller's options (``[controller]``; flags ``--port`` etc.)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from doctor import config as cfg
from doctor import coordination
from doctor import keystone as ks
from doctor.config import ConfigError, option

URL_RE = re.compile(r"^https?://[^/\s]+")


def _default_database() -> str:
    # Imported here: doctor.store pulls in SQLAlchemy, which the client commands do not need.
    from doctor.store import default_url

    return default_url("controller")


@dataclass
class ControllerConfig(ks.KeystoneOptions):
    """Options of the ``[controller]`` section."""

    host: str = cfg.host_option()
    port: int = cfg.port_option(12347)
    max_body_bytes: int = cfg.body_limit_option()
    database: str = option(
        default_factory=_default_database,
        default_doc="sqlite:///$DOCTOR_STATE_DIR/controller.db (/var/lib/doctor)",
        help="SQLAlchemy URL of the inventory (SQLite or PostgreSQL)")
    auth_strategy: str = cfg.auth_strategy_option()
    token: str = cfg.token_option("clients (the inspector, the consumer, the CLI) send it as "
                                  "X-Auth-Token; requests without it get 401 (never logged)")
    notify_urls: list[str] = option(
        [], help="base URLs whose /v1/events receive every instance event (e.g. the "
                 "Notifier and the Inspector), comma separated")
    notify_token: str = cfg.token_option("token sent as X-Auth-Token with the events (never "
                                         "logged): the receivers' token")
    keystone_cloud: str = cfg.keystone_cloud_option("notify_urls", "notify_token")
    coordination_url: str = coordination.url_option()
    heartbeat_timeout_s: float = coordination.heartbeat_option()

    def __post_init__(self) -> None:
        cfg.check_auth("controller", self.auth_strategy, self.token)
        ks.check_config("controller", self)
        for url in self.notify_urls:
            if not URL_RE.match(url):
                raise ConfigError(f"notify_urls: {url!r} is not an http(s) URL")
        if not self.database.strip():
            raise ConfigError("database: must be a SQLAlchemy URL, e.g. sqlite:///controller.db")
