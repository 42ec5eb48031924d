"""A file to an offline user is kept and delivered later (issue 10, PRODUCT.md "a
message accepted for delivery is not lost"), through the real core on loopback.

The anchoring AS answers the sender, streams the file into the store
(``store.files``, 256 KiB rows), stores the deferred item that keeps it, says
"stored" (processing IMDN) and only then sends the success REPORT; when bob registers, the AS places seed 003's file-transfer
INVITE (file-selector, file-transfer-id) and sends the file, in order with the
other deferred items, once - also across a kill -9 of ``imsbox serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DOMAIN, alice_and_bob, client, network_with
from test_deferred_sessions import open_session
from test_messaging_as import BOB, messaging_as, registered
from helpers import ues
from test_serve_cli import Serve
from test_ue_cli import Proc, ue, ue_args
from test_ue_cli import _env as cli_env

from imsbox.config import Config, load_config
from imsbox.msrp import MsrpEndpoint, MsrpStatusError
from imsbox.rcs import cpm
from imsbox.serve import Network
from imsbox.sip.message import Request
from imsbox.store import DB_FILENAME, FILE_CHUNK, Store, StoredFile, open_store
from imsbox.sip.parser import parse as parse_sip
from imsbox.testing import FAST_TIMERS
from imsbox.ue.client import (FileOffer, FileReceived, MessageReceived, MessageStatus,
                              Notification, RcsClient)

pytestmark = pytest.mark.timeout(60)
WAIT = 10.0


def a_file(tmp_path: Path, size: int = 20000, name: str = "notes.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(bytes((n * 7 + n // 251) % 256 for n in range(size)))
    return path


async def kept_files(store: Store) -> list[StoredFile]:
    """Every file in the store, kept or half-written."""
    found = [await store.files.get(i) for i in await store.files.ids()]
    return [f for f in found if f is not None]


async def until_no_files(store: Store, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while await store.files.ids():
            await asyncio.sleep(0.05)


def files_in(config: Config) -> list[StoredFile]:
    """The files in the store of ``imsbox serve`` (another process, or none running)."""
    async def read() -> list[StoredFile]:
        async with open_store(config.store_location) as store:
            return await kept_files(store)
    return asyncio.run(read())


async def file_sent_to_offline_bob(alice: RcsClient, source: Path) -> str:
    result = await alice.send_file("bob", source)
    assert result.ok and result.deferred, result
    assert result.reason == "accepted for later delivery"
    assert alice.deferred(result.message_id)
    return result.message_id


async def received_file(bob: RcsClient, source: Path) -> FileReceived:
    offer = await bob.wait_event(FileOffer, WAIT)
    assert isinstance(offer, FileOffer) and offer.name == source.name
    assert offer.size == source.stat().st_size
    done = await bob.wait_event(FileReceived, WAIT)
    assert isinstance(done, FileReceived) and done.ok, done
    assert Path(done.path).read_bytes() == source.read_bytes()
    return done


def test_file_to_offline_user_is_kept_and_delivered_in_order_once(tmp_path: Path) -> None:
    """pager, file, pager to offline bob: all three reach bob in that order, once;
    the kept file is gone afterwards and alice gets the file's delivery IMDN."""
    config = alice_and_bob(tmp_path)
    source = a_file(tmp_path)
    alice = client(config, "alice")

    async def scenario() -> None:
        async with Network(config, timers=FAST_TIMERS) as net:
            await alice.start()
            store = messaging_as(net).store.messages
            first = await alice.send_message("bob", "before the file")
            assert alice.deferred(first)
            file_id = await file_sent_to_offline_bob(alice, source)
            # stored before the success REPORT: item and file are there already
            items = await store.deferred(BOB, 0.0)
            assert len(items) == 2 and cpm.cpim_message_id(items[1].body) == file_id
            [kept] = await kept_files(messaging_as(net).store)
            assert kept.size == source.stat().st_size and kept.item_id == items[1].id
            last = await alice.send_message("bob", "after the file")
            bob = client(config, "bob", downloads=tmp_path / "downloads")
            await bob.start()
            try:
                got = await bob.wait_event(MessageReceived, WAIT)
                assert isinstance(got, MessageReceived) and got.text == "before the file"
                await received_file(bob, source)
                got = await bob.wait_event(MessageReceived, WAIT)
                assert isinstance(got, MessageReceived) and got.text == "after the file"
                assert await alice.wait_status(file_id, MessageStatus.DELIVERED, WAIT) is \
                    MessageStatus.DELIVERED
                assert alice.status(last) is not None
                async with asyncio.timeout(5):  # removed once delivered, rows and all
                    while await store.deferred(BOB, 0.0) or \
                            await messaging_as(net).store.files.ids():
                        await asyncio.sleep(0.05)
                with pytest.raises(TimeoutError):  # once
                    await bob.wait_event(FileOffer, 1.0)
            finally:
                await bob.close()
                await alice.close()

    asyncio.run(asyncio.wait_for(scenario(), 50))


