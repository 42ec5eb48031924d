"""Standalone messages (OMA CPM, seed 001): pager mode up to 1300 bytes, large
message mode (an MSRP session carrying one message) above; incoming MESSAGEs.

A pager message the network keeps for an offline recipient is answered 202:
``Notifications.deferred`` says so (its status is SENT; the delivery
notification follows once the recipient registered and took it).

A UE registering the cpm.deferred ICSI gets nothing pushed: it retrieves (seed
003, :meth:`Messaging.retrieve_deferred`) with an INVITE to the
CPMDeferredMsgMgmtURI; the AS sends each stored CPIM item as one MSRP SEND and BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..content import (
    CPIM,
    IMDN,
    ISCOMPOSING,
    ContentError,
    NotificationRequest,
    parse_cpim,
    parse_iscomposing,
)
from ..msrp import MsrpError, ReceivedMessage
from ..rcs.cpm import (
    CONVERSATION_ID,
    DEFERRED_EVENT,
    CpmService,
    deferred_messages_uri,
    fits_pager,
)
from ..sdp import Attribute, Direction, FileSelector, SessionDescription
from ..sip.endpoint import ServerContext
from ..sip.message import Request, Response, new_tag
from ..sip.ua.useragent import Call
from .core import UeCore, identity, new_id
from .events import Composing, MessageReceived, MessageStatus, SendError
from .notify import Notifications

__all__ = ["CHAT_WRAPPED", "TEXT", "Messaging"]

log = logging.getLogger(__name__)

TEXT = "text/plain;charset=UTF-8"
CHAT_WRAPPED = ("text/plain", IMDN)   # what a CPIM wrapper may carry
LARGE_WAIT = 30.0   # seconds for the one message of an incoming large message session
RETRIEVAL_WAIT = 60.0   # seconds for the AS to send every stored item and BYE


class Messaging:
    """Sends and receives standalone messages for one UE."""

    def __init__(self, core: UeCore, notifications: Notifications) -> None:
        self.core, self.notifications = core, notifications

    async def send(self, target: str, text: str, display: bool = False) -> str:
        """A standalone message asking for a delivery (and with ``display`` a display)
        notification. Returns the imdn.Message-ID; SendError when refused."""
        message_id = new_id()
        notify = [NotificationRequest.POSITIVE_DELIVERY, NotificationRequest.NEGATIVE_DELIVERY]
        if display:
            notify.append(NotificationRequest.DISPLAY)
        cpim = self.core.cpim(target, TEXT, text.encode(), message_id, notify)
        if not fits_pager(cpim):  # no 202 in large message mode: the AS's "stored" IMDN
            notify.append(NotificationRequest.PROCESSING)
            cpim = self.core.cpim(target, TEXT, text.encode(), message_id, notify)
        self.notifications.sending(message_id, target)
        try:
            if fits_pager(cpim):
                response = await self.core.pager(target, cpim, CpmService.MSG)
                if response.status == 202:
                    self.notifications.defer(message_id)
            else:
                await self._large_message(target, cpim)
        except SendError:
            self.notifications.track(message_id, MessageStatus.FAILED)
            raise
        self.notifications.track(message_id, MessageStatus.SENT)
        return message_id

    async def _large_message(self, target: str, cpim: bytes) -> None:
        """Large message mode: INVITE cpm.largemsg, sendonly MSRP offering the CPIM's
        size (seed 003: accept-wrapped-types:text/plain, file-selector:size), one SEND,
        BYE."""
        size = Attribute("file-selector", str(FileSelector(size=len(cpim))))
        call, session = await self.core.outgoing(target, Direction.SENDONLY, ("message/cpim",),
                                                 ("text/plain",), CpmService.LARGEMSG,
                                                 extra=[size])
        try:  # the 200 means taken: relayed, or for an offline peer stored first
            await session.send_message(CPIM, cpim)
        except (TimeoutError, MsrpError, OSError) as exc:
            raise SendError(f"large message to {target}: {exc}") from None
        finally:
            await self.core.hang_up(call, session)

    async def retrieve_deferred(self, domain: str) -> list[MessageReceived]:
        """Seed 003: INVITE the CPMDeferredMsgMgmtURI (``Event: deferred-messages``,
        a=recvonly), take each stored item (one CPIM per MSRP SEND, our 200 lets the AS
        remove it) until the AS's BYE. The messages, oldest first; each was also
        emitted as a ``MessageReceived`` (mode "deferred"). SendError if refused."""
        psi = deferred_messages_uri(domain)
        received: list[MessageReceived] = []

        def on_message(message: ReceivedMessage) -> None:
            try:
                cpim = parse_cpim(message.body)
            except (ContentError, ValueError) as exc:
                log.info("undecodable deferred item: %s", exc)
                return
            sender = cpim.sender.uri if cpim.sender is not None else psi
            event = self.notifications.deliver(cpim, sender, None, None, "deferred")
            if isinstance(event, MessageReceived):
                received.append(event)

        call, session = await self.core.outgoing(
            psi, Direction.RECVONLY, ("message/cpim",), CHAT_WRAPPED, CpmService.DEFERRED,
            headers=[("Event", DEFERRED_EVENT)], on_message=on_message)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(call.terminated), RETRIEVAL_WAIT)
        await self.core.hang_up(call, session)
        return received

    # -- incoming ------------------------------------------------------------------------
    def on_request(self, ctx: ServerContext) -> None:
        """Requests outside INVITE: MESSAGE is taken, the rest gets 405."""
        request = ctx.request
        if request.method != "MESSAGE":
            if ctx.txn is not None:
                response = Response.for_request(request, 405, to_tag=new_tag())
                response.add_header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE")
                ctx.respond(response)
            return
        ctx.respond(Response.for_request(request, 200, to_tag=new_tag()))
        try:
            self._on_message(request)
        except (ContentError, ValueError) as exc:
            log.info("undecodable MESSAGE from %s: %s", identity(request), exc)

    def _on_message(self, request: Request) -> None:
        peer, aor = identity(request), self.core.aor
        media = request.content_type
        kind = f"{media.type}/{media.subtype}".lower() if media else "text/plain"
        conversation = request.header(CONVERSATION_ID)
        if kind == CPIM:
            self.notifications.deliver(parse_cpim(request.body), peer, None, conversation,
                                       "pager")
        elif kind == ISCOMPOSING:
            state = parse_iscomposing(request.body).state.value
            self.core.emit(Composing(peer, aor, state))
        else:
            self.core.emit(MessageReceived(peer, aor, request.body.decode("utf-8", "replace"),
                                           None, kind, "pager", conversation))

    async def incoming_large(self, call: Call, peer: str, offer: SessionDescription) -> None:
        """A large message session: take its one message, wait for the BYE."""
        core = self.core
        session = core.msrp.create_session()
        received: asyncio.Queue[ReceivedMessage] = asyncio.Queue()
        session.on_message = received.put_nowait
        answer_sdp = core.answer(session, offer, ("message/cpim",), CHAT_WRAPPED,
                                 Direction.RECVONLY)
        if not await core.accept(call, session, answer_sdp, CpmService.LARGEMSG):
            return
        conversation = call.request.header(CONVERSATION_ID)
        try:
            message = await asyncio.wait_for(received.get(), LARGE_WAIT)
            self.notifications.deliver(parse_cpim(message.body), peer, None, conversation,
                                       "large")
        except (TimeoutError, ContentError) as exc:
            log.warning("large message from %s lost: %s", peer, exc)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(call.terminated), 10)
        await core.hang_up(call, session)
