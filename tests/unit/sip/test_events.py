"""RFC 6665 events framework, sans-I/O, on a virtual clock.

A Subscriber and a Notifier talk through ``Wire``: every message goes to bytes
and back through the real parser, a Via is added as the endpoint would.
Edge cases (forks, NOTIFY before 200, reason codes) use hand-built NOTIFYs.
"""

from __future__ import annotations

import pytest

from imsbox.sip import Event, NameAddr, Request, Response, new_branch, parse, parse_uri
from imsbox.sip.ua.dialog import DialogState, build_request
from imsbox.sip.ua.events import (
    EventPackage, EventPackageRegistry, LocalReason, NotificationReceived, Notifier,
    NotifierState, Resubscribing, SendRequest, SubscribeSpec, Subscriber, SubscriberState,
    Subscription, SubscriptionCreated, SubscriptionTerminated, allow_events,
)

PRESENCE = EventPackage("presence", "application/pidf+xml", default_expires=3600,
                        min_expires=60, max_expires=7200)
DIALOG = EventPackage("dialog", "application/dialog-info+xml", default_expires=600)
ALICE = "sip:alice@atlanta.example.com"
BOB = "sip:bob@biloxi.example.com"


def registry() -> EventPackageRegistry:
    return EventPackageRegistry([PRESENCE, DIALOG])


def wire(message: Request | Response) -> Request | Response:
    """What the transport does: a Via on requests, then bytes and back."""
    if isinstance(message, Request) and "Via" not in message.headers:
        message.push_header("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()}")
    return parse(bytes(message))


def spec(event: str = "presence", expires: int | None = 600, **kw: object) -> SubscribeSpec:
    return SubscribeSpec(parse_uri(BOB), NameAddr.parse(f"<{ALICE}>"), NameAddr.parse(f"<{BOB}>"),
                         Event.parse(event), parse_uri("sip:alice@192.0.2.1"), expires, **kw)


class Wire:
    """Carries a Subscriber's and a Notifier's requests to each other, in memory."""

    def __init__(self, subscriber: Subscriber, notifier: Notifier) -> None:
        self.subscriber = subscriber
        self.notifier = notifier
        self.sub_events: list[object] = []
        self.not_events: list[object] = []
        self.ladder: list[str] = []

    def run(self, now: float) -> None:
        moved = True
        while moved:
            moved = self._subscriber_side(now) | self._notifier_side(now)

    def _subscriber_side(self, now: float) -> bool:
        moved = False
        for ev in self.subscriber.events():
            if not isinstance(ev, SendRequest):
                self.sub_events.append(ev)
                continue
            moved = True
            request = wire(ev.request)
            response = self.notifier.receive_subscribe(request, now)
            self.ladder.append(f"SUBSCRIBE Expires={request.headers.get('Expires')} -> {response.status}")
            self.subscriber.receive_response(ev.request, wire(response), now)
        return moved

    def _notifier_side(self, now: float) -> bool:
        moved = False
        for ev in self.notifier.events():
            if not isinstance(ev, SendRequest):
                self.not_events.append(ev)
                continue
            moved = True
            request = wire(ev.request)
            response = self.subscriber.receive_notify(request, now)
            self.ladder.append(f"NOTIFY {request.headers.get('Subscription-State')} -> {response.status}")
            self.notifier.receive_response(ev.request, wire(response), now)
        return moved

    def tick(self, now: float) -> None:
        self.subscriber.on_timer(now)
        self.notifier.on_timer(now)
        self.run(now)

    def of(self, kind: type, events: list[object] | None = None) -> list:
        return [e for e in (self.sub_events if events is None else events) if isinstance(e, kind)]


def pair(**notifier_kw: object) -> Wire:
    notifier = Notifier(registry(), "sip:bob@192.0.2.2", **notifier_kw)  # type: ignore[arg-type]
    return Wire(Subscriber(registry()), notifier)


# -- registry ------------------------------------------------------------------

def test_registry_lookup_is_case_insensitive_and_lists_allow_events() -> None:
    reg = registry()
    assert reg.get("Presence") is PRESENCE and "DIALOG" in reg and "reg" not in reg
    assert reg.allow_events() == "presence, dialog"
    reg.register(EventPackage("reg", "application/reginfo+xml"))
    assert reg.names() == ["presence", "dialog", "reg"]


