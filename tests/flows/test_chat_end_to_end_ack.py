"""A chat through the messaging AS is acknowledged end to end (apps/chat_relay.py).

alice's and bob's MSRP sides are real MsrpEndpoints on loopback, the AS anchors
the session (B2BUA, its own MSRP session on each leg). bob's side holds the
response to each message's last chunk (``hold_final_responses``) so the test
decides when and how bob answers: alice's SEND gets its 200 only after bob's,
bob's error status comes back as it is, no answer comes back as 408, bob's leg
gone as 481, and a Failure-Report of no / partial is honoured (RFC 4975 7.1.4,
7.2).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imsbox import sdp
from imsbox.apps.chat_relay import PENDING_HIGH, PENDING_LOW
from imsbox.apps.messaging import MessagingAs, MessagingSettings
from imsbox.config import Config
from imsbox.content import CPIM, IMDN_NS, CpimAddress, build_cpim
from imsbox.ims.provisioning import add_user
from imsbox.msrp import (MsrpConnection, MsrpEndpoint, MsrpSession, MsrpStatusError,
                         ReceivedMessage, SendResult)
from imsbox.rcs import cpm
from imsbox.serve import Network
from imsbox.sip.ua.useragent import Call
from imsbox.store import open_store
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config

from imsbox.ue.client import ChatMessage, ChatStarted, MessageStatus, SendError

from helpers import DOMAIN, alice_and_bob, client, network_with, run_within, ues
from test_messaging_as import chat_offer, msrp_line

pytestmark = pytest.mark.timeout(60)
ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"
SRC = Path(__file__).resolve().parents[2] / "src"


def run(tmp_path: Path, scenario: Callable[[Config], Awaitable[None]]) -> None:
    _, config = write_loopback_config(tmp_path)

    async def provision() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "alice", "alice-secret")
            await add_user(store, DOMAIN, "bob", "bob-secret")
    asyncio.run(provision())
    asyncio.run(asyncio.wait_for(scenario(config), 45))


def cpim_text(text: str) -> bytes:
    return build_cpim("text/plain;charset=utf-8", text.encode(), sender=CpimAddress(ALICE),
                      recipients=[CpimAddress(BOB)], date_time=datetime(2026, 1, 1, tzinfo=UTC),
                      namespaces=[("imdn", IMDN_NS)],
                      headers=[("imdn.Message-ID", text)]).to_bytes()


@dataclass
class AnchoredChat:
    net: Network
    alice: MsrpSession          # alice's MSRP session (to the AS's near leg)
    bob: MsrpSession            # bob's MSRP session (from the AS's far leg)
    call: Call                  # alice's INVITE dialog
    alice_in: list[bytes] = field(default_factory=list)  # bytes alice's endpoint read

    def responses(self, status: int) -> list[str]:
        """Transaction ids of the MSRP responses with ``status`` alice received."""
        wire = b"".join(self.alice_in).decode(errors="replace")
        return re.findall(rf"^MSRP (\S+) {status}\b", wire, re.MULTILINE)

    @property
    def as_node(self) -> MessagingAs:
        node = self.net.nodes["as"]
        assert isinstance(node, MessagingAs)
        return node


async def registered(ue: TestUe) -> None:
    reg = await ue.register()
    assert reg.ok, reg.statuses


@asynccontextmanager
async def anchored_chat(config: Config, relay_timeout: float = 20.0,
                        bob_types: tuple[str, ...] = ("*",)) -> AsyncIterator[AnchoredChat]:
    """alice -> AS -> bob chat, MSRP up on both legs, bob holding his final answers."""
    async with Network(config, timers=FAST_TIMERS) as net, \
            ues(config, "alice", "bob") as (alice, bob), \
            MsrpEndpoint() as alice_msrp, MsrpEndpoint() as bob_msrp:
        node = net.nodes["as"]
        assert isinstance(node, MessagingAs)
        node.settings = MessagingSettings(relay_timeout=relay_timeout)
        await registered(alice)
        await registered(bob)
        a_session = alice_msrp.create_session(setup="active")
        headers = cpm.cpm_request_headers(cpm.CpmService.SESSION, "conv-ack")
        call = await alice.call(BOB, chat_offer(a_session, alice_msrp), headers)
        b_session = await answer_as_bob(bob, bob_msrp, bob_types)
        final = await asyncio.wait_for(call.wait_final(), 5)
        assert final is not None and final.status == 200
        media, address = msrp_line(call.remote_sdp or b"")
        a_session.set_remote_path(media.path or [])
        a_session.cema_address = address
        chat = AnchoredChat(net, a_session, b_session, call)
        alice_msrp.trace = lambda direction, data, conn: \
            chat.alice_in.append(data) if direction == "in" else None
        await a_session.connect()
        await b_session.wait_bound(5)
        yield chat


async def answer_as_bob(bob: TestUe, bob_msrp: MsrpEndpoint,
                        bob_types: tuple[str, ...] = ("*",)) -> MsrpSession:
    """bob answers the AS's chat INVITE; his MSRP side holds its final answers."""
    assert bob.ua is not None
    incoming = await asyncio.wait_for(bob.ua.incoming.get(), 10)
    offered, _ = msrp_line(incoming.request.body)
    b_session = bob_msrp.create_session(remote_path=offered.path or [], setup="passive",
                                        accept_types=bob_types)
    b_session.hold_final_responses = True  # the test answers each message
    answer = sdp.answer(sdp.parse(incoming.request.body), sdp.LocalCapabilities(
        address="127.0.0.1", msrp_path=[str(b_session.local_uri)],
        setup=sdp.Setup.PASSIVE, msrp_cema=True,
        accept_types=("message/cpim", "application/im-iscomposing+xml")))
    incoming.accept(bytes(answer))
    return b_session


