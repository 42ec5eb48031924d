"""asyncio glue: one TransportLayer, one TransactionLayer, their timers.

``SipEndpoint.request()`` runs a client transaction and yields its responses
through a ``ClientContext``; every new request becomes a ``ServerContext``
offered to the endpoint's modules in priority order until one takes it (the
pjsip idea: dialog layer, event usages, services, proxy).  What no module
takes is answered here: 405 with Allow or 501 (8.2.1), never an ACK.
CANCEL is answered here (9.2: 200, or 481 from the transaction layer) and
shows up as ``ServerContext.cancelled``.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import ipaddress
import itertools
import logging
import socket
from dataclasses import astuple, dataclass
from typing import Protocol
from collections.abc import Awaitable, Callable, Collection, Iterable

from ..errors import Unavailable
from ..content.errors import ContentError
from ..sdp.errors import SdpError
from .grammar import GrammarError
from .headers import COMPACT_FORMS, HeaderError
from .message import Request, Response, new_branch, new_tag
from .overload import OverloadController, OverloadPolicy
from .transaction import (
    AckReceived, CancelReceived, ClientTransaction, Event, ResponseReceived,
    ServerTransaction, StrayResponse, TimerValues, TransactionLayer, TransactionTerminated,
    TransactionTimeout, Transmit, TransportFailure, make_cancel,
)
from .transport import (
    DEFAULT_PORTS, UDP_MTU_LIMIT, Destination, Flow, Limits, TransportLayer, reason_phrase,
    response_destination,
)
from .uri import SipUri, UriError

__all__ = ["SipEndpoint", "ClientContext", "ServerContext", "Handler", "HandlerModule",
           "GateModule",
           "Module", "Priority", "SIP_METHODS", "bad_request_reason", "next_hop"]

log = logging.getLogger(__name__)
trace_log = logging.getLogger("imsbox.sip.trace")

Handler = Callable[["ServerContext"], Awaitable[None] | None]

# Methods a SIP element recognises even when nothing here serves them: they get
# 405, anything else 501 (8.2.1).  RFC 3261 and the extensions in the registry.
SIP_METHODS = frozenset({"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "PRACK",
                         "UPDATE", "INFO", "MESSAGE", "SUBSCRIBE", "NOTIFY", "REFER",
                         "PUBLISH"})


class Priority(enum.IntEnum):
    """Where a module sits in the order requests are offered (lower first).

    pjsip's layering in our words: the dialog layer sees in-dialog requests
    first, then the usages that share dialogs with it (events, REFER), then
    services and the UA's own answers, and a proxy core last.
    """

    POLICY = 16        # a guard that refuses requests before anyone serves them (trust)
    DIALOG = 32        # requests inside a dialog we hold (12.2.2)
    EVENT = 48         # SUBSCRIBE / NOTIFY (RFC 6665) and REFER (RFC 3515)
    SERVICE = 64       # an AS choosing per request (REGISTER, MESSAGE, B2BUA legs)
    APPLICATION = 80   # a UA core: new INVITE / OPTIONS, the app's callback
    PROXY = 96         # a proxy core relays whatever nobody above took (16)


class Module(Protocol):
    """Something that serves requests on an endpoint.

    ``on_request`` says at once whether it takes the request; a module that
    takes one must answer it (or leave that to work it starts with
    ``ctx.spawn``).  ``methods`` are the methods it serves: a 405's Allow.
    """

    @property
    def name(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def methods(self) -> Collection[str]: ...

    def on_request(self, ctx: ServerContext) -> bool: ...


@dataclass(slots=True, eq=False)
class HandlerModule:
    """A callable as a module that takes every request it is offered
    (a proxy core, a test peer); an awaitable result runs as ``ctx.spawn``."""

    handle: Handler
    name: str = "handler"
    priority: int = Priority.APPLICATION
    methods: Collection[str] = ()

    def on_request(self, ctx: ServerContext) -> bool:
        result = self.handle(ctx)
        if inspect.isawaitable(result):
            ctx.spawn(result)
        return True


@dataclass(slots=True, eq=False)
class GateModule:
    """A callable as a module that takes only what it says it took: ``take(ctx)``
    answers (or hands on) the requests it wants and returns True for those."""

    take: Callable[[ServerContext], bool]
    name: str
    methods: Collection[str]
    priority: int = Priority.EVENT

    def on_request(self, ctx: ServerContext) -> bool:
        return self.take(ctx)


def next_hop(request: Request) -> tuple[str, str, int]:
    """(transport, host, port) from the first Route (loose routing) or the
    Request-URI (8.1.2; RFC 3263 without NAPTR/SRV)."""
    uri = request.route[0].uri if request.route else request.uri
    if not isinstance(uri, SipUri):
        raise ValueError(f"cannot route to {uri}")
    transport = uri.transport or ("tls" if uri.secure else "udp")
    if uri.secure and transport == "tcp":
        transport = "tls"
    if transport not in DEFAULT_PORTS:
        raise ValueError(f"unsupported transport {transport}")
    host = uri.maddr or uri.host
    host = host[1:-1] if host.startswith("[") else host
    return transport, host, uri.port or DEFAULT_PORTS[transport]


async def resolve(transport: str, host: str, port: int) -> Destination:
    """A Destination with an IP literal: hostnames go through getaddrinfo."""
    try:
        ipaddress.ip_address(host)
        return Destination(transport, host, port)
    except ValueError:
        pass
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=kind)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    return Destination(transport, str(infos[0][4][0]), port)


def bad_request_reason(request: Request, exc: BaseException) -> str | None:
    """Why ``request`` is bad, when ``exc`` was raised by its own content (a
    400 with that reason); None when ``exc`` is a bug of ours (500).

    Typed errors about what a peer sent count; a HeaderError only when it
    names a header of the request itself."""
    # The UA layer sits on this module: imported here, not at the top.
    from .ua.dialog import DialogError
    from .ua.invite import SessionError

    if not isinstance(exc, (HeaderError, DialogError, SessionError, UriError, GrammarError,
                            ContentError, SdpError)):
        return None
    if isinstance(exc, HeaderError):
        names = {COMPACT_FORMS.get(n.lower(), n).lower() for n, _ in request.headers}
        if exc.header.lower() not in names:
            return None
    return str(exc) or type(exc).__name__


def _sent_by(flow: Flow) -> tuple[str, int] | None:
    """The flow's local address as Via sent-by, unless it is a wildcard bind."""
    try:
        unspecified = ipaddress.ip_address(flow.local[0]).is_unspecified
    except ValueError:
        unspecified = False
    return None if unspecified else flow.local