# -- establishment ---------------------------------------------------------------

def test_subscribe_200_then_immediate_notify_makes_active_subscription() -> None:
    link = pair(state_of=lambda sub: f"<state of {sub.resource}/>")
    sub = link.subscriber.subscribe(spec(expires=600), now=0.0)
    link.run(0.0)
    assert link.ladder == ["SUBSCRIBE Expires=600 -> 200", "NOTIFY active;expires=600 -> 200"]
    assert sub.state is SubscriberState.ACTIVE
    assert sub.dialog is not None and sub.dialog.state is DialogState.CONFIRMED
    assert sub.expires_at == 600.0 and sub.timer_n_at is None
    [note] = link.of(NotificationReceived)
    assert note.subscription is sub
    assert note.body == f"<state of {BOB}/>".encode()
    assert note.request.headers.get("Content-Type") == "application/pidf+xml"
    [created] = link.of(SubscriptionCreated, link.not_events)
    assert created.subscription.state is NotifierState.ACTIVE
    assert created.subscription.dialog.id.remote_tag == sub.dialog.id.local_tag


def test_notifier_shortens_but_never_lengthens_expires() -> None:
    link = pair()
    sub = link.subscriber.subscribe(spec(expires=100000), now=0.0)
    link.run(0.0)
    assert "NOTIFY active;expires=7200 -> 200" in link.ladder
    assert sub.duration == 7200
    sub2 = link.subscriber.subscribe(spec(expires=None), now=0.0)
    link.run(0.0)
    assert sub2.duration == PRESENCE.default_expires


def test_unknown_package_gets_489_with_allow_events() -> None:
    link = pair()
    sub = link.subscriber.subscribe(spec(event="conference"), now=0.0)
    link.run(0.0)
    assert link.ladder == ["SUBSCRIBE Expires=600 -> 489"]
    [ended] = link.of(SubscriptionTerminated)
    assert ended.subscription is sub and ended.reason == LocalReason.FAILED
    assert ended.response is not None and allow_events(ended.response) == ["presence", "dialog"]
    assert sub.terminated and link.subscriber.next_deadline() is None


def test_missing_event_header_gets_489() -> None:
    notifier = Notifier(registry(), "sip:bob@192.0.2.2")
    request = build_request("SUBSCRIBE", BOB, f"<{ALICE}>", f"<{BOB}>", contact="sip:a@192.0.2.1")
    response = notifier.receive_subscribe(wire(request), 0.0)  # type: ignore[arg-type]
    assert response.status == 489 and response.headers.get("Allow-Events") == "presence, dialog"


def test_interval_too_brief_gets_423_and_subscriber_retries_with_min_expires() -> None:
    link = pair(min_expires=300)
    sub = link.subscriber.subscribe(spec(expires=30), now=0.0)
    first = sub.request
    link.run(0.0)
    assert link.ladder == ["SUBSCRIBE Expires=30 -> 423", "SUBSCRIBE Expires=300 -> 200",
                           "NOTIFY active;expires=300 -> 200"]
    assert sub.state is SubscriberState.ACTIVE and sub.duration == 300
    assert sub.request.call_id == first.call_id
    assert sub.request.cseq.seq == first.cseq.seq + 1


def test_423_rules_zero_and_an_hour_or_more_are_never_too_brief() -> None:
    notifier = Notifier(registry(), "sip:bob@192.0.2.2", min_expires=7200)
    for expires, status in ((0, 200), (3600, 200), (59, 423)):
        request = build_request("SUBSCRIBE", BOB, f"<{ALICE}>", f"<{BOB}>", contact="sip:a@192.0.2.1",
                                headers=[("Event", "presence"), ("Expires", str(expires))])
        response = notifier.receive_subscribe(wire(request), 0.0)  # type: ignore[arg-type]
        assert response.status == status
        if status == 423:
            assert response.headers.get("Min-Expires") == "7200"


