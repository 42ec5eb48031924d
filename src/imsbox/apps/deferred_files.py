"""Files kept for an offline recipient and pushed when it registers (issue 10).

PRODUCT.md: "a message accepted for delivery is not lost" - a file too. The
anchoring AS (:mod:`imsbox.apps.anchor`) answers the sender itself and streams
the MSRP file into the shared store as it arrives (:class:`StoredFileWriter`:
``store.files``, rows of 256 KiB, the sender's connection paused while the
store is behind, so memory stays bounded whatever the file's size). Only once
the last row is written, the size and hash are checked against the
file-selector, and the deferred item that keeps the file is stored (one
transaction: ``files.keep``) does the sender get the MSRP 200 / success
REPORT. The item's body is the INVITE's CPIM part (the imdn.Message-ID the
delivery IMDN refers to), its meta the SDP offer, the headers and the file's
id in the store.

The bytes live in the store, not on the machine that received them: when the
recipient registers, any messaging AS on the store reaches the item in order
with its ordinary deferred push, and :class:`FileDelivery` places seed 003's
file-transfer INVITE (multipart/mixed: the CPIM part, an SDP with the
original file-selector, file-transfer-id, file-disposition, file-date and our
path) from the original sender towards the S-CSCF, streams the file from the
store (from the receiver's file-range, if it answers one; one row read at a
time, as fast as the MSRP connection drains) and is done when the receiver's
success REPORT comes (it checks the hash). Only then is the item removed, and
the file's rows with it; the receiver's delivery IMDN reaches the sender by
normal routing (and is kept for it when it is offline).

Items an earlier imsbox kept in ``DATA_DIR/deferred-files/`` (meta ``file``,
no ``file_id``) are still delivered from there (:class:`LegacyFiles`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from .. import sdp
from ..content import CPIM
from ..content.multipart import BodyPart, build_multipart
from ..msrp import MsrpEndpoint, MsrpError, MsrpSession
from ..msrp import Setup as MsrpSetup
from ..rcs.offer import msrp_media
from ..sip.headers import HeaderError, NameAddr
from ..sip.ua.invite import SessionError
from ..sip.ua.useragent import Origin, UserAgent
from ..store import FILE_CHUNK, DeferredMessage, FileRepository, StoreError
from .anchor import cema_address, far_offer

__all__ = ["FILE_IDLE", "FILE_KIND", "FileDelivery", "LegacyFiles", "StoredFileWriter",
           "is_file_item", "kept_size", "stored_blocks", "stored_file_refusal"]

log = logging.getLogger(__name__)

FILE_KIND = "file"          # meta "kind" of a deferred file item
ANSWER_TIMEOUT = 40.0       # the recipient's answer to the delivery INVITE
CONNECT_TIMEOUT = 10.0
BYE_TIMEOUT = 5.0
# Rows are written WRITE_BATCH at a time (one group commit on SQLite, that many store
# connections at once on PostgreSQL), while the next ones arrive; with HIGH_CHUNKS
# waiting the sender's connection is paused until the store is down to LOW_CHUNKS.
# At most HIGH_CHUNKS rows (2 MiB) in memory per transfer.
WRITE_BATCH = 4
HIGH_CHUNKS = 8
LOW_CHUNKS = 4
# A file no item keeps and nothing was written to for this long has lost its writer
# (killed mid-transfer): the sweep removes it. Longer than any live transfer pauses
# (a UE gives up after 300 s without data).
FILE_IDLE = 600.0


def is_file_item(item: DeferredMessage) -> bool:
    """A kept file (pushed as a file transfer; a retrieval stream carries CPIM only)."""
    return _meta(item).get("kind") == FILE_KIND


def _meta(item: DeferredMessage) -> dict[str, Any]:
    try:
        meta = json.loads(item.meta) if item.meta else {}
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def stored_file_refusal(size: int | None, limit: int) -> str | None:
    """The 413 reason when a file to an offline user cannot be kept, else None."""
    if limit <= 0:
        return "Request Entity Too Large - recipient offline, files are not stored"
    if size is None:
        return "Request Entity Too Large - recipient offline, a file without a " \
               "file-selector size is not stored"
    if size > limit:
        return (f"Request Entity Too Large - recipient offline, file too large to store "
                f"({size} > {limit} bytes)")
    return None


class StoredFileWriter:
    """An MSRP Sink streaming the file into ``store.files`` as it arrives.

    Bytes are cut into FILE_CHUNK rows, written by one task (up to WRITE_BATCH
    together) while the next ones arrive; while HIGH_CHUNKS rows wait for the
    store the sender's connection is not read (TCP then slows the sender), so
    at most a few rows are in memory.
    ``commit`` checks size and sha-1 against the file-selector and waits for
    the last row; the caller then keeps ``file_id`` (``files.keep``). A file
    not kept is deleted by ``discard`` (or, after a kill, by the sweep)."""

    def __init__(self, files: FileRepository, session: MsrpSession | None = None,
                 max_size: int | None = None) -> None:
        self.files, self.session = files, session
        self.max_size = max_size     # the announced size: never more in the store
        self.file_id: int | None = None
        self.received = 0
        self.overflow = self.gap = False
        self._sha1 = hashlib.sha1()
        self._partial = bytearray()
        self._ready: deque[bytes] = deque()
        self._more = asyncio.Event()
        self._last = False
        self._paused = False
        self._task: asyncio.Task[None] | None = None

    def write_at(self, offset: int, data: bytes) -> None:  # Sink API, in order on one stream
        if self.overflow or self.gap or self._failed():
            return
        if offset < self.received:      # a resent overlap: the new part only
            data = data[self.received - offset:]
        elif offset > self.received:    # a gap: cannot be streamed on
            self.gap = True
            self._flow(paused=False)
            return
        if self.max_size is not None and self.received + len(data) > self.max_size:
            self.overflow = True
            self._flow(paused=False)
            return
        self.received += len(data)
        self._sha1.update(data)
        self._partial += data
        while len(self._partial) >= FILE_CHUNK:
            self._ready.append(bytes(self._partial[:FILE_CHUNK]))
            del self._partial[:FILE_CHUNK]
        if self._ready:
            self._wake()
            if len(self._ready) >= HIGH_CHUNKS:
                self._flow(paused=True)   # the store sets the pace

    async def commit(self, selector: sdp.FileSelector | None) -> str | None:
        """Check what came against the file-selector, write the last row, wait for
        every row; the failure REPORT comment when the file is not the one announced."""
        if self._task is not None and self._task.done():
            await self._task    # the store refused a row: raise it ("not stored", 500)
        problem = self._problem(selector)
        if problem is not None:
            return problem
        if self._partial:
            self._ready.append(bytes(self._partial))
            self._partial.clear()
        self._last = True
        self._wake()
        assert self._task is not None
        await asyncio.shield(self._task)    # a store failure raises: "not stored"
        return None

    def _problem(self, selector: sdp.FileSelector | None) -> str | None:
        if self.overflow:
            return f"file larger than announced ({self.max_size} bytes)"
        size = selector.size if selector is not None else None
        if self.gap or (size is not None and self.received != size):
            return f"file incomplete ({self.received} of {size} bytes)"
        wanted = selector.hash if selector is not None else None
        if wanted is not None and wanted.algorithm.lower() == "sha-1" and \
                self._sha1.digest() != wanted.digest:
            return "file hash mismatch (sha-1)"
        return None

    async def discard(self) -> None:
        """The session is over: a file that was not kept is deleted (a kept one
        belongs to its item and stays)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._flow(paused=False)
        if self.file_id is None:
            return
        try:
            await self.files.delete(self.file_id)
        except StoreError as exc:  # the store away: the sweep removes it later
            log.warning("kept file %s not deleted: %s", self.file_id, exc)

    def _wake(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._drain())
            self._task.add_done_callback(lambda _: self._flow(paused=False))
        self._more.set()

    def _failed(self) -> bool:
        """The store refused a row: what follows is dropped (commit will say why)."""
        return self._task is not None and self._task.done()

    async def _drain(self) -> None:
        self.file_id = await self.files.create()
        seq = 0
        while True:
            while self._ready:
                # the rows waiting go in together: one group commit on SQLite, several
                # connections at once on PostgreSQL (rows are keyed, order is free)
                batch = list(self._ready)[:WRITE_BATCH]
                await asyncio.gather(*(self.files.put_chunk(self.file_id, seq + n, chunk)
                                       for n, chunk in enumerate(batch)))
                for _ in batch:
                    self._ready.popleft()
                seq += len(batch)
                if len(self._ready) <= LOW_CHUNKS:
                    self._flow(paused=False)
            if self._last:
                return
            self._more.clear()
            await self._more.wait()

    def _flow(self, *, paused: bool) -> None:
        conn = self.session.connection if self.session is not None else None
        if conn is None or paused == self._paused:
            return
        self._paused = paused
        if paused:
            conn.pause_reading()
        else:
            conn.resume_reading()


