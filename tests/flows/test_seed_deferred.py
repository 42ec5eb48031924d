"""Seed 003 deferred-message retrieval, through the real core on loopback.

Alice's pager messages to offline bob are stored (202). Bob registers the
cpm.deferred ICSI, so the AS does not push them: bob asks. Ladder:

  bob -> P-CSCF -> S-CSCF (orig iFC: AS, relayed on) -> I-CSCF -> AS (PSI)
     INVITE sip:cpm-deferred@DOMAIN, Event: deferred-messages, a=recvonly
  AS -> bob: 200 OK (a=sendonly, a=setup:passive, our a=path); bob: ACK
  bob -> AS: MSRP empty SEND (binding), 200
  AS -> bob: MSRP SEND per stored item, oldest first; bob: 200 each
  AS -> bob: BYE; bob: 200 - and only now are the items gone from the store.

SIP is recorded at the core nodes through the transport layer's trace hook.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import DOMAIN, ues
from test_messaging_as import (
    ALICE,
    BOB,
    cpim_text,
    messaging_as,
    msrp_line,
    next_message,
    pager,
    registered,
    run,
)

from imsbox import sdp
from imsbox.config import Config
from imsbox.msrp import MsrpEndpoint
from imsbox.rcs import cpm
from imsbox.serve import Network
from imsbox.sip.message import Request, Response
from imsbox.sip.parser import parse as parse_sip
from imsbox.sip.transport.base import Flow
from imsbox.ue.register import Registration
from imsbox.testing import FAST_TIMERS, TestUe

pytestmark = pytest.mark.timeout(40)
PSI = cpm.deferred_messages_uri(DOMAIN)
ALL_ICSIS = (*cpm.UE_SERVICES, cpm.CpmService.DEFERRED)


def tap(net: Network, role: str, seen: list[tuple[str, Flow, Request | Response]]) -> None:
    """Record the SIP messages a core node receives (its transport's trace hook)."""
    transport = net.nodes[role].endpoint.transport  # type: ignore[attr-defined]
    before: Callable[[str, bytes, Flow], None] | None = transport.trace

    def trace(direction: str, data: bytes, flow: Flow) -> None:
        if before is not None:
            before(direction, data, flow)
        if direction == "in" and data.strip():
            seen.append((role, flow, parse_sip(data)))
    transport.trace = trace


async def register_deferred(ue: TestUe) -> None:
    """REGISTER with the cpm.deferred ICSI beside the four (seed 003)."""
    reg = Registration(ue.aor, ue.contact, ue.pcscf, username=f"{ue.user}@{ue.domain}",
                       contact_params=cpm.contact_feature_param(ALL_ICSIS),
                       instance="<urn:uuid:00000000-0000-4000-8000-00000000b0b0>")
    await reg.send(ue.endpoint, ue.password, 600)
    assert reg.ok, reg.responses
    ue.registration = reg
    assert ue.ua is not None
    ue.ua.route = ue._route()


def retrieval_offer(path: str, port: int) -> bytes:
    return (f"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=message {port} TCP/MSRP *\r\n"
            "a=accept-types:message/cpim\r\na=accept-wrapped-types:*\r\n"
            f"a=setup:active\r\na=path:{path}\r\na=msrp-cema\r\na=recvonly\r\n").encode()


def test_seed_003_deferred_retrieval_ladder(tmp_path: Path) -> None:
    bodies = [cpim_text(ALICE, BOB, f"stored {n}", f"def-{n}") for n in range(3)]

    async def scenario(config: Config) -> None:
        seen: list[tuple[str, Flow, Request | Response]] = []
        async with Network(config, timers=FAST_TIMERS) as net, \
                ues(config, "alice", "bob") as (alice, bob), MsrpEndpoint() as msrp:
            for role in ("pcscf", "scscf", "icscf", "as"):
                tap(net, role, seen)
            store = messaging_as(net).store.messages
            await registered(alice)
            for body in bodies:
                assert (await pager(alice, BOB, body, "conv-def")).status == 202

            await register_deferred(bob)
            with pytest.raises(asyncio.TimeoutError):  # no push to a cpm.deferred UE
                await next_message(bob, timeout=0.5)

            session = msrp.create_session(setup="active")
            headers = [*cpm.cpm_request_headers(cpm.CpmService.DEFERRED, "conv-def"),
                       ("Event", cpm.DEFERRED_EVENT)]
            call = await bob.call(PSI, retrieval_offer(str(session.local_uri), msrp.port),
                                  headers)
            final = await asyncio.wait_for(call.wait_final(), 10)
            assert final is not None and final.status == 200, final
            media, address = msrp_line(call.remote_sdp or b"")
            answer = sdp.parse(call.remote_sdp or b"")
            assert answer.direction_of(media) is sdp.Direction.SENDONLY
            assert media.setup is sdp.Setup.PASSIVE and media.msrp_cema
            session.set_remote_path(media.path or [])
            session.cema_address = address
            await session.connect()

            got = [await asyncio.wait_for(session.receive(), 5) for _ in bodies]
            assert [m.body for m in got] == bodies  # oldest first
            assert all(m.content_type == "message/cpim" for m in got)
            await asyncio.wait_for(asyncio.shield(call.terminated), 5)  # the AS's BYE
            assert await store.deferred(BOB, 0.0) == []

        # the INVITE's path: UE -> P -> S (orig) -> AS (orig, relayed) -> S -> I -> AS
        invites = [(role, flow, m) for role, flow, m in seen
                   if isinstance(m, Request) and m.method == "INVITE"]
        assert [role for role, _, _ in invites] == ["pcscf", "scscf", "as", "scscf",
                                                    "icscf", "as"]
        at_as = invites[-1][2]
        assert at_as.top_via.port == config.icscf.port      # straight from the I-CSCF
        assert str(at_as.uri) == PSI and not at_as.route    # as its PSI, no Route left
        assert at_as.headers.get("Event") == cpm.DEFERRED_EVENT
        assert at_as.headers.get("P-Asserted-Identity") == f"<{BOB}>"
        assert at_as.headers.get("P-Preferred-Service") == cpm.ICSI_DEFERRED
        offer = sdp.parse(at_as.body)
        assert offer.direction_of(offer.media[0]) is sdp.Direction.RECVONLY
        byes = [m for role, _, m in seen if role == "pcscf" and isinstance(m, Request)
                and m.method == "BYE" and m.call_id == call.call_id]
        assert len(byes) == 1  # the AS ended the session

    run(tmp_path, scenario)


def test_pushed_on_registration_without_the_deferred_icsi(tmp_path: Path) -> None:
    """Today's push stays for UEs that do not register cpm.deferred."""
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), \
                ues(config, "alice", "bob") as (alice, bob):
            await registered(alice)
            body = cpim_text(ALICE, BOB, "pushed", "push-1")
            assert (await pager(alice, BOB, body, "conv-push")).status == 202
            await registered(bob)
            assert (await next_message(bob)).body == body

    run(tmp_path, scenario)
