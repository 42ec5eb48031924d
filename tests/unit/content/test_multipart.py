from __future__ import annotations

import pytest

from imsbox.content import (
    MULTIPART_RELATED,
    ContentError,
    CopyControl,
    build_multipart,
    parse_content_type,
    parse_cpim,
    parse_multipart,
    parse_resource_lists,
)
from imsbox.content.multipart import BodyPart, Multipart

SEED_CT = "multipart/mixed;boundary=da96a"


def test_seed_003_file_transfer_invite(fixture_bytes):
    data = fixture_bytes("multipart_003_ft_invite.bin")
    mp = parse_multipart(data, SEED_CT)
    assert mp.subtype == "mixed" and mp.boundary == "da96a"
    assert [p.content_type for p in mp.parts] == [
        "message/cpim", "application/sdp", "application/resource-lists+xml"]
    sdp = mp.find("application/sdp")
    assert sdp is not None and int(sdp.get("content-length")) == len(sdp.body)
    assert b"a=file-transfer-id:0dc99042ca5344798bbb19883d4f6bbf" in sdp.body
    assert sdp.body.endswith(b"a=file-date:creation:\"Fri, 06 Feb 2015 06:48:12 +0900\"\r\n")
    rl_part = mp.parts[2]
    assert rl_part.get("Content-Disposition") == "recipient-list"
    lists = parse_resource_lists(rl_part.body)
    assert lists.recipients(CopyControl.TO) == ["sip:00101123456789@xxx.com"]
    assert parse_cpim(mp.parts[0].body).sender.uri == "sip:+14448880000@xxx.com"
    assert mp.preamble == b"" and mp.epilogue == b"\r\n"
    assert mp.to_bytes() == data
    assert mp.content_type == SEED_CT


def test_quoted_boundary_preamble_epilogue_and_padding():
    data = (b"This is the preamble.\r\n"
            b"--simple boundary  \r\n"
            b"\r\n"
            b"implicitly typed plain US-ASCII text.\r\n"
            b"--simple boundary\r\n"
            b"Content-type: text/plain; charset=us-ascii\r\n"
            b"\r\n"
            b"explicitly typed.\r\n\r\n"
            b"--simple boundary--\r\n"
            b"This is the epilogue.\r\n")
    mp = parse_multipart(data, 'multipart/mixed; boundary="simple boundary"')
    assert mp.boundary == "simple boundary"
    assert mp.preamble == b"This is the preamble.\r\n"
    assert mp.epilogue == b"\r\nThis is the epilogue.\r\n"
    assert [p.headers for p in mp.parts] == [[], [("Content-type", "text/plain; charset=us-ascii")]]
    assert mp.parts[0].content_type == "text/plain"  # RFC 2046 default
    assert mp.parts[0].body == b"implicitly typed plain US-ASCII text."
    assert mp.parts[1].body == b"explicitly typed.\r\n"  # only the CRLF before -- belongs to the delimiter
    assert 'boundary="simple boundary"' in mp.content_type


def test_boundary_lookalike_inside_body_is_not_a_delimiter():
    data = b"--b1\r\nContent-Type: text/plain\r\n\r\n--b1x is not it\r\n--b12\r\n--b1--"
    mp = parse_multipart(data, "multipart/mixed;boundary=b1")
    assert mp.parts[0].body == b"--b1x is not it\r\n--b12"
    assert mp.epilogue == b""


def test_lf_only_peer_is_tolerated():
    data = b"--x\nContent-Type: text/plain\n\nhello\n--x--\n"
    mp = parse_multipart(data, "multipart/mixed; boundary=x")
    assert mp.parts[0].body == b"hello"


def test_empty_part_and_part_without_blank_line():
    mp = parse_multipart(b"--b\r\n--b--", "multipart/mixed;boundary=b")
    assert mp.parts == [BodyPart()]


def test_build_related_round_trip():
    parts = [BodyPart([("Content-Type", "application/sdp")], b"v=0\r\n"),
             BodyPart([("Content-Type", "message/cpim"), ("Content-ID", "<a@b>")], b"x")]
    mp = build_multipart(parts, "related", boundary="rel-1", type="application/sdp", start="<a@b>")
    assert mp.content_type == 'multipart/related;boundary=rel-1;type="application/sdp";start="<a@b>"'
    ctype = parse_content_type(mp.content_type)
    assert ctype.mime_type == MULTIPART_RELATED and ctype.params["start"] == "<a@b>"
    back = parse_multipart(mp.to_bytes(), mp.content_type)
    assert back == mp
    assert mp.to_bytes() == (b"--rel-1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n"
                             b"--rel-1\r\nContent-Type: message/cpim\r\nContent-ID: <a@b>\r\n\r\nx\r\n"
                             b"--rel-1--\r\n")


def test_build_draws_a_boundary_and_refuses_collisions():
    mp = build_multipart([BodyPart([("Content-Type", "text/plain")], b"a")])
    assert mp.boundary.startswith("imsbox-")
    with pytest.raises(ContentError, match="contains the boundary"):
        build_multipart([BodyPart([], b"x\r\n--zz\r\n")], boundary="zz")
    with pytest.raises(ContentError, match="at least one"):
        Multipart("mixed", "b").to_bytes()
    with pytest.raises(ContentError, match="invalid multipart boundary"):
        build_multipart([BodyPart()], boundary="ends with space ")


@pytest.mark.parametrize(
    "data, ctype, reason",
    [
        (b"--b\r\n\r\nx\r\n--b--", "text/plain", "not a multipart"),
        (b"--b\r\n\r\nx\r\n--b--", "multipart/mixed", "lacks the boundary"),
        (b"--b\r\n\r\nx\r\n--b--", "multipart/mixed;boundary=" + "x" * 71, "invalid multipart boundary"),
        (b"no delimiters at all", "multipart/mixed;boundary=b", "no delimiter"),
        (b"--b\r\n\r\nx\r\n", "multipart/mixed;boundary=b", "close delimiter"),
        (b"--b--\r\n", "multipart/mixed;boundary=b", "before any body part"),
        (b"--b\r\nContent-Type: text/plain\r\n--b--", "multipart/mixed;boundary=b", "no empty line"),
        (b"--b\r\nBad Header\r\n\r\nx\r\n--b--", "multipart/mixed;boundary=b", "malformed"),
        (b"--b\r\n\r\nx\r\n--b--", "multipart/mixed;boundary=\"b", "unterminated"),
        (b"--b\r\n\r\nx\r\n--b--", "multipart", "malformed Content-Type"),
    ],
)
def test_errors(data, ctype, reason):
    with pytest.raises(ContentError, match=reason):
        parse_multipart(data, ctype)


def test_part_limit():
    data = b"".join(b"--b\r\n\r\nx\r\n" for _ in range(300)) + b"--b--"
    with pytest.raises(ContentError, match="more than 256 parts"):
        parse_multipart(data, "multipart/mixed;boundary=b")


def test_content_type_parsing():
    ct = parse_content_type('Multipart/Mixed ; Boundary="a\\"b" ;x=1;')
    assert (ct.type, ct.subtype, ct.params) == ("multipart", "mixed", {"boundary": 'a"b', "x": "1"})
    assert str(ct) == 'multipart/mixed;boundary="a\\"b";x=1'
