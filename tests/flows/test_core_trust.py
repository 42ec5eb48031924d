"""Trust between core nodes is bound to their configured sockets (docs/security.md).

Forged identities sent around the P-CSCF - straight to the I-CSCF (UDP and
TCP), the S-CSCF's terminating path, the S-CSCF over TCP with the P-CSCF's
Via, the messaging AS, the P-CSCF's ``term`` Route from a UE port - are all
refused with 403 and never reach bob as carol.  A socket declared in
``[security] trusted_peers`` is let in (over TCP it connects from its listen
port, like the nodes do).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from imsbox.config import Config, SecurityConfig
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.sip import Request, Response, new_tag, parse
from imsbox.sip.endpoint import SipEndpoint
from imsbox.sip.transport.base import Destination
from imsbox.store import open_store
from imsbox.testing import FAST_TIMERS, LoopbackPorts, TestUe, write_loopback_config

pytestmark = pytest.mark.timeout(30)
DOMAIN = "ims.test"
HOST = "127.0.0.1"
CAROL = f"<sip:carol@{DOMAIN}>"


def raw_message(target: str, via: str, *extra: str) -> bytes:
    """A MESSAGE from 'carol' with her identity asserted, as an attacker writes it."""
    body = b"it is me, carol"
    lines = [f"MESSAGE {target} SIP/2.0", f"Via: {via}", "Max-Forwards: 70",
             f"From: {CAROL};tag={new_tag()}", f"To: <sip:bob@{DOMAIN}>",
             f"Call-ID: {secrets.token_hex(8)}@attacker", "CSeq: 1 MESSAGE",
             f"P-Asserted-Identity: {CAROL}", *extra, "Content-Type: text/plain",
             f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def branch() -> str:
    return f"z9hG4bK{secrets.token_hex(6)}"


async def over_udp(port: int, build: Callable[[int], bytes]) -> Response:
    """Send from a fresh UDP socket on 127.0.0.1; the answer comes back to it (rport)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(5)
        sock.sendto(build(sock.getsockname()[1]), (HOST, port))
        while True:
            data = await asyncio.to_thread(sock.recv, 65535)
            response = parse(data)
            if isinstance(response, Response) and response.status >= 200:
                return response


