"""3-way calls mixed in the UE through the real IMS core (RFC 5359 2.10, 2.11; RFC 3911).

Each party plays its own tone (alice 600 Hz, bob 1000 Hz, carol 1400 Hz) and
records what it hears; in the conference every recording holds the other two
tones and not its own (alice mixes, mix-minus). 2.10: alice calls bob, holds
him and calls carol, then ``conference`` re-INVITEs both legs with ``;isfocus``
and mixes. 2.11: carol reads alice's dialog with bob from alice's dialog event
package (RFC 4235 NOTIFY through the core) and INVITEs alice with Join naming it;
alice rings, re-INVITEs bob with ``;isfocus``, answers carol and mixes. A Join
naming no dialog gets 481.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.content.dialog_info import DialogState, parse_dialog_info
from imsbox.ims.provisioning import add_user
from imsbox.media import Recorder, ToneSource, tone_present
from imsbox.sdp import Direction
from imsbox.sip.endpoint import Priority, ServerContext
from imsbox.sip.message import Request
from imsbox.sip.ua.dialog_event import DIALOG_INFO_TYPE
from imsbox.store import open_store
from imsbox.ue.call import VoiceCall
from imsbox.ue.client import RcsClient
from imsbox.ue.events import CallConference, CallJoined

from helpers import DOMAIN, alice_and_bob, client, network_with, run_within

pytestmark = pytest.mark.timeout(90)
WAIT = 5.0
TONES = {"alice": 600.0, "bob": 1000.0, "carol": 1400.0}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = alice_and_bob(tmp_path)

    async def carol() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "carol", "carol-secret", "+15550003")
    asyncio.run(carol())
    return config


class Tap:
    """Every request a UE receives, in order (a module that serves nothing)."""

    name = "tap"
    priority = Priority.POLICY
    methods: tuple[str, ...] = ()

    def __init__(self, ue: RcsClient) -> None:
        self.requests: list[Request] = []
        ue.core.endpoint.add_module(self)

    def on_request(self, ctx: ServerContext) -> bool:
        self.requests.append(ctx.request)
        return False

    def methods_seen(self, call_id: str) -> list[str]:
        return [r.method for r in self.requests if r.call_id == call_id]

    def reinvites(self, call_id: str) -> list[Request]:
        return [r for r in self.requests
                if r.method == "INVITE" and r.call_id == call_id and r.to.tag]


def callee(name: str, config: Config) -> tuple[RcsClient, Recorder]:
    """A UE that answers after 0.2 s playing its tone and recording what it hears."""
    ue = client(config, name, answer_calls=0.2)
    recorder = Recorder()
    ue.call_service.source = lambda: ToneSource(TONES[name])
    ue.call_service.sink = lambda: recorder
    return ue, recorder


def assert_mix_minus(recordings: dict[str, Recorder]) -> None:
    for name, rec in recordings.items():
        others = [t for n, t in TONES.items() if n != name]
        assert all(tone_present(rec.pcm, t, threshold=0.2) for t in others), (name, others)
        assert not tone_present(rec.pcm, TONES[name], threshold=0.05, min_windows=1), name


async def listen_to_all(recordings: dict[str, Recorder], seconds: float = 2.0) -> None:
    await asyncio.sleep(0.3)      # what was in flight before the mix plays out
    for rec in recordings.values():
        rec.clear()
    await asyncio.sleep(seconds)


async def alice_calls_bob(alice: RcsClient, alice_rec: Recorder) -> VoiceCall:
    call = await alice.call("bob", tone=TONES["alice"])
    call.rtp.sink = alice_rec
    assert await call.wait_answered(WAIT)
    return call


def test_third_party_added_mix_minus(config: Config) -> None:
    """RFC 5359 2.10: alice holds bob, calls carol, then mixes the three."""
    async def scenario() -> None:
        alice, alice_rec = client(config, "alice"), Recorder()
        (bob, bob_rec), (carol, carol_rec) = callee("bob", config), callee("carol", config)
        async with network_with(config, alice, bob, carol):
            bob_tap = Tap(bob)
            call_b = await alice_calls_bob(alice, alice_rec)
            call_c = await alice.add_party(call_b, "carol")
            assert await call_c.wait_answered(WAIT)
            bob_leg = bob.calls[call_b.id]
            assert call_b.held and bob_leg.rtp.direction is Direction.RECVONLY  # consultation hold
            conference = await alice.conference()
            event = await alice.wait_event(CallConference, WAIT)
            assert event.state == "mixing" and event.calls == [call_b.id, call_c.id]  # type: ignore[attr-defined]
            assert event.parties == ["sip:bob@ims.test", "sip:carol@ims.test"]  # type: ignore[attr-defined]
            # the ladder at bob: INVITE, hold re-INVITE (sendonly), focus re-INVITE sendrecv ;isfocus
            hold, focus = bob_tap.reinvites(call_b.id)[-2:]
            assert b"a=sendonly" in hold.body and b"a=sendonly" not in focus.body  # sendrecv again
            assert ";isfocus" in (focus.header("Contact") or "")
            assert bob_leg.rtp.direction is Direction.SENDRECV
            recordings = {"alice": alice_rec, "bob": bob_rec, "carol": carol_rec}
            await listen_to_all(recordings)
            assert_mix_minus(recordings)
            # bob leaves: alice and carol go on as a plain call with alice's tone
            await bob_leg.hangup()
            ended = await alice.wait_event(CallConference, WAIT)
            assert ended.state == "ended" and ended.calls == [call_c.id]  # type: ignore[attr-defined]
            assert conference.ended.is_set() and not alice.threeway.conferences
            await listen_to_all({"carol": carol_rec}, 1.0)
            assert tone_present(carol_rec.pcm, TONES["alice"])
            assert not tone_present(carol_rec.pcm, TONES["bob"], threshold=0.05, min_windows=1)
            await call_c.hangup()
    run_within(scenario, 75)


def test_third_party_joins_with_join(config: Config) -> None:
    """RFC 5359 2.11: carol learns alice's dialog with bob from alice's dialog events
    and INVITEs alice with Join; alice mixes the three."""
    async def scenario() -> None:
        alice, alice_rec = client(config, "alice"), Recorder()
        bob, bob_rec = callee("bob", config)
        carol, carol_rec = client(config, "carol"), Recorder()
        async with network_with(config, alice, bob, carol):
            alice_tap, bob_tap = Tap(alice), Tap(bob)
            call_b = await alice_calls_bob(alice, alice_rec)
            # carol asks alice's dialog event package which dialog to join (RFC 4235)
            agent = carol.group_service.agent
            watch = agent.subscribe("sip:alice@ims.test", "dialog", accept=[DIALOG_INFO_TYPE],
                                    origin=carol.group_service.origin())
            notification = await watch.next_notification(WAIT)
            assert notification.request.header("Content-Type") == DIALOG_INFO_TYPE
            info = parse_dialog_info(notification.body)
            assert info.entity == "sip:alice@ims.test"
            [dialog] = info.dialogs
            assert dialog.call_id == call_b.id and dialog.state is DialogState.CONFIRMED
            assert dialog.local_tag == call_b.call.request.from_.tag   # alice's own tag
            await agent.unsubscribe(watch, WAIT)
            join = f"{dialog.call_id};to-tag={dialog.local_tag};from-tag={dialog.remote_tag}"
            call_j = await carol.join("alice", join, tone=TONES["carol"])
            call_j.rtp.sink = carol_rec
            assert await call_j.wait_answered(WAIT)
            joined = await alice.wait_event(CallJoined, WAIT)
            assert joined.joined_call_id == call_b.id and joined.call_id == call_j.id  # type: ignore[attr-defined]
            # the ladder: INVITE with Join and Require: join at alice; 180; the focus
            # re-INVITE to bob; the 200 to carol with ;isfocus
            invite = next(r for r in alice_tap.requests if r.method == "INVITE" and r.call_id == call_j.id)
            assert invite.header("Join") == join and "join" in (invite.header("Require") or "")
            assert [p.status for p in call_j.call.progress] == [180]
            final = await call_j.call.wait_final()
            assert final is not None and final.status == 200
            assert ";isfocus" in (final.header("Contact") or "")
            focus = bob_tap.reinvites(call_b.id)[-1]
            assert ";isfocus" in (focus.header("Contact") or "") and b"a=sendonly" not in focus.body
            recordings = {"alice": alice_rec, "bob": bob_rec, "carol": carol_rec}
            await listen_to_all(recordings)
            assert_mix_minus(recordings)
            await call_j.hangup()
            await call_b.hangup()
    run_within(scenario, 75)


def test_join_naming_no_dialog_gets_481(config: Config) -> None:
    async def scenario() -> None:
        alice, carol = client(config, "alice", answer_calls=0), client(config, "carol")
        async with network_with(config, alice, carol):
            call = await carol.join("alice", "no-such-call;to-tag=a1;from-tag=b2")
            assert not await call.wait_answered(WAIT)
            final = await call.call.wait_final()
            assert final is not None and final.status == 481
            assert "Join" in (final.reason or "")
            assert not alice.calls
    run_within(scenario, 45)


def test_join_bad_input_is_refused_and_the_call_goes_on(config: Config) -> None:
    """RFC 3911 4: two Join headers or Join with Replaces 400, a malformed Join 400,
    a UE that takes no joins 403; the joined call is left as it was."""
    async def scenario() -> None:
        alice, alice_rec = client(config, "alice"), Recorder()
        bob, bob_rec = callee("bob", config)
        carol = client(config, "carol")
        async with network_with(config, alice, bob, carol):
            call_b = await alice_calls_bob(alice, alice_rec)
            session = call_b.call.session
            assert session.dialog is not None
            good = (f"{call_b.id};to-tag={session.dialog.id.local_tag};"
                    f"from-tag={session.dialog.id.remote_tag}")
            cases = [([("Join", good), ("Join", good)], 400),
                     ([("Join", good), ("Replaces", good)], 400),
                     ([("Join", f"{call_b.id};to-tag=only")], 400)]
            for headers, status in cases:
                attempt = await carol.call_service.place("sip:alice@ims.test", headers=headers)
                final = await attempt.call.wait_final()
                assert final is not None and final.status == status, headers
            alice.threeway.accept_joins = False
            refused = await carol.join("alice", good)
            final = await refused.call.wait_final()
            assert final is not None and final.status == 403
            assert list(alice.calls) == [call_b.id] and not alice.threeway.conferences
            bob_rec.clear()
            await asyncio.sleep(1.0)
            assert tone_present(bob_rec.pcm, TONES["alice"])    # the call goes on, unmixed
            await call_b.hangup()
    run_within(scenario, 60)


def test_third_party_joins_the_callee(config: Config) -> None:
    """The Join goes to bob, who answered alice's call: bob is the focus and mixes."""
    async def scenario() -> None:
        alice, alice_rec = client(config, "alice"), Recorder()
        bob, bob_rec = callee("bob", config)
        carol, carol_rec = client(config, "carol"), Recorder()
        async with network_with(config, alice, bob, carol):
            alice_tap = Tap(alice)
            call_b = await alice_calls_bob(alice, alice_rec)
            dialog = bob.calls[call_b.id].call.session.dialog
            assert dialog is not None       # bob's view: his tag is the to-tag
            join = f"{call_b.id};to-tag={dialog.id.local_tag};from-tag={dialog.id.remote_tag}"
            call_j = await carol.join("bob", join, tone=TONES["carol"])
            call_j.rtp.sink = carol_rec
            assert await call_j.wait_answered(WAIT)
            assert (await bob.wait_event(CallJoined, WAIT)).joined_call_id == call_b.id  # type: ignore[attr-defined]
            focus = alice_tap.reinvites(call_b.id)[-1]      # bob -> alice, as UAS of the call
            assert ";isfocus" in (focus.header("Contact") or "")
            recordings = {"alice": alice_rec, "bob": bob_rec, "carol": carol_rec}
            await listen_to_all(recordings)
            assert_mix_minus(recordings)
            await call_b.hangup()      # alice leaves: bob and carol go on
            await asyncio.sleep(0.5)
            assert not bob.threeway.conferences and list(bob.calls) == [call_j.id]
            await call_j.hangup()
    run_within(scenario, 60)
