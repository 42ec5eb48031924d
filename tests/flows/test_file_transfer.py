"""Seed 003 file transfer end to end: two RcsClients through the real IMS core and
the messaging AS (which anchors the transfer as a B2BUA and streams the file on).

Ladder checked from the UEs' side: INVITE multipart/mixed (CPIM part with
imdn.Message-ID + Disposition-Notification, SDP with file-selector (name, type,
size, sha-1 hash), file-transfer-id, file-disposition, file-date, sendonly);
200 OK recvonly with file-range; 512 MSRP SENDs of 2048 bytes with their
Byte-Ranges at the receiver; BYE; the delivery IMDN for the file's Message-ID.
Then a hash mismatch (failed, not delivered), a resumed transfer (RFC 5547
file-range) and the file size limits (488 with a reason), and the CLI's exit
status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import io
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from imsbox.rcs.cpm import ICSI_FILETRANSFER, escape_icsi
from imsbox.apps.messaging import MessagingSettings
from imsbox.config import Config
from imsbox.content import parse_cpim, parse_imdn
from imsbox.content.multipart import parse_multipart
from imsbox.msrp import MsrpRequest
from imsbox.sdp import Direction, FileRange, parse
from imsbox.sip.message import Request, Response
from imsbox.sip.parser import parse as parse_sip
from imsbox.ue import cli as ue_cli
from imsbox.ue.client import (
    FileFailed, FileOffer, FileReceived, MessageStatus, Notification, RcsClient,
)

from helpers import alice_and_bob, client, network_with, run_within

pytestmark = pytest.mark.timeout(40)
WAIT = 10.0
SIZE = 1_048_576              # 1 MB: 512 chunks of 2048 bytes
CHUNK = 2048


# -- set-up ---------------------------------------------------------------------------------

def ue_config(tmp_path: Path, via_as: bool = True) -> Config:
    return alice_and_bob(tmp_path, via_as=via_as, min_expires=1)


def run(scenario: Callable[[], Awaitable[None]], limit: float = 35) -> None:
    run_within(scenario, limit)


def jpeg(tmp_path: Path, name: str = "1MB.jpg", size: int = SIZE) -> Path:
    """A JPEG-sized file: SOI/APP0 markers, then reproducible noise."""
    head = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
    path = tmp_path / name
    path.write_bytes(head + random.Random(3).randbytes(size - len(head)))
    return path


# -- the ladder, as the UEs see it ---------------------------------------------------------

class Ladder:
    """Every SIP message in and out of the UEs, and every MSRP SEND the receiver took."""

    def __init__(self) -> None:
        self.sip: list[tuple[str, str, Request | Response]] = []
        self.sends: list[MsrpRequest] = []

    def watch_sip(self, ue: RcsClient, name: str) -> None:
        def trace(direction: str, data: bytes, flow: object) -> None:
            with contextlib.suppress(Exception):
                self.sip.append((name, direction, parse_sip(data)))
        ue._endpoint.transport.trace = trace

    def watch_sends(self, ue: RcsClient) -> None:
        """Spy on the receiver's MSRP sessions: each SEND's headers as it arrives."""
        endpoint = ue._msrp
        create = endpoint.create_session

        def create_session(*args: Any, **kwargs: Any) -> Any:
            session = create(*args, **kwargs)
            begin = session.core.begin_send

            def spy(request: MsrpRequest) -> Any:
                if request.content_type is not None:  # not the empty binding SEND
                    self.sends.append(request)
                return begin(request)
            session.core.begin_send = spy  # type: ignore[method-assign]
            return session
        endpoint.create_session = create_session  # type: ignore[method-assign]

    def requests(self, name: str, direction: str, method: str) -> list[Request]:
        """Each request once: a UDP retransmission (same branch and CSeq) is the same one."""
        seen: set[tuple[str, int]] = set()
        out = []
        for n, d, m in self.sip:
            if n == name and d == direction and isinstance(m, Request) and m.method == method:
                key = (m.top_via.branch or "", m.cseq.seq)
                if key not in seen:
                    seen.add(key)
                    out.append(m)
        return out

    def final(self, name: str, direction: str, method: str) -> Response:
        return next(m for n, d, m in self.sip if n == name and d == direction
                    and isinstance(m, Response) and m.cseq.method == method
                    and m.status >= 200)

    def index(self, name: str, direction: str, method: str) -> int:
        return next(i for i, (n, d, m) in enumerate(self.sip) if n == name and d == direction
                    and isinstance(m, Request) and m.method == method)


def invite_parts(invite: Request) -> tuple[Any, Any]:
    """(CPIM, SDP) of a seed-003 INVITE."""
    ctype = invite.content_type
    assert ctype is not None and ctype.mime == "multipart/mixed", invite
    multipart = parse_multipart(invite.body, str(ctype))
    assert [p.content_type for p in multipart.parts] == ["message/cpim", "application/sdp"]
    cpim_part, sdp_part = multipart.parts
    return parse_cpim(cpim_part.body), parse(sdp_part.body)


def check_ranges(sends: list[MsrpRequest], total: int, count: int | None = None) -> None:
    """Consecutive 2048-byte Byte-Ranges n-m/total from 1: the whole message, or its
    first ``count`` chunks."""
    assert len(sends) == (-(-total // CHUNK) if count is None else count)
    assert len({s.message_id for s in sends}) == 1
    for i, send in enumerate(sends):
        byte_range = send.byte_range
        assert byte_range is not None
        start = i * CHUNK + 1
        assert (byte_range.start, byte_range.end, byte_range.total) == \
            (start, min(start + CHUNK - 1, total), total), (i, str(byte_range))


async def parts_settled(downloads: Path, ue: RcsClient, size: int) -> Path:
    """The receiver's partial download once its interrupted session is over."""
    for _ in range(200):
        parts = list(downloads.glob(".*.part"))
        if parts and parts[0].stat().st_size == size and not ue._msrp._sessions:
            return parts[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"partial download never settled: {[(p, p.stat().st_size) for p in parts]} sessions {list(ue._msrp._sessions)}")


