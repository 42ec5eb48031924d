"""RcsClient: an RCS / OMA CPM user agent (the engine of ``imsbox ue``).

One client is one UE: it registers through the P-CSCF with the CPM feature
tags, keeps the registration fresh, and sends and receives standalone
messages (pager and large message mode), 1-to-1 chats and file transfers,
with IMDN delivery/display notifications and isComposing (seeds 000, 001,
003; docs/messaging.md)::

    async with RcsClient("alice", "secret", "ims.test", pcscf=("127.0.0.1", 5060)) as ue:
        mid = await ue.send_message("bob", "hello")
        await ue.wait_status(mid, MessageStatus.DELIVERED, timeout=10)
        async for event in ue.events():
            print(event.to_json())

Everything the UE sends goes to the P-CSCF over the flow it registered on
(TS 24.229 5.1.1.2): a request arriving on another flow would not be taken
as coming from this UE.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import mimetypes
import os
import re
import secrets
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime, UTC
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from ..content import (
    CPIM, IMDN, ISCOMPOSING, ContentError, CpimAddress, CpimMessage, DispositionType, Imdn,
    ImdnStatus, MessageComposer, NotificationRequest, StatusMessageReceiver,
    build_cpim, imdn_reply, parse_cpim, parse_imdn, parse_iscomposing, requested_notifications,
)
from ..content.imdn import IMDN_NS, format_disposition_notification, is_notification
from ..content.multipart import BodyPart, Multipart, build_multipart
from ..msrp import (ByteRange, MsrpEndpoint, MsrpError, MsrpSession, MsrpStatusError,
                    ReceivedMessage)
from ..msrp import Setup as MsrpSetup
from ..rcs.cpm import (
    CONVERSATION_ID, DEFAULT_USER_AGENT, CpmService, contact_feature_param,
    cpm_request_headers, fits_pager, new_conversation_id,
)
from ..rcs.offer import msrp_media, offer_parts
from ..sdp import (
    Attribute, Connection, Direction, FileDate, FileHash, FileRange, FileSelector,
    LocalCapabilities,
    MediaDescription, Origin, SdpError, SessionDescription, Setup, answer, parse,
)
from ..sip.endpoint import ClientContext, HandlerModule, ServerContext, SipEndpoint
from ..sip.headers import HeaderError, NameAddr
from ..sip.message import Request, Response, new_tag
from ..sip.transaction import TimerValues
from ..sip.transport.base import TRANSPORTS, Destination, Flow
from ..sip.uri import UriError, parse_uri
from ..sip.ua.dialog import build_request
from ..sip.ua.invite import InviteConfig
from ..sip.ua.useragent import Call, UserAgent
from .register import Registration

__all__ = [
    "CallEvent", "Chat", "ChatEnded", "ChatMessage", "ChatStarted", "Composing",
    "FileOffer", "FileProgress", "FileReceived", "FileTransferResult", "MessageReceived",
    "MessageStatus", "Notification", "RcsClient", "RcsError", "RcsEvent", "Registered",
    "SendError", "resolve_target",
]

log = logging.getLogger(__name__)

Header = tuple[str, str]
Progress = Callable[[int, int], None]

CHAT_TYPES = ("message/cpim", ISCOMPOSING)
CHAT_WRAPPED = ("text/plain", IMDN)
TEXT = "text/plain;charset=UTF-8"
MIN_REFRESH = 1.0      # never re-REGISTER more often than this
FILE_STALL = 300.0     # a file transfer with no complete message by then is given up
SETTLE = 2.0           # after a BYE mid-file: how long the last MSRP bytes may take
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # after a failed (re-)registration
_E164 = re.compile(r"\+[0-9]{3,15}")


class RcsError(Exception):
    """A client operation failed; the message says why."""


class SendError(RcsError):
    """A message, chat or file was refused or could not be sent."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MessageStatus(enum.Enum):
    """Where a message we sent stands, from the IMDNs that came back."""

    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    DISPLAYED = "displayed"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {MessageStatus.SENDING: 0, MessageStatus.SENT: 1, MessageStatus.DELIVERED: 2,
         MessageStatus.DISPLAYED: 3, MessageStatus.FAILED: 4}


# -- events -----------------------------------------------------------------------------

@dataclass(slots=True)
class RcsEvent:
    """Base of every event: who it is from and to; ``to_json()`` for ``--json``."""

    sender: str
    recipient: str
    EVENT: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.EVENT, "from": self.sender, "to": self.recipient}
        for f in fields(self)[2:]:
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, enum.Enum) else value
        return out


@dataclass(slots=True)
class MessageReceived(RcsEvent):
    """A standalone message (pager or large message mode)."""

    text: str
    message_id: str | None
    content_type: str
    mode: str  # "pager" or "large"
    conversation_id: str | None = None
    EVENT: ClassVar[str] = "message"


@dataclass(slots=True)
class ChatMessage(RcsEvent):
    text: str
    message_id: str | None
    chat_id: str
    EVENT: ClassVar[str] = "chat_message"


@dataclass(slots=True)
class Composing(RcsEvent):
    """The peer started or stopped typing (RFC 3994)."""

    state: str  # "active" or "idle"
    chat_id: str | None = None
    EVENT: ClassVar[str] = "iscomposing"


@dataclass(slots=True)
class Notification(RcsEvent):
    """A delivery or display notification (IMDN) for a message we sent."""

    message_id: str
    notification: str  # "delivery" or "display"
    status: str        # "delivered", "displayed", "failed", ...
    chat_id: str | None = None
    EVENT: ClassVar[str] = "notification"


@dataclass(slots=True)
class ChatStarted(RcsEvent):
    chat_id: str
    conversation_id: str | None
    direction: str  # "incoming" or "outgoing"
    EVENT: ClassVar[str] = "chat_started"


