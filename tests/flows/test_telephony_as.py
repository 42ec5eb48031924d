"""The telephony AS through the real core (RFC 5359 2.7, 2.8, 2.9, 2.12, 2.13, 2.14).

alice calls bob; bob's services (set as ``imsbox service set`` stores them)
decide who rings: each test asserts who got an INVITE, who was CANCELled,
the History-Info (RFC 7044, RFC 4458 cause) the final callee sees, the final
response and reason, and that the final two parties hear each other's tone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.ue.client import RcsClient
from imsbox.ue.events import CallRinging

from helpers import client, network_with, run_within
from telephony_kit import (
    WAIT, ended, four_users, hear_each_other, history, place, plays, rang, set_service,
)

pytestmark = pytest.mark.timeout(90)
BOB, CAROL, DAVE = "sip:bob@ims.test", "sip:carol@ims.test", "sip:dave@ims.test"
BUSY_REASON = "Reason=SIP%3Bcause%3D486%3Btext%3D%22Busy%20Here%22"
NO_REPLY_REASON = "Reason=SIP%3Bcause%3D408%3Btext%3D%22Request%20Timeout%22"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return four_users(tmp_path)


def parties(config: Config, **kwargs: dict[str, object]) -> list[RcsClient]:
    """alice, bob, carol, dave; kwargs per name (answer_calls=..., busy_calls=...)."""
    return [client(config, n, **kwargs.get(n, {})) for n in ("alice", "bob", "carol", "dave")]


def test_plain_call_is_record_routed_by_the_as(config: Config) -> None:
    async def scenario() -> None:
        alice, bob, carol, dave = parties(config, bob={"answer_calls": 0})
        async with network_with(config, alice, bob, carol, dave):
            bob_rec = plays(bob, "bob")
            call, alice_rec = await place(alice, "alice", "bob")
            assert await call.wait_answered(WAIT)
            invite = bob.calls[call.id].call.request
            tas = config.telephony_as
            assert f"{tas.host}:{tas.port};lr" in " ".join(invite.headers.values("Record-Route"))
            assert history(bob.calls[call.id]) == [f"<{BOB}>;index=1"]
            await hear_each_other(alice_rec, "alice", bob_rec, "bob")
            await call.hangup()
    run_within(scenario, 60)


def test_forward_unconditional_2_7(config: Config) -> None:
    async def scenario() -> None:
        alice, bob, carol, dave = parties(config, bob={"answer_calls": 0},
                                          carol={"answer_calls": 0.2})
        async with network_with(config, alice, bob, carol, dave) as net:
            await set_service(net, "bob", "forward-unconditional", "carol")
            carol_rec = plays(carol, "carol")
            call, alice_rec = await place(alice, "alice", "bob")
            assert await call.wait_answered(WAIT)
            assert call.id in carol.calls and not rang(bob.pending_events(), call.id)
            assert not bob.calls                                # bob never got an INVITE
            assert history(carol.calls[call.id]) == [
                f"<{BOB}>;index=1", f"<{CAROL};cause=302>;index=1.1;mp=1"]
            assert carol.calls[call.id].call.request.uri.user == "carol"
            await hear_each_other(alice_rec, "alice", carol_rec, "carol")
            await call.hangup()
            assert await ended(carol, call.id) == "remote hangup"
            # a change takes effect on the next call: without the setting bob rings
            assert net.store is not None
            await net.store.service_data.remove(BOB, "forward-unconditional")
            again, _ = await place(alice, "alice", "bob")
            assert await again.wait_answered(WAIT) and again.id in bob.calls
            await again.hangup()
    run_within(scenario, 60)


def test_forward_busy_2_8(config: Config) -> None:
    async def scenario() -> None:
        alice, bob, carol, dave = parties(config, bob={"busy_calls": True},
                                          carol={"answer_calls": 0.2})
        async with network_with(config, alice, bob, carol, dave) as net:
            await set_service(net, "bob", "forward-busy", "sip:carol@ims.test")
            carol_rec = plays(carol, "carol")
            call, alice_rec = await place(alice, "alice", "bob")
            assert await ended(bob, call.id) == "busy"         # bob got it and said 486
            assert await call.wait_answered(WAIT)
            assert history(carol.calls[call.id]) == [
                f"<{BOB}?{BUSY_REASON}>;index=1", f"<{CAROL};cause=486>;index=1.1;mp=1"]
            await hear_each_other(alice_rec, "alice", carol_rec, "carol")
            await call.hangup()
    run_within(scenario, 60)


def test_busy_without_forwarding_stays_486(config: Config) -> None:
    async def scenario() -> None:
        alice, bob, carol, dave = parties(config, bob={"busy_calls": True})
        async with network_with(config, alice, bob, carol, dave) as net:
            await set_service(net, "bob", "forward-no-answer", "carol", after=5)
            call, _ = await place(alice, "alice", "bob")
            final = await call.call.wait_final()
            assert final is not None and final.status == 486    # busy is not "no answer"
            assert not carol.calls
    run_within(scenario, 60)


def test_forward_no_answer_2_9(config: Config) -> None:
    async def scenario() -> None:
        alice, bob, carol, dave = parties(config, bob={"answer_calls": 30},
                                          carol={"answer_calls": 0.2})
        async with network_with(config, alice, bob, carol, dave) as net:
            await set_service(net, "bob", "forward-no-answer", "carol", after=1)
            carol_rec = plays(carol, "carol")
            call, alice_rec = await place(alice, "alice", "bob")
            assert await ended(bob, call.id) == "cancelled"    # rang 1 s, then CANCEL
            assert await call.wait_answered(WAIT)
            assert history(carol.calls[call.id]) == [
                f"<{BOB}?{NO_REPLY_REASON}>;index=1", f"<{CAROL};cause=408>;index=1.1;mp=1"]
            await hear_each_other(alice_rec, "alice", carol_rec, "carol")
            await call.hangup()
    run_within(scenario, 60)


def test_find_me_2_12(config: Config) -> None:
    async def scenario() -> None:
        alice, bob, carol, dave = parties(config, bob={"answer_calls": 30},
                                          carol={"busy_calls": True},
                                          dave={"answer_calls": 0.2})
        async with network_with(config, alice, bob, carol, dave) as net:
            await set_service(net, "bob", "find-me", "carol", "+15550004", after=1)
            dave_rec = plays(dave, "dave")
            call, alice_rec = await place(alice, "alice", "bob")
            assert await ended(bob, call.id) == "cancelled"    # bob: no answer in 1 s
            assert await ended(carol, call.id) == "busy"       # carol: 486
            assert await call.wait_answered(WAIT)              # dave, by his number
            assert history(dave.calls[call.id]) == [
                f"<{BOB}?{NO_REPLY_REASON}>;index=1",
                f"<{CAROL};cause=408?{BUSY_REASON}>;index=1.1;mp=1",
                "<tel:+15550004;cause=486>;index=1.1.1;mp=1.1",
                # the S-CSCF made the number dave's SIP URI: same user, new URI (rc)
                f"<{DAVE}>;index=1.1.1.1;rc=1.1.1"]
            await hear_each_other(alice_rec, "alice", dave_rec, "dave")
            await call.hangup()
    run_within(scenario, 60)


def test_find_me_nobody_answers(config: Config) -> None:
    async def scenario() -> None:
        alice, bob, carol, dave = parties(config, bob={"busy_calls": True},
                                          carol={"busy_calls": True})
        async with network_with(config, alice, bob, carol, dave) as net:
            await set_service(net, "bob", "find-me", "carol", after=1)
            call, _ = await place(alice, "alice", "bob")
            final = await call.call.wait_final()
            assert final is not None and final.status == 486
            assert await ended(carol, call.id) == "busy"
    run_within(scenario, 60)


def test_incoming_screening_2_13(config: Config) -> None:
    async def scenario() -> None:
        alice, bob, carol, dave = parties(config, bob={"answer_calls": 0})
        async with network_with(config, alice, bob, carol, dave) as net:
            await set_service(net, "bob", "screen-incoming", "+15550001", "sip:*@spam.test")
            call, _ = await place(alice, "alice", "bob")          # alice is +15550001
            final = await call.call.wait_final()
            assert final is not None and final.status == 603
            assert final.reason == "Screening Failure (Terminating)"
            assert not bob.calls and not rang(bob.pending_events(), call.id)
            other, _ = await place(carol, "carol", "bob")          # not on the list
            assert await other.wait_answered(WAIT)
            await other.hangup()
    run_within(scenario, 60)


def test_outgoing_screening_2_14(config: Config) -> None:
    async def scenario() -> None:
        alice, bob, carol, dave = parties(config, bob={"answer_calls": 0},
                                          carol={"answer_calls": 0})
        async with network_with(config, alice, bob, carol, dave) as net:
            await set_service(net, "alice", "screen-outgoing", "+15550002")   # bob's number
            call, _ = await place(alice, "alice", "bob")
            final = await call.call.wait_final()
            assert final is not None and final.status == 403
            assert final.reason == "Screening Failure (Originating)"
            assert not bob.calls
            allowed, _ = await place(alice, "alice", "carol")
            assert await allowed.wait_answered(WAIT)
            await allowed.hangup()
    run_within(scenario, 60)


def test_forwarding_loop_482(config: Config) -> None:
    async def scenario() -> None:
        alice, bob, carol, dave = parties(config, alice={"answer_calls": 0},
                                          bob={"answer_calls": 0})
        async with network_with(config, alice, bob, carol, dave) as net:
            await set_service(net, "bob", "forward-unconditional", "alice")
            await set_service(net, "alice", "forward-unconditional", "bob")
            for caller, name in ((alice, "alice"), (carol, "carol")):   # A->B->A, C->B->A->B
                call, _ = await place(caller, name, "bob")
                final = await call.call.wait_final()
                assert final is not None and final.status == 482
                assert final.reason.startswith("Loop Detected")
            assert not alice.calls and not bob.calls
    run_within(scenario, 60)


def test_too_many_forwardings_483(tmp_path: Path) -> None:
    config = four_users(tmp_path, "[telephony]\nmax_diversions = 2")

    async def scenario() -> None:
        alice, bob, carol, dave = parties(config, dave={"answer_calls": 0})
        async with network_with(config, alice, bob, carol, dave) as net:
            await set_service(net, "bob", "forward-unconditional", "carol")
            await set_service(net, "carol", "forward-unconditional", "dave")
            call, _ = await place(alice, "alice", "bob")
            final = await call.call.wait_final()
            assert final is not None and final.status == 483
            assert "forwarded 2 times" in final.reason
            assert not dave.calls
    run_within(scenario, 60)


def test_forward_when_not_registered(config: Config) -> None:
    async def scenario() -> None:
        alice, carol = client(config, "alice"), client(config, "carol", answer_calls=0)
        async with network_with(config, alice, carol) as net:     # bob is offline
            await set_service(net, "bob", "forward-no-answer", "carol", after=5)
            call, _ = await place(alice, "alice", "bob")
            assert await call.wait_answered(WAIT)                 # at once: 480, not 5 s
            entries = history(carol.calls[call.id])
            assert entries[0].startswith(f"<{BOB}?Reason=SIP%3Bcause%3D480")
            assert entries[1] == f"<{CAROL};cause=503>;index=1.1;mp=1"   # not reachable
            await call.hangup()
    run_within(scenario, 30)


def test_caller_cancels_while_forward_no_answer_waits(config: Config) -> None:
    async def scenario() -> None:
        alice, bob, carol, dave = parties(config, bob={"answer_calls": 30},
                                          carol={"answer_calls": 0})
        async with network_with(config, alice, bob, carol, dave) as net:
            await set_service(net, "bob", "forward-no-answer", "carol", after=2)
            call, _ = await place(alice, "alice", "bob")
            await bob.wait_event(CallRinging, WAIT)
            await call.hangup()                                   # CANCEL before the 2 s
            final = await call.call.wait_final()
            assert final is not None and final.status == 487
            assert await ended(bob, call.id) == "cancelled"
            await asyncio.sleep(2.5)                              # past the no-answer timer
            assert not carol.calls and not rang(carol.pending_events(), call.id)
    run_within(scenario, 30)
