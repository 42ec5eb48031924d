"""Parsing, serializing and validating session descriptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from imsbox.sdp import (
    Attribute,
    Connection,
    Direction,
    Line,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    Timing,
    parse,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "sdp"
ALL_FIXTURES = sorted(FIXTURES.glob("*.sdp"))


def load(name: str) -> bytes:
    return (FIXTURES / f"{name}.sdp").read_bytes()


def test_every_seed_body_has_a_fixture() -> None:
    names = {p.stem for p in ALL_FIXTURES}
    for seed in ("000_chat_offer", "000_chat_answer", "001_chat_offer", "001_chat_answer",
                 "002_a51_conference_offer", "002_a51_conference_answer",
                 "002_a52_conference_offer", "002_a52_conference_answer",
                 "003_file_transfer_offer", "003_file_transfer_answer",
                 "003_cpm_session_offer", "003_cpm_session_answer"):
        assert seed in names


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: p.stem)
def test_fixture_round_trips_byte_identical(path: Path) -> None:
    data = path.read_bytes()
    sd = parse(data)
    assert bytes(sd) == data
    assert str(sd) == data.decode()


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: p.stem)
def test_lf_only_input_gives_crlf_output(path: Path) -> None:
    data = path.read_bytes()
    assert bytes(parse(data.replace(b"\r\n", b"\n"))) == data
    assert bytes(parse(data.decode().replace("\r\n", "\n"))) == data


def test_chat_offer_model() -> None:
    sd = parse(load("000_chat_offer"))
    assert sd.version == 0
    assert sd.origin == Origin("TEST-IMS-UE", "1234562", "0", "IN", "IP6", "2001::1:4c16:9c0f:4986:9e6d")
    assert sd.session_name == "SS VOIP"
    assert sd.connection == Connection("IN", "IP6", "2001::1:4c16:9c0f:4986:9e6d")
    assert sd.times == [Timing(0, 0)]
    (m,) = sd.media
    assert (m.media, m.port, m.port_count, m.proto, m.formats) == ("message", 8880, None, "TCP/MSRP", ["*"])
    assert [a.name for a in m.attributes] == [
        "accept-types", "accept-wrapped-types", "setup", "path", "msrp-cema", "sendrecv"]
    assert m.attribute("msrp-cema") == Attribute("msrp-cema", None)
    assert m.direction is Direction.SENDRECV
    assert sd.direction is None
    assert sd.direction_of(m) is Direction.SENDRECV


def test_answer_without_t_line_is_tolerated() -> None:
    sd = parse(load("000_chat_answer"))
    assert sd.times == []
    assert b"t=" not in bytes(sd)


def test_other_lines_kept_in_place() -> None:
    sd = parse(load("audio_video_offer"))
    assert sd.other == [Line("b", "AS:128")]
    assert sd.session_name == ""
    assert sd.media[1].other == [Line("b", "AS:100")]
    cpm = parse(load("003_cpm_session_offer"))
    assert cpm.other == [Line("i", "A VOIP Session")]


def test_unknown_attributes_and_order_kept() -> None:
    text = ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
            "a=x-zeta:1\r\na=ice-lite\r\na=x-alpha:\r\n"
            "m=audio 5004/2 RTP/AVP 0\r\nk=prompt\r\na=x-b:2\r\na=rtpmap:0 PCMU/8000\r\na=x-a\r\n")
    sd = parse(text)
    assert [str(a) for a in sd.attributes] == ["x-zeta:1", "ice-lite", "x-alpha:"]
    assert sd.attributes[2].value == ""
    assert sd.media[0].port_count == 2
    assert str(sd) == text


def test_repeat_lines_attach_to_timing() -> None:
    text = ("v=0\r\no=- 1 1 IN IP4 h\r\ns=x\r\nc=IN IP4 224.2.17.12/127\r\n"
            "t=2873397496 2873404696\r\nr=7d 1h 0 25h\r\nz=2882844526 -1h\r\n")
    sd = parse(text)
    assert sd.times == [Timing(2873397496, 2873404696, ["7d 1h 0 25h"])]
    assert sd.connection is not None and sd.connection.address == "224.2.17.12/127"
    assert str(sd) == text


def test_build_and_serialize() -> None:
    m = MediaDescription("audio", 4000, "RTP/AVP", ["0"])
    m.set_attribute("rtpmap", "0 PCMU/8000")
    m.direction = Direction.SENDONLY
    sd = SessionDescription(origin=Origin("-", "5", "6", "IN", "IP4", "192.0.2.9"),
                            connection=Connection("IN", "IP4", "192.0.2.9"), media=[m])
    assert bytes(sd) == (b"v=0\r\no=- 5 6 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
                         b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n")
    m.direction = Direction.INACTIVE  # replaced in place, not appended
    assert [str(a) for a in m.attributes] == ["rtpmap:0 PCMU/8000", "inactive"]


def test_serialize_refuses_line_injection() -> None:
    sd = parse(load("audio_offer"))
    sd.session_name = "x\r\nm=video 1 RTP/AVP 0"
    with pytest.raises(SdpError, match="CR, LF or NUL"):
        bytes(sd)


def test_legacy_hold_detection() -> None:
    held = parse(load("audio_hold_legacy_offer"))
    assert held.is_legacy_hold(held.media[0])
    normal = parse(load("audio_offer"))
    assert not normal.is_legacy_hold(normal.media[0])
    media_level = parse("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
                        "m=audio 1 RTP/AVP 0\nc=IN IP4 0.0.0.0\n")
    assert media_level.is_legacy_hold(media_level.media[0])


def test_session_level_direction_is_default() -> None:
    sd = parse("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\na=recvonly\n"
               "m=audio 1 RTP/AVP 0\nm=audio 2 RTP/AVP 0\na=inactive\n")
    assert sd.direction is Direction.RECVONLY
    assert sd.direction_of(sd.media[0]) is Direction.RECVONLY
    assert sd.direction_of(sd.media[1]) is Direction.INACTIVE


BASE = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"),
    ("o=- 1 1 IN IP4 h\r\nv=0\r\ns=-\r\n", "missing v="),
    ("v=1\r\no=- 1 1 IN IP4 h\r\ns=-\r\n", "unsupported version"),
    ("v=0\r\ns=-\r\no=- 1 1 IN IP4 h\r\n", "followed by o= and s="),
    ("v=0\r\no=- 1 1 IN IP4 h\r\n", "followed by o= and s="),
    ("v=0\r\no=- 1 IN IP4 h\r\ns=-\r\n", "bad o= line"),
    ("v=0\r\no=- x 1 IN IP4 h\r\ns=-\r\n", "sess-id"),
    ("v=0\r\no=-  1 1 IN IP4 h\r\ns=-\r\n", "bad o= line"),
    (BASE + "m=audio 70000 RTP/AVP 0\r\n", "above 65535"),
    (BASE + "m=audio x RTP/AVP 0\r\n", "m= port"),
    (BASE + "m=audio 5/0 RTP/AVP 0\r\n", "number of ports"),
    (BASE + "m=audio 5 RTP/AVP\r\n", "bad m= line"),
    (BASE + "m=audio 5 RTP/AVP 0\r\nc=IN IP4\r\n", "bad c= line"),
    (BASE + "m=audio 5 RTP/AVP 0\r\nc=IN IP4 a b\r\n", "bad c= line"),
    (BASE + "m=audio 5 RTP/AVP 0\r\nc=IN IP4 bad<host>\r\n", "bad c= address"),
    (BASE + "c=IN IP4 192.0.2.2\r\n", "duplicate session-level c="),
    (BASE + "m=audio 5 RTP/AVP 0\r\nt=0 0\r\n", "not allowed after the first m="),
    (BASE + "m=audio 5 RTP/AVP 0\r\no=- 1 1 IN IP4 h\r\n", "not allowed after the first m="),
    (BASE + "s=again\r\n", "duplicate s="),
    ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nr=1d 1h 0\r\n", "without a preceding t="),
    ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 5 RTP/AVP 0\r\n", "missing c="),
    (BASE + "\r\nm=audio 5 RTP/AVP 0\r\n", "malformed line"),
    (BASE + "garbage\r\n", "malformed line"),
    (BASE + "A=b\r\n", "malformed line"),
    (BASE + "a=:x\r\n", "attribute name"),
    (BASE + "a=x\ry\r\n", "bare CR"),
    (BASE + "t=now 0\r\n", "t= start"),
])
def test_malformed_input_raises_sdp_error(text: str, reason: str) -> None:
    with pytest.raises(SdpError, match=reason) as info:
        parse(text)
    assert isinstance(info.value, ValueError)
    assert info.value.reason


def test_error_carries_line_number() -> None:
    with pytest.raises(SdpError) as info:
        parse(BASE + "m=audio 5 RTP/AVP 0\r\nm=audio bad RTP/AVP 0\r\n")
    assert info.value.line == 7


def test_non_utf8_bytes_rejected() -> None:
    with pytest.raises(SdpError, match="not UTF-8"):
        parse(b"v=0\r\no=- 1 1 IN IP4 h\r\ns=\xff\r\n")


def test_rejected_media_without_connection_is_fine() -> None:
    sd = parse("v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\nm=audio 0 RTP/AVP 0\n")
    assert sd.media[0].is_rejected