@dataclass(slots=True)
class ChatEnded(RcsEvent):
    chat_id: str
    reason: str
    EVENT: ClassVar[str] = "chat_ended"


@dataclass(slots=True)
class FileOffer(RcsEvent):
    transfer_id: str
    name: str
    size: int | None
    content_type: str | None
    EVENT: ClassVar[str] = "file_offer"


@dataclass(slots=True)
class FileProgress(RcsEvent):
    transfer_id: str
    name: str
    sent: int
    size: int
    EVENT: ClassVar[str] = "file_progress"


@dataclass(slots=True)
class FileReceived(RcsEvent):
    """A whole file arrived; ``ok`` says the sha-1 of the offer matched."""

    transfer_id: str
    name: str
    size: int
    path: str
    sha256: str
    ok: bool
    EVENT: ClassVar[str] = "file_received"


@dataclass(slots=True)
class CallEvent(RcsEvent):
    """An INVITE that is no CPM service (a voice call): reported, then declined."""

    call_id: str
    media: list[str]
    EVENT: ClassVar[str] = "call"


@dataclass(slots=True)
class Registered(RcsEvent):
    """The registration changed: ``state`` "registered" or "failed"."""

    state: str
    expires: int
    status: int | None = None
    EVENT: ClassVar[str] = "registration"


@dataclass(slots=True)
class FileTransferResult:
    """What ``send_file`` achieved; ``ok`` only when the receiver confirmed every byte."""

    ok: bool
    target: str
    name: str
    size: int
    sha256: str
    transfer_id: str
    status: int | None = None
    reason: str = ""
    message_id: str = ""   # imdn.Message-ID of the INVITE's CPIM part (the IMDN's subject)
    file_range: str = ""   # the octets sent, "START-STOP" (less than the file when resumed)


# -- helpers ----------------------------------------------------------------------------

def resolve_target(to: str, domain: str) -> str:
    """TO as the contract has it: SIP/tel URI, E.164 -> tel:, bare name -> sip:NAME@DOMAIN."""
    text = to.strip()
    if _E164.fullmatch(text):
        text = f"tel:{text}"
    elif not text.lower().startswith(("sip:", "sips:", "tel:")):
        text = f"sip:{text}" if "@" in text else f"sip:{text}@{domain}"
    try:
        parse_uri(text)
    except (UriError, ValueError) as exc:
        raise RcsError(f"{to!r} is not a SIP URI, tel URI, name or E.164 number: {exc}") from None
    return text


def _now_utc() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return secrets.token_urlsafe(12)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _identity(request: Request) -> str:
    """The asserted identity of the sender (P-Asserted-Identity, else From)."""
    for value in request.headers.get_all("P-Asserted-Identity"):
        try:
            return str(NameAddr.parse(value.split(",")[0]).uri)
        except (HeaderError, ValueError):
            continue
    return str(request.from_.uri)


