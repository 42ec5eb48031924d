"""Ad-hoc group chat through the real core with raw SIP + MSRP participants:
the factory INVITE with a recipient list (RFC 5366, seed 003), the focus's
invitations along A.5.2 (AS -> I-CSCF -> S-CSCF -> P-CSCF -> UE) with the seed's
key headers, and the MSRP switch (CPIM From = sender, To = conference)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from imsbox.config import ConferenceConfig, Config
from imsbox.content import (
    CPIM, IMDN_NS, CpimAddress, DispositionType, ImdnStatus, build_cpim, imdn_reply,
    parse_cpim, parse_imdn,
)
from imsbox.content.resource_lists import build_recipient_list
from imsbox.ims.provisioning import add_group, add_user
from imsbox.msrp import MsrpEndpoint, MsrpStatusError
from imsbox.msrp import Setup as MsrpSetup
from imsbox.serve import Network
from imsbox.sip.message import Response
from imsbox.sip.ua.dialog import build_request
from imsbox.sip.ua.events import EventPackageRegistry
from imsbox.sip.ua.refer import EventAgent
from imsbox.store import open_store
from imsbox.apps.conference_events import CONFERENCE_PACKAGE
from imsbox.content.conference_info import ElementState, parse_conference_info
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config

from conference_peers import FACTORY, answer, create, established, join, remote_path
from helpers import DOMAIN, ues

pytestmark = pytest.mark.timeout(40)
ALICE, BOB, CAROL, DAVE = (f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol", "dave"))


def run(tmp_path: Path, scenario: Callable[[Config], Awaitable[None]]) -> None:
    _, config = write_loopback_config(tmp_path)

    async def provision() -> None:
        async with open_store(config.store_location) as store:
            for name in ("alice", "bob", "carol", "dave", "eve"):
                await add_user(store, DOMAIN, name, f"{name}-secret")
    asyncio.run(provision())
    asyncio.run(asyncio.wait_for(scenario(config), 30))




def hostport(config: Config, node: str) -> tuple[str, int]:
    n = getattr(config, node)
    return n.host, n.port




def test_adhoc_group_from_a_recipient_list(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS) as net, \
                ues(config, "alice", "bob", "carol") as (alice, bob, carol), \
                MsrpEndpoint() as msrp:
            for ue in (alice, bob, carol):
                assert (await ue.register()).ok
            call, session = await create(alice, msrp, [BOB, CAROL])
            final = await call.wait_final()
            assert isinstance(final, Response) and final.status == 200
            contact = final.headers.get("Contact") or ""
            assert contact.startswith("<sip:conf-") and contact.endswith(">;isfocus")
            conference = contact[1:contact.index(">")]
            assert "conference" in (final.headers.get("Allow-Events") or "")
            session.set_remote_path(remote_path(call.remote_sdp))
            await session.connect()

            legs = [await answer(ue, msrp) for ue in (bob, carol)]
            for (leg, _), who in zip(legs, ("bob", "carol")):
                invite = leg.request
                # A.5.2 tables 1, 4, 7: From / Contact / PAI the conference, Referred-By
                assert str(invite.from_.uri) == conference
                assert invite.header("Contact") == f"<{conference}>;isfocus"
                assert invite.header("Referred-By") == f"<{ALICE}>"
                assert invite.header("Subject") == "Lunch"
                assert invite.header("Conversation-ID") == "conv-lunch"
                assert conference in (invite.header("P-Asserted-Identity") or "")
                vias = [(v.host, v.port) for v in invite.via]
                assert vias[:3] == [hostport(config, "pcscf"), hostport(config, "scscf"),
                                    hostport(config, "icscf")], vias
                assert vias[3] == hostport(config, "conference_as")
                rr = [(r.uri.host, r.uri.port) for r in invite.record_route]
                assert rr == [hostport(config, "pcscf"), hostport(config, "scscf")]
                assert str(invite.to.uri) == f"sip:{who}@{DOMAIN}"
            stored = await net.store.conferences.get(conference)
            assert stored is not None and stored.creator == ALICE and stored.subject == "Lunch"

            text = build_cpim("text/plain", b"those are my principles",
                              sender=CpimAddress(ALICE), recipients=[CpimAddress(FACTORY)],
                              namespaces=[("imdn", IMDN_NS)],
                              headers=[("imdn.Message-ID", "m-9972"),
                                       ("imdn.Disposition-Notification",
                                        "positive-delivery, display")])
            await session.send_message(CPIM, text.to_bytes())
            for (_, leg_session), who in zip(legs, (BOB, CAROL)):
                got = await asyncio.wait_for(leg_session.receive(), 5)
                cpim = parse_cpim(got.body)
                assert cpim.get("From") == f"<{ALICE}>"
                assert cpim.get("To") == f"<{conference}>"
                assert cpim.body == b"those are my principles"
                # RFC 5438 in a group: each recipient's IMDN reaches alice only, From it
                reply = imdn_reply(cpim, DispositionType.DELIVERY, ImdnStatus.DELIVERED,
                                   message_id=f"n-{who}", sender=CpimAddress(who))
                assert reply is not None
                await leg_session.send_message(CPIM, reply.to_bytes())
            notified = []
            for _ in legs:
                got = parse_cpim((await asyncio.wait_for(session.receive(), 5)).body)
                assert got.get("To") == f"<{ALICE}>"
                assert parse_imdn(got.body).message_id == "m-9972"
                notified.append(got.get("From"))
            assert sorted(notified) == [f"<{BOB}>", f"<{CAROL}>"]
            # carol answers: alice and bob get it, carol does not get her own back
            reply = build_cpim("text/plain", b"I have others",
                               sender=CpimAddress(CAROL), recipients=[CpimAddress(conference)])
            await legs[1][1].send_message(CPIM, reply.to_bytes())
            for s in (session, legs[0][1]):
                got = await asyncio.wait_for(s.receive(), 5)
                assert parse_cpim(got.body).get("From") == f"<{CAROL}>"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(legs[1][1].receive(), 0.3)
            # the in-dialog BYE to the focus's Contact reaches it through the I-CSCF
            await call.bye()
            focus = net.nodes["conference"].foci[conference]  # type: ignore[attr-defined]
            async with asyncio.timeout(5):
                while ALICE in focus.legs:
                    await asyncio.sleep(0.01)
    run(tmp_path, scenario)


@pytest.mark.parametrize("listed, reason", [
    (b"<resource-lists", "resource list"),
    (build_recipient_list([]).to_xml(), "names nobody"),
])
def test_bad_recipient_list_gets_400_with_a_reason(tmp_path: Path, listed: bytes,
                                                    reason: str) -> None:
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), ues(config, "alice") as (alice,), \
                MsrpEndpoint() as msrp:
            assert (await alice.register()).ok
            call, _ = await create(alice, msrp, listed)
            final = await call.wait_final()
            assert final is not None and final.status == 400
            assert reason in final.reason
    run(tmp_path, scenario)



def test_refer_adds_and_removes_and_conference_events(tmp_path: Path) -> None:
    """RFC 4579 REFER (A.5.2's trigger) and RFC 4575 SUBSCRIBE: full, then partial."""
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS) as net, \
                ues(config, "alice", "bob", "dave", "eve") as (alice, bob, dave, eve), \
                MsrpEndpoint() as msrp:
            for ue in (alice, bob, dave, eve):
                assert (await ue.register()).ok
            agents = {ue.user: EventAgent(ue.ua, EventPackageRegistry([CONFERENCE_PACKAGE]))
                      for ue in (alice, bob, eve)}  # type: ignore[arg-type]
            call, session = await create(alice, msrp, [BOB])
            conference = await established(call, session)
            bob_call, _ = await answer(bob, msrp)
            focus = net.nodes["conference"].foci[conference]  # type: ignore[attr-defined]
            async with asyncio.timeout(5):
                while len(focus.legs) < 2:
                    await asyncio.sleep(0.01)

            # SUBSCRIBE: a participant gets the full state; eve (not in it) 403, bad Event 489
            watch = agents["bob"].subscribe(conference, "conference", expires=600)
            first = await watch.next_notification(5)
            info = parse_conference_info(first.body)
            assert info.state is ElementState.FULL and info.version == 1
            assert sorted(u.entity or "" for u in info.users.users) == [ALICE, BOB]  # type: ignore[union-attr]
            assert first.request.header("Content-Type") == "application/conference-info+xml"
            refused = agents["eve"].subscribe(conference, "conference")
            ended = await asyncio.wait_for(refused.terminated, 5)
            assert ended.response is not None and ended.response.status == 403
            unknown = agents["bob"].subscribe(conference, "presence")
            ended = await asyncio.wait_for(unknown.terminated, 5)
            assert ended.response is not None and ended.response.status == 489

            # REFER in the INVITE dialog: 202, dave invited with Referred-By alice, sipfrag 200
            refer = agents["alice"].refer(call, DAVE)
            assert (await asyncio.wait_for(refer.answered, 5)).status == 202
            dave_call, dave_session = await answer(dave, msrp)
            assert dave_call.request.header("Referred-By") == f"<{ALICE}>"
            assert dave_call.request.header("Contact") == f"<{conference}>;isfocus"
            done = await asyncio.wait_for(refer.done, 5)
            assert done is not None and done.status == 200
            # the watcher hears of dave: partial, version 2 and on
            async with asyncio.timeout(5):
                while True:
                    partial = parse_conference_info((await watch.next_notification(5)).body)
                    assert partial.state is ElementState.PARTIAL and partial.version >= 2
                    user = partial.user(DAVE)
                    if user is not None and user.endpoints[0].status is not None and \
                            user.endpoints[0].status.value == "connected":
                        break

            # a new Subject in an UPDATE: stored, a partial notification with it
            assert (await call.update(headers=[("Subject", "Dinner")])).status == 200  # type: ignore[union-attr]
            async with asyncio.timeout(5):
                while True:
                    partial = parse_conference_info((await watch.next_notification(5)).body)
                    if partial.description is not None:
                        break
            assert partial.state is ElementState.PARTIAL and partial.description.subject == "Dinner"
            stored = await net.store.conferences.get(conference)
            assert stored is not None and stored.subject == "Dinner"

            # removal: bob may not (403), the creator may (dave gets a BYE)
            bye_dave = f"{DAVE};method=BYE"
            denied = agents["bob"].refer(bob_call, bye_dave)
            assert (await asyncio.wait_for(denied.answered, 5)).status == 403
            removal = agents["alice"].refer(call, bye_dave)
            assert (await asyncio.wait_for(removal.answered, 5)).status == 202
            await asyncio.wait_for(asyncio.shield(dave_call.terminated), 5)
            assert DAVE not in focus.legs
            await dave_session.close()
    run(tmp_path, scenario)



