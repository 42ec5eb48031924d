"""Call pickup (RFC 5359 2.16) in the telephony AS, for every phone.

A subscriber calls ``sip:pickup@DOMAIN`` (group pickup: a call ringing
for a member of their pickup group) or ``sip:pickup-NAME@DOMAIN`` (directed:
the call ringing for NAME, who must be in their group). The AS catches the
INVITE on the picker's originating side and answers it itself; the picker's
phone needs nothing but an ordinary call. The AS then does what RFC 5359
F3-F13 have the picker's phone do, from its own RFC 4235 state of the callee
(the same dialog-info its watchers get, :mod:`.telephony_dialogs`)::

    Bill -> AS     INVITE sip:pickup@DOMAIN (offer B)
    AS             the callee's dialog-info: call-id C, local-tag B, remote-tag A, early
    AS -> Alice    INVITE sip:alice@DOMAIN  Replaces: C;to-tag=A;from-tag=B;early-only
                   Require: replaces, P-Asserted-Identity: Bill, offer B
    Alice -> AS    200 (answer A')          Alice CANCELs her call to Bob (487)
    AS -> Bill     200 (answer A'), ACKs    RTP Alice <-> Bill directly

The Replaces goes to the *caller*, the UAC of the early dialog (RFC 3891 3
lets only the UAC accept a Replaces for an early dialog); :mod:`..sip.ua.pickup`
turns the callee's tags round. The AS stays in both dialogs: a BYE on one
ends the other. A caller's phone that cannot take the Replaces over (420,
481, 404/480, or it rings for it as for a new call) gets the AS-side bridge
instead: its own INVITE is taken from the callee's branch and answered by the
AS.

Groups are ``pickup-group`` service data; a subscriber without one is in the
home domain's group. Refusals: nobody ringing 480, NAME no subscriber 404, NAME
outside the group 403, the only ringing call already being picked up by
someone else 486, the call answered meanwhile 481 (the AS saw it) or 486 (the
caller refused the early-only Replaces).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..content import dialog_info as di
from .. import sdp
from ..sip.endpoint import Priority, ServerContext, resolve
from ..sip.headers import NameAddr
from ..sip.message import Request, Response
from ..sip.proxy import Target
from ..sip.ua.pickup import pickup_replaces, ringing_dialogs
from ..sip.ua.useragent import Call, Origin, UserAgent, end_together
from ..sip.uri import SipUri, Uri, parse_uri
from ..store import Store
from .anchor import caller_identity
from .telephony_dialogs import CallDialogs
from .telephony_services import Services

__all__ = ["CallPickup", "PICKUP_USER", "PickupGate", "PickupRefused", "crossed_answer", "pickup_name"]

log = logging.getLogger(__name__)

PICKUP_USER = "pickup"           # sip:pickup@DOMAIN: group pickup
DIRECTED = "pickup-"             # sip:pickup-NAME@DOMAIN: directed pickup
BRIDGE = "bridge-"              # sip:bridge-TOKEN@AS: a caller's INVITE we took over
REPLACES_WAIT = 8.0              # for the caller's phone to answer the Replaces at once
# The caller's phone could not take the Replaces over: no RFC 3891 (420), no such
# early dialog there (481: it replaces confirmed dialogs only, or the call is gone,
# which the bridge then finds out), not reachable by its AOR (404 / 480). A refusal
# by policy (403, 603: its own screening) is passed on instead.
BRIDGE_ON = frozenset({420, 481, 404, 480})
BRIDGE_WAIT = 5.0                # for the caller's INVITE to come back to us
Divert = Callable[[str, Target], bool]   # TelephonyAs.divert_ringing


class PickupRefused(Exception):
    """The pickup cannot be made: the final response for the picker."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def pickup_name(uri: Uri, domain: str) -> str | None:
    """'' for ``sip:pickup@DOMAIN``, NAME for ``sip:pickup-NAME@DOMAIN``, else None."""
    if not isinstance(uri, SipUri) or uri.host.lower() != domain.lower() or not uri.user:
        return None
    user = uri.user.lower()
    if user == PICKUP_USER:
        return ""
    if user.startswith(DIRECTED) and len(user) > len(DIRECTED):
        return uri.user[len(DIRECTED):]
    return None


@dataclass(slots=True, frozen=True)
class Ringing:
    """A call to pick up: whose it is and its entry in their dialog-info."""

    callee: str
    dialog: di.Dialog

    @property
    def caller(self) -> str:
        remote = self.dialog.remote
        return remote.identity.uri if remote and remote.identity else ""


