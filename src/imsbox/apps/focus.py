"""A conference being hosted: its participants' legs and the MSRP switch
(docs/group-chat.md).  The node (:mod:`imsbox.apps.conference`) owns the SIP
side and the store; a Focus reaches it through :class:`FocusHost`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .. import sdp
from ..config import Config
from ..content import CPIM, ISCOMPOSING, ContentError, parse_cpim
from ..content.conference_info import DisconnectionMethod
from ..content.cpim import CpimAddress, CpimHeader, build_cpim
from ..content.imdn import IMDN_NS, is_notification, parse_imdn
from ..msrp import MsrpEndpoint, MsrpError, MsrpSession, ReceivedMessage
from ..msrp import Setup as MsrpSetup
from ..rcs import cpm
from ..rcs.offer import msrp_media
from ..sip.headers import NameAddr
from ..sip.identity import canonical_public_id
from ..sip.ua.useragent import Call, Origin, UserAgent
from ..sip.uri import parse_uri
from ..store import (
    Conference, ConferenceKind, GroupMessage, Participant, ParticipantState, Store,
)
from .anchor import caller_identity, far_offer, near_answer

__all__ = ["ALLOW_EVENTS", "Copies", "FOCUS_PARAMS", "Focus", "FocusHost", "IN_FLIGHT", "Leg"]

log = logging.getLogger(__name__)

FOCUS_PARAMS = ";isfocus"
ALLOW_EVENTS = "conference"
BIND_TIMEOUT = 10.0
MAX_TRACKED = 10000        # message IDs remembered per conference for routing IMDNs
IN_FLIGHT = 64             # a sender's messages not yet with everyone before it waits
# Our own offer's shape when no participant's offer is at hand (far_offer fills it in).
TEMPLATE_OFFER = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                  b"m=message 9 TCP/MSRP *\r\na=accept-types:message/cpim text/plain\r\n"
                  b"a=accept-wrapped-types:text/plain application/im-iscomposing+xml "
                  b"message/imdn+xml\r\na=path:msrp://127.0.0.1:9/x;tcp\r\n")


class FocusHost(Protocol):
    """What a Focus needs of the conference AS."""

    config: Config
    store: Store
    msrp: MsrpEndpoint | None
    ua: UserAgent | None
    clock: Callable[[], float]

    async def set_state(self, uri: str, participant: Participant,
                        how: DisconnectionMethod | None = None) -> None: ...

    async def idle(self, focus: Focus) -> None: ...


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

    def __init__(self, node: FocusHost, conference: Conference) -> None:
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
                      (f"<sip:{host}:{icscf.port};lr{icscf.transport_param}>",),
                      contact_params=FOCUS_PARAMS)

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
                target, ParticipantState.DISCONNECTED),
                DisconnectionMethod.BUSY if final is not None and final.status in (486, 600)
                else DisconnectionMethod.FAILED)
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
        await self._drop(leg, hang_up=True, how=DisconnectionMethod.BOOTED)
        return True

    def may_remove(self, user: str) -> bool:
        """The creator of an ad-hoc conference or an admin of a pre-defined group."""
        return user == self.conference.creator or user in self.conference.admins

    async def _drop(self, leg: Leg, hang_up: bool,
                    how: DisconnectionMethod = DisconnectionMethod.DEPARTED) -> None:
        """``how`` it left (RFC 4575 5.7.3): booted when removed, departed when it
        sent BYE (or a second session of it took over)."""
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
            leg.uri, ParticipantState.DISCONNECTED, leg.display_name), how)
        log.info("%s: %s left (%d connected)", self.uri, leg.uri, len(self.legs))
        if not self.legs:
            await self.node.idle(self)

    async def close(self) -> None:
        for leg in list(self.legs.values()):
            for task in leg.tasks:
                task.cancel()
            await leg.session.close()
        self.legs.clear()


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

