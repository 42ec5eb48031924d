"""RTP packets (RFC 3550 section 5), sequence numbers and the packetizer, sans-I/O.

``RtpPacket.parse(data)`` raises ``RtpProtocolError`` for anything that is not
a version-2 RTP packet; ``bytes(packet)`` builds one.  ``SequenceTracker``
extends the 16-bit sequence number and counts loss the way RFC 3550
appendix A.1 does; ``Packetizer`` stamps outgoing frames with sequence
number, timestamp and SSRC, wrapping both counters.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field

from .errors import RtpProtocolError

__all__ = ["RTP_VERSION", "Packetizer", "RtpPacket", "SequenceTracker", "seq_newer", "ts_diff"]

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet; ``payload`` excludes padding, ``extension`` is (profile, data)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0  # bytes of padding to add when building (0: none)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < 12:
            raise RtpProtocolError(f"RTP packet of {len(data)} bytes: shorter than the 12-byte header")
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise RtpProtocolError(f"RTP version {first >> 6}, expected 2")
        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or padding > end - 12:
                raise RtpProtocolError(f"bad RTP padding count {padding}")
            end -= padding
        offset = 12 + 4 * (first & 0x0F)
        if offset > end:
            raise RtpProtocolError("RTP CSRC list runs past the packet")
        csrc = struct.unpack_from(f"!{first & 0x0F}I", data, 12) if first & 0x0F else ()
        extension = None
        if first & 0x10:
            if offset + 4 > end:
                raise RtpProtocolError("RTP header extension runs past the packet")
            profile, words = struct.unpack_from("!HH", data, offset)
            stop = offset + 4 + 4 * words
            if stop > end:
                raise RtpProtocolError("RTP header extension runs past the packet")
            extension = (profile, bytes(data[offset + 4:stop]))
            offset = stop
        return cls(second & 0x7F, sequence, timestamp, ssrc, bytes(data[offset:end]),
                   bool(second & 0x80), tuple(csrc), extension, padding)

    def __bytes__(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"RTP payload type {self.payload_type} out of 0-127")
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRCs")
        first = RTP_VERSION << 6 | len(self.csrc) | (0x20 if self.padding else 0)
        parts = [b""]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise ValueError("RTP header extension length must be a multiple of 4")
            first |= 0x10
            parts.append(struct.pack("!HH", profile, len(data) // 4) + data)
        parts[0] = _HEADER.pack(first, self.payload_type | (0x80 if self.marker else 0),
                                self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF,
                                self.ssrc & 0xFFFFFFFF)
        parts.append(self.payload)
        if self.padding:
            if not 0 < self.padding < 256:
                raise ValueError("RTP padding must be 1-255 bytes")
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def build_simple(payload_type: int, sequence: int, timestamp: int, ssrc: int,
                 payload: bytes, marker: bool = False) -> bytes:
    """The common case, no CSRC/extension/padding: one struct.pack (the send path)."""
    return _HEADER.pack(0x80, payload_type | (0x80 if marker else 0), sequence & 0xFFFF,
                        timestamp & 0xFFFFFFFF, ssrc) + payload


def seq_newer(a: int, b: int) -> bool:
    """Whether 16-bit sequence number ``a`` comes after ``b`` (serial arithmetic)."""
    return a != b and (a - b) % _SEQ_MOD < _SEQ_MOD // 2


def ts_diff(a: int, b: int) -> int:
    """``a - b`` for 32-bit RTP timestamps, as a signed number across wrap-around."""
    d = (a - b) % _TS_MOD
    return d - _TS_MOD if d >= _TS_MOD // 2 else d


MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 1  # the source is already filtered by address; RFC 3550 suggests 2


@dataclass(slots=True)
class SequenceTracker:
    """The RFC 3550 appendix A.1 source state: extended sequence numbers and loss.

    ``update(seq)`` returns the extended sequence number of an accepted packet,
    or None for one judged invalid (a big jump not yet confirmed, or probation).
    """

    base_seq: int = 0
    max_seq: int = 0
    cycles: int = 0
    bad_seq: int = _SEQ_MOD + 1
    received: int = 0
    probation: int = MIN_SEQUENTIAL
    expected_prior: int = 0
    received_prior: int = 0
    started: bool = False

    def _init(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0

    def update(self, seq: int) -> int | None:
        if not self.started:
            self.started = True
            self._init(seq)
            self.max_seq = seq - 1 & 0xFFFF
            self.probation = MIN_SEQUENTIAL
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init(seq)
                    self.received += 1
                    return self.extended_max
                return None
            self.probation = MIN_SEQUENTIAL - 1
            self.max_seq = seq
            return None
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD
            self.max_seq = seq
        elif udelta <= _SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                self._init(seq)  # the source restarted: two sequential packets confirm it
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return None
        else:
            pass  # duplicate or reordered packet
        self.received += 1
        return self.extend(seq)

    def extend(self, seq: int) -> int:
        """The extended form of ``seq``, relative to the highest one seen."""
        ext = self.cycles + seq
        if seq - self.max_seq > _SEQ_MOD // 2:
            ext -= _SEQ_MOD
        return ext

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1 if self.started and not self.probation else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost (RFC 3550 A.3); negative with duplicates, clamped to 24 bits."""
        lost = self.expected - self.received
        return max(min(lost, 0x7FFFFF), -0x800000)

    def fraction_lost(self) -> int:
        """Loss since the last call, as an 8-bit fixed-point fraction (RFC 3550 A.3)."""
        expected_interval = self.expected - self.expected_prior
        self.expected_prior = self.expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return (lost_interval << 8) // expected_interval


@dataclass(slots=True)
class Packetizer:
    """Stamps outgoing frames: sequence +1 per packet, timestamp + samples per frame.

    Both start random (RFC 3550 section 5.1) unless given; ``marker`` is set
    on the first packet and after ``talkspurt()`` (RFC 3551 section 4.1).
    """

    payload_type: int
    ptime: int = 20                       # ms per frame
    clock_rate: int = 8000
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    sequence: int = field(default_factory=lambda: secrets.randbits(16))
    timestamp: int = field(default_factory=lambda: secrets.randbits(32))
    _marker: bool = True
    packets: int = 0
    octets: int = 0

    @property
    def samples_per_frame(self) -> int:
        return self.clock_rate * self.ptime // 1000

    def talkspurt(self) -> None:
        self._marker = True

    def packet(self, payload: bytes, payload_type: int | None = None) -> bytes:
        """The next packet carrying ``payload``, then advance to the next frame."""
        data = build_simple(self.payload_type if payload_type is None else payload_type,
                            self.sequence, self.timestamp, self.ssrc, payload, self._marker)
        self._marker = False
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self.samples_per_frame) & 0xFFFFFFFF
        self.packets += 1
        self.octets += len(payload)
        return data

    def skip(self, frames: int = 1) -> None:
        """Advance the timestamp over frames not sent (hold, a DTMF event's span)."""
        self.timestamp = (self.timestamp + frames * self.samples_per_frame) & 0xFFFFFFFF

    def raw(self, payload: bytes, payload_type: int, timestamp: int, marker: bool = False) -> bytes:
        """A packet with its own timestamp (RFC 4733 events), taking the next sequence number."""
        data = build_simple(payload_type, self.sequence, timestamp, self.ssrc, payload, marker)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets += 1
        self.octets += len(payload)
        return data
