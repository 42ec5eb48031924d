"""UDP transport (RFC 3261 18.1.1, 18.2.1): one datagram is one message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Callable

from .base import Destination, Flow

__all__ = ["UdpEndpoint", "should_use_tcp", "UDP_MTU_LIMIT", "MAX_DATAGRAM"]

log = logging.getLogger(__name__)

UDP_MTU_LIMIT = 1300  # 18.1.1: path MTU unknown -> 1300 bytes
MAX_DATAGRAM = 65507
SOCKET_BUFFER = 4 * 1024 * 1024


def should_use_tcp(message_bytes: bytes | int, dest: Destination) -> bool:
    """18.1.1: a request over 1300 bytes meant for UDP should go over TCP instead.

    Only advice for the caller (the endpoint decides, and must then rewrite
    its Via); the transport layer sends what it is told to.
    """
    size = message_bytes if isinstance(message_bytes, int) else len(message_bytes)
    return dest.transport == "udp" and size > UDP_MTU_LIMIT


class UdpEndpoint(asyncio.DatagramProtocol):
    """A bound UDP socket: delivers datagrams, sends from the same port."""

    def __init__(self, on_datagram: Callable[["UdpEndpoint", bytes, tuple[str, int]], None],
                 ) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)
        self.family = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # selector transport
        sockname = transport.get_extra_info("sockname")
        self.local = (str(sockname[0]), int(sockname[1]))
        sock = transport.get_extra_info("socket")
        self.family = sock.family if sock is not None else 0
        if sock is not None:
            # Bursts of datagrams must wait in the kernel, not be dropped,
            # while the event loop is busy (the kernel caps this at rmem_max).
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        try:
            self.on_datagram(self, data, (str(addr[0]), int(addr[1])))
        except Exception:  # bad input must never kill the socket
            log.exception("udp %s: error handling a datagram from %s", self.local, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable ...) cannot be tied to a message here.
        log.debug("udp %s: %s", self.local, exc)

    def flow_to(self, remote: tuple[str, int]) -> Flow:
        return Flow("udp", self.local, remote, None)

    def sendto(self, data: bytes, remote: tuple[str, int]) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError(f"udp socket {self.local} is closed")
        if len(data) > MAX_DATAGRAM:
            raise OSError(f"message of {len(data)} bytes does not fit a UDP datagram")
        self.transport.sendto(data, remote)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
