"""The trace feed: a Unix socket a serve process streams its nodes' messages to.

One feed per ``imsbox serve`` process, at ``DATA/trace/ROLES-PID.sock``
(:func:`feed_path`); ``imsbox trace`` attaches to every feed of the data
directory. Nodes publish through tracers (:meth:`TraceFeed.sip_tracer`,
:meth:`TraceFeed.msrp_tracer`) installed on their public trace hooks.

What it costs a node: with nobody attached a tracer returns after one
truth test of the subscriber set; with subscribers a record is encoded once and
written to each without waiting. A subscriber that does not read (its socket
buffer above ``high_water``) misses records - counted, and told with a
``drop`` frame when it catches up - instead of slowing the node down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .record import (MAX_HEADER_LINE, Address, FrameError, Hello, NodeInfo, TraceRecord,
                     decode_header, encode_frame)

__all__ = ["FeedEvent", "MsrpFramer", "SipTrace", "TraceFeed", "attach", "feed_dir",
           "feed_path", "find_feeds"]

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 104  # sun_path is 108 bytes on Linux, 104 on the BSDs


class _Flow(Protocol):
    transport: str
    local: tuple[str, int]
    remote: tuple[str, int]
    conn_id: int | None


class _MsrpConn(Protocol):
    sockname: tuple[str, int]
    peername: tuple[str, int]


SipTrace = Callable[[str, bytes, Any], None]


def feed_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "trace"


def feed_path(data_dir: Path | str, roles: Iterable[str], pid: int | None = None) -> Path:
    """``DATA/trace/ROLES-PID.sock``: one per process, so processes of the same role
    (scale-out) do not collide."""
    name = "+".join(roles) or "none"
    return feed_dir(data_dir) / f"{name}-{os.getpid() if pid is None else pid}.sock"


def find_feeds(data_dir: Path | str) -> list[Path]:
    """The feed sockets of a data directory: ``*.sock`` there, and the sockets
    that ``*.feed`` pointer files name (a data dir too deep for a socket path)."""
    folder = feed_dir(data_dir)
    if not folder.is_dir():
        return []
    out = list(folder.glob("*.sock"))
    for pointer in folder.glob("*.feed"):
        with contextlib.suppress(OSError):
            out.append(Path(pointer.read_text().strip()))
    return sorted(out)


def _short_socket(path: Path) -> Path:
    """A socket path short enough, in a private directory under the temp dir."""
    folder = Path(tempfile.gettempdir()) / f"imsbox-trace-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    digest = hashlib.blake2b(os.fsencode(path.resolve()), digest_size=8).hexdigest()
    return folder / f"{digest}.sock"


@dataclass(slots=True)
class _Subscriber:
    writer: asyncio.StreamWriter
    dropped: int = 0


class TraceFeed:
    """A Unix-socket server streaming trace records to whoever attaches."""

    def __init__(self, path: Path | str, high_water: int = 4 << 20) -> None:
        self.path = Path(path)      # where the socket is (see start)
        self.pointer: Path | None = None
        self.high_water = high_water
        self.nodes: list[NodeInfo] = []
        self.published = 0
        self.dropped = 0
        self._subs: list[_Subscriber] = []
        self._server: asyncio.base_events.Server | None = None
        self._seq = itertools.count(1)

    @property
    def attached(self) -> int:
        return len(self._subs)

    async def start(self) -> TraceFeed:
        """Listen at ``path``; when that is too long for a Unix socket, at a short
        path in the temp dir, named by a ``.feed`` pointer file at ``path``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if len(os.fsencode(self.path.resolve())) > MAX_SOCKET_PATH:
            self.pointer = self.path.with_suffix(".feed")
            self.path = _short_socket(self.path)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a process with our pid
        self._server = await asyncio.start_unix_server(self._attach, path=str(self.path))
        os.chmod(self.path, 0o600)  # the traffic is the subscribers' secrets too
        if self.pointer is not None:
            self.pointer.write_text(f"{self.path}\n")
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for sub in self._subs:
            sub.writer.close()
        self._subs.clear()
        for path in (self.path, self.pointer):
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            self._server = None

    def add_node(self, role: str, listen: Iterable[tuple[str, str, int]]) -> None:
        self.nodes = [n for n in self.nodes if n.role != role]
        self.nodes.append(NodeInfo(role, tuple(listen)))

    async def _attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sub = _Subscriber(writer)
        writer.write(Hello(os.getpid(), tuple(self.nodes)).encode())
        self._subs.append(sub)
        log.info("trace subscriber attached (%d now)", len(self._subs))
        try:
            while await reader.read(4096):  # nothing is expected; EOF = detached
                pass
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # the loop is shutting down: nothing to hand on (3.11 would log it)
        finally:
            if sub in self._subs:
                self._subs.remove(sub)
            writer.close()
            log.info("trace subscriber detached (%d left)", len(self._subs))

    # -- publishing ---------------------------------------------------------------
    def publish(self, node: str, direction: str, proto: str, transport: str,
                local: Address, remote: Address, data: bytes,
                conn: int | None = None) -> None:
        """Send one record to every subscriber; returns at once when there is none."""
        if not self._subs:
            return
        record = TraceRecord(next(self._seq), time.monotonic(), time.time(), node,
                             direction, proto, transport, (local[0], local[1]),
                             (remote[0], remote[1]), data, conn)
        self.published += 1
        frame = record.encode()
        for sub in list(self._subs):
            transport_ = sub.writer.transport
            if transport_.is_closing():
                self._subs.remove(sub)
                continue
            if transport_.get_write_buffer_size() > self.high_water:
                sub.dropped += 1  # a slow reader loses records, the node never waits
                self.dropped += 1
                continue
            if sub.dropped:
                transport_.write(encode_frame({"type": "drop", "count": sub.dropped,
                                               "len": 0}, b""))
                sub.dropped = 0
            transport_.write(frame)

    def sip_tracer(self, node: str) -> SipTrace:
        """A SIP transport trace callback (``TransportLayer.trace``) for ``node``."""
        subs = self._subs
        publish = self.publish

        def trace(direction: str, data: bytes, flow: _Flow) -> None:
            if subs:
                publish(node, direction, "sip", flow.transport, flow.local, flow.remote,
                        bytes(data), flow.conn_id)

        return trace

    def msrp_tracer(self, node: str) -> Callable[[str, bytes, Any], None]:
        """An ``MsrpEndpoint.trace`` callback for ``node``: cuts each connection's
        byte stream into MSRP messages, one record each."""
        subs = self._subs
        framers: dict[tuple[int, str], MsrpFramer] = {}

        def trace(direction: str, data: bytes, conn: _MsrpConn) -> None:
            if not subs:
                framers.clear()  # nobody listens: keep no state
                return
            key = (id(conn), direction)
            framer = framers.get(key)
            if framer is None:
                framer = framers[key] = MsrpFramer()
                if len(framers) > 4096:  # connections come and go: forget the oldest
                    framers.pop(next(iter(framers)))
            for message in framer.feed(data):
                self.publish(node, direction, "msrp", "tcp", conn.sockname, conn.peername,
                             message, id(conn))

        return trace


