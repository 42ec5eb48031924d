"""Group chat (3GPP TS 24.247 A.5, OMA CPM group sessions; seeds 002, 003).

A group chat is a chat session with the conference focus (RFC 4579): the UE
creates one by INVITEing the conference factory with a ``recipient-list``
resource list beside its SDP (RFC 5366, multipart/mixed), joins one by
INVITEing its conference URI (A.5.1, a pre-defined group's too), or accepts
the focus's invitation (A.5.2: an INVITE whose Contact has ``isfocus``,
``Referred-By`` the inviter). The conference URI is the focus's Contact (the
dialog's remote target): in-dialog REFERs add (``Refer-To: <sip:dave@...>``)
and remove (``Refer-To: <...;method=BYE>``) members, BYE leaves, and a
SUBSCRIBE to it (``Event: conference``, RFC 4575) brings the participant list:
a full ``conference-info`` first, then partial ones by version (section 4.6),
whose differences become participant events.

Messages are CPIM as in a 1-to-1 chat (:class:`~.chat.Chat`), To the
conference; the focus keeps each original sender in CPIM ``From``, which is
the ``from`` of a :class:`GroupMessage` and where its IMDNs go back to.
isComposing goes wrapped in CPIM so the others see who types.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..content import (
    CONFERENCE_INFO,
    CPIM,
    IMDN,
    ISCOMPOSING,
    RESOURCE_LISTS,
    ConferenceInfo,
    ContentError,
    CpimAddress,
    CpimMessage,
    EndpointStatus,
    build_cpim,
    parse_conference_info,
    parse_cpim,
    parse_imdn,
    parse_iscomposing,
)
from ..content.conference_info import NotificationOutcome, User, apply_notification
from ..content.imdn import IMDN_NS, is_notification
from ..content.multipart import BodyPart, build_multipart
from ..content.resource_lists import RECIPIENT_LIST_DISPOSITION, build_recipient_list
from ..msrp import MsrpSession, ReceivedMessage
from ..rcs.cpm import (
    CONTRIBUTION_ID,
    CONVERSATION_ID,
    CpmService,
    new_contribution_id,
    new_conversation_id,
)
from ..sdp import Direction, SessionDescription
from ..sip.endpoint import Priority, ServerContext
from ..sip.headers import HeaderError, NameAddr
from ..sip.message import Request
from ..sip.ua.refer import EventAgent, SubscriptionWatch
from ..sip.ua.events import EventPackage, EventPackageRegistry, NotificationReceived
from ..sip.ua.useragent import Call, Origin
from ..sip.uri import SipUri, parse_uri
from .chat import Chat, ChatService
from .core import Header, UeCore
from .events import (
    Composing,
    GroupJoined,
    GroupLeft,
    GroupMessage,
    GroupSubject,
    ParticipantJoined,
    ParticipantLeft,
    SendError,
)
from .notify import Notifications

__all__ = [
    "FACTORY_USER", "GROUP_TYPES", "GROUP_WRAPPED", "GroupChat", "GroupService", "ReferResult",
    "create_headers", "factory_uri", "focus_of", "participants_of", "recipient_list_body",
    "removal_uri",
]

log = logging.getLogger(__name__)

FACTORY_USER = "conf-factory"
GROUP_TYPES = (CPIM, ISCOMPOSING)
GROUP_WRAPPED = ("text/plain", IMDN, ISCOMPOSING)
CONFERENCE_PACKAGE = EventPackage("conference", CONFERENCE_INFO, default_expires=600)
SUBSCRIBE_EXPIRES = 600
JOIN_STATE_WAIT = 5.0   # seconds for the first conference-info before reporting the join anyway
REFER_WAIT = 15.0       # seconds for a REFER's answer and for its final NOTIFY
UNSUBSCRIBE_WAIT = 1.0  # seconds for the last NOTIFY before the BYE goes anyway
# Endpoint states (RFC 4575 5.7.2) in which a user takes part in the conference.
_PRESENT = frozenset({EndpointStatus.CONNECTED, EndpointStatus.ON_HOLD,
                      EndpointStatus.MUTED_VIA_FOCUS})


def factory_uri(domain: str) -> str:
    """The conference factory URI of ``domain`` (a PSI of the conference AS)."""
    return f"sip:{FACTORY_USER}@{domain}"


def removal_uri(member: str) -> str:
    """The Refer-To URI asking the focus to remove ``member`` (RFC 4579 5.5)."""
    return f"{member};method=BYE"


def recipient_list_body(offer: bytes, members: Iterable[str]) -> tuple[bytes, str]:
    """The ad-hoc create INVITE's body and its Content-Type (RFC 5366, seed 003):
    multipart/mixed with the SDP and the ``recipient-list`` resource list."""
    members = list(members)
    if not members:
        raise SendError("a group needs at least one member besides you")
    listing = build_recipient_list(members).to_xml()
    multipart = build_multipart([
        BodyPart([("Content-Type", "application/sdp")], offer),
        BodyPart([("Content-Type", RESOURCE_LISTS),
                  ("Content-Disposition", RECIPIENT_LIST_DISPOSITION)], listing)])
    return multipart.to_bytes(), multipart.content_type


def create_headers(subject: str | None) -> list[Header]:
    """``Require: recipient-list-invite`` (RFC 5366 4.1) and the group's Subject."""
    return [("Require", "recipient-list-invite"), *([("Subject", subject)] if subject else [])]