def test_leave_rejoin_and_idle_end(tmp_path: Path) -> None:
    """BYE leaves; an INVITE to the same URI rejoins; when nobody is left for the
    idle time ([conference] idle_timeout) the conference ends: then 404."""
    async def scenario(config: Config) -> None:
        config = replace(config, conference=ConferenceConfig(idle_timeout=1))
        async with Network(config, timers=FAST_TIMERS) as net, \
                ues(config, "alice", "bob") as (alice, bob), MsrpEndpoint() as msrp:
            for ue in (alice, bob):
                assert (await ue.register()).ok
            call, session = await create(alice, msrp, [BOB])
            conference = await established(call, session)
            bob_call, _ = await answer(bob, msrp)
            focus = net.nodes["conference"].foci[conference]  # type: ignore[attr-defined]
            async with asyncio.timeout(5):
                while len(focus.legs) < 2:
                    await asyncio.sleep(0.01)
            await call.bye()
            await bob_call.bye()
            async with asyncio.timeout(5):
                while focus.legs:
                    await asyncio.sleep(0.01)
            # an MSRP SEND into a session the focus no longer has: 481, dropped
            stray = msrp.create_session(setup=MsrpSetup.ACTIVE)
            stray.set_remote_path(remote_path(call.remote_sdp))
            with pytest.raises(MsrpStatusError) as refused:  # its binding SEND already
                await stray.connect()
                await stray.send_message(CPIM, build_cpim(
                    "text/plain", b"late", sender=CpimAddress(ALICE)).to_bytes())
            assert refused.value.status == 481
            await stray.close()
            again, again_session = await join(alice, msrp, conference)
            assert await established(again, again_session) == conference  # the same one
            assert list(focus.legs) == [ALICE]
            await again.bye()
            await asyncio.sleep(1.5)
            assert await net.store.conferences.get(conference) is None
            late, _ = await join(alice, msrp, conference)
            final = await late.wait_final()
            assert final is not None and final.status == 404
    run(tmp_path, scenario)


