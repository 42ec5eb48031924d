"""The repositories the conference and telephony ASs build on: conferences with
participants and idle expiry, group chat logs with delivery positions, and
per-subscriber service data (on every back end: see conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imsbox.store import (
    AlreadyExists, Conference, ConferenceKind, Credential, GroupMessage, Participant,
    ParticipantState, PublicIdentity, SqliteStore, Store, Subscriber,
)

CONF = "sip:conf-7f3a@ims.test"
ALICE, BOB, CAROL = "sip:alice@ims.test", "sip:bob@ims.test", "sip:carol@ims.test"


def conference(**kw: object) -> Conference:
    fields: dict[str, object] = {
        "uri": CONF, "creator": ALICE, "subject": "lunch", "admins": (ALICE,),
        "participants": (Participant(ALICE, ParticipantState.CONNECTED, "Alice", 10.0),
                         Participant(BOB)),
        "created_at": 5.0, "expires_at": 1000.0}
    fields.update(kw)
    return Conference(**fields)  # type: ignore[arg-type]


# -- conferences ------------------------------------------------------------------------

async def test_conference_create_get_and_list(store: Store) -> None:
    await store.conferences.create(conference())
    got = await store.conferences.get(CONF)
    assert got == conference()
    assert got is not None and got.participant(BOB) == Participant(BOB)
    assert got.kind is ConferenceKind.AD_HOC
    with pytest.raises(AlreadyExists, match=CONF):
        await store.conferences.create(conference(subject="other"))
    assert (await store.conferences.get(CONF)).subject == "lunch"  # type: ignore[union-attr]
    team = Conference("sip:team@ims.test", ALICE, ConferenceKind.PRE_DEFINED, expires_at=None)
    await store.conferences.put(team)
    assert [c.uri for c in await store.conferences.conferences()] == [CONF, team.uri]
    assert [c.uri for c in await store.conferences.conferences(ConferenceKind.PRE_DEFINED)] \
        == [team.uri]
    assert await store.conferences.get("sip:none@ims.test") is None


async def test_conference_put_replaces_admins_and_participants(store: Store) -> None:
    await store.conferences.create(conference())
    await store.conferences.put(conference(admins=(BOB, CAROL), participants=(Participant(CAROL),)))
    got = await store.conferences.get(CONF)
    assert got is not None
    assert got.admins == (BOB, CAROL) and [p.uri for p in got.participants] == [CAROL]


async def test_participants_and_subject_change_in_place(store: Store) -> None:
    await store.conferences.create(conference())
    assert await store.conferences.set_participant(
        CONF, Participant(BOB, ParticipantState.CONNECTED, "Bob", 20.0))
    assert await store.conferences.set_participant(CONF, Participant(CAROL,
                                                                     ParticipantState.ALERTING))
    got = await store.conferences.get(CONF)
    assert got is not None
    assert [p.uri for p in got.participants] == [ALICE, BOB, CAROL]  # order of joining kept
    assert got.participant(BOB) == Participant(BOB, ParticipantState.CONNECTED, "Bob", 20.0)
    assert await store.conferences.remove_participant(CONF, ALICE)
    assert not await store.conferences.remove_participant(CONF, ALICE)
    assert await store.conferences.set_subject(CONF, "dinner")
    got = await store.conferences.get(CONF)
    assert got is not None and got.subject == "dinner"
    assert [p.uri for p in got.participants] == [BOB, CAROL]
    assert not await store.conferences.set_participant("sip:none@ims.test", Participant(BOB))
    assert not await store.conferences.set_subject("sip:none@ims.test", "x")


async def test_conference_idle_expiry(store: Store) -> None:
    await store.conferences.create(conference(expires_at=100.0))
    await store.conferences.create(conference(uri="sip:conf-b@ims.test", expires_at=200.0))
    await store.conferences.create(conference(uri="sip:keep@ims.test", expires_at=None))
    assert await store.conferences.next_expiry() == 100.0
    assert await store.conferences.set_expiry(CONF, 300.0)  # activity moves it on
    assert await store.conferences.next_expiry() == 200.0
    expired = await store.conferences.expire(now=250.0)
    assert [c.uri for c in expired] == ["sip:conf-b@ims.test"]
    assert expired[0].participants  # returned whole, for the focus to clean up
    assert await store.conferences.get("sip:conf-b@ims.test") is None
    assert [c.uri for c in await store.conferences.expire(now=10_000.0)] == [CONF]
    assert [c.uri for c in await store.conferences.conferences()] == ["sip:keep@ims.test"]
    assert await store.conferences.next_expiry() is None
    assert await store.conferences.remove("sip:keep@ims.test")
    assert not await store.conferences.remove("sip:keep@ims.test")


async def test_conferences_survive_reopen(tmp_path: Path) -> None:
    async with SqliteStore.in_data_dir(tmp_path) as s:
        await s.conferences.create(conference())
    async with SqliteStore.in_data_dir(tmp_path) as s:
        assert await s.conferences.get(CONF) == conference()


# -- group chat messages ----------------------------------------------------------------

def message(key: str, sender: str = ALICE, body: bytes = b"hi") -> GroupMessage:
    return GroupMessage(CONF, sender, "message/cpim", body, key, 50.0, '{"imdn":1}')


async def test_group_log_in_order_without_duplicates(store: Store) -> None:
    first = await store.messages.append_group_message(message("m1"))
    second = await store.messages.append_group_message(message("m2", BOB, b"\x00\xff"))
    assert first is not None and second is not None and first < second
    assert await store.messages.append_group_message(message("m1")) is None  # seen twice
    assert await store.messages.append_group_message(message("")) is not None  # no key
    assert await store.messages.append_group_message(message("")) is not None
    other = GroupMessage("sip:other@ims.test", ALICE, "text/plain", b"x", "m1")
    assert await store.messages.append_group_message(other) is not None  # per conference
    log = await store.messages.group_messages(CONF)
    assert [m.message_key for m in log] == ["m1", "m2", "", ""]
    assert log[1] == message("m2", BOB, b"\x00\xff") and log[1].id == second
    assert [m.message_key for m in await store.messages.group_messages(CONF, after=first,
                                                                        limit=1)] == ["m2"]


async def test_delivery_positions_for_store_and_forward(store: Store) -> None:
    ids = [await store.messages.append_group_message(message(f"m{i}")) for i in range(4)]
    assert await store.messages.delivered(CONF, BOB) == 0
    assert [m.message_key for m in await store.messages.undelivered(CONF, BOB)] == \
        ["m0", "m1", "m2", "m3"]
    await store.messages.set_delivered(CONF, BOB, ids[1])  # type: ignore[arg-type]
    await store.messages.set_delivered(CONF, BOB, ids[0])  # type: ignore[arg-type]
    assert await store.messages.delivered(CONF, BOB) == ids[1]  # never moves back
    assert [m.message_key for m in await store.messages.undelivered(CONF, BOB, limit=1)] == \
        ["m2"]
    assert len(await store.messages.undelivered(CONF, CAROL)) == 4  # each member its own
    assert await store.messages.remove_group_log(CONF) == 4
    assert await store.messages.group_messages(CONF) == []
    assert await store.messages.delivered(CONF, BOB) == 0


# -- service data -----------------------------------------------------------------------

async def test_service_data_lists_by_key(store: Store) -> None:
    data = store.service_data
    assert await data.get(ALICE, "forward-busy") == ()
    await data.put(ALICE, "forward-busy", ["sip:voicemail@ims.test"])
    await data.put(ALICE, "find-me", ['{"target":"sip:b@x","after":10}', "sip:c@x"])
    await data.put(ALICE, "find-me", ["sip:d@x", '{"target":"sip:b@x"}'])  # replaced whole
    assert await data.get(ALICE, "find-me") == ("sip:d@x", '{"target":"sip:b@x"}')
    assert await data.settings(ALICE) == {
        "find-me": ("sip:d@x", '{"target":"sip:b@x"}'),
        "forward-busy": ("sip:voicemail@ims.test",)}
    assert await data.settings(BOB) == {}
    assert await data.remove(ALICE, "forward-busy")
    assert not await data.remove(ALICE, "forward-busy")
    await data.put(ALICE, "find-me", [])
    assert await data.settings(ALICE) == {}


async def test_pickup_group_members_are_found_by_value(store: Store) -> None:
    data = store.service_data
    await data.put(ALICE, "pickup-group", ["sales"])
    await data.put(BOB, "pickup-group", ["sales", "support"])
    await data.put(CAROL, "pickup-group", ["support"])
    await data.put(CAROL, "screen-incoming", ["sales"])  # other key, same value
    assert await data.owners("pickup-group", "sales") == [ALICE, BOB]
    assert await data.owners("pickup-group", "nobody") == []


async def test_removing_a_subscriber_drops_its_service_data(store: Store) -> None:
    sub = Subscriber("alice@ims.test", (Credential("alice", "ims.test", "MD5", "a" * 32),))
    await store.subscribers.add_subscriber(
        sub, [PublicIdentity(ALICE, sub.private_id, ALICE, default=True)])
    await store.service_data.put(ALICE, "forward-busy", ["sip:vm@ims.test"])
    await store.service_data.put(BOB, "forward-busy", ["sip:vm@ims.test"])
    await store.subscribers.remove_subscriber(sub.private_id)
    assert await store.service_data.settings(ALICE) == {}
    assert await store.service_data.get(BOB, "forward-busy") == ("sip:vm@ims.test",)
