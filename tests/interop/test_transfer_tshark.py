"""Wireshark decodes an attended transfer (RFC 5359 2.5) between three RcsClients
through the core cleanly: REFER with the escaped Replaces in Refer-To, the NOTIFY
message/sipfrag bodies, the INVITE with Replaces, on every hop, no malformed frame."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from imsbox.config import Config, load_config
from imsbox.ims.provisioning import add_user
from imsbox.media import ToneSource
from imsbox.store import open_store
from imsbox.testing import write_loopback_config

from .capture import Capture
from .test_messaging_tshark import sip_counts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
from helpers import DOMAIN, client, network_with

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path, _ = write_loopback_config(tmp_path)
    config = load_config(path)

    async def in_store() -> None:
        async with open_store(config.store_location) as store:
            for name in ("alice", "bob", "carol"):
                await add_user(store, DOMAIN, name, f"{name}-secret")
    asyncio.run(in_store())
    return config


def test_attended_transfer_decodes_cleanly(config: Config, capture) -> None:
    async def main() -> tuple[Capture, list[int]]:
        alice, bob, carol = (client(config, "alice"), client(config, "bob", answer_calls=0),
                             client(config, "carol", answer_calls=0))
        for ue, tone in ((bob, 1000), (carol, 1800)):
            ue.call_service.source = lambda tone=tone: ToneSource(tone)
        async with network_with(config, alice, bob, carol):
            sip = [config.pcscf.port, config.icscf.port, config.scscf.port,
                   *(int(ue.contact.rsplit(":", 1)[1]) for ue in (alice, bob, carol))]
            cap = capture(ports=sip, tcp=False)
            await asyncio.to_thread(cap.start)
            call = await alice.call("bob", tone=440)
            assert await call.wait_answered(5)
            await asyncio.sleep(0.2)
            consult = await bob.consult(bob.calls[call.id], "carol")
            assert await consult.wait_answered(5)
            assert (await bob.complete(consult)).outcome == "transferred"
            await asyncio.sleep(0.5)
            for ongoing in list(alice.calls.values()):
                await ongoing.hangup()
            await asyncio.sleep(0.3)
            await asyncio.to_thread(cap.stop)
            return cap, sip

    cap, sip = asyncio.run(main())
    decode = [f"udp.port=={n},sip" for n in sip]
    assert cap.malformed(decode_as=decode) == []
    cap.decode_as = decode
    methods, statuses = sip_counts(cap)
    assert methods["REFER"] >= 3 and statuses[("202", "REFER")] >= 3   # UE-P-S-P-UE hops
    assert methods["NOTIFY"] >= 2 * 3 and methods["BYE"] >= 3
    frames = cap.decode(decode_as=decode, display_filter="sip.Method == \"INVITE\"",
                        fields=["sip.Replaces", "sip.Refer-To"])
    assert any(f.get("sip.Replaces") for f in frames)
    refers = cap.decode(decode_as=decode, display_filter="sip.Method == \"REFER\"",
                        fields=["sip.Refer-To"])
    assert any("Replaces=" in v for f in refers for v in f.get("sip.Refer-To", []))
    frags = cap.decode(decode_as=decode, display_filter="sipfrag", fields=["sipfrag.line"])
    lines = {v for f in frags for v in f.get("sipfrag.line", [])}
    assert {"SIP/2.0 100 Trying", "SIP/2.0 200 OK"} <= lines, lines
