"""Two conference AS processes (``imsbox serve --role conference``) on PostgreSQL +
Redis, the rest of the core in this process: the owner of a group chat is killed
with SIGKILL; once its lease runs out the next join reaches the survivor, which
takes the conference over from the store, and the members rejoin there."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from imsbox.config import load_config
from imsbox.ims.provisioning import add_group, add_user
from imsbox.sip.pool import InstancePool
from imsbox.store import open_store
from imsbox.testing import LoopbackPorts, write_loopback_config
from imsbox.ue import SendError

from helpers import DOMAIN, client, network_with
from test_conference_as import message
from test_scale_out import _serve

pytestmark = [pytest.mark.scaleout, pytest.mark.timeout(120)]
GROUP = f"sip:group-team@{DOMAIN}"
ROLES = ("pcscf", "icscf", "scscf", "as")


def _configs(tmp_path: Path, pg_url: str, redis_url: str) -> list[Path]:
    """The core's file (its [conference_as] is the first instance) and one per AS."""
    path, config = write_loopback_config(tmp_path)
    ports = (config.conference_as.port, LoopbackPorts()())
    head = f'[store]\nurl = "{pg_url}"\ncache = "{redis_url}"\n\n'
    pool = f'pool = ["127.0.0.1:{ports[0]}", "127.0.0.1:{ports[1]}"]\n'
    own = f'[conference_as]\nhost = "127.0.0.1"\nport = {ports[0]}\n'
    text = path.read_text().replace(own, own + pool)
    lines = text.split("\n")
    text = "\n".join(lines[:2]) + "\n\n" + head + "\n".join(lines[2:])
    path.write_text(text)
    files = [path]
    for n, port in enumerate(ports):
        files.append(tmp_path / f"conf-{n}.toml")
        files[-1].write_text(text.replace(own, own.replace(str(ports[0]), str(port))))
    return files


def test_a_killed_conference_owner_is_taken_over_by_the_other_process(
        tmp_path: Path, pg_url: str, redis_url: str) -> None:
    core, *as_files = _configs(tmp_path, pg_url, redis_url)
    config = load_config(core)

    async def provision() -> None:
        async with open_store(pg_url, redis_url) as store:
            for name in ("alice", "bob", "carol"):
                await add_user(store, DOMAIN, name, f"{name}-secret")
            await add_group(store, config, GROUP, ["alice", "bob", "carol"])
    asyncio.run(provision())
    procs = [_serve(f"conference-{n}", f, "conference") for n, f in enumerate(as_files)]
    owner = InstancePool(config.conference_as.instances).order(GROUP)[0]
    victim = procs[[load_config(f).conference_as.uri for f in as_files].index(owner)]

    async def scenario() -> float:
        alice, bob, carol = (client(config, n) for n in ("alice", "bob", "carol"))
        async with network_with(config, alice, bob, carol, roles=ROLES):
            chats = [await ue.open_chat(GROUP) for ue in (alice, bob)]
            await chats[0].send("before")
            assert (await message(bob, chats[1].id)).text == "before"
            victim.kill()                                   # SIGKILL: the lease stays
            killed = time.monotonic()
            while True:                                     # 480 until the lease runs out
                try:
                    joined = await carol.open_chat(GROUP)
                    break
                except SendError:
                    assert time.monotonic() - killed < 40, "no takeover"
                    await asyncio.sleep(1.0)
            took = time.monotonic() - killed
            again = await alice.open_chat(GROUP)            # alice rejoins on the survivor
            await joined.send("after")
            assert (await message(alice, again.id)).text == "after"
            return took
    try:
        took = asyncio.run(asyncio.wait_for(scenario(), 90))
    finally:
        for proc in procs:
            proc.stop()
    print(f"conference taken over {took:.1f} s after the owner's SIGKILL")
    assert 10 < took < 25   # the killed owner's 15 s lease held, then one retry
