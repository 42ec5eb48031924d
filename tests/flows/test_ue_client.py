"""RcsClient end to end: two UEs through the real IMS core on loopback.

P-CSCF -> S-CSCF -> I-CSCF -> S-CSCF -> P-CSCF, Digest REGISTER with the CPM
feature tags, pager and large message mode with IMDNs, a chat with
isComposing, and a file transfer with its hash check. Each service runs
twice: with the iFCs emptied (UE to UE through the core only) and with the
default CPM iFCs (through the messaging AS, which anchors the sessions).
"""

from __future__ import annotations

import asyncio
import logging
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from imsbox.rcs.cpm import ICSI_SESSION, escape_icsi
from imsbox.config import Config
from imsbox.serve import Network
from imsbox.store import open_store
from imsbox.ue.client import (
    ChatEnded, ChatMessage, ChatStarted, Composing, FileOffer, FileReceived, MessageReceived,
    MessageStatus, Notification, RcsClient, RcsError, SendError, resolve_target,
)
from imsbox.testing import FAST_TIMERS

from helpers import DOMAIN, alice_and_bob, client, network_with, run_within

pytestmark = pytest.mark.timeout(40)
WAIT = 5.0


def ue_config(tmp_path: Path, via_as: bool = False) -> Config:
    """Loopback config with a short min_expires; ``via_as`` False empties the iFCs
    (UE to UE through the core only), True keeps the default CPM iFCs."""
    return alice_and_bob(tmp_path, via_as=via_as, min_expires=1)


def run(scenario: Callable[[], Awaitable[None]], limit: float = 30) -> None:
    run_within(scenario, limit)


# -- target resolution ---------------------------------------------------------------

def test_resolve_target_forms() -> None:
    assert resolve_target("bob", DOMAIN) == "sip:bob@ims.test"
    assert resolve_target("bob@other.test", DOMAIN) == "sip:bob@other.test"
    assert resolve_target("+15550002", DOMAIN) == "tel:+15550002"
    assert resolve_target("tel:+15550002", DOMAIN) == "tel:+15550002"
    assert resolve_target("sip:bob@ims.test;user=phone", DOMAIN) == "sip:bob@ims.test;user=phone"
    with pytest.raises(RcsError):
        resolve_target("sip:", DOMAIN)


# -- registration ------------------------------------------------------------------------

def test_register_with_cpm_feature_tags_and_refresh(tmp_path: Path) -> None:
    config = ue_config(tmp_path)
    alice = client(config, "alice", expires=2)

    async def scenario() -> None:
        async with network_with(config, alice) as net:
            assert net.store is not None
            (binding,) = await net.store.registrations.bindings("sip:alice@ims.test")
            assert binding.contact == alice.contact
            assert binding.instance_id == f'"<{alice.instance}>"' or \
                binding.instance_id == f"<{alice.instance}>"
            for service in ("msg", "largemsg", "session", "filetransfer"):
                icsi = escape_icsi(f"urn:urn-7:3gpp-service.ims.icsi.oma.cpm.{service}")
                assert icsi in binding.params, binding.params
            assert "+g.3gpp.icsi-ref" in binding.params
            assert alice.registration.associated_uris[:2] == ["sip:alice@ims.test", "tel:+15550001"]
            first_cseq = binding.cseq
            await asyncio.sleep(2.5)  # granted 2 s: refreshed at 1 s and 2 s
            (binding,) = await net.store.registrations.bindings("sip:alice@ims.test")
            assert binding.cseq > first_cseq
            assert alice.registration.ok
        # close() de-registered
        async with open_store(config.store_location) as store:
            assert await store.registrations.bindings("sip:alice@ims.test") == []
    run(scenario)


def test_wrong_password_fails_start(tmp_path: Path) -> None:
    config = ue_config(tmp_path)
    pcscf = config.pcscf
    mallory = RcsClient("alice", "wrong", DOMAIN, pcscf=(pcscf.host, pcscf.port),
                        timers=FAST_TIMERS)

    async def scenario() -> None:
        async with Network(config, timers=FAST_TIMERS):
            with pytest.raises(RcsError, match="registration"):
                await mallory.start()
    run(scenario)


