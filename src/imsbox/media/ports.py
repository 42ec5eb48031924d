"""UDP port pairs for RTP from a configurable range (RTP even, RTCP the odd one above)."""

from __future__ import annotations

import socket

from .errors import MediaUsageError

__all__ = ["PortAllocator"]


class PortAllocator:
    """Binds RTP/RTCP sockets in ``[start, stop)`` on ``host``, round robin over even ports.

    ``allocate(rtcp_mux)`` returns bound non-blocking sockets (RTCP None with
    rtcp-mux, RFC 5761); ``release(port)`` gives the pair back.  Ports taken
    by other programs are skipped.
    """

    def __init__(self, host: str = "127.0.0.1", start: int = 20000, stop: int = 30000) -> None:
        if start % 2:
            start += 1
        if not 0 < start < stop <= 65536:
            raise MediaUsageError(f"bad RTP port range {start}-{stop}")
        self.host = host
        self.start, self.stop = start, stop
        self._next = start
        self.in_use: set[int] = set()
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def allocate(self, rtcp_mux: bool = False) -> tuple[socket.socket, socket.socket | None]:
        for _ in range((self.stop - self.start) // 2):
            port = self._next
            self._next = port + 2 if port + 3 < self.stop else self.start
            if port in self.in_use:
                continue
            pair = self._bind(port, rtcp_mux)
            if pair is not None:
                self.in_use.add(port)
                return pair
        raise MediaUsageError(f"no free RTP port pair in {self.start}-{self.stop} on {self.host}")

    def _bind(self, port: int, rtcp_mux: bool) -> tuple[socket.socket, socket.socket | None] | None:
        sockets: list[socket.socket] = []
        try:
            for p in (port,) if rtcp_mux else (port, port + 1):
                sock = socket.socket(self._family, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.setblocking(False)
                sock.bind((self.host, p))
        except OSError:
            for sock in sockets:
                sock.close()
            return None
        return sockets[0], (sockets[1] if len(sockets) > 1 else None)

    def release(self, port: int) -> None:
        self.in_use.discard(port)