# -- 1. seed 003 end to end ------------------------------------------------------------------

@pytest.mark.parametrize("via_as", [True, False], ids=["messaging-as", "core"])
def test_seed_003_file_transfer_ladder(tmp_path: Path, via_as: bool) -> None:
    config = ue_config(tmp_path, via_as)
    downloads = tmp_path / "downloads"
    alice, bob = client(config, "alice"), client(config, "bob", downloads=downloads)
    source = jpeg(tmp_path)
    payload = source.read_bytes()
    ladder = Ladder()

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            ladder.watch_sip(alice, "alice")
            ladder.watch_sip(bob, "bob")
            ladder.watch_sends(bob)
            result = await alice.send_file("bob", source)
            assert result.ok and result.status == 200, result
            assert result.file_range == f"1-{SIZE}"
            offer = await bob.wait_event(FileOffer, WAIT)
            assert isinstance(offer, FileOffer)
            assert (offer.name, offer.size, offer.content_type) == ("1MB.jpg", SIZE, "image/jpeg")
            done = await bob.wait_event(FileReceived, WAIT)
            assert isinstance(done, FileReceived) and done.ok
            assert Path(done.path).read_bytes() == payload
            assert done.sha256 == result.sha256 == hashlib.sha256(payload).hexdigest()
            # the delivery IMDN for the file's Message-ID (after the BYE, as in the seed)
            assert await alice.wait_status(result.message_id, MessageStatus.DELIVERED,
                                           WAIT) is MessageStatus.DELIVERED
            note = await alice.wait_event(Notification, WAIT)
            assert isinstance(note, Notification)
            assert (note.message_id, note.status, note.sender) == \
                (result.message_id, "delivered", bob.aor)
            check_ladder(ladder, result.message_id, result.transfer_id, payload)
    run(scenario)


