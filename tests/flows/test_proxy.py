"""StatefulProxy (RFC 3261 section 16, RFC 3327 Path) between real
SipEndpoints / UserAgents over loopback UDP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import pytest

from imsbox.sip import Request, Response, new_tag, parse, parse_uri
from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint
from imsbox.sip.message import Message
from imsbox.sip.proxy import RequestContext, StatefulProxy, Target
from imsbox.sip.transaction import TimerValues
from imsbox.sip.transport.base import Destination, Flow
from imsbox.sip.ua.invite import InviteConfig, InviteState, SessionTimerConfig, StaticOfferAnswer
from imsbox.sip.ua.useragent import UserAgent
from imsbox.sip.uri import SipUri

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"
FAST = TimerValues(t1=0.02, t2=0.1, t4=0.1)  # where Timer B matters
MID = TimerValues(t1=0.2, t2=1.0, t4=1.0)  # elsewhere: few retransmissions under load
SLOW = TimerValues(t1=0.5, t2=4.0, t4=5.0)  # a UAC that must not time out first
CONFIG = InviteConfig(t1=0.2, t2=1.0, session_timer=SessionTimerConfig())
OFFER = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
Header = tuple[str, str]


# -- harness ------------------------------------------------------------------
class Wire:
    """What one endpoint's transport received and sent, parsed; ``inbound``
    and ``outbound`` leave out retransmissions, ``log`` has everything."""

    def __init__(self) -> None:
        self.inbound: list[tuple[Message, Flow]] = []
        self.outbound: list[tuple[Message, Flow]] = []
        self.log: list[tuple[str, Message, Flow]] = []  # both directions, in order
        self._seen: set[tuple[object, ...]] = set()

    def __call__(self, direction: str, data: bytes, flow: Flow) -> None:
        message = parse(data)
        self.log.append((direction, message, flow))
        key = (direction, _identity(message))
        if key not in self._seen:
            self._seen.add(key)
            (self.inbound if direction == "in" else self.outbound).append((message, flow))

    def requests_in(self, method: str) -> list[Request]:
        return [m for m, _ in self.inbound if isinstance(m, Request) and m.method == method]

    def responses_in(self, method: str = "INVITE") -> list[Response]:
        return [m for m, _ in self.inbound
                if isinstance(m, Response) and m.cseq.method == method]

    def responses_out(self, method: str = "INVITE") -> list[Response]:
        return [m for m, _ in self.outbound
                if isinstance(m, Response) and m.cseq.method == method]


def _identity(message: Message) -> tuple[object, ...]:
    """Equal for a message and its retransmissions."""
    via = message.top_via.branch
    if isinstance(message, Request):
        return (message.method, via, message.cseq.seq)
    return (message.status, via, message.cseq.method, message.cseq.seq, message.to.tag)


Script = Callable[[ServerContext, str], Awaitable[None]]


class Peer:
    """A UAS on its own SipEndpoint: ``script(ctx, to_tag)`` answers each INVITE,
    other requests get 200, ACKs are only recorded."""

    def __init__(self, name: str, script: Script) -> None:
        self.name = name
        self.script = script
        self.wire = Wire()
        self.ep = SipEndpoint(timers=MID, modules=[HandlerModule(self._handle)])
        self.uri: SipUri
        self.port = 0

    async def start(self) -> None:
        _, self.port = await self.ep.listen("udp", HOST, 0)
        self.ep.transport.trace = self.wire
        self.uri = parse_uri(f"sip:{self.name}@{HOST}:{self.port}")  # type: ignore[assignment]

    async def _handle(self, ctx: ServerContext) -> None:
        if ctx.txn is None:  # ACK for a 2xx
            return
        if ctx.request.method != "INVITE":
            ctx.respond(answer(ctx, 200, new_tag()))
            return
        await self.script(ctx, new_tag())


def answer(ctx: ServerContext, status: int, tag: str, headers: Iterable[Header] = ()) -> Response:
    response = Response.for_request(ctx.request, status, to_tag=tag)
    if 101 <= status < 300:
        response.add_header("Contact", f"<sip:uas@{ctx.flow.local[0]}:{ctx.flow.local[1]}>")
    for name, value in headers:
        response.add_header(name, value)
    return response


def reply(status: int, headers: Iterable[Header] = (), ring: bool = False,
          gate: asyncio.Event | None = None) -> Script:
    """Optionally ring, optionally wait for ``gate``, then answer ``status``."""
    async def script(ctx: ServerContext, tag: str) -> None:
        if ring or gate is not None:
            ctx.respond(answer(ctx, 180, tag))
        if gate is not None:
            await gate.wait()
        ctx.respond(answer(ctx, status, tag, headers))
    return script


def ring_until_cancel(on_cancel: int = 487) -> Script:
    """Ring, then answer ``on_cancel`` once a CANCEL arrives (a 200 here is the
    2xx-wins-over-CANCEL race of 9.2)."""
    async def script(ctx: ServerContext, tag: str) -> None:
        ctx.respond(answer(ctx, 180, tag))
        await ctx.cancelled.wait()
        ctx.respond(answer(ctx, on_cancel, tag))
    return script


class Net:
    """One proxy, its peers and UACs; everything closed at the end."""

    def __init__(self) -> None:
        self.proxy: StatefulProxy
        self.proxy_wire = Wire()
        self.router_calls: list[Request] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []

    async def start_proxy(self, router: Callable[[Request], list[Target] | Response],
                          **options: object) -> StatefulProxy:
        async def route(ctx: RequestContext) -> list[Target] | Response:
            self.router_calls.append(ctx.request.copy())
            return router(ctx.request)
        options.setdefault("timers", MID)
        return await self.start(StatefulProxy(route, **options))  # type: ignore[arg-type]

    async def start(self, proxy: StatefulProxy) -> StatefulProxy:
        """Listen with ``proxy`` on loopback UDP, traced, closed at the end."""
        self.proxy = proxy
        await proxy.listen("udp", HOST, 0)
        proxy.endpoint.transport.trace = self.proxy_wire
        self._closers.append(proxy.close)
        return proxy

    @property
    def proxy_port(self) -> int:
        return self.proxy.endpoint.listening["udp"][1]

    @property
    def proxy_dest(self) -> Destination:
        return Destination("udp", HOST, self.proxy_port)

    @property
    def rr_uri(self) -> str:
        return f"sip:{HOST}:{self.proxy_port};lr"

    async def peer(self, name: str, script: Script) -> Peer:
        peer = Peer(name, script)
        await peer.start()
        self._closers.append(peer.ep.close)
        return peer

    async def uac(self, timers: TimerValues = SLOW) -> tuple[SipEndpoint, Wire]:
        ep = SipEndpoint(timers=timers)
        await ep.listen("udp", HOST, 0)
        wire = Wire()
        ep.transport.trace = wire
        self._closers.append(ep.close)
        return ep, wire

    async def close(self) -> None:
        for close in reversed(self._closers):
            await close()


def run(scenario: Callable[[Net], Awaitable[None]], timeout: float = 8.0) -> None:
    """Run ``scenario``; an exception no task retrieved fails the test too."""
    errors: list[dict[str, object]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        net = Net()
        try:
            await asyncio.wait_for(scenario(net), timeout)
        finally:
            await net.close()
    asyncio.run(main())
    assert errors == []


def by_user(table: dict[str, list[Target]]) -> Callable[[Request], list[Target] | Response]:
    """A router: targets by the Request-URI user part, else 404."""
    def route(request: Request) -> list[Target] | Response:
        user = request.uri.user if isinstance(request.uri, SipUri) else None
        if user in table:
            return table[user]
        return Response.for_request(request, 404, "Not Found", to_tag=new_tag())
    return route


def make_request(method: str, target: str, headers: Iterable[Header] = (),
                 body: bytes = b"") -> Request:
    request = Request(method, target, [
        ("From", f"<sip:alice@{HOST}>;tag={new_tag()}"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", f"{new_tag()}@{HOST}"),
        ("CSeq", f"1 {method}"),
        ("Contact", f"<sip:alice@{HOST}>"),
    ], body)
    for name, value in headers:
        request.add_header(name, value)
    return request


async def collect(ep: SipEndpoint, request: Request, dest: Destination) -> list[Response]:
    """Send ``request`` statefully; every response up to the final one."""
    return [r async for r in ep.request(request, dest)]


async def settle(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def statuses(responses: Iterable[Response]) -> list[int]:
    return [r.status for r in responses]


# -- a call through the proxy ---------------------------------------------------
def test_call_through_proxy_record_routes_and_loose_routes_in_dialog() -> None:
    async def scenario(net: Net) -> None:
        bob_ep, bob_wire = await net.uac(MID)
        alice_ep, alice_wire = await net.uac(MID)
        bob_port = bob_ep.listening["udp"][1]
        alice_port = alice_ep.listening["udp"][1]
        bob_contact = f"sip:bob@{HOST}:{bob_port}"
        await net.start_proxy(by_user({"bob": [Target(parse_uri(bob_contact))]}))
        alice = UserAgent(alice_ep, "<sip:alice@example.com>", f"sip:alice@{HOST}:{alice_port}",
                          config=CONFIG, route=[f"<{net.rr_uri}>"])
        bob = UserAgent(bob_ep, "<sip:bob@example.com>", bob_contact, config=CONFIG,
                        offer_answer=lambda: StaticOfferAnswer(ANSWER))

        call = await alice.invite("sip:bob@example.com", OFFER)
        incoming = await bob.incoming.get()
        incoming.ring(reliable=False)
        incoming.accept()
        final = await call.wait_final()
        assert final is not None and final.status == 200
        await asyncio.wait_for(incoming.established.wait(), 2)
        assert call.remote_sdp == ANSWER and incoming.remote_sdp == OFFER

        # The forwarded INVITE: 16.6 steps 3, 4 and 8; our own Route popped (16.4).
        [invite] = bob_wire.requests_in("INVITE")
        assert str(invite.uri) == bob_contact
        assert invite.max_forwards == 69
        assert [str(r.uri) for r in invite.record_route] == [net.rr_uri]
        assert invite.route == []
        assert len(invite.via) == 2
        assert (invite.via[0].host, invite.via[0].port) == (HOST, net.proxy_port)
        assert invite.via[0].branch.startswith("z9hG4bK")
        assert invite.via[1].port == alice_port
        # Responses upstream: the proxy's 100, then 180 and 200 without its Via.
        got = alice_wire.responses_in("INVITE")
        assert statuses(got)[:3] == [100, 180, 200]
        assert all(len(r.via) == 1 and r.via[0].port == alice_port for r in got)
        assert [str(r.uri) for r in got[2].record_route] == [net.rr_uri]

        await call.bye()
        await asyncio.wait_for(asyncio.shield(incoming.terminated), 2)
        assert call.state is InviteState.TERMINATED
        # ACK and BYE go through the proxy (Route), which pops its own Route.
        # (A 2xx retransmitted under load is ACKed again: check every copy.)
        for method in ("ACK", "BYE"):
            assert net.proxy_wire.requests_in(method) and bob_wire.requests_in(method)
            for at_proxy in net.proxy_wire.requests_in(method):
                assert [str(r.uri) for r in at_proxy.route] == [net.rr_uri]
            for at_bob in bob_wire.requests_in(method):
                assert str(at_bob.uri) == bob_contact and at_bob.route == []
                assert at_bob.max_forwards == 69
                assert (at_bob.via[0].host, at_bob.via[0].port) == (HOST, net.proxy_port)
        await settle(lambda: alice_wire.responses_in("BYE"))
        assert statuses(alice_wire.responses_in("BYE")) == [200]
        assert {flow.remote[1] for _, flow in alice_wire.outbound} == {net.proxy_port}
        assert {flow.remote[1] for _, flow in bob_wire.outbound} == {net.proxy_port}
    run(scenario)


# -- 16.3 request validation over the wire ---------------------------------------
def test_validation_max_forwards_proxy_require_and_router_response() -> None:
    async def scenario(net: Net) -> None:
        peer = await net.peer("bob", reply(200))
        await net.start_proxy(by_user({"bob": [Target(peer.uri)]}),
                              supported=frozenset({"sec-agree"}))
        uac, _ = await net.uac()

        [r] = await collect(uac, make_request("MESSAGE", "sip:bob@example.com",
                                              [("Max-Forwards", "0")]), net.proxy_dest)
        assert r.status == 483 and r.to.tag  # our own answers carry a To tag
        [r] = await collect(uac, make_request("MESSAGE", "sip:bob@example.com",
                                              [("Proxy-Require", "foo, sec-agree")]),
                            net.proxy_dest)
        assert r.status == 420 and r.tokens("Unsupported") == ["foo"] and r.to.tag
        assert net.router_calls == [] and peer.wire.inbound == []
        # A supported extension passes; Max-Forwards 1 is forwarded as 0.
        [r] = await collect(uac, make_request("MESSAGE", "sip:bob@example.com",
                                              [("Proxy-Require", "sec-agree"),
                                               ("Max-Forwards", "1")]), net.proxy_dest)
        assert r.status == 200
        assert peer.wire.requests_in("MESSAGE")[0].max_forwards == 0
        # The router's own answer goes back as it is.
        [r] = await collect(uac, make_request("MESSAGE", "sip:nobody@example.com"),
                            net.proxy_dest)
        assert r.status == 404 and len(r.via) == 1
    run(scenario)


def test_router_without_targets_or_failing_is_answered() -> None:
    async def scenario(net: Net) -> None:
        def router(request: Request) -> list[Target]:
            if request.uri.user == "crash":
                raise RuntimeError("router bug")
            return []
        await net.start_proxy(router)
        uac, _ = await net.uac()
        for user, status in (("nobody", 480), ("crash", 500)):
            responses = await collect(uac, make_request("INVITE", f"sip:{user}@example.com"),
                                      net.proxy_dest)
            assert statuses(responses) == [100, status] and responses[-1].to.tag
    run(scenario)


def test_loop_back_to_the_proxy_itself_is_482() -> None:
    async def scenario(net: Net) -> None:
        holder: list[Destination] = []
        await net.start_proxy(lambda request: [Target(request.uri, holder[0])])
        holder.append(net.proxy_dest)
        uac, _ = await net.uac()
        responses = await collect(uac, make_request("INVITE", "sip:bob@example.com"),
                                  net.proxy_dest)
        assert statuses(responses)[-1] == 482 and responses[-1].to.tag
        # The second pass was recognised (same hash), not run down by Max-Forwards.
        assert len(net.router_calls) == 1
        assert len(net.proxy_wire.requests_in("INVITE")) == 2
    run(scenario)


def test_spiral_through_the_proxy_is_not_a_loop() -> None:
    async def scenario(net: Net) -> None:
        peer = await net.peer("carol", reply(200))
        holder: list[Destination] = []

        def router(request: Request) -> list[Target]:
            if request.uri.user == "bob":  # retarget to carol, back through us
                return [Target(parse_uri("sip:carol@example.com"), holder[0])]
            return [Target(peer.uri)]
        await net.start_proxy(router, record_route=False)
        holder.append(net.proxy_dest)
        uac, _ = await net.uac()
        [r] = await collect(uac, make_request("MESSAGE", "sip:bob@example.com"),
                            net.proxy_dest)
        assert r.status == 200 and len(r.via) == 1
        [at_peer] = peer.wire.requests_in("MESSAGE")
        assert len(at_peer.via) == 3 and at_peer.max_forwards == 68
    run(scenario)


# -- parallel forking ----------------------------------------------------------------
def test_parallel_fork_2xx_wins_and_pending_branches_are_cancelled() -> None:
    async def scenario(net: Net) -> None:
        gate = asyncio.Event()
        busy = await net.peer("busy", reply(486))
        gone = await net.peer("gone", reply(404))
        ringing = await net.peer("ringing", ring_until_cancel())
        winner = await net.peer("winner", reply(200, gate=gate))
        peers = [busy, gone, ringing, winner]
        await net.start_proxy(by_user({"bob": [Target(p.uri) for p in peers]}))
        uac, _ = await net.uac()
        ctx = uac.request(make_request("INVITE", "sip:bob@example.com"), net.proxy_dest)
        await settle(lambda: busy.wire.requests_in("ACK") and gone.wire.requests_in("ACK")
                     and ringing.wire.responses_out())
        gate.set()
        responses = [r async for r in ctx]
        assert statuses(responses)[-1] == 200
        assert all(s < 200 for s in statuses(responses)[:-1])  # no 486 / 404 upstream
        assert responses[-1].to.tag == winner.wire.responses_out()[-1].to.tag
        await settle(lambda: 487 in statuses(ringing.wire.responses_out()))
        assert len(ringing.wire.requests_in("CANCEL")) == 1
        for peer in (busy, gone, winner):
            assert peer.wire.requests_in("CANCEL") == []
    run(scenario)


def test_parallel_fork_all_fail_best_response_6xx_wins() -> None:
    async def scenario(net: Net) -> None:
        gate = asyncio.Event()
        a = await net.peer("a", reply(486))
        b = await net.peer("b", reply(404))
        c = await net.peer("c", reply(603, gate=gate))
        await net.start_proxy(by_user({"bob": [Target(p.uri) for p in (a, b, c)]}))
        uac, _ = await net.uac()
        ctx = uac.request(make_request("INVITE", "sip:bob@example.com"), net.proxy_dest)
        await settle(lambda: a.wire.requests_in("ACK") and b.wire.requests_in("ACK"))
        gate.set()
        final = await ctx.final()
        assert final.status == 603 and len(final.via) == 1
    run(scenario)


def test_parallel_fork_4xx_beats_5xx_and_503_becomes_500() -> None:
    async def scenario(net: Net) -> None:
        a = await net.peer("a", reply(500))
        b = await net.peer("b", reply(486))
        c = await net.peer("c", reply(503))
        await net.start_proxy(by_user({"bob": [Target(p.uri) for p in (a, b, c)],
                                       "down": [Target(c.uri)]}))
        uac, _ = await net.uac()
        final = await uac.request(make_request("INVITE", "sip:bob@example.com"),
                                  net.proxy_dest).final()
        assert final.status == 486
        final = await uac.request(make_request("INVITE", "sip:down@example.com"),
                                  net.proxy_dest).final()
        assert final.status == 500  # 16.7 step 6: a 503 is not passed upstream
    run(scenario)


def test_parallel_fork_challenges_are_aggregated() -> None:
    async def scenario(net: Net) -> None:
        www = 'Digest realm="a.test", nonce="n1"'
        proxy_auth = 'Digest realm="b.test", nonce="n2"'
        a = await net.peer("a", reply(401, [("WWW-Authenticate", www)]))
        b = await net.peer("b", reply(407, [("Proxy-Authenticate", proxy_auth)]))
        c = await net.peer("c", reply(486))
        await net.start_proxy(by_user({"bob": [Target(p.uri) for p in (a, b, c)]}))
        uac, _ = await net.uac()
        final = await uac.request(make_request("INVITE", "sip:bob@example.com"),
                                  net.proxy_dest).final()
        assert final.status == 401  # 401 and 407 rank alike; the lower code is kept
        assert final.headers.get_all("WWW-Authenticate") == [www]
        assert final.headers.get_all("Proxy-Authenticate") == [proxy_auth]
    run(scenario)


def test_6xx_cancels_the_other_branches() -> None:
    async def scenario(net: Net) -> None:
        gate = asyncio.Event()
        a = await net.peer("a", ring_until_cancel())
        b = await net.peer("b", ring_until_cancel())
        c = await net.peer("c", reply(600, gate=gate))
        await net.start_proxy(by_user({"bob": [Target(p.uri) for p in (a, b, c)]}))
        uac, _ = await net.uac()
        ctx = uac.request(make_request("INVITE", "sip:bob@example.com"), net.proxy_dest)
        await settle(lambda: a.wire.responses_out() and b.wire.responses_out()
                     and c.wire.responses_out())
        gate.set()
        final = await ctx.final()
        assert final.status == 600
        for peer in (a, b):
            assert len(peer.wire.requests_in("CANCEL")) == 1
            assert statuses(peer.wire.responses_out())[-1] == 487
        assert c.wire.requests_in("CANCEL") == []
    run(scenario)


# -- sequential forking, CANCEL, timers ------------------------------------------------
def test_sequential_fork_by_q() -> None:
    async def scenario(net: Net) -> None:
        first = await net.peer("first", reply(480, ring=True))
        second = await net.peer("second", reply(200))
        await net.start_proxy(by_user({"bob": [Target(second.uri, q=0.5),
                                               Target(first.uri, q=1.0)]}))
        uac, _ = await net.uac()
        responses = await collect(uac, make_request("INVITE", "sip:bob@example.com"),
                                  net.proxy_dest)
        assert statuses(responses)[-1] == 200 and 480 not in statuses(responses)
        assert responses[-1].to.tag == second.wire.responses_out()[-1].to.tag
        # The q=0.5 target is tried only after the q=1.0 one has failed.
        assert len(second.wire.requests_in("INVITE")) == 1
        steps = [(d, m.method if isinstance(m, Request) else m.status, f.remote[1])
                 for d, m, f in net.proxy_wire.log]
        got_480 = steps.index(("in", 480, first.port))
        sent_second = steps.index(("out", "INVITE", second.port))
        assert steps.index(("out", "INVITE", first.port)) < got_480 < sent_second
    run(scenario)


def test_sequential_fork_does_not_start_after_2xx_or_6xx() -> None:
    async def scenario(net: Net) -> None:
        first = await net.peer("first", reply(603))
        second = await net.peer("second", reply(200))
        await net.start_proxy(by_user({"bob": [Target(first.uri, q=0.9),
                                               Target(second.uri, q=0.1)]}))
        uac, _ = await net.uac()
        final = await uac.request(make_request("INVITE", "sip:bob@example.com"),
                                  net.proxy_dest).final()
        assert final.status == 603
        await asyncio.sleep(0.1)
        assert second.wire.inbound == []
    run(scenario)


def test_cancel_from_uac_cancels_every_ringing_branch() -> None:
    async def scenario(net: Net) -> None:
        peers = [await net.peer(f"p{i}", ring_until_cancel()) for i in range(3)]
        await net.start_proxy(by_user({"bob": [Target(p.uri) for p in peers]}))
        uac, _ = await net.uac()
        ctx = uac.request(make_request("INVITE", "sip:bob@example.com"), net.proxy_dest)
        await settle(lambda: all(p.wire.responses_out() for p in peers))
        cancel_reply = await ctx.cancel()
        assert cancel_reply is not None and cancel_reply.status == 200
        final = await ctx.final()
        assert final.status == 487 and len(final.via) == 1
        for peer in peers:
            assert len(peer.wire.requests_in("CANCEL")) == 1
            assert statuses(peer.wire.responses_out())[-1] == 487
    run(scenario)


class Blackhole(asyncio.DatagramProtocol):
    """A UDP socket that swallows everything (a dead next hop)."""

    def __init__(self) -> None:
        self.received: list[Message] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.received.append(parse(data))


def test_branch_that_never_answers_gives_408_after_timer_b() -> None:
    async def scenario(net: Net) -> None:
        loop = asyncio.get_running_loop()
        transport, hole = await loop.create_datagram_endpoint(Blackhole, local_addr=(HOST, 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            alive = await net.peer("alive", reply(500))
            await net.start_proxy(by_user({"bob": [Target(parse_uri(f"sip:dead@{HOST}:{port}")),
                                                   Target(alive.uri)]}), timers=FAST)
            uac, _ = await net.uac()
            started = loop.time()
            final = await uac.request(make_request("INVITE", "sip:bob@example.com"),
                                      net.proxy_dest).final()
            elapsed = loop.time() - started
        finally:
            transport.close()
        # The branch's 408 (after Timer B, 64*T1) beats the other's 500.
        assert final.status == 408 and final.to.tag
        assert elapsed >= 64 * FAST.t1 * 0.9
        invites = [m for m in hole.received if isinstance(m, Request)]
        assert len(invites) >= 3 and {m.method for m in invites} == {"INVITE"}  # Timer A
    run(scenario)


def test_only_branch_timing_out_gives_408_upstream() -> None:
    async def scenario(net: Net) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Blackhole, local_addr=(HOST, 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            await net.start_proxy(by_user({"bob": [Target(parse_uri(f"sip:dead@{HOST}:{port}"))]}),
                                  timers=FAST)
            uac, _ = await net.uac()
            responses = await collect(uac, make_request("INVITE", "sip:bob@example.com"),
                                      net.proxy_dest)
        finally:
            transport.close()
        assert statuses(responses) == [100, 408]
        assert len(responses[-1].via) == 1 and responses[-1].to.tag
    run(scenario)


def test_timer_c_cancels_a_branch_stuck_in_180() -> None:
    async def scenario(net: Net) -> None:
        stuck = await net.peer("stuck", ring_until_cancel())
        await net.start_proxy(by_user({"bob": [Target(stuck.uri)]}), timer_c=0.3)
        uac, _ = await net.uac()
        loop = asyncio.get_running_loop()
        started = loop.time()
        responses = await collect(uac, make_request("INVITE", "sip:bob@example.com"),
                                  net.proxy_dest)
        assert statuses(responses) == [100, 180, 487]
        assert loop.time() - started >= 0.3
        assert len(stuck.wire.requests_in("CANCEL")) == 1
    run(scenario)


def test_timer_c_and_uac_cancel_send_one_cancel_per_branch() -> None:
    async def scenario(net: Net) -> None:
        gate = asyncio.Event()

        async def slow_487(ctx: ServerContext, tag: str) -> None:
            ctx.respond(answer(ctx, 180, tag))
            await ctx.cancelled.wait()
            await gate.wait()
            ctx.respond(answer(ctx, 487, tag))
        stuck = await net.peer("stuck", slow_487)
        await net.start_proxy(by_user({"bob": [Target(stuck.uri)]}), timer_c=0.2)
        uac, _ = await net.uac()
        ctx = uac.request(make_request("INVITE", "sip:bob@example.com"), net.proxy_dest)
        await settle(lambda: stuck.wire.requests_in("CANCEL"))  # Timer C fired
        reply_to_cancel = await ctx.cancel()
        assert reply_to_cancel is not None and reply_to_cancel.status == 200
        await asyncio.sleep(0.1)
        gate.set()
        assert (await ctx.final()).status == 487
        assert len(stuck.wire.requests_in("CANCEL")) == 1
    run(scenario)


# -- strict routing (16.4, 16.6 step 6-7) ---------------------------------------------
def test_strict_next_hop_gets_the_request_uri_in_route() -> None:
    """The UAS Record-Routes itself with a strict URI; the UAC's route set is
    [proxy;lr, uas-strict], so the proxy must rewrite ACK and BYE."""
    async def scenario(net: Net) -> None:
        loop = asyncio.get_running_loop()
        dead, hole = await loop.create_datagram_endpoint(Blackhole, local_addr=(HOST, 0))
        dead_port = dead.get_extra_info("sockname")[1]
        strict_uri = ""

        async def strict_uas(ctx: ServerContext, tag: str) -> None:
            ok = answer(ctx, 200, tag)
            ok.remove_header("Contact")  # a remote target nobody listens on
            ok.add_header("Contact", f"<sip:bob@{HOST}:{dead_port}>")
            ok.push_header("Record-Route", f"<{strict_uri}>")
            ok.add_header("Content-Type", "application/sdp")
            ok.body = ANSWER
            ctx.respond(ok)
        uas = await net.peer("bob", strict_uas)
        strict_uri = f"sip:{HOST}:{uas.port}"
        await net.start_proxy(by_user({"bob": [Target(uas.uri)]}))
        alice_ep, alice_wire = await net.uac(MID)
        alice_port = alice_ep.listening["udp"][1]
        alice = UserAgent(alice_ep, "<sip:alice@example.com>", f"sip:alice@{HOST}:{alice_port}",
                          config=CONFIG, route=[f"<{net.rr_uri}>"])
        try:
            call = await alice.invite("sip:bob@example.com", OFFER)
            final = await call.wait_final()
            assert final is not None and final.status == 200
            await asyncio.wait_for(call.bye(), 3)
            await settle(lambda: alice_wire.responses_in("BYE") and uas.wire.requests_in("ACK"))
        finally:
            dead.close()
        for method in ("ACK", "BYE"):
            assert uas.wire.requests_in(method)
            for req in uas.wire.requests_in(method):
                assert str(req.uri) == strict_uri
                assert [str(r.uri) for r in req.route] == [f"sip:bob@{HOST}:{dead_port}"]
        assert statuses(alice_wire.responses_in("BYE")) == [200]
        assert hole.received == []  # nothing went to the remote target directly
    run(scenario)


def test_previous_hop_strict_routing_to_our_record_route_uri() -> None:
    async def scenario(net: Net) -> None:
        peer = await net.peer("bob", reply(200))
        await net.start_proxy(by_user({}))
        uac, _ = await net.uac()
        # An RFC 2543 hop puts our Record-Route URI in the Request-URI and the
        # real target last in Route.
        request = make_request("MESSAGE", net.rr_uri, [("Route", f"<{peer.uri}>")])
        request.set_header("To", f"<sip:bob@example.com>;tag={new_tag()}")
        [r] = await collect(uac, request, net.proxy_dest)
        assert r.status == 200
        [at_peer] = peer.wire.requests_in("MESSAGE")
        assert str(at_peer.uri) == str(peer.uri) and at_peer.route == []
        assert net.router_calls == []  # in-dialog: goes where the Request-URI says
    run(scenario)


# -- REGISTER with Path, non-INVITE, late 2xx ---------------------------------------------
def test_register_through_proxy_with_path() -> None:
    async def scenario(net: Net) -> None:
        registrar = await net.peer("registrar", reply(200))
        await net.start_proxy(lambda request: [Target(request.uri, Destination(
            "udp", HOST, registrar.port))], path=True)
        uac, _ = await net.uac()
        register = make_request("REGISTER", "sip:example.com",
                                [("Supported", "path"), ("Expires", "600")])
        register.set_header("To", "<sip:alice@example.com>")
        [r] = await collect(uac, register, net.proxy_dest)
        assert r.status == 200
        [at_registrar] = registrar.wire.requests_in("REGISTER")
        assert [str(p.uri) for p in at_registrar.path] == [net.rr_uri]
        assert at_registrar.record_route == []
        assert str(at_registrar.uri) == "sip:example.com"
    run(scenario)


def test_message_forwarded_and_200_returned() -> None:
    async def scenario(net: Net) -> None:
        peer = await net.peer("bob", reply(200))
        await net.start_proxy(by_user({"bob": [Target(peer.uri)]}))
        uac, wire = await net.uac()
        request = make_request("MESSAGE", "sip:bob@example.com",
                               [("Content-Type", "text/plain")], b"hello")
        responses = await collect(uac, request, net.proxy_dest)
        assert statuses(responses) == [200]  # no 100 for a non-INVITE answered at once
        assert len(responses[0].via) == 1
        [at_peer] = peer.wire.requests_in("MESSAGE")
        assert at_peer.body == b"hello" and at_peer.max_forwards == 69
        assert (at_peer.via[0].host, at_peer.via[0].port) == (HOST, net.proxy_port)
        assert str(at_peer.uri) == str(peer.uri)
    run(scenario)


def test_late_2xx_from_a_second_fork_is_forwarded() -> None:
    async def scenario(net: Net) -> None:
        gate = asyncio.Event()
        first = await net.peer("first", reply(200, gate=gate))
        second = await net.peer("second", ring_until_cancel(on_cancel=200))
        await net.start_proxy(by_user({"bob": [Target(first.uri), Target(second.uri)]}))
        uac, _ = await net.uac()
        late: list[Response] = []
        ctx = uac.request(make_request("INVITE", "sip:bob@example.com"), net.proxy_dest)
        ctx.on_late_response = late.append
        await settle(lambda: first.wire.responses_out() and second.wire.responses_out())
        gate.set()
        final = await ctx.final()
        assert final.status == 200
        await settle(lambda: bool(late))
        assert late[0].status == 200 and len(late[0].via) == 1
        assert {final.to.tag, late[0].to.tag} == {
            first.wire.responses_out()[-1].to.tag, second.wire.responses_out()[-1].to.tag}
        assert len(second.wire.requests_in("CANCEL")) == 1
    run(scenario)
