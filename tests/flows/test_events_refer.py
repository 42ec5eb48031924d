"""SUBSCRIBE/NOTIFY and REFER between two UserAgents over real loopback UDP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from imsbox.sip import Request, parse
from imsbox.sip.endpoint import SipEndpoint
from imsbox.sip.transaction import TimerValues
from imsbox.sip.ua.events import (
    EventPackage, EventPackageRegistry, NotifierSubscription, SubscriberState,
)
from imsbox.sip.ua.invite import InviteConfig
from imsbox.sip.ua.refer import EventAgent, IncomingRefer, ReferState
from imsbox.sip.ua.useragent import Call, UserAgent

from helpers import settle

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"
FAST = TimerValues(t1=0.02, t2=0.1, t4=0.1)  # Timer N = 1.28 s
CONFIG = InviteConfig(t1=0.02, t2=0.1)
OFFER = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
PRESENCE = EventPackage("presence", "application/pidf+xml", default_expires=600)


class Net:
    """Alice and Bob: endpoint + UserAgent + EventAgent each; one ladder."""

    def __init__(self) -> None:
        self.ladder: list[tuple[str, str]] = []
        self.endpoints: list[SipEndpoint] = []
        self.agents: dict[str, EventAgent] = {}
        self.uas: dict[str, UserAgent] = {}
        self.uris: dict[str, str] = {}
        self.presence = "<open/>"
        self.created: list[NotifierSubscription] = []

    async def start(self) -> None:
        for name in ("alice", "bob"):
            ep = SipEndpoint(timers=FAST)
            _, port = await ep.listen("udp", HOST, 0)
            ep.transport.trace = self._recorder(name)
            self.endpoints.append(ep)
            self.uris[name] = f"sip:{name}@{HOST}:{port}"
            ua = UserAgent(ep, f"<sip:{name}@example.com>", self.uris[name], config=CONFIG)
            self.uas[name] = ua
            self.agents[name] = EventAgent(
                ua, EventPackageRegistry([PRESENCE]), state_of=lambda sub: self.presence,
                on_subscription=self.created.append)

    def _recorder(self, name: str) -> Callable[[str, bytes, object], None]:
        def record(direction: str, data: bytes, flow: object) -> None:
            if direction != "out":
                return
            message = parse(data)
            if isinstance(message, Request):
                label = message.method
                if message.method == "NOTIFY":
                    label += f" {message.headers.get('Subscription-State', '').split(';')[0]}"
                    if message.body.startswith(b"SIP/2.0"):
                        label += " " + message.body.decode().split("\r\n")[0][8:]
                self.ladder.append((name, label))
            elif message.status != 100:
                self.ladder.append((name, f"{message.status} {message.cseq.method}"))
        return record

    async def close(self) -> None:
        for agent in self.agents.values():
            agent.close()
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


def test_subscribe_notify_refresh_and_unsubscribe() -> None:
    async def scenario(net: Net) -> None:
        alice, bob = net.agents["alice"], net.agents["bob"]
        watch = alice.subscribe(net.uris["bob"], "presence", expires=2)
        first = await watch.next_notification(2)
        assert first.body == b"<open/>" and first.state.state == "active"
        assert watch.subscription.state is SubscriberState.ACTIVE
        # refresh at expiry - min(2/2, 64*T1) = 1 s after the NOTIFY
        refreshed = await watch.next_notification(3)
        assert refreshed.state.expires == 2
        [nsub] = bob.notifier.subscriptions
        assert net.created == [nsub]
        net.presence = "<closed/>"
        bob.notify(nsub)
        change = await watch.next_notification(2)
        assert change.body == b"<closed/>"
        ended = await alice.unsubscribe(watch, 2)
        assert ended.reason == "timeout" and watch.subscription.terminated
        await settle(lambda: ("alice", "200 NOTIFY") in net.ladder[-1:])
        assert net.ladder == [
            ("alice", "SUBSCRIBE"), ("bob", "200 SUBSCRIBE"), ("bob", "NOTIFY active"),
            ("alice", "200 NOTIFY"),
            ("alice", "SUBSCRIBE"), ("bob", "200 SUBSCRIBE"), ("bob", "NOTIFY active"),
            ("alice", "200 NOTIFY"),
            ("bob", "NOTIFY active"), ("alice", "200 NOTIFY"),
            ("alice", "SUBSCRIBE"), ("bob", "200 SUBSCRIBE"), ("bob", "NOTIFY terminated"),
            ("alice", "200 NOTIFY"),
        ]
        assert bob.notifier.subscriptions == [] and alice.subscriber.subscriptions == []
    run(scenario)


def test_subscribe_to_unknown_package_gets_489() -> None:
    async def scenario(net: Net) -> None:
        watch = net.agents["alice"].subscribe(net.uris["bob"], "conference")
        ended = await asyncio.wait_for(asyncio.shield(watch.terminated), 2)
        assert ended.response is not None and ended.response.status == 489
        assert ended.response.headers.get("Allow-Events") == "presence, refer"
    run(scenario)


async def _call(net: Net) -> tuple[Call, Call]:
    call = await net.uas["alice"].invite(net.uris["bob"], OFFER)
    incoming = await net.uas["bob"].incoming.get()
    incoming.accept(OFFER)
    final = await call.wait_final()
    assert final is not None and final.status == 200
    await asyncio.wait_for(incoming.established.wait(), 2)
    return call, incoming


def test_refer_in_call_reports_trying_then_ok() -> None:
    async def scenario(net: Net) -> None:
        call, _ = await _call(net)
        alice, bob = net.agents["alice"], net.agents["bob"]
        watch = alice.refer(call, "sip:carol@example.com", referred_by="<sip:alice@example.com>")
        answered = await asyncio.wait_for(asyncio.shield(watch.answered), 2)
        assert answered.status == 202
        incoming: IncomingRefer = await asyncio.wait_for(bob.refers.get(), 2)
        assert str(incoming.target) == "sip:carol@example.com"
        assert incoming.dialog is net.uas["bob"].dialogs.match_request(incoming.request)
        trying = await asyncio.wait_for(watch.progress.get(), 2)
        assert (trying.status, trying.final) == (100, False)
        bob.report(incoming, 200)
        done = await asyncio.wait_for(asyncio.shield(watch.done), 2)
        assert done is not None and (done.status, done.final) == (200, True)
        assert watch.referral.state is ReferState.SUCCEEDED
        await settle(lambda: net.ladder.count(("alice", "200 NOTIFY")) == 2)
        assert net.ladder[-6:] == [
            ("alice", "REFER"), ("bob", "202 REFER"), ("bob", "NOTIFY active 100 Trying"),
            ("alice", "200 NOTIFY"), ("bob", "NOTIFY terminated 200 OK"), ("alice", "200 NOTIFY"),
        ]
        # the call is untouched by the transfer's subscription ending
        await call.bye()
    run(scenario)
