"""``imsbox ue call`` against ``imsbox serve`` with its media server: hold plays the
network's music by default (``--music-on-hold`` need not be given).

alice calls bob, types ``hold``: bob's phone (``listen --answer``) takes the
music server's INVITE with Replaces (RFC 5359 2.3 F12) and records the music;
``resume`` brings alice back with Replaces (F19). The recording holds alice's
tone and the music; alice's ``call`` goes on after the resume and exits 0.
"""

from __future__ import annotations

import subprocess
import time
import wave
from pathlib import Path

import pytest

from imsbox.media import tone_present

from test_media_server import MOH_TONE, media_config
from test_ue_cli import Proc, ue_args

pytestmark = pytest.mark.timeout(90)


def recorded(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes())


def test_hold_plays_the_networks_music(tmp_path: Path) -> None:
    config = media_config(tmp_path)
    serve = Proc("serve", "--config", str(tmp_path / "imsbox.toml"))
    bob_wav = tmp_path / "bob.wav"
    try:
        line = serve.wait_line(lambda line: "media_server listening on udp" in line, 15)
        assert str(config.media_server.port) in line
        bob = Proc(*ue_args(config, "bob"), "listen", "--answer", "--tone", "1000",
                   "--record", str(bob_wav))
        bob.wait_event("listening")
        alice = Proc(*ue_args(config, "alice"), "call", "bob", "--tone", "440",
                     stdin=subprocess.PIPE)
        first = alice.wait_event("call_answered")["call_id"]
        time.sleep(1.0)
        alice.type("hold")
        assert alice.wait_event("call_held")["call_id"] == first
        assert bob.wait_event("call_answered")["call_id"] == first
        music = bob.wait_event("call_answered", 15)
        assert music["from"].startswith("sip:moh@")    # the music server's INVITE (F12)
        time.sleep(1.5)
        alice.type("resume")
        back = alice.wait_event("call_answered", 15)
        assert back["call_id"] not in (first, music["call_id"])                # the INVITE with Replaces (F19)
        time.sleep(1.0)
        assert alice.proc.stdin is not None
        alice.proc.stdin.close()                       # EOF hangs up
        assert alice.proc.wait(15) == 0, alice.stderr
    finally:
        if "bob" in locals():
            assert bob.stop() == 0, bob.stderr
        assert serve.stop() == 0, serve.stderr
    pcm = recorded(bob_wav)
    assert tone_present(pcm, MOH_TONE) and tone_present(pcm, 440)
