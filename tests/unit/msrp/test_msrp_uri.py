"""MSRP URI parsing and RFC 4975 section 6.1 comparison."""

from __future__ import annotations

import pytest

from imsbox.msrp import MsrpUri, UriError, parse_path


def test_parse_ipv6_with_session_and_transport() -> None:
    u = MsrpUri.parse("msrp://[2001::1:4c16:9c0f:4986:9e6d]:8880/FmnP;tcp")
    assert (u.scheme, u.host, u.port, u.session_id, u.transport) == (
        "msrp", "2001::1:4c16:9c0f:4986:9e6d", 8880, "FmnP", "tcp")
    assert str(u) == "msrp://[2001::1:4c16:9c0f:4986:9e6d]:8880/FmnP;tcp"


def test_parse_msrps_userinfo_params() -> None:
    u = MsrpUri.parse("MSRPS://alice@Host.Example.com:2855/a+b=c/d;TCP;foo=bar;baz")
    assert u.is_secure and u.userinfo == "alice" and u.session_id == "a+b=c/d"
    assert u.params == (("foo", "bar"), ("baz", None))


@pytest.mark.parametrize("a, b", [
    ("msrp://[2001:0000:0000:0001:0000:0000:0000:0002]:16000/558f02b9d0;tcp",
     "msrp://[2001:0:0:1::2]:16000/558f02b9d0;tcp"),
    ("MSRP://Host.EXAMPLE.com:1/s;TCP", "msrp://host.example.com:1/s;tcp"),
    ("msrp://bob@h.example:1/s;tcp", "msrp://h.example:1/s;tcp"),  # userinfo ignored
    ("msrp://h%2Eexample:1/s;tcp", "msrp://h.example:1/s;tcp"),     # percent-decoding
])
def test_equivalent(a: str, b: str) -> None:
    assert MsrpUri.parse(a) == MsrpUri.parse(b)
    assert hash(MsrpUri.parse(a)) == hash(MsrpUri.parse(b))


@pytest.mark.parametrize("a, b", [
    ("msrp://h.example:1/s;tcp", "msrps://h.example:1/s;tcp"),
    ("msrp://h.example:1/s;tcp", "msrp://h.example:2/s;tcp"),
    ("msrp://h.example:1/s;tcp", "msrp://h.example/s;tcp"),
    ("msrp://h.example:1/s;tcp", "msrp://h.example:1/S;tcp"),
    ("msrp://h.example:1/s;tcp", "msrp://h.example:1;tcp"),
    ("msrp://h.example:1/s;tcp", "msrp://h.example:1/s;ws"),
])
def test_not_equivalent(a: str, b: str) -> None:
    assert MsrpUri.parse(a) != MsrpUri.parse(b)


@pytest.mark.parametrize("text", [
    "sip://h:1/s;tcp", "msrp://h:1/s", "msrp://[zz::1]:1/s;tcp", "msrp://10.0.0.1/s;tcp",
    "msrp://h:99999/s;tcp", "msrp:/h:1/s;tcp", "", "msrp://h:1/s;t-cp", "msrp://h:1/s;tcp;a b",
])
def test_malformed(text: str) -> None:
    with pytest.raises(UriError):
        MsrpUri.parse(text)


def test_path_of_several_uris() -> None:
    path = parse_path("msrp://relay.example:2855/r1;tcp msrp://[::1]:9/x;tcp")
    assert [u.host for u in path] == ["relay.example", "::1"]
    with pytest.raises(UriError):
        parse_path("   ")
