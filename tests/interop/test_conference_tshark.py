"""Wireshark decodes imsbox's group chat traffic without complaint.

The real core and the conference AS on loopback, three raw SIP + MSRP peers
(tests/flows/conference_peers.py): alice creates an ad-hoc conference from a
recipient list (multipart/mixed INVITE), the focus invites bob and carol through
the core, CPIM messages are switched with their IMDNs, bob subscribes to the
conference package (full, then partial conference-info) and alice leaves with
BYE (to the focus's Contact, through the I-CSCF). tshark must
decode every SIP message on every hop and every MSRP message with no malformed
frame (MSRP resegmented one message per segment as in test_messaging_tshark).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from imsbox.apps.conference import ConferenceAs
from imsbox.apps.conference_events import CONFERENCE_PACKAGE
from imsbox.content import CPIM, IMDN_NS, CpimAddress, DispositionType, ImdnStatus
from imsbox.content import build_cpim, imdn_reply, parse_cpim
from imsbox.config import Config
from imsbox.ims.provisioning import add_user
from imsbox.msrp import MsrpEndpoint
from imsbox.serve import Network
from imsbox.sip.ua.events import EventPackageRegistry
from imsbox.sip.ua.refer import EventAgent
from imsbox.store import open_store
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config

from .capture import Capture
from .test_messaging_tshark import msrp_cut_by_segment, sip_counts, split_streams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
from conference_peers import answer, create, established

pytestmark = pytest.mark.timeout(60)
DOMAIN = "ims.test"
ALICE, BOB, CAROL = (f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol"))


async def scenario(config: Config, make: Callable[..., Capture]) -> Capture:
    peers = [await TestUe(n, f"{n}-secret", config, timers=FAST_TIMERS).start()
             for n in ("alice", "bob", "carol")]
    try:
        async with Network(config, timers=FAST_TIMERS) as net, MsrpEndpoint() as msrp:
            for ue in peers:
                assert (await ue.register()).ok
            focus = net.nodes["conference"]
            assert isinstance(focus, ConferenceAs) and focus.msrp is not None
            sip = [config.pcscf.port, config.icscf.port, config.scscf.port,
                   config.conference_as.port, *(ue.endpoint.listening["udp"][1] for ue in peers)]
            ports = [focus.msrp.port, msrp.port]
            cap = make(ports=sip + ports, decode_as=[
                *(f"{p}.port=={n},sip" for n in sip for p in ("udp", "tcp")),
                *(f"tcp.port=={n},msrp" for n in ports)])
            await asyncio.to_thread(cap.start)
            alice, bob, carol = peers
            call, session = await create(alice, msrp, [BOB, CAROL])
            conference = await established(call, session)
            legs = [await answer(ue, msrp) for ue in (bob, carol)]
            agent = EventAgent(bob.ua, EventPackageRegistry([CONFERENCE_PACKAGE]))  # type: ignore[arg-type]
            watch = agent.subscribe(conference, "conference", expires=600)
            await watch.next_notification(5)
            for n in range(3):
                text = build_cpim("text/plain", f"line {n}".encode(), sender=CpimAddress(ALICE),
                                  recipients=[CpimAddress(conference)],
                                  namespaces=[("imdn", IMDN_NS)],
                                  headers=[("imdn.Message-ID", f"m{n}"),
                                           ("imdn.Disposition-Notification", "positive-delivery")])
                await session.send_message(CPIM, text.to_bytes())
                for (_, leg), who in zip(legs, (BOB, CAROL)):
                    got = parse_cpim((await asyncio.wait_for(leg.receive(), 5)).body)
                    reply = imdn_reply(got, DispositionType.DELIVERY, ImdnStatus.DELIVERED,
                                       message_id=f"n{n}{who}", sender=CpimAddress(who))
                    assert reply is not None
                    await leg.send_message(CPIM, reply.to_bytes())
                for _ in legs:
                    await asyncio.wait_for(session.receive(), 5)
            await call.bye()
            await watch.next_notification(5)  # alice left: a partial notification
            await asyncio.sleep(0.3)
            await asyncio.to_thread(cap.stop)
            agent.close()
            return cap
    finally:
        for ue in peers:
            await ue.close()


def test_tshark_decodes_group_chat_through_the_core(
        capture: Callable[..., Capture], tmp_path: Path) -> None:
    _, config = write_loopback_config(tmp_path)

    async def provision() -> None:
        async with open_store(config.store_location) as store:
            for name in ("alice", "bob", "carol"):
                await add_user(store, DOMAIN, name, f"{name}-secret")
    asyncio.run(provision())
    cap = asyncio.run(asyncio.wait_for(scenario(config, capture), 40))
    assert cap.packets, cap.stderr
    bad = [m for m in cap.malformed() if not msrp_cut_by_segment(cap, m)]
    assert bad == [], cap.summary()
    methods, statuses = sip_counts(cap)
    assert {"INVITE", "ACK", "BYE", "SUBSCRIBE", "NOTIFY"} <= set(methods), methods
    # the creator's INVITE (UE-P, P-S, S-I, I-AS) and two invitations (AS-I, I-S, S-P, P-UE)
    assert methods["INVITE"] == 4 + 2 * 4, methods
    assert statuses[("200", "INVITE")] == methods["INVITE"], statuses
    pcap = cap.resegment(split_streams)
    assert pcap.malformed() == [], pcap.summary()
    types = Counter(t for f in pcap.decode(display_filter="msrp", fields=["msrp.content.type"])
                    for t in f.get("msrp.content.type", []))
    # alice's 3 lines to the focus and 2 x 3 copies out; 6 IMDNs in and 6 back to alice
    assert types["message/cpim"] == 3 + 6 + 6 + 6, types