class CallPickup:
    """The pickup service of one telephony AS (its UA and dialog state)."""

    def __init__(self, config: Config, store: Store, ua: UserAgent, calls: CallDialogs,
                 divert: Divert) -> None:
        self.config = config
        self.store = store
        self.ua = ua
        self.calls = calls
        self.divert = divert
        self.bridges: dict[str, asyncio.Future[Call]] = {}   # token -> the caller's INVITE
        self.claimed: dict[str, str] = {}     # Call-ID being picked up -> picker
        self.pairs: list[tuple[Call, Call]] = []
        self._tasks: set[asyncio.Future[object]] = set()

    def wants(self, request: Request) -> bool:
        """A new INVITE to a pickup URI (the node checks it came for a caller)."""
        return request.method == "INVITE" and request.to.tag is None and \
            pickup_name(request.uri, self.config.domain) is not None

    def wants_bridge(self, request: Request) -> bool:
        """A caller's INVITE we diverted to ourselves (``sip:bridge-TOKEN@AS``)."""
        user = getattr(request.uri, "user", None) or ""
        return request.method == "INVITE" and request.to.tag is None and \
            user.startswith(BRIDGE) and user[len(BRIDGE):] in self.bridges

    def take_bridge(self, ctx: ServerContext) -> None:
        user = getattr(ctx.request.uri, "user", None) or ""
        call = self.ua.new_call(ctx)
        with contextlib.suppress(asyncio.QueueEmpty):
            self.ua.incoming.get_nowait()
        waiter = self.bridges.get(user[len(BRIDGE):])
        if call is not None and waiter is not None and not waiter.done():
            waiter.set_result(call)
        elif call is not None:
            call.reject(481, "Call/Transaction Does Not Exist - the pickup is over")

    def take(self, ctx: ServerContext) -> None:
        """Answer the picker's INVITE ourselves (UAS) and pick the call up."""
        call = self.ua.new_call(ctx)
        if call is None:
            return
        with contextlib.suppress(asyncio.QueueEmpty):
            self.ua.incoming.get_nowait()   # ours, not for a consumer of the queue
        self._spawn(self._pickup(call))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for a, b in self.pairs:
            for call in (a, b):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.bye(), 2)

    # -- choosing the call ------------------------------------------------------------
    async def _pickup(self, call: Call) -> None:
        picker = caller_identity(call.request)
        try:
            if not call.remote_sdp:
                raise PickupRefused(488, "Not Acceptable Here - a pickup needs an SDP offer")
            ringing = await self.choose(picker, pickup_name(call.request.uri,
                                                            self.config.domain) or "")
        except PickupRefused as exc:
            log.info("pickup by %s refused: %d %s", picker, exc.status, exc.reason)
            call.reject(exc.status, exc.reason[:120])
            return
        call_id = ringing.dialog.call_id or ""
        try:
            await self._replace(call, picker, ringing)
        finally:
            self.claimed.pop(call_id, None)

    async def choose(self, picker: str, name: str) -> Ringing:
        """The call ``picker`` takes: directed to ``name``, or one of the group's;
        claimed for ``picker`` (no await between the check and the claim, so of two
        pickups at once exactly one gets the call; the caller of ``choose`` frees it)."""
        picker_owner, group = await self._group_of(picker)
        if name:
            callee = f"sip:{name}@{self.config.domain}".lower()
            owner, theirs = await self._group_of(callee, must_exist=True)
            if theirs != group:
                raise PickupRefused(403, f"Forbidden - {owner} is not in your pickup group")
            candidates = [Ringing(owner, d) for d in ringing_dialogs(self._info(owner))]
            if not candidates and self._answered(owner):
                raise PickupRefused(481, "Call/Transaction Does Not Exist - the call to "
                                    f"{owner} was already answered")
            if not candidates:
                raise PickupRefused(480, f"Temporarily Unavailable - no call ringing for {owner}")
        else:
            candidates = [r for r in await self._group_ringing(group) if r.callee != picker_owner]
            if not candidates:
                raise PickupRefused(480, "Temporarily Unavailable - no call ringing in "
                                    + self._label(group))
        candidates = [r for r in candidates if r.caller and r.caller != picker_owner]
        free = [r for r in candidates if (r.dialog.call_id or "") not in self.claimed]
        if not free:
            raise PickupRefused(486, "Busy Here - the ringing call is already being "
                                "picked up by another member")
        self.claimed[free[0].dialog.call_id or ""] = picker
        return free[0]

    async def _group_of(self, uri: str, must_exist: bool = False) -> tuple[str, str]:
        """The subscriber's owner key and pickup group ('' = the home domain's)."""
        identities = await self.store.subscribers.implicit_set(uri)
        if must_exist and not identities:
            raise PickupRefused(404, f"Not Found - no subscriber {uri}")
        owner = next((i.uri for i in identities if i.default), uri)
        services = Services.from_settings(await self.store.service_data.settings(owner))
        return owner, services.pickup_group or ""

    async def _group_ringing(self, group: str) -> list[Ringing]:
        """Every call ringing for a member of ``group``: members in the order the AS
        first saw them, each one's calls oldest first."""
        found: list[Ringing] = []
        for aor in list(self.calls.by_aor):
            ringing = ringing_dialogs(self._info(aor))
            if ringing and (await self._group_of(aor))[1] == group:
                found += [Ringing(aor, d) for d in ringing]
        return found

    def _info(self, aor: str) -> di.DialogInfo:
        """The callee's dialog-info as the AS's watchers get it (RFC 4235)."""
        return self.calls.document(aor, 0)

    def _answered(self, aor: str) -> bool:
        return any(d.state is di.DialogState.CONFIRMED and d.direction is di.Direction.RECIPIENT
                   for d in self._info(aor).dialogs)

    def _label(self, group: str) -> str:
        return f"pickup group {group}" if group else f"the {self.config.domain} pickup group"

    # -- taking it over ---------------------------------------------------------------
    async def _replace(self, call: Call, picker: str, ringing: Ringing) -> None:
        """INVITE the caller with Replaces (the picker's offer), answer the picker
        with the caller's answer, then tie the two dialogs."""
        replaces = pickup_replaces(ringing.dialog)
        log.info("%s picks up %s's call from %s (Replaces: %s)", picker, ringing.callee,
                 ringing.caller, replaces)
        leg = await self.ua.invite(ringing.caller, call.remote_sdp, [
            ("Replaces", str(replaces)), ("Require", "replaces"),
            ("P-Asserted-Identity", f"<{picker}>"), ("Subject", "call pickup")],
            to=NameAddr(parse_uri(ringing.caller)), origin=self._origin(picker))
        final, alerting = await self._final(leg, call)
        if call.terminated.done():       # the picker gave up meanwhile
            if final is not None and final.status < 300:
                await leg.bye()
            return
        if alerting or (final is not None and final.status in BRIDGE_ON):
            await self._bridge(call, ringing)   # the caller's phone cannot take it over
            return
        if final is None or final.status >= 300:
            call.reject(*_refusal(final, ringing))
            return
        call.accept(leg.remote_sdp)
        self.pairs.append((call, leg))
        self._spawn(self._tie(call, leg))

    async def _bridge(self, call: Call, ringing: Ringing) -> None:
        """For a caller without Replaces: the AS CANCELs the callee's branch and
        takes the caller's own INVITE (re-targeted to ``sip:bridge-TOKEN@AS``), then
        answers each side with the other's media (:func:`crossed_answer`)."""
        token = secrets.token_hex(8)
        waiter: asyncio.Future[Call] = asyncio.get_running_loop().create_future()
        self.bridges[token] = waiter
        try:
            contact = self.ua.contact
            assert isinstance(contact, SipUri) and contact.port is not None
            uri = SipUri(contact.host, user=f"{BRIDGE}{token}", port=contact.port)
            dest = await resolve("udp", contact.host.strip("[]"), contact.port)
            if not self.divert(ringing.dialog.call_id or "", Target(uri, dest)):
                raise PickupRefused(481, "Call/Transaction Does Not Exist - the call is "
                                    "no longer ringing")
            try:
                caller = await asyncio.wait_for(asyncio.shield(waiter), BRIDGE_WAIT)
            except TimeoutError:
                raise PickupRefused(486, "Busy Here - the call was answered before "
                                    "the pickup") from None
        except PickupRefused as exc:
            call.reject(exc.status, exc.reason)
            return
        finally:
            self.bridges.pop(token, None)
        to_caller = crossed_answer(caller.remote_sdp or b"", call.remote_sdp or b"")
        to_picker = crossed_answer(call.remote_sdp or b"", caller.remote_sdp or b"")
        if to_caller is None or to_picker is None:
            reason = "Not Acceptable Here - the caller and the picker share no codec"
            caller.reject(488, reason)
            call.reject(488, reason)
            return
        log.info("pickup bridge: %s <-> %s (no Replaces at the caller)", ringing.caller,
                 caller_identity(call.request))
        caller.accept(to_caller)
        call.accept(to_picker)
        self.pairs.append((call, caller))
        self._spawn(self._tie(call, caller))

    async def _final(self, leg: Call, picker_call: Call) -> tuple[Response | None, bool]:
        """The caller's final response to the INVITE with Replaces, and whether its
        phone alerted instead: a phone that takes a Replaces answers at once
        (RFC 3891 3), so one that rings for it, or says nothing within
        REPLACES_WAIT, treats it as a new call (linphone 5.1 does, for its early
        dialog); that leg is CANCELled, (None, True). The leg is CANCELled too if
        the picker hangs up first, (None, False)."""
        final = asyncio.ensure_future(asyncio.shield(leg.final))
        gone = asyncio.ensure_future(asyncio.shield(picker_call.terminated))
        rang = asyncio.ensure_future(leg.ringing.wait())
        waiters: set[asyncio.Future[Any]] = {final, gone, rang}
        try:
            done, _ = await asyncio.wait(waiters, timeout=REPLACES_WAIT,
                                         return_when=asyncio.FIRST_COMPLETED)
            if final in done:
                return final.result(), False
            if gone not in done:
                log.info("%s alerts for the INVITE with Replaces: bridging instead",
                         leg.request.uri)
            await leg.cancel()
            return None, gone not in done
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _origin(self, picker: str) -> Origin:
        """From the picker, through the I-CSCF to the caller's S-CSCF (as 3PCC legs)."""
        icscf = self.config.icscf
        host = f"[{icscf.host}]" if ":" in icscf.host else icscf.host
        return Origin(NameAddr(parse_uri(picker)), self.ua.contact,
                      (f"<sip:{host}:{icscf.port};lr{icscf.transport_param}>",))

    async def _tie(self, a: Call, b: Call) -> None:
        """Either side hanging up ends the other."""
        await end_together(a, b)
        with contextlib.suppress(ValueError):
            self.pairs.remove((a, b))

    def _spawn(self, coro: Coroutine[object, object, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _refusal(final: Response | None, ringing: Ringing) -> tuple[int, str]:
    """What the picker hears when the caller's phone did not take the Replaces."""
    if final is None:
        return 408, f"Request Timeout - {ringing.caller} did not answer the pickup"
    if final.status == 486:
        return 486, "Busy Here - the call was answered before the pickup"
    return final.status, f"{final.reason} - the caller refused the pickup"[:120]


class PickupGate:
    """Ahead of the proxy: a picker's INVITE to a pickup URI, routed to us for
    the caller's originating services, is answered by :class:`CallPickup`."""

    name = "telephony-pickup"
    priority = Priority.SERVICE
    methods = ("INVITE",)

    def __init__(self, pickup: CallPickup, originating: Callable[[Request], bool]) -> None:
        self.pickup = pickup
        self.originating = originating

    def on_request(self, ctx: ServerContext) -> bool:
        if self.pickup.wants_bridge(ctx.request):
            self.pickup.take_bridge(ctx)
            return True
        if not self.pickup.wants(ctx.request) or not self.originating(ctx.request):
            return False
        self.pickup.take(ctx)
        return True


def crossed_answer(offer: bytes, other: bytes) -> bytes | None:
    """An answer to ``offer`` pointing at the other party: the other's own SDP
    (address, port, origin) cut down to the audio formats both offered (same
    payload number and codec), so the two send RTP straight to each other.
    None when there is nothing in common or either is not one audio line."""
    try:
        ours, theirs = sdp.parse(offer), sdp.parse(other)
    except sdp.SdpError:
        return None
    if len(ours.media) != 1 or len(theirs.media) != 1 or \
            ours.media[0].media != "audio" or theirs.media[0].media != "audio":
        return None
    offered, media = ours.media[0], theirs.media[0]
    shared = [f for f in media.formats if f in offered.formats
              and _codec(offered, f) == _codec(media, f)]
    if not shared:
        return None
    media.formats = shared
    media.attributes = [a for a in media.attributes if a.name not in ("rtpmap", "fmtp")
                        or (a.value or "").split(" ", 1)[0] in shared]
    return bytes(theirs)


def _codec(media: sdp.MediaDescription, fmt: str) -> str:
    rtpmap = media.rtpmap(fmt)
    return f"{rtpmap.encoding_name}/{rtpmap.clock_rate}".lower() if rtpmap else fmt
