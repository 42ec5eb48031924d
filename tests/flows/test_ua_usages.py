"""Dialog usages over real loopback UDP: REFER's subscription as a usage of a
call's dialog, Replaces lookups on live calls, and the dialog event package
(RFC 4235) served from the UA's table."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from helpers import settle

from imsbox.content.dialog_info import DialogState as InfoState
from imsbox.content.dialog_info import Direction, parse_dialog_info
from imsbox.sip.endpoint import SipEndpoint
from imsbox.sip.headers import Replaces
from imsbox.sip.transaction import TimerValues
from imsbox.sip.ua.dialog import UsageKind
from imsbox.sip.ua.dialog_event import (
    DIALOG_INFO_TYPE,
    DIALOG_PACKAGE,
    DialogEventSource,
)
from imsbox.sip.ua.events import EventPackageRegistry
from imsbox.sip.ua.invite import InviteConfig, StaticOfferAnswer
from imsbox.sip.ua.refer import EventAgent
from imsbox.sip.ua.useragent import Call, UserAgent

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"
FAST = TimerValues(t1=0.02, t2=0.1, t4=0.1)
CONFIG = InviteConfig(t1=0.02, t2=0.1, session_timer=None)
OFFER = b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


class Party:
    def __init__(self, name: str) -> None:
        self.name = name
        self.endpoint = SipEndpoint(FAST)
        self.uri = ""
        self.ua: UserAgent
        self.agent: EventAgent

    async def start(self) -> None:
        _, port = await self.endpoint.listen("udp", HOST, 0)
        self.uri = f"sip:{self.name}@{HOST}:{port}"
        self.ua = UserAgent(self.endpoint, f"<sip:{self.name}@example.com>", self.uri,
                            config=CONFIG, offer_answer=lambda: StaticOfferAnswer(OFFER))
        self.agent = EventAgent(self.ua, EventPackageRegistry([DIALOG_PACKAGE]),
                                state_of=DialogEventSource(self.ua.dialogs))

    async def close(self) -> None:
        self.agent.close()
        await self.ua.close()
        await self.endpoint.close()


Scenario = Callable[[Party, Party, Party], Awaitable[None]]


def run(scenario: Scenario) -> None:
    async def main() -> None:
        parties = [Party(n) for n in ("alice", "bob", "carol")]
        try:
            for party in parties:
                await party.start()
            await asyncio.wait_for(scenario(*parties), 10)
        finally:
            for party in parties:
                await party.close()
    asyncio.run(main())


async def call(caller: Party, callee: Party, answer: bool = True) -> tuple[Call, Call]:
    # To is the callee's AOR, as a core delivers it: the identity dialog-info lists
    out = await caller.ua.invite(callee.uri, OFFER, to=f"<sip:{callee.name}@example.com>")
    incoming = await callee.ua.incoming.get()
    incoming.ring(reliable=False)
    await asyncio.wait_for(out.ringing.wait(), 2)
    if answer:
        incoming.accept()
        assert (await out.wait_final()) is not None
        await asyncio.wait_for(incoming.established.wait(), 2)
    return out, incoming


def kinds(ua: UserAgent) -> list[list[UsageKind]]:
    return [[u.usage_kind for u in d.usages] for d in ua.dialogs]


def test_refer_in_a_call_is_a_usage_of_its_dialog_until_it_ends() -> None:
    async def scenario(alice: Party, bob: Party, carol: Party) -> None:
        out, incoming = await call(alice, bob)
        watch = alice.agent.refer(out, "sip:carol@example.com")
        refer = await asyncio.wait_for(bob.agent.refers.get(), 2)
        await asyncio.wait_for(watch.answered, 2)
        await settle(lambda: kinds(alice.ua) == [[UsageKind.INVITE, UsageKind.REFER]])
        assert kinds(bob.ua) == [[UsageKind.INVITE, UsageKind.REFER]]
        assert refer.dialog is incoming.session.dialog
        bob.agent.report(refer, 200)
        await asyncio.wait_for(watch.done, 2)
        await settle(lambda: kinds(alice.ua) == [[UsageKind.INVITE]]
                     and kinds(bob.ua) == [[UsageKind.INVITE]])
        await out.bye()
        await settle(lambda: len(alice.ua.dialogs) == 0 and len(bob.ua.dialogs) == 0)
    run(scenario)


def test_the_invite_usage_ending_first_leaves_the_refer_usage_its_dialog() -> None:
    async def scenario(alice: Party, bob: Party, carol: Party) -> None:
        out, _ = await call(alice, bob)
        alice.agent.refer(out, "sip:carol@example.com")
        refer = await asyncio.wait_for(bob.agent.refers.get(), 2)
        await out.bye()
        await settle(lambda: kinds(bob.ua) == [[UsageKind.REFER]])
        assert bob.ua.call_for(Replaces(out.call_id, refer.dialog.id.local_tag,
                                        refer.dialog.id.remote_tag)) is None
        bob.agent.report(refer, 200)   # the NOTIFY still goes out in that dialog
        await settle(lambda: len(bob.ua.dialogs) == 0)
    run(scenario)


def test_replaces_finds_the_live_call_early_only_only_while_early() -> None:
    async def scenario(alice: Party, bob: Party, carol: Party) -> None:
        out, incoming = await call(alice, bob, answer=False)
        dialog = out.session.dialog or next(iter(out.session.early.values()))
        ours, theirs = dialog.id.local_tag, dialog.id.remote_tag
        # alice initiated the early dialog: pickup may replace it (RFC 3891 3)
        assert alice.ua.call_for(Replaces(out.call_id, ours, theirs, early_only=True)) is out
        assert bob.ua.call_for(Replaces(out.call_id, theirs, ours)) is None   # bob answers it
        incoming.accept()
        await asyncio.wait_for(incoming.established.wait(), 2)
        assert alice.ua.call_for(Replaces(out.call_id, ours, theirs, early_only=True)) is None
        assert alice.ua.call_for(Replaces(out.call_id, ours, theirs)) is out
        assert bob.ua.call_for(Replaces(out.call_id, theirs, ours)) is incoming
        assert bob.ua.call_for(Replaces(out.call_id, ours, theirs)) is None   # tags swapped
        await out.bye()
    run(scenario)


def test_dialog_event_notify_bodies_come_from_the_dialog_table() -> None:
    async def scenario(alice: Party, bob: Party, carol: Party) -> None:
        watch = carol.agent.subscribe(bob.uri, "dialog", to="<sip:bob@example.com>",
                                      accept=[DIALOG_INFO_TYPE])
        first = await watch.next_notification(2)
        assert first.request.content_type is not None
        assert parse_dialog_info(first.body).dialogs == []
        out, incoming = await call(alice, bob, answer=False)
        [sub] = bob.agent.notifier.subscriptions
        bob.agent.notify(sub)
        ringing = parse_dialog_info((await watch.next_notification(2)).body)
        [entry] = ringing.dialogs
        assert ringing.version == 1 and ringing.entity == "sip:bob@example.com"
        assert entry.call_id == out.call_id and entry.state is InfoState.EARLY
        assert entry.local_tag == incoming.session.dialog.id.local_tag  # type: ignore[union-attr]
        assert entry.remote_tag == out.request.from_.tag
        assert entry.direction is Direction.RECIPIENT
        incoming.accept()
        await asyncio.wait_for(incoming.established.wait(), 2)
        bob.agent.notify(sub)
        confirmed = parse_dialog_info((await watch.next_notification(2)).body)
        assert confirmed.version == 2 and confirmed.dialogs[0].state is InfoState.CONFIRMED
        await out.bye()
        # the call's dialog goes; the subscription's own dialog stays in the table
        await settle(lambda: [d.id for d in bob.ua.dialogs] == [sub.dialog.id])
        bob.agent.notify(sub)
        assert parse_dialog_info((await watch.next_notification(2)).body).dialogs == []
        await carol.agent.unsubscribe(watch, 2)
    run(scenario)


def test_a_subscribe_created_dialog_is_in_the_ua_table_until_the_final_notify() -> None:
    async def scenario(alice: Party, bob: Party, carol: Party) -> None:
        watch = carol.agent.subscribe(bob.uri, "dialog", to="<sip:bob@example.com>")
        await watch.next_notification(2)
        did = watch.subscription.dialog.id  # type: ignore[union-attr]
        mine = carol.ua.dialogs.find(did.call_id, did.local_tag, did.remote_tag)
        theirs = bob.ua.dialogs.find(did.call_id, did.remote_tag, did.local_tag)
        assert mine is watch.subscription.dialog and theirs is not None
        assert kinds(carol.ua) == kinds(bob.ua) == [[UsageKind.SUBSCRIPTION]]
        [sub] = bob.agent.notifier.subscriptions
        assert sub.dialog is theirs
        bob.agent.terminate(sub)           # NOTIFY terminated;reason=noresource
        ended = await asyncio.wait_for(asyncio.shield(watch.terminated), 2)
        assert ended.reason == "noresource"
        assert len(bob.ua.dialogs) == 0 and len(carol.ua.dialogs) == 0
        assert mine.terminated and theirs.terminated
        # the dialog is gone: a request in it is answered 481 (RFC 5057 5.1)
        assert bob.ua.dialogs.find(did.call_id, did.remote_tag, did.local_tag) is None
    run(scenario)


def test_an_out_of_dialog_refer_creates_a_dialog_in_both_tables() -> None:
    async def scenario(alice: Party, bob: Party, carol: Party) -> None:
        origin = alice.ua.origin
        referral = alice.agent.issuer.refer_out_of_dialog(
            bob.uri, origin.local, "<sip:bob@example.com>", origin.contact,
            "sip:carol@example.com", alice.agent._now())
        alice.agent._drain()
        refer = await asyncio.wait_for(bob.agent.refers.get(), 2)
        await settle(lambda: kinds(alice.ua) == [[UsageKind.REFER]])
        assert kinds(bob.ua) == [[UsageKind.REFER]]
        did = refer.dialog.id
        assert bob.ua.dialogs.find(did.call_id, did.local_tag, did.remote_tag) is refer.dialog
        assert referral.subscription is not None
        bob.agent.report(refer, 200)
        await settle(lambda: len(alice.ua.dialogs) == 0 and len(bob.ua.dialogs) == 0)
    run(scenario)
