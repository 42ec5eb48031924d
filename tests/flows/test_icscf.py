"""The I-CSCF over real loopback sockets, with a real Hss on a SqliteStore.

Plain SipEndpoints stand in for the previous hop (P-CSCF, S-CSCF or AS),
the S-CSCF and the conference AS.  The domain is home2.net so that the
TS 24.247 A.5.1/A.5.2 seed messages can be replayed as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path
from collections.abc import AsyncIterator

import pytest

from imsbox.config import Config
from imsbox.ims.hss import Hss
from imsbox.ims.icscf import Icscf
from imsbox.ims.provisioning import add_user
from imsbox.sip import Request, Response, new_tag, parse
from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint
from imsbox.sip.transaction import TimerValues
from imsbox.sip.transport.base import Destination
from imsbox.store import Psi, PsiKind, RegistrationState, ScscfAssignment, SqliteStore

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"
DOMAIN = "home2.net"
FAST = TimerValues(t1=0.05, t2=0.2, t4=0.2)
FIXTURES = Path(__file__).parents[1] / "fixtures" / "sip"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def free_port() -> int:
    """A port number free for both UDP and TCP on HOST."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port


class Node:
    """A SIP node stand-in: records requests, answers REGISTER/MESSAGE 200, INVITE 486."""

    def __init__(self) -> None:
        self.endpoint = SipEndpoint(FAST, modules=[HandlerModule(self.handle)])
        self.received: asyncio.Queue[Request] = asyncio.Queue()
        self.port = 0

    @property
    def uri(self) -> str:
        return f"sip:{HOST}:{self.port}"

    async def start(self) -> None:
        self.port = free_port()
        await self.endpoint.listen("udp", HOST, self.port)
        await self.endpoint.listen("tcp", HOST, self.port)

    def handle(self, ctx: ServerContext) -> None:
        if ctx.request.method == "ACK":
            return
        self.received.put_nowait(ctx.request)
        status = 486 if ctx.request.method == "INVITE" else 200
        ctx.respond(Response.for_request(ctx.request, status, to_tag=new_tag()))

    async def next(self) -> Request:
        return await asyncio.wait_for(self.received.get(), 5)


@dataclass(slots=True)
class Net:
    icscf: Icscf
    hss: Hss
    store: SqliteStore
    scscf: Node
    conf_as: Node
    sender: Node

    @property
    def dest(self) -> Destination:
        return Destination("udp", HOST, self.icscf.config.icscf.port)

    async def send(self, request: Request) -> Response:
        return await self.sender.endpoint.request(request, self.dest).final()

    async def registered(self, private_id: str) -> None:
        """As if the S-CSCF had registered the user (SAR done)."""
        await self.store.subscribers.set_assignment(
            ScscfAssignment(private_id, self.scscf.uri, RegistrationState.REGISTERED))


@contextlib.asynccontextmanager
async def network(tmp_path: Path) -> AsyncIterator[Net]:
    scscf, conf_as, sender = Node(), Node(), Node()
    for node in (scscf, conf_as, sender):
        await node.start()
    config = (Config(domain=DOMAIN)
              .with_node("icscf", port=free_port())
              .with_node("scscf", port=scscf.port)
              .with_node("conference_as", port=conf_as.port))
    store = await SqliteStore.in_data_dir(tmp_path).open()
    await add_user(store, DOMAIN, "alice", "secret", "+15550001")
    await add_user(store, DOMAIN, "user2_public1", "secret")
    await store.subscribers.put_psi(Psi(f"sip:conf-*@{DOMAIN}", conf_as.uri, PsiKind.WILDCARD))
    await store.subscribers.put_psi(Psi(f"sip:conference1@{DOMAIN}", conf_as.uri,
                                        PsiKind.EXACT))
    hss = Hss(store.subscribers, DOMAIN)  # no S-CSCF names: the I-CSCF falls back to config.scscf
    icscf = Icscf(config, hss, timers=FAST)
    try:
        await icscf.start()
        yield Net(icscf, hss, store, scscf, conf_as, sender)
    finally:
        await icscf.close()
        for node in (scscf, conf_as, sender):
            await node.endpoint.close()
        await store.close()


def register(public_id: str, username: str | None = None, expires: int = 600) -> Request:
    request = Request("REGISTER", f"sip:{DOMAIN}", [
        ("From", f"<{public_id}>;tag={new_tag()}"),
        ("To", f"<{public_id}>"),
        ("Call-ID", f"{new_tag()}@ue"),
        ("CSeq", "1 REGISTER"),
        ("Path", f"<sip:term@{HOST}:5060;lr>"),
        ("Contact", f"<sip:ue@{HOST}:5999>"),
        ("Expires", str(expires)),
        ("P-Visited-Network-ID", DOMAIN),
    ])
    if username is not None:
        request.add_header("Authorization", f'Digest username="{username}", '
                           f'realm="{DOMAIN}", nonce="", uri="sip:{DOMAIN}", response=""')
    return request


def invite(target: str) -> Request:
    return Request("INVITE", target, [
        ("From", f"<sip:bob@{DOMAIN}>;tag={new_tag()}"),
        ("To", f"<{target}>"),
        ("Call-ID", f"{new_tag()}@scscf"),
        ("CSeq", "1 INVITE"),
        ("Contact", f"<sip:bob@{HOST}:5998>"),
        ("P-Asserted-Identity", f"<sip:bob@{DOMAIN}>"),
    ])


def fixture(name: str) -> Request:
    message = parse((FIXTURES / name).read_bytes())
    assert isinstance(message, Request)
    return message


def routes(request: Request) -> list[str]:
    return [str(r.uri) for r in request.route]