class ClientContext:
    """One request sent: iterate for provisional and final responses.

    Iteration stops after the first final response.  Later responses (2xx
    retransmissions and forks in the RFC 6026 Accepted state) go to
    ``on_late_response`` if set, else to the endpoint's ``on_stray``.
    A timeout yields a local 408 and a transport failure a local 503
    (8.1.3.1); ``local_failure`` then says so.
    """

    def __init__(self, endpoint: SipEndpoint, request: Request) -> None:
        self.request = request
        self.txn: ClientTransaction | None = None
        self.dest: Destination | None = None
        self.local_failure = False
        self.on_late_response: Callable[[Response], None] | None = None
        self._endpoint = endpoint
        loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Response] = asyncio.Queue()
        self._final: asyncio.Future[Response] = loop.create_future()
        self._progress: asyncio.Future[None] = loop.create_future()  # first response
        self._iter_done = False

    def __aiter__(self) -> ClientContext:
        return self

    async def __anext__(self) -> Response:
        response = await self.next_response()
        if response is None:
            raise StopAsyncIteration
        return response

    async def next_response(self) -> Response | None:
        """The next response; None after the final one was returned."""
        if self._iter_done:
            return None
        response = await self._queue.get()
        self._iter_done = response.is_final
        return response

    async def final(self) -> Response:
        return await asyncio.shield(self._final)

    @property
    def final_response(self) -> Response | None:
        return self._final.result() if self._final.done() else None

    async def cancel(self) -> Response | None:
        """9.1: CANCEL a pending INVITE once a provisional response arrived;
        returns the CANCEL's final response, None if the INVITE ended first."""
        if self.request.method != "INVITE":
            raise ValueError("only an INVITE can be cancelled")
        await asyncio.shield(self._progress)
        if self._final.done() or self.txn is None or self.dest is None:
            return None
        cancel = make_cancel(self.txn.request)
        ctx = ClientContext(self._endpoint, cancel)
        self._endpoint._start_client(ctx, self.dest, self.txn.flow)  # same flow as the INVITE
        return await ctx.final()

    def give_up(self) -> bool:
        """Stop waiting for a next hop that has not answered at all (not even a 100):
        a local 408 now rather than at Timer B/F. False once any response came."""
        if self._progress.done():
            return False
        self._fail(408)
        return True

    def _deliver(self, response: Response, local: bool = False) -> None:
        if self._final.done():
            if self.on_late_response is not None:
                self.on_late_response(response)
            else:
                self._endpoint._stray(response, self.txn.flow if self.txn else None)
            return
        if not self._progress.done():
            self._progress.set_result(None)
        self.local_failure = local
        self._queue.put_nowait(response)
        if response.is_final:
            self._final.set_result(response)

    def _fail(self, status: int) -> None:
        if not self._final.done():
            self._deliver(Response.for_request(self.request, status), local=True)


