"""The Monitor's options: one place, with units and defaults.

Detection timing with the defaults: a host that stops answering is first
missed ``timeout_ms`` after the next probe (sent within ``interval_ms``), then
re-probed every ``suspect_interval_ms``; the ``misses_before_down``-th
consecutive miss makes it down. Worst case: interval + 2 x timeout +
(misses - 2) x suspect interval = 50 + 80 + 30 = 160 ms. A false down needs
five probes in a row lost: at 5 % random loss, p = 0.05**5 per probe.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from doctor import coordination
from doctor.config import (
    ConfigError,
    keystone_cloud_option,
    option,
    profile_option,
    token_option,
)

HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,253})$")


@dataclass(frozen=True)
class Target:
    """A host to watch: the name the Inspector knows it by, and the address to ping."""

    hostname: str
    address: str


def parse_ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not an IPv4 address") from None


def parse_target(text: str) -> Target:
    """``hostname=address`` (e.g. ``compute-1=198.18.0.10``)."""
    name, sep, address = text.strip().partition("=")
    name = name.strip()
    if not sep or not name or not address.strip():
        raise ValueError(f"{text.strip()!r} is not hostname=address (e.g. compute-1=198.18.0.10)")
    if not HOSTNAME_RE.match(name):
        raise ValueError(f"{name!r} is not a valid host name")
    return Target(hostname=name, address=parse_ipv4(address))


@dataclass
class MonitorConfig:
    """Options of the ``[monitor]`` section (flags: ``--interval-ms`` etc.)."""

    name: str = option(default_factory=socket.gethostname, default_doc="the host name",
                       help="monitor name, sent in every event")
    inspector_url: str = option(
        "", help="Inspector base URL: events go to PUT <url>/events. Empty: events are "
                 "printed to stdout as JSON lines")
    inspector_token: str = token_option("token sent as X-Auth-Token to the Inspector (never "
                                        "logged): the Inspector's [inspector] token")
    keystone_cloud: str = keystone_cloud_option("the Inspector", "inspector_token")
    targets: list[Target] = option(
        [], parse=parse_target,
        help="hosts to watch, hostname=address, comma separated; also the [targets] "
             "section (hostname = address) and --target")
    reference_hosts: list[str] = option(
        [], parse=parse_ipv4,
        help="addresses (e.g. the gateway) pinged to check the monitor's own link; when "
             "all of them miss, the monitor suspects itself and reports no host down")
    interval_ms: int = option(50, min=1, max=3_600_000, help="probe interval per host, ms")
    timeout_ms: int = option(40, min=1, max=60_000,
                             help="a probe unanswered for this long is a miss, ms")
    suspect_interval_ms: int = option(10, min=1, max=60_000,
                                      help="re-probe interval while a host is suspect, ms")
    misses_before_down: int = option(5, min=1, max=1000,
                                     help="consecutive misses that make a host down")
    replies_before_up: int = option(3, min=1, max=1000,
                                    help="consecutive replies that bring a down host back up")
    self_suspect_fraction: float = option(
        0.5, min=0.0, max=1.0,
        help="without reference_hosts: when this fraction of the hosts not already down "
             "(and at least self_suspect_min_hosts) is suspect at once, the monitor doubts "
             "its own link and holds their down verdicts")
    self_suspect_min_hosts: int = option(4, min=1, help="see self_suspect_fraction")
    max_loop_lag_ms: int = option(
        30, min=1, help="if the probe loop wakes this late (CPU starvation, a pause), probes "
                        "that timed out meanwhile are not counted as misses, ms")
    event_timeout_ms: int = option(2000, min=1, help="timeout of one HTTP event delivery, ms")
    retry_initial_ms: int = option(50, min=1, help="first retry delay of an event delivery, ms")
    retry_max_ms: int = option(1000, min=1,
                               help="retry delay cap; retries go on until the event is "
                                    "accepted (2xx) or refused (4xx), ms")
    profile_file: str = profile_option()
    coordination_url: str = coordination.url_option()
    heartbeat_timeout_s: float = coordination.heartbeat_option()
    share_group: str = option(
        "", help="share the targets with the other monitors of this tooz group (a consistent "
                 "hash ring on coordination_url): each target is probed by one of them. "
                 "Empty: this monitor probes every target")
    membership_timeout_s: float = option(
        1.0, min=0.5, max=60, help="share_group: a monitor that has not heartbeated for this "
                                   "long leaves the ring and its targets move to the others "
                                   "(the file backend rounds it up to whole seconds), s")
    reload_interval_s: float = option(
        1.0, min=0.1, max=3600, help="how often the config file is checked for a changed "
                                     "target list (applied without a restart), s")

    def __post_init__(self) -> None:
        seen_names: set[str] = set()
        seen_addresses: dict[str, str] = {}
        for target in self.targets:
            if target.hostname in seen_names:
                raise ConfigError(f"targets: host {target.hostname!r} is listed twice")
            if target.address in seen_addresses:
                raise ConfigError(f"targets: {target.hostname!r} and "
                                  f"{seen_addresses[target.address]!r} share {target.address}")
            seen_names.add(target.hostname)
            seen_addresses[target.address] = target.hostname
        if not self.name or any(c.isspace() for c in self.name):
            raise ConfigError(f"name: {self.name!r} must be non-empty, without spaces")
        if self.inspector_url and not re.match(r"^https?://[^/\s]+", self.inspector_url):
            raise ConfigError(f"inspector_url: {self.inspector_url!r} is not an http(s) URL")