def focus_of(request: Request) -> str | None:
    """The conference URI of an INVITE from a focus: its Contact with ``isfocus``."""
    value = request.headers.get("Contact")
    if value is None:
        return None
    try:
        contact = NameAddr.parse(value, "Contact")
    except HeaderError:
        return None
    return _plain(str(contact.uri)) if contact.params.has("isfocus") else None


def _plain(uri: str) -> str:
    """A conference URI without URI parameters (transport, ...), as users name it."""
    parsed = parse_uri(uri)
    return str(parsed.copy(params=[], headers=[])) if isinstance(parsed, SipUri) else uri


def participants_of(info: ConferenceInfo) -> dict[str, str | None]:
    """Who is in the conference (entity -> display name): users not deleted with an
    endpoint connected (or on hold / muted), or with no endpoint status at all."""
    users = info.users.users if info.users is not None else []
    return {u.entity: u.display_text for u in users if u.entity and _present(u)}


def _present(user: User) -> bool:
    statuses = [e.status for e in user.endpoints if e.status is not None]
    return not statuses or any(s in _PRESENT for s in statuses)


def _departure(update: ConferenceInfo, entity: str) -> str:
    """Why a user left, from the notification that said so (RFC 4575 5.7.3)."""
    user = update.user(entity)
    for endpoint in user.endpoints if user is not None else []:
        if endpoint.disconnection_method is not None:
            return endpoint.disconnection_method.value
    return "departed"


@dataclass(slots=True)
class ReferResult:
    """What became of ``invite`` / ``remove``: the REFER's answer (202) and the
    referenced request's final status from the NOTIFY sipfrag (None: not reported)."""

    action: str          # "invite" or "remove"
    target: str
    status: int
    result: int | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.result is None or 200 <= self.result < 300


class _NotifyModule:
    """Lets the EventAgent take NOTIFYs only: SUBSCRIBE and REFER to the UE stay
    answered as before (405), the UE is no notifier nor a REFER recipient."""

    name = "ue-notify"
    priority = Priority.EVENT
    methods = ("NOTIFY",)

    def __init__(self, agent: EventAgent) -> None:
        self.agent = agent

    def on_request(self, ctx: ServerContext) -> bool:
        return ctx.request.method == "NOTIFY" and self.agent.on_request(ctx)