def check_ladder(ladder: Ladder, message_id: str, transfer_id: str, payload: bytes) -> None:
    sha1 = hashlib.sha1(payload).digest()
    # 1) INVITE: multipart/mixed, CPIM part + SDP with the RFC 5547 attributes
    (invite,) = ladder.requests("alice", "out", "INVITE")
    assert invite.header("P-Preferred-Service") == ICSI_FILETRANSFER
    assert escape_icsi(ICSI_FILETRANSFER) in (invite.header("Accept-Contact") or "")
    cpim, offer = invite_parts(invite)
    assert cpim.get("Message-ID", "urn:ietf:params:imdn") == message_id
    notify = cpim.get("Disposition-Notification", "urn:ietf:params:imdn") or ""
    assert "positive-delivery" in notify and "negative-delivery" in notify
    (media,) = offer.media
    assert media.proto == "TCP/MSRP" and offer.direction_of(media) is Direction.SENDONLY
    selector = media.file_selector
    assert selector is not None
    assert (selector.name, selector.type, selector.size) == ("1MB.jpg", "image/jpeg", SIZE)
    assert selector.hash is not None and selector.hash.algorithm == "sha-1"
    assert selector.hash.digest == sha1
    assert media.file_transfer_id == transfer_id
    assert media.file_disposition == "render"
    assert media.file_date is not None and media.file_date.creation is not None
    assert media.msrp_cema and media.setup is not None
    # the receiver got the same kind of INVITE (through the AS: its own SDP, same CPIM)
    (theirs,) = ladder.requests("bob", "in", "INVITE")
    their_cpim, their_offer = invite_parts(theirs)
    assert their_cpim.get("Message-ID", "urn:ietf:params:imdn") == message_id
    assert their_offer.media[0].file_selector == selector
    # 2) 200 OK: recvonly with file-range, file-selector and file-transfer-id mirrored
    for name, direction in (("bob", "out"), ("alice", "in")):
        ok = ladder.final(name, direction, "INVITE")
        assert ok.status == 200
        answer = parse(ok.body)
        (answered,) = answer.media
        assert answer.direction_of(answered) is Direction.RECVONLY
        assert answered.file_range == FileRange(1, SIZE)
        assert answered.file_selector == selector
        assert answered.file_transfer_id == their_offer.media[0].file_transfer_id \
            if name == "bob" else transfer_id
        assert answered.file_disposition is None and answered.file_date is None
    # 3) 512 SENDs of 2048 bytes at the receiver, Byte-Range 1-2048/1048576 ...
    check_ranges(ladder.sends, SIZE)
    assert all(s.content_type == "image/jpeg" and s.success_report for s in ladder.sends)
    # 4) BYE from the sender after the last chunk, received by the receiver
    assert len(ladder.requests("alice", "out", "BYE")) == 1
    assert len(ladder.requests("bob", "in", "BYE")) == 1
    # 5) then the receiver's delivery IMDN (pager MESSAGE, CPIM + imdn+xml)
    (imdn,) = ladder.requests("bob", "out", "MESSAGE")
    assert ladder.index("bob", "in", "BYE") < ladder.index("bob", "out", "MESSAGE")
    notification = parse_cpim(imdn.body)
    assert notification.content_disposition == "notification"
    imdn_doc = parse_imdn(notification.body)
    assert (imdn_doc.message_id, imdn_doc.status.value) == (message_id, "delivered")


# -- 1b. the hash is checked before confirming ------------------------------------------------

def test_hash_mismatch_is_reported_failed_not_delivered(tmp_path: Path) -> None:
    """The file changes on disk after its sha-1 went into the offer: the receiver's hash
    check fails, it answers with a failure REPORT (not the success REPORT) and a
    ``failed`` delivery IMDN; send_file says failed; nothing lands in downloads."""
    config = ue_config(tmp_path)
    downloads = tmp_path / "downloads"
    alice, bob = client(config, "alice"), client(config, "bob", downloads=downloads)
    source = jpeg(tmp_path)
    corrupted = [False]

    def corrupt(sent: int, total: int) -> None:
        if not corrupted[0]:  # after the first chunk was read: later reads see the change
            corrupted[0] = True
            with source.open("r+b") as fh:
                fh.seek(SIZE - 100)
                fh.write(b"\x00" * 50)

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            result = await alice.send_file("bob", source, progress=corrupt)
            assert not result.ok and result.status == 400, result
            assert "hash" in result.reason
            done = await bob.wait_event(FileReceived, WAIT)
            assert isinstance(done, FileReceived) and not done.ok and done.path == ""
            assert await alice.wait_status(result.message_id, MessageStatus.DELIVERED,
                                           WAIT) is MessageStatus.FAILED
            note = await alice.wait_event(Notification, WAIT)
            assert isinstance(note, Notification)
            assert (note.message_id, note.status) == (result.message_id, "failed")
            assert list(downloads.iterdir()) == []  # no file, no partial
    run(scenario)


# -- 2. resume (RFC 5547 file-range) ------------------------------------------------------------

