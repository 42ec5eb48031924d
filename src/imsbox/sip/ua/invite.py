"""INVITE sessions (RFC 3261 13-15, RFC 3262, RFC 3311, RFC 4028), sans-I/O.

An InviteSession is the UA-core state machine of one call, for either role.
It takes messages that the transaction layer already de-duplicated
(``receive_request`` / ``receive_response``) and app actions (``provisional``,
``accept``, ``reinvite`` ...), each with an explicit ``now``; it returns its
output as events (``events()``) and its timers as ``next_deadline()`` /
``on_timer(now)``.  Requests it emits carry no Via: the sender adds one.

Session descriptions are opaque bytes; an OfferAnswer object makes and
takes them.
"""

from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass, field
from typing import Protocol
from collections.abc import Iterable

from ..errors import SipUsageError
from ..headers import HeaderError, RAck, SessionExpires
from ..message import Request, Response
from ..uri import Uri
from .dialog import (
    TARGET_REFRESH_METHODS,
    Dialog,
    DialogId,
    DialogRole,
    UsageKind,
    build_cancel,
)

__all__ = [
    "InviteState", "Reliability", "SessionTimerConfig", "InviteConfig", "OfferAnswer",
    "StaticOfferAnswer", "InviteSession", "SessionError", "SendRequest", "SendAck",
    "SendResponse", "Provisional", "Established", "Terminated", "DialogCreated",
    "DialogEnded", "RequestResult", "options_response", "SDP",
]

log = logging.getLogger(__name__)

SDP = "application/sdp"
Header = tuple[str, str]


class SessionError(SipUsageError, RuntimeError):
    """An action that the session's current state does not allow."""


class InviteState(enum.Enum):
    CALLING = "calling"          # UAC: INVITE sent, no dialog yet
    INCOMING = "incoming"        # UAS: INVITE received, nothing sent
    EARLY = "early"              # early dialog(s) exist
    CONNECTING = "connecting"    # UAS: 2xx sent, waiting for ACK
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Reliability(enum.Enum):
    """How we use reliable provisional responses (RFC 3262)."""

    NONE = "none"
    SUPPORTED = "supported"
    REQUIRED = "required"


class _Offer(enum.Enum):
    IDLE = "idle"
    LOCAL = "local-offer"    # we sent an offer, no answer yet
    REMOTE = "remote-offer"  # we received an offer, not answered yet


@dataclass(slots=True)
class SessionTimerConfig:
    """RFC 4028 preferences: interval, smallest acceptable one, who refreshes."""

    session_expires: int = 1800
    min_se: int = 90
    refresher: str | None = None      # asked for as UAC; None lets the UAS choose
    refresh_method: str = "UPDATE"    # or "INVITE"


@dataclass(slots=True)
class InviteConfig:
    t1: float = 0.5
    t2: float = 4.0
    reliable_provisionals: Reliability = Reliability.SUPPORTED
    session_timer: SessionTimerConfig | None = field(default_factory=SessionTimerConfig)
    allow: tuple[str, ...] = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "PRACK", "UPDATE")
    accept: tuple[str, ...] = (SDP,)
    extensions: tuple[str, ...] = ()   # further option tags served (recipient-list-invite)

    @property
    def supported(self) -> list[str]:
        out = list(self.extensions)
        if self.reliable_provisionals is not Reliability.NONE:
            out.append("100rel")
        if self.session_timer is not None:
            out.append("timer")
        return out


class OfferAnswer(Protocol):
    """The SDP side of the call: makes offers and answers, takes answers."""

    def offer(self) -> bytes: ...

    def answer(self, offer: bytes) -> bytes | None:
        """The answer to a remote offer; None rejects it (488)."""

    def answered(self, answer: bytes) -> None: ...


class StaticOfferAnswer:
    """Always offers/answers with one fixed description; remembers the remote one."""

    def __init__(self, sdp: bytes = b"") -> None:
        self.sdp = sdp
        self.remote: bytes | None = None

    def offer(self) -> bytes:
        return self.sdp

    def answer(self, offer: bytes) -> bytes | None:
        self.remote = offer
        return self.sdp

    def answered(self, answer: bytes) -> None:
        self.remote = answer


# -- events ------------------------------------------------------------------
@dataclass(slots=True)
class SendRequest:
    """Start a client transaction for this request (add a Via first)."""
    request: Request


@dataclass(slots=True)
class SendAck:
    """Send this ACK for a 2xx statelessly (13.2.2.4)."""
    ack: Request


@dataclass(slots=True)
class SendResponse:
    """Answer the server transaction of ``request``; retransmissions are TU-driven."""
    response: Response
    request: Request
    retransmission: bool = False


@dataclass(slots=True)
class Provisional:
    response: Response


@dataclass(slots=True)
class Established:
    """The INVITE completed: UAC got a 2xx, UAS got the ACK."""


@dataclass(slots=True)
class Terminated:
    reason: str
    status: int | None = None


@dataclass(slots=True)
class DialogCreated:
    dialog: Dialog


@dataclass(slots=True)
class DialogEnded:
    dialog: Dialog


@dataclass(slots=True)
class RequestResult:
    """Final response (or None on timeout) to a request the session sent."""
    request: Request
    response: Response | None


Event = (SendRequest | SendAck | SendResponse | Provisional | Established | Terminated
         | DialogCreated | DialogEnded | RequestResult)


