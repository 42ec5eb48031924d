"""B2BUA anchoring of CPM sessions (chat, large message, file transfer) at the messaging AS.

The AS answers the inviting UE with its own MSRP session (``near``: our path,
``a=msrp-cema``, setup by offer/answer - passive when the UE offers active) and
opens the far leg towards the recipient with its own offer (``far``: the
UE's media line with our path, ``a=setup:active``, file attributes and
direction kept). MSRP messages are relayed both ways, each answered to its
sender with the receiver's answer (chat_relay.ChatRelay: a 200 means the
receiver has it); a BYE (or failure) on either leg ends both.

Far leg 480/408 (recipient offline, a subscriber) for a chat or large
message: store and forward - the UE's INVITE is answered anyway, every CPIM
message it sends becomes a deferred item for the recipient as it arrives
(delivered later as a pager MESSAGE; isComposing is dropped), and only the
caller's BYE ends the session, after every accepted message is stored. A
file transfer to an offline user is answered too: the file streams into the
shared store and becomes a deferred item (:mod:`imsbox.apps.deferred_files`)
before the caller's MSRP 200 / success REPORT; above the stored-file limit
the INVITE gets 413 with the reason.

File transfer (RFC 5547, seed 003): the INVITE may be multipart/mixed (CPIM
part with the imdn.Message-ID, SDP part); the far leg gets the same parts with
our SDP. A file-selector size above the host's ``max_file_size`` is refused
with 488 and a reason. The file is relayed as it streams in (``_FileRelay``:
2048-byte chunks on the far leg, nothing held back), and the caller's success
or failure REPORT is the far leg's outcome, so "confirmed" means the receiver
confirmed (after its hash check). When the caller's leg breaks, what arrived is
still passed on before the far leg ends: the receiver keeps a prefix to resume.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from .. import sdp
from ..content import CPIM, ISCOMPOSING
from ..msrp import (ByteRange, MsrpEndpoint, MsrpError, MsrpRequest, MsrpSession,
                    MsrpStatusError, ReceivedMessage)
from ..msrp import Setup as MsrpSetup
from ..rcs import cpm
from ..rcs.offer import msrp_media, offer_parts, with_sdp
from ..sip.headers import HeaderError, NameAddr, Params
from ..sip.identity import canonical_public_id
from ..sip.message import Message, Request, Response
from ..sip.ua.invite import InviteState, SessionError
from ..sip.ua.useragent import Call, Origin, UserAgent
from .chat_relay import ChatRelay

__all__ = ["Anchor", "AnchorHost", "AnchorState", "FileKeeper", "caller_identity",
           "cema_address", "far_offer", "near_answer"]

log = logging.getLogger(__name__)

OFFLINE = frozenset({408, 480})
COPIED_HEADERS = ("P-Asserted-Identity", "P-Asserted-Service", "P-Preferred-Service",
                  "Accept-Contact", cpm.CONVERSATION_ID, cpm.CONTRIBUTION_ID,
                  "In-Reply-To-Contribution-ID", "User-Agent", "Subject")
BIND_TIMEOUT = 10.0     # how long the UE may take to open its MSRP connection
BYE_TIMEOUT = 5.0
SETTLE_TIMEOUT = 2.0    # after the caller's BYE: how long its MSRP data may still come in
CHUNK = 2048            # far-leg chunk size for a relayed file (seed 003)
RELAY_HIGH = 1 << 20    # relay buffer above this: stop reading the near leg
RELAY_LOW = 256 << 10   # ... and read it again once the far leg drained below this


class FileKeeper(Protocol):
    """Where a file to an offline user is written (apps.deferred_files.StoredFileWriter):
    an MSRP Sink; after ``commit`` its ``file_id`` is kept with the deferred item."""

    file_id: int | None

    def write_at(self, offset: int, data: bytes) -> None: ...

    async def commit(self, selector: sdp.FileSelector | None) -> str | None: ...

    async def discard(self) -> None: ...


class AnchorHost(Protocol):
    """What an Anchor needs of the messaging AS."""

    def remaining_route(self, request: Request) -> list[str]: ...

    def remember_own(self, call_id: str) -> None: ...

    @property
    def max_file_size(self) -> int | None: ...

    async def defer(self, *, recipient: str, sender: str, content_type: str, body: bytes,
                    meta: dict[str, object], file_id: int | None = None) -> int: ...

    async def keeps_for(self, recipient: str) -> bool: ...

    def tell_stored(self, *, sender: str, recipient: str, body: bytes,
                    conversation_id: str) -> None: ...

    async def announce_stored(self, *, sender: str, recipient: str, body: bytes,
                              conversation_id: str) -> None: ...

    def stored_file_refusal(self, size: int | None) -> str | None: ...

    @property
    def relay_timeout(self) -> float: ...

    def file_keeper(self, max_size: int | None, session: MsrpSession) -> FileKeeper: ...

    async def record_history(self, conversation_id: str, key: str, sender: str,
                             recipient: str, content_type: str, body: bytes) -> None: ...


class AnchorState(enum.Enum):
    INVITING = "inviting"      # far leg being set up
    RELAYING = "relaying"      # both legs up, MSRP relayed
    STORING = "storing"        # recipient offline: messages become deferred items
    ENDED = "ended"


class Anchor:
    """One anchored session: the caller's Call, the far Call, two MSRP sessions."""

    def __init__(self, host: AnchorHost, ua: UserAgent, msrp: MsrpEndpoint,
                 caller: Call) -> None:
        self.host = host
        self.ua = ua
        self.msrp = msrp
        self.caller = caller
        self.callee: Call | None = None
        self.service = cpm.classify(caller.request) or cpm.CpmService.SESSION
        self.near: MsrpSession | None = None
        self.far: MsrpSession | None = None
        self.state = AnchorState.INVITING
        self.relay: _FileRelay | None = None
        self.chat_relays: list[ChatRelay] = []  # a chat's two directions (chat_relay.py)
        self._pumps: list[asyncio.Task[None]] = []
        self._storing: asyncio.Future[None] | None = None  # the last message being stored
        request = caller.request
        self.sender = caller_identity(request)
        self.recipient = canonical_public_id(str(request.uri))
        self.conversation = request.headers.get(cpm.CONVERSATION_ID) or ""

    # -- set-up -----------------------------------------------------------------------
    async def run(self) -> None:
        offer = _parse_offer(offer_parts(self.caller.request)[0] or b"")
        if offer is None:
            self.caller.reject(488)
            return
        refusal = self._file_refusal(offer)
        if refusal is not None:
            self.caller.reject(488, refusal)
            return
        # The AS's own SENDs on either leg give up before the sender's 30 s timer
        # (RFC 4975 7.1.1), so the sender gets the receiver's 408 from us.
        timeout = self.host.relay_timeout
        self.near = self.msrp.create_session(setup=MsrpSetup.PASSIVE,
                                             transaction_timeout=timeout)
        self.far = self.msrp.create_session(setup=MsrpSetup.ACTIVE,
                                            transaction_timeout=timeout)
        if self.service is cpm.CpmService.FILETRANSFER:
            # set before the caller may send: the file streams on, confirmed end to end
            self.near.defer_success_reports = True
            self.near.sink_factory = self._file_sink
            self.near.on_message = self._file_complete
        final = await self._invite_far(offer)
        if self.caller.terminated.done():     # CANCEL / failure on the caller's side
            await self.close()
            return
        if final is not None and 200 <= final.status < 300:
            await self._relay(offer)
        elif (final is None or final.status in OFFLINE) and \
                await self.host.keeps_for(self.recipient):
            if self.service is cpm.CpmService.FILETRANSFER:
                await self._store_file(offer)
            else:
                await self._store_and_forward(offer)
        else:  # the far side's status and reason (e.g. 488 file too large)
            self.caller.reject(*((final.status, final.reason) if final is not None
                                 else (480, None)))
            await self.close()

    def _file_refusal(self, offer: sdp.SessionDescription) -> str | None:
        """The 488 reason for a file over the configured limit, else None."""
        limit = self.host.max_file_size
        selector = _msrp_media(offer).file_selector  # a large message's: its size only
        if self.service is not cpm.CpmService.FILETRANSFER or limit is None or \
                selector is None or selector.size is None or selector.size <= limit:
            return None
        return f"Not Acceptable Here - file too large ({selector.size} > {limit} bytes)"

    async def _invite_far(self, offer: sdp.SessionDescription) -> Response | None:
        """Our own offer to the recipient, along the S-CSCF's odi Route."""
        assert self.far is not None
        request = self.caller.request
        headers = [(n, v) for n, v in request.headers if n.title() in _COPIED_TITLES]
        body, content_type = with_sdp(offer_parts(request)[1],
                                      bytes(far_offer(offer, self.far, self.msrp)))
        # This leg's own origin: the caller's identity along the S-CSCF's odi Route.
        origin = Origin(NameAddr(request.from_.uri, request.from_.display_name),
                        self.ua.contact, tuple(self.host.remaining_route(request)),
                        contact_params=feature_params(request, self.service))
        self.callee = await self.ua.invite(request.uri, body, headers, to=NameAddr(
            request.to.uri, request.to.display_name), content_type=content_type, origin=origin)
        self.host.remember_own(self.callee.call_id)
        self._progress()
        either: list[asyncio.Future[Any]] = [self.callee.final, self.caller.terminated]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not self.callee.final.done():
            await self._cancel_far()
            return None
        return self.callee.final.result()

    def _progress(self) -> None:
        """183 Session Progress to the caller while the far leg is being set up (seed
        000): the B2BUA tells it the session is under way (unreliable, no SDP)."""
        if self.caller.terminated.done():
            return
        try:
            self.caller.ring(183, reliable=False)
        except SessionError as exc:
            log.info("no 183 for %s: %s", self.caller.call_id, exc)

    async def _cancel_far(self) -> None:
        assert self.callee is not None
        try:
            await asyncio.wait_for(self.callee.cancel(), BYE_TIMEOUT)
        except (TimeoutError, SessionError):
            log.info("cancelling far leg %s failed", self.callee.call_id)

    async def _relay(self, offer: sdp.SessionDescription) -> None:
        assert self.near is not None and self.far is not None and self.callee is not None
        answer = _parse_offer(self.callee.remote_sdp or b"")
        if answer is None:
            self.caller.reject(488)
            await self.close()
            return
        media = _msrp_media(answer)
        self.far.set_remote_path(media.path or [])
        self.far.cema_address = cema_address(answer, media)
        self._start_chat_relays()  # before either leg can send
        try:
            await asyncio.wait_for(self.far.connect(), BIND_TIMEOUT)
        except (TimeoutError, MsrpError, OSError) as exc:
            log.info("far MSRP leg of %s failed: %s", self.caller.call_id, exc)
            self.caller.reject(500)
            await self.close()
            return
        self._accept_caller(offer, media.file_range)
        self.state = AnchorState.RELAYING
        await self._until_ended()

    def _start_chat_relays(self) -> None:
        """Messages relayed both ways, each answered end to end (chat_relay.py); a
        file's leg streams on instead (_FileRelay), its REPORT the end-to-end answer."""
        assert self.near is not None and self.far is not None
        timeout, name = self.host.relay_timeout, self.caller.call_id
        if self.service is not cpm.CpmService.FILETRANSFER:
            self.chat_relays.append(ChatRelay(
                self.near, self.far, timeout=timeout, name=name,
                relayed=lambda m: self._history(m, self.sender, self.recipient)))
        self.chat_relays.append(ChatRelay(
            self.far, self.near, timeout=timeout, name=name,
            relayed=lambda m: self._history(m, self.recipient, self.sender)))

    async def _store_and_forward(self, offer: sdp.SessionDescription) -> None:
        """Answer the caller and keep each of its messages until the caller ends the
        session (the far leg is gone: only the caller's BYE ends this one)."""
        assert self.near is not None
        log.info("%s offline: storing the messages of %s", self.recipient,
                 self.caller.call_id)
        # The 200 of each message's last chunk (and the success REPORT, if asked for)
        # goes out once it is stored: a caller that saw either has it kept.
        self.near.hold_final_responses = True
        self.near.defer_success_reports = True
        self.near.on_message = self._on_stored_message
        self._accept_caller(offer)
        self.state = AnchorState.STORING
        await asyncio.shield(self.caller.terminated)
        if self._storing is not None:  # every SEND that got its 200 is kept first
            await asyncio.shield(self._storing)
        await self.close()

    async def _store_file(self, offer: sdp.SessionDescription) -> None:
        """The recipient is offline: take the file ourselves and keep it (the 200 of
        its last chunk and its success REPORT only once it is in the store, item and all)."""
        assert self.near is not None
        selector = _msrp_media(offer).file_selector
        refusal = self.host.stored_file_refusal(selector.size if selector else None)
        if refusal is not None:
            self.caller.reject(413, refusal)
            await self.close()
            return
        log.info("%s offline: storing the file of %s", self.recipient, self.caller.call_id)
        keeper = self.host.file_keeper(selector.size if selector else None, self.near)
        self.near.hold_final_responses = True
        self.near.defer_success_reports = True
        self.near.sink_factory = lambda request: keeper
        self.near.on_message = lambda message: self._on_stored_file(message, keeper, offer)
        self._accept_caller(offer)
        self.state = AnchorState.STORING
        try:
            await asyncio.shield(self.caller.terminated)
            if self._storing is not None:
                await asyncio.shield(self._storing)
        finally:
            await keeper.discard()  # a file that did not come whole is not kept
            await self.close()

    def _on_stored_file(self, message: ReceivedMessage, keeper: FileKeeper,
                        offer: sdp.SessionDescription) -> None:
        if self._storing is None:  # one file per transfer (RFC 5547)
            self._storing = asyncio.ensure_future(self._keep_file(message, keeper, offer))

    async def _keep_file(self, message: ReceivedMessage, keeper: FileKeeper,
                         offer: sdp.SessionDescription) -> None:
        cpim_part = self._cpim_part()
        try:
            problem = await keeper.commit(_msrp_media(offer).file_selector)
            if problem is not None:
                self._report(message, 400, problem)
                return
            await self.host.defer(recipient=self.recipient, sender=self.sender,
                                  content_type=CPIM if cpim_part else "",
                                  body=cpim_part, meta=self._file_meta(message, keeper, offer),
                                  file_id=keeper.file_id)
        except Exception:
            log.exception("storing the file of %s failed", self.caller.call_id)
            self._report(message, 500, "not stored")
            return
        if cpim_part:  # if asked for: the "stored" IMDN, before the REPORT that ends it
            await self.host.announce_stored(sender=self.sender, recipient=self.recipient,
                                            body=cpim_part, conversation_id=self.conversation)
        self._report(message, 200, "OK")

    def _cpim_part(self) -> bytes:
        """The INVITE's CPIM part (imdn.Message-ID for the IMDNs), b"" without one."""
        multipart = offer_parts(self.caller.request)[1]
        part = multipart.find(CPIM) if multipart is not None else None
        return part.body if part is not None else b""

    def _file_meta(self, message: ReceivedMessage, keeper: FileKeeper,
                   offer: sdp.SessionDescription) -> dict[str, object]:
        """What the later file-transfer INVITE is built from (apps.deferred_files)."""
        request = self.caller.request
        return {"kind": "file", "file_id": keeper.file_id, "sdp": bytes(offer).decode(),
                "type": message.content_type or "application/octet-stream",
                "from": str(NameAddr(request.from_.uri, request.from_.display_name)),
                "contact": feature_params(request, self.service),
                "headers": [[n, v] for n, v in request.headers
                            if n.title() in _COPIED_TITLES]}

    def _on_stored_message(self, message: ReceivedMessage) -> None:
        """Called as the message arrives (before its 200 reaches the caller): chain
        its storing behind the previous one's, so the order is kept."""
        self._storing = asyncio.ensure_future(self._keep_after(self._storing, message))

    async def _keep_after(self, previous: asyncio.Future[None] | None,
                          message: ReceivedMessage) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        if (message.content_type or "").lower() == ISCOMPOSING:
            self._report(message, 200, "OK")  # a composing indication is worthless later
            return
        try:
            await self._keep(message)
        except Exception:
            log.exception("storing %s of %s failed", message.message_id, self.caller.call_id)
            self._report(message, 500, "not stored")
            return
        self._report(message, 200, "OK")
        if (message.content_type or "").lower() == CPIM:  # if asked for: "stored" IMDN
            self.host.tell_stored(sender=self.sender, recipient=self.recipient,
                                  body=message.body, conversation_id=self.conversation)

    def _report(self, message: ReceivedMessage, status: int, comment: str) -> None:
        """The held 200 (or error) of the message's last chunk and the REPORT the caller
        asked for (RFC 4975 7.1.2), sent once it is stored."""
        if self.near is None:
            return
        self.near.answer_final(message.message_id, status, None if status == 200 else comment)
        wanted = message.success_report if status == 200 else message.failure_report != "no"
        if wanted:
            self.near.send_report(message.message_id, status, comment,
                                  ByteRange(1, message.size, message.size))

    def _accept_caller(self, offer: sdp.SessionDescription,
                       file_range: sdp.FileRange | None = None) -> None:
        assert self.near is not None
        answer = near_answer(offer, self.near, self.msrp, file_range)
        setup = _msrp_media(answer).setup
        if setup is sdp.Setup.ACTIVE:  # the UE offered passive: we connect to it
            self.near.setup = MsrpSetup.ACTIVE
            self._pumps.append(asyncio.ensure_future(self._connect_near(offer)))
        self.near.set_remote_path(_msrp_media(offer).path or [])
        # The 200's Contact: the callee's feature tags when it answered, else the ICSI.
        final = self.callee.final.result() if self.callee and self.callee.final.done() else None
        self.caller.session.local_contact_params = \
            feature_params(final, self.service) if final is not None else \
            cpm.contact_params(self.service)
        self.caller.accept(bytes(answer))

    async def _connect_near(self, offer: sdp.SessionDescription) -> None:
        assert self.near is not None
        self.near.cema_address = cema_address(offer, _msrp_media(offer))
        await self.caller.established.wait()
        await self.near.connect()

    # -- relaying ---------------------------------------------------------------------
    async def _keep(self, message: ReceivedMessage) -> None:
        await self._history(message, self.sender, self.recipient)
        await self.host.defer(recipient=self.recipient, sender=self.sender,
                              content_type=message.content_type or CPIM, body=message.body,
                              meta={"kind": "message", "from": f"<{self.sender}>",
                                    "headers": self._pager_headers()})

    def _pager_headers(self) -> list[list[str]]:
        """The headers a stored chat message is later delivered with, as pager mode."""
        return [["P-Asserted-Identity", f"<{self.sender}>"],
                ["P-Asserted-Service", cpm.ICSI_MSG],
                ["Accept-Contact", cpm.accept_contact(cpm.CpmService.MSG)],
                [cpm.CONVERSATION_ID, self.conversation or cpm.new_conversation_id()],
                [cpm.CONTRIBUTION_ID, cpm.new_contribution_id()]]

    async def _history(self, message: ReceivedMessage, sender: str, recipient: str) -> None:
        kind = (message.content_type or "").lower()
        if not self.conversation or kind == ISCOMPOSING:
            return
        body = message.body
        key = (cpm.cpim_message_id(body) if kind == CPIM else None) or message.message_id
        await self.host.record_history(self.conversation, key, sender, recipient, kind, body)

    # -- file relay -------------------------------------------------------------------
    def _file_sink(self, request: MsrpRequest) -> _FileRelay:
        """The first chunk of the file: start streaming it to the far leg."""
        assert self.near is not None and self.far is not None
        self.relay = _FileRelay(request, self.near, self.far)
        return self.relay

    def _file_complete(self, message: ReceivedMessage) -> None:
        if self.relay is not None and self.relay.message_id == message.message_id:
            self.relay.finish()

    async def _settle_relay(self) -> None:
        """The caller hung up mid-file: pass on what it sent before ending the far leg."""
        relay, near = self.relay, self.near
        if relay is None or relay.task.done() or near is None:
            return
        conn = near.connection
        if conn is not None:  # its data may still be in flight behind the BYE
            await asyncio.wait([asyncio.ensure_future(asyncio.shield(conn.closed))],
                               timeout=SETTLE_TIMEOUT)
        relay.truncate()
        await asyncio.wait([relay.task], timeout=BYE_TIMEOUT)
        if self.far is not None:  # the receiver must have read it all before we close
            await self.far.wait_idle(SETTLE_TIMEOUT)

    # -- tear-down --------------------------------------------------------------------
    async def _until_ended(self) -> None:
        legs = [c.terminated for c in (self.caller, self.callee) if c is not None]
        await asyncio.wait(legs, return_when=asyncio.FIRST_COMPLETED)
        if self.caller.terminated.done():
            await self._settle_relay()
        await self.close()

    async def close(self) -> None:
        """End both legs and both MSRP sessions (once)."""
        if self.state is AnchorState.ENDED:
            return
        self.state = AnchorState.ENDED
        for chat_relay in self.chat_relays:  # what is still waiting: not confirmed
            await chat_relay.close()
        tasks = self._pumps + ([self.relay.task] if self.relay is not None else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for call in (self.caller, self.callee):
            if call is not None:
                await _hang_up(call)
        for session in (self.near, self.far):
            if session is not None:
                await session.close()
        log.info("anchored session %s ended", self.caller.call_id)


_COPIED_TITLES = frozenset(h.title() for h in COPIED_HEADERS)


async def _hang_up(call: Call) -> None:
    if call.terminated.done():
        return
    try:
        if call.state is InviteState.INCOMING or (
                call.state is InviteState.EARLY and call.session.role.value == "uas"):
            call.reject(480)
            return
        if call.state is InviteState.CALLING or call.state is InviteState.EARLY:
            await asyncio.wait_for(call.cancel(), BYE_TIMEOUT)
        else:
            await asyncio.wait_for(call.bye(), BYE_TIMEOUT)
    except (TimeoutError, SessionError) as exc:
        log.info("hanging up %s: %s", call.call_id, exc)


class _Truncated(Exception):
    """The caller's file message ended before its last byte."""


class _FileRelay:
    """A Sink on the near leg that streams the file to the far leg as it arrives
    (2048-byte chunks) and answers the caller with the far leg's outcome."""

    def __init__(self, request: MsrpRequest, near: MsrpSession, far: MsrpSession) -> None:
        self.message_id = request.message_id or ""
        self.content_type = request.content_type or "application/octet-stream"
        self.success_report = request.success_report
        self.failure_report = request.failure_report
        byte_range = request.byte_range
        self.total = byte_range.total if byte_range is not None else None
        self.near, self.far = near, far
        self._buffer = bytearray()
        self._head = 0                       # read offset into _buffer (no per-block copy)
        self._paused = False                 # near leg's reading paused (back-pressure)
        self._next = 0                       # next expected offset on the near leg
        self._complete = self._truncated = False
        self._data = asyncio.Event()
        self.task = asyncio.ensure_future(self._forward())

    @property
    def buffered(self) -> int:
        """Bytes received on the near leg, not yet handed to the far leg."""
        return len(self._buffer) - self._head

    # Sink API (called as the near leg's bytes arrive, in order on one TCP stream)
    def write_at(self, offset: int, data: bytes) -> None:
        if offset < self._next:          # a resent overlap: keep the new part only
            data = data[self._next - offset:]
        elif offset > self._next:        # a gap cannot be streamed on
            log.info("file relay %s: gap at %d, truncating", self.message_id, self._next)
            self.truncate()
            return
        self._buffer += data
        self._next += len(data)
        if self.total is not None and self._next >= self.total:
            self._complete = True
        if self.buffered >= RELAY_HIGH and not self._paused:
            self._set_paused(True)       # bounded buffer: the far leg sets the pace
        self._data.set()

    def _set_paused(self, paused: bool) -> None:
        conn = self.near.connection
        if conn is None:
            return
        self._paused = paused
        if paused:
            conn.pause_reading()
        else:
            conn.resume_reading()

    def finish(self) -> None:
        self._complete = True
        self._data.set()

    def truncate(self) -> None:
        self._truncated = True
        self._data.set()
        if self._paused:
            self._set_paused(False)

    def _take(self) -> bytes:
        """The next far-leg block; compacts the buffer now and then, not per block."""
        head = self._head
        block = bytes(self._buffer[head:head + CHUNK])
        self._head = head + len(block)
        if self._head >= 65536:
            del self._buffer[:self._head]
            self._head = 0
        if self._paused and self.buffered <= RELAY_LOW:
            self._set_paused(False)
        return block

    async def _blocks(self) -> AsyncIterator[bytes]:
        while True:
            while self.buffered >= CHUNK or (self._complete and self.buffered):
                yield self._take()
            if self._complete:
                return
            if self._truncated:
                raise _Truncated(self.message_id)
            if self._paused:
                self._set_paused(False)  # nothing left to send: read on
            self._data.clear()
            await self._data.wait()

    async def _forward(self) -> None:
        try:
            if self.far.connection is None:
                await self.far.wait_bound(BIND_TIMEOUT)
            await self.far.send_message(self.content_type, self._blocks(), size=self.total,
                                        success_report=True)
            status, comment = 200, "OK"
        except MsrpStatusError as exc:
            status, comment = exc.status, exc.comment
        except (TimeoutError, MsrpError, _Truncated) as exc:
            log.info("file relay %s ended after %d of %s bytes: %r", self.message_id,
                     self._next, self.total, exc)
            return
        finally:
            if self._paused:
                self._set_paused(False)  # never leave the near leg unread
        self._report(status, comment)

    def _report(self, status: int, comment: str) -> None:
        """The far leg's verdict as the caller's REPORT (RFC 4975 section 7.1.2)."""
        wanted = self.success_report if status == 200 else self.failure_report != "no"
        total = self.total or self._next
        if wanted:
            self.near.send_report(self.message_id, status, comment or "",
                                  ByteRange(1, total, total))


# -- SDP ---------------------------------------------------------------------------------

def _parse_offer(body: bytes) -> sdp.SessionDescription | None:
    """The SDP with a usable MSRP media line, else None."""
    try:
        description = sdp.parse(body)
        _msrp_media(description)
    except (sdp.SdpError, LookupError):
        return None
    return description


def _msrp_media(description: sdp.SessionDescription) -> sdp.MediaDescription:
    media = msrp_media(description)
    if media is None:
        raise LookupError("no MSRP media line")
    return media


def cema_address(description: sdp.SessionDescription,
                  media: sdp.MediaDescription) -> tuple[str, int] | None:
    """RFC 6714: with msrp-cema the connection goes to the c=/m= address."""
    connection = description.connection_for(media)
    if not media.msrp_cema or connection is None:
        return None
    return connection.address, media.port


def _addr_type(host: str) -> str:
    return "IP6" if ":" in host else "IP4"


def far_offer(offer: sdp.SessionDescription, far: MsrpSession,
              msrp: MsrpEndpoint) -> sdp.SessionDescription:
    """Our offer to the recipient: the caller's MSRP line with our path and address."""
    copy = sdp.parse(bytes(offer))
    media = _msrp_media(copy)
    version = str(int(time.time()))
    addr_type = _addr_type(msrp.host)
    copy.origin = sdp.Origin("imsbox-as", version, version, "IN", addr_type, msrp.host)
    copy.connection = sdp.Connection("IN", addr_type, msrp.host)
    media.connection = None
    media.port = msrp.port
    media.path = [str(far.local_uri)]
    media.setup = sdp.Setup.ACTIVE
    media.msrp_cema = True
    copy.media = [media]
    return copy


def near_answer(offer: sdp.SessionDescription, near: MsrpSession, msrp: MsrpEndpoint,
                file_range: sdp.FileRange | None = None) -> sdp.SessionDescription:
    """Our answer to the caller (passive for an active offer, msrp-cema, our path);
    ``file_range`` is the receiver's (a file transfer's answer carries it on)."""
    media = _msrp_media(offer)
    caps = sdp.LocalCapabilities(
        address=msrp.host, addr_type=_addr_type(msrp.host), origin_username="imsbox-as",
        msrp_path=[str(near.local_uri)], msrp_port=msrp.port,
        accept_types=tuple(media.accept_types or ("*",)),
        accept_wrapped_types=tuple(media.accept_wrapped_types or ()),
        setup=sdp.Setup.PASSIVE, msrp_cema=True, file_range=file_range)
    answered = sdp.answer(offer, caps)
    if file_range is not None:  # the receiver's range, even when it narrowed the offer's
        _msrp_media(answered).file_range = file_range
    return answered


def feature_params(message: Message, service: cpm.CpmService) -> str:
    """The Contact feature tags of one leg (its ICSI, ``+sip.instance``: seed 003)
    for the other leg's Contact, else the ICSI of ``service``."""
    try:
        contact = message.contact[0] if message.contact else None
    except HeaderError:
        contact = None
    tags = [(n, v) for n, v in contact.params if n.startswith("+")] if contact else []
    return str(Params(tags)) if tags else cpm.contact_params(service)


def caller_identity(request: Request) -> str:
    """The served (calling) user: P-Asserted-Identity, else From."""
    try:
        values = request.headers.values("P-Asserted-Identity")
        uri = NameAddr.parse(values[0]).uri if values else request.from_.uri
        return canonical_public_id(str(uri))
    except (HeaderError, ValueError):
        return str(request.from_.uri)



