"""End-to-end MSRP acknowledgement through the messaging AS's chat anchor.

The AS is a B2BUA with an MSRP session on each leg, so by RFC 4975 it is an
endpoint on each and could answer every SEND itself, hop by hop. Then a 200
would only mean "the AS has it", and a message the AS took but had not passed
on when it died would be lost without the sender knowing. ``ChatRelay``
answers the transaction of a message's last chunk (and sends the success
REPORT, if one was asked for) only once the receiving leg answered the
relayed SEND (RFC 4975 7.1.1, 7.2): a 200 the sender sees means the receiver
has the message. A receiver's error status goes back as that status; no
answer within ``timeout`` goes back as 408, a receiving leg that is gone as
481. The sender's Failure-Report is kept: ``no`` gets no response and is
relayed with ``no``; ``partial`` gets only an error (RFC 4975 7.1.4).

Chunks before a message's last one get the AS's own 200 as they arrive (the
AS has them; the message is relayed once it is whole, then its last chunk's
answer stands for the whole message).

Memory is bounded: messages waiting for their relay's answer are kept in
order (one in flight per direction, so the order is kept); above
``PENDING_HIGH`` waiting the sending leg's connection is not read until the
queue is down to ``PENDING_LOW`` (TCP then slows the sender); each waits at
most ``timeout`` for the receiver.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from ..msrp import (ByteRange, MsrpError, MsrpSession, MsrpStatusError, ReceivedMessage,
                    SessionClosed)

__all__ = ["ChatRelay", "PENDING_HIGH", "PENDING_LOW"]

log = logging.getLogger(__name__)

PENDING_HIGH = 64   # messages waiting for the receiver: stop reading the sender's leg
PENDING_LOW = 16    # ... read it again once down to this
BIND_TIMEOUT = 10.0  # how long the receiving leg may take to be bound (its UE connects)

Relayed = Callable[[ReceivedMessage], Awaitable[None]]


class ChatRelay:
    """One direction of an anchored chat: ``src``'s messages go to ``dst``, and
    ``src``'s sender gets ``dst``'s answer; ``relayed`` runs for each one that
    arrived (history). Set up before ``src`` can receive anything."""

    def __init__(self, src: MsrpSession, dst: MsrpSession, *, timeout: float,
                 relayed: Relayed | None = None, name: str = "") -> None:
        self.src, self.dst = src, dst
        self.timeout = timeout
        self.name = name
        self._relayed = relayed
        self._waiting: deque[ReceivedMessage] = deque()
        self._ready = asyncio.Event()
        src.hold_final_responses = True    # the last chunk's 200: see _answer
        src.defer_success_reports = True   # the success REPORT: the receiver's
        src.on_message = self._take
        self.task = asyncio.ensure_future(self._run())

    @property
    def waiting(self) -> int:
        """Messages taken from the sender whose receiver's answer is not back yet."""
        return len(self._waiting)

    def _take(self, message: ReceivedMessage) -> None:
        self._waiting.append(message)
        self._ready.set()
        if len(self._waiting) >= PENDING_HIGH:
            self._read_sender(False)

    def _read_sender(self, on: bool) -> None:
        conn = self.src.connection
        if conn is None:
            return
        if on:
            conn.resume_reading()
        else:
            conn.pause_reading()

    async def _run(self) -> None:
        while True:
            while not self._waiting:
                self._ready.clear()
                await self._ready.wait()
            message = self._waiting[0]
            if self.src.connection is None:
                # The sender's leg broke before we passed it on: its sender sees it
                # failed (no 200), so it must not arrive (it would twice, sent again).
                log.info("%s: %s not relayed, its sender's leg is gone", self.name,
                         message.message_id)
                self._waiting.popleft()
                continue
            status, comment = await self._relay(message)
            self._waiting.popleft()
            self._answer(message, status, comment)
            if len(self._waiting) == PENDING_LOW:
                self._read_sender(True)
            if status == 200 and self._relayed is not None:
                await self._after(message)

    async def _after(self, message: ReceivedMessage) -> None:
        """The ``relayed`` hook (history); its failure must not stop the relay."""
        assert self._relayed is not None
        try:
            await asyncio.shield(self._relayed(message))  # kept even if we end now
        except Exception:
            log.exception("%s: after relaying %s", self.name, message.message_id)

    async def _relay(self, message: ReceivedMessage) -> tuple[int, str]:
        """The receiving leg's answer to the relayed message: (status, comment)."""
        dst = self.dst
        gone = 481, "Session Does Not Exist - the receiver's leg is gone"
        if dst.connection is None:
            try:
                await dst.wait_bound(BIND_TIMEOUT)
            except TimeoutError:
                return gone
        try:
            # asyncio.timeout, not wait_for: no task in between, so the answer goes
            # out in the same loop step as the receiver's 200 was read, before a
            # message the receiver sent right after it (seed 001's ladder)
            async with asyncio.timeout(self.timeout):
                await dst.send_message(
                    message.content_type or "text/plain", message.body,
                    success_report=message.success_report,
                    failure_report="no" if message.failure_report == "no" else "yes",
                    message_id=message.message_id)
        except MsrpStatusError as exc:  # the receiver's error, or its 408 timer
            status, comment = exc.status, exc.comment
        except TimeoutError:
            status, comment = 408, "Request Timeout - no answer from the receiver"
        except (SessionClosed, MsrpError, OSError) as exc:
            log.info("relaying %s in %s: %r", message.message_id, self.name, exc)
            status, comment = gone
        else:
            return 200, "OK"
        log.info("relaying %s in %s: %d %s", message.message_id, self.name, status, comment)
        return status, comment

    def _answer(self, message: ReceivedMessage, status: int, comment: str) -> None:
        """The held response of the message's last chunk (its Failure-Report decides
        whether it goes out) and, on success, the success REPORT it asked for."""
        self.src.answer_final(message.message_id, status, None if status == 200 else comment)
        if status == 200 and message.success_report:
            self.src.send_report(message.message_id, 200, "OK",
                                 ByteRange(1, message.size, message.size))

    async def close(self, status: int = 481,
                    comment: str = "Session Does Not Exist - the chat ended") -> None:
        """Stop relaying; every message still waiting gets ``status`` (not a 200:
        the receiver never confirmed it), so the sender knows what to send again."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        while self._waiting:
            self._answer(self._waiting.popleft(), status, comment)
        self._read_sender(True)
