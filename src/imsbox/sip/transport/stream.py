"""Stream transports (TCP, TLS): Content-Length framing and connections.

``StreamFramer`` is sans-I/O (RFC 3261 18.3, RFC 5626 3.5.1 keep-alives);
``StreamConnection`` wraps an asyncio reader/writer pair around it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Protocol

from .base import Flow

__all__ = [
    "StreamFramer", "FramingError", "StreamConnection", "ConnectionHandler",
    "PING", "PONG",
]

log = logging.getLogger(__name__)

PING = b"\r\n\r\n"  # RFC 5626 3.5.1: double CRLF keep-alive
PONG = b"\r\n"
_CONTENT_LENGTH_RE = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_READ_SIZE = 65536


@dataclass(slots=True)
class FramingError:
    """Why a stream cannot be framed any further.

    ``status`` is the response to send before closing (None: nothing can be
    answered); ``head`` is the header section when one was found.
    """

    reason: str
    status: int | None
    head: bytes | None = None


class StreamFramer:
    """Cuts a SIP byte stream into messages by Content-Length (18.3)."""

    __slots__ = ("max_header", "max_body", "error", "_buf", "_scan_from", "_need", "_pings")

    def __init__(self, max_header: int = 64 * 1024, max_body: int = 16 * 1024 * 1024) -> None:
        self.max_header = max_header
        self.max_body = max_body
        self.error: FramingError | None = None
        self._buf = bytearray()
        self._scan_from = 0          # where to resume the search for the blank line
        self._need: int | None = None  # total size of the message being read
        self._pings = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_pings(self) -> int:
        """Number of double-CRLF pings seen since the last call (each wants a pong)."""
        pings, self._pings = self._pings, 0
        return pings

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every message completed by them (head + body)."""
        if self.error is not None:
            return []
        self._buf += data
        out: list[bytes] = []
        while self.error is None:
            message = self._next()
            if message is None:
                break
            out.append(message)
        return out

    def _next(self) -> bytes | None:
        if self._need is None:
            if not self._skip_keepalives():
                return None
            if not self._read_head():
                return None
        assert self._need is not None
        if len(self._buf) < self._need:
            return None
        message = bytes(self._buf[:self._need])
        del self._buf[:self._need]
        self._need = None
        self._scan_from = 0
        return message

    def _skip_keepalives(self) -> bool:
        """Drop CRLFs before a start line (7.5); count pings. True if a message starts."""
        buf = self._buf
        while buf[:1] == b"\r" or buf[:1] == b"\n":
            if buf.startswith(PING):
                self._pings += 1
                del buf[:4]
            elif len(buf) < 4 and PING.startswith(bytes(buf)):
                return False  # maybe the start of a ping: wait
            elif buf.startswith(PONG):
                del buf[:2]
            elif buf[:1] == b"\n":
                del buf[:1]
            else:  # lone CR followed by something else
                del buf[:1]
        return bool(buf)

    def _read_head(self) -> bool:
        buf = self._buf
        start = max(0, self._scan_from - 3)
        end, sep = buf.find(b"\r\n\r\n", start), 4
        lf = buf.find(b"\n\n", start)
        if lf >= 0 and (end < 0 or lf < end):
            end, sep = lf, 2
        if end < 0:
            self._scan_from = len(buf)
            if len(buf) > self.max_header:
                self.error = FramingError(
                    f"header section exceeds {self.max_header} bytes", None)
            return False
        head_len = end + sep
        head = bytes(buf[:head_len])
        if head_len > self.max_header:
            self.error = FramingError(f"header section exceeds {self.max_header} bytes", None)
            return False
        length = self._content_length(head)
        if length is None:
            return False
        if length > self.max_body:
            self.error = FramingError(
                f"body of {length} bytes exceeds limit of {self.max_body}", 413, head)
            return False
        self._need = head_len + length
        return True

    def _content_length(self, head: bytes) -> int | None:
        """18.3: Content-Length MUST be used on a stream; a missing one is an error."""
        values = {m.group(1) for m in _CONTENT_LENGTH_RE.finditer(head)}
        if not values:
            self.error = FramingError("missing Content-Length on stream transport", 400, head)
            return None
        if len(values) > 1:
            self.error = FramingError("conflicting Content-Length headers", 400, head)
            return None
        value = values.pop()
        if not value.isdigit() or len(value) > 12:
            self.error = FramingError(f"bad Content-Length {value[:20]!r}", 400, head)
            return None
        return int(value)


class ConnectionHandler(Protocol):
    """What a StreamConnection reports to (the TransportLayer)."""

    def stream_message(self, conn: StreamConnection, data: bytes) -> None: ...

    def stream_framing_error(self, conn: StreamConnection, error: FramingError) -> bytes | None:
        """Return the bytes to write before the connection closes (a 400/413) or None."""
        ...

    def stream_closed(self, conn: StreamConnection) -> None: ...


