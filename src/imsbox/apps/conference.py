"""The conference AS: the focus of session-based messaging conferences (group chat).

TS 24.247 A.5 / OMA CPM group chat, on the core's PSIs (``sip:conf-*@DOMAIN``,
``sip:group-*@DOMAIN``, the factory ``sip:conf-factory@DOMAIN``): the I-CSCF's
HSS query sends every request for them here, initial or in a dialog (the
200 OK Contact is the conference URI with ``;isfocus``, RFC 4579). It reaches
the core only over SIP; only the trust domain may send to it.

* ``INVITE`` to the factory with SDP and a ``recipient-list`` resource list
  (RFC 5366, multipart/mixed as in seed 003): a new ``sip:conf-ID@DOMAIN``,
  the creator answered, every listed member invited with ``Referred-By``
  (AS -> I-CSCF -> S-CSCF -> P-CSCF -> UE, A.5.2). ``Subject`` is the subject.
  A list that is not XML or names nobody: 400 with the reason.
* ``INVITE`` to a conference URI (A.5.1): joins it; 404 for none, 403 for a
  non-member of a pre-defined group (``imsbox group add``).
* MSRP: one session per participant, terminated here (CEMA, passive to an
  active offer); every message is switched to all other connected
  participants, CPIM ``From`` the sender (as the P-CSCF asserted it) and
  ``To`` the conference; isComposing the same way; no echo.
* ``BYE`` leaves; a conference nobody is connected to ends after
  ``ConferenceSettings.idle_timeout`` (a later INVITE then gets 404).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .. import sdp
from ..config import Config
from ..content import CPIM, ISCOMPOSING, ContentError, parse_cpim
from ..content.cpim import CpimAddress, CpimHeader, build_cpim
from ..content.imdn import IMDN_NS, is_notification, parse_imdn
from ..content.resource_lists import parse_resource_lists
from ..msrp import MsrpEndpoint, MsrpError, MsrpSession, ReceivedMessage
from ..msrp import Setup as MsrpSetup
from ..rcs import cpm
from ..rcs.offer import msrp_media, offer_parts
from ..sip.endpoint import Priority, ServerContext, SipEndpoint
from ..sip.headers import HeaderError, NameAddr, refer_to_target
from ..sip.identity import canonical_public_id
from ..sip.message import Request, Response, new_tag
from ..sip.transaction import TimerValues
from ..sip.trust import TrustedPeers, TrustGuard
from ..sip.ua.events import EventPackageRegistry, NotifierSubscription
from ..sip.ua.invite import InviteConfig, SessionTimerConfig
from ..sip.ua.refer import EventAgent, IncomingRefer
from ..sip.ua.useragent import Call, Origin, UserAgent
from ..sip.uri import SipUri, parse_uri
from ..store import (
    Conference, ConferenceKind, GroupMessage, Participant, ParticipantState, Store,
)
from .anchor import caller_identity, far_offer, near_answer
from .conference_events import CONFERENCE_PACKAGE, full_info, partial_info

__all__ = ["ConferenceAs", "ConferenceError", "ConferenceSettings", "FACTORY_USER", "Copies", "Focus", "Leg"]

log = logging.getLogger(__name__)

FACTORY_USER = "conf-factory"
RESOURCE_LISTS = "application/resource-lists+xml"
RECIPIENT_LIST_INVITE = "recipient-list-invite"
FOCUS_PARAMS = ";isfocus"
ALLOW_EVENTS = "conference"
FOCUS_ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "PRACK", "UPDATE", "REFER",
               "SUBSCRIBE", "NOTIFY")
BIND_TIMEOUT = 10.0
MAX_TRACKED = 10000        # message IDs remembered per conference for routing IMDNs
IN_FLIGHT = 64             # a sender's messages not yet with everyone before it waits
CPM_SESSION_TIMER = SessionTimerConfig(session_expires=3600, min_se=90)
# Our own offer's shape when no participant's offer is at hand (far_offer fills it in).
TEMPLATE_OFFER = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                  b"m=message 9 TCP/MSRP *\r\na=accept-types:message/cpim text/plain\r\n"
                  b"a=accept-wrapped-types:text/plain application/im-iscomposing+xml "
                  b"message/imdn+xml\r\na=path:msrp://127.0.0.1:9/x;tcp\r\n")
# Headers of the creator's INVITE the focus's invitations carry on (seed 003).
INVITE_HEADERS = ("P-Asserted-Service", "Accept-Contact", cpm.CONVERSATION_ID,
                  cpm.CONTRIBUTION_ID, "Subject")


@dataclass(slots=True, frozen=True)
class ConferenceSettings:
    idle_timeout: float = 300.0   # a conference nobody is in ends after this long
    max_wakeup: float = 30.0


class ConferenceError(Exception):
    """A request the focus refuses: ``status`` and ``reason`` of the answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(eq=False)