def test_delivery_invite_is_seed_003s_file_transfer(tmp_path: Path) -> None:
    """The AS's INVITE to bob: multipart/mixed with alice's CPIM part and an SDP with
    the original file-selector (name, type, size, sha-1) and file-transfer-id."""
    config = alice_and_bob(tmp_path)
    source = a_file(tmp_path, 5000, "photo.jpg")
    alice = client(config, "alice")
    bob = client(config, "bob", downloads=tmp_path / "downloads")
    invites: list[Request] = []

    def trace(direction: str, data: bytes, flow: object) -> None:
        with contextlib.suppress(Exception):
            message = parse_sip(data)
            if isinstance(message, Request) and message.method == "INVITE":
                invites.append(message)

    async def scenario() -> None:
        async with network_with(config, alice):
            file_id = await file_sent_to_offline_bob(alice, source)
            await bob.start()
            try:
                bob._endpoint.transport.trace = trace
                await received_file(bob, source)
            finally:
                await bob.close()
            assert len(invites) == 1
            invite = invites[0]
            assert f"sip:alice@{DOMAIN}" in (invite.headers.get("P-Asserted-Identity") or "")
            assert "multipart/mixed" in str(invite.content_type)
            body = invite.body.decode()
            sha1 = hashlib.sha1(source.read_bytes()).digest()
            assert 'a=file-selector:name:"photo.jpg" type:image/jpeg size:5000 hash:sha-1:' \
                + ":".join(f"{b:02X}" for b in sha1) in body
            assert "a=file-transfer-id:" in body and "a=sendonly" in body
            assert f"imdn.Message-ID: {file_id}" in body

    asyncio.run(asyncio.wait_for(scenario(), 50))