# -- standalone messages ---------------------------------------------------------------

@pytest.mark.parametrize("via_as", [False, True], ids=["core", "messaging-as"])
def test_pager_message_delivery_and_display(tmp_path: Path, via_as: bool) -> None:
    config = ue_config(tmp_path, via_as)
    alice, bob = client(config, "alice"), client(config, "bob")

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            mid = await alice.send_message("bob", "hello bob", display=True)
            assert alice.status(mid) in (MessageStatus.SENT, MessageStatus.DELIVERED)
            got = await bob.wait_event(MessageReceived, WAIT)
            assert isinstance(got, MessageReceived)
            assert (got.sender, got.recipient, got.text) == (alice.aor, bob.aor, "hello bob")
            assert got.message_id == mid and got.mode == "pager"
            assert got.to_json()["event"] == "message" and got.to_json()["from"] == alice.aor
            assert await alice.wait_status(mid, MessageStatus.DELIVERED, WAIT) is \
                MessageStatus.DELIVERED
            note = await alice.wait_event(Notification, WAIT)
            assert isinstance(note, Notification)
            assert (note.message_id, note.status, note.sender) == (mid, "delivered", bob.aor)

            assert await bob.mark_displayed(mid)
            assert not await bob.mark_displayed(mid)  # once only
            assert await alice.wait_status(mid, MessageStatus.DISPLAYED, WAIT) is \
                MessageStatus.DISPLAYED
            note = await alice.wait_event(Notification, WAIT)
            assert isinstance(note, Notification) and note.status == "displayed"

            # by E.164 number: tel URI through the implicit registration set
            mid2 = await alice.send_message("+15550002", "by number")
            got = await bob.wait_event(MessageReceived, WAIT)
            assert isinstance(got, MessageReceived) and got.text == "by number"
            assert await alice.wait_status(mid2, timeout=WAIT) is MessageStatus.DELIVERED
            assert not await bob.mark_displayed(mid2)  # display was not asked for
    run(scenario)


def test_message_to_unknown_user_fails(tmp_path: Path) -> None:
    config = ue_config(tmp_path)
    alice = client(config, "alice")

    async def scenario() -> None:
        async with network_with(config, alice):
            with pytest.raises(SendError) as info:
                await alice.send_message("nobody", "hello?")
            assert info.value.status is not None and info.value.status >= 400
    run(scenario)


@pytest.mark.parametrize("via_as", [False, True], ids=["core", "messaging-as"])
def test_large_message_mode_above_1300_bytes(tmp_path: Path, via_as: bool) -> None:
    config = ue_config(tmp_path, via_as)
    alice, bob = client(config, "alice"), client(config, "bob")
    text = "large " * 400  # 2400 bytes: over the pager limit

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            mid = await alice.send_message("sip:bob@ims.test", text)
            got = await bob.wait_event(MessageReceived, WAIT)
            assert isinstance(got, MessageReceived)
            assert got.mode == "large" and got.text == text and got.message_id == mid
            assert await alice.wait_status(mid, timeout=WAIT) is MessageStatus.DELIVERED
    run(scenario)


# -- chat ------------------------------------------------------------------------------------

