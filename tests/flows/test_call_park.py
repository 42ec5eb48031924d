"""Call park (RFC 5359 2.15) on the media server, through the real IMS core.

Every UE is an RcsClient registered through the P-CSCF. Bob parks alice: his
REFER to sip:park@DOMAIN makes the media server claim an orbit in the store and
INVITE alice with Replaces from sip:park-N@DOMAIN; she hears the music; a call
to sip:park-N@DOMAIN gets her back (the music stops, the two hear each other);
nobody retrieving rings bob again. Audio is checked by tone detection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from imsbox.apps.media_server import MediaServer
from imsbox.config import Config, load_config
from imsbox.media import Recorder, ToneSource, tone_present
from imsbox.serve import Network
from imsbox.ue.call import VoiceCall
from imsbox.ue.client import RcsClient
from imsbox.ue.events import CallEnded, MessageReceived

from helpers import CORE_ROLES, DOMAIN, RequestTap, client, network_with, run_within, settle
from test_media_server import G729_OFFER, MOH_TONE, hears, media_config

pytestmark = pytest.mark.timeout(90)
WAIT = 6.0
TONES = {"alice": 440.0, "bob": 1000.0, "carol": 1600.0, "dave": 1300.0}
PARK = f"sip:park@{DOMAIN}"


def park_config(tmp_path: Path, timeout: int = 120) -> Config:
    """alice, bob, carol; the 700 Hz music; ``[telephony] park_timeout``."""
    media_config(tmp_path)
    path = tmp_path / "imsbox.toml"
    path.write_text(path.read_text() + f"\n[telephony]\npark_timeout = {timeout}\n")
    return load_config(path)


def answering(ue: RcsClient, name: str) -> Recorder:
    """``ue`` answers its calls with its tone and records them."""
    recorder = Recorder()
    ue.call_service.source = lambda: ToneSource(TONES[name])
    ue.call_service.sink = lambda: recorder
    return recorder


async def connected(caller: RcsClient, callee: RcsClient, target: str) -> tuple[
        VoiceCall, VoiceCall, Recorder]:
    """caller calls callee (who answers): both calls and what the caller hears."""
    call = await caller.call(target, tone=TONES[caller.user])
    heard = Recorder()
    call.rtp.sink = heard
    assert await call.wait_answered(WAIT)
    await settle(lambda: call.id in callee.calls, WAIT)
    return call, callee.calls[call.id], heard


async def heard_for(recorder: Recorder, seconds: float = 1.2) -> bytes:
    recorder.clear()
    await asyncio.sleep(seconds)
    return recorder.pcm


def park_server(net: Network) -> MediaServer:
    node = net.nodes["media"]
    assert isinstance(node, MediaServer)
    return node


async def parked_orbits(net: Network) -> list[int]:
    assert net.store is not None
    return [p.orbit for p in await net.store.parking.parked(DOMAIN)]


def test_park_then_retrieve_by_calling_the_orbit(tmp_path: Path) -> None:
    """2.15: bob's REFER parks alice in orbit 701 (she hears the music); carol's call
    to sip:park-701 gets her (no music, they hear each other); a second retrieve and
    an empty orbit get 404 with the reason; carol's BYE ends alice's call too."""
    config = park_config(tmp_path)

    async def scenario() -> None:
        alice = client(config, "alice")
        bob, carol = client(config, "bob", answer_calls=0.1), client(config, "carol")
        async with network_with(config, alice, bob, carol) as net:
            answering(bob, "bob")
            tap = RequestTap(alice)
            call, bob_call, alice_heard = await connected(alice, bob, "bob")
            assert hears(await heard_for(alice_heard, 0.8), TONES["bob"])
            parked = await bob.park(bob_call)
            assert (parked.orbit, parked.status) == (701, 200), parked
            assert parked.uri == f"sip:park-701@{DOMAIN}" and parked.recipient == alice.aor
            assert parked.to_json()["orbit"] == 701
            assert bob_call.ended.is_set() and not bob.calls     # alice BYEd bob (F12)
            # F9: the park server's INVITE replaced bob's call at alice, from the orbit
            invite = next(r for r in tap.of("INVITE") if r.call_id != call.id)
            assert str(invite.from_.uri) == parked.uri
            assert invite.headers.get("Replaces", "").startswith(call.id)
            assert "Referred-By" in invite.headers
            await settle(lambda: len(alice.calls) == 1 and call.id not in alice.calls, WAIT)
            pcm = await heard_for(alice_heard)
            assert hears(pcm, MOH_TONE) and not hears(pcm, TONES["bob"])
            assert await parked_orbits(net) == [701]
            # carol retrieves: the music stops, alice and carol hear each other
            back = await carol.retrieve(701, tone=TONES["carol"])
            carol_heard = Recorder()
            back.rtp.sink = carol_heard
            assert await back.wait_answered(WAIT)
            assert await parked_orbits(net) == []
            pcm = await heard_for(alice_heard)
            assert hears(pcm, TONES["carol"]) and not hears(pcm, MOH_TONE)
            assert hears(await heard_for(carol_heard), TONES["alice"])
            # the orbit is empty now: a second retrieve, and an orbit never used, 404
            for orbit in (701, 750):
                late = await bob.retrieve(orbit)
                final = await late.call.wait_final()
                assert final is not None and final.status == 404
                assert f"no call parked in orbit {orbit}" in final.reason
            await back.hangup()
            alice_call = next(iter(alice.calls.values()))
            await asyncio.wait_for(alice_call.ended.wait(), WAIT)
            assert alice_call.end_reason == "remote hangup"
            await settle(lambda: not park_server(net).legs, WAIT)
    run_within(scenario, 70)


def test_two_calls_parked_at_once_get_different_orbits(tmp_path: Path) -> None:
    config = park_config(tmp_path)

    async def scenario() -> None:
        alice, carol = client(config, "alice"), client(config, "carol")
        bob = client(config, "bob", answer_calls=0.1)
        async with network_with(config, alice, bob, carol) as net:
            answering(bob, "bob")
            first, first_bob, alice_heard = await connected(alice, bob, "bob")
            second, second_bob, carol_heard = await connected(carol, bob, "bob")
            results = await asyncio.gather(bob.park(first_bob), bob.park(second_bob))
            orbits = sorted(r.orbit for r in results if r.orbit is not None)
            assert orbits == [701, 702], results
            assert await parked_orbits(net) == [701, 702]
            for heard in (alice_heard, carol_heard):
                assert hears(await heard_for(heard), MOH_TONE)
            # each orbit gives back its own call
            alice_orbit = next(r.orbit for r in results if r.recipient == alice.aor)
            back = await bob.retrieve(alice_orbit, tone=TONES["bob"])
            assert await back.wait_answered(WAIT)
            assert await parked_orbits(net) == [1403 - alice_orbit]     # carol's
            assert hears(await heard_for(alice_heard), TONES["bob"])
            assert hears(await heard_for(carol_heard), MOH_TONE)
    run_within(scenario, 70)


def test_unretrieved_park_rings_the_parker_again(tmp_path: Path) -> None:
    """park_timeout = 1: the orbit is emptied, bob's phone rings from sip:park-701 and,
    answered, he talks with alice again."""
    config = park_config(tmp_path, timeout=1)

    async def scenario() -> None:
        alice = client(config, "alice")
        bob = client(config, "bob", answer_calls=0.1)
        async with network_with(config, alice, bob) as net:
            bob_heard = answering(bob, "bob")
            tap = RequestTap(bob)
            call, bob_call, alice_heard = await connected(alice, bob, "bob")
            parked = await bob.park(bob_call)
            assert parked.orbit == 701
            await settle(lambda: len(bob.calls) == 1, 5)        # the ring-back, answered
            ring = next(iter(bob.calls.values()))
            assert await ring.wait_answered(WAIT)
            invite = next(r for r in tap.of("INVITE") if r.call_id == ring.id)
            assert str(invite.from_.uri) == parked.uri
            assert "orbit 701" in (invite.headers.get("Subject") or "")
            assert await parked_orbits(net) == []
            pcm = await heard_for(alice_heard)
            assert hears(pcm, TONES["bob"]) and not hears(pcm, MOH_TONE)
            assert hears(await heard_for(bob_heard), TONES["alice"])
    run_within(scenario, 60)


def test_unanswered_ring_back_ends_the_parked_call(tmp_path: Path) -> None:
    config = park_config(tmp_path, timeout=1)

    async def scenario() -> None:
        alice = client(config, "alice")
        bob = client(config, "bob", answer_calls=0.1)
        async with network_with(config, alice, bob) as net:
            answering(bob, "bob")
            call, bob_call, _ = await connected(alice, bob, "bob")
            bob.call_service.busy = True              # bob's phone refuses the ring-back
            parked = await bob.park(bob_call)
            assert parked.orbit == 701
            alice_call = next(iter(alice.calls.values()))
            await asyncio.wait_for(alice_call.ended.wait(), 8)
            assert alice_call.end_reason == "remote hangup"
            assert await parked_orbits(net) == []
            await settle(lambda: not park_server(net).legs, WAIT)
    run_within(scenario, 60)


def test_park_by_transfer_to_the_park_uri(tmp_path: Path) -> None:
    """A phone without the 2.15 REFER: bob blind-transfers alice to sip:park@DOMAIN;
    alice's INVITE (Referred-By bob) is parked, bob is the parker in the store."""
    config = park_config(tmp_path)

    async def scenario() -> None:
        alice, carol = client(config, "alice"), client(config, "carol")
        bob = client(config, "bob", answer_calls=0.1)
        async with network_with(config, alice, bob, carol) as net:
            answering(bob, "bob")
            call, bob_call, alice_heard = await connected(alice, bob, "bob")
            result = await bob.transfer(bob_call, PARK)
            assert result.outcome == "transferred", result
            assert net.store is not None
            await settle(lambda: len(alice.calls) == 1 and call.id not in alice.calls, WAIT)
            records = await net.store.parking.parked(DOMAIN)
            assert [(r.orbit, r.parker, r.parked) for r in records] == [
                (701, bob.aor, alice.aor)]
            # alice hears her orbit: a beep, then 7-0-1 in DTMF (7: 852+1209 Hz, 0: 941+1336,
            # 1: 697+1209), then the music
            heard = await heard_for(alice_heard, 2.0)
            for digit_tone in (852.0, 941.0, 697.0, 1209.0):
                assert tone_present(heard, digit_tone, window=0.1, threshold=0.25,
                                    min_windows=1), digit_tone
            assert hears(await heard_for(alice_heard), MOH_TONE)
            # bob learns the orbit from a MESSAGE (the transfer's NOTIFY is alice's)
            told = await bob.wait_event(MessageReceived, WAIT)
            assert told.sender == f"sip:park-701@{DOMAIN}"
            assert "parked in orbit 701" in told.text  # type: ignore[attr-defined]
            back = await carol.retrieve(701, tone=TONES["carol"])
            assert await back.wait_answered(WAIT)
            pcm = await heard_for(alice_heard)
            assert hears(pcm, TONES["carol"]) and not hears(pcm, MOH_TONE)
    run_within(scenario, 60)


