"""RFC 5626 flow tokens in the P-CSCF's Path, through the real core on loopback.

alice is a bare SIP endpoint that registers over TCP (with outbound: reg-id,
+sip.instance, ``Supported: outbound``); bob is a UDP TestUe. The Path the
registrar returns carries ``sip:term.TOKEN@P-CSCF;lr;ob``, the token naming
alice's connection; bob's MESSAGE reaches alice over that very connection.
When alice's connection is closed, the P-CSCF answers 430 Flow Failed instead
of opening another connection, and the S-CSCF gives bob 480 (RFC 5626 11.5); a UE that did not ask for
outbound is still reached by a new connection to its Contact. A token the
P-CSCF did not sign gets 403 even from a trusted core socket. The P-CSCF
answers a CRLFCRLF keep-alive with CRLF (RFC 5626 3.5.1) and tells an outbound
UE how often to send it (Flow-Timer).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from imsbox.config import Config, SecurityConfig
from imsbox.ims.flow_token import FlowTokenSigner
from imsbox.ims.pcscf import Pcscf
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.sip import Request, Response, new_tag
from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint
from imsbox.sip.transport.base import Destination, Flow
from imsbox.sip.uri import SipUri, parse_uri
from imsbox.store import open_store
from imsbox.testing import FAST_TIMERS, LoopbackPorts, TestUe, write_loopback_config
from imsbox.ue.register import Registration

pytestmark = pytest.mark.timeout(40)
DOMAIN = "ims.test"
HOST = "127.0.0.1"
INSTANCE = "urn:uuid:00000000-0000-4000-8000-00000000a11c"
TOKEN = r"term\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"


class TcpUe:
    """alice: a bare endpoint listening on TCP, answering 200, keeping (request, flow)."""

    def __init__(self) -> None:
        self.endpoint = SipEndpoint(FAST_TIMERS, modules=[HandlerModule(self._on_request)])
        self.requests: asyncio.Queue[tuple[Request, Flow]] = asyncio.Queue()
        self.port = 0

    async def start(self) -> TcpUe:
        _, self.port = await self.endpoint.listen("tcp", HOST, 0)
        return self

    @property
    def contact(self) -> str:
        return f"sip:alice@{HOST}:{self.port};transport=tcp"

    def _on_request(self, ctx: ServerContext) -> None:
        self.requests.put_nowait((ctx.request, ctx.flow))
        if ctx.txn is not None and ctx.request.method != "ACK":
            ctx.respond(Response.for_request(ctx.request, 200, to_tag=new_tag()))

    async def register(self, config: Config, outbound: bool) -> Registration:
        reg = Registration(f"sip:alice@{DOMAIN}", self.contact,
                           Destination("tcp", HOST, config.pcscf.port),
                           username=f"alice@{DOMAIN}",
                           contact_params="reg-id=1" if outbound else "",
                           instance=INSTANCE if outbound else None)
        extra = [("Supported", "outbound")] if outbound else []
        await reg.send(self.endpoint, "alice-secret", 600, headers=extra)
        assert reg.statuses == [401, 200], reg.statuses
        return reg

    async def nothing_more(self) -> None:
        await asyncio.sleep(0.4)
        assert self.requests.empty(), "a request reached alice"


def run(tmp_path: Path, scenario: Callable[[Config, Network, TestUe], Awaitable[None]],
        trusted: tuple[tuple[str, int], ...] = ()) -> None:
    _, config = write_loopback_config(tmp_path)
    config = replace(config, security=SecurityConfig(trusted_peers=trusted))

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            async with open_store(config.store_location) as store:
                for name in ("alice", "bob"):
                    await add_user(store, DOMAIN, name, f"{name}-secret")
            net = await stack.enter_async_context(Network(config, timers=FAST_TIMERS))
            bob = await TestUe("bob", "bob-secret", config).start()
            stack.push_async_callback(bob.close)
            assert (await bob.register()).ok
            await scenario(config, net, bob)
    asyncio.run(asyncio.wait_for(main(), 35))


@contextlib.asynccontextmanager
async def alice_ue() -> AsyncIterator[TcpUe]:
    alice = await TcpUe().start()
    try:
        yield alice
    finally:
        await alice.endpoint.close()


def pcscf(net: Network) -> Pcscf:
    node = net.nodes["pcscf"]
    assert isinstance(node, Pcscf)
    return node


def term_path(reg: Registration, config: Config, ob: bool = True) -> SipUri:
    """The one Path of the registrar's 2xx (RFC 3327 5.3), checked for its form."""
    (path,) = reg.final.headers.get_all("Path")
    form = rf"<sip:{TOKEN}@{re.escape(HOST)}:{config.pcscf.port};lr{';ob' if ob else ''}>"
    assert re.fullmatch(form, path), path
    (route,) = reg.final.path
    assert isinstance(route.uri, SipUri)
    return route.uri


