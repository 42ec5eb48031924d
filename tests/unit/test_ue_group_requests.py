"""Group chat requests as the client builds them (ue/group.py), without a network:
the ad-hoc create INVITE body (multipart/mixed: SDP + recipient-list resource list,
RFC 5366), its headers, the focus test, the removal Refer-To and how a
conference-info document becomes the participant list."""

from __future__ import annotations

import pytest

from imsbox.content import (
    RESOURCE_LISTS,
    ConferenceInfo,
    EndpointStatus,
    parse_multipart,
    parse_resource_lists,
)
from imsbox.content.conference_info import (
    DisconnectionMethod,
    ElementState,
    Endpoint,
    User,
    Users,
    apply_notification,
)
from imsbox.sip.message import Request
from imsbox.sip.ua.dialog import build_request
from imsbox.sip.ua.refer import refer_to_value
from imsbox.ue.core import overridden
from imsbox.ue.events import GroupMessage, SendError
from imsbox.ue.group import (
    _departure,
    create_headers,
    factory_uri,
    focus_of,
    participants_of,
    recipient_list_body,
    removal_uri,
)

SDP = b"v=0\r\no=- 1 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" \
      b"m=message 7777 TCP/MSRP *\r\na=path:msrp://127.0.0.1:7777/abc;tcp\r\n"


def test_create_body_is_multipart_sdp_then_recipient_list() -> None:
    body, content_type = recipient_list_body(SDP, ["sip:bob@ims.test", "sip:carol@ims.test"])
    assert content_type.startswith("multipart/mixed;boundary=")
    multipart = parse_multipart(body, content_type)
    sdp, listing = multipart.parts
    assert sdp.content_type == "application/sdp" and sdp.body == SDP
    assert listing.content_type == RESOURCE_LISTS
    assert listing.get("Content-Disposition") == "recipient-list"
    lists = parse_resource_lists(listing.body)
    assert [e.uri for e in lists.all_entries()] == ["sip:bob@ims.test", "sip:carol@ims.test"]


def test_create_body_needs_a_member() -> None:
    with pytest.raises(SendError, match="at least one member"):
        recipient_list_body(SDP, [])


def test_create_headers_require_recipient_list_invite_and_subject() -> None:
    assert create_headers("Lunch") == [("Require", "recipient-list-invite"),
                                       ("Subject", "Lunch")]
    assert create_headers(None) == [("Require", "recipient-list-invite")]
    assert factory_uri("ims.test") == "sip:conf-factory@ims.test"


def test_rejoin_headers_replace_the_default_cpm_ones() -> None:
    defaults = [("Conversation-ID", "new"), ("Contribution-ID", "fresh"), ("User-Agent", "x")]
    merged = overridden(defaults, [("contribution-id", "kept"), ("Require", "y")])
    assert merged == [("Conversation-ID", "new"), ("User-Agent", "x"),
                      ("contribution-id", "kept"), ("Require", "y")]


def _invite(contact: str) -> Request:
    request = build_request("INVITE", "sip:alice@127.0.0.1:5070", "<sip:conf-7@ims.test>",
                            "<sip:alice@ims.test>")
    request.set_header("Contact", contact)
    return request


def test_focus_is_told_by_isfocus_on_the_contact() -> None:
    assert focus_of(_invite("<sip:conf-7@ims.test;transport=udp>;isfocus")) == \
        "sip:conf-7@ims.test"
    assert focus_of(_invite("<sip:bob@127.0.0.1:5070>")) is None


def test_removal_refer_to_carries_method_bye() -> None:
    assert refer_to_value(removal_uri("sip:bob@ims.test")) == "<sip:bob@ims.test;method=BYE>"


def _user(entity: str, status: EndpointStatus | None, name: str | None = None,
          state: ElementState = ElementState.FULL,
          how: DisconnectionMethod | None = None) -> User:
    endpoint = Endpoint(entity=entity, status=status, disconnection_method=how)
    return User(entity=entity, display_text=name, state=state, endpoints=[endpoint])


def test_participants_are_the_connected_users() -> None:
    info = ConferenceInfo("sip:conf-7@ims.test", version=1, users=Users([
        _user("sip:alice@ims.test", EndpointStatus.CONNECTED, "Alice"),
        _user("sip:bob@ims.test", EndpointStatus.DIALING_OUT),
        _user("sip:carol@ims.test", EndpointStatus.DISCONNECTED),
        _user("sip:dave@ims.test", None),
    ]))
    assert participants_of(info) == {"sip:alice@ims.test": "Alice", "sip:dave@ims.test": None}


def test_partial_notification_moves_participants_and_says_why() -> None:
    full = ConferenceInfo("sip:conf-7@ims.test", version=1, users=Users([
        _user("sip:alice@ims.test", EndpointStatus.CONNECTED),
        _user("sip:bob@ims.test", EndpointStatus.CONNECTED)]))
    partial = ConferenceInfo("sip:conf-7@ims.test", state=ElementState.PARTIAL, version=2,
                             users=Users([
                                 _user("sip:bob@ims.test", EndpointStatus.DISCONNECTED,
                                       state=ElementState.PARTIAL,
                                       how=DisconnectionMethod.BOOTED),
                                 _user("sip:carol@ims.test", EndpointStatus.CONNECTED)],
                                 state=ElementState.PARTIAL))
    first = apply_notification(None, full).state
    merged = apply_notification(first, partial).state
    assert merged is not None
    assert set(participants_of(merged)) == {"sip:alice@ims.test", "sip:carol@ims.test"}
    assert _departure(partial, "sip:bob@ims.test") == "booted"
    assert _departure(partial, "sip:nobody@ims.test") == "departed"


def test_group_message_json_names_sender_and_conference() -> None:
    event = GroupMessage("sip:bob@ims.test", "sip:alice@ims.test", "sip:conf-7@ims.test",
                         "hi", "m1", "call-1")
    assert event.to_json() == {"event": "group_message", "from": "sip:bob@ims.test",
                               "to": "sip:alice@ims.test", "conference": "sip:conf-7@ims.test",
                               "text": "hi", "message_id": "m1", "group_id": "call-1"}