def test_offline_member_catches_up_after_an_as_restart(tmp_path: Path) -> None:
    """A pre-defined group keeps every message for a member who is away, in the
    store: when carol registers (after a restart of the network) the focus invites
    her and sends what she missed, in order, once."""
    group = f"sip:group-lunch@{DOMAIN}"

    async def scenario(config: Config) -> None:
        async with open_store(config.store_location) as store:
            await add_group(store, config, group, ["alice", "bob", "carol"])
        async with ues(config, "alice", "bob", "carol") as (alice, bob, carol), \
                MsrpEndpoint() as msrp:
            async with Network(config, timers=FAST_TIMERS):
                for ue in (alice, bob):
                    assert (await ue.register()).ok
                legs = []
                for ue in (alice, bob):
                    call, session = await join(ue, msrp, group)
                    assert await established(call, session) == group
                    legs.append((call, session))
                for n in range(3):
                    text = build_cpim("text/plain", f"line {n}".encode(),
                                      sender=CpimAddress(ALICE), recipients=[CpimAddress(group)])
                    await legs[0][1].send_message(CPIM, text.to_bytes())
                for n in range(3):
                    got = await asyncio.wait_for(legs[1][1].receive(), 5)
                    assert parse_cpim(got.body).body == f"line {n}".encode()
                for _, session in legs:
                    await session.close()
            async with Network(config, timers=FAST_TIMERS):  # a new AS process
                assert (await carol.register()).ok
                call, session = await answer(carol, msrp)
                assert str(call.request.from_.uri) == group
                assert call.request.header("Contact") == f"<{group}>;isfocus"
                for n in range(3):
                    got = parse_cpim((await asyncio.wait_for(session.receive(), 5)).body)
                    assert got.body == f"line {n}".encode() and got.get("From") == f"<{ALICE}>"
                await call.bye()
                await session.close()
                again, again_session = await join(carol, msrp, group)
                assert await established(again, again_session) == group
                with pytest.raises(TimeoutError):  # nothing twice
                    await asyncio.wait_for(again_session.receive(), 0.5)
    run(tmp_path, scenario)