class Leg:
    """One participant's SIP dialog and MSRP session with the focus."""

    uri: str
    call: Call
    session: MsrpSession
    display_name: str = ""
    outbox: asyncio.Queue[tuple[bytes, int | None, Copies]] = field(
        default_factory=asyncio.Queue)   # (CPIM, log id, the copies it is one of)
    caught_up: set[int] = field(default_factory=set)  # log ids sent from the backlog
    # Bounds this participant's messages in everybody's outboxes: a flooder waits
    # for its own copies, the others' messages pass it.
    in_flight: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(IN_FLIGHT))
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Copies:
    """The copies of one message being delivered; the last frees its sender's slot."""

    __slots__ = ("left", "sender")

    def __init__(self, sender: Leg, left: int) -> None:
        self.sender, self.left = sender, left
        if not left:
            sender.in_flight.release()

    def done(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.sender.in_flight.release()


class Focus:
    """One conference being hosted: its connected legs and the MSRP switch."""

    def __init__(self, node: ConferenceAs, conference: Conference) -> None:
        self.node = node
        self.uri = conference.uri
        self.conference = conference
        self.legs: dict[str, Leg] = {}
        self.offer: sdp.SessionDescription | None = None  # template for invitations
        self.senders: dict[str, str] = {}   # imdn.Message-ID -> who sent it, for the IMDNs
        self.inviting: set[str] = set()     # members being invited back
        self.headers: list[tuple[str, str]] = []

    @property
    def origin(self) -> Origin:
        """Our side of every dialog: the conference, ``;isfocus``, to the I-CSCF."""
        icscf = self.node.config.icscf
        host = f"[{icscf.host}]" if ":" in icscf.host else icscf.host
        uri = parse_uri(self.uri)
        return Origin(NameAddr(uri, self.conference.subject or None), uri,
                      (f"<sip:{host}:{icscf.port};lr>",), contact_params=FOCUS_PARAMS)

    # -- joining ----------------------------------------------------------------------
    async def accept(self, call: Call, offer: sdp.SessionDescription) -> None:
        """Answer a participant's INVITE with our MSRP session (A.5.1 step 12)."""
        msrp = self.node.msrp
        assert msrp is not None
        session = msrp.create_session(setup=MsrpSetup.PASSIVE)
        answer = near_answer(offer, session, msrp)
        media = msrp_media(offer)
        assert media is not None
        session.set_remote_path(media.path or [])
        uri = caller_identity(call.request)
        call.accept(bytes(answer), headers=[("Allow-Events", ALLOW_EVENTS)])
        answered = msrp_media(answer)
        if answered is not None and answered.setup is sdp.Setup.ACTIVE:
            session.setup = MsrpSetup.ACTIVE
            session.cema_address = _cema(offer)
            await call.established.wait()
            await session.connect()
        await self._joined(uri, call, session, call.request.from_.display_name or "")

    async def invite(self, target: str, referred_by: str) -> int:
        """A.5.2: invite ``target`` with our offer, ``Referred-By`` the inviter;
        the final status (for a REFER's NOTIFY)."""
        msrp = self.node.msrp
        ua = self.node.ua
        assert msrp is not None and ua is not None
        session = msrp.create_session(setup=MsrpSetup.ACTIVE)
        offer = self.offer or sdp.parse(TEMPLATE_OFFER)
        headers = [*(self.headers or _session_headers()), ("Referred-By", f"<{referred_by}>"),
                   ("P-Asserted-Identity", f"<{self.uri}>"),
                   ("Allow-Events", ALLOW_EVENTS)]
        await self.node.set_state(self.uri, Participant(target, ParticipantState.PENDING))
        call = await ua.invite(target, bytes(far_offer(offer, session, msrp)), headers,
                               origin=self.origin)
        final = await call.final
        if final is None or final.status >= 300:
            log.info("%s: %s did not join (%s)", self.uri, target,
                     final.status if final else "no answer")
            await session.close()
            await self.node.set_state(self.uri, Participant(
                target, ParticipantState.DISCONNECTED))
            return final.status if final is not None else 408
        try:
            answer = sdp.parse(call.remote_sdp or b"")
            media = msrp_media(answer)
            if media is None:
                raise LookupError("no MSRP media line")
            session.set_remote_path(media.path or [])
            session.cema_address = _cema(answer)
            await asyncio.wait_for(session.connect(), BIND_TIMEOUT)
        except (sdp.SdpError, LookupError, TimeoutError, MsrpError, OSError) as exc:
            log.info("%s: MSRP to %s failed: %s", self.uri, target, exc)
            await session.close()
            await call.bye()
            return 500
        await self._joined(canonical_public_id(target), call, session, "")
        return final.status

    async def _joined(self, uri: str, call: Call, session: MsrpSession,
                      display_name: str) -> None:
        old = self.legs.get(uri)
        if old is not None:   # a second session of the same user replaces the first
            await self._drop(old, hang_up=True)
        leg = Leg(uri, call, session, display_name)
        self.legs[uri] = leg
        leg.tasks = [asyncio.ensure_future(self._pump(leg)),
                     asyncio.ensure_future(self._deliver(leg)),
                     asyncio.ensure_future(self._watch(leg))]
        await self.node.set_state(self.uri, Participant(
            uri, ParticipantState.CONNECTED, display_name, self.node.clock()))
        log.info("%s: %s joined (%d connected)", self.uri, uri, len(self.legs))

    # -- the MSRP switch --------------------------------------------------------------
    async def _pump(self, leg: Leg) -> None:
        async for message in leg.session:
            switched = self._switched(leg, message)
            if switched is None:
                continue
            body, to = switched
            logged = await self._log(leg, message, body) if to is None else None
            if to is not None:
                targets = [self.legs[to]] if to in self.legs else []
            else:
                targets = [other for other in self.legs.values() if other is not leg]
            await leg.in_flight.acquire()
            copies = Copies(leg, len(targets))
            for other in targets:
                other.outbox.put_nowait((body, logged, copies))

    @property
    def keeps_log(self) -> bool:
        """Pre-defined groups keep every message for members who are away."""
        return self.conference.kind is ConferenceKind.PRE_DEFINED

    async def _log(self, leg: Leg, message: ReceivedMessage, body: bytes) -> int | None:
        """Store it (durably, before anyone gets it); the sender has it already."""
        if not self.keeps_log or _is_composing(body):
            return None
        messages = self.node.store.messages
        logged = await messages.append_group_message(GroupMessage(
            self.uri, leg.uri, CPIM, body, message.message_id, self.node.clock()))
        if logged is not None:
            await messages.set_delivered(self.uri, leg.uri, logged)
        return logged

    def _switched(self, leg: Leg, message: ReceivedMessage) -> tuple[bytes, str | None] | None:
        """The message as the others get it, CPIM From the sender (as asserted,
        whatever the UE wrote), To the conference; and who gets it (None: all
        others).  An IMDN goes back to the original sender only, From the recipient."""
        kind = (message.content_type or "text/plain").lower()
        sender, conference = CpimAddress(leg.uri, leg.display_name or None), \
            CpimAddress(self.uri)
        if kind != CPIM:
            return build_cpim(kind, message.body, sender=sender,
                              recipients=[conference]).to_bytes(), None
        try:
            cpim = parse_cpim(message.body)
            notification = is_notification(cpim)
            original = self.senders.get(parse_imdn(cpim.body).message_id) \
                if notification else None
        except ContentError as exc:
            log.info("%s: bad CPIM from %s dropped: %s", self.uri, leg.uri, exc)
            return None
        if notification and original is None:
            return None  # for a message we did not switch
        to = CpimAddress(original) if original is not None else conference
        headers = [h for h in cpim.headers if h.name.lower() not in ("from", "to")]
        cpim.headers = [CpimHeader("From", str(sender)), CpimHeader("To", str(to)), *headers]
        message_id = cpim.get("Message-ID", IMDN_NS)
        if message_id and not notification:
            self.senders[message_id] = leg.uri
            while len(self.senders) > MAX_TRACKED:
                self.senders.pop(next(iter(self.senders)))
        return cpim.to_bytes(), original

    async def _deliver(self, leg: Leg) -> None:
        """What the member missed, in order, then the live messages."""
        if self.keeps_log:
            for kept in await self.node.store.messages.undelivered(self.uri, leg.uri):
                assert kept.id is not None
                if not await self._send(leg, kept.body, kept.id):
                    return
                leg.caught_up.add(kept.id)
        while True:
            body, logged, copies = await leg.outbox.get()
            try:
                if logged is None or logged not in leg.caught_up:  # else: sent already
                    await self._send(leg, body, logged)
            finally:
                copies.done()

    async def _send(self, leg: Leg, body: bytes, logged: int | None) -> bool:
        try:
            await leg.session.send_message(CPIM, body)
        except (MsrpError, OSError) as exc:
            log.info("%s: delivery to %s failed: %s", self.uri, leg.uri, exc)
            return False
        if logged is not None:  # the member has it: not again after a rejoin
            await self.node.store.messages.set_delivered(self.uri, leg.uri, logged)
        return True

    # -- leaving ----------------------------------------------------------------------
    async def _watch(self, leg: Leg) -> None:
        await asyncio.shield(leg.call.terminated)
        if self.legs.get(leg.uri) is leg:
            await self._drop(leg, hang_up=False)

    async def invite_back(self, uri: str) -> None:
        """A member who was away: one invitation at a time."""
        self.inviting.add(uri)
        try:
            await self.invite(uri, self.conference.creator or self.uri)
        finally:
            self.inviting.discard(uri)

    async def remove(self, uri: str) -> bool:
        """RFC 4579 5.5: REFER with ``method=BYE``: the focus ends that dialog."""
        leg = self.legs.get(uri)
        if leg is None:
            return False
        await self._drop(leg, hang_up=True)
        return True

    def may_remove(self, user: str) -> bool:
        """The creator of an ad-hoc conference or an admin of a pre-defined group."""
        return user == self.conference.creator or user in self.conference.admins

    async def _drop(self, leg: Leg, hang_up: bool) -> None:
        if self.legs.get(leg.uri) is leg:
            del self.legs[leg.uri]
        for task in leg.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        while not leg.outbox.empty():  # what it will not get frees its senders
            leg.outbox.get_nowait()[2].done()
        if hang_up and not leg.call.terminated.done():
            with contextlib.suppress(Exception):
                await leg.call.bye()
        await leg.session.close()
        await self.node.set_state(self.uri, Participant(
            leg.uri, ParticipantState.DISCONNECTED, leg.display_name))
        log.info("%s: %s left (%d connected)", self.uri, leg.uri, len(self.legs))
        if not self.legs:
            await self.node.idle(self)

    async def close(self) -> None:
        for leg in list(self.legs.values()):
            for task in leg.tasks:
                task.cancel()
            await leg.session.close()
        self.legs.clear()


class ConferenceAs:
    """The focus node on ``config.conference_as``; ``await start()``, ``await close()``."""

    def __init__(self, config: Config, store: Store, *, timers: TimerValues | None = None,
                 settings: ConferenceSettings | None = None,
                 clock: Callable[[], float] = time.time, trace: bool = False) -> None:
        self.config = config
        self.store = store
        self.timers = timers
        self.settings = settings or ConferenceSettings()
        self.clock = clock
        self.endpoint = SipEndpoint(timers, trace, limits=config.limits.sip,
                                    overload=config.limits.overload)
        self.msrp: MsrpEndpoint | None = None
        self.ua: UserAgent | None = None
        self.events: EventAgent | None = None
        # conference subscriptions: the focus URI and the version sent last (RFC 4575 4.6)
        self.watchers: dict[NotifierSubscription, tuple[str, int]] = {}
        self.foci: dict[str, Focus] = {}
        self.factory = f"sip:{FACTORY_USER}@{config.domain}"
        self._joining: dict[str, Focus] = {}         # Call-ID -> focus, until on_call
        self._invitees: dict[str, list[str]] = {}    # creator's Call-ID -> members to invite
        self._tasks: set[asyncio.Future[object]] = set()
        self._wakeup = asyncio.Event()

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        node = self.config.conference_as
        trust = await TrustedPeers.resolve(self.config.trusted_sockets(),
                                           self.config.security.udp_trust)
        self.endpoint.add_module(TrustGuard(trust, "conference AS"))  # only the core
        port = node.port
        for transport in (t for t in node.transports if t != "tls"):
            port = (await self.endpoint.listen(transport, node.host, port,
                                               reuse_port=transport == "tcp"))[1]
        limits = self.config.limits
        self.msrp = await MsrpEndpoint(
            node.host, 0, idle_timeout=limits.msrp_idle_timeout,
            keepalive_interval=limits.msrp_idle_timeout / 2,
            message_timeout=limits.message_timeout).start()
        host = f"[{node.host}]" if ":" in node.host else node.host
        timers = self.timers or TimerValues()
        self.ua = UserAgent(self.endpoint, f"<sip:{host}:{port}>", f"sip:{host}:{port}",
                            config=InviteConfig(t1=timers.t1, t2=timers.t2,
                                                session_timer=CPM_SESSION_TIMER,
                                                extensions=(RECIPIENT_LIST_INVITE,),
                                                allow=FOCUS_ALLOW),
                            on_call=self._on_call, serve_new=False)
        self.events = EventAgent(self.ua, EventPackageRegistry([CONFERENCE_PACKAGE]),
                                 state_of=self._first_state, on_refer=self._on_refer,
                                 on_subscription=self._subscribed)
        self.endpoint.add_module(_FocusModule(self))
        self.endpoint.add_module(_ControlGuard(self))
        self.endpoint.add_module(_SubjectWatch(self))
        self._spawn(self._housekeeping())
        log.info("conference AS up on %s:%d", node.host, port)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for focus in list(self.foci.values()):
            await focus.close()
        if self.events is not None:
            self.events.close()
        if self.ua is not None:
            await self.ua.close()
        await self.endpoint.close()
        if self.msrp is not None:
            await self.msrp.close()

    def listening_lines(self) -> list[str]:
        return [f"conference AS listening on {d}"
                for d in self.endpoint.transport.listen_addresses]

    def _spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- new INVITEs ------------------------------------------------------------------
    async def serve_invite(self, ctx: ServerContext) -> None:
        request = ctx.request
        try:
            focus = await self._focus_for(request)
        except ConferenceError as exc:
            log.info("INVITE %s from %s: %d %s", request.uri, caller_identity(request),
                     exc.status, exc.reason)
            ctx.respond(Response.for_request(request, exc.status, exc.reason[:120],
                                             to_tag=new_tag()))
            return
        assert self.ua is not None
        self._joining[request.call_id] = focus
        self.ua.new_call(ctx, contact=parse_uri(focus.uri), contact_params=FOCUS_PARAMS)

    async def _on_call(self, call: Call) -> None:
        focus = self._joining.pop(call.call_id, None)
        if focus is None:
            call.reject(500)
            return
        sdp_body = offer_parts(call.request)[0]
        try:
            offer = sdp.parse(sdp_body or b"")
            if msrp_media(offer) is None:
                raise LookupError
        except (sdp.SdpError, LookupError):
            call.reject(488, "Not Acceptable Here - no MSRP media line")
            return
        if focus.offer is None:
            focus.offer = offer
        await focus.accept(call, offer)
        members = self._invitees.pop(call.call_id, [])
        for member in members:
            self._spawn(focus.invite(member, caller_identity(call.request)))

    async def _focus_for(self, request: Request) -> Focus:
        """The conference an INVITE is for (a new one for the factory)."""
        try:
            uri = canonical_public_id(str(request.uri))
            user = caller_identity(request)
        except ValueError:
            raise ConferenceError(400, "Bad Request - Request-URI") from None
        if uri == self.factory:
            return await self._create(request, user)
        focus = self.foci.get(uri)
        conference = focus.conference if focus else await self.store.conferences.get(uri)
        if conference is None:
            conference = await self._group(uri)
        if conference is None:
            raise ConferenceError(404, "Not Found - no such conference")
        if conference.kind is ConferenceKind.PRE_DEFINED:
            group = await self.store.subscribers.get_group(uri)
            members = {canonical_public_id(m) for m in group.members} if group else set()
            if user not in members:
                raise ConferenceError(403, "Forbidden - not a member of this group")
        return focus or self._host(conference, request)

    async def _group(self, uri: str) -> Conference | None:
        """A pre-defined group's conference, made on its first INVITE."""
        group = await self.store.subscribers.get_group(uri)
        if group is None:
            return None
        admins = tuple(canonical_public_id(m) for m in group.members[:1])  # the first listed
        conference = Conference(uri, admins[0] if admins else "", ConferenceKind.PRE_DEFINED,
                                group.name, admins=admins, created_at=self.clock())
        await self.store.conferences.put(conference)
        return conference

    async def _create(self, request: Request, creator: str) -> Focus:
        """RFC 5366 at the factory: a new conference for the listed members."""
        members = _recipients(request)
        uri = f"sip:conf-{secrets.token_hex(6)}@{self.config.domain}"
        subject = request.headers.get("Subject") or ""
        conference = Conference(uri, creator, ConferenceKind.AD_HOC, subject,
                                admins=(creator,), created_at=self.clock())
        await self.store.conferences.create(conference)
        focus = self._host(conference, request)
        self._invitees[request.call_id] = [m for m in members if m != creator]
        log.info("conference %s created by %s for %s", uri, creator, members)
        return focus

    def _host(self, conference: Conference, request: Request | None) -> Focus:
        focus = self.foci.get(conference.uri)
        if focus is None:
            focus = self.foci[conference.uri] = Focus(self, conference)
            focus.headers = [(n, v) for n, v in request.headers
                             if n.title() in _INVITE_TITLES] if request else []
        return focus

    # -- members coming back (third-party REGISTER from the S-CSCF) ---------------------
    def serve_register(self, ctx: ServerContext) -> None:
        request = ctx.request
        try:
            aor = canonical_public_id(str(request.to.uri))
            expires = request.expires()
        except (HeaderError, ValueError):
            ctx.respond(_answer(request, 400, "Bad Request - To"))
            return
        ctx.respond(Response.for_request(request, 200, to_tag=new_tag()))
        if expires:
            self._spawn(self._registered(aor))

    async def _registered(self, aor: str) -> None:
        """Invite a group member who registers to every group with messages it missed."""
        for group in await self.store.subscribers.list_groups():
            if aor not in {canonical_public_id(m) for m in group.members}:
                continue
            focus = self.foci.get(group.uri)
            if focus is not None and (aor in focus.legs or aor in focus.inviting):
                continue
            if not await self.store.messages.undelivered(group.uri, aor, limit=1):
                continue
            if focus is None:
                conference = await self.store.conferences.get(group.uri) or \
                    await self._group(group.uri)
                if conference is None:
                    continue
                focus = self._host(conference, None)
            log.info("%s registered: invited back to %s", aor, group.uri)
            self._spawn(focus.invite_back(aor))

    # -- store ------------------------------------------------------------------------
    async def set_state(self, uri: str, participant: Participant) -> None:
        if not await self.store.conferences.set_participant(uri, participant):
            return
        if participant.state is ParticipantState.CONNECTED:
            await self.store.conferences.set_expiry(uri, None)
        focus = self.foci.get(uri)
        if focus is not None:
            stored = await self.store.conferences.get(uri)
            if stored is not None:
                focus.conference = stored
                self._changed(focus, participant)

    async def change_subject(self, uri: str, subject: str) -> None:
        """A participant's re-INVITE / UPDATE with a new Subject (OMA CPM): stored,
        and a partial notification with the new subject to every watcher."""
        focus = self.foci.get(uri)
        if focus is None or subject == focus.conference.subject:
            return
        if not await self.store.conferences.set_subject(uri, subject):
            return
        stored = await self.store.conferences.get(uri)
        if stored is not None:
            focus.conference = stored
            self._changed(focus, None)

    # -- conference event package (RFC 4575) --------------------------------------------
    def _first_state(self, sub: NotifierSubscription) -> bytes:
        focus = self.foci.get(_resource(sub))
        if focus is None:
            return b""
        self.watchers.setdefault(sub, (focus.uri, 1))
        return full_info(focus.conference, self.watchers[sub][1])

    def _subscribed(self, sub: NotifierSubscription) -> None:
        if sub.event.package == CONFERENCE_PACKAGE.name:
            self.watchers.setdefault(sub, (_resource(sub), 1))

    def _changed(self, focus: Focus, participant: Participant | None) -> None:
        """A partial notification with the next version to every watcher of ``focus``."""
        assert self.events is not None
        for sub, (uri, version) in list(self.watchers.items()):
            if sub.terminated:
                del self.watchers[sub]
                continue
            if uri != focus.uri:
                continue
            self.watchers[sub] = (uri, version + 1)
            self.events.notify(sub, partial_info(focus.conference, version + 1, participant))

    # -- conference control (RFC 4579 REFER) --------------------------------------------
    def refusal(self, request: Request) -> Response | None:
        """REFER / SUBSCRIBE to a conference: participants only (403), 404 for none."""
        if request.method == "SUBSCRIBE" and request.to.tag:
            return None  # a refresh: the notifier knows its dialog
        try:
            uri = canonical_public_id(str(request.uri))
            user = caller_identity(request)
        except ValueError:
            return _answer(request, 400, "Bad Request - Request-URI")
        focus = self.foci.get(uri)
        if focus is None:
            return _answer(request, 404, "Not Found - no such conference")
        if user not in focus.legs:
            return _answer(request, 403, "Forbidden - not a participant of this conference")
        if request.method == "REFER" and _refer_method(request) == "BYE" and \
                not focus.may_remove(user):
            return _answer(request, 403, "Forbidden - only the creator or an admin removes")
        return None

    async def _on_refer(self, incoming: IncomingRefer) -> None:
        assert self.events is not None
        request = incoming.request
        focus = self.foci.get(canonical_public_id(str(request.uri)))
        target = canonical_public_id(str(incoming.target.copy(params=[])
                                         if isinstance(incoming.target, SipUri)
                                         else incoming.target))
        if focus is None:
            self.events.report(incoming, 404)
            return
        if _refer_method(request) == "BYE":
            removed = await focus.remove(target)
            self.events.report(incoming, 200 if removed else 404)
            return
        status = await focus.invite(target, caller_identity(request))
        self.events.report(incoming, status)

    async def idle(self, focus: Focus) -> None:
        """Nobody left: the conference ends after the idle time unless someone joins."""
        await self.store.conferences.set_expiry(
            focus.uri, self.clock() + self.settings.idle_timeout)
        self._wakeup.set()

    async def _housekeeping(self) -> None:
        while True:
            now = self.clock()
            try:
                for conference in await self.store.conferences.expire(now):
                    focus = self.foci.pop(conference.uri, None)
                    if focus is not None:
                        await focus.close()
                    log.info("conference %s ended (idle)", conference.uri)
            except Exception:  # one bad record must not stop the cleanup for good
                log.exception("conference housekeeping failed")
            self._wakeup.clear()
            soonest = await self.store.conferences.next_expiry()
            delay = self.settings.max_wakeup if soonest is None else soonest - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(),
                                       min(max(delay, 0.01), self.settings.max_wakeup))


