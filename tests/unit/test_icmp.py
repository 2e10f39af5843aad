import struct

from monitor.icmp import ECHO_REPLY, EchoPacket, checksum, parse_echo_reply


def test_prebuilt_packet_has_a_valid_checksum_for_every_sequence():
    packet = EchoPacket(ident=0xBEEF, payload=b"0123456789abcdef")
    for seq in (0, 1, 2, 255, 256, 0x7FFF, 0xFFFE, 0xFFFF):
        data = bytes(packet.for_seq(seq))
        assert checksum(data) == 0, seq  # a correct checksum sums to zero
        icmp_type, code, _csum, ident, got_seq = struct.unpack("!BBHHH", data[:8])
        assert (icmp_type, code, ident, got_seq) == (8, 0, 0xBEEF, seq)
        assert data[8:] == b"0123456789abcdef"


def test_checksum_matches_rfc1071_example():
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (before complement).
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == (~0xDDF2 & 0xFFFF)


def ip_header(src: bytes, ihl_words: int = 5) -> bytes:
    header = bytearray(ihl_words * 4)
    header[0] = 0x40 | ihl_words
    header[12:16] = src
    return bytes(header)


def test_parse_echo_reply_reads_source_id_and_sequence():
    icmp = struct.pack("!BBHHH", ECHO_REPLY, 0, 0, 7, 9) + b"x" * 16
    packet = ip_header(bytes([198, 18, 0, 10])) + icmp
    assert parse_echo_reply(packet, len(packet)) == (bytes([198, 18, 0, 10]), 7, 9, 28)
    with_options = ip_header(bytes([1, 2, 3, 4]), ihl_words=6) + icmp
    assert parse_echo_reply(with_options, len(with_options))[3] == 32


def test_parse_echo_reply_rejects_other_types_and_short_packets():
    request = ip_header(b"\1\2\3\4") + struct.pack("!BBHHH", 8, 0, 0, 7, 9)
    assert parse_echo_reply(request, len(request)) is None
    assert parse_echo_reply(b"\x45" + b"\0" * 10, 11) is None
