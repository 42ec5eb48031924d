"""Closer to the seeds on the wire (issue 10): headers of the requests the
messaging AS and the core put on the wire, through the real core on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest
from helpers import CORE_ROLES, ues
from test_messaging_as import (
    ALICE,
    BOB,
    chat_offer,
    cpim_text,
    messaging_as,
    next_message,
    pager,
    provision,
    registered,
    run,
)

from imsbox.config import Config
from imsbox.msrp import MsrpEndpoint
from imsbox.rcs import cpm
from imsbox.serve import Network
from imsbox.sip.headers import NameAddr
from imsbox.sip.message import Request
from imsbox.sip.transaction import TimerValues
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config

pytestmark = pytest.mark.timeout(40)


def record_routes(request: Request) -> list[str]:
    return [str(NameAddr.parse(v.strip()).uri) for value in
            request.headers.get_all("Record-Route") for v in value.split(",")]


def test_one_record_route_per_node_per_session_case(tmp_path: Path) -> None:
    """P-CSCF and S-CSCF once on the originating side, once on the terminating
    side: the S-CSCF does not record again when the AS hands the request back."""
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), \
                ues(config, "alice", "bob") as (alice, bob):
            await registered(alice), await registered(bob)
            body = cpim_text(ALICE, BOB, "hi", "rr-1")
            assert (await pager(alice, BOB, body, "conv-rr")).status == 200
            received = await next_message(bob)
            routes = record_routes(received)
            scscf = [r for r in routes if f":{config.scscf.port}" in r]
            pcscf = [r for r in routes if f":{config.pcscf.port}" in r]
            assert len(scscf) == 2 and len(pcscf) == 2, routes
            assert len(routes) == 4, routes

    run(tmp_path, scenario)


def test_psi_without_its_as_gets_480_with_a_reason(tmp_path: Path) -> None:
    """A group URI while no conference AS runs: today a bare 500 (issue 10). A chat
    INVITE to it is not stored for later either (nobody registers as a group)."""
    group = "sip:group-friends@ims.test"

    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS, roles=CORE_ROLES) as net, \
                ues(config, "alice") as (alice,), MsrpEndpoint() as msrp:
            assert "conference" not in net.nodes
            await registered(alice)
            response = await pager(alice, group, cpim_text(ALICE, group, "hi", "g-1"), "conv-g")
            assert response.status == 480
            assert response.reason.endswith(f"no answer from the AS of {group}")

            session = msrp.create_session(setup="active")
            call = await alice.call(group, chat_offer(session, msrp), cpm.cpm_request_headers(
                cpm.CpmService.SESSION, "conv-g"))
            final = await asyncio.wait_for(call.wait_final(), 10)
            assert final is not None and final.status == 480
            assert "no answer from the AS" in final.reason
            assert await messaging_as(net).store.messages.deferred(group, 0.0) == []

    run(tmp_path, scenario)


def test_deferred_delivery_from_the_as_has_the_seed_headers(tmp_path: Path) -> None:
    """The AS's own MESSAGE: Contact with the ICSI and +sip.instance, no-fork."""
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), \
                ues(config, "alice", "bob") as (alice, bob):
            await registered(alice)
            body = cpim_text(ALICE, BOB, "later", "wire-d1")
            assert (await pager(alice, BOB, body, "conv-w")).status == 202
            await registered(bob)
            received = await next_message(bob)
            assert received.body == body
            assert received.headers.get("Request-Disposition") == "no-fork"
            (contact,) = received.contact
            assert cpm.parse_icsi_ref(contact.params.get(cpm.ICSI_REF_TAG) or "") == \
                [cpm.CpmService.MSG]
            assert (contact.params.get("+sip.instance") or "").startswith("<urn:uuid:")

    run(tmp_path, scenario)


def test_pager_from_the_ue_is_not_forked(tmp_path: Path) -> None:
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), \
                ues(config, "alice", "bob") as (alice, bob):
            await registered(alice), await registered(bob)
            body = cpim_text(ALICE, BOB, "now", "wire-p1")
            assert (await pager(alice, BOB, body, "conv-p")).status == 200
            assert (await next_message(bob)).headers.get("Request-Disposition") == "no-fork"

    run(tmp_path, scenario)


def test_cpm_session_far_leg_has_session_timers(tmp_path: Path) -> None:
    """The AS's INVITE of an anchored chat: Supported: timer, Session-Expires, Min-SE
    (seed 003 CPM session)."""
    async def scenario(config: Config) -> None:
        async with Network(config, timers=FAST_TIMERS), \
                ues(config, "alice", "bob") as (alice, bob), MsrpEndpoint() as msrp:
            await registered(alice), await registered(bob)
            session = msrp.create_session(setup="active")
            call = await alice.call(BOB, chat_offer(session, msrp), cpm.cpm_request_headers(
                cpm.CpmService.SESSION, "conv-t"))
            assert bob.ua is not None
            incoming = await asyncio.wait_for(bob.ua.incoming.get(), 5)
            invite = incoming.request
            supported = [s.strip() for v in invite.headers.get_all("Supported")
                         for s in v.split(",")]
            assert "timer" in supported
            assert (invite.headers.get("Session-Expires") or "").split(";")[0] == "3600"
            assert invite.headers.get("Min-SE") == "90"
            incoming.reject(486)
            await asyncio.wait_for(call.wait_final(), 5)

    run(tmp_path, scenario)


@pytest.mark.timeout(60)
def test_message_to_psi_whose_as_is_silent_gets_480_within_seconds(tmp_path: Path) -> None:
    """RFC 3261 timers (T1 0.5 s): a MESSAGE to a group URI whose AS is down but
    refuses nothing (hung, or its host gone: here sockets on its port that never
    answer) is answered 480 by the I-CSCF after 8*T1 of silence, not 408 at Timer F
    (32 s, when the UE's own transaction gives up too)."""
    group = "sip:group-friends@ims.test"
    _, config = write_loopback_config(tmp_path)
    provision(config)
    node = config.conference_as

    async def scenario() -> None:
        with SilentNode(node.host, node.port) as silent:
            async with Network(config, roles=CORE_ROLES) as net:  # the silent node instead
                assert "conference_as" not in net.nodes
                alice = await TestUe("alice", "alice-secret", config,
                                     timers=TimerValues()).start()
                try:
                    await registered(alice)
                    body = cpim_text(ALICE, group, "hi", "g-2")
                    response = await asyncio.wait_for(pager(alice, group, body, "conv-g2"), 20)
                finally:
                    await alice.close()
            first = silent.received()
            while first.startswith(b"REGISTER"):  # third-party REGISTERs to the AS go first
                first = silent.received()
            assert first.startswith(b"MESSAGE sip:group-friends@")
        assert response.status == 480
        assert response.reason.endswith(f"no answer from the AS of {group}")

    asyncio.run(scenario())


class SilentNode:
    """UDP and TCP on one port that take requests and never answer."""

    def __init__(self, host: str, port: int) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.udp.bind((host, port))
        self.tcp.bind((host, port))
        self.tcp.listen()
        for sock in (self.udp, self.tcp):
            sock.setblocking(False)
        self.conns: list[socket.socket] = []

    def __enter__(self) -> SilentNode:
        return self

    def __exit__(self, *exc: object) -> None:
        for sock in (self.udp, self.tcp, *self.conns):
            sock.close()

    def received(self) -> bytes:
        """What arrived first, over UDP or TCP."""
        with contextlib.suppress(BlockingIOError):
            return self.udp.recv(65535)
        conn, _ = self.tcp.accept()
        self.conns.append(conn)
        conn.settimeout(1)
        return conn.recv(65535)
