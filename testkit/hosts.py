"""Test hosts as network namespaces: the one tool tests, benchmarks and scripts use to make them.

A monitor has to be tested against hosts that really stop answering, so every test host is a
network namespace hanging off a bridge in the root namespace, and faults are real: the host's
link goes down, nftables drops a share of its echo requests, or a userspace responder answers
them late (this kernel has no netem). The rules of docs/ARCHITECTURE.md, "Network safety for
tests", are enforced here, not left to callers:

- every address is inside ``TEST_RANGE`` (198.18.0.0/15, reserved for benchmarks); anything
  else is refused before a command runs;
- a blackhole route for the whole range is put in the root namespace before anything else and
  never removed, so a probe to a host whose namespace is gone is dropped, never routed out;
- namespaces get no default route: a test host can reach its own /24 and nothing else;
- every command has a timeout, every process started here is bounded and stopped on cleanup,
  and cleanup runs also when the body of a ``with`` block raised.

Names: a network is ``<prefix><index>`` (e.g. ``dt0``); its namespaces are
``<prefix><index>-<host>``, its bridge ``<prefix><index>br`` and its root-side veths
``<prefix><index>v<number>``, so ``cleanup_prefix`` finds exactly these objects after a crash.
The index (0..255) selects the subnet 198.18.<index>.0/24 and is exclusive on the machine,
whatever the prefix: ``setup`` refuses an index whose subnet is already routed.

Not thread-safe: one network is driven from one thread.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

TEST_RANGE = "198.18.0.0/15"
_TEST_NETWORK = ipaddress.ip_network(TEST_RANGE)
# Address blocks for scale runs live in the upper half of the range; the lower half is taken
# by the 256 per-index /24 subnets. A /18 holds 16,384 addresses, so only four blocks fit:
# index % 4 is preferred, the next free one taken when it is in use (see block_candidates).
_BLOCK_SUPERNET = ipaddress.ip_network("198.19.0.0/16")
BLOCK_PREFIXLEN = 18
BLOCK_COUNT = 2 ** (BLOCK_PREFIXLEN - _BLOCK_SUPERNET.prefixlen)
# Usable addresses of a block: its network address and its last address are skipped.
BLOCK_CAPACITY = 2 ** (32 - BLOCK_PREFIXLEN) - 2

STATE_DIR = Path("/run/doctor-testhosts")
IFNAME = "eth0"
MONITOR_OCTET = 1
FIRST_HOST_OCTET = 10
LAST_HOST_OCTET = 254
MAX_HOSTS = LAST_HOST_OCTET - FIRST_HOST_OCTET + 1
COMMAND_TIMEOUT_S = 30.0
RESPONDER_READY_TIMEOUT_S = 10.0
# A responder asked to stop first sends what it already scheduled (up to 1.5 s, see
# echo_responder.DRAIN_MAX_S), so stopping waits a little longer than that before SIGKILL.
STOP_TIMEOUT_S = 2.5
# Concurrent `ip` processes when configuring many hosts: enough to hide process start-up,
# few enough not to starve a small machine.
SETUP_WORKERS = 8

# ICMP echo replies are not in net.ipv4.icmp_ratemask (6168 = unreachable, source quench, time
# exceeded, parameter problem), so neither limit applies to them (measured: 5,000 echoes at
# ~60k/s all answered with the defaults). They do apply to the ICMP errors a host sends, which
# a test of unreachable targets may count, so both are lifted in every test namespace.
NAMESPACE_SYSCTLS = {
    "net.ipv4.icmp_ratelimit": "0",
    "net.ipv4.icmp_msgs_per_sec": "1000000",
    "net.ipv4.icmp_msgs_burst": "1000000",
}

_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,19}$")
_PREFIX = re.compile(r"^[a-z]{1,5}$")
_RESERVED_HOST_NAMES = {"monitor"}
# Errors that mean "it is already gone": cleanup is idempotent and ignores them.
_GONE = ("Cannot find device", "No such device", "No such file or directory",
         "No such process", "does not exist", "not found")
# Every root-side link of a network joins one link group, so cleanup deletes them all with one
# `ip link del group` (one kernel batch: ~30 ms for 100 veths, where deleting them one by one
# waits for an RCU grace period each, ~12 ms apiece). The group is derived from prefix and
# index, so that it is this network's alone: 0x7E, 16 bits of the prefix's CRC, the index.
_LINK_GROUP_TAG = 0x7E000000
# cleanup_prefix regroups the leftovers it found under 0x7F + 24 bits of its pid.
_CLEANUP_GROUP_TAG = 0x7F000000
# Responders meant to outlive this process: their Popen objects are kept, not collected, so that
# Python does not warn that a child is "still running" (it is, on purpose).
_DETACHED_RESPONDERS: list[subprocess.Popen[str]] = []


class TestHostError(RuntimeError):
    """A test-host operation failed; the message names the command and quotes its stderr."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass
class TestHost:
    """One test host: a namespace whose ``ifname`` holds ``address``, reachable from the root."""

    __test__ = False

    name: str
    netns: str
    address: str
    ifname: str
    root_ifname: str = ""  # the veth end in the root namespace, a port of the bridge