@pytest.mark.parametrize("via_as", [False, True], ids=["core", "messaging-as"])
def test_chat_with_iscomposing_and_notifications(tmp_path: Path, via_as: bool) -> None:
    config = ue_config(tmp_path, via_as)
    alice, bob = client(config, "alice"), client(config, "bob")

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            chat = await alice.open_chat("bob")
            started = await bob.wait_event(ChatStarted, WAIT)
            assert isinstance(started, ChatStarted) and started.direction == "incoming"
            assert started.sender == alice.aor
            assert started.conversation_id == chat.conversation_id
            theirs = bob.chats[started.chat_id]
            # Anchored by the AS: alice's MSRP peer is the AS, not bob's UE.
            direct = chat.session.remote_path[-1] == theirs.session.local_uri
            assert direct is not via_as

            await chat.composing()
            typing = await bob.wait_event(Composing, WAIT)
            assert isinstance(typing, Composing) and typing.state == "active"
            mid = await chat.send("Hello")
            got = await bob.wait_event(ChatMessage, WAIT)
            assert isinstance(got, ChatMessage) and got.text == "Hello" and got.message_id == mid
            assert await alice.wait_status(mid, timeout=WAIT) is MessageStatus.DELIVERED
            assert await bob.mark_displayed(mid)
            assert await alice.wait_status(mid, MessageStatus.DISPLAYED, WAIT) is \
                MessageStatus.DISPLAYED

            reply = await theirs.send("hi")
            back = await alice.wait_event(ChatMessage, WAIT)
            assert isinstance(back, ChatMessage) and back.text == "hi"
            assert back.sender == "sip:bob@ims.test"
            assert await bob.wait_status(reply, timeout=WAIT) is MessageStatus.DELIVERED

            await chat.close()
            ended = await bob.wait_event(ChatEnded, WAIT)
            assert isinstance(ended, ChatEnded) and ended.chat_id == started.chat_id
            assert not bob.chats and not alice.chats
    run(scenario)


def test_chat_ends_with_a_bye_when_its_msrp_connection_breaks(tmp_path: Path) -> None:
    """The AS that relays a chat is killed: nobody sends a BYE, the MSRP
    connection just breaks. The UE waits a moment for a BYE, then sends its own
    (no dialog left hanging); the far UE hears of it through the AS."""
    config = ue_config(tmp_path, via_as=True)
    alice, bob = client(config, "alice"), client(config, "bob")

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            chat = await alice.open_chat("bob")
            started = await bob.wait_event(ChatStarted, WAIT)
            assert isinstance(started, ChatStarted)
            connection = chat.session.connection
            assert connection is not None
            connection.close()  # as a kill of the AS would break it
            await asyncio.wait_for(chat.closed.wait(), WAIT)
            assert chat.end_reason == "MSRP connection lost"
            ended = await bob.wait_event(ChatEnded, WAIT)
            assert isinstance(ended, ChatEnded) and ended.chat_id == started.chat_id
            assert not bob.chats and not alice.chats
    run(scenario)


# -- file transfer ---------------------------------------------------------------------------

@pytest.mark.parametrize("via_as", [False, True], ids=["core", "messaging-as"])
def test_file_transfer_with_progress_and_hash(tmp_path: Path, via_as: bool) -> None:
    config = ue_config(tmp_path, via_as)
    downloads = tmp_path / "downloads"
    alice, bob = client(config, "alice"), client(config, "bob", downloads=downloads)
    source = tmp_path / "photo.jpg"
    payload = bytes(range(256)) * 40 + b"tail"  # 10244 bytes: six 2048-byte chunks
    source.write_bytes(payload)
    progress: list[tuple[int, int]] = []

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            result = await alice.send_file("bob", source,
                                           progress=lambda n, t: progress.append((n, t)))
            assert result.ok, result
            assert result.sha256 == hashlib.sha256(payload).hexdigest()
            offer = await bob.wait_event(FileOffer, WAIT)
            assert isinstance(offer, FileOffer)
            assert (offer.name, offer.size, offer.content_type) == \
                ("photo.jpg", len(payload), "image/jpeg")
            done = await bob.wait_event(FileReceived, WAIT)
            assert isinstance(done, FileReceived) and done.ok
            assert done.sha256 == result.sha256 and done.size == len(payload)
            assert Path(done.path).read_bytes() == payload
            assert Path(done.path).parent == downloads
            assert done.to_json()["sha256"] == result.sha256
    run(scenario)
    assert progress[-1] == (len(payload), len(payload))
    assert len(progress) == 6


