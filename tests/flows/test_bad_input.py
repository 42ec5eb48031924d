"""Bad input at the messaging AS, through the core and straight from a trusted
peer: a 4xx whose reason says what is wrong, never a 500 or a traceback
(SipEndpoint's one failure path, docs/security.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from imsbox.config import Config, SecurityConfig
from imsbox.ims.provisioning import add_user
from imsbox.rcs import cpm
from imsbox.serve import Network
from imsbox.sip.endpoint import SipEndpoint
from imsbox.sip.message import Request, Response
from imsbox.sip.transport.base import Destination, Flow
from imsbox.sip.ua.dialog import build_request
from imsbox.store import open_store
from imsbox.testing import FAST_TIMERS, LoopbackPorts, TestUe, write_loopback_config

pytestmark = pytest.mark.timeout(40)
DOMAIN = "ims.test"
HOST = "127.0.0.1"
BOB = f"sip:bob@{DOMAIN}"
CHAT_SDP = (b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=message 7777 TCP/MSRP *\r\na=accept-types:message/cpim\r\n"
            b"a=setup:active\r\na=path:msrp://127.0.0.1:7777/abc;tcp\r\na=sendrecv\r\n")

# (method, content type, the header to spoil and its value, what the reason names)
CASES = [
    ("MESSAGE", "*", None, "Content-Type"),
    ("MESSAGE", "tel:x", None, "Content-Type"),
    ("MESSAGE", "text/pl\x00ain", None, "Content-Type"),
    ("INVITE", "application/sdp", ("Contact", "\\"), "Contact"),
    ("INVITE", "application/sdp", ("Contact", None), "Contact"),
]


def bad_request(case: tuple[str, str, tuple[str, str | None] | None, str], sender: str,
                route: list[str], contact: str) -> Request:
    method, content_type, spoil, _ = case
    service = cpm.CpmService.MSG if method == "MESSAGE" else cpm.CpmService.SESSION
    body = b"hello" if method == "MESSAGE" else CHAT_SDP
    request = build_request(method, BOB, f"<{sender}>", f"<{BOB}>", route=route, body=body,
                            content_type="text/plain", contact=contact,
                            headers=cpm.cpm_request_headers(service, "conv-bad"))
    request.set_header("Content-Type", content_type)
    if spoil is not None:
        name, value = spoil
        request.remove_header(name)
        if value is not None:
            request.add_header(name, value)
    return request


def check(response: Response, case: tuple[object, ...],
          caplog: pytest.LogCaptureFixture) -> None:
    names = case[3]
    assert 400 <= response.status < 500, (case, response)
    assert response.reason not in ("", "Bad Request"), (case, response.reason)
    assert isinstance(names, str) and names in response.reason, (case, response.reason)
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]




def run(tmp_path: Path, scenario: Callable[[Config, TestUe, TestUe], Awaitable[None]],
        trusted: tuple[tuple[str, int], ...] = ()) -> None:
    _, config = write_loopback_config(tmp_path)
    config = replace(config, security=SecurityConfig(trusted_peers=trusted))

    async def main() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "alice", "alice-secret")
            await add_user(store, DOMAIN, "bob", "bob-secret")
        async with Network(config, timers=FAST_TIMERS):
            alice = await TestUe("alice", "alice-secret", config).start()
            bob = await TestUe("bob", "bob-secret", config).start()
            try:
                assert (await alice.register()).ok and (await bob.register()).ok
                await scenario(config, alice, bob)
            finally:
                await alice.close()
                await bob.close()
    asyncio.run(asyncio.wait_for(main(), 35))


@pytest.mark.parametrize("case", CASES, ids=["ct-star", "ct-tel", "nul", "contact-bs",
                                             "no-contact"])
def test_bad_input_through_the_core(tmp_path: Path, case: tuple[object, ...],
                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def scenario(config: Config, alice: TestUe, bob: TestUe) -> None:
        request = bad_request(case, alice.aor, alice._route(), alice.contact)  # type: ignore[arg-type]
        flow = Flow("udp", alice.endpoint.listening["udp"], (alice.pcscf.host, alice.pcscf.port))
        response = await alice.endpoint.request(request, alice.pcscf, flow=flow).final()
        check(response, case, caplog)
    run(tmp_path, scenario)


@pytest.mark.parametrize("case", CASES, ids=["ct-star", "ct-tel", "nul", "contact-bs",
                                             "no-contact"])
def test_bad_input_straight_to_the_as(tmp_path: Path, case: tuple[object, ...],
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    port = LoopbackPorts()()

    async def scenario(config: Config, alice: TestUe, bob: TestUe) -> None:
        peer = SipEndpoint(FAST_TIMERS)   # stands in for the S-CSCF: a trusted peer
        await peer.listen("udp", HOST, port)
        try:
            request = bad_request(case, alice.aor, [], f"sip:as-peer@{HOST}:{port}")  # type: ignore[arg-type]
            request.add_header("P-Asserted-Identity", f"<{alice.aor}>")
            dest = Destination("udp", HOST, config.messaging_as.port)
            response = await peer.request(request, dest).final()
            check(response, case, caplog)
        finally:
            await peer.close()
    run(tmp_path, scenario, trusted=((HOST, port),))
