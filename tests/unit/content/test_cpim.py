from __future__ import annotations

from datetime import datetime, UTC

import pytest

from imsbox.content import (
    CPIM_HEADERS_NS,
    IMDN_NS,
    ContentError,
    CpimAddress,
    build_cpim,
    cpim_escape,
    cpim_unescape,
    parse_cpim,
)

SEEDS = [
    "cpim_001_hello.bin",
    "cpim_001_hi.bin",
    "cpim_001_imdn_delivered.bin",
    "cpim_001_imdn_delivered_hi.bin",
    "cpim_003_pager.bin",
    "cpim_003_imdn_displayed.bin",
]


@pytest.mark.parametrize("name", SEEDS)
def test_seed_wrappers_round_trip_bytes(fixture_bytes, name):
    data = fixture_bytes(name)
    assert parse_cpim(data).to_bytes() == data


def test_seed_hello(fixture_bytes):
    msg = parse_cpim(fixture_bytes("cpim_001_hello.bin"))
    assert msg.sender == CpimAddress("sip:anonymous@anonymous.invalid")
    assert [a.uri for a in msg.recipients] == ["sip:anonymous@anonymous.invalid"]
    assert msg.datetime == datetime(2015, 2, 24, 6, 48, 9, tzinfo=UTC)
    assert msg.namespaces() == {"imdn": IMDN_NS, "MyFeatures": "mailto:RCSFeatures@test.com"}
    assert msg.get("Message-ID", IMDN_NS) == "wYcJuXBbGOfCtBqIPQqz0I"
    assert msg.get("Disposition-Notification", IMDN_NS) == "positive-delivery, display"
    assert msg.get("PANI", "mailto:RCSFeatures@test.com").startswith("3GPP-E-UTRAN-FDD")
    assert msg.get("Message-ID") is None  # not in the default CPIM namespace
    assert msg.content_type == "text/plain;charset=UTF-8"
    assert msg.body == b"Hello"


def test_seed_hi_bare_uris(fixture_bytes):
    msg = parse_cpim(fixture_bytes("cpim_001_hi.bin"))
    assert msg.sender == CpimAddress("sip:anonymous@anonymous.invalid")
    assert msg.body == b"hi"


def test_seed_display_name(fixture_bytes):
    msg = parse_cpim(fixture_bytes("cpim_003_imdn_displayed.bin"))
    assert msg.sender == CpimAddress("sip:+14448880011@xxx.com", "No Chat")
    assert msg.content_disposition == "notification"
    assert msg.body.startswith(b'<?xml version="1.0"')


def test_rfc3862_example_subjects_require_and_namespaces():
    data = (
        b"From: MR SANDERS <im:piglet@100akerwood.com>\r\n"
        b"To: Depressed Donkey <im:eeyore@100akerwood.com>\r\n"
        b"DateTime: 2000-12-13T13:40:00-08:00\r\n"
        b"Subject: the weather will be fine today\r\n"
        b"Subject:;lang=fr beau temps prevu pour aujourd'hui\r\n"
        b"NS: MyFeatures <mid:MessageFeatures@id.foo.com>\r\n"
        b"Require: MyFeatures.VitalMessageOption\r\n"
        b"MyFeatures.VitalMessageOption: Confirmation-requested\r\n"
        b"MyFeatures.WackyMessageOption: Use-silly-font\r\n"
        b"\r\n"
        b"Content-type: text/xml; charset=utf-8\r\n"
        b"Content-ID: <1234567890@foo.com>\r\n"
        b"\r\n"
        b"<body>\r\nHere is the text of my message.\r\n</body>\r\n"
    )
    msg = parse_cpim(data)
    assert msg.to_bytes() == data
    assert msg.sender == CpimAddress("im:piglet@100akerwood.com", "MR SANDERS")
    assert msg.subjects == [
        ("the weather will be fine today", None),
        ("beau temps prevu pour aujourd'hui", "fr"),
    ]
    assert msg.require == ["MyFeatures.VitalMessageOption"]
    assert msg.get("VitalMessageOption", "mid:MessageFeatures@id.foo.com") == "Confirmation-requested"
    assert msg.datetime.utcoffset().total_seconds() == -8 * 3600
    assert msg.body.endswith(b"</body>\r\n")


def test_default_namespace_redeclared():
    data = b"NS: <http://id.acme.widgets/wily-headers/>\r\nrunner-trap: set\r\n\r\nContent-Type: text/plain\r\n\r\n"
    msg = parse_cpim(data)
    assert msg.get("runner-trap", "http://id.acme.widgets/wily-headers/") == "set"
    assert msg.get("runner-trap", CPIM_HEADERS_NS) is None


def test_namespace_applies_only_after_declaration():
    data = b"x.A: 1\r\nNS: x <urn:x>\r\nx.A: 2\r\n\r\nContent-Type: text/plain\r\n\r\n"
    msg = parse_cpim(data)
    assert [h.value for h in msg.get_all("A", "urn:x")] == ["2"]


def test_escaping_rules():
    assert cpim_escape('a\\b\tc\nd\re\x08f\x01g\x7f"h') == 'a\\\\b\\tc\\nd\\re\\bf\\u0001g\\u007f"h'
    assert cpim_escape('say "hi"', quote='"') == 'say \\"hi\\"'
    assert cpim_unescape("\\u0041\\q\\'x\\") == "Aq'x"  # unknown escape -> next char, lone \ dropped
    text = "tab\there \\ \"q\" \x00 é"
    assert cpim_unescape(cpim_escape(text)) == text


