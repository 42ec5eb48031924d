"""The telephony AS: the network half of RFC 5359 for every phone.

A record-routing proxy behind the S-CSCF (``[telephony_as]``), triggered by the
default iFCs for voice calls (an INVITE with audio that is not CPM) on both
sides; the AS URI's user part says which: ``sip:orig@AS`` for the caller's
services, ``sip:term@AS`` for the callee's. It applies each subscriber's
service data from ``store.service_data`` (``imsbox service set``, read on every
call, so a change takes effect on the next one):

* originating: outgoing call screening (2.14): a target matching
  ``screen-outgoing`` gets ``403 Screening Failure (Originating)``;
* terminating: incoming call screening (2.13, ``603 Screening Failure
  (Terminating)``), forwarding unconditional (2.7), on busy (2.8: 486/600
  from every contact), on no answer (2.9: CANCEL after ``after`` s, then
  forward) and find-me (2.12: each target in turn). A forwarded call goes back
  to the S-CSCF (its odi Route) with the new Request-URI, and from there to
  the new target's own S-CSCF and services; it carries History-Info
  (RFC 7044) with the RFC 4458 cause (:mod:`.history_info`). A served user who
  is already an earlier target in the History-Info gets ``482 Loop
  Detected``; more than ``[telephony] max_diversions`` forwardings ``483``.
  Each re-target sends the caller ``181 Call Is Being Forwarded``; a target
  with ``diversion on`` also gets Diversion (RFC 5806, :mod:`.diversion`).

It is also the RFC 4235 notifier of its subscribers' dialog events, built
from the calls it routes (:mod:`.telephony_dialogs`), and the click-to-dial
controller (:mod:`.click_to_dial`, RFC 5359 2.18 over RFC 3725), and it
answers ``sip:pickup@DOMAIN`` on a caller's originating side (call pickup,
RFC 5359 2.16, :mod:`.pickup`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..content import dialog_info as di
from ..sip.endpoint import Priority, ServerContext, resolve
from ..sip.transport import Destination
from ..sip.headers import Event, HeaderError, NameAddr
from ..sip.identity import canonical_public_id
from ..sip.message import Request, Response, new_tag
from ..sip.proxy import RequestContext, StatefulProxy, Target, remote_target_is_domain
from ..sip.transaction import TimerValues
from ..sip.ua.dialog_event import DIALOG_PACKAGE
from ..sip.ua.events import EventPackageRegistry, NotifierSubscription
from ..sip.ua.invite import InviteConfig
from ..sip.ua.refer import EventAgent
from ..sip.ua.useragent import UserAgent
from ..sip.uri import Uri, parse_uri
from ..store import Store
from .anchor import caller_identity
from .click_to_dial import ClickToDial
from .diversion import write_diversion
from .history_info import (
    CAUSE_BUSY, CAUSE_NO_REPLY, CAUSE_NOT_REACHABLE, CAUSE_UNCONDITIONAL, HISTORY_INFO, History,
)
from .node import listen_behind_guard, node_uri
from .pickup import CallPickup, PickupGate
from .telephony_dialogs import CallDialogs, WatchedDialog
from .telephony_services import Services, matches

__all__ = ["CONTROL_SOCKET", "TelephonyAs"]

log = logging.getLogger(__name__)

CONTROL_SOCKET = "telephony.sock"   # in the data dir: `imsbox call-control` talks to it
BUSY = (486, 600)
NO_ANSWER = (408, 480, 503, 404)     # no reply, or not reachable (unregistered)
MAX_RINGING = 10000                  # terminating INVITEs kept for call pickup's bridge


@dataclass(slots=True)
class ServedCall:
    """What the failure route needs of a terminating call: whose it is, the
    services, the History-Info so far and how far find-me got."""

    served: str
    identities: frozenset[str]
    services: Services
    history: History
    find_me_next: int = 0
    forwarded: bool = False
    watched: WatchedDialog | None = None


class TelephonyAs(StatefulProxy):
    """The telephony AS node on ``config.telephony_as``; ``await start()``, ``await close()``."""

    def __init__(self, config: Config, store: Store, *, timers: TimerValues | None = None,
                 trace: bool = False) -> None:
        settings = config.telephony
        super().__init__(self._router, record_route=True, timers=timers, trace=trace,
                         follow_routes=False, max_retargets=settings.max_diversions + 12,
                         limits=config.limits.sip, overload=config.limits.overload)
        self.config = config
        self.store = store
        self.timers = timers
        self.no_answer_after = float(settings.no_answer_after)
        self.calls = CallDialogs()
        self.watchers: dict[str, dict[NotifierSubscription, int]] = {}  # aor -> version sent
        self.ua: UserAgent | None = None
        self.events: EventAgent | None = None
        self.click_to_dial: ClickToDial | None = None
        self.pickup: CallPickup | None = None
        self.ringing: dict[str, RequestContext] = {}   # Call-ID -> terminating INVITE

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        node = self.config.telephony_as
        port = await listen_behind_guard(self.endpoint, self.listen, self.config, node,
                                         "telephony AS")
        uri = node_uri(node.host, port)
        timers = self.timers or TimerValues()
        self.ua = UserAgent(self.endpoint, f"<{uri}>", uri,
                            config=InviteConfig(t1=timers.t1, t2=timers.t2,
                                                session_timer=None),
                            serve_new=False)
        self.events = EventAgent(self.ua, EventPackageRegistry([DIALOG_PACKAGE]),
                                 state_of=self._first_state, on_subscription=self._subscribed)
        self.endpoint.add_module(_EventGate(self))
        self.pickup = CallPickup(self.config, self.store, self.ua, self.calls,
                                 self.divert_ringing)
        self.endpoint.add_module(PickupGate(self.pickup, self.serves_originating))
        self.click_to_dial = ClickToDial(self.config, self.store, self.ua)
        await self.click_to_dial.serve(self.control_path)
        log.info("telephony AS up on %s:%d", node.host, port)

    @property
    def control_path(self) -> Path:
        return Path(self.config.data_dir) / CONTROL_SOCKET

    async def close(self) -> None:
        if self.click_to_dial is not None:
            await self.click_to_dial.close()
        if self.pickup is not None:
            await self.pickup.close()
        if self.events is not None:
            self.events.close()
        if self.ua is not None:
            await self.ua.close()
        await super().close()

    def listening_lines(self) -> list[str]:
        return [f"telephony AS listening on {d}"
                for d in self.endpoint.transport.listen_addresses]

    # -- routing ----------------------------------------------------------------------
    def on_request(self, ctx: RequestContext) -> Response | None:
        if ctx.request.method == "BYE":
            self.calls.bye(ctx.request)
            self._notify_changed()
        return None

    async def _router(self, ctx: RequestContext) -> list[Target] | Response:
        request = ctx.request
        initial = request.to.tag is None and ctx.route is not None
        if not initial or request.method != "INVITE":
            own = ctx.follow_route()
            if own is not None and remote_target_is_domain(request, self.config.domain):
                return [Target(request.uri, await self._icscf())]  # the media server's PSI
            return own or _answer(request, 404, "Not Found - not a service of "
                                        "the telephony AS")
        if ctx.route is not None and ctx.route.user == "orig":
            return await self._originating(ctx)
        return await self._terminating(ctx)

    async def _icscf(self) -> Destination:
        icscf = self.config.icscf
        return await resolve(icscf.transports[0], icscf.host, icscf.port)

    async def _identities(self, uri: str) -> frozenset[str]:
        """``uri`` and, for a subscriber, every identity of its implicit set
        (sip and tel: number patterns match either)."""
        return frozenset({uri, *(i.uri for i in await self.store.subscribers.implicit_set(uri))})

    async def _services(self, uri: str) -> tuple[str, frozenset[str], Services]:
        """The served user's owner key, identities and services (read per call)."""
        identities = await self.store.subscribers.implicit_set(uri)
        owner = next((i.uri for i in identities if i.default), uri)
        settings = await self.store.service_data.settings(owner)
        names = frozenset({uri, owner, *(i.uri for i in identities)})
        return owner, names, Services.from_settings(settings)

    async def _originating(self, ctx: RequestContext) -> list[Target] | Response:
        """2.14: outgoing call screening on the target's identities."""
        request = ctx.request
        caller = caller_identity(request)
        owner, _, services = await self._services(caller)
        try:
            target = canonical_public_id(str(request.uri))
        except ValueError:
            return _answer(request, 400, "Bad Request - Request-URI")
        if services.screen_outgoing:
            targets = await self._identities(target)
            if any(matches(p, targets) for p in services.screen_outgoing):
                log.info("%s -> %s: outgoing call screened", owner, target)
                return _answer(request, 403, "Screening Failure (Originating)")
        ctx.values["watched"] = self.calls.invite(owner, request, True, owner, target)
        self._notify_changed()
        return [Target(request.uri)]

    async def _terminating(self, ctx: RequestContext) -> list[Target] | Response:
        request = ctx.request
        try:
            called = canonical_public_id(str(request.uri))
        except ValueError:
            return _answer(request, 400, "Bad Request - Request-URI")
        owner, identities, services = await self._services(called)
        history = History.of(request)
        if history.seen_before(identities):
            log.info("%s: forwarding loop back to %s", request.call_id, owner)
            return _answer(request, 482, f"Loop Detected - call forwarded back to {owner}")
        if history.diversions >= self.config.telephony.max_diversions:
            return _answer(request, 483, "Too Many Hops - call forwarded "
                           f"{history.diversions} times")
        caller = caller_identity(request)
        if services.screen_incoming and await self._screened(request, caller, services):
            log.info("%s -> %s: incoming call screened", caller, owner)
            return _answer(request, 603, "Screening Failure (Terminating)")
        history.called(str(request.uri))
        served = ServedCall(owner, identities, services, history)
        ctx.values["served"] = served
        # An INVITE with Replaces (a pickup, a transfer) names a dialog at one of the
        # user's phones (RFC 3891): forwarding it elsewhere could only fail.
        replacing = request.headers.get("Replaces") is not None
        if services.unconditional is not None and not replacing:
            return self._forward(ctx, served, services.unconditional, CAUSE_UNCONDITIONAL, None)
        history.write(request)
        if services.diversion:
            write_diversion(request, history)   # for a phone that reads only Diversion
        served.watched = self.calls.invite(owner, request, False, caller, owner)
        self._notify_changed()
        if replacing:
            return [Target(request.uri)]
        self.ringing[request.call_id] = ctx
        while len(self.ringing) > MAX_RINGING:    # one whose end we never saw
            self.ringing.pop(next(iter(self.ringing)))
        ctx.failure_route = self._failure
        timeout = (services.no_answer_after or self.no_answer_after) if services.no_answer \
            else (services.find_me_after or self.no_answer_after) if services.find_me else None
        return [Target(request.uri, timeout=timeout)]

    async def _screened(self, request: Request, caller: str, services: Services) -> bool:
        """2.13: does a screen-incoming pattern match one of the caller's identities
        (asserted ones, and the caller's whole implicit set: its number too)?"""
        asserted = {_identity(v) for v in request.headers.values("P-Asserted-Identity")}
        callers = (await self._identities(caller)) | (asserted - {""})
        return any(matches(p, callers) for p in services.screen_incoming)

    async def _failure(self, ctx: RequestContext, best: Response) -> list[Target] | None:
        """2.8 / 2.9 / 2.12: what to try when the targets so far did not answer."""
        served = ctx.values.get("served")
        if not isinstance(served, ServedCall) or served.forwarded:
            return None
        services, status = served.services, best.status
        if served.find_me_next == 0:
            if status in BUSY and services.busy is not None:
                return self._forward(ctx, served, services.busy, CAUSE_BUSY, status)
            if status in NO_ANSWER and services.no_answer is not None:
                cause = CAUSE_NO_REPLY if status == 408 else CAUSE_NOT_REACHABLE
                return self._forward(ctx, served, services.no_answer, cause, status)
        if served.find_me_next < len(services.find_me):
            target = services.find_me[served.find_me_next]
            served.find_me_next += 1
            cause = CAUSE_BUSY if status in BUSY else CAUSE_NO_REPLY if status == 408 \
                else CAUSE_NOT_REACHABLE
            served.history.forwarded(target, cause, status)
            served.history.write(ctx.request)
            self._leave(served)
            self._tell_forwarded(ctx)
            log.info("%s: find-me %s -> %s (%d)", ctx.request.call_id, served.served,
                     target, status)
            return [Target(_uri(target), timeout=services.find_me_after or self.no_answer_after)]
        return None

    def _forward(self, ctx: RequestContext, served: ServedCall, target: str, cause: int,
                 status: int | None) -> list[Target]:
        """Re-target to ``target`` (RFC 7044 History-Info with the RFC 4458 cause);
        the S-CSCF routes the new Request-URI to its own terminating services."""
        served.forwarded = True
        served.history.forwarded(target, cause, status)
        served.history.write(ctx.request)
        self._leave(served)
        self._tell_forwarded(ctx)
        log.info("%s: %s forwarded to %s (cause %d)", ctx.request.call_id, served.served,
                 target, cause)
        return [Target(_uri(target))]

    def _tell_forwarded(self, ctx: RequestContext) -> None:
        """181 towards the caller, with the History-Info so far (RFC 7044, TS 24.604)."""
        self.send_provisional(ctx, 181, "Call Is Being Forwarded",
                              [(HISTORY_INFO, v) for v in ctx.request.headers.values(HISTORY_INFO)])

    def _leave(self, served: ServedCall) -> None:
        if served.watched is not None:
            self.calls.left(served.watched)
            served.watched = None
            self._notify_changed()

    async def on_response(self, ctx: RequestContext, response: Response) -> Response:
        watched = ctx.values.get("watched")
        served = ctx.values.get("served")
        if isinstance(served, ServedCall):
            watched = served.watched
        if isinstance(watched, WatchedDialog) and ctx.request.method == "INVITE":
            self.calls.response(watched, response)
            self._notify_changed()
        if response.status >= 200 and ctx.request.method == "INVITE":
            self.ringing.pop(ctx.request.call_id, None)
        return response

    def divert_ringing(self, call_id: str, target: Target) -> bool:
        """Take a call ringing for a served user to ``target`` instead (call pickup's
        bridge): its branches are CANCELled, their 487 is not forwarded (nor
        answered by forwarding), the call is gone from the user's dialogs."""
        ctx = self.ringing.pop(call_id, None)
        served = ctx.values.get("served") if ctx is not None else None
        if ctx is None or ctx.cancelled or not isinstance(served, ServedCall) or \
                served.forwarded or all(c.final_response is not None
                                        for c in ctx.pending.values()):
            return False
        served.forwarded = True
        if served.watched is not None:
            self.calls.left(served.watched)
            served.watched.event = di.DialogEvent.REPLACED
        self._leave(served)

        async def to_target(_ctx: RequestContext, _best: Response) -> list[Target]:
            return [target]
        ctx.failure_route = to_target
        ctx.record_route = False   # the target is our own UA: no second pass through us
        return self.cancel_pending(ctx) > 0

    # -- dialog event package (RFC 4235) -----------------------------------------------
    def serves_subscription(self, request: Request) -> bool:
        """An initial SUBSCRIBE for dialog events routed to us on the terminating side."""
        if request.method != "SUBSCRIBE" or request.to.tag is not None or not request.route:
            return False
        top = request.route[0].uri
        try:
            event = Event.parse(request.header("Event") or "")
        except HeaderError:
            return False
        return getattr(top, "user", None) == "term" and self.identity.is_me(top) and \
            event.package.lower() == "dialog"

    def serves_originating(self, request: Request) -> bool:
        """Routed to us for the caller's originating services (``sip:orig@AS``)."""
        top = request.route[0].uri if request.route else None
        return top is not None and getattr(top, "user", None) == "orig" and \
            self.identity.is_me(top)

    def _subscribed(self, sub: NotifierSubscription) -> None:
        self.watchers.setdefault(_resource(sub), {}).setdefault(sub, 0)

    def _first_state(self, sub: NotifierSubscription) -> object:
        aor = _resource(sub)
        versions = self.watchers.setdefault(aor, {})
        version = versions.get(sub, -1) + 1
        versions[sub] = version
        return self.calls.document(aor, version)

    def _notify_changed(self) -> None:
        """A NOTIFY with the full state to every watcher of each changed AOR."""
        for aor in self.calls.take_changed():
            for sub in list(self.watchers.get(aor, {})):
                if sub.terminated:
                    del self.watchers[aor][sub]
                    continue
                if self.events is not None:
                    self.events.notify(sub, self._first_state(sub))
            self.calls.forget_ended(aor)


