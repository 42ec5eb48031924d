"""Notifications (RFC 5438 IMDN) both ways and the status of what this UE sent.

Outgoing: every message this UE sends is tracked here by its imdn.Message-ID;
the IMDNs that come back move its :class:`MessageStatus` on and become
:class:`Notification` events. An IMDN for a message this client did not send
(a late one for an earlier process of the same user, delivered from the
network's deferred store) is only reported with ``report_all`` - what
``imsbox ue listen`` sets; ``send``, ``chat`` and ``send-file`` report their own.

Incoming: a received message is remembered so its delivery notification goes
out at once (when asked for) and its display notification on ``mark_displayed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..content import (
    CPIM,
    IMDN,
    ContentError,
    CpimAddress,
    CpimMessage,
    DispositionType,
    Imdn,
    ImdnStatus,
    NotificationRequest,
    imdn_reply,
    parse_imdn,
    requested_notifications,
)
from ..content.imdn import IMDN_NS, is_notification
from ..msrp import MsrpError
from ..rcs.cpm import CpmService
from .core import UeCore, new_id
from .events import (
    ChatMessage,
    MessageReceived,
    MessageStatus,
    Notification,
    RcsEvent,
    SendError,
)

if TYPE_CHECKING:
    from .chat import Chat

__all__ = ["Notifications", "Received"]

log = logging.getLogger(__name__)

SEEN_MAX = 4096  # standalone Message-IDs remembered for duplicate detection


@dataclass(slots=True)
class _Tracked:
    status: MessageStatus
    peer: str
    chat_id: str | None = None
    deferred: bool = False  # the network keeps it for an offline recipient (202)


@dataclass(slots=True)
class Received:
    """An incoming message kept for its display notification."""

    cpim: CpimMessage
    peer: str
    chat: Chat | None
    conversation_id: str | None
    displayed: bool = False
    delivery: asyncio.Task[bool] | None = None  # the display IMDN must not overtake it
    service: CpmService = CpmService.MSG  # of the pager IMDN (a file's: cpm.filetransfer)


class Notifications:
    """Statuses of sent messages and the IMDNs of received ones, for one UE."""

    def __init__(self, core: UeCore, report_all: bool = False) -> None:
        self.core = core
        self.report_all = report_all
        self._tracked: dict[str, _Tracked] = {}
        self._received: dict[str, Received] = {}
        self._changed = asyncio.Condition()
        # (sender, imdn.Message-ID) of the standalone messages taken lately: the
        # network may hand one over twice (a node failed over after passing it on)
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.duplicates = 0   # standalone messages dropped as seen before

    # -- what we sent ------------------------------------------------------------------
    def sending(self, message_id: str, peer: str, chat_id: str | None = None) -> None:
        """A message of ours is on its way: track it (its IMDNs are ours to report)."""
        self._tracked[message_id] = _Tracked(MessageStatus.SENDING, peer, chat_id)

    def defer(self, message_id: str) -> None:
        """The network keeps the message until the recipient registers (a 202, or a
        processing IMDN ``stored`` for a large message)."""
        tracked = self._tracked.get(message_id)
        if tracked is not None and not tracked.deferred:
            tracked.deferred = True
            self.core.spawn(self._notify_changed())

    def deferred(self, message_id: str) -> bool:
        tracked = self._tracked.get(message_id)
        return tracked is not None and tracked.deferred

    def status(self, message_id: str) -> MessageStatus | None:
        tracked = self._tracked.get(message_id)
        return tracked.status if tracked else None

    async def wait_status(self, message_id: str, wanted: MessageStatus,
                          timeout: float | None, or_deferred: bool = False) -> MessageStatus:
        """Until the message reached ``wanted`` (or failed; with ``or_deferred`` also
        once the network said it keeps it for later)."""
        def reached() -> bool:
            status = self.status(message_id)
            return status is not None and (status.rank >= wanted.rank
                                           or status is MessageStatus.FAILED
                                           or (or_deferred and self.deferred(message_id)))

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(reached)
        await asyncio.wait_for(wait(), timeout)
        return self.status(message_id)  # type: ignore[return-value]

    def track(self, message_id: str, status: MessageStatus) -> None:
        """Move a message on (never back; failed is final)."""
        tracked = self._tracked.get(message_id)
        if tracked is None or tracked.status is MessageStatus.FAILED:
            return
        if status is MessageStatus.FAILED or status.rank > tracked.status.rank:
            tracked.status = status
            self.core.spawn(self._notify_changed())

    async def _notify_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- what we received ----------------------------------------------------------------
    def deliver(self, cpim: CpimMessage, peer: str, chat: Chat | None,
                conversation_id: str | None, mode: str) -> RcsEvent | None:
        """An incoming CPIM: an IMDN updates a status, a message becomes an event
        (returned) and gets its delivery notification when asked for."""
        if is_notification(cpim) or (cpim.content_type or "").lower().startswith(IMDN):
            self._on_imdn(cpim, peer, chat)
            return None
        core = self.core
        message_id = cpim.get("Message-ID", IMDN_NS)
        text = cpim.body.decode("utf-8", "replace")
        event: RcsEvent
        # a pager message or a 1-to-1 chat's (sent again after a SEND without a 200)
        if (chat is None or mode == "chat") and message_id and \
                self._seen_before(peer, message_id):
            log.info("message %s from %s taken before: dropped", message_id, peer)
            return None
        if chat is not None:
            event = ChatMessage(peer, core.aor, text, message_id, chat.id)
        else:
            event = MessageReceived(peer, core.aor, text, message_id, cpim.content_type or "",
                                    mode, conversation_id)
        core.emit(event)
        self.acknowledge(cpim, peer, chat, conversation_id)
        return event

    def _seen_before(self, peer: str, message_id: str) -> bool:
        """RFC 5438 6.3: imdn.Message-ID names one message; a second copy is dropped."""
        key = (peer, message_id)
        if key in self._seen:
            self.duplicates += 1
            return True
        self._seen[key] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        return False

    def acknowledge(self, cpim: CpimMessage, peer: str, chat: Chat | None,
                    conversation_id: str | None) -> None:
        """A message received (and reported): kept for its display notification, its
        delivery notification sent now when the sender asked for one."""
        received = self.remember(cpim, peer, chat, conversation_id)
        if received is not None and NotificationRequest.POSITIVE_DELIVERY in \
                requested_notifications(cpim):
            received.delivery = self.core.spawn(self.send_imdn(
                received, DispositionType.DELIVERY, ImdnStatus.DELIVERED))

    async def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the delivery notifications still going out."""
        pending = [r.delivery for r in self._received.values()
                   if r.delivery is not None and not r.delivery.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    def remember(self, cpim: CpimMessage, peer: str, chat: Chat | None,
                 conversation_id: str | None,
                 service: CpmService = CpmService.MSG) -> Received | None:
        message_id = cpim.get("Message-ID", IMDN_NS)
        if not message_id:
            return None
        sender = cpim.sender
        reply_to = peer if sender is None or "anonymous.invalid" in sender.uri else sender.uri
        received = Received(cpim, reply_to, chat, conversation_id, service=service)
        self._received[message_id] = received
        return received

    async def mark_displayed(self, message_id: str) -> bool:
        """Send the display notification for a received message, if its sender asked."""
        received = self._received.get(message_id)
        if received is None or received.displayed:
            return False
        received.displayed = True
        if received.delivery is not None:
            await asyncio.shield(received.delivery)
        return await self.send_imdn(received, DispositionType.DISPLAY, ImdnStatus.DISPLAYED)

    async def send_imdn(self, received: Received, disposition: DispositionType,
                        status: ImdnStatus) -> bool:
        """The IMDN in the chat it came in, else as a pager message; False if not sent."""
        core = self.core
        reply = imdn_reply(received.cpim, disposition, status, message_id=new_id(),
                           sender=CpimAddress(core.aor), date_time=datetime.now(UTC))
        if reply is None:
            return False
        body = reply.to_bytes()
        chat = received.chat
        try:
            if chat is not None and not chat.closed.is_set():
                await chat.session.send_message(CPIM, body)
            else:
                await core.pager(received.peer, body, received.service,
                                 received.conversation_id)
        except (SendError, MsrpError, OSError) as exc:
            log.warning("IMDN to %s not sent: %s", received.peer, exc)
            return False
        return True

    def _on_imdn(self, cpim: CpimMessage, peer: str, chat: Chat | None) -> None:
        try:
            imdn = parse_imdn(cpim.body)
        except ContentError as exc:
            log.info("bad IMDN from %s: %s", peer, exc)
            return
        if imdn.message_id not in self._tracked and not self.report_all:
            log.info("%s notification for %s from %s: not sent by this client, not reported",
                     imdn.status.value, imdn.message_id, peer)
            return
        if imdn.status is ImdnStatus.STORED:
            self.defer(imdn.message_id)
        self.track(imdn.message_id, _imdn_status(imdn))
        kind = {DispositionType.DISPLAY: "display", DispositionType.PROCESSING: "processing"
                }.get(imdn.disposition, "delivery")
        sender = cpim.sender.uri if cpim.sender and "anonymous" not in cpim.sender.uri else peer
        self.core.emit(Notification(sender, self.core.aor, imdn.message_id, kind,
                                    imdn.status.value, chat.id if chat else None))


def _imdn_status(imdn: Imdn) -> MessageStatus:
    if imdn.status is ImdnStatus.DELIVERED:
        return MessageStatus.DELIVERED
    if imdn.status is ImdnStatus.DISPLAYED:
        return MessageStatus.DISPLAYED
    if imdn.status in (ImdnStatus.FAILED, ImdnStatus.FORBIDDEN, ImdnStatus.ERROR):
        return MessageStatus.FAILED
    return MessageStatus.SENT
