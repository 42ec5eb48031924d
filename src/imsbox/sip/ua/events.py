"""SIP-specific event notification (RFC 6665), sans-I/O.

``Subscriber`` and ``Notifier`` are plain state machines.  Inputs are the
requests and responses a UA receives, each with an explicit ``now``; outputs
are drained with ``events()`` (``SendRequest`` for every SUBSCRIBE / NOTIFY to
send, plus notifications and terminations) and timers are a
``next_deadline()`` / ``on_timer(now)`` pair.  Responses to incoming requests
are returned directly by ``receive_notify`` / ``receive_subscribe``.

The caller sends each ``SendRequest.request`` in a new client transaction and
feeds the final response back with ``receive_response(request, response, now)``
(or ``request_failed(request, now)`` on a transaction timeout).

Refresh policy (4.1.2.2 leaves it open): a subscription of duration ``d`` is
refreshed at ``expiry - min(d / 2, 64*T1)``.  64*T1 (32 s) bounds both a
non-INVITE transaction (Timer F) and Timer N, so a refresh and its NOTIFY
complete before the old subscription runs out; short subscriptions refresh
at half-life.

Event packages are described by ``EventPackage`` values kept in an
``EventPackageRegistry`` (content type, default / minimum / maximum
duration, how to render state into a NOTIFY body), so the dialog, reg,
conference and refer packages plug in without touching this module.

Dialogs are ``imsbox.sip.ua.dialog.Dialog``; a subscription created by a
NOTIFY (4.4.1) gets its dialog from ``dialog_from_notify`` below, since
``Dialog.from_uas`` only covers requests without a To tag.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass
from typing import TypeVar
from collections.abc import Callable, Iterable

from ..headers import Event, HeaderError, NameAddr, SubscriptionState as SubscriptionStateHeader
from ..message import Request, Response
from ..uri import Uri, parse_uri
from .dialog import (
    Dialog, DialogError, DialogId, DialogRole, DialogState, DialogTable, RouteSet, UsageKind,
    build_request,
)

__all__ = [
    "EventPackage", "EventPackageRegistry", "SubscriberState", "NotifierState",
    "TerminationReason", "LocalReason", "SubscribeSpec", "Subscription",
    "NotifierSubscription", "Subscriber", "Notifier", "SendRequest",
    "NotificationReceived", "SubscriptionCreated", "SubscriptionTerminated",
    "Resubscribing", "dialog_from_notify", "allow_events", "SubscriberEvent",
    "NotifierEvent",
]

log = logging.getLogger(__name__)

T1 = 0.5
# 4.1.2.2 / 4.2.2: responses after which a subscription is gone.
_FATAL_STATUSES = frozenset({404, 405, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 604})
_ONE_HOUR = 3600


# -- event packages ---------------------------------------------------------

def _raw_body(state: object) -> bytes:
    """Default renderer: bytes as they are, text as UTF-8, None as neutral (empty)."""
    if state is None:
        return b""
    if isinstance(state, bytes):
        return state
    return str(state).encode("utf-8")


@dataclass(slots=True, frozen=True)
class EventPackage:
    """An event package (RFC 6665 5.4): what a notifier needs to serve it."""

    name: str
    content_type: str | None = None
    default_expires: int = 3600
    min_expires: int = 0
    max_expires: int = 86400
    # False: subscriptions exist only implicitly (refer, RFC 3515 2.4.4 -> 403).
    subscribable: bool = True
    render: Callable[[object], bytes] = _raw_body


class EventPackageRegistry:
    """Event packages by name (case-insensitive), for Event checks and Allow-Events."""

    def __init__(self, packages: Iterable[EventPackage] = ()) -> None:
        self._packages: dict[str, EventPackage] = {}
        for package in packages:
            self.register(package)

    def register(self, package: EventPackage) -> None:
        self._packages[package.name.lower()] = package

    def get(self, name: str) -> EventPackage | None:
        return self._packages.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._packages

    def names(self) -> list[str]:
        return list(self._packages)

    def allow_events(self) -> str:
        """The Allow-Events value (RFC 6665 8.2.2)."""
        return ", ".join(self._packages)


def allow_events(response: Response) -> list[str]:
    """Event packages a 489 (or any message) lists in Allow-Events."""
    return [v.strip().lower() for v in response.headers.values("Allow-Events") if v.strip()]


# -- states and reasons -----------------------------------------------------

class SubscriberState(enum.Enum):
    """The subscriber's view of a subscription (RFC 6665 4.1.2 diagram)."""

    NOTIFY_WAIT = "notify_wait"
    PENDING = "pending"
    ACTIVE = "active"
    TERMINATED = "terminated"


class NotifierState(enum.Enum):
    """The notifier's view of a subscription (RFC 6665 4.2.2 diagram)."""

    PENDING = "pending"
    ACTIVE = "active"
    TERMINATED = "terminated"


class TerminationReason(enum.StrEnum):
    """Subscription-State reason codes (RFC 6665 4.1.3)."""

    DEACTIVATED = "deactivated"
    PROBATION = "probation"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    GIVEUP = "giveup"
    NORESOURCE = "noresource"
    INVARIANT = "invariant"


