"""File transfer (RFC 5547 push, seed 003) both ways, with resume (sections 8.1, 8.7).

The sender offers the file in a multipart INVITE (a CPIM part asking for
delivery notifications + the SDP with file-selector, file-transfer-id,
file-disposition, file-date) and sends it as one MSRP message in 2048-byte
chunks. The receiver writes it into ``downloads/.sha-1-<hash>.part`` and,
once complete and matching the offer's hash, renames it and sends the success
REPORT, then (after the BYE) the delivery IMDN.

A transfer cut short (the sender's MSRP connection or session dies, or nothing
arrives for ``FILE_STALL`` seconds) gives the receiver a :class:`FileFailed`
event; the ``.part`` file is kept: it is keyed by the file's hash, so a
resumed transfer of the same file (``send_file(resume=True)``, a new
file-transfer-id) is answered with ``file-range:<first missing octet>-<size>``
and only the rest is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mimetypes
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from ..content import (
    CPIM,
    ContentError,
    CpimMessage,
    DispositionType,
    ImdnStatus,
    NotificationRequest,
    parse_cpim,
)
from ..content.multipart import BodyPart, Multipart, build_multipart
from ..msrp import ByteRange, MsrpError, MsrpSession, MsrpStatusError, ReceivedMessage
from ..rcs.cpm import CONVERSATION_ID, CpmService
from ..rcs.offer import msrp_media
from ..sdp import (
    Attribute,
    Direction,
    FileDate,
    FileHash,
    FileRange,
    FileSelector,
    MediaDescription,
    SdpError,
    SessionDescription,
    parse,
)
from ..sip.ua.useragent import Call
from .core import UeCore, new_id
from .events import (
    FileFailed,
    FileOffer,
    FileReceived,
    FileTransferResult,
    MessageStatus,
    SendError,
)
from .notify import Notifications, Received

__all__ = ["FILE_STALL", "FileTransfers", "Progress"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
FILE_STALL = 300.0     # a file transfer with no complete message by then is given up
SETTLE = 2.0           # after a BYE mid-file: how long the last MSRP bytes may take


class FileTransfers:
    """Sends and receives the files of one UE; received ones go to ``downloads``."""

    def __init__(self, core: UeCore, notifications: Notifications,
                 downloads: Path | None = None, max_file_size: int | None = None) -> None:
        self.core, self.notifications = core, notifications
        self.downloads = downloads
        self.max_file_size = max_file_size  # larger file offers: 488

    # -- sending ---------------------------------------------------------------------------
    async def send(self, target: str, path: Path, progress: Progress | None = None, *,
                   resume: bool = False, transfer_id: str | None = None) -> FileTransferResult:
        """Push ``path`` to ``target``; ``ok`` once the receiver's success REPORT
        covered every byte (see RcsClient.send_file)."""
        size, sha1, sha256 = await asyncio.to_thread(_digests, path)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        result = FileTransferResult(False, target, path.name, size, sha256,
                                    transfer_id or uuid.uuid4().hex, message_id=new_id())
        attributes = _file_attributes(path, content_type, size, sha1, result.transfer_id)
        self.notifications.sending(result.message_id, target)
        try:
            call, session = await self.core.outgoing(
                target, Direction.SENDONLY, (content_type,), (), CpmService.FILETRANSFER,
                extra=attributes,
                body=lambda offer: self._invite_body(target, content_type, offer,
                                                     result.message_id))
        except SendError as exc:
            result.status, result.reason = exc.status, str(exc)
            if exc.status is not None:
                self.notifications.track(result.message_id, MessageStatus.FAILED)
            return result
        try:
            await self._push(session, call, path, content_type, result, resume, progress)
            await session.wait_idle(SETTLE)  # broken off: let the chunks sent land
        finally:
            await self.core.hang_up(call, session)
        return result

    def _invite_body(self, target: str, content_type: str, offer: bytes,
                     message_id: str) -> tuple[bytes, str]:
        """multipart/mixed: the CPIM part (imdn.Message-ID, Disposition-Notification)
        the delivery IMDN will refer to, then the SDP (seed 003)."""
        # processing too: for an offline recipient the AS says "stored" (RFC 5438)
        notify = [NotificationRequest.POSITIVE_DELIVERY, NotificationRequest.NEGATIVE_DELIVERY,
                  NotificationRequest.PROCESSING]
        cpim = self.core.cpim(target, content_type, b"", message_id, notify)
        multipart = build_multipart([BodyPart([("Content-Type", CPIM)], cpim),
                                     BodyPart([("Content-Type", "application/sdp")], offer)])
        return multipart.to_bytes(), multipart.content_type

    async def _push(self, session: MsrpSession, call: Call, path: Path, content_type: str,
                    result: FileTransferResult, resume: bool, progress: Progress | None) -> None:
        """Send the negotiated range; fill ``result`` with the receiver's verdict."""
        try:
            start, stop = _range_to_send(call, result.size, resume)
            result.file_range = f"{start}-{stop}"
            with path.open("rb") as fh:
                fh.seek(start - 1)
                reader = _ProgressReader(fh, result.size, progress, start - 1, stop)
                body = cast(BinaryIO, reader)  # read(size) is all the MSRP layer calls
                await session.send_message(content_type, body, size=stop - start + 1,
                                           success_report=True)
            result.ok, result.status, result.reason = True, 200, "confirmed"
            self.notifications.track(result.message_id, MessageStatus.SENT)
            if self.notifications.deferred(result.message_id):  # its IMDN came first
                result.deferred, result.reason = True, "accepted for later delivery"
        except MsrpStatusError as exc:  # the receiver's (or relay's) failure REPORT / response
            result.status = exc.status
            result.reason = f"refused by the receiver: {exc.status} {exc.comment}".rstrip()
            self.notifications.track(result.message_id, MessageStatus.FAILED)
        except (TimeoutError, MsrpError, OSError, SendError, SdpError) as exc:
            result.reason = f"transfer failed: {exc!r}"

    # -- receiving -------------------------------------------------------------------------
    async def incoming(self, call: Call, peer: str, offer: SessionDescription,
                       media: MediaDescription, cpim: CpimMessage | None) -> None:
        """An offered file: refuse it, or take it into its ``.part`` file."""
        selector = media.file_selector
        assert selector is not None
        transfer_id = media.file_transfer_id or uuid.uuid4().hex
        name = Path(selector.name or transfer_id).name or transfer_id
        core = self.core
        core.emit(FileOffer(peer, core.aor, transfer_id, name, selector.size, selector.type))
        refusal = self._refusal(selector)
        if refusal is not None:
            call.reject(*refusal)
            return
        assert self.downloads is not None
        self.downloads.mkdir(parents=True, exist_ok=True)
        part = self.downloads / f".{_part_key(selector, transfer_id)}.part"
        held = part.stat().st_size if part.exists() else 0
        wanted = _wanted_range(media.file_range, selector.size, held)
        if wanted is None:
            call.reject(488, "Not Acceptable Here - file-range starts after the received part")
            return
        session = core.msrp.create_session()
        session.defer_success_reports = True  # confirmed only after the hash check
        done: asyncio.Queue[ReceivedMessage] = asyncio.Queue()
        session.on_message = done.put_nowait
        with part.open("r+b" if part.exists() else "w+b") as fh:
            fh.truncate(wanted.start - 1)  # keep the prefix we append to
            session.sink_factory = lambda request: _part_sink(fh, request, wanted, selector.size)
            answer_sdp = core.answer(session, offer, (selector.type or "*",), (),
                                     Direction.RECVONLY, whole_file=True,
                                     file_range=wanted if wanted.start > 1 else None)
            if not await core.accept(call, session, answer_sdp, CpmService.FILETRANSFER):
                if fh.tell() == 0 and wanted.start == 1:
                    part.unlink(missing_ok=True)  # nothing of it was here before
                return
            message, cut = await _first_or_end(done, call, session)
            if message is None:  # let what was sent before the end land, then stop writing
                await _closed(session, SETTLE)
                await session.close()
        received = self.notifications.remember(
            cpim, peer, None, call.request.header(CONVERSATION_ID),
            CpmService.FILETRANSFER) if cpim is not None else None
        incoming = _IncomingFile(call, session, peer, part, name, transfer_id, selector,
                                 received)
        if message is None:
            await self._interrupted(incoming, cut)
        else:
            await self._done(incoming, message)

    def _refusal(self, selector: FileSelector) -> tuple[int, str] | None:
        """(status, reason) when this UE will not take the file, else None."""
        if self.downloads is None:
            return 603, "Decline - no download directory"
        limit, size = self.max_file_size, selector.size
        if limit is not None and size is not None and size > limit:
            return 488, f"Not Acceptable Here - file too large ({size} > {limit} bytes)"
        return None

    async def _interrupted(self, incoming: _IncomingFile, reason: str) -> None:
        """Cut short: the prefix stays for a resumed transfer; say so."""
        kept = incoming.part.stat().st_size if incoming.part.exists() else 0
        log.info("file %s from %s interrupted (%s); %d bytes kept", incoming.name,
                 incoming.peer, reason, kept)
        core = self.core
        core.emit(FileFailed(incoming.peer, core.aor, incoming.transfer_id, incoming.name,
                             incoming.selector.size, kept, str(incoming.part), reason))
        await core.hang_up(incoming.call, incoming.session)

    async def _done(self, incoming: _IncomingFile, message: ReceivedMessage) -> None:
        """Check the whole file against the offer, confirm or refuse it, then notify."""
        call, session = incoming.call, incoming.session
        size, sha1, sha256 = await asyncio.to_thread(_digests, incoming.part)
        ok = _matches(incoming.selector, size, sha1)
        whole = ByteRange(1, message.size, message.size)
        path = ""
        if ok:
            target = _free_name(self.downloads or Path("."), incoming.name)
            os.replace(incoming.part, target)
            path = str(target)
            if message.success_report:
                session.send_report(message.message_id, 200, "OK", whole)
        else:
            incoming.part.unlink(missing_ok=True)
            if message.failure_report != "no":
                session.send_report(message.message_id, 400, "file does not match its hash",
                                    whole)
        core = self.core
        core.emit(FileReceived(incoming.peer, core.aor, incoming.transfer_id, incoming.name,
                               size, path, sha256, ok))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(call.terminated), 10)
        await core.hang_up(call, session)
        if incoming.received is not None:  # after the BYE, as in seed 003
            await self.notifications.send_imdn(
                incoming.received, DispositionType.DELIVERY,
                ImdnStatus.DELIVERED if ok else ImdnStatus.FAILED)