def test_a_flooder_does_not_starve_the_others(tmp_path: Path) -> None:
    """Each sender has at most IN_FLIGHT messages in the others' outboxes: bob's
    one line reaches carol soon after he sent it, not behind alice's whole flood."""
    flood = 600

    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), \
                ues(config, "alice", "bob", "carol") as (alice, bob, carol), \
                MsrpEndpoint() as msrp:
            for ue in (alice, bob, carol):
                assert (await ue.register()).ok
            call, session = await create(alice, msrp, [BOB, CAROL])
            await established(call, session)
            (_, bob_session), (_, carol_session) = [await answer(ue, msrp)
                                                    for ue in (bob, carol)]
            await asyncio.sleep(0.2)
            line = build_cpim("text/plain", b"flood", sender=CpimAddress(ALICE),
                              recipients=[CpimAddress(ALICE)]).to_bytes()
            sends = [asyncio.ensure_future(session.send_message(CPIM, line))
                     for _ in range(flood)]
            await asyncio.sleep(0.05)
            mine = build_cpim("text/plain", b"bob here", sender=CpimAddress(BOB),
                              recipients=[CpimAddress(BOB)]).to_bytes()
            await bob_session.send_message(CPIM, mine)
            seen = 0
            while True:
                got = parse_cpim((await asyncio.wait_for(carol_session.receive(), 10)).body)
                if got.body == b"bob here":
                    break
                seen += 1
            assert seen < 200, seen  # about IN_FLIGHT of alice's ahead, not the flood
            await asyncio.gather(*sends)
    run(tmp_path, scenario)