def test_authorizer_can_reject_or_leave_pending_until_activated() -> None:
    link = pair(authorize=lambda req: 403 if "mallory" in str(req.from_.uri) else NotifierState.PENDING)
    sub = link.subscriber.subscribe(spec(), now=0.0)
    link.run(0.0)
    assert sub.state is SubscriberState.PENDING
    [nsub] = link.notifier.subscriptions
    link.notifier.activate(nsub, 5.0, state="<open/>")
    link.run(5.0)
    assert sub.state is SubscriberState.ACTIVE
    assert link.ladder[-1] == "NOTIFY active;expires=595 -> 200"
    evil = SubscribeSpec(parse_uri(BOB), NameAddr.parse("<sip:mallory@evil.example.com>"),
                         NameAddr.parse(f"<{BOB}>"), Event.parse("presence"), parse_uri("sip:m@192.0.2.9"))
    bad = link.subscriber.subscribe(evil, 6.0)
    link.run(6.0)
    assert bad.terminated and link.ladder[-1] == "SUBSCRIBE Expires=None -> 403"


# -- NOTIFY before 200, forking, Timer N -------------------------------------------

def _notify_for(subscribe: Request, from_tag: str, state: str = "active;expires=300",
                cseq: int = 1, contact: str = "<sip:bob@192.0.2.7>",
                event: str = "presence", record_route: str | None = None) -> Request:
    headers = [("Via", f"SIP/2.0/UDP 192.0.2.7;branch={new_branch()}"),
               ("From", f"<{BOB}>;tag={from_tag}"), ("To", f"{subscribe.headers.get('From')}"),
               ("Call-ID", subscribe.call_id), ("CSeq", f"{cseq} NOTIFY"),
               ("Contact", contact), ("Event", event), ("Subscription-State", state)]
    if record_route:
        headers.append(("Record-Route", record_route))
    return wire(Request("NOTIFY", "sip:alice@192.0.2.1", headers))  # type: ignore[return-value]


def _ok(subscribe: Request, tag: str, expires: int = 300) -> Response:
    response = Response.for_request(subscribe, 200, to_tag=tag)
    response.add_header("Contact", "<sip:bob@192.0.2.7>")
    response.add_header("Expires", str(expires))
    return wire(response)  # type: ignore[return-value]


def test_notify_before_200_creates_the_dialog_and_200_joins_it() -> None:
    subscriber = Subscriber(registry())
    sub = subscriber.subscribe(spec(), 0.0)
    [send] = subscriber.events()
    request = wire(send.request)
    notify = _notify_for(request, "n1", record_route="<sip:proxy.example.com;lr>")
    assert subscriber.receive_notify(notify, 0.1).status == 200
    assert sub.state is SubscriberState.ACTIVE and sub.dialog is not None
    assert sub.dialog.id.remote_tag == "n1"
    assert [str(r.uri) for r in sub.dialog.route_set] == ["sip:proxy.example.com;lr"]
    assert sub.expires_at == pytest.approx(300.1)
    subscriber.receive_response(send.request, _ok(request, "n1", 300), 0.2)
    assert subscriber.subscriptions == [sub]
    assert sub.expires_at == pytest.approx(300.1)  # the NOTIFY's expires stays authoritative
    in_dialog = subscriber.refresh(sub, 1.0)
    assert in_dialog is not None and str(in_dialog.uri) == "sip:bob@192.0.2.7"
    assert in_dialog.headers.get("Route") == "<sip:proxy.example.com;lr>"


def test_forked_notifies_make_separate_subscriptions_until_timer_n() -> None:
    subscriber = Subscriber(registry())
    sub = subscriber.subscribe(spec(), 0.0)
    [send] = subscriber.events()
    request = wire(send.request)
    subscriber.receive_response(send.request, _ok(request, "a"), 0.1)
    assert subscriber.receive_notify(_notify_for(request, "a"), 0.2).status == 200
    assert subscriber.receive_notify(_notify_for(request, "b"), 0.3).status == 200
    subs = subscriber.subscriptions
    assert len(subs) == 2 and subs[0] is sub
    fork = subs[1]
    assert fork.origin is sub and fork.dialog is not None and fork.dialog.id.remote_tag == "b"
    assert fork.state is SubscriberState.ACTIVE
    subscriber.on_timer(32.0)  # Timer N = 64*T1 after the SUBSCRIBE
    late = subscriber.receive_notify(_notify_for(request, "c"), 32.1)
    assert late.status == 481
    assert len(subscriber.subscriptions) == 2
    assert not any(isinstance(e, SubscriptionTerminated) for e in subscriber.events())