def test_interrupted_transfer_is_resumed_from_the_received_range(tmp_path: Path) -> None:
    """alice's link fails after 299 chunks (the read of chunk 300 raises): alice hangs
    up, the AS still passes on what it got and bob keeps it (by the file's hash). ``send_file(resume=True)``: a new INVITE
    (new file-transfer-id, same hash); bob answers ``file-range:612353-1048576``; only
    that part is sent (Byte-Range 1-2048/436224 ...); bob appends it and checks the
    hash of the whole file."""
    config = ue_config(tmp_path)
    downloads = tmp_path / "downloads"
    alice, bob = client(config, "alice"), client(config, "bob", downloads=downloads)
    source = jpeg(tmp_path)
    payload = source.read_bytes()
    kept = 299 * CHUNK
    ladder = Ladder()

    def cut(sent: int, total: int) -> None:
        if sent == kept + CHUNK:  # chunk 300 was read: it never goes out
            raise ConnectionResetError("link down after 299 chunks")

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            ladder.watch_sip(alice, "alice")
            ladder.watch_sends(bob)
            broken = await alice.send_file("bob", source, progress=cut)
            assert not broken.ok and "transfer failed" in broken.reason, broken
            part = await parts_settled(downloads, bob, kept)
            assert part.read_bytes() == payload[:kept]
            assert not (downloads / "1MB.jpg").exists()
            check_ranges(ladder.sends, SIZE, 299)  # what arrived: the first 299 chunks
            ladder.sends.clear()

            progress: list[tuple[int, int]] = []
            result = await alice.send_file("bob", source, resume=True,
                                           progress=lambda n, t: progress.append((n, t)))
            assert result.ok, result
            assert result.file_range == f"{kept + 1}-{SIZE}"
            assert result.transfer_id != broken.transfer_id
            assert progress[0] == (kept + CHUNK, SIZE) and progress[-1] == (SIZE, SIZE)
            check_ranges(ladder.sends, SIZE - kept)  # 213 SENDs of the missing part
            first, second = ladder.requests("alice", "out", "INVITE")
            _, offer1 = invite_parts(first)
            _, offer2 = invite_parts(second)
            assert offer2.media[0].file_selector == offer1.media[0].file_selector  # same hash
            assert offer2.media[0].file_transfer_id != offer1.media[0].file_transfer_id
            answer = parse(ladder.final("alice", "in", "INVITE").body)  # the first 200
            assert answer.media[0].file_range == FileRange(1, SIZE)
            resumed = [m for n, d, m in ladder.sip if n == "alice" and d == "in"
                       and isinstance(m, Response) and m.cseq.method == "INVITE"
                       and m.status == 200][-1]
            assert parse(resumed.body).media[0].file_range == FileRange(kept + 1, SIZE)
            done = await bob.wait_event(FileReceived, WAIT)
            assert isinstance(done, FileReceived) and done.ok
            assert Path(done.path).read_bytes() == payload
            assert not list(downloads.glob(".*.part"))
            assert await alice.wait_status(result.message_id, MessageStatus.DELIVERED,
                                           WAIT) is MessageStatus.DELIVERED
    run(scenario)


def test_resume_not_asked_sends_the_whole_file(tmp_path: Path) -> None:
    """Without resume the sender ignores the receiver's narrower file-range and sends
    everything (Byte-Range total = file size): the receiver takes it from the start."""
    config = ue_config(tmp_path)
    downloads = tmp_path / "downloads"
    alice, bob = client(config, "alice"), client(config, "bob", downloads=downloads)
    source = jpeg(tmp_path, "small.jpg", 64 * CHUNK)
    payload = source.read_bytes()
    downloads.mkdir()
    digest = hashlib.sha1(payload).hexdigest()
    (downloads / f".sha-1-{digest}.part").write_bytes(b"x" * (10 * CHUNK))  # stale junk

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            result = await alice.send_file("bob", source)
            assert result.ok and result.file_range == f"1-{len(payload)}", result
            done = await bob.wait_event(FileReceived, WAIT)
            assert isinstance(done, FileReceived) and done.ok
            assert Path(done.path).read_bytes() == payload
    run(scenario)