def assert_in_test_range(address: str) -> None:
    """Refuse an address or network outside TEST_RANGE: the safety rule nothing may bypass."""
    try:
        network = ipaddress.ip_network(address, strict=False)
    except ValueError as error:
        raise TestHostError(f"not an IPv4 address or network: {address!r}") from error
    if network.version != 4 or not network.subnet_of(_TEST_NETWORK):  # type: ignore[arg-type]
        raise TestHostError(
            f"refusing {address}: test traffic may only go to {TEST_RANGE} (network safety rule)"
        )


def _has_net_admin() -> bool:
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return True  # cannot tell: let the first command say so
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 12))  # CAP_NET_ADMIN = 12
    return True


def require_root() -> None:
    """Fail early and clearly where namespaces cannot be made (a developer's laptop, no root)."""
    if os.geteuid() != 0:
        raise TestHostError(
            f"test hosts need root (CAP_NET_ADMIN): running as uid {os.geteuid()}; "
            "network namespaces, veths and bridges cannot be created without it"
        )
    if not _has_net_admin():
        raise TestHostError(
            "test hosts need root (CAP_NET_ADMIN): root here lacks CAP_NET_ADMIN "
            "(a container without --cap-add NET_ADMIN?)"
        )


def _format_command(argv: Sequence[str]) -> str:
    return " ".join(argv)


