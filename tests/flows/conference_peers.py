"""Raw SIP + MSRP group chat participants for the conference flow tests and the
benchmark: a TestUe for SIP, an MsrpEndpoint for MSRP, seed 002's SDP."""

from __future__ import annotations

import asyncio

from imsbox import sdp
from imsbox.content.multipart import BodyPart, build_multipart
from imsbox.content.resource_lists import build_recipient_list
from imsbox.msrp import MsrpEndpoint, MsrpSession
from imsbox.msrp import Setup as MsrpSetup
from imsbox.rcs.offer import msrp_media
from imsbox.sip.ua.useragent import Call
from imsbox.testing import TestUe

DOMAIN = "ims.test"
FACTORY = f"sip:conf-factory@{DOMAIN}"
# (a UDP UE: the factory INVITE must stay under 1300 bytes, RFC 3261 18.1.1)


def offer(session: MsrpSession, msrp: MsrpEndpoint, setup: str) -> bytes:
    """Seed 002 A.5.1-1's SDP: one MSRP line, CPIM, msrp-cema."""
    return (f"v=0\r\no=- 1 1 IN IP4 {msrp.host}\r\ns=-\r\nc=IN IP4 {msrp.host}\r\nt=0 0\r\n"
            f"m=message {msrp.port} TCP/MSRP *\r\n"
            "a=accept-types:message/cpim text/plain\r\n"
            f"a=path:{session.local_uri}\r\na=msrp-cema\r\na=setup:{setup}\r\n").encode()

def remote_path(body: bytes | None) -> list[str]:
    media = msrp_media(sdp.parse(body or b""))
    assert media is not None and media.path
    return list(media.path)

async def create(ue: TestUe, msrp: MsrpEndpoint, members: list[str] | bytes,
                 subject: str = "Lunch") -> tuple[Call, MsrpSession]:
    session = msrp.create_session(setup=MsrpSetup.ACTIVE)
    listed = members if isinstance(members, bytes) else \
        build_recipient_list(members).to_xml()
    body = build_multipart([
        BodyPart([("Content-Type", "application/sdp")], offer(session, msrp, "active")),
        BodyPart([("Content-Type", "application/resource-lists+xml"),
                  ("Content-Disposition", "recipient-list")], listed)])
    assert ue.ua is not None
    ue.ua.route = ue._route()
    call = await ue.ua.invite(FACTORY, body.to_bytes(), [
        ("Require", "recipient-list-invite"), ("Subject", subject),
        ("Conversation-ID", "conv-lunch"), ("Contribution-ID", "contrib-1")],
        content_type=body.content_type)
    return call, session

async def answer(ue: TestUe, msrp: MsrpEndpoint) -> tuple[Call, MsrpSession]:
    """Take the focus's invitation: passive to its active offer."""
    assert ue.ua is not None
    call = await asyncio.wait_for(ue.ua.incoming.get(), 5)
    session = msrp.create_session(setup=MsrpSetup.PASSIVE)
    session.set_remote_path(remote_path(call.remote_sdp))
    call.accept(offer(session, msrp, "passive"))
    await session.wait_bound(5)
    return call, session

async def established(call: Call, session: MsrpSession) -> str:
    """The creator's 200: connect MSRP; the conference URI from the isfocus Contact."""
    final = await call.wait_final()
    assert final is not None and final.status == 200, final
    contact = final.headers.get("Contact") or ""
    session.set_remote_path(remote_path(call.remote_sdp))
    await session.connect()
    return contact[1:contact.index(">")]

async def join(ue: TestUe, msrp: MsrpEndpoint, uri: str) -> tuple[Call, MsrpSession]:
    """A.5.1: INVITE the conference URI with a plain SDP offer."""
    session = msrp.create_session(setup=MsrpSetup.ACTIVE)
    call = await ue.call(uri, offer(session, msrp, "active"),
                         [("Conversation-ID", "conv-lunch"), ("Contribution-ID", "contrib-1")])
    return call, session
