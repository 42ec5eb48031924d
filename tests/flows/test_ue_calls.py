"""Voice calls between two RcsClients through the real IMS core (issue 12, RFC 5359 2.1).

alice calls bob, bob answers automatically; each plays its own tone (440 Hz,
1000 Hz) and each recording holds the other's tone, not its own. Hold makes
bob's recording silent (he answered recvonly and alice sends nothing), resume
brings the tone back. Busy -> 486, CANCEL before the answer -> 487, an offer
with only G.729 -> 488 naming our codecs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.media import Recorder, ToneSource, tone_present
from imsbox.sdp import Direction
from imsbox.ue.call import MMTEL, VoiceCall
from imsbox.ue.client import RcsClient
from imsbox.ue.events import (
    CallAnswered, CallEnded, CallHeld, CallResumed, CallRinging, RcsEvent, RtpStatsEvent,
)

from helpers import alice_and_bob, client, network_with, run_within, settle

pytestmark = pytest.mark.timeout(60)
WAIT = 5.0
ALICE_TONE, BOB_TONE = 440.0, 1000.0


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return alice_and_bob(tmp_path)


def run(scenario: Callable[[], Awaitable[None]], limit: float = 45) -> None:
    run_within(scenario, limit)


async def next_event(ue: RcsClient, kind: type[RcsEvent]) -> RcsEvent:
    return await ue.wait_event(kind, WAIT)


def bob_plays(bob: RcsClient) -> Recorder:
    recorder = Recorder()
    bob.call_service.source = lambda: ToneSource(BOB_TONE)
    bob.call_service.sink = lambda: recorder
    return recorder


def hears(pcm: bytes, tone: float) -> bool:
    return tone_present(pcm, tone, min_windows=3)


async def answered_call(alice: RcsClient, bob: RcsClient) -> tuple[VoiceCall, Recorder, Recorder]:
    bob_rec = bob_plays(bob)
    call = await alice.call("bob", tone=ALICE_TONE)
    alice_rec = Recorder()
    call.rtp.sink = alice_rec
    assert await call.wait_answered(WAIT)
    return call, alice_rec, bob_rec


def test_call_audio_both_ways(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=0.2)
        async with network_with(config, alice, bob):
            call, alice_rec, bob_rec = await answered_call(alice, bob)
            ringing = await next_event(alice, CallRinging)
            assert ringing.to_json()["event"] == "call_ringing"
            answered = await next_event(alice, CallAnswered)
            assert answered.call_id == call.id and answered.direction == "sendrecv"  # type: ignore[attr-defined]
            assert (await next_event(bob, CallAnswered)).call_id == call.id  # type: ignore[attr-defined]
            # the INVITE as bob got it: MMTel ICSI in Contact, audio offer with our codecs
            bob_call = bob.calls[call.id].call
            invite = bob_call.request
            assert "3gpp-service.ims.icsi.mmtel" in invite.header("Contact")
            assert MMTEL in (invite.header("Accept-Contact") or "").replace("%3A", ":")
            assert b"m=audio" in invite.body and b"RTP/AVP 0 8 101" in invite.body
            alice_rec.clear()
            bob_rec.clear()
            await asyncio.sleep(1.5)
            assert hears(alice_rec.pcm, BOB_TONE) and not hears(alice_rec.pcm, ALICE_TONE)
            assert hears(bob_rec.pcm, ALICE_TONE) and not hears(bob_rec.pcm, BOB_TONE)
            await call.hangup()
            ended = await next_event(alice, CallEnded)
            assert ended.reason == "local hangup"  # type: ignore[attr-defined]
            bob_ended = await next_event(bob, CallEnded)
            assert bob_ended.reason == "remote hangup"  # type: ignore[attr-defined]
            assert not bob.calls and not alice.calls
    run(scenario)


def test_call_stats_event(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=0)
        async with network_with(config, alice, bob):
            call, _, _ = await answered_call(alice, bob)
            await asyncio.sleep(0.5)
            await call.hangup()
            stats = await next_event(alice, RtpStatsEvent)
            data = stats.to_json()
            assert data["event"] == "rtp_stats" and data["call_id"] == call.id
            assert data["stats"]["packets_sent"] > 10 and data["stats"]["packets_received"] > 10
            assert data["stats"]["malformed"] == 0
    run(scenario)


def test_hold_and_resume(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=0)
        async with network_with(config, alice, bob):
            call, alice_rec, bob_rec = await answered_call(alice, bob)
            await asyncio.sleep(1.0)
            assert hears(bob_rec.pcm, ALICE_TONE)
            assert await call.hold()
            held = await next_event(alice, CallHeld)
            assert held.direction == "sendonly"  # type: ignore[attr-defined]
            assert call.rtp.direction is Direction.SENDONLY
            bob_rtp = bob.calls[call.id].rtp
            assert bob_rtp.direction is Direction.RECVONLY   # the held side's answer
            assert b"a=sendonly" in (call.call.local_sdp or b"")
            assert b"a=recvonly" in (call.call.remote_sdp or b"")
            await asyncio.sleep(0.2)   # what was in flight plays out
            sent_by_bob = bob_rtp.stats.packets_sent
            bob_rec.clear()
            alice_rec.clear()
            await asyncio.sleep(1.5)
            assert bob_rtp.stats.packets_sent == sent_by_bob      # the held side stops sending
            assert not hears(alice_rec.pcm, BOB_TONE)             # and alice hears nothing of it
            assert hears(bob_rec.pcm, ALICE_TONE)                 # sendonly: alice still sends
            assert await call.resume()
            resumed = await next_event(alice, CallResumed)
            assert resumed.direction == "sendrecv"  # type: ignore[attr-defined]
            assert bob_rtp.direction is Direction.SENDRECV
            await asyncio.sleep(0.3)
            alice_rec.clear()
            await asyncio.sleep(1.5)
            assert hears(alice_rec.pcm, BOB_TONE)
            assert bob_rtp.stats.packets_sent > sent_by_bob + 50
            await call.hangup()
    run(scenario)


def test_busy(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", busy_calls=True)
        async with network_with(config, alice, bob):
            call = await alice.call("bob")
            assert not await call.wait_answered(WAIT)
            final = await call.call.wait_final()
            assert final is not None and final.status == 486
            assert (await next_event(alice, CallEnded)).reason == "busy"  # type: ignore[attr-defined]
            assert (await next_event(bob, CallEnded)).reason == "busy"  # type: ignore[attr-defined]
            await settle(lambda: not alice.calls and not bob.calls)
    run(scenario)


def test_cancel_before_answer(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=30)
        async with network_with(config, alice, bob):
            call = await alice.call("bob")
            await next_event(alice, CallRinging)
            await next_event(bob, CallRinging)
            await call.hangup()
            final = await call.call.wait_final()
            assert final is not None and final.status == 487
            assert (await next_event(alice, CallEnded)).reason == "cancelled"  # type: ignore[attr-defined]
            assert (await next_event(bob, CallEnded)).reason == "cancelled"  # type: ignore[attr-defined]
            assert not bob.calls
    run(scenario)


def test_callee_declines_while_ringing(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=30)
        async with network_with(config, alice, bob):
            call = await alice.call("bob")
            await next_event(bob, CallRinging)
            await bob.calls[call.id].hangup()
            final = await call.call.wait_final()
            assert final is not None and final.status == 603
            assert (await next_event(alice, CallEnded)).reason == "declined"  # type: ignore[attr-defined]
            assert (await next_event(bob, CallEnded)).reason == "declined"  # type: ignore[attr-defined]
            assert not bob.calls and not alice.calls
    run(scenario)


G729_OFFER = (b"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
              b"m=audio 40000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n")


def test_no_common_codec_488(config: Config) -> None:
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=0)
        async with network_with(config, alice, bob):
            assert alice.core.ua is not None
            origin = alice.call_service.origin()
            call = await alice.core.ua.invite("sip:bob@ims.test", G729_OFFER,
                                              [("P-Preferred-Identity", f"<{alice.aor}>")],
                                              origin=origin)
            final = await call.wait_final()
            assert final is not None and final.status == 488
            warning = final.header("Warning") or ""
            assert warning.startswith("305 ") and "PCMU" in warning and "PCMA" in warning
            assert (await next_event(bob, CallEnded)).reason == "not acceptable"  # type: ignore[attr-defined]
            await settle(lambda: not bob.calls)
    run(scenario)



def test_play_and_record_wav_files(config: Config, tmp_path: Path) -> None:
    """``call(play=..., record=...)``: alice plays a 700 Hz WAV, bob records her to a
    WAV (listen --record), alice records bob's 1000 Hz tone to hers."""
    import wave

    from imsbox.media import WavSink

    source = tmp_path / "tone.wav"
    with wave.open(str(source), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        tone = ToneSource(700.0)
        wav.writeframes(b"".join(tone.read(160) or b"" for _ in range(50)))
    alice_wav, bob_wav = tmp_path / "alice.wav", tmp_path / "bob.wav"

    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob", answer_calls=0)
        bob.call_service.source = lambda: ToneSource(BOB_TONE)
        bob.call_service.sink = lambda: WavSink(bob_wav)
        async with network_with(config, alice, bob):
            call = await alice.call("bob", play=source, record=alice_wav)
            assert await call.wait_answered(WAIT)
            await asyncio.sleep(1.5)
            await call.hangup()
            await next_event(bob, CallEnded)
    run(scenario)

    def pcm(path: Path) -> bytes:
        with wave.open(str(path), "rb") as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
            return wav.readframes(wav.getnframes())
    assert tone_present(pcm(bob_wav), 700) and not tone_present(pcm(bob_wav), BOB_TONE)
    assert tone_present(pcm(alice_wav), BOB_TONE) and not tone_present(pcm(alice_wav), 700)
