"""REFER (RFC 3515, RFC 4488 Refer-Sub), sans-I/O, on a virtual clock.

A ReferIssuer and a ReferRecipient exchange messages through the real parser;
the in-dialog cases share an INVITE dialog pair built by the dialog layer.
"""

from __future__ import annotations

import pytest

from imsbox.sip import Request, Response, new_branch, parse, parse_uri
from imsbox.sip.headers import Replaces, refer_to_target
from imsbox.sip.ua.dialog import Dialog, DialogState, build_request
from imsbox.sip.ua.events import (
    EventPackageRegistry, LocalReason, NotificationReceived, Notifier, SendRequest,
    SubscriptionTerminated,
)
from imsbox.sip.ua.refer import (
    SIPFRAG_TYPE, IncomingRefer, ReferAnswered, ReferIssuer, ReferProgress, ReferRecipient,
    ReferState, refer_to_value, sipfrag, sipfrag_status,
)

ALICE = "sip:alice@atlanta.example.com"
BOB = "sip:bob@biloxi.example.com"
CAROL = "sip:carol@chicago.example.com"


def wire(message: Request | Response) -> Request | Response:
    if isinstance(message, Request) and "Via" not in message.headers:
        message.push_header("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()}")
    return parse(bytes(message))


def call_dialogs() -> tuple[Dialog, Dialog]:
    """Alice (UAC) and Bob (UAS) dialogs of an established INVITE."""
    invite = wire(build_request("INVITE", BOB, f"<{ALICE}>", f"<{BOB}>", contact="sip:alice@192.0.2.1"))
    assert isinstance(invite, Request)
    bob = Dialog.from_uas(invite, local_target=parse_uri("sip:bob@192.0.2.2"),
                          state=DialogState.CONFIRMED)
    ok = Response.for_request(invite, 200, to_tag=bob.id.local_tag)
    ok.add_header("Contact", "<sip:bob@192.0.2.2>")
    alice = Dialog.from_uac(invite, wire(ok))  # type: ignore[arg-type]
    return alice, bob


class Transfer:
    """An issuer and a recipient wired together; the recipient's app is the test."""

    def __init__(self, honour: bool = True) -> None:
        self.issuer = ReferIssuer()
        self.notifier = Notifier(EventPackageRegistry(), "sip:bob@192.0.2.2")
        self.recipient = ReferRecipient(self.notifier, honour_refer_sub=honour)
        self.issuer_events: list[object] = []
        self.incoming: list[IncomingRefer] = []
        self.ladder: list[str] = []
        self.dialog: Dialog | None = None  # Bob's dialog for in-dialog REFERs

    def deliver_refer(self, now: float, hold_response: bool = False) -> list[tuple[Request, Response]]:
        held = []
        for ev in self.issuer.events():
            if not isinstance(ev, SendRequest):
                self.issuer_events.append(ev)
                continue
            request = wire(ev.request)
            assert isinstance(request, Request)
            response, incoming = self.recipient.receive_refer(request, now, self.dialog)
            self.ladder.append(f"{request.method} -> {response.status}")
            if incoming is not None:
                self.incoming.append(incoming)
            if hold_response:
                held.append((ev.request, wire(response)))
            else:
                self.issuer.receive_response(ev.request, wire(response), now)  # type: ignore[arg-type]
        self.issuer_events.extend(self.issuer.events())
        return held  # type: ignore[return-value]

    def deliver_notifies(self, now: float) -> None:
        for ev in self.notifier.events():
            if not isinstance(ev, SendRequest):
                continue
            request = wire(ev.request)
            assert isinstance(request, Request)
            response = self.issuer.receive_notify(request, now)
            self.ladder.append(f"NOTIFY {request.body.decode().strip()} "
                               f"[{request.headers.get('Subscription-State')}] -> {response.status}")
            self.notifier.receive_response(ev.request, wire(response), now)  # type: ignore[arg-type]
        self.issuer_events.extend(self.issuer.events())

    def of(self, kind: type) -> list:
        return [e for e in self.issuer_events if isinstance(e, kind)]


