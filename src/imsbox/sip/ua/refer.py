"""The REFER method (RFC 3515) and Refer-Sub (RFC 4488), sans-I/O.

``ReferIssuer`` sends REFER and follows the implicit subscription to the
``refer`` event through a ``Subscriber``; each NOTIFY's message/sipfrag body
("SIP/2.0 100 Trying" .. "SIP/2.0 200 OK") becomes a ``ReferProgress``.
``ReferRecipient`` answers REFER with 202, creates the implicit subscription
in a ``Notifier``, sends the immediate "100 Trying" NOTIFY and later the final
status with ``Subscription-State: terminated;reason=noresource``.

The sipfrag helpers here are deliberately tiny: a status line in, a status
line out.

``EventAgent`` (end of module) is the asyncio adapter for both this module
and ``events``: an endpoint module (``Priority.EVENT``) serving SUBSCRIBE /
NOTIFY / REFER beside a UserAgent, with ``subscribe()``, ``notify()``,
``refer(call, ...)`` and ``report()``.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from collections.abc import Callable, Collection, Iterable
from urllib.parse import quote

from ..headers import Event, HeaderError, NameAddr, Params, ReferredBy, Replaces, refer_to_target
from ..message import REASON_PHRASES, Request, Response
from ..uri import SipUri, Uri, parse_uri
from ..endpoint import Priority
from ..transport import Flow
from .dialog import EVENT_METHODS, Dialog, DialogError, DialogId, build_request
from .events import (
    Authorizer, ContactSource, EventPackage, EventPackageRegistry, NotificationReceived, Notifier,
    NotifierSubscription, Resubscribing, SendRequest, StateSource, SubscribeSpec, Subscriber,
    SubscriberEvent, Subscription, SubscriptionCreated, SubscriptionTerminated,
    TerminationReason,
)

if TYPE_CHECKING:
    from ..endpoint import ServerContext
    from .useragent import Call, Origin, UserAgent

__all__ = [
    "SIPFRAG_TYPE", "REFER_PACKAGE", "sipfrag", "sipfrag_status", "ReferState",
    "Referral", "ReferAnswered", "ReferProgress", "ReferIssuer", "IncomingRefer",
    "ReferRecipient", "refer_to_value", "EventAgent", "SubscriptionWatch", "ReferWatch",
]

log = logging.getLogger(__name__)

SIPFRAG_TYPE = "message/sipfrag;version=2.0"
# How long a recipient keeps the implicit subscription (RFC 3515 2.4.4 leaves it
# to the recipient): long enough for a referenced INVITE to ring out.
REFER_EXPIRES = 180


def sipfrag(status: int, reason: str | None = None) -> bytes:
    """A minimal message/sipfrag body: one Status-Line (RFC 3515 2.4.5)."""
    return f"SIP/2.0 {status} {reason or REASON_PHRASES.get(status, 'Unknown')}\r\n".encode()


def sipfrag_status(body: bytes) -> tuple[int, str]:
    """The status code and reason phrase of a sipfrag body's Status-Line."""
    line = body.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != "SIP/2.0" or len(code) != 3 or not code.isdigit():
        raise ValueError(f"not a sipfrag Status-Line: {line[:60]!r}")
    return int(code), reason.strip()


def _render_status(state: object) -> bytes:
    """refer package state: a status code, (code, reason), or None for 100 Trying."""
    if state is None:
        return sipfrag(100)
    if isinstance(state, tuple):
        return sipfrag(int(state[0]), str(state[1]))
    if isinstance(state, int):
        return sipfrag(state)
    return bytes(state) if isinstance(state, bytes) else str(state).encode()


REFER_PACKAGE = EventPackage("refer", SIPFRAG_TYPE, default_expires=REFER_EXPIRES,
                             subscribable=False, render=_render_status)


