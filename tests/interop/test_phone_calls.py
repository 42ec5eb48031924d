"""Voice calls between imsbox's UE and third-party phones through the real core.

``imsbox serve`` (a subprocess, every node on free loopback ports) with alice
(imsbox's :class:`RcsClient`, through :class:`~.phones.ImsboxUe`, or the
``imsbox ue`` CLI) and bob (baresip 1.0, linphone 5.1 ``linphonec`` or pjsua2
2.15, see their drivers). Each test runs once per phone:

* imsbox calls the phone / the phone calls imsbox: 180, answer, audio both
  ways (the phone plays a 1000 Hz WAV that alice's recording holds and her
  440 Hz tone does not, and the phone's recording holds 440 Hz); hold and
  resume from each side: the held side stops sending (no tone in the hold
  window, no packet sent by a held imsbox), the tone is back after resume;
  hangup from each side;
* busy both ways (486), CANCEL before the answer both ways;
* tshark decodes the SIP of every hop and the RTP both ways with no
  malformed frame;
* ``imsbox ue call`` to the phone, and ``imsbox ue listen --answer`` taking the
  phone's call (JSON events, recorded WAVs).
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imsbox.media import PortAllocator, tone_present
from imsbox.sdp import Direction

from .baresip import ImsboxNet, _env, low_port, pump
from .capture import Capture
from .phone_kit import (
    ALICE, BOB, CAROL, CAROL_TONE, IMSBOX_TONE, PASSWORDS, PHONE_TONE, hears_phone, imsbox_calls,
    mix_of, phone_calls, phone_heard_imsbox, silent_while_held, wait_trace,
)
from .phones import (
    ENDED, ESTABLISHED, HOST, INCOMING, RINGING, WAIT, ImsboxUe, Phone, heard, hears, wav_pcm,
)
from .test_baresip import messages
from .test_messaging_tshark import sip_counts

pytestmark = pytest.mark.timeout(180)


# -- calls with audio, hold and hangup -------------------------------------------------------

def test_imsbox_calls_phone_holds_it_and_phone_hangs_up(ue: ImsboxUe, phone: Phone) -> None:
    call = imsbox_calls(ue, phone)
    assert hears_phone(ue, call)
    # imsbox holds: sendonly offer, the phone answers recvonly and stops sending
    assert ue.hold(call)
    assert ue.direction(call) is Direction.SENDONLY
    assert b"a=recvonly" in (call.call.remote_sdp or b"") or b"a=inactive" in (call.call.remote_sdp or b"")
    assert silent_while_held(ue, call), f"{phone.name} kept sending while held"
    assert ue.resume(call)
    assert ue.direction(call) is Direction.SENDRECV
    assert hears_phone(ue, call), f"{phone.name} did not come back after resume"
    phone.hangup()
    assert ue.ended(call) == "remote hangup"
    phone.wait_state(ENDED)
    phone.stop()
    phone_heard_imsbox(phone)


def test_phone_calls_imsbox_holds_it_and_imsbox_hangs_up(ue: ImsboxUe, phone: Phone) -> None:
    call = phone_calls(ue, phone)
    assert call.incoming and call.peer == BOB
    assert hears_phone(ue, call)
    # the phone holds: imsbox answers recvonly (or inactive) and stops sending
    phone.hold()
    ue.until(lambda: call.rtp.direction in (Direction.RECVONLY, Direction.INACTIVE),
             "held by the phone")
    ue.listen(call, 0.3)
    before = ue.sent(call)
    ue.listen(call, 2.0)
    assert ue.sent(call) == before, "imsbox sent RTP while held"
    phone.resume()
    ue.until(lambda: call.rtp.direction is Direction.SENDRECV, "resumed by the phone")
    assert hears_phone(ue, call)
    ue.listen(call, 0.5)
    assert ue.sent(call) > before + 10, "imsbox did not send again after resume"
    ue.hangup(call)
    assert call.end_reason == "local hangup"
    phone.wait_state(ENDED)
    phone.stop()
    phone_heard_imsbox(phone)


# -- busy and CANCEL -------------------------------------------------------------------------

def test_phone_busy(ue: ImsboxUe, phone: Phone) -> None:
    phone.busy()
    call = ue.call(BOB)
    reason, status = phone.refusal   # 486 busy; linphonec can only decline (603)
    assert ue.ended(call) == reason
    final = call.call.final.result()
    assert final is not None and final.status == status


def test_imsbox_busy(ue: ImsboxUe, phone: Phone, net: ImsboxNet) -> None:
    ue.sync(lambda: setattr(ue.client.call_service, "busy", True))
    phone.call(ALICE)
    phone.wait_state(ENDED)
    wait_trace(net, lambda sent: any(
        peer == f"{HOST}:{phone.sip_port}" and t.startswith("SIP/2.0 486 ") and " INVITE" in t
        for peer, t in sent), "486 to the phone's INVITE")


def test_imsbox_cancels_before_answer(ue: ImsboxUe, phone: Phone) -> None:
    call = ue.call(BOB)
    phone.wait_state(INCOMING)
    ue.until(lambda: call.call.ringing.is_set(), "ringing (180)")
    ue.hangup(call)
    assert call.end_reason == "cancelled"
    final = call.call.final.result()
    assert final is not None and final.status == 487
    phone.wait_state(ENDED)


def test_phone_cancels_before_answer(ue: ImsboxUe, phone: Phone) -> None:
    ue.sync(lambda: setattr(ue.client.call_service, "answer_after", 60.0))
    phone.call(ALICE)
    call = ue.incoming()
    phone.wait_state(RINGING)
    phone.hangup()
    assert ue.ended(call) == "cancelled"
    phone.wait_state(ENDED)


# -- tshark --------------------------------------------------------------------------------

def test_tshark_decodes_sip_and_rtp(ue: ImsboxUe, phone: Phone, net: ImsboxNet,
                                    capture: Callable[..., Capture]) -> None:
    base = low_port() // 2 * 2
    ue.sync(lambda: setattr(ue.client.call_service, "ports", PortAllocator(HOST, base, base + 2)))
    config = net.config
    contact = ue.sync(lambda: ue.client.contact)
    sip = [config.pcscf.port, config.icscf.port, config.scscf.port, config.messaging_as.port,
           int(contact.rsplit(":", 1)[1].split(";")[0].rstrip(">")), phone.sip_port]
    cap = capture(ports=[*sip, base], tcp=False)
    cap.start()
    call = imsbox_calls(ue, phone)
    assert hears_phone(ue, call)
    assert ue.hold(call) and ue.resume(call)
    ue.listen(call, 1.0)
    ue.hangup(call)
    phone.wait_state(ENDED)
    cap.stop()
    decode = [f"udp.port=={base},rtp", *(f"udp.port=={n},sip" for n in sip)]
    assert cap.malformed(decode_as=decode) == []
    cap.decode_as = decode
    methods, statuses = sip_counts(cap)
    assert methods["INVITE"] >= 3 and methods["BYE"] >= 1 and methods["ACK"] >= 3
    assert statuses[("200", "INVITE")] >= 3
    frames = cap.decode(decode_as=decode, display_filter="rtp",
                        fields=["rtp.ssrc", "rtp.p_type", "udp.dstport"])
    # linphone also sends STUN Binding requests to the RTP port (RFC 7983 demux):
    # tshark shows them as STUN, they are not RTP frames
    frames = [f for f in frames if "rtp.p_type" in f]
    to_us = [f for f in frames if f["udp.dstport"] == [str(base)]]
    from_us = [f for f in frames if f["udp.dstport"] != [str(base)]]
    assert len(to_us) >= 100 and len(from_us) >= 100
    assert {f["rtp.p_type"][0] for f in to_us + from_us} <= {"0", "8", "101"}


# -- the command line ------------------------------------------------------------------------

class Cli:
    """``imsbox ue ... --json`` as a subprocess: its JSON events line by line."""

    def __init__(self, net: ImsboxNet, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imsbox.cli", "ue", "--user", "alice", "--password",
             PASSWORDS["alice"], "--pcscf", f"{HOST}:{net.pcscf_port}", "--json", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=_env())
        self.lines: queue.Queue[str] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        pump(self.proc.stdout, self.lines.put)
        pump(self.proc.stderr, self.stderr.append)

    def wait_event(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {kind} event in {timeout}s: {self.events}\n"
                                     + "\n".join(self.stderr[-20:])) from None
            event = json.loads(line)
            self.events.append(event)
            if event.get("event") == kind:
                return event

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def test_cli_call_to_phone(net: ImsboxNet, phone: Phone, tmp_path: Path) -> None:
    record = tmp_path / "alice.wav"
    alice = Cli(net, "call", BOB, "--tone", str(IMSBOX_TONE), "--record", str(record))
    try:
        phone.wait_state(INCOMING)
        phone.answer()
        answered = alice.wait_event("call_answered")
        assert answered["from"] == ALICE and answered["to"] == BOB
        phone.wait_state(ESTABLISHED)
        time.sleep(2.0)   # a recording window
        alice.type("hangup")
        ended = alice.wait_event("call_ended")
        assert ended["reason"] == "local hangup"
        assert alice.proc.wait(15) == 0, alice.stderr
        phone.wait_state(ENDED)
    finally:
        alice.stop()
    assert heard(record, PHONE_TONE) and not heard(record, IMSBOX_TONE)


def test_cli_listen_answers_phone(net: ImsboxNet, phone: Phone, tmp_path: Path) -> None:
    record = tmp_path / "alice.wav"
    alice = Cli(net, "listen", "--answer", "--after", "0.2", "--tone", str(IMSBOX_TONE),
                "--record", str(record))
    try:
        alice.wait_event("listening")
        phone.call(ALICE)
        answered = alice.wait_event("call_answered")
        assert answered["from"] == BOB and answered["to"] == ALICE
        phone.wait_state(ESTABLISHED)
        time.sleep(2.0)   # a recording window
        phone.hangup()
        assert alice.wait_event("call_ended")["reason"] == "remote hangup"
        phone.wait_state(ENDED)
    finally:
        assert alice.stop() == 0, alice.stderr
    assert heard(record, PHONE_TONE) and not heard(record, IMSBOX_TONE)
    phone.stop()
    phone_heard_imsbox(phone)


# -- transfers (RFC 5359 2.4, RFC 5589): carol is a second imsbox UE --------------------------

def test_phone_transfers_imsbox(ue: ImsboxUe, carol: ImsboxUe, phone: Phone,
                                net: ImsboxNet) -> None:
    """bob (the phone) REFERs alice (imsbox, the transferee) to carol."""
    call = imsbox_calls(ue, phone)
    assert hears_phone(ue, call)
    phone.transfer(CAROL)
    to_carol = carol.incoming()
    assert carol.answered(to_carol)
    assert to_carol.peer == ALICE
    # Referred-By is optional in a REFER (RFC 3515 2.4.1; baresip 1.0 sends none):
    # when the phone's REFER has one, alice's INVITE carries it (RFC 3892)
    wait_trace(net, lambda sent: any(t.startswith("REFER ") for _, t in sent), "REFER")
    refers = [text for _, text in messages(net.trace(), "pcscf", "in") if text.startswith("REFER ")]
    if "\nReferred-By:" in refers[0]:
        assert "bob@" in (to_carol.call.request.header("Referred-By") or "")
    assert ue.ended(call) == "transferred"
    new = ue.sync(lambda: ue.client.transfers.successors[call.id])
    phone.wait_state(ENDED)
    pcm = ue.listen(new, 2.0)
    assert hears(pcm, CAROL_TONE) and not hears(pcm, PHONE_TONE, min_windows=2)
    assert hears(carol.listen(to_carol, 2.0), IMSBOX_TONE)
    ue.hangup(new)
    assert carol.ended(to_carol) == "remote hangup"


def test_imsbox_transfers_phone(ue: ImsboxUe, carol: ImsboxUe, phone: Phone) -> None:
    """alice (imsbox, the transferor) REFERs bob (the phone) to carol."""
    call = imsbox_calls(ue, phone)
    result = ue.run(ue.client.transfer(call, "carol"), 60)
    assert result.outcome == "transferred", result.to_json()
    assert result.status == 200
    assert call.end_reason == "transferred"
    to_carol = carol.incoming()
    assert carol.answered(to_carol) and to_carol.peer == BOB
    phone.wait_state(ESTABLISHED)   # the phone's new call, to carol
    pcm = carol.listen(to_carol, 2.0)
    assert hears(pcm, PHONE_TONE) and not hears(pcm, IMSBOX_TONE, min_windows=2)
    carol.hangup(to_carol)
    phone.wait_state(ENDED)


def test_attended_transfer_to_phone(ue: ImsboxUe, carol: ImsboxUe, phone: Phone,
                                    kind: str) -> None:
    """RFC 5359 2.5 with the phone as the consulted party (the target): alice calls
    carol, consults bob (the phone), completes; carol's INVITE with Replaces takes
    over bob's consultation call. baresip 1.0 refuses it 420 Bad Extension
    (no Replaces in libre 1.1): the transfer fails and the consultation goes on."""
    first = ue.call(CAROL)
    assert ue.answered(first)
    at_carol = carol.incoming()
    second = ue.run(ue.client.consult(first, "bob"))
    phone.wait_state(INCOMING)
    phone.answer()
    assert ue.answered(second)
    phone.wait_state(ESTABLISHED)
    result = ue.run(ue.client.complete(second), 60)
    if kind == "baresip":   # libre 1.1 knows no Replaces: 420 to carol's INVITE
        assert (result.outcome, result.status) == ("failed", 420), result.to_json()
        assert not first.ended.is_set() and not second.ended.is_set()
        assert ue.hears(second, PHONE_TONE), "the consultation did not come back"
        ue.hangup(second)
        phone.wait_state(ENDED)
        ue.hangup(first)
        assert carol.ended(at_carol) == "remote hangup"
        return
    assert result.outcome == "transferred", result.to_json()
    assert ue.ended(first) == "transferred"
    assert ue.ended(second) == "remote hangup"   # the target BYEs the replaced dialog (F22)
    assert carol.ended(at_carol) == "transferred"
    new = carol.sync(lambda: carol.client.transfers.successors[at_carol.id])
    assert new.call.request.header("Replaces"), "carol's INVITE without Replaces"
    assert carol.answered(new)
    pcm = carol.listen(new, 2.0)
    assert hears(pcm, PHONE_TONE) and not hears(pcm, IMSBOX_TONE, min_windows=2)
    carol.hangup(new)
    phone.wait_state(ENDED)


# baresip 1.0 has no attended transfer (its menu has only 'transfer URI')
@pytest.mark.parametrize("kind", ["linphone", "pjsua2"], indirect=True)
def test_phone_attended_transfer_of_imsbox(ue: ImsboxUe, carol: ImsboxUe, phone: Phone,
                                          kind: str) -> None:
    """RFC 5359 2.5 with the phone as the transferor: alice calls bob (the phone), bob
    holds her, calls carol, then REFERs alice to carol with Replaces; alice's INVITE
    with Replaces takes over bob's call with carol."""
    call = imsbox_calls(ue, phone)
    phone.hold()
    ue.until(lambda: call.rtp.direction in (Direction.RECVONLY, Direction.INACTIVE),
             "held by the phone")
    phone.call(CAROL)
    at_carol = carol.incoming()
    assert carol.answered(at_carol)
    phone.wait_state(ESTABLISHED)
    phone.attended_transfer()  # type: ignore[attr-defined]
    assert ue.ended(call) == "transferred"
    new = ue.sync(lambda: ue.client.transfers.successors[call.id])
    assert "to-tag=" in (new.call.request.header("Replaces") or ""), "no Replaces"
    assert carol.ended(at_carol) == "replaced"
    at_carol_new = carol.sync(lambda: carol.client.transfers.successors[at_carol.id])
    pcm = ue.listen(new, 2.0)
    assert hears(pcm, CAROL_TONE) and not hears(pcm, PHONE_TONE, min_windows=2)
    assert hears(carol.listen(at_carol_new, 2.0), IMSBOX_TONE)
    ue.hangup(new)
    assert carol.ended(at_carol_new) == "remote hangup"


