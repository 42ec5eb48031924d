"""RcsClient: an RCS / OMA CPM user agent (the engine of ``imsbox ue``).

One client is one UE: it registers through the P-CSCF with the CPM feature
tags, keeps the registration fresh, and sends and receives standalone
messages (pager and large message mode), 1-to-1 chats, group chats and file
transfers, with IMDN delivery/display notifications and isComposing (seeds
000, 001, 002, 003; docs/messaging.md)::

    async with RcsClient("alice", "secret", "ims.test", pcscf=("127.0.0.1", 5060)) as ue:
        mid = await ue.send_message("bob", "hello")
        await ue.wait_status(mid, MessageStatus.DELIVERED, timeout=10)
        async for event in ue.events():
            print(event.to_json())

The client is a facade over one service per job, sharing a :class:`UeCore`
(ue/core.py): registration (ue/register.py), standalone messages
(ue/messaging.py), chats (ue/chat.py), group chats (ue/group.py), file transfer
(ue/filetransfer.py) and notifications and statuses (ue/notify.py).

Everything the UE sends goes to the P-CSCF over the flow it registered on
(TS 24.229 5.1.1.2): a request arriving on another flow would not be taken
as coming from this UE.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Self

from ..media import WavSink
from ..msrp import MsrpEndpoint
from ..rcs.cpm import (
    CPM_SESSION_TIMER,
    DEFAULT_USER_AGENT,
    UE_SERVICES,
    CpmService,
    classify,
    contact_feature_param,
)
from ..rcs.offer import msrp_media, offer_parts
from ..sdp import Direction, MediaDescription, SdpError, SessionDescription, parse
from ..sip.endpoint import HandlerModule, ServerContext
from ..sip.message import Response, new_tag
from ..sip.transaction import TimerValues
from ..sip.transport.base import TRANSPORTS, Destination, Flow
from ..sip.ua.invite import InviteConfig
from ..sip.ua.useragent import Call, UserAgent
from .call import CallService, VoiceCall, file_source
from .dialog_events import DialogNotifier
from .pickup import DirectPickup
from .redial import RedialService
from .threeway import Conference, ThreeWayService
from .chat import Chat, ChatService
from .core import UeCore, UeEndpoint, identity
from .events import (
    CallEvent,
    CallParked,
    CallTransferred,
    ChatEnded,
    ChatMessage,
    ChatStarted,
    Composing,
    FileFailed,
    FileOffer,
    FileProgress,
    FileReceived,
    FileTransferResult,
    GroupJoined,
    GroupLeft,
    GroupMessage,
    MessageReceived,
    MessageStatus,
    Notification,
    ParticipantJoined,
    ParticipantLeft,
    RcsError,
    RcsEvent,
    Registered,
    RegistrationError,
    SendError,
    resolve_target,
)
from .filetransfer import FileTransfers, Progress, cpim_part
from .group import GroupChat, GroupService, ReferResult, focus_of
from .messaging import Messaging
from .notify import Notifications
from .register import Registration, RegistrationService
from .music_hold import MusicHold, MusicOnHold
from .park import ParkService, orbit_uri
from .transfer import TransferService

__all__ = [
    "CallEvent", "Chat", "ChatEnded", "ChatMessage", "ChatStarted", "Composing", "FileFailed",
    "FileOffer", "FileProgress", "FileReceived", "FileTransferResult", "GroupChat",
    "GroupJoined", "GroupLeft", "GroupMessage", "MessageReceived", "MessageStatus",
    "Notification", "ParticipantJoined", "ParticipantLeft", "RcsClient", "RcsError", "RcsEvent",
    "ReferResult", "Registered", "RegistrationError", "SendError", "resolve_target",
]

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 5.0   # the first REGISTER: this long for the P-CSCF to answer at all


class RcsClient:
    """One RCS UE. ``await start()`` registers; ``close()`` de-registers.

    ``report_all_notifications``: also report IMDNs for messages this client
    did not send (``imsbox ue listen``); by default only its own.
    ``deferred_retrieval``: register the cpm.deferred ICSI too, so the network keeps
    messages stored while offline until ``retrieve_deferred()`` (seed 003).
    ``accept_groups``: join the group chats the network invites us to (else 486).
    ``answer_calls``: answer voice calls after that many seconds (None: decline them,
    486, reporting a ``CallEvent``); ``busy_calls``: refuse them 486 Busy Here.
    ``take_im_transfers``: call the URIs with Replaces that arrive in messages
    (RFC 5359 2.6). REFERs in a call are always acted on (ue/transfer.py)."""

    def __init__(self, user: str, password: str, domain: str = "ims.test",
                 pcscf: tuple[str, int] = ("127.0.0.1", 5060), transport: str = "udp",
                 downloads: str | Path | None = None, *, host: str | None = None,
                 timers: TimerValues | None = None, expires: int = 600,
                 user_agent: str = DEFAULT_USER_AGENT, accept_chats: bool = True,
                 ssl_context: ssl.SSLContext | None = None,
                 max_file_size: int | None = None, report_all_notifications: bool = False,
                 answer_timeout: float = ANSWER_TIMEOUT,
                 deferred_retrieval: bool = False, accept_groups: bool = True,
                 answer_calls: float | None = None, busy_calls: bool = False,
                 take_im_transfers: bool = False) -> None:
        if transport not in TRANSPORTS:
            raise RcsError(f"transport must be one of {', '.join(TRANSPORTS)}")
        self.user, self.password, self.domain = user, password, domain
        self.pcscf = Destination(transport, *pcscf)
        self.transport = transport
        self.timers = timers or TimerValues()
        self.answer_timeout = answer_timeout
        self.instance = f"urn:uuid:{uuid.uuid4()}"
        self.contact = ""
        self.registration = Registration(self.aor, "", self.pcscf,
                                         username=f"{user}@{domain}",
                                         contact_params=_feature_param(deferred_retrieval),
                                         instance=self.instance)
        self._ssl = ssl_context
        self._early = HandlerModule(self._early_request, "ue-early")  # 503 until the UA runs
        self.core = UeCore(self.aor, host or _local_address(*pcscf), user_agent,
                           self._new_endpoint(), self.registration)
        self.registering = RegistrationService(self.core, password, expires)
        self.core.recover = self.registering.recover
        self.notifications = Notifications(self.core, report_all_notifications)
        self.messaging = Messaging(self.core, self.notifications)
        self.chat_service = ChatService(self.core, self.notifications, accept_chats)
        self.group_service = GroupService(self.core, self.notifications, accept_groups)
        self.call_service = CallService(self.core, answer_calls, busy_calls)
        self.transfers = TransferService(self.core, self.call_service,
                                         lambda: self.group_service.agent, self.send_message,
                                         take_im_transfers)
        # RFC 5359 2.10/2.11 (ue/threeway.py), 2.17 (ue/redial.py, ue/dialog_events.py)
        self.threeway = ThreeWayService(self.core, self.call_service)
        self.dialog_events = DialogNotifier(self.core, self.call_service,
                                            lambda: self.group_service.agent)
        self.redialer = RedialService(self.core, self.call_service,
                                      lambda: self.group_service.agent,
                                      self.group_service.origin)
        self.direct_pickup = DirectPickup(self.call_service, lambda: self.group_service.agent,
                                          self.group_service.origin)   # RFC 5359 2.16
        self.files = FileTransfers(self.core, self.notifications,
                                   Path(downloads) if downloads is not None else None,
                                   max_file_size)

    # -- what the services hold -------------------------------------------------------
    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def host(self) -> str:
        return self.core.host

    @property
    def user_agent(self) -> str:
        return self.core.user_agent

    @property
    def chats(self) -> dict[str, Chat]:
        return self.chat_service.chats

    @property
    def downloads(self) -> Path | None:
        return self.files.downloads

    @property
    def _endpoint(self) -> UeEndpoint:
        return self.core.endpoint

    @property
    def _msrp(self) -> MsrpEndpoint:
        return self.core.msrp

    # -- life cycle ------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> Self:
        """Listen (SIP and MSRP), register; RegistrationError when that fails
        (``unanswered`` when the P-CSCF does not answer within ``answer_timeout``)."""
        await self._listen()
        await self.core.msrp.start()
        config = InviteConfig(t1=self.timers.t1, t2=self.timers.t2,
                              session_timer=CPM_SESSION_TIMER,
                              allow=("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "PRACK",
                                     "UPDATE", "MESSAGE", "REFER", "SUBSCRIBE", "NOTIFY"),
                              extensions=("replaces", "join"))   # RFC 3891, RFC 3911
        self._endpoint.remove_module(self._early)
        self.core.ua = UserAgent(self._endpoint, f"<{self.aor}>", self.contact, config=config,
                                 on_call=self._on_call, on_request=self.messaging.on_request)
        self.transfers.install()
        self.dialog_events.install()
        try:
            await self.registering.first(self.answer_timeout)
        except RegistrationError:
            await self._shutdown()
            raise
        self.core.spawn(self.registering.keep())
        return self

    async def close(self) -> None:
        """End chats, de-register (best effort), close every socket."""
        await self.chat_service.close()
        await self.group_service.close()
        await self.call_service.close()
        self.transfers.close()
        self.dialog_events.close()
        tasks = list(self.core.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.registering.close()
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self.core.ua is not None:
            await self.core.ua.close()
        await self.core.msrp.close()
        await self._endpoint.close()

    def _new_endpoint(self) -> UeEndpoint:
        return UeEndpoint(self.timers, modules=[self._early],
                          client_ssl_context=self._client_ssl())

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
                self.core.endpoint = self._new_endpoint()
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

    def reregister(self) -> None:
        """Register again now (e.g. after a network error)."""
        self.registering.refresh_now()

    # -- events and status ---------------------------------------------------------------
    async def events(self) -> AsyncIterator[RcsEvent]:
        """Every incoming event, in order, until the caller stops iterating."""
        while True:
            yield await self.core.events.get()

    def pending_events(self) -> list[RcsEvent]:
        """The events queued and not read yet (taken out of the queue)."""
        queue, out = self.core.events, []
        while not queue.empty():
            out.append(queue.get_nowait())
        return out

    async def wait_event(self, kind: type[RcsEvent] | tuple[type[RcsEvent], ...],
                         timeout: float | None = None) -> RcsEvent:
        """The next event of ``kind``; events of other kinds before it are dropped."""
        async def first() -> RcsEvent:
            while True:
                event = await self.core.events.get()
                if isinstance(event, kind):
                    return event
        return await asyncio.wait_for(first(), timeout)

    def status(self, message_id: str) -> MessageStatus | None:
        return self.notifications.status(message_id)

    def deferred(self, message_id: str) -> bool:
        """The network answered 202 to the message: kept until the recipient registers."""
        return self.notifications.deferred(message_id)

    async def wait_status(self, message_id: str, wanted: MessageStatus = MessageStatus.DELIVERED,
                          timeout: float | None = None,
                          or_deferred: bool = False) -> MessageStatus:
        """Wait until the message reached ``wanted`` (or failed; with ``or_deferred``
        also until ``deferred(message_id)``); returns its status."""
        return await self.notifications.wait_status(message_id, wanted, timeout, or_deferred)

    async def mark_displayed(self, message_id: str) -> bool:
        """Send the display notification for a received message, if its sender asked."""
        return await self.notifications.mark_displayed(message_id)

    # -- sending -------------------------------------------------------------------------
    def resolve(self, to: str) -> str:
        return resolve_target(to, self.domain)

    async def send_message(self, to: str, text: str, display: bool = False) -> str:
        """A standalone message asking for a delivery (and with ``display`` a display)
        notification: pager mode up to 1300 bytes of CPIM, large message mode above.
        Returns the imdn.Message-ID; raises SendError when the network refuses it.
        ``deferred(message_id)`` says the network keeps it for an offline recipient."""
        return await self.messaging.send(self.resolve(to), text, display)

    async def retrieve_deferred(self) -> list[MessageReceived]:
        """Fetch the messages the network stored while we were offline (seed 003;
        needs ``deferred_retrieval``): oldest first, each also emitted as a
        ``MessageReceived`` with mode "deferred"; removed from the store as taken.
        SendError when the network refuses the retrieval."""
        return await self.messaging.retrieve_deferred(self.domain)

    async def open_chat(self, to: str) -> Chat:
        """A 1-to-1 chat session (INVITE cpm.session, MSRP); SendError if refused."""
        return await self.chat_service.open(self.resolve(to))

    async def send_file(self, to: str, path: str | Path, progress: Progress | None = None,
                        *, resume: bool = False,
                        transfer_id: str | None = None) -> FileTransferResult:
        """Push a file (seed 003): INVITE multipart/mixed (CPIM part asking for delivery
        notifications + SDP with file-selector, file-transfer-id, file-disposition,
        file-date), 2048-byte chunks, BYE. ``ok`` once the receiver's success REPORT
        covered every byte - it sends it only after checking the sha-1 hash; a failure
        REPORT (hash mismatch, refusal) makes it failed. The delivery IMDN that follows
        updates ``status(result.message_id)``. ``progress(sent, size)`` is called for
        every chunk read; ``transfer_id`` (default: a new one) is the file-transfer-id.

        Resume (RFC 5547 sections 8.1, 8.7): a receiver keeps an interrupted download
        as ``downloads/.sha-1-<hash>.part``, keyed by the file-selector hash because a
        resumed transfer is a new one (new file-transfer-id). Offered the same file
        again, it answers ``file-range:<first missing octet>-<size>``. With ``resume``
        the sender sends just that range (one MSRP message, Byte-Range numbered from
        1), the receiver appends it and checks the hash of the whole file. Without
        ``resume`` the whole file goes out; the receiver sees Byte-Range total = file
        size and writes it from the start."""
        return await self.files.send(self.resolve(to), Path(path), progress, resume=resume,
                                     transfer_id=transfer_id)

    # -- group chats (ue/group.py) ---------------------------------------------------------
    @property
    def groups(self) -> dict[str, GroupChat]:
        """The group chats we are in, by Call-ID."""
        return self.group_service.groups

    async def create_group(self, members: list[str], subject: str | None = None) -> GroupChat:
        """An ad-hoc group chat: INVITE the conference factory with the members as a
        recipient list (RFC 5366); the focus invites each. SendError if refused."""
        return await self.group_service.create([self.resolve(m) for m in members], subject)

    async def join_group(self, uri: str) -> GroupChat:
        """Join a conference or pre-defined group by its URI (TS 24.247 A.5.1);
        SendError 404 when it does not exist, 403 when we may not join it."""
        return await self.group_service.join(self.resolve(uri))

    async def rejoin_group(self, group: GroupChat) -> GroupChat:
        """Back into a group left earlier; restarted when it has ended meanwhile (404)."""
        return await self.group_service.rejoin(group)

    # -- voice calls (ue/call.py) ----------------------------------------------------------
    @property
    def calls(self) -> dict[str, VoiceCall]:
        """The voice calls in progress, by Call-ID."""
        return self.call_service.calls

    async def call(self, to: str, play: str | Path | None = None, tone: float | None = None,
                   record: str | Path | None = None) -> VoiceCall:
        """A voice call (MMTel INVITE, audio offer) playing the WAV ``play`` or a ``tone``
        (Hz; silence without either), recording to the WAV ``record``; returns once the
        INVITE is out (``await call.wait_answered()``; events call_ringing ...)."""
        sink = WavSink(record) if record is not None else None
        return await self.call_service.place(self.resolve(to), file_source(play, tone), sink)

    async def pickup(self, name: str | None = None, play: str | Path | None = None,
                     tone: float | None = None, record: str | Path | None = None,
                     direct: bool = False) -> VoiceCall:
        """Call pickup (RFC 5359 2.16) by the network: a call to ``sip:pickup@DOMAIN``
        (a call ringing for our pickup group) or ``sip:pickup-NAME@DOMAIN``
        (NAME's call); the telephony AS takes the ringing call over for us
        (docs/telephony-as.md). A refusal ends the call with the AS's reason.
        ``direct``: do it ourselves (SUBSCRIBE to NAME's dialog events, INVITE the
        caller with Replaces, ``imsbox.ue.pickup``); RcsError when nothing rings."""
        if direct:
            if not name:
                raise RcsError("pickup: a direct pickup needs the NAME whose call it takes")
            sink = WavSink(record) if record is not None else None
            return await self.direct_pickup.pick_up(self.resolve(name),
                                                    file_source(play, tone), sink)
        user = f"pickup-{name}" if name else "pickup"
        return await self.call(f"sip:{user}@{self.domain}", play, tone, record)

    async def transfer(self, call: VoiceCall, to: str) -> CallTransferred:
        """Unattended transfer (RFC 5359 2.4): hold, REFER ``to``, BYE once the NOTIFY
        says the transferee reached it, else resume. Also a ``call_transferred``."""
        return await self.transfers.transfer(call, self.resolve(to))

    async def consult(self, call: VoiceCall, to: str) -> VoiceCall:
        """Consultation hold (RFC 5359 2.2): hold ``call`` and call ``to``; returns the
        consultation call, which ``complete`` turns into an attended transfer."""
        return await self.transfers.consult(call, self.resolve(to))

    async def complete(self, consultation: VoiceCall) -> CallTransferred:
        """Attended transfer (RFC 5359 2.5): REFER the held party with Replaces naming
        the consultation; both our calls end when it worked."""
        return await self.transfers.complete(consultation)

    async def im_transfer(self, call: VoiceCall, to: str) -> CallTransferred:
        """IM transfer (RFC 5359 2.6): send ``to`` the peer's URI with Replaces in a
        message; transferred once ``to`` took the call over."""
        return await self.transfers.im_transfer(call, self.resolve(to))

    async def music_hold(self, call: VoiceCall) -> MusicHold:
        """Hold with the network's music (RFC 5359 2.3): hold, then REFER
        ``sip:moh@DOMAIN`` to the held party with Replaces (``imsbox.ue.music_hold``)."""
        return await MusicOnHold(self.core, self.call_service, self.transfers,
                                 f"sip:moh@{self.domain}").hold(call)

    async def music_resume(self, held: MusicHold) -> VoiceCall:
        """Take a music-held call back (2.3 F19): the call that goes on."""
        return await MusicOnHold(self.core, self.call_service, self.transfers,
                                 f"sip:moh@{self.domain}").resume(held)

    async def park(self, call: VoiceCall) -> CallParked:
        """Call park (RFC 5359 2.15): the park server takes the call over into an orbit;
        a ``call_parked`` event (and the result) names it (``imsbox.ue.park``)."""
        return await ParkService(self.core, self.call_service, self.transfers,
                                 self.domain).park(call)

    async def retrieve(self, orbit: int | str, play: str | Path | None = None,
                       tone: float | None = None,
                       record: str | Path | None = None) -> VoiceCall:
        """Get a parked call back: a call to ``sip:park-ORBIT@DOMAIN`` (404 when empty)."""
        return await self.call(orbit_uri(orbit, self.domain), play, tone, record)

    async def redial(self, to: str, play: str | Path | None = None, tone: float | None = None,
                     record: str | Path | None = None, timeout: float = 300.0,
                     attempts: int = 3) -> VoiceCall:
        """Automatic redial (RFC 5359 2.17): call ``to``; while it is busy, watch its
        dialog events and call again once it is idle (at most ``attempts`` calls,
        ``timeout`` s). Returns the last call: answered, or not (redial_failed says why)."""
        target = self.resolve(to)

        async def place() -> VoiceCall:
            sink = WavSink(record) if record is not None else None
            return await self.call_service.place(target, file_source(play, tone), sink)
        return await self.redialer.redial(target, place, timeout, attempts)

    async def add_party(self, call: VoiceCall, to: str) -> VoiceCall:
        """RFC 5359 2.10: hold ``call`` and call ``to`` (what ``call`` played and
        recorded goes to the new call); ``conference()`` then mixes them."""
        return await self.threeway.add_party(call, self.resolve(to))

    async def conference(self, *calls: VoiceCall) -> Conference:
        """Mix ``calls`` (default: every answered call) into a 3-way call here,
        mix-minus; a call_conference event (RFC 5359 2.10)."""
        return await self.threeway.conference(calls or None)

    async def join(self, to: str, dialog: str, play: str | Path | None = None,
                   tone: float | None = None, record: str | Path | None = None) -> VoiceCall:
        """RFC 5359 2.11: INVITE ``to`` with Join naming its dialog ``dialog``
        (``CALLID;to-tag=T;from-tag=F``, tags as ``to`` sees them, RFC 3911)."""
        sink = WavSink(record) if record is not None else None
        return await self.threeway.join(self.resolve(to), dialog, file_source(play, tone), sink)

    # -- incoming INVITEs ----------------------------------------------------------------
    async def _on_call(self, call: Call) -> None:
        self.core.spawn(self._incoming(call))

    async def _incoming(self, call: Call) -> None:
        """Which service takes an INVITE: by its ICSI (P-Asserted-Service, Accept-Contact),
        else by its SDP."""
        request = call.request
        peer = identity(request)
        sdp_body, multipart = offer_parts(request)
        if sdp_body is None and multipart is None:
            sdp_body = call.remote_sdp  # lenient: a body without Content-Type
        try:
            offer = parse(sdp_body or b"")
        except SdpError as exc:
            call.reject(488, f"Not Acceptable Here - {exc.reason}"[:80])
            return
        media = msrp_media(offer)
        if media is None and _is_audio(offer) and request.headers.get("Join") is not None:
            await self.threeway.incoming_join(call, peer, sdp_body or b"")   # RFC 3911
            return
        if media is None and _is_audio(offer) and request.headers.get("Replaces") is not None:
            await self.transfers.incoming_replaces(call, peer, sdp_body or b"")
            return
        if media is None and self.call_service.answering and _is_audio(offer):
            await self.call_service.incoming(call, peer, sdp_body or b"")
            return
        if media is None:
            self.core.emit(CallEvent(peer, self.aor, call.call_id,
                                     [m.media for m in offer.media]))
            call.reject(486)
            return
        if focus_of(request) is not None:  # a conference focus invites us (RFC 4579)
            await self.group_service.incoming(call, peer, offer)
            return
        service = classify(request) or _service_by_sdp(offer, media)
        if service is CpmService.FILETRANSFER and media.file_selector is not None:
            await self.files.incoming(call, peer, offer, media, cpim_part(multipart))
        elif service is CpmService.FILETRANSFER:
            call.reject(488, "Not Acceptable Here - file transfer without a=file-selector")
        elif service is CpmService.LARGEMSG:
            await self.messaging.incoming_large(call, peer, offer)
        else:
            await self.chat_service.incoming(call, peer, offer)


def _is_audio(offer: SessionDescription) -> bool:
    return any(m.media == "audio" and m.port for m in offer.media)


def _service_by_sdp(offer: SessionDescription, media: MediaDescription) -> CpmService:
    """An INVITE without a CPM ICSI: a file names itself in a=file-selector (a large
    message has at most its size there), a large message is sendonly, else a chat."""
    selector = media.file_selector
    if selector is not None and (selector.name or selector.type or selector.hash):
        return CpmService.FILETRANSFER
    if offer.direction_of(media) is Direction.SENDONLY:
        return CpmService.LARGEMSG
    return CpmService.SESSION


def _feature_param(deferred_retrieval: bool) -> str:
    """The Contact's ICSIs: the four CPM services, with retrieval also cpm.deferred."""
    extra = (CpmService.DEFERRED,) if deferred_retrieval else ()
    return contact_feature_param((*UE_SERVICES, *extra))


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _local_address(host: str, port: int) -> str:
    """The address this host uses to reach ``host`` (no packet is sent)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((host, port))
            return str(sock.getsockname()[0])
        except OSError:
            return "::1" if family == socket.AF_INET6 else "127.0.0.1"