def test_build_matches_seed_shape():
    msg = build_cpim(
        "text/plain;charset=UTF-8",
        b"Hello",
        sender=CpimAddress("sip:anonymous@anonymous.invalid"),
        recipients=[CpimAddress("sip:anonymous@anonymous.invalid")],
        date_time="2015-02-24T06:48:09Z",
        namespaces=[("imdn", IMDN_NS)],
        headers=[("imdn.Message-ID", "wYcJuXBbGOfCtBqIPQqz0I"),
                 ("imdn.Disposition-Notification", "positive-delivery, display")],
    )
    assert msg.to_bytes() == (
        b"From: <sip:anonymous@anonymous.invalid>\r\n"
        b"To: <sip:anonymous@anonymous.invalid>\r\n"
        b"DateTime: 2015-02-24T06:48:09Z\r\n"
        b"NS: imdn <urn:ietf:params:imdn>\r\n"
        b"imdn.Message-ID: wYcJuXBbGOfCtBqIPQqz0I\r\n"
        b"imdn.Disposition-Notification: positive-delivery, display\r\n"
        b"\r\n"
        b"Content-Type: text/plain;charset=UTF-8\r\n"
        b"Content-Length: 5\r\n"
        b"\r\n"
        b"Hello"
    )


def test_build_escapes_and_round_trips_values():
    when = datetime(2001, 2, 2, 10, 48, 54, tzinfo=UTC)
    msg = build_cpim(
        "text/plain",
        b"x",
        sender=CpimAddress("im:pooh@100akerwood.com", 'Winnie "the" Pooh\t'),
        date_time=when,
        subjects=[("line1\nline2", "en")],
        require=["MyFeatures.Vital"],
        namespaces=[("MyFeatures", "mid:f@id")],
        headers=[("MyFeatures.Vital", "a\\b")],
    )
    back = parse_cpim(msg.to_bytes())
    assert back.sender == CpimAddress("im:pooh@100akerwood.com", 'Winnie "the" Pooh\t')
    assert back.datetime == when
    assert back.subjects == [("line1\nline2", "en")]
    assert back.get("Vital", "mid:f@id") == "a\\b"
    assert back.require == ["MyFeatures.Vital"]
    assert b"Subject:;lang=en line1\\nline2\r\n" in msg.to_bytes()


def test_metadata_only_cpim_part():
    data = b"From: <sip:a@b>\r\nNS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: x1\r\n\r\n"
    msg = parse_cpim(data)
    assert msg.content_type is None and msg.body == b""
    assert msg.to_bytes() == data


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"From: <sip:a@b>\r\n", "no empty line"),
        (b"Bad Name: x\r\n\r\nContent-Type: text/plain\r\n\r\n", "malformed CPIM header name"),
        (b"a.b.c: x\r\n\r\nContent-Type: text/plain\r\n\r\n", "malformed CPIM header name"),
        (b"From: x\x01\r\n\r\nContent-Type: text/plain\r\n\r\n", "control character"),
        (b" From: <sip:a@b>\r\n\r\nContent-Type: text/plain\r\n\r\n", "folded"),
        (b"NS: bad prefix <urn:x>\r\n\r\nContent-Type: text/plain\r\n\r\n", "malformed NS"),
        (b"From: <sip:a@b>\r\n\r\nContent-ID: 1\r\n\r\nbody", "lacks Content-Type"),
        (b"From: <sip:a@b>\r\n\r\nContent-Type: t/p\r\nContent-Length: 9\r\n\r\nbody", "exceeds"),
        (b"From: <sip:a@b>\r\n\r\nContent-Type: t/p\r\nContent-Length: x\r\n\r\nbody", "Content-Length"),
        (b"\xff: x\r\n\r\nContent-Type: t/p\r\n\r\n", "not UTF-8"),
        (b"Subject:;lang x\r\n\r\nContent-Type: t/p\r\n\r\n", "malformed parameter"),
    ],
)
def test_parse_errors_name_the_fault(data, reason):
    with pytest.raises(ContentError, match=reason):
        parse_cpim(data)


@pytest.mark.parametrize("value", ["<>", "Name <no scheme>", '"open <sip:a@b>', "Name sip:a@b>"])
def test_bad_addresses(value):
    with pytest.raises(ContentError):
        CpimAddress.parse(value)


def test_sender_property_raises_typed_error_on_bad_address():
    msg = parse_cpim(b"From: <>\r\n\r\nContent-Type: text/plain\r\n\r\n")
    with pytest.raises(ContentError, match="no valid URI"):
        _ = msg.sender


def test_build_refuses_bad_names():
    with pytest.raises(ContentError):
        build_cpim("text/plain", b"", headers=[("bad name", "x")])
    with pytest.raises(ContentError):
        build_cpim("text/plain", b"", namespaces=[("a b", "urn:x")])
    with pytest.raises(ContentError):
        CpimAddress("not a uri")


@pytest.mark.parametrize("name", ["\\", 'a"b', "tab\there", "\\u0041"])
def test_display_names_with_escapes_are_unescaped_once(name):
    # Regression: the quoted Formal-name used to be unescaped twice.
    msg = build_cpim("text/plain", b"", sender=CpimAddress("sip:a@b", name))
    assert parse_cpim(msg.to_bytes()).sender == CpimAddress("sip:a@b", name)
