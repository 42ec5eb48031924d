"""Two RTP sessions on loopback stream tones to each other through real UDP sockets.

The proof that audio is heard is the Goertzel detector on what each sink
recorded, not packet counts: a tone played on one side is found in the
recording on the other, and is absent while the sender is held.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from imsbox.media import (
    AudioParams,
    MediaUsageError,
    PortAllocator,
    Recorder,
    RtpPacket,
    RtpSession,
    ToneSource,
    tone_present,
)
from imsbox.sdp import Direction, LocalCapabilities, answer, audio_offer, hold_direction

pytestmark = pytest.mark.timeout(60)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def pair(**options) -> tuple[RtpSession, RtpSession, Recorder, Recorder]:
    a = await RtpSession.open(**options)
    b = await RtpSession.open(**options)
    a.source, b.source = ToneSource(1000), ToneSource(600)
    a.sink, b.sink = Recorder(), Recorder()
    return a, b, a.sink, b.sink


def negotiate(a: RtpSession, b: RtpSession, a_direction: Direction = Direction.SENDRECV,
              b_direction: Direction = Direction.SENDRECV) -> None:
    """A offers, B answers, both configure from the SDP pair."""
    offer = audio_offer(LocalCapabilities(address="127.0.0.1", audio_port=a.local_port, ptime=20),
                        direction=a_direction)
    ans = answer(offer, LocalCapabilities(address="127.0.0.1", audio_port=b.local_port,
                                          audio_direction=b_direction))
    a.configure(AudioParams.from_sdp(offer, ans))
    b.configure(AudioParams.from_sdp(ans, offer))


def test_tones_cross_both_ways() -> None:
    async def main() -> None:
        a, b, heard_a, heard_b = await pair()
        negotiate(a, b)
        await asyncio.sleep(1.5)
        await a.close()
        await b.close()
        assert tone_present(heard_b.pcm, 1000) and not tone_present(heard_b.pcm, 600)
        assert tone_present(heard_a.pcm, 600) and not tone_present(heard_a.pcm, 1000)
        for s in (a, b):
            stats = s.stats
            assert stats.packets_sent >= 60 and stats.packets_received >= 60
            assert stats.bytes_sent == 160 * stats.packets_sent
            assert stats.malformed == stats.unexpected_source == stats.late == stats.lost == 0
            assert stats.jitter_ms < 10
    run(main())


def test_no_audio_while_held_and_audio_again_on_resume() -> None:
    async def main() -> None:
        a, b, heard_a, heard_b = await pair()
        negotiate(a, b)
        await asyncio.sleep(0.6)
        negotiate(a, b, a_direction=hold_direction(Direction.SENDRECV))   # A holds B: sendonly
        assert (a.direction, b.direction) == (Direction.SENDONLY, Direction.RECVONLY)
        await asyncio.sleep(0.2)   # packets in flight drain
        heard_a.clear()
        heard_b.clear()
        sent_by_b = b.stats.packets_sent
        await asyncio.sleep(1.2)
        assert b.stats.packets_sent == sent_by_b                # the held side stops sending
        assert not tone_present(heard_a.pcm, 600, min_windows=1)  # nothing of B reaches A
        assert tone_present(heard_b.pcm, 1000)                  # A still sends (music on hold)
        negotiate(a, b)                                         # resume
        heard_a.clear()
        await asyncio.sleep(1.2)
        assert tone_present(heard_a.pcm, 600)
        await a.close()
        await b.close()
    run(main())


def test_inactive_sends_nothing_either_way() -> None:
    async def main() -> None:
        a, b, heard_a, heard_b = await pair()
        negotiate(a, b, a_direction=Direction.INACTIVE)
        await asyncio.sleep(0.8)
        assert a.stats.packets_sent == b.stats.packets_sent == 0
        assert not tone_present(heard_a.pcm, 600, min_windows=1)
        assert not tone_present(heard_b.pcm, 1000, min_windows=1)
        await a.close()
        await b.close()
    run(main())


def test_rtp_from_an_unexpected_source_is_ignored_and_malformed_is_counted() -> None:
    async def main() -> None:
        a, b, heard_a, heard_b = await pair(symmetric=False)
        negotiate(a, b)
        intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        intruder.bind(("127.0.0.1", 0))
        tone = ToneSource(2000)
        from imsbox.media import g711
        for n in range(60):   # 1.2 s of injected 2 kHz audio, right sequence space
            intruder.sendto(bytes(RtpPacket(0, n, 160 * n, 42, g711.ulaw_encode(tone.read(160) or b""))),
                            ("127.0.0.1", b.local_port))
            intruder.sendto(b"\x80garbage", ("127.0.0.1", b.local_port))
            await asyncio.sleep(0.02)
        intruder.close()
        await a.close()
        await b.close()
        assert b.stats.unexpected_source == 120
        assert not tone_present(heard_b.pcm, 2000, min_windows=1)
        assert tone_present(heard_b.pcm, 1000)
    run(main())


def test_malformed_from_the_peer_is_dropped_not_raised() -> None:
    async def main() -> None:
        a, b, _, heard_b = await pair()
        negotiate(a, b)
        sock = a._rtp_sock   # the peer's own address: accepted source, bad packets
        for data in (b"\x80", b"\x40" + bytes(20), b"\xa0" + bytes(11) + b"\x00\x40"):
            sock.sendto(data, ("127.0.0.1", b.local_port))
        sock.sendto(b"\x80\xc9\x00\x09", ("127.0.0.1", b.local_rtcp_port))
        await asyncio.sleep(0.8)
        await a.close()
        await b.close()
        assert b.stats.malformed == 4 and tone_present(heard_b.pcm, 1000)
    run(main())


def test_symmetric_rtp_latches_the_source_port() -> None:
    async def main() -> None:
        a, b, heard_a, heard_b = await pair()
        # B was told a wrong port for A (a NAT rewrote it): symmetric RTP sends back
        # to where A's packets come from
        a.configure(AudioParams("127.0.0.1", b.local_port))
        b.configure(AudioParams("127.0.0.1", 9))
        await asyncio.sleep(1.2)
        await a.close()
        await b.close()
        assert tone_present(heard_a.pcm, 600)
    run(main())


def test_dtmf_events_cross() -> None:
    async def main() -> None:
        a, b, _, _ = await pair()
        negotiate(a, b)
        got = []
        b.on_dtmf = got.append
        a.send_dtmf("1#9", duration_ms=80)
        await asyncio.sleep(1.0)
        await a.close()
        await b.close()
        assert [e.digit for e in got] == ["1", "#", "9"] and got[0].duration_ms == 80
        assert a.stats.dtmf_sent == 3 and b.stats.dtmf_received == 3 and b.stats.lost == 0
    run(main())


def test_rtcp_reports_and_bye() -> None:
    async def main() -> None:
        a, b, _, _ = await pair()
        negotiate(a, b)
        await asyncio.sleep(4.5)       # the first report is due within 0.5-1.5 x 2.5 s / 1.22
        assert a.stats.rtcp_received >= 1 and b.stats.rtcp_received >= 1
        assert b.reception.last_sr_time is not None
        assert b.remote_ssrc == a.packetizer.ssrc
        await a.close()
        await asyncio.sleep(0.1)
        assert b.remote_ssrc is None   # A's BYE
        await b.close()
    run(main())


def test_rtcp_mux_and_port_allocator() -> None:
    async def main() -> None:
        allocator = PortAllocator("127.0.0.1", 31000, 31008)
        sessions = [await RtpSession.open(allocator, rtcp_mux=True) for _ in range(4)]
        assert [s.local_port for s in sessions] == [31000, 31002, 31004, 31006]
        with pytest.raises(MediaUsageError):
            await RtpSession.open(allocator)
        await sessions[1].close()
        again = await RtpSession.open(allocator)
        assert (again.local_port, again.local_rtcp_port) == (31002, 31003)
        a, b = sessions[0], sessions[2]
        a.source, b.sink = ToneSource(1000), Recorder()
        a.configure(AudioParams("127.0.0.1", b.local_port, rtcp_mux=True))
        b.configure(AudioParams("127.0.0.1", a.local_port, rtcp_mux=True))
        await asyncio.sleep(1.0)
        assert tone_present(b.sink.pcm, 1000)
        for s in (*sessions, again):
            await s.close()
    run(main())


def test_three_way_mix_minus_through_a_mixer() -> None:
    """C mixes for A and B (the UE's 3-way call): each hears the others, not itself."""
    async def main() -> None:
        from imsbox.media import MediaClock, Mixer
        clock = MediaClock.for_loop()
        mixer = Mixer()
        mixer.add_source(ToneSource(1400))                    # C's own voice
        clock.hooks.append(lambda: mixer.tick(160))
        a, b = await RtpSession.open(), await RtpSession.open()
        ca, cb = await RtpSession.open(), await RtpSession.open()   # C's two legs
        a.source, b.source = ToneSource(600), ToneSource(1000)
        a.sink, b.sink = Recorder(), Recorder()
        for leg in (ca, cb):
            leg.sink = leg.source = mixer.port()
        for x, y in ((a, ca), (b, cb)):
            x.configure(AudioParams("127.0.0.1", y.local_port))
            y.configure(AudioParams("127.0.0.1", x.local_port))
        await asyncio.sleep(1.5)
        for s in (a, b, ca, cb):
            await s.close()
        clock.hooks.clear()
        for rec, own, others in ((a.sink, 600, (1000, 1400)), (b.sink, 1000, (600, 1400))):
            assert all(tone_present(rec.pcm, f, threshold=0.2) for f in others)
            assert not tone_present(rec.pcm, own, threshold=0.05, min_windows=1)
    run(main())
