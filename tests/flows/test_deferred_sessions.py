"""Nothing accepted is lost: chats, large messages and files to an offline user
(issue 10), through the real core on loopback (Network from imsbox serve).

A chat or large message to an offline user is answered by the anchoring AS,
which keeps every CPIM message the caller sends until the caller ends the
session, then delivers them when the recipient registers, in order, once,
also across a restart. Files: tests/flows/test_deferred_files.py.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from helpers import client, network_with, ues
from test_serve_cli import Serve
from test_messaging_as import (
    ALICE,
    BOB,
    cpim_text,
    messaging_as,
    msrp_line,
    next_message,
    provision,
    registered,
    run,
)

from imsbox.config import Config
from imsbox.content import CPIM, ISCOMPOSING
from imsbox.msrp import MsrpEndpoint, MsrpSession
from imsbox.rcs import cpm
from imsbox.serve import Network
from imsbox.sip.ua.useragent import Call
from imsbox.ue.client import MessageStatus, Notification
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config

pytestmark = pytest.mark.timeout(40)


def msrp_offer(session: MsrpSession, endpoint: MsrpEndpoint, direction: str,
               extra: str = "") -> bytes:
    return (f"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=message {endpoint.port} TCP/MSRP *\r\n"
            "a=accept-types:message/cpim application/im-iscomposing+xml\r\n"
            "a=accept-wrapped-types:text/plain message/imdn+xml\r\n"
            f"a=setup:active\r\na=path:{session.local_uri}\r\na=msrp-cema\r\n"
            f"{extra}a={direction}\r\n").encode()


async def open_session(alice: TestUe, msrp: MsrpEndpoint, service: cpm.CpmService,
                       conversation: str, direction: str,
                       extra: str = "") -> tuple[Call, MsrpSession]:
    """INVITE through the core, 200 from the AS, MSRP connected (seed 001/003)."""
    session = msrp.create_session(setup="active")
    call = await alice.call(BOB, msrp_offer(session, msrp, direction, extra),
                            cpm.cpm_request_headers(service, conversation))
    final = await asyncio.wait_for(call.wait_final(), 10)
    assert final is not None and final.status == 200, final
    media, address = msrp_line(call.remote_sdp or b"")
    session.set_remote_path(media.path or [])
    session.cema_address = address
    await session.connect()
    return call, session


def test_chat_to_offline_user_keeps_every_line_across_a_restart(tmp_path: Path) -> None:
    """Today the AS sends BYE right after the empty SEND and every line is lost."""
    lines = [cpim_text(ALICE, BOB, f"line {n}", f"chat-off-{n}") for n in range(3)]

    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), ues(config, "alice") as (alice,), \
                MsrpEndpoint() as msrp:
            await registered(alice)
            call, session = await open_session(alice, msrp, cpm.CpmService.SESSION,
                                               "conv-off", "sendrecv")
            await asyncio.sleep(0.3)
            assert not call.terminated.done(), "the AS ended the chat"
            await session.send_message(ISCOMPOSING, b"<isComposing/>")
            for line in lines:
                # resolves on the success REPORT, which the AS sends once it is stored
                await asyncio.wait_for(session.send_message(CPIM, line, success_report=True), 5)
            assert not call.terminated.done()
            await asyncio.wait_for(call.bye(), 5)
        async with Network(config, timers=FAST_TIMERS), ues(config, "bob") as (bob,):
            await registered(bob)
            got = [await next_message(bob) for _ in lines]
            assert [r.body for r in got] == lines  # in order, isComposing dropped
            with pytest.raises(asyncio.TimeoutError):  # once
                await next_message(bob, timeout=0.5)

    run(tmp_path, scenario)


def test_large_message_to_offline_user_is_delivered_on_registration(tmp_path: Path) -> None:
    """Large message mode (seed 003): one SEND, then BYE at once - today the AS
    drops the message 2 ms after the SEND's 200."""
    text = "x" * 4000
    body = cpim_text(ALICE, BOB, text, "large-off-1")

    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS) as net, \
                ues(config, "alice", "bob") as (alice, bob), MsrpEndpoint() as msrp:
            await registered(alice)
            call, session = await open_session(
                alice, msrp, cpm.CpmService.LARGEMSG, "conv-large", "sendonly",
                f"a=file-selector:size:{len(body)}\r\n")
            await session.send_message(CPIM, body)
            await asyncio.wait_for(call.bye(), 5)
            store = messaging_as(net).store.messages
            async with asyncio.timeout(2):  # stored as it came in, before the BYE
                while not (stored := await store.deferred(BOB, 0.0)):
                    await asyncio.sleep(0.01)
            assert [i.body for i in stored] == [body]
            await registered(bob)
            received = await next_message(bob)
            assert received.body == body
            await asyncio.sleep(0.2)
            assert await messaging_as(net).store.messages.deferred(BOB, 0.0) == []

    run(tmp_path, scenario)