# -- sipfrag and Refer-To ------------------------------------------------------------

def test_sipfrag_round_trip_and_errors() -> None:
    assert sipfrag(100) == b"SIP/2.0 100 Trying\r\n"
    assert sipfrag(503, "Gone Fishing") == b"SIP/2.0 503 Gone Fishing\r\n"
    assert sipfrag_status(b"SIP/2.0 200 OK\r\nWarning: 399 x \"y\"\r\n") == (200, "OK")
    for bad in (b"", b"INVITE sip:x SIP/2.0\r\n", b"SIP/2.0 20 OK\r\n", b"HTTP/1.1 200 OK\r\n"):
        with pytest.raises(ValueError):
            sipfrag_status(bad)


def test_refer_to_with_embedded_replaces_survives_parsing() -> None:
    replaces = Replaces("12345@192.0.2.9", "to-tag-1", "from-tag-2", early_only=False)
    value = refer_to_value(CAROL, replaces)
    assert "?Replaces=12345%40192.0.2.9%3Bto-tag%3Dto-tag-1" in value
    addr, embedded = refer_to_target(value)
    assert Replaces.parse(embedded["Replaces"]) == replaces
    assert addr.uri.host == "chicago.example.com"  # type: ignore[union-attr]


# -- in-dialog transfer ---------------------------------------------------------------

def test_refer_in_dialog_reports_trying_then_ok() -> None:
    alice, bob = call_dialogs()
    t = Transfer()
    t.dialog = bob
    referral = t.issuer.refer(alice, CAROL, 0.0, referred_by=f"<{ALICE}>")
    t.deliver_refer(0.0)
    t.deliver_notifies(0.0)
    assert t.ladder == ["REFER -> 202",
                        "NOTIFY SIP/2.0 100 Trying [active;expires=180] -> 200"]
    [incoming] = t.incoming
    assert str(incoming.target) == CAROL and incoming.replaces is None
    assert incoming.referred_by is not None and str(incoming.referred_by.uri) == ALICE
    assert referral.state is ReferState.TRYING
    assert incoming.subscription is not None
    assert str(incoming.subscription.event) == f"refer;id={referral.request.cseq.seq}"

    t.recipient.report(incoming, 180, 1.0)
    t.recipient.report(incoming, 200, 2.0)
    t.deliver_notifies(2.0)
    assert t.ladder[2:] == ["NOTIFY SIP/2.0 180 Ringing [active;expires=179] -> 200",
                            "NOTIFY SIP/2.0 200 OK [terminated;reason=noresource] -> 200"]
    progress = [(p.status, p.final) for p in t.of(ReferProgress)]
    assert progress == [(100, False), (180, False), (200, True)]
    [answered] = t.of(ReferAnswered)
    assert answered.response.status == 202
    assert referral.state is ReferState.SUCCEEDED and referral.done
    assert referral.subscription is not None and referral.subscription.terminated
    # the INVITE dialogs are shared, not owned: the call goes on
    assert alice.state is DialogState.CONFIRMED and bob.state is DialogState.CONFIRMED
    assert t.recipient.report(incoming, 200, 3.0) is None


def test_refer_notifies_carry_sipfrag_content_type_and_event_id() -> None:
    alice, bob = call_dialogs()
    t = Transfer()
    t.dialog = bob
    t.issuer.refer(alice, CAROL, 0.0)
    t.deliver_refer(0.0)
    [send] = [e for e in t.notifier.events() if isinstance(e, SendRequest)]
    notify = send.request
    assert notify.headers.get("Content-Type") == SIPFRAG_TYPE
    assert notify.headers.get("Event", "").startswith("refer;id=")
    assert notify.to.tag == alice.id.local_tag and notify.from_.tag == bob.id.local_tag


def test_failed_reference_reports_failure() -> None:
    alice, bob = call_dialogs()
    t = Transfer()
    t.dialog = bob
    referral = t.issuer.refer(alice, CAROL, 0.0)
    t.deliver_refer(0.0)
    t.recipient.report(t.incoming[0], 503, 1.0)
    t.deliver_notifies(1.0)
    assert referral.state is ReferState.FAILED and referral.status == 503
    assert t.of(ReferProgress)[-1].final