def test_timer_n_without_any_notify_fails_the_subscription() -> None:
    subscriber = Subscriber(registry())
    sub = subscriber.subscribe(spec(), 0.0)
    [send] = subscriber.events()
    subscriber.receive_response(send.request, _ok(wire(send.request), "a"), 0.1)  # type: ignore[arg-type]
    assert sub.state is SubscriberState.NOTIFY_WAIT
    assert subscriber.next_deadline() == 32.0
    subscriber.on_timer(31.9)
    assert not sub.terminated
    subscriber.on_timer(32.0)
    [ended] = [e for e in subscriber.events() if isinstance(e, SubscriptionTerminated)]
    assert ended.reason == LocalReason.NO_NOTIFY and sub.terminated
    assert sub.dialog is not None and sub.dialog.terminated


def test_notify_checks_481_489_400_and_out_of_order() -> None:
    subscriber = Subscriber(registry())
    subscriber.subscribe(spec(), 0.0)
    [send] = subscriber.events()
    request = wire(send.request)
    assert subscriber.receive_notify(_notify_for(request, "a", cseq=5), 0.1).status == 200
    stray = _notify_for(request, "a", cseq=6)
    stray.set_header("Call-ID", "unknown@x")
    assert subscriber.receive_notify(stray, 0.1).status == 481
    assert subscriber.receive_notify(_notify_for(request, "a", cseq=7, event="presence;id=9"),
                                     0.1).status == 481  # id must match (8.2.1)
    assert subscriber.receive_notify(_notify_for(request, "a", cseq=8, event="kpml"), 0.1).status == 489
    no_state = _notify_for(request, "a", cseq=9)
    no_state.remove_header("Subscription-State")
    assert subscriber.receive_notify(no_state, 0.1).status == 400
    assert subscriber.receive_notify(_notify_for(request, "a", cseq=4), 0.1).status == 500


# -- refresh, expiry, unsubscribe ----------------------------------------------------

@pytest.mark.parametrize("duration,refresh_at", [(600, 568.0), (40, 20.0), (3600, 3568.0)])
def test_refresh_is_sent_at_expiry_minus_min_half_or_64_t1(duration: int, refresh_at: float) -> None:
    link = pair()
    sub = link.subscriber.subscribe(spec(event="dialog", expires=duration), now=0.0)
    link.run(0.0)
    assert sub.refresh_at == refresh_at
    link.tick(refresh_at - 0.01)
    assert len(link.ladder) == 2
    link.tick(refresh_at)
    assert link.ladder[2:] == [f"SUBSCRIBE Expires={duration} -> 200",
                               f"NOTIFY active;expires={duration} -> 200"]
    assert sub.expires_at == refresh_at + duration and not sub.terminated
    [nsub] = link.notifier.subscriptions
    assert nsub.expires_at == refresh_at + duration


def test_subscription_kept_alive_over_many_refreshes() -> None:
    link = pair()
    sub = link.subscriber.subscribe(spec(expires=120), now=0.0)
    link.run(0.0)
    for _ in range(10):
        link.tick(sub.refresh_at)  # type: ignore[arg-type]
    assert not sub.terminated and len(link.notifier.subscriptions) == 1
    assert sum(1 for line in link.ladder if line.startswith("SUBSCRIBE")) == 11
    assert sub.dialog is not None and sub.dialog.local_seq == sub.request.cseq.seq + 10


def test_unsubscribe_gets_terminated_notify_with_timeout_and_ends_everything() -> None:
    link = pair(state_of=lambda sub: "<closed/>")
    sub = link.subscriber.subscribe(spec(), now=0.0)
    link.run(0.0)
    link.subscriber.unsubscribe(sub, 10.0)
    link.run(10.0)
    assert link.ladder[2:] == ["SUBSCRIBE Expires=0 -> 200", "NOTIFY terminated;reason=timeout -> 200"]
    notes = link.of(NotificationReceived)
    assert notes[-1].body == b"<closed/>"
    [ended] = link.of(SubscriptionTerminated)
    assert ended.reason == "timeout" and ended.retry_at is None
    assert sub.terminated and sub.dialog is not None and sub.dialog.terminated
    link.subscriber.on_timer(32.0)  # the initial SUBSCRIBE's fork window closes
    assert link.notifier.subscriptions == [] and link.subscriber.next_deadline() is None
    [nended] = link.of(SubscriptionTerminated, link.not_events)
    assert nended.reason == "timeout"


