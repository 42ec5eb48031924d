"""The media server (MRF) through the real IMS core: music on hold (RFC 5359 2.3),
the network conference focus (2.10, RFC 4579), announcements, and bad input.

Every UE is an RcsClient registered through the P-CSCF; its INVITEs to the
media server's PSIs go P-CSCF -> S-CSCF -> I-CSCF (HSS: the PSI's AS) -> media
server. Audio is checked by tone detection on what each UE recorded.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest

from imsbox.apps.media_server import MediaServer
from imsbox.config import Config, ConfigError, load_config
from imsbox.ims.provisioning import add_user
from imsbox.media import Recorder, ToneSource, tone_present
from imsbox.store import open_store
from imsbox.testing import free_udp_block
from imsbox.ue.call import VoiceCall
from imsbox.ue.client import RcsClient
from imsbox.ue.events import CallEnded, SendError

from helpers import DOMAIN, alice_and_bob, client, network_with, run_within, settle

pytestmark = pytest.mark.timeout(90)
WAIT = 5.0
MOH_TONE = 700.0
TONES = {"alice": 440.0, "bob": 1000.0, "carol": 1600.0}
MOH = f"sip:moh@{DOMAIN}"
FACTORY = f"sip:conference@{DOMAIN}"


def write_tone_wav(path: Path, frequency: float, seconds: float = 2.0) -> Path:
    pcm = ToneSource(frequency, 0.3).read(int(8000 * seconds)) or b""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)
    return path


def media_config(tmp_path: Path, extra: str = "") -> Config:
    """alice, bob and carol; the media server plays a 700 Hz WAV on hold."""
    config = alice_and_bob(tmp_path)
    wav = write_tone_wav(tmp_path / "moh.wav", MOH_TONE)
    path = tmp_path / "imsbox.toml"
    text = path.read_text()
    text = text.replace("[media_server]\n", f'[media_server]\nmoh_file = "{wav}"\n{extra}')
    path.write_text(text)

    async def carol() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "carol", "carol-secret", "+15550003")
    asyncio.run(carol())
    return load_config(path)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return media_config(tmp_path)


def hears(pcm: bytes, tone: float, windows: int = 3, threshold: float = 0.5) -> bool:
    return tone_present(pcm, tone, min_windows=windows, threshold=threshold)


def hears_in_mix(pcm: bytes, tone: float) -> bool:
    """In a mix of two tones each carries about half the energy."""
    return hears(pcm, tone, threshold=0.3)


async def recorded(call: VoiceCall, seconds: float) -> bytes:
    recorder = Recorder()
    call.rtp.sink = recorder
    await asyncio.sleep(seconds)
    return recorder.pcm


def media_server(net: object) -> MediaServer:
    node = net.nodes["media"]  # type: ignore[attr-defined]
    assert isinstance(node, MediaServer)
    return node


# -- music on hold -----------------------------------------------------------------------

def test_moh_invite_streams_music_sendonly(config: Config) -> None:
    async def scenario() -> None:
        alice = client(config, "alice")
        async with network_with(config, alice) as net:
            call = await alice.call(MOH)
            assert await call.wait_answered(WAIT)
            # the 200 OK's SDP: the music server only sends (RFC 5359 2.3 F13)
            assert b"a=sendonly" in (call.call.remote_sdp or b"")
            assert call.rtp.direction.value == "recvonly"
            pcm = await recorded(call, 1.2)
            assert hears(pcm, MOH_TONE)
            assert len(media_server(net).legs) == 1
            await call.hangup()
            await settle(lambda: not media_server(net).legs)
    run_within(scenario, 60)


def test_moh_by_refer_and_resume_with_replaces(config: Config) -> None:
    """2.3: bob holds alice, REFERs the music server to her with Replaces (F8);
    the music server's INVITE replaces bob's call at alice (F12), who hears the
    music; on resume bob Replaces the music dialog (F19) and the music stops."""
    async def scenario() -> None:
        alice = client(config, "alice")
        bob = client(config, "bob", answer_calls=0.1)
        async with network_with(config, alice, bob) as net:
            bob.call_service.source = lambda: ToneSource(TONES["bob"])
            call = await alice.call("bob", tone=TONES["alice"])
            alice_rec = Recorder()
            call.rtp.sink = alice_rec
            assert await call.wait_answered(WAIT)
            await settle(lambda: call.id in bob.calls, WAIT)
            bob_call = bob.calls[call.id]
            await asyncio.sleep(0.6)
            assert hears(alice_rec.pcm, TONES["bob"])
            music = await bob.music_hold(bob_call)
            assert music.status == 200 and music.dialog is not None
            await settle(lambda: len(alice.calls) == 1 and call.id not in alice.calls, WAIT)
            moh_call = next(iter(alice.calls.values()))
            assert moh_call.call.request.headers.get("Replaces")
            assert "Referred-By" in moh_call.call.request.headers
            alice_rec.clear()
            await asyncio.sleep(1.2)
            assert hears(alice_rec.pcm, MOH_TONE)
            assert not hears(alice_rec.pcm, TONES["bob"])
            assert len(media_server(net).legs) == 1
            back = await bob.music_resume(music)
            assert await back.wait_answered(WAIT)
            await settle(lambda: not media_server(net).legs, WAIT)   # alice BYEd the music
            alice_rec.clear()
            await asyncio.sleep(1.2)
            assert hears(alice_rec.pcm, TONES["bob"])
            assert not hears(alice_rec.pcm, MOH_TONE)
    run_within(scenario, 60)


def test_many_moh_streams_share_one_source(config: Config) -> None:
    async def scenario() -> None:
        alice = client(config, "alice")
        async with network_with(config, alice) as net:
            calls = [await alice.call(MOH) for _ in range(5)]
            for call in calls:
                assert await call.wait_answered(WAIT)
            server = media_server(net)
            assert len(server.legs) == 5 and server.music.listeners == 5
            sinks = [Recorder() for _ in calls]
            for call, sink in zip(calls, sinks, strict=True):
                call.rtp.sink = sink
            await asyncio.sleep(1.0)
            assert all(hears(s.pcm, MOH_TONE, 2) for s in sinks)
    run_within(scenario, 60)


# -- network conference (2.10) -------------------------------------------------------------

async def join(ue: RcsClient, uri: str) -> VoiceCall:
    call = await ue.call(uri, tone=TONES[ue.user])
    assert await call.wait_answered(WAIT)
    return call


def test_conference_three_way_mix_minus_and_leave(config: Config) -> None:
    async def scenario() -> None:
        ues = [client(config, n) for n in ("alice", "bob", "carol")]
        alice, bob, carol = ues
        async with network_with(config, *ues) as net:
            first = await join(alice, FACTORY)
            contact = first.call.session.dialog.remote_target  # type: ignore[union-attr]
            invite_ok = first.call.final.result()
            assert invite_ok is not None
            assert ";isfocus" in (invite_ok.header("Contact") or "")
            conference = str(contact)
            assert conference.startswith("sip:conference-") and conference.endswith(DOMAIN)
            calls = {"alice": first, "bob": await join(bob, conference),
                     "carol": await join(carol, conference)}
            server = media_server(net)
            assert sorted(server.conferences[conference].participants) == [
                f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol")]
            sinks = {n: Recorder() for n in calls}
            for n, call in calls.items():
                call.rtp.sink = sinks[n]
            await asyncio.sleep(1.5)
            for name, sink in sinks.items():
                others = [t for n, t in TONES.items() if n != name]
                assert all(hears_in_mix(sink.pcm, t) for t in others), name
                assert not hears(sink.pcm, TONES[name], threshold=0.1), f"{name} hears themselves"
            # carol leaves: alice and bob go on hearing each other
            await calls["carol"].hangup()
            await settle(lambda: len(server.conferences[conference].legs) == 2, WAIT)
            for sink in sinks.values():
                sink.clear()
            await asyncio.sleep(1.2)
            assert hears(sinks["alice"].pcm, TONES["bob"])
            assert hears(sinks["bob"].pcm, TONES["alice"])
            assert not hears(sinks["alice"].pcm, TONES["carol"], threshold=0.1)
            assert not calls["alice"].ended.is_set() and not calls["bob"].ended.is_set()
            # the last one out ends it: a later INVITE gets 404 with the reason
            await calls["alice"].hangup()
            await calls["bob"].hangup()
            await settle(lambda: conference not in server.conferences, WAIT)
            late = await alice.call(conference)
            final = await late.call.wait_final()
            assert final is not None and final.status == 404
            assert "no such conference" in final.reason
    run_within(scenario, 70)


def test_conference_refer_invites_a_participant(config: Config) -> None:
    """RFC 4579 5.5: a participant's REFER makes the focus INVITE carol."""
    async def scenario() -> None:
        alice, bob = client(config, "alice"), client(config, "bob")
        carol = client(config, "carol", answer_calls=0.1)
        async with network_with(config, alice, bob, carol) as net:
            carol.call_service.source = lambda: ToneSource(TONES["carol"])
            first = await join(alice, FACTORY)
            watch = alice.transfers.agent.refer(first.call, f"sip:carol@{DOMAIN}",
                                                referred_by=f"<{alice.aor}>")
            assert (await asyncio.wait_for(watch.answered, WAIT)).status == 202
            done = await asyncio.wait_for(watch.done, WAIT)
            assert done is not None and done.status == 200
            server = media_server(net)
            conference = next(iter(server.conferences.values()))
            await settle(lambda: len(conference.legs) == 2, WAIT)
            carol_call = next(iter(carol.calls.values()))
            assert carol_call.call.request.headers.get("Referred-By")
            assert str(carol_call.call.request.from_.uri) == conference.uri
            alice_rec = await recorded(first, 1.2)
            assert hears(alice_rec, TONES["carol"])
            assert not first.ended.is_set()
            # outside a dialog: only a participant may REFER the focus (RFC 4579 5.5)
            outsider = bob.transfers.agent.refer_out_of_dialog(
                conference.uri, f"sip:carol@{DOMAIN}", origin=bob.call_service.origin())
            answer = await asyncio.wait_for(outsider.answered, WAIT)
            assert answer.status == 403 and "not a participant" in answer.reason
            unknown = bob.transfers.agent.refer_out_of_dialog(
                f"sip:conference-gone@{DOMAIN}", f"sip:carol@{DOMAIN}",
                origin=bob.call_service.origin())
            answer = await asyncio.wait_for(unknown.answered, WAIT)
            assert answer.status == 404 and "no such conference" in answer.reason
    run_within(scenario, 60)


