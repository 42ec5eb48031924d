"""Call transfers in the client: RFC 5359 2.2 (consultation hold), 2.4 (unattended),
2.5 (attended) and 2.6 (instant messaging), with REFER (RFC 3515, 4488),
Referred-By (RFC 3892), Replaces (RFC 3891) and the call flows of RFC 5589.

Roles as RFC 5589 names them: the *transferor* sends the REFER (or the IM), the
*transferee* gets it and calls the *target*.

* **Transferor, unattended** (``transfer``): hold the call (RFC 5589 6.1), REFER
  in its dialog with ``Refer-To: <target>`` and ``Referred-By: <us>``, follow the
  NOTIFY sipfrag (100 Trying .. final); a 2xx ends the call with BYE (reason
  ``transferred``), anything else resumes it.
* **Consultation hold** (``consult``): hold the call, move what we play and
  record to a second call to the target.
* **Transferor, attended** (``complete``): hold the consultation, REFER the held
  party with ``Refer-To: <target?Require=replaces&Replaces=...>`` naming the
  consultation dialog as the target sees it (to-tag theirs, from-tag ours).
* **Transferee**: 202, NOTIFY 100 (the EventAgent), an INVITE to the Refer-To
  URI with its Referred-By (and the Replaces / Require embedded in it); NOTIFY
  with its final status; on success the old call's audio moves to the new
  call and the old one ends (the transferor's BYE, else ours after
  ``OLD_CALL_WAIT``).
* **Target of Replaces**: an INVITE with Replaces naming our confirmed dialog
  (or an early one we created) is answered at once, without ringing, with the
  replaced call's audio; the replaced call gets BYE (CANCEL while early).
  481 when nothing matches (RFC 3891 3, an early dialog we did not create
  too), 486 for early-only on a confirmed dialog.
* **IM transfer** (2.6): ``im_transfer`` sends the peer's URI with the escaped
  Replaces and ``Require=replaces`` as a message; a UE with ``take_im``
  calls such a URI (INVITE with Replaces), which replaces the call at the
  other end.

Each transfer ends in a ``call_transferred`` event on every UE taking part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..media import MediaError
from ..sip.endpoint import Priority, ServerContext
from ..sip.headers import HeaderError, NameAddr, Replaces, refer_to_target
from ..sip.message import Request, Response
from ..sip.ua.refer import EventAgent, IncomingRefer, ReferWatch, refer_to_value
from ..sip.uri import SipUri, UriError, parse_uri
from .core import UeCore
from .events import CallTransferred, MessageReceived, RcsError, RcsEvent, SendError

if TYPE_CHECKING:
    from ..sip.ua.useragent import Call
    from .call import CallService, VoiceCall

__all__ = ["TransferService", "offered_call", "refer_refusal", "transfer_uri"]

log = logging.getLogger(__name__)

REFER_WAIT = 10.0       # for the 202 to the REFER
TRANSFER_WAIT = 40.0    # for the referenced INVITE's outcome (the target may ring a while)
OLD_CALL_WAIT = 2.0     # transferee: the transferor's BYE, before we send ours
SCHEMES = ("sip", "sips", "tel")
SendText = Callable[[str, str], Awaitable[str]]


def refer_refusal(request: Request) -> Response | None:
    """403 for a Refer-To we will not act on: not a SIP or tel URI, or a method
    other than INVITE (RFC 3515 2.4.2 lets the recipient refuse). The count and
    syntax of Refer-To are the ReferRecipient's (400 Missing / Multiple / Bad)."""
    values = request.headers.get_all("Refer-To")
    if len(values) != 1:
        return None
    try:
        addr, _ = refer_to_target(values[0])
    except HeaderError:
        return None
    scheme = getattr(addr.uri, "scheme", "").lower()
    if scheme not in SCHEMES:
        return Response.for_request(request, 403,
                                    f"Forbidden - Refer-To must be a sip, sips or tel URI, "
                                    f"not {scheme or 'this'}"[:80])
    method = addr.uri.param("method") if isinstance(addr.uri, SipUri) else None
    if method is not None and method.upper() != "INVITE":
        return Response.for_request(request, 403, "Forbidden - only INVITE referrals are served")
    return None


def transfer_uri(peer: str, replaces: Replaces) -> str:
    """``peer?Require=replaces&Replaces=...`` (escaped, RFC 3891 7.1), as RFC 5359 2.6
    and RFC 5589 7.2 write a Refer-To that reaches the target by its AoR."""
    uri = parse_uri(peer)
    if not isinstance(uri, SipUri):
        raise SendError(f"{peer}: Replaces needs a SIP URI for the target")
    uri = uri.copy(headers=[("Require", "replaces")])
    return str(NameAddr.parse(refer_to_value(uri, replaces)).uri)


