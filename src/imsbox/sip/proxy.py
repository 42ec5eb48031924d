"""A transaction-stateful proxy (RFC 3261 section 16) on a SipEndpoint.

The routing decision is the caller's: a ``Router`` turns the
``RequestContext`` of a request into targets (or an error response).
Everything else - validation, Route and Record-Route handling, forking,
best-response selection, CANCEL and Timer C - follows section 16 using the
steps in ``proxy_core``.  Public hooks for the nodes built on it (the
Kamailio model: request route, failure route, reply route):

* ``on_request(ctx)``: the request as it arrived, before 16.3 and 16.4;
* the router, and ``ctx.follow_route()`` for the 16.5 default;
* ``ctx.failure_route``: armed per request, re-targets a target set that
  ended without a 2xx (serial forking);
* ``on_response(ctx, response)``: every response on its way upstream (async;
  one request's responses still leave in the order they arrived).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .endpoint import (
    ClientContext, HandlerModule, Priority, ServerContext, SipEndpoint, next_hop, resolve,
)
from .headers import HeaderError
from .message import Request, Response, new_tag
from .overload import OverloadPolicy
from .proxy_core import (
    ProxyIdentity, ResponseContext, check_request, forward_copy, loop_hash,
    next_hop_is_strict, order_targets, preprocess_route,
)
from .transaction import TimerValues
from .transport import Limits
from .transport.base import Destination, Flow
from .uri import SipUri, Uri

__all__ = ["FailureRoute", "RequestContext", "Router", "StatefulProxy", "Target",
           "run_forwarding_proxy"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Target:
    """One branch: the Request-URI to use and, optionally, where to send it
    (an outbound next hop) instead of what Route/Request-URI say."""

    uri: Uri
    dest: Destination | None = None
    q: float = 1.0
    flow: Flow | None = None  # send over this flow (a UE's connection / UDP source)
    route: tuple[str, ...] = ()  # Route values put on top for this branch (e.g. a Path)
    # INVITE only: CANCEL the branch after this many seconds without a final
    # response ("no answer"); it then counts as 408 (independent of Timer C).
    timeout: float | None = None
    # Any method: a branch with no response at all (not even 100) after this many
    # seconds counts as 408 at once (a next hop that is down, over UDP).
    response_timeout: float | None = None


@dataclass(slots=True, eq=False)
class RequestContext:
    """One request in the proxy, from arrival to its final response upstream.

    The router and the hooks all get the same object, so a value a router
    keeps in ``values`` is there for the failure route and ``on_response``.
    """

    request: Request
    server: ServerContext
    identity: ProxyIdentity
    route: SipUri | None = None   # our own Route entry, popped in 16.4
    session_case: object = None   # set by the node (the S-CSCF: a SessionCase)
    values: dict[str, object] = field(default_factory=dict)
    failure_route: FailureRoute | None = None
    retargets: int = 0            # how often the failure route re-targeted
    record_route: bool = True     # False: the router's node is on the route set already
    pending: dict[int, ClientContext] = field(default_factory=dict)   # the branches now
    # Responses go upstream one at a time, in the order they arrived, even while
    # ``on_response`` awaits (a 180 is never overtaken by a later 200).
    upstream_order: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def flow(self) -> Flow:
        """The flow the request came on (transport, local and remote address)."""
        return self.server.flow

    @property
    def cancelled(self) -> bool:
        """A CANCEL for this request arrived (16.10)."""
        return self.server.cancelled.is_set()

    def follow_route(self) -> list[Target] | None:
        """16.5 default: a request that carries its own route - a Route left
        after 16.4, or in a dialog and not addressed to us - goes where its
        Route / Request-URI say.  None: the router has to decide."""
        request = self.request
        if request.route or (request.to.tag is not None
                             and not self.identity.is_me(request.uri)):
            return [Target(request.uri)]
        return None


Router = Callable[[RequestContext], Awaitable[list[Target] | Response]]
# Sees the best final response of a target set that ended without a 2xx
# (not cancelled, no 6xx): new targets, a response of its own, or None
# (the best response of all branches goes upstream).
FailureRoute = Callable[[RequestContext, Response], Awaitable[list[Target] | Response | None]]


class StatefulProxy:
    """RFC 3261 section 16 proxy; ``router`` decides the target set (16.5).

    ``follow_routes``: requests that carry their own route skip the router
    (``RequestContext.follow_route``); False hands every request to the
    router, which may call it itself.  ``max_retargets`` bounds how often
    the failure route of one request may re-target it (loop safety).
    """

    def __init__(self, router: Router, *, record_route: bool = True, path: bool = False,
                 timers: TimerValues | None = None, timer_c: float = 180.0,
                 supported: frozenset[str] = frozenset(), trace: bool = False,
                 follow_routes: bool = True, max_retargets: int = 5,
                 limits: Limits | None = None, overload: OverloadPolicy | None = None) -> None:
        self.router = router
        self.record_route = record_route
        self.path = path
        self.timer_c = timer_c
        self.follow_routes = follow_routes
        self.max_retargets = max_retargets
        self.identity = ProxyIdentity(set(), supported=supported)
        self.endpoint = SipEndpoint(timers, trace, on_stray=self._forward_stray,
                                    limits=limits, overload=overload, modules=[
            HandlerModule(self.relay, "proxy", Priority.PROXY)])  # takes what is left
        self._tasks: set[asyncio.Future[object]] = set()
        self._cancelled: weakref.WeakSet[ClientContext] = weakref.WeakSet()
        self._unanswered: weakref.WeakSet[ClientContext] = weakref.WeakSet()
        self._listened: set[str] = set()  # transports we listen on (our Record-Route's)

    async def listen(self, transport: str, host: str, port: int,
                     ssl_context: object | None = None, *,
                     reuse_port: bool = False) -> tuple[str, int]:
        bound = await self.endpoint.listen(transport, host, port, ssl_context,
                                           reuse_port=reuse_port)
        self._is_me(transport, bound)
        return bound

    async def adopt(self, transport: str, sock: socket.socket, *,
                    sent_by: bool = False) -> tuple[str, int]:
        """Serve a socket bound by a supervisor (``SipEndpoint.adopt``).  The
        first address listened on or adopted names us in Record-Route: adopt
        the shared public socket first, the worker's own ``sent_by`` one after."""
        bound = await self.endpoint.adopt(transport, sock, sent_by=sent_by)
        self._is_me(transport, bound)
        return bound

    def _is_me(self, transport: str, bound: tuple[str, int]) -> None:
        self.identity.hostports.add((bound[0].lower(), bound[1]))
        self._listened.add(transport.lower())
        if self.identity.record_route is None:
            host_text = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            self.identity.record_route = SipUri(host_text, port=bound[1], params=[("lr", None)])
        # A URI without transport means UDP (RFC 3263 4.1): a node on TCP alone says so.
        if "udp" not in self._listened and "tcp" in self._listened:
            self.identity.record_route.set_param("transport", "tcp")
        else:
            self.identity.record_route.remove_param("transport")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.endpoint.close()

    # -- hooks ------------------------------------------------------------
    def on_request(self, ctx: RequestContext) -> Response | None:
        """Hook before 16.3: the request as it arrived (our Route not popped
        yet, ``ctx.route`` still None) and ``ctx.flow``.  May edit the request,
        or return the response to answer it with (an ACK is dropped instead).
        Default: None, proxy it."""
        return None

    async def on_response(self, ctx: RequestContext, response: Response) -> Response:
        """Hook for network functions: see or change a response on its way
        upstream (e.g. a P-CSCF storing the registration of a 2xx to REGISTER
        before the UE learns of it).  May await; the responses of one request
        still leave in the order they arrived.  Default: unchanged.  Answers of
        the proxy's own (router, failure route) do not pass here."""
        return response

    def send_provisional(self, ctx: RequestContext, status: int, reason: str,
                         headers: Iterable[tuple[str, str]] = ()) -> None:
        """A 1xx of the proxy's own towards the caller, e.g. a service's ``181 Call
        Is Being Forwarded`` when it re-targets (RFC 7044, TS 24.604); in order
        with the relayed responses, dropped once a final one went upstream."""
        if ctx.request.method != "INVITE" or not 100 < status < 200:
            raise ValueError("a provisional response of our own is for an INVITE, 101-199")
        response = Response.for_request(ctx.request, status, reason, to_tag=new_tag())
        for name, value in headers:
            response.add_header(name, value)
        self._spawn(self._own_provisional(ctx, response))

    def cancel_pending(self, ctx: RequestContext) -> int:
        """CANCEL the request's branches that have no final response yet: a service
        takes the call elsewhere (call pickup's bridge), and its failure route says
        where. Returns how many branches were cancelled."""
        pending = [c for c in ctx.pending.values() if c.final_response is None]
        for client in pending:
            self._cancel(client)
        return len(pending)

    async def _own_provisional(self, ctx: RequestContext, response: Response) -> None:
        async with ctx.upstream_order:
            if ctx.server.txn is not None and not ctx.server.final_sent:
                ctx.server.respond(response)

    # -- requests ---------------------------------------------------------
    def relay(self, server: ServerContext) -> None:
        """Proxy this request (section 16): the proxy module's entry point, also
        for a service module in front of it that decides to let a request through."""
        request = server.request
        ctx = RequestContext(request, server, self.identity)
        try:
            error = self.on_request(ctx) or self._validate(ctx)
        except HeaderError as exc:
            error = Response.for_request(request, 400, f"Bad Request - {exc}"[:100],
                                         to_tag=new_tag())
        if error is not None:
            if request.method != "ACK":  # an ACK is never answered
                server.respond(error)
            return
        if request.method == "ACK":
            self._spawn(self._forward_ack(ctx))
            return
        if request.method == "INVITE":
            server.respond(Response.for_request(request, 100))  # 16.2: stop retransmissions
        self._spawn(self._proxy(ctx))

    def _validate(self, ctx: RequestContext) -> Response | None:
        """16.3 (not for an ACK), then 16.4, keeping the Route it pops."""
        if ctx.request.method != "ACK":
            error = check_request(ctx.request, self.identity)
            if error is not None:
                return error
        ctx.route = preprocess_route(ctx.request, self.identity)
        return None

    def _spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _route(self, ctx: RequestContext) -> list[Target] | Response:
        """16.5: the request's own route (with ``follow_routes``), else the router."""
        if self.follow_routes:
            targets = ctx.follow_route()
            if targets is not None:
                return targets
        return await self.router(ctx)

    async def _proxy(self, ctx: RequestContext) -> None:
        request = ctx.request
        try:
            targets: list[Target] | Response | None = await self._route(ctx)
        except Exception as exc:
            ctx.server.fail(exc, "router")
            return
        if isinstance(targets, list) and not targets:
            targets = Response.for_request(request, 480, "Temporarily Unavailable",
                                           to_tag=new_tag())
        responses = ResponseContext(request.method)
        while isinstance(targets, list):
            best = await self._try_targets(ctx, targets, responses)
            targets = await self._failure_route(ctx, responses, best)
        if isinstance(targets, Response):
            ctx.server.respond(targets)
            return
        final = responses.final_response() or (
            None if responses.final_sent else Response.for_request(request, 408))
        if final is not None:
            await self._send_upstream(ctx, final)

    async def _try_targets(self, ctx: RequestContext, targets: list[Target],
                           responses: ResponseContext) -> Response | None:
        """One target set, its q groups in turn; the best final response of its branches."""
        first = len(responses.branches)
        for group in order_targets([(t, t.q) for t in targets]):
            await self._fork(ctx, group, responses)
            if self._finished(ctx, responses):
                break
        return responses.best_of(range(first, len(responses.branches)))

    @staticmethod
    def _finished(ctx: RequestContext, responses: ResponseContext) -> bool:
        """A 2xx went upstream, a CANCEL came, or a 6xx ends the search (16.7 step 5)."""
        best = responses.best
        return responses.final_sent or ctx.cancelled or (best is not None and best.status >= 600)

    async def _failure_route(self, ctx: RequestContext, responses: ResponseContext,
                             best: Response | None) -> list[Target] | Response | None:
        """The failure route, when armed, on a target set that failed: what next."""
        if ctx.failure_route is None or best is None or self._finished(ctx, responses):
            return None
        if ctx.retargets >= self.max_retargets:
            log.info("%s: failure route not run again after %d re-targets",
                     ctx.request.call_id, ctx.retargets)
            return None
        ctx.retargets += 1
        try:
            outcome = await ctx.failure_route(ctx, best)
        except Exception:  # a hook bug: the best response so far goes upstream
            log.exception("failure route failed for %s", ctx.request.call_id)
            return None
        if ctx.cancelled or (isinstance(outcome, list) and not outcome):
            return None  # the CANCEL came while the hook ran, or no new targets
        return outcome

    async def _fork(self, ctx: RequestContext, targets: list[Target],
                    responses: ResponseContext) -> None:
        """Send one branch per target in parallel and collect their responses."""
        branches: dict[int, ClientContext] = {}
        chosen: dict[int, Target] = {}
        base = f"z9hG4bK{loop_hash(ctx.request, self.identity)}"
        for key, target in enumerate(targets, start=len(responses.branches)):
            copy = forward_copy(ctx.request, target.uri, self.identity,
                                record_route=self.record_route and ctx.record_route,
                                path=self.path)
            for value in reversed(target.route):
                copy.push_header("Route", value)
            try:
                dest = await self._next_hop(ctx.request, copy, target)
            except (OSError, ValueError) as exc:
                log.info("cannot route %r to %s: %s", copy, target.uri, exc)
                responses.add_branch(key)
                responses.on_response(key, Response.for_request(copy, 503))
                continue
            client = self.endpoint.request(copy, dest, flow=target.flow,
                                           branch=f"{base}.{secrets.token_hex(4)}")
            client.on_late_response = lambda r, c=ctx: self._spawn(self._send_upstream(c, r))
            responses.add_branch(key)
            branches[key] = client
            chosen[key] = target
        ctx.pending = branches
        watchers = [asyncio.ensure_future(
            self._branch(ctx, key, client, chosen[key], branches, responses))
            for key, client in branches.items()]
        cancel_watch = asyncio.ensure_future(self._on_cancel(ctx, branches, responses))
        try:
            await asyncio.gather(*watchers)
        finally:
            cancel_watch.cancel()

    @staticmethod
    async def _next_hop(request: Request, copy: Request, target: Target) -> Destination | None:
        """16.6 step 7: the target's own next hop; the Request-URI when step 6
        rewrote ``copy`` for a strict router; else None (Route / Request-URI)."""
        if target.dest is not None or target.route or not next_hop_is_strict(request):
            return target.dest
        return await resolve(*next_hop(Request(copy.method, copy.uri)))

    async def _branch(self, ctx: RequestContext, key: int, client: ClientContext,
                      target: Target, branches: dict[int, ClientContext],
                      responses: ResponseContext) -> None:
        timer_c: asyncio.TimerHandle | None = None
        no_answer = self._arm_no_answer(client, target.timeout)
        no_response = None if target.response_timeout is None else \
            asyncio.get_running_loop().call_later(target.response_timeout, client.give_up)
        try:
            while True:
                if client.request.method == "INVITE":
                    # Timer C (16.6 step 11): give up on a branch stuck in 1xx;
                    # restarted by every provisional response.
                    timer_c = self._restart_timer_c(timer_c, client)
                response = await client.next_response()
                if response is None:
                    return
                if (client.local_failure and response.status == 408) or \
                        (response.status == 487 and client in self._unanswered):
                    responses.on_timeout(key)
                    continue
                forward, cancel_others = responses.on_response(key, response)
                for item in forward:
                    await self._send_upstream(ctx, item)
                if cancel_others:
                    for other_key in responses.pending_keys:
                        self._cancel(branches[other_key])
        finally:
            for handle in (timer_c, no_answer, no_response):
                if handle is not None:
                    handle.cancel()

    def _restart_timer_c(self, handle: asyncio.TimerHandle | None,
                         client: ClientContext) -> asyncio.TimerHandle:
        if handle is not None:
            handle.cancel()
        return asyncio.get_running_loop().call_later(self.timer_c, self._cancel, client)

    def _arm_no_answer(self, client: ClientContext,
                       timeout: float | None) -> asyncio.TimerHandle | None:
        """``Target.timeout``: CANCEL an unanswered INVITE branch; its 487 counts as 408."""
        if timeout is None or client.request.method != "INVITE":
            return None

        def expire() -> None:
            if client.final_response is None:
                self._unanswered.add(client)
                self._cancel(client)
        return asyncio.get_running_loop().call_later(timeout, expire)

    async def _on_cancel(self, ctx: RequestContext, branches: dict[int, ClientContext],
                         responses: ResponseContext) -> None:
        """16.10: a CANCEL from upstream cancels every pending branch."""
        await ctx.server.cancelled.wait()
        for key in responses.pending_keys:
            self._cancel(branches[key])

    def _cancel(self, client: ClientContext) -> None:
        """CANCEL a pending INVITE branch once (Timer C, 2xx/6xx, upstream
        CANCEL may all ask; a second CANCEL would reuse the branch)."""
        if client.request.method == "INVITE" and client.final_response is None \
                and client not in self._cancelled:
            self._cancelled.add(client)
            self._spawn(client.cancel())

    # -- responses --------------------------------------------------------
    async def _send_upstream(self, ctx: RequestContext, response: Response) -> None:
        """16.7 step 9: our Via off, then out through the server transaction."""
        async with ctx.upstream_order:
            await self._send_in_order(ctx, response)

    async def _send_in_order(self, ctx: RequestContext, response: Response) -> None:
        server = ctx.server
        if self._is_our_via(response):
            upstream = response.copy()
            upstream.pop_header("Via")
        else:  # decided here (timeout, no targets): addressed to the request
            upstream = Response.for_request(ctx.request, response.status, response.reason,
                                            to_tag=new_tag())
        if server.txn is None or (server.final_sent and not 200 <= upstream.status < 300):
            return
        upstream = await self.on_response(ctx, upstream)
        if server.final_sent:
            # A later 2xx (another fork): forwarded statelessly (16.7 step 5).
            self.endpoint.send_stateless(upstream, flow=server.flow)
            return
        server.respond(upstream)

    def _is_our_via(self, response: Response) -> bool:
        try:
            via = response.top_via
        except HeaderError:
            return False
        return (via.host.strip("[]").lower(), via.port) in self.identity.hostports

    def _forward_stray(self, response: Response, flow: Flow | None) -> None:
        """16.7 / 16.11: responses without a transaction go by the Via stack."""
        if not self._is_our_via(response) or len(response.via) < 2:
            return
        upstream = response.copy()
        upstream.pop_header("Via")
        self.endpoint.send_stateless(upstream)

    async def _forward_ack(self, ctx: RequestContext) -> None:
        """The ACK for a 2xx is its own transaction: forwarded statelessly."""
        ack = ctx.request
        mf = ack.max_forwards
        if mf is not None and mf <= 0:
            return
        targets = await self._route(ctx)
        if isinstance(targets, Response) or not targets:
            return
        copy = forward_copy(ack, targets[0].uri, self.identity, record_route=False)
        try:
            dest = await self._next_hop(ack, copy, targets[0]) or \
                await resolve(*next_hop(copy))
        except (OSError, ValueError) as exc:
            log.info("cannot forward %r: %s", ack, exc)
            return
        self.endpoint.push_via(copy, dest.transport)
        await self.endpoint.send_stateless(copy, dest, targets[0].flow)

    def listening_lines(self) -> list[str]:
        return [f"sip-proxy listening on {t} {h}:{p}"
                for t, (h, p) in self.endpoint.listening.items()]