def refer_to_value(target: NameAddr | Uri | str, replaces: Replaces | None = None) -> str:
    """A Refer-To value; a Replaces becomes an escaped URI header (RFC 3891 7.1)."""
    addr = target if isinstance(target, NameAddr) else NameAddr(
        parse_uri(target) if isinstance(target, str) else target)
    if replaces is not None:
        if not isinstance(addr.uri, SipUri):
            raise ValueError("Replaces needs a SIP or SIPS Refer-To URI")
        uri = addr.uri.copy(headers=[h for h in addr.uri.headers if h[0].lower() != "replaces"])
        uri.headers.append(("Replaces", quote(str(replaces), safe="")))
        addr = NameAddr(uri, addr.display_name, Params(addr.params))
    return str(addr)


def _ensure_refer(registry: EventPackageRegistry | None) -> None:
    if registry is not None and "refer" not in registry:
        registry.register(REFER_PACKAGE)


# -- issuer ---------------------------------------------------------------------

class ReferState(enum.Enum):
    """Where a referral stands, as its issuer sees it."""

    SENT = "sent"
    ACCEPTED = "accepted"        # 2xx to the REFER
    REJECTED = "rejected"        # non-2xx to the REFER
    TRYING = "trying"            # a 1xx sipfrag arrived
    SUCCEEDED = "succeeded"      # 2xx sipfrag
    FAILED = "failed"            # 3xx-6xx sipfrag


class Referral:
    """One REFER sent and what has been heard about it (RFC 3515 2.4.4)."""

    __slots__ = ("request", "refer_to", "state", "status", "reason", "subscription",
                 "refer_sub", "response")

    def __init__(self, request: Request, refer_to: str, refer_sub: bool) -> None:
        self.request = request
        self.refer_to = refer_to
        self.state = ReferState.SENT
        self.status: int | None = None     # last sipfrag status
        self.reason: str | None = None
        self.subscription: Subscription | None = None
        self.refer_sub = refer_sub
        self.response: Response | None = None

    def __repr__(self) -> str:
        return f"<Referral {self.refer_to} {self.state.value} {self.status}>"

    @property
    def done(self) -> bool:
        return self.state in (ReferState.REJECTED, ReferState.SUCCEEDED, ReferState.FAILED)


@dataclass(slots=True)
class ReferAnswered:
    """The final response to a REFER arrived."""

    referral: Referral
    response: Response


@dataclass(slots=True)
class ReferProgress:
    """A NOTIFY reported the referenced request's status (RFC 3515 2.4.5)."""

    referral: Referral
    status: int
    reason: str
    final: bool
    body: bytes = b""    # the whole sipfrag (it may carry headers, RFC 3420)


IssuerEvent = SubscriberEvent | ReferAnswered | ReferProgress


