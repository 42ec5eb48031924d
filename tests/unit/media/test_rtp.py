"""RTP packets, sequence tracking and the packetizer (RFC 3550 section 5, appendix A.1)."""

from __future__ import annotations

import struct

import pytest

from imsbox.media import Packetizer, RtpPacket, RtpProtocolError, SequenceTracker
from imsbox.media.rtp import seq_newer, ts_diff


def test_build_and_parse_every_header_field() -> None:
    packet = RtpPacket(96, 65535, 0xFFFFFFFF, 0xDEADBEEF, b"abc", marker=True, csrc=(1, 2),
                       extension=(0xBEDE, b"\x10\xff\x00\x00"), padding=5)
    data = bytes(packet)
    assert data[0] == 0x80 | 0x20 | 0x10 | 2 and data[1] == 0x80 | 96
    assert len(data) == 12 + 8 + 4 + 4 + 3 + 5 and data[-1] == 5
    assert RtpPacket.parse(data) == packet


def test_plain_packet_bytes() -> None:
    data = bytes(RtpPacket(0, 1, 160, 0x01020304, b"\xff" * 160))
    assert data[:12] == bytes.fromhex("80000001000000a001020304")


@pytest.mark.parametrize(("data", "why"), [
    (b"\x80\x00", "shorter"),
    (bytes.fromhex("40000001000000a001020304"), "version 1"),
    (bytes.fromhex("83000001000000a001020304") + b"\0" * 4, "CSRC"),
    (bytes.fromhex("90000001000000a001020304") + b"\xbe\xde\x00\x05", "extension"),
    (bytes.fromhex("a0000001000000a001020304") + b"\x00\x00", "padding"),
    (bytes.fromhex("a0000001000000a001020304") + b"\x00\x20", "padding"),
])
def test_malformed_packets_are_typed_errors(data: bytes, why: str) -> None:
    with pytest.raises(RtpProtocolError) as caught:
        RtpPacket.parse(data)
    assert caught.value.status == 400 and why.split()[0].lower() in caught.value.reason.lower()


def test_serial_arithmetic_across_wrap() -> None:
    assert seq_newer(0, 65535) and not seq_newer(65535, 0) and not seq_newer(5, 5)
    assert ts_diff(10, 0xFFFFFFF0) == 26 and ts_diff(0xFFFFFFF0, 10) == -26


def test_packetizer_wraps_sequence_and_timestamp() -> None:
    p = Packetizer(0, ptime=20, ssrc=7, sequence=65534, timestamp=0xFFFFFF00)
    packets = [RtpPacket.parse(p.packet(b"\xff" * 160)) for _ in range(3)]
    assert [x.sequence for x in packets] == [65534, 65535, 0]
    assert [x.timestamp for x in packets] == [0xFFFFFF00, 0xFFFFFFA0, 0x40]
    assert [x.marker for x in packets] == [True, False, False]
    assert {x.ssrc for x in packets} == {7}
    p.skip(2)
    p.talkspurt()
    after = RtpPacket.parse(p.packet(b""))
    assert after.timestamp == 0x40 + 3 * 160 and after.marker and after.sequence == 1
    assert (p.packets, p.octets) == (4, 480)


def test_ptime_sets_samples_per_frame() -> None:
    assert Packetizer(8, ptime=30).samples_per_frame == 240


def test_sequence_tracker_wrap_loss_and_duplicates() -> None:
    t = SequenceTracker()
    for seq in [65533, 65534, 65535, 0, 2, 3, 3]:   # 1 lost, 3 duplicated
        t.update(seq)
    assert t.extended_max == 65536 + 3
    assert t.expected == 7 and t.received == 7 and t.lost == 0
    t.update(6)                                      # 4, 5 lost
    assert t.expected == 10 and t.lost == 2
    assert t.fraction_lost() == (2 << 8) // 10
    assert t.fraction_lost() == 0                    # nothing new since


def test_sequence_tracker_confirms_a_restart() -> None:
    t = SequenceTracker()
    for seq in range(100, 110):
        t.update(seq)
    assert t.update(40000) is None                   # a jump: not believed yet
    assert t.update(40001) is not None               # two in a row: the source restarted
    assert t.extended_max == 40001 and t.received == 1


def test_extension_length_field() -> None:
    data = bytes(RtpPacket(0, 1, 2, 3, b"x", extension=(1, b"")))
    assert struct.unpack_from("!HH", data, 12) == (1, 0)
