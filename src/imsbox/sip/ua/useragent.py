"""asyncio UserAgent: INVITE sessions over a SipEndpoint.

The UserAgent owns the DialogTable (every dialog with its usages, RFC 5057)
and serves requests through two endpoint modules: its dialog layer
(``Priority.DIALOG``) feeds in-dialog requests to each Call's InviteSession,
and its application module (``Priority.APPLICATION``) turns new INVITEs into
Calls, answers OPTIONS and 481s, and passes the rest to the app callback.
It carries out the sessions' events: client transactions, stateless ACKs,
responses on server transactions and the sessions' own timers.

Each outgoing call has its own ``Origin`` (From, Contact, route set, flow):
a B2BUA passes one per call instead of changing the UA's defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from ..endpoint import ClientContext, Priority, ServerContext, SipEndpoint
from ..headers import Join, NameAddr, Replaces
from ..message import Request, Response, new_branch, new_tag
from ..transport import Flow
from ..uri import SipUri, Uri, parse_uri
from .dialog import EVENT_METHODS, DialogTable, build_request
from .invite import (
    SDP, DialogCreated, DialogEnded, Established, InviteConfig, InviteSession, InviteState,
    OfferAnswer, Provisional, RequestResult, SendAck, SendRequest, SendResponse,
    SessionError, StaticOfferAnswer, Terminated, options_response,
)

__all__ = ["UserAgent", "Call", "Origin", "end_together"]

log = logging.getLogger(__name__)
ACK_WAIT = 5.0   # seconds a UAS's re-INVITE waits for the ACK of its 2xx (14.1)

Header = tuple[str, str]
CallHandler = Callable[["Call"], Awaitable[None] | None]
RequestHandler = Callable[[ServerContext], Awaitable[None] | None]



@dataclass(slots=True, frozen=True)
class Origin:
    """Where a call's requests come from and how they leave: the local
    identity (From), our Contact, the route set (pre-loaded Route values),
    the flow to send on (None: wherever the next hop says) and the header
    parameters of our Contact in this call's INVITE (``;name=value...``, e.g.
    RFC 3840 feature tags and ``+sip.instance``)."""

    local: NameAddr
    contact: Uri
    route: tuple[str, ...] = ()
    flow: Flow | None = None
    contact_params: str = ""       # Contact header parameters, e.g. ``;isfocus``

    @property
    def contact_address(self) -> NameAddr:
        """Our Contact as sent: ``<contact>;params`` (HeaderError if they are bad)."""
        return NameAddr.parse(f"<{self.contact}>{self.contact_params}", "Contact")


class Call:
    """One INVITE session as the application sees it."""

    def __init__(self, ua: UserAgent, session: InviteSession,
                 origin: Origin | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.ua = ua
        self.session = session
        self.origin = origin or ua.origin
        self.progress: list[Response] = []
        self.ringing = asyncio.Event()
        # called with each 1xx (but 100) as it arrives, e.g. to play early media (RFC 3960)
        self.on_provisional: list[Callable[[Response], None]] = []
        self.final: asyncio.Future[Response | None] = loop.create_future()
        self.established = asyncio.Event()
        self.terminated: asyncio.Future[Terminated] = loop.create_future()
        self._invite_ctx: ClientContext | None = None
        self._servers: dict[tuple[str, int], ServerContext] = {}
        self._results: dict[tuple[str, int], asyncio.Future[Response | None]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<Call {self.call_id} {self.state.value}>"

    @property
    def call_id(self) -> str:
        return self.session.invite.call_id

    @property
    def state(self) -> InviteState:
        return self.session.state

    @property
    def local_sdp(self) -> bytes | None:
        return self.session.local_sdp

    @property
    def remote_sdp(self) -> bytes | None:
        return self.session.remote_sdp

    @property
    def request(self) -> Request:
        return self.session.invite

    # -- UAS actions ---------------------------------------------------------
    def ring(self, status: int = 180, body: bytes = b"", reliable: bool | None = None,
             headers: Iterable[Header] = ()) -> None:
        self._act(lambda now: self.session.provisional(now, status, body, headers, reliable))

    def accept(self, answer_sdp: bytes | None = None, headers: Iterable[Header] = ()) -> None:
        self._act(lambda now: self.session.accept(now, answer_sdp, headers))

    def reject(self, code: int = 486, reason: str | None = None,
               headers: Iterable[Header] = ()) -> None:
        self._act(lambda now: self.session.reject(code, now, reason, headers))

    # -- either side ----------------------------------------------------------
    async def reinvite(self, sdp: bytes | None = None,
                       headers: Iterable[Header] = ()) -> Response | None:
        """14.1: a re-INVITE; returns its final response (the ACK is sent already).

        As the UAS whose 2xx is not ACKed yet, it first waits (at most ACK_WAIT s)
        for that ACK: no new INVITE while one is in progress in either direction."""
        if self.state is InviteState.CONNECTING:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.established.wait(), ACK_WAIT)
        request = self._act(lambda now: self.session.reinvite(now, sdp, headers))
        return await self._result(request)

    async def update(self, sdp: bytes | None = None,
                     headers: Iterable[Header] = ()) -> Response | None:
        request = self._act(lambda now: self.session.update(now, sdp, headers))
        return await self._result(request)

    async def bye(self) -> None:
        """End the call (CANCEL if still ringing) and wait until it has ended."""
        self._act(self.session.bye)
        await asyncio.shield(self.terminated)

    async def cancel(self) -> None:
        self._act(self.session.cancel)
        await asyncio.shield(self.terminated)

    async def wait_final(self) -> Response | None:
        """The INVITE's final response (UAC), None if it timed out."""
        return await asyncio.shield(self.final)

    def _act(self, action: Callable[[float], object]) -> object:
        result = action(self.ua._now())
        self.ua._drain(self)
        return result

    def _result(self, request: object) -> asyncio.Future[Response | None]:
        assert isinstance(request, Request)
        key = (request.method, request.cseq.seq)
        fut = self._results.get(key)
        if fut is None:
            fut = self._results[key] = asyncio.get_running_loop().create_future()
        return asyncio.shield(fut)


