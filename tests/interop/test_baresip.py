"""Two baresip 1.0 UAs register through ``imsbox serve`` (real CLI), call each
other and exchange a MESSAGE.

Each baresip has its own config dir (no audio device: ``ausine`` source with
opus - ausine only produces 48 kHz - and an ``aufile`` player; no video), is
driven over ``ctrl_tcp`` (netstring JSON commands and events, see
tests/interop/baresip.py) and uses the P-CSCF as outbound proxy.

Asserted:

* both register (baresip prints ``200 OK () [1 binding]``) and the P-CSCF saw
  their REGISTERs;
* alice ``dial``s bob, bob auto-answers: CALL_ESTABLISHED on both sides and
  CALL_RTPESTAB (RTP flowing, media end to end); the INVITE went through the
  P-CSCF to bob's contact; alice ``hangup``s: CALL_CLOSED on both sides and
  the BYE was answered 200;
* alice sends a MESSAGE (the ``contact`` module's ``message`` command to her
  current contact, bob): the P-CSCF delivers it to bob's baresip with
  P-Asserted-Identity alice and bob's 200 reaches alice.

The registrar offers MD5 only: libre 1.1 stops at the first challenge whose
algorithm it does not know (SHA-256) instead of using the next one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .baresip import DOMAIN, HOST, Baresip, ImsboxNet

pytestmark = pytest.mark.timeout(120)
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture
def net(tmp_path: Path) -> Iterator[ImsboxNet]:
    network = ImsboxNet.start(tmp_path / "net", PASSWORDS)
    try:
        yield network
    finally:
        status = network.stop()
        assert status == 0, f"imsbox serve exit {status}: {network.stderr[-20:]}"


@pytest.fixture
def phones(net: ImsboxNet, tmp_path: Path) -> Iterator[tuple[Baresip, Baresip]]:
    alice = Baresip(tmp_path / "alice", "alice", PASSWORDS["alice"], net.pcscf_port,
                    peers=("bob",))
    bob = Baresip(tmp_path / "bob", "bob", PASSWORDS["bob"], net.pcscf_port,
                  peers=("alice",))
    try:
        alice.start()
        bob.start()
        yield alice, bob
    finally:
        alice.stop()
        bob.stop()


def messages(trace: str, node: str, direction: str) -> list[tuple[str, str]]:
    """(peer address, message text) of each traced message of ``node`` in/out."""
    out = []
    for block in ("\n" + trace).split("\n--- ")[1:]:
        head, _, text = block.partition("\n")
        m = re.match(rf"{node} +{direction} +\w+ \S+ (?:->|<-) (\S+) \(", head)
        if m:
            out.append((m.group(1), text))
    return out


def test_two_baresips_register_call_and_message(net: ImsboxNet,
                                                phones: tuple[Baresip, Baresip]) -> None:
    alice, bob = phones
    alice.wait_output(f"alice@{DOMAIN}: {{0/UDP/v4}} 200 OK () [1 binding]", 15)
    bob.wait_output(f"bob@{DOMAIN}: {{0/UDP/v4}} 200 OK () [1 binding]", 15)
    received = messages(net.trace(), "pcscf", "in")
    for phone in (alice, bob):
        assert any(peer == f"{HOST}:{phone.sip_port}" and text.startswith("REGISTER ")
                   for peer, text in received), phone.user

    # -- a call: alice dials, bob auto-answers, alice hangs up -----------------------
    assert alice.command("dial", f"sip:bob@{DOMAIN}")["ok"]
    incoming = bob.wait_event("CALL_ESTABLISHED", 15)
    assert incoming["direction"] == "incoming" and incoming["peeruri"] == f"sip:alice@{DOMAIN}"
    outgoing = alice.wait_event("CALL_ESTABLISHED", 15)
    assert outgoing["direction"] == "outgoing" and outgoing["id"] == incoming["id"]
    assert alice.wait_event("CALL_RTPESTAB", 10)["param"] == "audio"
    assert bob.wait_event("CALL_RTPESTAB", 10)["param"] == "audio"
    sent = messages(net.trace(), "pcscf", "out")
    assert any(peer == f"{HOST}:{bob.sip_port}" and text.startswith("INVITE sip:bob")
               for peer, text in sent), "INVITE never reached bob's baresip"
    assert alice.command("hangup")["ok"]
    assert alice.wait_event("CALL_CLOSED", 10)["id"] == incoming["id"]
    assert bob.wait_event("CALL_CLOSED", 10)["id"] == incoming["id"]
    deadline = time.monotonic() + 5
    while not any(peer == f"{HOST}:{alice.sip_port}" and text.startswith("SIP/2.0 200 OK")
                  and "CSeq: " in text and " BYE" in text
                  for peer, text in messages(net.trace(), "pcscf", "out")):
        assert time.monotonic() < deadline, "alice's BYE was not answered 200"
        time.sleep(0.1)

    # -- a MESSAGE from alice to bob (her current contact) -------------------------------
    text = "hello-bob-from-baresip"
    assert alice.command("message", text)["ok"]
    deadline = time.monotonic() + 10
    while True:
        sent = messages(net.trace(), "pcscf", "out")
        to_bob = [m for peer, m in sent if peer == f"{HOST}:{bob.sip_port}"
                  and m.startswith("MESSAGE ") and m.rstrip().endswith(text)]
        answered = [m for peer, m in sent if peer == f"{HOST}:{alice.sip_port}"
                    and m.startswith("SIP/2.0 200 OK") and " MESSAGE" in m]
        if to_bob and answered:
            break
        assert time.monotonic() < deadline, (
            f"MESSAGE not delivered/answered: to bob {len(to_bob)}, 200 to alice "
            f"{len(answered)}\n{net.trace()[-4000:]}")
        time.sleep(0.1)
    assert f"P-Asserted-Identity: <sip:alice@{DOMAIN}>" in to_bob[0]
    from_bob = [m for peer, m in messages(net.trace(), "pcscf", "in")
                if peer == f"{HOST}:{bob.sip_port}" and m.startswith("SIP/2.0 200 OK")
                and " MESSAGE" in m]
    assert from_bob, "bob's baresip did not answer the MESSAGE 200"
