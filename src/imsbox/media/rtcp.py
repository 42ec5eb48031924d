"""RTCP (RFC 3550 section 6): SR, RR, SDES, BYE packets, reception statistics and
the report timer, all sans-I/O.

``parse_compound(data)`` returns the packets of a compound RTCP packet (APP,
XR and other types as ``RtcpUnknown``) or raises ``RtpProtocolError``;
``build_compound(*packets)`` concatenates built packets.  ``ReceptionStats``
is what a receiver keeps per source to fill a report block (loss as in
appendix A.3, interarrival jitter as in A.8, LSR/DLSR); ``ReportTimer``
decides when the next report is due (section 6.3, 6.2 bandwidth rules).
"""

from __future__ import annotations

import random
import struct
import time
from dataclasses import dataclass, field

from .errors import RtpProtocolError
from .rtp import SequenceTracker

__all__ = ["Bye", "ReceiverReport", "ReceptionStats", "ReportBlock", "ReportTimer", "RtcpPacket",
           "RtcpUnknown", "Sdes", "SenderReport", "build_compound", "is_rtcp", "ntp_time",
           "parse_compound"]

SR, RR, SDES, BYE, APP = 200, 201, 202, 203, 204
SDES_CNAME = 1
_NTP_OFFSET = 2208988800
_BLOCK = struct.Struct("!IB3sIIII")


