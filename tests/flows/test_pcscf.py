"""The P-CSCF over real loopback sockets: a plain SipEndpoint is the UE,
another stands in for the I-CSCF/S-CSCF (answering REGISTER like the S-CSCF)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from pathlib import Path
from collections.abc import AsyncIterator

import pytest

from imsbox.config import Config
from imsbox.ims.pcscf import Pcscf
from imsbox.sip import Request, Response, new_tag
from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint
from imsbox.sip.transaction import TimerValues
from imsbox.sip.transport.base import Destination, Flow
from imsbox.sip.transport.tls import client_context, ensure_self_signed, server_context
from imsbox.sip.uri import parse_uri

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"
DOMAIN = "ims.test"
FAST = TimerValues(t1=0.05, t2=0.2, t4=0.2)
ALICE = f"sip:alice@{DOMAIN}"
ALICE_TEL = "tel:+15550001"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def free_ports(hosts: tuple[str, ...], count: int) -> list[int]:
    """Port numbers free for UDP and TCP on every host (held until all are found)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            family = socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET
            probe = socket.socket(family, socket.SOCK_DGRAM)
            held.append(probe)
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
            try:
                for host in hosts:
                    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
                    kinds = (socket.SOCK_STREAM,) if host == hosts[0] else \
                        (socket.SOCK_DGRAM, socket.SOCK_STREAM)
                    for kind in kinds:
                        sock = socket.socket(fam, kind)
                        held.append(sock)
                        sock.bind((host, port))
            except OSError:
                continue
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


class Core:
    """The I-CSCF/S-CSCF stand-in: 200 to REGISTER with Service-Route and
    P-Associated-URI, 486 to INVITE, 200 to anything else."""

    def __init__(self) -> None:
        self.endpoint = SipEndpoint(FAST, modules=[HandlerModule(self.handle)])
        self.received: asyncio.Queue[ServerContext] = asyncio.Queue()
        self.port = 0

    @property
    def service_route(self) -> str:
        return f"<sip:orig@{HOST}:{self.port};lr>"

    async def start(self) -> None:
        self.port = free_ports((HOST,), 1)[0]
        await self.endpoint.listen("udp", HOST, self.port)
        await self.endpoint.listen("tcp", HOST, self.port)

    def handle(self, ctx: ServerContext) -> None:
        request = ctx.request
        if request.method == "ACK":
            return
        self.received.put_nowait(ctx)
        if request.method == "REGISTER":
            ctx.respond(self.register_ok(request))
        elif request.method == "INVITE":
            ctx.respond(Response.for_request(request, 486, to_tag=new_tag()))
        else:
            ctx.respond(Response.for_request(request, 200, to_tag=new_tag()))

    def register_ok(self, request: Request) -> Response:
        response = Response.for_request(request, 200, to_tag=new_tag())
        default = request.expires()
        for contact in request.contact:
            expires = contact.expires if contact.expires is not None else default
            if expires:
                response.add_header("Contact", f"<{contact.uri}>;expires={expires}")
        for path in request.headers.get_all("Path"):
            response.add_header("Path", path)
        response.add_header("Service-Route", self.service_route)
        response.add_header("P-Associated-URI", f"<{ALICE}>, <{ALICE_TEL}>")
        return response

    async def next(self) -> Request:
        ctx = await asyncio.wait_for(self.received.get(), 5)
        return ctx.request

    async def send_terminating(self, pcscf_port: int, contact: str) -> Response:
        """A MESSAGE as the S-CSCF sends it: Route = the stored Path, R-URI = contact."""
        request = Request("MESSAGE", contact, [
            ("Route", f"<sip:term@{HOST}:{pcscf_port};lr>"),
            ("From", f"<sip:bob@{DOMAIN}>;tag={new_tag()}"),
            ("To", f"<{ALICE}>"),
            ("Call-ID", f"{new_tag()}@core"),
            ("CSeq", "1 MESSAGE"),
            ("P-Asserted-Identity", f"<sip:bob@{DOMAIN}>"),
            ("P-Charging-Vector", 'icid-value="core-icid"'),
            ("Content-Type", "text/plain"),
        ], b"hello alice")
        return await self.endpoint.request(request).final()


