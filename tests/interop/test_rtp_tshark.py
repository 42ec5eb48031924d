"""Wireshark's RTP/RTCP dissectors read imsbox's media streams without complaint.

Two RtpSessions on 127.0.0.1 exchange 20 ms PCMU (A) and PCMA (B) frames,
RFC 4733 digits and RTCP SR/SDES/BYE while tshark captures loopback; decoded
with ``-d udp.port==N,rtp`` for the RTP ports (RTCP follows on N+1), every
frame must be RTP or RTCP, sequence numbers must be consecutive with one SSRC
per direction, telephone-events must decode as RTP events, and nothing may
be flagged malformed.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from imsbox.media import AudioParams, RtpSession, ToneSource
from imsbox.sdp import PCMA, PCMU, TELEPHONE_EVENT, LocalCapabilities, answer, audio_offer

pytestmark = pytest.mark.timeout(90)


async def exchange(a: RtpSession, b: RtpSession) -> None:
    offer = audio_offer(LocalCapabilities(address="127.0.0.1", audio_port=a.local_port, ptime=20))
    ans = answer(offer, LocalCapabilities(address="127.0.0.1", audio_port=b.local_port,
                                          audio_codecs=[PCMA, PCMU, TELEPHONE_EVENT]))
    a.configure(AudioParams.from_sdp(offer, ans))
    b.configure(AudioParams.from_sdp(ans, offer))
    a.source, b.source = ToneSource(1000), ToneSource(600)
    a.send_dtmf("42")
    await asyncio.sleep(4.5)   # long enough for the first RTCP reports
    await a.close()
    await b.close()


def test_rtp_and_rtcp_decode_cleanly(capture) -> None:
    async def open_pair() -> tuple[RtpSession, RtpSession]:
        return await RtpSession.open(), await RtpSession.open()

    async def main():
        a, b = await open_pair()
        ports = [p + i for p in (a.local_port, b.local_port) for i in (0, 1)]
        with capture(ports=ports, tcp=False) as cap:
            await exchange(a, b)
        return a.local_port, b.local_port, cap

    pa, pb, cap = asyncio.run(main())
    decode = [f"udp.port=={pa},rtp", f"udp.port=={pb},rtp"]
    assert cap.malformed(decode_as=decode) == []
    frames = cap.decode(decode_as=decode, fields=["frame.protocols", "rtp.ssrc", "rtp.seq", "rtp.p_type",
                                                   "udp.dstport", "rtcp.pt"])
    assert frames and all("rtp" in f["frame.protocols"][0] or "rtcp" in f["frame.protocols"][0]
                          for f in frames)
    to_b = [f for f in frames if f["udp.dstport"] == [str(pb)] and "rtp.seq" in f]
    to_a = [f for f in frames if f["udp.dstport"] == [str(pa)] and "rtp.seq" in f]
    for stream, audio_pt in ((to_b, "8"), (to_a, "0")):   # each side sends the answer's first codec
        assert len(stream) >= 150
        assert len({f["rtp.ssrc"][0] for f in stream}) == 1
        seqs = [int(f["rtp.seq"][0]) for f in stream]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
        assert {f["rtp.p_type"][0] for f in stream} >= {audio_pt}
    assert {f["rtp.p_type"][0] for f in to_b} == {"8", "101"}   # A's DTMF goes as events
    events = cap.count("rtpevent.event_id", decode_as=decode)
    assert set(events) == {"4", "2"}
    rtcp_types = cap.count("rtcp.pt", decode_as=decode)
    assert {"200", "202", "203"} <= set(rtcp_types)            # SR, SDES, BYE
