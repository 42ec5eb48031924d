"""A transaction-stateful proxy (RFC 3261 section 16) on a SipEndpoint.

The routing decision is the caller's: a ``Router`` turns a request into
targets (or an error response).  Everything else - validation, Route and
Record-Route handling, forking, best-response selection, CANCEL and
Timer C - follows section 16 using the steps in ``proxy_core``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import weakref
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

from .endpoint import ClientContext, ServerContext, SipEndpoint, next_hop, resolve
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
from .uri import Uri, parse_uri

__all__ = ["Target", "Router", "StatefulProxy", "run_forwarding_proxy"]

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


Router = Callable[[Request], Awaitable["list[Target] | Response"]]


class StatefulProxy:
    """RFC 3261 section 16 proxy; ``router`` decides the target set (16.5)."""

    def __init__(self, router: Router, *, record_route: bool = True, path: bool = False,
                 timers: TimerValues | None = None, timer_c: float = 180.0,
                 supported: frozenset[str] = frozenset(), trace: bool = False,
                 limits: Limits | None = None, overload: OverloadPolicy | None = None) -> None:
        self.router = router
        self.record_route = record_route
        self.path = path
        self.timer_c = timer_c
        self.identity = ProxyIdentity(set(), supported=supported)
        self.endpoint = SipEndpoint(self._on_request, timers, trace, on_stray=self._forward_stray,
                                    limits=limits, overload=overload)
        self._tasks: set[asyncio.Future[object]] = set()
        self._cancelled: weakref.WeakSet[ClientContext] = weakref.WeakSet()

    async def listen(self, transport: str, host: str, port: int,
                     ssl_context: object | None = None) -> tuple[str, int]:
        bound = await self.endpoint.listen(transport, host, port, ssl_context)
        self.identity.hostports.add((bound[0].lower(), bound[1]))
        if self.identity.record_route is None:
            host_text = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            self.identity.record_route = parse_uri(f"sip:{host_text}:{bound[1]};lr")
        return bound

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.endpoint.close()

    # -- requests ---------------------------------------------------------
    def _on_request(self, ctx: ServerContext) -> None:
        request = ctx.request
        try:
            if request.method == "ACK":
                self._spawn(self._forward_ack(request))
                return
            error = check_request(request, self.identity)
            if error is not None:
                ctx.respond(error)
                return
            preprocess_route(request, self.identity)
        except HeaderError as exc:
            ctx.respond(Response.for_request(request, 400, f"Bad Request - {exc}"[:100],
                                             to_tag=new_tag()))
            return
        if request.method == "INVITE":
            ctx.respond(Response.for_request(request, 100))  # 16.2: stop retransmissions
        self._spawn(self._proxy(ctx))

    def _spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _proxy(self, ctx: ServerContext) -> None:
        request = ctx.request
        try:
            targets = await self._targets(request)
        except Exception:  # a router bug must not leave the UAC hanging
            log.exception("router failed for %s", request.call_id)
            targets = Response.for_request(request, 500, "Server Internal Error",
                                           to_tag=new_tag())
        if isinstance(targets, Response):
            ctx.respond(targets)
            return
        if not targets:
            ctx.respond(Response.for_request(request, 480, "Temporarily Unavailable",
                                             to_tag=new_tag()))
            return
        responses = ResponseContext(request.method)
        for group in order_targets([(t, t.q) for t in targets]):
            await self._fork(ctx, group, responses)
            best = responses.best
            if responses.final_sent or ctx.cancelled.is_set() or (best and best.status >= 600):
                break
        final = responses.final_response() or (
            None if responses.final_sent else Response.for_request(request, 408))
        if final is not None:
            self._send_upstream(ctx, final)

    async def _targets(self, request: Request) -> "list[Target] | Response":
        """16.5: a request with a Route, or in a dialog and not addressed to
        us, goes where it says; the router decides for the rest."""
        if request.route or (request.to.tag is not None
                             and not self.identity.is_me(request.uri)):
            return [Target(request.uri)]
        return await self.router(request)

    async def _fork(self, ctx: ServerContext, targets: list[Target],
                    responses: ResponseContext) -> None:
        """Send one branch per target in parallel and collect their responses."""
        branches: dict[int, ClientContext] = {}
        base = f"z9hG4bK{loop_hash(ctx.request, self.identity)}"
        for key, target in enumerate(targets, start=len(responses.branches)):
            copy = forward_copy(ctx.request, target.uri, self.identity,
                                record_route=self.record_route, path=self.path)
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
            client.on_late_response = lambda r, c=ctx: self._send_upstream(c, r)
            responses.add_branch(key)
            branches[key] = client
        watchers = [asyncio.ensure_future(self._branch(ctx, key, client, branches, responses))
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

    async def _branch(self, ctx: ServerContext, key: int, client: ClientContext,
                      branches: dict[int, ClientContext], responses: ResponseContext) -> None:
        timer_c: asyncio.TimerHandle | None = None
        try:
            while True:
                if client.request.method == "INVITE":
                    # Timer C (16.6 step 11): give up on a branch stuck in 1xx;
                    # restarted by every provisional response.
                    timer_c = self._restart_timer_c(timer_c, client)
                response = await client.next_response()
                if response is None:
                    return
                if client.local_failure and response.status == 408:
                    responses.on_timeout(key)
                    continue
                forward, cancel_others = responses.on_response(key, response)
                for item in forward:
                    self._send_upstream(ctx, item)
                if cancel_others:
                    for other_key in responses.pending_keys:
                        self._cancel(branches[other_key])
        finally:
            if timer_c is not None:
                timer_c.cancel()

    def _restart_timer_c(self, handle: asyncio.TimerHandle | None,
                         client: ClientContext) -> asyncio.TimerHandle:
        if handle is not None:
            handle.cancel()
        return asyncio.get_running_loop().call_later(self.timer_c, self._cancel, client)

    async def _on_cancel(self, ctx: ServerContext, branches: dict[int, ClientContext],
                         responses: ResponseContext) -> None:
        """16.10: a CANCEL from upstream cancels every pending branch."""
        await ctx.cancelled.wait()
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
    def _send_upstream(self, ctx: ServerContext, response: Response) -> None:
        """16.7 step 9: our Via off, then out through the server transaction."""
        if self._is_our_via(response):
            upstream = response.copy()
            upstream.pop_header("Via")
        else:  # decided here (timeout, no targets): addressed to the request
            upstream = Response.for_request(ctx.request, response.status, response.reason,
                                            to_tag=new_tag())
        if ctx.txn is None or (ctx.final_sent and not 200 <= upstream.status < 300):
            return
        upstream = self.on_response(ctx.request, upstream)
        if ctx.final_sent:
            # A later 2xx (another fork): forwarded statelessly (16.7 step 5).
            self.endpoint.send_stateless(upstream, flow=ctx.flow)
            return
        ctx.respond(upstream)

    def on_response(self, request: Request, response: Response) -> Response:
        """Hook for network functions: see or change a response on its way
        upstream (e.g. a P-CSCF storing Service-Route).  Default: unchanged."""
        return response

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

    async def _forward_ack(self, ack: Request) -> None:
        """The ACK for a 2xx is its own transaction: forwarded statelessly."""
        mf = ack.max_forwards
        if mf is not None and mf <= 0:
            return
        preprocess_route(ack, self.identity)
        targets = await self._targets(ack)
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


def forwarding_router(next_hop: Destination) -> Router:
    """Every out-of-dialog request to one next hop, Request-URI unchanged."""

    async def route(request: Request) -> list[Target]:
        return [Target(request.uri, next_hop)]

    return route


@contextlib.asynccontextmanager
async def run_forwarding_proxy(listen: list[tuple[str, int]], next_hop: tuple[str, int],
                               transport: str = "udp", record_route: bool = True,
                               trace: bool = False,
                               timers: TimerValues | None = None) -> AsyncIterator[StatefulProxy]:
    """The proxy of ``imsbox sip-proxy``: UDP and TCP on each listen address."""
    proxy = StatefulProxy(forwarding_router(Destination(transport, *next_hop)),
                          record_route=record_route, timers=timers, trace=trace)
    try:
        for host, port in listen:
            for proto in ("udp", "tcp"):
                await proxy.listen(proto, host, port)
        yield proxy
    finally:
        await proxy.close()