# -- announcements --------------------------------------------------------------------------

def test_announcement_plays_then_bye(config: Config) -> None:
    async def scenario() -> None:
        alice = client(config, "alice")
        async with network_with(config, alice):
            call = await alice.call(f"sip:announce@{DOMAIN};play=beep")
            recorder = Recorder()
            call.rtp.sink = recorder
            assert await call.wait_answered(WAIT)
            await asyncio.wait_for(call.ended.wait(), WAIT)
            assert call.end_reason == "remote hangup"
            assert hears(recorder.pcm, 1000.0, 2)
            busy = await alice.call(f"sip:announce-busy@{DOMAIN}")
            busy_rec = Recorder()
            busy.rtp.sink = busy_rec
            await asyncio.wait_for(busy.ended.wait(), 8)
            assert hears(busy_rec.pcm, 480.0, 2) or hears(busy_rec.pcm, 620.0, 2)
    run_within(scenario, 60)


# -- bad input ---------------------------------------------------------------------------------

def test_bad_input_answers(config: Config) -> None:
    async def scenario() -> None:
        alice = client(config, "alice")
        async with network_with(config, alice):
            unknown = await alice.call(f"sip:conference-nope@{DOMAIN}")
            final = await unknown.call.wait_final()
            assert final is not None and final.status == 404
            assert "no such conference" in final.reason
            nothing = await alice.call(f"sip:announce@{DOMAIN};play=nothing-here")
            final = await nothing.call.wait_final()
            assert final is not None and final.status == 404 and "announcement" in final.reason
            # an offer with only G.729: 488 with a Warning naming our codecs
            assert alice.core.ua is not None
            g729 = await alice.core.ua.invite(MOH, G729_OFFER,
                                              [("P-Preferred-Identity", f"<{alice.aor}>")],
                                              origin=alice.call_service.origin())
            final = await g729.wait_final()
            assert final is not None and final.status == 488
            warning = final.header("Warning") or ""
            assert warning.startswith("305 ") and "PCMU" in warning
    run_within(scenario, 60)


