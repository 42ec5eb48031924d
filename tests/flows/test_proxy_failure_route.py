"""StatefulProxy's routing hooks over loopback UDP: the request context seen by
the router, the failure route (serial forking, RFC 3261 16.7 step 6 and the
Kamailio failure_route idea), the per-target no-answer timeout and the
re-target bound.  Peers and UACs are the harness of test_proxy.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from imsbox.sip import Response, new_tag
from imsbox.sip.endpoint import ServerContext
from imsbox.sip.proxy import FailureRoute, RequestContext, Router, StatefulProxy, Target
from imsbox.sip.transport.base import Flow
from imsbox.sip.uri import SipUri

from test_proxy import (
    HOST, MID, Net, Peer, answer, make_request, reply, ring_until_cancel, run, settle, statuses,
)

pytestmark = pytest.mark.timeout(30)


@dataclass
class Seen:
    """What the hooks of one proxy were shown."""

    router: list[RequestContext] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)   # best status per failed set
    responses: list[tuple[int, Flow, SipUri | None, object, dict[str, object]]] = \
        field(default_factory=list)


class RecordingProxy(StatefulProxy):
    """A proxy whose on_response notes the context each response came with."""

    def __init__(self, seen: Seen, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.seen = seen

    async def on_response(self, ctx: RequestContext, response: Response) -> Response:
        self.seen.responses.append(
            (response.status, ctx.flow, ctx.route, ctx.session_case, dict(ctx.values)))
        return response


def serial(first: list[Peer], then: list[list[Peer]], seen: Seen,
           timeout: float | None = None) -> Router:
    """A router to ``first`` whose failure route tries each set of ``then`` in turn."""
    remaining = list(then)

    async def retarget(ctx: RequestContext, best: Response) -> list[Target] | None:
        seen.failures.append(best.status)
        ctx.values["failures"] = len(seen.failures)
        if not remaining:
            return None
        return [Target(p.uri, timeout=timeout) for p in remaining.pop(0)]

    async def router(ctx: RequestContext) -> list[Target]:
        seen.router.append(ctx)
        ctx.values["routed-by"] = "test"
        ctx.session_case = "terminating"
        ctx.failure_route = failure_route
        return [Target(p.uri, timeout=timeout) for p in first]
    failure_route: FailureRoute = retarget
    return router


async def start(net: Net, router: Router, seen: Seen, **options: object) -> StatefulProxy:
    options.setdefault("timers", MID)
    return await net.start(RecordingProxy(seen, router, **options))


def test_busy_forwards_to_next_target_and_context_reaches_on_response() -> None:
    async def scenario(net: Net) -> None:
        busy = await net.peer("busy", reply(486))
        second = await net.peer("second", reply(200, ring=True))
        seen = Seen()
        router = serial([busy], [[second]], seen)
        await start(net, router, seen)
        uac, _ = await net.uac()
        own_route = f"<sip:orig@{HOST}:{net.proxy_port};lr;x=1>"
        request = make_request("INVITE", "sip:bob@example.com", [("Route", own_route)])
        responses = [r async for r in uac.request(request, net.proxy_dest)]

        assert statuses(responses) == [100, 180, 200]  # the 486 never goes upstream
        assert seen.failures == [486]
        assert busy.wire.requests_in("ACK")  # the proxy ACKed the 486 (17.1.1.3)
        [invite] = second.wire.requests_in("INVITE")
        assert invite.route == []  # our own Route was popped (16.4) ...
        [ctx] = seen.router
        assert ctx.route is not None and ctx.route.user == "orig"  # ... and kept
        assert ctx.route.param("x") == "1" and ctx.retargets == 1
        # on_response: the same context, with the UAC's flow and the values
        # the router and the failure route left in it.
        uac_port = uac.listening["udp"][1]
        for _status, flow, route, case, values in seen.responses:
            assert flow.remote == (HOST, uac_port) and route == ctx.route
            assert case == "terminating"
            assert values == {"routed-by": "test", "failures": 1}
        assert [s for s, *_ in seen.responses] == [180, 200]
    run(scenario)


class SlowOnRinging(StatefulProxy):
    """An on_response that awaits on a 180 (as a P-CSCF awaits a store write),
    long enough for a 200 of another branch to arrive meanwhile."""

    def __init__(self, rung: asyncio.Event, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.rung = rung

    async def on_response(self, ctx: RequestContext, response: Response) -> Response:
        if response.status == 180:
            self.rung.set()
            await asyncio.sleep(0.3)
        return response


def test_an_awaiting_on_response_keeps_the_upstream_order() -> None:
    """Two branches: one rings, the other answers 200 once the 180 is inside the
    hook.  The 180 still goes upstream first, and the 200 after it."""
    async def scenario(net: Net) -> None:
        rung = asyncio.Event()

        async def answer_after_ringing(ctx: ServerContext, tag: str) -> None:
            await rung.wait()
            ctx.respond(answer(ctx, 200, tag))
        ringing = await net.peer("ringing", ring_until_cancel())
        answering = await net.peer("answering", answer_after_ringing)

        async def router(ctx: RequestContext) -> list[Target]:
            return [Target(ringing.uri), Target(answering.uri)]
        await net.start(SlowOnRinging(rung, router, timers=MID))
        uac, _ = await net.uac()
        responses = [r async for r in uac.request(
            make_request("INVITE", "sip:bob@example.com"), net.proxy_dest)]

        assert statuses(responses) == [100, 180, 200]
        await settle(lambda: bool(ringing.wire.requests_in("CANCEL")))  # 2xx cancels the rest
    run(scenario)


def test_no_answer_cancels_the_branch_and_tries_the_next_target() -> None:
    async def scenario(net: Net) -> None:
        ringing = await net.peer("ringing", ring_until_cancel())
        second = await net.peer("second", reply(200))
        seen = Seen()
        router = serial([ringing], [[second]], seen, timeout=0.6)
        await start(net, router, seen)  # Timer C stays at its 180 s default
        uac, _ = await net.uac()
        loop = asyncio.get_running_loop()
        started = loop.time()
        responses = [r async for r in uac.request(
            make_request("INVITE", "sip:bob@example.com"), net.proxy_dest)]

        assert statuses(responses) == [100, 180, 200]
        assert loop.time() - started >= 0.6
        assert ringing.wire.requests_in("CANCEL")  # the callee saw the CANCEL
        assert 487 in statuses(ringing.wire.responses_out())
        assert seen.failures == [408]  # its 487 counts as no answer
        assert second.wire.requests_in("INVITE")
    run(scenario)


def test_all_sets_fail_best_response_of_all_branches_goes_upstream() -> None:
    async def scenario(net: Net) -> None:
        busy = await net.peer("busy", reply(486))
        broken = await net.peer("broken", reply(500))
        seen = Seen()
        router = serial([busy], [[broken]], seen)
        await start(net, router, seen)
        uac, _ = await net.uac()
        final = await uac.request(make_request("INVITE", "sip:bob@example.com"),
                                  net.proxy_dest).final()

        # Each run of the failure route sees its own set's best response;
        # upstream gets the best of every branch (16.7 step 6), not the last.
        assert seen.failures == [486, 500]
        assert final.status == 486
        assert broken.wire.requests_in("INVITE")
    run(scenario)


def test_failure_route_answers_with_its_own_response() -> None:
    async def scenario(net: Net) -> None:
        busy = await net.peer("busy", reply(486))
        voicemail = f"<sip:voicemail@{HOST}:5999>"

        async def failure_route(ctx: RequestContext, best: Response) -> Response:
            redirect = Response.for_request(ctx.request, 302, to_tag=new_tag())
            redirect.add_header("Contact", voicemail)
            return redirect

        async def router(ctx: RequestContext) -> list[Target]:
            ctx.failure_route = failure_route
            return [Target(busy.uri)]
        await net.start(StatefulProxy(router, timers=MID))
        uac, _ = await net.uac()
        final = await uac.request(make_request("INVITE", "sip:bob@example.com"),
                                  net.proxy_dest).final()
        assert final.status == 302
        assert final.headers.get_all("Contact") == [voicemail]
    run(scenario)


def test_retarget_bound_stops_a_failure_route_that_never_gives_up() -> None:
    async def scenario(net: Net) -> None:
        busy = await net.peer("busy", reply(486))
        calls: list[int] = []

        async def failure_route(ctx: RequestContext, best: Response) -> list[Target]:
            calls.append(best.status)
            return [Target(busy.uri)]  # the same busy target, for ever

        async def router(ctx: RequestContext) -> list[Target]:
            ctx.failure_route = failure_route
            return [Target(busy.uri)]
        await net.start(StatefulProxy(router, timers=MID, max_retargets=2))
        uac, _ = await net.uac()
        final = await uac.request(make_request("INVITE", "sip:bob@example.com"),
                                  net.proxy_dest).final()
        assert final.status == 486
        assert calls == [486, 486]
        assert len(busy.wire.requests_in("INVITE")) == 3  # first try + 2 re-targets
    run(scenario)


def test_failure_route_not_run_after_cancel_or_6xx() -> None:
    async def scenario(net: Net) -> None:
        ringing = await net.peer("ringing", ring_until_cancel())
        declining = await net.peer("declining", reply(603))
        spare = await net.peer("spare", reply(200))
        calls: list[int] = []

        async def failure_route(ctx: RequestContext, best: Response) -> list[Target]:
            calls.append(best.status)
            return [Target(spare.uri)]

        async def router(ctx: RequestContext) -> list[Target]:
            ctx.failure_route = failure_route
            user = ctx.request.uri.user if isinstance(ctx.request.uri, SipUri) else None
            return [Target((ringing if user == "ring" else declining).uri)]
        await net.start(StatefulProxy(router, timers=MID))
        uac, _ = await net.uac()

        invite = uac.request(make_request("INVITE", "sip:ring@example.com"), net.proxy_dest)
        await settle(lambda: bool(ringing.wire.responses_out()))
        await invite.cancel()
        assert (await invite.final()).status == 487
        declined = await uac.request(make_request("INVITE", "sip:decline@example.com"),
                                     net.proxy_dest).final()
        assert declined.status == 603
        assert calls == [] and spare.wire.inbound == []
    run(scenario)


def test_follow_route_is_a_step_the_router_can_take() -> None:
    """With follow_routes off the router sees in-dialog requests too and
    decides when to follow their route (as the P-CSCF does for its UEs)."""
    async def scenario(net: Net) -> None:
        peer = await net.peer("bob", reply(200))
        routed: list[list[Target] | None] = []

        async def router(ctx: RequestContext) -> list[Target] | Response:
            targets = ctx.follow_route()
            routed.append(targets)
            if targets is None:
                return Response.for_request(ctx.request, 404, to_tag=new_tag())
            return targets
        await net.start(StatefulProxy(router, timers=MID, follow_routes=False))
        uac, _ = await net.uac()
        out_of_dialog = await uac.request(make_request("MESSAGE", "sip:bob@example.com"),
                                          net.proxy_dest).final()
        in_dialog = make_request("MESSAGE", str(peer.uri))
        in_dialog.set_header("To", f"<sip:bob@example.com>;tag={new_tag()}")
        answered = await uac.request(in_dialog, net.proxy_dest).final()
        assert (out_of_dialog.status, answered.status) == (404, 200)
        assert routed[0] is None and routed[1] is not None
        assert [str(t.uri) for t in routed[1]] == [str(peer.uri)]
    run(scenario)



def test_failure_route_that_raises_or_finds_nothing_sends_the_best_response() -> None:
    async def scenario(net: Net) -> None:
        busy = await net.peer("busy", reply(486))

        async def failure_route(ctx: RequestContext, best: Response) -> list[Target]:
            if ctx.request.uri.user == "empty":  # type: ignore[union-attr]
                return []
            raise RuntimeError("failure route bug")

        async def router(ctx: RequestContext) -> list[Target]:
            ctx.failure_route = failure_route
            return [Target(busy.uri)]
        await net.start(StatefulProxy(router, timers=MID))
        uac, _ = await net.uac()
        for user in ("empty", "raises"):
            final = await uac.request(make_request("INVITE", f"sip:{user}@example.com"),
                                      net.proxy_dest).final()
            assert final.status == 486
    run(scenario)
