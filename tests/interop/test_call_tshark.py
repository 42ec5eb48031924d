"""Wireshark decodes a voice call between two RcsClients through the core cleanly.

alice calls bob through P-CSCF / S-CSCF / I-CSCF (default iFCs), bob answers,
both stream tones, alice holds and resumes, then hangs up. tshark must decode
every SIP message on every hop and every RTP/RTCP packet with no malformed
frame; each direction is one SSRC with consecutive sequence numbers, PCMU,
and the held side sends nothing while held.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.media import PortAllocator, ToneSource

from .capture import Capture
from .test_messaging_tshark import sip_counts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
from helpers import alice_and_bob, client, network_with

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return alice_and_bob(tmp_path)


def test_call_sip_and_rtp_decode_cleanly(config: Config, capture) -> None:
    base = random.randrange(30000, 60000, 20)
    alice_ports, bob_ports = PortAllocator("127.0.0.1", base, base + 10), \
        PortAllocator("127.0.0.1", base + 10, base + 20)

    async def main() -> tuple[Capture, int, int, list[int]]:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=0.1)
        alice.call_service.ports, bob.call_service.ports = alice_ports, bob_ports
        bob.call_service.source = lambda: ToneSource(1000)
        async with network_with(config, alice, bob):
            sip = [config.pcscf.port, config.icscf.port, config.scscf.port,
                   *(int(ue.contact.rsplit(":", 1)[1]) for ue in (alice, bob))]
            cap = capture(ports=[*sip, *range(base, base + 20)], tcp=False)
            await asyncio.to_thread(cap.start)
            call = await alice.call("bob", tone=440)
            assert await call.wait_answered(5)
            await asyncio.sleep(1.0)
            assert await call.hold()
            await asyncio.sleep(1.0)
            assert await call.resume()
            await asyncio.sleep(1.0)
            bob_port = bob.calls[call.id].rtp.local_port
            await call.hangup()
            await asyncio.sleep(0.3)
            await asyncio.to_thread(cap.stop)
            return cap, call.rtp.local_port, bob_port, sip

    cap, pa, pb, sip = asyncio.run(main())
    decode = [f"udp.port=={pa},rtp", f"udp.port=={pb},rtp",
              *(f"udp.port=={n},sip" for n in sip)]
    assert cap.malformed(decode_as=decode) == []
    cap.decode_as = decode
    methods, statuses = sip_counts(cap)
    assert methods["INVITE"] >= 2 * 5          # the call and its re-INVITEs on each hop
    assert methods["BYE"] >= 1 and methods["ACK"] >= 3
    assert statuses[("180", "INVITE")] >= 1 and statuses[("200", "INVITE")] >= 3
    frames = cap.decode(decode_as=decode, display_filter="rtp",
                        fields=["rtp.ssrc", "rtp.seq", "rtp.p_type", "udp.dstport", "rtp.marker"])
    to_b = [f for f in frames if f["udp.dstport"] == [str(pb)]]
    to_a = [f for f in frames if f["udp.dstport"] == [str(pa)]]
    for stream in (to_a, to_b):
        assert len(stream) >= 100
        assert len({f["rtp.ssrc"][0] for f in stream}) == 1
        assert {f["rtp.p_type"][0] for f in stream} == {"0"}
        seqs = [int(f["rtp.seq"][0]) for f in stream]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    # alice sent throughout (sendonly while holding); bob stopped for about a second
    assert len(to_a) < len(to_b) - 30
    assert sum(f["rtp.marker"] == ["1"] for f in to_a) >= 2   # a talkspurt again after hold