class UserAgent:
    """A SIP UA core for calls: `invite()` out, `on_call` / `incoming` in.

    ``serve_new=False`` leaves new requests to the caller's own modules (an
    AS picks which INVITEs become calls and hands them to ``new_call``).
    """

    def __init__(self, endpoint: SipEndpoint, local_uri: str | NameAddr,
                 contact: str | Uri, *, config: InviteConfig | None = None,
                 on_call: CallHandler | None = None,
                 on_request: RequestHandler | None = None,
                 offer_answer: Callable[[], OfferAnswer] | None = None,
                 route: Iterable[str] = (), serve_new: bool = True) -> None:
        self.endpoint = endpoint
        self.local = local_uri if isinstance(local_uri, NameAddr) else NameAddr.parse(local_uri)
        self.contact = parse_uri(contact) if isinstance(contact, str) else contact
        self.config = config or InviteConfig()
        self.on_call = on_call
        self.on_request = on_request
        self.offer_answer = offer_answer
        self.route = list(route)
        self.dialogs = DialogTable()
        self.incoming: asyncio.Queue[Call] = asyncio.Queue()
        self.calls: dict[str, Call] = {}        # by Call-ID + local tag
        self._by_session: dict[InviteSession, Call] = {}
        self.dialog_layer = _DialogLayer(self)
        self.application = _Application(self)
        endpoint.add_module(self.dialog_layer)
        if serve_new:
            endpoint.add_module(self.application)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    @property
    def origin(self) -> Origin:
        """The UA's own origin: what a call uses unless it is given another."""
        return Origin(self.local, self.contact, tuple(self.route))

    # -- outgoing -------------------------------------------------------------
    async def invite(self, target: str | Uri, offer_sdp: bytes | None = None,
                     headers: Iterable[Header] = (), *, to: str | NameAddr | None = None,
                     offer_answer: OfferAnswer | None = None,
                     content_type: str | None = None, origin: Origin | None = None) -> Call:
        """13.2.1: send an INVITE; returns the Call at once (await its ``final``).
        ``content_type`` other than application/sdp: e.g. multipart/mixed with an SDP part.
        ``origin`` (default ``self.origin``) is this call's From, Contact, route and flow."""
        origin = origin or self.origin
        target_uri = parse_uri(target) if isinstance(target, str) else target
        request = build_request(
            "INVITE", target_uri, origin.local, to or NameAddr(target_uri),
            contact=origin.contact_address, route=origin.route, headers=headers,
            body=offer_sdp or b"", content_type=(content_type or SDP) if offer_sdp else None)
        oa = offer_answer or self._offer_answer(offer_sdp or b"")
        session = InviteSession.outgoing(request, self._now(), self.config, oa)
        call = Call(self, session, origin)
        self.calls[self._call_key(request)] = call
        self._by_session[session] = call
        self._drain(call)
        return call

    def _offer_answer(self, sdp: bytes) -> OfferAnswer:
        return self.offer_answer() if self.offer_answer else StaticOfferAnswer(sdp)

    @staticmethod
    def _call_key(request: Request) -> str:
        return f"{request.call_id};{request.from_.tag}"

    # -- lookups ----------------------------------------------------------------
    def call_for(self, header: Replaces | Join) -> Call | None:
        """The Call whose dialog a Replaces or Join names (see DialogTable.find_invite)."""
        match = self.dialogs.find_invite(header)
        return self._call_of(match.session) if match else None

    def _call_of(self, usage: object) -> Call | None:
        return self._by_session.get(usage) if isinstance(usage, InviteSession) else None

    # -- incoming -------------------------------------------------------------
    def new_call(self, ctx: ServerContext, contact: Uri | None = None,
                 contact_params: str = "") -> Call | None:
        """13.3.1: a new INVITE becomes a Call for ``on_call`` (or ``incoming``),
        also returned (None when the INVITE was refused at once).
        ``contact`` / ``contact_params``: this call's Contact instead of the UA's
        (a focus answers with the conference URI and ``;isfocus``)."""
        request = ctx.request
        oa = self._offer_answer(b"")
        secure = ctx.flow.transport == "tls" and request.uri.scheme == "sips"
        session = InviteSession.incoming(request, self._now(), self.config, oa,
                                         local_contact=contact or self.contact, secure=secure)
        session.local_contact_params = contact_params
        call = Call(self, session)
        self._by_session[session] = call
        call._servers[("INVITE", request.cseq.seq)] = ctx
        self._drain(call)
        if session.terminated:
            self._by_session.pop(session, None)
            return None
        self.calls[f"{request.call_id};{session.dialog.id.local_tag}"] = call  # type: ignore[union-attr]
        self._spawn_watch_cancel(call, ctx)
        if self.on_call is None:
            self.incoming.put_nowait(call)
            return call
        result = self.on_call(call)
        if inspect.isawaitable(result):
            ctx.spawn(result)
        return call

    def app_request(self, ctx: ServerContext) -> None:
        """A request the UA does not serve itself: the app callback, or 405/501."""
        if self.on_request is None:
            if ctx.txn is not None:
                ctx.respond(self.endpoint.not_served(ctx.request))
            return
        result = self.on_request(ctx)
        if inspect.isawaitable(result):
            ctx.spawn(result)

    def _in_dialog(self, ctx: ServerContext, call: Call) -> None:
        request = ctx.request
        if ctx.txn is not None:
            call._servers[(request.method, request.cseq.seq)] = ctx
        handled = call.session.receive_request(request, self._now())
        self._drain(call)
        if not handled and not ctx.final_sent:
            self.app_request(ctx)

    def _spawn_watch_cancel(self, call: Call, ctx: ServerContext) -> None:
        async def watch() -> None:
            waiter = asyncio.ensure_future(ctx.cancelled.wait())
            try:
                either: list[asyncio.Future[Any]] = [waiter, call.terminated]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if ctx.cancelled.is_set() and call.session.cancel_received(self._now()):
                self._drain(call)
        self.endpoint.spawn(watch())

    # -- carrying out session events ----------------------------------------
    def _drain(self, call: Call) -> None:
        for event in call.session.events():
            self._dispatch(call, event)
        self._schedule(call)

    def _dispatch(self, call: Call, event: object) -> None:
        match event:
            case SendRequest(request=request):
                self._send_request(call, request)
            case SendAck(ack=ack):
                self._send_ack(call, ack)
            case SendResponse(response=response, request=request):
                self._send_response(call, request, response)
            case Provisional(response=response):
                call.progress.append(response)
                call.ringing.set()
                for hook in list(call.on_provisional):
                    hook(response)
            case RequestResult(request=request, response=response):
                self._request_result(call, request, response)
            case Established():
                call.established.set()
            case DialogCreated(dialog=dialog):
                self.dialogs.add_usage(dialog, call.session)
            case DialogEnded(dialog=dialog):
                self.dialogs.remove_usage(dialog, call.session)
            case Terminated():
                self._terminated(call, event)

    def _request_result(self, call: Call, request: Request, response: Response | None) -> None:
        if request is call.session.invite and not call.final.done():
            call.final.set_result(response)
        fut = call._results.setdefault((request.method, request.cseq.seq),
                                       asyncio.get_running_loop().create_future())
        if not fut.done():
            fut.set_result(response)

    def _terminated(self, call: Call, event: Terminated) -> None:
        log.info("call %s ended: %s", call.call_id, event.reason)
        if not call.final.done():
            call.final.set_result(None)
        if not call.terminated.done():
            call.terminated.set_result(event)
        for key, value in list(self.calls.items()):
            if value is call:
                del self.calls[key]
        for dialog in call.session.dialogs:  # a usage ends with its session
            self.dialogs.remove_usage(dialog, call.session)
        self._by_session.pop(call.session, None)

    def _send_request(self, call: Call, request: Request) -> None:
        if request.method == "CANCEL":
            if call._invite_ctx is not None:
                self.endpoint.spawn(call._invite_ctx.cancel())
            return
        ctx = self.endpoint.request(request, flow=call.origin.flow)
        if request is call.session.invite:
            call._invite_ctx = ctx
        ctx.on_late_response = lambda response: self._feed(call, response)
        self.endpoint.spawn(self._responses(call, ctx))

    async def _responses(self, call: Call, ctx: ClientContext) -> None:
        async for response in ctx:
            self._feed(call, response)

    def _feed(self, call: Call, response: Response) -> None:
        call.session.receive_response(response, self._now())
        self._drain(call)

    def _send_ack(self, call: Call, ack: Request) -> None:
        """13.2.2.4: the ACK for a 2xx is its own transaction, sent statelessly."""
        contact, flow = call.origin.contact, call.origin.flow
        if ack.headers.get("Via") is None and flow is not None:
            self.endpoint.push_via(ack, flow.transport, sent_by=flow.local)
        elif ack.headers.get("Via") is None:
            transport = "udp"
            if isinstance(contact, SipUri) and contact.transport:
                transport = contact.transport
            host = contact.host if isinstance(contact, SipUri) else "127.0.0.1"
            port = contact.port if isinstance(contact, SipUri) else None
            sent_by = f"{host}:{port}" if port else host
            ack.push_header("Via", f"SIP/2.0/{transport.upper()} {sent_by};branch={new_branch()}")
        self.endpoint.send_stateless(ack, flow=flow)

    def _send_response(self, call: Call, request: Request, response: Response) -> None:
        key = (request.method, request.cseq.seq)
        ctx = call._servers.get(key)
        if ctx is None:
            log.warning("no server transaction for %s %d", *key)
            return
        ctx.respond(response)
        if response.status >= 200 and request.method != "INVITE":
            call._servers.pop(key, None)

    # -- session timers ------------------------------------------------------
    def _schedule(self, call: Call) -> None:
        if call._timer is not None:
            call._timer.cancel()
            call._timer = None
        deadline = call.session.next_deadline()
        if deadline is not None:
            call._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer, call,
                                                             deadline)

    def _on_timer(self, call: Call, deadline: float) -> None:
        call._timer = None
        # call_at may run a hair early: never show the session a time before it
        call.session.on_timer(max(self._now(), deadline))
        self._drain(call)

    async def close(self) -> None:
        """Hang up every call (BYE / CANCEL / 480) without waiting for answers."""
        for call in list(self.calls.values()):
            try:
                if call.state is InviteState.INCOMING or (
                        call.state is InviteState.EARLY and call.session.final_status is None
                        and call.session.role.value == "uas"):
                    call.reject(480)
                else:
                    call._act(call.session.bye)
            except SessionError:
                pass
            if call._timer is not None:
                call._timer.cancel()


