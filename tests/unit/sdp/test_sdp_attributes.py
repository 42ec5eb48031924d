"""Typed accessors: RTP, MSRP and RFC 5547 file-transfer attributes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from imsbox.sdp import (
    Direction,
    FileDate,
    FileHash,
    FileRange,
    FileSelector,
    Fmtp,
    MediaDescription,
    RtpMap,
    SdpError,
    Setup,
    parse,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "sdp"


def media(name: str, index: int = 0) -> MediaDescription:
    return parse((FIXTURES / f"{name}.sdp").read_bytes()).media[index]


def msrp(*attributes: str) -> MediaDescription:
    sd = parse("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=message 7 TCP/MSRP *\n"
               + "".join(f"a={a}\n" for a in attributes))
    return sd.media[0]


def test_rtpmap_and_fmtp() -> None:
    m = media("audio_offer")
    assert m.rtpmap("101") == RtpMap(101, "telephone-event", 8000)
    assert m.rtpmap(0) == RtpMap(0, "PCMU", 8000)
    assert m.fmtp("101") == Fmtp("101", "0-15")
    assert m.fmtp("0") is None
    assert str(RtpMap.parse("96 opus/48000/2")) == "96 opus/48000/2"
    assert RtpMap.parse("96 opus/48000/2").channels == 2


def test_static_payload_type_without_rtpmap() -> None:
    m = parse("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 h\nt=0 0\nm=audio 1 RTP/AVP 8 0\n").media[0]
    assert m.rtpmap("8") == RtpMap(8, "PCMA", 8000)
    assert m.rtpmap("96") is None


@pytest.mark.parametrize("value", ["x PCMU/8000", "0 PCMU", "0", "200 X/8000", "0 PCMU/8000/"])
def test_bad_rtpmap(value: str) -> None:
    with pytest.raises(SdpError, match="rtpmap"):
        RtpMap.parse(value)


def test_chat_offer_msrp_accessors() -> None:
    m = media("000_chat_offer")
    assert m.is_msrp
    assert m.path == ["msrp://[2001::1:4c16:9c0f:4986:9e6d]:8880/FmnP;tcp"]
    assert m.accept_types == ["message/cpim", "application/im-iscomposing+xml"]
    assert m.accept_wrapped_types == ["text/plain", "message/imdn+xml"]
    assert m.setup is Setup.ACTIVE
    assert m.msrp_cema
    assert m.max_size is None
    assert media("002_a51_conference_offer").max_size == 131072
    assert media("000_chat_answer").accept_wrapped_types == ["*"]


def test_msrp_setters_keep_position() -> None:
    m = media("000_chat_offer")
    m.setup = Setup.ACTPASS
    m.path = ["msrps://relay.example.com:2855/r;tcp", "msrps://h.example.com:1/s;tcp"]
    m.msrp_cema = False
    m.max_size = 1024
    assert [str(a) for a in m.attributes] == [
        "accept-types:message/cpim application/im-iscomposing+xml",
        "accept-wrapped-types:text/plain message/imdn+xml",
        "setup:actpass",
        "path:msrps://relay.example.com:2855/r;tcp msrps://h.example.com:1/s;tcp",
        "sendrecv",
        "max-size:1024",
    ]
    m.max_size = None
    assert not m.has_attribute("max-size")


@pytest.mark.parametrize(("attribute", "accessor", "reason"), [
    ("path:http://x/y", "path", "not an MSRP URI"),
    ("path:msrp://a/b  msrp://c/d", "path", "not an MSRP URI"),
    ("path", "path", "has no value"),
    ("accept-types:text", "accept_types", "type/subtype"),
    ("accept-wrapped-types:a/b/c", "accept_wrapped_types", "type/subtype"),
    ("max-size:-1", "max_size", "max-size"),
    ("setup:sideways", "setup", "setup"),
    ("file-transfer-id:a b", "file_transfer_id", "token"),
    ("file-disposition:", "file_disposition", "token"),
    ("file-icon:http://x", "file_icon", "cid"),
    ("file-range:0-10", "file_range", "start must be"),
    ("file-range:10-5", "file_range", "start must be"),
    ("file-range:5", "file_range", "start-stop"),
    ("file-range:1-x", "file_range", "stop"),
    ("file-date:creation:\"yesterday\"", "file_date", "RFC 5322"),
    ("file-date:creation:\"Mon, 15 May 2006 15:01:31\"", "file_date", "time zone"),
    ("file-date:born:\"Mon, 15 May 2006 15:01:31 +0300\"", "file_date", "unknown date"),
    ("file-date:creation:\"Mon, 15 May 2006 15:01:31 +0300", "file_date", "unterminated"),
    ("file-selector:colour:red", "file_selector", "unknown selector"),
    ("file-selector:size:1 size:2", "file_selector", "duplicate size"),
    ("file-selector:name:noquotes", "file_selector", "quoted"),
    ("file-selector:name:\"a%zz\"", "file_selector", "two hex digits"),
    ("file-selector:name:\"a%ff\"", "file_selector", "UTF-8"),
    ("file-selector:type:image", "file_selector", "type/subtype"),
    ("file-selector:type:text/plain;charset=utf-8", "file_selector", "quoted"),
    ("file-selector:hash:sha-1:GG", "file_selector", "hash"),
    ("file-selector:hash:sha-1", "file_selector", "hash"),
    ("file-selector:size:1  type:a/b", "file_selector", "empty item"),
])
def test_malformed_attribute_values(attribute: str, accessor: str, reason: str) -> None:
    m = msrp(attribute)
    with pytest.raises(SdpError, match=reason):
        getattr(m, accessor)


def test_file_transfer_offer_accessors() -> None:
    m = media("003_file_transfer_offer")
    assert m.direction is Direction.SENDONLY
    selector = m.file_selector
    assert selector is not None
    assert selector.name == "1MB.jpg"
    assert selector.type == "image/jpeg"
    assert selector.size == 1049274
    assert selector.hash is not None and selector.hash.algorithm == "sha-1"
    assert selector.hash.digest[:4] == bytes.fromhex("ce55635a") and len(selector.hash.digest) == 20
    assert m.file_transfer_id == "0dc99042ca5344798bbb19883d4f6bbf"
    assert m.file_disposition == "render"
    assert m.file_date == FileDate(creation=datetime(2015, 2, 6, 6, 48, 12,
                                                     tzinfo=timezone(timedelta(hours=9))))
    assert m.file_range is None
    answer = media("003_file_transfer_answer")
    assert answer.file_range == FileRange(1, 1049274)
    assert answer.direction is Direction.RECVONLY


def test_rfc5547_offer_accessors() -> None:
    m = media("rfc5547_push_offer")
    assert m.file_selector is not None and m.file_selector.name == "My cool picture.jpg"
    assert m.file_icon == "cid:id2@alicepc.example.com"
    assert str(m.file_selector.hash) == "sha-1:72:24:5F:E8:65:3D:DA:F3:71:36:2F:86:D4:71:91:3E:E4:A2:CE:2E"


def test_file_selector_escapes_and_params_round_trip() -> None:
    selector = FileSelector(name='50% "off".txt', type="text/plain",
                            type_parameters={"charset": "utf-8"}, size=12,
                            hash=FileHash("sha-1", bytes(range(20))))
    text = str(selector)
    assert text.startswith('name:"50%25 %22off%22.txt" type:text/plain;charset="utf-8" size:12 hash:sha-1:00:01')
    assert FileSelector.parse(text) == selector
    m = msrp()
    m.file_selector = selector
    assert m.file_selector == selector


def test_file_date_and_range_round_trip() -> None:
    zone = timezone(timedelta(hours=-5))
    date = FileDate(creation=datetime(2020, 1, 2, 3, 4, 5, tzinfo=zone),
                    read=datetime(2021, 6, 7, 8, 9, 10, tzinfo=zone))
    assert FileDate.parse(str(date)) == date
    assert str(FileRange(10)) == "10-*"
    assert FileRange.parse("10-*") == FileRange(10, None)
    m = msrp()
    m.file_range = FileRange(1, 100)
    m.file_date = date
    m.file_icon = "cid:i@x"
    assert (m.file_range, m.file_date, m.file_icon) == (FileRange(1, 100), date, "cid:i@x")


def test_file_selector_with_no_value_is_empty() -> None:
    assert msrp("file-selector").file_selector == FileSelector()


def test_direction_helpers() -> None:
    assert Direction.SENDONLY.mirrored() is Direction.RECVONLY
    assert Direction.RECVONLY.mirrored() is Direction.SENDONLY
    assert Direction.INACTIVE.mirrored() is Direction.INACTIVE
    assert Direction.SENDRECV.mirrored() is Direction.SENDRECV
    assert Direction.SENDRECV.restricted_to(Direction.RECVONLY) is Direction.RECVONLY
    assert Direction.SENDONLY.restricted_to(Direction.RECVONLY) is Direction.INACTIVE


@pytest.mark.parametrize(("offered", "preferred", "expected"), [
    (Setup.ACTIVE, Setup.ACTIVE, Setup.PASSIVE),
    (Setup.PASSIVE, Setup.PASSIVE, Setup.ACTIVE),
    (Setup.ACTPASS, Setup.ACTIVE, Setup.ACTIVE),
    (Setup.ACTPASS, Setup.PASSIVE, Setup.PASSIVE),
    (Setup.HOLDCONN, Setup.ACTIVE, Setup.HOLDCONN),
])
def test_setup_answer_role(offered: Setup, preferred: Setup, expected: Setup) -> None:
    assert offered.answer_role(preferred) is expected
