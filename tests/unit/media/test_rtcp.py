"""RTCP packets, reception statistics (A.3 loss, A.8 jitter) and the report timer."""

from __future__ import annotations

import random

import pytest

from imsbox.media import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    ReportTimer,
    RtcpUnknown,
    RtpProtocolError,
    Sdes,
    SenderReport,
    build_compound,
    parse_compound,
)
from imsbox.media.rtcp import is_rtcp, ntp_time


def test_compound_round_trip() -> None:
    block = ReportBlock(0xAABBCCDD, fraction_lost=64, cumulative_lost=-3, highest_sequence=70000,
                        jitter=12, lsr=0x12345678, dlsr=65536)
    packets = [SenderReport(1, ntp_time(1.5), 160, 10, 1600, [block]),
               Sdes.cname(1, "alice@192.0.2.1"), Bye([1], "hang up")]
    data = build_compound(*packets)
    assert len(data) % 4 == 0 and data[1] == 200
    assert parse_compound(data) == packets
    assert parse_compound(data)[1].cname_of(1) == "alice@192.0.2.1"
    rr = build_compound(ReceiverReport(2, []), Sdes.cname(2, "b"), RtcpUnknown(204, 1, b"name"))
    assert parse_compound(rr) == [ReceiverReport(2, []), Sdes.cname(2, "b"), RtcpUnknown(204, 1, b"name")]
    assert is_rtcp(rr) and not is_rtcp(b"\x80\x00\x00\x01")


def test_sr_wire_layout() -> None:
    data = SenderReport(0x01020304, 0x1122334455667788, 9, 2, 320).build()
    assert data.hex() == "80c8000601020304112233445566778800000009000000020000" + "0140"


@pytest.mark.parametrize("data", [
    b"\x80\xc9\x00",                                 # not a multiple of 32 bits
    b"\x80\xca\x00\x00",                             # starts with SDES
    b"\x40\xc9\x00\x01\x00\x00\x00\x01",             # version 1
    b"\x80\xc9\x00\x05\x00\x00\x00\x01",             # length past the end
    b"\x81\xc9\x00\x01\x00\x00\x00\x01",             # report count past the end
    b"\x80\xc9\x00\x01\x00\x00\x00\x01\x81\xca\x00\x01\x00\x00\x00\x01",  # SDES chunk w/o end
])
def test_malformed_rtcp_is_a_typed_error(data: bytes) -> None:
    with pytest.raises(RtpProtocolError):
        parse_compound(data)


def test_reception_loss_jitter_and_report_block() -> None:
    stats = ReceptionStats()
    arrival = 100.0
    for i, seq in enumerate([10, 11, 13, 14, 15]):      # 12 lost
        stats.received(seq, 1000 + 160 * (seq - 10), arrival + 0.020 * (seq - 10) + (0.004 if i % 2 else 0))
    assert stats.sequence.lost == 1
    assert stats.jitter > 0 and 0 < stats.jitter_ms < 4
    stats.sender_report(SenderReport(9, 0x0000_1234_5678_0000, 0, 0, 0), arrival)
    block = stats.report_block(9, arrival + 0.5)
    assert (block.ssrc, block.cumulative_lost, block.highest_sequence) == (9, 1, 15)
    assert block.fraction_lost == (1 << 8) // 6
    assert block.lsr == 0x12345678 and block.dlsr == 32768


def test_jitter_follows_a8_for_steady_offset() -> None:
    stats = ReceptionStats()
    for n in range(200):   # every packet 1 ms (8 units) off, alternating
        stats.received(n, 160 * n, n * 0.020 + (0.001 if n % 2 else 0))
    assert stats.jitter == pytest.approx(8, abs=0.5)


def test_report_timer_interval_and_randomization() -> None:
    timer = ReportTimer(rng=random.Random(1))
    first = timer.start(0.0)
    assert 2.5 * 0.5 / 1.21828 <= first <= 2.5 * 1.5 / 1.21828   # half the minimum at first
    assert not timer.due(first - 0.01) and timer.due(first)
    nxt = timer.sent(first, 72, we_sent=True)
    assert 5 * 0.5 / 1.21828 <= nxt - first <= 5 * 1.5 / 1.21828
    big = ReportTimer(members=2000, senders=2)
    assert big.deterministic_interval(we_sent=False) > 5.0         # scales with members