@dataclass(slots=True)
class _Retransmit:
    response: Response
    request: Request
    next_at: float
    interval: float
    give_up_at: float


@dataclass(slots=True)
class _Timer:
    """Negotiated session timer (RFC 4028): interval and whether we refresh."""
    interval: int
    local_refresher: bool


def _tokens(message: Request | Response, name: str) -> set[str]:
    try:
        return {t.lower() for t in message.tokens(name)}
    except HeaderError:
        return set()


def _session_expires(message: Request | Response) -> SessionExpires | None:
    value = message.header("Session-Expires")
    try:
        return SessionExpires.parse(value) if value is not None else None
    except HeaderError:
        return None


def _min_se(message: Request | Response) -> int:
    value = message.header("Min-SE")
    try:
        return SessionExpires.parse(value, "Min-SE").delta if value is not None else 0
    except HeaderError:
        return 0


def options_response(request: Request, config: InviteConfig, to_tag: str | None = None) -> Response:
    """11.2: 200 to OPTIONS listing Allow, Accept and Supported."""
    response = Response.for_request(request, 200, to_tag=to_tag)
    response.add_header("Allow", ", ".join(config.allow))
    response.add_header("Accept", ", ".join(config.accept))
    if config.supported:
        response.add_header("Supported", ", ".join(config.supported))
    return response


