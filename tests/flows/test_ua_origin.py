"""Per-call origin: a B2BUA makes two calls at once, each with its own From,
Contact, Route and flow, over real loopback UDP."""

from __future__ import annotations

import asyncio

import pytest
from helpers import settle

from imsbox.sip import NameAddr, Request, parse
from imsbox.sip.endpoint import SipEndpoint
from imsbox.sip.transaction import TimerValues
from imsbox.sip.transport import Flow
from imsbox.sip.ua.events import EventPackage, EventPackageRegistry
from imsbox.sip.ua.invite import InviteConfig, StaticOfferAnswer
from imsbox.sip.ua.refer import EventAgent
from imsbox.sip.ua.useragent import Call, Origin, UserAgent
from imsbox.sip.uri import parse_uri

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"
FAST = TimerValues(t1=0.02, t2=0.1, t4=0.1)
CONFIG = InviteConfig(t1=0.02, t2=0.1, session_timer=None)
OFFER = b"v=0\r\no=b2b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
PRESENCE = EventPackage("presence", "application/pidf+xml")


class Callee:
    """A UA that answers every call and keeps what reached its socket."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.endpoint = SipEndpoint(FAST)
        self.received: list[tuple[Request, tuple[str, int]]] = []
        self.port = 0
        self.ua: UserAgent

    async def start(self) -> None:
        _, self.port = await self.endpoint.listen("udp", HOST, 0)
        self.endpoint.transport.trace = self._record
        self.ua = UserAgent(self.endpoint, f"<sip:{self.name}@example.com>",
                            f"sip:{self.name}@{HOST}:{self.port}", config=CONFIG,
                            on_call=self._answer,
                            offer_answer=lambda: StaticOfferAnswer(ANSWER))
        self.events = EventAgent(self.ua, EventPackageRegistry([PRESENCE]),
                                 state_of=lambda sub: b"<presence/>")

    def _record(self, direction: str, data: bytes, flow: object) -> None:
        message = parse(data)
        if direction == "in" and isinstance(message, Request) and isinstance(flow, Flow):
            self.received.append((message, flow.remote))

    @staticmethod
    def _answer(call: Call) -> None:
        call.accept()

    def requests(self, method: str) -> list[tuple[Request, tuple[str, int]]]:
        """Each request once: UDP retransmissions (T1 is 20 ms here) dropped."""
        seen: dict[tuple[str | None, int], tuple[Request, tuple[str, int]]] = {}
        for r, source in self.received:
            if r.method == method:
                seen.setdefault((r.top_via.branch, r.cseq.seq), (r, source))
        return list(seen.values())

    @property
    def route(self) -> str:
        return f"<sip:{HOST}:{self.port};lr>"


def test_a_b2bua_makes_two_calls_at_once_each_with_its_own_origin() -> None:
    async def scenario() -> None:
        b2bua = SipEndpoint(FAST)
        callees = [Callee("carol"), Callee("dave")]
        try:
            _, port_a = await b2bua.listen("udp", HOST, 0)
            _, port_b = await b2bua.listen("udp", HOST, 0)
            for callee in callees:
                await callee.start()
            ua = UserAgent(b2bua, "<sip:b2bua@as.example.com>", f"sip:b2bua@{HOST}:{port_a}",
                           config=CONFIG)
            carol, dave = callees
            origins = [
                Origin(NameAddr.parse('"Alice" <sip:alice@example.com>'),
                       parse_uri(f"sip:leg-a@{HOST}:{port_a}"), (carol.route,)),
                Origin(NameAddr.parse("<sip:bob@example.com>"),
                       parse_uri(f"sip:leg-b@{HOST}:{port_b}"), (dave.route,),
                       Flow("udp", (HOST, port_b), (HOST, dave.port))),
            ]
            # one Request-URI for both: only each call's own Route can take it apart
            calls = await asyncio.gather(*(
                ua.invite("sip:service@example.invalid", OFFER, origin=origin)
                for origin in origins))
            finals = await asyncio.gather(*(call.wait_final() for call in calls))
            assert [f.status if f else None for f in finals] == [200, 200]
            assert ua.origin == Origin(NameAddr.parse("<sip:b2bua@as.example.com>"),
                                       parse_uri(f"sip:b2bua@{HOST}:{port_a}"))

            for callee, origin, port in ((carol, origins[0], port_a), (dave, origins[1], port_b)):
                [(invite, source)] = callee.requests("INVITE")
                assert invite.from_.uri == origin.local.uri
                assert invite.from_.display_name == origin.local.display_name
                assert str(invite.contact[0].uri) == str(origin.contact)
                assert invite.headers.get_all("Route") == list(origin.route)
                assert source == (HOST, port)
            acks = dave.requests("ACK")   # the ACK goes on the call's flow
            assert acks and {source for _, source in acks} == {(HOST, port_b)}

            # a REFER in the call goes out on that call's flow too
            agent = EventAgent(ua)
            watch = agent.refer(calls[1], "sip:erin@example.com")
            assert (await asyncio.wait_for(watch.answered, 2)).status == 202
            [(_, refer_source)] = dave.requests("REFER")
            assert refer_source == (HOST, port_b)
            agent.close()

            for call in calls:
                await call.bye()
            await settle(lambda: all(c.requests("BYE") for c in callees))
            assert dave.requests("BYE")[0][1] == (HOST, port_b)
            assert carol.requests("BYE")[0][1] == (HOST, port_a)
        finally:
            for callee in callees:
                callee.events.close()
                await callee.ua.close()
                await callee.endpoint.close()
            await b2bua.close()
    asyncio.run(asyncio.wait_for(scenario(), 15))


def test_subscribe_takes_a_per_subscription_origin() -> None:
    async def scenario() -> None:
        watcher = SipEndpoint(FAST)
        carol = Callee("carol")
        try:
            _, port_a = await watcher.listen("udp", HOST, 0)
            _, port_b = await watcher.listen("udp", HOST, 0)
            await carol.start()
            ua = UserAgent(watcher, "<sip:watcher@example.com>", f"sip:w@{HOST}:{port_a}",
                           config=CONFIG)
            agent = EventAgent(ua, EventPackageRegistry([PRESENCE]))
            origin = Origin(NameAddr.parse("<sip:frank@example.com>"),
                            parse_uri(f"sip:frank@{HOST}:{port_b}"), (carol.route,),
                            Flow("udp", (HOST, port_b), (HOST, carol.port)))
            watch = agent.subscribe("sip:carol@example.invalid", "presence", origin=origin)
            note = await watch.next_notification(2)
            assert note.body == b"<presence/>"
            [(subscribe, source)] = carol.requests("SUBSCRIBE")
            assert str(subscribe.from_.uri) == "sip:frank@example.com"
            assert str(subscribe.contact[0].uri) == f"sip:frank@{HOST}:{port_b}"
            assert subscribe.headers.get_all("Route") == [carol.route] and source[1] == port_b
            await agent.unsubscribe(watch, 2)
            sources = [s for _, s in carol.requests("SUBSCRIBE")]
            assert sources == [(HOST, port_b), (HOST, port_b)]
            agent.close()
        finally:
            carol.events.close()
            await carol.ua.close()
            await carol.endpoint.close()
            await watcher.close()
    asyncio.run(asyncio.wait_for(scenario(), 15))