class StreamConnection:
    """One TCP or TLS connection, accepted or initiated."""

    def __init__(self, handler: ConnectionHandler, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, transport: str, conn_id: int,
                 framer: StreamFramer, idle_timeout: float | None,
                 accepted: bool, *, message_timeout: float | None = None) -> None:
        self.handler = handler
        self.reader = reader
        self.writer = writer
        self.transport = transport
        self.conn_id = conn_id
        self.framer = framer
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout
        self.accepted = accepted
        self.local: tuple[str, int] = _addr(writer.get_extra_info("sockname"))
        self.remote: tuple[str, int] = _addr(writer.get_extra_info("peername"))
        self.last_activity = time.monotonic()
        self.closed = False
        self._message_since: float | None = None  # first byte of an incomplete message
        self._hanging_up = False
        self._task: asyncio.Task[None] | None = None

    @property
    def flow(self) -> Flow:
        return Flow(self.transport, self.local, self.remote, self.conn_id)

    def __repr__(self) -> str:
        return f"<StreamConnection #{self.conn_id} {self.transport} {self.local}->{self.remote}>"

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(
            self.run(), name=f"sip-{self.transport}-{self.conn_id}")
        return self._task

    async def send(self, data: bytes) -> None:
        """Write and wait for the buffer to drain (backpressure)."""
        if self.closed:
            raise ConnectionResetError(f"connection #{self.conn_id} is closed")
        self.last_activity = time.monotonic()
        self.writer.write(data)
        await self.writer.drain()
        self.last_activity = time.monotonic()

    async def run(self) -> None:
        """Read, frame and hand over messages until EOF, error or idle timeout."""
        try:
            await self._read_loop()
        except asyncio.CancelledError:
            pass
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.debug("%r: %s", self, exc)
        except Exception:  # a bug must not kill more than this connection
            log.exception("%r: unexpected error", self)
        finally:
            await self.close()

    def hang_up(self, data: bytes) -> None:
        """Write ``data`` (a last answer) and close; nothing more is read."""
        if self.closed:
            return
        if data:
            self.writer.write(data)
        self._hanging_up = True

    async def _read_loop(self) -> None:
        while not self.closed:
            data = await self._read()
            if not data:
                return
            now = self.last_activity = time.monotonic()
            messages = self.framer.feed(data)
            for message in messages:
                self.handler.stream_message(self, message)
                if self._hanging_up:
                    return  # close() flushes the answer written by hang_up
            self._track_message(messages, now)
            pings = self.framer.take_pings()
            if pings:
                self.writer.write(PONG * pings)
            if self.framer.error is not None:
                await self._fail(self.framer.error)
                return

    def _track_message(self, completed: list[bytes], now: float) -> None:
        """Start the message deadline at the first byte of each message."""
        if not self.framer.buffered:
            self._message_since = None
        elif completed or self._message_since is None:
            self._message_since = now

    def _deadline(self) -> tuple[float | None, str]:
        """When this connection is closed unless more arrives, and why."""
        idle = (None if self.idle_timeout is None
                else self.last_activity + self.idle_timeout)
        if self._message_since is None or self.message_timeout is None:
            return idle, f"idle for {self.idle_timeout}s"
        message = self._message_since + self.message_timeout
        if idle is None or message < idle:
            return message, f"message incomplete after {self.message_timeout}s"
        return idle, f"idle for {self.idle_timeout}s"

    async def _read(self) -> bytes:
        """One read, or b"" once the idle timeout or the message deadline passed.

        Each byte resets the idle timer, never the message deadline: a peer
        trickling a message byte by byte is cut off all the same."""
        while True:
            deadline, why = self._deadline()
            if deadline is None:
                return await self.reader.read(_READ_SIZE)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.info("%r: %s, closing", self, why)
                return b""
            try:
                async with asyncio.timeout(remaining):
                    return await self.reader.read(_READ_SIZE)
            except TimeoutError:
                continue  # re-check: a send may have refreshed last_activity

    async def _fail(self, error: FramingError) -> None:
        log.info("%r: %s; closing", self, error.reason)
        reply = self.handler.stream_framing_error(self, error)
        if reply:
            self.writer.write(reply)
            try:
                async with asyncio.timeout(2.0):
                    await self.writer.drain()
            except (OSError, TimeoutError):
                pass

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.handler.stream_closed(self)
        except Exception:
            log.exception("%r: close handler failed", self)
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
        self.writer.close()
        try:
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        except asyncio.CancelledError:
            self.writer.transport.abort()
            raise
        except Exception:  # timeout, or ssl errors on shutdown of a broken peer
            self.writer.transport.abort()


def _addr(info: object) -> tuple[str, int]:
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return ("", 0)
