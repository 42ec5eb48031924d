"""reginfo+xml documents and the reg event notifier (RFC 3680), sans-I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

from imsbox.content.errors import XmlError
from imsbox.ims.regevent import (
    REGINFO, ContactEvent, ContactState, RegContact, RegEventNotifier, RegInfo, Registration,
    RegistrationState, parse_reginfo,
)
from imsbox.sip import Request, Response, SubscriptionState

AOR = "sip:alice@ims.test"


def document(state: RegistrationState = RegistrationState.ACTIVE) -> RegInfo:
    contact = RegContact("c1", "sip:alice@192.0.2.1:5060", expires=600, q=0.5,
                         call_id="abc", cseq=3,
                         params=[("+sip.instance", "<urn:uuid:1>"), ("audio", "")])
    contacts = [contact] if state is RegistrationState.ACTIVE else []
    return RegInfo([Registration(AOR, "r1", state, contacts),
                    Registration("tel:+15550001", "r2", state, list(contacts))])


def test_reginfo_round_trip() -> None:
    xml = document().to_xml()
    assert b'xmlns="urn:ietf:params:xml:ns:reginfo"' in xml
    parsed = parse_reginfo(xml)
    assert parsed == document()
    contact = parsed.registration(AOR).contacts[0]
    assert contact.params == [("+sip.instance", "<urn:uuid:1>"), ("audio", "")]
    assert parsed.registration("sip:nobody@ims.test") is None


def test_parse_rejects_bad_documents() -> None:
    with pytest.raises(XmlError):
        parse_reginfo(b'<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="0" '
                      b'state="sideways"/>')
    with pytest.raises(XmlError):
        parse_reginfo(b'<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="0" '
                      b'state="full"><registration aor="sip:a@b" id="1" state="active">'
                      b'<contact id="c" state="active" event="registered"/></registration>'
                      b'</reginfo>')
    with pytest.raises(XmlError):
        parse_reginfo(b'<!DOCTYPE x [<!ENTITY a "b">]><reginfo/>')


def subscribe(expires: int = 600, event: str = "reg", to_tag: str | None = None,
              cseq: int = 1, call_id: str = "sub-1") -> Request:
    to = f"<{AOR}>" + (f";tag={to_tag}" if to_tag else "")
    return Request("SUBSCRIBE", AOR if to_tag is None else "sip:127.0.0.1:5080", [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1"),
        ("From", f"<{AOR}>;tag=ue"), ("To", to), ("Call-ID", call_id),
        ("CSeq", f"{cseq} SUBSCRIBE"), ("Contact", "<sip:alice@127.0.0.1:5062>"),
        ("Event", event), ("Expires", str(expires)),
    ])


def new_notifier() -> tuple[RegEventNotifier, RegInfo]:
    """The notifier and the watched set's state the S-CSCF hands it with a SUBSCRIBE."""
    return RegEventNotifier("sip:127.0.0.1:5080"), document()


def test_subscribe_gets_200_and_full_state_notify() -> None:
    notifier, current = new_notifier()
    response = notifier.subscribe(subscribe(), AOR, now=100.0, state=current)
    assert response.status == 200 and response.to.tag
    assert response.headers.get("Expires") == "600"
    [notify] = notifier.requests()
    assert notify.method == "NOTIFY"
    assert str(notify.uri) == "sip:alice@127.0.0.1:5062"
    assert notify.headers.get("Event") == "reg"
    assert notify.headers.get("Content-Type") == REGINFO
    state = SubscriptionState.parse(notify.headers.get("Subscription-State") or "")
    assert (state.state, state.expires) == ("active", 600)
    info = parse_reginfo(notify.body)
    assert info.version == 0 and info.registration(AOR).state is RegistrationState.ACTIVE
    assert notifier.watching(AOR) and notifier.watching("sip:bob@ims.test") == []