def run_command(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    timeout_s: float = COMMAND_TIMEOUT_S,
    ignore_gone: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run one command with a timeout; a failure becomes TestHostError with command and stderr.

    ``ignore_gone`` lets cleanup treat "no such device/namespace/route" as success.
    """
    try:
        result = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as error:
        raise TestHostError(f"command not found: {argv[0]} (needed for test hosts)") from error
    except subprocess.TimeoutExpired as error:
        raise TestHostError(
            f"command timed out after {timeout_s:g} s: {_format_command(argv)}"
        ) from error
    if result.returncode != 0:
        stderr = result.stderr.strip()
        if ignore_gone and any(marker in stderr for marker in _GONE):
            return result
        detail = f"\n  input:\n{stdin}" if stdin and len(stdin) < 2000 else ""
        raise TestHostError(
            f"command failed (exit {result.returncode}): {_format_command(argv)}\n"
            f"  stderr: {stderr or '(empty)'}{detail}"
        )
    return result


def ip_batch(lines: Iterable[str], *, netns: str | None = None, force: bool = False) -> None:
    """Run many ``ip`` commands in one process (``ip -batch``): ~100 hosts in milliseconds."""
    script = "".join(f"{line}\n" for line in lines)
    if not script:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else [])
    try:
        run_command(argv + ["-batch", "-"], stdin=script)
    except TestHostError:
        if not force:
            raise


def _root_routes(destination: str) -> list[dict[str, Any]]:
    output = run_command(
        ["ip", "-j", "route", "show", "table", "main", "exact", destination]
    ).stdout.strip()
    return json.loads(output) if output else []


def ensure_blackhole() -> None:
    """Blackhole TEST_RANGE in the root namespace (idempotent; never removed: the safety net)."""
    if any(route.get("type") == "blackhole" for route in _root_routes(TEST_RANGE)):
        return
    # `replace` also turns a real route for the range, should one exist, into the blackhole.
    run_command(["ip", "route", "replace", "blackhole", TEST_RANGE])


def napi_threads() -> list[int]:
    """PIDs of the kernel's threaded-NAPI threads (``napi/DEV-N``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", encoding="utf-8") as handle:
                    if handle.read().startswith("napi/"):
                        pids.append(int(entry))
            except OSError:
                continue  # gone meanwhile
    return pids


def thread_cpu_s(pids: Iterable[int]) -> float:
    """utime + stime of these processes or threads, s (0 for one that is gone)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def netns_names() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    output = run_command(["ip", "-j", "netns", "list"]).stdout.strip()
    return [entry["name"] for entry in json.loads(output)] if output else []


def link_names() -> list[str]:
    """Names of the links of the root namespace."""
    output = run_command(["ip", "-j", "link", "show"]).stdout.strip()
    return [entry["ifname"] for entry in json.loads(output)] if output else []


def _validate_prefix(prefix: str) -> None:
    if not _PREFIX.match(prefix):
        raise TestHostError(
            f"bad prefix {prefix!r}: 1 to 5 lowercase letters (it starts every interface name, "
            "which the kernel limits to 15 characters)"
        )


def _validate_index(index: int) -> None:
    if not isinstance(index, int) or not 0 <= index <= 255:
        raise TestHostError(f"bad index {index!r}: 0..255 (it selects 198.18.<index>.0/24)")


def validate_host_name(name: str) -> None:
    """Host names become namespace names and appear in events: keep them short and plain."""
    if not isinstance(name, str) or not _HOST_NAME.match(name):
        raise TestHostError(
            f"bad host name {name!r}: use letters, digits and '-', start with a letter or "
            "digit, at most 20 characters"
        )
    if name in _RESERVED_HOST_NAMES:
        raise TestHostError(f"bad host name {name!r}: reserved (the CLI prints a monitor line)")


def state_path(prefix: str, index: int) -> Path:
    """Where the CLI keeps what a network consists of between invocations."""
    return STATE_DIR / f"{prefix}{index}.json"


def _responder_log(netns: str) -> Path:
    """Where a detached echo responder (started by the CLI) writes its errors."""
    return STATE_DIR / f"{netns}-responder.log"


def _is_echo_responder(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"testkit.echo_responder" in cmdline


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, reaped here if it is our child, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists": reap it if it is ours, else look at its state.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _stop_pid(pid: int) -> None:
    """SIGTERM an echo responder by pid (checking it is one: pids are reused), then SIGKILL."""
    if not _is_echo_responder(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _stop_process(process: subprocess.Popen[Any]) -> None:
    """Terminate a child and reap it, bounded: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


class TestHostNetwork:
    """A bridge in the root namespace plus hosts as namespaces hanging off it.

    ``with TestHostNetwork("dt", 3) as net: net.add_hosts(["compute-1"])`` gives a host at
    198.18.3.10 that answers pings from the root namespace (198.18.3.1, ``monitor_address``),
    and removes everything again when the block ends, also on an exception.
    """

    __test__ = False

    def __init__(self, prefix: str = "dt", index: int = 0) -> None:
        _validate_prefix(prefix)
        _validate_index(index)
        self.prefix = prefix
        self.index = index
        self.name = f"{prefix}{index}"
        self.subnet = ipaddress.ip_network(f"198.18.{index}.0/24")
        assert_in_test_range(str(self.subnet))
        self.monitor_address = str(self.subnet.network_address + MONITOR_OCTET)
        self.bridge = f"{self.name}br"
        self.link_group = (
            _LINK_GROUP_TAG | (zlib.crc32(prefix.encode()) & 0xFFFF) << 8 | index
        )
        self.hosts: dict[str, TestHost] = {}
        # The scale block of add_address_block, as a CIDR, and the host that answers for it.
        self.address_block: str | None = None
        self.address_block_host: str | None = None
        self.block_threads: list[int] = []  # add_address_block(own_thread=True)'s kernel thread
        # Set by the CLI: responders must outlive the process that started them.
        self.detach_responders = False
        self._next_number = 0
        # What this object created (recorded before the creating command runs), for cleanup.
        self._own_bridge = False
        self._own_netns: list[str] = []
        self._own_links: list[str] = []
        self._own_route: str | None = None
        self._responders: dict[str, subprocess.Popen[str]] = {}
        self._responder_pids: dict[str, int] = {}  # responders started by an earlier process
        self._processes: list[subprocess.Popen[Any]] = []

    # -- life cycle -------------------------------------------------------------------------

    def setup(self) -> None:
        """Blackhole TEST_RANGE first, then the bridge with ``monitor_address``/24 on it."""
        require_root()
        ensure_blackhole()
        if self._own_bridge:
            return
        in_use = _root_routes(str(self.subnet))
        if in_use:
            device = in_use[0].get("dev", "?")
            raise TestHostError(
                f"subnet {self.subnet} of index {self.index} is in use (route via {device}): "
                "another test network has this index; pick another index, or remove leftovers "
                "with cleanup_prefix() / `destroy`"
            )
        # A fixed MAC: a bridge otherwise takes its lowest port's MAC, which changes as hosts
        # are added.
        mac = f"02:64:74:00:{self.index:02x}:01"
        run_command(["ip", "link", "add", self.bridge, "address", mac,
                     "group", str(self.link_group), "type", "bridge"])
        self._own_bridge = True
        ip_batch([
            f"addr add {self.monitor_address}/{self.subnet.prefixlen} dev {self.bridge}",
            f"link set {self.bridge} up",
        ])

    def __enter__(self) -> TestHostNetwork:
        try:
            self.setup()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Remove everything this network made; idempotent, quiet about what is already gone.

        Order matters: processes first (they hold their namespace open), then the root route
        of the address block, the bridge and veths as one link group (deleting one end of a
        veth deletes both, synchronously, whereas a deleted namespace frees its devices later),
        then the namespaces. Every step is tried; what failed or is still there afterwards is
        reported as one TestHostError.
        """
        problems: list[str] = []
        for name in list(self._responders):
            _stop_process(self._responders.pop(name))
        for name in list(self._responder_pids):
            _stop_pid(self._responder_pids.pop(name))
        for process in self._processes:
            _stop_process(process)
        self._processes.clear()
        if self._own_route:
            try:
                run_command(["ip", "route", "del", self._own_route], ignore_gone=True)
            except TestHostError as error:
                problems.append(str(error))
            self._own_route = None
        own_links = self._own_links + ([self.bridge] if self._own_bridge else [])
        if own_links or self._own_netns:
            try:
                run_command(["ip", "link", "del", "group", str(self.link_group)],
                            ignore_gone=True)
            except TestHostError as error:
                problems.append(str(error))
            links = set(link_names())
            # -force: go on past what is already gone; the check below finds real failures.
            ip_batch([f"link del {link}" for link in own_links if link in links]
                     + [f"netns del {netns}" for netns in self._own_netns], force=True)
            links = set(link_names())
            problems += [f"{n} still exists" for n in netns_names() if n in self._own_netns]
            problems += [f"{link} still exists" for link in self._own_links if link in links]
            if self._own_bridge and self.bridge in links:
                problems.append(f"{self.bridge} still exists")
        for netns in self._own_netns:
            _responder_log(netns).unlink(missing_ok=True)
        self.hosts.clear()
        self.address_block = self.address_block_host = None
        self._own_netns.clear()
        self._own_links.clear()
        self._own_bridge = False
        self._next_number = 0
        if problems:
            raise TestHostError(f"cleanup of {self.name}: " + "; ".join(problems))

    # -- hosts ------------------------------------------------------------------------------

    def _require_setup(self) -> None:
        if not self._own_bridge:
            raise TestHostError(f"network {self.name} is not set up: call setup() first")

    def _host(self, name: str) -> TestHost:
        try:
            return self.hosts[name]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise TestHostError(
                f"unknown host {name!r} in network {self.name} (hosts: {known})"
            ) from None

    def add_host(self, name: str) -> TestHost:
        """One host: namespace, veth pair (``ifname`` inside, lo up), address/24, no gateway."""
        return self.add_hosts([name])[0]

    def add_hosts(self, names: list[str]) -> list[TestHost]:
        """Many hosts at once: one ``ip -batch`` in the root, one small batch per namespace."""
        for name in names:
            validate_host_name(name)
        duplicates = {n for n in names if names.count(n) > 1} | (set(names) & set(self.hosts))
        if duplicates:
            raise TestHostError(f"host name(s) already used: {', '.join(sorted(duplicates))}")
        if self._next_number + len(names) > MAX_HOSTS:
            raise TestHostError(
                f"too many hosts for {self.subnet}: {self._next_number} + {len(names)} > "
                f"{MAX_HOSTS}; use another index, or add_address_block for many addresses"
            )
        self._require_setup()
        new_hosts = []
        for name in names:
            number = self._next_number
            self._next_number += 1
            address = str(self.subnet.network_address + FIRST_HOST_OCTET + number)
            assert_in_test_range(address)
            new_hosts.append(TestHost(
                name=name, netns=f"{self.name}-{name}", address=address, ifname=IFNAME,
                root_ifname=f"{self.name}v{number}",
            ))
        # Recorded before creation, so a half-made host is removed by cleanup too.
        self._own_netns += [host.netns for host in new_hosts]
        self._own_links += [host.root_ifname for host in new_hosts]
        root_lines = []
        for host in new_hosts:
            root_lines += [
                f"netns add {host.netns}",
                f"link add {host.root_ifname} group {self.link_group} "
                f"type veth peer name {host.ifname} "
                f"netns {host.netns}",
                f"link set {host.root_ifname} master {self.bridge} up",
            ]
        ip_batch(root_lines)
        workers = max(1, min(SETUP_WORKERS, len(new_hosts)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # list() re-raises the first failure.
            list(pool.map(self._configure_inside, new_hosts))
        for host in new_hosts:
            self.hosts[host.name] = host
        return new_hosts

    def _configure_inside(self, host: TestHost) -> None:
        ip_batch([
            "link set lo up",
            f"addr add {host.address}/{self.subnet.prefixlen} dev {host.ifname}",
            f"link set {host.ifname} up",
        ], netns=host.netns)
        self._sysctl(host, NAMESPACE_SYSCTLS)

    def _sysctl(self, host: TestHost, settings: dict[str, str]) -> None:
        assignments = [f"{key}={value}" for key, value in settings.items()]
        run_command(["ip", "netns", "exec", host.netns, "sysctl", "-q", "-w", *assignments])

    def netns_exec(self, name: str, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen:
        """Start a program inside the host's namespace; it is terminated by cleanup()."""
        host = self._host(name)
        process = subprocess.Popen(["ip", "netns", "exec", host.netns, *argv], **popen_kwargs)
        self._processes.append(process)
        return process

    # -- faults -----------------------------------------------------------------------------

    def link_down(self, name: str) -> None:
        """The fault a monitor must detect: the host's NIC goes down inside its namespace."""
        host = self._host(name)
        run_command(["ip", "-n", host.netns, "link", "set", host.ifname, "down"])

    def link_up(self, name: str) -> None:
        """Repair of link_down."""
        host = self._host(name)
        run_command(["ip", "-n", host.netns, "link", "set", host.ifname, "up"])

    def _nft(self, host: TestHost, script: str) -> None:
        run_command(["ip", "netns", "exec", host.netns, "nft", "-f", "-"], stdin=script)

    def set_loss(self, name: str, percent: int) -> None:
        """Drop ``percent`` % of the host's incoming echo requests at random (a flaky link).

        One nft transaction: the loss chain is flushed and refilled, so a new call replaces the
        earlier rate atomically, never a moment with two rules or none.
        """
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise TestHostError(f"bad loss percent {percent!r}: an integer 0..100")
        host = self._host(name)
        script = (
            "add table inet fault\n"
            "add chain inet fault input { type filter hook input priority 0; policy accept; }\n"
            "flush chain inet fault input\n"
        )
        # nft refuses `< 100` (numgen mod 100 yields 0..99): 100 % is a plain drop, 0 % no rule.
        if percent == 100:
            script += "add rule inet fault input icmp type echo-request drop\n"
        elif percent > 0:
            script += ("add rule inet fault input icmp type echo-request "
                       f"numgen random mod 100 < {percent} drop\n")
        self._nft(host, script)

    def clear_loss(self, name: str) -> None:
        """Remove every nftables fault of the host (loss and drop_from)."""
        host = self._host(name)
        # `add` then `delete` in one transaction: deletes whether or not the table existed.
        self._nft(host, "add table inet fault\ndelete table inet fault\n")

    def drop_from(self, name: str, addresses: list[str]) -> None:
        """Stop answering echo requests to some of the host's addresses (per-address faults).

        Meant for the address block of add_address_block; adds to earlier drops, and
        clear_loss removes them. A separate base chain, so set_loss does not touch them.
        """
        host = self._host(name)
        for address in addresses:
            assert_in_test_range(address)
            if "/" in address:
                raise TestHostError(f"drop_from takes single addresses, not {address}")
        if not addresses:
            return
        elements = ", ".join(addresses)
        self._nft(host, (
            "add table inet fault\n"
            "add chain inet fault blocked "
            "{ type filter hook input priority -1; policy accept; }\n"
            "add set inet fault blocked_addresses { type ipv4_addr; }\n"
            "flush chain inet fault blocked\n"
            "add rule inet fault blocked ip daddr @blocked_addresses "
            "icmp type echo-request drop\n"
            f"add element inet fault blocked_addresses {{ {elements} }}\n"
        ))

    def set_delay(self, name: str, delay_ms: float, jitter_ms: float = 0.0) -> None:
        """Answer the host's echo requests after ``delay_ms`` ± uniform ``jitter_ms``.

        A userspace responder (testkit.echo_responder) in the namespace answers, and the
        kernel's own replies are switched off. The responder is started and ready before the
        kernel stops answering, a new delay's responder before the old one stops, and
        clear_delay turns the kernel back on before stopping it: a change may duplicate a reply
        for a moment but never loses one.
        """
        for label, value in (("delay_ms", delay_ms), ("jitter_ms", jitter_ms)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise TestHostError(f"bad {label} {value!r}: a number >= 0")
        host = self._host(name)
        previous_process = self._responders.pop(name, None)
        previous_pid = self._responder_pids.pop(name, None)
        argv = [sys.executable, "-m", "testkit.echo_responder",
                "--delay-ms", f"{delay_ms:g}", "--jitter-ms", f"{jitter_ms:g}"]
        if not self.detach_responders:
            argv += ["--parent-pid", str(os.getpid())]
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        if self.detach_responders:
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            stderr: Any = _responder_log(host.netns).open("a", encoding="utf-8")
        else:
            stderr = subprocess.PIPE
        try:
            process = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, *argv], stdout=subprocess.PIPE,
                stderr=stderr, stdin=subprocess.DEVNULL, env=env, text=True,
                start_new_session=self.detach_responders,
            )
        finally:
            if stderr is not subprocess.PIPE:
                stderr.close()
        try:
            self._wait_ready(process, host)
        except TestHostError:
            if previous_process is not None:
                self._responders[name] = previous_process
            if previous_pid is not None:
                self._responder_pids[name] = previous_pid
            raise
        if previous_process is not None:
            _stop_process(previous_process)
        if previous_pid is not None:
            _stop_pid(previous_pid)
        if self.detach_responders:
            # Known by pid from now on (the state file): a later process stops it.
            assert process.stdout is not None
            process.stdout.close()
            self._responder_pids[name] = process.pid
            _DETACHED_RESPONDERS.append(process)
        else:
            self._responders[name] = process
        self._sysctl(host, {"net.ipv4.icmp_echo_ignore_all": "1"})

    def _wait_ready(self, process: subprocess.Popen[str], host: TestHost) -> None:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], RESPONDER_READY_TIMEOUT_S)
        line = process.stdout.readline() if readable else ""
        if line.strip() == "ready":
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)
        detail = process.stderr.read().strip() if process.stderr is not None else ""
        _stop_process(process)
        raise TestHostError(
            f"echo responder in {host.netns} did not start within "
            f"{RESPONDER_READY_TIMEOUT_S:g} s (exit {process.returncode}): "
            f"{detail or 'see ' + str(_responder_log(host.netns))}"
        )

    def _stop_responder(self, name: str) -> None:
        process = self._responders.pop(name, None)
        if process is not None:
            _stop_process(process)
        pid = self._responder_pids.pop(name, None)
        if pid is not None:
            _stop_pid(pid)

    def clear_delay(self, name: str) -> None:
        """Back to the kernel answering at once; stops the host's echo responder."""
        host = self._host(name)
        self._sysctl(host, {"net.ipv4.icmp_echo_ignore_all": "0"})
        self._stop_responder(name)

    # -- many addresses ---------------------------------------------------------------------

    def block_candidates(self) -> list[str]:
        """The /18 blocks of 198.19.0.0/16 in the order this network tries them.

        Only four /18 fit, and 256 indexes share them: the preferred block is index % 4, so
        networks whose indexes differ by less than 4 never compete; when it is taken the next
        free one is used, so up to four networks at once can each have a block.
        """
        blocks = []
        for step in range(BLOCK_COUNT):
            offset = ((self.index + step) % BLOCK_COUNT) * 2 ** (32 - BLOCK_PREFIXLEN)
            block = f"{_BLOCK_SUPERNET.network_address + offset}/{BLOCK_PREFIXLEN}"
            assert_in_test_range(block)
            blocks.append(block)
        return blocks

    def add_address_block(self, count: int, name: str = "scale",
                          own_thread: bool = False) -> list[str]:
        """Many targets on one namespace: an AnyIP /18 answering pings for 16,382 addresses.

        The host ``name`` gets a normal host address and a ``local`` route for the block on lo,
        so every address answers without being added one by one; the root reaches the block
        via that host's address, so it needs one ARP entry, not one per address. The block is
        claimed by adding that root route (atomic: "File exists" means another network has it).

        ``own_thread``: the host answers on a kernel thread of its own, as a remote machine
        answers on its own CPU (for the benchmarks' CPU figures). Otherwise a packet crossing
        a veth is processed at once in the sender's softirq, so the host's whole echo work is
        charged to the process that pings it. Threaded NAPI on the host's end (GRO on makes a
        veth use NAPI; TSO off on the root's end makes every packet eligible) moves it to the
        kernel thread ``napi/IFNAME-N``, whose PIDs end up in ``block_threads`` (needs
        ``ethtool``).
        """
        if isinstance(count, bool) or not isinstance(count, int) \
                or not 1 <= count <= BLOCK_CAPACITY:
            raise TestHostError(f"bad address count {count!r}: 1..{BLOCK_CAPACITY}")
        if self.address_block is not None:
            raise TestHostError(
                f"network {self.name} already has the address block {self.address_block}"
            )
        validate_host_name(name)
        self._require_setup()
        host = self.add_host(name)
        claimed = None
        for block in self.block_candidates():
            try:
                run_command(["ip", "route", "add", block, "via", host.address,
                             "dev", self.bridge])
            except TestHostError as error:
                if "File exists" in str(error):
                    continue
                raise
            claimed = block
            break
        if claimed is None:
            raise TestHostError(
                f"no free address block: all {BLOCK_COUNT} /{BLOCK_PREFIXLEN} blocks of "
                f"{_BLOCK_SUPERNET} are routed by other test networks"
            )
        self._own_route = claimed
        run_command(["ip", "-n", host.netns, "route", "add", "local", claimed, "dev", "lo"])
        self.address_block = claimed
        self.address_block_host = name
        if own_thread:
            self.block_threads = self._answer_on_own_thread(host)
        first = ipaddress.ip_network(claimed).network_address + 1
        return [str(first + offset) for offset in range(count)]

    @staticmethod
    def _answer_on_own_thread(host: TestHost) -> list[int]:
        before = set(napi_threads())
        run_command(["ethtool", "-K", host.root_ifname, "tso", "off", "gso", "off"])
        run_command(["ip", "netns", "exec", host.netns, "ethtool", "-K", host.ifname,
                     "gro", "on"])
        run_command(["ip", "netns", "exec", host.netns, "sh", "-c",
                     f"echo 1 > /sys/class/net/{host.ifname}/threaded"])
        threads = [pid for pid in napi_threads() if pid not in before]
        if not threads:
            raise TestHostError(f"no NAPI thread appeared for {host.netns}/{host.ifname}: "
                                "this kernel's veth has no threaded NAPI")
        return threads

    # -- state for the command line ---------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """What a later process needs to drive or remove this network."""
        pids = dict(self._responder_pids)
        pids.update({name: p.pid for name, p in self._responders.items()})
        return {
            "prefix": self.prefix, "index": self.index, "bridge": self.bridge,
            "monitor_address": self.monitor_address,
            "hosts": [asdict(host) for host in self.hosts.values()],
            "netns": list(self._own_netns), "links": list(self._own_links),
            "route": self._own_route, "address_block": self.address_block,
            "address_block_host": self.address_block_host, "responders": pids,
            "next_number": self._next_number,
        }

    def save_state(self) -> Path:
        """Write the state file ``/run/doctor-testhosts/<prefix><index>.json``."""
        path = state_path(self.prefix, self.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.to_state(), indent=1), encoding="utf-8")
        temporary.replace(path)
        return path

    @classmethod
    def from_state(cls, prefix: str = "dt", index: int = 0) -> TestHostNetwork:
        """The network a previous process created and saved (the CLI's `fault` and `destroy`)."""
        path = state_path(prefix, index)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TestHostError(f"no network {prefix}{index}: {path} does not exist") from None
        except (OSError, ValueError) as error:
            raise TestHostError(f"cannot read {path}: {error}") from error
        network = cls(prefix, index)
        network.hosts = {h["name"]: TestHost(**h) for h in state.get("hosts", [])}
        network._own_bridge = True
        network._own_netns = list(state.get("netns", []))
        network._own_links = list(state.get("links", []))
        network._own_route = state.get("route")
        network.address_block = state.get("address_block")
        network.address_block_host = state.get("address_block_host")
        network._responder_pids = {k: int(v) for k, v in state.get("responders", {}).items()}
        network._next_number = int(state.get("next_number", len(network.hosts)))
        network.detach_responders = True
        return network


