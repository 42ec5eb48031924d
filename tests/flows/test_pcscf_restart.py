"""The P-CSCF's registrations (flows) survive a restart of the network.

The P-CSCF keeps, per registered contact, the flow the REGISTER came on, the
registered identities, the Service-Route and the expiry in the store and
reloads them on start.  Each test registers, closes the Network, starts a new
one on the same data dir and checks that a MESSAGE reaches the UE without it
registering again - at the *stored flow*, not merely at the Contact:

* UDP: the UE registers from one socket with a Contact naming another one (as
  behind a NAT); after the restart the MESSAGE must arrive at the source
  address, and nothing at the Contact.  Without the stored flow the P-CSCF
  could only use the Contact.
* TCP: the UE's connection dies with the old process; the new P-CSCF opens a
  connection to the Contact (the UE's listening port).

Plus: expired entries are dropped at start, a de-registration removes the
stored entry, and a UDP UE's own requests are recognised after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.ims.pcscf import Pcscf
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint
from imsbox.sip.message import Request, Response, new_tag
from imsbox.sip.transport.base import Destination
from imsbox.store import PcscfRegistration, open_store
from imsbox.ue.register import register
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config

pytestmark = pytest.mark.timeout(30)
DOMAIN = "ims.test"
HOST = "127.0.0.1"


def provision(config: Config) -> None:
    async def in_store() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "alice", "alice-secret")
            await add_user(store, DOMAIN, "bob", "bob-secret")
    asyncio.run(in_store())


def run(tmp_path: Path, scenario: Callable[[Config], Awaitable[None]]) -> None:
    _, config = write_loopback_config(tmp_path)
    provision(config)
    asyncio.run(asyncio.wait_for(scenario(config), 20))


class Listener:
    """A bare SIP endpoint that answers 200 to everything and keeps the requests."""

    def __init__(self) -> None:
        self.endpoint = SipEndpoint(FAST_TIMERS, modules=[HandlerModule(self._on_request)])
        self.requests: asyncio.Queue[Request] = asyncio.Queue()
        self.port = 0

    async def start(self, transport: str = "udp", port: int = 0) -> Listener:
        _, self.port = await self.endpoint.listen(transport, HOST, port)
        return self

    def _on_request(self, ctx: ServerContext) -> None:
        self.requests.put_nowait(ctx.request)
        if ctx.txn is not None and ctx.request.method != "ACK":
            ctx.respond(Response.for_request(ctx.request, 200, to_tag=new_tag()))

    async def close(self) -> None:
        await self.endpoint.close()


@contextlib.asynccontextmanager
async def started(*items: Listener | TestUe) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for item in items:
            await item.close()


def pcscf(net: Network) -> Pcscf:
    node = net.nodes["pcscf"]
    assert isinstance(node, Pcscf)
    return node


async def stored(config: Config) -> list[PcscfRegistration]:
    async with open_store(config.store_location) as store:
        return await store.flows.registrations(config.pcscf.uri)


async def bob_sends(bob: TestUe, text: str) -> int:
    response = await bob.message(f"sip:alice@{DOMAIN}", text).final()
    return response.status


def test_udp_ue_reached_at_its_stored_source_address_after_restart(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        alice, decoy = Listener(), Listener()
        bob = TestUe("bob", "bob-secret", config)
        async with started(alice, decoy, bob):
            await alice.start()
            await decoy.start()  # the Contact: must never see the MESSAGE
            await bob.start()
            contact = f"sip:alice@{HOST}:{decoy.port}"
            async with Network(config, timers=FAST_TIMERS) as net:
                reg = await register(alice.endpoint, "alice", "alice-secret", DOMAIN,
                                     Destination("udp", HOST, config.pcscf.port),
                                     contact=contact, expires=600)
                assert reg.statuses == [401, 200], reg.statuses
                assert len(pcscf(net).registrations) == 1
                # stored before the 200 went on (on_response awaits the write)
                assert net.store is not None
                (early,) = await net.store.flows.registrations(config.pcscf.uri)
                assert early.contact == contact
            # the old process is gone; what it knew is in the store
            (entry,) = await stored(config)
            flow = json.loads(entry.flow)
            assert entry.contact == contact and flow["transport"] == "udp"
            assert flow["remote"] == [HOST, alice.port]
            assert entry.public_ids == (f"<sip:alice@{DOMAIN}>",)
            assert entry.service_route and "orig@" in entry.service_route[0]

            async with Network(config, timers=FAST_TIMERS) as net:
                (restored,) = pcscf(net).registrations.by_flow(
                    _udp_flow(config, alice.port))
                assert str(restored.contact) == contact
                assert (await bob.register()).ok
                assert await bob_sends(bob, "after restart") == 200
                message = await asyncio.wait_for(alice.requests.get(), 5)
                assert message.method == "MESSAGE" and message.body == b"after restart"
                assert str(message.uri) == contact  # the S-CSCF targeted the contact ...
                assert decoy.requests.empty()       # ... the P-CSCF used the stored flow
                # alice's own requests are recognised by that flow too (no 403)
                ack = await _message_from(alice, config, "sip:bob@ims.test", "hi bob")
                assert ack == 200
                got = await asyncio.wait_for(bob.requests.get(), 5)
                assert got.body == b"hi bob"
                assert f"sip:alice@{DOMAIN}" in (got.headers.get("P-Asserted-Identity") or "")
    run(tmp_path, scenario)


def _udp_flow(config: Config, port: int):  # type: ignore[no-untyped-def]
    from imsbox.sip.transport.base import Flow
    return Flow("udp", (HOST, config.pcscf.port), (HOST, port))


async def _message_from(ue: Listener, config: Config, target: str, text: str) -> int:
    from imsbox.sip.ua.dialog import build_request
    route = [f"<sip:{HOST}:{config.pcscf.port};lr>"]
    request = build_request("MESSAGE", target, f"<sip:alice@{DOMAIN}>", f"<{target}>",
                            route=route, body=text.encode(), content_type="text/plain")
    response = await ue.endpoint.request(request).final()
    return response.status


def test_tcp_ue_reached_by_a_new_connection_to_its_contact_after_restart(
        tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        alice = Listener()
        bob = TestUe("bob", "bob-secret", config)
        async with started(alice, bob):
            await alice.start("tcp")
            await bob.start()
            contact = f"sip:alice@{HOST}:{alice.port};transport=tcp"
            async with Network(config, timers=FAST_TIMERS):
                reg = await register(alice.endpoint, "alice", "alice-secret", DOMAIN,
                                     Destination("tcp", HOST, config.pcscf.port),
                                     contact=contact, expires=600)
                assert reg.statuses == [401, 200], reg.statuses
            (entry,) = await stored(config)
            flow = json.loads(entry.flow)
            assert flow["transport"] == "tcp" and flow["remote"][1] != alice.port
            async with Network(config, timers=FAST_TIMERS):
                assert (await bob.register()).ok
                assert await bob_sends(bob, "over a new connection") == 200
                message = await asyncio.wait_for(alice.requests.get(), 5)
                assert message.body == b"over a new connection"
                assert message.via[0].transport == "TCP"
    run(tmp_path, scenario)


def test_expired_and_deregistered_entries_are_dropped(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        alice = Listener()
        async with started(alice):
            await alice.start()
            pcscf_dest = Destination("udp", HOST, config.pcscf.port)
            contact = f"sip:alice@{HOST}:{alice.port}"
            async with Network(config, timers=FAST_TIMERS):
                assert (await register(alice.endpoint, "alice", "alice-secret", DOMAIN,
                                       pcscf_dest, contact=contact, expires=600)).ok
            (entry,) = await stored(config)
            # pretend the registration ran out while the network was down
            async with open_store(config.store_location) as store:
                await store.flows.save(PcscfRegistration(
                    entry.node, entry.key, entry.contact, entry.flow, entry.public_ids,
                    entry.service_route, expires_at=1.0))
            async with Network(config, timers=FAST_TIMERS) as net:
                assert len(pcscf(net).registrations) == 0
                assert await stored(config) == []  # deleted at start, not just skipped
                # register again, then de-register: the stored entry goes away
                assert (await register(alice.endpoint, "alice", "alice-secret", DOMAIN,
                                       pcscf_dest, contact=contact, expires=600)).ok
                assert len(await stored(config)) == 1
                dereg = await register(alice.endpoint, "alice", "alice-secret", DOMAIN,
                                       pcscf_dest, contact=contact, expires=0)
                assert dereg.ok, dereg.statuses
                assert await stored(config) == []
                assert len(pcscf(net).registrations) == 0
    run(tmp_path, scenario)