def test_stored_file_limit_refuses_with_413_and_a_reason(tmp_path: Path) -> None:
    config = alice_and_bob(tmp_path)
    path = tmp_path / "imsbox.toml"
    path.write_text(path.read_text() + "\n[messaging]\nmax_stored_file_size = 1000\n")
    config = load_config(path)
    source = a_file(tmp_path, 5000)
    alice = client(config, "alice")

    async def scenario() -> None:
        async with network_with(config, alice) as net:
            result = await alice.send_file("bob", source)
            assert not result.ok and not result.deferred and result.status == 413
            assert "file too large to store (5000 > 1000 bytes)" in result.reason
            assert net.store is not None and await net.store.files.ids() == []

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_kept_file_survives_kill_9_of_serve(tmp_path: Path) -> None:
    """``imsbox serve`` in a subprocess, SIGKILL right after the sender's transfer
    ended "accepted for later delivery": bob gets the file from the next server."""
    config = alice_and_bob(tmp_path)
    config_path = tmp_path / "imsbox.toml"
    source = a_file(tmp_path, 300000)
    pcscf = (config.pcscf.host, config.pcscf.port)

    async def send() -> None:
        alice = RcsClient("alice", "alice-secret", DOMAIN, pcscf=pcscf, timers=FAST_TIMERS)
        await until_started(alice)
        try:
            await file_sent_to_offline_bob(alice, source)
            server.stop(signal.SIGKILL)
        finally:
            await alice.close()

    async def receive() -> None:
        bob = RcsClient("bob", "bob-secret", DOMAIN, pcscf=pcscf, timers=FAST_TIMERS,
                        downloads=tmp_path / "downloads")
        await until_started(bob)
        try:
            await received_file(bob, source)
            async with open_store(config.store_location) as store:
                await until_no_files(store)
        finally:
            await bob.close()

    server = Serve("--config", str(config_path))
    try:
        asyncio.run(asyncio.wait_for(send(), 30))
    finally:
        server.stop(signal.SIGKILL)
    [kept] = files_in(config)   # 300000 bytes: two rows
    assert (kept.size, kept.chunks) == (300000, 2) and kept.item_id is not None
    server = Serve("--config", str(config_path))
    try:
        asyncio.run(asyncio.wait_for(receive(), 30))
    finally:
        status, _, stderr = server.stop(signal.SIGTERM)
    assert status == 0, stderr


def test_a_kill_mid_file_leaves_only_what_the_sweep_removes(tmp_path: Path) -> None:
    """SIGKILL of ``imsbox serve`` while a file for offline bob streams into the
    store: alice never saw it accepted; the store holds a file no item keeps (and
    no item), which the sweep removes with its rows once it is idle."""
    config = alice_and_bob(tmp_path)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(24 << 20))
    pcscf = (config.pcscf.host, config.pcscf.port)

    async def send() -> None:
        alice = RcsClient("alice", "alice-secret", DOMAIN, pcscf=pcscf, timers=FAST_TIMERS)
        await until_started(alice)
        try:
            sending = asyncio.ensure_future(alice.send_file("bob", source))
            async with open_store(config.store_location) as store, asyncio.timeout(20):
                while not any(f.chunks >= 2 for f in await kept_files(store)):
                    await asyncio.sleep(0.01)
            server.stop(signal.SIGKILL)     # mid-file
            with contextlib.suppress(Exception):
                result = await asyncio.wait_for(sending, 20)
                assert not result.deferred, result
        finally:
            await alice.close()

    server = Serve("--config", str(tmp_path / "imsbox.toml"))
    try:
        asyncio.run(asyncio.wait_for(send(), 40))
    finally:
        server.stop(signal.SIGKILL)
    [half] = files_in(config)
    assert half.item_id is None and 2 <= half.chunks < (24 << 20) // FILE_CHUNK

    async def sweep() -> None:
        async with open_store(config.store_location) as store:
            assert await store.messages.deferred(BOB, 0.0) == []
            assert await store.files.sweep(idle_since=half.touched_at) == 0   # not idle yet
            assert await store.files.sweep(idle_since=half.touched_at + 1) == 1
            assert await store.files.ids() == []
            assert [c async for c in store.files.chunks(half.id)] == []
    asyncio.run(sweep())


