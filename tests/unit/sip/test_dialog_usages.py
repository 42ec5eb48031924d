"""One dialog table with usages (RFC 5057), Replaces (RFC 3891) and Join
(RFC 3911) lookups and header views, and dialog-info (RFC 4235) from the table."""

from __future__ import annotations

import pytest

from imsbox.content.dialog_info import DialogState as InfoState
from imsbox.content.dialog_info import Direction, parse_dialog_info
from imsbox.sip import Request, Response, parse
from imsbox.sip.headers import Event, HeaderError, Join, Replaces, refer_to_target
from imsbox.sip.ua.dialog import (
    Dialog,
    DialogState,
    DialogTable,
    InviteMatch,
    UsageKind,
)
from imsbox.sip.ua.dialog_event import DIALOG_PACKAGE, DialogEventSource
from imsbox.sip.ua.events import NotifierState, NotifierSubscription
from imsbox.sip.ua.invite import InviteSession
from imsbox.sip.ua.refer import refer_to_value

CALL_ID = "a84b4c76e66710@pc33.atlanta.example.com"
INVITE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "From: \"Alice A\" <sip:alice@atlanta.example.com>;tag=alice-tag\r\n"
    f"Call-ID: {CALL_ID}\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    "Content-Length: 0\r\n\r\n"
)


class Usage:
    def __init__(self, kind: UsageKind) -> None:
        self.usage_kind = kind


def invite() -> Request:
    msg = parse(INVITE.encode())
    assert isinstance(msg, Request)
    return msg


def uac_dialog(status: int) -> Dialog:
    """Alice's side: our tag alice-tag, Bob's bob-tag."""
    request = invite()
    response = Response.for_request(request, status, to_tag="bob-tag")
    response.add_header("Contact", "<sip:bob@192.0.2.4>")
    return Dialog.from_uac(request, response)


def uas_dialog(state: DialogState) -> Dialog:
    """Bob's side: our tag bob-tag, Alice's alice-tag."""
    return Dialog.from_uas(invite(), local_tag="bob-tag", state=state)


# -- the table and its usages --------------------------------------------------------

def test_a_dialog_leaves_the_table_with_its_last_usage() -> None:
    table = DialogTable()
    dialog = uas_dialog(DialogState.CONFIRMED)
    session, refer = Usage(UsageKind.INVITE), Usage(UsageKind.REFER)
    assert table.add_usage(dialog, session) is dialog
    # a second Dialog object with the same id joins the one already held
    twin = uas_dialog(DialogState.CONFIRMED)
    assert table.add_usage(twin, refer) is dialog
    table.add_usage(dialog, refer)  # once only
    assert dialog.usages == [session, refer] and dialog.invite_usage is session
    assert table.remove_usage(dialog, session) is False
    assert table.find(CALL_ID, "bob-tag", "alice-tag") is dialog  # REFER keeps it
    assert dialog.invite_usage is None
    assert table.remove_usage(dialog.id, refer) is True
    assert len(table) == 0 and table.find(CALL_ID, "bob-tag", "alice-tag") is None
    assert table.remove_usage(dialog, refer) is False


def test_find_early_and_confirmed_dialogs_but_not_terminated_ones() -> None:
    table = DialogTable()
    early, confirmed = uac_dialog(180), uas_dialog(DialogState.CONFIRMED)
    table.add_usage(early, Usage(UsageKind.INVITE))
    table.add_usage(confirmed, Usage(UsageKind.INVITE))
    assert table.find(CALL_ID, "alice-tag", "bob-tag") is early
    assert table.find(CALL_ID, "bob-tag", "alice-tag") is confirmed
    assert table.find(CALL_ID, "alice-tag", "nope") is None
    assert table.find("other-call", "alice-tag", "bob-tag") is None
    confirmed.terminate()
    assert table.find(CALL_ID, "bob-tag", "alice-tag") is None


# -- Replaces and Join lookups -----------------------------------------------------------

