"""Group chat clients through the real core and the real conference AS (focus).

alice creates an ad-hoc group with bob and carol (factory INVITE with the
recipient list), the focus invites them (A.5.2) and their clients accept;
every message reaches the others with its sender in CPIM From and is not
echoed; delivery notifications come back from each recipient; dave joins by
the conference URI (A.5.1); members of a pre-defined group join it by its
URI, others get 403; an unknown conference is 404; leaving is BYE.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from imsbox.apps.conference import ConferenceSettings
from imsbox.config import Config
from imsbox.content import parse_resource_lists
from imsbox.ims.provisioning import add_group, add_user
from imsbox.rcs.offer import offer_parts
from imsbox.sip.endpoint import Priority, ServerContext
from imsbox.sip.message import Request
from imsbox.store import open_store
from imsbox.ue.client import (
    Composing,
    GroupChat,
    GroupJoined,
    GroupLeft,
    GroupMessage,
    MessageStatus,
    Notification,
    ParticipantJoined,
    ParticipantLeft,
    RcsClient,
    RcsEvent,
    SendError,
)
from imsbox.testing import write_loopback_config
from imsbox.ue.events import GroupSubject

from helpers import DOMAIN, client, network_with, settle
from test_ue_cli import Proc, ue, ue_args

pytestmark = pytest.mark.timeout(60)
WAIT = 5.0
GROUP = f"sip:group-team@{DOMAIN}"
NAMES = ("alice", "bob", "carol", "dave", "eve")
E = TypeVar("E", bound=RcsEvent)


def run(tmp_path: Path, scenario: Callable[[Config], Awaitable[None]]) -> None:
    """The default configuration (the messaging AS's iFCs included), five users and
    the pre-defined group team (alice, bob, carol)."""
    _, config = write_loopback_config(tmp_path)

    async def provision() -> None:
        async with open_store(config.store_location) as store:
            for name in NAMES:
                await add_user(store, DOMAIN, name, f"{name}-secret")
            await add_group(store, config, GROUP, ["alice", "bob", "carol"])
    asyncio.run(provision())
    asyncio.run(asyncio.wait_for(scenario(config), 45))


class Events:
    """Every event of each client, kept (wait_event would drop the others)."""

    def __init__(self, *clients: RcsClient) -> None:
        self.seen: dict[str, list[RcsEvent]] = {ue.aor: [] for ue in clients}
        self.tasks = [asyncio.ensure_future(self._take(ue)) for ue in clients]

    async def _take(self, ue: RcsClient) -> None:
        async for event in ue.events():
            self.seen[ue.aor].append(event)

    def of(self, ue: RcsClient, kind: type[E]) -> list[E]:
        return [e for e in self.seen[ue.aor] if isinstance(e, kind)]

    async def wait(self, ue: RcsClient, kind: type[E],
                   match: Callable[[E], bool] = lambda e: True) -> E:
        await settle(lambda: any(match(e) for e in self.of(ue, kind)), WAIT)
        return next(e for e in self.of(ue, kind) if match(e))

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()


def test_adhoc_group_invitations_messages_join_and_leave(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        alice, bob, dave = (client(config, n) for n in ("alice", "bob", "dave"))
        carol = client(config, "carol", report_all_notifications=True)  # as listen is
        async with network_with(config, alice, bob, carol, dave) as net:
            events = Events(alice, bob, carol, dave)
            try:
                group = await alice.create_group(["bob", "carol"], "Lunch")
                assert group.conference.startswith("sip:conf-") and \
                    group.conference.endswith(f"@{DOMAIN}")
                joined: dict[str, GroupChat] = {}
                for ue in (bob, carol):
                    invited = await events.wait(ue, GroupJoined)
                    assert (invited.how, invited.sender, invited.conference) == \
                        ("invited", alice.aor, group.conference)
                    assert invited.subject == "Lunch"
                    (joined[ue.aor],) = ue.groups.values()
                # the conference event package: alice sees them come in (in her first
                # conference-info if they were quicker than her SUBSCRIBE, else later)
                await settle(lambda: set(group.participants) == {alice.aor, bob.aor, carol.aor},
                             WAIT)
                first = events.of(alice, GroupJoined)[0]
                came = {e.sender for e in events.of(alice, ParticipantJoined)}
                assert set(first.participants) | came == {alice.aor, bob.aor, carol.aor}

                # bob types: alice sees who (isComposing in CPIM, From bob)
                await joined[bob.aor].composing()
                typing = await events.wait(alice, Composing)
                assert (typing.sender, typing.state, typing.chat_id) == \
                    (bob.aor, "active", group.id)
                # bob's message: to alice and carol, from bob, not back to bob
                message_id = await joined[bob.aor].send("pizza?")
                for ue in (alice, carol):
                    got = await events.wait(ue, GroupMessage)
                    assert (got.sender, got.text, got.message_id, got.conference) == \
                        (bob.aor, "pizza?", message_id, group.conference)
                await settle(lambda: len(events.of(bob, Notification)) >= 2, WAIT)
                assert {e.sender for e in events.of(bob, Notification)} == {alice.aor, carol.aor}
                assert bob.status(message_id) is MessageStatus.DELIVERED
                # alice's notification to bob is not carol's to report, even in listen
                assert not events.of(carol, Notification)
                assert not events.of(bob, GroupMessage)

                # dave joins by the conference URI (A.5.1) and hears the next one
                daves = await dave.join_group(group.conference)
                assert daves.conference == group.conference
                seen = await events.wait(dave, GroupJoined)
                assert {alice.aor, bob.aor, carol.aor, dave.aor} <= set(seen.participants)
                await events.wait(alice, ParticipantJoined, lambda e: e.sender == dave.aor)
                await group.send("welcome")
                got = await events.wait(dave, GroupMessage)
                assert got.sender == alice.aor

                # carol leaves (BYE); the others go on
                await joined[carol.aor].leave()
                left = await events.wait(carol, GroupLeft)
                assert left.conference == group.conference
                legs = net.nodes["conference"].foci[group.conference].legs
                await settle(lambda: carol.aor not in legs, WAIT)   # the BYE got there
                assert sorted(legs) == sorted([alice.aor, bob.aor, dave.aor])
                gone = await events.wait(alice, ParticipantLeft, lambda e: e.sender == carol.aor)
                assert gone.reason == "departed"
                await joined[bob.aor].send("bye carol")
                await events.wait(dave, GroupMessage, lambda e: e.text == "bye carol")
                await asyncio.sleep(0.2)
                assert [e.text for e in events.of(carol, GroupMessage)] == ["pizza?", "welcome"]
            finally:
                events.close()

    run(tmp_path, scenario)


def test_predefined_group_members_join_others_403_unknown_404(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        alice, bob, eve = (client(config, n) for n in ("alice", "bob", "eve"))
        async with network_with(config, alice, bob, eve):
            events = Events(alice, bob)
            try:
                team = await alice.join_group(GROUP)
                assert team.conference == GROUP
                await bob.join_group(GROUP)
                await team.send("stand-up in 5")
                got = await events.wait(bob, GroupMessage)
                assert (got.sender, got.conference) == (alice.aor, GROUP)
                with pytest.raises(SendError) as outsider:
                    await eve.join_group(GROUP)
                assert outsider.value.status == 403
                with pytest.raises(SendError) as unknown:
                    await eve.join_group(f"sip:conf-nope@{DOMAIN}")
                assert unknown.value.status == 404
            finally:
                events.close()

    run(tmp_path, scenario)



def test_rejoin_the_same_conference_then_restart_once_it_ended(tmp_path: Path) -> None:
    """bob leaves and rejoins (same Conversation-ID / Contribution-ID, same
    conference); once nobody is left and the idle time passed, the URI is gone
    (404) and alice's rejoin restarts the group: a new conference, the same
    Conversation-ID, bob invited again."""
    async def scenario(config: Config) -> None:
        alice, bob = client(config, "alice"), client(config, "bob")
        async with network_with(config, alice, bob) as net:
            net.nodes["conference"].settings = ConferenceSettings(idle_timeout=0.2,
                                                                  max_wakeup=0.1)
            events = Events(alice, bob)
            try:
                group = await alice.create_group(["bob"], "Lunch")
                await events.wait(bob, GroupJoined)
                (bobs,) = bob.groups.values()
                assert bobs.conversation_id == group.conversation_id
                await bobs.leave()
                again = await bob.rejoin_group(bobs)
                assert (again.conference, again.conversation_id, again.contribution_id) == \
                    (group.conference, group.conversation_id, group.contribution_id)
                await again.send("back")
                got = await events.wait(alice, GroupMessage)
                assert got.text == "back"

                await again.leave()
                await group.leave()
                with pytest.raises(SendError) as ended:
                    for _ in range(10):   # until the focus has ended it (idle time)
                        await asyncio.sleep(0.5)  # a probe that gets in keeps it alive
                        probe = await bob.join_group(group.conference)
                        await probe.leave()
                assert ended.value.status == 404
                restarted = await alice.rejoin_group(group)
                assert restarted.conference != group.conference
                assert restarted.conversation_id == group.conversation_id
                assert restarted.contribution_id == group.contribution_id
                invited = await events.wait(bob, GroupJoined,
                                            lambda e: e.conference == restarted.conference)
                assert invited.how == "invited" and invited.conversation_id == \
                    group.conversation_id
            finally:
                events.close()

    run(tmp_path, scenario)



def test_invite_and_remove_by_refer_through_the_focus(tmp_path: Path) -> None:
    """alice (the creator) REFERs dave in: 202, NOTIFY sipfrag 200, dave invited
    with Referred-By alice; bob may not remove him (403), alice may: dave is out,
    reported booted; bob leaving by BYE is reported departed."""
    async def scenario(config: Config) -> None:
        alice, bob, dave = (client(config, n) for n in ("alice", "bob", "dave"))
        async with network_with(config, alice, bob, dave):
            events = Events(alice, bob, dave)
            try:
                group = await alice.create_group(["bob"])
                await events.wait(bob, GroupJoined)
                (bobs,) = bob.groups.values()
                added = await group.invite(dave.aor)
                assert (added.status, added.result, added.ok) == (202, 200, True)
                invited = await events.wait(dave, GroupJoined)
                assert (invited.how, invited.sender) == ("invited", alice.aor)
                await events.wait(bob, ParticipantJoined, lambda e: e.sender == dave.aor)

                with pytest.raises(SendError) as refused:
                    await bobs.remove(dave.aor)
                assert refused.value.status == 403
                removed = await group.remove(dave.aor)
                assert (removed.action, removed.status, removed.ok) == ("remove", 202, True)
                out = await events.wait(dave, GroupLeft)
                assert out.conference == group.conference
                # RFC 4575 disconnection-method: removed is booted, a BYE departed
                booted = await events.wait(bob, ParticipantLeft, lambda e: e.sender == dave.aor)
                assert booted.reason == "booted"
                await group.send("just us")
                await events.wait(bob, GroupMessage, lambda e: e.text == "just us")
                assert not [e for e in events.of(dave, GroupMessage) if e.text == "just us"]
                await bobs.leave()
                left = await events.wait(alice, ParticipantLeft, lambda e: e.sender == bob.aor)
                assert left.reason == "departed"
            finally:
                events.close()

    run(tmp_path, scenario)



def test_offline_member_catches_up_when_its_client_registers(tmp_path: Path) -> None:
    """bob, a member of the pre-defined group, is offline while alice sends; when his
    client (accept_groups) registers, the focus invites him back: he joins and gets
    every missed message once, in order, from alice; his display notification
    reaches alice through the focus."""
    async def scenario(config: Config) -> None:
        alice, carol = client(config, "alice"), client(config, "carol")
        bob = client(config, "bob", accept_groups=True)
        async with network_with(config, alice, carol):
            events = Events(alice, carol)
            try:
                team = await alice.join_group(GROUP)
                await carol.join_group(GROUP)
                texts = [f"missed {i}" for i in range(3)]
                sent = [await team.send(text) for text in texts]
                await settle(lambda: [e.text for e in events.of(carol, GroupMessage)]
                             == texts, WAIT)
                await bob.start()
                bobs = Events(bob)
                try:
                    joined = await bobs.wait(bob, GroupJoined)
                    assert (joined.conference, joined.how) == (GROUP, "invited")
                    await settle(lambda: len(bobs.of(bob, GroupMessage)) >= 3, WAIT)
                    await asyncio.sleep(0.5)  # nothing comes twice
                    got = bobs.of(bob, GroupMessage)
                    assert [e.text for e in got] == texts
                    assert {(e.sender, e.conference) for e in got} == {(alice.aor, GROUP)}
                    assert [e.message_id for e in got] == sent
                    assert await bob.mark_displayed(sent[0])
                    assert await alice.wait_status(sent[0], MessageStatus.DISPLAYED,
                                                   timeout=WAIT) is MessageStatus.DISPLAYED
                finally:
                    bobs.close()
                    await bob.close()
            finally:
                events.close()

    run(tmp_path, scenario)


def test_subject_change_reaches_the_others_as_group_subject(tmp_path: Path) -> None:
    """alice's UPDATE with a new Subject: the focus's partial notification carries
    it, bob's client emits group_subject with it."""
    async def scenario(config: Config) -> None:
        alice, bob = (client(config, n) for n in ("alice", "bob"))
        async with network_with(config, alice, bob):
            events = Events(alice, bob)
            try:
                group = await alice.create_group(["bob"], "Lunch")
                joined = await events.wait(bob, GroupJoined)
                assert joined.subject == "Lunch"
                (bobs,) = bob.groups.values()
                await bobs.joined.wait()
                await group.set_subject("Dinner")
                changed = await events.wait(bob, GroupSubject)
                assert (changed.subject, changed.conference) == ("Dinner", group.conference)
                assert changed.to_json()["event"] == "group_subject"
                assert bobs.subject == "Dinner"
                assert not events.of(bob, GroupSubject)[1:]
            finally:
                events.close()

    run(tmp_path, scenario)


class Arrivals:
    """An endpoint module that notes every request reaching the focus, then passes."""

    name = "test-arrivals"
    priority = Priority.POLICY
    methods: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def on_request(self, ctx: ServerContext) -> bool:
        self.requests.append(ctx.request)
        return False

    def of(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]


def test_client_requests_as_the_focus_gets_them(tmp_path: Path) -> None:
    """The wire of the client's requests at the conference AS: the factory INVITE
    (RFC 5366 multipart, Require, Subject, CPM headers, asserted identity), the
    SUBSCRIBE to the conference, the in-dialog REFERs."""
    async def scenario(config: Config) -> None:
        alice, bob = client(config, "alice"), client(config, "bob")
        async with network_with(config, alice, bob) as net:
            arrivals = Arrivals()
            net.nodes["conference"].endpoint.add_module(arrivals)
            group = await alice.create_group(["bob", "sip:carol@ims.test"], "Lunch")
            (create,) = arrivals.of("INVITE")
            assert str(create.uri) == f"sip:conf-factory@{DOMAIN}"
            assert create.header("Require") == "recipient-list-invite"
            assert create.header("Subject") == "Lunch"
            assert "oma.cpm.session" in (create.header("Accept-Contact") or "")
            assert create.header("Conversation-ID") == group.conversation_id
            assert create.header("Contribution-ID") == group.contribution_id
            assert alice.aor in (create.header("P-Asserted-Identity") or "")
            _, multipart = offer_parts(create)
            assert multipart is not None
            assert [p.content_type for p in multipart.parts] == \
                ["application/sdp", "application/resource-lists+xml"]
            listing = multipart.parts[1]
            assert listing.get("Content-Disposition") == "recipient-list"
            assert [e.uri for e in parse_resource_lists(listing.body).all_entries()] == \
                [bob.aor, "sip:carol@ims.test"]

            await settle(lambda: bool(arrivals.of("SUBSCRIBE")), WAIT)
            subscribe = arrivals.of("SUBSCRIBE")[0]
            assert str(subscribe.uri) == group.conference and not subscribe.to.tag
            assert subscribe.header("Event") == "conference"
            assert subscribe.header("Accept") == "application/conference-info+xml"

            await group.invite("sip:dave@ims.test")   # not registered: the REFER counts
            await group.remove(bob.aor)
            add, remove = arrivals.of("REFER")
            dialog = group.call.session.dialog
            assert dialog is not None
            for refer in (add, remove):
                assert str(refer.uri) == group.conference
                assert refer.call_id == group.id and refer.to.tag == dialog.id.remote_tag
                assert refer.header("Referred-By") == f"<{alice.aor}>"
            assert add.header("Refer-To") == "<sip:dave@ims.test>"
            assert remove.header("Refer-To") == f"<{bob.aor};method=BYE>"

    run(tmp_path, scenario)


# -- the CLI as a user runs it: imsbox serve, two listen, one group-chat ----------------

@pytest.fixture
def served(tmp_path: Path) -> Iterator[Config]:
    """``imsbox serve`` (core, messaging AS, conference AS) with the users and the team."""
    path, config = write_loopback_config(tmp_path)

    async def provision() -> None:
        async with open_store(config.store_location) as store:
            for name in NAMES:
                await add_user(store, DOMAIN, name, f"{name}-secret")
            await add_group(store, config, GROUP, ["alice", "bob", "carol"])
    asyncio.run(provision())
    serve = Proc("serve", "--config", str(path))
    try:
        serve.wait_line(lambda line: "pcscf listening on udp" in line, 15)
        yield config
    finally:
        assert serve.stop() == 0, serve.stderr


def test_cli_group_chat_with_two_listeners(served: Config) -> None:
    """bob and carol ``listen``; alice's ``group-chat --subject Lunch bob carol`` starts
    the group, their listen accepts the invitations and she sees them join; her line
    reaches both from her, with a delivery notification from each; /remove carol
    puts carol out, /invite carol brings her back; /leave exits 0."""
    config = served
    listeners = [Proc(*ue_args(config, n), "listen") for n in ("bob", "carol")]
    alice: Proc | None = None
    try:
        for listen in listeners:
            listen.wait_event("listening", 15)
        alice = Proc(*ue_args(config, "alice"), "group-chat", "--subject", "Lunch", "bob",
                     "carol", stdin=subprocess.PIPE)
        joined = alice.wait_event("group_joined", 15)
        conference = joined["conference"]
        assert conference.startswith("sip:conf-")
        assert (joined["to"], joined["how"], joined["subject"]) == \
            ("sip:alice@ims.test", "created", "Lunch")
        for listen, name in zip(listeners, ("bob", "carol"), strict=True):
            invited = listen.wait_event("group_joined", 15)
            assert (invited["from"], invited["to"], invited["how"], invited["conference"]) == \
                ("sip:alice@ims.test", f"sip:{name}@ims.test", "invited", conference)
        present = set(joined["participants"])   # or they come in after her
        while not {"sip:bob@ims.test", "sip:carol@ims.test"} <= present:
            present.add(alice.wait_event("participant_joined")["from"])

        alice.type("hello group")
        for listen in listeners:
            message = listen.wait_event("group_message")
            assert (message["from"], message["text"], message["conference"]) == \
                ("sip:alice@ims.test", "hello group", conference)
        delivered = {alice.wait_event("notification")["from"] for _ in range(2)}
        assert delivered == {"sip:bob@ims.test", "sip:carol@ims.test"}

        bob, carol = listeners
        alice.type("/remove carol")
        removed = alice.wait_event("refer_result", 15)
        assert (removed["action"], removed["to"], removed["status"], removed["ok"]) == \
            ("remove", "sip:carol@ims.test", 202, True)
        assert carol.wait_event("group_left", 15)["conference"] == conference
        assert bob.wait_event("participant_left", 15)["from"] == "sip:carol@ims.test"
        alice.type("/invite carol")
        again = carol.wait_event("group_joined", 15)
        assert (again["how"], again["conference"]) == ("invited", conference)
        added = alice.wait_event("refer_result", 15)
        assert (added["action"], added["status"], added["result"], added["ok"]) == \
            ("invite", 202, 200, True)
        alice.type("/leave")
        assert alice.proc.wait(15) == 0, alice.stderr
        assert alice.wait_event("group_left")["conference"] == conference
    finally:
        if alice is not None:
            alice.stop()
        for listen in listeners:
            assert listen.stop(signal.SIGINT) == 0, listen.stderr


def test_cli_group_chat_refusals_say_what_happened(served: Config) -> None:
    unknown = ue(served, "alice", "group-chat", "--join", "sip:conf-nope@ims.test")
    assert unknown.returncode == 1, (unknown.stdout, unknown.stderr)
    assert "cannot join sip:conf-nope@ims.test: no such conference or group (404)" in \
        unknown.stderr
    outsider = ue(served, "eve", "group-chat", "--join", GROUP)
    assert outsider.returncode == 1, (outsider.stdout, outsider.stderr)
    assert f"cannot join {GROUP}: not a member of that group (403)" in outsider.stderr
    usage = ue(served, "alice", "group-chat")
    assert usage.returncode == 2 and "needs MEMBERs" in usage.stderr