class LocalReason(enum.StrEnum):
    """Why a subscription ended without a terminating NOTIFY."""

    FAILED = "failed"                # non-2xx final response to the initial request
    NO_NOTIFY = "no-notify"          # Timer N fired (4.1.2.4)
    EXPIRED = "expired"              # not refreshed in time
    REFRESH_FAILED = "refresh-failed"  # 4.1.2.2 fatal response to a refresh
    NOTIFY_FAILED = "notify-failed"  # 4.2.2 fatal response / timeout of a NOTIFY
    CANCELLED = "cancelled"          # dropped by the local user (no request sent)


_KNOWN_REASONS = frozenset(TerminationReason) | frozenset(LocalReason)


# -- values -----------------------------------------------------------------

@dataclass(slots=True)
class SubscribeSpec:
    """What an initial SUBSCRIBE asks for; kept to build refreshes and retries."""

    target: Uri
    local: NameAddr
    remote: NameAddr
    event: Event
    contact: Uri
    expires: int | None = None
    accept: tuple[str, ...] = ()
    route: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    content_type: str | None = None
    resubscribe: bool = True  # follow deactivated / probation with a new SUBSCRIBE


class _Kind(enum.Enum):
    INITIAL = "initial"
    REFRESH = "refresh"
    UNSUBSCRIBE = "unsubscribe"


class Subscription:
    """One subscription as its subscriber sees it (RFC 6665 4.1.2)."""

    __slots__ = ("event", "spec", "request", "dialog", "state", "expires_at",
                 "refresh_at", "timer_n_at", "retry_at", "duration", "implicit",
                 "usage", "unsubscribing", "refreshing", "owns_dialog", "reason",
                 "origin")

    def __init__(self, event: Event, request: Request, spec: SubscribeSpec | None = None,
                 dialog: Dialog | None = None, implicit: bool = False,
                 usage: object = None, owns_dialog: bool = True) -> None:
        self.event = event
        self.spec = spec
        self.request = request          # the SUBSCRIBE / REFER that created it
        self.dialog = dialog
        self.state = SubscriberState.NOTIFY_WAIT
        self.expires_at: float | None = None
        self.refresh_at: float | None = None
        self.timer_n_at: float | None = None
        self.retry_at: float | None = None
        self.duration: int | None = None
        self.implicit = implicit        # created by REFER: no automatic refresh
        self.usage = usage              # owner's object (e.g. a Referral)
        self.unsubscribing = False
        self.refreshing = False
        self.owns_dialog = owns_dialog
        self.reason: str | None = None
        self.origin: Subscription = self  # the subscription a fork came from

    def __repr__(self) -> str:
        did = self.dialog.id if self.dialog else None
        return f"<Subscription {self.event} {self.state.value} {did}>"

    @property
    def terminated(self) -> bool:
        return self.state is SubscriberState.TERMINATED

    @property
    def usage_kind(self) -> UsageKind:
        """RFC 5057: REFER's implicit subscription or an ordinary one."""
        return UsageKind.REFER if self.event.package == "refer" else UsageKind.SUBSCRIPTION


class NotifierSubscription:
    """One subscription as its notifier sees it (RFC 6665 4.2)."""

    __slots__ = ("dialog", "event", "package", "state", "expires_at", "resource",
                 "implicit", "owns_dialog", "usage", "request", "notifier")

    def __init__(self, dialog: Dialog, event: Event, package: EventPackage,
                 state: NotifierState, expires_at: float, resource: Uri,
                 request: Request | None = None, implicit: bool = False,
                 owns_dialog: bool = True, usage: object = None) -> None:
        self.dialog = dialog
        self.event = event
        self.package = package
        self.state = state
        self.expires_at = expires_at
        self.resource = resource        # Request-URI of the SUBSCRIBE
        self.request = request
        self.implicit = implicit
        self.owns_dialog = owns_dialog
        self.usage = usage
        self.notifier: Notifier | None = None  # the Notifier it is a usage for

    def __repr__(self) -> str:
        return f"<NotifierSubscription {self.event} {self.state.value} {self.dialog.id}>"

    @property
    def terminated(self) -> bool:
        return self.state is NotifierState.TERMINATED

    @property
    def usage_kind(self) -> UsageKind:
        """RFC 5057: REFER's implicit subscription or an ordinary one."""
        return UsageKind.REFER if self.event.package == "refer" else UsageKind.SUBSCRIPTION

    @property
    def subscriber(self) -> NameAddr:
        return self.dialog.remote_addr


# -- output events ----------------------------------------------------------

@dataclass(slots=True)
class SendRequest:
    """Send this request in a new client transaction; feed its response back."""

    request: Request
    subscription: Subscription | NotifierSubscription


@dataclass(slots=True)
class NotificationReceived:
    """A NOTIFY was accepted for this subscription (RFC 6665 4.1.3)."""

    subscription: Subscription
    request: Request
    state: SubscriptionStateHeader

    @property
    def body(self) -> bytes:
        return self.request.body


@dataclass(slots=True)
class SubscriptionCreated:
    """The notifier accepted a new subscription."""

    subscription: NotifierSubscription


@dataclass(slots=True)
class SubscriptionTerminated:
    """A subscription ended; ``retry_at`` says when a new one will be tried."""

    subscription: Subscription | NotifierSubscription
    reason: str | None
    retry_at: float | None = None
    response: Response | None = None


@dataclass(slots=True)
class Resubscribing:
    """A new subscription replaces a terminated one (4.1.3 deactivated / probation)."""

    previous: Subscription
    subscription: Subscription


SubscriberEvent = SendRequest | NotificationReceived | SubscriptionTerminated | Resubscribing
NotifierEvent = SendRequest | SubscriptionCreated | SubscriptionTerminated


