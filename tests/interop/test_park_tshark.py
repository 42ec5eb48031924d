"""Wireshark decodes call park (RFC 5359 2.15) through the core cleanly: bob's
REFER to sip:park@ with the escaped Replaces in its Refer-To, the park server's
INVITE with Replaces from sip:park-701@, the NOTIFY message/sipfrag bodies
naming the orbit, carol's INVITE to the orbit, and the RTP of the music and the
bridge, on every hop, with no malformed frame."""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
from pathlib import Path

import pytest

from imsbox.media import PortAllocator, ToneSource

from .capture import Capture
from .test_messaging_tshark import sip_counts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
from helpers import client, network_with
from test_media_server import media_config

pytestmark = pytest.mark.timeout(90)


def test_park_and_retrieve_decode_cleanly(tmp_path: Path, capture) -> None:
    base = random.randrange(30000, 60000, 40)
    config = media_config(tmp_path, f"rtp_ports = [{base + 30}, {base + 40}]\n")
    ue_ports = range(base, base + 30)

    async def main() -> tuple[Capture, list[int], int]:
        alice, carol = client(config, "alice"), client(config, "carol")
        bob = client(config, "bob", answer_calls=0.1)
        for n, ue in enumerate((alice, bob, carol)):
            ue.call_service.ports = PortAllocator("127.0.0.1", base + 10 * n, base + 10 * n + 10)
        bob.call_service.source = lambda: ToneSource(1000)
        async with network_with(config, alice, bob, carol):
            sip = [config.pcscf.port, config.icscf.port, config.scscf.port,
                   config.telephony_as.port, config.media_server.port,
                   *(int(ue.contact.rsplit(":", 1)[1]) for ue in (alice, bob, carol))]
            cap = capture(ports=[*sip, *range(base, base + 40)], tcp=False)
            await asyncio.to_thread(cap.start)
            call = await alice.call("bob", tone=440)
            assert await call.wait_answered(5)
            await asyncio.sleep(0.5)
            parked = await bob.park(bob.calls[call.id])
            assert parked.orbit == 701
            await asyncio.sleep(1.0)                       # alice on the music
            back = await carol.retrieve(701, tone=1600)
            assert await back.wait_answered(5)
            await asyncio.sleep(1.0)
            alice_call = next(iter(alice.calls.values()))
            alice_port = alice_call.rtp.local_port
            await back.hangup()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(cap.stop)
            return cap, sip, alice_port

    cap, sip, alice_port = asyncio.run(main())
    decode = [*(f"udp.port=={n},sip" for n in sip), *(f"udp.port=={n},rtp" for n in ue_ports)]
    assert cap.malformed(decode_as=decode) == []
    cap.decode_as = decode
    methods, statuses = sip_counts(cap)
    assert methods["REFER"] >= 3 and statuses[("202", "REFER")] >= 3
    invites = cap.decode(decode_as=decode, display_filter='sip.Method == "INVITE"',
                         fields=["sip.Replaces", "sip.from.user", "sip.r-uri.user"])
    assert any(f.get("sip.Replaces") and f.get("sip.from.user") == ["park-701"]
               for f in invites)                                     # F9
    assert any(f.get("sip.r-uri.user") == ["park-701"] for f in invites)   # the retrieve
    refers = cap.decode(decode_as=decode, display_filter='sip.Method == "REFER"',
                        fields=["sip.Refer-To"])
    assert any("Replaces=" in v for f in refers for v in f.get("sip.Refer-To", []))
    frags = cap.decode(decode_as=decode, display_filter="sipfrag", fields=["sipfrag.line"])
    lines = {v for f in frags for v in f.get("sipfrag.line", [])}
    assert "SIP/2.0 200 OK" in lines and any("orbit 701" in v for v in lines), lines
    frames = cap.decode(decode_as=decode, display_filter=f"rtp && udp.dstport == {alice_port}",
                        fields=["rtp.ssrc", "rtp.seq", "rtp.p_type"])
    assert len(frames) >= 80      # the music, then carol through the bridge: one leg
    assert {f["rtp.p_type"][0] for f in frames} == {"0"}
    by_ssrc: dict[str, list[int]] = {}
    for f in frames:
        by_ssrc.setdefault(f["rtp.ssrc"][0], []).append(int(f["rtp.seq"][0]))
    assert len(by_ssrc) == 1, by_ssrc.keys()      # the media server's leg to alice
    seqs = next(iter(by_ssrc.values()))
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