async def until_started(ue: RcsClient, timeout: float = 10.0) -> None:
    """Start the client once the freshly started server answers."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await ue.start()
                return
            except Exception:
                await asyncio.sleep(0.3)


def test_send_file_to_offline_user_exits_3_accepted_for_later_delivery(
        tmp_path: Path) -> None:
    """``imsbox ue send-file`` against ``imsbox serve``: exit 3 and the message, in JSON
    and in text; ``listen`` by bob afterwards receives the file."""
    config = alice_and_bob(tmp_path)
    source = a_file(tmp_path, 8000)
    serve = Proc("serve", "--config", str(tmp_path / "imsbox.toml"))
    try:
        serve.wait_line(lambda line: "pcscf listening on udp" in line, 15)
        sent = ue(config, "alice", "send-file", "bob", str(source), "--timeout", "20")
        assert sent.returncode == 3, (sent.stdout, sent.stderr)
        result = json.loads(sent.stdout.splitlines()[-1])
        assert result["event"] == "file_sent" and result["ok"] and result["deferred"]
        assert result["reason"] == "accepted for later delivery"
        args = [a for a in ue_args(config, "alice") if a != "--json"]
        text = subprocess.run([sys.executable, "-m", "imsbox.cli", *args, "send-file", "bob",
                               str(source)], capture_output=True, text=True, timeout=20,
                              env=cli_env())
        assert text.returncode == 3, text.stderr
        assert text.stdout.strip() == \
            f"file {source.name} to sip:bob@{DOMAIN}: accepted for later delivery"
        listen = Proc(*ue_args(config, "bob"), "listen", "--downloads", str(tmp_path / "dl"))
        try:
            for _ in range(2):
                got = listen.wait_event("file_received", 15)
                assert got["ok"] and Path(got["path"]).read_bytes() == source.read_bytes()
        finally:
            listen.stop()
    finally:
        assert serve.stop() == 0, serve.stderr


@pytest.mark.parametrize(("sent", "says"), [
    (b"HELLO", "file hash mismatch (sha-1)"),
    (b"hello, world", "file larger than announced (5 bytes)"),
], ids=["hash", "larger"])
def test_file_not_as_announced_is_refused_and_not_kept(tmp_path: Path, sent: bytes,
                                                       says: str) -> None:
    """The AS checks what it keeps against the offer's file-selector: a failure
    REPORT with the reason, no deferred item, no file left in the data directory."""
    config = alice_and_bob(tmp_path)
    sha1 = ":".join(f"{b:02X}" for b in hashlib.sha1(b"hello").digest())
    selector = f'a=file-selector:name:"a.txt" type:text/plain size:5 hash:sha-1:{sha1}\r\n' \
               "a=file-transfer-id:ft-bad\r\n"

    async def scenario() -> None:
        async with Network(config, timers=FAST_TIMERS) as net, \
                ues(config, "alice") as (alice,), MsrpEndpoint() as msrp:
            await registered(alice)
            call, session = await open_session(alice, msrp, cpm.CpmService.FILETRANSFER,
                                               "conv-bad", "sendonly", selector)
            with pytest.raises(MsrpStatusError) as refused:
                await asyncio.wait_for(session.send_message("text/plain", sent,
                                                            success_report=True), 5)
            assert refused.value.status == 400 and refused.value.comment == says
            await asyncio.wait_for(call.bye(), 5)
            assert await messaging_as(net).store.messages.deferred(BOB, 0.0) == []
            await until_no_files(messaging_as(net).store)   # the rows written are gone

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_retrieving_client_gets_files_pushed_and_messages_by_retrieval(
        tmp_path: Path) -> None:
    """bob registers the cpm.deferred ICSI (seed 003 retrieval): the AS pushes no
    messages, but the kept file still comes as a file transfer; the retrieval
    streams the pager message only, and nothing is left afterwards."""
    config = alice_and_bob(tmp_path)
    source = a_file(tmp_path, 4000)
    alice = client(config, "alice")

    async def scenario() -> None:
        async with Network(config, timers=FAST_TIMERS) as net:
            await alice.start()
            bob = client(config, "bob", downloads=tmp_path / "downloads",
                         deferred_retrieval=True)
            try:
                await alice.send_message("bob", "kept for retrieval")
                await file_sent_to_offline_bob(alice, source)
                await bob.start()
                await received_file(bob, source)
                retrieved = await bob.retrieve_deferred()
                assert [m.text for m in retrieved] == ["kept for retrieval"]
                async with asyncio.timeout(5):
                    while await messaging_as(net).store.messages.deferred(BOB, 0.0) or \
                            await messaging_as(net).store.files.ids():
                        await asyncio.sleep(0.05)
            finally:
                await bob.close()
                await alice.close()

    asyncio.run(asyncio.wait_for(scenario(), 40))


def test_leftovers_are_cleaned_and_a_lost_file_does_not_block_the_rest(
        tmp_path: Path) -> None:
    """At start the AS removes what a kill left: a half-written file in the store
    that no item keeps (idle for FILE_IDLE), and files of an earlier imsbox's
    ``DATA_DIR/deferred-files`` no item names. Items an earlier imsbox kept there
    are still delivered from there; one whose file is gone is given up like an
    expired one - a ``failed`` delivery IMDN to the sender - and the items after
    it are still delivered."""
    config = alice_and_bob(tmp_path)
    lost, there = a_file(tmp_path, 3000, "lost.bin"), a_file(tmp_path, 7000, "there.bin")
    directory = config.data_dir / "deferred-files"

    async def first() -> str:
        alice = client(config, "alice")
        async with network_with(config, alice):
            file_id = await file_sent_to_offline_bob(alice, lost)
            await file_sent_to_offline_bob(alice, there)
            assert alice.deferred(await alice.send_message("bob", "after the lost file"))
            return file_id

    file_id = asyncio.run(asyncio.wait_for(first(), 30))
    as_an_earlier_imsbox_kept_them(config, {"lost.bin": None, "there.bin": there})
    (directory / "0123abcd").write_bytes(b"orphan")
    (directory / ".incoming-4567").write_bytes(b"half")

    async def second() -> None:
        alice = client(config, "alice", report_all_notifications=True)  # a later client
        bob = client(config, "bob", downloads=tmp_path / "downloads")
        async with network_with(config, alice) as net:
            assert net.store is not None and await net.store.files.ids() == []  # swept
            assert sorted(p.name for p in directory.iterdir()) == ["there.bin"]
            await bob.start()
            try:
                await received_file(bob, there)
                got = await bob.wait_event(MessageReceived, WAIT)
                assert isinstance(got, MessageReceived) and got.text == "after the lost file"
                note = await alice.wait_event(Notification, WAIT)
                assert isinstance(note, Notification)
                assert (note.message_id, note.status) == (file_id, "failed")
                async with asyncio.timeout(5):
                    while list(directory.iterdir()):   # delivered: gone
                        await asyncio.sleep(0.05)
            finally:
                await bob.close()

    asyncio.run(asyncio.wait_for(second(), 30))


def as_an_earlier_imsbox_kept_them(config: Config, files: dict[str, Path | None]) -> None:
    """Rewrite the kept files' items as an earlier imsbox stored them (meta ``file``:
    a name in DATA_DIR/deferred-files, whose copy is there or not), and leave a
    half-written file in the store as a killed writer would (idle for an hour)."""
    directory = config.data_dir / "deferred-files"
    directory.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(config.data_dir / DB_FILENAME)
    try:
        db.execute("PRAGMA foreign_keys=ON")
        rows = db.execute("SELECT m.id, m.meta FROM deferred_messages m JOIN deferred_files f"
                          " ON f.item_id = m.id ORDER BY m.id").fetchall()
        for (item, text), (name, source) in zip(rows, files.items(), strict=True):
            meta = json.loads(text)
            del meta["file_id"]
            meta["file"] = name
            db.execute("UPDATE deferred_messages SET meta = ? WHERE id = ?",
                       (json.dumps(meta), item))
            if source is not None:
                (directory / name).write_bytes(source.read_bytes())
        db.execute("DELETE FROM deferred_files")
        db.execute("INSERT INTO deferred_files (created_at, touched_at) VALUES (1, 1)")
        db.execute("INSERT INTO deferred_file_chunks VALUES (last_insert_rowid(), 0, x'00')")
        db.commit()
    finally:
        db.close()
