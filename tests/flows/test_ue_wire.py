"""The UE's requests on the wire as seed 003 has them (issue 10), through the real
core and the messaging AS on loopback: what the P-CSCF receives from each UE and
what the AS sends on to the other.

* Contact on INVITE and MESSAGE (not only REGISTER): ``+g.3gpp.icsi-ref`` with
  the request's ICSI and the UE's ``+sip.instance``; the AS's far-leg INVITE
  carries the caller's.
* CPM sessions: ``Supported: timer``, ``Session-Expires: 3600;refresher=uac``,
  ``Min-SE: 90``; pager messages: ``Request-Disposition: no-fork``.
* The large message offer: sendonly, ``accept-wrapped-types:text/plain``,
  ``file-selector:size``; the file's delivery IMDN with the cpm.filetransfer ICSI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import client, network_with
from test_ue_client import WAIT, run, ue_config

from imsbox import sdp
from imsbox.rcs import cpm
from imsbox.sip.headers import Contact
from imsbox.sip.message import Request, Response
from imsbox.sip.parser import parse as parse_sip
from imsbox.sip.transport.base import Flow
from imsbox.ue.client import FileReceived, GroupJoined, MessageReceived, MessageStatus, RcsClient

pytestmark = pytest.mark.timeout(40)


def tap(transport: object, seen: list[Request], responses: list[Response] | None = None,
        direction_of_responses: str = "in") -> None:
    """Keep the requests ``transport`` receives (its trace hook), and the responses
    it sends or receives (``direction_of_responses``) in ``responses``."""
    before: Callable[[str, bytes, Flow], None] | None = transport.trace  # type: ignore[attr-defined]

    def trace(direction: str, data: bytes, flow: Flow) -> None:
        if before is not None:
            before(direction, data, flow)
        if direction == "in" and data.strip():
            message = parse_sip(data)
            if isinstance(message, Request):
                seen.append(message)
        if direction == direction_of_responses and data.strip() and responses is not None:
            message = parse_sip(data)
            if isinstance(message, Response):
                responses.append(message)
    transport.trace = trace  # type: ignore[attr-defined]


def sent_by(seen: list[Request], ue: RcsClient, method: str) -> list[Request]:
    """The ``method`` requests the P-CSCF took from ``ue`` itself: its Contact and one
    Via (a proxied MESSAGE keeps the sender's Contact on the way out too)."""
    return [r for r in seen if r.method == method and r.contact
            and str(r.contact[0].uri) == ue.contact
            and ",".join(r.headers.get_all("Via")).count(",") == 0]


def assert_feature_contact(request: Request, service: cpm.CpmService,
                           instance: str) -> None:
    contact = Contact.parse(request.headers.get("Contact") or "")
    assert cpm.parse_icsi_ref(contact.params.get(cpm.ICSI_REF_TAG) or "") == [service], \
        request.headers.get("Contact")
    assert contact.params.get("+sip.instance") == f"<{instance}>"


def assert_session_timer(request: Request) -> None:
    assert "timer" in [s.strip() for s in (request.headers.get("Supported") or "").split(",")]
    assert request.headers.get("Session-Expires") == "3600;refresher=uac"
    assert request.headers.get("Min-SE") == "90"


def test_chat_and_pager_requests_carry_the_seed_contact_and_timers(tmp_path: Path) -> None:
    config = ue_config(tmp_path, via_as=True)
    alice, bob = client(config, "alice"), client(config, "bob")
    at_pcscf: list[Request] = []
    at_bob: list[Request] = []

    async def scenario() -> None:
        async with network_with(config, alice, bob) as net:
            tap(net.nodes["pcscf"].endpoint.transport, at_pcscf)  # type: ignore[attr-defined]
            tap(bob.core.endpoint.transport, at_bob)
            mid = await alice.send_message("bob", "hello")
            assert await alice.wait_status(mid, timeout=WAIT) is MessageStatus.DELIVERED
            chat = await alice.open_chat("bob")
            await chat.close()

        message = sent_by(at_pcscf, alice, "MESSAGE")[0]
        assert_feature_contact(message, cpm.CpmService.MSG, alice.instance)
        assert message.headers.get("Request-Disposition") == "no-fork"
        invite = sent_by(at_pcscf, alice, "INVITE")[0]
        assert_feature_contact(invite, cpm.CpmService.SESSION, alice.instance)
        assert_session_timer(invite)
        # bob's delivery IMDN: his own instance, the msg ICSI
        imdn = sent_by(at_pcscf, bob, "MESSAGE")[0]
        assert_feature_contact(imdn, cpm.CpmService.MSG, bob.instance)
        # the AS's own INVITE to bob: alice's feature tags, the seed's session timer
        far = next(r for r in at_bob if r.method == "INVITE")
        assert_feature_contact(far, cpm.CpmService.SESSION, alice.instance)
        assert str(Contact.parse(far.headers.get("Contact") or "").uri) != \
            str(Contact.parse(invite.headers.get("Contact") or "").uri)  # the AS's own URI
        assert_session_timer(far)

    run(scenario)


def ok_to_invite(responses: list[Response]) -> list[Response]:
    return [r for r in responses if r.status == 200 and r.cseq.method == "INVITE"]


def test_200_ok_contact_carries_the_feature_tags(tmp_path: Path) -> None:
    """Seed 003's 200 OK: Contact with ``+g.3gpp.icsi-ref`` and ``+sip.instance``,
    from the answering UE (chat, file, large message, group invitation) and from the
    messaging AS's anchor to the caller (the callee's tags, the AS's own URI)."""
    config = ue_config(tmp_path, via_as=True)
    alice = client(config, "alice")
    bob = client(config, "bob", downloads=tmp_path / "downloads", accept_groups=True)
    source = tmp_path / "photo.jpg"
    source.write_bytes(b"\xff\xd8" + bytes(3000))
    ignored: list[Request] = []
    from_bob: list[Response] = []
    to_alice: list[Response] = []

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            tap(bob.core.endpoint.transport, ignored, from_bob, "out")
            tap(alice.core.endpoint.transport, ignored, to_alice, "in")
            chat = await alice.open_chat("bob")
            await chat.close()
            await alice.send_message("bob", "large " * 400)
            await bob.wait_event(MessageReceived, WAIT)
            assert (await alice.send_file("bob", source)).ok
            await alice.create_group(["bob"])
            await bob.wait_event(GroupJoined, WAIT)

        answers = ok_to_invite(from_bob)
        assert len(answers) == 4, [r.headers.get("Contact") for r in answers]
        services = [cpm.CpmService.SESSION, cpm.CpmService.LARGEMSG,
                    cpm.CpmService.FILETRANSFER, cpm.CpmService.SESSION]
        for answer, service in zip(answers, services, strict=True):
            assert_feature_contact(answer, service, bob.instance)
        anchored = ok_to_invite(to_alice)[:3]  # the AS's answers; the focus's is the 4th
        for answer, service in zip(anchored, services, strict=False):
            assert_feature_contact(answer, service, bob.instance)
            assert str(Contact.parse(answer.headers.get("Contact") or "").uri) != bob.contact

    run(scenario)


def test_large_message_offer_and_file_imdn_as_the_seed(tmp_path: Path) -> None:
    config = ue_config(tmp_path, via_as=True)
    downloads = tmp_path / "downloads"
    alice, bob = client(config, "alice"), client(config, "bob", downloads=downloads)
    source = tmp_path / "photo.jpg"
    source.write_bytes(b"\xff\xd8" + bytes(3000))
    text = "large " * 400  # over the pager limit
    at_pcscf: list[Request] = []

    async def scenario() -> None:
        async with network_with(config, alice, bob) as net:
            tap(net.nodes["pcscf"].endpoint.transport, at_pcscf)  # type: ignore[attr-defined]
            await alice.send_message("bob", text)
            got = await bob.wait_event(MessageReceived, WAIT)
            assert isinstance(got, MessageReceived) and got.mode == "large"
            result = await alice.send_file("bob", source)
            assert result.ok, result
            assert await alice.wait_status(result.message_id, timeout=WAIT) is \
                MessageStatus.DELIVERED
            assert isinstance(await bob.wait_event(FileReceived, WAIT), FileReceived)

        large, transfer = sent_by(at_pcscf, alice, "INVITE")[:2]
        assert_feature_contact(large, cpm.CpmService.LARGEMSG, alice.instance)
        offer = sdp.parse(large.body)
        media = offer.media[0]
        assert offer.direction_of(media) is sdp.Direction.SENDONLY
        assert media.accept_types == ["message/cpim"]
        assert media.accept_wrapped_types == ["text/plain"]
        selector = media.file_selector
        assert selector is not None and selector.name is None
        assert selector.size is not None and selector.size > cpm.CPIM_PAGER_LIMIT
        assert_feature_contact(transfer, cpm.CpmService.FILETRANSFER, alice.instance)
        assert_session_timer(transfer)
        imdns = [r for r in sent_by(at_pcscf, bob, "MESSAGE")
                 if r.headers.get("P-Preferred-Service") == cpm.ICSI_FILETRANSFER]
        assert len(imdns) == 1, [r.headers.get("P-Preferred-Service")
                                 for r in sent_by(at_pcscf, bob, "MESSAGE")]
        assert cpm.escape_icsi(cpm.ICSI_FILETRANSFER) in \
            (imdns[0].headers.get("Accept-Contact") or "")
        assert_feature_contact(imdns[0], cpm.CpmService.FILETRANSFER, bob.instance)
        assert imdns[0].headers.get("Request-Disposition") == "no-fork"

    run(scenario)


def test_large_message_is_not_taken_for_a_file(tmp_path: Path) -> None:
    """A size-only file-selector does not make a large message a file transfer, even
    when it comes without a CPM ICSI (UE to UE through the core, no AS)."""
    config = ue_config(tmp_path)
    alice, bob = client(config, "alice"), client(config, "bob")

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            await alice.send_message("bob", "x" * 2000)
            got = await asyncio.wait_for(bob.wait_event(MessageReceived, WAIT), WAIT)
            assert isinstance(got, MessageReceived) and got.mode == "large"

    run(scenario)