def test_rtp_port_range_exhausted_480(tmp_path: Path) -> None:
    start = free_udp_block(4)   # two pairs, from this test worker's own ports
    config = media_config(tmp_path, f"rtp_ports = [{start}, {start + 4}]\n")

    async def scenario() -> None:
        alice = client(config, "alice")
        async with network_with(config, alice):
            calls = [await alice.call(MOH) for _ in range(2)]
            for call in calls:
                assert await call.wait_answered(WAIT)
            third = await alice.call(MOH)
            final = await third.call.wait_final()
            # 480 with the reason (a 503 would reach us as a bare 500, RFC 3261 16.7)
            assert final is not None and final.status == 480
            assert "no free RTP port" in final.reason
            assert final.header("Retry-After")
            await calls[0].hangup()
            again = await alice.call(MOH)   # a port came back
            assert await again.wait_answered(WAIT)
    run_within(scenario, 60)


def test_media_server_restart_ends_calls_cleanly(config: Config) -> None:
    async def scenario() -> None:
        alice = client(config, "alice")
        async with network_with(config, alice) as net:
            call = await alice.call(MOH)
            assert await call.wait_answered(WAIT)
            await media_server(net).close()          # stopped in mid-call: BYE
            await asyncio.wait_for(call.ended.wait(), WAIT)
            ended = [e for e in alice.pending_events() if isinstance(e, CallEnded)]
            assert ended and ended[-1].reason == "remote hangup"  # type: ignore[attr-defined]
            restarted = MediaServer(config)
            await restarted.start()
            net.nodes["media"] = restarted
            again = await alice.call(MOH)
            assert await again.wait_answered(WAIT)
            assert hears(await recorded(again, 1.0), MOH_TONE, 2)
    run_within(scenario, 60)


