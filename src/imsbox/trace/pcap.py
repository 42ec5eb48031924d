"""pcapng of traced messages with synthetic IP, UDP and TCP framing.

Each message on the wire (a ladder :class:`~imsbox.trace.ladder.Arrow`, so a
message two nodes traced is written once) becomes one UDP datagram or one or
more TCP segments of at most :data:`MAX_SEGMENT` bytes, in LINKTYPE_RAW
packets (IPv4 or IPv6 by address). A TCP connection gets a three-way
handshake before its first segment (the side that sent first is the client)
and per-direction sequence numbers that count every byte, with ACKs of what
the other side sent, so ``tshark -z follow,tcp`` works. Timestamps are the
sender's monotonic clock mapped onto the wall clock of the first record.

TLS connections are written decrypted on their real ports (the trace sees
the plain text): read them with ``-d tcp.port==5061,sip``.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from .ladder import Arrow
from .record import Address

__all__ = ["MAX_SEGMENT", "PcapWriter", "write_pcap"]

LINKTYPE_RAW = 101
MAX_SEGMENT = 32768
SNAPLEN = 262144
_SYN, _ACK, _PSH = 0x02, 0x10, 0x08


@dataclass(slots=True)
class _Tcp:
    client: Address
    seq: dict[Address, int]  # next sequence number each side sends


class PcapWriter:
    """Writes the section header and one interface, then packets as they come."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.packets = 0
        self._conns: dict[tuple[str, frozenset[Address]], _Tcp] = {}
        self._ip_id = 0
        out.write(_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        options = _option(2, b"imsbox trace") + _option(9, b"\x06") + _option(0, b"")
        out.write(_block(1, struct.pack("<HHI", LINKTYPE_RAW, 0, SNAPLEN) + options))

    def message(self, arrow: Arrow, when: float) -> None:
        """One message from ``arrow.src`` to ``arrow.dst`` at wall time ``when``."""
        if arrow.transport == "udp":
            self._packet(when, arrow.src, arrow.dst, 17, _udp(arrow.src, arrow.dst,
                                                              arrow.data))
        else:
            self._tcp_message(arrow, when)

    def _tcp_message(self, arrow: Arrow, when: float) -> None:
        src, dst = arrow.src, arrow.dst
        key = (arrow.transport, frozenset((src, dst)))
        conn = self._conns.get(key)
        if conn is None:
            conn = self._conns[key] = self._handshake(src, dst, when)
        data = arrow.data
        for i in range(0, max(len(data), 1), MAX_SEGMENT):
            piece = data[i:i + MAX_SEGMENT]
            seq, ack = conn.seq[src], conn.seq[dst]
            self._packet(when, src, dst, 6, _tcp(src, dst, seq, ack, _ACK | _PSH, piece))
            conn.seq[src] = (seq + len(piece)) & 0xFFFFFFFF

    def _handshake(self, client: Address, server: Address, when: float) -> _Tcp:
        isn_c, isn_s = _isn(client, server), _isn(server, client)
        self._packet(when, client, server, 6, _tcp(client, server, isn_c, 0, _SYN, b""))
        self._packet(when, server, client, 6, _tcp(server, client, isn_s, isn_c + 1,
                                                   _SYN | _ACK, b""))
        self._packet(when, client, server, 6, _tcp(client, server, isn_c + 1, isn_s + 1,
                                                   _ACK, b""))
        return _Tcp(client, {client: isn_c + 1, server: isn_s + 1})

    def _packet(self, when: float, src: Address, dst: Address, proto: int,
                payload: bytes) -> None:
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        packet = _ip(src[0], dst[0], proto, payload, self._ip_id)
        micros = round(when * 1_000_000)
        body = struct.pack("<IIIII", 0, micros >> 32, micros & 0xFFFFFFFF, len(packet),
                           len(packet)) + _pad(packet)
        self.out.write(_block(6, body))
        self.packets += 1


def write_pcap(arrows: Iterable[Arrow], out: BinaryIO) -> int:
    """Every arrow in order; the number of messages written."""
    writer = PcapWriter(out)
    arrows = list(arrows)
    if not arrows:
        return 0
    first = arrows[0].record
    base = first.wall - first.t
    for arrow in arrows:
        writer.message(arrow, base + arrow.t)
    return len(arrows)


# -- framing ----------------------------------------------------------------------------

def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _pad(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _isn(a: Address, b: Address) -> int:
    """A fixed initial sequence number per direction (readable, reproducible)."""
    return (zlib.crc32(repr((a, b)).encode()) & 0x0FFFFFFF) | 0x10000000


def _ip(src: str, dst: str, proto: int, payload: bytes, ident: int) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4 and d.version == 4:
        head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64,
                           proto, 0, s.packed, d.packed)
        head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
        return head + payload
    s6, d6 = _v6(s), _v6(d)
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), proto, 64, s6, d6) + payload


def _v6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    if address.version == 6:
        return address.packed
    return ipaddress.IPv6Address(f"::ffff:{address}").packed


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4 and d.version == 4:
        return s.packed + d.packed + struct.pack("!BBH", 0, proto, length)
    return _v6(s) + _v6(d) + struct.pack("!IxxxB", length, proto)


def _udp(src: Address, dst: Address, data: bytes) -> bytes:
    length = 8 + len(data)
    head = struct.pack("!HHHH", src[1], dst[1], length, 0)
    check = _checksum(_pseudo(src[0], dst[0], 17, length) + head + data) or 0xFFFF
    return head[:6] + struct.pack("!H", check) + data


def _tcp(src: Address, dst: Address, seq: int, ack: int, flags: int, data: bytes) -> bytes:
    head = struct.pack("!HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                       5 << 4, flags, 65535, 0, 0)
    check = _checksum(_pseudo(src[0], dst[0], 6, len(head) + len(data)) + head + data)
    return head[:16] + struct.pack("!H", check) + head[18:] + data


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
