"""Files kept for an offline recipient and pushed when it registers (issue 10).

PRODUCT.md: "a message accepted for delivery is not lost" - a file too. The
anchoring AS (:mod:`imsbox.apps.anchor`) answers the sender itself, writes
the MSRP file into ``DATA_DIR/deferred-files/`` (:class:`StoredFileWriter`),
and only once the file is on disk (fsync, hash checked against the
file-selector) and its deferred item is in the store does the sender get the
MSRP 200 / success REPORT. The item's body is the INVITE's CPIM part (the
imdn.Message-ID the delivery IMDN refers to), its meta the SDP offer, the
headers and the file's name in the directory.

When the recipient registers, the AS's ordinary deferred push reaches the
item in order and :class:`FileDelivery` places seed 003's file-transfer
INVITE (multipart/mixed: the CPIM part, an SDP with the original
file-selector, file-transfer-id, file-disposition, file-date and our path)
from the original sender towards the S-CSCF, sends the file (from the
receiver's file-range, if it answers one) and is done when the receiver's
success REPORT comes (it checks the hash). Only then is the item removed and
the file deleted; the receiver's delivery IMDN reaches the sender by normal
routing (and is kept for it when it is offline).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Awaitable
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
from ..store import DeferredMessage
from .anchor import cema_address, far_offer

__all__ = ["FILE_KIND", "FileDelivery", "FileStore", "StoredFileWriter", "is_file_item",
           "stored_file_refusal"]

log = logging.getLogger(__name__)

FILE_KIND = "file"          # meta "kind" of a deferred file item
INCOMING_PREFIX = ".incoming-"
ANSWER_TIMEOUT = 40.0       # the recipient's answer to the delivery INVITE
CONNECT_TIMEOUT = 10.0
BYE_TIMEOUT = 5.0
HASH_BLOCK = 1 << 20


def is_file_item(item: DeferredMessage) -> bool:
    """A kept file (pushed as a file transfer; a retrieval stream carries CPIM only)."""
    try:
        meta = json.loads(item.meta) if item.meta else {}
    except json.JSONDecodeError:
        return False
    return isinstance(meta, dict) and meta.get("kind") == FILE_KIND


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


class FileStore:
    """The directory of kept files. A kill mid-transfer leaves an ``.incoming-*``
    file (its sender never got a 200), one between the rename and the store write
    a file no item names (its sender got no 200 either): the next start removes
    both (``clean``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def clean(self, kept: set[str]) -> None:
        """Remove every file but those the deferred items name (``kept``)."""
        if not self.directory.is_dir():
            return
        for leftover in self.directory.iterdir():
            if leftover.is_file() and leftover.name not in kept:
                log.info("removing %s: no deferred item names it", leftover)
                leftover.unlink(missing_ok=True)

    def usable(self, meta: dict[str, Any]) -> bool:
        """The item's file is there (else it cannot be delivered, ever)."""
        name = str(meta.get("file", ""))
        return bool(name) and self.path(name).is_file()

    def writer(self, max_size: int | None = None) -> StoredFileWriter:
        self.directory.mkdir(parents=True, exist_ok=True)
        return StoredFileWriter(self.directory, uuid.uuid4().hex, max_size)

    def path(self, name: str) -> Path:
        """The kept file ``name`` (a bare name: never outside the directory)."""
        return self.directory / Path(name).name

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)


