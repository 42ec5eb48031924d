from __future__ import annotations

import pytest

from imsbox.content import ContentError, EndpointStatus, XmlError, parse_conference_info
from imsbox.content.conference_info import (
    ConferenceInfo,
    ConferenceState,
    ElementState,
    Endpoint,
    Media,
    MediaStatus,
    NotificationOutcome,
    User,
    Users,
    apply_notification,
    merge_partial,
)

ENTITY = "sips:conf233@example.com"


def test_rfc_basic_example(fixture_bytes):
    conf = parse_conference_info(fixture_bytes("conference_info_full.xml"))
    assert (conf.entity, conf.state, conf.version) == (ENTITY, ElementState.FULL, 1)
    assert conf.description.subject == "Agenda: This month's goals"
    assert conf.description.service_uris.entries[0].purpose == "web-page"
    assert conf.conference_state.user_count == 33
    bob = conf.user("sip:bob@example.com")
    assert bob.display_text == "Bob Hoskins"
    ep = bob.endpoints[0]
    assert ep.status is EndpointStatus.DISCONNECTED
    assert ep.disconnection_info.reason == "bad voice quality"
    assert ep.media[0] == Media("1", "main audio", "audio", "34567", "432424", MediaStatus.SENDRECV)
    alice = conf.user("sip:alice@example.com")
    assert alice.endpoints[0].entity == "sip:4kfk4j392jsu@example.com;grid=433kj4j3u"
    assert alice.endpoints[0].joining_info.by == "sip:mike@example.com"
    assert parse_conference_info(conf.to_xml()) == conf


def test_rfc_rich_partial_example(fixture_bytes):
    conf = parse_conference_info(fixture_bytes("conference_info_partial.xml"))
    assert conf.state is ElementState.PARTIAL and conf.version == 5
    desc = conf.description
    assert desc.keywords == ["sales", "meeting", "weekly"]
    assert next(e.uri for e in desc.conf_uris.entries) == "tel:+18005671234"
    assert desc.maximum_user_count == 100
    assert [(m.label, m.type, m.status) for m in desc.available_media] == [
        ("34567", "audio", MediaStatus.SENDRECV), ("34569", "video", MediaStatus.INACTIVE)]
    assert conf.host_info.web_page == "http://sharepoint/salesgroup/hosts/"
    assert conf.conference_state == ConferenceState(32, True, False)
    bob = conf.user("sip:bob@example.com")
    assert bob.roles == ["participant"] and bob.languages == ["en"]
    assert bob.associated_aors.entries[0].uri == "mailto:bob@example.com"
    ep = bob.endpoints[0]
    assert ep.status is EndpointStatus.DISCONNECTING
    assert ep.referred.reason == "expert required"
    assert ep.call_info.call_id == "hsjh8980vhsb78" and ep.call_info.to_tag == "8954jgjg8432"
    assert conf.sidebars_by_ref.state is ElementState.PARTIAL
    sidebar = conf.sidebars_by_val.entries[0]
    assert sidebar.entity == "sips:conf233@example.com;grid=77"
    assert [u.entity for u in sidebar.users.users] == [
        "sip:bob@example.com", "sip:mark@example.com", "sip:dan@example.com"]
    xml = conf.to_xml()
    assert b'state="partial"' in xml
    assert parse_conference_info(xml) == conf


def test_every_endpoint_status_round_trips():
    users = [User(f"sip:u{i}@x", endpoints=[Endpoint(f"sip:u{i}@pc", status=s)])
             for i, s in enumerate(EndpointStatus)]
    conf = ConferenceInfo(ENTITY, version=1, users=Users(users))
    back = parse_conference_info(conf.to_xml())
    assert [u.endpoints[0].status for u in back.users.users] == list(EndpointStatus)


def _full() -> ConferenceInfo:
    return ConferenceInfo(
        ENTITY, version=1, conference_state=ConferenceState(user_count=2),
        users=Users([
            User("sip:alice@x", display_text="Alice", endpoints=[
                Endpoint("sip:alice@pc", status=EndpointStatus.CONNECTED,
                         media=[Media("1", type="audio", status=MediaStatus.SENDRECV)])]),
            User("sip:bob@x", display_text="Bob", endpoints=[
                Endpoint("sip:bob@pc", status=EndpointStatus.CONNECTED)]),
        ]))


def _partial(version: int, *users: User, state: ConferenceState | None = None) -> ConferenceInfo:
    return ConferenceInfo(ENTITY, ElementState.PARTIAL, version, conference_state=state,
                          users=Users(list(users), ElementState.PARTIAL))