def ntp_time(unix: float | None = None) -> int:
    """A 64-bit NTP timestamp (RFC 3550 section 4) for a Unix time (default: now)."""
    unix = time.time() if unix is None else unix
    return int((unix + _NTP_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def is_rtcp(data: bytes) -> bool:
    """RTP or RTCP on a muxed port: RTCP packet types 192-223 (RFC 5761 section 4)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass(slots=True)
class ReportBlock:
    """One reception report (RFC 3550 section 6.4.1)."""

    ssrc: int
    fraction_lost: int = 0        # 8-bit fixed point
    cumulative_lost: int = 0      # signed 24 bits
    highest_sequence: int = 0     # extended highest sequence number received
    jitter: int = 0               # timestamp units
    lsr: int = 0                  # middle 32 bits of the last SR's NTP time
    dlsr: int = 0                 # delay since that SR, 1/65536 s

    def build(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _BLOCK.pack(self.ssrc, self.fraction_lost & 0xFF, lost.to_bytes(3, "big"),
                           self.highest_sequence & 0xFFFFFFFF, self.jitter & 0xFFFFFFFF,
                           self.lsr, self.dlsr)

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        return cls(ssrc, fraction, int.from_bytes(lost, "big", signed=True), highest, jitter, lsr, dlsr)


@dataclass(slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)

    def build(self) -> bytes:
        body = struct.pack("!IQIII", self.ssrc, self.ntp_timestamp, self.rtp_timestamp & 0xFFFFFFFF,
                           self.packet_count & 0xFFFFFFFF, self.octet_count & 0xFFFFFFFF)
        return _packet(SR, len(self.reports), body + b"".join(r.build() for r in self.reports))


@dataclass(slots=True)
class ReceiverReport:
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)

    def build(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(r.build() for r in self.reports)
        return _packet(RR, len(self.reports), body)


@dataclass(slots=True)
class Sdes:
    """Source descriptions: ``chunks`` maps SSRC -> [(item type, text)] (RFC 3550 section 6.5)."""

    chunks: list[tuple[int, list[tuple[int, bytes]]]] = field(default_factory=list)

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> Sdes:
        return cls([(ssrc, [(SDES_CNAME, cname.encode())])])

    def build(self) -> bytes:
        out = bytearray()
        for ssrc, items in self.chunks:
            chunk = bytearray(struct.pack("!I", ssrc))
            for kind, text in items:
                if len(text) > 255:
                    raise ValueError("SDES item longer than 255 octets")
                chunk += bytes([kind, len(text)]) + text
            chunk += bytes(4 - len(chunk) % 4)  # the null item, then pad to 32 bits
            out += chunk
        return _packet(SDES, len(self.chunks), bytes(out))

    def cname_of(self, ssrc: int) -> str | None:
        for chunk_ssrc, items in self.chunks:
            for kind, text in items:
                if chunk_ssrc == ssrc and kind == SDES_CNAME:
                    return text.decode(errors="replace")
        return None


@dataclass(slots=True)
class Bye:
    ssrcs: list[int]
    reason: str | None = None

    def build(self) -> bytes:
        body = b"".join(struct.pack("!I", s) for s in self.ssrcs)
        if self.reason is not None:
            text = self.reason.encode()[:255]
            body += bytes([len(text)]) + text
            body += bytes(-len(body) % 4)
        return _packet(BYE, len(self.ssrcs), body)


@dataclass(slots=True)
class RtcpUnknown:
    packet_type: int
    count: int
    body: bytes

    def build(self) -> bytes:
        return _packet(self.packet_type, self.count, self.body)


RtcpPacket = SenderReport | ReceiverReport | Sdes | Bye | RtcpUnknown


def _packet(packet_type: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise ValueError("an RTCP packet holds at most 31 reports, chunks or sources")
    if len(body) % 4:
        raise ValueError("RTCP packet body must be a multiple of 32 bits")
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


def build_compound(*packets: RtcpPacket) -> bytes:
    return b"".join(p.build() for p in packets)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """The packets of a compound RTCP packet (RFC 3550 section 6.1, validity as in A.2)."""
    if len(data) < 4 or len(data) % 4:
        raise RtpProtocolError(f"RTCP packet of {len(data)} bytes: not a multiple of 32 bits")
    if data[1] not in (SR, RR):
        raise RtpProtocolError(f"a compound RTCP packet starts with SR or RR, not type {data[1]}")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise RtpProtocolError("truncated RTCP header")
        first, packet_type, words = struct.unpack_from("!BBH", data, offset)
        if first >> 6 != 2:
            raise RtpProtocolError(f"RTCP version {first >> 6}, expected 2")
        end = offset + 4 + 4 * words
        if end > len(data):
            raise RtpProtocolError("RTCP length runs past the packet")
        body = data[offset + 4:end]
        if first & 0x20:
            if end != len(data) or not body or not 0 < body[-1] <= len(body):
                raise RtpProtocolError("RTCP padding only on the last packet, within it")
            body = body[:-body[-1]]
        packets.append(_parse_one(packet_type, first & 0x1F, bytes(body)))
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == SR:
        if len(body) < 24 + 24 * count:
            raise RtpProtocolError("RTCP SR shorter than its report count")
        ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, _blocks(body, 24, count))
    if packet_type == RR:
        if len(body) < 4 + 24 * count:
            raise RtpProtocolError("RTCP RR shorter than its report count")
        return ReceiverReport(struct.unpack_from("!I", body)[0], _blocks(body, 4, count))
    if packet_type == SDES:
        return _parse_sdes(body, count)
    if packet_type == BYE:
        if len(body) < 4 * count:
            raise RtpProtocolError("RTCP BYE shorter than its source count")
        ssrcs = list(struct.unpack_from(f"!{count}I", body))
        reason = None
        if len(body) > 4 * count:
            length = body[4 * count]
            text = body[4 * count + 1:4 * count + 1 + length]
            if len(text) != length:
                raise RtpProtocolError("RTCP BYE reason runs past the packet")
            reason = text.decode(errors="replace")
        return Bye(ssrcs, reason)
    return RtcpUnknown(packet_type, count, body)


def _blocks(body: bytes, offset: int, count: int) -> list[ReportBlock]:
    return [ReportBlock.parse(body, offset + 24 * i) for i in range(count)]


def _parse_sdes(body: bytes, count: int) -> Sdes:
    chunks = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(body):
            raise RtpProtocolError("RTCP SDES chunk runs past the packet")
        ssrc = struct.unpack_from("!I", body, offset)[0]
        offset += 4
        items = []
        while True:
            if offset >= len(body):
                raise RtpProtocolError("RTCP SDES chunk without its null item")
            kind = body[offset]
            if kind == 0:
                offset = (offset + 4) & ~3  # skip the null octets to the next 32-bit boundary
                break
            if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
                raise RtpProtocolError("RTCP SDES item runs past the packet")
            length = body[offset + 1]
            items.append((kind, body[offset + 2:offset + 2 + length]))
            offset += 2 + length
        chunks.append((ssrc, items))
    return Sdes(chunks)


@dataclass(slots=True)
class ReceptionStats:
    """Per-source receive state for report blocks: sequence and loss (A.1, A.3),
    interarrival jitter (A.8), and the last SR for LSR/DLSR (section 6.4.1)."""

    clock_rate: int = 8000
    sequence: SequenceTracker = field(default_factory=SequenceTracker)
    jitter: float = 0.0            # timestamp units
    _transit: int | None = None
    last_sr: int = 0               # middle 32 bits of the last SR's NTP timestamp
    last_sr_time: float | None = None

    def received(self, seq: int, rtp_timestamp: int, arrival: float, timed: bool = True) -> int | None:
        """Note an RTP packet that arrived at ``arrival`` (seconds, any monotonic clock).

        ``timed=False`` for packets whose timestamp is not their sampling
        instant (RFC 4733 events keep the event's start): no jitter sample."""
        extended = self.sequence.update(seq)
        if not timed:
            return extended
        transit = int(arrival * self.clock_rate) - rtp_timestamp
        if self._transit is not None:
            d = abs((transit - self._transit + (1 << 31)) % (1 << 32) - (1 << 31))
            self.jitter += (d - self.jitter) / 16
        self._transit = transit
        return extended

    def sender_report(self, report: SenderReport, arrival: float) -> None:
        self.last_sr = (report.ntp_timestamp >> 16) & 0xFFFFFFFF
        self.last_sr_time = arrival

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000 / self.clock_rate

    def report_block(self, ssrc: int, now: float) -> ReportBlock:
        dlsr = 0 if self.last_sr_time is None else int((now - self.last_sr_time) * 65536)
        return ReportBlock(ssrc, self.sequence.fraction_lost(), self.sequence.lost,
                           self.sequence.extended_max & 0xFFFFFFFF, int(self.jitter),
                           self.last_sr, dlsr & 0xFFFFFFFF)


@dataclass(slots=True)
class ReportTimer:
    """When to send the next RTCP report (RFC 3550 section 6.3.1, 6.2).

    ``session_bandwidth`` in octets/s (64 kbit/s G.711 plus headers: 10,000);
    RTCP gets 5 % of it, senders a quarter of that when they are few.  The
    first report goes out after half the minimum interval.
    """

    session_bandwidth: float = 10_000.0
    minimum: float = 5.0
    rng: random.Random = field(default_factory=random.Random)
    average_size: float = 100.0    # octets of a compound packet, with UDP/IP
    members: int = 2
    senders: int = 2
    next_time: float | None = None
    initial: bool = True

    def deterministic_interval(self, we_sent: bool) -> float:
        bandwidth = self.session_bandwidth * 0.05
        members = self.members
        minimum = self.minimum / 2 if self.initial else self.minimum
        if self.senders <= members * 0.25:
            if we_sent:
                bandwidth *= 0.25
                members = self.senders
            else:
                bandwidth *= 0.75
                members -= self.senders
        return max(self.average_size * members / bandwidth, minimum)

    def interval(self, we_sent: bool) -> float:
        """The randomized interval, [0.5, 1.5] times the deterministic one over e - 3/2."""
        return self.deterministic_interval(we_sent) * self.rng.uniform(0.5, 1.5) / 1.21828

    def start(self, now: float) -> float:
        self.next_time = now + self.interval(we_sent=False)
        return self.next_time

    def due(self, now: float) -> bool:
        return self.next_time is not None and now >= self.next_time

    def sent(self, now: float, size: int, we_sent: bool) -> float:
        """Note a report of ``size`` octets sent at ``now``; returns the next time."""
        self.average_size += (size + 28 - self.average_size) / 16  # section 6.3.3
        self.initial = False
        self.next_time = now + self.interval(we_sent)
        return self.next_time