def _replaces_of(call: VoiceCall) -> Replaces:
    """The call's dialog as its peer sees it: to-tag theirs, from-tag ours."""
    dialog = call.call.session.dialog
    if dialog is None:
        raise SendError("the call has no dialog yet")
    return Replaces(dialog.id.call_id, dialog.id.remote_tag, dialog.id.local_tag)


def _final(call: VoiceCall) -> tuple[int, str]:
    """The final status of an INVITE that did not succeed (408 when none came)."""
    final = call.call.final
    response = final.result() if final.done() else None
    if response is None:
        return 408, "Request Timeout"
    return response.status, response.reason


@dataclass(frozen=True, slots=True)
class _Transfer:
    """What a call_transferred is about: the target, our role and the kind."""

    target: str
    role: str
    kind: str


class _ReferModule:
    """Takes REFER inside a voice call's dialog for the EventAgent; other REFERs
    stay answered as before (405: the UE is no REFER recipient outside calls)."""

    name = "ue-refer"
    priority = Priority.EVENT
    methods = ("REFER",)

    def __init__(self, service: TransferService) -> None:
        self.service = service

    def on_request(self, ctx: ServerContext) -> bool:
        request = ctx.request
        if request.method != "REFER" or not request.to.tag:
            return False
        if self.service.call_of_dialog(request) is None:
            return False
        refusal = refer_refusal(request)
        if refusal is not None:
            ctx.respond(refusal)
            return True
        return self.service.agent.on_request(ctx)