G729_OFFER = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
              b"m=audio 49170 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n")


def test_bad_moh_file_refused_at_start(tmp_path: Path) -> None:
    config = media_config(tmp_path)
    (tmp_path / "moh.wav").write_bytes(b"not a wav at all")
    with pytest.raises(ConfigError, match="moh_file"):
        MediaServer(config)


def test_media_server_dying_mid_call_ends_by_rtp_timeout(config: Config) -> None:
    """Killed, not stopped: no BYE comes; the phone's RTP timeout ends the call."""
    async def scenario() -> None:
        alice = client(config, "alice")
        alice.call_service.rtp_timeout = 1.5
        async with network_with(config, alice) as net:
            call = await alice.call(MOH)
            assert await call.wait_answered(WAIT)
            await asyncio.sleep(2.0)              # music flows: no timeout while it does
            assert not call.ended.is_set()
            server = media_server(net)
            await server.endpoint.close()         # as after kill -9: no SIP, no RTP
            for leg in list(server.legs.values()):
                await leg.rtp.close()
            await asyncio.wait_for(call.ended.wait(), 12)
            assert call.end_reason == "media timeout"
    run_within(scenario, 60)


def test_restart_while_held_on_music_and_in_conference(config: Config) -> None:
    """A stop in mid-call of a 2.3 music hold and of a 3-party conference: every
    leg gets the media server's BYE (call_ended 'remote hangup'), nobody keeps a
    dialog; the held party's call ends (its call to the holder was replaced by
    the music's), and the holder's resume finds no music dialog at the held party
    (SendError 'did not take the call back', no call left). After a restart a new conference mixes."""
    async def scenario() -> None:
        alice, carol = client(config, "alice"), client(config, "carol")
        bob = client(config, "bob", answer_calls=0.1)
        ues = [alice, bob, carol]
        async with network_with(config, *ues) as net:
            call = await alice.call("bob", tone=TONES["alice"])
            assert await call.wait_answered(WAIT)
            await settle(lambda: call.id in bob.calls, WAIT)
            music = await bob.music_hold(bob.calls[call.id])
            assert music.status == 200
            await settle(lambda: len(alice.calls) == 1 and call.id not in alice.calls, WAIT)
            held = next(iter(alice.calls.values()))
            first = await join(carol, FACTORY)
            conference = str(first.call.session.dialog.remote_target)  # type: ignore[union-attr]
            others = [first, await join(bob, conference)]
            await media_server(net).close()                   # stopped in mid-call
            for leg in (held, *others):
                await asyncio.wait_for(leg.ended.wait(), WAIT)
                assert leg.end_reason == "remote hangup", leg.end_reason
            await settle(lambda: not any(ue.calls for ue in ues), WAIT)
            with pytest.raises(SendError, match="did not take the call back"):
                await bob.music_resume(music)
            assert not alice.calls and not bob.calls
            restarted = MediaServer(config)
            await restarted.start()
            net.nodes["media"] = restarted
            calls = {"alice": await join(alice, FACTORY)}
            conference = str(calls["alice"].call.session.dialog.remote_target)  # type: ignore[union-attr]
            calls |= {"bob": await join(bob, conference), "carol": await join(carol, conference)}
            sinks = {n: Recorder() for n in calls}
            for n, leg in calls.items():
                leg.rtp.sink = sinks[n]
            await asyncio.sleep(1.5)
            for name, sink in sinks.items():
                assert all(hears_in_mix(sink.pcm, t) for n, t in TONES.items() if n != name), name
                assert not hears(sink.pcm, TONES[name], threshold=0.1), name
    run_within(scenario, 60)