def test_park_refusals(tmp_path: Path) -> None:
    """A bad orbit URI gets 404; a full lot refuses the park (480 in the NOTIFY), the
    call goes on with bob."""
    media_config(tmp_path)
    path = tmp_path / "imsbox.toml"
    path.write_text(path.read_text() + "\n[telephony]\npark_orbits = [5, 5]\n")
    config = load_config(path)

    async def scenario() -> None:
        alice, carol = client(config, "alice"), client(config, "carol")
        bob = client(config, "bob", answer_calls=0.1)
        async with network_with(config, alice, bob, carol):
            answering(bob, "bob")
            bad = await alice.call(f"sip:park-abc@{DOMAIN}")
            final = await bad.call.wait_final()
            assert final is not None and final.status == 404 and "no such park orbit" in final.reason
            _, first_bob, _ = await connected(alice, bob, "bob")
            assert (await bob.park(first_bob)).orbit == 5
            call, second_bob, carol_heard = await connected(carol, bob, "bob")
            refused = await bob.park(second_bob)
            assert refused.orbit is None and refused.status == 480
            assert "every park orbit (5-5) is taken" in refused.reason
            assert not second_bob.ended.is_set() and not second_bob.held   # resumed
            assert hears(await heard_for(carol_heard), TONES["bob"])
            ended = [e for e in carol.pending_events() if isinstance(e, CallEnded)]
            assert not ended
    run_within(scenario, 60)


