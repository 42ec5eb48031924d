"""Every parser: arbitrary or mutated input yields a value or a ContentError, never anything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imsbox.content import (
    ContentError,
    CopyControl,
    CpimAddress,
    DispositionType,
    Imdn,
    IsComposing,
    ComposingState,
    SipFrag,
    build_cpim,
    build_multipart,
    build_recipient_list,
    cpim_escape,
    cpim_unescape,
    parse_conference_info,
    parse_content_type,
    parse_cpim,
    parse_dialog_info,
    parse_imdn,
    parse_iscomposing,
    parse_multipart,
    parse_resource_lists,
    parse_sipfrag,
    parse_xml,
)
from imsbox.content.imdn import ALLOWED_STATUS, parse_disposition_notification
from imsbox.content.multipart import BodyPart

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "content"
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _multipart(data: bytes):
    return parse_multipart(data, "multipart/mixed;boundary=da96a")


PARSERS = {
    "cpim": (parse_cpim, "cpim_001_hello.bin"),
    "imdn": (parse_imdn, None),
    "iscomposing": (parse_iscomposing, "iscomposing_001.xml"),
    "multipart": (_multipart, "multipart_003_ft_invite.bin"),
    "resource_lists": (parse_resource_lists, "resource_lists_copycontrol.xml"),
    "conference_info": (parse_conference_info, "conference_info_partial.xml"),
    "dialog_info": (parse_dialog_info, "dialog_info_sample.xml"),
    "sipfrag": (parse_sipfrag, None),
    "xml": (parse_xml, "conference_info_full.xml"),
}
SEEDS = {
    "imdn": (FIXTURES / "cpim_003_imdn_displayed.bin").read_bytes().split(b"\r\n\r\n", 2)[2],
    "sipfrag": b"SIP/2.0 200 OK\r\nContact: <sip:a@b>\r\n\r\nbody",
}


def _seed(name: str) -> bytes:
    fixture = PARSERS[name][1]
    return (FIXTURES / fixture).read_bytes() if fixture else SEEDS[name]


def _only_content_errors(parser, data: bytes) -> None:
    try:
        parser(data)
    except ContentError:
        pass


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes(name, data):
    _only_content_errors(PARSERS[name][0], data)


@st.composite
def mutations(draw, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b"<", b"&", b"--", b":", b"\\", b'"', b"\x00", b"\xff"]))
        elif data:
            del data[pos:pos + draw(st.integers(1, 20))]
    return bytes(data)


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ
@given(st.data())
def test_mutated_seeds(name, data):
    mutated = data.draw(mutations(_seed(name)))
    _only_content_errors(PARSERS[name][0], mutated)


@FUZZ
@given(st.text(max_size=200))
def test_text_parsers(text):
    for parser in (parse_content_type, CpimAddress.parse, parse_disposition_notification):
        try:
            parser(text)
        except ContentError:
            pass


@FUZZ
@given(st.binary(max_size=400))
def test_reparse_of_parsed_cpim_is_stable(data):
    try:
        msg = parse_cpim(data)
    except ContentError:
        return
    assert parse_cpim(msg.to_bytes()) == msg


@FUZZ
@given(st.text(max_size=100))
def test_cpim_escape_round_trip(text):
    escaped = cpim_escape(text)
    assert not any(ord(c) < 32 or ord(c) == 127 for c in escaped)
    assert cpim_unescape(escaped) == text


header_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
uri = st.from_regex(r"sip:[a-z0-9+]{1,12}@[a-z]{1,8}\.com", fullmatch=True)


@FUZZ
@given(display=st.none() | header_text, to=st.lists(uri, max_size=3), subject=header_text,
       value=header_text, body=st.binary(max_size=100))
def test_cpim_build_parse_round_trip(display, to, subject, value, body):
    msg = build_cpim(
        "text/plain;charset=UTF-8", body,
        sender=CpimAddress("sip:me@x.com", display),
        recipients=[CpimAddress(u) for u in to],
        subjects=[(subject, "en")],
        namespaces=[("imdn", "urn:ietf:params:imdn")],
        headers=[("imdn.Message-ID", value)],
    )
    back = parse_cpim(msg.to_bytes())
    assert back == msg
    assert back.sender == CpimAddress("sip:me@x.com", display)
    assert [a.uri for a in back.recipients] == to
    assert back.subjects == [(subject, "en")]
    assert back.get("Message-ID", "urn:ietf:params:imdn") == value
    assert back.body == body


@FUZZ
@given(parts=st.lists(st.tuples(st.sampled_from(["text/plain", "application/sdp", "message/cpim"]),
                                st.binary(max_size=80)), min_size=1, max_size=5),
       subtype=st.sampled_from(["mixed", "related"]))
def test_multipart_build_parse_round_trip(parts, subtype):
    built = build_multipart([BodyPart([("Content-Type", ct)], body) for ct, body in parts], subtype)
    back = parse_multipart(built.to_bytes(), built.content_type)
    assert back == built
    assert [p.body for p in back.parts] == [body for _, body in parts]


xml_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"), min_size=1, max_size=30
).map(str.strip).filter(bool)


@FUZZ
@given(disposition=st.sampled_from(list(DispositionType)), data=st.data(), message_id=xml_text,
       subject=st.none() | xml_text)
def test_imdn_round_trip(disposition, data, message_id, subject):
    status = data.draw(st.sampled_from(sorted(ALLOWED_STATUS[disposition], key=lambda s: s.value)))
    imdn = Imdn(message_id, disposition, status, "2015-02-24T06:48:25Z", "sip:a@b", None, subject)
    assert parse_imdn(imdn.to_xml()) == imdn


@FUZZ
@given(state=st.sampled_from(list(ComposingState)), contenttype=st.none() | xml_text,
       refresh=st.none() | st.integers(1, 10**6))
def test_iscomposing_round_trip(state, contenttype, refresh):
    doc = IsComposing(state, None, contenttype, refresh)
    assert parse_iscomposing(doc.to_xml()) == doc


@FUZZ
@given(st.lists(st.tuples(uri, st.sampled_from(list(CopyControl))), min_size=1, max_size=6))
def test_recipient_list_round_trip(recipients):
    lists = build_recipient_list(recipients)
    back = parse_resource_lists(lists.to_xml())
    assert [(e.uri, e.copy_control) for e in back.all_entries()] == recipients


@FUZZ
@given(code=st.integers(100, 699), reason=st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), max_size=30).map(str.strip))
def test_sipfrag_round_trip(code, reason):
    frag = SipFrag.status(code, reason)
    back = parse_sipfrag(frag.to_bytes())
    assert (back.status_code, back.reason) == (code, reason)