def test_partial_update_puts_endpoint_on_hold_and_keeps_the_rest():
    update = _partial(2, User("sip:alice@x", ElementState.PARTIAL, endpoints=[
        Endpoint("sip:alice@pc", ElementState.PARTIAL, status=EndpointStatus.ON_HOLD)]))
    # Round-trip the update through XML as a NOTIFY would carry it.
    update = parse_conference_info(update.to_xml())
    result = apply_notification(_full(), update)
    assert result.outcome is NotificationOutcome.APPLIED
    conf = result.state
    assert conf.version == 2 and conf.state is ElementState.FULL
    alice = conf.user("sip:alice@x")
    assert alice.display_text == "Alice"
    assert alice.endpoints[0].status is EndpointStatus.ON_HOLD
    assert alice.endpoints[0].media[0].type == "audio"  # untouched
    assert conf.user("sip:bob@x").display_text == "Bob"
    assert conf.conference_state.user_count == 2


def test_partial_adds_deletes_and_replaces_rows():
    update = _partial(
        2,
        User("sip:bob@x", ElementState.DELETED),
        User("sip:carol@x", ElementState.FULL, display_text="Carol",
             endpoints=[Endpoint("sip:carol@pc", status=EndpointStatus.DIALING_OUT)]),
        User("sip:alice@x", ElementState.FULL, display_text="Alice B."),
        state=ConferenceState(user_count=2),
    )
    conf = merge_partial(_full(), update)
    assert [u.entity for u in conf.users.users] == ["sip:alice@x", "sip:carol@x"]
    assert conf.user("sip:alice@x").endpoints == []  # full state replaced the row whole
    assert conf.user("sip:carol@x").endpoints[0].status is EndpointStatus.DIALING_OUT


def test_partial_endpoint_media_row_replaced_by_id():
    update = _partial(2, User("sip:alice@x", ElementState.PARTIAL, endpoints=[
        Endpoint("sip:alice@pc", ElementState.PARTIAL,
                 media=[Media("1", type="audio", status=MediaStatus.RECVONLY), Media("2", type="video")])]))
    ep = merge_partial(_full(), update).user("sip:alice@x").endpoints[0]
    assert [(m.id, m.status) for m in ep.media] == [("1", MediaStatus.RECVONLY), ("2", None)]
    assert ep.status is EndpointStatus.CONNECTED


def test_merge_leaves_inputs_untouched():
    full = _full()
    update = _partial(2, User("sip:bob@x", ElementState.DELETED))
    merge_partial(full, update)
    assert full == _full()


def test_version_rules():
    full = _full()
    assert apply_notification(full, _partial(1)).outcome is NotificationOutcome.DISCARDED
    gap = apply_notification(full, _partial(3))
    assert gap.outcome is NotificationOutcome.NEED_FULL_STATE and gap.state is full
    assert apply_notification(None, _partial(2)).outcome is NotificationOutcome.NEED_FULL_STATE
    replaced = apply_notification(full, ConferenceInfo(ENTITY, version=7))
    assert replaced.outcome is NotificationOutcome.APPLIED and replaced.state.users is None
    gone = apply_notification(full, ConferenceInfo(ENTITY, ElementState.DELETED, 8))
    assert gone.outcome is NotificationOutcome.TERMINATED and gone.state is None
    with pytest.raises(ContentError, match="version"):
        apply_notification(full, ConferenceInfo(ENTITY))


def test_users_container_deleted_or_full():
    full = _full()
    deleted = ConferenceInfo(ENTITY, ElementState.PARTIAL, 2, users=Users([], ElementState.DELETED))
    assert merge_partial(full, deleted).users is None
    fresh = ConferenceInfo(ENTITY, ElementState.PARTIAL, 2, users=Users([User("sip:z@x")]))
    assert [u.entity for u in merge_partial(full, fresh).users.users] == ["sip:z@x"]


@pytest.mark.parametrize(
    "doc, reason",
    [
        (b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info"/>', "'entity'"),
        (b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="s:x" state="odd"/>',
         "unknown state"),
        (b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="s:x" version="-1"/>',
         "version"),
        (b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="s:x"><users><user>'
         b"<endpoint><status>napping</status></endpoint></user></users></conference-info>",
         "unknown endpoint status"),
        (b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="s:x"><users><user>'
         b"<endpoint><media/></endpoint></user></users></conference-info>", "'id'"),
        (b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="s:x">'
         b"<conference-state><active>maybe</active></conference-state></conference-info>", "boolean"),
        (b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="s:x">'
         b"<conference-description><conf-uris><entry/></conf-uris></conference-description>"
         b"</conference-info>", "lacks <uri>"),
        (b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="s:x"><users><user>'
         b"<endpoint><call-info><sip><call-id>a</call-id></sip></call-info></endpoint></user></users>"
         b"</conference-info>", "from-tag"),
    ],
)
def test_bad_documents(doc, reason):
    with pytest.raises(ContentError, match=reason):
        parse_conference_info(doc)


def test_wrong_root():
    with pytest.raises(XmlError, match="root element"):
        parse_conference_info(b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"/>')