def _range_to_send(call: Call, size: int, resume: bool) -> tuple[int, int]:
    """The 1-based inclusive range to send (the answer's file-range with resume)."""
    media = msrp_media(parse(call.remote_sdp or b""))
    asked = media.file_range if media is not None and resume else None
    if asked is None or size == 0:
        return 1, size
    stop = asked.stop if asked.stop is not None else size
    if not 1 <= asked.start <= stop <= size:
        raise SendError(f"the receiver asked for file-range {asked}, the file has {size}")
    return asked.start, stop


class _ProgressReader:
    """A file range read in chunks that reports how far into the file it got."""

    def __init__(self, file: BinaryIO, total: int, progress: Progress | None,
                 base: int = 0, stop: int | None = None) -> None:
        self.file, self.total, self.progress = file, total, progress
        self.sent = base                    # octets of the file before the range
        self.stop = total if stop is None else stop

    def read(self, size: int) -> bytes:
        data = self.file.read(max(0, min(size, self.stop - self.sent)))
        self.sent += len(data)
        if self.progress is not None and data:
            self.progress(self.sent, self.total)
        return data


@dataclass(slots=True)
class _IncomingFile:
    """A file being received: its session, where it goes and what it must match."""

    call: Call
    session: MsrpSession
    peer: str
    part: Path
    name: str
    transfer_id: str
    selector: FileSelector
    received: Received | None  # the INVITE's CPIM part, for the delivery IMDN


