"""Per-user state goes away: after N registrations through the whole core and
their removal, the nodes' maps are empty again (counted, not timed; the memory
figures are in tests/bench/bench_soak.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imsbox.config import load_config
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.sip.endpoint import SipEndpoint
from imsbox.sip.transaction import TimerValues
from imsbox.sip.transport.base import Destination
from imsbox.store import open_store
from imsbox.testing import write_loopback_config
from imsbox.ue.register import Registration

pytestmark = pytest.mark.timeout(60)
USERS = 12
PASSWORD = "maps-secret"
# Short retransmission timers, but Timer K (T4 over UDP) long: a completed client
# transaction is then held for seconds, and what it keeps shows.
TIMERS = TimerValues(t1=0.05, t2=0.4, t4=5.0)


async def until(check: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def registration(user: str, domain: str, port: int, pcscf: Destination,
                 cseq: int) -> Registration:
    return Registration(f"sip:{user}@{domain}", f"sip:{user}@127.0.0.1:{port}", pcscf,
                        call_id=f"maps-{user}", tag=f"t-{user}",
                        username=f"{user}@{domain}", cseq=cseq)


def test_registrations_leave_nothing_behind(tmp_path: Path) -> None:
    async def scenario() -> None:
        path, _ = write_loopback_config(tmp_path)
        config = load_config(path)
        users = [f"m{i:03d}" for i in range(USERS)]
        async with open_store(config.store_location) as store:
            for name in users:
                await add_user(store, config.domain, name, PASSWORD)
        async with Network(config, timers=TIMERS) as net:
            ue = SipEndpoint(TIMERS)
            port = (await ue.listen("udp", "127.0.0.1", 0))[1]
            pcscf = Destination("udp", config.pcscf.host, config.pcscf.port)
            try:
                await exchange(ue, port, pcscf, config.domain, users, 3600, 0)
                nodes = net.nodes
                messaging = nodes["as"]
                assert await until(lambda: len(messaging.registered) == USERS)  # type: ignore[attr-defined]
                assert len(nodes["pcscf"].registrations) == USERS  # type: ignore[attr-defined]
                # A client transaction's context (request, responses) is let go at
                # its final response, not kept for Timer K (5 s here).
                for role, node in nodes.items():
                    assert await until(lambda n=node: not n.endpoint._clients), role
                assert not ue._clients

                await exchange(ue, port, pcscf, config.domain, users, 0, 2)
                assert await until(lambda: not messaging.registered)  # type: ignore[attr-defined]
                assert len(nodes["pcscf"].registrations) == 0  # type: ignore[attr-defined]
                assert await until(lambda: not messaging._delivery_locks)  # type: ignore[attr-defined]
                assert not messaging._delivery_users  # type: ignore[attr-defined]
                assert not nodes["scscf"].registrar._aor_locks  # type: ignore[attr-defined]
                assert await net.store.flows.registrations(config.pcscf.uri, time.time()) == []  # type: ignore[union-attr]
                for user in users:
                    aor = f"sip:{user}@{config.domain}"
                    assert await net.store.registrations.bindings(aor, time.time()) == []  # type: ignore[union-attr]
            finally:
                await ue.close()

    asyncio.run(asyncio.wait_for(scenario(), 50))


async def exchange(ue: SipEndpoint, port: int, pcscf: Destination, domain: str,
                   users: list[str], expires: int, cseq: int) -> None:
    """Every user REGISTERs (Digest) with ``expires``, four at a time."""
    sem = asyncio.Semaphore(4)

    async def one(user: str) -> int:
        async with sem:
            reg = registration(user, domain, port, pcscf, cseq)
            return (await reg.send(ue, PASSWORD, expires, attempts=1)).status

    statuses = await asyncio.gather(*(one(u) for u in users))
    assert statuses == [200] * len(users)
