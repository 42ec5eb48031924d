"""RFC 3261 18.1.1 at the P-CSCF (issue 10): a UE registered over UDP sends a request
over 1300 bytes over TCP (a third-party client such as linphone does; its REFER
for a transfer is one). It is that UE's when it comes from the registration's
address, with its registered Contact and a registered identity - and nobody else
is registered from that address. Anything else stays 403 (docs/security.md).

The UEs sit on their own loopback addresses (127.0.0.2, 127.0.0.3) so the source
address means one host, as it does for a softphone on its own machine.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
from helpers import alice_and_bob

from imsbox.config import Config, load_config
from imsbox.serve import Network
from imsbox.sip.message import Request, Response
from imsbox.sip.parser import parse as parse_sip
from imsbox.sip.endpoint import SipEndpoint
from imsbox.sip.transport.base import Destination
from imsbox.sip.ua.dialog import build_request
from imsbox.testing import FAST_TIMERS, TestUe
from imsbox.ue.register import register

pytestmark = pytest.mark.timeout(40)
ALICE_HOST, BOB_HOST, OTHER_HOST = "127.0.0.2", "127.0.0.3", "127.0.0.4"
DOMAIN = "ims.test"


def large_message(config: Config, sender: str, contact: str, host: str, port: int) -> bytes:
    """A MESSAGE to bob over 1300 bytes, as a UE sends it over TCP."""
    body = ("x" * 1400).encode()
    pcscf = config.pcscf
    return (f"MESSAGE sip:bob@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            f"Route: <sip:{pcscf.host}:{pcscf.port};lr>\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{sender}@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:bob@{DOMAIN}>\r\n"
            f"Call-ID: {secrets.token_hex(10)}\r\n"
            "CSeq: 1 MESSAGE\r\n"
            f"Contact: <{contact}>\r\n"
            "Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def over_tcp(config: Config, host: str, make: object) -> Response:
    """Open a TCP connection from ``host`` to the P-CSCF, send, read the final answer."""
    reader, writer = await asyncio.open_connection(config.pcscf.host, config.pcscf.port,
                                                   local_addr=(host, 0))
    try:
        port = writer.get_extra_info("sockname")[1]
        data = make(port)  # type: ignore[operator]
        assert len(data) > 1300
        writer.write(data)
        await writer.drain()
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            message = parse_sip(head)
            length = int(message.headers.get("Content-Length") or 0)
            body = await reader.readexactly(length) if length else b""
            assert isinstance(message, Response)
            if message.status >= 200:
                message.body = body
                return message
    finally:
        writer.close()


async def next_request(ue: TestUe, timeout: float = 5.0) -> Request:
    return await asyncio.wait_for(ue.requests.get(), timeout)


async def started(config: Config, user: str, host: str) -> TestUe:
    ue = await TestUe(user, f"{user}-secret", config, timers=FAST_TIMERS, host=host).start()
    assert (await ue.register()).ok
    return ue


def switch_config(tmp_path: Path, switch: str | None = None) -> Config:
    config = alice_and_bob(tmp_path, via_as=False)
    if switch is None:
        return config
    path = tmp_path / "imsbox.toml"
    path.write_text(path.read_text() + f'\n[security]\ntransport_switch = "{switch}"\n')
    return load_config(path)


def test_large_request_over_tcp_from_a_udp_registered_ue_is_its_own(tmp_path: Path) -> None:
    config = switch_config(tmp_path)

    async def scenario() -> None:
        async with Network(config, timers=FAST_TIMERS):
            alice = await started(config, "alice", ALICE_HOST)
            bob = await started(config, "bob", BOB_HOST)
            try:
                answer = await over_tcp(config, ALICE_HOST, lambda port: large_message(
                    config, "alice", alice.contact, ALICE_HOST, port))
                assert answer.status == 200, (answer.status, answer.reason)
                got = await next_request(bob)
                assert got.method == "MESSAGE" and len(got.body) == 1400
                assert got.headers.get("P-Asserted-Identity") == f"<sip:alice@{DOMAIN}>"
            finally:
                await bob.close()
                await alice.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_transport_switch_keeps_spoofing_out(tmp_path: Path) -> None:
    """Another identity, another address, another Contact, a shared address, or the
    switch turned off: 403 each time, and nothing reaches bob."""
    config = switch_config(tmp_path)

    async def scenario() -> None:
        async with Network(config, timers=FAST_TIMERS):
            alice = await started(config, "alice", ALICE_HOST)
            bob = await started(config, "bob", BOB_HOST)
            try:
                cases = [
                    (ALICE_HOST, "bob", alice.contact),                  # not alice's identity
                    (OTHER_HOST, "alice", alice.contact),                # not alice's address
                    (ALICE_HOST, "alice", f"sip:alice@{ALICE_HOST}:1"),  # not her Contact
                ]
                for host, sender, contact in cases:
                    answer = await over_tcp(config, host, lambda port, h=host, s=sender,
                                            c=contact: large_message(config, s, c, h, port))
                    assert answer.status == 403, (host, sender, contact, answer.reason)
                # bob registers from alice's address too: the address no longer says who
                other = await started(config, "bob", ALICE_HOST)
                try:
                    answer = await over_tcp(config, ALICE_HOST, lambda port: large_message(
                        config, "alice", alice.contact, ALICE_HOST, port))
                    assert answer.status == 403
                    assert "several users are registered from 127.0.0.2" in answer.reason
                finally:
                    await other.close()
                with pytest.raises(TimeoutError):
                    await next_request(bob, 0.5)
            finally:
                await bob.close()
                await alice.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_transport_switch_off(tmp_path: Path) -> None:
    config = switch_config(tmp_path, "off")

    async def scenario() -> None:
        async with Network(config, timers=FAST_TIMERS):
            alice = await started(config, "alice", ALICE_HOST)
            try:
                answer = await over_tcp(config, ALICE_HOST, lambda port: large_message(
                    config, "alice", alice.contact, ALICE_HOST, port))
                assert answer.status == 403 and answer.reason == "Forbidden - not registered"
            finally:
                await alice.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_udp_request_from_a_tcp_registered_ue_is_its_own(tmp_path: Path) -> None:
    """The other way (linphone registered over TCP sends its REFER over UDP): a
    datagram from the address and port its TCP Contact names is that UE's."""
    config = switch_config(tmp_path)

    async def scenario() -> None:
        async with Network(config, timers=FAST_TIMERS):
            endpoint = SipEndpoint(FAST_TIMERS)
            _, port = await endpoint.listen("udp", ALICE_HOST, 0)
            await endpoint.listen("tcp", ALICE_HOST, port, reuse_port=True)
            contact = f"sip:alice@{ALICE_HOST}:{port};transport=tcp"
            pcscf = config.pcscf
            bob = await started(config, "bob", BOB_HOST)
            try:
                reg = await register(endpoint, "alice", "alice-secret", DOMAIN,
                                     Destination("tcp", pcscf.host, pcscf.port),
                                     contact=contact)
                assert reg.ok
                request = build_request(
                    "MESSAGE", f"sip:bob@{DOMAIN}", f"<sip:alice@{DOMAIN}>",
                    f"<sip:bob@{DOMAIN}>", contact=contact,
                    route=[f"<sip:{pcscf.host}:{pcscf.port};lr>"], body=b"hello",
                    content_type="text/plain")  # no transport=tcp: over UDP
                answer = await endpoint.request(request).final()
                assert answer.status == 200, (answer.status, answer.reason)
                got = await next_request(bob)
                assert got.headers.get("P-Asserted-Identity") == f"<sip:alice@{DOMAIN}>"
            finally:
                await bob.close()
                await endpoint.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
