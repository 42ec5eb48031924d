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
* The per-conference state and the MSRP switch are :mod:`imsbox.apps.focus`.
* ``BYE`` leaves; a conference nobody is connected to ends after
  ``ConferenceSettings.idle_timeout`` (a later INVITE then gets 404).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .. import sdp
from ..config import Config
from ..content import ContentError
from ..content.conference_info import DisconnectionMethod
from ..content.resource_lists import parse_resource_lists
from ..msrp import MsrpEndpoint
from ..rcs import cpm
from ..rcs.offer import msrp_media, offer_parts
from ..sip.endpoint import Priority, ServerContext, SipEndpoint
from ..sip.headers import HeaderError, TargetDialog, refer_to_target
from ..sip.identity import canonical_public_id
from ..sip.message import Request, Response, new_tag
from ..sip.pool import InstancePool
from ..sip.transaction import TimerValues
from ..sip.ua.events import EventPackageRegistry, NotifierSubscription
from ..sip.ua.invite import InviteConfig, SessionTimerConfig
from ..sip.ua.refer import EventAgent, IncomingRefer
from ..sip.ua.useragent import Call, UserAgent
from ..sip.uri import SipUri, Uri, parse_uri
from ..store import (
    Conference, ConferenceKind, Participant, ParticipantState, Store, StoreError,
)
from .node import listen_behind_guard, node_uri, open_msrp
from .anchor import caller_identity
from .conference_events import CONFERENCE_PACKAGE, full_info, partial_info
from .focus import FOCUS_PARAMS, Focus

__all__ = ["ConferenceAs", "ConferenceError", "ConferenceSettings", "FACTORY_USER"]

log = logging.getLogger(__name__)

FACTORY_USER = "conf-factory"
RESOURCE_LISTS = "application/resource-lists+xml"
RECIPIENT_LIST_INVITE = "recipient-list-invite"
FOCUS_ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "PRACK", "UPDATE", "REFER",
               "SUBSCRIBE", "NOTIFY")
CPM_SESSION_TIMER = SessionTimerConfig(session_expires=3600, min_se=90)
# Headers of the creator's INVITE the focus's invitations carry on (seed 003).
INVITE_HEADERS = ("P-Asserted-Service", "Accept-Contact", cpm.CONVERSATION_ID,
                  cpm.CONTRIBUTION_ID, "Subject")


@dataclass(slots=True, frozen=True)
class ConferenceSettings:
    idle_timeout: float = 300.0   # a conference nobody is in ends after this long
    max_wakeup: float = 30.0
    # Several instances ([conference_as] pool): a hosted conference's owner lease,
    # renewed every third of it; a killed owner's conferences move after this long.
    owner_lease: float = 15.0