def test_conference_subscription_refresh_and_unsubscribe(tmp_path: Path) -> None:
    """RFC 6665 4.1.2: the focus's 200 and NOTIFYs carry the conference URI with
    ``;isfocus`` as Contact, so a re-SUBSCRIBE goes S-CSCF -> I-CSCF -> AS and gets
    200 and a NOTIFY; Expires: 0 gets the terminated NOTIFY."""
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS) as net, \
                ues(config, "alice", "bob") as (alice, bob), MsrpEndpoint() as msrp:
            for ue in (alice, bob):
                assert (await ue.register()).ok
            agent = EventAgent(bob.ua, EventPackageRegistry([CONFERENCE_PACKAGE]))  # type: ignore[arg-type]
            call, session = await create(alice, msrp, [BOB])
            conference = await established(call, session)
            await answer(bob, msrp)
            focus = net.nodes["conference"].foci[conference]  # type: ignore[attr-defined]
            async with asyncio.timeout(5):
                while len(focus.legs) < 2:
                    await asyncio.sleep(0.01)
            watch = agent.subscribe(conference, "conference", expires=600)
            first = await watch.next_notification(5)
            assert first.request.header("Contact") == f"<{conference}>;isfocus"
            assert str(watch.subscription.dialog.remote_target) == conference  # type: ignore[union-attr]

            agent.refresh(watch, 600)
            again = await watch.next_notification(5)
            assert again.state.state == "active"
            assert parse_conference_info(again.body).entity == conference
            assert not watch.terminated.done()

            ended = await agent.unsubscribe(watch, 5)
            assert ended.reason is not None
            last = await watch.next_notification(5)
            assert last.state.state == "terminated"
    run(tmp_path, scenario)


def test_out_of_dialog_refer_names_its_dialog_in_target_dialog(tmp_path: Path) -> None:
    """RFC 4538 / 4579: a REFER outside the INVITE dialog names the sender's dialog
    with the focus in Target-Dialog: 202 and dave invited; someone else's dialog is
    403, a dialog the focus does not have 481, a malformed one 400."""
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS) as net, \
                ues(config, "alice", "bob", "dave") as (alice, bob, dave), \
                MsrpEndpoint() as msrp:
            for ue in (alice, bob, dave):
                assert (await ue.register()).ok
            call, session = await create(alice, msrp, [BOB])
            conference = await established(call, session)
            await answer(bob, msrp)
            focus = net.nodes["conference"].foci[conference]  # type: ignore[attr-defined]
            async with asyncio.timeout(5):
                while len(focus.legs) < 2:
                    await asyncio.sleep(0.01)
            ours = call.session.dialog.id  # type: ignore[union-attr]
            alices = f"{ours.call_id};local-tag={ours.local_tag};remote-tag={ours.remote_tag}"

            async def refer(ue: TestUe, target_dialog: str) -> Response:
                assert ue.registration is not None and ue.ua is not None
                request = build_request(
                    "REFER", conference, f"<{ue.aor}>", f"<{conference}>",
                    contact=ue.ua.contact, route=ue.registration.route(),
                    headers=[("Refer-To", f"<{DAVE}>"), ("Target-Dialog", target_dialog)])
                return await ue.endpoint.request(request).final()

            assert (await refer(bob, alices)).status == 403
            unknown = await refer(alice, f"nope;local-tag={ours.local_tag};remote-tag=x")
            assert unknown.status == 481
            assert (await refer(alice, "no-tags-here")).status == 400
            assert DAVE not in focus.legs
            accepted = await refer(alice, alices)
            assert accepted.status == 202
            assert accepted.header("Contact") == f"<{conference}>;isfocus"
            dave_call, dave_session = await answer(dave, msrp)
            assert dave_call.request.header("Referred-By") == f"<{ALICE}>"
            await dave_session.close()
    run(tmp_path, scenario)