class ServerContext:
    """One received request: ``respond()`` sends through its server transaction.

    ACKs for 2xx arrive with ``txn`` None and nothing to respond.
    """

    def __init__(self, endpoint: SipEndpoint, request: Request, flow: Flow,
                 txn: ServerTransaction | None) -> None:
        self.request = request
        self.flow = flow
        self.txn = txn
        self.cancelled = asyncio.Event()
        self._endpoint = endpoint

    @property
    def final_sent(self) -> bool:
        last = self.txn.last_response if self.txn else None
        return last is not None and last.is_final

    def respond(self, response: Response) -> None:
        """Send ``response`` (the TU adds the To tag, 8.2.6.2)."""
        if self.txn is None:
            raise ValueError(f"a {self.request.method} is not answered")
        self._endpoint._respond(self.txn, response)

    def spawn(self, work: Awaitable[object]) -> asyncio.Task[object]:
        """Run a module's async work on this request: if it fails, the
        request is answered the way a failing module's is (see ``fail``)."""
        return self._endpoint.spawn(self._endpoint._guarded(self, work))

    def fail(self, exc: BaseException, where: str = "work") -> None:
        """Work on this request raised ``exc``: 400 with the reason when the
        request's own content caused it, else 500 and a logged traceback."""
        self._endpoint._request_failed(self, exc, where)


