"""TrustedPeers: a flow is trusted by its exact remote socket, UDP only as configured."""

from __future__ import annotations

import asyncio

from imsbox.sip.transport.base import Flow
from imsbox.sip.trust import TrustedPeers, UdpTrust

LOCAL = ("127.0.0.1", 5080)


def flow(transport: str, host: str, port: int) -> Flow:
    return Flow(transport, LOCAL, (host, port), conn_id=1 if transport != "udp" else None)


def peers(udp: UdpTrust = UdpTrust.LOOPBACK) -> TrustedPeers:
    return asyncio.run(TrustedPeers.resolve(
        [("127.0.0.1", 5060), ("[::1]", 5070), ("10.1.2.3", 5090), ("localhost", 5100),
         ("127.0.0.1", 0)], udp))


def test_only_the_exact_socket_counts() -> None:
    trusted = peers()
    assert trusted.trusts(flow("tcp", "127.0.0.1", 5060))
    assert trusted.trusts(flow("tls", "::ffff:127.0.0.1", 5060))   # IPv4-mapped
    assert trusted.trusts(flow("tcp", "::1", 5070))
    assert trusted.trusts(flow("tcp", "127.0.0.1", 5100))           # a name, resolved
    assert not trusted.trusts(flow("tcp", "127.0.0.1", 40000))     # same IP, other port
    assert not trusted.trusts(flow("tcp", "127.0.0.2", 5060))
    assert ("127.0.0.1", 0) not in trusted.sockets                  # unknown port: none


def test_udp_trust_loopback_any_none() -> None:
    assert peers().trusts(flow("udp", "127.0.0.1", 5060))
    assert not peers().trusts(flow("udp", "10.1.2.3", 5090))      # forgeable off-host
    assert peers().trusts(flow("tcp", "10.1.2.3", 5090))
    assert peers(UdpTrust.ANY).trusts(flow("udp", "10.1.2.3", 5090))
    assert not peers(UdpTrust.NONE).trusts(flow("udp", "127.0.0.1", 5060))
    assert peers(UdpTrust.NONE).trusts(flow("tcp", "127.0.0.1", 5060))
