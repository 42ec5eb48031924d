"""RFC 4733 telephone-events: the sender's packet sequence and the receiver's dedup."""

from __future__ import annotations

import pytest

from imsbox.media import DtmfReceiver, DtmfSender, RtpProtocolError, TelephoneEvent


def test_sender_start_continue_and_three_ends() -> None:
    sender = DtmfSender(ptime=20)
    sender.send("5", duration_ms=60)
    packets = []
    while (step := sender.next()) is not None:
        packets.append(step)
    events = [TelephoneEvent.parse(p) for p, _, _ in packets]
    assert [e.event for e in events] == [5] * 6
    assert [e.duration for e in events] == [160, 320, 480, 480, 480, 480]
    assert [e.end for e in events] == [False, False, False, True, True, True]
    assert [m for _, m, _ in packets] == [True] + [False] * 5     # marker on the first only
    assert [n for _, _, n in packets] == [True] + [False] * 5     # one timestamp per event
    assert not sender.active


def test_payload_layout() -> None:
    assert bytes(TelephoneEvent(11, True, 10, 800)) == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert TelephoneEvent.parse(bytes([11, 0x8A, 0x03, 0x20])).digit == "#"
    with pytest.raises(RtpProtocolError):
        TelephoneEvent.parse(b"\x01")


def test_receiver_reports_each_digit_once() -> None:
    sender, receiver = DtmfSender(), DtmfReceiver()
    sender.send("1*", duration_ms=40)
    ts, got = 0, []
    while (step := sender.next()) is not None:
        payload, _, new = step
        ts += 1000 if new else 0
        event = receiver.receive(ts, payload)
        if event is not None:
            got.append((event.digit, event.duration_ms))
    assert got == [("1", 40), ("*", 40)]
    assert receiver.receive(1000, bytes(TelephoneEvent(1, True, 10, 320))) is None  # late copy


def test_bad_digit() -> None:
    with pytest.raises(ValueError):
        DtmfSender().send("x")