def _leftover_patterns(prefix: str, index: int | None) -> tuple[re.Pattern[str], re.Pattern[str]]:
    number = str(index) if index is not None else r"\d{1,3}"
    quoted = re.escape(prefix)
    return (re.compile(rf"^{quoted}{number}-"),
            re.compile(rf"^{quoted}{number}(br|v\d{{1,3}})$"))


def cleanup_prefix(prefix: str = "dt", index: int | None = None) -> list[str]:
    """Remove leftovers of crashed runs: namespaces, veths and bridges named ``<prefix><digit>…``.

    With ``index`` only that network's objects, so one run does not remove another's.
    Echo responders still running in those namespaces are stopped, and the matching state
    files removed. Returns the names of the namespaces and links removed.
    """
    _validate_prefix(prefix)
    if index is not None:
        _validate_index(index)
    require_root()
    netns_pattern, link_pattern = _leftover_patterns(prefix, index)
    namespaces = [n for n in netns_names() if netns_pattern.match(n)]
    links = [link for link in link_names() if link_pattern.match(link)]
    for netns in namespaces:
        pids = run_command(["ip", "netns", "pids", netns], ignore_gone=True).stdout.split()
        for pid in pids:
            if pid.isdigit():
                _stop_pid(int(pid))
    if links:
        # One group, one kernel batch (see _LINK_GROUP_TAG); per process, so that two
        # cleanups running at once do not delete each other's picks.
        group = str(_CLEANUP_GROUP_TAG | (os.getpid() & 0xFFFFFF))
        ip_batch([f"link set {link} group {group}" for link in links], force=True)
        run_command(["ip", "link", "del", "group", group], ignore_gone=True)
    present = set(link_names())
    ip_batch([f"link del {link}" for link in links if link in present]
             + [f"netns del {netns}" for netns in namespaces], force=True)
    number = str(index) if index is not None else r"\d{1,3}"
    state_pattern = re.compile(rf"^{re.escape(prefix)}{number}(\.json|-.*-responder\.log)$")
    if STATE_DIR.is_dir():
        for path in STATE_DIR.iterdir():
            if state_pattern.match(path.name):
                path.unlink(missing_ok=True)
    remaining = [n for n in netns_names() if n in namespaces]
    remaining += [link for link in link_names() if link in links]
    if remaining:
        raise TestHostError(f"cleanup_prefix({prefix!r}) could not remove {', '.join(remaining)}")
    return namespaces + links


