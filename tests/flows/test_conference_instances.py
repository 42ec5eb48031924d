"""Two conference AS instances ([conference_as] pool) on one store: a conference
is hosted by the instance its URI hashes to, under an owner lease; when that one
stops, the I-CSCF sends the next join to the other, which takes the conference
over from the store (subject, roster) and the participants rejoin there."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

import pytest

from imsbox.apps.conference import ConferenceAs
from imsbox.config import Config, load_config
from imsbox.ims.provisioning import add_group, add_user
from imsbox.store import (
    Conference, ConferenceKind, Participant, ParticipantState, Store, open_store,
)
from imsbox.ue.events import SendError
from imsbox.testing import FAST_TIMERS, LoopbackPorts, write_loopback_config

from helpers import DOMAIN, client, network_with
from test_conference_as import message

pytestmark = pytest.mark.timeout(60)
GROUP = f"sip:group-team@{DOMAIN}"


def two_instances(tmp_path: Path) -> tuple[Config, Config]:
    """The network's config (instance A in the core) and instance B's; the pool is
    ordered so that GROUP hashes to B, the one the test stops."""
    path, config = write_loopback_config(tmp_path)
    a = config.conference_as.port
    b = LoopbackPorts()()
    pool = [f"127.0.0.1:{a}", f"127.0.0.1:{b}"]
    if zlib.crc32(GROUP.encode()) % 2 == 0:
        pool.reverse()
    text = path.read_text().replace(f"[conference_as]\nhost = \"127.0.0.1\"\nport = {a}\n",
                                    f"[conference_as]\nhost = \"127.0.0.1\"\nport = {a}\n"
                                    f"pool = {pool!r}\n".replace("'", '"'))
    assert "pool" in text
    path.write_text(text)
    b_path = tmp_path / "b.toml"
    b_path.write_text(text.replace(f"port = {a}\npool", f"port = {b}\npool"))
    return load_config(path), load_config(b_path)


def test_a_stopped_owners_conference_is_taken_over_by_the_other_instance(
        tmp_path: Path) -> None:
    config, b_config = two_instances(tmp_path)

    async def provision() -> None:
        async with open_store(config.store_location) as store:
            for name in ("alice", "bob", "carol"):
                await add_user(store, DOMAIN, name, f"{name}-secret")
            await add_group(store, config, GROUP, ["alice", "bob", "carol"])
    asyncio.run(provision())

    async def scenario() -> None:
        alice, bob, carol = (client(config, n) for n in ("alice", "bob", "carol"))
        async with network_with(config, alice, bob, carol) as net:
            a = net.nodes["conference"]
            assert isinstance(a, ConferenceAs) and net.store is not None
            b = ConferenceAs(b_config, net.store, timers=FAST_TIMERS)
            await b.start()
            try:
                chats = [await ue.open_chat(GROUP) for ue in (alice, bob)]
                assert list(b.foci) == [GROUP] and not a.foci     # the hash owner hosts it
                assert await net.store.conferences.owner(GROUP) == (b.holder, b.fences[GROUP])
                await chats[0].send("before")
                assert (await message(bob, chats[1].id)).text == "before"
            finally:
                await b.close()                     # stops: its lease is given up
            assert await net.store.conferences.owner(GROUP) is None
            # the next join for the conference URI reaches A, which takes it over
            carol_chat = await carol.open_chat(GROUP)
            assert list(a.foci) == [GROUP] and sorted(a.foci[GROUP].legs) == [
                f"sip:carol@{DOMAIN}"]
            owner = await net.store.conferences.owner(GROUP)
            assert owner is not None and owner[0] == a.holder
            stored = await net.store.conferences.get(GROUP)
            assert stored is not None
            states = {p.uri: p.state.value for p in stored.participants}
            assert states == {f"sip:alice@{DOMAIN}": "disconnected",   # their MSRP was on B
                              f"sip:bob@{DOMAIN}": "disconnected",
                              f"sip:carol@{DOMAIN}": "connected"}
            # alice rejoins on A and the chat works again
            again = await alice.open_chat(GROUP)
            await carol_chat.send("after")
            assert (await message(alice, again.id)).text == "after"
    asyncio.run(asyncio.wait_for(scenario(), 50))


def test_a_live_lease_of_another_instance_is_respected(tmp_path: Path) -> None:
    """An instance that gets a request for a conference another live instance holds
    answers 480 and does not host it twice."""
    config, b_config = two_instances(tmp_path)

    async def scenario() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "alice", "alice-secret")
            await add_group(store, config, GROUP, ["alice"])
            assert await store.conferences.claim_owner(GROUP, "elsewhere", lease=30.0)
            alice = client(config, "alice")
            async with network_with(config, alice) as net:
                with pytest.raises(SendError, match="480"):
                    await alice.open_chat(GROUP)
                assert not net.nodes["conference"].foci  # type: ignore[attr-defined]
    asyncio.run(asyncio.wait_for(scenario(), 50))


def test_a_killed_owners_lease_runs_out_and_the_next_join_takes_over(tmp_path: Path) -> None:
    """A SIGKILLed owner gives nothing up: its lease (and its roster) stays in the
    store. Joins get 480 until the lease runs out, then the survivor takes over."""
    config, _ = two_instances(tmp_path)

    async def scenario() -> None:
        async with open_store(config.store_location) as store:
            for name in ("alice", "bob"):
                await add_user(store, DOMAIN, name, f"{name}-secret")
            await add_group(store, config, GROUP, ["alice", "bob"])
            alice = client(config, "alice")
            async with network_with(config, alice) as net:
                assert net.store is not None
                conference = await net.store.conferences.get(GROUP) or \
                    await _dead_owner_conference(net.store, config)
                await net.store.conferences.set_participant(GROUP, Participant(
                    f"sip:bob@{DOMAIN}", ParticipantState.CONNECTED))   # on the dead one
                assert await net.store.conferences.claim_owner(GROUP, "killed", lease=1.5)
                with pytest.raises(SendError, match="480"):
                    await alice.open_chat(GROUP)
                await asyncio.sleep(1.6)
                chat = await alice.open_chat(GROUP)
                assert chat.peer == GROUP and conference.uri == GROUP
                a = net.nodes["conference"]
                assert isinstance(a, ConferenceAs)
                assert await net.store.conferences.owner(GROUP) == (a.holder, a.fences[GROUP])
                stored = await net.store.conferences.get(GROUP)
                assert stored is not None
                assert {p.uri: p.state.value for p in stored.participants} == {
                    f"sip:bob@{DOMAIN}": "disconnected", f"sip:alice@{DOMAIN}": "connected"}
    asyncio.run(asyncio.wait_for(scenario(), 50))


async def _dead_owner_conference(store: Store, config: Config) -> Conference:
    """The group's conference as the dead owner left it in the store."""
    conference = Conference(GROUP, f"sip:alice@{DOMAIN}", ConferenceKind.PRE_DEFINED, "team",
                            admins=(f"sip:alice@{DOMAIN}",))
    await store.conferences.put(conference)
    return conference
