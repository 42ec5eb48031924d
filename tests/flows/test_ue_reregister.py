"""RcsClient keeps its registration fresh when the registrar spells our binding its own way.

A small registrar on loopback UDP (a real SipEndpoint, no core) answers every
REGISTER 200 with a short lifetime and lists our Contact differently from how
we sent it: another URI parameter (``;ob``, not significant in RFC 3261 19.1.4),
the header parameters in another order and case, or a rewritten address with
the lifetime only in the Expires header. The client must keep refreshing
(same Call-ID, CSeq counting up) past two refresh periods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint
from imsbox.sip.headers import Contact
from imsbox.sip.message import Request, Response, new_tag
from imsbox.ue.client import RcsClient, Registered
from imsbox.testing import FAST_TIMERS

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"
GRANTED = 2   # seconds: the client refreshes every second


def listed_reordered(contact: Contact) -> tuple[list[str], str | None]:
    """Our binding with ``;ob`` in the URI and its header parameters reversed, in
    upper case, the lifetime among them; no Expires header."""
    params = [f"{name.upper()}={value}" if value is not None else name.upper()
              for name, value in reversed(list(contact.params))]
    return [f"<{contact.uri};ob>;EXPIRES={GRANTED};" + ";".join(params)], None


def listed_elsewhere(contact: Contact) -> tuple[list[str], str | None]:
    """A binding at another address (as behind a NAT); the lifetime in Expires only."""
    return [f"<sip:alice@192.0.2.7:5070>;expires={GRANTED}"], str(GRANTED)


@dataclass
class Registrar:
    """Answers REGISTER 200 with the bindings ``listing`` makes of the request's Contact."""

    listing: Callable[[Contact], tuple[list[str], str | None]]
    seen: list[Request] = field(default_factory=list)
    endpoint: SipEndpoint | None = None

    async def start(self) -> int:
        self.endpoint = SipEndpoint(FAST_TIMERS, modules=[HandlerModule(self._on_request, "registrar")])
        _, port = await self.endpoint.listen("udp", HOST, 0)
        return port

    def _on_request(self, ctx: ServerContext) -> None:
        request = ctx.request
        self.seen.append(request)
        response = Response.for_request(request, 200, to_tag=new_tag())
        contacts, expires = self.listing(request.contact[0])
        for value in contacts:
            response.add_header("Contact", value)
        if expires is not None:
            response.add_header("Expires", expires)
        ctx.respond(response)

    async def close(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.close()


@pytest.mark.parametrize("listing", [listed_reordered, listed_elsewhere])
def test_client_stays_registered_past_two_refresh_periods(
        listing: Callable[[Contact], tuple[list[str], str | None]]) -> None:
    async def scenario() -> None:
        registrar = Registrar(listing)
        port = await registrar.start()
        alice = RcsClient("alice", "alice-secret", "ims.test", pcscf=(HOST, port),
                          host=HOST, timers=FAST_TIMERS, expires=600)
        try:
            await alice.start()
            assert alice.registration.expires == GRANTED
            await asyncio.sleep(2.6 * GRANTED / 2)   # refreshes due at 1 s and 2 s
            registers = [r for r in registrar.seen if r.method == "REGISTER"]
            assert len(registers) >= 3, [str(r.cseq) for r in registers]
            assert {r.call_id for r in registers} == {registers[0].call_id}
            cseqs = [r.cseq.seq for r in registers]
            assert cseqs == sorted(set(cseqs))
            assert alice.registration.registered and alice.registration.expires == GRANTED
            events = [e for e in alice.pending_events() if isinstance(e, Registered)]
            assert events and all(e.state == "registered" for e in events)
            assert all(e.expires == GRANTED for e in events)
        finally:
            await alice.close()
            await registrar.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))
