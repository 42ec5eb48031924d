"""The telephony AS as its subscribers' dialog event notifier (RFC 4235) and
click-to-dial controller (RFC 5359 2.18, RFC 3725), through the real core.

carol's plain UE (no dialog events of its own) subscribes to bob's dialogs;
the network answers from the calls it routes: call-id and tags as bob sees
them, trying/early/confirmed/terminated. ``imsbox call-control dial alice bob``
rings alice first, then bob, and the two hear each other.
"""

from __future__ import annotations

import argparse
import asyncio
import io
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.content.dialog_info import DialogInfo, DialogState, Direction, parse_dialog_info
from imsbox.sip.ua.refer import SubscriptionWatch
from imsbox.apps.telephony_cli import call_control_dial
from imsbox.testing import TestUe
from imsbox.ue.events import CallAnswered, CallRinging

from helpers import client, network_with, run_within
from telephony_kit import TONES, WAIT, ended, four_users, hear_each_other, plays, watch_dialogs

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return four_users(tmp_path)


async def next_info(watch: SubscriptionWatch) -> DialogInfo:
    return parse_dialog_info((await watch.next_notification(WAIT)).body)


async def until_state(watch: SubscriptionWatch, state: DialogState) -> DialogInfo:
    while True:
        info = await next_info(watch)
        if any(d.state is state for d in info.dialogs):
            return info


def test_dialog_events_of_a_plain_phone(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=0.5)
        async with network_with(config, alice, bob):
            carol = await TestUe("carol", "carol-secret", config).start()
            try:
                assert (await carol.register()).ok
                agent, watch = await watch_dialogs(carol, "sip:bob@ims.test")
                first = await next_info(watch)
                assert first.entity == "sip:bob@ims.test" and first.version == 0
                assert first.dialogs == []                       # bob is idle
                call = await alice.call("bob", tone=TONES["alice"])
                early = await until_state(watch, DialogState.EARLY)
                (dialog,) = early.dialogs
                invite = call.call.request
                assert dialog.call_id == call.id and dialog.direction is Direction.RECIPIENT
                assert dialog.remote_tag == invite.from_.tag     # alice's tag: remote for bob
                assert dialog.local_tag                          # bob's To tag
                assert dialog.remote and dialog.remote.identity and \
                    dialog.remote.identity.uri == "sip:alice@ims.test"
                assert await call.wait_answered(WAIT)
                confirmed = await until_state(watch, DialogState.CONFIRMED)
                assert confirmed.version > early.version
                assert confirmed.dialogs[0].local_tag == call.call.session.dialog.id.remote_tag  # type: ignore[union-attr]
                await call.hangup()
                done = await until_state(watch, DialogState.TERMINATED)
                assert done.dialogs[0].call_id == call.id
                again = await next_info(watch) if not watch.notifications.empty() else None
                assert again is None or again.dialogs == []
                agent.close()
            finally:
                await carol.close()
    run_within(scenario, 60)


def dial_args(config: Config, caller: str, callee: str) -> argparse.Namespace:
    return argparse.Namespace(config=str(config.data_dir.parent / "imsbox.toml"), data=None,
                              domain=None, store=None, caller=caller, callee=callee, json=False)


def test_click_to_dial_2_18(config: Config) -> None:
    async def scenario() -> None:
        alice = client(config, "alice", answer_calls=0.3)
        bob = client(config, "bob", answer_calls=0.3)
        async with network_with(config, alice, bob):
            alice_rec, bob_rec = plays(alice, "alice"), plays(bob, "bob")
            out, err = io.StringIO(), io.StringIO()
            status = await call_control_dial(dial_args(config, "alice", "bob"), out, err)
            assert status == 0, err.getvalue()
            lines = out.getvalue().splitlines()
            assert lines == ["calling sip:alice@ims.test", "ringing sip:alice@ims.test",
                             "answered sip:alice@ims.test", "calling sip:bob@ims.test",
                             "ringing sip:bob@ims.test", "answered sip:bob@ims.test",
                             "connected sip:alice@ims.test <-> sip:bob@ims.test"]
            assert (await alice.wait_event(CallRinging, WAIT))           # alice rang first
            (alice_call,) = alice.calls.values()
            (bob_call,) = bob.calls.values()
            assert "sip:bob@ims.test" in (alice_call.call.request.header("P-Asserted-Identity")
                                          or "")
            assert "sip:alice@ims.test" in (bob_call.call.request.header("P-Asserted-Identity")
                                            or "")
            await hear_each_other(alice_rec, "alice", bob_rec, "bob")
            await bob_call.hangup()                                     # the AS ends alice's leg
            assert await ended(alice, alice_call.id) == "remote hangup"
    run_within(scenario, 60)


def test_click_to_dial_busy_callee_and_bad_input(config: Config) -> None:
    async def scenario() -> None:
        alice = client(config, "alice", answer_calls=0)
        bob = client(config, "bob", busy_calls=True)
        async with network_with(config, alice, bob):
            out, err = io.StringIO(), io.StringIO()
            assert await call_control_dial(dial_args(config, "alice", "bob"), out, err) == 1
            assert "486" in err.getvalue()
            assert (await alice.wait_event(CallAnswered, WAIT))
            await asyncio.sleep(0.3)
            assert not alice.calls                            # the AS hung alice's leg up
            err = io.StringIO()
            assert await call_control_dial(dial_args(config, "alice", "zed"), out, err) == 1
            assert "no subscriber sip:zed@ims.test" in err.getvalue()
            err = io.StringIO()
            assert await call_control_dial(dial_args(config, "alice", "sip:"), out, err) == 2
            assert "not a user" in err.getvalue()
        err = io.StringIO()   # the network is down: nobody to ask
        assert await call_control_dial(dial_args(config, "alice", "bob"), out, err) == 3
        assert "no telephony AS running" in err.getvalue()
    run_within(scenario, 60)
