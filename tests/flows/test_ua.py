"""Two UserAgents calling each other over real loopback UDP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from imsbox.sip import Request, new_tag, parse
from imsbox.sip.endpoint import SipEndpoint
from imsbox.sip.transaction import TimerValues
from imsbox.sip.ua.invite import InviteConfig, InviteState, SessionTimerConfig
from imsbox.sip.ua.useragent import Call, UserAgent

from helpers import settle

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"
FAST = TimerValues(t1=0.02, t2=0.1, t4=0.1)
CONFIG = InviteConfig(t1=0.02, t2=0.1, session_timer=SessionTimerConfig())
OFFER = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"
ANSWER = b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=sendrecv\r\n"


class Mirror:
    """Bob's offer/answer: answers sendonly with recvonly, else sendrecv."""

    def __init__(self) -> None:
        self.offers: list[bytes] = []

    def offer(self) -> bytes:
        return ANSWER

    def answer(self, offer: bytes) -> bytes | None:
        self.offers.append(offer)
        if b"a=sendonly" in offer:
            return ANSWER.replace(b"a=sendrecv", b"a=recvonly")
        return ANSWER

    def answered(self, answer: bytes) -> None:
        pass


class Net:
    """Alice and Bob, each with a SipEndpoint on loopback UDP; one shared ladder."""

    def __init__(self) -> None:
        self.ladder: list[tuple[str, str]] = []
        self.alice: UserAgent
        self.bob: UserAgent
        self.bob_uri = ""
        self.endpoints: list[SipEndpoint] = []

    async def start(self) -> None:
        uas = []
        for name in ("alice", "bob"):
            ep = SipEndpoint(timers=FAST)
            _, port = await ep.listen("udp", HOST, 0)
            ep.transport.trace = self._recorder(name)
            self.endpoints.append(ep)
            uri = f"sip:{name}@{HOST}:{port}"
            uas.append(UserAgent(ep, f"<sip:{name}@example.com>", uri, config=CONFIG,
                                 offer_answer=Mirror if name == "bob" else None))
            if name == "bob":
                self.bob_uri = uri
        self.alice, self.bob = uas

    def _recorder(self, name: str) -> Callable[[str, bytes, object], None]:
        def record(direction: str, data: bytes, flow: object) -> None:
            if direction != "out":
                return
            message = parse(data)
            if isinstance(message, Request):
                self.ladder.append((name, message.method))
            else:
                self.ladder.append((name, f"{message.status} {message.cseq.method}"))
        return record

    def steps(self) -> list[tuple[str, str]]:
        """The ladder without 100 Trying (sent only if the TU is slow)."""
        return [s for s in self.ladder if s[1] != "100 INVITE"]

    async def close(self) -> None:
        for ep in self.endpoints:
            await ep.close()


def run(test: Callable[[Net], Awaitable[None]]) -> None:
    async def main() -> None:
        net = Net()
        await net.start()
        try:
            await asyncio.wait_for(test(net), 10)
        finally:
            await net.close()
    asyncio.run(main())


async def connect(net: Net) -> tuple[Call, Call]:
    call = await net.alice.invite(net.bob_uri, OFFER)
    incoming = await net.bob.incoming.get()
    incoming.ring(reliable=False)
    incoming.accept()
    final = await call.wait_final()
    assert final is not None and final.status == 200
    await asyncio.wait_for(incoming.established.wait(), 2)
    return call, incoming


def test_basic_call_invite_180_200_ack_bye() -> None:
    async def scenario(net: Net) -> None:
        call, incoming = await connect(net)
        assert incoming.request.body == OFFER
        assert call.remote_sdp == ANSWER and incoming.remote_sdp == OFFER
        assert call.state is InviteState.CONFIRMED and incoming.state is InviteState.CONFIRMED
        assert call.progress and call.progress[0].status == 180
        await call.bye()
        ended = await asyncio.wait_for(asyncio.shield(incoming.terminated), 2)
        assert ended.reason == "remote BYE"
        await settle(lambda: ("bob", "200 BYE") in net.ladder)
        assert net.steps() == [
            ("alice", "INVITE"), ("bob", "180 INVITE"), ("bob", "200 INVITE"),
            ("alice", "ACK"), ("alice", "BYE"), ("bob", "200 BYE"),
        ]
        assert not net.alice.calls and not net.bob.calls and len(net.bob.dialogs) == 0
    run(scenario)