class _PartSink:
    """Writes a (possibly resumed) file message into the partial file at ``base``."""

    __slots__ = ("base", "file")

    def __init__(self, file: BinaryIO, base: int) -> None:
        self.file, self.base = file, base

    def write_at(self, offset: int, data: bytes) -> None:
        if self.file.closed:  # a late chunk of an interrupted transfer
            return
        self.file.seek(self.base + offset)
        self.file.write(data)


def _part_sink(fh: BinaryIO, request: Any, wanted: FileRange, size: int | None) -> _PartSink:
    """Append at the asked-for start; a sender that ignored the range and sends the
    whole file (Byte-Range total = file size) is written from the beginning."""
    byte_range = request.byte_range
    whole = byte_range is not None and size is not None and byte_range.total == size
    return _PartSink(fh, 0 if whole else wanted.start - 1)


def _file_attributes(path: Path, content_type: str, size: int, sha1: bytes,
                     transfer_id: str) -> list[Attribute]:
    """file-selector, file-transfer-id, file-disposition, file-date (RFC 5547 section 6)."""
    selector = FileSelector(path.name, content_type, size=size, hash=FileHash("sha-1", sha1))
    created = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    disposition = "render" if content_type.startswith("image/") else "attachment"
    return [Attribute("file-selector", str(selector)),
            Attribute("file-transfer-id", transfer_id),
            Attribute("file-disposition", disposition),
            Attribute("file-date", str(FileDate(creation=created)))]


