from __future__ import annotations

from datetime import datetime, UTC

import pytest

from imsbox.content import (
    ComposingIndication,
    ComposingState,
    ContentError,
    IsComposing,
    MessageComposer,
    SendStatus,
    StatusMessageReceiver,
    XmlError,
    parse_iscomposing,
)

ACTIVE, IDLE = ComposingState.ACTIVE, ComposingState.IDLE


def test_seed_001_document(fixture_bytes):
    doc = parse_iscomposing(fixture_bytes("iscomposing_001.xml"))
    assert doc == IsComposing(ACTIVE, refresh=30)


def test_rfc_examples():
    idle = parse_iscomposing(b"""<?xml version="1.0" encoding="UTF-8"?>
<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">
  <state>idle</state>
  <lastactive>2003-01-27T10:43:00Z</lastactive>
  <contenttype>audio</contenttype>
</isComposing>""")
    assert idle == IsComposing(IDLE, datetime(2003, 1, 27, 10, 43, tzinfo=UTC), "audio")
    assert parse_iscomposing(idle.to_xml()) == idle
    active = IsComposing(ACTIVE, contenttype="text/plain", refresh=90)
    assert b"<refresh>90</refresh>" in active.to_xml()
    assert parse_iscomposing(active.to_xml()) == active


def test_unknown_state_token_reads_as_idle():
    doc = b'<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"><state>pondering</state></isComposing>'
    assert parse_iscomposing(doc).state is IDLE


@pytest.mark.parametrize(
    "inner, reason",
    [
        (b"", "lacks a non-empty <state>"),
        (b"<state>active</state><refresh>0</refresh>", "outside 1"),
        (b"<state>active</state><refresh>soon</refresh>", "not a decimal integer"),
        (b"<state>active</state><lastactive>yesterday</lastactive>", "RFC 3339"),
    ],
)
def test_bad_documents(inner, reason):
    doc = b'<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">' + inner + b"</isComposing>"
    with pytest.raises(ContentError, match=reason):
        parse_iscomposing(doc)


def test_wrong_root():
    with pytest.raises(XmlError, match="root element"):
        parse_iscomposing(b'<isComposing xmlns="urn:wrong"><state>idle</state></isComposing>')


def sent_states(actions):
    assert all(isinstance(a, SendStatus) for a in actions)
    return [a.document.state for a in actions]


def test_composer_sends_active_once_then_idle_after_15s():
    c = MessageComposer(refresh=60)
    assert sent_states(c.composing(0.0)) == [ACTIVE]
    assert c.composing(1.0) == [] and c.composing(5.0) == []  # transitions only
    assert c.next_deadline() == 20.0  # idle timeout from the last keystroke
    assert c.on_timer(19.9) == []
    actions = c.on_timer(20.0)
    assert sent_states(actions) == [IDLE]
    assert actions[0].document.refresh is None
    assert c.state is IDLE and c.next_deadline() is None
    assert sent_states(c.composing(21.0)) == [ACTIVE]


def test_composer_refreshes_active_every_refresh_seconds():
    c = MessageComposer(refresh=60, idle_timeout=15)
    first = c.composing(0.0)
    assert first[0].document.refresh == 60
    now = 0.0
    refreshes = []
    while now < 130.0:  # keep typing every 10 s
        now += 10.0
        c.composing(now)
        refreshes += [now for _ in c.on_timer(now)]
    assert refreshes == [60.0, 120.0]
    assert c.next_deadline() == min(now + 15, 180.0)


def test_composer_without_refresh_never_refreshes():
    c = MessageComposer(refresh=None)
    assert c.composing(0.0)[0].document.refresh is None
    c.composing(10.0)
    assert c.next_deadline() == 25.0
    assert c.on_timer(24.0) == []


def test_content_sent_goes_idle_silently():
    c = MessageComposer()
    c.composing(0.0)
    assert c.content_sent(3.0) == []
    assert c.state is IDLE and c.next_deadline() is None
    assert c.on_timer(100.0) == []


def test_composer_stops_after_415():
    c = MessageComposer()
    c.composing(0.0)
    c.disable()
    assert c.composing(1.0) == []
    assert c.state is ACTIVE  # still tracks the user, just sends nothing


def test_composer_rejects_bad_refresh():
    with pytest.raises(ContentError):
        MessageComposer(refresh=0)


def test_receiver_active_expires_after_refresh():
    r = StatusMessageReceiver()
    assert r.status_received(IsComposing(ACTIVE, refresh=30), 0.0) == [ComposingIndication(ACTIVE)]
    assert r.status_received(IsComposing(ACTIVE, refresh=30), 10.0) == []  # repeated actives are fine
    assert r.next_deadline() == 40.0
    assert r.on_timer(39.0) == []
    assert r.on_timer(40.0) == [ComposingIndication(IDLE)]
    assert r.state is IDLE and r.next_deadline() is None


def test_receiver_default_timeout_is_120s():
    r = StatusMessageReceiver()
    r.status_received(IsComposing(ACTIVE), 5.0)
    assert r.next_deadline() == 125.0
    assert r.on_timer(125.0) == [ComposingIndication(IDLE)]


def test_receiver_idle_on_idle_status_or_content():
    r = StatusMessageReceiver()
    r.status_received(IsComposing(ACTIVE), 0.0)
    assert r.status_received(IsComposing(IDLE), 1.0) == [ComposingIndication(IDLE)]
    assert r.status_received(IsComposing(IDLE), 2.0) == []
    r.status_received(IsComposing(ACTIVE), 3.0)
    assert r.content_received(4.0) == [ComposingIndication(IDLE)]
    assert r.content_received(5.0) == []


def test_composer_and_receiver_together_on_a_virtual_clock():
    c, r = MessageComposer(refresh=60), StatusMessageReceiver()
    shown = []

    def deliver(actions, now):
        for action in actions:
            doc = parse_iscomposing(action.document.to_xml())
            shown.extend(i.state for i in r.status_received(doc, now))

    deliver(c.composing(0.0), 0.0)
    for t in (5.0, 10.0):
        deliver(c.composing(t), t)
    deliver(c.on_timer(c.next_deadline()), 25.0)
    assert shown == [ACTIVE, IDLE]