class InviteSession:
    """One INVITE usage of a dialog, UAC or UAS (RFC 3261 13-15)."""

    usage_kind = UsageKind.INVITE

    def __init__(self, role: DialogRole, invite: Request, local_contact: Uri | None,
                 config: InviteConfig | None, offer_answer: OfferAnswer | None,
                 rng: random.Random | None) -> None:
        self.role = role
        self.invite = invite
        self.local_contact = local_contact
        self.local_contact_params = ""  # Contact header parameters (``;isfocus``)
        self.config = config or InviteConfig()
        self.offer_answer: OfferAnswer = offer_answer or StaticOfferAnswer()
        self.rng = rng or random.Random()
        self.state = InviteState.CALLING if role is DialogRole.UAC else InviteState.INCOMING
        self.dialog: Dialog | None = None
        self.early: dict[str, Dialog] = {}          # UAC early dialogs by remote tag
        self.local_sdp: bytes | None = None
        self.remote_sdp: bytes | None = None
        self.final_status: int | None = None
        self.timer: _Timer | None = None
        self._events: list[Event] = []
        self._offer = _Offer.IDLE
        self._client: dict[tuple[str, int], Request] = {}
        self._reinvite_out: Request | None = None
        self._update_out: Request | None = None
        self._pending_2xx: dict[int, _Retransmit] = {}
        self._acks: dict[tuple[str, int], tuple[Request, float]] = {}
        self._timers: dict[str, float] = {}
        self._glare: tuple[str, bytes] | None = None
        # reliable provisionals (RFC 3262)
        self._reliable = False
        self._rseq = 0
        self._rel_pending: _Retransmit | None = None
        # RSeq of a reliable 1xx still unacknowledged when the 2xx went out: its PRACK
        # may still come and is answered 200 (RFC 3262 3), not 481
        self._rel_outstanding: int | None = None
        self._rel_queue: list[Response] = []
        self._deferred_final: Response | None = None
        self._last_rseq: dict[str, int] = {}
        # UAC cancel / 422 bookkeeping, UAS timer negotiation
        self._got_provisional = False
        self._cancel_wanted = False
        self._cancel_sent = False
        self._last_final: Response | None = None
        self._bye_wanted = False
        self._retries_422 = 0
        self._se_answer: _Timer | None = None
        self._peer_allow = _tokens(invite, "Allow") if role is DialogRole.UAS else set()
        self._se_supported = False

    def __repr__(self) -> str:
        return f"<InviteSession {self.role.value} {self.state.value} {self.invite.call_id}>"

    # -- construction ----------------------------------------------------------
    @classmethod
    def outgoing(cls, invite: Request, now: float, config: InviteConfig | None = None,
                 offer_answer: OfferAnswer | None = None,
                 rng: random.Random | None = None) -> InviteSession:
        """13.2.1: a UAC session; emits the INVITE (decorated with our extensions)."""
        contact = invite.contact[0] if invite.contact else None
        session = cls(DialogRole.UAC, invite, contact.uri if contact else None, config,
                      offer_answer, rng)
        # the feature tags of our INVITE's Contact stay on the dialog's later Contacts
        session.local_contact_params = str(contact.params) if contact else ""
        session._decorate_invite(invite)
        if invite.body:
            session._offer = _Offer.LOCAL
            session.local_sdp = invite.body
        session._send(invite)
        return session

    @classmethod
    def incoming(cls, invite: Request, now: float, config: InviteConfig | None = None,
                 offer_answer: OfferAnswer | None = None, local_contact: Uri | None = None,
                 local_tag: str | None = None, secure: bool = False,
                 rng: random.Random | None = None) -> InviteSession:
        """13.3.1: a UAS session for a new INVITE; it may reject at once (420/421/422)."""
        session = cls(DialogRole.UAS, invite, local_contact, config, offer_answer, rng)
        session.dialog = Dialog.from_uas(invite, local_tag, local_contact, secure)
        status, headers = session._check_invite(invite)
        if status is not None:
            session.reject(status, now, headers=headers)
            return session
        session._events.append(DialogCreated(session.dialog))
        if invite.body:
            session._offer = _Offer.REMOTE
            session.remote_sdp = invite.body
        return session

    def _decorate_invite(self, invite: Request) -> None:
        cfg = self.config
        if "Allow" not in invite.headers:
            invite.add_header("Allow", ", ".join(cfg.allow))
        if cfg.supported and "Supported" not in invite.headers:
            invite.add_header("Supported", ", ".join(cfg.supported))
        if cfg.reliable_provisionals is Reliability.REQUIRED:
            invite.add_header("Require", "100rel")
        st = cfg.session_timer
        if st is not None and "Session-Expires" not in invite.headers:
            refresher = f";refresher={st.refresher}" if st.refresher else ""
            invite.add_header("Session-Expires", f"{st.session_expires}{refresher}")
            invite.add_header("Min-SE", str(st.min_se))
        if invite.body and invite.content_type is None:
            invite.add_header("Content-Type", SDP)

    def _check_invite(self, invite: Request) -> tuple[int | None, list[Header]]:
        """8.2.2.3 Require, RFC 3262 100rel, RFC 4028 section 9 checks."""
        supported = {s.lower() for s in self.config.supported}
        unknown = [t for t in invite.tokens("Require") if t.lower() not in supported]
        if unknown:
            return 420, [("Unsupported", ", ".join(unknown))]
        peer = _tokens(invite, "Supported") | _tokens(invite, "Require")
        rel = self.config.reliable_provisionals
        if rel is Reliability.REQUIRED and "100rel" not in peer:
            return 421, [("Require", "100rel")]
        self._reliable = "100rel" in peer and rel is not Reliability.NONE
        return self._negotiate_timer(invite)

    # -- output ----------------------------------------------------------------
    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def _send(self, request: Request) -> None:
        self._client[(request.method, request.cseq.seq)] = request
        self._events.append(SendRequest(request))

    @property
    def terminated(self) -> bool:
        return self.state is InviteState.TERMINATED

    @property
    def dialogs(self) -> list[Dialog]:
        out = list(self.early.values())
        if self.dialog is not None and self.dialog not in out:
            out.append(self.dialog)
        return out

    def _response(self, request: Request, status: int, body: bytes = b"",
                  headers: Iterable[Header] = ()) -> Response:
        tag = self.dialog.id.local_tag if self.dialog else None
        response = Response.for_request(request, status, to_tag=tag, body=body,
                                         content_type=SDP if body else None)
        if (100 < status < 300 and self.local_contact is not None
                and request.method in TARGET_REFRESH_METHODS):
            response.add_header("Contact", f"<{self.local_contact}>{self.local_contact_params}")
        if 100 < status < 300 and request.method in ("INVITE", "UPDATE"):
            response.add_header("Allow", ", ".join(self.config.allow))
            if self.config.supported:
                response.add_header("Supported", ", ".join(self.config.supported))
        for name, value in headers:
            response.add_header(name, value)
        return response

    def _respond(self, request: Request, status: int, body: bytes = b"",
                 headers: Iterable[Header] = ()) -> Response:
        response = self._response(request, status, body, headers)
        self._events.append(SendResponse(response, request))
        return response

    # -- timers ----------------------------------------------------------------
    def next_deadline(self) -> float | None:
        times = list(self._timers.values())
        times += [min(r.next_at, r.give_up_at) for r in self._pending_2xx.values()]
        if self._rel_pending is not None:
            times.append(min(self._rel_pending.next_at, self._rel_pending.give_up_at))
        times += [expiry for _, expiry in self._acks.values()]
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        self._acks = {k: v for k, v in self._acks.items() if v[1] > now}
        for seq, rt in list(self._pending_2xx.items()):
            if now >= rt.give_up_at:
                del self._pending_2xx[seq]
                self._no_ack(now)
            elif now >= rt.next_at:
                self._retransmit(rt, now, cap=self.config.t2)
        rel = self._rel_pending
        if rel is not None:
            if now >= rel.give_up_at:
                self._rel_pending = None
                self.reject(500, now, reason="Reliable Provisional Not Acknowledged")
            elif now >= rel.next_at:
                self._retransmit(rel, now, cap=None)
        for name, when in list(self._timers.items()):
            if now >= when and self._timers.get(name) == when:
                del self._timers[name]
                getattr(self, f"_fire_{name}")(now)

    def _retransmit(self, rt: _Retransmit, now: float, cap: float | None) -> None:
        self._events.append(SendResponse(rt.response, rt.request, retransmission=True))
        rt.interval = rt.interval * 2 if cap is None else min(rt.interval * 2, cap)
        rt.next_at = now + rt.interval

    def _start_retransmit(self, response: Response, request: Request,
                          now: float) -> _Retransmit:
        t1 = self.config.t1
        return _Retransmit(response, request, now + t1, t1, now + 64 * t1)

    def _no_ack(self, now: float) -> None:
        """13.3.1.4: no ACK within 64*T1: the dialog is confirmed, end it with BYE."""
        log.info("no ACK for 2xx in %s, sending BYE", self.invite.call_id)
        if self.state is InviteState.CONNECTING:
            self.state = InviteState.CONFIRMED
        self._send_bye("no ACK", 408)

    # -- UAS: responding to the INVITE -------------------------------------
    def _require_incoming(self) -> None:
        if self.role is not DialogRole.UAS or self.state not in (InviteState.INCOMING,
                                                                   InviteState.EARLY):
            raise SessionError(f"no INVITE to answer in state {self.state.value}")

    def provisional(self, now: float, status: int = 180, body: bytes = b"",
                    headers: Iterable[Header] = (), reliable: bool | None = None) -> Response:
        """13.3.1.1: a 1xx with our tag; reliable (RFC 3262) when 100rel is in use."""
        self._require_incoming()
        if not 100 < status < 200:
            raise SessionError(f"{status} is not a provisional status")
        reliable = self._reliable if reliable is None else (reliable and self._reliable)
        response = self._response(self.invite, status, body, headers)
        self.state = InviteState.EARLY
        if not reliable:
            self._events.append(SendResponse(response, self.invite))
        elif self._rel_pending is not None:
            self._rel_queue.append(response)  # RFC 3262 3: one unacknowledged at a time
        else:
            self._send_reliable(response, now)
        return response

    def _send_reliable(self, response: Response, now: float) -> None:
        """RFC 3262 3: Require 100rel, RSeq, retransmit at T1 doubling until PRACK."""
        if self._rseq == 0:
            self._rseq = self.rng.randint(1, 2**31 - 1)
        else:
            self._rseq += 1
        response.add_header("Require", "100rel")
        response.add_header("RSeq", str(self._rseq))
        if response.body:
            self._local_sdp_out(response.body)
        self._rel_pending = self._start_retransmit(response, self.invite, now)
        self._events.append(SendResponse(response, self.invite))

    def _local_sdp_out(self, body: bytes) -> None:
        """A body we send: answers a remote offer, else is our offer."""
        self.local_sdp = body
        self._offer = _Offer.IDLE if self._offer is _Offer.REMOTE else _Offer.LOCAL

    def _remote_sdp_in(self, body: bytes) -> bytes | None:
        """A body we got: completes our offer (returns None) or is an offer (returns answer)."""
        self.remote_sdp = body
        if self._offer is _Offer.LOCAL:
            self._offer = _Offer.IDLE
            self.offer_answer.answered(body)
            return None
        self._offer = _Offer.REMOTE
        answer = self.offer_answer.answer(body)
        if answer is not None:
            self._local_sdp_out(answer)
        return answer

    def accept(self, now: float, body: bytes | None = None,
               headers: Iterable[Header] = ()) -> Response:
        """13.3.1.4: the 2xx carries the answer (or our offer if the INVITE had none)."""
        self._require_incoming()
        if self._deferred_final is not None:
            raise SessionError("already accepted")
        if self._offer is _Offer.REMOTE:
            body = body if body is not None else self.offer_answer.answer(self.remote_sdp or b"")
            if body is None:
                return self.reject(488, now)
        elif self._offer is _Offer.IDLE and self.local_sdp is None:
            body = body if body is not None else self.offer_answer.offer()
        else:
            body = b""  # the answer already went in a reliable provisional
        hdrs = list(headers) + self._timer_headers(self._se_answer)
        response = self._response(self.invite, 200, body or b"", hdrs)
        if self._rel_pending is not None and self._rel_pending.response.body:
            self._deferred_final = response  # RFC 3262 3: wait for the PRACK
            return response
        self._send_2xx(response, now)
        return response

    def _send_2xx(self, response: Response, now: float) -> None:
        if response.body:
            self._local_sdp_out(response.body)
        if self._rel_pending is not None:
            self._rel_outstanding = int(self._rel_pending.response.header("RSeq") or 0)
        self._rel_pending, self._rel_queue, self._deferred_final = None, [], None
        self.final_status = response.status
        assert self.dialog is not None
        self.dialog.confirm()
        self.state = InviteState.CONNECTING
        self._pending_2xx[self.invite.cseq.seq] = self._start_retransmit(response, self.invite, now)
        self._events.append(SendResponse(response, self.invite))
        self._start_timer(self._se_answer, now)

    def reject(self, status: int, now: float, reason: str | None = None,
               headers: Iterable[Header] = ()) -> Response:
        """A final non-2xx to the INVITE; ends the session."""
        if self.role is not DialogRole.UAS or self.final_status is not None:
            raise SessionError("nothing to reject")
        response = self._response(self.invite, status, headers=headers)
        if reason:
            response.reason = reason
        self._last_final = response
        self.final_status = status
        self._rel_pending, self._rel_queue, self._deferred_final = None, [], None
        self._events.append(SendResponse(response, self.invite))
        self._terminate(f"rejected {status}", status)
        return response

    def cancel_received(self, now: float) -> bool:
        """9.2: CANCEL before a final response: 487 to the INVITE."""
        if self.role is not DialogRole.UAS or self.final_status is not None:
            return False
        self.reject(487, now)
        return True

    # -- UAC: the INVITE's responses -------------------------------------------
    def cancel(self, now: float) -> None:
        """9.1: CANCEL the INVITE; held back until a provisional arrived."""
        if self.role is not DialogRole.UAC or self.state not in (InviteState.CALLING,
                                                                   InviteState.EARLY):
            raise SessionError(f"cannot cancel in state {self.state.value}")
        if self._cancel_wanted:
            return
        self._cancel_wanted = True
        if self._got_provisional:
            self._events.append(SendRequest(build_cancel(self.invite)))

    def receive_response(self, response: Response, now: float) -> None:
        """A response to a request this session sent."""
        key = (response.cseq.method, response.cseq.seq)
        request = self._client.get(key)
        if request is None:
            if response.cseq.method == "INVITE" and 200 <= response.status < 300:
                self._stray_2xx(response, now)
            return
        if response.status >= 200 and request.method != "INVITE":
            del self._client[key]
        if request.method == "INVITE":
            if request is self.invite:
                self._initial_response(response, now)
            else:
                self._reinvite_response(request, response, now)
        elif response.status >= 200:
            self._final_response(request, response, now)

    def request_failed(self, request: Request, now: float) -> None:
        """The transaction for ``request`` timed out or failed (8.1.3.1: as 408)."""
        failure = Response.for_request(request, 408)
        self.receive_response(failure, now)

    def _stray_2xx(self, response: Response, now: float) -> None:
        """A 2xx retransmission after we finished with the INVITE: re-ACK it."""
        cached = self._acks.get((response.to.tag or "", response.cseq.seq))
        if cached is not None:
            self._events.append(SendAck(cached[0]))

    def _initial_response(self, response: Response, now: float) -> None:
        status = response.status
        if status < 200:
            self._initial_provisional(response, now)
        elif status < 300:
            self._initial_2xx(response, now)
        elif self.final_status is None:
            self._initial_failure(response, now)

    def _initial_provisional(self, response: Response, now: float) -> None:
        if self.final_status is not None:
            return
        self._got_provisional = True
        if self._cancel_wanted and self.state is not InviteState.TERMINATED:
            self._events.append(SendRequest(build_cancel(self.invite)))
            self._cancel_wanted = False
            self._cancel_sent = True
        if response.status == 100:
            return
        dialog = self._early_dialog(response)
        if (dialog is not None and "100rel" in _tokens(response, "Require")
                and not self._prack(dialog, response, now)):
            return
        self._events.append(Provisional(response))

    def _early_dialog(self, response: Response) -> Dialog | None:
        tag = response.to.tag
        if not tag:
            return None
        dialog = self.early.get(tag)
        if dialog is None:
            dialog = Dialog.from_uac(self.invite, response)
            self.early[tag] = dialog
            self._events.append(DialogCreated(dialog))
            if self.state is InviteState.CALLING:
                self.state = InviteState.EARLY
        return dialog

    def _prack(self, dialog: Dialog, response: Response, now: float) -> bool:
        """RFC 3262 4: PRACK each new reliable 1xx; drop retransmissions and gaps."""
        try:
            rseq = int((response.header("RSeq") or "").strip())
        except ValueError:
            return False
        tag = dialog.id.remote_tag
        last = self._last_rseq.get(tag)
        if last is not None and rseq != last + 1:
            log.debug("dropping reliable 1xx RSeq %d (last %d)", rseq, last)
            return False
        self._last_rseq[tag] = rseq
        body = b""
        if response.body:
            body = self._remote_sdp_in(response.body) or b""
        prack = dialog.create_request(
            "PRACK", [("RAck", str(RAck(rseq, response.cseq.seq, "INVITE")))],
            body, SDP if body else None)
        self._send(prack)
        return True

    def _initial_2xx(self, response: Response, now: float) -> None:
        tag = response.to.tag or ""
        cached = self._acks.get((tag, response.cseq.seq))
        if cached is not None:
            self._events.append(SendAck(cached[0]))  # 13.2.2.4: ACK each retransmission
            return
        dialog = self.early.pop(tag, None)
        if dialog is not None:
            dialog.confirm(response)
        else:
            dialog = Dialog.from_uac(self.invite, response)
            self._events.append(DialogCreated(dialog))
        if self.dialog is not None or self.terminated:
            # another fork answered too, or we gave up already: ACK and end it (13.2.2.4)
            self._ack(dialog, response, b"", now)
            self._events.append(SendRequest(dialog.create_request("BYE")))
            dialog.terminate()
            self._events.append(DialogEnded(dialog))
            return
        self.dialog = dialog
        self.final_status = response.status
        self._peer_allow = _tokens(response, "Allow")
        answer = b""
        if response.body and (self._offer is _Offer.LOCAL or self.local_sdp is None):
            answer = self._remote_sdp_in(response.body) or b""
        self._ack(dialog, response, answer, now)
        for other in self.early.values():
            other.terminate()
            self._events.append(DialogEnded(other))
        self.early.clear()
        self.state = InviteState.CONFIRMED
        self._events.append(RequestResult(self.invite, response))
        self._events.append(Established())
        self._uac_timer(response, now)
        if self._cancel_wanted or self._cancel_sent:
            self._send_bye("cancelled", None)  # 9.1: the CANCEL lost the race with the 2xx
        elif self._offer is _Offer.REMOTE:
            self._send_bye("offer in 2xx not acceptable", 488)  # 13.2.2.4

    def _ack(self, dialog: Dialog, response: Response, body: bytes, now: float) -> None:
        ack = dialog.create_ack(response.cseq.seq, body, SDP if body else None)
        self._acks[(dialog.id.remote_tag, response.cseq.seq)] = (ack, now + 64 * self.config.t1)
        self._events.append(SendAck(ack))

    def _initial_failure(self, response: Response, now: float) -> None:
        if response.status == 422 and self._retry_422(response):
            return
        self.final_status = response.status
        self._events.append(RequestResult(self.invite, response))
        self._terminate(f"failed {response.status}", response.status)

    def _retry_422(self, response: Response) -> bool:
        """RFC 4028 7.4: retry with Session-Expires raised to the 422's Min-SE."""
        min_se = _min_se(response)
        if min_se <= 0 or self._retries_422 >= 2:
            return False
        self._retries_422 += 1
        old = self.invite
        del self._client[("INVITE", old.cseq.seq)]
        retry = old.copy()
        retry.remove_header("Via")
        retry.set_header("CSeq", f"{old.cseq.seq + 1} INVITE")
        current = _session_expires(old)
        delta = max(min_se, current.delta if current else 0)
        refresher = current.refresher if current else None
        retry.set_header("Session-Expires", f"{delta};refresher={refresher}" if refresher
                         else str(delta))
        retry.set_header("Min-SE", str(min_se))
        self.invite = retry
        self._got_provisional = False
        self._send(retry)
        return True

    # -- in-dialog requests we send ------------------------------------------
    def _require_dialog(self, early_ok: bool = False) -> Dialog:
        if self.state is InviteState.CONFIRMED and self.dialog is not None:
            return self.dialog
        if early_ok:
            dialog = self.dialog or next(iter(self.early.values()), None)
            if dialog is not None and self.state is InviteState.EARLY:
                return dialog
        raise SessionError(f"no usable dialog in state {self.state.value}")

    def reinvite(self, now: float, body: bytes | None = None,
                 headers: Iterable[Header] = ()) -> Request:
        """14.1: a re-INVITE; none while another INVITE is pending either way."""
        dialog = self._require_dialog()
        if self._reinvite_out is not None or self._pending_2xx or self._glare:
            raise SessionError("an INVITE transaction is already in progress")
        request = self._offer_request(dialog, "INVITE", body, headers)
        self._reinvite_out = request
        self._send(request)
        return request

    def update(self, now: float, body: bytes | None = None,
               headers: Iterable[Header] = ()) -> Request:
        """RFC 3311 5.1: UPDATE in an early or confirmed dialog."""
        dialog = self._require_dialog(early_ok=True)
        if self._update_out is not None:
            raise SessionError("an UPDATE is already in progress")
        request = self._offer_request(dialog, "UPDATE", body, headers)
        self._update_out = request
        self._send(request)
        return request

    def _offer_request(self, dialog: Dialog, method: str, body: bytes | None,
                       headers: Iterable[Header]) -> Request:
        """An in-dialog INVITE or UPDATE; a body is our offer."""
        if body and self._offer is not _Offer.IDLE:
            raise SessionError("an offer is already outstanding")
        hdrs = list(headers) + self._refresh_headers()
        if not dialog.contact_params:  # the same Contact (and feature tags) as the INVITE's
            dialog.contact_params = self.local_contact_params
        request = dialog.create_request(method, hdrs, body or b"", SDP if body else None)
        if body:
            self._local_sdp_out(body)
        return request

    def bye(self, now: float) -> None:
        """15.1.1: end the session; a UAS waiting for the ACK sends BYE after it."""
        if self.state is InviteState.CONNECTING:
            self._bye_wanted = True
            return
        if self.role is DialogRole.UAC and self.state in (InviteState.CALLING, InviteState.EARLY):
            self.cancel(now)
            return
        self._require_dialog()
        self._send_bye("local BYE", None)

    def _send_bye(self, reason: str, status: int | None) -> None:
        dialog = self.dialog
        if dialog is not None and not dialog.terminated:
            self._send(dialog.create_request("BYE"))
        self._terminate(reason, status)

    def _reinvite_response(self, request: Request, response: Response, now: float) -> None:
        tag = response.to.tag or ""
        if 200 <= response.status < 300 and (tag, response.cseq.seq) in self._acks:
            self._events.append(SendAck(self._acks[(tag, response.cseq.seq)][0]))
            return
        if response.status < 200 or request is not self._reinvite_out:
            return
        self._reinvite_out = None
        assert self.dialog is not None
        if response.status < 300:
            self.dialog.receive_response("INVITE", response)
            answer = b""
            if response.body:
                answer = self._remote_sdp_in(response.body) or b""
            self._ack(self.dialog, response, answer, now)
            self._uac_timer(response, now)
        else:
            self._offer_failed(request, response, now)
        self._events.append(RequestResult(request, response))

    def _final_response(self, request: Request, response: Response, now: float) -> None:
        """Final responses to PRACK, UPDATE, BYE and other non-INVITE requests."""
        if request.method == "UPDATE" and request is self._update_out:
            self._update_out = None
            if response.status < 300:
                dialog = self._dialog_by_id(DialogId.for_incoming_response(response))
                if dialog is not None:
                    dialog.receive_response("UPDATE", response)
                if response.body and self._offer is _Offer.LOCAL:
                    self._remote_sdp_in(response.body)
                self._uac_timer(response, now)
            else:
                self._offer_failed(request, response, now)
        self._events.append(RequestResult(request, response))

    def _offer_failed(self, request: Request, response: Response, now: float) -> None:
        """14.1 / RFC 3311: a failed offer leaves the old session; 491 retries later."""
        if request.body and self._offer is _Offer.LOCAL:
            self._offer = _Offer.IDLE
        status = response.status
        if status == 491:
            self._schedule_glare(request, now)
        elif status == 422 and _min_se(response) > 0 and self.timer is not None:
            self.timer.interval = max(self.timer.interval, _min_se(response))
            self._refresh(now)
        elif status in (481, 408) and self.state is InviteState.CONFIRMED:
            self._send_bye(f"{request.method} failed {status}", status)  # 12.2.1.2

    def _schedule_glare(self, request: Request, now: float) -> None:
        """14.1: retry after 2.1-4 s if we own the Call-ID, else 0-2 s (10 ms steps)."""
        owner = self.dialog is not None and self.dialog.role is DialogRole.UAC
        steps = self.rng.randint(210, 400) if owner else self.rng.randint(0, 200)
        self._glare = (request.method, request.body)
        self._timers["glare"] = now + steps / 100

    def _fire_glare(self, now: float) -> None:
        if self._glare is None or self.terminated:
            return
        method, body = self._glare
        self._glare = None
        try:
            if method == "INVITE":
                self.reinvite(now, body or None)
            else:
                self.update(now, body or None)
        except SessionError as exc:
            log.info("glare retry of %s dropped: %s", method, exc)

    # -- in-dialog requests we receive ----------------------------------------
    def _dialog_by_id(self, dialog_id: DialogId) -> Dialog | None:
        for dialog in self.dialogs:
            if dialog.id == dialog_id:
                return dialog
        return None

    def receive_request(self, request: Request, now: float) -> bool:
        """An in-dialog request for this session; False if the app should handle it."""
        dialog = self._dialog_by_id(DialogId.for_incoming_request(request))
        if dialog is None or dialog.terminated:
            if request.method != "ACK":
                self._respond(request, 481)
            return True
        status = dialog.receive_request(request)
        if status is not None:
            self._respond(request, status)
            return True
        handler = getattr(self, f"_on_{request.method.lower()}", None)
        if handler is None:
            return False
        handler(dialog, request, now)
        return True

    def _on_ack(self, dialog: Dialog, request: Request, now: float) -> None:
        """13.3.1.4: the ACK stops 2xx retransmission; it may carry the answer."""
        if self._pending_2xx.pop(request.cseq.seq, None) is None:
            return
        if request.body and self._offer is _Offer.LOCAL:
            self._remote_sdp_in(request.body)
        if self.state is InviteState.CONNECTING:
            self.state = InviteState.CONFIRMED
            self._events.append(Established())
        if self._bye_wanted:
            self._send_bye("local BYE", None)

    def _on_bye(self, dialog: Dialog, request: Request, now: float) -> None:
        """15.1.2: 200 to BYE; a pending INVITE gets 487."""
        self._respond(request, 200)
        if self.role is DialogRole.UAS and self.final_status is None:
            self._respond(self.invite, 487)
            self.final_status = 487
        self._terminate("remote BYE", None)

    def _on_prack(self, dialog: Dialog, request: Request, now: float) -> None:
        """RFC 3262 3: a PRACK matching the unacknowledged 1xx stops its retransmission."""
        pending = self._rel_pending
        try:
            rack = RAck.parse(request.header("RAck") or "")
        except HeaderError:
            self._respond(request, 400)
            return
        ours = rack.method == "INVITE" and rack.cseq == self.invite.cseq.seq
        if pending is None and ours and rack.rseq == self._rel_outstanding:
            self._rel_outstanding = None   # the 2xx overtook it: acknowledge, nothing to do
            self._respond(request, 200)
            return
        if pending is None or not ours or rack.rseq != int(pending.response.header("RSeq") or 0):
            self._respond(request, 481)
            return
        self._rel_pending = None
        answer = b""
        if request.body:
            answer = self._remote_sdp_in(request.body) or b""
        self._respond(request, 200, answer)
        if self._deferred_final is not None:
            self._send_2xx(self._deferred_final, now)
        elif self._rel_queue and self.final_status is None:
            self._send_reliable(self._rel_queue.pop(0), now)

    def _on_invite(self, dialog: Dialog, request: Request, now: float) -> None:
        """14.2: a re-INVITE; 491 on glare, 500 while our 2xx awaits its ACK."""
        if self._reinvite_out is not None or self._offer is _Offer.LOCAL:
            self._respond(request, 491)
            return
        if self._pending_2xx or self._offer is _Offer.REMOTE:
            self._retry_later(request)
            return
        status, headers = self._negotiate_timer(request)
        if status is not None:
            self._respond(request, status, headers=headers)
            return
        if request.body:
            body = self._answer_offer(request)
            if body is None:
                return
        else:
            body = self.offer_answer.offer()
            self._local_sdp_out(body)
        response = self._response(request, 200, body,
                                  list(headers) + self._timer_headers(self._se_answer))
        self._pending_2xx[request.cseq.seq] = self._start_retransmit(response, request, now)
        self._events.append(SendResponse(response, request))
        self._start_timer(self._se_answer, now)

    def _on_update(self, dialog: Dialog, request: Request, now: float) -> None:
        """RFC 3311 5.2: answer an UPDATE's offer unless one is outstanding."""
        if request.body and self._offer is _Offer.LOCAL:
            self._respond(request, 491)
            return
        if request.body and self._offer is _Offer.REMOTE:
            self._retry_later(request)
            return
        status, headers = self._negotiate_timer(request)
        if status is not None:
            self._respond(request, status, headers=headers)
            return
        body = b""
        if request.body:
            answer = self._answer_offer(request)
            if answer is None:
                return
            body = answer
        self._respond(request, 200, body, list(headers) + self._timer_headers(self._se_answer))
        self._start_timer(self._se_answer, now)

    def _retry_later(self, request: Request) -> None:
        """14.2: 500 with a Retry-After of 0-10 s while an offer or 2xx is pending."""
        self._respond(request, 500, headers=[("Retry-After", str(self.rng.randint(0, 10)))])

    def _answer_offer(self, request: Request) -> bytes | None:
        """The answer to the request's offer; None once it was refused with 488."""
        answer = self._remote_sdp_in(request.body)
        if answer is None:
            self._offer = _Offer.IDLE
            self._respond(request, 488)
        return answer

    def _on_options(self, dialog: Dialog, request: Request, now: float) -> None:
        self._events.append(SendResponse(options_response(request, self.config), request))

    # -- session timers (RFC 4028) -------------------------------------------
    def _negotiate_timer(self, request: Request) -> tuple[int | None, list[Header]]:
        """RFC 4028 9: the UAS side; 422 if Session-Expires is below our Min-SE."""
        cfg = self.config.session_timer
        se = _session_expires(request)
        supported = "timer" in _tokens(request, "Supported") | _tokens(request, "Require")
        self._se_supported = supported
        self._se_answer = None
        if cfg is None:
            return None, []  # we act as a UAS without timer support
        if se is not None and se.delta < cfg.min_se:
            return 422, [("Min-SE", str(cfg.min_se))]
        refresher: str | None
        if se is None:
            interval = max(cfg.session_expires, _min_se(request))
            refresher = "uas"
        else:
            interval = se.delta
            refresher = se.refresher if se.refresher in ("uac", "uas") else None
            if refresher is None or (refresher == "uac" and not supported):
                refresher = "uac" if supported else "uas"
        self._se_answer = _Timer(interval, local_refresher=(refresher == "uas"))
        return None, []

    def _timer_headers(self, timer: _Timer | None) -> list[Header]:
        """Session-Expires in our 2xx, with Require: timer if the UAC supports it."""
        if timer is None:
            return []
        refresher = "uas" if timer.local_refresher else "uac"
        out = [("Session-Expires", f"{timer.interval};refresher={refresher}")]
        if self._se_supported:
            out.append(("Require", "timer"))
        return out

    def _refresh_headers(self) -> list[Header]:
        """Session-Expires and Min-SE in a re-INVITE or UPDATE we send (RFC 4028 7.4)."""
        cfg = self.config.session_timer
        if cfg is None:
            return []
        out: list[Header] = [("Supported", ", ".join(self.config.supported))]
        if self.timer is not None:
            refresher = "uac" if self.timer.local_refresher else "uas"
            out.append(("Session-Expires", f"{self.timer.interval};refresher={refresher}"))
        else:
            out.append(("Session-Expires", str(cfg.session_expires)))
        out.append(("Min-SE", str(cfg.min_se)))
        return out

    def _uac_timer(self, response: Response, now: float) -> None:
        """RFC 4028 7.2: the 2xx's Session-Expires sets interval and refresher."""
        se = _session_expires(response)
        if se is None:
            self.timer = None
            self._timers.pop("refresh", None)
            self._timers.pop("expire", None)
            return
        self._start_timer(_Timer(se.delta, (se.refresher or "uac") == "uac"), now)

    def _start_timer(self, timer: _Timer | None, now: float) -> None:
        """RFC 4028 10: refresh at half the interval; BYE near expiry if not refreshed."""
        self._timers.pop("refresh", None)
        self._timers.pop("expire", None)
        self.timer = timer
        if timer is None:
            return
        if timer.local_refresher:
            self._timers["refresh"] = now + timer.interval / 2
        else:
            self._timers["expire"] = now + timer.interval - min(32, timer.interval / 3)

    def _fire_refresh(self, now: float) -> None:
        self._refresh(now)

    def _refresh(self, now: float) -> None:
        cfg = self.config.session_timer
        method = cfg.refresh_method if cfg is not None else "UPDATE"
        if method == "UPDATE" and self._peer_allow and "update" not in self._peer_allow:
            method = "INVITE"  # RFC 4028 9: refresh with what the peer allows
        try:
            if method == "INVITE":
                self.reinvite(now, self.local_sdp)
            else:
                self.update(now)
        except SessionError as exc:
            log.info("session refresh postponed: %s", exc)
            if self.timer is not None:
                self._timers["refresh"] = now + self.config.t1 * 4

    def _fire_expire(self, now: float) -> None:
        if self.state is InviteState.CONFIRMED:
            log.info("session %s expired without refresh", self.invite.call_id)
            self._send_bye("session expired", 408)

    # -- termination -------------------------------------------------------------
    def _terminate(self, reason: str, status: int | None) -> None:
        if self.state is InviteState.TERMINATED:
            return
        self.state = InviteState.TERMINATED
        for dialog in self.dialogs:
            if not dialog.terminated:
                dialog.terminate()
            self._events.append(DialogEnded(dialog))
        self._timers.clear()
        self._pending_2xx.clear()
        self._rel_pending = None
        self._events.append(Terminated(reason, status))
