"""More caller-side RFC 5359 flows with third-party phones through the real core:
2.6 (IM transfer), 2.11 (third party joins with INVITE Join) and 2.17
(automatic redial against a phone callee).

alice and carol are imsbox UEs (:class:`~.phones.ImsboxUe`), bob is the phone
(baresip 1.0, linphonec 5.1 or pjsua2 2.15), as in test_phone_calls.py, whose
fixtures these tests share. Each test asserts the ladder (the UEs' calls and
events, the P-CSCF's --trace of what it sent) and the audio by tone detection.

What a phone cannot do is asserted as what it does instead (baresip 1.0
refuses Replaces with 420) or skipped with the reason (only pjsua2 can put a
Join header on its INVITE; none of the three serves RFC 4235 dialog events or
sends an IM with Replaces itself): docs/softphones.md lists them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imsbox.media import Recorder, ToneSource
from imsbox.content.dialog_info import DialogState, parse_dialog_info
from imsbox.sip.ua.dialog_event import DIALOG_INFO_TYPE
from imsbox.ue.call import VoiceCall
from imsbox.ue.events import CallJoined, CallTransferred, RedialRetry, RedialWaiting

from .baresip import ImsboxNet
from .phones import (
    ENDED, ESTABLISHED, HOST, INCOMING, ImsboxUe, Phone, heard, hears, tone_wav, wav_pcm,
)
from .phone_kit import (
    ALICE, BOB, CAROL, CAROL_TONE, IMSBOX_TONE, PASSWORDS, PHONE_TONE, PHONES, imsbox_calls, mix_of,
    sent_to, traced_to, ue_port, wait_trace,
)

pytestmark = pytest.mark.timeout(180)
WINDOW = 1.5   # s of audio a check records


def wait_event(ue: ImsboxUe, kind: Any, timeout: float = 20.0) -> Any:
    return ue.run(ue.client.wait_event(kind, timeout), timeout + 5)


# -- 2.11 third party joins, 2.6 IM transfer: the phone is a party of the call ----------------

@pytest.fixture
def carol_takes(net: ImsboxNet) -> Iterator[ImsboxUe]:
    """carol calls the URIs with Replaces that arrive in messages (RFC 5359 2.6 F7)."""
    ue = ImsboxUe("carol", PASSWORDS["carol"], net.pcscf_port, CAROL_TONE,
                  answer_calls=0.2, take_im_transfers=True)
    try:
        yield ue.start()
    finally:
        ue.close()


def dialog_of(watcher: ImsboxUe, entity: str) -> str:
    """The Join value for ``entity``'s one confirmed dialog, read from its dialog
    events (served by the telephony AS: RFC 4235 through the core)."""
    async def ask() -> str:
        agent = watcher.client.group_service.agent
        watch = agent.subscribe(entity, "dialog", accept=[DIALOG_INFO_TYPE],
                                origin=watcher.client.group_service.origin())
        notification = await watch.next_notification(10.0)
        await agent.unsubscribe(watch, 10.0)
        assert notification.request.header("Content-Type") == DIALOG_INFO_TYPE
        [dialog] = [d for d in parse_dialog_info(notification.body).dialogs
                    if d.state is DialogState.CONFIRMED]
        return f"{dialog.call_id};to-tag={dialog.local_tag};from-tag={dialog.remote_tag}"
    return watcher.run(ask())


def test_join_then_im_transfer_with_phone(ue: ImsboxUe, carol_takes: ImsboxUe, phone: Phone,
                                          kind: str, net: ImsboxNet) -> None:
    """One call with the phone, two flows.

    2.11: alice (imsbox) talks to bob (the phone); carol reads alice's dialog from
    the network's dialog events and INVITEs alice with Join (RFC 3911); alice
    mixes: bob gets the focus re-INVITE, each hears the other two and not
    themselves; carol leaves and alice and bob go on.

    2.6: alice sends carol bob's URI with Replaces naming the call in a MESSAGE
    (F5); carol INVITEs bob with that Replaces (F7); bob's phone swaps alice's
    call for carol's and BYEs alice (F12). baresip 1.0 refuses the INVITE 420 (no
    Replaces in libre 1.1): carol's call fails, alice's goes on."""
    carol = carol_takes
    call = imsbox_calls(ue, phone)
    alice_rec = ue.sync(lambda: call.rtp.sink)
    join = dialog_of(carol, ALICE)
    assert join.startswith(call.id + ";")
    joining = carol.run(carol.client.threeway.join(ALICE, join, ToneSource(CAROL_TONE), Recorder()))
    assert carol.answered(joining)
    joined = wait_event(ue, CallJoined)
    assert joined.joined_call_id == call.id
    invite = traced_to(net, ue_port(ue), lambda t: t.startswith("INVITE ") and "\nJoin:" in t,
                       "INVITE with Join to alice")[0]
    assert f"Join: {join}" in invite and "join" in invite.split("\nRequire:")[1].split("\n")[0]
    wait_trace(net, lambda sent: any(
        peer == f"{HOST}:{phone.sip_port}" and t.startswith("INVITE ") and ";isfocus" in t
        for peer, t in sent), "focus re-INVITE (Contact ;isfocus) to the phone")
    heard_by_carol = carol.listen(joining, WINDOW)
    assert mix_of(heard_by_carol, IMSBOX_TONE, PHONE_TONE), "carol: not alice and bob"
    assert not mix_of(heard_by_carol, CAROL_TONE)
    ue.sync(alice_rec.clear)
    time.sleep(WINDOW)
    assert mix_of(ue.sync(lambda: alice_rec.pcm), PHONE_TONE, CAROL_TONE), "alice: not bob and carol"
    carol.hangup(joining)
    ue.until(lambda: not ue.client.threeway.conferences, "the conference dissolved")
    no_calls(carol)
    assert hears_only(ue, call, PHONE_TONE, IMSBOX_TONE), "alice: bob gone after carol left"

    # 2.6 on the same call
    outcome = asyncio.run_coroutine_threadsafe(ue.client.im_transfer(call, "carol"), ue.loop)
    taken = wait_event(carol, CallTransferred)
    assert (taken.role, taken.kind) == ("target", "im")
    message = traced_to(net, ue_port(carol), lambda t: t.startswith("MESSAGE "), "MESSAGE")[0]
    assert "Replaces=" in message and call.id.split("@")[0] in message
    invite = traced_to(net, phone.sip_port, lambda t: t.startswith("INVITE ") and "\nReplaces:" in t,
                       "INVITE with Replaces to the phone")[0]
    assert f"Replaces: {call.id};" in invite, "carol's INVITE does not name alice's call"
    if kind == "baresip":   # libre 1.1: 420 Bad Extension, alice and bob go on talking
        assert (taken.outcome, taken.status) == ("failed", 420), taken.to_json()
        assert hears_only(ue, call, PHONE_TONE, IMSBOX_TONE)
        ue.hangup(call)
        assert outcome.result(30).outcome == "failed"
        return
    assert (taken.outcome, taken.status) == ("transferred", 200), taken.to_json()
    assert taken.reason == f"offered by {ALICE}"
    result = outcome.result(30)
    assert result.outcome == "transferred", result.to_json()
    assert call.end_reason == "remote hangup"   # the phone BYEd alice (F12)
    new = carol.sync(lambda: next(c for c in carol.client.calls.values() if c.id == taken.call_id))
    assert hears_only(carol, new, PHONE_TONE, IMSBOX_TONE)
    carol.hangup(new)
    phone.wait_state(ENDED)
    phone.stop()
    # the mix of alice and carol, then carol alone
    assert mix_of(wav_pcm(phone.record_path), IMSBOX_TONE, CAROL_TONE), \
        f"{phone.name} did not hear the mix"


def hears_mix(ue: ImsboxUe, call: VoiceCall, *tones: float, tries: int = 3) -> bool:
    """Whether one of ``tries`` recording windows holds every tone of ``tones``."""
    return any(mix_of(ue.listen(call, WINDOW), *tones) for _ in range(tries))


def hears_only(ue: ImsboxUe, call: VoiceCall, tone: float, not_tone: float) -> bool:
    pcm = ue.listen(call, WINDOW)
    return hears(pcm, tone) and not hears(pcm, not_tone, min_windows=2)


def no_calls(ue: ImsboxUe) -> None:
    ue.until(lambda: not ue.client.calls, "done with its calls")


# only pjsua2 can put a Join header on its INVITE (baresip and linphonec have no
# header option for a call: docs/softphones.md)
@pytest.mark.parametrize("kind", ["pjsua2"], indirect=True)
def test_phone_joins_with_join(kind: str, ue: ImsboxUe, carol: ImsboxUe,
                               phone: Phone) -> None:
    """RFC 5359 2.11 with the phone as the one who joins: pjsua2 INVITEs alice with
    Join naming her call with carol; alice mixes. baresip 1.0 and linphonec have
    no way to add a header to their INVITE. (pjsua2 PRACKs alice's reliable 180
    after her 200: she answers it 200, RFC 3262 3; a 481 there ended its call.)"""
    call = ue.call(CAROL)
    assert ue.answered(call)
    at_carol = carol.incoming()
    alice_rec = ue.sync(lambda: call.rtp.sink)
    join = dialog_of(carol, ALICE)
    phone.call(ALICE, headers={"Join": join, "Require": "join"})  # type: ignore[call-arg]
    phone.wait_state(ESTABLISHED)
    joined = wait_event(ue, CallJoined)
    assert joined.joined_call_id == call.id
    phone.events.wait(lambda e: e.get("event") == "media" and e["status"] == "ACTIVE",
                      "the joining call's audio")
    # the mix settles (the focus re-INVITE, the phone's player): a few windows at most
    assert hears_mix(carol, at_carol, IMSBOX_TONE, PHONE_TONE), "carol: not the mix"
    ue.sync(alice_rec.clear)
    time.sleep(WINDOW)
    assert mix_of(ue.sync(lambda: alice_rec.pcm), PHONE_TONE, CAROL_TONE), "alice: not the mix"
    phone.hangup()
    phone.wait_state(ENDED)
    ue.hangup(call)
    assert carol.ended(at_carol) == "remote hangup"
    phone.stop()
    assert mix_of(wav_pcm(phone.record_path), IMSBOX_TONE, CAROL_TONE), "pjsua2: not the mix"


# -- 2.17 automatic redial against a phone callee ---------------------------------------------

@pytest.fixture
def one_line_phone(kind: str, net: ImsboxNet, tmp_path: Path) -> Iterator[Phone]:
    """bob's phone with one line: a call while it is in one gets its own 486
    (baresip ``call_max_calls 1``, pjsua2 ``UaConfig.maxCalls = 1``)."""
    play = tone_wav(tmp_path / "phone-tone.wav", PHONE_TONE)
    bob = PHONES[kind](tmp_path / kind, "bob", PASSWORDS["bob"], net.pcscf_port, play,
                       max_calls=1)
    try:
        yield bob.start()
    finally:
        bob.stop()


# linphonec 5.1 has no one-line setting that it applies (``max_calls`` in its rc
# is ignored, a second call rings) and declines with 603, which is not busy: no
# redial against it (docs/softphones.md)
@pytest.mark.parametrize("kind", ["baresip", "pjsua2"], indirect=True)
def test_redial_phone_callee(kind: str, ue: ImsboxUe, carol: ImsboxUe,
                             one_line_phone: Phone, net: ImsboxNet) -> None:
    """bob (the phone) talks to carol; alice's call gets the phone's 486, so she
    SUBSCRIBEs to bob's dialog events, which the telephony AS serves (the phone
    never sees the SUBSCRIBE); the NOTIFY shows the confirmed call, then its end
    once carol hangs up; alice calls again and bob answers."""
    phone = one_line_phone
    busy = carol.call(BOB)
    phone.wait_state(INCOMING)
    phone.answer()
    assert carol.answered(busy)

    async def place() -> VoiceCall:
        return await ue.client.call_service.place(BOB, ToneSource(IMSBOX_TONE), Recorder())
    redial = asyncio.run_coroutine_threadsafe(
        ue.client.redialer.redial(BOB, place, timeout=40), ue.loop)
    waiting = wait_event(ue, RedialWaiting)
    assert waiting.attempt == 1
    wait_trace(net, lambda sent: any(   # the trace is read a little after the fact
        t.startswith("SIP/2.0 486 ") and f"Call-ID: {waiting.call_id}" in t for _, t in sent),
        "486 to alice's first call")
    wait_trace(net, lambda sent: any(t.startswith("NOTIFY ") and DIALOG_INFO_TYPE in t
                                     for _, t in sent), "NOTIFY (dialog-info) to alice")
    notify = traced_to(net, ue_port(ue), lambda t: t.startswith("NOTIFY "), "NOTIFY")[0]
    info = parse_dialog_info(notify.split("\n\n", 1)[1].encode())
    assert info.entity == BOB
    assert [(d.call_id, d.state) for d in info.dialogs] == [(busy.id, DialogState.CONFIRMED)]
    assert not any(t.startswith("SUBSCRIBE ") for t in sent_to(net, phone.sip_port))
    assert not redial.done()
    phone.events.skip()   # the refused call's events, if the phone reported any
    carol.hangup(busy)
    phone.wait_state(ENDED)
    retry = wait_event(ue, RedialRetry)
    assert retry.attempt == 2
    phone.wait_state(INCOMING)
    phone.answer()
    call = redial.result(30)
    assert call.id == retry.call_id and call.answered.is_set()
    assert call.peer == BOB
    assert hears_only(ue, call, PHONE_TONE, IMSBOX_TONE)
    ue.hangup(call)
    phone.wait_state(ENDED)
    phone.stop()
    assert heard(phone.record_path, IMSBOX_TONE), f"{phone.name} did not hear alice"