class TransferService:
    """Transfers of one UE's voice calls (see the module text).

    ``agent``: the UE's EventAgent (made on first use; it takes the NOTIFYs);
    ``send_text``: how a message goes out (IM transfer); ``take_im``: call the
    URIs with Replaces that arrive in messages (RFC 5359 2.6)."""

    def __init__(self, core: UeCore, calls: CallService, agent: Callable[[], EventAgent],
                 send_text: SendText, take_im: bool = False) -> None:
        self.core, self.calls = core, calls
        self._agent_of = agent
        self.send_text = send_text
        self.take_im = take_im
        self.consultations: dict[str, VoiceCall] = {}   # consultation Call-ID -> held call
        # Call-ID of a call of ours that was transferred or replaced -> the call going on
        self.successors: dict[str, VoiceCall] = {}
        self._module: _ReferModule | None = None

    @property
    def agent(self) -> EventAgent:
        """The UE's EventAgent, made on first use (a REFER sent or received)."""
        agent = self._agent_of()
        agent.on_refer = self._on_refer
        return agent

    def install(self) -> None:
        """Serve REFERs in calls and watch for IM transfers (after the UA is up)."""
        self._module = _ReferModule(self)
        self.core.endpoint.add_module(self._module)
        self.core.listeners.append(self._on_event)

    def close(self) -> None:
        if self._module is not None and self._module in self.core.endpoint.modules:
            self.core.endpoint.remove_module(self._module)
        self._module = None

    def _emit(self, call: VoiceCall, what: _Transfer, outcome: str, status: int | None = None,
              reason: str = "", new_call_id: str | None = None) -> CallTransferred:
        event = CallTransferred(*call.parties, call.id, what.target, outcome, what.role,
                                what.kind, status, reason, new_call_id)
        self.core.emit(event)
        return event

    # -- lookups -------------------------------------------------------------------------
    def call_of_dialog(self, request: Request) -> VoiceCall | None:
        """The voice call whose dialog an in-dialog request belongs to."""
        ua = self.core.ua
        if ua is None:
            return None
        dialog = ua.dialogs.match_request(request)
        session = dialog.invite_usage if dialog is not None else None
        return self._voice_of(session)

    def _voice_of(self, session: object) -> VoiceCall | None:
        if session is None:
            return None
        return next((v for v in self.calls.calls.values() if v.call.session is session), None)

    # -- transferor ------------------------------------------------------------------------
    async def transfer(self, call: VoiceCall, target: str) -> CallTransferred:
        """Unattended transfer (2.4): hold, REFER, BYE on success, resume on failure."""
        _established(call)
        if not call.held and not await call.hold():
            raise SendError("the transferee refused to be held")
        return await self._refer(call, target, target, "unattended")

    async def consult(self, call: VoiceCall, target: str) -> VoiceCall:
        """Consultation hold (2.2): hold ``call``, call ``target`` with our audio."""
        _established(call)
        if not call.held and not await call.hold():
            raise SendError("the other side refused to be held")
        media = call.take_media()
        try:
            second = await self.calls.place(target)
        except (RcsError, MediaError, ValueError) as exc:
            call.give_media(media)
            raise SendError(f"consult {target}: {exc}") from None
        second.give_media(media, owner=False)   # the held call still owns the recording
        self.consultations[second.id] = call
        self.core.spawn(self._consulting(call, second))
        return second

    async def _consulting(self, held: VoiceCall, second: VoiceCall) -> None:
        """A consultation that ends without complete: the audio goes back to the
        held call (the user resumes it)."""
        await second.ended.wait()
        if self.consultations.pop(second.id, None) is not None and not held.ended.is_set():
            source, sink = second.rtp.source, second.rtp.sink
            held.give_media((source, sink))

    async def complete(self, second: VoiceCall) -> CallTransferred:
        """Attended transfer (2.5): REFER the held party to the consulted one with
        Replaces naming the consultation dialog; the target then ends it."""
        held = self.consultations.get(second.id)
        if held is None:
            raise SendError("no consultation to complete")
        _established(second)
        if not second.held and not await second.hold():
            raise SendError("the target refused to be held")
        uri = transfer_uri(second.peer, _replaces_of(second))
        del self.consultations[second.id]
        held.give_media(second.take_media())
        result = await self._refer(held, uri, second.peer, "attended", resume=False)
        if result.outcome == "transferred":
            with contextlib.suppress(TimeoutError):   # the target's BYE (F22)
                await asyncio.wait_for(second.ended.wait(), OLD_CALL_WAIT)
            await second.hangup("transferred")
        else:
            second.give_media(held.take_media(), owner=False)   # back to the consultation
            self.consultations[second.id] = held
            with contextlib.suppress(RcsError):
                await second.resume()
        return result

    async def _refer(self, call: VoiceCall, refer_to: str, target: str, kind: str,
                     resume: bool = True) -> CallTransferred:
        try:
            watch = self.agent.refer(call.call, refer_to, referred_by=f"<{self.core.aor}>")
        except ValueError as exc:
            raise SendError(f"transfer: {exc}") from None
        status, reason = await self._referral_outcome(watch)
        ok = status is None or 200 <= status < 300
        what = _Transfer(target, "transferor", kind)
        if ok:   # the outcome first, then the call_ended it causes
            event = self._emit(call, what, "transferred", status, reason)
            await call.hangup("transferred")
            return event
        event = self._emit(call, what, "failed", status, reason)
        if resume and call.held and not call.ended.is_set():
            with contextlib.suppress(RcsError):
                await call.resume()
        return event

    @staticmethod
    async def _referral_outcome(watch: ReferWatch) -> tuple[int | None, str]:
        """The REFER's rejection, or the final sipfrag status (None: no NOTIFY
        was promised, Refer-Sub: false)."""
        try:
            answer = await asyncio.wait_for(asyncio.shield(watch.answered), REFER_WAIT)
        except TimeoutError:
            return 408, "no answer to the REFER"
        if answer.status >= 300:
            return answer.status, answer.reason
        try:
            final = await asyncio.wait_for(asyncio.shield(watch.done), TRANSFER_WAIT)
        except TimeoutError:
            return 408, "no final NOTIFY"
        return (final.status, final.reason) if final is not None else (None, "")

    async def im_transfer(self, call: VoiceCall, to: str) -> CallTransferred:
        """IM transfer (2.6): the peer's URI with Replaces in a message to ``to``;
        transferred once ``to`` replaced our call (it ends), else failed."""
        _established(call)
        uri = transfer_uri(call.peer, _replaces_of(call))
        await self.send_text(to, uri)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.ended.wait(), TRANSFER_WAIT)
        what = _Transfer(to, "transferor", "im")
        if call.ended.is_set() and call.end_reason == "remote hangup":
            return self._emit(call, what, "transferred")
        return self._emit(call, what, "failed", reason="the call was not taken")

    # -- transferee --------------------------------------------------------------------------
    def _on_refer(self, refer: IncomingRefer) -> None:
        call = self._voice_of(refer.dialog.invite_usage)
        if call is None:   # the call ended between the REFER and here
            self.agent.report(refer, 481)
            return
        self.core.spawn(self._transferee(call, refer))

    async def _transferee(self, old: VoiceCall, refer: IncomingRefer) -> None:
        """Call the Refer-To target; NOTIFY how it went; on success the audio moves."""
        target = str(refer.target)
        kind = "attended" if refer.replaces is not None else "unattended"
        headers = [("Referred-By", str(refer.referred_by))] if refer.referred_by else []
        if refer.replaces is not None:
            headers.append(("Replaces", str(refer.replaces)))
        if "Require" in refer.embedded:
            headers.append(("Require", refer.embedded["Require"]))
        what = _Transfer(target, "transferee", kind)
        try:
            new = await self.calls.place(target, headers=headers)
        except (RcsError, MediaError, ValueError) as exc:
            self.agent.report(refer, 503, "Service Unavailable")
            self._emit(old, what, "failed", 503, str(exc))
            return
        if not await new.wait_answered(TRANSFER_WAIT):
            await new.hangup()
            status, reason = _final(new)
            self.agent.report(refer, status, reason)
            self._emit(old, what, "failed", status, reason)
            return
        new.give_media(old.take_media())
        self.successors[old.id] = new
        self.agent.report(refer, 200)
        old.end_as = "transferred"
        self._emit(old, what, "transferred", 200, new_call_id=new.id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(old.ended.wait(), OLD_CALL_WAIT)
        await old.hangup("transferred")

    # -- target of an INVITE with Replaces ------------------------------------------------------
    async def incoming_replaces(self, call: Call, peer: str, offer: bytes) -> None:
        """RFC 3891 3: answer at once in place of the dialog named, which then ends."""
        found = self._replaced(call)
        if isinstance(found, tuple):
            log.info("INVITE with Replaces refused: %d %s", *found)
            call.reject(*found)
            return
        new = await self.calls.incoming(call, peer, offer, replacing=found)
        if new is None:
            return
        self.successors[found.id] = new
        referred = call.request.headers.get("Referred-By") is not None
        role = "target" if referred else "transferee"
        kind = "attended" if referred else "im"
        self._emit(found, _Transfer(peer, role, kind), "transferred", 200, new_call_id=new.id)
        await found.hangup("replaced")

    def _replaced(self, call: Call) -> VoiceCall | tuple[int, str]:
        """The voice call a Replaces names, or the refusal (status, reason)."""
        values = call.request.headers.get_all("Replaces")
        if len(values) != 1:
            return 400, "Bad Request - more than one Replaces"
        try:
            replaces = Replaces.parse(values[0])
        except HeaderError as exc:
            return 400, f"Bad Replaces - {exc}"[:80]
        ua = self.core.ua
        assert ua is not None
        match = ua.dialogs.find_invite(replaces)
        if match is None and replaces.early_only and ua.dialogs.find_invite(
                Replaces(replaces.call_id, replaces.to_tag, replaces.from_tag)) is not None:
            return 486, "Busy Here - early-only and the dialog is confirmed"
        voice = self._voice_of(match.session) if match is not None else None
        if voice is None or voice.ended.is_set():
            return 481, "Call/Transaction Does Not Exist - no call matches Replaces"
        return voice

    # -- IM transfer: the one who takes the call ---------------------------------------------
    def _on_event(self, event: RcsEvent) -> None:
        if not self.take_im or not isinstance(event, MessageReceived):
            return
        offered = offered_call(event.text)
        if offered is not None:
            self.core.spawn(self.take(offered, event.sender))

    async def take(self, uri: str, offered_by: str = "") -> VoiceCall | None:
        """Call a URI carrying Replaces (RFC 5359 2.6 F7): the call it names at the
        other end is replaced by ours."""
        parsed = parse_uri(uri)
        if not isinstance(parsed, SipUri):
            raise SendError(f"{uri}: not a SIP URI")
        _, embedded = refer_to_target(f"<{uri}>")
        headers = [(name, value) for name, value in embedded.items()
                   if name in ("Replaces", "Require")]
        target = str(parsed.copy(headers=[]))
        new = await self.calls.place(target, self.calls.source(), self.calls.sink(), headers)
        ok = await new.wait_answered(TRANSFER_WAIT)
        status, reason = (200, "OK") if ok else _final(new)
        what = _Transfer(target, "target", "im")
        if ok:
            self._emit(new, what, "transferred", status,
                       f"offered by {offered_by}" if offered_by else "", new.id)
        else:
            self._emit(new, what, "failed", status, reason)
        return new if ok else None


def offered_call(text: str) -> str | None:
    """A message that is one SIP URI with an embedded Replaces (RFC 5359 2.6)."""
    candidate = text.strip().strip("<>")
    if not candidate.lower().startswith(("sip:", "sips:")) or any(c.isspace() for c in candidate):
        return None
    try:
        _, embedded = refer_to_target(f"<{candidate}>")
        Replaces.parse(embedded["Replaces"])
    except (HeaderError, UriError, ValueError, KeyError):
        return None
    return candidate


def _established(call: VoiceCall) -> None:
    if call.ended.is_set() or not call.answered.is_set():
        raise SendError("the call is not established")