class GroupService(ChatService):
    """Creates, joins and accepts the group chats of one UE (``chats`` by Call-ID)."""

    def __init__(self, core: UeCore, notifications: Notifications,
                 accept_groups: bool = True) -> None:
        super().__init__(core, notifications, accept_groups)
        self._agent: EventAgent | None = None
        self._notify_module: _NotifyModule | None = None

    @property
    def groups(self) -> dict[str, GroupChat]:
        return {k: v for k, v in self.chats.items() if isinstance(v, GroupChat)}

    @property
    def agent(self) -> EventAgent:
        """SUBSCRIBE / NOTIFY / REFER glue beside the UA, made on first use."""
        if self._agent is None:
            assert self.core.ua is not None
            agent = EventAgent(self.core.ua, EventPackageRegistry([CONFERENCE_PACKAGE]))
            self.core.endpoint.remove_module(agent)
            self._notify_module = _NotifyModule(agent)
            self.core.endpoint.add_module(self._notify_module)
            self._agent = agent
        return self._agent

    def origin(self) -> Origin:
        """Requests outside the INVITE dialog (SUBSCRIBE): us along the registered route."""
        ua = self.core.ua
        assert ua is not None
        return Origin(ua.local, ua.contact, tuple(self.core.registration.route()))

    async def create(self, members: Iterable[str], subject: str | None = None, *,
                     conversation_id: str | None = None,
                     contribution_id: str | None = None) -> GroupChat:
        """An ad-hoc group: INVITE the factory with the members' resource list."""
        members = list(members)
        if not members:
            raise SendError("a group needs at least one member besides you")
        target = factory_uri(self.core.aor.split("@", 1)[1])
        return await self._open(target, "created", create_headers(subject),
                                lambda offer: recipient_list_body(offer, members),
                                conversation_id, contribution_id, subject, members)

    async def open(self, target: str) -> GroupChat:
        """Join the conference (or pre-defined group) ``target`` (A.5.1)."""
        return await self.join(target)

    async def join(self, target: str, *, conversation_id: str | None = None,
                   contribution_id: str | None = None) -> GroupChat:
        return await self._open(target, "joined", [], None, conversation_id, contribution_id,
                                None, [])

    async def rejoin(self, group: GroupChat) -> GroupChat:
        """Back into a group left earlier (the same Conversation-ID and Contribution-ID);
        a conference that ended (404) is restarted with the last participants (RCS)."""
        try:
            return await self.join(group.conference, conversation_id=group.conversation_id,
                                   contribution_id=group.contribution_id)
        except SendError as exc:
            if exc.status != 404:
                raise
        others = [p for p in group.participants if p != self.core.aor] or group.members
        return await self.create(others, group.subject, conversation_id=group.conversation_id,
                                 contribution_id=group.contribution_id)

    async def _open(self, target: str, how: str, headers: list[Header],
                    body: Callable[[bytes], tuple[bytes, str]] | None,
                    conversation_id: str | None, contribution_id: str | None,
                    subject: str | None, members: list[str]) -> GroupChat:
        conversation = conversation_id or new_conversation_id()
        contribution = contribution_id or new_contribution_id()
        call, session = await self.core.outgoing(
            target, Direction.SENDRECV, GROUP_TYPES, GROUP_WRAPPED, CpmService.SESSION,
            conversation_id=conversation,
            body=body,
            headers=[(CONTRIBUTION_ID, contribution), *headers])
        dialog = call.session.dialog
        conference = _plain(str(dialog.remote_target)) if dialog is not None else target
        group = GroupChat(self, call, session, conference, conversation, contribution, how,
                          subject=subject, members=members)
        group.opened()
        return group

    async def incoming(self, call: Call, peer: str, offer: SessionDescription) -> None:
        """The focus invites us (A.5.2): answer passive, report who referred us."""
        if not self.accept_chats:
            call.reject(486)
            return
        request = call.request
        session = self.core.msrp.create_session()
        referred_by = request.header("Referred-By")
        inviter = None
        if referred_by:
            with contextlib.suppress(HeaderError):
                inviter = str(NameAddr.parse(referred_by, "Referred-By").uri)
        group = GroupChat(self, call, session, focus_of(request) or peer,
                          request.header(CONVERSATION_ID), request.header(CONTRIBUTION_ID),
                          "invited", subject=request.header("Subject"), invited_by=inviter)
        answer_sdp = self.core.answer(session, offer, GROUP_TYPES, GROUP_WRAPPED,
                                      Direction.SENDRECV)
        if await self.core.accept(call, session, answer_sdp, CpmService.SESSION):
            group.opened()

    async def close(self) -> None:
        await super().close()
        if self._agent is not None:
            self._agent.close()
            if self._notify_module in self.core.endpoint.modules:   # closing twice is fine
                self.core.endpoint.remove_module(self._notify_module)


