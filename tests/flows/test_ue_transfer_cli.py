"""``imsbox ue call`` transfers in subprocesses against ``imsbox serve`` (issue 12).

alice runs ``call bob`` and types ``transfer carol`` (unattended), ``consult
carol`` + ``complete`` (attended); bob and carol run ``listen --answer --json``:
bob, the transferee, takes the REFER by himself and carol's recording then holds
bob's tone. A transfer to a busy carol fails, the call goes on, exit 5.
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

from test_ue_cli import DOMAIN, Proc, ue_args

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Config]:
    """``imsbox serve`` with alice, bob and carol provisioned."""
    path, config = write_loopback_config(tmp_path)

    async def in_store() -> None:
        async with open_store(config.store_location) as store:
            for name in ("alice", "bob", "carol"):
                await add_user(store, DOMAIN, name, f"{name}-secret")
    asyncio.run(in_store())
    serve = Proc("serve", "--config", str(path))
    try:
        serve.wait_line(lambda line: "pcscf listening on udp" in line, 15)
        yield config
    finally:
        assert serve.stop() == 0, serve.stderr


def listener(config: Config, name: str, *args: str) -> Proc:
    proc = Proc(*ue_args(config, name), "listen", *args)
    proc.wait_event("listening")
    return proc


def recorded(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes())


def alice_calls_bob(config: Config) -> tuple[Proc, str]:
    alice = Proc(*ue_args(config, "alice"), "call", "bob", "--tone", "440",
                 stdin=subprocess.PIPE)
    return alice, alice.wait_event("call_answered")["call_id"]


def test_unattended_transfer_from_the_command_line(network: Config, tmp_path: Path) -> None:
    carol_wav = tmp_path / "carol.wav"
    bob = listener(network, "bob", "--answer", "--tone", "1000")
    carol = listener(network, "carol", "--answer", "--tone", "1800", "--record", str(carol_wav))
    try:
        alice = Proc(*ue_args(network, "alice"), "call", "bob", "--tone", "440",
                     stdin=subprocess.PIPE)
        alice.type("transfer carol")    # typed ahead, then EOF: as `echo ... | call bob`
        assert alice.proc.stdin is not None
        alice.proc.stdin.close()
        call_id = alice.wait_event("call_answered")["call_id"]
        done = alice.wait_event("call_transferred", 20)
        assert (done["call_id"], done["outcome"], done["status"]) == (call_id, "transferred", 200)
        assert done["role"] == "transferor" and done["target"] == "sip:carol@ims.test"
        assert alice.wait_event("call_ended")["reason"] == "transferred"
        assert alice.proc.wait(10) == 0
        at_bob = bob.wait_event("call_transferred")
        assert at_bob["role"] == "transferee" and at_bob["outcome"] == "transferred"
        assert carol.wait_event("call_answered")["from"] == "sip:bob@ims.test"
        time.sleep(1.5)   # carol records bob's tone
    finally:
        assert bob.stop() == 0, bob.stderr
        assert carol.stop() == 0, carol.stderr
    pcm = recorded(carol_wav)
    assert tone_present(pcm, 1000) and not tone_present(pcm, 440)


def test_attended_transfer_from_the_command_line(network: Config, tmp_path: Path) -> None:
    carol_wav = tmp_path / "carol.wav"
    bob = listener(network, "bob", "--answer", "--tone", "1000")
    carol = listener(network, "carol", "--answer", "--tone", "1800", "--record", str(carol_wav))
    try:
        alice, call_id = alice_calls_bob(network)
        alice.type("consult carol")
        assert alice.wait_event("call_held")["call_id"] == call_id
        consult = alice.wait_event("call_answered")
        assert consult["to"] == "sip:carol@ims.test" and consult["call_id"] != call_id
        time.sleep(1.0)
        alice.type("complete")
        done = alice.wait_event("call_transferred", 20)
        assert done["kind"] == "attended" and done["outcome"] == "transferred"
        assert alice.proc.wait(10) == 0
        assert bob.wait_event("call_transferred")["role"] == "transferee"
        at_carol = carol.wait_event("call_transferred")
        assert at_carol["role"] == "target" and at_carol["call_id"] == consult["call_id"]
        time.sleep(1.5)
    finally:
        assert bob.stop() == 0, bob.stderr
        assert carol.stop() == 0, carol.stderr
    pcm = recorded(carol_wav)
    assert tone_present(pcm, 440) and tone_present(pcm, 1000)   # alice consulted, then bob


def test_transfer_to_a_busy_target_exits_5(network: Config) -> None:
    bob = listener(network, "bob", "--answer", "--tone", "1000")
    carol = listener(network, "carol", "--busy")
    try:
        alice, call_id = alice_calls_bob(network)
        alice.type("transfer carol")
        done = alice.wait_event("call_transferred", 20)
        assert (done["outcome"], done["status"]) == ("failed", 486)
        assert alice.wait_event("call_resumed")["call_id"] == call_id
        assert bob.wait_event("call_transferred")["outcome"] == "failed"
        alice.type("hangup")
        assert alice.wait_event("call_ended")["reason"] == "local hangup"
        assert alice.proc.wait(10) == 5
    finally:
        assert bob.stop() == 0, bob.stderr
        assert carol.stop() == 0, carol.stderr


def test_call_command_follows_its_own_transfer(network: Config) -> None:
    """alice's ``call bob`` is the transferee: bob (an RcsClient here) transfers her to
    carol; the command goes on with the new call until ``hangup``, exit 0."""
    from imsbox.testing import FAST_TIMERS
    from imsbox.ue.client import RcsClient

    carol = listener(network, "carol", "--answer", "--tone", "1800")
    procs: list[Proc] = []

    async def bob_transfers() -> dict[str, object]:
        pcscf = (network.pcscf.host, network.pcscf.port)
        async with RcsClient("bob", "bob-secret", DOMAIN, pcscf=pcscf, timers=FAST_TIMERS,
                             answer_calls=0) as bob:
            procs.append(Proc(*ue_args(network, "alice"), "call", "bob", "--tone", "440",
                              stdin=subprocess.PIPE))   # once bob is registered
            async with asyncio.timeout(20):
                while not any(c.answered.is_set() for c in bob.calls.values()):
                    await asyncio.sleep(0.05)
            (call,) = bob.calls.values()
            return (await bob.transfer(call, "carol")).to_json()
    try:
        result = asyncio.run(bob_transfers())
        assert result["outcome"] == "transferred"
        (alice,) = procs
        at_alice = alice.wait_event("call_transferred", 20)
        assert at_alice["role"] == "transferee" and at_alice["new_call_id"]
        assert alice.wait_event("call_ended")["reason"] == "transferred"
        time.sleep(1.0)
        assert alice.proc.poll() is None          # still in the call with carol
        alice.type("hangup")
        ended = alice.wait_event("call_ended")
        assert ended["call_id"] == at_alice["new_call_id"] and ended["reason"] == "local hangup"
        assert alice.proc.wait(10) == 0
        assert carol.wait_event("call_ended")["reason"] == "remote hangup"
    finally:
        for proc in procs:
            proc.stop()
        assert carol.stop() == 0, carol.stderr


def test_im_transfer_from_the_command_line(network: Config, tmp_path: Path) -> None:
    """alice types ``im-transfer carol``; carol's ``listen --take-im-transfers`` gets
    bob's URI with Replaces in a message and calls it; bob's listen replaces alice's
    call with carol's; alice's call ends, transferred, exit 0."""
    carol_wav = tmp_path / "carol.wav"
    bob = listener(network, "bob", "--answer", "--tone", "1000")
    carol = listener(network, "carol", "--answer", "--take-im-transfers", "--tone", "1800",
                     "--record", str(carol_wav))
    try:
        alice, call_id = alice_calls_bob(network)
        alice.type("im-transfer carol")
        message = carol.wait_event("message", 20)
        assert message["text"].startswith("sip:bob@ims.test?") and "Replaces=" in message["text"]
        taken = carol.wait_event("call_transferred", 20)
        assert (taken["role"], taken["kind"], taken["outcome"]) == ("target", "im", "transferred")
        at_bob = bob.wait_event("call_transferred")
        assert at_bob["call_id"] == call_id and at_bob["new_call_id"] == taken["new_call_id"]
        done = alice.wait_event("call_transferred", 20)
        assert (done["kind"], done["outcome"]) == ("im", "transferred")
        assert alice.proc.wait(10) == 0
        time.sleep(1.5)   # carol records bob's tone
    finally:
        assert bob.stop() == 0, bob.stderr
        assert carol.stop() == 0, carol.stderr
    pcm = recorded(carol_wav)
    assert tone_present(pcm, 1000) and not tone_present(pcm, 440)