class ReferIssuer:
    """Sends REFER and follows the implicit ``refer`` subscription.

    Wraps a Subscriber: ``events()`` carries the subscriber's events (for
    every package, in order) with ReferAnswered / ReferProgress added.
    """

    def __init__(self, subscriber: Subscriber | None = None) -> None:
        self.subscriber = subscriber or Subscriber(EventPackageRegistry([REFER_PACKAGE]))
        _ensure_refer(self.subscriber.packages)
        self._referrals: dict[tuple[str, int], Referral] = {}
        self._events: list[IssuerEvent] = []

    def events(self) -> list[IssuerEvent]:
        self._pull()
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        return self.subscriber.next_deadline()

    def on_timer(self, now: float) -> None:
        self.subscriber.on_timer(now)
        self._pull()

    # -- sending -------------------------------------------------------------------
    def refer(self, dialog: Dialog, refer_to: NameAddr | Uri | str, now: float, *,
              referred_by: NameAddr | str | None = None, replaces: Replaces | None = None,
              refer_sub: bool = True, headers: Iterable[tuple[str, str]] = ()) -> Referral:
        """A REFER inside an existing dialog (e.g. a call transfer)."""
        request = dialog.create_request(
            "REFER", self._headers(refer_to, replaces, referred_by, refer_sub, headers))
        return self._start(request, now, dialog, refer_sub)

    def refer_out_of_dialog(self, target: Uri | str, local: NameAddr | str,
                            remote: NameAddr | str, contact: Uri | str,
                            refer_to: NameAddr | Uri | str, now: float, *,
                            referred_by: NameAddr | str | None = None,
                            replaces: Replaces | None = None, refer_sub: bool = True,
                            route: Iterable[str] = (),
                            headers: Iterable[tuple[str, str]] = ()) -> Referral:
        """A REFER that creates its own dialog (RFC 3515 2.4.4)."""
        request = build_request(
            "REFER", target, local, remote, contact=contact, route=route,
            headers=self._headers(refer_to, replaces, referred_by, refer_sub, headers))
        return self._start(request, now, None, refer_sub)

    @staticmethod
    def _headers(refer_to: NameAddr | Uri | str, replaces: Replaces | None,
                 referred_by: NameAddr | str | None, refer_sub: bool,
                 extra: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        headers = [("Refer-To", refer_to_value(refer_to, replaces))]
        if referred_by is not None:
            headers.append(("Referred-By", str(referred_by)))
        if not refer_sub:  # RFC 4488 4
            headers.append(("Refer-Sub", "false"))
            headers.append(("Supported", "norefersub"))
        headers.extend(extra)
        return headers

    def _start(self, request: Request, now: float, dialog: Dialog | None,
               refer_sub: bool) -> Referral:
        referral = Referral(request, request.headers.get("Refer-To") or "", refer_sub)
        event = Event("refer", Params([("id", str(request.cseq.seq))]))
        # Even with Refer-Sub: false the recipient may not honour it: be ready.
        referral.subscription = self.subscriber.track(request, event, now, dialog, referral)
        self._referrals[(request.call_id, request.cseq.seq)] = referral
        self._pull()
        return referral

    # -- input ---------------------------------------------------------------------
    def receive_response(self, request: Request, response: Response, now: float) -> None:
        """The REFER's (or a refresh SUBSCRIBE's) response."""
        self.subscriber.receive_response(request, response, now)
        self._pull()
        referral = self._referrals.get((request.call_id, request.cseq.seq))
        if referral is not None and response.status >= 200:
            del self._referrals[(request.call_id, request.cseq.seq)]
            self._answered(referral, response, now)
        self._pull()

    def request_failed(self, request: Request, now: float) -> None:
        self.receive_response(request, Response.for_request(request, 408), now)

    def _answered(self, referral: Referral, response: Response, now: float) -> None:
        referral.response = response
        if response.status >= 300:
            referral.state = ReferState.REJECTED
        else:
            if referral.state is ReferState.SENT:
                referral.state = ReferState.ACCEPTED
            refused = (response.headers.get("Refer-Sub") or "").strip().lower() == "false"
            sub = referral.subscription
            if refused and sub is not None:  # RFC 4488 4: no NOTIFY will come
                self._pull()
                self.subscriber.cancel(sub, now)
                referral.subscription = None
        self._events.append(ReferAnswered(referral, response))

    def receive_notify(self, request: Request, now: float) -> Response:
        """Any NOTIFY for this UA's subscriber (refer or other packages)."""
        response = self.subscriber.receive_notify(request, now)
        self._pull()
        return response

    def _pull(self) -> None:
        """Move subscriber events over, adding ReferProgress after refer NOTIFYs."""
        for event in self.subscriber.events():
            self._events.append(event)
            if isinstance(event, NotificationReceived) and isinstance(
                    event.subscription.usage, Referral):
                self._progress(event.subscription.usage, event.request)

    def _progress(self, referral: Referral, notify: Request) -> None:
        try:
            status, reason = sipfrag_status(notify.body)
        except ValueError as exc:
            log.info("refer NOTIFY without a usable sipfrag: %s (Call-ID %s)",
                     exc, notify.call_id)
            return
        referral.status, referral.reason = status, reason
        if status < 200:
            referral.state = ReferState.TRYING
        else:
            referral.state = ReferState.SUCCEEDED if status < 300 else ReferState.FAILED
        self._events.append(ReferProgress(referral, status, reason, status >= 200,
                                          notify.body))


# -- recipient ------------------------------------------------------------------

@dataclass(slots=True)
class IncomingRefer:
    """An accepted REFER: what to do and the subscription to report on."""

    request: Request
    refer_to: NameAddr
    embedded: dict[str, str]          # URI headers of Refer-To, %-decoded
    replaces: Replaces | None
    referred_by: ReferredBy | None
    dialog: Dialog
    subscription: NotifierSubscription | None

    @property
    def target(self) -> Uri:
        """The URI to act on, without its embedded headers."""
        uri = self.refer_to.uri
        return uri.copy(headers=[]) if isinstance(uri, SipUri) else uri


class ReferRecipient:
    """Accepts REFER (RFC 3515 2.4.2) and reports progress through a Notifier."""

    def __init__(self, notifier: Notifier, *, honour_refer_sub: bool = True) -> None:
        self.notifier = notifier
        self.honour_refer_sub = honour_refer_sub
        _ensure_refer(notifier.packages)

    def receive_refer(self, request: Request, now: float,
                      dialog: Dialog | None = None) -> tuple[Response, IncomingRefer | None]:
        """202 and the implicit subscription, or the error response to send.

        ``dialog`` is the dialog a REFER with a To tag arrived in (default: the
        one of its tags in the notifier's DialogTable).
        """
        parsed = self._parse(request)
        if isinstance(parsed, Response):
            return parsed, None
        refer_to, embedded, replaces, referred_by = parsed
        owned = dialog is None
        found = self._dialog(request, dialog)
        if isinstance(found, Response):
            return found, None
        dialog = found
        response = Response.for_request(request, 202, to_tag=dialog.id.local_tag)
        response.add_header("Contact", self.notifier.contact_value(dialog))
        incoming = IncomingRefer(request, refer_to, embedded, replaces, referred_by, dialog, None)
        wants_no_sub = (request.headers.get("Refer-Sub") or "").strip().lower() == "false"
        if wants_no_sub and self.honour_refer_sub:
            response.add_header("Refer-Sub", "false")  # RFC 4488 4
            return response, incoming
        event = Event("refer", Params([("id", str(request.cseq.seq))]))
        sub = self.notifier.create_implicit(dialog, event, now, owns_dialog=owned,
                                            request=request, usage=incoming)
        incoming.subscription = sub
        self.notifier.notify(sub, now, body=sipfrag(100))  # 2.4.4: immediate NOTIFY
        return response, incoming

    @staticmethod
    def _parse(request: Request) -> Response | tuple[
            NameAddr, dict[str, str], Replaces | None, ReferredBy | None]:
        """2.4.1: exactly one Refer-To; Replaces and Referred-By well formed."""
        values = request.headers.get_all("Refer-To")
        if len(values) != 1:
            reason = "Missing Refer-To" if not values else "Multiple Refer-To"
            return Response.for_request(request, 400, reason)
        try:
            refer_to, embedded = refer_to_target(values[0])
            replaces = Replaces.parse(embedded["Replaces"]) if "Replaces" in embedded else None
            by = request.headers.get("Referred-By")
            referred_by = ReferredBy.parse(by) if by is not None else None
        except HeaderError as exc:
            return Response.for_request(request, 400, f"Bad {exc.header}")
        return refer_to, embedded, replaces, referred_by

    def _dialog(self, request: Request, dialog: Dialog | None) -> Dialog | Response:
        if request.to.tag:
            dialog = dialog or self.notifier.dialogs.match_request(request)
            if dialog is None or dialog.id != DialogId.for_incoming_request(request):
                return Response.for_request(request, 481)
            status = dialog.receive_request(request)
            return Response.for_request(request, status) if status is not None else dialog
        try:
            return self.notifier.new_dialog(request)
        except DialogError:
            return Response.for_request(request, 400, "Missing Contact")

    def report(self, refer: IncomingRefer, status: int, now: float,
               reason: str | None = None) -> Request | None:
        """2.4.5: a NOTIFY with the referenced request's status; a final one ends it."""
        sub = refer.subscription
        if sub is None or sub.terminated:
            return None
        body = sipfrag(status, reason)
        if status < 200:
            return self.notifier.notify(sub, now, body=body)
        return self.notifier.terminate(sub, now, TerminationReason.NORESOURCE, body=body)


# -- asyncio adapter ------------------------------------------------------------
# Lives here because it drives both the events framework and REFER; it is the
# only asyncio code in this module and can move to its own module as is.

class SubscriptionWatch:
    """What a subscriber's application awaits for one subscribe() call."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription   # the newest one after a re-subscription
        self.notifications: asyncio.Queue[NotificationReceived] = asyncio.Queue()
        self.terminated: asyncio.Future[SubscriptionTerminated] = \
            asyncio.get_running_loop().create_future()

    async def next_notification(self, timeout: float | None = None) -> NotificationReceived:
        return await asyncio.wait_for(self.notifications.get(), timeout)


class ReferWatch:
    """What a REFER's sender awaits: the answer and the sipfrag progress."""

    def __init__(self, referral: Referral) -> None:
        loop = asyncio.get_running_loop()
        self.referral = referral
        self.answered: asyncio.Future[Response] = loop.create_future()
        self.progress: asyncio.Queue[ReferProgress] = asyncio.Queue()
        self.done: asyncio.Future[ReferProgress | None] = loop.create_future()


class EventAgent:
    """asyncio glue: SUBSCRIBE / NOTIFY / REFER beside a UserAgent.

    An endpoint module at ``Priority.EVENT``: it takes every SUBSCRIBE,
    NOTIFY and REFER (in a call's dialog too, after the UA's dialog layer
    left them); the rest goes on to the next module.  Its Subscriber and
    Notifier keep every subscription as a usage in the UA's DialogTable
    (RFC 5057): a SUBSCRIBE- or REFER-created dialog is found there like an
    INVITE's, and leaves it with its last usage.
    Incoming REFERs reach ``on_refer`` or the ``refers`` queue; answer them
    with ``report()``.
    """

    name = "events"
    priority = Priority.EVENT
    methods: Collection[str] = ("SUBSCRIBE", "NOTIFY", "REFER")

    def __init__(self, ua: UserAgent, packages: EventPackageRegistry | None = None, *,
                 min_expires: int = 0, authorize: Authorizer | None = None,
                 state_of: StateSource | None = None,
                 on_refer: Callable[[IncomingRefer], object] | None = None,
                 on_subscription: Callable[[NotifierSubscription], object] | None = None,
                 contact_of: ContactSource | None = None) -> None:
        self.ua = ua
        self.endpoint = ua.endpoint
        self.packages = packages if packages is not None else EventPackageRegistry()
        t1 = self.endpoint.layer.timers.t1
        # every subscription is a usage of a dialog in the UA's one table (RFC 5057)
        self.issuer = ReferIssuer(Subscriber(self.packages, t1=t1, dialogs=ua.dialogs))
        self.subscriber = self.issuer.subscriber
        self.notifier = Notifier(self.packages, ua.contact, min_expires=min_expires,
                                 authorize=authorize, state_of=state_of, dialogs=ua.dialogs,
                                 contact_of=contact_of)
        self.recipient = ReferRecipient(self.notifier)
        self.on_refer = on_refer
        self.on_subscription = on_subscription
        self.refers: asyncio.Queue[IncomingRefer] = asyncio.Queue()
        self._watches: dict[int, SubscriptionWatch] = {}     # id(origin subscription)
        self._refer_watches: dict[int, ReferWatch] = {}      # id(referral)
        self._flows: dict[str, Flow] = {}                    # Call-ID -> its origin's flow
        self._timer: asyncio.TimerHandle | None = None
        self.endpoint.add_module(self)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- subscriber API ----------------------------------------------------------
    def subscribe(self, target: str | Uri, event: str, *, expires: int | None = None,
                  accept: Iterable[str] = (), to: str | NameAddr | None = None,
                  origin: Origin | None = None) -> SubscriptionWatch:
        """Send an initial SUBSCRIBE; await the watch's notifications.
        ``origin`` (default the UA's) gives its From, Contact, route and flow."""
        origin = origin or self.ua.origin
        uri = parse_uri(target) if isinstance(target, str) else target
        remote = to if isinstance(to, NameAddr) else NameAddr.parse(to) if to else NameAddr(uri)
        spec = SubscribeSpec(uri, origin.local, remote, Event.parse(event), origin.contact,
                             expires, tuple(accept), origin.route)
        sub = self.subscriber.subscribe(spec, self._now())
        if origin.flow is not None:
            self._flows[sub.request.call_id] = origin.flow
        watch = self._watches[id(sub)] = SubscriptionWatch(sub)
        self._drain()
        return watch

    def refresh(self, watch: SubscriptionWatch, expires: int | None = None) -> None:
        """Refresh now (RFC 6665 4.1.2.1), in the dialog, before it would expire."""
        self.subscriber.refresh(watch.subscription, self._now(), expires)
        self._drain()

    async def unsubscribe(self, watch: SubscriptionWatch,
                          timeout: float | None = None) -> SubscriptionTerminated:
        """Expires: 0, then wait for the final NOTIFY (or Timer N)."""
        self.subscriber.unsubscribe(watch.subscription, self._now())
        self._drain()
        return await asyncio.wait_for(asyncio.shield(watch.terminated), timeout)

    # -- notifier API --------------------------------------------------------------
    def notify(self, sub: NotifierSubscription, state: object = None) -> None:
        """Send the subscriber the resource's (new) state."""
        self.notifier.notify(sub, self._now(), state)
        self._drain()

    def terminate(self, sub: NotifierSubscription, reason: str = TerminationReason.NORESOURCE,
                  retry_after: int | None = None, body: bytes | None = None) -> None:
        """The final NOTIFY; ``body`` instead of the resource's rendered state."""
        self.notifier.terminate(sub, self._now(), reason, retry_after, body=body)
        self._drain()

    # -- REFER API ------------------------------------------------------------------
    def refer(self, call: Call, target: NameAddr | Uri | str, *,
              replaces: Replaces | None = None, referred_by: NameAddr | str | None = None,
              refer_sub: bool = True) -> ReferWatch:
        """REFER the other party of a call to ``target`` (a transfer), on
        the call's own origin; the implicit subscription is a usage of its dialog."""
        dialog = call.session.dialog
        if dialog is None:
            raise ValueError("the call has no dialog yet")
        referral = self.issuer.refer(dialog, target, self._now(), replaces=replaces,
                                     referred_by=referred_by, refer_sub=refer_sub)
        if call.origin.flow is not None:
            self._flows[dialog.id.call_id] = call.origin.flow
        watch = self._refer_watches[id(referral)] = ReferWatch(referral)
        self._drain()
        return watch

    def refer_out_of_dialog(self, target: str | Uri, refer_to: NameAddr | Uri | str, *,
                            replaces: Replaces | None = None,
                            referred_by: NameAddr | str | None = None,
                            origin: Origin | None = None) -> ReferWatch:
        """A REFER that makes its own dialog (RFC 3515 2.4.4), e.g. to a music
        server (RFC 5359 2.3 F8); ``origin`` gives From, Contact, route and flow."""
        origin = origin or self.ua.origin
        uri = parse_uri(target) if isinstance(target, str) else target
        referral = self.issuer.refer_out_of_dialog(
            uri, origin.local, NameAddr(uri), origin.contact, refer_to, self._now(),
            referred_by=referred_by, replaces=replaces, route=origin.route)
        if origin.flow is not None:
            self._flows[referral.request.call_id] = origin.flow
        watch = self._refer_watches[id(referral)] = ReferWatch(referral)
        self._drain()
        return watch

    def report(self, refer: IncomingRefer, status: int, reason: str | None = None) -> None:
        """Tell the REFER's sender how the referenced request went."""
        self.recipient.report(refer, status, self._now(), reason)
        self._drain()

    # -- incoming requests (the module) -------------------------------------------
    def on_request(self, ctx: ServerContext) -> bool:
        request, now = ctx.request, self._now()
        if request.method not in EVENT_METHODS:
            return False
        if request.method == "NOTIFY":
            ctx.respond(self.issuer.receive_notify(request, now))
        elif request.method == "SUBSCRIBE":
            ctx.respond(self.notifier.receive_subscribe(request, now))
        else:
            response, incoming = self.recipient.receive_refer(request, now)
            ctx.respond(response)  # the 202 goes out before the first NOTIFY
            if incoming is not None:
                self._incoming_refer(incoming)
        self._drain()
        return True

    def _incoming_refer(self, incoming: IncomingRefer) -> None:
        if self.on_refer is None:
            self.refers.put_nowait(incoming)
            return
        result = self.on_refer(incoming)
        if inspect.isawaitable(result):
            self.endpoint.spawn(result)

    # -- carrying out events -----------------------------------------------------------
    def _drain(self) -> None:
        for event in self.issuer.events():
            self._subscriber_event(event)
        for notifier_event in self.notifier.events():
            self._notifier_event(notifier_event)
        self._schedule()

    def _subscriber_event(self, event: object) -> None:
        match event:
            case SendRequest(request=request):
                self._send(request, self.issuer.receive_response)
            case NotificationReceived(subscription=sub):
                if (watch := self._watches.get(id(sub.origin))) is not None:
                    watch.notifications.put_nowait(event)
            case SubscriptionTerminated(subscription=Subscription() as sub, retry_at=retry_at):
                watch = self._watches.get(id(sub.origin))
                if watch is not None and retry_at is None and sub is watch.subscription:
                    del self._watches[id(sub.origin)]
                    self._flows.pop(sub.request.call_id, None)
                    if not watch.terminated.done():
                        watch.terminated.set_result(event)
            case Resubscribing(previous=previous, subscription=new):
                if (watch := self._watches.pop(id(previous.origin), None)) is not None:
                    watch.subscription = new
                    self._watches[id(new)] = watch
            case ReferAnswered(referral=referral, response=response):
                refer_watch = self._refer_watches.get(id(referral))
                if refer_watch is not None and not refer_watch.answered.done():
                    refer_watch.answered.set_result(response)
                if refer_watch is not None and (response.status >= 300 or referral.subscription is None
                                                or refer_watch.done.done()):
                    self._refer_done(referral, None)
            case ReferProgress(referral=referral):
                if (progress_watch := self._refer_watches.get(id(referral))) is not None:
                    progress_watch.progress.put_nowait(event)
                    if event.final:
                        self._refer_done(referral, event)

    def _refer_done(self, referral: Referral, progress: ReferProgress | None) -> None:
        watch = self._refer_watches.get(id(referral))
        if watch is not None and not watch.done.done():
            watch.done.set_result(progress)
        if watch is None or watch.answered.done():  # the final NOTIFY may overtake the 2xx
            self._refer_watches.pop(id(referral), None)
            self._flows.pop(referral.request.call_id, None)

    def _notifier_event(self, event: object) -> None:
        match event:
            case SendRequest(request=request):
                self._send(request, self.notifier.receive_response)
            case SubscriptionCreated(subscription=sub):
                if self.on_subscription is not None:
                    self.on_subscription(sub)

    def _send(self, request: Request,
              feed: Callable[[Request, Response, float], None]) -> None:
        ctx = self.endpoint.request(request, flow=self._flows.get(request.call_id))

        async def answer() -> None:
            response = await ctx.final()
            feed(request, response, self._now())
            self._drain()
        self.endpoint.spawn(answer())

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        times = [t for t in (self.issuer.next_deadline(), self.notifier.next_deadline())
                 if t is not None]
        deadline = min(times) if times else None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer, deadline)

    def _on_timer(self, deadline: float) -> None:
        self._timer = None
        now = max(self._now(), deadline)  # call_at may run a hair early
        self.issuer.on_timer(now)
        self.notifier.on_timer(now)
        self._drain()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self in self.endpoint.modules:
            self.endpoint.remove_module(self)
