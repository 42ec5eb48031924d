from __future__ import annotations

from datetime import datetime, UTC

import pytest

from imsbox.content import ContentError, XmlError
from imsbox.content.xmlsafe import (
    format_datetime,
    parse_bool,
    parse_datetime,
    parse_uint,
    parse_xml,
)


def test_parses_plain_document():
    root = parse_xml(b'<a xmlns="urn:x"><b>1</b></a>')
    assert root.tag == "{urn:x}a"
    assert root[0].text == "1"


@pytest.mark.parametrize(
    "doc, reason",
    [
        (b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>', "DTDForbidden"),
        (b'<!DOCTYPE a SYSTEM "http://evil/x.dtd"><a/>', "DTDForbidden"),
        (b"<a><b></a>", "malformed XML"),
        (b"", "malformed XML"),
        (b'<?xml version="1.0" encoding="bogus"?><a/>', "XML"),
    ],
)
def test_rejects_unsafe_or_malformed(doc, reason):
    with pytest.raises(XmlError, match=reason):
        parse_xml(doc)


def test_billion_laughs_rejected():
    doc = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><l>&b;</l>'
    with pytest.raises(XmlError, match="unsafe"):
        parse_xml(doc)


def test_size_limit():
    with pytest.raises(XmlError, match="exceeds the 100 byte limit"):
        parse_xml(b"<a>" + b"x" * 200 + b"</a>", max_size=100)


def test_depth_limit():
    doc = b"<a>" * 40 + b"</a>" * 40
    with pytest.raises(XmlError, match="nesting deeper"):
        parse_xml(doc)


def test_xml_error_is_content_error_and_value_error():
    assert issubclass(XmlError, ContentError)
    assert issubclass(ContentError, ValueError)


def test_uint_bool_datetime_helpers():
    assert parse_uint("42", "n") == 42
    for bad in ("", "-1", "1_0", "\u0663", " 4"):
        with pytest.raises(ContentError, match="n is not a decimal integer"):
            parse_uint(bad, "n")
    with pytest.raises(ContentError, match=r"outside 1..9"):
        parse_uint("10", "n", minimum=1, maximum=9)
    assert parse_bool("1", "b") is True and parse_bool("false", "b") is False
    with pytest.raises(ContentError, match="not a boolean"):
        parse_bool("yes", "b")
    when = parse_datetime("2015-02-24T06:48:10.7749079Z", "t")
    assert when == datetime(2015, 2, 24, 6, 48, 10, 774907, tzinfo=UTC)
    with pytest.raises(ContentError, match="not an RFC 3339"):
        parse_datetime("2015-02-24", "t")
    with pytest.raises(ContentError, match="not a valid date-time"):
        parse_datetime("2015-13-40T06:48:10Z", "t")
    assert format_datetime(datetime(2001, 2, 1, 12, 16, 49, tzinfo=UTC)) == "2001-02-01T12:16:49Z"
