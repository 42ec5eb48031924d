"""Core nodes configured with ``transports = ["tcp"]`` are reached over TCP.

A URI without ``transport`` means UDP (RFC 3263 4.1), so a node that listens
on TCP alone must say ``;transport=tcp`` in every URI the others route by:
its Service-Route, Record-Route and Path, the S-CSCF name the HSS hands the
I-CSCF, the iFC / PSI server names. Here every node but the P-CSCF listens on
TCP only; UEs register over UDP and exchange pager messages through it all.
Before, the I-CSCF sent the REGISTER to the S-CSCF over UDP, where nobody
listens (408).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from imsbox.config import Config, load_config
from imsbox.ims.provisioning import add_user
from imsbox.serve import Network
from imsbox.sip.endpoint import SipEndpoint
from imsbox.sip.transport.base import Destination
from imsbox.store import open_store
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config
from imsbox.ue.register import Registration

pytestmark = pytest.mark.timeout(40)
DOMAIN = "ims.test"
HOST = "127.0.0.1"
TCP_ONLY = ("icscf", "scscf", "messaging_as", "conference_as", "telephony_as", "media_server")


def tcp_only_config(tmp_path: Path, *, pcscf_too: bool = False) -> Config:
    path, _ = write_loopback_config(tmp_path)
    text = path.read_text()
    for node in TCP_ONLY + (("pcscf",) if pcscf_too else ()):
        text = text.replace(f"[{node}]\n", f'[{node}]\ntransports = ["tcp"]\n')
    path.write_text(text)
    return load_config(path)


async def provision(config: Config) -> None:
    async with open_store(config.store_location) as store:
        for name in ("alice", "bob"):
            await add_user(store, DOMAIN, name, f"{name}-secret")


def listening(net: Network, role: str) -> set[str]:
    return {d.transport for d in net.nodes[role].endpoint.transport.listen_addresses}


def test_nodes_on_tcp_alone_are_reached_over_tcp(tmp_path: Path) -> None:
    config = tcp_only_config(tmp_path)
    assert config.scscf.uri == f"sip:{HOST}:{config.scscf.port};transport=tcp"

    async def main() -> None:
        await provision(config)
        async with Network(config, timers=FAST_TIMERS) as net:
            assert listening(net, "scscf") == {"tcp"} and listening(net, "icscf") == {"tcp"}
            alice = await TestUe("alice", "alice-secret", config).start()
            bob = await TestUe("bob", "bob-secret", config).start()
            try:
                reg = await alice.register()
                assert reg.statuses == [401, 200], reg.statuses
                (service_route,) = reg.service_route
                assert service_route == \
                    f"<sip:orig@{HOST}:{config.scscf.port};lr;transport=tcp>"
                (path,) = reg.final.headers.get_all("Path")
                assert ";transport=" not in path  # the P-CSCF listens on UDP too
                assert (await bob.register()).ok
                response = await bob.message(f"sip:alice@{DOMAIN}", "over tcp").final()
                assert response.status == 200, response
                got = await asyncio.wait_for(alice.requests.get(), 5)
                assert got.body == b"over tcp"
                # the last hop into the core went over TCP: S-CSCF -> P-CSCF
                assert got.via[1].transport == "TCP"
            finally:
                await alice.close()
                await bob.close()
    asyncio.run(asyncio.wait_for(main(), 35))


def test_a_pcscf_on_tcp_alone_says_so_in_its_path(tmp_path: Path) -> None:
    config = tcp_only_config(tmp_path, pcscf_too=True)

    async def main() -> None:
        await provision(config)
        async with Network(config, timers=FAST_TIMERS):
            endpoint = SipEndpoint(FAST_TIMERS)
            _, port = await endpoint.listen("tcp", HOST, 0)
            try:
                reg = Registration(f"sip:alice@{DOMAIN}",
                                   f"sip:alice@{HOST}:{port};transport=tcp",
                                   Destination("tcp", HOST, config.pcscf.port),
                                   username=f"alice@{DOMAIN}")
                await reg.send(endpoint, "alice-secret", 600)
                assert reg.statuses == [401, 200], reg.statuses
                (path,) = reg.final.headers.get_all("Path")
                assert re.fullmatch(rf"<sip:term\.[\w-]+\.[\w-]+@{re.escape(HOST)}:"
                                    rf"{config.pcscf.port};lr;transport=tcp;ob>", path), path
            finally:
                await endpoint.close()
    asyncio.run(asyncio.wait_for(main(), 35))