def test_replaces_and_join_find_a_confirmed_dialog_and_its_invite_session() -> None:
    table = DialogTable()
    dialog = uas_dialog(DialogState.CONFIRMED)
    session = Usage(UsageKind.INVITE)
    table.add_usage(dialog, Usage(UsageKind.SUBSCRIPTION))
    table.add_usage(dialog, session)
    # to-tag is the recipient's own tag, from-tag the peer's (RFC 3891 3)
    expected = InviteMatch(dialog, session)
    assert table.find_invite(Replaces(CALL_ID, "bob-tag", "alice-tag")) == expected
    assert table.find_invite(Join(CALL_ID, "bob-tag", "alice-tag")) == expected


def test_wrong_tags_or_call_id_find_nothing() -> None:
    table = DialogTable()
    table.add_usage(uas_dialog(DialogState.CONFIRMED), Usage(UsageKind.INVITE))
    for header in (Replaces(CALL_ID, "alice-tag", "bob-tag"),    # tags swapped
                   Replaces(CALL_ID, "bob-tag", "other"), Join(CALL_ID, "x", "alice-tag"),
                   Join("other@host", "bob-tag", "alice-tag")):
        assert table.find_invite(header) is None


def test_early_dialogs_match_only_when_we_initiated_them() -> None:
    table = DialogTable()
    ours = uac_dialog(183)
    session = Usage(UsageKind.INVITE)
    table.add_usage(ours, session)
    found = table.find_invite(Replaces(CALL_ID, "alice-tag", "bob-tag", early_only=True))
    assert found == InviteMatch(ours, session)
    assert table.find_invite(Join(CALL_ID, "alice-tag", "bob-tag")) == InviteMatch(ours, session)
    theirs = DialogTable()  # RFC 3891 3 / RFC 3911 4: an early dialog we answer: 481
    theirs.add_usage(uas_dialog(DialogState.EARLY), Usage(UsageKind.INVITE))
    assert theirs.find_invite(Replaces(CALL_ID, "bob-tag", "alice-tag")) is None
    assert theirs.find_invite(Join(CALL_ID, "bob-tag", "alice-tag")) is None


def test_early_only_never_matches_a_confirmed_dialog() -> None:
    table = DialogTable()
    dialog = uac_dialog(180)
    table.add_usage(dialog, Usage(UsageKind.INVITE))
    replaces = Replaces(CALL_ID, "alice-tag", "bob-tag", early_only=True)
    assert table.find_invite(replaces) is not None
    dialog.confirm()
    assert table.find_invite(replaces) is None
    replaces.early_only = False
    assert table.find_invite(replaces) is not None


def test_a_dialog_without_an_invite_usage_names_no_session() -> None:
    table = DialogTable()
    table.add_usage(uas_dialog(DialogState.CONFIRMED), Usage(UsageKind.SUBSCRIPTION))
    assert table.find_invite(Replaces(CALL_ID, "bob-tag", "alice-tag")) is None


def test_an_invite_session_is_an_invite_usage() -> None:
    session = InviteSession.incoming(invite(), 0.0)
    assert session.usage_kind is UsageKind.INVITE
    sub = NotifierSubscription(uas_dialog(DialogState.CONFIRMED), Event.parse("refer;id=9"),
                               DIALOG_PACKAGE, NotifierState.ACTIVE, 60.0, invite().uri)
    assert sub.usage_kind is UsageKind.REFER


# -- header views -----------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "98732@sip.example.com;to-tag=ff87ff;from-tag=r33th4x0r",
    "98732@sip.example.com;to-tag=ff87ff;from-tag=r33th4x0r;early-only",
])
def test_replaces_parse_build_round_trip(value: str) -> None:
    replaces = Replaces.parse(value)
    assert str(replaces) == value and Replaces.parse(str(replaces)) == replaces
    assert replaces.call_id == "98732@sip.example.com" and replaces.to_tag == "ff87ff"
    assert replaces.early_only is value.endswith("early-only")


def test_join_parse_build_round_trip() -> None:
    join = Join.parse("  7743@sip.example.com ;from-tag=6472;to-tag=314159 ")
    assert join == Join("7743@sip.example.com", "314159", "6472")
    assert str(join) == "7743@sip.example.com;to-tag=314159;from-tag=6472"
    assert Join.parse(str(join)) == join


