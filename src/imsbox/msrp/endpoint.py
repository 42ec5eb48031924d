"""asyncio adapter: MSRP endpoints, connections and sessions over TCP or TLS."""

from __future__ import annotations

import asyncio
import enum
import io
import logging
import os
import ssl as _ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import MsrpStatusError, MsrpUsageError, ParseError, SessionClosed, TransactionTimeout
from .message import ByteRange, MsrpRequest
from .liveness import ConnectionTimers, Liveness, LivenessAction
from .session import (BufferSink, ConnectionCore, IncomingMessage, MessageAborted,
                      MessageDelivered, MessageFailed, MessageReceived, MessageState,
                      ReportReceived, SessionBound, SessionCore, SessionEvent,
                      SessionMatching, Sink, new_id)
from .uri import MsrpUri

log = logging.getLogger(__name__)

# The trace hook of an endpoint: (direction "in"/"out", bytes, connection), called
# for every read and write of every connection. The bytes are the stream as it
# crosses the socket (not cut into messages); a tracer frames them itself.
MsrpTrace = Callable[[str, bytes, "MsrpConnection"], None]


class Readable(Protocol):
    """A file, or anything with a file's ``read``: read in chunks as it is sent."""

    def read(self, size: int, /) -> bytes: ...


# What a message body may be given as; str is encoded before it is chunked.
Chunks = bytes | bytearray | memoryview | Readable | Iterable[bytes] | AsyncIterable[bytes]
Body = Chunks | str


class Setup(enum.Enum):
    """Who opens the connection, as decided by the SDP setup attribute (RFC 6135)."""

    ACTIVE = "active"
    PASSIVE = "passive"


@dataclass(slots=True)
class ReceivedMessage:
    """A complete incoming message; ``body`` works when the sink is a BufferSink."""

    message_id: str
    content_type: str | None
    headers: list[tuple[str, str]]
    size: int
    sink: Sink
    success_report: bool = False

    @property
    def failure_report(self) -> str:
        """The sender's Failure-Report (RFC 4975 section 7.1.2): yes, no or partial."""
        value = next((v for n, v in self.headers if n.lower() == "failure-report"), "yes")
        return value.strip().lower()

    @property
    def body(self) -> bytes:
        if not isinstance(self.sink, BufferSink):
            raise MsrpUsageError("the body went to a custom sink")
        return self.sink.body


@dataclass(slots=True)
class SendResult:
    message_id: str
    size: int


COALESCE = 65536  # bytes of small chunks gathered into one transport write

