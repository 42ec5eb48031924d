"""``imsbox ue`` 3-way calls, redial, Join and early media in subprocesses against
``imsbox serve`` (RFC 5359 2.10, 2.11, 2.17; RFC 3960).

alice ``call bob`` then types ``conference carol`` (hold bob, call carol, mix): the WAVs show
mix-minus (each has the other two tones, not its own). ``call --redial``
waits while bob (``listen --answer --no-call-waiting``) talks to carol and
gets through once carol hangs up. ``call --join`` naming no dialog exits 1
after a 481. ``listen --early-media --early-tone`` is heard before the answer.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.ims.provisioning import add_user
from imsbox.media import tone_present
from imsbox.store import open_store
from imsbox.testing import write_loopback_config

from test_ue_cli import DOMAIN, Proc, ue, ue_args

pytestmark = pytest.mark.timeout(90)
TONES = {"alice": 600.0, "bob": 1000.0, "carol": 1400.0}


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Path, Config]]:
    """``imsbox serve`` with alice, bob and carol provisioned."""
    path, config = write_loopback_config(tmp_path)

    async def in_store() -> None:
        async with open_store(config.store_location) as store:
            for name in TONES:
                await add_user(store, DOMAIN, name, f"{name}-secret")
    asyncio.run(in_store())
    serve = Proc("serve", "--config", str(path))
    try:
        serve.wait_line(lambda line: "pcscf listening on udp" in line, 15)
        yield path, config
    finally:
        assert serve.stop() == 0, serve.stderr


def listener(config: Config, name: str, *extra: str) -> Proc:
    proc = Proc(*ue_args(config, name), "listen", *extra)
    proc.wait_event("listening")
    return proc


def pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        return w.readframes(w.getnframes())


def test_conference_target_typed_mix_minus(network: tuple[Path, Config],
                                            tmp_path: Path) -> None:
    _, config = network
    wavs = {name: tmp_path / f"{name}.wav" for name in TONES}
    others = [listener(config, name, "--answer", "--tone", str(TONES[name]),
                       "--record", str(wavs[name])) for name in ("bob", "carol")]
    alice = Proc(*ue_args(config, "alice"), "call", "bob", "--tone", str(TONES["alice"]),
                 "--record", str(wavs["alice"]), stdin=subprocess.PIPE)
    try:
        alice.wait_event("call_answered", 20)
        alice.type("conference carol")
        alice.wait_event("call_held")
        added = alice.wait_event("call_answered")
        assert added["to"] == "sip:carol@ims.test"
        alice.wait_event("call_resumed")    # bob's leg: the focus re-INVITE, then the mix
        mixing = alice.wait_event("call_conference")
        assert mixing["state"] == "mixing" and len(mixing["calls"]) == 2
        assert mixing["parties"] == ["sip:bob@ims.test", "sip:carol@ims.test"]
        time.sleep(2.5)
        alice.type("hangup")
        assert alice.proc.wait(15) == 0, alice.stderr
    finally:
        alice.stop()
        for proc in others:
            proc.stop()
    for name, path in wavs.items():
        heard = pcm(path)
        for other, tone in TONES.items():
            if other != name:
                assert tone_present(heard, tone, threshold=0.2), (name, other)
        assert not tone_present(heard, TONES[name], threshold=0.05, min_windows=1), name


def test_redial_waits_for_idle_then_gets_through(network: tuple[Path, Config]) -> None:
    _, config = network
    bob = listener(config, "bob", "--answer", "--no-call-waiting")
    carol = Proc(*ue_args(config, "carol"), "call", "bob", stdin=subprocess.PIPE)
    alice = None
    try:
        carol.wait_event("call_answered")
        alice = Proc(*ue_args(config, "alice"), "call", "bob", "--redial",
                     "--redial-timeout", "20", stdin=subprocess.PIPE)
        busy = alice.wait_event("call_ended")
        assert busy["reason"] == "busy"
        waiting = alice.wait_event("redial_waiting")
        assert waiting["to"] == "sip:bob@ims.test" and waiting["attempt"] == 1
        carol.type("hangup")
        assert carol.proc.wait(15) == 0
        retry = alice.wait_event("redial_retry")
        answered = alice.wait_event("call_answered")
        assert answered["call_id"] == retry["call_id"] != busy["call_id"]
        alice.type("hangup")
        assert alice.proc.wait(15) == 0, alice.stderr
    finally:
        for proc in (alice, carol, bob):
            if proc is not None:
                proc.stop()


def test_redial_timeout_exits_1_with_the_reason(network: tuple[Path, Config]) -> None:
    _, config = network
    bob = listener(config, "bob", "--answer", "--no-call-waiting")
    carol = Proc(*ue_args(config, "carol"), "call", "bob", stdin=subprocess.PIPE)
    try:
        carol.wait_event("call_answered")
        result = ue(config, "alice", "call", "bob", "--redial", "--redial-timeout", "1")
        assert result.returncode == 1, result.stderr
        assert '"event": "redial_failed"' in result.stdout and "timeout" in result.stdout
    finally:
        carol.stop()
        bob.stop()


def test_join_naming_no_dialog_exits_1(network: tuple[Path, Config]) -> None:
    _, config = network
    alice = listener(config, "alice", "--answer")
    try:
        carol = Proc(*ue_args(config, "carol"), "call", "alice", "--join",
                     "nope;to-tag=a;from-tag=b", stdin=subprocess.PIPE)
        ended = carol.wait_event("call_ended")
        assert ended["reason"] == "failed 481"
        assert carol.proc.wait(15) == 1, carol.stderr
    finally:
        alice.stop()


def test_listen_early_media_is_heard_before_the_answer(network: tuple[Path, Config],
                                                       tmp_path: Path) -> None:
    _, config = network
    wav = tmp_path / "alice.wav"
    bob = listener(config, "bob", "--answer", "--after", "2", "--tone", "1000",
                   "--early-media", "--early-tone", "700")
    alice = Proc(*ue_args(config, "alice"), "call", "bob", "--record", str(wav),
                 stdin=subprocess.PIPE)
    try:
        early = alice.wait_event("call_early_media")
        assert early["status"] == 183
        alice.wait_event("call_answered")
        time.sleep(1.0)
        alice.type("hangup")
        assert alice.proc.wait(15) == 0, alice.stderr
    finally:
        alice.stop()
        bob.stop()
    heard = pcm(wav)
    assert tone_present(heard[:2 * 8000 * 2], 700)      # the first 2 s: before the 200
    assert tone_present(heard, 1000)


def test_conference_with_a_busy_party_goes_back_to_the_call(
        network: tuple[Path, Config]) -> None:
    _, config = network
    procs = [listener(config, "bob", "--answer"), listener(config, "carol", "--busy")]
    alice = Proc(*ue_args(config, "alice"), "call", "bob", stdin=subprocess.PIPE)
    try:
        alice.wait_event("call_answered", 20)
        alice.type("conference carol")
        alice.wait_event("call_held")
        busy = alice.wait_event("call_ended")
        assert busy["to"] == "sip:carol@ims.test" and busy["reason"] == "busy"
        resumed = alice.wait_event("call_resumed")
        assert resumed["to"] == "sip:bob@ims.test"
        alice.type("hangup")
        assert alice.proc.wait(15) == 0, alice.stderr
        assert any("conference carol: not answered (busy)" in line
                   for line in alice.stderr)
    finally:
        alice.stop()
        for proc in procs:
            proc.stop()


def test_consult_then_conference_mixes_the_consultation(network: tuple[Path, Config],
                                                        tmp_path: Path) -> None:
    """``consult carol`` (RFC 5359 2.2) then bare ``conference``: the held call and
    the consultation become a 3-way call; bob leaving leaves alice with carol."""
    _, config = network
    wavs = {name: tmp_path / f"{name}.wav" for name in TONES}
    others = [listener(config, name, "--answer", "--tone", str(TONES[name]),
                       "--record", str(wavs[name])) for name in ("bob", "carol")]
    alice = Proc(*ue_args(config, "alice"), "call", "bob", "--tone", str(TONES["alice"]),
                 "--record", str(wavs["alice"]), stdin=subprocess.PIPE)
    try:
        first = alice.wait_event("call_answered", 20)
        alice.type("consult carol")
        consulted = alice.wait_event("call_answered")
        assert consulted["to"] == "sip:carol@ims.test"
        alice.type("conference")
        mixing = alice.wait_event("call_conference")
        assert mixing["calls"] == [first["call_id"], consulted["call_id"]]
        time.sleep(2.5)
        others[0].stop()             # bob goes away: his UE hangs up its call
        ended = alice.wait_event("call_conference")
        assert ended["state"] == "ended" and ended["calls"] == [consulted["call_id"]]
        time.sleep(0.5)
        assert alice.proc.poll() is None       # still in the call with carol
        alice.type("hangup")
        assert alice.proc.wait(15) == 0, alice.stderr
    finally:
        alice.stop()
        for proc in others:
            proc.stop()
    for name in ("bob", "carol"):
        heard = pcm(wavs[name])
        assert all(tone_present(heard, tone, threshold=0.2)
                   for other, tone in TONES.items() if other != name), name
        assert not tone_present(heard, TONES[name], threshold=0.05, min_windows=1), name