def sending(session: MsrpSession, text: str,
            success_report: bool = False) -> asyncio.Task[SendResult]:
    return asyncio.ensure_future(session.send_message(CPIM, cpim_text(text),
                                                      success_report=success_report))


def test_the_senders_200_waits_for_the_receivers(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with anchored_chat(config) as chat:
            send = sending(chat.alice, "one")
            got = await asyncio.wait_for(chat.bob.receive(), 5)
            assert got.body == cpim_text("one")
            await asyncio.sleep(0.5)
            assert not send.done(), "alice got a 200 before bob answered"
            assert chat.responses(200) == [chat.responses(200)[0]]  # the binding SEND's only
            assert chat.bob.answer_final(got.message_id, 200)
            await asyncio.wait_for(send, 5)
            assert len(chat.responses(200)) == 2

            # A success REPORT asked for comes from bob's side, through the AS.
            send = sending(chat.alice, "two", success_report=True)
            got = await asyncio.wait_for(chat.bob.receive(), 5)
            assert got.success_report
            await asyncio.sleep(0.3)
            assert not send.done() and not chat.alice.reports
            assert chat.bob.answer_final(got.message_id, 200)
            await asyncio.wait_for(send, 5)
            (report,) = chat.alice.reports
            assert report.status is not None and report.status.code == 200
            history = await chat.as_node.store.messages.history("conv-ack")
            assert [h.message_key for h in history] == ["one", "two"]
    run(tmp_path, scenario)


def test_the_receivers_error_comes_back_to_the_sender(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with anchored_chat(config, bob_types=("message/cpim",)) as chat:
            send = sending(chat.alice, "refused")
            got = await asyncio.wait_for(chat.bob.receive(), 5)
            assert chat.bob.answer_final(got.message_id, 403, "Forbidden - not from you")
            with pytest.raises(MsrpStatusError) as info:
                await asyncio.wait_for(send, 5)
            assert (info.value.status, info.value.comment) == (403, "Forbidden - not from you")
            # bob's own refusal of a type he does not take (no hold: his first chunk)
            with pytest.raises(MsrpStatusError) as info:
                await asyncio.wait_for(chat.alice.send_message("text/plain", b"plain"), 5)
            assert info.value.status == 415
            history = await chat.as_node.store.messages.history("conv-ack")
            assert history == [], "a refused message is not in the history"
    run(tmp_path, scenario)


def test_no_answer_from_the_receiver_is_408_before_the_senders_own_timer(
        tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with anchored_chat(config, relay_timeout=1.0) as chat:
            loop = asyncio.get_running_loop()
            began = loop.time()
            send = sending(chat.alice, "unanswered")
            await asyncio.wait_for(chat.bob.receive(), 5)  # bob never answers it
            with pytest.raises(MsrpStatusError) as info:
                await asyncio.wait_for(send, 10)
            assert info.value.status == 408
            assert 0.9 < loop.time() - began < 5, "the AS's timer, not alice's 30 s"
    run(tmp_path, scenario)


def test_the_receivers_leg_gone_is_481(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with anchored_chat(config) as chat:
            send = sending(chat.alice, "lost")
            await asyncio.wait_for(chat.bob.receive(), 5)
            connection = chat.bob.connection
            assert connection is not None
            connection.close()  # bob's MSRP connection breaks before he answers
            with pytest.raises(MsrpStatusError) as info:
                await asyncio.wait_for(send, 5)
            assert info.value.status == 481
    run(tmp_path, scenario)


def test_failure_report_no_and_partial(tmp_path: Path) -> None:
    """no: relayed as no, nobody answers it; partial: no 200, but bob's error comes back."""
    async def scenario(config: Config) -> None:
        async with anchored_chat(config) as chat:
            before = len(chat.responses(200))
            await asyncio.wait_for(chat.alice.send_message(
                CPIM, cpim_text("no"), failure_report="no"), 5)  # nothing to wait for
            got = await asyncio.wait_for(chat.bob.receive(), 5)
            assert got.failure_report == "no"
            chat.bob.answer_final(got.message_id, 200)  # bob's side sends nothing either

            await chat.alice.send_message(CPIM, cpim_text("partial-ok"),
                                          failure_report="partial")
            got = await asyncio.wait_for(chat.bob.receive(), 5)
            assert got.failure_report == "yes"  # the AS wants to hear of an error
            chat.bob.answer_final(got.message_id, 200)
            await chat.alice.send_message(CPIM, cpim_text("partial-bad"),
                                          failure_report="partial")
            got = await asyncio.wait_for(chat.bob.receive(), 5)
            chat.bob.answer_final(got.message_id, 413, "Message Too Large")
            for _ in range(50):
                if chat.responses(413):
                    break
                await asyncio.sleep(0.05)
            assert len(chat.responses(413)) == 1, "partial: the error comes back"
            await asyncio.sleep(0.3)
            assert len(chat.responses(200)) == before, "no 200 for no / partial"
    run(tmp_path, scenario)


def test_a_slow_receiver_bounds_the_queue_and_keeps_the_order(tmp_path: Path) -> None:
    """bob answers nothing for a while: the AS keeps at most about PENDING_HIGH
    messages (then stops reading alice's leg); once bob answers, every message
    gets its 200, in order."""
    count = PENDING_HIGH + 200  # 1.5 kB each: more than one socket read holds

    async def scenario(config: Config) -> None:
        async with anchored_chat(config) as chat:
            (anchor,) = chat.as_node.anchors
            relay = anchor.chat_relays[0]
            sends = [sending(chat.alice, f"m{i:03} " + "x" * 1500) for i in range(count)]
            first = await asyncio.wait_for(chat.bob.receive(), 5)
            for _ in range(100):
                if relay.waiting >= PENDING_HIGH:
                    break
                await asyncio.sleep(0.02)
            near = anchor.near.connection if anchor.near is not None else None
            assert isinstance(near, MsrpConnection) and near.transport is not None
            assert PENDING_HIGH <= relay.waiting < count
            assert not near.transport.is_reading(), "over the cap: alice's leg not read"
            assert not any(s.done() for s in sends)
            received = [first]
            chat.bob.answer_final(first.message_id, 200)
            while len(received) < count:
                got = await asyncio.wait_for(chat.bob.receive(), 5)
                received.append(got)
                chat.bob.answer_final(got.message_id, 200)
            await asyncio.wait_for(asyncio.gather(*sends), 10)
            assert [m.body for m in received] == \
                [cpim_text(f"m{i:03} " + "x" * 1500) for i in range(count)]
            assert relay.waiting == 0 and near.transport.is_reading()
            assert PENDING_LOW < PENDING_HIGH
    run(tmp_path, scenario)


def test_the_chat_ending_answers_what_still_waits(tmp_path: Path) -> None:
    """bob hangs up with a message of alice's unanswered: alice gets 481, not 200."""
    async def scenario(config: Config) -> None:
        async with anchored_chat(config) as chat:
            send = sending(chat.alice, "late")
            await asyncio.wait_for(chat.bob.receive(), 5)
            (anchor,) = chat.as_node.anchors
            assert anchor.callee is not None
            await anchor.close()  # as when bob's BYE comes
            with pytest.raises(MsrpStatusError) as info:
                await asyncio.wait_for(send, 5)
            assert info.value.status == 481
    run(tmp_path, scenario)


# -- the client's side (ue/chat.py) ---------------------------------------------------------

def test_the_client_reports_a_chat_message_without_its_200_as_failed(tmp_path: Path) -> None:
    """bob's client has the message but has not answered it yet when alice's MSRP
    connection breaks (as when the AS is killed): alice's ``send`` fails with the
    message's id and its status is failed, not sent - it is hers to send again,
    with the same id, so bob never shows one message twice."""
    config = alice_and_bob(tmp_path, via_as=True, min_expires=1)
    alice, bob = client(config, "alice"), client(config, "bob")

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            chat = await alice.open_chat("bob")
            started = await bob.wait_event(ChatStarted, 5)
            assert isinstance(started, ChatStarted)
            first = await asyncio.wait_for(chat.send("confirmed"), 5)
            got = await bob.wait_event(ChatMessage, 5)
            assert isinstance(got, ChatMessage) and got.message_id == first
            # bob's MSRP side takes the next one but neither answers it nor hands it
            # to his chat (which would send the delivery IMDN)
            bobs = bob.chats[started.chat_id].session
            bobs.hold_final_responses = True
            taken: list[ReceivedMessage] = []
            bobs.on_message = taken.append
            send = asyncio.ensure_future(chat.send("unconfirmed"))
            for _ in range(100):
                if taken:
                    break
                await asyncio.sleep(0.02)
            assert taken, "bob's side never got it"
            await asyncio.sleep(0.3)
            assert not send.done(), "sent before bob's client answered"
            connection = chat.session.connection
            assert connection is not None
            connection.close()  # as a kill of the AS would break it
            with pytest.raises(SendError) as info:
                await asyncio.wait_for(send, 5)
            message_id = info.value.message_id
            assert message_id is not None and message_id.encode() in taken[0].body
            assert "MSRP connection lost" in str(info.value)
            assert alice.status(message_id) is MessageStatus.FAILED
            assert await alice.wait_status(first, timeout=5) is MessageStatus.DELIVERED

            # Sent again in a new chat with the same Message-IDs: the one bob's chat
            # had is dropped as a second copy, the other arrives once.
            again = await alice.open_chat("bob")
            assert await asyncio.wait_for(again.send("confirmed", message_id=first), 5) == first
            assert await asyncio.wait_for(
                again.send("unconfirmed", message_id=message_id), 5) == message_id
            got = await bob.wait_event(ChatMessage, 5)
            assert isinstance(got, ChatMessage)
            assert (got.text, got.message_id) == ("unconfirmed", message_id)
            assert bob.notifications.duplicates == 1
            assert await alice.wait_status(message_id, timeout=5) is MessageStatus.DELIVERED
    run_within(scenario, 30)


def test_the_chat_command_lists_the_lines_without_a_200(tmp_path: Path) -> None:
    """``imsbox ue chat``: bob's side takes the first line, then its MSRP connection
    breaks before it answered: the line is reported unconfirmed (to send again)
    with the AS's 481, not counted as sent."""
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), ues(config, "bob") as (bob,), \
                MsrpEndpoint() as bob_msrp:
            await registered(bob)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC),
                                                              env.get("PYTHONPATH")]))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "imsbox.cli", "ue", "--user", "alice", "--password",
                "alice-secret", "--pcscf", f"{config.pcscf.host}:{config.pcscf.port}",
                "--json", "chat", "bob", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            assert proc.stdin is not None
            try:
                b_session = await answer_as_bob(bob, bob_msrp)
                await b_session.wait_bound(10)
                proc.stdin.write(b"one\n")
                await proc.stdin.drain()
                got = await asyncio.wait_for(b_session.receive(), 10)
                while got.content_type != CPIM:  # isComposing first: answered
                    assert b_session.answer_final(got.message_id, 200)
                    got = await asyncio.wait_for(b_session.receive(), 10)
                assert b"one" in got.body
                connection = b_session.connection
                assert connection is not None
                connection.close()  # before bob answered
                await asyncio.sleep(0.5)
                proc.stdin.close()
                out, err = await asyncio.wait_for(proc.communicate(), 20)
            finally:
                if proc.returncode is None:
                    proc.kill()
            events = [json.loads(line) for line in out.decode().splitlines()]
            (unconfirmed,) = [e for e in events if e["event"] == "chat_unconfirmed"]
            assert unconfirmed["text"] == "one" and unconfirmed["message_id"]
            assert "481" in unconfirmed["reason"], unconfirmed
            assert events[-1]["event"] == "chat_result"
            assert (events[-1]["sent"], events[-1]["not_sent"]) == (0, 1), events[-1]
            assert proc.returncode == 1, err.decode()
            assert "not delivered and not stored" in err.decode()
    run(tmp_path, scenario)