async def over_tcp(port: int, data: bytes) -> Response:
    """Send on a fresh TCP connection; the answer comes back on it (18.2.2)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            response = parse(head)
            assert isinstance(response, Response)
            length = int(response.headers.get("Content-Length") or 0)
            if length:
                await reader.readexactly(length)
            if response.status >= 200:
                return response
    finally:
        writer.close()


def run(tmp_path: Path, scenario: Callable[[Config, list[TestUe]], Awaitable[None]],
        trusted: tuple[tuple[str, int], ...] = ()) -> None:
    _, config = write_loopback_config(tmp_path)
    config = replace(config, security=SecurityConfig(trusted_peers=trusted))

    async def main() -> None:
        async with open_store(config.store_location) as store:
            for name in ("alice", "bob", "carol"):
                await add_user(store, DOMAIN, name, f"{name}-secret")
        async with Network(config, timers=FAST_TIMERS):
            bob = await TestUe("bob", "bob-secret", config).start()
            try:
                assert (await bob.register()).ok
                await scenario(config, [bob])
            finally:
                await bob.close()
    asyncio.run(asyncio.wait_for(main(), 25))


async def nothing_for(bob: TestUe) -> None:
    await asyncio.sleep(0.3)
    assert bob.requests.empty(), "a forged request reached bob"


def refused(response: Response) -> None:
    assert response.status == 403, response
    assert "trusted" in response.reason, response.reason


# -- forged identities around the P-CSCF ----------------------------------------------

def test_forged_identity_at_the_icscf_over_udp_and_tcp(tmp_path: Path) -> None:
    async def scenario(config: Config, ues: list[TestUe]) -> None:
        [bob] = ues
        target = f"sip:bob@{DOMAIN}"
        port = config.icscf.port
        refused(await over_udp(port, lambda me: raw_message(
            target, f"SIP/2.0/UDP {HOST}:{me};branch={branch()};rport")))
        refused(await over_tcp(port, raw_message(
            target, f"SIP/2.0/TCP {HOST}:5999;branch={branch()}")))
        await nothing_for(bob)
    run(tmp_path, scenario)


def test_forged_identity_on_the_scscfs_terminating_and_originating_paths(
        tmp_path: Path) -> None:
    async def scenario(config: Config, ues: list[TestUe]) -> None:
        [bob] = ues
        target, port = f"sip:bob@{DOMAIN}", config.scscf.port
        # Terminating: no Route, the Request-URI names the served user.
        refused(await over_udp(port, lambda me: raw_message(
            target, f"SIP/2.0/UDP {HOST}:{me};branch={branch()};rport")))
        # Over TCP with the P-CSCF's Via (once believed) and the orig Route.
        pcscf_via = f"SIP/2.0/TCP {HOST}:{config.pcscf.port};branch={branch()}"
        refused(await over_tcp(port, raw_message(
            target, pcscf_via, f"Route: <sip:orig@{HOST}:{port};lr>")))
        refused(await over_tcp(port, raw_message(target, pcscf_via)))
        await nothing_for(bob)
    run(tmp_path, scenario)


def test_forged_request_at_the_messaging_as(tmp_path: Path) -> None:
    async def scenario(config: Config, ues: list[TestUe]) -> None:
        [bob] = ues
        refused(await over_udp(config.messaging_as.port, lambda me: raw_message(
            f"sip:bob@{DOMAIN}", f"SIP/2.0/UDP {HOST}:{me};branch={branch()};rport",
            "Accept-Contact: *;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg\"")))
        await nothing_for(bob)
    run(tmp_path, scenario)


def test_term_route_at_the_pcscf_only_from_a_core_socket(tmp_path: Path) -> None:
    async def scenario(config: Config, ues: list[TestUe]) -> None:
        [bob] = ues
        term = f"Route: <sip:term@{HOST}:{config.pcscf.port};lr>"
        for make in (
            lambda me: raw_message(bob.contact, f"SIP/2.0/UDP {HOST}:{me};branch={branch()};rport",
                                   term),
            # "From the core" by its Via alone: no.
            lambda me: raw_message(bob.contact, f"SIP/2.0/UDP {HOST}:{config.scscf.port};"
                                   f"branch={branch()};rport={me};received={HOST}", term),
        ):
            response = await over_udp(config.pcscf.port, make)
            assert response.status == 403, response
        await nothing_for(bob)
    run(tmp_path, scenario)


# -- the trusted path ------------------------------------------------------------------



@contextlib.asynccontextmanager
async def peer_endpoint(port: int) -> AsyncIterator[SipEndpoint]:
    endpoint = SipEndpoint(FAST_TIMERS)
    await endpoint.listen("udp", HOST, port)
    await endpoint.listen("tcp", HOST, port, reuse_port=True)
    try:
        yield endpoint
    finally:
        await endpoint.close()


def carol_message(target: str) -> Request:
    return Request("MESSAGE", target, [
        ("From", f"{CAROL};tag={new_tag()}"), ("To", f"<{target}>"),
        ("Call-ID", new_tag()), ("CSeq", "1 MESSAGE"), ("P-Asserted-Identity", CAROL),
        ("Content-Type", "text/plain")], b"from a trusted peer")


def test_a_trusted_peer_reaches_the_icscf_over_udp_and_tcp(tmp_path: Path) -> None:
    port = LoopbackPorts()()

    async def scenario(config: Config, ues: list[TestUe]) -> None:
        [bob] = ues
        async with peer_endpoint(port) as peer:
            for transport in ("udp", "tcp"):
                dest = Destination(transport, HOST, config.icscf.port)
                final = await peer.request(carol_message(f"sip:bob@{DOMAIN}"), dest).final()
                assert final.status == 200, (transport, final)
                delivered = await asyncio.wait_for(bob.requests.get(), 5)
                assert delivered.headers.get("P-Asserted-Identity") == CAROL
            # Over TCP our connection came from the peer's listen port: the
            # I-CSCF saw the configured socket, not an ephemeral port.
            [conn] = peer.transport.connections
            assert conn.local == (HOST, port)
            # and without Nagle, like any connection asyncio opens itself
            sock = conn.writer.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    run(tmp_path, scenario, trusted=((HOST, port),))