class _EventGate:
    """Ahead of the EventAgent: SUBSCRIBE / NOTIFY / REFER that are not ours (a
    transfer inside a call we route) go through the proxy instead."""

    name = "telephony-event-gate"
    priority = Priority.EVENT - 8
    methods = ("SUBSCRIBE", "NOTIFY", "REFER")

    def __init__(self, node: TelephonyAs) -> None:
        self.node = node

    def on_request(self, ctx: ServerContext) -> bool:
        request = ctx.request
        if request.method not in self.methods:
            return False
        if self.node.serves_subscription(request):
            return False
        ua = self.node.ua
        if request.to.tag is not None and ua is not None and \
                ua.dialogs.find(request.call_id, request.to.tag, request.from_.tag or ""):
            return False   # one of our own dialogs (a subscription, a 3PCC call)
        self.node.relay(ctx)
        return True


def _resource(sub: NotifierSubscription) -> str:
    try:
        return canonical_public_id(str(sub.resource))
    except ValueError:
        return str(sub.resource)


def _identity(value: str) -> str:
    """A P-Asserted-Identity value as a canonical identity ('' if it is not one)."""
    try:
        return canonical_public_id(str(NameAddr.parse(value).uri))
    except (HeaderError, ValueError):
        return ""


def _uri(text: str) -> Uri:
    return parse_uri(text)


def _answer(request: Request, status: int, reason: str) -> Response:
    return Response.for_request(request, status, reason[:120], to_tag=new_tag())