# -- 3-way call (RFC 5359 2.10): imsbox mixes the phone and carol ------------------------------

def test_three_way_call_with_phone(ue: ImsboxUe, carol: ImsboxUe, phone: Phone,
                                   net: ImsboxNet) -> None:
    """alice (imsbox) talks to bob (the phone), adds carol and mixes: bob gets the
    focus re-INVITE, carol hears alice and bob, alice hears bob and carol, and
    the phone's recording has alice and carol (not checked with baresip 1.0,
    whose sndfile dump stops at the hold re-INVITE); bob leaving leaves alice
    and carol a plain call."""
    call = imsbox_calls(ue, phone)
    alice_rec = ue.sync(lambda: call.rtp.sink)   # the first leg's sink: what alice hears
    second = ue.run(ue.client.add_party(call, "carol"))
    assert ue.answered(second)
    at_carol = carol.incoming()
    ue.run(ue.client.conference())
    assert ue.direction(call) is Direction.SENDRECV   # the held phone is resumed
    wait_trace(net, lambda sent: any(
        peer == f"{HOST}:{phone.sip_port}" and t.startswith("INVITE ") and any(
            line.startswith("Contact:") and ";isfocus" in line for line in t.splitlines())
        for peer, t in sent), "focus re-INVITE (Contact ;isfocus) to the phone")
    assert mix_of(carol.listen(at_carol, 2.5), IMSBOX_TONE, PHONE_TONE), "carol: not the mix"
    ue.sync(alice_rec.clear)
    time.sleep(2.5)   # a recording window
    heard_by_alice = ue.sync(lambda: alice_rec.pcm)
    assert mix_of(heard_by_alice, PHONE_TONE, CAROL_TONE), "alice: not the mix"
    assert not tone_present(heard_by_alice, IMSBOX_TONE, threshold=0.05, min_windows=1)
    phone.hangup()
    assert ue.ended(call) == "remote hangup"
    assert hears(carol.listen(at_carol, 2.0), IMSBOX_TONE)   # a plain call again
    ue.hangup(second)
    assert carol.ended(at_carol) == "remote hangup"
    phone.stop()
    if phone.records_after_reinvite:   # baresip 1.0's recording stops at the hold
        assert mix_of(wav_pcm(phone.record_path), IMSBOX_TONE, CAROL_TONE), \
            f"{phone.name} did not hear the mix"
