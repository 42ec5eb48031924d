"""The IMS core in one process (imsbox.serve.Network) with real UEs on loopback UDP.

REGISTER with Digest through P-CSCF -> I-CSCF -> S-CSCF, a call and a MESSAGE
between two registered UEs, the TS 24.229 A.5.1 PSI ladder to a conference
AS, and registrations surviving a restart on the same data dir.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint
from imsbox.sip.message import Request, Response, new_tag
from imsbox.sip.uri import SipUri, parse_uri
from imsbox.store import open_store
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config

from helpers import CORE_ROLES, DOMAIN, ues

pytestmark = pytest.mark.timeout(30)
OFFER = (b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n")
ANSWER = OFFER.replace(b"alice", b"bob").replace(b"4000", b"5000")


def provision(config: Config) -> None:
    async def in_store() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "alice", "alice-secret", "+15550001")
            await add_user(store, DOMAIN, "bob", "bob-secret")
    asyncio.run(in_store())


def run(tmp_path: Path, scenario: Callable[[Config], Awaitable[None]]) -> None:
    _, config = write_loopback_config(tmp_path)
    provision(config)
    asyncio.run(asyncio.wait_for(scenario(config), 20))


def hostport(uri: object) -> tuple[str, int | None]:
    assert isinstance(uri, SipUri), uri
    return uri.host, uri.port


def node(config: Config, name: str) -> tuple[str, int]:
    address = config.nodes[name]
    return address.host, address.port


# -- registration -----------------------------------------------------------------------

def test_register_digest_through_pcscf_icscf_scscf(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), ues(config, "alice") as (alice,):
            reg = await alice.register()
            assert reg.statuses == [401, 200], reg.statuses
            challenge = reg.responses[0]
            offered = " ".join(challenge.headers.get_all("WWW-Authenticate"))
            assert 'realm="ims.test"' in offered
            assert "SHA-256" in offered and "MD5" in offered
            ok = reg.final
            (service_route,) = ok.service_route
            assert hostport(service_route.uri) == node(config, "scscf")
            assert service_route.uri.user == "orig" and service_route.uri.lr
            (path,) = ok.path
            assert hostport(path.uri) == node(config, "pcscf")
            # RFC 5626 5.2: term.TOKEN, the token naming alice's UDP flow (no ;ob: UDP,
            # and she did not ask for outbound)
            assert path.uri.user is not None and path.uri.user.startswith("term.")
            assert path.uri.lr and not path.uri.has_param("ob")
            assert reg.associated_uris == [
                "sip:alice@ims.test", "tel:+15550001", "sip:+15550001@ims.test;user=phone"]
            contacts = [c for c in ok.contact if str(c.uri) == alice.contact]
            assert contacts and contacts[0].params.get("expires") not in (None, "0")
    run(tmp_path, scenario)


# -- UE to UE ---------------------------------------------------------------------------

def ue_address(ue: TestUe) -> tuple[str, int | None]:
    uri = parse_uri(ue.contact)
    return hostport(uri)


def check_originating_to_terminating(request: Request, config: Config, caller: TestUe,
                                     telephony: bool = False) -> None:
    """What the far UE sees (TS 24.229 A.5 style): one Via per hop, RR
    P-CSCF (term), S-CSCF (term), S-CSCF (orig), P-CSCF (orig); a voice call
    (``telephony``) also passes the telephony AS on either side, Record-Routed."""
    pcscf, scscf, icscf = node(config, "pcscf"), node(config, "scscf"), node(config, "icscf")
    tas = node(config, "telephony_as")
    case = [scscf, tas, scscf] if telephony else [scscf]
    vias = [(v.host, v.port) for v in request.via]
    assert vias == [pcscf, *case, icscf, *case, pcscf, ue_address(caller)], vias
    assert request.max_forwards == 70 - 3 - 2 * len(case)
    rr = [hostport(r.uri) for r in request.record_route]
    case_rr = [tas, scscf] if telephony else [scscf]
    assert rr == [pcscf, *case_rr, *case_rr, pcscf], rr  # the I-CSCF does not Record-Route
    pai = request.headers.get_all("P-Asserted-Identity")
    assert pai and "sip:alice@ims.test" in pai[0], pai
    assert not request.route  # every Route entry consumed on the way
    assert "P-Charging-Vector" not in request.headers  # stays inside the core


def test_call_and_message_between_registered_ues(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), \
                ues(config, "alice", "bob") as (alice, bob):
            assert (await alice.register()).ok and (await bob.register()).ok
            assert bob.ua is not None

            call = await alice.call("sip:bob@ims.test", OFFER)
            incoming = await asyncio.wait_for(bob.ua.incoming.get(), 5)
            check_originating_to_terminating(incoming.request, config, alice, telephony=True)
            assert str(incoming.request.uri) == bob.contact  # S-CSCF retargeted to the binding
            incoming.ring(180, reliable=False)
            incoming.accept(ANSWER)
            final = await call.wait_final()
            assert final is not None and final.status == 200
            assert [p.status for p in call.progress if p.status != 100] == [180]
            assert call.remote_sdp == ANSWER and incoming.remote_sdp == OFFER
            await asyncio.wait_for(incoming.established.wait(), 5)
            await call.bye()
            ended = await asyncio.wait_for(asyncio.shield(incoming.terminated), 5)
            assert ended.reason == "remote BYE"

            response = await alice.message("sip:bob@ims.test", "hello bob").final()
            assert response.status == 200
            message = await asyncio.wait_for(bob.requests.get(), 5)
            assert message.method == "MESSAGE" and message.body == b"hello bob"
            check_originating_to_terminating(message, config, alice)
    run(tmp_path, scenario)


def test_message_to_tel_uri_reaches_the_subscriber(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), \
                ues(config, "alice", "bob") as (alice, bob):
            assert (await alice.register()).ok and (await bob.register()).ok
            response = await bob.message("tel:+15550001", "to your number").final()
            assert response.status == 200
            message = await asyncio.wait_for(alice.requests.get(), 5)
            assert message.body == b"to your number"
            assert str(message.uri) == alice.contact
    run(tmp_path, scenario)


# -- A.5.1: UE to a PSI hosted by an AS -----------------------------------------------------

class ConferenceAs:
    """A plain SipEndpoint on the conference AS address: answers INVITE 200, BYE 200."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.endpoint = SipEndpoint(FAST_TIMERS, modules=[HandlerModule(self.handle)])
        self.invites: asyncio.Queue[Request] = asyncio.Queue()
        self.acks: asyncio.Queue[Request] = asyncio.Queue()
        self.byes: asyncio.Queue[Request] = asyncio.Queue()

    async def start(self) -> ConferenceAs:
        host, port = node(self.config, "conference_as")
        await self.endpoint.listen("udp", host, port)
        return self

    def handle(self, ctx: ServerContext) -> None:
        request = ctx.request
        if request.method == "ACK":
            self.acks.put_nowait(request)
            return
        if request.method == "INVITE":
            self.invites.put_nowait(request)
            host, port = node(self.config, "conference_as")
            response = Response.for_request(request, 200, to_tag=new_tag(), body=ANSWER,
                                            content_type="application/sdp")
            response.add_header("Contact", f"<sip:{request.uri.user}@{host}:{port}>;isfocus")
            ctx.respond(response)
            return
        if request.method != "REGISTER":  # third-party REGISTERs are not this test's
            self.byes.put_nowait(request)
        ctx.respond(Response.for_request(request, 200))


