"""A jitter buffer as plain state: frames go in as they arrive, one comes out per tick.

``push(seq, timestamp, payload)`` files an encoded frame by its RTP
timestamp; ``pop()`` is called once per ptime and returns the payload due
now, or ``None`` (nothing due: the caller conceals it, see ``Concealer``).
Playout starts once ``target`` frames are buffered and then advances one
frame per call, so

* reordered packets are put back in order (they only have to arrive before
  their playout time);
* duplicates (a timestamp buffered or already played) are dropped;
* a frame whose time has passed is *late* and dropped;
* a missing frame is *lost*: ``pop()`` returns None;
* clock drift: when the sender runs fast the buffer grows, and beyond
  ``target + slack`` frames the oldest is dropped (``drift_dropped``); when
  it runs slow the buffer drains, a concealed frame is played and the
  buffer refills.  A timestamp jump beyond ``resync_after`` frames (a new
  source, a restarted stream) re-anchors playout;
* ``adapt(jitter_ms)`` sets ``target`` to about twice the jitter in frames,
  within ``minimum``..``maximum``.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from .pcm import scale, silence
from .rtp import ts_diff

__all__ = ["Concealer", "JitterBuffer"]


@dataclass(slots=True)
class JitterBuffer:
    samples_per_frame: int = 160
    target: int = 2          # frames buffered before playout starts (40 ms at 20 ms)
    minimum: int = 1
    maximum: int = 10
    slack: int = 3           # frames above target tolerated before dropping for drift
    resync_after: int = 50   # frames of timestamp jump that restart playout
    _heap: list[tuple[int, int, bytes]] = field(default_factory=list)  # (offset, seq, payload)
    _anchor: int | None = None       # RTP timestamp of offset 0
    _playout: int = 0                # offset (samples) of the next frame to play
    _playing: bool = False
    _queued: set[int] = field(default_factory=set)
    _recent: set[int] = field(default_factory=set)         # offsets played lately: duplicates
    _recent_order: deque[int] = field(default_factory=deque)
    pushed: int = 0
    played: int = 0
    lost: int = 0
    late: int = 0
    duplicates: int = 0
    drift_dropped: int = 0
    resyncs: int = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, seq: int, timestamp: int, payload: bytes) -> bool:
        """File a frame; False if it was dropped (duplicate or late)."""
        if self._anchor is None:
            self._anchor = timestamp
        offset = ts_diff(timestamp, self._anchor)
        if self._playing and abs(offset - self._playout) > self.resync_after * self.samples_per_frame:
            self.reset()
            self.resyncs += 1
            self._anchor, offset = timestamp, 0
        if offset in self._queued or offset in self._recent:
            self.duplicates += 1
            return False
        if self._playing and offset < self._playout:
            self.late += 1
            return False
        heapq.heappush(self._heap, (offset, seq, payload))
        self._queued.add(offset)
        self.pushed += 1
        if not self._playing and len(self._heap) >= self.target:
            self._playing = True
            self._playout = self._heap[0][0]
        return True

    def pop(self) -> bytes | None:
        """The frame due at this tick, or None (lost, or not playing yet)."""
        if not self._playing:
            return None
        self._drop_for_drift()
        heap = self._heap
        while heap and heap[0][0] < self._playout:  # a frame overtaken by a resync or drift drop
            self._queued.discard(heapq.heappop(heap)[0])
        due = self._playout
        self._playout += self.samples_per_frame
        if heap and heap[0][0] == due:
            offset, _, payload = heapq.heappop(heap)
            self._queued.discard(offset)
            self._remember(offset)
            self.played += 1
            return payload
        if not heap:
            # drained: the sender is slow or stopped; wait for target frames again
            self._playing = False
            self.lost += 1
            return None
        self.lost += 1
        return None

    def _remember(self, offset: int) -> None:
        self._recent_order.append(offset)
        self._recent.add(offset)
        if len(self._recent_order) > 64:
            self._recent.discard(self._recent_order.popleft())

    def _drop_for_drift(self) -> None:
        if len(self._heap) > self.target + self.slack:
            offset, _, _ = heapq.heappop(self._heap)
            self._queued.discard(offset)
            self.drift_dropped += 1
            self._playout = max(self._playout, offset + self.samples_per_frame)

    def adapt(self, jitter_ms: float, ptime: int = 20) -> int:
        frames = int(2 * jitter_ms / ptime) + 1
        self.target = max(self.minimum, min(self.maximum, frames))
        return self.target

    def reset(self) -> None:
        self._heap.clear()
        self._queued.clear()
        self._recent.clear()
        self._recent_order.clear()
        self._anchor = None
        self._playing = False
        self._playout = 0

    @property
    def depth_ms(self) -> float:
        return 1000 * len(self._heap) * self.samples_per_frame / 8000


@dataclass(slots=True)
class Concealer:
    """Packet-loss concealment for decoded frames: repeat the last frame, halving
    it on each consecutive loss, and silence after ``repeats`` losses."""

    samples_per_frame: int = 160
    repeats: int = 3
    _last: bytes | None = None
    _missing: int = 0
    concealed: int = 0

    def good(self, pcm: bytes) -> bytes:
        self._last = pcm
        self._missing = 0
        return pcm

    def conceal(self) -> bytes:
        self.concealed += 1
        self._missing += 1
        size = 2 * self.samples_per_frame
        if self._last is None or self._missing > self.repeats or len(self._last) != size:
            return silence(self.samples_per_frame)
        return scale(self._last, 0.5 ** self._missing)