_INVITE_TITLES = frozenset(h.title() for h in INVITE_HEADERS)


class _FocusModule:
    """New INVITEs to the factory and the conference URIs; the UA's dialog layer
    has everything in a dialog."""

    name = "conference"
    priority = Priority.SERVICE
    methods = ("INVITE", "REGISTER")

    def __init__(self, node: ConferenceAs) -> None:
        self.node = node

    def on_request(self, ctx: ServerContext) -> bool:
        request = ctx.request
        if request.method == "REGISTER":
            self.node.serve_register(ctx)
            return True
        if request.method != "INVITE" or request.to.tag:
            return False
        ctx.spawn(self.node.serve_invite(ctx))
        return True


class _ControlGuard:
    """REFER and SUBSCRIBE are refused here (403 / 404) before the event agent
    would answer them 202 / 200."""

    name = "conference-control"
    priority = Priority.EVENT - 1
    methods = ("REFER", "SUBSCRIBE")

    def __init__(self, node: ConferenceAs) -> None:
        self.node = node

    def on_request(self, ctx: ServerContext) -> bool:
        if ctx.request.method not in self.methods:
            return False
        refusal = self.node.refusal(ctx.request)
        if refusal is None:
            return False
        ctx.respond(refusal)
        return True


class _SubjectWatch:
    """Sees a participant's in-dialog INVITE / UPDATE before the dialog layer
    answers it, for a Subject change (it takes nothing)."""

    name = "conference-subject"
    priority = Priority.DIALOG - 1
    methods = ("INVITE", "UPDATE")

    def __init__(self, node: ConferenceAs) -> None:
        self.node = node

    def on_request(self, ctx: ServerContext) -> bool:
        request = ctx.request
        subject = request.headers.get("Subject")
        if request.method in self.methods and request.to.tag and subject is not None:
            try:
                uri = canonical_public_id(str(request.uri))
            except ValueError:
                return False
            if caller_identity(request) in (f.legs if (f := self.node.foci.get(uri)) else {}):
                self.node._spawn(self.node.change_subject(uri, subject.strip()))
        return False


