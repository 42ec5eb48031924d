"""What the services of one UE share: identity, sockets, registration, tasks, events,
and the SIP/SDP/MSRP steps every CPM session takes (seed 000's INVITE and answer).

``RcsClient`` (ue/client.py) builds one :class:`UeCore` and hands it to its
services (ue/messaging.py, ue/chat.py, ue/filetransfer.py, ue/notify.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..content import CPIM, CpimAddress, NotificationRequest, build_cpim
from ..content.imdn import IMDN_NS, format_disposition_notification
from ..msrp import MsrpEndpoint, MsrpError, MsrpSession, ReceivedMessage
from ..msrp import Setup as MsrpSetup
from ..rcs.cpm import CpmService, contact_params, cpm_request_headers, new_conversation_id
from ..rcs.offer import msrp_media
from ..sdp import (
    Attribute,
    Connection,
    Direction,
    FileRange,
    LocalCapabilities,
    MediaDescription,
    Origin,
    SessionDescription,
    Setup,
    answer,
    parse,
)
from ..sip.endpoint import ClientContext, SipEndpoint
from ..sip.headers import HeaderError, NameAddr
from ..sip.message import Request, Response
from ..sip.transport.base import Destination, Flow
from ..sip.ua.dialog import build_request
from ..sip.ua.useragent import Call, UserAgent
from ..sip.ua.useragent import Origin as SipOrigin
from .events import RcsEvent, SendError

if TYPE_CHECKING:
    from .register import Registration

__all__ = ["Header", "UeCore", "identity", "new_id"]

log = logging.getLogger(__name__)

Header = tuple[str, str]
MSRP_SETUP = 10.0   # seconds for an MSRP session to come up after the 200
_SERVICE_NAMES = {CpmService.SESSION: "chat", CpmService.LARGEMSG: "large message",
                  CpmService.FILETRANSFER: "file transfer"}


def new_id() -> str:
    return secrets.token_urlsafe(12)


def identity(request: Request) -> str:
    """The asserted identity of the sender (P-Asserted-Identity, else From)."""
    for value in request.headers.get_all("P-Asserted-Identity"):
        try:
            return str(NameAddr.parse(value.split(",")[0]).uri)
        except (HeaderError, ValueError):
            continue
    return str(request.from_.uri)


class UeEndpoint(SipEndpoint):
    """Sends every request over the registered UDP flow: no 18.1.1 switch to TCP,
    which the P-CSCF would not recognise as this UE (TS 24.229 5.2.2)."""

    pcscf_flow: Flow | None = None

    def request(self, request: Request, dest: Destination | None = None, *,
                branch: str | None = None, flow: Flow | None = None) -> ClientContext:
        return super().request(request, dest, branch=branch, flow=flow or self.pcscf_flow)


class UeCore:
    """One UE's shared state. ``recover`` re-registers (set by the client)."""

    def __init__(self, aor: str, host: str, user_agent: str, endpoint: UeEndpoint,
                 registration: Registration) -> None:
        self.aor, self.host, self.user_agent = aor, host, user_agent
        self.endpoint = endpoint
        self.registration = registration
        self.msrp = MsrpEndpoint(host, 0)
        self.ua: UserAgent | None = None
        self.events: asyncio.Queue[RcsEvent] = asyncio.Queue()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.recover: Callable[[], Awaitable[bool]] = _cannot_recover
        # services that react to other services' events (an IM transfer in a message)
        self.listeners: list[Callable[[RcsEvent], None]] = []

    # -- tasks and events ------------------------------------------------------------
    def emit(self, event: RcsEvent) -> None:
        self.events.put_nowait(event)
        for listener in self.listeners:
            listener(event)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed", exc_info=task.exception())

    # -- CPM requests -----------------------------------------------------------------
    def cpim(self, target: str, content_type: str, body: bytes, message_id: str,
             notify: Iterable[NotificationRequest]) -> bytes:
        """A CPIM message from us asking for the IMDNs in ``notify``."""
        return build_cpim(
            content_type, body, sender=CpimAddress(self.aor), recipients=[CpimAddress(target)],
            date_time=datetime.now(UTC), namespaces=[("imdn", IMDN_NS)],
            headers=[("imdn.Message-ID", message_id),
                     ("imdn.Disposition-Notification", format_disposition_notification(notify))],
        ).to_bytes()

    def cpm_headers(self, service: CpmService, conversation_id: str | None = None,
                    pager: bool = False) -> list[Header]:
        return [*cpm_request_headers(service, conversation_id or new_conversation_id(),
                                     user_agent=self.user_agent, pager=pager),
                ("P-Preferred-Identity", f"<{self.aor}>")]

    def contact_params(self, service: CpmService) -> str:
        """Our Contact's parameters on a request for ``service``: its ICSI and our
        ``+sip.instance`` (seed 003), as on the REGISTER."""
        return contact_params(service, self.registration.instance)

    def origin(self, service: CpmService) -> SipOrigin:
        """A call's origin: us along the registered route, Contact with the ICSI."""
        assert self.ua is not None
        return SipOrigin(self.ua.local, self.ua.contact, tuple(self.registration.route()),
                         contact_params=self.contact_params(service))

    async def pager(self, target: str, body: bytes, service: CpmService,
                    conversation_id: str | None = None, content_type: str = CPIM) -> Response:
        """A MESSAGE for ``service`` along the registered route; once more after
        re-registering on 403. The 2xx (200, or 202 when the network keeps it for
        later); SendError otherwise."""
        headers = self.cpm_headers(service, conversation_id, pager=True)
        contact = NameAddr.parse(f"<{self.registration.contact}>{self.contact_params(service)}",
                                 "Contact")
        for attempt in range(2):
            request = build_request("MESSAGE", target, f"<{self.aor}>", f"<{target}>",
                                    contact=contact, route=self.registration.route(),
                                    headers=headers, body=body, content_type=content_type)
            response = await self.endpoint.request(request).final()
            if response.status == 403 and attempt == 0 and await self.recover():
                continue
            break
        if not 200 <= response.status < 300:
            raise SendError(f"MESSAGE to {target}: {response.status} {response.reason}",
                            response.status)
        return response

    # -- sessions: SDP offer/answer and MSRP set-up --------------------------------------
    def offer(self, session: MsrpSession, direction: Direction, accept: Iterable[str],
              wrapped: Iterable[str], extra: Iterable[Attribute] = ()) -> bytes:
        """An SDP offer as in seed 000: TCP/MSRP, setup active, path, msrp-cema."""
        addr_type = "IP6" if ":" in self.host else "IP4"
        sd = SessionDescription(origin=Origin("-", str(secrets.randbelow(2**31)), "0", "IN",
                                              addr_type, self.host),
                                session_name="-", connection=Connection("IN", addr_type, self.host))
        media = MediaDescription("message", session.local_uri.port or self.msrp.port,
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

    async def invite(self, target: str, offer: bytes, service: CpmService,
                     conversation_id: str | None = None,
                     content_type: str | None = None, headers: Iterable[Header] = ()) -> Call:
        """INVITE (the CPM headers, then ``headers``; one of those named in ``headers``,
        e.g. a rejoin's Contribution-ID, is replaced) and wait for the final response;
        SendError unless 2xx."""
        assert self.ua is not None
        call = await self.ua.invite(target, offer,
                                    overridden(self.cpm_headers(service, conversation_id),
                                               headers),
                                    content_type=content_type, origin=self.origin(service))
        final = await call.wait_final()
        if final is None or not 200 <= final.status < 300:
            status = final.status if final is not None else 408
            reason = final.reason if final is not None else "no answer"
            raise SendError(f"INVITE to {target}: {status} {reason}", status)
        return call

    async def connect(self, session: MsrpSession, call: Call) -> None:
        """Apply the answer's path/setup/CEMA and bring the MSRP session up."""
        remote = parse(call.remote_sdp or b"")
        media = msrp_media(remote)
        if media is None:
            raise SendError("the answer has no MSRP stream")
        # We offered active; only an answer that is active itself makes us wait.
        ours = Setup.PASSIVE if media.setup is Setup.ACTIVE else Setup.ACTIVE
        _bind_remote(session, remote, media, ours)
        await asyncio.wait_for(session.start(), MSRP_SETUP)

    async def outgoing(self, target: str, direction: Direction, accept: Iterable[str],
                       wrapped: Iterable[str], service: CpmService, *,
                       conversation_id: str | None = None, extra: Iterable[Attribute] = (),
                       body: Callable[[bytes], tuple[bytes, str]] | None = None,
                       headers: Iterable[Header] = (),
                       on_message: Callable[[ReceivedMessage], None] | None = None,
                       ) -> tuple[Call, MsrpSession]:
        """Offer an MSRP session, INVITE, bring MSRP up: the call and its session.
        ``body`` wraps the SDP offer (a multipart INVITE body and its type); ``headers``
        go into the INVITE; ``on_message`` takes what arrives from the first SEND. Raises
        SendError (the session closed, the call hung up) when any step fails."""
        session = self.msrp.create_session(setup=MsrpSetup.ACTIVE)
        if on_message is not None:
            session.on_message = on_message
        offer = self.offer(session, direction, accept, wrapped, extra)
        content, content_type = body(offer) if body is not None else (offer, None)
        try:
            call = await self.invite(target, content, service, conversation_id, content_type,
                                     headers)
        except SendError:
            await session.close()
            raise
        try:
            await self.connect(session, call)
        except (TimeoutError, MsrpError, OSError, ValueError) as exc:
            await self.hang_up(call, session)
            what = _SERVICE_NAMES.get(service, "session")
            raise SendError(f"{what} with {target}: MSRP set-up failed: {exc!r}") from None
        return call, session

    def answer(self, session: MsrpSession, offer: SessionDescription,
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
        _bind_remote(session, offer, theirs, ours.setup or Setup.PASSIVE)
        return bytes(sd)

    async def accept(self, call: Call, session: MsrpSession, answer_sdp: bytes | None,
                     service: CpmService) -> bool:
        """200 with our answer and the MSRP session up; False (call ended) otherwise.
        The 200's Contact has the ICSI of ``service`` and our ``+sip.instance``."""
        if answer_sdp is None:
            call.reject(488)
            await session.close()
            return False
        call.session.local_contact_params = self.contact_params(service)
        call.accept(answer_sdp)
        try:
            await asyncio.wait_for(session.start(), MSRP_SETUP)
        except (TimeoutError, MsrpError, OSError) as exc:
            log.warning("MSRP set-up for %s failed: %s", call.call_id, exc)
            await self.hang_up(call, session)
            return False
        return True

    async def hang_up(self, call: Call, session: MsrpSession | None) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call.bye(), 5)
        if session is not None:
            await session.close()


def overridden(defaults: Iterable[Header], headers: Iterable[Header]) -> list[Header]:
    """``defaults`` without those ``headers`` name, then ``headers``."""
    extra = list(headers)
    names = {name.lower() for name, _ in extra}
    return [h for h in defaults if h[0].lower() not in names] + extra


async def _cannot_recover() -> bool:
    return False


def _bind_remote(session: MsrpSession, remote: SessionDescription, media: MediaDescription,
                 ours: Setup) -> None:
    """Remote path, who connects (RFC 6135) and the CEMA address (RFC 6714 section 4)."""
    session.set_remote_path(media.path or [])
    session.setup = MsrpSetup.ACTIVE if ours is Setup.ACTIVE else MsrpSetup.PASSIVE
    conn = remote.connection_for(media)
    if media.msrp_cema and conn is not None:
        session.cema_address = (conn.address, media.port)
