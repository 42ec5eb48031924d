from __future__ import annotations

import pytest

from imsbox.content import (
    ContentError,
    CopyControl,
    Entry,
    ResourceList,
    ResourceLists,
    XmlError,
    build_recipient_list,
    parse_resource_lists,
)
from imsbox.content.resource_lists import EntryRef, External


def test_seed_003_recipient_list(fixture_bytes):
    lists = parse_resource_lists(fixture_bytes("resource_lists_copycontrol.xml"))
    entries = lists.all_entries()
    assert [(e.uri, e.copy_control, e.anonymize) for e in entries] == [
        ("sip:00101123456789@xxx.com", CopyControl.TO, None),
        ("sip:+14448880011@xxx.com", CopyControl.CC, None),
        ("sip:+14448880022@xxx.com", CopyControl.BCC, True),
    ]
    assert lists.recipients(CopyControl.BCC) == ["sip:+14448880022@xxx.com"]
    assert parse_resource_lists(lists.to_xml()) == lists


def test_rfc4826_nested_lists_refs_and_externals():
    doc = b"""<?xml version="1.0" encoding="UTF-8"?>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <list name="friends">
  <entry uri="sip:bill@example.com">
   <display-name>Bill Doe</display-name>
  </entry>
  <entry-ref ref="resource-lists/users/sip:bill@example.com/index/~~/resource-lists/list%5b@name=%22list1%22%5d/entry%5b@uri=%22sip:petri@example.com%22%5d"/>
  <list name="close-friends">
   <display-name>Close Friends</display-name>
   <entry uri="sip:joe@example.com">
    <display-name>Joe Smith</display-name>
   </entry>
   <external anchor="http://xcap.example.org/resource-lists/users/sip:a@example.org/index/~~/resource-lists/list%5b@name=%22mkting%22%5d">
    <display-name>Marketing</display-name>
   </external>
  </list>
 </list>
</resource-lists>"""
    lists = parse_resource_lists(doc)
    friends = lists.lists[0]
    assert friends.name == "friends"
    assert [type(i) for i in friends.items] == [Entry, EntryRef, ResourceList]
    close = friends.items[2]
    assert close.display_name == "Close Friends"
    assert isinstance(close.items[1], External) and close.items[1].display_name == "Marketing"
    assert [e.uri for e in lists.all_entries()] == ["sip:bill@example.com", "sip:joe@example.com"]
    assert lists.recipients(CopyControl.TO) == ["sip:bill@example.com", "sip:joe@example.com"]
    xml = lists.to_xml()
    assert b"xmlns:cp" not in xml
    assert parse_resource_lists(xml) == lists


def test_build_recipient_list():
    lists = build_recipient_list([("sip:a@x", CopyControl.TO), ("sip:b@x", CopyControl.CC), "sip:c@x"])
    xml = lists.to_xml()
    assert b'xmlns:cp="urn:ietf:params:xml:ns:copycontrol"' in xml
    assert b'<entry uri="sip:a@x" cp:copyControl="to" />' in xml
    back = parse_resource_lists(xml)
    assert back.recipients(CopyControl.TO) == ["sip:a@x", "sip:c@x"]
    assert back.recipients(CopyControl.CC) == ["sip:b@x"]


def test_anonymize_round_trip():
    lists = ResourceLists([ResourceList(items=[Entry("sip:a@x", "A & B", CopyControl.BCC, False)])])
    assert parse_resource_lists(lists.to_xml()) == lists


@pytest.mark.parametrize(
    "inner, reason",
    [
        (b"<list><entry/></list>", "mandatory 'uri'"),
        (b'<list><entry uri=" "/></list>', "empty uri"),
        (b'<list><entry uri="sip:a@x" cp:copyControl="fwd"/></list>', "unknown copyControl"),
        (b'<list><entry uri="sip:a@x" cp:anonymize="maybe"/></list>', "not a boolean"),
        (b"<list><entry-ref/></list>", "'ref'"),
        (b"<list><external/></list>", "'anchor'"),
    ],
)
def test_bad_documents(inner, reason):
    doc = (b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists" '
           b'xmlns:cp="urn:ietf:params:xml:ns:copycontrol">' + inner + b"</resource-lists>")
    with pytest.raises(ContentError, match=reason):
        parse_resource_lists(doc)


def test_wrong_root():
    with pytest.raises(XmlError, match="root element"):
        parse_resource_lists(b"<resource-lists/>")


def test_build_refuses_text_xml_cannot_carry():
    with pytest.raises(ContentError, match="XML cannot carry"):
        build_recipient_list(["sip:a\x00@x"]).to_xml()