def test_two_refers_in_one_dialog_are_matched_by_id() -> None:
    alice, bob = call_dialogs()
    t = Transfer()
    t.dialog = bob
    first = t.issuer.refer(alice, CAROL, 0.0)
    second = t.issuer.refer(alice, "sip:dave@example.com", 0.0)
    t.deliver_refer(0.0)
    t.deliver_notifies(0.0)
    one, two = t.incoming
    t.recipient.report(two, 200, 1.0)
    t.deliver_notifies(1.0)
    assert second.state is ReferState.SUCCEEDED and first.state is ReferState.TRYING
    t.recipient.report(one, 486, 2.0)
    t.deliver_notifies(2.0)
    assert first.state is ReferState.FAILED and first.status == 486


def test_first_refer_notify_without_id_still_matches() -> None:
    alice, bob = call_dialogs()
    issuer = ReferIssuer()
    referral = issuer.refer(alice, CAROL, 0.0)
    [send] = [e for e in issuer.events() if isinstance(e, SendRequest)]
    notify = bob.create_request("NOTIFY", [("Event", "refer"),
                                           ("Subscription-State", "active;expires=60")],
                                sipfrag(100), SIPFRAG_TYPE)
    assert issuer.receive_notify(wire(notify), 0.1).status == 200  # type: ignore[arg-type]
    assert referral.state is ReferState.TRYING
    assert send.request.method == "REFER"


def test_refer_rejected_ends_the_implicit_subscription() -> None:
    alice, _ = call_dialogs()
    issuer = ReferIssuer()
    referral = issuer.refer(alice, CAROL, 0.0)
    [send] = [e for e in issuer.events() if isinstance(e, SendRequest)]
    issuer.receive_response(send.request, Response.for_request(wire(send.request), 603), 0.1)  # type: ignore[arg-type]
    events = issuer.events()
    assert referral.state is ReferState.REJECTED
    assert [type(e) for e in events] == [SubscriptionTerminated, ReferAnswered]
    assert events[0].reason == LocalReason.FAILED  # type: ignore[union-attr]
    assert issuer.next_deadline() is None


# -- bad REFERs ------------------------------------------------------------------------

@pytest.mark.parametrize("refer_tos,reason", [
    ([], "Missing Refer-To"),
    ([f"<{CAROL}>", "<sip:dave@example.com>"], "Multiple Refer-To"),
    ([f"<{CAROL}?Replaces=abc%3Bto-tag%3D1>"], "Bad Replaces"),
    (["not a uri"], "Bad Refer-To"),
])
def test_bad_refer_to_is_400(refer_tos: list[str], reason: str) -> None:
    headers = [("Refer-To", v) for v in refer_tos]
    request = wire(build_request("REFER", BOB, f"<{ALICE}>", f"<{BOB}>", contact="sip:alice@192.0.2.1",
                                 headers=headers))
    recipient = ReferRecipient(Notifier(EventPackageRegistry(), "sip:bob@192.0.2.2"))
    response, incoming = recipient.receive_refer(request, 0.0)  # type: ignore[arg-type]
    assert response.status == 400 and response.reason == reason and incoming is None
    assert recipient.notifier.events() == []


def test_refer_with_unknown_to_tag_is_481() -> None:
    request = wire(build_request("REFER", BOB, f"<{ALICE}>", f"<{BOB}>", contact="sip:a@192.0.2.1",
                                 headers=[("Refer-To", f"<{CAROL}>")]))
    request.set_header("To", f"<{BOB}>;tag=unknown")
    recipient = ReferRecipient(Notifier(EventPackageRegistry(), "sip:bob@192.0.2.2"))
    assert recipient.receive_refer(request, 0.0)[0].status == 481  # type: ignore[arg-type]