@pytest.mark.parametrize("value", ["abc;to-tag=1", "abc;from-tag=2", ";to-tag=1;from-tag=2",
                                   "abc;to-tag=;from-tag=2"])
def test_replaces_and_join_need_call_id_and_both_tags(value: str) -> None:
    with pytest.raises(HeaderError):
        Replaces.parse(value)
    with pytest.raises(HeaderError):
        Join.parse(value)


def test_replaces_escaped_in_a_refer_to_uri_round_trips() -> None:
    replaces = Replaces("12345@192.168.118.3", "12345", "5FFE-3994", early_only=True)
    value = refer_to_value("sip:carol@c.test;transport=tcp", replaces)
    assert value == ("<sip:carol@c.test;transport=tcp?Replaces=12345%40192.168.118.3"
                     "%3Bto-tag%3D12345%3Bfrom-tag%3D5FFE-3994%3Bearly-only>")
    addr, embedded = refer_to_target(value)
    assert Replaces.parse(embedded["Replaces"]) == replaces
    assert str(addr.uri.copy(headers=[])) == "sip:carol@c.test;transport=tcp"  # type: ignore[attr-defined]


# -- the dialog event package from the table -------------------------------------------------

def subscription(aor: str) -> NotifierSubscription:
    """Bob's notifier side of a SUBSCRIBE whose To is ``aor``."""
    subscribe = parse((
        f"SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKs1\r\n"
        f"To: <{aor}>\r\nFrom: <sip:carol@example.com>;tag=carol-tag\r\n"
        "Call-ID: sub-1\r\nCSeq: 1 SUBSCRIBE\r\nEvent: dialog\r\n"
        "Contact: <sip:carol@192.0.2.7>\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(subscribe, Request)
    dialog = Dialog.from_uas(subscribe, state=DialogState.CONFIRMED)
    return NotifierSubscription(dialog, Event.parse("dialog"), DIALOG_PACKAGE,
                                NotifierState.ACTIVE, 600.0, subscribe.uri, subscribe)


def test_dialog_info_lists_the_aor_invite_dialogs_with_ids_tags_direction_state() -> None:
    table = DialogTable()
    bob_answers = uas_dialog(DialogState.EARLY)     # local identity sip:bob@biloxi...
    table.add_usage(bob_answers, Usage(UsageKind.INVITE))
    alice_calls = uac_dialog(200)                   # local identity sip:alice@atlanta...
    table.add_usage(alice_calls, Usage(UsageKind.INVITE))
    only_sub = Dialog.from_uas(invite(), local_tag="sub-tag", state=DialogState.CONFIRMED)
    table.add_usage(only_sub, Usage(UsageKind.SUBSCRIPTION))   # not INVITE: not shown
    source = DialogEventSource(table)
    sub = subscription("sip:bob@biloxi.example.com")

    info = parse_dialog_info(DIALOG_PACKAGE.render(source(sub)))
    assert info.entity == "sip:bob@biloxi.example.com" and info.version == 0
    [entry] = info.dialogs
    assert (entry.call_id, entry.local_tag, entry.remote_tag) == (CALL_ID, "bob-tag",
                                                                  "alice-tag")
    assert entry.direction is Direction.RECIPIENT and entry.state is InfoState.EARLY
    assert entry.remote is not None and entry.remote.identity is not None
    assert entry.remote.identity.uri == "sip:alice@atlanta.example.com"

    bob_answers.confirm()
    again = parse_dialog_info(DIALOG_PACKAGE.render(source(sub)))
    assert again.version == 1 and again.dialogs[0].state is InfoState.CONFIRMED

    alice = parse_dialog_info(DIALOG_PACKAGE.render(
        source(subscription("sip:alice@atlanta.example.com"))))
    [entry] = alice.dialogs
    assert entry.direction is Direction.INITIATOR and entry.local_tag == "alice-tag"
    assert entry.state is InfoState.CONFIRMED
    assert parse_dialog_info(DIALOG_PACKAGE.render(
        source(subscription("sip:nobody@example.com")))).dialogs == []