def _local_address(host: str, port: int) -> str:
    """The address this host uses to reach ``host`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((host, port))
            return str(sock.getsockname()[0])
        except OSError:
            return "::1" if family == socket.AF_INET6 else "127.0.0.1"


def _text_of(cpim: CpimMessage) -> str:
    return cpim.body.decode("utf-8", "replace")


def _imdn_status(imdn: Imdn) -> MessageStatus:
    if imdn.status is ImdnStatus.DELIVERED:
        return MessageStatus.DELIVERED
    if imdn.status is ImdnStatus.DISPLAYED:
        return MessageStatus.DISPLAYED
    if imdn.status in (ImdnStatus.FAILED, ImdnStatus.FORBIDDEN, ImdnStatus.ERROR):
        return MessageStatus.FAILED
    return MessageStatus.SENT


class _UeEndpoint(SipEndpoint):
    """Sends every request over the registered UDP flow: no 18.1.1 switch to TCP,
    which the P-CSCF would not recognise as this UE (TS 24.229 5.2.2)."""

    pcscf_flow: Flow | None = None

    def request(self, request: Request, dest: Destination | None = None, *,
                branch: str | None = None, flow: Flow | None = None) -> ClientContext:
        return super().request(request, dest, branch=branch, flow=flow or self.pcscf_flow)


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
class _Tracked:
    status: MessageStatus
    peer: str
    chat_id: str | None = None


@dataclass(slots=True)
class _Received:
    """An incoming message kept for its display notification."""

    cpim: CpimMessage
    peer: str
    chat: Chat | None
    conversation_id: str | None
    displayed: bool = False
    delivery: asyncio.Task[bool] | None = None  # the display IMDN must not overtake it


# -- the client ---------------------------------------------------------------------------

class RcsClient:
    """One RCS UE. ``await start()`` registers; ``close()`` de-registers."""

    def __init__(self, user: str, password: str, domain: str = "ims.test",
                 pcscf: tuple[str, int] = ("127.0.0.1", 5060), transport: str = "udp",
                 downloads: str | Path | None = None, *, host: str | None = None,
                 timers: TimerValues | None = None, expires: int = 600,
                 user_agent: str = DEFAULT_USER_AGENT, accept_chats: bool = True,
                 ssl_context: ssl.SSLContext | None = None,
                 max_file_size: int | None = None) -> None:
        if transport not in TRANSPORTS:
            raise RcsError(f"transport must be one of {', '.join(TRANSPORTS)}")
        self.user, self.password, self.domain = user, password, domain
        self.pcscf = Destination(transport, *pcscf)
        self.transport = transport
        self.downloads = Path(downloads) if downloads is not None else None
        self.host = host or _local_address(pcscf[0], pcscf[1])
        self.timers = timers or TimerValues()
        self.expires = expires
        self.user_agent = user_agent
        self.accept_chats = accept_chats
        self.max_file_size = max_file_size  # larger file offers: 488
        self.instance = f"urn:uuid:{uuid.uuid4()}"
        self.contact = ""
        self.chats: dict[str, Chat] = {}
        self.registration = Registration(self.aor, "", self.pcscf,
                                         username=f"{user}@{domain}",
                                         contact_params=contact_feature_param(),
                                         instance=self.instance)
        self._ssl = ssl_context
        self._early = HandlerModule(self._early_request, "ue-early")  # 503 until the UA runs
        self._endpoint = _UeEndpoint(self.timers, modules=[self._early],
                                     client_ssl_context=self._client_ssl())
        self._msrp = MsrpEndpoint(self.host, 0)
        self._ua: UserAgent | None = None
        self._events: asyncio.Queue[RcsEvent] = asyncio.Queue()
        self._tracked: dict[str, _Tracked] = {}
        self._received: dict[str, _Received] = {}
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reregister = asyncio.Event()
        self._registered = asyncio.Event()

    # -- life cycle ------------------------------------------------------------------
    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    async def __aenter__(self) -> RcsClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> RcsClient:
        """Listen (SIP and MSRP), register; raises RcsError when registration fails."""
        await self._listen()
        await self._msrp.start()
        config = InviteConfig(t1=self.timers.t1, t2=self.timers.t2, session_timer=None,
                              allow=("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "PRACK",
                                     "UPDATE", "MESSAGE"))
        self._endpoint.remove_module(self._early)
        self._ua = UserAgent(self._endpoint, f"<{self.aor}>", self.contact, config=config,
                             on_call=self._on_call, on_request=self._on_request)
        status = await self._register(self.expires)
        if not self.registration.registered:
            await self._shutdown()
            raise RcsError(f"registration of {self.aor} failed ({status})")
        self._spawn(self._keep_registered())
        return self

    async def close(self) -> None:
        """End chats, de-register (best effort), close every socket."""
        for chat in list(self.chats.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(chat.close(), 2)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.registration.registered:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._register(0), 2)
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._ua is not None:
            await self._ua.close()
        await self._msrp.close()
        await self._endpoint.close()

    def _client_ssl(self) -> ssl.SSLContext | None:
        if self.transport != "tls":
            return None
        if self._ssl is not None:
            return self._ssl
        # A lab network's certificate is self-signed: pass ssl_context to verify it.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _listen(self) -> None:
        """UDP and TCP on one port: the P-CSCF may switch to TCP for big requests."""
        for _ in range(20):
            host, port = await self._endpoint.listen("udp", self.host, 0)
            try:
                await self._endpoint.listen("tcp", self.host, port)
                break
            except OSError:
                await self._endpoint.close()
                self._endpoint = _UeEndpoint(self.timers, modules=[self._early],
                                             client_ssl_context=self._client_ssl())
        else:
            raise RcsError("no free port for UDP and TCP")
        suffix = "" if self.transport == "udp" else f";transport={self.transport}"
        self.contact = f"sip:{self.user}@{_bracket(host)}:{port}{suffix}"
        self.registration.contact = self.contact
        if self.transport == "udp":
            self._endpoint.pcscf_flow = Flow("udp", (host, port),
                                             (self.pcscf.host, self.pcscf.port))

    @staticmethod
    def _early_request(ctx: ServerContext) -> None:
        if ctx.txn is not None:
            ctx.respond(Response.for_request(ctx.request, 503, to_tag=new_tag()))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed", exc_info=task.exception())

    # -- registration (TS 24.229 5.1.1, ue/register.py) ---------------------------------
    async def _register(self, expires: int) -> int:
        """One REGISTER exchange (answering one Digest challenge); the final status."""
        response = await self.registration.send(self._endpoint, self.password, expires,
                                                attempts=1,
                                                headers=[("User-Agent", self.user_agent)])
        self._registered_with(response, expires)
        return response.status

    def _registered_with(self, response: Response, expires: int) -> None:
        reg = self.registration
        if not reg.registered:
            self._registered.clear()
            if expires:
                self._emit(Registered(self.aor, self.aor, "failed", 0, response.status))
            return
        if self._ua is not None:
            self._ua.route = reg.route()
        self._registered.set()
        self._emit(Registered(self.aor, self.aor, "registered", reg.expires, response.status))
        log.info("%s registered for %ds", self.aor, reg.expires)

    def _refresh_delay(self) -> float:
        """Half the lifetime when short, else 10 minutes before expiry."""
        granted = self.registration.expires
        return max(MIN_REFRESH, granted / 2 if granted <= 1200 else granted - 600)

    async def _keep_registered(self) -> None:
        """Refresh before expiry; after a failure retry with back-off."""
        failures = 0
        while True:
            delay = (self._refresh_delay() if failures == 0
                     else RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1])
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._reregister.wait(), delay)
            self._reregister.clear()
            status = await self._register(self.expires)
            failures = 0 if self.registration.registered else failures + 1
            if failures:
                log.warning("re-registration of %s failed (%d), retrying", self.aor, status)

    def reregister(self) -> None:
        """Register again now (e.g. after a network error)."""
        self._reregister.set()

    # -- events and status ---------------------------------------------------------------
    def _emit(self, event: RcsEvent) -> None:
        self._events.put_nowait(event)

    async def events(self) -> AsyncIterator[RcsEvent]:
        """Every incoming event, in order, until the caller stops iterating."""
        while True:
            yield await self._events.get()

    def pending_events(self) -> list[RcsEvent]:
        """The events queued and not read yet (taken out of the queue)."""
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out

    async def wait_event(self, kind: type[RcsEvent] | tuple[type[RcsEvent], ...],
                         timeout: float | None = None) -> RcsEvent:
        """The next event of ``kind``; events of other kinds before it are dropped."""
        async def first() -> RcsEvent:
            while True:
                event = await self._events.get()
                if isinstance(event, kind):
                    return event
        return await asyncio.wait_for(first(), timeout)

    def status(self, message_id: str) -> MessageStatus | None:
        tracked = self._tracked.get(message_id)
        return tracked.status if tracked else None

    async def wait_status(self, message_id: str, wanted: MessageStatus = MessageStatus.DELIVERED,
                          timeout: float | None = None) -> MessageStatus:
        """Wait until the message reached ``wanted`` (or failed); returns its status."""
        def reached() -> bool:
            status = self.status(message_id)
            return status is not None and (status.rank >= wanted.rank
                                           or status is MessageStatus.FAILED)

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(reached)
        await asyncio.wait_for(wait(), timeout)
        return self.status(message_id)  # type: ignore[return-value]

    def _track(self, message_id: str, status: MessageStatus) -> None:
        tracked = self._tracked.get(message_id)
        if tracked is None or tracked.status is MessageStatus.FAILED:
            return
        if status is MessageStatus.FAILED or status.rank > tracked.status.rank:
            tracked.status = status
            self._spawn(self._notify_changed())

    async def _notify_changed(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- standalone messages --------------------------------------------------------------
    def resolve(self, to: str) -> str:
        return resolve_target(to, self.domain)

    def _cpim(self, target: str, content_type: str, body: bytes, message_id: str,
              notify: Iterable[NotificationRequest]) -> bytes:
        return build_cpim(
            content_type, body, sender=CpimAddress(self.aor), recipients=[CpimAddress(target)],
            date_time=_now_utc(), namespaces=[("imdn", IMDN_NS)],
            headers=[("imdn.Message-ID", message_id),
                     ("imdn.Disposition-Notification", format_disposition_notification(notify))],
        ).to_bytes()

    def _cpm_headers(self, service: CpmService, conversation_id: str | None = None) -> list[Header]:
        return [*cpm_request_headers(service, conversation_id or new_conversation_id(),
                                     user_agent=self.user_agent),
                ("P-Preferred-Identity", f"<{self.aor}>")]

    async def send_message(self, to: str, text: str, display: bool = False) -> str:
        """A standalone message asking for a delivery (and with ``display`` a display)
        notification: pager mode up to 1300 bytes of CPIM, large message mode above.
        Returns the imdn.Message-ID; raises SendError when the network refuses it."""
        target = self.resolve(to)
        message_id = _new_id()
        notify = [NotificationRequest.POSITIVE_DELIVERY, NotificationRequest.NEGATIVE_DELIVERY]
        if display:
            notify.append(NotificationRequest.DISPLAY)
        cpim = self._cpim(target, TEXT, text.encode(), message_id, notify)
        self._tracked[message_id] = _Tracked(MessageStatus.SENDING, target)
        try:
            if fits_pager(cpim):
                await self._pager(target, cpim, self._cpm_headers(CpmService.MSG))
            else:
                await self._large_message(target, cpim)
        except SendError:
            self._track(message_id, MessageStatus.FAILED)
            raise
        self._track(message_id, MessageStatus.SENT)
        return message_id

    async def _pager(self, target: str, body: bytes, headers: list[Header],
                     content_type: str = CPIM) -> Response:
        """A MESSAGE along the registered route; once more after re-registering on 403."""
        for attempt in range(2):
            request = build_request("MESSAGE", target, f"<{self.aor}>", f"<{target}>",
                                    route=self.registration.route(), headers=headers, body=body,
                                    content_type=content_type)
            response = await self._endpoint.request(request).final()
            if response.status == 403 and attempt == 0 and await self._recover():
                continue
            break
        if not 200 <= response.status < 300:
            raise SendError(f"MESSAGE to {target}: {response.status} {response.reason}",
                            response.status)
        return response

    async def _recover(self) -> bool:
        """The P-CSCF no longer knows our flow (restart, new connection): register again."""
        await self._register(self.expires)
        return self.registration.registered

    async def _large_message(self, target: str, cpim: bytes) -> None:
        """Large message mode: INVITE cpm.largemsg, sendonly MSRP, one SEND, BYE."""
        session = self._msrp.create_session(setup=MsrpSetup.ACTIVE)
        offer = self._offer(session, Direction.SENDONLY, ("message/cpim",), ())
        call = await self._invite(target, offer, CpmService.LARGEMSG)
        try:
            await self._connect(session, call)
            await session.send_message(CPIM, cpim)
        except (TimeoutError, MsrpError, OSError) as exc:
            raise SendError(f"large message to {target}: {exc}") from None
        finally:
            await self._hang_up(call, session)

    # -- notifications ---------------------------------------------------------------------
    async def mark_displayed(self, message_id: str) -> bool:
        """Send the display notification for a received message, if its sender asked."""
        received = self._received.get(message_id)
        if received is None or received.displayed:
            return False
        received.displayed = True
        if received.delivery is not None:
            await asyncio.shield(received.delivery)
        return await self._send_imdn(received, DispositionType.DISPLAY, ImdnStatus.DISPLAYED)

    async def _send_imdn(self, received: _Received, disposition: DispositionType,
                         status: ImdnStatus) -> bool:
        reply = imdn_reply(received.cpim, disposition, status, message_id=_new_id(),
                           sender=CpimAddress(self.aor), date_time=_now_utc())
        if reply is None:
            return False
        body = reply.to_bytes()
        chat = received.chat
        try:
            if chat is not None and not chat.closed.is_set():
                await chat.session.send_message(CPIM, body)
            else:
                await self._pager(received.peer, body,
                                  self._cpm_headers(CpmService.MSG, received.conversation_id))
        except (SendError, MsrpError, OSError) as exc:
            log.warning("IMDN to %s not sent: %s", received.peer, exc)
            return False
        return True

    def _remember(self, cpim: CpimMessage, peer: str, chat: Chat | None,
                  conversation_id: str | None) -> _Received | None:
        message_id = cpim.get("Message-ID", IMDN_NS)
        if not message_id:
            return None
        received = _Received(cpim, self._reply_target(cpim, peer), chat, conversation_id)
        self._received[message_id] = received
        return received

    @staticmethod
    def _reply_target(cpim: CpimMessage, peer: str) -> str:
        sender = cpim.sender
        if sender is None or "anonymous.invalid" in sender.uri:
            return peer
        return sender.uri

    def _deliver_cpim(self, cpim: CpimMessage, peer: str, chat: Chat | None,
                      conversation_id: str | None, mode: str) -> None:
        """An incoming CPIM: an IMDN updates a status, a message becomes an event and
        gets its delivery notification when asked for."""
        if is_notification(cpim) or (cpim.content_type or "").lower().startswith(IMDN):
            self._on_imdn(cpim, peer, chat)
            return
        message_id = cpim.get("Message-ID", IMDN_NS)
        text = _text_of(cpim)
        if chat is not None:
            self._emit(ChatMessage(peer, self.aor, text, message_id, chat.id))
        else:
            self._emit(MessageReceived(peer, self.aor, text, message_id,
                                       cpim.content_type or "", mode, conversation_id))
        received = self._remember(cpim, peer, chat, conversation_id)
        if received is not None and NotificationRequest.POSITIVE_DELIVERY in \
                requested_notifications(cpim):
            received.delivery = self._spawn(self._send_imdn(
                received, DispositionType.DELIVERY, ImdnStatus.DELIVERED))

    def _on_imdn(self, cpim: CpimMessage, peer: str, chat: Chat | None) -> None:
        try:
            imdn = parse_imdn(cpim.body)
        except ContentError as exc:
            log.info("bad IMDN from %s: %s", peer, exc)
            return
        self._track(imdn.message_id, _imdn_status(imdn))
        kind = "display" if imdn.disposition is DispositionType.DISPLAY else "delivery"
        sender = cpim.sender.uri if cpim.sender and "anonymous" not in cpim.sender.uri else peer
        self._emit(Notification(sender, self.aor, imdn.message_id, kind, imdn.status.value,
                                chat.id if chat else None))

    # -- incoming requests outside INVITE --------------------------------------------------
    def _on_request(self, ctx: ServerContext) -> None:
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
            log.info("undecodable MESSAGE from %s: %s", _identity(request), exc)

    def _on_message(self, request: Request) -> None:
        peer = _identity(request)
        media = request.content_type
        kind = f"{media.type}/{media.subtype}".lower() if media else "text/plain"
        conversation = request.header(CONVERSATION_ID)
        if kind == CPIM:
            self._deliver_cpim(parse_cpim(request.body), peer, None, conversation, "pager")
        elif kind == ISCOMPOSING:
            state = parse_iscomposing(request.body).state.value
            self._emit(Composing(peer, self.aor, state))
        else:
            self._emit(MessageReceived(peer, self.aor, request.body.decode("utf-8", "replace"),
                                       None, kind, "pager", conversation))

    # -- sessions: common SDP / MSRP plumbing -------------------------------------------------
    def _offer(self, session: MsrpSession, direction: Direction, accept: Iterable[str],
               wrapped: Iterable[str], extra: Iterable[Attribute] = ()) -> bytes:
        """An SDP offer as in seed 000: TCP/MSRP, setup active, path, msrp-cema."""
        addr_type = "IP6" if ":" in self.host else "IP4"
        sd = SessionDescription(origin=Origin("-", str(secrets.randbelow(2**31)), "0", "IN",
                                              addr_type, self.host),
                                session_name="-", connection=Connection("IN", addr_type, self.host))
        media = MediaDescription("message", session.local_uri.port or self._msrp.port,
                                 "TCP/MSRP", ["*"])
        media.accept_types = list(accept)
        if wrapped:
            media.accept_wrapped_types = list(wrapped)
        media.setup = Setup.ACTIVE
        media.path = [str(session.local_uri)]
        media.msrp_cema = True
        media.attributes.extend(extra)
        media.direction = direction
        sd.media.append(media)
        return bytes(sd)

    async def _invite(self, target: str, offer: bytes, service: CpmService,
                      conversation_id: str | None = None,
                      content_type: str | None = None) -> Call:
        """INVITE and wait for the final response; SendError unless 2xx."""
        assert self._ua is not None
        self._ua.route = self.registration.route()
        call = await self._ua.invite(target, offer, self._cpm_headers(service, conversation_id),
                                     content_type=content_type)
        final = await call.wait_final()
        if final is None or not 200 <= final.status < 300:
            status = final.status if final is not None else 408
            reason = final.reason if final is not None else "no answer"
            raise SendError(f"INVITE to {target}: {status} {reason}", status)
        return call

    async def _connect(self, session: MsrpSession, call: Call) -> None:
        """Apply the answer's path/setup/CEMA and bring the MSRP session up."""
        remote = parse(call.remote_sdp or b"")
        media = msrp_media(remote)
        if media is None:
            raise SendError("the answer has no MSRP stream")
        # We offered active; only an answer that is active itself makes us wait.
        ours = Setup.PASSIVE if media.setup is Setup.ACTIVE else Setup.ACTIVE
        self._bind_remote(session, remote, media, ours)
        await asyncio.wait_for(session.start(), 10)

    @staticmethod
    def _bind_remote(session: MsrpSession, remote: SessionDescription, media: MediaDescription,
                     ours: Setup) -> None:
        """Remote path, who connects (RFC 6135) and the CEMA address (RFC 6714 section 4)."""
        session.set_remote_path(media.path or [])
        session.setup = MsrpSetup.ACTIVE if ours is Setup.ACTIVE else MsrpSetup.PASSIVE
        conn = remote.connection_for(media)
        if media.msrp_cema and conn is not None:
            session.cema_address = (conn.address, media.port)

    async def _hang_up(self, call: Call, session: MsrpSession | None) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call.bye(), 5)
        if session is not None:
            await session.close()

    # -- incoming INVITEs ----------------------------------------------------------------------
    async def _on_call(self, call: Call) -> None:
        self._spawn(self._incoming(call))

    async def _incoming(self, call: Call) -> None:
        request = call.request
        peer = _identity(request)
        sdp_body, multipart = offer_parts(request)
        if sdp_body is None and multipart is None:
            sdp_body = call.remote_sdp  # lenient: a body without Content-Type
        try:
            offer = parse(sdp_body or b"")
        except SdpError as exc:
            call.reject(488, f"Not Acceptable Here - {exc.reason}"[:80])
            return
        media = msrp_media(offer)
        if media is None:
            self._emit(CallEvent(peer, self.aor, call.call_id, [m.media for m in offer.media]))
            call.reject(486)
            return
        if media.file_selector is not None:
            await self._incoming_file(call, peer, offer, media, _cpim_part(multipart))
        elif offer.direction_of(media) is Direction.SENDONLY:
            await self._incoming_large(call, peer, offer, media)
        else:
            await self._incoming_chat(call, peer, offer, media)

    def _answer(self, session: MsrpSession, offer: SessionDescription,
                accept: Iterable[str], wrapped: Iterable[str], direction: Direction,
                whole_file: bool = False, file_range: FileRange | None = None) -> bytes | None:
        caps = LocalCapabilities(
            address=self.host, addr_type="IP6" if ":" in self.host else "IP4",
            msrp_path=[str(session.local_uri)], accept_types=list(accept),
            accept_wrapped_types=list(wrapped), setup=Setup.PASSIVE, msrp_cema=True,
            message_direction=direction, request_whole_file=whole_file, file_range=file_range)
        sd = answer(offer, caps)
        ours, theirs = msrp_media(sd), msrp_media(offer)
        if ours is None or theirs is None:
            return None
        if file_range is not None:  # the part we still need (resume), whatever was offered
            ours.file_range = file_range
        self._bind_remote(session, offer, theirs, ours.setup or Setup.PASSIVE)
        return bytes(sd)

    async def _accept(self, call: Call, session: MsrpSession, answer_sdp: bytes | None) -> bool:
        if answer_sdp is None:
            call.reject(488)
            await session.close()
            return False
        call.accept(answer_sdp)
        try:
            await asyncio.wait_for(session.start(), 10)
        except (TimeoutError, MsrpError, OSError) as exc:
            log.warning("MSRP set-up for %s failed: %s", call.call_id, exc)
            await self._hang_up(call, session)
            return False
        return True

    async def _incoming_large(self, call: Call, peer: str, offer: SessionDescription,
                              media: MediaDescription) -> None:
        session = self._msrp.create_session()
        received: asyncio.Queue[ReceivedMessage] = asyncio.Queue()
        session.on_message = received.put_nowait
        answer_sdp = self._answer(session, offer, ("message/cpim",), CHAT_WRAPPED,
                                  Direction.RECVONLY)
        if not await self._accept(call, session, answer_sdp):
            return
        conversation = call.request.header(CONVERSATION_ID)
        try:
            message = await asyncio.wait_for(received.get(), 30)
            self._deliver_cpim(parse_cpim(message.body), peer, None, conversation, "large")
        except (TimeoutError, ContentError) as exc:
            log.warning("large message from %s lost: %s", peer, exc)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(call.terminated), 10)
        await self._hang_up(call, session)

    async def _incoming_chat(self, call: Call, peer: str, offer: SessionDescription,
                             media: MediaDescription) -> None:
        if not self.accept_chats:
            call.reject(486)
            return
        session = self._msrp.create_session()
        chat = Chat(self, call, session, peer, call.request.header(CONVERSATION_ID), True)
        answer_sdp = self._answer(session, offer, CHAT_TYPES, CHAT_WRAPPED, Direction.SENDRECV)
        if not await self._accept(call, session, answer_sdp):
            return
        chat.opened()

    # -- chat -----------------------------------------------------------------------------------
    async def open_chat(self, to: str) -> Chat:
        """A 1-to-1 chat session (INVITE cpm.session, MSRP); SendError if refused."""
        target = self.resolve(to)
        session = self._msrp.create_session(setup=MsrpSetup.ACTIVE)
        offer = self._offer(session, Direction.SENDRECV, CHAT_TYPES, CHAT_WRAPPED)
        conversation = new_conversation_id()
        try:
            call = await self._invite(target, offer, CpmService.SESSION, conversation)
        except SendError:
            await session.close()
            raise
        chat = Chat(self, call, session, target, conversation, False)
        try:
            await self._connect(session, call)
        except (TimeoutError, MsrpError, OSError, SdpError) as exc:
            await self._hang_up(call, session)
            raise SendError(f"chat with {target}: MSRP set-up failed: {exc}") from None
        chat.opened()
        return chat

    # -- file transfer (RFC 5547 push, seed 003) --------------------------------------------
    async def send_file(self, to: str, path: str | Path, progress: Progress | None = None,
                        *, resume: bool = False) -> FileTransferResult:
        """Push a file (seed 003): INVITE multipart/mixed (CPIM part asking for delivery
        notifications + SDP with file-selector, file-transfer-id, file-disposition,
        file-date), 2048-byte chunks, BYE. ``ok`` once the receiver's success REPORT
        covered every byte - it sends it only after checking the sha-1 hash; a failure
        REPORT (hash mismatch, refusal) makes it failed. The delivery IMDN that follows
        updates ``status(result.message_id)``.

        Resume (RFC 5547 sections 8.1, 8.7): a receiver keeps an interrupted download
        as ``downloads/.sha-1-<hash>.part``, keyed by the file-selector hash because a
        resumed transfer is a new one (new file-transfer-id). Offered the same file
        again, it answers ``file-range:<first missing octet>-<size>``. With ``resume``
        the sender sends just that range (one MSRP message, Byte-Range numbered from
        1), the receiver appends it and checks the hash of the whole file. Without
        ``resume`` the whole file goes out; the receiver sees Byte-Range total = file
        size and writes it from the start."""
        target = self.resolve(to)
        path = Path(path)
        size, sha1, sha256 = await asyncio.to_thread(_digests, path)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        result = FileTransferResult(False, target, path.name, size, sha256, uuid.uuid4().hex,
                                    message_id=_new_id())
        session = self._msrp.create_session(setup=MsrpSetup.ACTIVE)
        offer = self._offer(session, Direction.SENDONLY, (content_type,), (),
                            _file_attributes(path, content_type, size, sha1, result.transfer_id))
        body, multipart_type = self._file_invite_body(target, content_type, offer,
                                                      result.message_id)
        self._tracked[result.message_id] = _Tracked(MessageStatus.SENDING, target)
        try:
            call = await self._invite(target, body, CpmService.FILETRANSFER,
                                      content_type=multipart_type)
        except SendError as exc:
            await session.close()
            result.status, result.reason = exc.status, str(exc)
            self._track(result.message_id, MessageStatus.FAILED)
            return result
        try:
            await self._push(session, call, path, content_type, result, resume, progress)
            await session.wait_idle(SETTLE)  # broken off: let the chunks sent land
        finally:
            await self._hang_up(call, session)
        return result

    def _file_invite_body(self, target: str, content_type: str, offer: bytes,
                          message_id: str) -> tuple[bytes, str]:
        """multipart/mixed: the CPIM part (imdn.Message-ID, Disposition-Notification)
        the delivery IMDN will refer to, then the SDP (seed 003)."""
        notify = [NotificationRequest.POSITIVE_DELIVERY, NotificationRequest.NEGATIVE_DELIVERY]
        cpim = self._cpim(target, content_type, b"", message_id, notify)
        multipart = build_multipart([BodyPart([("Content-Type", CPIM)], cpim),
                                     BodyPart([("Content-Type", "application/sdp")], offer)])
        return multipart.to_bytes(), multipart.content_type

    async def _push(self, session: MsrpSession, call: Call, path: Path, content_type: str,
                    result: FileTransferResult, resume: bool, progress: Progress | None) -> None:
        """Send the negotiated range; fill ``result`` with the receiver's verdict."""
        try:
            start, stop = await self._connect_file(session, call, result.size, resume)
            result.file_range = f"{start}-{stop}"
            with path.open("rb") as fh:
                fh.seek(start - 1)
                reader = _ProgressReader(fh, result.size, progress, start - 1, stop)
                await session.send_message(content_type, reader, size=stop - start + 1,
                                           success_report=True)
            result.ok, result.status, result.reason = True, 200, "confirmed"
            self._track(result.message_id, MessageStatus.SENT)
        except MsrpStatusError as exc:  # the receiver's (or relay's) failure REPORT / response
            result.status = exc.status
            result.reason = f"refused by the receiver: {exc.status} {exc.comment}".rstrip()
            self._track(result.message_id, MessageStatus.FAILED)
        except (TimeoutError, MsrpError, OSError, SendError, SdpError) as exc:
            result.reason = f"transfer failed: {exc!r}"

    async def _connect_file(self, session: MsrpSession, call: Call, size: int,
                            resume: bool) -> tuple[int, int]:
        """Bring MSRP up; the 1-based inclusive range to send (the answer's with resume)."""
        await self._connect(session, call)
        media = msrp_media(parse(call.remote_sdp or b""))
        asked = media.file_range if media is not None and resume else None
        if asked is None or size == 0:
            return 1, size
        stop = asked.stop if asked.stop is not None else size
        if not 1 <= asked.start <= stop <= size:
            raise SendError(f"the receiver asked for file-range {asked}, the file has {size}")
        return asked.start, stop

    async def _incoming_file(self, call: Call, peer: str, offer: SessionDescription,
                             media: MediaDescription, cpim: CpimMessage | None) -> None:
        selector = media.file_selector
        assert selector is not None
        transfer_id = media.file_transfer_id or uuid.uuid4().hex
        name = Path(selector.name or transfer_id).name or transfer_id
        self._emit(FileOffer(peer, self.aor, transfer_id, name, selector.size, selector.type))
        refusal = self._file_refusal(selector)
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
        session = self._msrp.create_session()
        session.defer_success_reports = True  # confirmed only after the hash check
        done: asyncio.Queue[ReceivedMessage] = asyncio.Queue()
        session.on_message = done.put_nowait
        with part.open("r+b" if part.exists() else "w+b") as fh:
            fh.truncate(wanted.start - 1)  # keep the prefix we append to
            session.sink_factory = lambda request: _part_sink(fh, request, wanted, selector.size)
            answer_sdp = self._answer(session, offer, (selector.type or "*",), (),
                                      Direction.RECVONLY, whole_file=True,
                                      file_range=wanted if wanted.start > 1 else None)
            if not await self._accept(call, session, answer_sdp):
                if fh.tell() == 0 and wanted.start == 1:
                    part.unlink(missing_ok=True)  # nothing of it was here before
                return
            message = await _first_or_end(done, call)
            if message is None:  # let what was sent before the BYE land, then stop writing
                await _closed(session, SETTLE)
                await session.close()
        received = self._remember(cpim, peer, None, call.request.header(CONVERSATION_ID)) \
            if cpim is not None else None
        incoming = _IncomingFile(call, session, peer, part, name, transfer_id, selector,
                                 received)
        await self._file_done(incoming, message)

    def _file_refusal(self, selector: FileSelector) -> tuple[int, str] | None:
        """(status, reason) when this UE will not take the file, else None."""
        if self.downloads is None:
            return 603, "Decline - no download directory"
        limit, size = self.max_file_size, selector.size
        if limit is not None and size is not None and size > limit:
            return 488, f"Not Acceptable Here - file too large ({size} > {limit} bytes)"
        return None

    async def _file_done(self, incoming: _IncomingFile, message: ReceivedMessage | None) -> None:
        """Check the whole file against the offer, confirm or refuse it, then notify."""
        call, session = incoming.call, incoming.session
        if message is None:  # interrupted: the prefix stays for a resumed transfer
            log.info("file %s from %s interrupted; %d bytes kept", incoming.name,
                     incoming.peer, incoming.part.stat().st_size)
            await self._hang_up(call, session)
            return
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
        self._emit(FileReceived(incoming.peer, self.aor, incoming.transfer_id, incoming.name,
                                size, path, sha256, ok))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(call.terminated), 10)
        await self._hang_up(call, session)
        if incoming.received is not None:  # after the BYE, as in seed 003
            await self._send_imdn(incoming.received, DispositionType.DELIVERY,
                                  ImdnStatus.DELIVERED if ok else ImdnStatus.FAILED)


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
    received: _Received | None  # the INVITE's CPIM part, for the delivery IMDN


