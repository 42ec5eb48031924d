"""UDP transport (RFC 3261 18.1.1, 18.2.1): one datagram is one message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import sys
import time
from collections.abc import Callable

from .base import Destination, Flow

__all__ = ["UdpEndpoint", "should_use_tcp", "udp_socket", "UDP_MTU_LIMIT", "MAX_DATAGRAM"]

log = logging.getLogger(__name__)

UDP_MTU_LIMIT = 1300  # 18.1.1: path MTU unknown -> 1300 bytes
MAX_DATAGRAM = 65507
SOCKET_BUFFER = 4 * 1024 * 1024
_TIMEVAL = struct.Struct("@ll")
_ANCILLARY = socket.CMSG_SPACE(_TIMEVAL.size)
# socket has no SO_TIMESTAMP constant; Linux's (asm-generic/socket.h) is 29,
# and the control message it yields (SCM_TIMESTAMP) has the same number.
SO_TIMESTAMP: int | None = getattr(socket, "SO_TIMESTAMP", 29 if sys.platform == "linux" else None)


def _enable_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram with its arrival time (Linux, BSD)."""
    if SO_TIMESTAMP is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
    except OSError:
        return False
    return True


def should_use_tcp(message_bytes: bytes | int, dest: Destination) -> bool:
    """18.1.1: a request over 1300 bytes meant for UDP should go over TCP instead.

    Only advice for the caller (the endpoint decides, and must then rewrite
    its Via); the transport layer sends what it is told to.
    """
    size = message_bytes if isinstance(message_bytes, int) else len(message_bytes)
    return dest.transport == "udp" and size > UDP_MTU_LIMIT


def udp_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket with large kernel buffers.

    ``reuse_port``: SO_REUSEPORT, so several processes' sockets share the port
    and the kernel hands each datagram to one of them by a hash of its source
    and destination (the same sender always reaches the same socket)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # Bursts must wait in the kernel, not be dropped, while the loop
        # is busy (the kernel caps this at rmem_max).
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class UdpEndpoint:
    """A bound UDP socket: delivers datagrams, sends from the same port.

    It reads every datagram waiting in the kernel each time the socket is
    readable (asyncio's datagram transport reads one per loop pass): after a
    pause, queued responses are seen before retransmission timers fire.
    ``last_delay`` is how long the datagram being delivered waited in the
    kernel (SO_TIMESTAMP): the node's queueing latency, for overload control.
    """

    READ_BATCH = 256  # datagrams per readiness event, so timers still get a turn

    def __init__(self, on_datagram: Callable[[UdpEndpoint, bytes, tuple[str, int]], None],
                 sock: socket.socket) -> None:
        self.on_datagram = on_datagram
        self.sock = sock
        self.local: tuple[str, int] = (str(sock.getsockname()[0]), int(sock.getsockname()[1]))
        self.family = sock.family
        self.closed = False
        self.last_delay = 0.0
        self._stamped = _enable_timestamps(sock)
        self._loop = asyncio.get_running_loop()
        self._pending: list[tuple[bytes, tuple[str, int]]] = []  # sends the kernel refused
        self._loop.add_reader(sock.fileno(), self._read_ready)

    @classmethod
    def bind(cls, on_datagram: Callable[[UdpEndpoint, bytes, tuple[str, int]], None],
             host: str, port: int) -> UdpEndpoint:
        return cls(on_datagram, udp_socket(host, port))

    @property
    def is_open(self) -> bool:
        return not self.closed

    def _read_ready(self) -> None:
        for _ in range(self.READ_BATCH):
            try:
                data, addr = self._receive()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ICMP errors (port unreachable ...) cannot be tied to a message.
                log.debug("udp %s: %s", self.local, exc)
                return
            try:
                self.on_datagram(self, data, (str(addr[0]), int(addr[1])))
            except Exception:  # bad input must never kill the socket
                log.exception("udp %s: error handling a datagram from %s", self.local, addr)

    def _receive(self) -> tuple[bytes, tuple[str, int]]:
        if not self._stamped:
            return self.sock.recvfrom(MAX_DATAGRAM + 1)
        data, ancillary, _, addr = self.sock.recvmsg(MAX_DATAGRAM + 1, _ANCILLARY)
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP:
                seconds, micros = _TIMEVAL.unpack(value[:_TIMEVAL.size])
                self.last_delay = max(0.0, time.time() - seconds - micros / 1e6)
        return data, addr

    def flow_to(self, remote: tuple[str, int]) -> Flow:
        return Flow("udp", self.local, remote, None)

    def sendto(self, data: bytes, remote: tuple[str, int]) -> None:
        if self.closed:
            raise ConnectionResetError(f"udp socket {self.local} is closed")
        if len(data) > MAX_DATAGRAM:
            raise OSError(f"message of {len(data)} bytes does not fit a UDP datagram")
        if self._pending:
            self._pending.append((data, remote))
            return
        try:
            self.sock.sendto(data, remote)
        except (BlockingIOError, InterruptedError):
            self._pending.append((data, remote))
            self._loop.add_writer(self.sock.fileno(), self._write_ready)

    def _write_ready(self) -> None:
        while self._pending:
            data, remote = self._pending[0]
            try:
                self.sock.sendto(data, remote)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("udp %s: send to %s failed: %s", self.local, remote, exc)
            self._pending.pop(0)
        self._loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.sock.fileno())
        if self._pending:
            self._loop.remove_writer(self.sock.fileno())
        self.sock.close()
