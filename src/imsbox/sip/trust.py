"""Trust between the nodes of one network, bound to their exact sockets
(the TS 33.210 NDS/IP idea on one host; docs/security.md).

A request is from a trusted node when the address *and port* it came from
is one of the configured node sockets (or a configured trusted peer):

* UDP: a node sends from its listen socket, so the datagram's source is
  the node's socket.  UDP source addresses can be forged off-host, so by
  default (``UdpTrust.LOOPBACK``) a UDP source counts only when it is a
  loopback address, which the kernel never accepts from a wire.
* TCP/TLS: nodes open their connections from their own listen address and
  port (``TransportLayer.listen(..., reuse_port=True)``), so the accepting
  node sees the peer's configured socket as the remote address; the remote
  address of a connection we opened is where we connected to.

Never a Via, a Contact, or an IP address alone.  ``TrustGuard`` is the
endpoint module that refuses everything else with 403 before any other
module sees it.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from .endpoint import Priority, ServerContext
from .message import Response, new_tag
from .transport.base import Flow

__all__ = ["Socket", "TrustGuard", "TrustedPeers", "UdpTrust"]

log = logging.getLogger(__name__)

Socket = tuple[str, int]   # (IP literal, unbracketed; port)


class UdpTrust(enum.Enum):
    """Which UDP sources may count as a node socket."""

    LOOPBACK = "loopback"   # only loopback sources (the safe default, any deployment)
    ANY = "any"             # any address: only where no one can forge a source address
    NONE = "none"           # never: core nodes talk TCP/TLS only


def _normal(host: str) -> str:
    """One spelling per address (IPv4-mapped IPv6 as IPv4); names lowercased."""
    host = host[1:-1] if host.startswith("[") else host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(slots=True, frozen=True)
class TrustedPeers:
    """The sockets of the trust domain, as IP literals; build with :meth:`resolve`."""

    sockets: frozenset[Socket] = frozenset()
    udp: UdpTrust = UdpTrust.LOOPBACK

    @classmethod
    async def resolve(cls, sockets: Iterable[Socket],
                      udp: UdpTrust | str = UdpTrust.LOOPBACK) -> TrustedPeers:
        """Host names looked up once (A/AAAA); a name that does not resolve is skipped."""
        out: set[Socket] = set()
        loop = asyncio.get_running_loop()
        for host, port in set(sockets):
            if port <= 0:
                continue  # a port picked at start-up is not known here
            try:
                ipaddress.ip_address(host.strip("[]"))
                out.add((_normal(host), port))
                continue
            except ValueError:
                pass
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                log.warning("trusted node %s:%d does not resolve: %s", host, port, exc)
                continue
            out.update((_normal(str(info[4][0])), port) for info in infos)
        return cls(frozenset(out), UdpTrust(udp))

    def with_sockets(self, sockets: Iterable[Socket]) -> TrustedPeers:
        """A copy that also trusts ``sockets`` (IP literals), e.g. bound at start-up."""
        extra = {(_normal(h), p) for h, p in sockets}
        return TrustedPeers(self.sockets | extra, self.udp)

    def trusts(self, flow: Flow) -> bool:
        """Did a message on ``flow`` come from a node socket of the trust domain?"""
        host, port = _normal(flow.remote[0]), flow.remote[1]
        if (host, port) not in self.sockets:
            return False
        if flow.transport == "udp":
            return self.udp is UdpTrust.ANY or (
                self.udp is UdpTrust.LOOPBACK and _is_loopback(host))
        return True


class TrustGuard:
    """Endpoint module ahead of all others: untrusted requests get 403 (ACK: dropped)."""

    name = "trust"
    priority = Priority.POLICY
    methods: tuple[str, ...] = ()

    def __init__(self, peers: TrustedPeers, node: str) -> None:
        self.peers = peers
        self.node = node

    def on_request(self, ctx: ServerContext) -> bool:
        if self.peers.trusts(ctx.flow):
            return False
        log.info("%s: 403 for %s from untrusted %s %s (Call-ID %s)", self.node,
                 ctx.request.method, ctx.flow.transport, ctx.flow.remote, ctx.request.call_id)
        if ctx.txn is not None:
            ctx.respond(Response.for_request(
                ctx.request, 403, "Forbidden - not a trusted node of this network",
                to_tag=new_tag()))
        return True
