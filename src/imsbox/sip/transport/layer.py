"""The SIP transport layer (RFC 3261 section 18, RFC 3581, RFC 5923 ideas).

Owns the UDP sockets, TCP/TLS listeners and the table of open stream
connections; turns bytes into parsed messages for ``on_message`` and
messages into bytes on the right socket or connection.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import itertools
import logging
import socket
import ssl
from collections import Counter
from dataclasses import dataclass
from collections.abc import Callable

from ..headers import HeaderError, Params, Via
from ..message import REASON_PHRASES, Message, Request, Response
from ..parser import MAX_HEADER_LENGTH, MAX_HEADER_SIZE, MAX_HEADERS, ParseError, parse
from .base import TRANSPORTS, Destination, Flow
from .stream import FramingError, StreamConnection, StreamFramer
from .udp import UdpEndpoint

__all__ = [
    "TransportLayer", "Limits", "DEFAULT_PORTS", "add_received", "response_destination",
    "reason_phrase", "OnMessage", "OnError", "Trace",
]

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
MAX_REASON = 100
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")  # what a response needs (8.2.6)

OnMessage = Callable[[Request | Response, Flow], None]
OnError = Callable[[Exception, Message, "Destination | None"], None]
Trace = Callable[[str, bytes, Flow], None]
ConnKey = tuple[str, str, int]


@dataclass(slots=True, frozen=True)
class Limits:
    """Resource limits of the transport layer (sizes in bytes, times in seconds).

    What is refused and how (docs/limits.md): more than ``max_headers`` header
    lines or one longer than ``max_header_length`` -> 400; a header section
    over ``max_header_size`` -> 513 on UDP, closed on a stream; a body over
    ``max_body_size`` -> 413.  A stream message must be complete within
    ``message_timeout`` of its first byte; a connection with nothing for
    ``idle_timeout`` is closed; accepted connections beyond
    ``max_connections`` (in total) or ``max_connections_per_source`` (per IP
    address) are closed at once.
    """

    max_header_size: int = MAX_HEADER_SIZE
    max_headers: int = MAX_HEADERS
    max_header_length: int = MAX_HEADER_LENGTH
    max_body_size: int = 256 * 1024
    idle_timeout: float | None = 60.0
    message_timeout: float | None = 30.0
    connect_timeout: float = 10.0
    max_connections: int = 1024
    max_connections_per_source: int = 256


class TransportLayer:
    """UDP, TCP and TLS for one SIP node (RFC 3261 18)."""

    def __init__(self, on_message: OnMessage, on_error: OnError | None = None,
                 limits: Limits | None = None, trace: Trace | None = None, *,
                 client_ssl_context: ssl.SSLContext | None = None) -> None:
        self.on_message = on_message
        self.on_error = on_error
        self.limits = limits if limits is not None else Limits()
        self.trace = trace
        self.client_ssl_context = client_ssl_context
        self.stats: Counter[str] = Counter()
        self._udp: list[UdpEndpoint] = []
        self._servers: list[asyncio.Server] = []
        self._listening: list[Destination] = []
        self._conns: dict[int, StreamConnection] = {}
        self._by_addr: dict[ConnKey, StreamConnection] = {}
        self._connecting: dict[ConnKey, asyncio.Task[StreamConnection]] = {}
        # (transport, family) -> the listen socket our connections go out from
        self._sources: dict[tuple[str, int], tuple[str, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._closed = False
        self._accepted_from: Counter[str] = Counter()  # open accepted connections per IP
        self.queue_delay = 0.0  # how long the message being handled waited in the kernel

    # -- public API -------------------------------------------------------
    @property
    def listen_addresses(self) -> list[Destination]:
        return list(self._listening)

    @property
    def connections(self) -> list[StreamConnection]:
        return [c for c in self._conns.values() if not c.closed]

    def open_flow(self, transport: str, local: tuple[str, int],
                  remote: tuple[str, int]) -> Flow | None:
        """The open connection of exactly this flow (RFC 5626: transport, both
        ends), as a Flow with its connection; None when it is gone."""
        conn = self._by_addr.get(_key(transport, *remote))
        if conn is None or conn.closed or conn.remote[1] != remote[1] or \
                (_norm(conn.local[0]), conn.local[1]) != (_norm(local[0]), local[1]):
            return None
        return conn.flow

    async def listen(self, transport: str, host: str, port: int,
                     ssl_context: ssl.SSLContext | None = None, *,
                     reuse_port: bool = False) -> tuple[str, int]:
        """Bind a listener; port 0 picks a free port. Returns the bound address.

        ``reuse_port`` (TCP/TLS): connections we open over this transport go
        out *from* this address and port (SO_REUSEADDR + SO_REUSEPORT on both
        sockets, Kamailio's tcp_reuse_port), so a peer sees our listen socket
        as the remote address (sip.trust).  The port must be free: a port
        another socket shares would silently split the connections."""
        transport = transport.lower()
        if transport == "udp":
            endpoint = await self._bind_udp(host, port)
            self._listening.append(Destination("udp", *endpoint.local))
            return endpoint.local
        if transport not in ("tcp", "tls"):
            raise ValueError(f"unknown transport {transport!r}")
        if transport == "tls" and ssl_context is None:
            raise ValueError("a TLS listener needs an ssl_context")
        if reuse_port:
            port = _exclusive_port(host, port)
        server = await asyncio.start_server(
            lambda r, w: self._accepted(transport, r, w), host, port,
            ssl=ssl_context if transport == "tls" else None, reuse_port=reuse_port or None)
        self._servers.append(server)
        name = server.sockets[0].getsockname()
        bound = (str(name[0]), int(name[1]))
        self._listening.append(Destination(transport, *bound))
        if reuse_port:
            self._sources.setdefault((transport, _family(bound[0])), bound)
        log.info("listening on %s", self._listening[-1])
        return bound

    async def adopt(self, transport: str, sock: socket.socket, *,
                    primary: bool = False) -> tuple[str, int]:
        """Serve a socket bound elsewhere: a supervisor's, shared between worker
        processes with SO_REUSEPORT (``imsbox.workers``).  A TCP socket must
        be listening already.  ``primary`` (UDP): requests and stateless sends
        of its address family go out from this socket instead of the first
        one bound, so the answers to them come back to it.  Returns its address."""
        transport = transport.lower()
        if transport == "udp":
            sock.setblocking(False)
            endpoint = UdpEndpoint(self._datagram, sock)
            self._udp.insert(0 if primary else len(self._udp), endpoint)
            self._listening.append(Destination("udp", *endpoint.local))
            return endpoint.local
        if transport != "tcp":
            raise ValueError(f"cannot adopt a {transport!r} socket (udp or tcp)")
        server = await asyncio.start_server(
            lambda r, w: self._accepted(transport, r, w), sock=sock)
        self._servers.append(server)
        name = sock.getsockname()
        bound = (str(name[0]), int(name[1]))
        self._listening.append(Destination(transport, *bound))
        return bound

    async def send(self, message: Request | Response, dest: Destination,
                   flow: Flow | None = None) -> Flow:
        """Send to ``dest`` (over ``flow``'s connection if still open); raises OSError."""
        if dest.transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {dest.transport!r}")
        if self._closed:
            raise ConnectionResetError("transport layer is closed")
        data = bytes(message)
        if dest.transport == "udp":
            endpoint = await self._udp_for(dest.host, flow)
            out = endpoint.flow_to((dest.host, dest.port))
            self._trace("out", data, out, message)
            endpoint.sendto(data, (dest.host, dest.port))
        else:
            conn = await self._connection_for(dest, flow)
            out = conn.flow
            self._trace("out", data, out, message)
            await conn.send(data)
        self.stats["messages_out"] += 1
        return out

    def send_now(self, message: Request | Response, dest: Destination,
                 flow: Flow | None = None) -> Flow | None:
        """Send at once when nothing must be awaited first: UDP to an address
        over a socket we already have.  None: not sent, use ``send()``.
        Raises OSError as ``send()`` does.  Saves a task per message."""
        if dest.transport != "udp" or self._closed or not _is_ip_literal(dest.host):
            return None
        endpoint = self._udp_now(dest.host, flow)
        if endpoint is None:
            return None
        data = bytes(message)
        out = endpoint.flow_to((dest.host, dest.port))
        self._trace("out", data, out, message)
        endpoint.sendto(data, (dest.host, dest.port))
        self.stats["messages_out"] += 1
        return out

    def send_response(self, response: Response, flow: Flow | None) -> None:
        """18.2.2: route a response back to its sender; never raises."""
        if flow is None or flow.transport == "udp":
            try:
                if self.send_now(response, response_destination(response), flow) is not None:
                    return
            except Exception:
                pass  # the task below tries again and reports the error
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.error("send_response called outside an event loop; %r dropped", response)
            return
        task = loop.create_task(self._send_response(response, flow))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop listening, close every socket and connection, cancel pending sends."""
        self._closed = True
        for server in self._servers:
            server.close()
        for endpoint in self._udp:
            endpoint.close()
        for task in list(self._connecting.values()) + list(self._tasks):
            task.cancel()
        await asyncio.gather(*(c.close() for c in list(self._conns.values())),
                             return_exceptions=True)
        await asyncio.gather(*self._tasks, *self._connecting.values(), return_exceptions=True)
        for server in self._servers:
            try:
                async with asyncio.timeout(1.0):
                    await server.wait_closed()
            except TimeoutError:
                pass
        self._servers.clear()
        self._udp.clear()

    # -- receiving --------------------------------------------------------
    def _datagram(self, endpoint: UdpEndpoint, data: bytes, remote: tuple[str, int]) -> None:
        if not data.strip(b"\r\n\t \x00"):
            self.stats["keepalives_in"] += 1  # CRLF keep-alive on UDP: nothing to do
            return
        self.queue_delay = endpoint.last_delay
        self._received(data, endpoint.flow_to(remote), None)

    def _received(self, data: bytes, flow: Flow, conn: StreamConnection | None) -> None:
        self._trace("in", data, flow, None)
        self.stats["messages_in"] += 1
        limits = self.limits
        try:
            message = parse(data, max_headers=limits.max_headers,
                            max_header_length=limits.max_header_length,
                            max_header_size=limits.max_header_size)
        except ParseError as exc:
            self._malformed(exc, flow, conn)
            return
        if len(message.body) > limits.max_body_size:  # a datagram (streams frame first)
            self._malformed(ParseError(
                f"body of {len(message.body)} bytes exceeds limit of {limits.max_body_size}",
                413, message), flow, conn)
            return
        if isinstance(message, Request):
            add_received(message, flow.remote)
            if conn is not None and conn.accepted:
                self._alias(conn, message)
        try:
            self.on_message(message, flow)
        except Exception:
            log.exception("on_message failed for %r call-id=%s", message,
                          message.headers.get("Call-ID"))

    def _malformed(self, exc: ParseError, flow: Flow, conn: StreamConnection | None) -> None:
        """Answer a malformed request we can address (8.2.6), drop anything else.

        On a stream, an unparseable start line also ends the connection: what
        follows cannot be trusted to be framed (the answer goes out first)."""
        closing = conn if conn is not None and exc.bad_start_line else None
        response = self._answer_for(exc, flow)
        if response is None:
            if closing is not None:
                closing.hang_up(b"")
        elif closing is not None:
            data = bytes(response)
            self._trace("out", data, flow, response)
            closing.hang_up(data)
        else:
            self.send_response(response, flow)

    def _answer_for(self, exc: ParseError, flow: Flow) -> Response | None:
        request = exc.partial
        if not (isinstance(request, Request) and _answerable(request)):
            self.stats["malformed_dropped"] += 1
            log.info("dropped malformed message from %s: %s", flow.remote, exc.reason)
            return None
        add_received(request, flow.remote)
        self.stats["malformed_answered"] += 1
        log.info("answering malformed %s from %s with %d: %s", request.method,
                 flow.remote, exc.status, exc.reason)
        return Response.for_request(request, exc.status, reason_phrase(exc.status, exc.reason))

    # -- stream connection callbacks (ConnectionHandler) ------------------
    def stream_message(self, conn: StreamConnection, data: bytes) -> None:
        self.queue_delay = 0.0  # TCP pushes back by itself; only datagrams queue unseen
        self._received(data, conn.flow, conn)

    def stream_framing_error(self, conn: StreamConnection, error: FramingError) -> bytes | None:
        self.stats["framing_errors"] += 1
        if error.status is None or error.head is None:
            return None
        request = _partial_request(error.head)
        if request is None:
            return None
        add_received(request, conn.remote)
        response = Response.for_request(request, error.status,
                                        reason_phrase(error.status, error.reason))
        data = bytes(response)
        self._trace("out", data, conn.flow, response)
        self.stats["malformed_answered"] += 1
        return data

    def stream_closed(self, conn: StreamConnection) -> None:
        if self._conns.pop(conn.conn_id, None) is not None and conn.accepted:
            self._accepted_from[conn.remote[0]] -= 1
            if self._accepted_from[conn.remote[0]] <= 0:
                del self._accepted_from[conn.remote[0]]
        for key in [k for k, c in self._by_addr.items() if c is conn]:
            del self._by_addr[key]
        self.stats["connections_closed"] += 1
        log.debug("closed %r", conn)

    def _accepted(self, transport: str, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
        if self._closed:
            writer.close()
            return
        refusal = self._over_connection_caps(_addr_of(writer))
        if refusal:
            self.stats["connections_refused"] += 1
            log.warning("refused a %s connection: %s", transport, refusal)
            writer.transport.abort()
            return
        conn = self._new_connection(transport, reader, writer, accepted=True)
        self._accepted_from[conn.remote[0]] += 1
        self.stats["connections_accepted"] += 1
        log.debug("accepted %r", conn)

    def _over_connection_caps(self, remote: tuple[str, int]) -> str | None:
        """Why one more accepted connection from ``remote`` is too many (None: fine)."""
        limits = self.limits
        total = sum(self._accepted_from.values())
        if total >= limits.max_connections:
            return f"{total} connections open (max_connections)"
        mine = self._accepted_from[remote[0]]
        if mine >= limits.max_connections_per_source:
            return f"{mine} connections open from {remote[0]} (max_connections_per_source)"
        return None

    def _new_connection(self, transport: str, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, accepted: bool) -> StreamConnection:
        limits = self.limits
        framer = StreamFramer(limits.max_header_size, limits.max_body_size)
        conn = StreamConnection(self, reader, writer, transport, next(self._ids), framer,
                                limits.idle_timeout, accepted,
                                message_timeout=limits.message_timeout)
        self._conns[conn.conn_id] = conn
        self._by_addr[_key(transport, *conn.remote)] = conn
        task = conn.start()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return conn

    def _alias(self, conn: StreamConnection, request: Request) -> None:
        """RFC 5923: with ;alias, reuse this connection for requests to the Via sent-by."""
        via = _top_via(request)
        if not via.params.has("alias") or via.transport.lower() != conn.transport:
            return
        key = _key(conn.transport, via.host, via.port or DEFAULT_PORTS[conn.transport])
        current = self._by_addr.get(key)
        if current is None or current.closed:
            self._by_addr[key] = conn

    # -- sending ----------------------------------------------------------
    async def _send_response(self, response: Response, flow: Flow | None) -> None:
        dest: Destination | None = None
        try:
            if flow is not None and self._open_connection(flow) is not None:
                dest = flow.destination  # 18.2.2: the connection the request came on
            else:
                dest = await _resolved(response_destination(response))
            await self.send(response, dest, flow)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats["send_errors"] += 1
            log.info("could not send %r to %s: %s", response, dest, exc)
            if self.on_error is not None:
                try:
                    self.on_error(exc, response, dest)
                except Exception:
                    log.exception("on_error failed")

    async def _bind_udp(self, host: str, port: int) -> UdpEndpoint:
        endpoint = UdpEndpoint.bind(self._datagram, host, port)
        self._udp.append(endpoint)
        log.info("udp socket on %s", endpoint.local)
        return endpoint

    async def _udp_for(self, host: str, flow: Flow | None) -> UdpEndpoint:
        """The listening socket of the destination's family (the flow's if it has one)."""
        endpoint = self._udp_now(host, flow)
        if endpoint is not None:
            return endpoint
        # Not listening on that family: an ephemeral socket still gets answers back.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return await self._bind_udp("::" if family == socket.AF_INET6 else "0.0.0.0", 0)

    def _udp_now(self, host: str, flow: Flow | None) -> UdpEndpoint | None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        candidates = [e for e in self._udp if e.family == family and e.is_open]
        if flow is not None and flow.transport == "udp":
            for endpoint in candidates:
                if endpoint.local == flow.local:
                    return endpoint
        return candidates[0] if candidates else None

    def _open_connection(self, flow: Flow) -> StreamConnection | None:
        conn = self._conns.get(flow.conn_id) if flow.conn_id is not None else None
        return conn if conn is not None and not conn.closed else None

    async def _connection_for(self, dest: Destination, flow: Flow | None) -> StreamConnection:
        conn = self._open_connection(flow) if flow is not None else None
        if conn is not None and conn.transport == dest.transport:
            return conn
        key = _key(dest.transport, dest.host, dest.port)
        conn = self._by_addr.get(key)
        if conn is not None and not conn.closed:
            return conn
        task = self._connecting.get(key)
        if task is None:  # one connection attempt per destination, shared by all senders
            task = asyncio.get_running_loop().create_task(self._connect(dest))
            self._connecting[key] = task
            task.add_done_callback(lambda t: self._connecting.pop(key, None))
        return await asyncio.shield(task)

    async def _connect(self, dest: Destination) -> StreamConnection:
        context: ssl.SSLContext | None = None
        if dest.transport == "tls":
            context = self.client_ssl_context or ssl.create_default_context()
        hostname = dest.host if context is not None else None
        source = self._sources.get((dest.transport, _family(dest.host)))
        async with asyncio.timeout(self.limits.connect_timeout):
            if source is not None:
                sock_or_conn = await self._from_listen_socket(source, dest)
                if isinstance(sock_or_conn, StreamConnection):
                    return sock_or_conn  # the peer connected to us meanwhile
                reader, writer = await asyncio.open_connection(
                    sock=sock_or_conn, ssl=context, server_hostname=hostname)
            else:
                reader, writer = await asyncio.open_connection(
                    dest.host, dest.port, ssl=context, server_hostname=hostname)
        if self._closed:
            writer.close()
            raise ConnectionResetError("transport layer is closed")
        conn = self._new_connection(dest.transport, reader, writer, accepted=False)
        self._by_addr[_key(dest.transport, dest.host, dest.port)] = conn
        self.stats["connections_opened"] += 1
        log.debug("connected %r", conn)
        return conn

    async def _from_listen_socket(self, source: tuple[str, int],
                                  dest: Destination) -> socket.socket | StreamConnection:
        """A socket connected to ``dest`` from our listen socket, or the connection
        the peer opened to us meanwhile.  Never from another port: the peer trusts
        only our listen socket (sip.trust), so that would earn a 403.  Between two
        nodes there is one 4-tuple; it is taken while the peer's own connection to
        us is being accepted (both sides connecting at once) or while the last one
        closes (TIME_WAIT on loopback is reusable after 1 s, net.ipv4.tcp_tw_reuse).
        """
        key = _key(dest.transport, dest.host, dest.port)
        for delay in _TUPLE_RETRY_DELAYS:
            if delay:
                await asyncio.sleep(delay)
            conn = self._by_addr.get(key)
            if conn is not None and not conn.closed:
                return conn
            sock = await _connected_from(source, dest)
            if sock is not None:
                return sock
        raise ConnectionError(f"cannot connect to {dest} from {source[0]}:{source[1]}: "
                              "that 4-tuple stays taken")

    def _trace(self, direction: str, data: bytes, flow: Flow,
               message: Message | None) -> None:
        if log.isEnabledFor(logging.DEBUG):
            call_id = message.headers.get("Call-ID") if message is not None else None
            log.debug("%s %s %s <-> %s (%d bytes) call-id=%s\n%s", direction, flow.transport,
                      flow.local, flow.remote, len(data), call_id,
                      data[:2000].decode("utf-8", "replace"))
        if self.trace is not None:
            try:
                self.trace(direction, data, flow)
            except Exception:
                log.exception("trace callback failed")


# Waits before each try at a taken 4-tuple: ~1.6 s in all, past the 1 s after
# which Linux lets a loopback connect reuse a TIME_WAIT 4-tuple.
_TUPLE_RETRY_DELAYS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _reusable_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _exclusive_port(host: str, port: int) -> int:
    """Bind once without SO_REUSEPORT: fails if anybody listens there (and
    picks the port for port 0); the real listener binds it right after."""
    probe = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return int(probe.getsockname()[1])
    finally:
        probe.close()


async def _connected_from(source: tuple[str, int], dest: Destination) -> socket.socket | None:
    """A TCP socket connected to ``dest`` from our listen socket ``source``;
    None when that 4-tuple is taken (the caller waits and tries again)."""
    try:
        sock = _reusable_socket(*source)
    except OSError as exc:
        log.warning("cannot bind %s for a connection to %s: %s", source, dest, exc)
        return None
    sock.setblocking(False)
    # asyncio sets TCP_NODELAY only on sockets it connects itself: without it
    # Nagle holds back small writes for a delayed ACK (40 ms on Linux).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (dest.host, dest.port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            log.info("cannot connect to %s from %s yet (%s)", dest, source, exc)
            return None
        raise
    except BaseException:
        sock.close()
        raise
    return sock


def add_received(request: Request, source: tuple[str, int]) -> None:
    """RFC 3261 18.2.1 and RFC 3581 4: note the source address in the top Via."""
    try:
        via = _top_via(request)
    except HeaderError:
        return
    host, port = source
    fill_rport = via.wants_rport and via.rport is None
    if not fill_rport and _same_host(via.host, host):
        return
    via = Via(via.transport, via.host, via.port, Params(via.params), via.protocol)
    via.params.set("received", host)
    if fill_rport:
        _set_in_place(via.params, "rport", str(port))
    request.replace_top_via(via)


def response_destination(response: Response) -> Destination:
    """RFC 3261 18.2.2 / RFC 3581 4: where a response goes, from its top Via."""
    via = _top_via(response)
    transport = via.transport.lower()
    if transport not in TRANSPORTS:
        raise ValueError(f"unsupported Via transport {via.transport}")
    default_port = DEFAULT_PORTS[transport]
    if transport != "udp":
        return Destination(transport, _bare(via.received or via.host), via.port or default_port)
    if via.maddr:
        return Destination("udp", _bare(via.maddr), via.port or default_port)
    host = _bare(via.received or via.host)
    if via.rport is not None:
        return Destination("udp", host, via.rport)
    return Destination("udp", host, via.port or default_port)


def reason_phrase(status: int, detail: str) -> str:
    """'Bad Request - missing Call-ID header': one printable line, at most 100 chars."""
    text = f"{REASON_PHRASES.get(status, 'Bad Request')} - {detail}"
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def _answerable(request: Request) -> bool:
    if request.method == "ACK":  # 17.2.1: never answer an ACK
        return False
    if not all(name in request.headers for name in _REQUIRED):
        return False
    try:
        return _top_via(request).transport.lower() in TRANSPORTS
    except HeaderError:
        return False


def _top_via(message: Message) -> Via:
    """The first Via only: a later malformed one must not stop a reply."""
    return message.first_via()


def _addr_of(writer: asyncio.StreamWriter) -> tuple[str, int]:
    info = writer.get_extra_info("peername")
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return ("", 0)


def _partial_request(head: bytes) -> Request | None:
    try:
        message: Message | None = parse(head)
    except ParseError as exc:
        message = exc.partial
    if isinstance(message, Request) and _answerable(message):
        return message
    return None


async def _resolved(dest: Destination) -> Destination:
    """Sent-by may be a host name: look up an address (RFC 3263 5, A/AAAA only)."""
    if _is_ip_literal(dest.host):
        return dest
    kind = socket.SOCK_DGRAM if dest.transport == "udp" else socket.SOCK_STREAM
    infos = await asyncio.get_running_loop().getaddrinfo(dest.host, dest.port, type=kind)
    if not infos:
        raise OSError(f"cannot resolve {dest.host}")
    return Destination(dest.transport, str(infos[0][4][0]), dest.port)


def _set_in_place(params: Params, name: str, value: str) -> None:
    low = name.lower()
    for i, (n, _) in enumerate(params):
        if n.lower() == low:
            params[i] = (n, value)
            return
    params.append((name, value))


def _bare(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


@functools.lru_cache(maxsize=1024)
def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _norm(host: str) -> str:
    host = _bare(host)
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def _same_host(a: str, b: str) -> bool:
    return a == b or _norm(a) == _norm(b)


def _key(transport: str, host: str, port: int) -> ConnKey:
    return (transport, _norm(host), port)
