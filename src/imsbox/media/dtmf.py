"""RFC 4733 telephone-events (DTMF digits), sans-I/O.

``TelephoneEvent`` is the 4-byte payload (section 2.3).  ``DtmfSender``
produces one payload per packet interval for a digit: the first with the
marker bit, each carrying the event's growing duration under the one
timestamp of the event's start, and three end packets with the E bit and the
final duration (section 2.5.1.4).  ``DtmfReceiver`` turns received payloads
into digits, once per event even though the end packet is sent three times
(section 2.5.2.2), keyed by the event's timestamp.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from .errors import RtpProtocolError

__all__ = ["DIGITS", "DtmfEvent", "DtmfReceiver", "DtmfSender", "TelephoneEvent", "event_code"]

DIGITS = "0123456789*#ABCD"   # event codes 0-15 (RFC 4733 section 3.2)
END_PACKETS = 3


def event_code(digit: str) -> int:
    code = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


@dataclass(slots=True, frozen=True)
class TelephoneEvent:
    event: int
    end: bool = False
    volume: int = 10       # -dBm0, 0-63
    duration: int = 0      # timestamp units

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < 4:
            raise RtpProtocolError(f"telephone-event payload of {len(payload)} bytes, expected 4")
        event, flags, duration = struct.unpack_from("!BBH", payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        return struct.pack("!BBH", self.event, (0x80 if self.end else 0) | (self.volume & 0x3F),
                           min(self.duration, 0xFFFF))

    @property
    def digit(self) -> str | None:
        return DIGITS[self.event] if self.event < len(DIGITS) else None


@dataclass(slots=True)
class DtmfSender:
    """Queued digits, each sent for ``duration_ms`` then ended with three E packets."""

    ptime: int = 20
    clock_rate: int = 8000
    volume: int = 10
    _queue: deque[tuple[int, int]] = field(default_factory=deque)  # (code, duration in samples)
    _current: tuple[int, int] | None = None
    _elapsed: int = 0
    _ends_sent: int = 0

    def send(self, digits: str, duration_ms: int = 100) -> None:
        for digit in digits:
            self._queue.append((event_code(digit), self.clock_rate * duration_ms // 1000))

    @property
    def active(self) -> bool:
        return self._current is not None or bool(self._queue)

    def next(self) -> tuple[bytes, bool, bool] | None:
        """(payload, marker, new_event) for this packet interval, or None when idle.

        ``new_event`` asks the caller to take a fresh timestamp: the event's
        packets all carry the timestamp of its first one.
        """
        step = self.clock_rate * self.ptime // 1000
        if self._current is None:
            if not self._queue:
                return None
            self._current = self._queue.popleft()
            self._elapsed = step
            self._ends_sent = 0
            code, _ = self._current
            return bytes(TelephoneEvent(code, False, self.volume, step)), True, True
        code, total = self._current
        if self._elapsed < total:
            self._elapsed = min(self._elapsed + step, total)
            return bytes(TelephoneEvent(code, False, self.volume, self._elapsed)), False, False
        self._ends_sent += 1
        if self._ends_sent >= END_PACKETS:
            self._current = None
        return bytes(TelephoneEvent(code, True, self.volume, self._elapsed)), False, False


@dataclass(slots=True, frozen=True)
class DtmfEvent:
    digit: str
    duration_ms: int
    timestamp: int


@dataclass(slots=True)
class DtmfReceiver:
    clock_rate: int = 8000
    _done: deque[int] = field(default_factory=lambda: deque(maxlen=16))  # event timestamps ended
    events: list[DtmfEvent] = field(default_factory=list)

    def receive(self, timestamp: int, payload: bytes) -> DtmfEvent | None:
        """The digit when its event ends (first E packet), else None; raises on a bad payload."""
        event = TelephoneEvent.parse(payload)
        if not event.end or timestamp in self._done or event.digit is None:
            return None
        self._done.append(timestamp)
        found = DtmfEvent(event.digit, event.duration * 1000 // self.clock_rate, timestamp)
        self.events.append(found)
        return found
