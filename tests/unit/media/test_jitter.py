"""The jitter buffer: reorder, duplicates, loss and concealment, late packets, drift."""

from __future__ import annotations

import array

from imsbox.media import Concealer, JitterBuffer

F = 160


def frame(n: int) -> bytes:
    return array.array("h", [n] * F).tobytes()


def played(buf: JitterBuffer, ticks: int) -> list[int | None]:
    out = []
    for _ in range(ticks):
        pcm = buf.pop()
        out.append(None if pcm is None else array.array("h", pcm)[0])
    return out


def test_reorder_within_the_buffer() -> None:
    buf = JitterBuffer(target=3)
    for n in (0, 2, 1, 4, 3):
        buf.push(n, 1000 + F * n, frame(n))
    assert played(buf, 5) == [0, 1, 2, 3, 4]
    assert buf.lost == 0 and buf.late == 0


def test_duplicates_dropped_buffered_or_played() -> None:
    buf = JitterBuffer(target=2)
    for n in (0, 1, 1):
        buf.push(n, F * n, frame(n))
    assert played(buf, 1) == [0]
    assert not buf.push(0, 0, frame(0))      # played already
    assert buf.duplicates == 2
    assert played(buf, 1) == [1]


def test_loss_returns_none_and_concealment_fades_to_silence() -> None:
    buf = JitterBuffer(target=2)
    for n in (0, 1, 3):
        buf.push(n, F * n, frame(1000))
    concealer = Concealer()
    out = []
    for _ in range(4):
        pcm = buf.pop()
        out.append(array.array("h", concealer.good(pcm) if pcm else concealer.conceal())[0])
    assert out == [1000, 1000, 500, 1000] and buf.lost == 1
    levels = [array.array("h", concealer.conceal())[0] for _ in range(4)]
    assert levels == [500, 250, 125, 0]      # halved per loss, then silence


def test_late_packet_dropped_and_counted() -> None:
    buf = JitterBuffer(target=2)
    buf.push(0, 0, frame(0))
    buf.push(2, 2 * F, frame(2))
    assert played(buf, 2) == [0, None]       # 1 is due now and missing
    assert not buf.push(1, F, frame(1))      # arrives after its time
    assert buf.late == 1 and played(buf, 1) == [2]


def test_wrap_around_of_timestamps() -> None:
    buf = JitterBuffer(target=2)
    base = 0xFFFFFFFF - F
    for n in range(4):
        buf.push(n, (base + F * n) & 0xFFFFFFFF, frame(n))
    assert played(buf, 4) == [0, 1, 2, 3]


def test_fast_sender_clock_drift_drops_frames() -> None:
    """The sender's clock runs 10 % fast: 11 frames arrive per 10 ticks; the buffer stays bounded."""
    buf = JitterBuffer(target=2, slack=3)
    n = 0
    for tick in range(500):
        while n * 10 <= tick * 11:
            buf.push(n, F * n, frame(n % 1000))
            n += 1
        buf.pop()
        assert len(buf) <= buf.target + buf.slack + 2
    assert buf.drift_dropped >= 40 and buf.lost == 0


def test_slow_sender_clock_drift_conceals_and_refills() -> None:
    """The sender runs 10 % slow: the buffer drains, a frame is concealed, playout goes on."""
    buf = JitterBuffer(target=2)
    n = 0
    results = []
    for tick in range(500):
        while n * 11 <= tick * 10:
            buf.push(n, F * n, frame(1))
            n += 1
        results.append(buf.pop())
    assert buf.lost > 0 and buf.played >= n - 3 and buf.late == 0


def test_timestamp_jump_resyncs() -> None:
    buf = JitterBuffer(target=1)
    buf.push(0, 0, frame(0))
    assert played(buf, 1) == [0]
    buf.push(1, 10_000_000, frame(7))        # a restarted stream far ahead
    assert buf.resyncs == 1 and played(buf, 1) == [7]


def test_adapt_target_to_jitter() -> None:
    buf = JitterBuffer()
    assert buf.adapt(0.5) == 1 and buf.adapt(30) == 4 and buf.adapt(1000) == buf.maximum
