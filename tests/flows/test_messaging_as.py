"""The messaging AS inside the real IMS core (Network from imsbox serve) on loopback.

UE A -> P-CSCF -> S-CSCF -> messaging AS (orig) -> S-CSCF -> I-CSCF -> S-CSCF ->
messaging AS (term) -> S-CSCF -> P-CSCF -> UE B, for pager MESSAGE with CPIM
and IMDN, 413 for an oversized pager message, deferred delivery (also across a
restart), expiry with a `failed` IMDN, and a chat anchored by the AS (MSRP
relayed both ways, BYE).
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime, UTC
from pathlib import Path

import pytest

from imsbox import sdp
from imsbox.rcs import cpm
from imsbox.apps.messaging import MessagingAs, MessagingSettings
from imsbox.config import Config
from imsbox.content import (
    CPIM, IMDN_NS, CpimAddress, DispositionType, ImdnStatus, build_cpim, imdn_reply,
    parse_cpim, parse_imdn,
)
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.msrp import MsrpEndpoint, MsrpSession
from imsbox.sip.message import Request, Response
from imsbox.sip.transport.base import Flow
from imsbox.sip.ua.dialog import build_request
from imsbox.store import DB_FILENAME, open_store
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config

from helpers import DOMAIN, ues

pytestmark = pytest.mark.timeout(40)
ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"


# -- helpers ---------------------------------------------------------------------------

def provision(config: Config) -> None:
    async def in_store() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "alice", "alice-secret", "+15550001")
            await add_user(store, DOMAIN, "bob", "bob-secret")
    asyncio.run(in_store())


def run(tmp_path: Path, scenario: Callable[[Config], Awaitable[None]]) -> None:
    _, config = write_loopback_config(tmp_path)
    provision(config)
    asyncio.run(asyncio.wait_for(scenario(config), 30))


async def registered(ue: TestUe) -> TestUe:
    reg = await ue.register()
    assert reg.ok, reg.statuses
    return ue


def messaging_as(net: Network) -> MessagingAs:
    node = net.nodes["as"]
    assert isinstance(node, MessagingAs)
    return node


def cpim_text(sender: str, recipient: str, text: str, message_id: str) -> bytes:
    return build_cpim(
        "text/plain;charset=utf-8", text.encode(), sender=CpimAddress(sender),
        recipients=[CpimAddress(recipient)], date_time=datetime.now(UTC),
        namespaces=[("imdn", IMDN_NS)],
        headers=[("imdn.Message-ID", message_id),
                 ("imdn.Disposition-Notification", "positive-delivery, display")],
    ).to_bytes()


def pager(ue: TestUe, target: str, body: bytes, conversation: str,
          content_type: str = CPIM) -> Awaitable[Response]:
    """A pager-mode CPM MESSAGE as the seeds have it."""
    request = build_request("MESSAGE", target, f"<{ue.aor}>", f"<{target}>",
                            route=ue._route(), body=body, content_type=content_type,
                            headers=cpm.cpm_request_headers(cpm.CpmService.MSG, conversation))
    # over the registered UDP flow, as RFC 5626 wants: no 18.1.1 switch to TCP
    flow = Flow("udp", ue.endpoint.listening["udp"], (ue.pcscf.host, ue.pcscf.port))
    return ue.endpoint.request(request, ue.pcscf, flow=flow).final()


async def next_message(ue: TestUe, timeout: float = 5.0) -> Request:
    while True:
        request = await asyncio.wait_for(ue.requests.get(), timeout)
        if request.method == "MESSAGE":
            return request


async def send_delivered_imdn(ue: TestUe, received: Request) -> None:
    """B's delivery notification back to the sender, pager mode (RFC 5438)."""
    message = parse_cpim(received.body)
    reply = imdn_reply(message, DispositionType.DELIVERY, ImdnStatus.DELIVERED,
                       message_id=secrets.token_hex(8), sender=CpimAddress(ue.aor),
                       date_time=datetime.now(UTC))
    assert reply is not None and message.sender is not None
    conversation = received.headers.get(cpm.CONVERSATION_ID) or cpm.new_conversation_id()
    response = await pager(ue, message.sender.uri, reply.to_bytes(), conversation)
    assert response.status == 200, response


def imdn_of(request: Request) -> tuple[str, ImdnStatus]:
    wrapper = parse_cpim(request.body)
    assert wrapper.content_disposition == "notification"
    imdn = parse_imdn(wrapper.body)
    return imdn.message_id, imdn.status


# -- pager mode ---------------------------------------------------------------------------

