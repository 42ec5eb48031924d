"""The asyncio RTP session: sockets, the 20 ms clock, the send and receive paths.

    allocator = PortAllocator("127.0.0.1", 20000, 30000)
    session = await RtpSession.open(allocator)          # binds RTP (even) + RTCP (odd) ports
    session.configure(AudioParams.from_sdp(local_sdp, remote_sdp))
    session.source = ToneSource(1000)                    # None: silence
    session.sink = Recorder()                            # what we hear, one frame per tick
    session.send_dtmf("123")
    ...
    session.configure(params_with_new_direction)         # hold / resume (re-INVITE)
    stats = session.stats.as_dict()                      # the rtp_stats event
    await session.close()                                # RTCP BYE, ports back to the allocator

Every session of an event loop ticks from one ``MediaClock`` (one timer for
hundreds of calls).  Per tick a session sends one frame, a telephone-event
packet while a digit is on, or nothing when its direction does not send;
and hands its sink the next frame out of the jitter buffer (concealed when
lost, silence when nothing plays or its direction does not receive).

Packets are accepted only from the remote address of the SDP (host and
port; with ``symmetric`` the port of the first packet from that host is
latched and used to send to, RFC 4961).  Anything else is counted
(``unexpected_source``) and dropped, as are malformed packets
(``malformed``): nothing from the network raises out of the receive path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from ..sdp import Direction
from . import g711
from .audio import Sink, Source
from .dtmf import DtmfEvent, DtmfReceiver, DtmfSender
from .errors import MediaUsageError, RtpProtocolError
from .jitter import Concealer, JitterBuffer
from .negotiate import AudioParams
from .pcm import silence
from .ports import PortAllocator
from .rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportTimer,
    Sdes,
    SenderReport,
    build_compound,
    is_rtcp,
    ntp_time,
    parse_compound,
)
from .rtp import Packetizer, RtpPacket

log = logging.getLogger(__name__)

__all__ = ["MediaClock", "RtpSession", "RtpStats"]

Address = tuple[Any, ...]
_MAX_READS = 64          # datagrams per readiness event, so one busy socket cannot starve the rest
_MAX_DATAGRAM = 2048


@dataclass(slots=True)
class RtpStats:
    """Counters for the ``rtp_stats`` event."""

    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    lost: int = 0                 # RFC 3550 cumulative loss of the remote source
    jitter_ms: float = 0.0        # RFC 3550 A.8 interarrival jitter
    late: int = 0                 # arrived after their playout time
    duplicates: int = 0
    concealed: int = 0            # frames played by loss concealment
    malformed: int = 0
    unexpected_source: int = 0
    unknown_payload: int = 0
    send_errors: int = 0
    dtmf_sent: int = 0
    dtmf_received: int = 0
    rtcp_sent: int = 0
    rtcp_received: int = 0
    remote_fraction_lost: float = 0.0   # what the peer's last report says of our stream
    remote_jitter_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class MediaClock:
    """One ptime timer for every session of a loop, on absolute deadlines (no drift).

    A tick that runs late is caught up by running the missed ticks at once,
    at most ``max_catch_up``; beyond that the clock jumps (frames skipped and
    counted in ``skipped``).
    """

    _clocks: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock]] = \
        weakref.WeakKeyDictionary()

    def __init__(self, ptime: int = 20, max_catch_up: int = 5) -> None:
        self.interval = ptime / 1000
        self.max_catch_up = max_catch_up
        self.sessions: list[RtpSession] = []
        self.hooks: list[Callable[[], None]] = []   # run first in each tick (a Mixer's tick)
        self.ticks = 0
        self.skipped = 0
        self.late_ticks = 0
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0

    @classmethod
    def for_loop(cls) -> MediaClock:
        loop = asyncio.get_running_loop()
        clock = cls._clocks.get(loop)
        if clock is None:
            clock = cls._clocks[loop] = cls()
        return clock

    def attach(self, session: RtpSession) -> None:
        self.sessions.append(session)
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._next = loop.time() + self.interval
            self._handle = loop.call_at(self._next, self._tick)

    def detach(self, session: RtpSession) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
        if not self.sessions and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = int((now - self._next) / self.interval) + 1
        if due > 1:
            self.late_ticks += 1
        if due > self.max_catch_up:
            self.skipped += due - self.max_catch_up
            self._next += (due - self.max_catch_up) * self.interval
            due = self.max_catch_up
        wall = time.monotonic()
        for _ in range(due):
            self.ticks += 1
            for hook in list(self.hooks):
                hook()
            for session in list(self.sessions):
                try:
                    session.tick(wall)
                except Exception:  # one broken source or sink must not stop every call
                    log.exception("media tick of %s failed", session)
            self._next += self.interval
        self._handle = loop.call_at(self._next, self._tick)


class RtpSession:
    """One audio stream; see the module docstring."""

    def __init__(self, rtp: socket.socket, rtcp: socket.socket | None, *,
                 allocator: PortAllocator | None = None, clock: MediaClock | None = None,
                 symmetric: bool = True, send_silence: bool = True, cname: str | None = None) -> None:
        self._rtp_sock, self._rtcp_sock = rtp, rtcp
        self.local_host, self.local_port = rtp.getsockname()[:2]
        self.local_rtcp_port = rtcp.getsockname()[1] if rtcp is not None else self.local_port
        self.allocator = allocator
        self.clock = clock
        self.symmetric = symmetric
        self.send_silence = send_silence
        self.cname = cname or f"imsbox-{os.getpid()}@{self.local_host}"
        self.params: AudioParams | None = None
        self.source: Source | None = None
        self.sink: Sink | None = None
        self.on_dtmf: Callable[[DtmfEvent], None] | None = None
        self.on_rtp: Callable[[RtpPacket, float], None] | None = None   # tests, benchmarks
        self.on_sent: Callable[[int, float], None] | None = None        # (sequence, time)
        self.stats = RtpStats()
        self.packetizer = Packetizer(0)
        self.jitter = JitterBuffer()
        self.concealer = Concealer()
        self.reception = ReceptionStats()
        self.report_timer = ReportTimer()
        self.dtmf_sender = DtmfSender()
        self.dtmf_receiver = DtmfReceiver()
        self.remote_ssrc: int | None = None
        self._encode: Callable[[bytes], bytes] = g711.ulaw_encode
        self._decoders: dict[int, Callable[[bytes], bytes]] = {}
        self._send_to: Address | None = None
        self._rtcp_to: Address | None = None
        self._expect_host: str | None = None
        self._latched = False
        self._event_ts = 0
        self._sending = False
        self._ticks = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @classmethod
    async def open(cls, allocator: PortAllocator | None = None, *, host: str = "127.0.0.1",
                   rtcp_mux: bool = False, **options: Any) -> RtpSession:
        """Bind a port pair (from ``allocator``, else any free even port on ``host``) and start."""
        if allocator is None:
            rtp, rtcp = _any_pair(host, rtcp_mux)
        else:
            rtp, rtcp = allocator.allocate(rtcp_mux)
        session = cls(rtp, rtcp, allocator=allocator, **options)
        await session._start()
        return session

    async def _start(self) -> None:
        # Our own readers rather than asyncio transports: a transport reads one datagram
        # per readiness event, so a clock catching up (several frames per socket at once)
        # would let the socket buffers overflow; a reader drains its socket each time.
        self._loop = loop = asyncio.get_running_loop()
        loop.add_reader(self._rtp_sock.fileno(), self._drain, self._rtp_sock, self.datagram_received)
        if self._rtcp_sock is not None:
            loop.add_reader(self._rtcp_sock.fileno(), self._drain, self._rtcp_sock, self.rtcp_received)
        if self.clock is None:
            self.clock = MediaClock.for_loop()
        self.clock.attach(self)
        self.report_timer.start(time.monotonic())

    def __repr__(self) -> str:
        return f"<RtpSession {self.local_host}:{self.local_port} -> {self._send_to}>"

    # --- configuration -------------------------------------------------------------

    def configure(self, params: AudioParams) -> None:
        """Apply negotiated parameters; call again after every offer/answer (hold, resume)."""
        if self.closed:
            raise MediaUsageError("RTP session is closed")
        old = self.params
        self.params = params
        self._encode = g711.encoder(params.encoding)
        assert params.receive is not None
        self._decoders = {pt: g711.decoder(name) for pt, name in params.receive.items()}
        self.packetizer.payload_type = params.payload_type
        self.packetizer.ptime = params.ptime
        self.dtmf_sender.ptime = params.ptime
        samples = 8000 * params.ptime // 1000
        self.jitter.samples_per_frame = self.concealer.samples_per_frame = samples
        if old is None or (old.remote_host, old.remote_port) != (params.remote_host, params.remote_port):
            self._set_remote(params)
        if not params.direction.sends:
            self._sending = False

    def _set_remote(self, params: AudioParams) -> None:
        self._latched = False
        if params.remote_host is None or not params.remote_port:
            self._send_to = self._rtcp_to = None
            self._expect_host = None
            return
        host = _normal_host(params.remote_host)
        self._expect_host = host
        self._send_to = (host, params.remote_port)
        self._rtcp_to = (host, params.rtcp_port)

    @property
    def direction(self) -> Direction:
        return self.params.direction if self.params is not None else Direction.INACTIVE

    def send_dtmf(self, digits: str, duration_ms: int = 100) -> None:
        """Queue RFC 4733 events (the peer must have offered telephone-event)."""
        if self.params is None or self.params.telephone_event is None:
            raise MediaUsageError("the peer did not negotiate telephone-event")
        self.dtmf_sender.send(digits, duration_ms)

    # --- receive path ----------------------------------------------------------------

    @staticmethod
    def _drain(sock: socket.socket, handle: Callable[[bytes, Address], None]) -> None:
        for _ in range(_MAX_READS):
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # ICMP port unreachable while the peer is gone
                log.debug("RTP socket error: %s", exc)
                continue
            handle(data, addr)

    def _accept(self, addr: Address) -> bool:
        if self._expect_host is None or _normal_host(addr[0]) != self._expect_host:
            return False
        if self._send_to is not None and addr[1] == self._send_to[1]:
            return True
        if self.symmetric and not self._latched:
            self._latched = True     # the first packet from the SDP host picks the port
            self._send_to = (self._expect_host, addr[1])
            return True
        return False

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if not self._accept(addr):
            self.stats.unexpected_source += 1
            return
        params = self.params
        if params is None:
            return
        if params.rtcp_mux and is_rtcp(data):
            self._rtcp(data)
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpProtocolError:
            self.stats.malformed += 1
            return
        now = time.monotonic()
        self.stats.packets_received += 1
        self.stats.bytes_received += len(packet.payload)
        if self.on_rtp is not None:
            self.on_rtp(packet, now)
        if packet.ssrc != self.remote_ssrc:
            self._new_source(packet.ssrc)
        pt = packet.payload_type
        decode = self._decoders.get(pt)
        if decode is None and pt != params.telephone_event:
            self.stats.unknown_payload += 1
            return
        self.reception.received(packet.sequence, packet.timestamp, now, timed=decode is not None)
        if decode is None:
            self._dtmf(packet)
            return
        if params.direction.receives:
            self.jitter.push(packet.sequence, packet.timestamp, decode(packet.payload))

    def _new_source(self, ssrc: int) -> None:
        """A new SSRC (first packet, or the peer restarted its stream): fresh receive state."""
        self.remote_ssrc = ssrc
        self.reception = ReceptionStats()
        self.jitter.reset()

    def _dtmf(self, packet: RtpPacket) -> None:
        try:
            event = self.dtmf_receiver.receive(packet.timestamp, packet.payload)
        except RtpProtocolError:
            self.stats.malformed += 1
            return
        if event is not None:
            self.stats.dtmf_received += 1
            if self.on_dtmf is not None:
                self.on_dtmf(event)

    def rtcp_received(self, data: bytes, addr: Address) -> None:
        if self._expect_host is None or _normal_host(addr[0]) != self._expect_host:
            self.stats.unexpected_source += 1
            return
        self._rtcp(data)

    def _rtcp(self, data: bytes) -> None:
        try:
            packets = parse_compound(data)
        except RtpProtocolError:
            self.stats.malformed += 1
            return
        self.stats.rtcp_received += 1
        now = time.monotonic()
        for packet in packets:
            if isinstance(packet, SenderReport) and packet.ssrc == self.remote_ssrc:
                self.reception.sender_report(packet, now)
            if isinstance(packet, (SenderReport, ReceiverReport)):
                for block in packet.reports:
                    if block.ssrc == self.packetizer.ssrc:
                        self.stats.remote_fraction_lost = block.fraction_lost / 256
                        self.stats.remote_jitter_ms = block.jitter / 8
            if isinstance(packet, Bye) and self.remote_ssrc in packet.ssrcs:
                self.remote_ssrc = None

    # --- the clock -------------------------------------------------------------------

    def tick(self, now: float) -> None:
        params = self.params
        if params is None or self.closed:
            return
        samples = self.jitter.samples_per_frame
        self._send_tick(params, samples)
        self._play_tick(params, samples)
        self._ticks += 1
        if self._ticks % 50 == 0:
            self.jitter.adapt(self.reception.jitter_ms, params.ptime)
        if self.report_timer.due(now):
            self._send_report(now)

    def _send_tick(self, params: AudioParams, samples: int) -> None:
        to = self._send_to
        if not params.direction.sends or to is None:
            self.packetizer.skip()
            self._sending = False
            return
        if not self._sending:
            self._sending = True
            self.packetizer.talkspurt()  # marker bit on (re)starting to send
        if self.dtmf_sender.active and params.telephone_event is not None:
            event = self.dtmf_sender.next()
            if event is not None:
                payload, marker, new = event
                if new:
                    self._event_ts = self.packetizer.timestamp
                    self.stats.dtmf_sent += 1
                self._send(to, self.packetizer.raw(payload, params.telephone_event,
                                                              self._event_ts, marker), len(payload))
                self.packetizer.skip()
                return
        frame = self.source.read(samples) if self.source is not None else None
        if frame is None:
            if not self.send_silence:
                self.packetizer.skip()
                return
            frame = silence(samples)
        payload = self._encode(frame)
        self._send(to, self.packetizer.packet(payload), len(payload))

    def _send(self, to: Address, data: bytes, size: int) -> None:
        try:
            self._rtp_sock.sendto(data, to)
        except OSError as exc:   # a full send buffer or an ICMP error: the frame is gone
            self.stats.send_errors += 1
            log.debug("RTP send to %s failed: %s", to, exc)
            return
        self.stats.packets_sent += 1
        self.stats.bytes_sent += size
        if self.on_sent is not None:
            self.on_sent((self.packetizer.sequence - 1) & 0xFFFF, time.monotonic())

    def _play_tick(self, params: AudioParams, samples: int) -> None:
        sink = self.sink
        if not params.direction.receives:
            self.jitter.reset()
            if sink is not None:
                sink.write(silence(samples))
            return
        pcm = self.jitter.pop()
        if pcm is not None:
            pcm = self.concealer.good(pcm)
        elif self.jitter.played:
            pcm = self.concealer.conceal()
        else:
            pcm = silence(samples)
        if sink is not None:
            sink.write(pcm)

    def _send_report(self, now: float) -> None:
        we_sent = self.packetizer.packets > 0 and self._sending
        blocks = ([self.reception.report_block(self.remote_ssrc, now)]
                  if self.remote_ssrc is not None else [])
        ssrc = self.packetizer.ssrc
        if we_sent:
            report: SenderReport | ReceiverReport = SenderReport(
                ssrc, ntp_time(), self.packetizer.timestamp, self.packetizer.packets,
                self.packetizer.octets, blocks)
        else:
            report = ReceiverReport(ssrc, blocks)
        data = build_compound(report, Sdes.cname(ssrc, self.cname))
        self._send_rtcp(data)
        self.report_timer.sent(now, len(data), we_sent)

    def _send_rtcp(self, data: bytes) -> None:
        params = self.params
        mux = params is not None and params.rtcp_mux
        sock = self._rtp_sock if mux or self._rtcp_sock is None else self._rtcp_sock
        to = self._send_to if mux else self._rtcp_to
        if to is None:
            return
        try:
            sock.sendto(data, to)
        except OSError as exc:
            self.stats.send_errors += 1
            log.debug("RTCP send to %s failed: %s", to, exc)
            return
        self.stats.rtcp_sent += 1

    def update_stats(self) -> RtpStats:
        """Fill the derived counters (loss, jitter, late) and return the stats."""
        stats = self.stats
        stats.lost = max(self.reception.sequence.lost, 0)
        stats.jitter_ms = round(self.reception.jitter_ms, 3)
        stats.late = self.jitter.late
        stats.duplicates = self.jitter.duplicates
        stats.concealed = self.concealer.concealed
        return stats

    async def close(self, reason: str = "call ended") -> None:
        """Send RTCP BYE, stop ticking, close the sockets and give the ports back."""
        if self.closed:
            return
        self.update_stats()
        if self.params is not None and self.packetizer.packets:
            ssrc = self.packetizer.ssrc
            self._send_rtcp(build_compound(ReceiverReport(ssrc), Sdes.cname(ssrc, self.cname),
                                           Bye([ssrc], reason)))
        self.closed = True
        if self.clock is not None:
            self.clock.detach(self)
        for sock in (self._rtp_sock, self._rtcp_sock):
            if sock is not None:
                if self._loop is not None:
                    self._loop.remove_reader(sock.fileno())
                sock.close()
        if self.allocator is not None:
            self.allocator.release(self.local_port)
        await asyncio.sleep(0)


def _normal_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.split("%")[0]))
    except ValueError:
        return host


def _any_pair(host: str, rtcp_mux: bool) -> tuple[socket.socket, socket.socket | None]:
    """An even port chosen by the kernel with the odd one above it free as well."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        probe = socket.socket(family, socket.SOCK_DGRAM)
        probe.bind((host, 0))
        port = probe.getsockname()[1]
        probe.close()
        port -= port % 2
        if port < 1024:
            continue
        try:
            return PortAllocator(host, port, port + 2).allocate(rtcp_mux)
        except MediaUsageError:
            continue
    raise MediaUsageError(f"no free RTP port pair on {host}")
