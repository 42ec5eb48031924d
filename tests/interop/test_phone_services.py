"""The network's services (issue 13: the telephony AS and the media server) with
third-party phones that are only registered, nothing else configured.

``imsbox serve`` as in test_phone_calls.py (whose fixtures these tests share),
the media server playing a 700 Hz WAV on hold; alice and carol are imsbox UEs,
bob is the phone (baresip 1.0, linphonec 5.1 or pjsua2 2.15). Services are set
with ``imsbox service`` (the command line, while serve runs) and each takes
effect on the next call:

* forwarding: the phone as the forward target (History-Info on its INVITE,
  audio both ways), and bob's own forward-unconditional / busy / no-answer
  (the phone never rings, refuses, or is CANCELled after 2 s);
* screening: bob's incoming (603, the phone never rings) and outgoing (the
  phone's INVITE gets 403) screening;
* music on hold (RFC 5359 2.3) for the phone held by imsbox's UE: the music
  server's INVITE with Replaces takes the phone's call over, it hears the
  music, alice takes it back with Replaces;
* the phone joins a network conference (``sip:conference-ID@DOMAIN``): mix-minus,
  everybody hears the other two and not themselves, the others go on after it
  leaves.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imsbox.cli import main as cli_main
from imsbox.media import tone_present

from .baresip import ImsboxNet, imsbox_cli
from .phone_kit import (
    ALICE, BOB, CAROL, CAROL_TONE, IMSBOX_TONE, PASSWORDS, PHONE_TONE, hears_phone, imsbox_calls,
    mix_of, sent_to, traced_to, ue_port, wait_trace,
)
from .phones import DOMAIN, ENDED, ESTABLISHED, INCOMING, ImsboxUe, Phone, heard, hears, tone_wav, wav_pcm

pytestmark = pytest.mark.timeout(180)
MOH_TONE = 700.0
FACTORY = f"sip:conference@{DOMAIN}"


@pytest.fixture
def net(tmp_path: Path) -> Iterator[ImsboxNet]:
    """The conftest network, with music on hold from a 700 Hz WAV."""
    music = tone_wav(tmp_path / "moh.wav", MOH_TONE, seconds=30)
    # the loopback imsbox.toml ends with its [media_server] table: the line joins it
    extra = f'moh_file = "{music}"\n[registrar]\ndigest_algorithms = ["MD5"]\n'
    network = ImsboxNet.start(tmp_path / "net", PASSWORDS, extra_toml=extra)
    try:
        yield network
    finally:
        status = network.stop()
        (tmp_path / "net" / "trace.txt").write_text(network.trace())   # for a failure
        (tmp_path / "net" / "stderr.txt").write_text("\n".join(network.stderr))
        assert status == 0, f"imsbox serve exit {status}: {network.stderr[-20:]}"


def service(net: ImsboxNet, *args: str, subprocess: bool = False) -> str:
    """``imsbox service ARGS`` beside serve: the command as a user runs it (a
    subprocess), or its own entry point ``imsbox.cli.main`` in this process (the
    same parser and code without ~1 s of interpreter start per command)."""
    if subprocess:
        done = imsbox_cli("service", *args, *net.common)
        assert done.returncode == 0, f"imsbox service {' '.join(args)}: {done.stderr}"
        return done.stdout
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli_main(["service", *args, *net.common])
    assert status == 0, f"imsbox service {' '.join(args)}: exit {status}"
    return out.getvalue()


def invites_to(net: ImsboxNet, port: int) -> int:
    return sum(t.startswith("INVITE ") for t in sent_to(net, port))


def no_calls(ue: ImsboxUe) -> None:
    ue.until(lambda: not ue.client.calls, "done with its calls")


def history(call: object) -> str:
    return call.call.request.header("History-Info") or ""  # type: ignore[attr-defined]


# -- forwarding (RFC 5359 2.7, 2.8, 2.9) and screening (2.13, 2.14) ------------------------

def test_forwarding_and_screening_for_phone(ue: ImsboxUe, carol: ImsboxUe, phone: Phone, kind: str,
                                      net: ImsboxNet) -> None:
    # 2.8: the phone refuses (486), carol takes it; linphonec can only decline (603),
    # which is not busy: alice gets the 603
    service(net, "set", "bob", "forward-busy", "carol", subprocess=True)
    service(net, "set", "bob", "forward-no-answer", "carol", "--after", "2")
    phone.busy()
    call = ue.call(BOB)
    if kind == "linphone":
        assert ue.ended(call) == "declined"
    else:
        at_carol = carol.incoming()
        assert ue.answered(call) and "cause=486" in history(at_carol), history(at_carol)
        ue.hangup(call)
    no_calls(carol)
    no_calls(ue)

    # 2.9: the phone rings 2 s, the AS CANCELs it and forwards to carol
    phone.events.skip()
    call = ue.call(BOB)
    phone.wait_state(INCOMING)
    phone.wait_state(ENDED, 15)    # CANCELled by the AS, nobody answered
    at_carol = carol.incoming()
    assert ue.answered(call) and "cause=408" in history(at_carol), history(at_carol)
    assert hears(carol.listen(at_carol, 1.5), IMSBOX_TONE)
    ue.hangup(call)
    no_calls(carol)

    # 2.7: bob's phone never rings, carol gets his calls
    service(net, "set", "bob", "forward-unconditional", "carol")
    assert "forward-unconditional" in service(net, "show", "bob")
    before = invites_to(net, phone.sip_port)
    call = ue.call(BOB)
    at_carol = carol.incoming()
    assert ue.answered(call) and "cause=302" in history(at_carol)
    assert invites_to(net, phone.sip_port) == before, "the phone got a forwarded-away call"
    ue.hangup(call)
    no_calls(carol)
    no_calls(ue)
    service(net, "unset", "bob", "forward-unconditional")

    # the phone as the target: carol forwards everything to bob, whose phone gets
    # the call with History-Info, and talks to alice
    service(net, "set", "carol", "forward-unconditional", "bob")
    phone.events.skip()
    call = ue.call(CAROL)
    phone.wait_state(INCOMING)
    phone.answer()
    assert ue.answered(call) and hears_phone(ue, call)
    invite = traced_to(net, phone.sip_port, lambda t: t.startswith("INVITE ") and CAROL in t
                       and "cause=302" in t, "the forwarded INVITE to the phone")[-1]
    hi = next(line for line in invite.splitlines() if line.startswith("History-Info:"))
    assert f"<{CAROL}" in hi and "sip:bob@ims.test;cause=302" in hi, hi
    ue.hangup(call)
    phone.wait_state(ENDED)
    no_calls(ue)
    service(net, "unset", "carol", "forward-unconditional")

    # 2.13: bob screens alice: 603 from the AS, the phone never rings
    service(net, "set", "bob", "screen-incoming", "alice")
    before = invites_to(net, phone.sip_port)
    call = ue.call(BOB)
    ue.ended(call)
    final = call.call.final.result()
    assert final is not None and (final.status, final.reason) == (
        603, "Screening Failure (Terminating)"), final
    assert invites_to(net, phone.sip_port) == before, "the phone rang for a screened caller"
    # 2.14: bob's phone may not call carol: its INVITE gets 403, carol never rings
    service(net, "set", "bob", "screen-outgoing", "carol")
    to_carol = invites_to(net, ue_port(carol))
    phone.call(CAROL)
    phone.wait_state(ENDED)
    wait_trace(net, lambda sent: any(
        t.startswith("SIP/2.0 403 Screening Failure (Originating)") for _, t in sent),
        "403 to the phone's INVITE")
    assert invites_to(net, ue_port(carol)) == to_carol
    # anyone else still gets through both ways
    phone.call(ALICE)
    incoming = ue.incoming()
    assert ue.answered(incoming) and hears_phone(ue, incoming)
    ue.hangup(incoming)
    phone.wait_state(ENDED)


# -- music on hold (RFC 5359 2.3) -------------------------------------------------------------

def test_music_on_hold_and_conference_with_phone(ue: ImsboxUe, carol: ImsboxUe, phone: Phone,
                                                kind: str, net: ImsboxNet) -> None:
    """The media server with the phone, twice.

    2.3: alice holds bob (the phone) with the network's music: the music server's
    INVITE with Replaces (F12) takes the phone's call over and BYEs alice (F15);
    alice's resume INVITEs the phone with Replaces naming the music dialog (F19).
    baresip 1.0 refuses the music's INVITE 420 (no Replaces): held in silence,
    then an ordinary resume.

    2.10 with the network focus: the phone joins a conference made at the
    factory (phone_joins_network_conference)."""
    call = imsbox_calls(ue, phone)
    assert hears_phone(ue, call)
    held = ue.run(ue.client.music_hold(call), 60)
    music_invite = traced_to(net, phone.sip_port, lambda t: t.startswith("INVITE ") and
                             "\nReplaces:" in t, "the music's INVITE to the phone")
    assert music_invite and "Require: replaces" in music_invite[0]
    assert "\nReferred-By:" in music_invite[0]
    if kind == "baresip":
        assert (held.status, held.playing) == (420, False), held
        back = ue.run(ue.client.music_resume(held), 30)
        assert hears_phone(ue, back)
        ue.hangup(back)
        phone.wait_state(ENDED)
        phone_joins_network_conference(ue, carol, phone)
        return
    assert held.playing, held
    assert ue.ended(call) == "remote hangup"    # the phone swapped us for the music (F15)
    time.sleep(2.0)    # the phone listens to the music
    back = ue.run(ue.client.music_resume(held), 30)
    assert ue.answered(back) and "Replaces" in back.call.request.headers
    assert hears_phone(ue, back)
    ue.hangup(back)
    phone.wait_state(ENDED)
    phone_joins_network_conference(ue, carol, phone)
    assert heard(phone.record_path, MOH_TONE), f"{phone.name} did not hear the music"
    assert heard(phone.record_path, IMSBOX_TONE), f"{phone.name} did not hear alice"


# -- a network conference (2.10, the media server's focus) ------------------------------------

def phone_joins_network_conference(ue: ImsboxUe, carol: ImsboxUe, phone: Phone) -> None:
    """alice creates a conference at the factory, carol and the phone join its URI
    (the Contact ;isfocus); the media server mixes minus each one's own voice."""
    first = ue.call(FACTORY)
    assert ue.answered(first)
    conference = ue.sync(lambda: str(first.call.session.dialog.remote_target))
    assert conference.startswith("sip:conference-"), conference
    at_carol = carol.call(conference)
    assert carol.answered(at_carol)
    phone.call(conference)
    phone.wait_state(ESTABLISHED)
    ue.listen(first, 0.5)   # the phone's audio starts
    by_alice, by_carol = ue.listen(first, 1.5), carol.listen(at_carol, 1.5)
    assert mix_of(by_alice, PHONE_TONE, CAROL_TONE), "alice: not bob and carol"
    assert mix_of(by_carol, PHONE_TONE, IMSBOX_TONE), "carol: not alice and bob"
    assert not tone_present(by_alice, IMSBOX_TONE, threshold=0.05, min_windows=1)
    assert not tone_present(by_carol, CAROL_TONE, threshold=0.05, min_windows=1)
    phone.hangup()        # the phone leaves: alice and carol go on
    phone.wait_state(ENDED)
    ue.listen(first, 0.3)
    pcm = ue.listen(first, 1.5)
    assert hears(pcm, CAROL_TONE) and not hears(pcm, PHONE_TONE, min_windows=2)
    assert not first.ended.is_set() and not at_carol.ended.is_set()
    carol.hangup(at_carol)
    ue.hangup(first)
    phone.stop()
    recording = wav_pcm(phone.record_path)
    assert mix_of(recording, IMSBOX_TONE, CAROL_TONE), f"{phone.name} did not hear the mix"
    assert not tone_present(recording, PHONE_TONE, threshold=0.05, min_windows=1)