def test_pager_message_relayed_with_cpim_intact_and_imdn_back(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS) as net, \
                ues(config, "alice", "bob") as (alice, bob):
            await registered(alice), await registered(bob)
            body = cpim_text(ALICE, BOB, "Hello Bob", "msg-1")
            response = await pager(alice, BOB, body, "conv-1")
            assert response.status == 200

            received = await next_message(bob)
            assert received.body == body  # CPIM untouched end to end
            assert received.headers.get(cpm.CONVERSATION_ID) == "conv-1"
            assert cpm.classify(received) is cpm.CpmService.MSG
            await send_delivered_imdn(bob, received)

            notification = await next_message(alice)
            assert imdn_of(notification) == ("msg-1", ImdnStatus.DELIVERED)
            history = await messaging_as(net).store.messages.history("conv-1")
            # each once although both legs pass the AS: the message, then its IMDN
            assert next(h.message_key for h in history) == "msg-1" and len(history) == 2
            assert history[0].body == body and history[1].sender == BOB

    run(tmp_path, scenario)


def test_oversized_pager_413_and_unsupported_content_415(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), \
                ues(config, "alice", "bob") as (alice, bob):
            await registered(alice), await registered(bob)
            big = cpim_text(ALICE, BOB, "x" * cpm.CPIM_PAGER_LIMIT, "msg-big")
            assert not cpm.fits_pager(big)
            assert (await pager(alice, BOB, big, "conv-2")).status == 413
            odd = await pager(alice, BOB, b"\x00\x01", "conv-2", "application/octet-stream")
            assert odd.status == 415
            assert bob.requests.empty()

    run(tmp_path, scenario)


# -- deferred messaging -------------------------------------------------------------------

def test_deferred_until_recipient_registers_then_delivery_imdn(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), \
                ues(config, "alice", "bob") as (alice, bob):
            await registered(alice)
            first = cpim_text(ALICE, BOB, "are you there?", "msg-d1")
            second = cpim_text(ALICE, BOB, "hello?", "msg-d2")
            assert (await pager(alice, BOB, first, "conv-3")).status == 202
            assert (await pager(alice, BOB, second, "conv-3")).status == 202

            await registered(bob)
            got = [await next_message(bob), await next_message(bob)]
            assert [r.body for r in got] == [first, second]  # in order
            assert got[0].headers.get(cpm.CONVERSATION_ID) == "conv-3"
            await send_delivered_imdn(bob, got[0])
            assert imdn_of(await next_message(alice)) == ("msg-d1", ImdnStatus.DELIVERED)

    run(tmp_path, scenario)


def test_deferred_items_are_never_sent_past_one_another_instance_holds(
        tmp_path: Path) -> None:
    """Two AS instances claiming at once may split a recipient's rows (SKIP
    LOCKED). Here another instance holds the fourth of eight items: this one
    sends the three before it, then stops; when that lease is let go, the rest
    follows in order (never the fifth before the fourth)."""
    async def scenario(config: Config) -> None:
        bodies = [cpim_text(ALICE, BOB, f"m{i}", f"msg-s{i}") for i in range(8)]
        async with Network(config, timers=FAST_TIMERS) as net, \
                ues(config, "alice", "bob") as (alice, bob):
            await registered(alice)
            messages = messaging_as(net).store.messages
            for body in bodies[:4]:
                assert (await pager(alice, BOB, body, "conv-split")).status == 202
            held = await messages.claim_deferred(f"sip:bob@{DOMAIN}", "other-instance", 30.0)
            assert len(held) == 4
            assert await messages.release_deferred(held[:3]) == 3  # it keeps the 4th
            for body in bodies[4:]:
                assert (await pager(alice, BOB, body, "conv-split")).status == 202
            await registered(bob)
            got = [(await next_message(bob)).body for _ in range(3)]
            assert got == bodies[:3]
            with pytest.raises(TimeoutError):
                await next_message(bob, timeout=1.0)  # not the 5th past the held 4th
            assert await messages.release_deferred(held[3:]) == 1
            await messaging_as(net).deliver_deferred(f"sip:bob@{DOMAIN}")
            got = [(await next_message(bob)).body for _ in range(5)]
            assert got == bodies[3:]

    run(tmp_path, scenario)


def test_202_means_the_message_is_on_disk(tmp_path: Path) -> None:
    """When the sender has the 202, another connection (another process) finds
    the deferred message in the store file."""
    async def scenario(config: Config) -> None:
        body = cpim_text(ALICE, BOB, "stored before the 202", "msg-s1")
        async with Network(config, timers=FAST_TIMERS), ues(config, "alice") as (alice,):
            await registered(alice)
            assert (await pager(alice, BOB, body, "conv-s")).status == 202
            db = sqlite3.connect(config.data_dir / DB_FILENAME)
            try:
                rows = db.execute("SELECT recipient, body FROM deferred_messages").fetchall()
            finally:
                db.close()
            assert rows == [(BOB, body)]

    run(tmp_path, scenario)


