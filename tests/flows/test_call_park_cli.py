"""Call park from the command line against ``imsbox serve`` (RFC 5359 2.15).

alice ``call bob`` types ``park``: her ``--json`` prints ``call_parked`` with the
``orbit`` and she exits 0; bob's phone (``listen --answer``) is taken over by the
park server and hears the music; carol's ``imsbox ue retrieve ORBIT`` gets bob (the
recordings hold the music, then each other's tones); a second retrieve of the orbit
exits 1 with the 404's reason; a malformed orbit is bad usage (2).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from imsbox.media import tone_present

from test_media_server import MOH_TONE, media_config
from test_media_server_cli import recorded
from test_ue_cli import Proc, ue, ue_args

pytestmark = pytest.mark.timeout(90)


def test_park_and_retrieve_from_the_command_line(tmp_path: Path) -> None:
    config = media_config(tmp_path)
    serve = Proc("serve", "--config", str(tmp_path / "imsbox.toml"))
    bob_wav, carol_wav = tmp_path / "bob.wav", tmp_path / "carol.wav"
    try:
        serve.wait_line(lambda line: "media_server listening on udp" in line, 15)
        bob = Proc(*ue_args(config, "bob"), "listen", "--answer", "--tone", "1000",
                   "--record", str(bob_wav))
        bob.wait_event("listening")
        alice = Proc(*ue_args(config, "alice"), "call", "bob", "--tone", "440",
                     stdin=subprocess.PIPE)
        first = alice.wait_event("call_answered")["call_id"]
        time.sleep(0.8)
        alice.type("park")
        parked = alice.wait_event("call_parked", 15)
        assert parked["orbit"] == 701 and parked["call_id"] == first
        assert parked["uri"] == "sip:park-701@ims.test" and parked["to"] == "sip:bob@ims.test"
        assert alice.proc.wait(15) == 0, alice.stderr       # her call ended with the park
        bob.wait_event("call_answered")                     # alice's call ...
        park_call = bob.wait_event("call_answered", 15)
        assert park_call["from"] == "sip:park-701@ims.test"
        time.sleep(1.5)                                     # bob hears the music
        carol = Proc(*ue_args(config, "carol"), "retrieve", "701", "--tone", "1600",
                     "--record", str(carol_wav), stdin=subprocess.PIPE)
        assert carol.wait_event("call_answered", 15)["to"] == "sip:park-701@ims.test"
        time.sleep(1.5)
        again = ue(config, "alice", "retrieve", "701")
        assert again.returncode == 1, again.stderr
        assert "retrieve 701: 404 Not Found - no call parked in orbit 701" in again.stderr
        assert carol.proc.stdin is not None
        carol.proc.stdin.close()                            # EOF hangs up
        assert carol.proc.wait(15) == 0, carol.stderr
        assert bob.wait_event("call_ended")["reason"] == "replaced"      # alice's call
        ended = bob.wait_event("call_ended", 15)
        assert ended["call_id"] == park_call["call_id"] and ended["reason"] == "remote hangup"
        bad = ue(config, "alice", "retrieve", "seven")
        assert bad.returncode == 2 and "not an orbit number" in bad.stderr
    finally:
        if "bob" in locals():
            assert bob.stop() == 0, bob.stderr
        assert serve.stop() == 0, serve.stderr
    heard = recorded(bob_wav)
    assert all(tone_present(heard, tone) for tone in (440, MOH_TONE, 1600))
    assert tone_present(recorded(carol_wav), 1000)
