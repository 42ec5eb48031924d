"""In-dialog requests keep the feature tags (issue 10, seeds 000/001): a re-INVITE
or UPDATE, and the 2xx answering it, carry a Contact with the same
``+g.3gpp.icsi-ref`` and ``+sip.instance`` as the initial INVITE and its 200 -
from the UE and from the messaging AS's anchor - through the real core on loopback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import client, network_with
from test_ue_client import run, ue_config
from test_ue_wire import tap

from imsbox.sip.headers import Contact
from imsbox.sip.message import Request, Response
from imsbox.sip.parser import parse as parse_sip

pytestmark = pytest.mark.timeout(40)


def tags(message: Request | Response) -> dict[str, str | None]:
    contact = Contact.parse(message.headers.get("Contact") or "")
    return {n: contact.params.get(n) for n, _ in contact.params if n.startswith("+")}


def of(messages: list[Request], method: str, call_id: str) -> list[Request]:
    return [m for m in messages if m.method == method and m.call_id == call_id]


def ok(responses: list[Response], method: str, call_id: str) -> list[Response]:
    return [r for r in responses if r.status == 200 and r.cseq.method == method
            and r.call_id == call_id]


def test_chat_update_and_its_200_through_the_anchor_keep_the_tags(tmp_path: Path) -> None:
    """alice's UPDATE in a chat anchored at the messaging AS: her Contact has her
    cpm.session ICSI and instance as on the INVITE; the AS's 200 the tags of its 200."""
    config = ue_config(tmp_path, via_as=True)
    alice, bob = client(config, "alice"), client(config, "bob")
    received: list[Request] = []
    sent: list[Request] = []
    answers: list[Response] = []

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            tap(alice.core.endpoint.transport, received, answers, "in")
            original_trace = alice.core.endpoint.transport.trace

            def outgoing(direction: str, data: bytes, flow: object) -> None:
                original_trace(direction, data, flow)
                if direction == "out" and data.startswith((b"INVITE", b"UPDATE")):
                    message = parse_sip(data)
                    assert isinstance(message, Request)
                    sent.append(message)
            alice.core.endpoint.transport.trace = outgoing
            chat = await alice.open_chat("bob")
            final = await chat.call.update()
            assert final is not None and final.status == 200
            call_id = chat.call.call_id
            await chat.close()
        invite, update = of(sent, "INVITE", call_id)[0], of(sent, "UPDATE", call_id)[0]
        assert tags(update) == tags(invite) and "+sip.instance" in tags(invite)
        first, refreshed = ok(answers, "INVITE", call_id)[0], ok(answers, "UPDATE", call_id)[0]
        assert tags(refreshed) == tags(first)
        assert "+sip.instance" in tags(first) and "+g.3gpp.icsi-ref" in tags(first)

    run(scenario)


def test_voice_call_hold_reinvite_and_its_200_keep_the_mmtel_tags(tmp_path: Path) -> None:
    """Hold (re-INVITE sendonly) in a call through the core: alice's re-INVITE and
    bob's 200 to it have the MMTel ICSI and each side's +sip.instance, as the
    INVITE and its 200."""
    config = ue_config(tmp_path, via_as=True)
    alice, bob = client(config, "alice"), client(config, "bob", answer_calls=0)
    at_bob: list[Request] = []
    from_bob: list[Response] = []

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            tap(bob.core.endpoint.transport, at_bob, from_bob, "out")
            call = await alice.call("bob")
            assert await call.wait_answered(5)
            assert await call.hold()
            await call.hangup()
        # one per CSeq: a retransmission over UDP under load is the same request
        invites = list({r.cseq.seq: r for r in at_bob if r.method == "INVITE"}.values())
        assert len(invites) == 2
        assert tags(invites[1]) == tags(invites[0])
        assert tags(invites[0])["+sip.instance"] == f"<{alice.instance}>"
        oks = list({r.cseq.seq: r for r in from_bob
                    if r.status == 200 and r.cseq.method == "INVITE"}.values())
        assert len(oks) == 2 and tags(oks[1]) == tags(oks[0])
        assert tags(oks[0])["+sip.instance"] == f"<{bob.instance}>"
        assert "+g.3gpp.icsi-ref" in tags(oks[0])

    run(scenario)