def test_deferred_message_survives_a_network_restart(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        body = cpim_text(ALICE, BOB, "kept across restart", "msg-r1")
        async with Network(config, timers=FAST_TIMERS), ues(config, "alice") as (alice,):
            await registered(alice)
            assert (await pager(alice, BOB, body, "conv-4")).status == 202
        async with Network(config, timers=FAST_TIMERS), \
                ues(config, "alice", "bob") as (alice, bob):
            await registered(alice)
            await registered(bob)
            received = await next_message(bob)
            assert received.body == body
            await send_delivered_imdn(bob, received)
            assert imdn_of(await next_message(alice)) == ("msg-r1", ImdnStatus.DELIVERED)

    run(tmp_path, scenario)


def test_expired_deferred_message_gives_failed_imdn(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS) as net, \
                ues(config, "alice", "bob") as (alice, bob):
            messaging_as(net).settings = MessagingSettings(deferred_ttl=0.5)
            await registered(alice)
            body = cpim_text(ALICE, BOB, "too late", "msg-x1")
            assert (await pager(alice, BOB, body, "conv-5")).status == 202
            notification = await next_message(alice)
            assert imdn_of(notification) == ("msg-x1", ImdnStatus.FAILED)
            assert notification.headers.get(cpm.CONVERSATION_ID) == "conv-5"
            await registered(bob)  # nothing left to deliver
            with pytest.raises(asyncio.TimeoutError):
                await next_message(bob, timeout=0.5)

    run(tmp_path, scenario)


# -- chat anchored by the AS -------------------------------------------------------------

def chat_offer(session: MsrpSession, endpoint: MsrpEndpoint) -> bytes:
    return (f"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=message {endpoint.port} TCP/MSRP *\r\n"
            "a=accept-types:message/cpim application/im-iscomposing+xml\r\n"
            "a=accept-wrapped-types:text/plain message/imdn+xml\r\n"
            f"a=setup:active\r\na=path:{session.local_uri}\r\na=msrp-cema\r\n"
            "a=sendrecv\r\n").encode()


def msrp_line(body: bytes) -> tuple[sdp.MediaDescription, tuple[str, int]]:
    description = sdp.parse(body)
    media = next(m for m in description.media if m.is_msrp)
    connection = description.connection_for(media)
    assert connection is not None
    return media, (connection.address, media.port)


def test_chat_anchored_by_the_as_msrp_relayed_both_ways_then_bye(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS) as net, \
                ues(config, "alice", "bob") as (alice, bob), \
                MsrpEndpoint() as alice_msrp, MsrpEndpoint() as bob_msrp:
            await registered(alice), await registered(bob)
            a_session = alice_msrp.create_session(setup="active")
            headers = cpm.cpm_request_headers(cpm.CpmService.SESSION, "conv-chat")
            call = await alice.call(BOB, chat_offer(a_session, alice_msrp), headers)

            assert bob.ua is not None
            incoming = await asyncio.wait_for(bob.ua.incoming.get(), 5)
            assert cpm.classify(incoming.request) is cpm.CpmService.SESSION
            offered, _ = msrp_line(incoming.request.body)
            assert offered.setup is sdp.Setup.ACTIVE and offered.msrp_cema
            assert offered.path != [str(a_session.local_uri)]  # the AS's own path
            b_session = bob_msrp.create_session(remote_path=offered.path or [],
                                                setup="passive")
            answer = sdp.answer(sdp.parse(incoming.request.body), sdp.LocalCapabilities(
                address="127.0.0.1", msrp_path=[str(b_session.local_uri)],
                setup=sdp.Setup.PASSIVE, msrp_cema=True,
                accept_types=("message/cpim", "application/im-iscomposing+xml")))
            incoming.accept(bytes(answer))

            final = await asyncio.wait_for(call.wait_final(), 5)
            assert final is not None and final.status == 200
            media, address = msrp_line(call.remote_sdp or b"")
            assert media.setup is sdp.Setup.PASSIVE and media.msrp_cema
            a_session.set_remote_path(media.path or [])
            a_session.cema_address = address
            await a_session.connect()

            hello = cpim_text(ALICE, BOB, "Hello", "chat-1")
            await a_session.send_message(CPIM, hello)
            got = await asyncio.wait_for(b_session.receive(), 5)
            assert got.body == hello and got.content_type == CPIM
            back = cpim_text(BOB, ALICE, "Hello back", "chat-2")
            await b_session.send_message(CPIM, back)
            got = await asyncio.wait_for(a_session.receive(), 5)
            assert got.body == back

            await asyncio.wait_for(call.bye(), 5)
            await asyncio.wait_for(asyncio.shield(incoming.terminated), 5)
            assert [h.message_key for h in await messaging_as(net).store.messages.history("conv-chat")] \
                == ["chat-1", "chat-2"]

    run(tmp_path, scenario)