def test_notifier_expires_unrefreshed_subscription_with_timeout_notify() -> None:
    link = pair()
    sub = link.subscriber.subscribe(spec(expires=300), now=0.0)
    link.run(0.0)
    link.subscriber.events()  # the subscriber stays silent: no refresh is sent
    sub.refresh_at = None
    assert link.notifier.next_deadline() == 300.0
    link.notifier.on_timer(300.0)
    link.run(300.0)
    assert link.ladder[-1] == "NOTIFY terminated;reason=timeout -> 200"
    assert sub.terminated and sub.reason == "timeout"


def test_subscriber_expires_locally_when_refresh_keeps_failing() -> None:
    subscriber = Subscriber(registry())
    sub = subscriber.subscribe(spec(expires=100), 0.0)
    [send] = subscriber.events()
    request = wire(send.request)
    subscriber.receive_response(send.request, _ok(request, "a", 100), 0.0)
    subscriber.receive_notify(_notify_for(request, "a", state="active;expires=100"), 0.0)
    subscriber.on_timer(sub.refresh_at)  # type: ignore[arg-type]
    [refresh] = [e for e in subscriber.events() if isinstance(e, SendRequest)]
    subscriber.receive_response(refresh.request, Response.for_request(wire(refresh.request), 500), 51.0)  # type: ignore[arg-type]
    assert not sub.terminated  # 4.1.2.2: still valid until it expires
    subscriber.on_timer(100.0)
    ended = [e for e in subscriber.events() if isinstance(e, SubscriptionTerminated)]
    assert [e.reason for e in ended] == [LocalReason.EXPIRED]


def test_fatal_refresh_response_terminates() -> None:
    subscriber = Subscriber(registry())
    sub = subscriber.subscribe(spec(expires=100), 0.0)
    [send] = subscriber.events()
    request = wire(send.request)
    subscriber.receive_response(send.request, _ok(request, "a", 100), 0.0)
    subscriber.receive_notify(_notify_for(request, "a"), 0.0)
    refresh = subscriber.refresh(sub, 10.0)
    assert refresh is not None
    subscriber.receive_response(refresh, Response.for_request(wire(refresh), 481), 10.1)  # type: ignore[arg-type]
    ended = [e for e in subscriber.events() if isinstance(e, SubscriptionTerminated)]
    assert [e.reason for e in ended] == [LocalReason.REFRESH_FAILED] and ended[0].response.status == 481


def test_refresh_without_notify_before_timer_n_terminates() -> None:
    link = pair()
    sub = link.subscriber.subscribe(spec(expires=600), now=0.0)
    link.run(0.0)
    link.subscriber.refresh(sub, 100.0)
    link.subscriber.events()  # lost on the way: no answer, no NOTIFY
    link.subscriber.on_timer(132.0)
    ended = [e for e in link.subscriber.events() if isinstance(e, SubscriptionTerminated)]
    assert [e.reason for e in ended] == [LocalReason.NO_NOTIFY]


# -- reason codes ------------------------------------------------------------------

def _active(subscriber: Subscriber, sp: SubscribeSpec) -> tuple[Subscription, Request]:
    sub = subscriber.subscribe(sp, 0.0)
    [send] = [e for e in subscriber.events() if isinstance(e, SendRequest)]
    request = wire(send.request)
    subscriber.receive_response(send.request, _ok(request, "a"), 0.0)  # type: ignore[arg-type]
    subscriber.receive_notify(_notify_for(request, "a"), 0.0)  # type: ignore[arg-type]
    subscriber.events()
    return sub, request  # type: ignore[return-value]


def test_deactivated_resubscribes_at_once_with_new_call_id_and_tag() -> None:
    subscriber = Subscriber(registry())
    sub, request = _active(subscriber, spec())
    notify = _notify_for(request, "a", state="terminated;reason=deactivated", cseq=2)
    assert subscriber.receive_notify(notify, 50.0).status == 200
    [ended] = [e for e in subscriber.events() if isinstance(e, SubscriptionTerminated)]
    assert ended.retry_at == 50.0
    subscriber.on_timer(50.0)
    events = subscriber.events()
    [again] = [e for e in events if isinstance(e, Resubscribing)]
    [send] = [e for e in events if isinstance(e, SendRequest)]
    assert again.previous is sub and again.subscription.spec is sub.spec
    assert send.request.call_id != request.call_id
    assert send.request.from_.tag != request.from_.tag


