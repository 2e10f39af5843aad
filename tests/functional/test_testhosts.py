"""Test hosts are real: namespaces answer pings, and each fault really changes what they answer.

These tests create network namespaces, so they need root. Without it they skip, except in CI
(CI=true), where a skip would hide that they never ran, so they fail instead. All traffic goes
from the root namespace to test hosts in 198.18.0.0/15, each probe loop bounded in packets
and time. Networks use a prefix of this run ("th" + 3 letters) and a free index from 200 up, so
other tests running at the same time (other prefixes, other indexes) are not touched.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import select
import socket
import struct
import subprocess
import time

import pytest

from monitor.icmp import checksum
from testkit import echo_responder
from testkit import hosts as testhosts
from testkit.hosts import (
    TEST_RANGE,
    TestHostError,
    TestHostNetwork,
    cleanup_prefix,
    require_root,
)


def _prefix_of_this_run() -> str:
    """'th' + three letters from the pid: two runs at once never share (or check) names."""
    number, letters = os.getpid(), ""
    for _ in range(3):
        number, digit = divmod(number, 26)
        letters += chr(ord("a") + digit)
    return "th" + letters


PREFIX = _prefix_of_this_run()
FIRST_INDEX = 200
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
MAX_PACKETS = 1000  # a bound on every probe loop here


def _checksum(data: bytes) -> int:
    return checksum(data)


def ping(
    targets: list[str], count: int = 1, interval_s: float = 0.001, timeout_s: float = 1.0
) -> dict[str, list[float]]:
    """Send ``count`` echo requests to each target from the root namespace; RTTs per target.

    A raw socket sees every echo reply of the root namespace (other tests' too), so a reply
    counts only if its source, id, sequence and payload are those of a request sent here.
    """
    network = ipaddress.ip_network(TEST_RANGE)
    for target in targets:
        assert ipaddress.ip_address(target) in network, f"{target} outside {TEST_RANGE}"
    schedule = [(target, round_) for round_ in range(count) for target in targets]
    assert len(schedule) <= MAX_PACKETS
    ident = random.randrange(1, 0xFFFF)
    token = os.urandom(8)
    rtts: dict[str, list[float]] = {target: [] for target in targets}
    sent_at: dict[int, tuple[str, float]] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        # Only echo replies (Linux ICMP_FILTER: set bits are blocked).
        sock.setsockopt(255, 1, struct.pack("=I", ~(1 << ICMP_ECHO_REPLY) & 0xFFFFFFFF))
        sock.setblocking(False)
        start = time.monotonic()
        deadline = start + len(schedule) * interval_s + timeout_s
        next_packet = 0
        while time.monotonic() < deadline:
            now = time.monotonic()
            while next_packet < len(schedule) and start + next_packet * interval_s <= now:
                target, _ = schedule[next_packet]
                body = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, next_packet)
                body += token + struct.pack("!I", next_packet)
                packet = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
                # Stamped before sendto: over a veth the request can reach the responder (on
                # another CPU) before sendto returns, so a later stamp would shorten the RTT.
                sent = time.monotonic()
                try:
                    sock.sendto(packet, (target, 0))
                    sent_at[next_packet] = (target, sent)
                except OSError:
                    pass  # e.g. EINVAL for a blackholed address: counts as lost
                next_packet += 1
            if next_packet == len(schedule) and not sent_at:  # every request answered
                break
            wait = deadline - now
            if next_packet < len(schedule):
                wait = min(wait, max(0.0, start + next_packet * interval_s - now))
            readable, _, _ = select.select([sock], [], [], wait)
            if not readable:
                continue
            for _ in range(MAX_PACKETS):
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                received = time.monotonic()
                header = (data[0] & 0x0F) * 4
                icmp = data[header:]
                if len(icmp) < 20 or icmp[0] != ICMP_ECHO_REPLY:
                    continue
                _, _, _, reply_ident, seq = struct.unpack("!BBHHH", icmp[:8])
                if reply_ident != ident or seq not in sent_at or icmp[8:16] != token:
                    continue
                target, sent = sent_at.pop(seq)
                if socket.inet_ntoa(data[12:16]) == target and icmp[16:20] == struct.pack(
                    "!I", seq
                ):
                    rtts[target].append(received - sent)
    finally:
        sock.close()
    return rtts


def answered(target: str, count: int = 3, timeout_s: float = 0.5) -> int:
    return len(ping([target], count=count, interval_s=0.01, timeout_s=timeout_s)[target])


def wait_until_answers(target: str, within_s: float = 3.0) -> bool:
    """After a repair ARP may need a moment: ping until a reply comes (bounded)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if answered(target, count=1, timeout_s=0.2):
            return True
    return False


def leftovers(network_name: str) -> list[str]:
    """Namespaces and root links of the network ``network_name`` that still exist."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.split("\n")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           timeout=10, check=True).stdout.splitlines()
    found = [line.split()[0] for line in namespaces if line.startswith(f"{network_name}-")]
    link_name = re.compile(rf"^\d+: ({re.escape(network_name)}(br|v\d+))[@:]")
    found += [m.group(1) for line in links if (m := link_name.match(line))]
    return found


def root_route(destination: str) -> str:
    return subprocess.run(["ip", "route", "show", "exact", destination], capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()


def free_index() -> int:
    """An index from 200 up whose subnet no network routes now (other runs may hold some)."""
    for index in range(FIRST_INDEX, 256):
        if not root_route(f"198.18.{index}.0/24") and not leftovers(f"{PREFIX}{index}"):
            return index
    pytest.fail("no free test-network index in 200..255")


def namespace_pids(netns: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                            timeout=10, check=False)
    return [int(pid) for pid in result.stdout.split()]


@pytest.fixture
def root() -> None:
    """Namespaces need root: skip without it, but fail in CI, where a skip would hide a gap."""
    try:
        require_root()
    except TestHostError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs as root, but: {error}")
        pytest.skip(str(error))


def index_taken_meanwhile(error: str) -> bool:
    """Another run claimed the index between free_index() and setup: try the next one."""
    return "in use" in error or "File exists" in error


def claim_network() -> TestHostNetwork:
    """A set-up network on a free index (bounded retries: other runs claim indexes too)."""
    for _ in range(10):
        net = TestHostNetwork(PREFIX, free_index())
        try:
            net.setup()
            return net
        except TestHostError as error:
            net.cleanup()
            if not index_taken_meanwhile(str(error)):
                raise
    pytest.fail("could not claim a test-network index")


@pytest.fixture
def network(root: None):
    """A set-up network on a free index, removed after the test whatever happened."""
    net = claim_network()
    try:
        yield net
    finally:
        net.cleanup()
        assert leftovers(net.name) == []


# -- without root ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["bad name", "compute_1", "-lead", "x" * 21, "", "monitor"])
def test_bad_host_name_is_refused_by_name(bad):
    with pytest.raises(TestHostError) as raised:
        TestHostNetwork(PREFIX, FIRST_INDEX).add_host(bad)
    assert repr(bad) in str(raised.value)


def test_addresses_outside_the_test_range_are_refused():
    for address in ("8.8.8.8", "192.0.2.1", "198.17.255.255", "198.20.0.1", "0.0.0.0/0"):
        with pytest.raises(TestHostError, match="refusing"):
            testhosts.assert_in_test_range(address)
    testhosts.assert_in_test_range("198.19.255.255")
    with pytest.raises(TestHostError, match="bad prefix"):
        TestHostNetwork("dt-x", 0)
    with pytest.raises(TestHostError, match="bad index"):
        TestHostNetwork(PREFIX, 256)


def test_interface_names_fit_the_kernel_limit():
    net = TestHostNetwork("abcde", 255)
    assert len(net.bridge) <= 15
    assert len(f"{net.name}v{testhosts.MAX_HOSTS - 1}") <= 15
    blocks = net.block_candidates()
    assert len(set(blocks)) == 4
    assert all(ipaddress.ip_network(b).num_addresses >= 16384 for b in blocks)
    assert TestHostNetwork(PREFIX, 1).block_candidates()[0] != blocks[0]


def test_echo_reply_is_built_from_the_request():
    body = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, 0x1234, 7) + b"payload!x"
    request_icmp = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
    request = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(request_icmp), 1, 0, 64, 1, 0,
                          socket.inet_aton("198.18.0.1"), socket.inet_aton("198.19.0.5"))
    reply, destination = echo_responder.echo_reply_for(request + request_icmp)
    assert destination == "198.18.0.1"
    assert reply[12:16] == socket.inet_aton("198.19.0.5")  # answers from the asked address
    icmp = reply[20:]
    assert icmp[0] == ICMP_ECHO_REPLY and icmp[4:] == request_icmp[4:]
    assert _checksum(icmp) == 0
    not_a_request = request + bytes([ICMP_ECHO_REPLY]) + request_icmp[1:]
    assert echo_responder.echo_reply_for(not_a_request) is None


def test_cli_usage_errors_exit_2_naming_the_argument(capsys):
    assert testhosts.main(["create", "--count", "2", "--index", "300"]) == 2
    assert "--index" in capsys.readouterr().err
    assert testhosts.main(["create", "--names", "ok,bad name"]) == 2
    assert "'bad name'" in capsys.readouterr().err
    assert testhosts.main(["fault", "compute-1", "loss"]) == 2
    assert "PERCENT" in capsys.readouterr().err
    assert testhosts.main(["--help"]) == 0
    assert "198.18.0.0/15" in capsys.readouterr().out


# -- with root: real namespaces ---------------------------------------------------------------


def test_hosts_answer_and_link_down_stops_them(network):
    one, two = network.add_hosts(["compute-1", "compute-2"])
    assert (one.address, two.address) == (f"198.18.{network.index}.10",
                                           f"198.18.{network.index}.11")
    assert answered(one.address) == 3 and answered(two.address) == 3

    network.link_down("compute-1")
    assert answered(one.address) == 0
    assert answered(two.address) == 3  # a fault on one host only

    network.link_up("compute-1")
    assert wait_until_answers(one.address)
    assert answered(one.address) == 3


def test_hosts_have_no_default_route(network):
    host = network.add_host("compute-1")
    routes = subprocess.run(["ip", "-n", host.netns, "route", "show"], capture_output=True,
                            text=True, timeout=10, check=True).stdout
    assert "default" not in routes
    assert f"198.18.{network.index}.0/24" in routes


def test_loss_drops_about_the_share_asked_for(network):
    host = network.add_host("compute-1")
    network.set_loss("compute-1", 50)
    lost_half = len(ping([host.address], count=200, interval_s=0.0005)[host.address])
    assert 60 <= lost_half <= 140  # binomial(200, 0.5): outside is 1 in ~10^8

    network.set_loss("compute-1", 100)  # replaces the 50 %, does not add to it
    assert answered(host.address, count=20, timeout_s=0.3) == 0

    network.clear_loss("compute-1")
    network.clear_loss("compute-1")  # idempotent
    assert len(ping([host.address], count=200, interval_s=0.0005)[host.address]) == 200


def test_delay_and_jitter_come_from_the_responder(network):
    host = network.add_host("compute-1")
    network.set_delay("compute-1", 30)
    rtts = ping([host.address], count=5, interval_s=0.01)[host.address]
    assert len(rtts) == 5
    assert min(rtts) >= 0.030 and max(rtts) < 0.2

    network.set_delay("compute-1", 30, 10)
    rtts = ping([host.address], count=20, interval_s=0.005)[host.address]
    assert len(rtts) == 20
    assert min(rtts) >= 0.020 and max(rtts) < 0.2
    assert max(rtts) - min(rtts) > 0.005  # uniform ±10 ms: 20 samples spread out

    network.clear_delay("compute-1")
    rtts = ping([host.address], count=5, interval_s=0.01)[host.address]
    assert len(rtts) == 5 and max(rtts) < 0.02
    assert namespace_pids(host.netns) == []  # the responder is gone


def test_address_block_answers_across_the_block(network):
    addresses = network.add_address_block(5000)
    assert len(addresses) == len(set(addresses)) == 5000
    block = ipaddress.ip_network(network.address_block)
    assert block.subnet_of(ipaddress.ip_network("198.19.0.0/16"))
    assert all(ipaddress.ip_address(a) in block for a in (addresses[0], addresses[-1]))
    assert addresses[0] != str(block.network_address)
    assert root_route(str(block)).startswith(f"{block} via {network.hosts['scale'].address}")

    sample = addresses[::100]
    assert len(sample) == 50
    rtts = ping(sample, interval_s=0.0005)
    assert [a for a in sample if not rtts[a]] == []

    network.drop_from("scale", [addresses[0]])
    rtts = ping(addresses[:2], count=3, interval_s=0.005, timeout_s=0.3)
    assert len(rtts[addresses[0]]) == 0 and len(rtts[addresses[1]]) == 3
    network.clear_loss("scale")
    assert answered(addresses[0]) == 3


def test_address_block_can_answer_on_a_kernel_thread_of_its_own(network):
    """The benchmarks' CPU figures: the host's echo work runs on its own NAPI thread, not in
    the sender's time, and that thread is the one that works when the block is pinged."""
    from testkit.hosts import thread_cpu_s

    addresses = network.add_address_block(1000, own_thread=True)
    assert network.block_threads
    for pid in network.block_threads:
        with open(f"/proc/{pid}/comm") as handle:
            assert handle.read().startswith("napi/")
    host = network.hosts["scale"]
    threaded = subprocess.run(["ip", "netns", "exec", host.netns, "cat",
                               f"/sys/class/net/{host.ifname}/threaded"],
                              capture_output=True, text=True, timeout=10)
    assert threaded.stdout.strip() in ("1", "enabled")
    before = thread_cpu_s(network.block_threads)
    for _ in range(20):  # bounded: at most 20 x 1000 echoes, until a clock tick caught it
        rtts = ping(addresses, interval_s=0.0005)
        assert [a for a in addresses if not rtts[a]] == []
        if thread_cpu_s(network.block_threads) > before:
            break
    assert thread_cpu_s(network.block_threads) > before


@pytest.mark.parametrize("body_raises", [False, True])
def test_cleanup_leaves_nothing_also_when_the_body_raised(root, body_raises):
    net = claim_network()  # `with` sets up again: a no-op for a set-up network

    class BodyFailed(Exception):
        pass

    try:
        with net:
            net.add_hosts(["compute-1", "compute-2"])
            net.set_delay("compute-1", 5)
            responder = net._responders["compute-1"].pid
            net.add_address_block(10)
            block = net.address_block
            assert leftovers(net.name)
            if body_raises:
                raise BodyFailed()
    except BodyFailed:
        assert body_raises
    assert leftovers(net.name) == []
    assert root_route(block) == ""
    assert not os.path.exists(f"/proc/{responder}") or \
        "testkit.echo_responder" not in open(f"/proc/{responder}/cmdline").read()
    assert root_route(TEST_RANGE).startswith("blackhole")  # the safety net stays
    net.cleanup()  # idempotent


def test_cleanup_prefix_removes_what_a_crashed_run_left(network):
    network.add_hosts(["compute-1", "compute-2"])
    network.set_delay("compute-2", 5)
    responder = network._responders["compute-2"]
    # The run "crashes": nobody calls cleanup on this network object.
    removed = cleanup_prefix(PREFIX, index=network.index)
    assert f"{network.name}-compute-1" in removed and network.bridge in removed
    assert leftovers(network.name) == []
    assert responder.wait(timeout=5) is not None


def test_cli_create_fault_destroy(root, capsys):
    for _ in range(10):
        index = free_index()
        common = ["--prefix", PREFIX, "--index", str(index)]
        if testhosts.main(["create", "--count", "2", *common]) == 0:
            break
        assert index_taken_meanwhile(capsys.readouterr().err)
    else:
        pytest.fail("could not claim a test-network index")
    name = f"{PREFIX}{index}"
    try:
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"monitor 198.18.{index}.1"
        assert lines[1] == f"compute-1 198.18.{index}.10 {name}-compute-1"
        state = json.loads(testhosts.state_path(PREFIX, index).read_text())
        assert [h["name"] for h in state["hosts"]] == ["compute-1", "compute-2"]
        first = f"198.18.{index}.10"
        assert answered(first) == 3

        assert testhosts.main(["fault", "compute-1", "link-down", *common]) == 0
        assert answered(first) == 0
        assert testhosts.main(["fault", "compute-1", "link-up", *common]) == 0
        assert wait_until_answers(first)

        assert testhosts.main(["fault", "compute-1", "delay", "25", *common]) == 0
        rtts = ping([first], count=3, interval_s=0.01)[first]
        assert len(rtts) == 3 and min(rtts) >= 0.025
        pids = namespace_pids(f"{name}-compute-1")
        assert len(pids) == 1  # the responder outlives the command that started it

        assert testhosts.main(["fault", "compute-1", "loss", "101", *common]) == 2
        assert "0..100" in capsys.readouterr().err
        assert testhosts.main(["fault", "compute-9", "link-down", *common]) == 2
        assert "'compute-9'" in capsys.readouterr().err
        assert testhosts.main(["create", "--count", "1", *common]) == 2  # exists already
        capsys.readouterr()

        assert testhosts.main(["list", "--prefix", PREFIX]) == 0
        assert f"compute-2 198.18.{index}.11 {name}-compute-2" in capsys.readouterr().out
    finally:
        assert testhosts.main(["destroy", *common]) == 0
    assert f"removed {name}-compute-1" in capsys.readouterr().out
    assert leftovers(name) == []
    assert not testhosts.state_path(PREFIX, index).exists()
    assert not os.path.exists(f"/proc/{pids[0]}")