class LegacyFiles:
    """``DATA_DIR/deferred-files``, where an earlier imsbox kept files: still
    delivered from there; at start, files no item names are removed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def clean(self, kept: set[str]) -> None:
        if not self.directory.is_dir():
            return
        for leftover in self.directory.iterdir():
            if leftover.is_file() and leftover.name not in kept:
                log.info("removing %s: no deferred item names it", leftover)
                leftover.unlink(missing_ok=True)

    def path(self, name: str) -> Path:
        """The kept file ``name`` (a bare name: never outside the directory)."""
        return self.directory / Path(name).name

    def remove(self, name: str) -> None:
        if name:
            self.path(name).unlink(missing_ok=True)


async def kept_size(files: FileRepository, legacy: LegacyFiles,
                    item: DeferredMessage) -> int | None:
    """The size of the file ``item`` keeps; None when it is gone (never deliverable)."""
    meta = _meta(item)
    file_id = meta.get("file_id")
    if isinstance(file_id, int):
        stored = await files.get(file_id)
        ok = stored is not None and stored.item_id == item.id
        return stored.size if stored is not None and ok else None
    path = legacy.path(str(meta.get("file", "")))
    return path.stat().st_size if meta.get("file") and path.is_file() else None


async def stored_blocks(files: FileRepository, file_id: int, start: int,
                        stop: int) -> AsyncIterator[bytes]:
    """Bytes ``start``..``stop`` (1-based, inclusive: a file-range) of a kept file,
    one row read from the store at a time as the sender asks for more."""
    first, skip = divmod(start - 1, FILE_CHUNK)
    left = stop - start + 1
    async for chunk in files.chunks(file_id, first):
        block = chunk[skip:skip + left]
        skip = 0
        left -= len(block)
        yield block
        if left <= 0:
            return


class DeliveryHost(Protocol):
    """What a file delivery needs of the messaging AS."""

    def remember_own(self, call_id: str) -> None: ...

    @property
    def core_route(self) -> str: ...


class FileDelivery:
    """One deferred file pushed to its (now registered) recipient."""

    def __init__(self, host: DeliveryHost, ua: UserAgent, msrp: MsrpEndpoint,
                 files: FileRepository, legacy: LegacyFiles, item: DeferredMessage,
                 meta: dict[str, Any]) -> None:
        self.host, self.ua, self.msrp = host, ua, msrp
        self.files, self.legacy = files, legacy
        self.item, self.meta = item, meta

    async def run(self) -> bool:
        """True once the receiver confirmed the whole file (its success REPORT)."""
        try:
            offer = sdp.parse(str(self.meta.get("sdp", "")).encode())
            local = NameAddr.parse(str(self.meta.get("from") or f"<{self.item.sender}>"))
        except (sdp.SdpError, HeaderError, ValueError) as exc:
            log.warning("deferred file %s unusable: %s", self.item.id, exc)
            return False
        size = await kept_size(self.files, self.legacy, self.item)
        if size is None:
            log.warning("deferred file %s: its file is gone", self.item.id)
            return False
        far = self.msrp.create_session(setup=MsrpSetup.ACTIVE)
        try:
            return await self._push(offer, local, far, size)
        finally:
            await far.close()

    async def _push(self, offer: sdp.SessionDescription, local: NameAddr,
                    far: MsrpSession, size: int) -> bool:
        body, content_type = self._body(bytes(far_offer(offer, far, self.msrp)))
        origin = Origin(local, self.ua.contact, (self.host.core_route,),
                        contact_params=str(self.meta.get("contact", "")))
        headers = [(str(p[0]), str(p[1])) for p in self.meta.get("headers", [])
                   if isinstance(p, list) and len(p) == 2]
        call = await self.ua.invite(self.item.recipient, body, headers,
                                    content_type=content_type, origin=origin)
        self.host.remember_own(call.call_id)
        try:
            final = await asyncio.wait_for(asyncio.shield(call.final), ANSWER_TIMEOUT)
        except TimeoutError:
            await _end(call.cancel())
            return False
        log.info("deferred file %s for %s: %s", self.item.id, self.item.recipient,
                 final.status if final is not None else None)
        if final is None or not 200 <= final.status < 300:
            return False
        try:
            answer = sdp.parse(call.remote_sdp or b"")
            media = msrp_media(answer)
            if media is None:
                raise sdp.SdpError("no MSRP media line in the answer")
            far.set_remote_path(media.path or [])
            far.cema_address = cema_address(answer, media)
            await asyncio.wait_for(far.connect(), CONNECT_TIMEOUT)
            await self._send(far, size, media.file_range)
            return True
        except (sdp.SdpError, TimeoutError, MsrpError, OSError, StoreError) as exc:
            log.info("deferred file %s not delivered: %r", self.item.id, exc)
            return False
        finally:
            await far.wait_idle(BYE_TIMEOUT)
            await _end(call.bye())

    def _body(self, offer: bytes) -> tuple[bytes, str | None]:
        """seed 003: multipart/mixed with the sender's CPIM part, else the SDP alone."""
        if not self.item.body:
            return offer, None
        multipart = build_multipart([BodyPart([("Content-Type", CPIM)], self.item.body),
                                     BodyPart([("Content-Type", "application/sdp")], offer)])
        return multipart.to_bytes(), multipart.content_type

    async def _send(self, far: MsrpSession, size: int,
                    file_range: sdp.FileRange | None) -> None:
        start = file_range.start if file_range is not None else 1
        stop = file_range.stop if file_range is not None and file_range.stop else size
        content_type = str(self.meta.get("type") or "application/octet-stream")
        file_id = self.meta.get("file_id")
        if isinstance(file_id, int):
            await far.send_message(content_type, stored_blocks(self.files, file_id, start, stop),
                                   size=stop - start + 1, success_report=True)
            return
        with self.legacy.path(str(self.meta.get("file", ""))).open("rb") as fh:
            fh.seek(start - 1)
            await far.send_message(content_type, cast(BinaryIO, _Limited(fh, stop - start + 1)),
                                   size=stop - start + 1, success_report=True)


class _Limited:
    """``read(n)`` of at most ``left`` bytes (a range of the file)."""

    def __init__(self, fh: BinaryIO, left: int) -> None:
        self.fh, self.left = fh, left

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.fh.read(n)
        self.left -= len(data)
        return data


async def _end(step: Awaitable[object]) -> None:
    try:
        await asyncio.wait_for(step, BYE_TIMEOUT)
    except (TimeoutError, SessionError) as exc:
        log.info("ending a deferred file delivery: %s", exc)
