"""Where alarm actions may go: the rule every action URL passes before an alarm is stored.

An alarm action is a POST the notifier makes on a client's behalf, so a URL may not point
it at what only the notifier can reach. A URL is ``http://`` or ``https://`` with a host,
at most ``MAX_URL`` characters, without spaces, control characters or backslashes (where
URL parsers disagree on the host). Its host is read as an address first, in every form the
C library's ``inet_aton`` takes (``0x7f000001``, ``2130706433``, ``0177.0.0.1``,
``127.1``), with IPv4 inside IPv6 unwrapped (``::ffff:127.0.0.1``, ``::127.0.0.1``,
``64:ff9b::7f00:1``); a host name is resolved and every address it has must pass.
Refused:

- link-local addresses, 169.254.0.0/16 and fe80::/10, where clouds serve their metadata,
  and the metadata addresses outside them (100.100.100.200, fd00:ec2::254);
- the unspecified 0.0.0.0/8 and ``::``, multicast, broadcast and the reserved 240.0.0.0/4;
- the pipeline's own endpoints: the notifier's own host and port (on a wildcard host, its
  port on any address), and ``action_url_deny``, by default the other parts' default
  ports on loopback (the inspector's 12345, the controller's 12347, the VIM server's 9890).
  An entry on a loopback address stands for every loopback address (127.0.0.0/8, ``::1``),
  one on a wildcard address for any address, one without a port for every port;

unless ``action_url_allow`` holds the address (a CIDR) or names the host: an allowed URL
skips every rule about addresses. Loopback as such is allowed: a consumer on the
notifier's own machine (the sample consumer's default 127.0.0.1:12346, ``doctor run``, the
tests) is the common case; a site that wants none adds ``127.0.0.0/8, ::1`` to
``action_url_deny``.

Names are checked when the alarm is created or updated; the send path checks addresses
again without resolving (a stored alarm from before these rules, a name that resolved
differently then is not caught there).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], list[str]]

MAX_URL = 2048
DEFAULT_DENY = ("127.0.0.1:12345", "127.0.0.1:12347", "127.0.0.1:9890")
_NAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*\.?$")
_BAD_CHARS = re.compile(r"[\s\\\x00-\x1f\x7f]")
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REFUSED: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(net), why) for net, why in (
        ("169.254.0.0/16", "a link-local address (where cloud metadata is served)"),
        ("fe80::/10", "a link-local address (where cloud metadata is served)"),
        ("100.100.100.200/32", "a cloud metadata address"),
        ("fd00:ec2::254/128", "a cloud metadata address"),
        ("0.0.0.0/8", "an unspecified address (this host)"),
        ("::/128", "an unspecified address (this host)"),
        ("224.0.0.0/4", "a multicast address"),
        ("ff00::/8", "a multicast address"),
        ("240.0.0.0/4", "a reserved or the broadcast address"),
    ))


class TargetRefused(ValueError):
    """An action URL that may not be used; the message says why. ``retry`` when the reason
    may pass (a name that could not be resolved just now)."""

    def __init__(self, problem: str, retry: bool = False) -> None:
        super().__init__(problem)
        self.retry = retry


def address_of(host: str) -> Address | None:
    """``host`` as an address, if it is one in any notation a resolver takes; IPv4 inside
    IPv6 is unwrapped. None for a name."""
    host = host[:-1] if host.endswith(".") else host  # resolvers take 127.0.0.1. too
    try:
        address: Address = ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[0-9a-fA-Fx.]+", host):
            return None
        try:  # 0x7f000001, 2130706433, 0177.0.0.1, 127.1: what inet_aton and so urllib3 take
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address):
        value = int(address)
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if value >> 32 == 0 and value > 1:  # IPv4-compatible ::a.b.c.d (not :: nor ::1)
            return ipaddress.IPv4Address(value)
        if address in _NAT64:
            return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return address


def system_resolve(name: str) -> list[str]:
    """Every address ``name`` resolves to (the system's resolver)."""
    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class Endpoint:
    """Addresses (or a host name) and a port (None: every port)."""

    networks: tuple[Network, ...] = ()
    any_address: bool = False
    name: str | None = None
    port: int | None = None

    def matches(self, address: Address | None, name: str | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.name is not None:
            return name == self.name
        return address is not None and (self.any_address
                                        or any(address in net for net in self.networks))


def _host_entry(text: str, port: int | None, what: str) -> Endpoint:
    text = text.strip().lower()
    if not text:
        raise ValueError(f"empty {what}")
    address = address_of(text) if "/" not in text else None
    if address is None and "/" not in text:
        if not _NAME.match(text):
            raise ValueError(f"{text!r} is not an address, a CIDR or a host name")
        return Endpoint(name=text.rstrip("."), port=port)
    try:
        network = ipaddress.ip_network(text, strict=False) if address is None \
            else ipaddress.ip_network(address)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a CIDR: {exc}") from None
    if network.num_addresses == 1 and network.network_address.is_unspecified:
        return Endpoint(any_address=True, port=port)
    if network.num_addresses == 1 and network.network_address.is_loopback:
        return Endpoint(networks=_LOOPBACK, port=port)
    return Endpoint(networks=(network,), port=port)


def parse_allow(text: str) -> Endpoint:
    """An ``action_url_allow`` entry: a CIDR, an address or a host name."""
    return _host_entry(text, None, "action_url_allow entry")


def parse_endpoint(text: str) -> Endpoint:
    """An ``action_url_deny`` entry: ``HOST[:PORT]``, ``[IPv6][:PORT]``, a CIDR or a name."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    port = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: the port must be 1-65535")
        port = int(port_text)
    return _host_entry(host, port, "action_url_deny entry")


def check_entry(parse: Callable[[str], Endpoint]) -> Callable[[str], str]:
    """A config ``parse`` function: the entry itself, once ``parse`` has accepted it."""
    def check(text: str) -> str:
        parse(text)
        return text.strip()

    return check


class ActionTargets:
    """The rule above, with its allow and deny lists; ``resolve`` None resolves no name."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = DEFAULT_DENY,
                 own: Iterable[str] = (), resolve: Resolver | None = system_resolve) -> None:
        self.allow = [parse_allow(entry) for entry in allow]
        self.deny = [parse_endpoint(entry) for entry in deny]
        self.own = [parse_endpoint(entry) for entry in own]
        self.resolve = resolve

    def listening_at(self, host: str, port: int) -> None:
        """The notifier's own endpoint (once its port is known): actions may not go there."""
        bracketed = f"[{host}]" if ":" in host else host
        self.own = [parse_endpoint(f"{bracketed}:{port}")]

    def check(self, url: str, resolve: bool = True) -> str:
        """``url`` stripped, if an alarm action may go there; else TargetRefused saying why."""
        url = url.strip()
        if len(url) > MAX_URL:
            raise TargetRefused(f"longer than {MAX_URL} characters")
        if _BAD_CHARS.search(url):
            raise TargetRefused("has spaces, control characters or backslashes")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise TargetRefused(f"not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https"):
            raise TargetRefused(f"unsupported action scheme {parts.scheme or '(none)'!r}: "
                                "this notifier sends http:// and https:// actions only")
        host = parts.hostname
        if not host:
            raise TargetRefused("the URL has no host")
        port = port if port is not None else (443 if parts.scheme == "https" else 80)
        address = address_of(host)
        name = None if address is not None else host.rstrip(".")
        if name is not None:
            if not _NAME.match(host):
                raise TargetRefused(f"{host!r} is neither an address nor an ASCII host name "
                                    "(give IDN names in punycode, xn--...)")
            if any(entry.name == name for entry in self.allow):
                return url
            self._refuse_endpoint(None, name, port, host)
        if address is not None:
            addresses = [address]
        elif resolve and self.resolve is not None and name is not None:
            addresses = self._addresses(name)
        else:
            addresses = []
        for found in addresses:
            self._refuse_address(found, port, host)
        return url

    def _addresses(self, name: str) -> list[Address]:
        assert self.resolve is not None
        try:
            found = self.resolve(name)
        except socket.gaierror as exc:
            again = exc.errno == socket.EAI_AGAIN
            raise TargetRefused(f"host {name!r} does not resolve ({exc.strerror})",
                                retry=again) from None
        except (OSError, UnicodeError) as exc:
            raise TargetRefused(f"host {name!r} does not resolve ({exc})") from None
        addresses = [a for a in (address_of(text.split("%")[0]) for text in found) if a]
        if not addresses:
            raise TargetRefused(f"host {name!r} does not resolve to an address")
        return addresses

    def _refuse_endpoint(self, address: Address | None, name: str | None, port: int,
                         shown: str) -> None:
        for entry in self.own:
            if entry.matches(address, name, port):
                raise TargetRefused(f"{shown} port {port} is the notifier's own API")
        for entry in self.deny:
            if entry.matches(address, name, port):
                raise TargetRefused(f"{shown} port {port} is refused by action_url_deny "
                                    "(the pipeline's own APIs)")

    def _refuse_address(self, address: Address, port: int, host: str) -> None:
        if any(entry.matches(address, None, port) for entry in self.allow):
            return
        shown = host if str(address) == host else f"{host} ({address})"
        self._refuse_endpoint(address, None, port, shown)
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise TargetRefused(f"{shown} has a zone: a link-local address")
        for network, why in _REFUSED:
            if address.version == network.version and address in network:
                raise TargetRefused(f"{shown} is {why}; add it to action_url_allow to "
                                    "permit it")
