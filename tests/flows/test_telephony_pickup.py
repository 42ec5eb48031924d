"""Call pickup (RFC 5359 2.16) by the telephony AS, through the real core.

alice calls bob, bob's phone rings; carol calls ``sip:pickup@ims.test``. The AS
finds bob's early dialog in its RFC 4235 state (the dialog-info a watcher
gets), INVITEs alice with Replaces naming that dialog as alice sees it (tags
turned round, early-only), alice's phone swaps the ringing call for the new
one and CANCELs bob; alice and carol hear each other. Then the refusals: nothing
ringing, outside the group, the call already answered, two pickups at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.content.dialog_info import (
    Dialog, DialogEvent, DialogInfo, DialogState, parse_dialog_info,
)
from imsbox.sip.ua.pickup import pickup_replaces, ringing_dialogs
from imsbox.sip.ua.refer import SubscriptionWatch
from imsbox.testing import TestUe
from imsbox.ue.call import VoiceCall
from imsbox.ue.client import RcsClient
from imsbox.media import Recorder
from imsbox.ue.events import CallRinging, RcsError

from helpers import client, network_with, run_within
from telephony_kit import TONES, WAIT, ended, four_users, hear_each_other, place, set_service, watch_dialogs

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return four_users(tmp_path)


async def until_early(watch: SubscriptionWatch) -> DialogInfo:
    while True:
        info = parse_dialog_info((await watch.next_notification(WAIT)).body)
        if ringing_dialogs(info):
            return info


async def until_ended(watch: SubscriptionWatch, call_id: str) -> Dialog:
    while True:
        info = parse_dialog_info((await watch.next_notification(WAIT)).body)
        for dialog in info.dialogs:
            if dialog.call_id == call_id and dialog.state is DialogState.TERMINATED:
                return dialog


async def ring_bob(alice: RcsClient, bob: RcsClient) -> VoiceCall:
    """alice calls bob, who lets it ring; returns once alice has bob's 180."""
    call, _ = await place(alice, "alice", "bob")
    await bob.wait_event(CallRinging, WAIT)
    await asyncio.wait_for(call.call.ringing.wait(), WAIT)
    return call


def replacing_call(alice: RcsClient, original: VoiceCall) -> VoiceCall:
    (new,) = [c for c in alice.calls.values() if c.id != original.id]
    return new


def test_group_pickup_2_16(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=30)
        carol = client(config, "carol")
        async with network_with(config, alice, bob, carol):
            dave = await TestUe("dave", "dave-secret", config).start()
            try:
                assert (await dave.register()).ok
                agent, watch = await watch_dialogs(dave, "sip:bob@ims.test")
                call = await ring_bob(alice, bob)
                alice_rec = call.rtp.sink
                (dialog,) = ringing_dialogs(await until_early(watch))   # bob's view
                alice_tag = call.call.request.from_.tag
                bob_tag = bob.calls[call.id].call.session.dialog.id.local_tag  # type: ignore[union-attr]
                assert (dialog.call_id, dialog.local_tag, dialog.remote_tag) == \
                    (call.id, bob_tag, alice_tag)

                pick, carol_rec = await place(carol, "carol", "pickup")
                assert await pick.wait_answered(WAIT)
                assert await ended(bob, call.id) == "cancelled"      # alice CANCELled bob
                final = await call.call.wait_final()
                assert final is not None and final.status == 487
                taken = replacing_call(alice, call)
                invite = taken.call.request
                # RFC 3891 to the caller, the early dialog's UAC: its own tag is to-tag
                assert invite.header("Replaces") == \
                    f"{call.id};to-tag={alice_tag};from-tag={bob_tag};early-only"
                assert invite.header("Replaces") == str(pickup_replaces(dialog))
                assert invite.header("Require") == "replaces"
                assert "sip:carol@ims.test" in (invite.header("P-Asserted-Identity") or "")
                assert not [c for c in bob.calls.values() if not c.ended.is_set()]
                assert alice_rec is not None
                await hear_each_other(alice_rec, "alice", carol_rec, "carol")  # type: ignore[arg-type]
                done = await until_ended(watch, call.id)             # bob's document
                assert (done.event, done.code) == (DialogEvent.CANCELLED, 487)
                await pick.hangup()                                  # the AS ends alice's leg
                assert await ended(alice, taken.id) == "remote hangup"
                agent.close()
            finally:
                await dave.close()
    run_within(scenario, 60)


def test_directed_pickup_and_groups(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=30)
        carol, dave = client(config, "carol"), client(config, "dave")
        async with network_with(config, alice, bob, carol, dave) as net:
            nothing, _ = await place(carol, "carol", "pickup")
            final = await nothing.call.wait_final()
            assert final is not None and final.status == 480
            assert final.reason == ("Temporarily Unavailable - no call ringing in the "
                                    "ims.test pickup group")
            await set_service(net, "bob", "pickup-group", "sales")
            await set_service(net, "carol", "pickup-group", "sales")
            # alice's own forwarding must not take the pickup's INVITE with Replaces away
            await set_service(net, "alice", "forward-unconditional", "dave")
            call = await ring_bob(alice, bob)
            for target, status, reason in (
                    ("pickup", 480, "Temporarily Unavailable - no call ringing in the "
                                    "ims.test pickup group"),
                    ("pickup-bob", 403, "Forbidden - sip:bob@ims.test is not in your "
                                        "pickup group"),
                    ("pickup-zed", 404, "Not Found - no subscriber sip:zed@ims.test")):
                refused, _ = await place(dave, "dave", target)    # dave: the domain's group
                final = await refused.call.wait_final()
                assert final is not None and (final.status, final.reason) == (status, reason)
            pick, _ = await place(carol, "carol", "pickup-bob")   # carol: sales, like bob
            assert await pick.wait_answered(WAIT)
            assert await ended(bob, call.id) == "cancelled"
            assert replacing_call(alice, call).call.request.header("Replaces")
            assert not dave.calls                                  # not forwarded to dave
            await pick.hangup()
    run_within(scenario, 60)