def test_reinvite_hold_passes_sendonly_through() -> None:
    async def scenario(net: Net) -> None:
        call, incoming = await connect(net)
        hold = OFFER.replace(b"a=sendrecv", b"a=sendonly").replace(b" 1 1 ", b" 1 2 ")
        response = await call.reinvite(hold)
        assert response is not None and response.status == 200
        assert incoming.remote_sdp == hold
        assert call.remote_sdp is not None and b"a=recvonly" in call.remote_sdp
        await settle(lambda: net.steps().count(("alice", "ACK")) == 2)
        await asyncio.sleep(0.1)  # no 2xx retransmission once the ACK arrived
        assert net.steps()[4:] == [("alice", "INVITE"), ("bob", "200 INVITE"),
                                   ("alice", "ACK")]
        await incoming.bye()  # the callee hangs up this time
        await asyncio.wait_for(asyncio.shield(call.terminated), 2)
    run(scenario)


def test_cancel_ringing_call_gets_487() -> None:
    async def scenario(net: Net) -> None:
        call = await net.alice.invite(net.bob_uri, OFFER)
        incoming = await net.bob.incoming.get()
        incoming.ring(reliable=False)
        await asyncio.wait_for(call.ringing.wait(), 2)
        await call.cancel()
        final = await call.wait_final()
        assert final is not None and final.status == 487
        ended = await asyncio.wait_for(asyncio.shield(incoming.terminated), 2)
        assert ended.status == 487
        await settle(lambda: ("alice", "ACK") in net.ladder)
        steps = net.steps()
        assert steps[:2] == [("alice", "INVITE"), ("bob", "180 INVITE")]
        assert set(steps[2:]) == {("alice", "CANCEL"), ("bob", "200 CANCEL"),
                                  ("bob", "487 INVITE"), ("alice", "ACK")}
    run(scenario)


def test_reliable_provisional_with_prack() -> None:
    async def scenario(net: Net) -> None:
        call = await net.alice.invite(net.bob_uri, OFFER)
        incoming = await net.bob.incoming.get()
        incoming.ring(183, body=ANSWER)   # the answer, reliably (RFC 3262)
        incoming.accept()                 # held back until the PRACK
        final = await call.wait_final()
        assert final is not None and final.status == 200
        p183 = call.progress[0]
        assert p183.status == 183 and "100rel" in p183.tokens("Require")
        assert call.remote_sdp == ANSWER
        await settle(lambda: incoming.established.is_set())
        assert net.steps()[:6] == [
            ("alice", "INVITE"), ("bob", "183 INVITE"), ("alice", "PRACK"),
            ("bob", "200 PRACK"), ("bob", "200 INVITE"), ("alice", "ACK"),
        ]
        await call.bye()
    run(scenario)


def test_update_in_confirmed_dialog() -> None:
    async def scenario(net: Net) -> None:
        call, incoming = await connect(net)
        new_offer = OFFER.replace(b"4000", b"4002")
        response = await call.update(new_offer)
        assert response is not None and response.status == 200
        assert response.body == ANSWER
        assert incoming.remote_sdp == new_offer
        assert ("bob", "200 UPDATE") in net.ladder
        await call.bye()
    run(scenario)


def test_options_out_of_dialog_requests_and_481() -> None:
    async def scenario(net: Net) -> None:
        ep = net.endpoints[0]
        def request(method: str, to_tag: str | None = None) -> Request:
            to = f"<{net.bob_uri}>" + (f";tag={to_tag}" if to_tag else "")
            return Request(method, net.bob_uri, [
                ("From", f"<sip:alice@example.com>;tag={new_tag()}"), ("To", to),
                ("Call-ID", new_tag()), ("CSeq", f"1 {method}")])
        options = await ep.request(request("OPTIONS")).final()
        assert options.status == 200
        assert "INVITE" in options.tokens("Allow") and "UPDATE" in options.tokens("Allow")
        assert "100rel" in options.tokens("Supported")
        assert options.header("Accept") == "application/sdp"
        message = await ep.request(request("MESSAGE")).final()
        assert message.status == 405 and "INVITE" in message.tokens("Allow")
        unknown = await ep.request(request("FOO")).final()
        assert unknown.status == 501
        stray = await ep.request(request("BYE", to_tag="nosuchdialog")).final()
        assert stray.status == 481
        info = await ep.request(request("INFO", to_tag="nosuchdialog")).final()
        assert info.status == 481
    run(scenario)


def test_app_callback_gets_out_of_dialog_message() -> None:
    async def scenario(net: Net) -> None:
        got: list[bytes] = []
        def on_request(ctx) -> None:  # type: ignore[no-untyped-def]
            from imsbox.sip import Response
            got.append(ctx.request.body)
            ctx.respond(Response.for_request(ctx.request, 200, to_tag=new_tag()))
        net.bob.on_request = on_request
        msg = Request("MESSAGE", net.bob_uri, [
            ("From", f"<sip:alice@example.com>;tag={new_tag()}"), ("To", f"<{net.bob_uri}>"),
            ("Call-ID", new_tag()), ("CSeq", "1 MESSAGE"), ("Content-Type", "text/plain")],
            b"hello")
        response = await net.endpoints[0].request(msg).final()
        assert response.status == 200 and got == [b"hello"]
    run(scenario)
