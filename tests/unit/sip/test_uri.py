"""SIP/SIPS/tel URIs: parsing, serialisation and RFC 3261 19.1.4 comparison."""

import pytest

from imsbox.sip import AbsoluteUri, SipUri, TelUri, UriError, parse_uri, uri_equal


def test_full_sip_uri():
    uri = parse_uri("sips:alice:secret@[2001:db8::10]:5061;transport=tcp;lr?subject=project%20x&priority=urgent")
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips", "alice", "secret", "[2001:db8::10]", 5061)
    assert uri.transport == "tcp" and uri.lr
    assert uri.headers == [("subject", "project%20x"), ("priority", "urgent")]
    assert str(uri) == "sips:alice:secret@[2001:db8::10]:5061;transport=tcp;lr?subject=project%20x&priority=urgent"


def test_user_part_with_semicolons_and_phone():
    uri = parse_uri("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert uri.user == "+1-212-555-1212" and uri.password == "1234"
    assert uri.param("user") == "phone"


def test_tel_uris():
    uri = parse_uri("tel:+1-201-555-0123;ext=1234")
    assert isinstance(uri, TelUri) and uri.is_global and uri.digits == "+12015550123"
    local = parse_uri("tel:7042;phone-context=example.com")
    assert not local.is_global
    with pytest.raises(UriError):
        parse_uri("tel:7042")
    assert parse_uri("tel:+1(201)555-0123") == parse_uri("tel:+12015550123")


def test_other_schemes_are_kept():
    uri = parse_uri("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
    assert isinstance(uri, AbsoluteUri) and str(uri) == "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"


# RFC 3261 19.1.4 examples
@pytest.mark.parametrize("a,b", [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
])
def test_equivalent(a, b):
    assert uri_equal(parse_uri(a), parse_uri(b))
    assert parse_uri(a) == parse_uri(b)


@pytest.mark.parametrize("a,b", [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
])
def test_not_equivalent(a, b):
    assert not uri_equal(parse_uri(a), parse_uri(b))


@pytest.mark.parametrize("text", [
    "sip:", "sip:@host", "sip:user@", "sip:host:99999", "sip:[::1", "sip:a b@c",
    "sip:host;=x", "nocolon", "sip:us%zzer@host", "sip:host?noequals",
])
def test_bad_uris(text):
    with pytest.raises(UriError):
        parse_uri(text)


def test_param_editing():
    uri = parse_uri("sip:p.test;lr")
    uri.set_param("transport", "tcp")
    uri.remove_param("lr")
    assert str(uri) == "sip:p.test;transport=tcp"
    assert uri.aor == "sip:p.test"