def test_pickup_of_an_answered_call(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=0.5)
        carol = client(config, "carol")
        async with network_with(config, alice, bob, carol):
            call = await ring_bob(alice, bob)
            assert await call.wait_answered(WAIT)
            late, _ = await place(carol, "carol", "pickup-bob")
            final = await late.call.wait_final()
            assert final is not None and final.status == 481
            assert final.reason == ("Call/Transaction Does Not Exist - the call to "
                                    "sip:bob@ims.test was already answered")
            assert len(alice.calls) == 1 and not call.ended.is_set()   # nobody joined
            await call.hangup()
    run_within(scenario, 60)


def test_two_pickups_at_once_one_wins(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=30)
        carol, dave = client(config, "carol"), client(config, "dave")
        async with network_with(config, alice, bob, carol, dave):
            call = await ring_bob(alice, bob)
            (c, _), (d, _) = await asyncio.gather(place(carol, "carol", "pickup"),
                                                  place(dave, "dave", "pickup"))
            finals = await asyncio.gather(c.call.wait_final(), d.call.wait_final())
            statuses = sorted(f.status for f in finals if f is not None)
            assert statuses[0] == 200 and statuses[1] in (480, 481, 486), finals
            loser = next(f for f in finals if f is not None and f.status != 200)
            assert loser.reason in (
                "Busy Here - the ringing call is already being picked up by another member",
                "Temporarily Unavailable - no call ringing in the ims.test pickup group",
                "Call/Transaction Does Not Exist - the call is no longer ringing")
            assert await ended(bob, call.id) == "cancelled"
            await asyncio.sleep(0.5)
            live = [v for v in alice.calls.values() if not v.ended.is_set()]
            assert len(live) == 1                                   # one party took it
            winner = c if finals[0] is not None and finals[0].status == 200 else d
            await winner.hangup()
    run_within(scenario, 60)


def test_bridge_for_a_caller_without_replaces(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=30)
        carol = client(config, "carol")
        async with network_with(config, alice, bob, carol):
            assert alice.core.ua is not None    # alice's phone: no RFC 3891 (answers 420)
            alice.core.ua.config = dataclasses.replace(alice.core.ua.config,
                                                       extensions=("join",))
            call = await ring_bob(alice, bob)
            assert "replaces" not in (call.call.request.header("Supported") or "")
            alice_rec = call.rtp.sink
            pick, carol_rec = await place(carol, "carol", "pickup")
            assert await pick.wait_answered(WAIT), await pick.call.wait_final()
            assert await call.wait_answered(WAIT)              # alice's own INVITE, answered
            assert await ended(bob, call.id) == "cancelled"    # by the AS, not by alice
            assert list(alice.calls) == [call.id]              # no second call at alice
            assert alice_rec is not None
            await hear_each_other(alice_rec, "alice", carol_rec, "carol")  # type: ignore[arg-type]
            await call.hangup()                                # the AS ends carol's leg
            assert await ended(carol, pick.id) == "remote hangup"
    run_within(scenario, 60)


def test_direct_pickup_by_the_phone(config: Config) -> None:
    """RFC 5359 2.16 as drawn: carol's phone SUBSCRIBEs to bob's dialogs (the AS
    answers), INVITEs alice with the Replaces itself."""
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=30)
        carol = client(config, "carol")
        async with network_with(config, alice, bob, carol):
            with pytest.raises(RcsError, match=r"nothing ringing for sip:bob@ims\.test"):
                await carol.pickup("bob", direct=True)
            call = await ring_bob(alice, bob)
            alice_rec = call.rtp.sink
            bob_tag = bob.calls[call.id].call.session.dialog.id.local_tag  # type: ignore[union-attr]
            pick = await carol.pickup("bob", direct=True, tone=TONES["carol"])
            carol_rec = Recorder()
            pick.rtp.sink = carol_rec
            assert await pick.wait_answered(WAIT)
            assert await ended(bob, call.id) == "cancelled"
            taken = replacing_call(alice, call)
            assert taken.call.request.header("Replaces") == \
                f"{call.id};to-tag={call.call.request.from_.tag};from-tag={bob_tag};early-only"
            assert pick.call.request.uri.user == "alice"          # sent to the caller
            assert alice_rec is not None
            await hear_each_other(alice_rec, "alice", carol_rec, "carol")  # type: ignore[arg-type]
            await pick.hangup()
            assert await ended(alice, taken.id) == "remote hangup"
    run_within(scenario, 60)
