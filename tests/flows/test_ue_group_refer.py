"""A focus that reports a REFER's outcome at once: its final NOTIFY goes the short
way (AS -> S-CSCF -> P-CSCF -> UE) and reaches the client before the 202, which
comes back along the REFER's longer path. The client still takes the 202 and
the outcome (EventAgent keeps the REFER's watch until both are in).

The focus is a stand-in on the conference AS's address, built from our own SIP,
event and MSRP layers: it answers INVITEs to ``sip:conf-1@DOMAIN`` and accepts
REFERs, reporting 200 in the same step.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from imsbox.config import Config, load_config
from imsbox.ims.provisioning import add_user
from imsbox.msrp import MsrpEndpoint
from imsbox.msrp import Setup as MsrpSetup
from imsbox.rcs.offer import msrp_media, offer_parts
from imsbox.sdp import LocalCapabilities, Setup, answer, parse
from imsbox.sip.endpoint import SipEndpoint
from imsbox.sip.message import Request
from imsbox.sip.ua.events import EventPackageRegistry
from imsbox.sip.ua.invite import InviteConfig
from imsbox.sip.ua.refer import EventAgent, IncomingRefer
from imsbox.sip.ua.useragent import Call, UserAgent
from imsbox.store import open_store
from imsbox.testing import FAST_TIMERS, write_loopback_config

from helpers import CORE_ROLES, DOMAIN, client, network_with

pytestmark = pytest.mark.timeout(40)
WAIT = 5.0
CONFERENCE = f"sip:conf-1@{DOMAIN}"


class QuickFocus:
    """conf-1 on the conference AS's address; REFERs reported 200 at once."""

    def __init__(self, config: Config) -> None:
        node = config.conference_as
        self.host, self.port = node.host, node.port
        self.endpoint = SipEndpoint(FAST_TIMERS)
        self.msrp = MsrpEndpoint(node.host, 0)
        self.refers: list[Request] = []

    async def start(self) -> QuickFocus:
        await self.endpoint.listen("udp", self.host, self.port)
        await self.endpoint.listen("tcp", self.host, self.port)
        await self.msrp.start()
        config = InviteConfig(t1=FAST_TIMERS.t1, t2=FAST_TIMERS.t2, session_timer=None)
        self.ua = UserAgent(self.endpoint, f"<{CONFERENCE}>", CONFERENCE, config=config,
                            on_call=self._on_call)
        self.agent = EventAgent(self.ua, EventPackageRegistry(), on_refer=self._refer)
        return self

    async def close(self) -> None:
        self.agent.close()
        await self.ua.close()
        await self.msrp.close()
        await self.endpoint.close()

    async def _on_call(self, call: Call) -> None:
        offer = parse(offer_parts(call.request)[0] or b"")
        theirs = msrp_media(offer)
        assert theirs is not None
        session = self.msrp.create_session()
        caps = LocalCapabilities(address=self.host, msrp_path=[str(session.local_uri)],
                                 accept_types=["message/cpim"], setup=Setup.PASSIVE,
                                 msrp_cema=True)
        session.set_remote_path(theirs.path or [])
        session.setup = MsrpSetup.PASSIVE
        call.accept(bytes(answer(offer, caps)))
        await asyncio.wait_for(session.start(), WAIT)

    def _refer(self, refer: IncomingRefer) -> None:
        self.refers.append(refer.request)
        self.agent.report(refer, 200)


def test_refer_outcome_before_its_202(tmp_path: Path) -> None:
    path, _ = write_loopback_config(tmp_path)
    config = load_config(path)

    async def scenario() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "alice", "alice-secret")
        alice = client(config, "alice")
        focus = await QuickFocus(config).start()
        try:
            async with network_with(config, alice, roles=CORE_ROLES):
                group = await alice.join_group(CONFERENCE)
                added = await group.invite("sip:bob@ims.test")
                assert (added.status, added.result, added.ok) == (202, 200, True)
                removed = await group.remove("sip:bob@ims.test")
                assert (removed.action, removed.status, removed.result) == ("remove", 202, 200)
                assert [r.header("Refer-To") for r in focus.refers] == \
                    ["<sip:bob@ims.test>", "<sip:bob@ims.test;method=BYE>"]
        finally:
            await focus.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