@contextlib.asynccontextmanager
async def core_peer(port: int) -> AsyncIterator[SipEndpoint]:
    """A socket of the trust domain (``[security] trusted_peers``), as an S-CSCF."""
    peer = SipEndpoint(FAST_TIMERS)
    await peer.listen("udp", HOST, port)
    try:
        yield peer
    finally:
        await peer.close()


def to_alice(alice: TcpUe, route: SipUri, text: str) -> Request:
    """A MESSAGE as the S-CSCF sends it: Route = the Path, Request-URI = the contact."""
    return Request("MESSAGE", alice.contact, [
        ("Route", f"<{route}>"), ("From", f"<sip:bob@{DOMAIN}>;tag={new_tag()}"),
        ("To", f"<sip:alice@{DOMAIN}>"), ("Call-ID", new_tag()), ("CSeq", "1 MESSAGE"),
        ("Content-Type", "text/plain")], text.encode())


async def bob_sends(bob: TestUe, text: str) -> Response:
    return await bob.message(f"sip:alice@{DOMAIN}", text).final()


async def connection_gone(net: Network, flow: Flow) -> None:
    transport = pcscf(net).endpoint.transport
    for _ in range(100):
        if transport.open_flow(flow.transport, flow.local, flow.remote) is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the P-CSCF still holds {flow}")


def test_token_names_the_tcp_flow_and_the_message_comes_over_it(tmp_path: Path) -> None:
    async def scenario(config: Config, net: Network, bob: TestUe) -> None:
        async with alice_ue() as alice:
            reg = await alice.register(config, outbound=True)
            path = term_path(reg, config)
            # RFC 5626 4.4.1: the P-CSCF says how often to ping (inside its idle close)
            assert reg.final.headers.get("Flow-Timer") == "40"
            [conn] = alice.endpoint.transport.connections
            token = pcscf(net).flow_tokens.open(path.user.removeprefix("term."))  # type: ignore[union-attr]
            assert token is not None and token.outbound
            assert (token.transport, token.remote) == ("tcp", conn.local)
            assert token.local == (HOST, config.pcscf.port)
            # signed with the store's shared key: every P-CSCF instance opens it
            assert net.store is not None
            shared = FlowTokenSigner(await net.store.nonces.shared_secret("flow-token"))
            assert shared.open(path.user.removeprefix("term.")) == token  # type: ignore[union-attr]

            # The token alone finds the flow: the P-CSCF's memory of alice is not asked.
            pcscf(net).registrations.remove(parse_uri(alice.contact))
            response = await bob_sends(bob, "over your connection")
            assert response.status == 200, response
            request, flow = await asyncio.wait_for(alice.requests.get(), 5)
            assert request.method == "MESSAGE" and request.body == b"over your connection"
            assert flow.conn_id == conn.conn_id  # the connection alice registered on
            assert alice.endpoint.transport.connections == [conn]
    run(tmp_path, scenario)


