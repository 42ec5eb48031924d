"""The conference AS inside the real core (seed 002, TS 24.247 A.5): join by URI,
MSRP fan-out, refusals, leave; the in-dialog requests to the focus's Contact go
S-CSCF -> I-CSCF -> AS."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.ims.provisioning import add_group, add_user
from imsbox.store import open_store
from imsbox.ue.client import RcsClient
from imsbox.ue.events import ChatEnded, ChatMessage, ChatStarted, SendError
from imsbox.testing import write_loopback_config

from helpers import DOMAIN, client, network_with

pytestmark = pytest.mark.timeout(40)
GROUP = f"sip:group-team@{DOMAIN}"


def run(tmp_path: Path, scenario: Callable[[Config], Awaitable[None]]) -> None:
    _, config = write_loopback_config(tmp_path)

    async def provision() -> None:
        async with open_store(config.store_location) as store:
            for name in ("alice", "bob", "carol", "eve"):
                await add_user(store, DOMAIN, name, f"{name}-secret")
            await add_group(store, config, GROUP, ["alice", "bob", "carol"])
    asyncio.run(provision())
    asyncio.run(asyncio.wait_for(scenario(config), 30))


async def message(ue: RcsClient, chat_id: str) -> ChatMessage:
    while True:
        event = await ue.wait_event(ChatMessage, timeout=5)
        assert isinstance(event, ChatMessage)
        if event.chat_id == chat_id:
            return event


def test_join_predefined_group_and_fan_out(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        alice, bob, carol = (client(config, n) for n in ("alice", "bob", "carol"))
        async with network_with(config, alice, bob, carol) as net:
            chats = [await ue.open_chat(GROUP) for ue in (alice, bob, carol)]
            assert [c.peer for c in chats] == [GROUP] * 3
            focus = net.nodes["conference"]
            foci = focus.foci
            assert list(foci) == [GROUP] and sorted(foci[GROUP].legs) == [
                f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol")]
            # A.5.1 step 12: the Contact is the conference with isfocus
            contact = chats[0].call.session.dialog.remote_target
            assert str(contact) == GROUP
            await chats[0].send("those are my principles")
            for ue, chat in ((bob, chats[1]), (carol, chats[2])):
                got = await message(ue, chat.id)
                assert got.text == "those are my principles"
            await chats[1].send("hi from bob")
            assert (await message(alice, chats[0].id)).text == "hi from bob"
            assert (await message(carol, chats[2].id)).text == "hi from bob"
            # no echo: alice got bob's line only, not her own
            assert [e.text for e in alice.pending_events() if isinstance(e, ChatMessage)] == []
            # BYE from bob reaches the focus through S-CSCF -> I-CSCF (the Contact is a PSI)
            await chats[1].close()
            async with asyncio.timeout(5):
                while f"sip:bob@{DOMAIN}" in foci[GROUP].legs:
                    await asyncio.sleep(0.01)
            conference = await net.store.conferences.get(GROUP)
            assert conference is not None
            states = {p.uri: p.state.value for p in conference.participants}
            assert states[f"sip:bob@{DOMAIN}"] == "disconnected"
            assert states[f"sip:alice@{DOMAIN}"] == "connected"
            await chats[0].send("bob is gone")
            assert (await message(carol, chats[2].id)).text == "bob is gone"
    run(tmp_path, scenario)


def test_refusals(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        eve = client(config, "eve")
        async with network_with(config, eve):
            with pytest.raises(SendError, match="403"):
                await eve.open_chat(GROUP)
            with pytest.raises(SendError, match="404"):
                await eve.open_chat(f"sip:conf-nothere@{DOMAIN}")
    run(tmp_path, scenario)


__all__ = ["ChatEnded", "ChatStarted"]