class SipEndpoint:
    """A SIP element's I/O: transports, transactions, timers."""

    def __init__(self, timers: TimerValues | None = None, trace: bool = False, *,
                 modules: Iterable[Module] = (), limits: Limits | None = None,
                 on_stray: Callable[[Response, Flow | None], None] | None = None,
                 client_ssl_context: object | None = None,
                 overload: OverloadPolicy | None = None) -> None:
        self.overload = OverloadController(overload)
        self._modules: list[tuple[int, int, Module]] = []   # (priority, registered, module)
        self._registered = itertools.count()
        for module in modules:
            self.add_module(module)
        self.on_stray = on_stray
        self.layer = TransactionLayer(timers)
        self.transport = TransportLayer(self._on_message, self._on_send_error, limits,
                                        self._trace if trace else None,
                                        client_ssl_context=client_ssl_context)  # type: ignore[arg-type]
        self._sent_by: dict[str, tuple[str, int]] = {}
        self._clients: dict[ClientTransaction, ClientContext] = {}
        self._servers: dict[ServerTransaction, ServerContext] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False

    # -- public API -----------------------------------------------------
    def add_module(self, module: Module) -> None:
        """Offer new requests to ``module`` too: by priority, ties in the
        order of registration."""
        if any(m is module for _, _, m in self._modules):
            raise ValueError(f"module {module.name} is registered already")
        self._modules.append((module.priority, next(self._registered), module))
        self._modules.sort(key=lambda entry: entry[:2])

    def remove_module(self, module: Module) -> None:
        kept = [entry for entry in self._modules if entry[2] is not module]
        if len(kept) == len(self._modules):
            raise ValueError(f"module {module.name} is not registered")
        self._modules = kept

    @property
    def modules(self) -> tuple[Module, ...]:
        """The registered modules in the order requests are offered to them."""
        return tuple(m for _, _, m in self._modules)

    def not_served(self, request: Request) -> Response:
        """8.2.1: 405 with the Allow of our modules for a method we know, else 501."""
        allow = list(dict.fromkeys(m.upper() for module in self.modules for m in module.methods))
        method = request.method.upper()
        if method not in SIP_METHODS and method not in allow:
            return Response.for_request(request, 501, to_tag=new_tag())
        response = Response.for_request(request, 405, to_tag=new_tag())
        response.add_header("Allow", ", ".join(allow))
        return response

    def spawn(self, coro: Awaitable[object]) -> asyncio.Task[object]:
        """Run ``coro`` as a task the endpoint cancels on ``close()``."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def listen(self, transport: str, host: str, port: int,
                     ssl_context: object | None = None, *,
                     reuse_port: bool = False) -> tuple[str, int]:
        """``reuse_port``: TCP/TLS connections go out from this listen socket
        (see ``TransportLayer.listen``)."""
        bound = await self.transport.listen(transport, host, port, ssl_context,  # type: ignore[arg-type]
                                            reuse_port=reuse_port)
        self._sent_by.setdefault(transport.lower(), bound)
        return bound

    async def adopt(self, transport: str, sock: socket.socket, *,
                    sent_by: bool = False) -> tuple[str, int]:
        """Serve a socket bound elsewhere (``TransportLayer.adopt``).  ``sent_by``:
        it becomes our Via sent-by for ``transport`` and, for UDP, the socket
        requests go out from: a worker's own port, so the responses to its
        client transactions reach it and not a sibling sharing the public port."""
        bound = await self.transport.adopt(transport, sock, primary=sent_by)
        if sent_by:
            self._sent_by[transport.lower()] = bound
        else:
            self._sent_by.setdefault(transport.lower(), bound)
        return bound

    def request(self, request: Request, dest: Destination | None = None, *,
                branch: str | None = None, flow: Flow | None = None) -> ClientContext:
        """Send ``request`` statefully: adds our top Via (``branch`` or a new
        one, rport).  With ``flow`` it goes over that flow (the UDP socket or
        open connection a peer registered on; RFC 5626 ideas) and our Via
        names the flow's local address."""
        ctx = ClientContext(self, request)
        self.spawn(self._route_and_start(ctx, dest, branch, flow))
        return ctx

    @property
    def listening(self) -> dict[str, tuple[str, int]]:
        """The first bound address per transport (our Via sent-by)."""
        return dict(self._sent_by)

    def send_stateless(self, message: Request | Response, dest: Destination | None = None,
                       flow: Flow | None = None) -> asyncio.Task[Flow | None]:
        """Send without a transaction (ACK for 2xx, stateless forwarding).
        Without ``dest`` a request goes to its next hop, a response where its
        top Via says (18.2.2).  The task gives the Flow used, None on failure."""
        return self.spawn(self._send_stateless(message, dest, flow))  # type: ignore[return-value]

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transport.close()

    # -- client side ------------------------------------------------------
    async def _route_and_start(self, ctx: ClientContext, dest: Destination | None,
                               branch: str | None = None, flow: Flow | None = None) -> None:
        request = ctx.request
        try:
            if dest is None:
                dest = await resolve(*next_hop(request))
            if request.method != "ACK" and "Max-Forwards" not in request.headers:
                request.add_header("Max-Forwards", "70")  # 8.1.1.6
            if flow is not None and flow.transport == dest.transport:
                self.push_via(request, dest.transport, branch, sent_by=_sent_by(flow))
                self._start_client(ctx, dest, flow)  # a flow is kept: no 18.1.1 switch
                return
            self.push_via(request, dest.transport, branch)
            if dest.transport == "udp" and (self._tcp_only or
                                            len(bytes(request)) > UDP_MTU_LIMIT):
                dest = Destination("tcp", dest.host, dest.port)  # 18.1.1
                request.pop_header("Via")
                self.push_via(request, "tcp", branch)
        except (OSError, ValueError) as exc:
            log.info("cannot send %r: %s", request, exc)
            ctx._fail(503)
            return
        self._start_client(ctx, dest)

    @property
    def _tcp_only(self) -> bool:
        """We listen on TCP and not on UDP (a node with ``transports = ["tcp"]``): our
        requests go over TCP even to a URI without transport (which says UDP, RFC
        3263 4.1), from our listen port, so the peer knows us and can answer; a UDP
        request would leave from an ephemeral socket nobody trusts."""
        return "udp" not in self._sent_by and "tcp" in self._sent_by

    def push_via(self, request: Request, transport: str, branch: str | None = None,
                 sent_by: tuple[str, int] | None = None) -> None:
        """Add our top Via for ``transport`` (also for stateless forwarding)."""
        host, port = sent_by or self._sent_by.get(transport) or next(
            iter(self._sent_by.values()), ("127.0.0.1", 5060))
        host = f"[{host}]" if ":" in host else host
        request.push_header(
            "Via", f"SIP/2.0/{transport.upper()} {host}:{port};branch={branch or new_branch()};rport")

    def _start_client(self, ctx: ClientContext, dest: Destination,
                      flow: Flow | None = None) -> None:
        ctx.dest = dest
        ctx.txn = self.layer.client_transaction(ctx.request, dest, self._now(), flow=flow)
        self._clients[ctx.txn] = ctx
        self._pump()

    async def _send_stateless(self, message: Request | Response, dest: Destination | None,
                              flow: Flow | None) -> Flow | None:
        try:
            if dest is None:
                hop = next_hop(message) if isinstance(message, Request) else \
                    astuple(response_destination(message))
                dest = await resolve(*hop)
            if isinstance(message, Request) and dest.transport == "udp" and self._tcp_only:
                dest = Destination("tcp", dest.host, dest.port)  # as _route_and_start
            return await self.transport.send(message, dest, flow)
        except (OSError, ValueError) as exc:
            log.info("stateless send of %r failed: %s", message, exc)
            return None

    # -- server side ------------------------------------------------------
    def _respond(self, txn: ServerTransaction, response: Response) -> None:
        txn.respond(response, self._now())
        if response.is_final:  # only a CANCEL before the final needs the context
            self._servers.pop(txn, None)
        self._pump()

    def _on_message(self, message: Request | Response, flow: Flow) -> None:
        now = self._now()
        if self.layer.receive(message, flow, now) or isinstance(message, Response):
            self._pump()
            return
        if (earlier := self.overload.shed_before(message, now)) is not None:
            if message.method != "ACK":  # a retransmission of a shed request
                self.transport.send_response(earlier, flow)
            return
        if message.method == "ACK":  # ACK for a 2xx: its own end-to-end request
            self._offer(ServerContext(self, message, flow, None))
            return
        refusal = self.overload.admit(message, len(self.layer), self.transport.queue_delay,
                                      now)
        if refusal is not None:  # shed statelessly: no transaction, no handler
            self.transport.send_response(refusal, flow)
            return
        txn = self.layer.server_transaction(message, flow, now)
        if message.method != "CANCEL":  # CANCEL comes out as CancelReceived
            ctx = ServerContext(self, message, flow, txn)
            self._servers[txn] = ctx
            self._offer(ctx)
        self._pump()

    def _offer(self, ctx: ServerContext) -> None:
        """Offer a request to the modules in order; the first to take it wins."""
        for module in self.modules:
            try:
                if module.on_request(ctx):
                    return
            except Exception as exc:
                self._request_failed(ctx, exc, f"module {module.name}")
                return
        if ctx.txn is not None:  # an ACK nobody takes is dropped, never answered
            ctx.respond(self.not_served(ctx.request))

    async def _guarded(self, ctx: ServerContext, work: Awaitable[object]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._request_failed(ctx, exc, "work")

    def _request_failed(self, ctx: ServerContext, exc: BaseException, where: str) -> None:
        """The one place a failure on a request turns into a response: bad
        input is the peer's (400 with the reason, no traceback), anything
        else ours (500, traceback logged)."""
        request = ctx.request
        reason = bad_request_reason(request, exc)
        if isinstance(exc, Unavailable):
            # RFC 3261 21.5.4: a back end away for now; the client retries later.
            log.warning("%s: 503 for %s (Call-ID %s): %s", where, request.method,
                        request.call_id, exc)
            response = Response.for_request(request, 503, "Service Unavailable - "
                                            "store unavailable", to_tag=new_tag())
            response.add_header("Retry-After", str(exc.retry_after))
        elif reason is None:
            log.error("%s failed on %r (Call-ID %s)", where, request, request.call_id,
                      exc_info=exc)
            response = Response.for_request(request, 500, to_tag=new_tag())
        else:
            log.info("%s: 400 for %s (Call-ID %s): %s", where, request.method,
                     request.call_id, reason)
            response = Response.for_request(request, 400, reason_phrase(400, reason),
                                            to_tag=new_tag())
        if ctx.txn is not None and not ctx.final_sent:
            ctx.respond(response)

    # -- events -----------------------------------------------------------
    def _pump(self) -> None:
        """Run the layer's events; re-entrant calls leave it to the outer loop."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while events := self.layer.events():
                for event in events:
                    self._dispatch(event)
        finally:
            self._pumping = False
        self._schedule_timer()

    def _dispatch(self, event: Event) -> None:
        match event:
            case Transmit(message=Response() as response, dest=None, flow=flow):
                self.transport.send_response(response, flow)
            case Transmit():
                if not self._transmit_now(event):
                    self.spawn(self._transmit(event))
            case ResponseReceived(txn=txn, response=response):
                if (ctx := self._clients.get(txn)) is not None:
                    ctx._deliver(response)
                    if response.is_final and txn.request.method != "INVITE":
                        # 17.1.2.2: Completed absorbs retransmissions, nothing more
                        # comes up; the caller holds its context if it wants it,
                        # and we must not keep request and responses for Timer K.
                        del self._clients[txn]
            case TransactionTimeout(txn=txn) | TransportFailure(txn=txn):
                self._failed(txn, 408 if isinstance(event, TransactionTimeout) else 503)
            case AckReceived(txn=txn, ack=ack):
                self._offer(ServerContext(self, ack, txn.flow, None))
            case CancelReceived(txn=txn, cancel=cancel, cancel_txn=cancel_txn):
                cancel_txn.respond(Response.for_request(cancel, 200), self._now())
                if (server := self._servers.get(txn)) is not None:
                    server.cancelled.set()
            case StrayResponse(response=response, flow=flow):
                self._stray(response, flow)
            case TransactionTerminated(txn=txn):
                self._clients.pop(txn, None)  # type: ignore[call-overload]
                self._servers.pop(txn, None)  # type: ignore[call-overload]

    def _failed(self, txn: object, status: int) -> None:
        if (ctx := self._clients.get(txn)) is not None:  # type: ignore[call-overload]
            ctx._fail(status)
        else:
            log.info("%r failed (%d)", txn, status)

    def _stray(self, response: Response, flow: Flow | None) -> None:
        if self.on_stray is not None:
            self.on_stray(response, flow)
        else:
            log.debug("stray %r dropped (Call-ID %s)", response, response.headers.get("Call-ID"))

    def _transmit_now(self, event: Transmit) -> bool:
        """Send without a task when the transport can (UDP, socket at hand)."""
        assert event.dest is not None
        try:
            return self.transport.send_now(event.message, event.dest, event.flow) is not None
        except (OSError, ValueError) as exc:
            log.info("send of %r to %s failed: %s", event.message, event.dest, exc)
            if event.txn is not None:
                self.layer.transport_error(event.txn, self._now())
                self._pump()
            return True

    async def _transmit(self, event: Transmit) -> None:
        assert event.dest is not None
        try:
            await self.transport.send(event.message, event.dest, event.flow)
        except (OSError, ValueError) as exc:
            log.info("send of %r to %s failed: %s", event.message, event.dest, exc)
            if event.txn is not None:
                self.layer.transport_error(event.txn, self._now())
                self._pump()

    def _on_send_error(self, exc: Exception, message: object,
                       dest: Destination | None) -> None:
        if isinstance(message, Response):
            txn = self.layer.find_server_transaction_for(message)
            if txn is not None:
                self.layer.transport_error(txn, self._now())
                self._pump()

    # -- timers and tasks ---------------------------------------------------
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _schedule_timer(self) -> None:
        deadline = self.layer.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else \
            asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        deadline, self._timer, self._timer_at = self._timer_at, None, None
        # call_at may run a hair early: never let the layer see a time before it
        self.layer.on_timer(max(self._now(), deadline or 0.0))
        self._pump()

    def _trace(self, direction: str, data: bytes, flow: Flow) -> None:
        trace_log.info("%s %s %s <-> %s\n%s", direction, flow.transport, flow.local,
                       flow.remote, data.decode("utf-8", "replace"))