class MsrpConnection(asyncio.Protocol):
    """One TCP/TLS connection, shared by every session bound to it."""

    def __init__(self, endpoint: MsrpEndpoint, key: tuple[str, int, bool] | None = None) -> None:
        self.endpoint = endpoint
        self.key = key
        self.core = ConnectionCore(endpoint._lookup, max_header_size=endpoint.max_header_size)
        self.core.owner = self
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.paused = False
        self._drain: list[asyncio.Future[None]] = []
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.timers = ConnectionTimers(endpoint.liveness, self.loop.time())
        self._done = 0
        self._timer: asyncio.TimerHandle | None = None
        self.sockname: tuple[str, int] = ("", 0)  # set when the connection is made
        self.peername: tuple[str, int] = ("", 0)

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sockname = _address(transport.get_extra_info("sockname"))
        self.peername = _address(transport.get_extra_info("peername"))
        transport.set_write_buffer_limits(high=self.endpoint.write_buffer_limit)
        self.endpoint._connections.add(self)
        self._arm()
        log.debug("conn %s: up %s", self.core.name, transport.get_extra_info("peername"))

    def data_received(self, data: bytes) -> None:
        if self.endpoint.trace is not None:
            self._trace("in", data)
        now = self.loop.time()
        try:
            pairs = self.core.receive_data(data, now)
        except ParseError as e:
            log.warning("conn %s: closing, framing lost: %s", self.core.name, e.reason)
            self.flush()
            self._deliver(e.events)
            self.close()
            return
        self._track_message(now)
        self.flush()
        self._deliver(pairs)

    def _track_message(self, now: float) -> None:
        """Start the message deadline at the first byte of each message."""
        parser = self.core.parser
        since = self.timers.message_since
        self.timers.received(now, parser.in_message, parser.messages_done != self._done)
        self._done = parser.messages_done
        if self.timers.message_since not in (None, since):
            self._arm()  # a message started: its deadline may come before the timer

    def connection_lost(self, exc: Exception | None) -> None:
        self.endpoint._connections.discard(self)
        if self.key is not None and self.endpoint._outbound.get(self.key) is self:
            del self.endpoint._outbound[self.key]
        for fut in self._drain:
            if not fut.done():
                fut.set_exception(SessionClosed("connection lost"))
        self._drain.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for core in list(self.core.sessions):
            core.connection = None
            session = self.endpoint._by_core.get(core)
            if session is not None:
                session._connection_lost()
                session.lost.set()
        self.core.sessions.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        for fut in self._drain:
            if not fut.done():
                fut.set_result(None)
        self._drain.clear()

    # -- helpers ------------------------------------------------------------------
    def _deliver(self, pairs: list[tuple[SessionCore, SessionEvent]]) -> None:
        for core, ev in pairs:
            session = self.endpoint._by_core.get(core)
            if session is not None:
                session._on_event(ev)

    def write(self, bufs: list[bytes]) -> None:
        if self.transport is None or self.transport.is_closing():
            raise SessionClosed("connection closed")
        if self.endpoint.trace is not None:
            self._trace("out", b"".join(bufs))
        self.transport.writelines(bufs)
        self.timers.sent(self.loop.time())

    def flush(self) -> None:
        out = self.core.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            if self.endpoint.trace is not None:
                self._trace("out", b"".join(out))
            self.transport.writelines(out)
            self.timers.sent(self.loop.time())

    def _trace(self, direction: str, data: bytes) -> None:
        trace = self.endpoint.trace
        if trace is None:
            return
        try:
            trace(direction, bytes(data), self)
        except Exception:  # a tracer's bug must not break the session
            log.exception("MSRP trace callback failed")

    def pause_reading(self) -> None:
        """Stop reading this connection (a relay whose next hop is slower: TCP
        flow control then slows the sender instead of memory growing)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    async def drain(self) -> None:
        """Backpressure: wait until the transport buffer is below its high mark."""
        if self.paused:
            fut = self.loop.create_future()
            self._drain.append(fut)
            await fut

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- liveness (msrp.liveness: next_deadline / on_timer) ------------------------
    def _arm(self) -> None:
        """One timer at the connection's next deadline; traffic does not move it:
        ``on_timer`` re-checks and the timer is armed again for what is left."""
        when = self.timers.next_deadline()
        if when is None or self.transport is None:
            return
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.loop.time()
        action = self.timers.on_timer(now)
        if action is LivenessAction.CLOSE_IDLE:
            log.info("conn %s: idle for %.1fs, closing", self.core.name,
                     self.timers.limits.idle_timeout)
            self.close()
            return
        if action is LivenessAction.CLOSE_INCOMPLETE:
            log.info("conn %s: message incomplete after %.1fs, closing", self.core.name,
                     self.timers.limits.message_timeout)
            self.close()
            return
        if action is LivenessAction.KEEPALIVE:
            self._keepalive(now)
        self._arm()

    def _keepalive(self, now: float) -> None:
        """An empty SEND on the first session bound here (RFC 4975 7.1: a no-op)."""
        for core in list(self.core.sessions):
            if core.remote_path:
                self.write(core.empty_send(now))
                self.endpoint._by_core[core]._arm_timer()
                return
        self.timers.keepalive_skipped(now)


class MsrpSession:
    """An MSRP session on an endpoint (asyncio side of SessionCore)."""

    def __init__(self, endpoint: MsrpEndpoint, core: SessionCore, setup: Setup,
                 cema_address: tuple[str, int] | None) -> None:
        self.endpoint = endpoint
        self.core = core
        self.setup = setup
        self.cema_address = cema_address
        self.on_message: Callable[[ReceivedMessage], None] | None = None
        self.reports: list[MsrpRequest] = []
        self._queue: asyncio.Queue[ReceivedMessage] = asyncio.Queue()
        self._waiters: dict[str, asyncio.Future[SendResult]] = {}
        self._bound = asyncio.Event()
        # set when the connection broke under the session (not by close()): the
        # peer or the relay in between is gone (RFC 4975 has no recovery of its own)
        self.lost = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def local_path(self) -> tuple[MsrpUri, ...]:
        return self.core.local_path

    @property
    def local_uri(self) -> MsrpUri:
        return self.core.local_path[-1]

    @property
    def remote_path(self) -> tuple[MsrpUri, ...]:
        return self.core.remote_path

    @property
    def session_id(self) -> str:
        return self.core.session_id or ""

    @property
    def sink_factory(self) -> Callable[[MsrpRequest], Sink]:
        return self.core.sink_factory

    @sink_factory.setter
    def sink_factory(self, factory: Callable[[MsrpRequest], Sink]) -> None:
        self.core.sink_factory = factory

    def set_remote_path(self, path: Sequence[MsrpUri | str]) -> None:
        """Set the peer's path (from the SDP answer/offer a=path)."""
        self.core.set_remote_path([p if isinstance(p, MsrpUri) else MsrpUri.parse(p) for p in path])

    @property
    def connection(self) -> MsrpConnection | None:
        conn = self.core.connection
        owner = None if conn is None else conn.owner
        return owner if isinstance(owner, MsrpConnection) else None

    # -- set-up ---------------------------------------------------------------------
    async def connect(self) -> None:
        """Active set-up: open (or share) the connection, send the binding empty SEND.

        With CEMA the address comes from the SDP c/m-line (RFC 6714 section 4),
        otherwise from the first URI of the remote path (RFC 4975 section 6.2).
        """
        if not self.remote_path:
            raise SessionClosed("remote path not set")
        first = self.remote_path[0]
        host, port = self.cema_address or (first.host, first.port or 2855)
        conn = await self.endpoint._connect(host, port, first.is_secure)
        if not conn.core.bind(self.core):
            raise SessionClosed("session already bound to another connection")
        self._bound.set()
        msg_bufs = self.core.empty_send(self._loop.time())
        mid = next(reversed(self.core.outgoing))
        fut = self._waiter(mid)
        conn.write(msg_bufs)
        self._arm_timer()
        self._on_events(self.core.done_sending(self.core.outgoing[mid]))
        await fut

    async def wait_bound(self, timeout: float | None = None) -> None:
        """Passive set-up: wait for the peer's first request on some connection."""
        await asyncio.wait_for(self._bound.wait(), timeout)

    async def start(self) -> None:
        """Connect when active, wait to be bound when passive."""
        if self.setup is Setup.ACTIVE:
            await self.connect()
        else:
            await self.wait_bound()

    # -- sending --------------------------------------------------------------------
    async def send_message(self, content_type: str, body: Body, *, size: int | None = None,
                           success_report: bool = False, failure_report: str = "yes",
                           message_id: str | None = None) -> SendResult:
        """Send one message in chunks; resolves when delivered (all 200s and the
        success REPORT if requested), raises MsrpStatusError otherwise."""
        conn = self.connection
        if conn is None:
            raise SessionClosed("session is not bound to a connection")
        if isinstance(body, str):
            body = body.encode()
        if size is None:
            size = _size_of(body)
        msg = self.core.new_message(content_type, size, success_report=success_report,
                                    failure_report=failure_report, message_id=message_id)
        fut = self._waiter(msg.message_id)
        # A source read without awaiting (bytes, file) never yields to the loop
        # between chunks: gather small chunks into one write of ~COALESCE bytes
        # (one send() instead of one per chunk). An async source may wait for
        # data, so each of its chunks is written at once.
        coalesce = not isinstance(body, AsyncIterable)
        batch: list[bytes] = []
        held = 0
        try:
            async for piece, last in _pieces(body, self.core.chunk_size, size):
                if msg.state is not MessageState.SENDING:
                    break  # e.g. 413: send no further chunks (RFC 4975 section 10.5)
                bufs = self.core.chunk(msg, piece, last=last, now=self._loop.time())
                batch += bufs
                held += len(piece)
                if not coalesce or last or held >= COALESCE:
                    conn.write(batch)
                    batch, held = [], 0
                    self._arm_timer()
                    if conn.paused:
                        await conn.drain()
            if batch and msg.state is MessageState.SENDING:
                conn.write(batch)
            self._arm_timer()
            self._on_events(self.core.done_sending(msg))
        except BaseException:
            if batch and conn.transport is not None and not conn.transport.is_closing():
                conn.write(batch)  # chunks built before a source failed still go out
            self._waiters.pop(msg.message_id, None)
            self.core.outgoing.pop(msg.message_id, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # connection lost while sending: reported by the raise
            raise
        await fut
        return SendResult(msg.message_id, msg.sent)

    def send_report(self, message_id: str, status: int = 200, comment: str = "OK",
                    byte_range: ByteRange | None = None) -> bool:
        """A REPORT for a received message (with ``defer_success_reports``: the
        success or failure REPORT the application decided on); False when unbound."""
        conn = self.connection
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return False
        conn.write([self.core.report(message_id, status, comment, byte_range)])
        return True

    def answer_final(self, message_id: str, status: int = 200,
                     comment: str | None = None) -> bool:
        """With ``hold_final_responses``: answer the last chunk of a received message
        now (200 once the application kept it); False when unbound or none held."""
        conn = self.connection
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return False
        answered = conn.core.answer_final(self.core, message_id, status, comment)
        conn.flush()
        return answered

    async def wait_idle(self, timeout: float) -> bool:
        """Until every SEND written got its response (True) or ``timeout`` (False).

        Closing a connection whose peer still answers chunks makes TCP reset it,
        and the reset drops what the peer had not read yet: wait first."""
        deadline = self._loop.time() + timeout
        while self.core.next_deadline() is not None and self.connection is not None:
            if self._loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    @property
    def hold_final_responses(self) -> bool:
        return self.core.hold_final_responses

    @hold_final_responses.setter
    def hold_final_responses(self, value: bool) -> None:
        self.core.hold_final_responses = value

    @property
    def defer_success_reports(self) -> bool:
        return self.core.defer_success_reports

    @defer_success_reports.setter
    def defer_success_reports(self, value: bool) -> None:
        self.core.defer_success_reports = value

    def _waiter(self, mid: str) -> asyncio.Future[SendResult]:
        fut: asyncio.Future[SendResult] = self._loop.create_future()
        self._waiters[mid] = fut
        return fut

    def _arm_timer(self) -> None:
        if self._timer is None:
            when = self.core.next_deadline()
            if when is not None:
                self._timer = self._loop.call_at(when, self._on_timer, when)

    def _on_timer(self, deadline: float) -> None:
        self._timer = None
        # call_at may run a hair early: never show the core a time before it
        self._on_events(self.core.on_timer(max(self._loop.time(), deadline)))
        self._arm_timer()

    # -- receiving ------------------------------------------------------------------
    async def receive(self) -> ReceivedMessage:
        """Next complete incoming message."""
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[ReceivedMessage]:
        return self

    async def __anext__(self) -> ReceivedMessage:
        return await self.receive()

    def _on_events(self, events: list[SessionEvent]) -> None:
        for ev in events:
            self._on_event(ev)

    def _on_event(self, ev: SessionEvent) -> None:
        if isinstance(ev, MessageReceived):
            m: IncomingMessage = ev.message
            rm = ReceivedMessage(m.message_id, m.content_type, m.headers, m.size or 0, m.sink,
                                 m.success_report)
            if self.on_message is not None:
                self.on_message(rm)
            else:
                self._queue.put_nowait(rm)
        elif isinstance(ev, MessageDelivered):
            fut = self._waiters.pop(ev.message_id, None)
            if fut is not None and not fut.done():
                fut.set_result(SendResult(ev.message_id, 0))
        elif isinstance(ev, MessageFailed):
            fut = self._waiters.pop(ev.message_id, None)
            if fut is not None and not fut.done():
                exc = (TransactionTimeout(ev.message_id) if ev.status == 408
                       else MsrpStatusError(ev.message_id, ev.status, ev.comment))
                fut.set_exception(exc)
        elif isinstance(ev, ReportReceived):
            self.reports.append(ev.request)
        elif isinstance(ev, SessionBound):
            self._bound.set()
        elif isinstance(ev, MessageAborted):
            log.info("session %s: message %s aborted", self.session_id, ev.message_id)

    def _connection_lost(self) -> None:
        self._bound.clear()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(SessionClosed("connection lost"))
        self._waiters.clear()

    async def close(self) -> None:
        """Forget the session; close its connection when no other session uses it."""
        self.endpoint._forget(self)
        if self._timer is not None:
            self._timer.cancel()
        conn = self.connection
        if conn is not None:
            conn.core.sessions.discard(self.core)
            self.core.connection = None
            if not conn.core.sessions:
                conn.close()
        self._connection_lost()


class MsrpEndpoint:
    """Listens on host:port (TCP, or TLS with ``ssl``) and hosts MSRP sessions."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 ssl: _ssl.SSLContext | None = None, client_ssl: _ssl.SSLContext | None = None,
                 matching: SessionMatching = SessionMatching.SESSION_ID,
                 keepalive_interval: float | None = None, idle_timeout: float | None = None,
                 message_timeout: float | None = None,
                 max_header_size: int = 16384, write_buffer_limit: int = 1 << 20) -> None:
        """``idle_timeout``: close a connection with nothing sent or received for
        that long; ``message_timeout``: close one whose message (chunk) has not
        ended that long after its first byte (a trickling peer)."""
        self.host = host
        self.port = port
        self.ssl = ssl
        self.client_ssl = client_ssl
        self.matching = matching
        self.liveness = Liveness(keepalive_interval, idle_timeout, message_timeout)
        self.max_header_size = max_header_size
        self.write_buffer_limit = write_buffer_limit
        self._server: asyncio.Server | None = None
        self._sessions: dict[str, MsrpSession] = {}
        self._by_core: dict[SessionCore, MsrpSession] = {}
        self._connections: set[MsrpConnection] = set()
        self._outbound: dict[tuple[str, int, bool], MsrpConnection] = {}
        self._connecting: dict[tuple[str, int, bool], asyncio.Future[MsrpConnection]] = {}
        self.trace: MsrpTrace | None = None  # see MsrpTrace: every byte in and out

    @property
    def scheme(self) -> str:
        return "msrps" if self.ssl is not None else "msrp"

    async def start(self) -> MsrpEndpoint:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: MsrpConnection(self), self.host,
                                                self.port, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        for session in list(self._sessions.values()):
            await session.close()
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> MsrpEndpoint:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def create_session(self, remote_path: Sequence[MsrpUri | str] = (), *,
                       setup: Setup | str = Setup.PASSIVE, session_id: str | None = None,
                       accept_types: Sequence[str] = ("*",), max_size: int | None = None,
                       chunk_size: int = 2048, transaction_timeout: float = 30.0,
                       cema_address: tuple[str, int] | None = None) -> MsrpSession:
        """A new session with a fresh local URI ``msrp[s]://host:port/<id>;tcp``."""
        sid = session_id or new_id()
        local = MsrpUri(self.scheme, self.host, self.port, sid, "tcp")
        core = SessionCore([local], accept_types=accept_types, max_size=max_size,
                           chunk_size=chunk_size, transaction_timeout=transaction_timeout)
        session = MsrpSession(self, core, Setup(setup), cema_address)
        session.set_remote_path(remote_path)
        self._sessions[sid] = session
        self._by_core[core] = session
        return session

    def _forget(self, session: MsrpSession) -> None:
        self._sessions.pop(session.session_id, None)
        self._by_core.pop(session.core, None)

    def _lookup(self, uri: MsrpUri) -> SessionCore | None:
        """To-Path to session (RFC 4975 section 7.3; RFC 7977 session-id matching)."""
        session = self._sessions.get(uri.session_id or "")
        if session is None:
            return None
        if self.matching is SessionMatching.URI and uri != session.local_uri:
            return None
        return session.core

    async def _connect(self, host: str, port: int, secure: bool) -> MsrpConnection:
        """One connection per remote authority, shared by sessions (RFC 4975 section 5.4)."""
        key = (host, port, secure)
        conn = self._outbound.get(key)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            return conn
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[MsrpConnection] = loop.create_future()
        self._connecting[key] = fut
        try:
            ctx = (self.client_ssl or _ssl.create_default_context()) if secure else None
            _, proto = await loop.create_connection(lambda: MsrpConnection(self, key), host,
                                                    port, ssl=ctx)
            self._outbound[key] = proto
            fut.set_result(proto)
            return proto
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved
            raise
        finally:
            del self._connecting[key]


def _address(name: Any) -> tuple[str, int]:
    """(host, port) of a socket name (IPv6 names carry flow info and scope too)."""
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return "", 0


def _size_of(body: Body) -> int | None:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return len(body)
    if isinstance(body, io.IOBase) or hasattr(body, "seek"):
        try:
            f: Any = body
            here = f.tell()
            end = f.seek(0, os.SEEK_END)
            f.seek(here)
            return int(end - here)
        except (OSError, ValueError, AttributeError):
            return None
    return None


async def _pieces(body: Chunks, size: int,
                  total: int | None = None) -> AsyncIterator[tuple[bytes, bool]]:
    """(piece, is_last) of at most ``size`` bytes, reading the source lazily.

    With ``total`` known a piece goes out as soon as it is read (a relay or a
    slow source loses nothing when it stops early); else one piece is held
    back to learn which is the last."""
    if total is not None:
        done = 0
        async for piece in _raw_pieces(body, size):
            if piece:
                done += len(piece)
                yield piece, done >= total
                if done >= total:
                    return
        yield b"", True  # the source was shorter than announced
        return
    prev: bytes | None = None
    async for piece in _raw_pieces(body, size):
        if not piece:
            continue
        if prev is not None:
            yield prev, False
        prev = piece
    yield (prev if prev is not None else b""), True


async def _raw_pieces(body: Chunks, size: int) -> AsyncIterator[bytes]:
    if isinstance(body, (bytes, bytearray, memoryview)):
        mv = memoryview(body)
        for i in range(0, len(mv), size):
            yield bytes(mv[i : i + size])
    elif hasattr(body, "read"):
        read = body.read
        while piece := read(size):
            yield piece
    elif isinstance(body, AsyncIterable):
        async for block in body:
            for sub in _split(block, size):
                yield sub
    else:
        for block in body:
            for sub in _split(block, size):
                yield sub


def _split(block: bytes, size: int) -> Iterable[bytes]:
    if len(block) <= size:
        return (bytes(block),)
    mv = memoryview(block)
    return (bytes(mv[i : i + size]) for i in range(0, len(mv), size))
