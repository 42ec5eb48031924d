"""What the phone interop tests share: the users, tones and phones, and the steps
every call test takes (test_phone_calls.py, test_phone_rfc5359.py,
test_phone_services.py; their fixtures are in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from imsbox.media import tone_present

from .baresip import BaresipPhone, ImsboxNet
from .linphone import LinphonePhone
from .phones import (
    DOMAIN, ESTABLISHED, HOST, INCOMING, WAIT, ImsboxUe, Phone, heard, hears,
)
from .pjsua import PjsuaPhone
from .test_baresip import messages

PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
IMSBOX_TONE, PHONE_TONE = 440.0, 1000.0
ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"
PHONES: dict[str, Callable[..., Phone]] = {
    "baresip": BaresipPhone, "linphone": LinphonePhone, "pjsua2": PjsuaPhone}
CAROL_TONE = 1800.0
CAROL = f"sip:carol@{DOMAIN}"


def hears_phone(ue: ImsboxUe, call: Any) -> bool:
    pcm = ue.listen(call, 2.0)
    return hears(pcm, PHONE_TONE) and not hears(pcm, IMSBOX_TONE, min_windows=2)


def silent_while_held(ue: ImsboxUe, call: Any) -> bool:
    ue.listen(call, 0.3)   # what was in flight plays out
    return not hears(ue.listen(call, 2.0), PHONE_TONE, min_windows=2)


def wait_trace(net: ImsboxNet, match: Callable[[list[tuple[str, str]]], bool], what: str,
               timeout: float = WAIT) -> None:
    """Until the P-CSCF's sent messages (serve's --trace, read from its stdout a
    little after the fact) satisfy ``match``."""
    deadline = time.monotonic() + timeout
    while not match(messages(net.trace(), "pcscf", "out")):
        assert time.monotonic() < deadline, f"no {what} in the P-CSCF trace in {timeout}s"
        time.sleep(0.05)


def phone_heard_imsbox(phone: Phone) -> None:
    """After ``phone.stop()`` (the recording is complete then)."""
    assert heard(phone.record_path, IMSBOX_TONE), f"{phone.name} did not record alice's tone"
    assert not heard(phone.record_path, PHONE_TONE), f"{phone.name} recorded its own tone"


def imsbox_calls(ue: ImsboxUe, phone: Phone) -> Any:
    call = ue.call(BOB)
    assert phone.wait_state(INCOMING)
    ue.until(lambda: call.call.ringing.is_set(), "ringing (180)")
    phone.answer()
    assert ue.answered(call), f"not answered: {call.end_reason}"
    phone.wait_state(ESTABLISHED)
    return call


def phone_calls(ue: ImsboxUe, phone: Phone) -> Any:
    phone.call(ALICE)
    call = ue.incoming()
    assert ue.answered(call), f"not answered: {call.end_reason}"
    phone.wait_state(ESTABLISHED)
    return call


def mix_of(pcm: bytes, *tones: float) -> bool:
    """Each of ``tones`` is in ``pcm`` (a mix: each has a share of the energy only)."""
    return all(tone_present(pcm, t, threshold=0.2) for t in tones)


def sent_to(net: ImsboxNet, port: int) -> list[str]:
    """What the P-CSCF sent to the UE or phone on ``port`` (serve's --trace)."""
    return [text for peer, text in messages(net.trace(), "pcscf", "out")
            if peer == f"{HOST}:{port}"]


def ue_port(ue: ImsboxUe) -> int:
    """The SIP port of an imsbox UE (its Contact)."""
    registration = ue.sync(lambda: ue.client.core.registration)
    assert registration is not None
    return int(registration.contact.rsplit(":", 1)[1].split(";")[0])


def traced_to(net: ImsboxNet, port: int, match: Callable[[str], bool], what: str,
              timeout: float = WAIT) -> list[str]:
    """What the P-CSCF sent to ``port`` that ``match`` accepts, waiting until there is
    some (serve's --trace is read from its stdout a little after the fact)."""
    deadline = time.monotonic() + timeout
    while not (found := [t for t in sent_to(net, port) if match(t)]):
        assert time.monotonic() < deadline, f"no {what} in the P-CSCF trace in {timeout}s"
        time.sleep(0.05)
    return found