_MSRP_START = re.compile(rb"MSRP ([A-Za-z0-9][A-Za-z0-9.+%=-]{3,31}) ")


@dataclass(slots=True)
class MsrpFramer:
    """Cuts an MSRP byte stream into whole messages at their end-lines (RFC 4975
    section 7.1); starts at the next start line when attached mid-message."""

    limit: int = 1 << 20
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            start = _MSRP_START.search(self._buf)
            if start is None:
                self._trim()
                return out
            if start.start():
                del self._buf[:start.start()]  # bytes of a message we joined late
                continue
            end = re.compile(rb"\r\n-------" + re.escape(start.group(1)) + rb"[+$#]\r\n")
            found = end.search(self._buf, start.end())
            if found is None:
                if len(self._buf) > self.limit:
                    self._buf.clear()  # not MSRP as we know it: resynchronise
                return out
            out.append(bytes(self._buf[:found.end()]))
            del self._buf[:found.end()]

    def _trim(self) -> None:
        # keep a tail that may be the start of a start line
        if len(self._buf) > 64:
            del self._buf[:-64]


# -- reading ----------------------------------------------------------------------------

FeedEvent = Hello | TraceRecord | int  # an int: that many records dropped for us


async def _frames(path: Path, reader: asyncio.StreamReader) -> AsyncIterator[FeedEvent]:
    source = path.name
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return
        except asyncio.LimitOverrunError:
            raise FrameError(f"{path}: header line too long") from None
        head = decode_header(line)
        data = await reader.readexactly(head["len"]) if head["len"] else b""
        kind = head.get("type")
        if kind == "hello":
            yield Hello.from_header(head)
        elif kind == "rec":
            yield TraceRecord.from_frame(head, data, source)
        elif kind == "drop":
            yield int(head.get("count", 0))


async def attach(paths: Iterable[Path]
                 ) -> tuple[list[Path], AsyncGenerator[FeedEvent, None]]:
    """Connect to every feed socket that answers; the events of all, merged.

    Returns the feeds attached (stale sockets of stopped processes are skipped)
    and an iterator ending when every feed has closed."""
    streams: list[tuple[Path, asyncio.StreamReader, asyncio.StreamWriter]] = []
    for path in paths:
        try:
            reader, writer = await asyncio.open_unix_connection(str(path),
                                                                limit=MAX_HEADER_LINE)
        except (ConnectionRefusedError, FileNotFoundError, PermissionError):
            continue
        streams.append((path, reader, writer))
    return [p for p, _, _ in streams], _merge(streams)


async def _merge(streams: list[tuple[Path, asyncio.StreamReader, asyncio.StreamWriter]]
                 ) -> AsyncGenerator[FeedEvent, None]:
    queue: asyncio.Queue[FeedEvent | None] = asyncio.Queue()

    async def pump(path: Path, reader: asyncio.StreamReader) -> None:
        try:
            async for event in _frames(path, reader):
                await queue.put(event)
        except (ConnectionError, FrameError) as exc:
            log.warning("trace feed %s: %s", path, exc)
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(p, r)) for p, r, _ in streams]
    try:
        left = len(tasks)
        while left:
            event = await queue.get()
            if event is None:
                left -= 1
            else:
                yield event
    finally:
        for task in tasks:
            task.cancel()
        for _, _, writer in streams:
            writer.close()
