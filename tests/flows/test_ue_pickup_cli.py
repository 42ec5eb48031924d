"""``imsbox ue pickup`` in subprocesses against ``imsbox serve`` (RFC 5359 2.16).

alice runs ``call bob``; bob's ``listen --answer --after 60`` lets it ring;
carol runs ``pickup`` and takes the call over: her recording holds alice's
tone. Then the refusals as the user sees them: nothing ringing (exit 1, the
AS's reason), and a directed pickup outside carol's group after
``imsbox service set carol pickup-group night``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.media import tone_present

from test_ue_cli import Proc, ue, ue_args
import test_ue_transfer_cli
from test_ue_transfer_cli import listener, recorded

pytestmark = pytest.mark.timeout(90)
# imsbox serve with alice, bob and carol: the transfer CLI tests' fixture
network = test_ue_transfer_cli.network


def refused(config: Config, user: str, *args: str) -> str:
    """``pickup`` that the network refuses (exit 1): the AS's reason on stderr."""
    proc = Proc(*ue_args(config, user), "pickup", *args, stdin=subprocess.PIPE)
    assert proc.wait_event("call_ended")["reason"] in ("unavailable", "failed 403")
    assert proc.proc.stdin is not None
    proc.proc.stdin.close()
    assert proc.proc.wait(15) == 1, proc.stderr
    deadline = time.monotonic() + 3     # the reader thread may lag the exit
    while not any("pickup refused" in line for line in proc.stderr) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    return "\n".join(proc.stderr)


def test_pickup_from_the_command_line(network: Config, tmp_path: Path) -> None:
    config, path = network, tmp_path / "imsbox.toml"   # serve's config (the fixture's)
    bob = listener(config, "bob", "--answer", "--after", "60")
    alice = Proc(*ue_args(config, "alice"), "call", "bob", "--tone", "440",
                 stdin=subprocess.PIPE)
    try:
        bob.wait_event("call_ringing")
        alice.wait_event("call_ringing")
        wav = tmp_path / "carol.wav"
        carol = Proc(*ue_args(config, "carol"), "pickup", "--tone", "700", "--record", str(wav),
                     stdin=subprocess.PIPE)
        answered = carol.wait_event("call_answered")
        assert answered["call_id"]
        time.sleep(2.0)
        carol.type("hangup")
        assert carol.proc.wait(15) == 0, carol.stderr
        assert tone_present(recorded(wav), 440.0, min_windows=5)     # carol heard alice
        bob.wait_event("call_ended")                                  # bob's ringing stopped
    finally:
        for proc in (alice, bob):
            proc.stop()
    nothing = refused(config, "carol")
    assert "no call ringing in the ims.test pickup group" in nothing, nothing
    service = subprocess.run(["imsbox", "service", "set", "--config", str(path), "carol",
                              "pickup-group", "night"], capture_output=True, text=True)
    assert service.returncode == 0, service.stderr
    outside = refused(config, "carol", "alice")
    assert "sip:alice@ims.test is not in your pickup group" in outside, outside
    direct = ue(config, "carol", "pickup", "--direct", "bob")     # SUBSCRIBE, nothing early
    assert direct.returncode == 1
    assert "pickup: nothing ringing for sip:bob@ims.test" in direct.stderr
    usage = ue(config, "carol", "pickup", "--direct")
    assert usage.returncode == 2 and "needs the NAME" in usage.stderr