def test_a51_invite_to_psi_reaches_the_conference_as(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        conference = await ConferenceAs(config).start()
        try:
            async with Network(config, timers=FAST_TIMERS, roles=CORE_ROLES), \
                    ues(config, "alice") as (alice,):
                assert (await alice.register()).ok
                call = await alice.call("sip:conf-1@ims.test", OFFER)
                invite = await asyncio.wait_for(conference.invites.get(), 5)
                # UE -> P-CSCF -> S-CSCF -> I-CSCF (HSS: the PSI's AS) -> AS
                assert str(invite.uri) == "sip:conf-1@ims.test"  # not rewritten
                vias = [(v.host, v.port) for v in invite.via]
                assert vias == [node(config, "icscf"), node(config, "scscf"),
                                node(config, "pcscf"), ue_address(alice)], vias
                assert invite.max_forwards == 70 - 3
                rr = [hostport(r.uri) for r in invite.record_route]
                assert rr == [node(config, "scscf"), node(config, "pcscf")]
                # at most the I-CSCF's Route to the AS itself is left
                assert [hostport(r.uri) for r in invite.route] in (
                    [], [node(config, "conference_as")])
                pai = invite.headers.get_all("P-Asserted-Identity")
                assert pai and "sip:alice@ims.test" in pai[0]

                final = await call.wait_final()
                assert final is not None and final.status == 200
                assert call.remote_sdp == ANSWER
                ack = await asyncio.wait_for(conference.acks.get(), 5)
                assert ack.call_id == invite.call_id
                await call.bye()
                bye = await asyncio.wait_for(conference.byes.get(), 5)
                assert bye.method == "BYE"
        finally:
            await conference.endpoint.close()
    run(tmp_path, scenario)


# -- durability -----------------------------------------------------------------------------

def test_registrations_survive_a_restart(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with ues(config, "alice", "alice", "bob") as (phone, tablet, bob):
            async with Network(config, timers=FAST_TIMERS):
                assert (await phone.register()).ok
            # A new process on the same data dir; the phone does not register again.
            async with Network(config, timers=FAST_TIMERS) as net:
                assert net.store is not None
                bound = [b.contact for b in await net.store.registrations.bindings("sip:alice@ims.test")]
                assert bound == [phone.contact]
                reg = await tablet.register()
                assert reg.ok
                assert {str(c.uri) for c in reg.final.contact} == {phone.contact, tablet.contact}
                assert (await bob.register()).ok
                response = await bob.message("sip:alice@ims.test", "after restart").final()
                assert response.status == 200
                message = await asyncio.wait_for(tablet.requests.get(), 5)
                assert message.body == b"after restart"
    run(tmp_path, scenario)


# -- IPv6 -------------------------------------------------------------------------------

def test_pcscf_on_ipv4_and_ipv6_at_once(tmp_path: Path) -> None:
    _, config = write_loopback_config(tmp_path, pcscf_hosts=("127.0.0.1", "::1"))
    provision(config)
    port = config.pcscf.port

    async def scenario() -> None:
        async with Network(config, timers=FAST_TIMERS) as net:
            lines = net.listening_lines()
            assert f"pcscf listening on udp [::1]:{port}" in lines
            assert f"pcscf listening on tls [::1]:{config.pcscf.tls_port}" in lines
            v6 = await TestUe("alice", "alice-secret", config, host="::1").start()
            v4 = await TestUe("bob", "bob-secret", config).start()
            try:
                assert (await v6.register()).ok and (await v4.register()).ok
                response = await v4.message("sip:alice@ims.test", "over v6").final()
                assert response.status == 200
                message = await asyncio.wait_for(v6.requests.get(), 5)
                assert message.body == b"over v6" and str(message.uri) == v6.contact
            finally:
                await v6.close()
                await v4.close()
    asyncio.run(asyncio.wait_for(scenario(), 20))