def test_430_when_the_outbound_ues_connection_is_gone(tmp_path: Path) -> None:
    port = LoopbackPorts()()

    async def scenario(config: Config, net: Network, bob: TestUe) -> None:
        async with alice_ue() as alice, core_peer(port) as peer:
            reg = await alice.register(config, outbound=True)
            path = term_path(reg, config)
            token = pcscf(net).flow_tokens.open(path.user.removeprefix("term."))  # type: ignore[union-attr]
            assert token is not None
            [conn] = alice.endpoint.transport.connections
            await conn.close()
            await connection_gone(net, token.flow)

            # The P-CSCF itself answers 430 to a request on that Path (RFC 5626 5.3) ...
            final = await peer.request(to_alice(alice, path, "on a dead flow"),
                                       Destination("udp", HOST, config.pcscf.port)).final()
            assert (final.status, final.reason) == (430, "Flow Failed"), final
            # ... which the S-CSCF, having tried every contact, turns into a 480 for
            # the caller (RFC 5626 11.5: endpoints never see a 430).
            response = await bob_sends(bob, "nobody holds your flow")
            assert (response.status, response.reason) == \
                (480, "Temporarily Unavailable - the UE's flow failed"), response
            # no new connection to alice's Contact (she is still listening there)
            await alice.nothing_more()
            assert alice.endpoint.transport.connections == []
    run(tmp_path, scenario, trusted=((HOST, port),))


def test_without_outbound_a_new_connection_to_the_contact(tmp_path: Path) -> None:
    async def scenario(config: Config, net: Network, bob: TestUe) -> None:
        async with alice_ue() as alice:
            reg = await alice.register(config, outbound=False)
            term_path(reg, config, ob=True)  # ;ob: a connection, we answer its pings
            assert reg.final.headers.get("Flow-Timer") is None  # she did not ask
            [conn] = alice.endpoint.transport.connections
            old_port = conn.local[1]
            await conn.close()
            await asyncio.sleep(0.2)

            response = await bob_sends(bob, "over a new connection")
            assert response.status == 200, response
            request, flow = await asyncio.wait_for(alice.requests.get(), 5)
            assert request.body == b"over a new connection"
            assert flow.local == (HOST, alice.port) and flow.local[1] != old_port
    run(tmp_path, scenario)


def test_a_forged_token_gets_403_even_from_a_trusted_socket(tmp_path: Path) -> None:
    port = LoopbackPorts()()

    async def scenario(config: Config, net: Network, bob: TestUe) -> None:
        async with alice_ue() as alice, core_peer(port) as peer:
            reg = await alice.register(config, outbound=True)
            path = term_path(reg, config)
            assert path.user is not None
            head, _, mac = path.user.removeprefix("term.").partition(".")
            other = pcscf(net).flow_tokens.issue(Flow("tcp", (HOST, 1), (HOST, 2)), True)
            forged = [f"term.{head}.{other.partition('.')[2]}",  # a MAC of another flow
                      f"term.{head}.{'A' * len(mac)}", "term.junk"]
            pcscf_socket = Destination("udp", HOST, config.pcscf.port)
            for user in forged:
                route = path.copy(user=user)
                final = await peer.request(to_alice(alice, route, "forged"), pcscf_socket).final()
                assert (final.status, final.reason) == \
                    (403, "Forbidden - invalid flow token"), (user, final)
            # the genuine token from the same socket goes through
            final = await peer.request(to_alice(alice, path, "genuine"), pcscf_socket).final()
            assert final.status == 200, final
            got, _ = await asyncio.wait_for(alice.requests.get(), 5)
            assert got.body == b"genuine"
            await alice.nothing_more()
    run(tmp_path, scenario, trusted=((HOST, port),))


def test_crlf_keepalive_answered_on_tcp(tmp_path: Path) -> None:
    async def scenario(config: Config, net: Network, bob: TestUe) -> None:
        reader, writer = await asyncio.open_connection(HOST, config.pcscf.port)
        try:
            for _ in range(2):  # RFC 5626 3.5.1: each CRLFCRLF ping gets one CRLF pong
                writer.write(b"\r\n\r\n")
                await writer.drain()
                assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
        finally:
            writer.close()
    run(tmp_path, scenario)