def test_music_hold_without_a_music_server_is_the_plain_hold(tmp_path: Path) -> None:
    """The UE's hold tries the network's music first (the CLI default): with no media
    server running the REFER fails fast and the call stays on the plain hold; a
    park fails the same way and the call goes on."""
    config = park_config(tmp_path)

    async def scenario() -> None:
        alice = client(config, "alice")
        bob = client(config, "bob", answer_calls=0.1)
        async with network_with(config, alice, bob, roles=CORE_ROLES):
            bob_heard = answering(bob, "bob")
            call, bob_call, alice_heard = await connected(alice, bob, "bob")
            started = asyncio.get_running_loop().time()
            held = await bob.music_hold(bob_call)
            assert asyncio.get_running_loop().time() - started < 5
            assert not held.playing and held.status >= 400, held
            assert bob_call.held and not bob_call.ended.is_set() and call.id in alice.calls
            assert bob_call.rtp.direction.value == "sendonly"          # the plain hold
            assert not hears(await heard_for(bob_heard), TONES["alice"])
            back = await bob.music_resume(held)                 # the plain resume
            assert back is bob_call and bob_call.rtp.direction.value == "sendrecv"
            assert hears(await heard_for(bob_heard), TONES["alice"])
            # no park server either: the park fails with the reason, the call goes on
            parked = await bob.park(bob_call)
            assert parked.orbit is None and parked.status >= 400 and parked.reason
            assert parked.to_json()["orbit"] is None
            assert not bob_call.ended.is_set() and bob_call.rtp.direction.value == "sendrecv"
            assert hears(await heard_for(bob_heard), TONES["alice"])
    run_within(scenario, 60)