# -- command line ---------------------------------------------------------------------------

_DESCRIPTION = """\
Test hosts for the fault-management pipeline: network namespaces on a bridge, addresses in
198.18.0.0/15 only (a blackhole route for the range is added first and kept). Needs root.

  create   make a network of hosts and leave it in place (state in /run/doctor-testhosts/)
  fault    inject or clear a fault on one host
  list     show the networks created by `create`
  destroy  remove a network (and any leftovers of its prefix and index)
"""

_FAULT_HELP = """\
actions:
  link-down            the host's interface goes down (it stops answering)
  link-up              repair of link-down
  loss PERCENT         drop PERCENT % of the echo requests at random (nftables)
  clear-loss           remove the loss
  delay MS [JITTER]    answer after MS ± JITTER milliseconds (userspace responder)
  clear-delay          answer at once again
"""


def _add_network_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default="dt",
                        help="tag starting every name of the network (default %(default)s)")
    parser.add_argument("--index", type=int, default=0,
                        help="0..255, selects the subnet 198.18.<index>.0/24 (default 0)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of the test-host command line."""
    parser = argparse.ArgumentParser(
        prog="doctor hosts", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    create = commands.add_parser(
        "create", help="create hosts and leave them in place",
        description="Create a network of test hosts. Prints 'monitor ADDRESS' (the root "
        "namespace's address on the bridge), then one line 'NAME ADDRESS NETNS' per host.",
    )
    create.add_argument("--count", type=int, help="number of hosts, named compute-1..N")
    create.add_argument("--names", help="comma-separated host names instead of compute-N")
    create.add_argument("--address-block", type=int, metavar="N", default=0,
                        help="also a 'scale' host answering N addresses in 198.19.0.0/16; "
                        "prints 'block CIDR FIRST LAST'")
    _add_network_options(create)

    fault = commands.add_parser(
        "fault", help="inject or clear a fault on one host", epilog=_FAULT_HELP,
        description="Inject or clear a fault on one host of a network made by `create`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fault.add_argument("name", help="host name, e.g. compute-1")
    fault.add_argument("action", choices=["link-down", "link-up", "loss", "clear-loss",
                                          "delay", "clear-delay"])
    fault.add_argument("values", nargs="*", help="PERCENT for loss; MS [JITTER] for delay")
    _add_network_options(fault)

    listing = commands.add_parser("list", help="show networks and hosts made by `create`")
    listing.add_argument("--prefix", default=None, help="only networks with this prefix")

    destroy = commands.add_parser(
        "destroy", help="remove a network",
        description="Remove a network made by `create` (from its state file) and any leftover "
        "namespace or link named <prefix><index>...; --all: every index of the prefix.",
    )
    _add_network_options(destroy)
    destroy.add_argument("--all", action="store_true",
                         help="remove leftovers of every index of the prefix")
    for command_parser in (create, fault, listing, destroy):
        command_parser.set_defaults(command_parser=command_parser)
    return parser


def _host_names(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    if args.names:
        names = [n.strip() for n in args.names.split(",") if n.strip()]
        if args.count is not None and args.count != len(names):
            parser.error(f"argument --count: {args.count} does not match the "
                         f"{len(names)} names given in --names")
    elif args.count is not None:
        names = [f"compute-{number}" for number in range(1, args.count + 1)]
    else:
        parser.error("argument --count: required (or give --names)")
    if not 1 <= len(names) <= MAX_HOSTS:
        parser.error(f"argument --count: 1..{MAX_HOSTS} hosts per network, not {len(names)}")
    for name in names:
        try:
            validate_host_name(name)
        except TestHostError as error:
            parser.error(f"argument --names: {error}")
    return names


def _cmd_create(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    names = _host_names(args, parser)
    if not 0 <= args.address_block <= BLOCK_CAPACITY:
        parser.error(f"argument --address-block: 0..{BLOCK_CAPACITY}, not {args.address_block}")
    if state_path(args.prefix, args.index).exists():
        parser.error(f"argument --index: network {args.prefix}{args.index} already exists "
                     f"(see `list`; remove it with `destroy --prefix {args.prefix} "
                     f"--index {args.index}`)")
    require_root()
    network = TestHostNetwork(args.prefix, args.index)
    network.detach_responders = True
    try:
        network.setup()
        hosts = network.add_hosts(names)
        addresses = (network.add_address_block(args.address_block)
                     if args.address_block else [])
        network.save_state()
    except BaseException:
        network.cleanup()
        raise
    print(f"monitor {network.monitor_address}")
    for host in hosts:
        print(f"{host.name} {host.address} {host.netns}")
    if addresses:
        scale = network.hosts[network.address_block_host or "scale"]
        print(f"{scale.name} {scale.address} {scale.netns}")
        print(f"block {network.address_block} {addresses[0]} {addresses[-1]}")
    return 0


def _fault_values(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[float]:
    """The numbers a fault action takes (loss PERCENT, delay MS [JITTER]), checked."""
    arity = {"loss": (1, 1), "delay": (1, 2)}.get(args.action, (0, 0))
    if not arity[0] <= len(args.values) <= arity[1]:
        wanted = {"loss": "PERCENT", "delay": "MS [JITTER]"}.get(args.action, "no value")
        parser.error(f"argument values: {args.action} takes {wanted}, got {args.values or []}")
    if args.action == "loss":
        if not re.fullmatch(r"\d{1,3}", args.values[0]) or int(args.values[0]) > 100:
            parser.error(f"argument values: loss PERCENT is an integer 0..100, "
                         f"not {args.values[0]!r}")
        return [int(args.values[0])]
    numbers = []
    for value in args.values:
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not math.isfinite(number) or number < 0:
            parser.error(f"argument values: delay MS [JITTER] are numbers >= 0, not {value!r}")
        numbers.append(number)
    return numbers


def _cmd_fault(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    values = _fault_values(args, parser)
    try:
        network = TestHostNetwork.from_state(args.prefix, args.index)
    except TestHostError as error:
        parser.error(f"argument --index: {error}")
    if args.name not in network.hosts:
        parser.error(f"argument name: no host {args.name!r} in {network.name} "
                     f"(hosts: {', '.join(sorted(network.hosts))})")
    require_root()
    if args.action == "loss":
        network.set_loss(args.name, int(values[0]))
    elif args.action == "delay":
        network.set_delay(args.name, *values)
    else:
        action = {"link-down": network.link_down, "link-up": network.link_up,
                  "clear-loss": network.clear_loss, "clear-delay": network.clear_delay}
        action[args.action](args.name)
    network.save_state()
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    existing = set(netns_names()) if os.geteuid() == 0 else set()
    paths = sorted(STATE_DIR.glob("*.json")) if STATE_DIR.is_dir() else []
    known: set[str] = set()
    for path in paths:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            print(f"{path}: unreadable")
            continue
        if args.prefix and state.get("prefix") != args.prefix:
            continue
        print(f"network {state['prefix']}{state['index']} monitor {state['monitor_address']}"
              + (f" block {state['address_block']}" if state.get("address_block") else ""))
        delayed = state.get("responders", {})
        for host in state.get("hosts", []):
            known.add(host["netns"])
            notes = [] if not existing or host["netns"] in existing else ["missing"]
            if host["name"] in delayed:
                notes.append(f"delay-responder={delayed[host['name']]}")
            print(f"  {host['name']} {host['address']} {host['netns']}"
                  + (f" ({', '.join(notes)})" if notes else ""))
    pattern = re.compile(rf"^{re.escape(args.prefix) if args.prefix else '[a-z]{1,5}'}\d{{1,3}}-")
    strays = sorted(n for n in existing - known if pattern.match(n))
    if strays:
        print("namespaces not made by `create` (a running test, or leftovers for `destroy`): "
              + " ".join(strays))
    if not paths and not strays:
        print("no test networks")
    return 0


def _cmd_destroy(args: argparse.Namespace) -> int:
    require_root()
    removed: list[str] = []
    if state_path(args.prefix, args.index).exists():
        network = TestHostNetwork.from_state(args.prefix, args.index)
        removed += list(network._own_netns) + list(network._own_links) + [network.bridge]
        network.cleanup()
        state_path(args.prefix, args.index).unlink(missing_ok=True)
    removed += cleanup_prefix(args.prefix, None if args.all else args.index)
    for name in dict.fromkeys(removed):
        print(f"removed {name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: ``create``, ``fault``, ``list``, ``destroy`` (see ``--help``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        subparser: argparse.ArgumentParser = args.command_parser
        if args.command != "list":
            try:
                _validate_prefix(args.prefix)
                _validate_index(args.index)
            except TestHostError as error:
                subparser.error(f"argument --prefix/--index: {error}")
        if args.command == "create":
            return _cmd_create(args, subparser)
        if args.command == "fault":
            return _cmd_fault(args, subparser)
        if args.command == "list":
            return _cmd_list(args)
        return _cmd_destroy(args)
    except SystemExit as exit_request:  # argparse: --help (0) and usage errors (2)
        code = exit_request.code
        return code if isinstance(code, int) else 2
    except TestHostError as error:
        print(f"doctor hosts: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