def test_changes_bump_the_version_and_deregistration_ends_the_subscription() -> None:
    notifier, current = new_notifier()
    notifier.subscribe(subscribe(), AOR, now=100.0, state=current)
    first = notifier.requests()[0]
    notifier.receive_response(first, Response.for_request(first, 200), 100.0)
    changed = document()
    changed.registrations[0].contacts[0].event = ContactEvent.REFRESHED
    notifier.changed(AOR, changed, now=110.0)
    [second] = notifier.requests()
    info = parse_reginfo(second.body)
    assert info.version == 1
    assert info.registration(AOR).contacts[0].event is ContactEvent.REFRESHED
    assert second.cseq.seq == first.cseq.seq + 1
    gone = document(RegistrationState.TERMINATED)
    gone.registrations[0].contacts.append(
        RegContact("c1", "sip:alice@192.0.2.1:5060", ContactState.TERMINATED,
                   ContactEvent.UNREGISTERED, 0))
    notifier.changed(AOR, gone, now=120.0, final=True)
    [last] = notifier.requests()
    state = SubscriptionState.parse(last.headers.get("Subscription-State") or "")
    assert (state.state, state.reason) == ("terminated", "noresource")
    info = parse_reginfo(last.body)
    assert info.version == 2
    assert info.registration(AOR).state is RegistrationState.TERMINATED
    assert info.registration(AOR).contacts[0].event is ContactEvent.UNREGISTERED
    assert notifier.watching(AOR) == []


def test_refresh_unsubscribe_and_errors() -> None:
    notifier, current = new_notifier()
    response = notifier.subscribe(subscribe(), AOR, now=0.0, state=current)
    notifier.requests()
    refresh = notifier.subscribe(subscribe(expires=0, to_tag=response.to.tag, cseq=2),
                                 None, now=10.0, state=current)
    assert refresh.status == 200
    [final] = notifier.requests()
    assert final.headers.get("Subscription-State", "").startswith("terminated")
    assert parse_reginfo(final.body).version == 1
    assert notifier.subscriptions == []
    assert notifier.subscribe(subscribe(event="presence"), AOR, 0.0, state=current).status == 489
    short = notifier.subscribe(subscribe(expires=5), AOR, 0.0, state=current)
    assert short.status == 423 and short.headers.get("Min-Expires") == "60"
    stray = notifier.subscribe(subscribe(to_tag="nope", cseq=5), None, 0.0)
    assert stray.status == 481


def test_subscription_timeout() -> None:
    notifier, current = new_notifier()
    notifier.subscribe(subscribe(expires=60), AOR, now=0.0, state=current)
    notifier.requests()
    assert notifier.next_deadline() == 60.0
    notifier.on_timer(61.0)
    [last] = notifier.requests()
    assert "reason=timeout" in (last.headers.get("Subscription-State") or "")
    assert notifier.subscriptions == []


def test_a_subscription_moves_between_notifiers_through_its_record() -> None:
    """Two S-CSCFs: B rebuilds A's subscription from the stored record and sends
    the version taken from the store, in A's dialog, with a CSeq that follows."""
    a, current = new_notifier()
    response = a.subscribe(subscribe(), AOR, now=100.0, state=current)
    [first] = a.requests()
    record = a.record(a.subscriptions[0])
    assert (record.aor, record.version, record.cseq_base) == (AOR, 1, first.cseq.seq)
    assert record.local_tag == response.to.tag and record.remote_target == \
        "sip:alice@127.0.0.1:5062"
    b = RegEventNotifier("sip:127.0.0.1:5081")
    watcher = b.restore(replace(record, version=3))   # versions 1 and 2 went elsewhere
    b.changed(AOR, document(), now=110.0, watchers=[watcher])
    [notify] = b.requests()
    assert parse_reginfo(notify.body).version == 3
    assert notify.cseq.seq == first.cseq.seq + 3
    assert (notify.call_id, notify.from_.tag, notify.to.tag) == (
        first.call_id, first.from_.tag, first.to.tag)
    assert str(notify.uri) == "sip:alice@127.0.0.1:5062"
    assert str(notify.contact[0].uri) == "sip:127.0.0.1:5081"   # refreshes come to B now
    # a refresh at B is served in that dialog; a fatal answer ends it there
    refresh = b.subscribe(subscribe(to_tag=response.to.tag, cseq=2), None, 120.0, current)
    assert refresh.status == 200
    [again] = b.requests()
    assert b.receive_response(again, Response.for_request(again, 481), 121.0) is watcher
    assert b.subscriptions == []