def test_a_failed_retrieve_leaves_the_call_in_its_orbit(tmp_path: Path) -> None:
    """A retrieve the media server cannot answer (only G.729 offered: 488) puts the
    call back into the same orbit; the next retrieve gets it."""
    config = park_config(tmp_path)

    async def scenario() -> None:
        alice, carol = client(config, "alice"), client(config, "carol")
        bob = client(config, "bob", answer_calls=0.1)
        async with network_with(config, alice, bob, carol) as net:
            answering(bob, "bob")
            _, bob_call, alice_heard = await connected(alice, bob, "bob")
            assert (await bob.park(bob_call)).orbit == 701
            assert carol.core.ua is not None
            g729 = await carol.core.ua.invite(f"sip:park-701@{DOMAIN}", G729_OFFER,
                                              [("P-Preferred-Identity", f"<{carol.aor}>")],
                                              origin=carol.call_service.origin())
            final = await g729.wait_final()
            assert final is not None and final.status == 488
            assert await parked_orbits(net) == [701]
            assert hears(await heard_for(alice_heard), MOH_TONE)
            back = await carol.retrieve(701, tone=TONES["carol"])
            assert await back.wait_answered(WAIT)
            assert hears(await heard_for(alice_heard), TONES["carol"])
    run_within(scenario, 60)