class StoredFileWriter:
    """An MSRP Sink writing the file under a temporary name; ``commit`` makes it a
    kept file (durable, checked) or says why not."""

    def __init__(self, directory: Path, name: str, max_size: int | None = None) -> None:
        self.directory, self.name = directory, name
        self.temp = directory / f"{INCOMING_PREFIX}{name}"
        self._file: BinaryIO | None = self.temp.open("w+b")
        self.max_size = max_size     # the announced size: never more on our disk
        self.written = 0
        self.overflow = False

    def write_at(self, offset: int, data: bytes) -> None:  # Sink API
        if self._file is None or self.overflow:
            return
        if self.max_size is not None and offset + len(data) > self.max_size:
            self.overflow = True
            return
        self._file.seek(offset)
        self._file.write(data)
        self.written = max(self.written, offset + len(data))

    async def commit(self, selector: sdp.FileSelector | None) -> str | None:
        """fsync, check size and sha-1 against the file-selector, rename; the failure
        REPORT comment when the file is not the one announced."""
        file, self._file = self._file, None
        if file is None:
            return "file already closed"
        if self.overflow:
            file.close()
            self.temp.unlink(missing_ok=True)
            return f"file larger than announced ({self.max_size} bytes)"
        try:
            problem = await asyncio.to_thread(_check_and_sync, file, selector)
        finally:
            file.close()
        if problem is not None:
            self.temp.unlink(missing_ok=True)
            return problem
        final = self.directory / self.name
        os.replace(self.temp, final)
        await asyncio.to_thread(_sync_directory, self.directory)
        return None

    def discard(self) -> None:
        """Not kept (the session ended before the whole file came)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self.temp.unlink(missing_ok=True)


def _check_and_sync(file: BinaryIO, selector: sdp.FileSelector | None) -> str | None:
    file.flush()
    os.fsync(file.fileno())
    size = file.seek(0, os.SEEK_END)
    if selector is not None and selector.size is not None and size != selector.size:
        return f"file incomplete ({size} of {selector.size} bytes)"
    wanted = selector.hash if selector is not None else None
    if wanted is None or wanted.algorithm.lower() != "sha-1":
        return None
    digest = hashlib.sha1()
    file.seek(0)
    while block := file.read(HASH_BLOCK):
        digest.update(block)
    return None if digest.digest() == wanted.digest else "file hash mismatch (sha-1)"


def _sync_directory(directory: Path) -> None:
    """The rename is durable only once the directory entry is (POSIX)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DeliveryHost(Protocol):
    """What a file delivery needs of the messaging AS."""

    def remember_own(self, call_id: str) -> None: ...

    @property
    def core_route(self) -> str: ...


class FileDelivery:
    """One deferred file pushed to its (now registered) recipient."""

    def __init__(self, host: DeliveryHost, ua: UserAgent, msrp: MsrpEndpoint,
                 files: FileStore, item: DeferredMessage, meta: dict[str, Any]) -> None:
        self.host, self.ua, self.msrp, self.files = host, ua, msrp, files
        self.item, self.meta = item, meta

    async def run(self) -> bool:
        """True once the receiver confirmed the whole file (its success REPORT)."""
        path = self.files.path(str(self.meta.get("file", "")))
        try:
            offer = sdp.parse(str(self.meta.get("sdp", "")).encode())
            local = NameAddr.parse(str(self.meta.get("from") or f"<{self.item.sender}>"))
        except (sdp.SdpError, HeaderError, ValueError) as exc:
            log.warning("deferred file %s unusable: %s", self.item.id, exc)
            return False
        if not path.is_file():
            log.warning("deferred file %s: %s is gone", self.item.id, path)
            return False
        far = self.msrp.create_session(setup=MsrpSetup.ACTIVE)
        try:
            return await self._push(offer, local, far, path)
        finally:
            await far.close()

    async def _push(self, offer: sdp.SessionDescription, local: NameAddr,
                    far: MsrpSession, path: Path) -> bool:
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
            await self._send(far, path, media.file_range)
            return True
        except (sdp.SdpError, TimeoutError, MsrpError, OSError) as exc:
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

    async def _send(self, far: MsrpSession, path: Path, file_range: sdp.FileRange | None) -> None:
        size = path.stat().st_size
        start = file_range.start if file_range is not None else 1
        stop = file_range.stop if file_range is not None and file_range.stop else size
        content_type = str(self.meta.get("type") or "application/octet-stream")
        with path.open("rb") as fh:
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
