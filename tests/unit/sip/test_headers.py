"""Typed header views (RFC 3261 section 20 and the extension RFCs)."""

import pytest

from imsbox.sip.headers import (
    CSeq, Contact, Event, FeatureSet, HeaderError, MediaType, NameAddr, RAck,
    Replaces, SessionExpires, SubscriptionState, Via, canonical_name, refer_to_target,
    token_list,
)


def test_via_ipv6_params():
    via = Via.parse("SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas;received=2001:db8::9:255;rport=5071")
    assert via.transport == "UDP" and via.host == "[2001:db8::9:1]" and via.port == 5070
    assert via.received == "2001:db8::9:255" and via.rport == 5071
    assert str(via) == "SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas;received=2001:db8::9:255;rport=5071"


def test_via_lws_around_slashes():
    via = Via.parse("SIP / 2.0 / UDP first.example.com: 4000;ttl=16 ;maddr=224.2.0.1 ;branch=z9hG4bKa7c6a8dlze.1")
    assert via.transport == "UDP" and via.port == 4000 and via.maddr == "224.2.0.1"


def test_name_addr_forms():
    a = NameAddr.parse("sip:alice@a.test;tag=88sja8x")
    assert a.tag == "88sja8x" and str(a.uri) == "sip:alice@a.test"
    b = NameAddr.parse('Anonymous <sip:c8oqz84zk7z@privacy.org>;tag=hyh8')
    assert b.display_name == "Anonymous" and b.tag == "hyh8"
    c = NameAddr.parse('"Bob \\"B\\"" <sips:bob@b.test;transport=tls>;x=1')
    assert c.display_name == 'Bob "B"' and c.params.get("x") == "1"
    assert NameAddr.parse(str(c)).display_name == 'Bob "B"'
    with pytest.raises(HeaderError):
        NameAddr.parse("<sip:a@b")


def test_contact_feature_tags():
    c = Contact.parse('<sip:u@[2001::1]:5060>;+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session";'
                      '+sip.instance="<urn:gsma:imei:3566>";reg-id=1;expires=600;q=0.7')
    assert c.expires == 600 and c.q == 0.7 and c.reg_id == 1
    assert c.instance == "<urn:gsma:imei:3566>"
    assert c.feature_tags.values("+g.3gpp.icsi-ref") == {
        "urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"}


def test_accept_contact():
    fs = FeatureSet.parse('*;+g.3gpp.icsi-ref="a,b";require;explicit')
    assert fs.require and fs.explicit and fs.values("+g.3gpp.icsi-ref") == {"a", "b"}
    with pytest.raises(HeaderError):
        FeatureSet.parse("<sip:x>")


def test_small_headers():
    assert CSeq.parse("4711 INVITE") == CSeq(4711, "INVITE")
    with pytest.raises(HeaderError):
        CSeq.parse("-1 INVITE")
    ev = Event.parse("dialog;id=7")
    assert ev.package == "dialog" and ev.id == "7" and ev.matches(Event.parse("Dialog;id=7"))
    st = SubscriptionState.parse("terminated;reason=timeout;retry-after=30")
    assert st.state == "terminated" and st.reason == "timeout" and st.retry_after == 30
    rep = Replaces.parse("98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff;early-only")
    assert rep.to_tag == "ff87ff" and rep.from_tag == "r33th4x0r" and rep.early_only
    with pytest.raises(HeaderError):
        Replaces.parse("abc;to-tag=1")
    se = SessionExpires.parse("1800;refresher=UAC")
    assert se.delta == 1800 and se.refresher == "uac"
    assert RAck.parse("776656 1 INVITE") == RAck(776656, 1, "INVITE")
    mt = MediaType.parse('multipart/mixed; boundary="b1"')
    assert mt.mime == "multipart/mixed" and mt.params.get("boundary") == "b1"
    assert token_list("Require", "100rel, timer") == ["100rel", "timer"]
    with pytest.raises(HeaderError):
        token_list("Require", "a b")


def test_refer_to_with_embedded_replaces():
    addr, embedded = refer_to_target(
        "<sip:bob@b.test?Replaces=12345%40192.168.118.3%3Bto-tag%3D12345%3Bfrom-tag%3D5FFE-3994>")
    rep = Replaces.parse(embedded["Replaces"])
    assert rep.call_id == "12345@192.168.118.3" and rep.to_tag == "12345"
    assert str(addr.uri).startswith("sip:bob@b.test?")


def test_canonical_names():
    assert canonical_name("i") == "Call-ID" and canonical_name("cseq") == "CSeq"
    assert canonical_name("x-foo-bar") == "X-Foo-Bar"