def _part_key(selector: FileSelector, transfer_id: str) -> str:
    """A partial download is kept by the file's hash: a resumed transfer has a new
    file-transfer-id (RFC 5547 section 8.1) but the same file-selector hash."""
    if selector.hash is not None:
        return f"{selector.hash.algorithm.lower()}-{selector.hash.digest.hex()}"
    return transfer_id


def _wanted_range(offered: FileRange | None, size: int | None, held: int) -> FileRange | None:
    """The range to ask for: the offered one if it continues what we hold, else from
    the first missing octet; None when the offer starts past what we hold."""
    if offered is not None:
        return offered if offered.start - 1 <= held else None
    if size is not None and 0 < held < size:
        return FileRange(held + 1, size)
    return FileRange(1, size) if size else FileRange(1, None)


def _matches(selector: FileSelector, size: int, sha1: bytes) -> bool:
    """RFC 5547 section 8.3.1: the hash (and size) declared in the SDP."""
    if selector.size is not None and selector.size != size:
        return False
    digest = selector.hash
    return digest is None or (digest.algorithm.lower() == "sha-1" and digest.digest == sha1)


async def _closed(session: MsrpSession, timeout: float) -> None:
    """Wait (bounded) until the peer closed the session's MSRP connection."""
    conn = session.connection
    if conn is not None:
        await asyncio.wait([asyncio.ensure_future(asyncio.shield(conn.closed))],
                           timeout=timeout)


def cpim_part(multipart: Multipart | None) -> CpimMessage | None:
    """The CPIM part of a file-transfer INVITE (the IMDN request), if any."""
    part = multipart.find(CPIM) if multipart is not None else None
    if part is None:
        return None
    try:
        return parse_cpim(part.body)
    except ContentError:
        return None


async def _first_or_end(queue: asyncio.Queue[ReceivedMessage], call: Call,
                        session: MsrpSession) -> tuple[ReceivedMessage | None, str]:
    """The complete message, or (None, why) when the session or its MSRP connection
    ended (or the transfer stalled) first."""
    getter = asyncio.ensure_future(queue.get())
    ended = asyncio.ensure_future(asyncio.shield(call.terminated))
    waits: list[asyncio.Future[Any]] = [getter, ended]
    conn = session.connection
    if conn is not None:
        waits.append(asyncio.ensure_future(asyncio.shield(conn.closed)))
    await asyncio.wait(waits, timeout=FILE_STALL, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result(), ""
    if not queue.empty():
        return queue.get_nowait(), ""
    if ended.done() and not ended.cancelled():
        return None, f"session ended: {ended.result().reason}"
    if len(waits) > 2 and waits[2].done():
        return None, "MSRP connection lost"
    return None, f"nothing received for {FILE_STALL:g} s"


def _digests(path: Path) -> tuple[int, bytes, str]:
    """(size, sha-1 digest, sha-256 hex) of a file, read in blocks."""
    sha1, sha256, size = hashlib.sha1(), hashlib.sha256(), 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 16):
            sha1.update(block)
            sha256.update(block)
            size += len(block)
    return size, sha1.digest(), sha256.hexdigest()


def _free_name(directory: Path, name: str) -> Path:
    """``name`` in ``directory``, with -1, -2 ... added when it is taken."""
    target = directory / name
    stem, suffix = target.stem, target.suffix
    n = 1
    while target.exists():
        target = directory / f"{stem}-{n}{suffix}"
        n += 1
    return target

