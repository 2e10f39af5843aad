"""Raw ICMP echo: one socket for every target, packets built once per target.

Nothing here allocates per probe beyond what the kernel call needs: each
target owns a ready echo-request buffer whose sequence number and checksum are
patched in place (the checksum incrementally, from a precomputed sum of the
fixed words). A reply is parsed with ``struct.unpack_from`` straight from a
reused receive buffer.
"""

from __future__ import annotations

import os
import socket
import struct

ECHO_REPLY = 0
ECHO_REQUEST = 8
SOL_RAW = 255
ICMP_FILTER = 1  # linux/icmp.h: a bitmask of ICMP types the raw socket must NOT receive
PAYLOAD_LEN = 16

_HEADER = struct.Struct("!BBHHH")
_SEQ_CSUM = struct.Struct("!H")
_REPLY_FIELDS = struct.Struct("!BBHHH")
# The common case, an IPv4 header without options: source and ICMP fields in one call.
_PLAIN_REPLY = struct.Struct("!12x4s4xBBHHH")


class RawSocketPermissionError(PermissionError):
    """The process may not open a raw socket (needs root or CAP_NET_RAW)."""


def _fold(total: int) -> int:
    total = (total & 0xFFFF) + (total >> 16)
    return (total & 0xFFFF) + (total >> 16)


def ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return _fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    return ~ones_complement_sum(data) & 0xFFFF


class EchoPacket:
    """One target's echo request, built once; ``for_seq`` patches seq and checksum."""

    __slots__ = ("buffer", "payload", "_fixed_sum")

    def __init__(self, ident: int, payload: bytes) -> None:
        self.payload = payload
        self.buffer = bytearray(_HEADER.pack(ECHO_REQUEST, 0, 0, ident, 0) + payload)
        self._fixed_sum = ones_complement_sum(bytes(self.buffer))

    def for_seq(self, seq: int) -> bytearray:
        total = _fold(self._fixed_sum + seq)
        buf = self.buffer
        _SEQ_CSUM.pack_into(buf, 6, seq)
        _SEQ_CSUM.pack_into(buf, 2, ~total & 0xFFFF)
        return buf


def parse_echo_reply(packet: memoryview | bytes, length: int) -> tuple[bytes, int, int, int] | None:
    """(source address bytes, identifier, sequence, payload offset) of an echo reply.

    ``packet`` is what a raw IPv4 socket returns: the IP header, then ICMP.
    Anything that is not a well-formed echo reply gives None.
    """
    if packet[0] == 0x45 and length >= 28:
        source, icmp_type, code, _csum, ident, seq = _PLAIN_REPLY.unpack_from(packet)
        if icmp_type != ECHO_REPLY or code != 0:
            return None
        return source, ident, seq, 28
    if length < 20:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or length < ihl + 8:
        return None
    icmp_type, code, _csum, ident, seq = _REPLY_FIELDS.unpack_from(packet, ihl)
    if icmp_type != ECHO_REPLY or code != 0:
        return None
    return bytes(packet[12:16]), ident, seq, ihl + 8


def open_icmp_socket(receive_buffer_bytes: int = 4 << 20) -> socket.socket:
    """A non-blocking raw ICMP socket that only receives echo replies.

    Raises RawSocketPermissionError with the remedy when the process lacks
    CAP_NET_RAW.
    """
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError:
        raise RawSocketPermissionError(
            "cannot open a raw ICMP socket: the monitor needs CAP_NET_RAW. Run it as root, "
            "or grant the capability, as root: "
            "setcap cap_net_raw+ep $(readlink -f $(which python3))"
            " (or run it under systemd with AmbientCapabilities=CAP_NET_RAW)") from None
    # The kernel then drops every other ICMP type (our own requests on loopback,
    # unreachables, other tools' traffic) before it reaches Python.
    sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", ~(1 << ECHO_REPLY) & 0xFFFFFFFF))
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, receive_buffer_bytes)
        except OSError:
            pass
    sock.setblocking(False)
    return sock


def random_identifier() -> int:
    """An ICMP identifier unlikely to collide with other pingers on the host."""
    return int.from_bytes(os.urandom(2), "big")
