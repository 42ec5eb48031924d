from __future__ import annotations

import pytest

from imsbox.content import ContentError, Dialog, DialogInfo, DialogState, parse_dialog_info
from imsbox.content.dialog_info import (
    DialogEvent,
    Direction,
    DocumentState,
    Identity,
    NotificationOutcome,
    Participant,
    Replaces,
    SessionDescription,
    Target,
    apply_notification,
)


def test_rfc_sample(fixture_bytes):
    info = parse_dialog_info(fixture_bytes("dialog_info_sample.xml"))
    assert info.version == 1 and info.state is DocumentState.FULL
    dialog = info.dialog("123456")
    assert dialog.state is DialogState.CONFIRMED and dialog.duration == 274
    assert dialog.local.identity == Identity("sip:alice@example.com", "Alice")
    assert dialog.local.target == Target("sip:alice@pc33.example.com", [("isfocus", "true"), ("class", "personal")])
    assert dialog.remote.target.uri == "sip:bobster@phone21.example.org"
    assert parse_dialog_info(info.to_xml()) == info


def test_basic_example_attributes():
    doc = b"""<?xml version="1.0"?>
      <dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full"
                   entity="sip:alice@example.com">
        <dialog id="as7d900as8" call-id="a84b4c76e66710" local-tag="1928301774"
                remote-tag="456887766" direction="initiator">
          <state event="rejected" code="486">terminated</state>
          <identity>ignored-not-in-dialog</identity>
        </dialog>
      </dialog-info>"""
    info = parse_dialog_info(doc)
    d = info.dialogs[0]
    assert (d.call_id, d.local_tag, d.remote_tag, d.direction) == (
        "a84b4c76e66710", "1928301774", "456887766", Direction.INITIATOR)
    assert (d.state, d.event, d.code) == (DialogState.TERMINATED, DialogEvent.REJECTED, 486)


def test_every_state_and_full_round_trip():
    dialogs = [Dialog(f"d{i}", s, call_id="c@x", local_tag="l", remote_tag="r",
                      direction=Direction.RECIPIENT) for i, s in enumerate(DialogState)]
    dialogs[-1].event, dialogs[-1].code = DialogEvent.REMOTE_BYE, 200
    dialogs[0].replaces = Replaces("hg287s98s89", "6762h7", "09278hsb")
    dialogs[0].referred_by = Identity("sip:bob@example.com", "Bob")
    dialogs[0].route_set = ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    dialogs[0].local = Participant(
        Identity("sip:anonymous@anonymous.invalid", "Anonymous"),
        Target("sip:alice@pc33.example.com", [("description", "Alice's desk & office")]),
        SessionDescription("application/sdp", "v=0\no=- 1 1 IN IP4 192.0.2.1\n"),
        cseq=101,
    )
    info = DialogInfo("sip:alice@example.com", 3, DocumentState.PARTIAL, dialogs)
    xml = info.to_xml()
    assert b'<identity display="Anonymous">sip:anonymous@anonymous.invalid</identity>' in xml
    assert b"Alice's desk &amp; office" in xml
    back = parse_dialog_info(xml)
    assert back == info
    assert [d.state for d in back.dialogs] == list(DialogState)


def test_display_name_attribute_from_schema_is_accepted():
    doc = (b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="s:a">'
           b'<dialog id="1"><state>early</state><remote><identity display-name="Bob">sip:bob@x</identity>'
           b"</remote></dialog></dialog-info>")
    assert parse_dialog_info(doc).dialogs[0].remote.identity == Identity("sip:bob@x", "Bob")


def _info(version: int, state: DocumentState, *dialogs: Dialog) -> DialogInfo:
    return DialogInfo("sip:alice@example.com", version, state, list(dialogs))


def test_coherent_state_rules():
    first = apply_notification(None, _info(0, DocumentState.FULL, Dialog("a", DialogState.TRYING)))
    assert first.outcome is NotificationOutcome.APPLIED
    table = first.state
    step = apply_notification(table, _info(1, DocumentState.PARTIAL, Dialog("a", DialogState.EARLY),
                                           Dialog("b", DialogState.TRYING)))
    assert step.outcome is NotificationOutcome.APPLIED
    assert [(d.id, d.state) for d in step.state.dialogs] == [("a", DialogState.EARLY), ("b", DialogState.TRYING)]
    assert step.state.version == 1
    stale = apply_notification(step.state, _info(0, DocumentState.FULL))
    assert stale.outcome is NotificationOutcome.DISCARDED and stale.state is step.state
    gap = apply_notification(step.state, _info(5, DocumentState.PARTIAL, Dialog("a", DialogState.CONFIRMED)))
    assert gap.outcome is NotificationOutcome.APPLIED_NEED_FULL_STATE
    assert gap.state.version == 5 and gap.state.dialog("a").state is DialogState.CONFIRMED
    full = apply_notification(gap.state, _info(6, DocumentState.FULL))
    assert full.state.dialogs == []


@pytest.mark.parametrize(
    "attrs, inner, reason",
    [
        (b'state="full" entity="s:a"', b"", "'version'"),
        (b'version="x" state="full" entity="s:a"', b"", "version"),
        (b'version="0" state="odd" entity="s:a"', b"", "unknown dialog-info state"),
        (b'version="0" state="full"', b"<dialog><state>early</state></dialog>", "'id'"),
        (b'version="0" state="full"', b'<dialog id="1"/>', "mandatory <state>"),
        (b'version="0" state="full"', b'<dialog id="1"><state>ringing</state></dialog>', "unknown dialog state"),
        (b'version="0" state="full"', b'<dialog id="1"><state code="99">early</state></dialog>', "outside 100"),
        (b'version="0" state="full"', b'<dialog id="1" direction="up"><state>early</state></dialog>', "direction"),
        (b'version="0" state="full"', b'<dialog id="1"><state event="boom">terminated</state></dialog>', "event"),
        (b'version="0" state="full"', b'<dialog id="1"><state>early</state><replaces call-id="a"/></dialog>',
         "'local-tag'"),
        (b'version="0" state="full"', b'<dialog id="1"><state>early</state><local><target/></local></dialog>',
         "'uri'"),
        (b'version="0" state="full"', b'<dialog id="1"><state>early</state><referred-by/></dialog>', "no URI"),
    ],
)
def test_bad_documents(attrs, inner, reason):
    doc = b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" ' + attrs + b">" + inner + b"</dialog-info>"
    with pytest.raises(ContentError, match=reason):
        parse_dialog_info(doc)


def test_build_rejects_bad_code():
    info = _info(0, DocumentState.FULL, Dialog("a", DialogState.TERMINATED, code=42))
    with pytest.raises(ContentError, match=r"outside 100..699"):
        info.to_xml()
