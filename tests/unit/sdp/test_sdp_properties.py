"""Property tests: generated SDPs round-trip; arbitrary input raises only SdpError."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from imsbox.sdp import LocalCapabilities, NoCommonCodec, SdpError, Setup, answer, parse

FIXTURES = Path(__file__).parents[2] / "fixtures" / "sdp"
SEED_BODIES = [p.read_bytes() for p in sorted(FIXTURES.glob("*.sdp"))]
FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.+_!#$%&'*^`{|}~"
token = st.text(TOKEN_CHARS, min_size=1, max_size=8)
digits = st.integers(0, 2**40).map(str)
host = st.one_of(st.sampled_from(["192.0.2.1", "0.0.0.0", "2001:db8::1", "host.example.com"]),
                 st.text("abcdef0123456789.:", min_size=1, max_size=12))
value_text = st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)),
                     max_size=20)
attribute = st.one_of(token, st.builds(lambda n, v: f"{n}:{v}", token, value_text))
other_line = st.builds(lambda k, v: f"{k}={v}", st.sampled_from("ib"), value_text)


@st.composite
def media_section(draw: st.DrawFn) -> list[str]:
    port = draw(st.integers(0, 65535))
    count = draw(st.one_of(st.just(""), st.integers(1, 9).map(lambda n: f"/{n}")))
    proto = draw(st.sampled_from(["RTP/AVP", "TCP/MSRP", "TCP/TLS/MSRP", "UDP"]))
    formats = draw(st.lists(token, min_size=1, max_size=4))
    lines = [f"m={draw(token)} {port}{count} {proto} {' '.join(formats)}"]
    for kind in sorted(draw(st.lists(st.sampled_from("ibk"), max_size=3)), key="ibk".index):
        lines.append(f"{kind}={draw(value_text)}")
    if draw(st.booleans()):
        lines.insert(len([ln for ln in lines if ln[0] in "mi"]), f"c=IN IP4 {draw(host)}")
    lines += [f"a={a}" for a in draw(st.lists(attribute, max_size=5))]
    return lines


@st.composite
def session_description(draw: st.DrawFn) -> str:
    lines = ["v=0", f"o={draw(token)} {draw(digits)} {draw(digits)} IN IP4 {draw(host)}",
             f"s={draw(value_text)}"]
    lines += sorted(draw(st.lists(other_line, max_size=2)), key=lambda ln: "iuepb".index(ln[0]))
    lines.insert(3 + sum(ln[0] != "b" for ln in lines[3:]), f"c=IN IP6 {draw(host)}")
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"t={draw(digits)} {draw(digits)}")
    lines += [f"a={a}" for a in draw(st.lists(attribute, max_size=4))]
    for section in draw(st.lists(media_section(), max_size=3)):
        lines += section
    return "\r\n".join(lines) + "\r\n"


@FAST
@given(session_description())
def test_generated_sdp_round_trips(text: str) -> None:
    sd = parse(text)
    assert str(sd) == text
    assert bytes(sd) == text.encode()
    assert parse(text.replace("\r\n", "\n")) == sd


@FAST
@given(st.binary(max_size=300))
@example(b"v=0\no=- 1 1 IN IP4 h\ns=-\n")
@example(b"v=0\r\n\xff")
def test_arbitrary_bytes_raise_only_sdp_error(data: bytes) -> None:
    try:
        sd = parse(data)
    except SdpError as exc:
        assert exc.reason
        return
    assert parse(bytes(sd)) == sd


def mutate(body: bytes, position: int, junk: bytes) -> bytes:
    position %= len(body) + 1
    return body[:position] + junk + body[position + len(junk):]


@FAST
@given(st.sampled_from(SEED_BODIES), st.integers(0, 2000),
       st.binary(max_size=8) | st.sampled_from([b" ", b":", b"\r\n", b"=", b"\"", b"%", b"0", b"*"]))
def test_mutated_seed_bodies_raise_only_sdp_error(body: bytes, position: int, junk: bytes) -> None:
    """Parsing, every typed accessor and the answerer raise nothing but SdpError."""
    try:
        sd = parse(mutate(body, position, junk))
    except SdpError:
        return
    for m in sd.media:
        for accessor in ("path", "accept_types", "accept_wrapped_types", "max_size", "setup",
                         "file_selector", "file_transfer_id", "file_disposition", "file_date",
                         "file_range", "file_icon", "rtpmaps", "direction"):
            try:
                getattr(m, accessor)
            except SdpError:
                pass
    caps = LocalCapabilities(address="192.0.2.7", session_id="1", audio_port=4000,
                             msrp_path=["msrp://192.0.2.7:2855/x;tcp"], accept_types=["*"],
                             accept_wrapped_types=["*"], setup=Setup.ACTIVE, msrp_cema=True,
                             request_whole_file=True)
    try:
        result = answer(sd, caps)
    except NoCommonCodec:  # the one error answer() raises: audio only, none of our codecs
        return
    assert len(result.media) == len(sd.media)
    assert parse(bytes(result)) == result


@FAST
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_sdp_error(text: str) -> None:
    try:
        parse("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\n" + text)
    except SdpError:
        pass


@FAST
@given(value_text)
def test_attribute_value_parsers_raise_only_sdp_error(value: str) -> None:
    from imsbox.sdp import FileDate, FileRange, FileSelector, Fmtp, RtpMap
    for parser in (FileSelector.parse, FileDate.parse, FileRange.parse, RtpMap.parse, Fmtp.parse,
                   Setup.parse):
        try:
            parser(value)
        except SdpError:
            pass
