"""What every application server node does on start, in one place.

An AS reaches the core only over SIP: a ``TrustGuard`` goes ahead of its
other modules (only the core's sockets get in, docs/security.md), it listens
on its node's UDP/TCP port with TCP connecting from that port (reuse_port),
and it terminates MSRP on an endpoint with the ``[limits]`` of imsbox.toml.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..config import Config, NodeConfig
from ..msrp import MsrpEndpoint
from ..sip.endpoint import SipEndpoint
from ..sip.trust import TrustedPeers, TrustGuard

__all__ = ["Listen", "listen_behind_guard", "node_uri", "open_msrp"]

Listen = Callable[..., Awaitable[tuple[str, int]]]


async def listen_behind_guard(endpoint: SipEndpoint, listen: Listen, config: Config,
                              node: NodeConfig, name: str) -> int:
    """Install the TrustGuard, listen on the node's UDP/TCP; the port bound."""
    trust = await TrustedPeers.resolve(config.trusted_sockets(), config.security.udp_trust)
    endpoint.add_module(TrustGuard(trust, name))
    port = node.port
    for transport in (t for t in node.transports if t != "tls"):
        port = (await listen(transport, node.host, port, reuse_port=transport == "tcp"))[1]
    return port


async def open_msrp(host: str, config: Config) -> MsrpEndpoint:
    """An MSRP endpoint on ``host`` (any port) with the configured idle close,
    a keep-alive at half of it, and the message deadline."""
    limits = config.limits
    return await MsrpEndpoint(
        host, 0, idle_timeout=limits.msrp_idle_timeout,
        keepalive_interval=limits.msrp_idle_timeout / 2,
        message_timeout=limits.message_timeout).start()


def node_uri(host: str, port: int) -> str:
    """``sip:HOST:PORT`` of the node (IPv6 in brackets): its UA's identity and Contact."""
    return f"sip:[{host}]:{port}" if ":" in host else f"sip:{host}:{port}"
