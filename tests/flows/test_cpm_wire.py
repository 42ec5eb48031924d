"""Closer to the seeds on the wire (issue 10): headers of the requests the
messaging AS and the core put on the wire, through the real core on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from imsbox.config import Config
from imsbox.serve import Network
from imsbox.sip.headers import NameAddr
from imsbox.sip.message import Request
from imsbox.ue.testing import FAST_TIMERS

from helpers import ues
from test_messaging_as import (
    ALICE, BOB, cpim_text, next_message, pager, registered, run,
)

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