def remote_target_is_domain(request: Request, domain: str) -> bool:
    """A request with no Route left whose Request-URI is a URI of ``domain`` itself
    (a PSI Contact such as a focus's ``conf-ID@DOMAIN``): DNS cannot route it,
    the home network's entry (the I-CSCF) does, as for the initial request
    (TS 24.247 A.5.1 steps 17-20).  A UE's contact is an address, never the domain."""
    uri = request.uri
    return not request.route and isinstance(uri, SipUri) and uri.host.lower() == domain


def forwarding_router(next_hop: Destination) -> Router:
    """Every out-of-dialog request to one next hop, Request-URI unchanged."""

    async def route(ctx: RequestContext) -> list[Target]:
        return [Target(ctx.request.uri, next_hop)]

    return route


@contextlib.asynccontextmanager
async def run_forwarding_proxy(listen: list[tuple[str, int]], next_hop: tuple[str, int],
                               transport: str = "udp", record_route: bool = True,
                               trace: bool = False,
                               timers: TimerValues | None = None, *,
                               adopted: Sequence[tuple[str, socket.socket, bool]] = (),
                               aliases: Iterable[tuple[str, int]] = (),
                               ) -> AsyncIterator[StatefulProxy]:
    """The proxy of ``imsbox sip-proxy``: UDP and TCP on each listen address.

    A worker of ``imsbox sip-proxy --workers N`` passes no ``listen`` but the
    sockets its supervisor bound, as ``adopted`` (transport, socket, sent_by):
    the shared public ones first (Record-Route names them), then its own
    (sent_by), and every worker's own address as ``aliases`` (they are all
    this proxy, for loop detection and Via matching)."""
    proxy = StatefulProxy(forwarding_router(Destination(transport, *next_hop)),
                          record_route=record_route, timers=timers, trace=trace)
    try:
        for host, port in listen:
            for proto in ("udp", "tcp"):
                await proxy.listen(proto, host, port)
        for proto, sock, sent_by in adopted:
            await proxy.adopt(proto, sock, sent_by=sent_by)
        for host, port in aliases:
            proxy.identity.hostports.add((host.lower(), port))
        yield proxy
    finally:
        await proxy.close()