def headers_but(request: Request, *skip: str) -> list[tuple[str, str]]:
    return [(n.lower(), v) for n, v in request.headers if n.lower() not in skip]


# -- REGISTER ---------------------------------------------------------------------------

def test_register_goes_to_the_scscf_with_request_uri_unchanged(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            for request in (register(f"sip:alice@{DOMAIN}", f"alice@{DOMAIN}"),
                            register(f"sip:alice@{DOMAIN}", "alice"),  # bare username
                            register(f"sip:alice@{DOMAIN}")):          # no Authorization
                response = await net.send(request)
                assert response.status == 200
                at_scscf = await net.scscf.next()
                assert str(at_scscf.uri) == f"sip:{DOMAIN}"
                assert routes(at_scscf) == [f"{net.scscf.uri};lr"]
                assert at_scscf.headers.get_all("Path") == [f"<sip:term@{HOST}:5060;lr>"]
                assert "Record-Route" not in at_scscf.headers
                assert at_scscf.max_forwards == 69
                icscf_port = net.icscf.config.icscf.port
                assert (at_scscf.via[0].host, at_scscf.via[0].port) == (HOST, icscf_port)
                assert at_scscf.via[1].port == net.sender.port
    run(main())


def test_register_for_unknown_user_looks_like_a_first_registration(tmp_path: Path) -> None:
    """An unknown user (or a private identity not owning the public one) goes to
    the default S-CSCF like a first registration: its challenge, which can never
    be answered, ends in 403 exactly as for a wrong password, so nothing tells
    an unknown user from a known one.  Roaming refused by the HSS is 403 here."""
    async def main() -> None:
        async with network(tmp_path) as net:
            for request in (register(f"sip:nobody@{DOMAIN}", f"nobody@{DOMAIN}"),
                            register(f"sip:alice@{DOMAIN}", f"user2_public1@{DOMAIN}")):
                assert (await net.send(request)).status == 200  # the stand-in's answer
                at_scscf = await net.scscf.next()
                assert routes(at_scscf) == [f"{net.scscf.uri};lr"]
                assert at_scscf.to.uri == request.to.uri

            roaming = register(f"sip:alice@{DOMAIN}", "alice")
            roaming.set_header("P-Visited-Network-ID", "elsewhere.example")
            refused = await net.send(roaming)
            assert refused.status == 403
            assert net.scscf.received.empty()
    run(main())


# -- initial requests -------------------------------------------------------------------

def test_invite_to_registered_user_goes_to_its_scscf(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            await net.registered(f"alice@{DOMAIN}")
            for target in (f"sip:alice@{DOMAIN}", "tel:+15550001"):
                response = await net.send(invite(target))
                assert response.status == 486  # the S-CSCF's answer comes back
                at_scscf = await net.scscf.next()
                assert str(at_scscf.uri) == target
                assert routes(at_scscf) == [f"{net.scscf.uri};lr"]  # terminating: no 'orig'
                assert "Record-Route" not in at_scscf.headers
                assert at_scscf.headers.get_all("P-Asserted-Identity") == \
                    [f"<sip:bob@{DOMAIN}>"]
    run(main())


def test_a52_invite_from_conference_as_to_user(tmp_path: Path) -> None:
    """TS 24.247 A.5.2 steps 1-4: the I-CSCF asks the HSS and forwards to the S-CSCF."""
    async def main() -> None:
        async with network(tmp_path) as net:
            await net.registered(f"user2_public1@{DOMAIN}")
            response = await net.send(fixture("002_a52_01_invite_mrfc_as_to_icscf.sip"))
            assert response.status == 486
            at_scscf = await net.scscf.next()
            expected = fixture("002_a52_04_invite_icscf_to_scscf.sip")
            assert routes(at_scscf) == [f"{net.scscf.uri};lr"]
            assert headers_but(at_scscf, "via", "route") == headers_but(expected, "via")
            assert at_scscf.body == expected.body
    run(main())


def test_a51_invite_to_conference_psi_goes_to_the_as(tmp_path: Path) -> None:
    """TS 24.247 A.5.1 steps 6-9: the conference URI is a PSI; the HSS names its AS
    and the I-CSCF forwards straight to it (no Route, no Record-Route)."""
    async def main() -> None:
        async with network(tmp_path) as net:
            response = await net.send(fixture("002_a51_06_invite_scscf_to_icscf.sip"))
            assert response.status == 486
            at_as = await net.conf_as.next()
            expected = fixture("002_a51_09_invite_icscf_to_mrfc_as.sip")
            assert str(at_as.uri) == "sip:conference1@home2.net"
            assert not at_as.route  # sent straight to the AS, as in the seed
            assert headers_but(at_as, "via") == headers_but(expected, "via")
            assert net.scscf.received.empty()

            await net.send(invite(f"sip:conf-42@{DOMAIN}"))  # wildcard PSI
            at_as = await net.conf_as.next()
            assert str(at_as.uri) == f"sip:conf-42@{DOMAIN}"
            assert not at_as.route and at_as.via[0].port == net.icscf.config.icscf.port
    run(main())


def test_unknown_user_is_404_and_unregistered_user_480(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            unknown = await net.send(invite(f"sip:nobody@{DOMAIN}"))
            assert unknown.status == 404
            foreign = await net.send(invite("sip:alice@elsewhere.example"))
            assert foreign.status == 404
            # known, but not registered and without services for the unregistered state
            not_registered = await net.send(invite(f"sip:alice@{DOMAIN}"))
            assert not_registered.status == 480
            assert net.scscf.received.empty() and net.conf_as.received.empty()
    run(main())