class Ue:
    """A UE: a plain SipEndpoint on UDP that answers requests 200."""

    def __init__(self, host: str = HOST, ssl_context: object | None = None) -> None:
        self.host = host
        self.endpoint = SipEndpoint(FAST, client_ssl_context=ssl_context,
                                    modules=[HandlerModule(self.handle)])
        self.received: asyncio.Queue[tuple[Request, Flow]] = asyncio.Queue()
        self.port = 0
        self.cseq = 0
        self.call_id = f"{new_tag()}@ue"

    async def start(self) -> None:
        _, self.port = await self.endpoint.listen("udp", self.host, 0)

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def handle(self, ctx: ServerContext) -> None:
        if ctx.request.method == "ACK":
            return
        self.received.put_nowait((ctx.request, ctx.flow))
        response = Response.for_request(ctx.request, 200, to_tag=new_tag())
        response.add_header("P-Asserted-Identity", "<sip:mallory@ims.test>")  # ignored
        ctx.respond(response)

    async def register(self, dest: Destination, contact: str, expires: int = 600) -> Response:
        self.cseq += 1
        request = Request("REGISTER", f"sip:{DOMAIN}", [
            ("Route", f"<sip:{dest.host if ':' not in dest.host else '[' + dest.host + ']'}"
                      f":{dest.port};lr>"),
            ("From", f"<{ALICE}>;tag={new_tag()}"),
            ("To", f"<{ALICE}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
            ("Contact", f"<{contact}>"),
            ("Expires", str(expires)),
        ])
        return await self.endpoint.request(request, dest).final()

    async def send(self, method: str, dest: Destination, *headers: tuple[str, str],
                   target: str = f"sip:bob@{DOMAIN}") -> Response:
        request = Request(method, target, [
            ("Route", f"<sip:{HOST}:{dest.port};lr>"),
            ("From", f"<{ALICE}>;tag={new_tag()}"),
            ("To", f"<{target}>"),
            ("Call-ID", f"{new_tag()}@ue"),
            ("CSeq", f"1 {method}"),
            ("Contact", f"<sip:alice@{self.hostport}>"),
            *headers,
        ], b"hi" if method == "MESSAGE" else b"")
        if method == "MESSAGE":
            request.add_header("Content-Type", "text/plain")
        return await self.endpoint.request(request, dest).final()

    async def next(self) -> tuple[Request, Flow]:
        return await asyncio.wait_for(self.received.get(), 5)


@contextlib.asynccontextmanager
async def network(hosts: tuple[str, ...] = (HOST,), ssl_context: object | None = None,
                  ) -> AsyncIterator[tuple[Pcscf, Core, int, int]]:
    core = Core()
    await core.start()
    port, tls_port = free_ports(hosts, 2)
    transports = ("udp", "tcp", "tls") if ssl_context is not None else ("udp", "tcp")
    config = (Config(domain=DOMAIN)
              .with_node("pcscf", hosts=hosts, port=port, tls_port=tls_port,
                         transports=transports)
              .with_node("icscf", port=core.port)
              .with_node("scscf", port=core.port))
    pcscf = Pcscf(config, timers=FAST, ssl_context=ssl_context)  # type: ignore[arg-type]
    try:
        await pcscf.start()
        yield pcscf, core, port, tls_port
    finally:
        await pcscf.close()
        await core.endpoint.close()


async def registered_ue(port: int, transport: str = "udp", host: str = HOST,
                        contact: str | None = None) -> tuple[Ue, Response]:
    ue = Ue(host)
    await ue.start()
    contact = contact or f"sip:alice@{ue.hostport}"
    response = await ue.register(Destination(transport, host, port), contact)
    return ue, response


def assert_term_path(request: Request, port: int, ob: bool) -> None:
    """Our one Path: ``sip:term.TOKEN@P-CSCF;lr`` (RFC 5626 5.2 flow token), ;ob per flow."""
    (path,) = request.headers.get_all("Path")
    token = r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"
    assert re.fullmatch(rf"<sip:term\.{token}@{re.escape(HOST)}:{port};lr{';ob' if ob else ''}>",
                        path), path


def uris(values: list) -> list[str]:
    return [str(v.uri) for v in values]


# -- REGISTER ---------------------------------------------------------------------------

def test_register_gets_path_and_goes_to_icscf_unchanged() -> None:
    async def main() -> None:
        async with network() as (pcscf, core, port, _):
            ue, response = await registered_ue(port)
            at_core = await core.next()
            assert str(at_core.uri) == f"sip:{DOMAIN}"  # Request-URI unchanged
            assert_term_path(at_core, port, ob=False)  # UDP, no outbound asked
            assert "path" in at_core.tokens("Supported")
            assert at_core.header("P-Visited-Network-ID") == DOMAIN
            assert "icid-value=" in (at_core.header("P-Charging-Vector") or "")
            assert not at_core.route  # the UE's Route to us is gone
            assert at_core.max_forwards == 69
            vias = at_core.via
            assert (vias[0].host, vias[0].port) == (HOST, port)
            assert vias[1].port == ue.port and len(vias) == 2

            assert response.status == 200
            assert response.header("P-Charging-Vector") is None
            registration = pcscf.registrations.by_contact(parse_uri(f"sip:alice@{ue.hostport}"))
            assert registration is not None
            assert registration.flow.transport == "udp"
            assert registration.flow.remote == (HOST, ue.port)
            assert registration.service_route == (core.service_route,)
            assert registration.public_ids == (f"<{ALICE}>", f"<{ALICE_TEL}>")
            await ue.endpoint.close()
    run(main())


def test_deregistration_forgets_the_ue() -> None:
    async def main() -> None:
        async with network() as (pcscf, core, port, _):
            ue, _ = await registered_ue(port)
            await core.next()
            assert len(pcscf.registrations) == 1
            dest = Destination("udp", HOST, port)
            response = await ue.register(dest, f"sip:alice@{ue.hostport}", expires=0)
            assert response.status == 200
            assert len(pcscf.registrations) == 0
            await core.next()
            forbidden = await ue.send("MESSAGE", dest)
            assert forbidden.status == 403
            assert core.received.empty()
            await ue.endpoint.close()
    run(main())


# -- originating requests ---------------------------------------------------------------------

def test_message_from_registered_ue_gets_asserted_identity_and_service_route() -> None:
    async def main() -> None:
        async with network() as (_, core, port, _):
            ue, _ = await registered_ue(port)
            await core.next()
            dest = Destination("udp", HOST, port)
            response = await ue.send(
                "MESSAGE", dest,
                ("P-Asserted-Identity", f"<sip:bob@{DOMAIN}>"),  # spoofed by the UE
                ("P-Access-Network-Info", "IEEE-802.11"),
                ("P-Charging-Vector", 'icid-value="from-ue"'))
            assert response.status == 200
            at_core = await core.next()
            assert at_core.headers.get_all("P-Asserted-Identity") == [f"<{ALICE}>"]
            assert uris(at_core.route) == [f"sip:orig@{HOST}:{core.port};lr"]
            assert uris(at_core.record_route) == [f"sip:{HOST}:{port};lr"]
            assert at_core.max_forwards == 69
            assert (at_core.via[0].host, at_core.via[0].port) == (HOST, port)
            assert at_core.via[1].port == ue.port
            assert at_core.header("P-Access-Network-Info") == "IEEE-802.11"
            assert "from-ue" not in (at_core.header("P-Charging-Vector") or "")
            assert str(at_core.uri) == f"sip:bob@{DOMAIN}"
            await ue.endpoint.close()
    run(main())


def test_p_preferred_identity_honoured_only_from_the_registered_set() -> None:
    async def main() -> None:
        async with network() as (_, core, port, _):
            ue, _ = await registered_ue(port)
            await core.next()
            dest = Destination("udp", HOST, port)
            await ue.send("MESSAGE", dest, ("P-Preferred-Identity", f'"Alice" <{ALICE_TEL}>'))
            honoured = await core.next()
            assert honoured.headers.get_all("P-Asserted-Identity") == [f'Alice <{ALICE_TEL}>']
            assert honoured.header("P-Preferred-Identity") is None

            await ue.send("MESSAGE", dest, ("P-Preferred-Identity", f"<sip:bob@{DOMAIN}>"))
            ignored = await core.next()
            assert ignored.headers.get_all("P-Asserted-Identity") == [f"<{ALICE}>"]
            assert ignored.header("P-Preferred-Identity") is None
            await ue.endpoint.close()
    run(main())


def test_invite_from_registered_ue_is_record_routed_and_answered() -> None:
    async def main() -> None:
        async with network() as (_, core, port, _):
            ue, _ = await registered_ue(port, "tcp")
            await core.next()
            response = await ue.send("INVITE", Destination("tcp", HOST, port))
            assert response.status == 486  # the core's answer, through the P-CSCF
            at_core = await core.next()
            assert at_core.method == "INVITE"
            assert uris(at_core.record_route) == [f"sip:{HOST}:{port};lr"]
            assert at_core.headers.get_all("P-Asserted-Identity") == [f"<{ALICE}>"]
            assert uris(at_core.route) == [f"sip:orig@{HOST}:{core.port};lr"]
            await ue.endpoint.close()
    run(main())


def test_unregistered_ue_is_forbidden() -> None:
    async def main() -> None:
        async with network() as (_, core, port, _):
            ue = Ue()
            await ue.start()
            for transport in ("udp", "tcp"):
                response = await ue.send("MESSAGE", Destination(transport, HOST, port),
                                         ("P-Asserted-Identity", f"<{ALICE}>"))
                assert response.status == 403
                assert "not registered" in (response.reason or "")
            assert core.received.empty()
            await ue.endpoint.close()
    run(main())


# -- terminating requests ---------------------------------------------------------------------

def test_terminating_message_uses_the_ues_tcp_connection() -> None:
    async def main() -> None:
        async with network() as (pcscf, core, port, _):
            ue = Ue()
            await ue.start()  # UDP only: nothing listens on the contact's TCP port
            contact = f"sip:alice@{ue.hostport};transport=tcp"
            response = await ue.register(Destination("tcp", HOST, port), contact)
            assert response.status == 200
            await core.next()
            final = await core.send_terminating(port, contact)
            assert final.status == 200
            # the UE's answer reaches the core with an identity the P-CSCF asserted
            assert final.headers.get_all("P-Asserted-Identity") == [f"<{ALICE}>"]
            request, flow = await ue.next()
            assert flow.transport == "tcp" and flow.remote == (HOST, port)
            assert flow.local[1] != ue.port  # the connection the UE opened itself
            assert request.headers.get_all("P-Asserted-Identity") == [f"<sip:bob@{DOMAIN}>"]
            assert uris(request.record_route) == [f"sip:{HOST}:{port};lr"]
            assert request.via[0].transport == "TCP" and request.via[0].port == port
            assert request.header("P-Charging-Vector") is None
            assert str(request.uri) == contact
            assert request.body == b"hello alice"
            await ue.endpoint.close()
    run(main())


def test_terminating_message_over_udp_goes_to_the_source_port() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stray: asyncio.Queue[bytes] = asyncio.Queue()

        class Trap(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
                stray.put_nowait(data)

        trap, _ = await loop.create_datagram_endpoint(Trap, local_addr=(HOST, 0))
        contact_port = trap.get_extra_info("sockname")[1]
        try:
            async with network() as (_, core, port, _):
                contact = f"sip:alice@{HOST}:{contact_port}"  # not where the UE listens
                ue, response = await registered_ue(port, contact=contact)
                assert response.status == 200
                await core.next()
                final = await core.send_terminating(port, contact)
                assert final.status == 200
                request, flow = await ue.next()
                assert flow.transport == "udp" and flow.local == (HOST, ue.port)
                assert str(request.uri) == contact
                assert stray.empty()
                await ue.endpoint.close()
        finally:
            trap.close()
    run(main())


def test_request_from_core_with_a_registered_ues_contact_stays_terminating() -> None:
    """The caller's Contact in a request from the core names another registered
    UE (both on loopback here): still terminating, not that UE's originating."""
    async def main() -> None:
        async with network() as (_, core, port, _):
            caller, _ = await registered_ue(port)
            callee, _ = await registered_ue(port)
            await core.next()
            await core.next()
            request = Request("MESSAGE", f"sip:alice@{callee.hostport}", [
                ("Route", f"<sip:term@{HOST}:{port};lr>"),
                ("From", f"<sip:carol@{DOMAIN}>;tag={new_tag()}"),
                ("To", f"<{ALICE}>"),
                ("Call-ID", f"{new_tag()}@core"),
                ("CSeq", "1 MESSAGE"),
                ("Contact", f"<sip:alice@{caller.hostport}>"),
                ("P-Asserted-Identity", f"<sip:carol@{DOMAIN}>"),
            ])
            final = await core.endpoint.request(request).final()
            assert final.status == 200
            delivered, flow = await callee.next()
            assert flow.local == (HOST, callee.port)
            assert delivered.headers.get_all("P-Asserted-Identity") == [f"<sip:carol@{DOMAIN}>"]
            assert caller.received.empty()
            for ue in (caller, callee):
                await ue.endpoint.close()
    run(main())


def test_terminating_request_for_contact_without_flow_goes_to_the_contact() -> None:
    """A binding the S-CSCF kept across a P-CSCF restart: no flow here, so the
    contact address as written."""
    async def main() -> None:
        async with network() as (pcscf, core, port, _):
            ue = Ue()
            await ue.start()
            assert len(pcscf.registrations) == 0
            final = await core.send_terminating(port, f"sip:alice@{ue.hostport}")
            assert final.status == 200
            request, flow = await ue.next()
            assert flow.local == (HOST, ue.port)
            assert uris(request.record_route) == [f"sip:{HOST}:{port};lr"]
            await ue.endpoint.close()
    run(main())


# -- TLS and IPv6 -----------------------------------------------------------------------------

def test_register_and_terminating_over_tls(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path, [HOST])

    async def main() -> None:
        async with network(ssl_context=server_context(cert, key)) as (pcscf, core, port, tls_port):
            ue = Ue(ssl_context=client_context(cert))
            await ue.start()
            contact = f"sip:alice@{ue.hostport};transport=tls"
            response = await ue.register(Destination("tls", HOST, tls_port), contact)
            assert response.status == 200
            at_core = await core.next()
            assert at_core.via[1].transport == "TLS"
            assert_term_path(at_core, port, ob=True)  # a connection: ;ob
            registration = pcscf.registrations.by_contact(parse_uri(contact))
            assert registration is not None and registration.flow.transport == "tls"

            final = await core.send_terminating(port, contact)
            assert final.status == 200
            _, flow = await ue.next()
            assert flow.transport == "tls" and flow.remote == (HOST, tls_port)
            await ue.endpoint.close()
    run(main())


def test_ipv6_ue() -> None:
    async def main() -> None:
        async with network(hosts=(HOST, "::1")) as (pcscf, core, port, _):
            assert {(d.transport, d.host) for d in pcscf.endpoint.transport.listen_addresses} \
                >= {("udp", "::1"), ("tcp", "::1"), ("udp", HOST), ("tcp", HOST)}
            ue, response = await registered_ue(port, host="::1")
            assert response.status == 200
            at_core = await core.next()
            assert at_core.via[1].host == "[::1]"
            # the Path names the core-facing (first) address
            assert_term_path(at_core, port, ob=False)

            response = await ue.send("MESSAGE", Destination("udp", "::1", port))
            assert response.status == 200
            assert (await core.next()).headers.get_all("P-Asserted-Identity") == [f"<{ALICE}>"]

            final = await core.send_terminating(port, f"sip:alice@{ue.hostport}")
            assert final.status == 200
            request, flow = await ue.next()
            assert flow.remote == ("::1", port)
            assert request.via[0].host == "[::1]"  # our Via names the UE's flow
            await ue.endpoint.close()
    run(main())
