"""Wireshark decodes a call pickup (RFC 5359 2.16) through the core cleanly:
alice calls bob, carol calls ``sip:pickup@ims.test``, the telephony AS sends
alice the INVITE with Replaces, alice CANCELs bob; every SIP hop (UDP and TCP:
UEs, P-, I-, S-CSCF, the telephony AS) decodes with no malformed frame."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from imsbox.config import Config
from imsbox.ue.events import CallRinging

from .capture import Capture
from .test_messaging_tshark import sip_counts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
from helpers import alice_and_bob, client, network_with

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return alice_and_bob(tmp_path, carol=True)


def test_pickup_decodes_cleanly(config: Config, capture: Any) -> None:
    async def main() -> tuple[Capture, list[int]]:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=30)
        carol = client(config, "carol")
        async with network_with(config, alice, bob, carol):
            sip = [config.pcscf.port, config.icscf.port, config.scscf.port,
                   config.telephony_as.port,
                   *(int(ue.contact.rsplit(":", 1)[1]) for ue in (alice, bob, carol))]
            cap = capture(ports=sip)
            await asyncio.to_thread(cap.start)
            call = await alice.call("bob", tone=440)
            await bob.wait_event(CallRinging, 5)
            await asyncio.wait_for(call.call.ringing.wait(), 5)
            pick = await carol.call("pickup", tone=700)
            assert await pick.wait_answered(5)
            await asyncio.sleep(0.5)
            await pick.hangup()
            await asyncio.sleep(0.3)
            await asyncio.to_thread(cap.stop)
            return cap, sip

    cap, sip = asyncio.run(main())
    decode = [f"{proto}.port=={n},sip" for n in sip for proto in ("udp", "tcp")]
    assert cap.malformed(decode_as=decode) == []
    cap.decode_as = decode
    methods, statuses = sip_counts(cap)
    replaces = cap.decode(display_filter='sip.Method == "INVITE" && sip contains "Replaces: "',
                          fields=["sip.Call-ID"])
    assert len({f["sip.Call-ID"][0] for f in replaces}) == 1     # one INVITE with Replaces
    assert len(replaces) >= 4                                    # AS-I-S-AS-S-P-UE hops
    assert methods["CANCEL"] >= 1 and statuses[("487", "INVITE")] >= 1   # bob's ringing
    assert statuses[("200", "INVITE")] >= 2 and methods["BYE"] >= 2