class _UaModule:
    """What the UA's two modules share: the UA and the methods it allows."""

    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua

    @property
    def methods(self) -> Collection[str]:
        return self.ua.config.allow


class _DialogLayer(_UaModule):
    """The UA's dialog layer: requests in a dialog with an INVITE usage go
    to that session; event methods are left to the event usages (RFC 5057 5)."""

    name = "ua-dialogs"
    priority = Priority.DIALOG

    def on_request(self, ctx: ServerContext) -> bool:
        request = ctx.request
        if not request.to.tag or request.method in EVENT_METHODS:
            return False
        dialog = self.ua.dialogs.match_request(request)
        session = dialog.invite_usage if dialog is not None else None
        call = self.ua._call_of(session)
        if call is None:
            return False
        self.ua._in_dialog(ctx, call)
        return True


class _Application(_UaModule):
    """The UA's own answers outside its dialogs: new INVITE and OPTIONS,
    481 for dialogs we do not have (12.2.2), the app callback for the rest."""

    name = "ua"
    priority = Priority.APPLICATION

    def on_request(self, ctx: ServerContext) -> bool:
        request, ua = ctx.request, self.ua
        if request.method == "ACK":
            return False        # a stray ACK: dropped
        if request.to.tag:
            if request.method in EVENT_METHODS and ua.dialogs.match_request(request):
                ua.app_request(ctx)   # an event request in our dialog, no event module
            else:
                log.info("481 for %s: no dialog (Call-ID %s)", request.method, request.call_id)
                ctx.respond(Response.for_request(request, 481))
        elif request.method == "INVITE":
            ua.new_call(ctx)
        elif request.method == "OPTIONS":
            ctx.respond(options_response(request, ua.config, to_tag=new_tag()))
        elif request.method in ("BYE", "PRACK"):
            ctx.respond(Response.for_request(request, 481))
        elif ua.on_request is not None:
            ua.app_request(ctx)
        else:
            return False
        return True


async def end_together(a: Call, b: Call) -> None:
    """Two calls a B2BUA bridged: when either ends, BYE the other (a failing BYE
    only means the far side is gone already)."""
    await asyncio.wait({asyncio.ensure_future(asyncio.shield(a.terminated)),
                        asyncio.ensure_future(asyncio.shield(b.terminated))},
                       return_when=asyncio.FIRST_COMPLETED)
    for call in (a, b):
        if not call.terminated.done():
            with contextlib.suppress(Exception):
                await call.bye()
