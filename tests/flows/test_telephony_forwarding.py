"""What a forwarded call tells its parties, through the real core: the caller
gets ``181 Call Is Being Forwarded`` (with the History-Info so far) each time
the AS re-targets (RFC 7044, TS 24.604); the target sees History-Info, and
also Diversion (RFC 5806) when it set ``diversion on``."""

from __future__ import annotations

from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.ue.call import VoiceCall

from helpers import client, network_with, run_within
from telephony_kit import WAIT, four_users, hear_each_other, history, place, plays, set_service

pytestmark = pytest.mark.timeout(90)
BOB, CAROL = "sip:bob@ims.test", "sip:carol@ims.test"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return four_users(tmp_path)


def forwarded_181s(call: VoiceCall) -> list[list[str]]:
    """The History-Info entries of each 181 the caller got."""
    return [[v.strip() for v in r.headers.values("History-Info")]
            for r in call.call.progress if r.status == 181]


def test_unconditional_181_and_diversion(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=0)
        carol = client(config, "carol", answer_calls=0.3)
        async with network_with(config, alice, bob, carol) as net:
            await set_service(net, "bob", "forward-unconditional", "carol")
            await set_service(net, "carol", "diversion", "on")
            carol_rec = plays(carol, "carol")
            call, alice_rec = await place(alice, "alice", "bob")
            assert await call.wait_answered(WAIT)
            (first,) = [r for r in call.call.progress if r.status == 181]
            assert first.reason == "Call Is Being Forwarded"
            assert forwarded_181s(call) == [[f"<{BOB}>;index=1",
                                             f"<{CAROL};cause=302>;index=1.1;mp=1"]]
            invite = carol.calls[call.id].call.request
            assert history(carol.calls[call.id]) == [
                f"<{BOB}>;index=1", f"<{CAROL};cause=302>;index=1.1;mp=1"]
            assert invite.headers.values("Diversion") == [
                f"<{BOB}>;reason=unconditional;counter=1"]
            await hear_each_other(alice_rec, "alice", carol_rec, "carol")
            await call.hangup()
            # History-Info only is the default: without the setting no Diversion
            assert net.store is not None
            await net.store.service_data.remove(CAROL, "diversion")
            again, _ = await place(alice, "alice", "bob")
            assert await again.wait_answered(WAIT)
            assert carol.calls[again.id].call.request.header("Diversion") is None
            assert len(forwarded_181s(again)) == 1
            await again.hangup()
    run_within(scenario, 60)


def test_find_me_181_per_step_and_diversion_chain(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=30)
        carol = client(config, "carol", busy_calls=True)
        dave = client(config, "dave", answer_calls=0.2)
        async with network_with(config, alice, bob, carol, dave) as net:
            await set_service(net, "bob", "find-me", "carol", "dave", after=1)
            await set_service(net, "dave", "diversion", "on")
            call, _ = await place(alice, "alice", "bob")
            assert await call.wait_answered(WAIT)
            steps = forwarded_181s(call)
            assert len(steps) == 2                          # bob -> carol, carol -> dave
            assert steps[0][-1] == f"<{CAROL};cause=408>;index=1.1;mp=1"
            assert steps[1][-1] == "<sip:dave@ims.test;cause=486>;index=1.1.1;mp=1.1"
            invite = dave.calls[call.id].call.request
            assert invite.headers.values("Diversion") == [     # newest first (RFC 5806)
                f"<{CAROL}>;reason=user-busy;counter=1",
                f"<{BOB}>;reason=no-answer;counter=1"]
            await call.hangup()
    run_within(scenario, 60)