@pytest.mark.parametrize("state,delay", [
    ("terminated;reason=probation;retry-after=30", 30.0),
    ("terminated;reason=probation", 60.0),
    ("terminated;reason=weird;retry-after=25", 25.0),
])
def test_probation_retries_later(state: str, delay: float) -> None:
    subscriber = Subscriber(registry())
    sub, request = _active(subscriber, spec())
    subscriber.receive_notify(_notify_for(request, "a", state=state, cseq=2), 10.0)
    subscriber.on_timer(32.0)  # fork window of the SUBSCRIBE over
    assert sub.retry_at == 10.0 + delay and subscriber.next_deadline() == 10.0 + delay
    subscriber.events()
    subscriber.on_timer(10.0 + delay - 0.1)
    assert subscriber.events() == []
    subscriber.on_timer(10.0 + delay)
    assert any(isinstance(e, Resubscribing) for e in subscriber.events())


@pytest.mark.parametrize("reason", ["rejected", "timeout", "giveup", "noresource", "invariant", None])
def test_final_reasons_end_without_retry(reason: str | None) -> None:
    subscriber = Subscriber(registry())
    sub, request = _active(subscriber, spec())
    state = "terminated" + (f";reason={reason};retry-after=10" if reason else "")
    subscriber.receive_notify(_notify_for(request, "a", state=state, cseq=2), 10.0)
    [ended] = [e for e in subscriber.events() if isinstance(e, SubscriptionTerminated)]
    assert ended.reason == reason and ended.retry_at is None
    subscriber.on_timer(32.0)
    assert sub.terminated and subscriber.next_deadline() is None
    assert subscriber.receive_notify(_notify_for(request, "a", cseq=3), 11.0).status == 481


# -- notifier details --------------------------------------------------------------

def test_notifier_481_for_unknown_dialog_and_403_for_refer_package() -> None:
    reg = registry()
    reg.register(EventPackage("refer", "message/sipfrag", subscribable=False))
    notifier = Notifier(reg, "sip:bob@192.0.2.2")
    request = build_request("SUBSCRIBE", BOB, f"<{ALICE}>", f"<{BOB}>;tag=nope",
                            contact="sip:a@192.0.2.1", headers=[("Event", "presence")])
    request.set_header("To", f"<{BOB}>;tag=nope")
    assert notifier.receive_subscribe(wire(request), 0.0).status == 481  # type: ignore[arg-type]
    refer = build_request("SUBSCRIBE", BOB, f"<{ALICE}>", f"<{BOB}>",
                          contact="sip:a@192.0.2.1", headers=[("Event", "refer")])
    assert notifier.receive_subscribe(wire(refer), 0.0).status == 403  # type: ignore[arg-type]


def test_poll_with_expires_zero_gets_one_terminated_notify_with_state() -> None:
    link = pair(state_of=lambda sub: "<now/>")
    sub = link.subscriber.subscribe(spec(expires=0), now=0.0)
    link.run(0.0)
    assert link.ladder == ["SUBSCRIBE Expires=0 -> 200", "NOTIFY terminated;reason=timeout -> 200"]
    [note] = link.of(NotificationReceived)
    assert note.body == b"<now/>" and sub.terminated
    assert link.notifier.subscriptions == []


@pytest.mark.parametrize("status", [481, 489, 408])
def test_fatal_notify_response_removes_subscription(status: int) -> None:
    link = pair()
    link.subscriber.subscribe(spec(), now=0.0)
    link.run(0.0)
    [nsub] = link.notifier.subscriptions
    notify = link.notifier.notify(nsub, 5.0, state="<x/>")
    link.notifier.events()
    assert notify is not None
    if status == 408:
        link.notifier.request_failed(notify, 37.0)
    else:
        link.notifier.receive_response(notify, Response.for_request(wire(notify), status), 5.1)  # type: ignore[arg-type]
    assert nsub.terminated and link.notifier.subscriptions == []
    [ended] = link.of(SubscriptionTerminated, link.notifier.events())
    assert ended.reason == LocalReason.NOTIFY_FAILED