class _PartSink:
    """Writes a (possibly resumed) file message into the partial file at ``base``."""

    __slots__ = ("file", "base")

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


def _cpim_part(multipart: Multipart | None) -> CpimMessage | None:
    part = multipart.find(CPIM) if multipart is not None else None
    if part is None:
        return None
    try:
        return parse_cpim(part.body)
    except ContentError:
        return None


async def _first_or_end(queue: asyncio.Queue[ReceivedMessage],
                        call: Call) -> ReceivedMessage | None:
    """The complete message, or None when the session ended (or stalled) first."""
    getter = asyncio.ensure_future(queue.get())
    ended = asyncio.ensure_future(asyncio.shield(call.terminated))
    either: list[asyncio.Future[Any]] = [getter, ended]
    await asyncio.wait(either, timeout=FILE_STALL,
                       return_when=asyncio.FIRST_COMPLETED)
    for task in (getter, ended):
        task.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return None if queue.empty() else queue.get_nowait()


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


# -- chat --------------------------------------------------------------------------------------

class Chat:
    """A 1-to-1 chat: CPIM text with IMDN requests over MSRP, isComposing both ways."""

    def __init__(self, client: RcsClient, call: Call, session: MsrpSession, peer: str,
                 conversation_id: str | None, incoming: bool) -> None:
        self.client = client
        self.call = call
        self.session = session
        self.peer = peer
        self.conversation_id = conversation_id
        self.incoming = incoming
        self.closed = asyncio.Event()
        self._composer = MessageComposer(refresh=60)
        self._receiver = StatusMessageReceiver()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def id(self) -> str:
        return self.call.call_id

    def opened(self) -> None:
        """The MSRP session is up: take messages, watch for the end."""
        client = self.client
        client.chats[self.id] = self
        self.session.on_message = self._on_msrp
        direction = "incoming" if self.incoming else "outgoing"
        sender, recipient = (self.peer, client.aor) if self.incoming else (client.aor, self.peer)
        client._emit(ChatStarted(sender, recipient, self.id, self.conversation_id, direction))
        client._spawn(self._watch())

    async def send(self, text: str, display: bool = True) -> str:
        """A chat message asking for delivery (and display) notification; its Message-ID."""
        if self.closed.is_set():
            raise SendError("the chat has ended")
        client = self.client
        message_id = _new_id()
        notify = [NotificationRequest.POSITIVE_DELIVERY]
        if display:
            notify.append(NotificationRequest.DISPLAY)
        cpim = client._cpim(self.peer, TEXT, text.encode(), message_id, notify)
        client._tracked[message_id] = _Tracked(MessageStatus.SENDING, self.peer, self.id)
        self._composer.content_sent(self._now())
        try:
            await self.session.send_message(CPIM, cpim)
        except (MsrpError, OSError) as exc:
            client._track(message_id, MessageStatus.FAILED)
            raise SendError(f"chat message not sent: {exc!r}") from None
        client._track(message_id, MessageStatus.SENT)
        return message_id

    async def composing(self) -> None:
        """The user is typing: an isComposing 'active' when the state changes (RFC 3994)."""
        await self._send_status(self._composer.composing(self._now()))

    async def _send_status(self, actions: list[Any]) -> None:
        for action in actions:
            with contextlib.suppress(MsrpError, OSError):
                await self.session.send_message(ISCOMPOSING, action.document.to_xml())
        self._arm()

    async def close(self) -> None:
        """BYE and close the MSRP session."""
        if not self.closed.is_set():
            await self.client._hang_up(self.call, self.session)
            self._ended("local BYE")

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _watch(self) -> None:
        event = await asyncio.shield(self.call.terminated)
        await self.session.close()
        self._ended(event.reason)

    def _ended(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        if self._timer is not None:
            self._timer.cancel()
        client = self.client
        client.chats.pop(self.id, None)
        client._emit(ChatEnded(self.peer, client.aor, self.id, reason))

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
                self.client._deliver_cpim(cpim, self.peer, self, self.conversation_id, "chat")
        except (ContentError, ValueError) as exc:
            log.info("chat %s: undecodable %s: %s", self.id, kind, exc)

    def _indicate(self, indications: list[Any]) -> None:
        for indication in indications:
            self.client._emit(Composing(self.peer, self.client.aor, indication.state.value,
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
            self._timer = asyncio.get_running_loop().call_at(min(deadlines), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._now()
        self._indicate(self._receiver.on_timer(now))
        actions = self._composer.on_timer(now)
        if actions:
            self.client._spawn(self._send_status(actions))