def test_file_without_size_to_offline_user_is_refused_with_a_reason(tmp_path: Path) -> None:
    """Files to offline users are kept (tests/flows/test_deferred_files.py) within the
    stored-file limit, which a file-selector without a size cannot be checked against."""
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), ues(config, "alice") as (alice,), \
                MsrpEndpoint() as msrp:
            await registered(alice)
            session = msrp.create_session(setup="active")
            offer = msrp_offer(session, msrp, "sendonly",
                               'a=file-selector:name:"a.txt" type:text/plain\r\n'
                               "a=file-transfer-id:ft1\r\n")
            call = await alice.call(BOB, offer, cpm.cpm_request_headers(
                cpm.CpmService.FILETRANSFER, "conv-ft"))
            final = await asyncio.wait_for(call.wait_final(), 10)
            assert final is not None and final.status == 413
            assert "without a file-selector size is not stored" in final.reason

    run(tmp_path, scenario)


@pytest.mark.parametrize("report", [True, False], ids=["success-report", "200-only"])
def test_chat_lines_to_offline_user_survive_kill_9(tmp_path: Path, report: bool) -> None:
    """``imsbox serve`` in a subprocess: once a line's success REPORT - or without one
    asked (seed 001), its MSRP 200 - is back, a SIGKILL of the server does not lose it."""
    config_path, config = write_loopback_config(tmp_path)
    provision(config)
    lines = [cpim_text(ALICE, BOB, f"kept {n}", f"kill-{n}") for n in range(2)]

    async def chat() -> None:
        async with ues(config, "alice") as (alice,), MsrpEndpoint() as msrp:
            await until_registered(alice)
            _, session = await open_session(alice, msrp, cpm.CpmService.SESSION,
                                            "conv-kill", "sendrecv")
            for line in lines:
                await asyncio.wait_for(session.send_message(CPIM, line, success_report=report),
                                       5)
            server.stop(signal.SIGKILL)  # right after the last answer, the session still up

    async def receive() -> list[bytes]:
        async with ues(config, "bob") as (bob,):
            await until_registered(bob)
            return [(await next_message(bob, timeout=10)).body for _ in lines]

    server = Serve("--config", str(config_path))
    try:
        asyncio.run(asyncio.wait_for(chat(), 30))
    finally:
        server.stop(signal.SIGKILL)
    server = Serve("--config", str(config_path))
    try:
        assert asyncio.run(asyncio.wait_for(receive(), 30)) == lines
    finally:
        status, _, stderr = server.stop(signal.SIGTERM)
    assert status == 0, stderr


async def until_registered(ue: TestUe, timeout: float = 10.0) -> None:
    """REGISTER until the freshly started server answers."""
    async with asyncio.timeout(timeout):
        while not (await ue.register()).ok:
            await asyncio.sleep(0.2)


def test_the_200_of_a_stored_line_comes_after_the_store_write(tmp_path: Path) -> None:
    """RcsClient to offline bob (no success REPORT asked, as seed 001): the AS holds
    each message's MSRP 200 until it is stored, so when ``send`` returns the line is in
    the store already - a kill right after it loses nothing."""
    _, config = write_loopback_config(tmp_path)
    provision(config)
    alice = client(config, "alice")

    async def scenario() -> None:
        async with network_with(config, alice) as net:
            store = messaging_as(net).store.messages
            chat = await alice.open_chat("bob")
            for n in range(3):
                mid = await chat.send(f"line {n}")
                kept = await store.deferred(BOB, 0.0)
                assert len(kept) == n + 1
                assert cpm.cpim_message_id(kept[-1].body) == mid
            await chat.composing()  # not stored, but answered
            await chat.close()
            large = "large " * 400
            mid = await alice.send_message("bob", large)
            kept = await store.deferred(BOB, 0.0)
            assert len(kept) == 4 and cpm.cpim_message_id(kept[-1].body) == mid
            # no 202 in large message mode: the AS's processing IMDN says "stored"
            assert await alice.wait_status(mid, timeout=5, or_deferred=True) is \
                MessageStatus.SENT
            assert alice.deferred(mid)
            stored = await alice.wait_event(Notification, 5)
            assert isinstance(stored, Notification) and stored.message_id == mid
            assert (stored.notification, stored.status, stored.sender) == ("processing", "stored", BOB)

    asyncio.run(asyncio.wait_for(scenario(), 30))