def _answer(request: Request, status: int, reason: str) -> Response:
    return Response.for_request(request, status, reason,
                                to_tag=request.to.tag or new_tag())


def _refer_method(request: Request) -> str:
    """The ``method`` parameter of Refer-To's URI (RFC 4579 5.5: BYE removes)."""
    try:
        target, _ = refer_to_target(request.header("Refer-To") or "")
    except HeaderError:
        return "INVITE"
    uri = target.uri
    return (uri.param("method") or "INVITE").upper() if isinstance(uri, SipUri) else "INVITE"


def _resource(sub: NotifierSubscription) -> str:
    try:
        return canonical_public_id(str(sub.resource))
    except ValueError:
        return str(sub.resource)


def _recipients(request: Request) -> list[str]:
    """The ``recipient-list`` of a factory INVITE (RFC 5366); 400 when unusable."""
    _, multipart = offer_parts(request)
    if multipart is None:
        raise ConferenceError(400, "Bad Request - no recipient-list body")
    parts = [p for p in multipart.parts if p.content_type == RESOURCE_LISTS]
    if not parts:
        raise ConferenceError(400, "Bad Request - no recipient-list body")
    try:
        lists = parse_resource_lists(parts[0].body)
    except ContentError as exc:
        raise ConferenceError(400, f"Bad Request - resource list: {exc}") from None
    members = []
    for uri in (e.uri for e in lists.all_entries()):
        try:
            members.append(canonical_public_id(uri))
        except ValueError:
            raise ConferenceError(400, f"Bad Request - resource list entry {uri!r}") from None
    if not members:
        raise ConferenceError(400, "Bad Request - resource list names nobody")
    return list(dict.fromkeys(members))


def _session_headers() -> list[tuple[str, str]]:
    """A CPM group session's headers when no creator's INVITE gave them (seed 003)."""
    return [(cpm.P_ASSERTED_SERVICE, cpm.ICSI_SESSION),
            ("Accept-Contact", cpm.accept_contact(cpm.CpmService.SESSION)),
            (cpm.CONVERSATION_ID, cpm.new_conversation_id()),
            (cpm.CONTRIBUTION_ID, cpm.new_contribution_id())]


def _is_composing(cpim: bytes) -> bool:
    try:
        return (parse_cpim(cpim).content_type or "").lower().startswith(ISCOMPOSING)
    except ContentError:
        return False


def _cema(description: sdp.SessionDescription) -> tuple[str, int] | None:
    """RFC 6714: with msrp-cema the connection goes to the c=/m= address."""
    media = msrp_media(description)
    connection = description.connection_for(media) if media is not None else None
    if media is None or not media.msrp_cema or connection is None:
        return None
    return connection.address, media.port

