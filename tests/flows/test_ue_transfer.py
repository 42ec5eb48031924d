"""Call transfers between RcsClients through the real IMS core (issue 12; RFC 5359
2.2, 2.4, 2.5, 2.6; RFC 3515, 3891, 5589).

alice (440 Hz) calls bob (1000 Hz); carol (1800 Hz) is the third party. Each UE
records what it hears (``Recorder``, Goertzel ``tone_present``); a transfer moves a
party's tone and recording to its new call, so after it the right pair hears each
other and the held party hears nothing. The SIP each UE sends and receives is
recorded at its socket (the transport's trace hook) and checked as a ladder per
Call-ID: REFER / 202 / NOTIFY with the sipfrag bodies / INVITE with Referred-By or
Replaces / BYE.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.ims.provisioning import add_user
from imsbox.media import Recorder, ToneSource, tone_present
from imsbox.sdp import Direction
from imsbox.sip.headers import NameAddr, Replaces, refer_to_target
from imsbox.sip.message import Request, Response
from imsbox.sip.parser import parse as parse_message
from imsbox.sip.transport import Flow
from imsbox.store import open_store
from imsbox.ue.call import VoiceCall
from imsbox.ue.client import RcsClient
from imsbox.ue.events import CallEnded, CallTransferred

from helpers import DOMAIN, alice_and_bob, client, network_with, run_within, settle

pytestmark = pytest.mark.timeout(90)
WAIT = 8.0
ALICE_TONE, BOB_TONE, CAROL_TONE = 440.0, 1000.0, 1800.0
TONES = {"alice": ALICE_TONE, "bob": BOB_TONE, "carol": CAROL_TONE}
BOB, CAROL = f"sip:bob@{DOMAIN}", f"sip:carol@{DOMAIN}"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = alice_and_bob(tmp_path)

    async def carol() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "carol", "carol-secret", "+15550003")
    asyncio.run(carol())
    return config


# -- the wire at the UEs ------------------------------------------------------------------

@dataclass
class Wire:
    direction: str
    message: Request | Response

    @property
    def label(self) -> str:
        m = self.message
        return m.method if isinstance(m, Request) else f"{m.status} {m.cseq.method}"


@dataclass
class Sip:
    """Every SIP message in and out of each watched UE, retransmissions left out."""

    wires: dict[str, list[Wire]] = field(default_factory=dict)
    _seen: set[tuple[str, str, bytes]] = field(default_factory=set)

    def watch(self, name: str, ue: RcsClient) -> None:
        self.wires[name] = []

        def trace(direction: str, data: bytes, flow: Flow) -> None:
            key = (name, direction, bytes(data))
            if key in self._seen:
                return
            self._seen.add(key)
            message = parse_message(bytes(data))
            if isinstance(message, Response) and message.status == 100:
                return   # timer-driven and hop-by-hop: not part of the ladder
            self.wires[name].append(Wire(direction, message))
        ue.core.endpoint.transport.trace = trace

    def ladder(self, name: str, call_id: str) -> list[tuple[str, str]]:
        return [(w.direction, w.label) for w in self.wires[name]
                if w.message.call_id == call_id]

    async def settled(self, name: str, call_id: str, step: tuple[str, str]) -> None:
        """Wait for ``step`` (the end of a call outlives its 200 BYE on the wire)."""
        await settle(lambda: step in self.ladder(name, call_id), WAIT)

    def requests(self, name: str, direction: str, method: str) -> list[Request]:
        return [w.message for w in self.wires[name] if w.direction == direction
                and isinstance(w.message, Request) and w.message.method == method]


def sipfrags(sip: Sip, name: str, direction: str, call_id: str) -> list[bytes]:
    return [n.body.strip() for n in sip.requests(name, direction, "NOTIFY")
            if n.call_id == call_id]


def in_order(ladder: list[tuple[str, str]], steps: list[tuple[str, str]]) -> bool:
    """``steps`` appear in ``ladder`` in this order (PRACKs and the like between)."""
    it = iter(ladder)
    return all(step in it for step in steps)


# -- parties ---------------------------------------------------------------------------------

def plays(ue: RcsClient, name: str) -> Recorder:
    """What ``name`` plays into and records of the calls it answers."""
    recorder = Recorder()
    ue.call_service.source = lambda: ToneSource(TONES[name])
    ue.call_service.sink = lambda: recorder
    return recorder


def hears(recorder: Recorder, tone: float) -> bool:
    return tone_present(recorder.pcm, tone, min_windows=3)


async def listen(*recorders: Recorder, seconds: float = 1.2) -> None:
    await asyncio.sleep(0.3)        # what was in flight plays out
    for r in recorders:
        r.clear()
    await asyncio.sleep(seconds)


async def transferred(ue: RcsClient) -> CallTransferred:
    event = await ue.wait_event(CallTransferred, WAIT * 2)
    assert isinstance(event, CallTransferred)
    return event


async def ended(ue: RcsClient, call_id: str) -> CallEnded:
    async def first() -> CallEnded:
        while True:
            event = await ue.wait_event(CallEnded, WAIT)
            if isinstance(event, CallEnded) and event.call_id == call_id:
                return event
    return await first()


def run(scenario: Callable[[], Awaitable[None]], limit: float = 80) -> None:
    run_within(scenario, limit)


@dataclass
class Trio:
    alice: RcsClient
    bob: RcsClient
    carol: RcsClient
    sip: Sip
    alice_rec: Recorder
    bob_rec: Recorder
    carol_rec: Recorder
    call: VoiceCall          # alice's call to bob
    at_bob: VoiceCall        # the same call at bob


async def alice_calls_bob(alice: RcsClient, bob: RcsClient, carol: RcsClient) -> Trio:
    sip = Sip()
    for name, ue in (("alice", alice), ("bob", bob), ("carol", carol)):
        sip.watch(name, ue)
    bob_rec, carol_rec = plays(bob, "bob"), plays(carol, "carol")
    alice_rec = Recorder()
    call = await alice.call("bob", tone=ALICE_TONE)
    call.rtp.sink = alice_rec
    assert await call.wait_answered(WAIT)
    await settle(lambda: call.id in bob.calls and bob.calls[call.id].answered.is_set())
    trio = Trio(alice, bob, carol, sip, alice_rec, bob_rec, carol_rec, call, bob.calls[call.id])
    await listen(alice_rec, bob_rec)
    assert hears(alice_rec, BOB_TONE) and hears(bob_rec, ALICE_TONE)
    return trio


def three(config: Config, **carol: object) -> tuple[RcsClient, RcsClient, RcsClient]:
    return (client(config, "alice", answer_calls=0), client(config, "bob", answer_calls=0),
            client(config, "carol", answer_calls=0.2, **carol))  # type: ignore[arg-type]


# -- 2.2 consultation hold -------------------------------------------------------------------

def test_consultation_hold(config: Config) -> None:
    """bob holds alice and calls carol: bob and carol hear each other, alice hears
    nothing (held, recvonly, and bob's tone went to the consultation); hanging up
    the consultation brings bob's audio back to alice after resume."""
    async def scenario() -> None:
        alice, bob, carol = three(config)
        async with network_with(config, alice, bob, carol):
            t = await alice_calls_bob(alice, bob, carol)
            consult = await bob.consult(t.at_bob, "carol")
            assert await consult.wait_answered(WAIT)
            assert t.at_bob.held and t.at_bob.rtp.direction is Direction.SENDONLY
            assert t.call.rtp.direction is Direction.RECVONLY       # alice answered the hold
            assert b"a=sendonly" in (t.at_bob.call.local_sdp or b"")
            await listen(t.alice_rec, t.bob_rec, t.carol_rec)
            assert hears(t.carol_rec, BOB_TONE) and hears(t.bob_rec, CAROL_TONE)
            assert not hears(t.bob_rec, ALICE_TONE)                 # alice is held
            assert not hears(t.alice_rec, BOB_TONE) and not hears(t.alice_rec, CAROL_TONE)
            ladder = t.sip.ladder("bob", t.call.id)
            assert ladder[-3:] == [("out", "INVITE"), ("in", "200 INVITE"), ("out", "ACK")]
            assert [s for s in t.sip.ladder("bob", consult.id)][:2] == [
                ("out", "INVITE"), ("in", "180 INVITE")]
            await consult.hangup()
            await t.at_bob.resume()
            await listen(t.alice_rec, t.bob_rec)
            assert hears(t.alice_rec, BOB_TONE) and hears(t.bob_rec, ALICE_TONE)
            await t.call.hangup()
    run(scenario)


# -- 2.4 unattended transfer -------------------------------------------------------------------

def test_unattended_transfer(config: Config) -> None:
    """bob transfers alice to carol: hold, REFER (Refer-To carol, Referred-By bob),
    202, NOTIFY 100 then 200 sipfrags, BYE; alice INVITEs carol with Referred-By;
    then alice and carol hear each other."""
    async def scenario() -> None:
        alice, bob, carol = three(config)
        async with network_with(config, alice, bob, carol):
            t = await alice_calls_bob(alice, bob, carol)
            result = await bob.transfer(t.at_bob, "carol")
            assert result.outcome == "transferred" and result.status == 200
            assert result.role == "transferor" and result.kind == "unattended"
            assert result.to_json()["event"] == "call_transferred"
            at_alice = await transferred(alice)
            assert at_alice.role == "transferee" and at_alice.outcome == "transferred"
            assert at_alice.call_id == t.call.id and at_alice.target == CAROL
            assert (await ended(bob, t.call.id)).reason == "transferred"
            assert (await ended(alice, t.call.id)).reason == "transferred"
            # bob's side of the old dialog: hold, REFER, NOTIFYs, BYE
            await t.sip.settled("bob", t.call.id, ("in", "200 BYE"))
            ladder = t.sip.ladder("bob", t.call.id)
            refer_at = ladder.index(("out", "REFER"))
            assert ladder[refer_at - 3:refer_at] == [
                ("out", "INVITE"), ("in", "200 INVITE"), ("out", "ACK")]   # RFC 5589 6.1 hold
            assert ladder[refer_at:] == [
                ("out", "REFER"), ("in", "202 REFER"), ("in", "NOTIFY"), ("out", "200 NOTIFY"),
                ("in", "NOTIFY"), ("out", "200 NOTIFY"), ("out", "BYE"), ("in", "200 BYE")]
            (refer,) = t.sip.requests("alice", "in", "REFER")
            target, embedded = refer_to_target(refer.header("Refer-To") or "")
            assert str(target.uri) == CAROL and not embedded
            assert str(NameAddr.parse(refer.header("Referred-By") or "").uri) == BOB
            assert sipfrags(t.sip, "bob", "in", t.call.id) == [
                b"SIP/2.0 100 Trying", b"SIP/2.0 200 OK"]
            final = t.sip.requests("bob", "in", "NOTIFY")[-1]
            assert (final.header("Subscription-State") or "").startswith("terminated")
            assert (final.header("Event") or "").startswith("refer")
            assert "message/sipfrag" in (final.header("Content-Type") or "")
            # alice's new call to carol carries Referred-By
            new_id = at_alice.new_call_id
            assert new_id is not None and new_id in alice.calls
            (invite,) = [r for r in t.sip.requests("carol", "in", "INVITE")
                         if r.call_id == new_id and not r.to.tag]
            assert str(NameAddr.parse(invite.header("Referred-By") or "").uri) == BOB
            assert invite.header("Replaces") is None
            assert in_order(t.sip.ladder("alice", new_id), [
                ("out", "INVITE"), ("in", "180 INVITE"), ("in", "200 INVITE"), ("out", "ACK")])
            await listen(t.alice_rec, t.carol_rec, t.bob_rec)
            assert hears(t.alice_rec, CAROL_TONE) and hears(t.carol_rec, ALICE_TONE)
            assert not hears(t.alice_rec, BOB_TONE) and not hears(t.carol_rec, BOB_TONE)
            await alice.calls[new_id].hangup()
    run(scenario)


def test_unattended_transfer_to_busy_target(config: Config) -> None:
    """carol is busy: the NOTIFY sipfrag says 486, bob resumes alice, both report
    the failure and the original call goes on with audio both ways."""
    async def scenario() -> None:
        alice, bob, carol = three(config, busy_calls=True)
        async with network_with(config, alice, bob, carol):
            t = await alice_calls_bob(alice, bob, carol)
            result = await bob.transfer(t.at_bob, "carol")
            assert result.outcome == "failed" and result.status == 486
            at_alice = await transferred(alice)
            assert at_alice.outcome == "failed" and at_alice.status == 486
            assert sipfrags(t.sip, "bob", "in", t.call.id) == [
                b"SIP/2.0 100 Trying", b"SIP/2.0 486 Busy Here"]
            assert not t.at_bob.held and t.at_bob.rtp.direction is Direction.SENDRECV
            assert t.call.id in alice.calls and t.call.id in bob.calls
            await listen(t.alice_rec, t.bob_rec)
            assert hears(t.alice_rec, BOB_TONE) and hears(t.bob_rec, ALICE_TONE)
            await t.call.hangup()
    run(scenario)


# -- 2.5 attended transfer ---------------------------------------------------------------------

def test_attended_transfer(config: Config) -> None:
    """consult then complete: REFER to alice with Refer-To carol?Replaces=<bob-carol
    dialog>; alice INVITEs carol with Replaces; carol answers at once and BYEs bob;
    NOTIFY 200; bob BYEs alice; alice and carol hear each other."""
    async def scenario() -> None:
        alice, bob, carol = three(config)
        async with network_with(config, alice, bob, carol):
            t = await alice_calls_bob(alice, bob, carol)
            consult = await bob.consult(t.at_bob, "carol")
            assert await consult.wait_answered(WAIT)
            dialog = consult.call.session.dialog
            assert dialog is not None
            result = await bob.complete(consult)
            assert result.outcome == "transferred" and result.kind == "attended"
            at_alice = await transferred(alice)
            at_carol = await transferred(carol)
            assert at_alice.kind == "attended" and at_alice.role == "transferee"
            assert at_carol.role == "target" and at_carol.call_id == consult.id
            (refer,) = t.sip.requests("alice", "in", "REFER")
            raw = refer.header("Refer-To") or ""
            assert "?" in raw and "Replaces=" in raw and "%3Bto-tag%3D" in raw  # escaped
            target, embedded = refer_to_target(raw)
            assert str(target.uri.copy(headers=[])) == CAROL    # type: ignore[attr-defined]
            replaces = Replaces.parse(embedded["Replaces"])
            assert (replaces.call_id, replaces.to_tag, replaces.from_tag) == (
                dialog.id.call_id, dialog.id.remote_tag, dialog.id.local_tag)
            assert embedded["Require"] == "replaces"
            new_id = at_alice.new_call_id
            assert new_id is not None and at_carol.new_call_id == new_id
            (invite,) = [r for r in t.sip.requests("carol", "in", "INVITE") if r.call_id == new_id]
            assert Replaces.parse(invite.header("Replaces") or "") == replaces
            assert "replaces" in (invite.header("Require") or "")
            assert str(NameAddr.parse(invite.header("Referred-By") or "").uri) == BOB
            # carol: no ringing for a Replaces, and she ends the consultation (F22)
            assert t.sip.ladder("carol", new_id)[:2] == [("in", "INVITE"), ("out", "200 INVITE")]
            await t.sip.settled("carol", consult.id, ("in", "200 BYE"))
            assert t.sip.ladder("carol", consult.id)[-2:] == [("out", "BYE"), ("in", "200 BYE")]
            assert (await ended(carol, consult.id)).reason == "replaced"
            assert sipfrags(t.sip, "bob", "in", t.call.id) == [
                b"SIP/2.0 100 Trying", b"SIP/2.0 200 OK"]
            await t.sip.settled("bob", t.call.id, ("in", "200 BYE"))
            assert t.sip.ladder("bob", t.call.id)[-2:] == [("out", "BYE"), ("in", "200 BYE")]
            await listen(t.alice_rec, t.carol_rec)
            assert hears(t.alice_rec, CAROL_TONE) and hears(t.carol_rec, ALICE_TONE)
            assert not hears(t.alice_rec, BOB_TONE) and not hears(t.carol_rec, BOB_TONE)
            assert not bob.calls
            await alice.calls[new_id].hangup()
    run(scenario)


# -- 2.6 IM transfer --------------------------------------------------------------------------

def test_im_transfer(config: Config) -> None:
    """bob messages carol alice's URI with Replaces; carol's UE (take_im_transfers)
    INVITEs alice with Replaces; alice replaces her call with bob (BYE to bob)."""
    async def scenario() -> None:
        alice, bob, carol = three(config, take_im_transfers=True)
        async with network_with(config, alice, bob, carol):
            t = await alice_calls_bob(alice, bob, carol)
            result = await bob.im_transfer(t.at_bob, "carol")
            assert result.outcome == "transferred" and result.kind == "im"
            at_carol = await transferred(carol)
            at_alice = await transferred(alice)
            assert at_carol.role == "target" and at_carol.outcome == "transferred"
            assert at_alice.call_id == t.call.id and at_alice.kind == "im"
            (message,) = t.sip.requests("carol", "in", "MESSAGE")
            assert b"sip:alice@ims.test?" in message.body and b"Replaces=" in message.body
            new_id = at_alice.new_call_id
            assert new_id is not None and new_id == at_carol.new_call_id
            (invite,) = [r for r in t.sip.requests("alice", "in", "INVITE") if r.call_id == new_id]
            replaces = Replaces.parse(invite.header("Replaces") or "")
            dialog = t.call.call.session.dialog
            assert dialog is not None
            assert (replaces.call_id, replaces.to_tag, replaces.from_tag) == (
                dialog.id.call_id, dialog.id.local_tag, dialog.id.remote_tag)
            await t.sip.settled("alice", t.call.id, ("in", "200 BYE"))
            assert t.sip.ladder("alice", t.call.id)[-2:] == [("out", "BYE"), ("in", "200 BYE")]
            assert (await ended(alice, t.call.id)).reason == "replaced"
            await listen(t.alice_rec, t.carol_rec)
            assert hears(t.alice_rec, CAROL_TONE) and hears(t.carol_rec, ALICE_TONE)
            assert not hears(t.alice_rec, BOB_TONE)
            await alice.calls[new_id].hangup()
    run(scenario)


# -- bad input --------------------------------------------------------------------------------

async def refer_in_call(call: VoiceCall, ue: RcsClient, headers: list[tuple[str, str]]) -> Response:
    """A REFER with these headers in the call's dialog, through the core."""
    dialog = call.call.session.dialog
    assert dialog is not None
    request = dialog.create_request("REFER", headers)
    return await ue.core.endpoint.request(request).final()


REFER_CASES = [
    ([], 400, "Missing Refer-To"),
    ([("Refer-To", f"<{CAROL}>"), ("Refer-To", "<sip:dave@ims.test>")], 400, "Multiple Refer-To"),
    ([("Refer-To", "<http://example.com/>")], 403, "sip, sips or tel URI"),
    ([("Refer-To", f"<{CAROL};method=BYE>")], 403, "only INVITE"),
]


def test_bad_refers_in_a_call(config: Config) -> None:
    """RFC 3515 2.4.2: no Refer-To or more than one -> 400 with the reason; a
    Refer-To we will not act on -> 403; the call goes on."""
    async def scenario() -> None:
        alice, bob, carol = three(config)
        async with network_with(config, alice, bob, carol):
            t = await alice_calls_bob(alice, bob, carol)
            for headers, status, reason in REFER_CASES:
                response = await refer_in_call(t.call, alice, headers)
                assert response.status == status, (headers, response.status, response.reason)
                assert reason in response.reason
            assert not t.sip.requests("bob", "out", "NOTIFY")   # no subscription was made
            assert not any(r.call_id != t.call.id for r in t.sip.requests("bob", "out", "INVITE"))
            assert t.call.id in bob.calls and not t.call.ended.is_set()
            await t.call.hangup()
    run(scenario)


async def replaces_invite(ue: RcsClient, target: str, replaces: str) -> int:
    call = await ue.call_service.place(target, headers=[("Replaces", replaces)])
    response = await call.call.wait_final()
    await call.ended.wait()
    return response.status if response is not None else 0


def test_bad_replaces(config: Config) -> None:
    """RFC 3891 3: Replaces naming no dialog -> 481; naming an early dialog the
    recipient did not create (bob's ringing incoming call) -> 481; early-only on a
    confirmed dialog -> 486. The calls named are not disturbed."""
    async def scenario() -> None:
        alice, bob, carol = (client(config, "alice"), client(config, "bob", answer_calls=3.0),
                             client(config, "carol", answer_calls=0))
        async with network_with(config, alice, bob, carol):
            assert await replaces_invite(carol, BOB, "nothing@here;to-tag=a;from-tag=b") == 481
            ringing = await alice.call("bob", tone=ALICE_TONE)
            await settle(lambda: ringing.id in bob.calls and ringing.call.ringing.is_set(), WAIT)
            early = bob.calls[ringing.id].call.session.dialog
            assert early is not None and early.is_early
            as_bob_sees_it = str(Replaces(early.id.call_id, early.id.local_tag,
                                          early.id.remote_tag))
            assert await replaces_invite(carol, BOB, as_bob_sees_it) == 481
            assert await ringing.wait_answered(WAIT)       # still there: bob answers it
            early_only = str(Replaces(early.id.call_id, early.id.local_tag,
                                      early.id.remote_tag, early_only=True))
            assert await replaces_invite(carol, BOB, early_only) == 486
            assert not ringing.ended.is_set() and ringing.id in bob.calls
            await ringing.hangup()
    run(scenario)


def test_replaces_an_early_dialog_we_created(config: Config) -> None:
    """RFC 3891 3: Replaces (early-only) naming alice's own ringing call to bob: alice
    answers carol's INVITE at once and CANCELs her call to bob (487 there)."""
    async def scenario() -> None:
        alice, bob, carol = (client(config, "alice"), client(config, "bob", answer_calls=20.0),
                             client(config, "carol", answer_calls=0))
        async with network_with(config, alice, bob, carol):
            sip = Sip()
            sip.watch("bob", bob)
            ringing = await alice.call("bob", tone=ALICE_TONE)
            await settle(lambda: bool(ringing.call.session.early), WAIT)
            (early,) = ringing.call.session.dialogs
            assert early.is_early
            replaces = Replaces(early.id.call_id, early.id.local_tag, early.id.remote_tag,
                                early_only=True)
            new = await carol.call_service.place(f"sip:alice@{DOMAIN}",
                                                 headers=[("Replaces", str(replaces))])
            assert await new.wait_answered(WAIT)
            event = await transferred(alice)
            assert event.call_id == ringing.id and event.new_call_id in alice.calls
            assert (await ended(alice, ringing.id)).reason == "replaced"
            assert (await ended(bob, ringing.id)).reason == "cancelled"
            assert ("in", "CANCEL") in sip.ladder("bob", ringing.id)
            await new.hangup()
    run(scenario)