# -- helpers ----------------------------------------------------------------

def dialog_from_notify(subscribe: Request, notify: Request) -> Dialog:
    """RFC 6665 4.4.1: the subscriber's dialog, created by the NOTIFY itself.

    The subscriber sent the SUBSCRIBE (UAC) but learns the dialog from a
    request, so the route set is the NOTIFY's Record-Route in order (12.1.1).
    """
    if not notify.contact:
        raise DialogError("NOTIFY without Contact cannot create a dialog")
    local_target = subscribe.contact[0].uri if subscribe.contact else None
    return Dialog(
        DialogRole.UAC,
        DialogId(notify.call_id, notify.to.tag or "", notify.from_.tag or ""),
        subscribe.from_, notify.from_, _copy(notify.contact[0].uri),
        RouteSet.from_record_route(notify, reverse=False),
        subscribe.cseq.seq, notify.cseq.seq, local_target,
        state=DialogState.CONFIRMED,
    )


def _copy(uri: Uri) -> Uri:
    copy = getattr(uri, "copy", None)
    return copy() if copy else parse_uri(str(uri))


def _compatible(mine: Event, theirs: Event, implicit: bool) -> bool:
    """8.2.1 Event matching; a REFER's first NOTIFY may omit the id (RFC 3515 2.4.6)."""
    if mine.package != theirs.package:
        return False
    return mine.id == theirs.id or (implicit and theirs.id is None)


def _bad_request(request: Request, reason: str) -> Response:
    return Response.for_request(request, 400, reason)