@pytest.mark.parametrize("via_as", [True, False], ids=["messaging-as", "core"])
def test_cut_transfer_gives_file_failed_and_a_resumable_part(
        tmp_path: Path, via_as: bool, caplog: pytest.LogCaptureFixture) -> None:
    """issue 9 item 6: alice's MSRP connection is killed after 200 chunks. bob gets a
    ``file_failed`` event (in JSON too) naming the ``.part`` file he keeps; a resumed
    transfer continues it; alice logs no "Future exception was never retrieved"."""
    config = ue_config(tmp_path, via_as)
    downloads = tmp_path / "downloads"
    alice, bob = client(config, "alice"), client(config, "bob", downloads=downloads)
    source = jpeg(tmp_path)
    payload = source.read_bytes()

    def cut(sent: int, total: int) -> None:
        if sent == 200 * CHUNK:
            for session in list(alice._msrp._sessions.values()):
                if session.connection is not None and session.connection.transport:
                    session.connection.transport.abort()

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            broken = await alice.send_file("bob", source, progress=cut)
            assert not broken.ok and "transfer failed" in broken.reason, broken
            failed = await bob.wait_event(FileFailed, WAIT)
            assert isinstance(failed, FileFailed) and failed.name == "1MB.jpg"
            assert failed.size == SIZE and 0 < failed.kept < SIZE, failed
            record = failed.to_json()
            assert record["event"] == "file_failed" and record["from"] == alice.aor
            assert record["transfer_id"] == broken.transfer_id and record["reason"]
            part = Path(failed.part)
            assert part.parent == downloads and part.name.endswith(".part")
            kept = part.stat().st_size
            assert kept == failed.kept and part.read_bytes() == payload[:kept]

            result = await alice.send_file("bob", source, resume=True)
            assert result.ok and result.file_range == f"{kept + 1}-{SIZE}", result
            done = await bob.wait_event(FileReceived, WAIT)
            assert isinstance(done, FileReceived) and done.ok
            assert Path(done.path).read_bytes() == payload and not part.exists()
    run(scenario)
    gc.collect()
    assert "never retrieved" not in caplog.text, caplog.text


# -- 3. size limits ------------------------------------------------------------------------------

def test_messaging_as_refuses_a_file_over_its_limit(tmp_path: Path) -> None:
    config = ue_config(tmp_path)
    alice = client(config, "alice")
    bob = client(config, "bob", downloads=tmp_path / "downloads")
    source = jpeg(tmp_path)

    async def scenario() -> None:
        async with network_with(config, alice, bob) as net:
            net.nodes["as"].settings = MessagingSettings(max_file_size=512 * 1024)  # type: ignore[attr-defined]
            result = await alice.send_file("bob", source)
            assert not result.ok and result.status == 488, result
            assert f"file too large ({SIZE} > {512 * 1024} bytes)" in result.reason
            assert alice.status(result.message_id) is MessageStatus.FAILED
            assert not any(isinstance(e, FileOffer) for e in bob.pending_events())
    run(scenario)


@pytest.mark.parametrize("via_as", [True, False], ids=["messaging-as", "core"])
def test_receiver_refuses_a_file_over_its_limit(tmp_path: Path, via_as: bool) -> None:
    config = ue_config(tmp_path, via_as)
    alice = client(config, "alice")
    bob = client(config, "bob", downloads=tmp_path / "downloads", max_file_size=100_000)
    source = jpeg(tmp_path)

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            result = await alice.send_file("bob", source)
            assert not result.ok and result.status == 488, result
            assert f"file too large ({SIZE} > 100000 bytes)" in result.reason
            offer = await bob.wait_event(FileOffer, WAIT)
            assert isinstance(offer, FileOffer) and offer.size == SIZE
    run(scenario)


# -- 4. the CLI's exit status ----------------------------------------------------------------------

def test_cli_send_file_exit_status_only_0_when_confirmed(tmp_path: Path) -> None:
    """``imsbox ue send-file``'s command body against the real network: 0 for a
    confirmed file, 1 for one the receiver refused (its size limit: 488)."""
    config = ue_config(tmp_path)
    alice = client(config, "alice")
    bob = client(config, "bob", downloads=tmp_path / "downloads", max_file_size=SIZE)
    good = jpeg(tmp_path, "good.jpg", 8 * CHUNK)
    big = jpeg(tmp_path, "big.jpg", SIZE + 1)

    async def send(path: Path) -> tuple[int, str]:
        out = io.StringIO()
        printer = ue_cli.Printer(True, out, io.StringIO())
        args = argparse.Namespace(to="bob", path=path, timeout=20.0)
        return await ue_cli._send_file(alice, args, printer), out.getvalue()

    async def scenario() -> None:
        async with network_with(config, alice, bob):
            status, out = await send(good)
            assert status == ue_cli.EXIT_OK and '"ok": true' in out.splitlines()[-1]
            status, out = await send(big)
            assert status == ue_cli.EXIT_FAILED and '"status": 488' in out.splitlines()[-1]
    run(scenario)
