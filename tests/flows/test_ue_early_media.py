"""Early media through the real IMS core (RFC 3261 13.2.1 / 13.3.1.1, RFC 3960).

bob alerts with 183 Session Progress carrying his SDP answer and plays an
announcement tone (700 Hz) before answering; alice's call reports
call_early_media and plays it at once (the 183 is reliable, RFC 3262, as
both ends support 100rel: PRACKed, and the 200 carries no SDP again); after the 200 bob
plays his own tone (1000 Hz) and the announcement is gone. Without the
option bob rings with a 180 and no SDP, and alice hears nothing before the 200.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.media import Recorder, ToneSource, tone_present
from imsbox.ue.events import CallEarlyMedia, CallRinging

from helpers import alice_and_bob, client, network_with, run_within

pytestmark = pytest.mark.timeout(60)
WAIT = 5.0
EARLY_TONE, BOB_TONE = 700.0, 1000.0


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return alice_and_bob(tmp_path)


def test_183_with_sdp_plays_before_the_answer(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=2.0)
        bob.call_service.early_media = True
        bob.call_service.early_source = lambda: ToneSource(EARLY_TONE)
        bob.call_service.source = lambda: ToneSource(BOB_TONE)
        async with network_with(config, alice, bob):
            call = await alice.call("bob")
            heard = Recorder()
            call.rtp.sink = heard
            early = await alice.wait_event(CallEarlyMedia, WAIT)
            assert early.call_id == call.id and early.status == 183  # type: ignore[attr-defined]
            [progress] = [p for p in call.call.progress if p.status == 183]
            assert progress.header("Content-Type") == "application/sdp"
            assert b"m=audio" in progress.body
            assert "100rel" in (progress.header("Require") or "")   # both support it: PRACKed
            assert all(p.status != 180 for p in call.call.progress)
            await asyncio.sleep(1.3)
            assert not call.answered.is_set()
            assert tone_present(heard.pcm, EARLY_TONE)           # before the 200
            assert not tone_present(heard.pcm, BOB_TONE, threshold=0.05, min_windows=1)
            assert await call.wait_answered(WAIT)
            final = await call.call.wait_final()
            assert final is not None
            if "100rel" in (progress.header("Require") or ""):
                assert not final.body     # RFC 3262: the answer went in the PRACKed 183
            else:
                assert final.body == progress.body   # 13.3.1.1: the same answer again
            await asyncio.sleep(0.3)
            heard.clear()
            await asyncio.sleep(1.2)
            assert tone_present(heard.pcm, BOB_TONE)
            assert not tone_present(heard.pcm, EARLY_TONE, threshold=0.05, min_windows=1)
            await call.hangup()
    run_within(scenario, 45)


def test_no_early_media_rings_with_180(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=1.5)
        bob.call_service.source = lambda: ToneSource(BOB_TONE)
        async with network_with(config, alice, bob):
            call = await alice.call("bob")
            heard = Recorder()
            call.rtp.sink = heard
            await alice.wait_event(CallRinging, WAIT)
            assert [p.status for p in call.call.progress] == [180]
            assert not call.call.progress[0].body
            await asyncio.sleep(1.0)
            assert not call.answered.is_set()
            assert not tone_present(heard.pcm, BOB_TONE, threshold=0.05, min_windows=1)
            await call.hangup()
    run_within(scenario, 45)