def test_two_subscriptions_in_one_dialog_are_told_apart_by_id() -> None:
    link = pair()
    sub = link.subscriber.subscribe(spec(event="presence;id=1"), now=0.0)
    link.run(0.0)
    assert sub.dialog is not None
    second = link.subscriber.subscribe_in_dialog(sub.dialog, Event.parse("presence;id=2"), 1.0,
                                                 expires=300)
    [send] = link.subscriber.events()
    [nsub1] = link.notifier.subscriptions
    response = link.notifier.receive_subscribe(wire(send.request), 1.0, dialog=nsub1.dialog)  # type: ignore[arg-type]
    assert response.status == 200
    link.subscriber.receive_response(send.request, wire(response), 1.0)  # type: ignore[arg-type]
    link.run(1.0)
    assert second.state is SubscriberState.ACTIVE and sub.state is SubscriberState.ACTIVE
    assert len(link.notifier.subscriptions) == 2
    by_id = {s.event.id: s for s in link.notifier.subscriptions}
    link.notifier.terminate(by_id["2"], 2.0, "noresource")
    link.run(2.0)
    assert second.terminated and not sub.terminated
    assert [str(n.subscription.event) for n in link.of(NotificationReceived)][-1] == "presence;id=2"
    assert sub.dialog.state is DialogState.CONFIRMED  # the other usage keeps the dialog


def test_subscribe_without_contact_is_400() -> None:
    notifier = Notifier(registry(), "sip:bob@192.0.2.2")
    request = build_request("SUBSCRIBE", BOB, f"<{ALICE}>", f"<{BOB}>", headers=[("Event", "presence")])
    response = notifier.receive_subscribe(wire(request), 0.0)  # type: ignore[arg-type]
    assert response.status == 400 and "Contact" in response.reason


def test_unsubscribe_before_any_answer_is_local() -> None:
    subscriber = Subscriber(registry())
    sub = subscriber.subscribe(spec(), 0.0)
    [send] = subscriber.events()
    assert subscriber.unsubscribe(sub, 1.0) is None
    [ended] = subscriber.events()
    assert isinstance(ended, SubscriptionTerminated) and ended.reason == LocalReason.CANCELLED
    late = _notify_for(wire(send.request), "a")  # type: ignore[arg-type]
    assert subscriber.receive_notify(late, 1.5).status == 481


# -- subscriptions as dialog usages (RFC 5057) -------------------------------------

def test_subscriptions_are_usages_in_the_given_dialog_tables() -> None:
    from imsbox.sip.ua.dialog import DialogTable, UsageKind
    mine, theirs = DialogTable(), DialogTable()
    link = Wire(Subscriber(registry(), dialogs=mine),
                Notifier(registry(), "sip:bob@192.0.2.2", dialogs=theirs))
    first = link.subscriber.subscribe(spec(), now=0.0)
    link.run(0.0)
    assert first.dialog is not None
    did = first.dialog.id
    assert mine.find(did.call_id, did.local_tag, did.remote_tag) is first.dialog
    [served] = link.notifier.subscriptions
    assert theirs.find(did.call_id, did.remote_tag, did.local_tag) is served.dialog
    # a second package in the same dialog is a second usage of it
    second = link.subscriber.subscribe_in_dialog(first.dialog, Event("dialog"), 0.0, expires=600)
    link.run(0.0)
    assert [u.usage_kind for u in first.dialog.usages] == [UsageKind.SUBSCRIPTION] * 2
    assert len(served.dialog.usages) == 2 and len(theirs) == 1
    link.subscriber.unsubscribe(second, 1.0)
    link.run(1.0)
    assert second.terminated and first.dialog.usages == [first] and len(mine) == 1
    assert not first.dialog.terminated
    # the final NOTIFY of the last usage takes the dialog out of both tables
    link.notifier.terminate(served, 2.0)
    link.run(2.0)
    assert first.terminated and len(mine) == 0 and len(theirs) == 0
    assert first.dialog.terminated and served.dialog.terminated
    assert link.notifier.subscriptions == []