def _timers(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _end_usage(dialogs: DialogTable, sub: Subscription | NotifierSubscription) -> None:
    """Drop one dialog usage (RFC 5057); the last one gone takes the dialog out of
    the table and ends it when the subscription created it (4.4.1)."""
    if sub.dialog is None:  # never got a dialog: no usage to drop
        return
    if dialogs.remove_usage(sub.dialog, sub) and sub.owns_dialog:
        sub.dialog.terminate()


_Usage = TypeVar("_Usage", "Subscription", "NotifierSubscription")


def _usages(dialogs: DialogTable, dialog_id: DialogId, kind: type[_Usage]) -> list[_Usage]:
    """The usages of one kind (subscriber or notifier side) a dialog carries."""
    dialog = dialogs.get(dialog_id)
    return [u for u in dialog.usages if isinstance(u, kind)] if dialog is not None else []


# -- subscriber -------------------------------------------------------------

@dataclass(slots=True)
class _InFlight:
    subscription: Subscription
    kind: _Kind
    expires: int | None


class Subscriber:
    """The subscriber side of RFC 6665 for one UA: all its subscriptions.

    Each subscription with a dialog is a usage of that dialog in ``dialogs``
    (the UA's DialogTable, or a table of its own).
    """

    def __init__(self, packages: EventPackageRegistry | None = None, *, t1: float = T1,
                 probation_retry: float = 60.0, dialogs: DialogTable | None = None) -> None:
        self.packages = packages          # None: accept NOTIFY for any package we asked for
        self.timer_n = 64 * t1            # 4.1.2.4 Timer N
        self.refresh_margin = 64 * t1
        self.probation_retry = probation_retry  # probation without retry-after
        self.dialogs = dialogs if dialogs is not None else DialogTable()
        # (Call-ID, From tag) of initial requests still in their Timer N window
        self._attempts: dict[tuple[str, str], tuple[Subscription, float]] = {}
        self._in_flight: dict[tuple[str, int], _InFlight] = {}
        self._live: list[Subscription] = []
        self._events: list[SubscriberEvent] = []

    # -- queries -----------------------------------------------------------
    def events(self) -> list[SubscriberEvent]:
        out, self._events = self._events, []
        return out

    @property
    def subscriptions(self) -> list[Subscription]:
        return [s for s in self._live if not s.terminated]

    def next_deadline(self) -> float | None:
        times: list[float | None] = [until for _, until in self._attempts.values()]
        for s in self._live:
            times.append(_timers(s.timer_n_at, s.expires_at, s.refresh_at, s.retry_at)
                         if not s.terminated else s.retry_at)
        return _timers(*times)

    # -- starting subscriptions ------------------------------------------------
    def subscribe(self, spec: SubscribeSpec, now: float) -> Subscription:
        """4.1.2.1: an initial SUBSCRIBE outside any dialog."""
        expires = spec.expires
        request = build_request(
            "SUBSCRIBE", _copy(spec.target), spec.local, spec.remote, contact=spec.contact,
            route=spec.route, headers=self._subscribe_headers(spec.event, expires, spec),
            body=spec.body, content_type=spec.content_type)
        sub = Subscription(spec.event, request, spec)
        self._start_initial(sub, request, expires, now)
        return sub

    def subscribe_in_dialog(self, dialog: Dialog, event: Event, now: float,
                            expires: int | None = None, accept: Iterable[str] = ()) -> Subscription:
        """A new subscription usage in an existing dialog (e.g. conference after INVITE)."""
        headers = [("Event", str(event))]
        if expires is not None:
            headers.append(("Expires", str(expires)))
        if accept:
            headers.append(("Accept", ", ".join(accept)))
        request = dialog.create_request("SUBSCRIBE", headers)
        sub = Subscription(event, request, dialog=dialog, owns_dialog=False)
        self._start_initial(sub, request, expires, now)
        return sub

    def track(self, request: Request, event: Event, now: float, dialog: Dialog | None = None,
              usage: object = None) -> Subscription:
        """An implicit subscription a request such as REFER creates (RFC 3515 2.4.4).

        The request is queued for sending like any other; ``dialog`` is the
        dialog it is sent in, or None when the request creates one.
        """
        sub = Subscription(event, request, dialog=dialog, implicit=True, usage=usage,
                           owns_dialog=dialog is None)
        self._start_initial(sub, request, None, now)
        return sub

    def _start_initial(self, sub: Subscription, request: Request, expires: int | None,
                       now: float) -> None:
        if sub.dialog is not None:
            self._register(sub)
        else:
            key = (request.call_id, request.from_.tag or "")
            self._attempts[key] = (sub, now + self.timer_n)
        self._live.append(sub)
        self._send(sub, request, _Kind.INITIAL, expires, now)

    def _send(self, sub: Subscription, request: Request, kind: _Kind, expires: int | None,
              now: float) -> None:
        """Queue a request and start Timer N for it (4.1.2.2, 4.1.2.4)."""
        self._in_flight[(request.call_id, request.cseq.seq)] = _InFlight(sub, kind, expires)
        sub.timer_n_at = now + self.timer_n
        self._events.append(SendRequest(request, sub))

    @staticmethod
    def _subscribe_headers(event: Event, expires: int | None,
                           spec: SubscribeSpec | None) -> list[tuple[str, str]]:
        headers = [("Event", str(event))]
        if expires is not None:
            headers.append(("Expires", str(expires)))
        if spec is not None:
            if spec.accept:
                headers.append(("Accept", ", ".join(spec.accept)))
            headers.extend(spec.headers)
        return headers

    # -- refresh / unsubscribe ---------------------------------------------------
    def refresh(self, sub: Subscription, now: float, expires: int | None = None) -> Request | None:
        """4.1.2.2: a SUBSCRIBE in the subscription's dialog."""
        if sub.terminated or sub.dialog is None:
            return None
        if expires is None:
            expires = sub.duration if sub.duration else (sub.spec.expires if sub.spec else None)
        kind = _Kind.UNSUBSCRIBE if expires == 0 else _Kind.REFRESH
        request = sub.dialog.create_request(
            "SUBSCRIBE", self._subscribe_headers(sub.event, expires, sub.spec))
        sub.refresh_at = None
        sub.refreshing = True
        self._send(sub, request, kind, expires, now)
        return request

    def unsubscribe(self, sub: Subscription, now: float) -> Request | None:
        """4.1.2.3: SUBSCRIBE with Expires: 0; the final NOTIFY ends it."""
        if sub.terminated:
            return None
        sub.unsubscribing = True
        sub.refresh_at = None
        if sub.dialog is None:  # nothing to unsubscribe from yet
            self._forget_attempt(sub)
            self._terminate(sub, LocalReason.CANCELLED, now)
            return None
        return self.refresh(sub, now, expires=0)

    def cancel(self, sub: Subscription, now: float) -> None:
        """Forget a subscription without sending anything (e.g. Refer-Sub: false)."""
        if not sub.terminated:
            sub.unsubscribing = True
            self._terminate(sub, LocalReason.CANCELLED, now)
        self._forget_attempt(sub)

    # -- responses ------------------------------------------------------------
    def receive_response(self, request: Request, response: Response, now: float) -> None:
        """A response to a request this subscriber queued."""
        if response.status < 200:
            return
        flight = self._in_flight.pop((request.call_id, request.cseq.seq), None)
        if flight is None:
            return
        flight.subscription.refreshing = False
        if 200 <= response.status < 300:
            self._on_success(flight, request, response, now)
        else:
            self._on_failure(flight, request, response, now)

    def request_failed(self, request: Request, now: float) -> None:
        """Transaction timeout or transport failure: handled as a 408 (8.1.3.1)."""
        self.receive_response(request, Response.for_request(request, 408), now)

    def _on_success(self, flight: _InFlight, request: Request, response: Response,
                    now: float) -> None:
        sub = flight.subscription
        if flight.kind is _Kind.INITIAL:
            usage = self._usage_for_response(sub, request, response)
            if usage is None or usage.terminated:
                return
            sub = usage
            if sub.expires_at is not None:  # a NOTIFY already said how long
                return
        elif sub.terminated:
            return
        elif sub.dialog is not None:
            sub.dialog.receive_response(request.method, response)
        if flight.kind is _Kind.UNSUBSCRIBE:
            return
        if request.method == "SUBSCRIBE":
            self._set_expiry(sub, self._granted(response, flight.expires), now)

    def _granted(self, response: Response, requested: int | None) -> int:
        """4.1.2.1: the 2xx Expires is the duration (it may shorten, never lengthen)."""
        try:
            granted = response.expires()
        except HeaderError:
            granted = None
        if granted is None:
            granted = requested if requested is not None else 3600
        return min(granted, requested) if requested else granted

    def _usage_for_response(self, sub: Subscription, request: Request,
                            response: Response) -> Subscription | None:
        """Bind a 2xx to the subscription of its dialog, making one if needed."""
        if sub.dialog is not None and not sub.owns_dialog:
            sub.dialog.receive_response(request.method, response)
            return sub
        if response.to.tag is None:
            return sub
        existing = self._find(DialogId.for_incoming_response(response), sub.event, exact=True)
        if existing is not None:
            return existing
        try:
            dialog = Dialog.from_uac(request, response)
        except DialogError as exc:
            log.info("2xx cannot create a dialog: %s (Call-ID %s)", exc, response.call_id)
            return sub
        if sub.dialog is None:
            sub.dialog = dialog
            self._register(sub)
            return sub
        return self._fork(sub, dialog)

    def _on_failure(self, flight: _InFlight, request: Request, response: Response,
                    now: float) -> None:
        sub = flight.subscription
        if sub.terminated:
            return
        if response.status == 423 and self._retry_interval(flight, request, response, now):
            return
        if flight.kind is _Kind.INITIAL:
            self._forget_attempt(sub)
            if sub.state is SubscriberState.NOTIFY_WAIT:
                self._terminate(sub, LocalReason.FAILED, now, response=response)
            return
        sub.timer_n_at = None  # no NOTIFY will follow a failed refresh
        if response.status in _FATAL_STATUSES:
            self._terminate(sub, LocalReason.REFRESH_FAILED, now, response=response)
        elif flight.kind is _Kind.UNSUBSCRIBE:
            self._terminate(sub, LocalReason.CANCELLED, now, response=response)
        # other errors: still valid until the known expiry (4.1.2.2)

    def _retry_interval(self, flight: _InFlight, request: Request, response: Response,
                        now: float) -> bool:
        """423 Interval Too Brief: ask again with Min-Expires (RFC 6665 4.2.1.1)."""
        sub = flight.subscription
        value = response.headers.get("Min-Expires")
        if value is None or not value.strip().isdigit() or request.method != "SUBSCRIBE":
            return False
        minimum = int(value.strip())
        if flight.expires is not None and minimum <= flight.expires:
            return False
        if sub.dialog is not None and sub.state is not SubscriberState.NOTIFY_WAIT:
            self.refresh(sub, now, expires=minimum)
            return True
        retry = request.copy()
        retry.remove_header("Via")
        retry.set_header("CSeq", f"{request.cseq.seq + 1} SUBSCRIBE")
        retry.set_header("Expires", str(minimum))
        sub.request = retry
        self._send(sub, retry, _Kind.INITIAL, minimum, now)
        return True

    # -- NOTIFY ---------------------------------------------------------------
    def receive_notify(self, request: Request, now: float) -> Response:
        """4.1.3: match a NOTIFY to a subscription; the response to send."""
        checked = self._check_notify(request)
        if isinstance(checked, Response):
            return checked
        event, header = checked
        if not request.to.tag:
            return Response.for_request(request, 481, "Subscription Does Not Exist")
        sub = self._find(DialogId.for_incoming_request(request), event)
        if sub is None:
            try:
                sub = self._usage_for_notify(request, event, now)
            except DialogError as exc:
                return _bad_request(request, str(exc))
        if sub is None:
            return Response.for_request(request, 481, "Subscription Does Not Exist")
        status = sub.dialog.receive_request(request) if sub.dialog else None
        if status is not None:
            return Response.for_request(request, status)
        self._apply_state(sub, request, header, now)
        return Response.for_request(request, 200)

    def _check_notify(self, request: Request) -> Response | tuple[Event, SubscriptionStateHeader]:
        value = request.headers.get("Event")
        state_value = request.headers.get("Subscription-State")
        if value is None:
            return _bad_request(request, "Missing Event")
        if state_value is None:
            return _bad_request(request, "Missing Subscription-State")
        try:
            event = Event.parse(value)
            header = SubscriptionStateHeader.parse(state_value)
            _ = (header.expires, header.retry_after)  # validate the numbers now
        except HeaderError as exc:
            return _bad_request(request, f"Bad {exc.header}")
        if self.packages is not None and event.package not in self.packages:
            response = Response.for_request(request, 489)
            response.add_header("Allow-Events", self.packages.allow_events())
            return response
        if header.state not in ("active", "pending", "terminated"):
            return _bad_request(request, "Bad Subscription-State")
        return event, header

    def _usage_for_notify(self, request: Request, event: Event, now: float) -> Subscription | None:
        """4.1.2.4 / 4.4.1: a NOTIFY that creates a dialog, within Timer N."""
        attempt = self._attempts.get((request.call_id, request.to.tag or ""))
        if attempt is None or now >= attempt[1]:
            return None
        origin = attempt[0]
        if not _compatible(origin.event, event, origin.implicit):
            return None
        dialog = dialog_from_notify(origin.request, request)
        if origin.dialog is None and not origin.terminated:
            origin.dialog = dialog
            self._register(origin)
            return origin
        return self._fork(origin, dialog)

    def _apply_state(self, sub: Subscription, request: Request,
                     header: SubscriptionStateHeader, now: float) -> None:
        """4.1.3: act on Subscription-State."""
        if not sub.unsubscribing:
            sub.timer_n_at = None
        if sub.state is SubscriberState.NOTIFY_WAIT and sub.owns_dialog and sub.dialog:
            # 4.4.1: the route set comes from the NOTIFY, not from the 2xx
            sub.dialog.route_set = RouteSet.from_record_route(request, reverse=False)
        if header.state == "terminated":
            self._events.append(NotificationReceived(sub, request, header))
            self._terminate(sub, header.reason, now, retry_after=header.retry_after)
            return
        sub.state = SubscriberState.ACTIVE if header.state == "active" else SubscriberState.PENDING
        if header.expires is not None:
            self._set_expiry(sub, header.expires, now)
        self._events.append(NotificationReceived(sub, request, header))

    # -- bookkeeping -------------------------------------------------------------
    def _find(self, dialog_id: DialogId, event: Event, exact: bool = False) -> Subscription | None:
        usages = [s for s in _usages(self.dialogs, dialog_id, Subscription) if s in self._live]
        for sub in usages:
            if sub.event.matches(event):
                return sub
        if exact or event.id is not None:
            return None
        loose = [s for s in usages if _compatible(s.event, event, s.implicit)]
        return loose[0] if len(loose) == 1 else None

    def _fork(self, origin: Subscription, dialog: Dialog) -> Subscription:
        """4.1.4: another notifier accepted a forked SUBSCRIBE; its own subscription."""
        sub = Subscription(origin.event, origin.request, origin.spec, dialog,
                           origin.implicit, origin.usage)
        sub.origin = origin
        sub.timer_n_at = origin.timer_n_at
        self._register(sub)
        self._live.append(sub)
        return sub

    def _register(self, sub: Subscription) -> None:
        assert sub.dialog is not None
        sub.dialog = self.dialogs.add_usage(sub.dialog, sub)

    def _forget_attempt(self, sub: Subscription) -> None:
        key = (sub.request.call_id, sub.request.from_.tag or "")
        attempt = self._attempts.get(key)
        if attempt is not None and attempt[0] is sub:
            del self._attempts[key]

    def _set_expiry(self, sub: Subscription, seconds: int, now: float) -> None:
        sub.duration = seconds
        sub.expires_at = now + seconds
        sub.refresh_at = None
        if not sub.implicit and not sub.unsubscribing and seconds > 0:
            sub.refresh_at = sub.expires_at - min(seconds / 2, self.refresh_margin)

    def _terminate(self, sub: Subscription, reason: str | None, now: float,
                   retry_after: int | None = None, response: Response | None = None) -> None:
        sub.state = SubscriberState.TERMINATED
        sub.reason = reason
        sub.timer_n_at = sub.expires_at = sub.refresh_at = None
        if sub.dialog is not None:
            _end_usage(self.dialogs, sub)
        sub.retry_at = self._retry_at(sub, reason, retry_after, now)
        if sub.retry_at is None and sub in self._live:
            self._live.remove(sub)
        log.debug("subscription %s terminated: %s", sub, reason)
        self._events.append(SubscriptionTerminated(sub, reason, sub.retry_at, response))

    def _retry_at(self, sub: Subscription, reason: str | None, retry_after: int | None,
                  now: float) -> float | None:
        """4.1.3: deactivated -> now, probation -> later; the others end it."""
        if sub.spec is None or not sub.spec.resubscribe or sub.unsubscribing:
            return None
        if sub.origin is not sub:  # one retry per SUBSCRIBE, not per fork
            return None
        if reason == TerminationReason.DEACTIVATED:
            return now
        if reason == TerminationReason.PROBATION:
            return now + (retry_after if retry_after is not None else self.probation_retry)
        if reason is None or reason not in _KNOWN_REASONS:
            return now + retry_after if retry_after is not None else None
        return None

    # -- timers --------------------------------------------------------------------
    def on_timer(self, now: float) -> None:
        for key, (_, until) in list(self._attempts.items()):
            if now >= until:  # 4.1.2.4: later new-dialog NOTIFYs get 481
                del self._attempts[key]
        for sub in list(self._live):
            self._sub_timer(sub, now)

    def _sub_timer(self, sub: Subscription, now: float) -> None:
        if sub.terminated:
            if sub.retry_at is not None and now >= sub.retry_at:
                self._live.remove(sub)
                sub.retry_at = None
                assert sub.spec is not None
                new = self.subscribe(sub.spec, now)
                self._events.append(Resubscribing(sub, new))
            return
        if sub.timer_n_at is not None and now >= sub.timer_n_at:
            self._terminate(sub, LocalReason.NO_NOTIFY, now)
        elif sub.expires_at is not None and now >= sub.expires_at:
            self._terminate(sub, LocalReason.EXPIRED, now)
        elif sub.refresh_at is not None and now >= sub.refresh_at and not sub.refreshing:
            self.refresh(sub, now)


# -- notifier ---------------------------------------------------------------

Authorizer = Callable[[Request], "NotifierState | int"]
StateSource = Callable[[NotifierSubscription], object]
# A new dialog's Contact for the request that makes it: URI and header parameters.
ContactSource = Callable[[Request], "tuple[Uri, str]"]


class Notifier:
    """The notifier side of RFC 6665 for one UA or server: all its subscriptions."""

    def __init__(self, packages: EventPackageRegistry, contact: Uri | str, *,
                 min_expires: int = 0, authorize: Authorizer | None = None,
                 state_of: StateSource | None = None,
                 dialogs: DialogTable | None = None,
                 contact_of: ContactSource | None = None) -> None:
        self.packages = packages
        self.contact = parse_uri(contact) if isinstance(contact, str) else contact
        self.contact_of = contact_of    # request -> its dialog's Contact, else ``contact``
        self.min_expires = min_expires
        self.authorize = authorize      # request -> ACTIVE / PENDING / reject status
        self.state_of = state_of        # subscription -> current resource state
        self.dialogs = dialogs if dialogs is not None else DialogTable()  # usages live here
        self._in_flight: dict[tuple[str, int], NotifierSubscription] = {}
        self._events: list[NotifierEvent] = []

    def events(self) -> list[NotifierEvent]:
        out, self._events = self._events, []
        return out

    @property
    def subscriptions(self) -> list[NotifierSubscription]:
        return [u for d in self.dialogs for u in d.usages
                if isinstance(u, NotifierSubscription) and u.notifier is self]

    def next_deadline(self) -> float | None:
        return _timers(*(s.expires_at for s in self.subscriptions))

    def on_timer(self, now: float) -> None:
        """4.2.1.4: a subscription not refreshed in time ends with reason=timeout."""
        for sub in self.subscriptions:
            if now >= sub.expires_at:
                self.terminate(sub, now, TerminationReason.TIMEOUT)

    # -- SUBSCRIBE -----------------------------------------------------------------
    def receive_subscribe(self, request: Request, now: float,
                          dialog: Dialog | None = None) -> Response:
        """4.2.1: answer a SUBSCRIBE and queue the NOTIFY that must follow a 2xx.

        A SUBSCRIBE with a To tag may add a new usage to ``dialog`` or to the
        dialog of its tags in ``dialogs`` (e.g. an INVITE's).
        """
        checked = self._check_event(request)
        if isinstance(checked, Response):
            return checked
        event, package = checked
        expires = self._check_expires(request, package)
        if isinstance(expires, Response):
            return expires
        if request.to.tag:
            dialog = dialog or self.dialogs.match_request(request)
            return self._in_dialog(request, event, package, expires, now, dialog)
        return self._new_subscription(request, event, package, expires, now)

    def _check_event(self, request: Request) -> Response | tuple[Event, EventPackage]:
        """4.2.1.1 / 4.2.3: unknown or missing Event -> 489 with Allow-Events."""
        value = request.headers.get("Event")
        try:
            event = Event.parse(value) if value is not None else None
        except HeaderError:
            return _bad_request(request, "Bad Event")
        package = self.packages.get(event.package) if event else None
        if event is None or package is None:
            response = Response.for_request(request, 489)
            response.add_header("Allow-Events", self.packages.allow_events())
            return response
        return event, package

    def _check_expires(self, request: Request, package: EventPackage) -> Response | int:
        """4.2.1.1: 423 only when 0 < expires < min and below one hour."""
        try:
            asked = request.expires()
        except HeaderError:
            return _bad_request(request, "Bad Expires")
        if asked is None:
            return package.default_expires
        minimum = max(self.min_expires, package.min_expires)
        if 0 < asked < minimum and asked < _ONE_HOUR:
            response = Response.for_request(request, 423)
            response.add_header("Min-Expires", str(minimum))
            return response
        return min(asked, package.max_expires)

    def _new_subscription(self, request: Request, event: Event, package: EventPackage,
                          expires: int, now: float) -> Response:
        if not package.subscribable:
            return Response.for_request(request, 403)
        verdict = self.authorize(request) if self.authorize else NotifierState.ACTIVE
        if isinstance(verdict, int):
            return Response.for_request(request, verdict)
        try:
            dialog = self.new_dialog(request)
        except DialogError:
            return _bad_request(request, "Missing Contact")
        sub = NotifierSubscription(dialog, event, package, verdict, now + expires,
                                   _copy(request.uri), request)
        return self._accept(sub, request, expires, now, new=True)

    def _in_dialog(self, request: Request, event: Event, package: EventPackage,
                   expires: int, now: float, dialog: Dialog | None) -> Response:
        """4.2.1.4 refresh / unsubscribe, or a new usage of a shared dialog."""
        did = DialogId.for_incoming_request(request)
        sub = self._find(did, event)
        if sub is None:
            if dialog is None or dialog.id != did:
                return Response.for_request(request, 481, "Subscription Does Not Exist")
            if not package.subscribable:
                return Response.for_request(request, 403)
            sub = NotifierSubscription(dialog, event, package, NotifierState.ACTIVE,
                                       now + expires, _copy(request.uri), request,
                                       owns_dialog=False)
        status = sub.dialog.receive_request(request)
        if status is not None:
            return Response.for_request(request, status)
        new = not any(u is sub for u in sub.dialog.usages)
        return self._accept(sub, request, expires, now, new=new)

    def _accept(self, sub: NotifierSubscription, request: Request, expires: int,
                now: float, new: bool) -> Response:
        """4.2.1.2: 200 with the granted Expires, then an immediate NOTIFY."""
        response = Response.for_request(request, 200, to_tag=sub.dialog.id.local_tag)
        response.add_header("Contact", self.contact_value(sub.dialog))
        response.add_header("Expires", str(expires))
        sub.expires_at = now + expires
        if expires == 0:  # unsubscribe, or a poll (4.4.3): final NOTIFY with state
            if not new:
                self.terminate(sub, now, TerminationReason.TIMEOUT, state=self._current(sub))
            else:
                sub.state = NotifierState.TERMINATED
                self._notify_terminated(sub, now, TerminationReason.TIMEOUT, None,
                                        sub.package.render(self._current(sub)))
            return response
        if new:
            self._register(sub)
            self._events.append(SubscriptionCreated(sub))
        self.notify(sub, now)
        return response

    def new_dialog(self, request: Request) -> Dialog:
        """The dialog a SUBSCRIBE (or REFER) outside any dialog makes, with our Contact."""
        uri, params = self.contact_of(request) if self.contact_of else (self.contact, "")
        dialog = Dialog.from_uas(request, local_target=uri, state=DialogState.CONFIRMED)
        dialog.contact_params = params
        return dialog

    def contact_value(self, dialog: Dialog) -> str:
        """Our Contact in a 2xx of ``dialog``: its local target (a refresh comes there)."""
        return f"<{dialog.local_target or self.contact}>{dialog.contact_params}"

    # -- implicit subscriptions (REFER) --------------------------------------------
    def create_implicit(self, dialog: Dialog, event: Event, now: float, *,
                        expires: int | None = None, owns_dialog: bool = True,
                        request: Request | None = None, usage: object = None,
                        state: NotifierState = NotifierState.ACTIVE) -> NotifierSubscription:
        """A subscription created by another request (RFC 3515 2.4.4); no NOTIFY yet."""
        package = self.packages.get(event.package)
        if package is None:
            raise ValueError(f"event package {event.package!r} is not registered")
        duration = expires if expires is not None else package.default_expires
        sub = NotifierSubscription(dialog, event, package, state, now + duration,
                                   _copy(request.uri) if request else _copy(dialog.remote_target),
                                   request, implicit=True, owns_dialog=owns_dialog, usage=usage)
        self._register(sub)
        self._events.append(SubscriptionCreated(sub))
        return sub

    # -- NOTIFY --------------------------------------------------------------------
    def notify(self, sub: NotifierSubscription, now: float, state: object = None,
               body: bytes | None = None) -> Request | None:
        """4.2.2: a NOTIFY with the current state (``state_of`` unless given)."""
        if sub.terminated:
            return None
        if body is None:
            body = sub.package.render(state if state is not None else self._current(sub))
        remaining = max(0, math.ceil(sub.expires_at - now))
        header = f"{sub.state.value};expires={remaining}"
        return self._send_notify(sub, header, body)

    def activate(self, sub: NotifierSubscription, now: float, state: object = None) -> Request | None:
        """4.2.1.3: authorization granted later: pending -> active."""
        sub.state = NotifierState.ACTIVE
        return self.notify(sub, now, state)

    def terminate(self, sub: NotifierSubscription, now: float,
                  reason: str | None = TerminationReason.NORESOURCE,
                  retry_after: int | None = None, state: object = None,
                  body: bytes | None = None) -> Request | None:
        """4.2.2: a final NOTIFY with Subscription-State: terminated."""
        if sub.terminated:
            return None
        if body is None:
            body = sub.package.render(state)
        request = self._notify_terminated(sub, now, reason, retry_after, body)
        self._remove(sub, reason)
        return request

    def _notify_terminated(self, sub: NotifierSubscription, now: float, reason: str | None,
                           retry_after: int | None, body: bytes) -> Request:
        header = "terminated"
        if reason:
            header += f";reason={reason}"
        if retry_after is not None:
            header += f";retry-after={retry_after}"
        return self._send_notify(sub, header, body)

    def _send_notify(self, sub: NotifierSubscription, state_header: str, body: bytes) -> Request:
        request = sub.dialog.create_request(
            "NOTIFY", [("Event", str(sub.event)), ("Subscription-State", state_header)],
            body, sub.package.content_type if body else None)
        self._in_flight[(request.call_id, request.cseq.seq)] = sub
        self._events.append(SendRequest(request, sub))
        return request

    def _current(self, sub: NotifierSubscription) -> object:
        return self.state_of(sub) if self.state_of else None

    def receive_response(self, request: Request, response: Response, now: float) -> None:
        """4.2.2: fatal NOTIFY responses remove the subscription, silently."""
        if response.status < 200:
            return
        sub = self._in_flight.pop((request.call_id, request.cseq.seq), None)
        if sub is None or sub.terminated:
            return
        if response.status in _FATAL_STATUSES or response.status == 408:
            self._remove(sub, LocalReason.NOTIFY_FAILED, response)
        elif sub.dialog is not None and 200 <= response.status < 300:
            sub.dialog.receive_response(request.method, response)

    def request_failed(self, request: Request, now: float) -> None:
        """4.2.2: a NOTIFY that timed out (Timer F) removes the subscription."""
        self.receive_response(request, Response.for_request(request, 408), now)

    # -- subscriptions kept elsewhere (a shared store) ---------------------------------
    def adopt(self, sub: NotifierSubscription) -> NotifierSubscription:
        """Take in a subscription rebuilt from outside (another instance accepted
        it); no event, no NOTIFY: the caller decides what follows."""
        self._register(sub)
        return sub

    def forget(self, sub: NotifierSubscription) -> None:
        """Drop a subscription silently: its state lives elsewhere (a shared
        store) and is rebuilt from there when next needed."""
        sub.state = NotifierState.TERMINATED
        _end_usage(self.dialogs, sub)

    # -- bookkeeping ---------------------------------------------------------------
    def _find(self, dialog_id: DialogId, event: Event) -> NotifierSubscription | None:
        for sub in _usages(self.dialogs, dialog_id, NotifierSubscription):
            if sub.notifier is self and sub.event.matches(event):
                return sub
        return None

    def _register(self, sub: NotifierSubscription) -> None:
        sub.notifier = self
        sub.dialog = self.dialogs.add_usage(sub.dialog, sub)

    def _remove(self, sub: NotifierSubscription, reason: str | None,
                response: Response | None = None) -> None:
        sub.state = NotifierState.TERMINATED
        _end_usage(self.dialogs, sub)
        self._events.append(SubscriptionTerminated(sub, reason, None, response))