def test_file_refused_without_download_dir(tmp_path: Path) -> None:
    config = ue_config(tmp_path)
    alice, bob = client(config, "alice"), client(config, "bob")
    source = tmp_path / "notes.txt"
    source.write_text("secret plans")

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            result = await alice.send_file("bob", source)
            assert not result.ok and result.status == 603
            offer = await bob.wait_event(FileOffer, WAIT)
            assert isinstance(offer, FileOffer) and offer.name == "notes.txt"
    run(scenario)


def test_chat_icsi_in_accept_contact(tmp_path: Path) -> None:
    """The INVITE of a chat carries the CPM headers of seed 000."""
    config = ue_config(tmp_path)
    alice, bob = client(config, "alice"), client(config, "bob")

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            chat = await alice.open_chat("bob")
            invite = chat.call.request
            assert invite.header("P-Preferred-Service") == ICSI_SESSION
            assert escape_icsi(ICSI_SESSION) in (invite.header("Accept-Contact") or "")
            assert invite.header("P-Preferred-Identity") == "<sip:alice@ims.test>"
            assert invite.header("Conversation-ID") and invite.header("Contribution-ID")
            offer = invite.body.decode()
            for line in ("a=setup:active", "a=msrp-cema", "a=sendrecv",
                         "a=accept-types:message/cpim application/im-iscomposing+xml",
                         "a=accept-wrapped-types:text/plain message/imdn+xml"):
                assert line in offer, offer
            await chat.close()
    run(scenario)


def test_offline_recipient_gets_the_message_on_register(tmp_path: Path) -> None:
    """Through the messaging AS: stored while bob is offline (202), delivered when he
    registers, and the delivery notification reaches alice."""
    config = ue_config(tmp_path, via_as=True)
    alice, bob = client(config, "alice"), client(config, "bob")

    async def scenario() -> None:
        async with network_with(config, alice):
            mid = await alice.send_message("bob", "while you were out")
            assert alice.status(mid) is MessageStatus.SENT
            await bob.start()
            try:
                got = await bob.wait_event(MessageReceived, WAIT)
                assert isinstance(got, MessageReceived)
                assert got.text == "while you were out" and got.sender == alice.aor
                assert await alice.wait_status(mid, timeout=WAIT) is MessageStatus.DELIVERED
            finally:
                await bob.close()
    run(scenario)


@pytest.mark.parametrize("report_all", [False, True], ids=["own-only", "listen"])
def test_a_late_notification_is_reported_only_by_a_listener(
        tmp_path: Path, report_all: bool, caplog: pytest.LogCaptureFixture) -> None:
    """issue 10 (stray notifications): alice's message waits for offline bob (202);
    alice's client ends. bob registers and takes it; his delivery IMDN waits for
    alice in turn. The next client of alice did not send that message: it does not
    report the notification (no stray "delivered" in an unrelated command) unless it
    reports everything, as ``imsbox ue listen`` does."""
    caplog.set_level(logging.INFO, logger="imsbox.ue.notify")
    config = ue_config(tmp_path, via_as=True)
    first, bob = client(config, "alice"), client(config, "bob")
    later = client(config, "alice", report_all_notifications=report_all)

    async def scenario() -> None:
        async with network_with(config, first):
            mid = await first.send_message("bob", "for later")
            assert first.deferred(mid) and first.status(mid) is MessageStatus.SENT
            await first.close()
            await bob.start()
            try:
                got = await bob.wait_event(MessageReceived, WAIT)
                assert isinstance(got, MessageReceived) and got.message_id == mid
                await later.start()
                try:
                    if report_all:
                        note = await later.wait_event(Notification, WAIT)
                        assert isinstance(note, Notification)
                        assert (note.message_id, note.status) == (mid, "delivered")
                        return
                    async with asyncio.timeout(WAIT):
                        while f"for {mid} from" not in caplog.text:
                            await asyncio.sleep(0.02)
                    assert "not sent by this client" in caplog.text
                    assert not [e for e in later.pending_events()
                                if isinstance(e, Notification)]
                finally:
                    await later.close()
            finally:
                await bob.close()
    run(scenario)
