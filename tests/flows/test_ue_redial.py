"""Automatic redial through the real IMS core (RFC 5359 2.17, RFC 4235).

bob takes one call at a time (``call_waiting`` off: 486 while in a call). carol
calls bob; alice's call gets 486, so alice SUBSCRIBEs to bob's dialog events
(through the core, to bob's own UE notifier) and gets a NOTIFY listing bob's
confirmed dialog with carol; when carol hangs up bob NOTIFYs it terminated,
alice calls again, bob answers (alice's tone reaches him) and NOTIFYs that
call confirmed, and alice ends the subscription (RFC 5359 2.17 F1-F19).
Bounded: with bob busy all along, redial gives up after its timeout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.content.dialog_info import DialogState, parse_dialog_info
from imsbox.ims.provisioning import add_user
from imsbox.media import Recorder, ToneSource, tone_present
from imsbox.sip.endpoint import Priority, ServerContext
from imsbox.sip.message import Request
from imsbox.sip.ua.dialog_event import DIALOG_INFO_TYPE
from imsbox.store import open_store
from imsbox.ue.client import RcsClient
from imsbox.ue.events import RedialFailed, RedialRetry, RedialWaiting

from helpers import DOMAIN, alice_and_bob, client, network_with, run_within

pytestmark = pytest.mark.timeout(90)
WAIT = 5.0
ALICE_TONE = 600.0


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

    def of(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]


def one_call_at_a_time(config: Config) -> tuple[RcsClient, Recorder]:
    bob = client(config, "bob", answer_calls=0.2)
    bob.call_service.call_waiting = False
    recorder = Recorder()
    bob.call_service.sink = lambda: recorder
    bob.call_service.source = lambda: ToneSource(1000)
    return bob, recorder


def states(notify: Request) -> list[DialogState]:
    return [d.state for d in parse_dialog_info(notify.body).dialogs]


def test_busy_then_idle_redials(config: Config) -> None:
    async def scenario() -> None:
        alice, carol = client(config, "alice"), client(config, "carol")
        bob, bob_rec = one_call_at_a_time(config)
        async with network_with(config, alice, bob, carol):
            alice_tap, bob_tap = Tap(alice), Tap(bob)
            busy_call = await carol.call("bob")
            assert await busy_call.wait_answered(WAIT)
            redial = asyncio.ensure_future(alice.redial("bob", tone=ALICE_TONE, timeout=20))
            waiting = await alice.wait_event(RedialWaiting, WAIT)
            assert waiting.attempt == 1 and waiting.to_json()["event"] == "redial_waiting"  # type: ignore[attr-defined]
            first_invite = bob_tap.of("INVITE")[-1]
            assert first_invite.call_id == waiting.call_id  # type: ignore[attr-defined]
            # alice watches bob's dialogs: SUBSCRIBE Event: dialog, NOTIFY confirmed (carol)
            await asyncio.sleep(0.5)
            [subscribe] = bob_tap.of("SUBSCRIBE")[:1]
            assert subscribe.header("Event") == "dialog"
            assert DIALOG_INFO_TYPE in (subscribe.header("Accept") or "")
            first_notify = alice_tap.of("NOTIFY")[0]
            assert first_notify.header("Content-Type") == DIALOG_INFO_TYPE
            info = parse_dialog_info(first_notify.body)
            assert info.entity == "sip:bob@ims.test"
            [dialog] = info.dialogs
            assert dialog.state is DialogState.CONFIRMED and dialog.call_id == busy_call.id
            assert dialog.remote_tag == busy_call.call.request.from_.tag   # carol's tag
            assert not redial.done()                                        # still waiting
            await busy_call.hangup()                                        # bob is idle
            retry = await alice.wait_event(RedialRetry, WAIT)
            assert retry.attempt == 2  # type: ignore[attr-defined]
            call = await asyncio.wait_for(redial, WAIT)
            assert call.id == retry.call_id and call.answered.is_set()  # type: ignore[attr-defined]
            # F8: carol's dialog terminated, nothing in progress; F14: our new call
            # confirmed; F18: the final NOTIFY after alice's unsubscribe
            notifies = alice_tap.of("NOTIFY")
            idle = next(n for n in notifies if states(n) == [DialogState.TERMINATED])
            assert parse_dialog_info(idle.body).dialogs[0].call_id == busy_call.id
            last = parse_dialog_info(notifies[-1].body)
            assert "terminated" in (notifies[-1].header("Subscription-State") or "")
            assert [(d.call_id, d.state) for d in last.dialogs] == [(call.id, DialogState.CONFIRMED)]
            assert last.version > parse_dialog_info(idle.body).version
            invites = [r for r in bob_tap.of("INVITE") if not r.to.tag]
            assert [r.call_id for r in invites][-2:] == [waiting.call_id, call.id]  # type: ignore[attr-defined]
            bob_rec.clear()
            await asyncio.sleep(1.2)
            assert tone_present(bob_rec.pcm, ALICE_TONE)
            await call.hangup()
    run_within(scenario, 75)


def test_redial_gives_up_after_its_timeout(config: Config) -> None:
    async def scenario() -> None:
        alice, carol = client(config, "alice"), client(config, "carol")
        bob, _ = one_call_at_a_time(config)
        async with network_with(config, alice, bob, carol):
            busy_call = await carol.call("bob")
            assert await busy_call.wait_answered(WAIT)
            call = await asyncio.wait_for(alice.redial("bob", timeout=1.5), WAIT * 2)
            assert not call.answered.is_set() and call.end_reason == "busy"
            failed = await alice.wait_event(RedialFailed, WAIT)
            assert failed.reason.startswith("timeout")  # type: ignore[attr-defined]
            await busy_call.hangup()
    run_within(scenario, 60)