class ConferenceError(Exception):
    """A request the focus refuses: ``status`` and ``reason`` of the answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


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
        self.holder = ""                             # this instance, in the owner leases
        self.fences: dict[str, int] = {}             # conference URI -> our lease's fence

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        node = self.config.conference_as
        port = await listen_behind_guard(self.endpoint, self.endpoint.listen, self.config, node,
                                         "conference AS")  # only the core
        self.msrp = await open_msrp(node.host, self.config)
        uri = node_uri(node.host, port)
        timers = self.timers or TimerValues()
        self.ua = UserAgent(self.endpoint, f"<{uri}>", uri,
                            config=InviteConfig(t1=timers.t1, t2=timers.t2,
                                                session_timer=CPM_SESSION_TIMER,
                                                extensions=(RECIPIENT_LIST_INVITE,),
                                                allow=FOCUS_ALLOW),
                            on_call=self._on_call, serve_new=False)
        self.events = EventAgent(self.ua, EventPackageRegistry([CONFERENCE_PACKAGE]),
                                 state_of=self._first_state, on_refer=self._on_refer,
                                 on_subscription=self._subscribed,
                                 contact_of=self._contact_of)
        self.endpoint.add_module(_FocusModule(self))
        self.endpoint.add_module(_ControlGuard(self))
        self.endpoint.add_module(_SubjectWatch(self))
        self._spawn(self._housekeeping())
        self.holder = f"{uri};{secrets.token_hex(4)}"   # a restart is a new holder
        self._spawn(self._keep_leases())
        log.info("conference AS up on %s:%d", node.host, port)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for focus in list(self.foci.values()):
            await focus.close()
        for uri in list(self.fences):
            await self._release(uri)   # another instance may take them over at once
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
        if focus is None:
            await self._own(conference)
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
        uri = self._new_uri()
        subject = request.headers.get("Subject") or ""
        conference = Conference(uri, creator, ConferenceKind.AD_HOC, subject,
                                admins=(creator,), created_at=self.clock())
        await self.store.conferences.create(conference)
        await self._own(conference)
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
                try:
                    await self._own(conference)
                except ConferenceError:
                    continue   # another live instance hosts it and invites them back
                focus = self._host(conference, None)
            log.info("%s registered: invited back to %s", aor, group.uri)
            self._spawn(focus.invite_back(aor))

    # -- store ------------------------------------------------------------------------
    async def set_state(self, uri: str, participant: Participant,
                        how: DisconnectionMethod | None = None) -> None:
        if not await self.store.conferences.set_participant(uri, participant):
            return
        if participant.state is ParticipantState.CONNECTED:
            await self.store.conferences.set_expiry(uri, None)
        focus = self.foci.get(uri)
        if focus is not None:
            stored = await self.store.conferences.get(uri)
            if stored is not None:
                focus.conference = stored
                self._changed(focus, participant, how)

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

    def _contact_of(self, request: Request) -> tuple[Uri, str]:
        """A SUBSCRIBE / REFER dialog's Contact: the conference URI with ``;isfocus``,
        so its refreshes and in-dialog requests reach us through the I-CSCF."""
        assert self.ua is not None
        try:
            focus = self.foci.get(canonical_public_id(str(request.uri)))
        except ValueError:
            focus = None
        return (parse_uri(focus.uri), FOCUS_PARAMS) if focus else (self.ua.contact, "")

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

    def _changed(self, focus: Focus, participant: Participant | None,
                 how: DisconnectionMethod | None = None) -> None:
        """A partial notification with the next version to every watcher of ``focus``."""
        assert self.events is not None
        for sub, (uri, version) in list(self.watchers.items()):
            if sub.terminated:
                del self.watchers[sub]
                continue
            if uri != focus.uri:
                continue
            self.watchers[sub] = (uri, version + 1)
            self.events.notify(sub, partial_info(focus.conference, version + 1, participant,
                                                    how=how))

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
        if request.method == "REFER" and not request.to.tag:
            refusal = _target_dialog_refusal(request, focus, user)
            if refusal is not None:
                return refusal
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
                    await self._release(conference.uri)
                    log.info("conference %s ended (idle)", conference.uri)
            except Exception:  # one bad record must not stop the cleanup for good
                log.exception("conference housekeeping failed")
            self._wakeup.clear()
            try:
                soonest = await self.store.conferences.next_expiry()
            except StoreError as exc:  # away (a restart): look again soon
                log.warning("conference housekeeping: %s", exc)
                soonest = now + 1.0
            delay = self.settings.max_wakeup if soonest is None else soonest - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(),
                                       min(max(delay, 0.01), self.settings.max_wakeup))


    # -- several instances: one owner per conference ------------------------------------
    def _new_uri(self) -> str:
        """A new conference URI that hashes to this instance in the pool, so the
        I-CSCF sends its requests here while this instance lives."""
        pool = InstancePool(self.config.conference_as.instances)
        me = self.config.conference_as.uri
        while True:
            uri = f"sip:conf-{secrets.token_hex(6)}@{self.config.domain}"
            if me not in pool or pool.order(uri)[0] == me:
                return uri

    async def _own(self, conference: Conference) -> None:
        """Take the conference's owner lease before hosting it. Taking it over from a
        dead instance rebuilds it from the store (subject, participants); the
        participants it had connected rejoin (their MSRP went with that instance)."""
        uri = conference.uri
        fence = await self.store.conferences.claim_owner(uri, self.holder,
                                                         self.settings.owner_lease)
        if fence is None:
            raise ConferenceError(480, "Temporarily Unavailable - another conference AS "
                                       "instance hosts this conference")
        if uri not in self.fences:
            await self._disconnect_stale(conference)
        self.fences[uri] = fence

    async def _disconnect_stale(self, conference: Conference) -> None:
        """Participants stored as connected whose legs are not here: disconnected."""
        for participant in conference.participants:
            if participant.state is ParticipantState.CONNECTED:
                await self.store.conferences.set_participant(conference.uri, dataclasses.replace(
                    participant, state=ParticipantState.DISCONNECTED))
        stored = await self.store.conferences.get(conference.uri)
        focus = self.foci.get(conference.uri)
        if stored is not None and focus is not None:
            focus.conference = stored

    async def _release(self, uri: str) -> None:
        fence = self.fences.pop(uri, None)
        if fence is not None:
            with contextlib.suppress(StoreError):
                await self.store.conferences.release_owner(uri, fence)

    async def _keep_leases(self) -> None:
        """Renew the leases of the hosted conferences; one another instance has taken
        over (we stalled past the lease) is dropped here, its legs closed."""
        while True:
            await asyncio.sleep(self.settings.owner_lease / 3)
            for uri, fence in list(self.fences.items()):
                try:
                    kept = await self.store.conferences.renew_owner(
                        uri, self.holder, fence, self.settings.owner_lease)
                except StoreError as exc:   # away: try again next round
                    log.warning("conference %s: lease not renewed: %s", uri, exc)
                    continue
                if not kept:
                    log.warning("conference %s: taken over by another instance", uri)
                    self.fences.pop(uri, None)
                    focus = self.foci.pop(uri, None)
                    if focus is not None:
                        await focus.close()


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


def _target_dialog_refusal(request: Request, focus: Focus, user: str) -> Response | None:
    """RFC 4538: a REFER outside the dialog names the sender's own dialog with the
    focus in Target-Dialog (481 for no such dialog, 403 for someone else's)."""
    value = request.headers.get("Target-Dialog")
    if value is None:
        return None
    try:
        named = TargetDialog.parse(value)
    except HeaderError:
        return _answer(request, 400, "Bad Request - Target-Dialog")
    for leg in focus.legs.values():
        dialog = leg.call.session.dialog
        if dialog is not None and dialog.id.call_id == named.call_id and \
                dialog.id.remote_tag == named.local_tag and \
                dialog.id.local_tag == named.remote_tag:
            if leg.uri != user:
                return _answer(request, 403, "Forbidden - Target-Dialog is not your dialog")
            return None
    return _answer(request, 481, "Call/Transaction Does Not Exist - Target-Dialog")


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