class GroupChat(Chat):
    """One group chat: ``send``, ``composing``, ``invite``, ``remove``, ``leave``.

    ``participants`` (entity -> display name) follows the conference event
    package; ``joined`` is set once the first state came in (or did not within
    JOIN_STATE_WAIT). ``members`` are those a created group listed."""

    def __init__(self, service: GroupService, call: Call, session: MsrpSession, conference: str,
                 conversation_id: str | None, contribution_id: str | None, how: str, *,
                 subject: str | None = None, invited_by: str | None = None,
                 members: Iterable[str] = ()) -> None:
        super().__init__(service, call, session, conference, conversation_id,
                         how == "invited")
        self.groups = service
        self.how = how                      # "created", "joined" or "invited"
        self.contribution_id = contribution_id
        self.subject = subject
        self.invited_by = invited_by
        self.members = list(members)
        self.participants: dict[str, str | None] = {}
        self.state: ConferenceInfo | None = None
        self.joined = asyncio.Event()
        self._subscription: SubscriptionWatch | None = None

    @property
    def conference(self) -> str:
        return self.peer

    # -- the chat's hooks ----------------------------------------------------------------
    def _started(self) -> None:
        self._core.spawn(self._follow())

    def _ended_event(self, reason: str) -> None:
        core = self._core
        if not self.joined.is_set():
            self._report_joined()
        core.emit(GroupLeft(self.conference, core.aor, self.conference, reason, self.id))
        core.spawn(self._unsubscribe())  # removed or ended: the focus may not end it itself

    def _status_message(self, document: bytes) -> tuple[str, bytes]:
        """isComposing wrapped in CPIM: the focus passes it on with us in From."""
        return CPIM, build_cpim(ISCOMPOSING, document, sender=CpimAddress(self._core.aor),
                                recipients=[CpimAddress(self.conference)],
                                date_time=datetime.now(UTC)).to_bytes()

    def _on_msrp(self, message: ReceivedMessage) -> None:
        kind = (message.content_type or "").split(";", 1)[0].strip().lower()
        try:
            if kind == ISCOMPOSING:
                self._composing(self.conference, message.body)
            elif kind == CPIM:
                self._on_cpim(parse_cpim(message.body))
        except (ContentError, ValueError) as exc:
            log.info("group %s: undecodable %s: %s", self.conference, kind, exc)

    def _on_cpim(self, cpim: CpimMessage) -> None:
        core, notifications = self._core, self.service.notifications
        sender = cpim.sender.uri if cpim.sender is not None else self.conference
        inner = (cpim.content_type or "").split(";", 1)[0].strip().lower()
        if inner == ISCOMPOSING:
            self._composing(sender, cpim.body)
        elif is_notification(cpim) or inner == IMDN:
            if notifications.status(parse_imdn(cpim.body).message_id) is not None:
                notifications.deliver(cpim, sender, self, self.conversation_id, "group")
            # else another participant's notification to a third: not ours to report
        else:
            message_id = cpim.get("Message-ID", IMDN_NS)
            core.emit(GroupMessage(sender, core.aor, self.conference,
                                   cpim.body.decode("utf-8", "replace"), message_id, self.id))
            notifications.acknowledge(cpim, sender, self, self.conversation_id)

    def _composing(self, sender: str, body: bytes) -> None:
        state = parse_iscomposing(body).state.value
        self._core.emit(Composing(sender, self._core.aor, state, self.id))

    # -- members -------------------------------------------------------------------------
    async def invite(self, member: str) -> ReferResult:
        """Ask the focus to invite ``member`` (REFER, RFC 4579 5.5; A.5.2)."""
        return await self._refer("invite", member, member)

    async def remove(self, member: str) -> ReferResult:
        """Ask the focus to remove ``member`` (REFER with ``method=BYE``); the focus
        lets only the creator (or a group's admin) do it: SendError 403 otherwise."""
        return await self._refer("remove", member, removal_uri(member))

    async def _refer(self, action: str, member: str, refer_to: str) -> ReferResult:
        if self.closed.is_set():
            raise SendError(f"the group chat has ended ({self.end_reason})")
        watch = self.groups.agent.refer(self.call, refer_to, referred_by=f"<{self._core.aor}>")
        try:
            answer = await asyncio.wait_for(asyncio.shield(watch.answered), REFER_WAIT)
        except TimeoutError:
            raise SendError(f"{action} {member}: no answer to the REFER", 408) from None
        if answer.status >= 300:
            raise SendError(f"{action} {member}: {answer.status} {answer.reason}",
                            answer.status)
        result = ReferResult(action, member, answer.status, None)
        with contextlib.suppress(TimeoutError):
            final = await asyncio.wait_for(asyncio.shield(watch.done), REFER_WAIT)
            if final is not None:
                result.result, result.reason = final.status, final.reason
        return result

    async def set_subject(self, subject: str) -> None:
        """A new subject for everyone (OMA CPM: an UPDATE with Subject); the others
        hear of it in the conference's notification (``group_subject``)."""
        if self.closed.is_set():
            raise SendError(f"the group chat has ended ({self.end_reason})")
        answer = await self.call.update(headers=[("Subject", subject)])
        if answer is None or answer.status >= 300:
            status = answer.status if answer is not None else 408
            raise SendError(f"subject: {status} {answer.reason if answer else 'no answer'}",
                            status)
        self.subject = subject

    async def leave(self) -> None:
        """End our conference subscription, then BYE."""
        await self.close()

    async def close(self) -> None:
        if not self.closed.is_set():
            await self._unsubscribe()
        await super().close()

    async def _unsubscribe(self) -> None:
        watch = self._subscription
        if watch is not None and not watch.terminated.done():
            with contextlib.suppress(Exception):
                await self.groups.agent.unsubscribe(watch, UNSUBSCRIBE_WAIT)

    # -- the conference event package ----------------------------------------------------
    async def _follow(self) -> None:
        """SUBSCRIBE to the conference; re-subscribe for full state after a gap."""
        agent = self.groups.agent
        while not self.closed.is_set():
            watch = agent.subscribe(self.conference, "conference", expires=SUBSCRIBE_EXPIRES,
                                    accept=(CONFERENCE_INFO,), origin=self.groups.origin())
            self._subscription = watch
            if not await self._notifications(watch):
                break
            self.state = None
            with contextlib.suppress(Exception):
                await agent.unsubscribe(watch, 2)
        if not self.joined.is_set():
            self._report_joined()

    async def _notifications(self, watch: SubscriptionWatch) -> bool:
        """Fold each NOTIFY in; True when full state must be fetched again."""
        while True:
            first = not self.joined.is_set()
            notification = await _next(watch, JOIN_STATE_WAIT if first else None)
            if notification is None:
                if first:
                    self._report_joined()
                if watch.terminated.done():
                    return False
                continue
            try:
                update = parse_conference_info(notification.body)
                result = apply_notification(self.state, update)
            except ContentError as exc:
                log.info("group %s: bad conference-info: %s", self.conference, exc)
                continue
            if result.outcome is NotificationOutcome.NEED_FULL_STATE:
                return True
            if result.outcome is NotificationOutcome.TERMINATED:
                return False
            if result.outcome is NotificationOutcome.APPLIED and result.state is not None:
                self._apply(result.state, update)

    def _apply(self, state: ConferenceInfo, update: ConferenceInfo) -> None:
        self.state = state
        subject = self.subject
        if state.description is not None and state.description.subject:
            self.subject = state.description.subject
        now, before = participants_of(state), self.participants
        self.participants = now
        if not self.joined.is_set():
            self._report_joined()
            return
        core = self._core
        if self.subject is not None and self.subject != subject:
            core.emit(GroupSubject(self.conference, core.aor, self.conference, self.subject,
                                   self.id))
        for entity in now.keys() - before.keys() - {core.aor}:
            core.emit(ParticipantJoined(entity, core.aor, self.conference, now[entity], self.id))
        for entity in before.keys() - now.keys() - {core.aor}:
            core.emit(ParticipantLeft(entity, core.aor, self.conference,
                                      _departure(update, entity), self.id))

    def _report_joined(self) -> None:
        core = self._core
        self.joined.set()
        core.emit(GroupJoined(self.invited_by or self.conference, core.aor, self.conference,
                              sorted(self.participants), self.subject, self.how, self.id,
                              self.conversation_id))


async def _next(watch: SubscriptionWatch, timeout: float | None) -> NotificationReceived | None:
    """The next NOTIFY of ``watch``; None when it ended first or ``timeout`` passed."""
    if not watch.notifications.empty():
        return watch.notifications.get_nowait()
    if watch.terminated.done():
        return None
    get = asyncio.ensure_future(watch.notifications.get())
    either: list[asyncio.Future[Any]] = [get, watch.terminated]
    try:
        await asyncio.wait(either, timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not get.done():
            get.cancel()
    return get.result() if get.done() and not get.cancelled() else None