def test_orbits_left_by_a_killed_media_server_are_freed_at_start(tmp_path: Path) -> None:
    config = park_config(tmp_path)
    holder = f"sip:{config.media_server.host}:{config.media_server.port}"

    async def scenario() -> None:
        async with Network(config, roles=("media",)) as net:
            assert net.store is not None
            assert await net.store.parking.claim(DOMAIN, 701, 799, "t", "sip:bob@x", "sip:a@x",
                                                 holder) is not None
            other = await net.store.parking.claim(DOMAIN, 701, 799, "u", "sip:bob@x",
                                                  "sip:c@x", "sip:10.9.9.9:5120")
            assert other is not None
            server = park_server(net)
            await server.close()                  # as if it had died with the call
            restarted = MediaServer(config, store=net.store)
            await restarted.start()               # frees its own orbit, not the other's
            net.nodes["media"] = restarted
            assert await parked_orbits(net) == [702]
    run_within(scenario, 30)


def test_two_retrieves_at_once_one_gets_the_call(tmp_path: Path) -> None:
    """Never two parties on one parked call: of two racing retrieves one is answered,
    the other gets 404 with the reason."""
    config = park_config(tmp_path)

    async def scenario() -> None:
        alice, carol = client(config, "alice"), client(config, "carol")
        bob = client(config, "bob", answer_calls=0.1)
        async with network_with(config, alice, bob, carol) as net:
            answering(bob, "bob")
            _, bob_call, alice_heard = await connected(alice, bob, "bob")
            assert (await bob.park(bob_call)).orbit == 701
            calls = await asyncio.gather(carol.retrieve(701, tone=TONES["carol"]),
                                         bob.retrieve(701, tone=TONES["bob"]))
            finals = [await c.call.wait_final() for c in calls]
            statuses = sorted(f.status for f in finals if f is not None)
            assert statuses == [200, 404], statuses
            loser = next(f for f in finals if f is not None and f.status == 404)
            assert "no call parked in orbit 701" in loser.reason
            winner = next(n for n, f in zip(("carol", "bob"), finals, strict=True)
                          if f is not None and f.status == 200)
            assert hears(await heard_for(alice_heard), TONES[winner])
            assert len(park_server(net).park.bridges) == 2
    run_within(scenario, 60)


def test_a_park_call_without_referred_by_names_its_parker(tmp_path: Path) -> None:
    """A phone that drops Referred-By when transferred (baresip 1.0) still parks for
    its transferor: sip:park@DOMAIN;parker=bob makes bob the parker (his MESSAGE)."""
    config = park_config(tmp_path)

    async def scenario() -> None:
        carol, bob = client(config, "carol"), client(config, "bob")
        async with network_with(config, carol, bob) as net:
            call = await carol.call(f"sip:park@{DOMAIN};parker=bob", tone=TONES["carol"])
            assert await call.wait_answered(WAIT)
            assert call.call.request.headers.get("Referred-By") is None
            assert net.store is not None
            records = await net.store.parking.parked(DOMAIN)
            assert [(r.orbit, r.parker, r.parked) for r in records] == [
                (701, bob.aor, carol.aor)]
            told = await bob.wait_event(MessageReceived, WAIT)
            assert "orbit 701" in told.text  # type: ignore[attr-defined]
            # a malformed name is ignored: the caller parks itself
            selfish = await bob.call(f"sip:park@{DOMAIN};parker=a%20b")
            assert await selfish.wait_answered(WAIT)
            records = await net.store.parking.parked(DOMAIN)
            assert [(r.orbit, r.parker) for r in records][1] == (702, bob.aor)
    run_within(scenario, 60)