def test_attended_transfer_refer_to_carries_replaces() -> None:
    alice, bob = call_dialogs()
    t = Transfer()
    t.dialog = bob
    replaces = Replaces("other-call@192.0.2.5", "carol-tag", "alice-tag")
    t.issuer.refer(alice, CAROL, 0.0, replaces=replaces)
    t.deliver_refer(0.0)
    [incoming] = t.incoming
    assert incoming.replaces == replaces
    assert str(incoming.target) == CAROL and "Replaces" in incoming.embedded


# -- out of dialog, NOTIFY before 202, Refer-Sub ---------------------------------------

def test_out_of_dialog_refer_with_notify_before_202() -> None:
    t = Transfer()
    referral = t.issuer.refer_out_of_dialog(BOB, f"<{ALICE}>", f"<{BOB}>", "sip:alice@192.0.2.1",
                                            CAROL, 0.0)
    [(refer, response)] = t.deliver_refer(0.0, hold_response=True)
    t.deliver_notifies(0.0)  # the NOTIFY overtakes the 202
    assert referral.state is ReferState.TRYING
    sub = referral.subscription
    assert sub is not None and sub.dialog is not None
    assert sub.dialog.id.remote_tag == response.to.tag
    t.issuer.receive_response(refer, response, 0.1)
    t.issuer_events.extend(t.issuer.events())
    assert referral.state is ReferState.TRYING  # a late 202 does not go backwards
    [incoming] = t.incoming
    t.recipient.report(incoming, 200, 1.0)
    t.deliver_notifies(1.0)
    assert referral.state is ReferState.SUCCEEDED
    assert sub.terminated and sub.dialog.terminated  # the REFER's own dialog ends with it
    assert incoming.dialog.terminated


def test_refer_sub_false_honoured_means_no_notify() -> None:
    alice, bob = call_dialogs()
    t = Transfer()
    t.dialog = bob
    referral = t.issuer.refer(alice, CAROL, 0.0, refer_sub=False)
    assert referral.request.headers.get("Refer-Sub") == "false"
    t.deliver_refer(0.0)
    assert t.notifier.events() == []
    [answered] = t.of(ReferAnswered)
    assert answered.response.headers.get("Refer-Sub") == "false"
    assert referral.state is ReferState.ACCEPTED and referral.subscription is None
    t.issuer.on_timer(100.0)  # no Timer N failure later: nothing is pending
    assert [e for e in t.issuer.events() if isinstance(e, SubscriptionTerminated)] == []
    assert t.issuer.next_deadline() is None


def test_refer_sub_false_not_honoured_still_reports_progress() -> None:
    alice, bob = call_dialogs()
    t = Transfer(honour=False)
    t.dialog = bob
    referral = t.issuer.refer(alice, CAROL, 0.0, refer_sub=False)
    t.deliver_refer(0.0)
    t.deliver_notifies(0.0)
    assert referral.state is ReferState.TRYING
    assert any(isinstance(e, NotificationReceived) for e in t.issuer_events)


def test_subscribe_to_refer_without_existing_subscription_is_403() -> None:
    recipient = ReferRecipient(Notifier(EventPackageRegistry(), "sip:bob@192.0.2.2"))
    request = wire(build_request("SUBSCRIBE", BOB, f"<{ALICE}>", f"<{BOB}>", contact="sip:a@192.0.2.1",
                                 headers=[("Event", "refer")]))
    assert recipient.notifier.receive_subscribe(request, 0.0).status == 403  # type: ignore[arg-type]


def test_recipient_subscription_times_out_if_never_reported() -> None:
    alice, bob = call_dialogs()
    t = Transfer()
    t.dialog = bob
    referral = t.issuer.refer(alice, CAROL, 0.0)
    t.deliver_refer(0.0)
    t.deliver_notifies(0.0)
    t.notifier.on_timer(180.0)
    t.deliver_notifies(180.0)
    # the refer package's neutral state is "100 Trying" (RFC 3515 2.4.5)
    assert t.ladder[-1] == "NOTIFY SIP/2.0 100 Trying [terminated;reason=timeout] -> 200"
    assert referral.subscription is not None and referral.subscription.terminated
    assert referral.state is ReferState.TRYING  # no final status ever came
