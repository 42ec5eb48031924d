"""Call pickup (RFC 5359 2.16) with third-party phones through the real core.

The network does the pickup, so any phone takes part without configuration:

* the phone picks up: alice (imsbox) calls carol (imsbox, lets it ring); bob's
  phone calls ``sip:pickup@ims.test``; the telephony AS INVITEs alice with
  Replaces; alice and the phone hear each other's tones;
* the phone is the caller: bob's phone calls carol (a baresip); alice calls
  ``sip:pickup@ims.test``; the AS sends the phone the INVITE with Replaces (a
  phone with RFC 3891 swaps its ringing call for it; one without answers 420
  or rings for it, and the AS bridges its own INVITE instead); either way carol's phone stops
  ringing and the phone and alice hear each other;
* forwarding tells the phone: bob's phone calls carol, who forwards to alice
  (``imsbox service set carol forward-unconditional alice``); the phone gets
  ``181 Call Is Being Forwarded`` (an early dialog of the AS's own) and then
  alice's answer, and they hear each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .baresip import BaresipPhone, ImsboxNet, imsbox_cli
from .phones import (
    DOMAIN, ENDED, ESTABLISHED, INCOMING, RINGING, WAIT, ImsboxUe, Phone, heard, hears,
    tone_wav,
)
from .phone_kit import CAROL, IMSBOX_TONE, PASSWORDS, PHONE_TONE
from .test_baresip import messages

pytestmark = pytest.mark.timeout(180)
CAROL_RINGS_TONE = 700.0            # carol here rings for 60 s: her call is picked up
PICKUP = f"sip:pickup@{DOMAIN}"
# kind, net, phone (bob) are tests/interop/conftest.py's; alice is its imsbox UE


@pytest.fixture
def alice(ue: ImsboxUe) -> ImsboxUe:
    return ue


@pytest.fixture
def carol(net: ImsboxNet) -> Iterator[ImsboxUe]:
    ue = ImsboxUe("carol", PASSWORDS["carol"], net.pcscf_port, CAROL_RINGS_TONE,
                  answer_calls=60)
    try:
        yield ue.start()
    finally:
        ue.close()


def carol_rings(carol: ImsboxUe) -> Any:
    call = carol.incoming()
    carol.until(lambda: call.call.session.dialog is not None, "ringing (an early dialog)")
    return call


def live_call(ue: ImsboxUe) -> Any:
    ue.until(lambda: any(c.answered.is_set() and not c.ended.is_set()
                         for c in ue.client.calls.values()), "in an answered call")
    return ue.sync(lambda: next(c for c in ue.client.calls.values()
                                if c.answered.is_set() and not c.ended.is_set()))


def phone_heard_imsbox(phone: Phone) -> None:
    assert heard(phone.record_path, IMSBOX_TONE), f"{phone.name} did not record alice's tone"
    assert not heard(phone.record_path, PHONE_TONE), f"{phone.name} recorded its own tone"


def test_phone_picks_up(alice: ImsboxUe, carol: ImsboxUe, phone: Phone) -> None:
    original = alice.call(CAROL)
    ringing = carol_rings(carol)
    alice.until(lambda: original.call.ringing.is_set(), "ringing (180)")
    phone.call(PICKUP)
    phone.wait_state(ESTABLISHED)
    assert carol.ended(ringing) == "cancelled"          # alice CANCELled carol
    taken = live_call(alice)
    assert taken.id != original.id and taken.call.request.header("Replaces")
    pcm = alice.listen(taken, 2.0)
    assert hears(pcm, PHONE_TONE) and not hears(pcm, IMSBOX_TONE, min_windows=2)
    phone.hangup()
    assert alice.ended(taken) == "remote hangup"        # the AS ended alice's leg
    phone.wait_state(ENDED)
    phone.stop()
    phone_heard_imsbox(phone)


@pytest.fixture
def carol_phone(net: ImsboxNet, tmp_path: Path) -> Iterator[Phone]:
    """carol on a baresip that rings and never answers (it sends no RTP before
    answering; imsbox's UE streams while it rings, which makes baresip, as the
    caller, drop a second stream's lower sequence numbers after a bridge)."""
    play = tone_wav(tmp_path / "carol-tone.wav", CAROL_RINGS_TONE)
    carol = BaresipPhone(tmp_path / "carol", "carol", PASSWORDS["carol"], net.pcscf_port, play)
    try:
        yield carol.start()
    finally:
        carol.stop()


def test_imsbox_picks_up_the_phones_call(alice: ImsboxUe, phone: Phone,
                                         carol_phone: Phone) -> None:
    phone.call(CAROL)
    carol_phone.wait_state(INCOMING)
    phone.wait_state(RINGING)
    pick = alice.call(PICKUP)
    assert alice.answered(pick, WAIT * 2), f"pickup not answered: {pick.end_reason}"
    carol_phone.wait_state(ENDED)                        # carol's ringing was CANCELled
    phone.wait_state(ESTABLISHED)
    pcm = alice.listen(pick, 2.0)
    assert hears(pcm, PHONE_TONE) and not hears(pcm, IMSBOX_TONE, min_windows=2)
    alice.hangup(pick)
    phone.wait_state(ENDED)
    phone.stop()
    phone_heard_imsbox(phone)


def test_phone_calls_a_forwarded_user(net: ImsboxNet, alice: ImsboxUe, phone: Phone) -> None:
    done = imsbox_cli("service", "set", "carol", "forward-unconditional", "alice", *net.common)
    assert done.returncode == 0, done.stderr
    phone.call(CAROL)
    call = alice.incoming()
    assert alice.answered(call, WAIT), f"not answered: {call.end_reason}"
    phone.wait_state(ESTABLISHED)
    sent = messages(net.trace(), "pcscf", "out")
    to_phone = [t for peer, t in sent if peer.endswith(f":{phone.sip_port}")]
    assert any(t.startswith("SIP/2.0 181 Call Is Being Forwarded") for t in to_phone)
    pcm = alice.listen(call, 2.0)
    assert hears(pcm, PHONE_TONE) and not hears(pcm, IMSBOX_TONE, min_windows=2)
    phone.hangup()
    assert alice.ended(call) == "remote hangup"
    phone.wait_state(ENDED)
    phone.stop()
    phone_heard_imsbox(phone)
