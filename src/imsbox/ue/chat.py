"""1-to-1 chat sessions (OMA CPM, seed 000): CPIM text with IMDN requests over
MSRP, isComposing (RFC 3994) both ways."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..content import (
    CPIM,
    ISCOMPOSING,
    ContentError,
    MessageComposer,
    NotificationRequest,
    StatusMessageReceiver,
    parse_cpim,
    parse_iscomposing,
)
from ..content.imdn import is_notification
from ..msrp import MsrpError, MsrpSession, MsrpStatusError, ReceivedMessage, SessionClosed
from ..rcs.cpm import CONVERSATION_ID, CpmService, new_conversation_id
from ..sdp import Direction, SessionDescription
from ..sip.ua.useragent import Call
from .core import UeCore, new_id
from .events import ChatEnded, ChatStarted, Composing, MessageStatus, SendError
from .messaging import CHAT_WRAPPED, TEXT
from .notify import Notifications

__all__ = ["CHAT_TYPES", "Chat", "ChatService"]

log = logging.getLogger(__name__)

CHAT_TYPES = ("message/cpim", ISCOMPOSING)
LOST_GRACE = 2.0  # seconds a broken MSRP connection waits for the far side's BYE


class ChatService:
    """Opens and answers the chats of one UE; ``chats`` are the open ones by id."""

    def __init__(self, core: UeCore, notifications: Notifications,
                 accept_chats: bool = True) -> None:
        self.core, self.notifications = core, notifications
        self.accept_chats = accept_chats
        self.chats: dict[str, Chat] = {}

    async def open(self, target: str) -> Chat:
        """INVITE cpm.session with an MSRP offer; SendError if refused."""
        conversation = new_conversation_id()
        call, session = await self.core.outgoing(target, Direction.SENDRECV, CHAT_TYPES,
                                                 CHAT_WRAPPED, CpmService.SESSION,
                                                 conversation_id=conversation)
        chat = Chat(self, call, session, target, conversation, False)
        chat.opened()
        return chat

    async def incoming(self, call: Call, peer: str, offer: SessionDescription) -> None:
        if not self.accept_chats:
            call.reject(486)
            return
        session = self.core.msrp.create_session()
        chat = Chat(self, call, session, peer, call.request.header(CONVERSATION_ID), True)
        answer_sdp = self.core.answer(session, offer, CHAT_TYPES, CHAT_WRAPPED,
                                      Direction.SENDRECV)
        if await self.core.accept(call, session, answer_sdp, CpmService.SESSION):
            chat.opened()

    async def close(self) -> None:
        for chat in list(self.chats.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(chat.close(), 2)


def _why(exc: Exception) -> str:
    """What became of a SEND without a 200, for the application."""
    if isinstance(exc, MsrpStatusError):
        return f"{exc.status} {exc.comment}".rstrip()
    if isinstance(exc, SessionClosed):
        return f"MSRP connection lost ({exc})"
    return repr(exc)


class Chat:
    """A 1-to-1 chat: ``send`` lines, ``composing`` while typing, ``close`` to end."""

    def __init__(self, service: ChatService, call: Call, session: MsrpSession, peer: str,
                 conversation_id: str | None, incoming: bool) -> None:
        self.service = service
        self.call = call
        self.session = session
        self.peer = peer
        self.conversation_id = conversation_id
        self.incoming = incoming
        self.closed = asyncio.Event()
        self.end_reason = ""
        self._composer = MessageComposer(refresh=60)
        self._receiver = StatusMessageReceiver()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def id(self) -> str:
        return self.call.call_id

    @property
    def _core(self) -> UeCore:
        return self.service.core

    def opened(self) -> None:
        """The MSRP session is up: take messages, watch for the end."""
        core = self._core
        self.service.chats[self.id] = self
        self.session.on_message = self._on_msrp
        self._started()
        core.spawn(self._watch())

    def _started(self) -> None:
        """Report the session (a group chat reports its own events)."""
        core = self._core
        direction = "incoming" if self.incoming else "outgoing"
        sender, recipient = (self.peer, core.aor) if self.incoming else (core.aor, self.peer)
        core.emit(ChatStarted(sender, recipient, self.id, self.conversation_id, direction))

    async def send(self, text: str, display: bool = True,
                   message_id: str | None = None) -> str:
        """A chat message asking for delivery (and display) notification; its Message-ID
        once its SEND got the MSRP 200. Through the messaging AS that 200 is the
        receiver's (the AS answers only once the receiving UE answered it; for an
        offline peer, once it is stored), so SENT means the far end has it; DELIVERED
        comes with the IMDN. No 200 (an error, 408, or the MSRP connection lost
        before it came): SendError with ``message_id``, the status is FAILED - the
        message may not have arrived: send it again (unless its delivery IMDN came
        first: then it counts as delivered), with ``message_id`` the failed one's, so
        a receiver that had it drops the second copy (RFC 5438 6.3)."""
        if self.closed.is_set():
            raise SendError(f"the chat has ended ({self.end_reason})")
        notifications = self.service.notifications
        message_id = message_id or new_id()
        notify = [NotificationRequest.POSITIVE_DELIVERY]
        if display:
            notify.append(NotificationRequest.DISPLAY)
        cpim = self._core.cpim(self.peer, TEXT, text.encode(), message_id, notify)
        notifications.sending(message_id, self.peer, self.id)
        self._composer.content_sent(self._now())
        try:
            await self.session.send_message(CPIM, cpim)
        except (MsrpError, OSError) as exc:
            status = notifications.status(message_id)
            if status in (MessageStatus.DELIVERED, MessageStatus.DISPLAYED):
                return message_id  # its delivery IMDN came before the 200 could
            notifications.track(message_id, MessageStatus.FAILED)
            raise SendError(f"chat message not confirmed (no MSRP 200): {_why(exc)}",
                            message_id=message_id) from None
        notifications.track(message_id, MessageStatus.SENT)
        return message_id

    async def composing(self) -> None:
        """The user is typing: an isComposing 'active' when the state changes (RFC 3994)."""
        await self._send_status(self._composer.composing(self._now()))

    async def _send_status(self, actions: list[Any]) -> None:
        for action in actions:
            with contextlib.suppress(MsrpError, OSError):
                await self.session.send_message(*self._status_message(action.document.to_xml()))
        self._arm()

    def _status_message(self, document: bytes) -> tuple[str, bytes]:
        """An isComposing document as sent: its content type and body."""
        return ISCOMPOSING, document

    async def close(self) -> None:
        """BYE and close the MSRP session."""
        if not self.closed.is_set():
            await self._core.hang_up(self.call, self.session)
            self._ended("local BYE")

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _watch(self) -> None:
        """End with the SIP session; or when the MSRP connection breaks (the AS that
        relays it was killed): a BYE the far side may still send gets a moment,
        then we send ours, so no dialog is left hanging."""
        terminated = asyncio.ensure_future(asyncio.shield(self.call.terminated))
        lost: asyncio.Future[Any] = asyncio.ensure_future(self.session.lost.wait())
        await asyncio.wait([terminated, lost], return_when=asyncio.FIRST_COMPLETED)
        if not terminated.done():
            await asyncio.wait([terminated], timeout=LOST_GRACE)
        if terminated.done():
            lost.cancel()
            await self.session.close()
            self._ended(terminated.result().reason)
            return
        terminated.cancel()
        await self._core.hang_up(self.call, self.session)
        self._ended("MSRP connection lost")

    def _ended(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.end_reason = reason
        self.closed.set()
        if self._timer is not None:
            self._timer.cancel()
        self.service.chats.pop(self.id, None)
        self._ended_event(reason)

    def _ended_event(self, reason: str) -> None:
        self._core.emit(ChatEnded(self.peer, self._core.aor, self.id, reason))

    def _on_msrp(self, message: ReceivedMessage) -> None:
        kind = (message.content_type or "").split(";", 1)[0].strip().lower()
        try:
            if kind == ISCOMPOSING:
                doc = parse_iscomposing(message.body)
                self._indicate(self._receiver.status_received(doc, self._now()))
            elif kind == CPIM:
                cpim = parse_cpim(message.body)
                if not is_notification(cpim):
                    self._indicate(self._receiver.content_received(self._now()))
                self.service.notifications.deliver(cpim, self.peer, self,
                                                   self.conversation_id, "chat")
        except (ContentError, ValueError) as exc:
            log.info("chat %s: undecodable %s: %s", self.id, kind, exc)

    def _indicate(self, indications: list[Any]) -> None:
        for indication in indications:
            self._core.emit(Composing(self.peer, self._core.aor, indication.state.value,
                                      self.id))
        self._arm()

    def _arm(self) -> None:
        """One timer for both isComposing state machines (refresh, idle, expiry)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadlines = [t for t in (self._composer.next_deadline(), self._receiver.next_deadline())
                     if t is not None]
        if deadlines and not self.closed.is_set():
            deadline = min(deadlines)
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer, deadline)

    def _on_timer(self, deadline: float) -> None:
        self._timer = None
        now = max(self._now(), deadline)  # call_at may run a hair early
        self._indicate(self._receiver.on_timer(now))
        actions = self._composer.on_timer(now)
        if actions:
            self._core.spawn(self._send_status(actions))
