"""SipEndpoint over real loopback UDP and TCP sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

from imsbox.sip import Request, Response, new_tag, parse
from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint, next_hop
from imsbox.sip.transaction import TimerValues, TransactionState, make_ack
from imsbox.sip.transport.base import Destination
from imsbox.store import StoreUnavailable

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"
FAST = TimerValues(t1=0.02, t2=0.1, t4=0.1)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 15))


def make_request(method: str, target: str, body: bytes = b"", cseq: int = 1) -> Request:
    return Request(method, target, [
        ("From", f"<sip:alice@{HOST}>;tag={new_tag()}"),
        ("To", f"<{target}>"),
        ("Call-ID", f"{new_tag()}@{HOST}"),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", f"<sip:alice@{HOST}>"),
    ], body)


async def listen_both(ep: SipEndpoint) -> int:
    """UDP and TCP on one port number, as a SIP node usually listens."""
    for _ in range(20):
        _, port = await ep.listen("udp", HOST, 0)
        try:
            await ep.listen("tcp", HOST, port)
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class Collector(asyncio.DatagramProtocol):
    """A raw UDP socket that records what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        self.queue.put_nowait(data)


async def raw_udp() -> tuple[Collector, int]:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(Collector, local_addr=(HOST, 0))
    assert proto.transport is not None
    return proto, proto.transport.get_extra_info("sockname")[1]


def ok(ctx: ServerContext, status: int = 200) -> None:
    ctx.respond(Response.for_request(ctx.request, status, to_tag=new_tag()))


def test_next_hop_from_route_or_request_uri() -> None:
    req = make_request("MESSAGE", "sip:bob@192.0.2.5;transport=tcp")
    assert next_hop(req) == ("tcp", "192.0.2.5", 5060)
    req.add_header("Route", "<sip:[2001:db8::1]:5070;lr>")
    assert next_hop(req) == ("udp", "2001:db8::1", 5070)
    assert next_hop(make_request("MESSAGE", "sips:bob@example.com")) == \
        ("tls", "example.com", 5061)
    assert next_hop(make_request("MESSAGE", "sip:bob@example.com;maddr=192.0.2.9")) == \
        ("udp", "192.0.2.9", 5060)
    with pytest.raises(ValueError):
        next_hop(make_request("MESSAGE", "tel:+15551234"))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_request_response_between_two_endpoints(transport: str) -> None:
    async def main() -> None:
        seen: list[ServerContext] = []

        def handler(ctx: ServerContext) -> None:
            seen.append(ctx)
            ok(ctx)

        a, b = (SipEndpoint(modules=[HandlerModule(handler)]),
                SipEndpoint(modules=[HandlerModule(handler)]))
        await a.listen(transport, HOST, 0)
        _, port = await b.listen(transport, HOST, 0)
        try:
            req = make_request("MESSAGE", f"sip:bob@{HOST}:{port};transport={transport}",
                               b"hello")
            ctx = a.request(req)
            responses = [r async for r in ctx]
            assert [r.status for r in responses] == [200]
            assert await ctx.final() is responses[0] and not ctx.local_failure
            assert len(seen) == 1 and seen[0].request.body == b"hello"
            via = seen[0].request.top_via
            assert via.transport == transport.upper() and via.branch.startswith("z9hG4bK")
            assert via.rport is not None  # the transport filled rport (RFC 3581)
            assert seen[0].flow.transport == transport
            assert ctx.dest == Destination(transport, HOST, port)
        finally:
            await a.close()
            await b.close()

    run(main())


def test_udp_retransmission_absorbed_and_response_resent() -> None:
    async def main() -> None:
        calls: list[Request] = []

        def handler(ctx: ServerContext) -> None:
            calls.append(ctx.request)
            ok(ctx)

        b = SipEndpoint(modules=[HandlerModule(handler)])
        _, port = await b.listen("udp", HOST, 0)
        raw, raw_port = await raw_udp()
        try:
            req = make_request("MESSAGE", f"sip:bob@{HOST}:{port}")
            req.push_header("Via", f"SIP/2.0/UDP {HOST}:{raw_port};branch=z9hG4bKretrans1")
            data = bytes(req)
            raw.transport.sendto(data, (HOST, port))
            first = parse(await asyncio.wait_for(raw.queue.get(), 2))
            raw.transport.sendto(data, (HOST, port))
            second = parse(await asyncio.wait_for(raw.queue.get(), 2))
            assert first.status == second.status == 200
            assert first.to.tag == second.to.tag  # the very same response, resent
            assert len(calls) == 1
        finally:
            raw.transport.close()
            await b.close()

    run(main())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_cancel_pending_invite(transport: str) -> None:
    async def main() -> None:
        server_ctxs: list[ServerContext] = []

        async def handler(ctx: ServerContext) -> None:
            server_ctxs.append(ctx)
            ctx.respond(Response.for_request(ctx.request, 180, to_tag="callee"))
            await ctx.cancelled.wait()
            ctx.respond(Response.for_request(ctx.request, 487, to_tag="callee"))

        a, b = (SipEndpoint(modules=[HandlerModule(handler)]),
                SipEndpoint(modules=[HandlerModule(handler)]))
        await a.listen(transport, HOST, 0)
        _, port = await b.listen(transport, HOST, 0)
        try:
            ctx = a.request(make_request("INVITE",
                                         f"sip:bob@{HOST}:{port};transport={transport}"))
            first = await anext(ctx)
            assert first.status == 180
            cancel_response = await ctx.cancel()
            assert cancel_response is not None and cancel_response.status == 200
            assert cancel_response.cseq.method == "CANCEL"
            final = await ctx.final()
            assert final.status == 487
            assert len(server_ctxs) == 1  # the CANCEL did not reach the handler
            txn = server_ctxs[0].txn
            for _ in range(100):  # our client transaction ACKs the 487
                if txn.state in (TransactionState.CONFIRMED, TransactionState.TERMINATED):
                    break
                await asyncio.sleep(0.01)
            assert txn.state in (TransactionState.CONFIRMED, TransactionState.TERMINATED)
        finally:
            await a.close()
            await b.close()

    run(main())


def test_cancel_for_unknown_invite_gets_481() -> None:
    async def main() -> None:
        b = SipEndpoint(modules=[HandlerModule(ok)])
        _, port = await b.listen("udp", HOST, 0)
        a = SipEndpoint(modules=[HandlerModule(ok)])
        await a.listen("udp", HOST, 0)
        try:
            cancel = make_request("CANCEL", f"sip:bob@{HOST}:{port}")
            final = await a.request(cancel).final()
            assert final.status == 481
        finally:
            await a.close()
            await b.close()

    run(main())


def test_timeout_gives_local_408() -> None:
    async def main() -> None:
        a = SipEndpoint(timers=FAST, modules=[HandlerModule(ok)])
        await a.listen("udp", HOST, 0)
        silent, port = await raw_udp()
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            ctx = a.request(make_request("OPTIONS", f"sip:bob@{HOST}:{port}"))
            final = await ctx.final()
            elapsed = loop.time() - start
            assert final.status == 408 and ctx.local_failure
            assert 64 * FAST.t1 * 0.9 <= elapsed < 64 * FAST.t1 + 1.0  # Timer F
            assert silent.queue.qsize() >= 5  # Timer E retransmitted meanwhile
        finally:
            silent.transport.close()
            await a.close()

    run(main())


def test_tcp_connection_refused_gives_local_503() -> None:
    async def main() -> None:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]  # closed again: nobody listens there
        a = SipEndpoint(modules=[HandlerModule(ok)])
        await a.listen("tcp", HOST, 0)
        try:
            ctx = a.request(make_request("OPTIONS", f"sip:bob@{HOST}:{port};transport=tcp"))
            final = await ctx.final()
            assert final.status == 503 and ctx.local_failure
        finally:
            await a.close()

    run(main())


def test_automatic_100_trying_and_ack_for_2xx_reaches_handler() -> None:
    async def main() -> None:
        acks: list[ServerContext] = []

        async def handler(ctx: ServerContext) -> None:
            if ctx.request.method == "ACK":
                acks.append(ctx)
                with pytest.raises(ValueError):
                    ctx.respond(Response.for_request(ctx.request, 200))
                return
            await asyncio.sleep(0.4)  # slower than the 200 ms of 17.2.1
            ok(ctx)

        a, b = (SipEndpoint(modules=[HandlerModule(handler)]),
                SipEndpoint(modules=[HandlerModule(handler)]))
        await a.listen("udp", HOST, 0)
        _, port = await b.listen("udp", HOST, 0)
        try:
            invite = make_request("INVITE", f"sip:bob@{HOST}:{port}")
            ctx = a.request(invite)
            statuses = [r.status async for r in ctx]
            assert statuses == [100, 200]
            final = await ctx.final()
            ack = make_ack(invite, final)  # a 2xx ACK is its own request (13.2.2.4)
            ack.pop_header("Via")
            ack.push_header("Via", f"SIP/2.0/UDP {HOST}:1;branch=z9hG4bKack2xx")
            await a.send_stateless(ack, Destination("udp", HOST, port))
            for _ in range(100):
                if acks:
                    break
                await asyncio.sleep(0.01)
            assert len(acks) == 1 and acks[0].txn is None
        finally:
            await a.close()
            await b.close()

    run(main())


def test_large_udp_request_falls_back_to_tcp() -> None:
    async def main() -> None:
        seen: list[ServerContext] = []

        def handler(ctx: ServerContext) -> None:
            seen.append(ctx)
            ok(ctx)

        a, b = (SipEndpoint(modules=[HandlerModule(handler)]),
                SipEndpoint(modules=[HandlerModule(handler)]))
        await listen_both(a)
        port = await listen_both(b)
        try:
            req = make_request("MESSAGE", f"sip:bob@{HOST}:{port}", b"x" * 2000)
            ctx = a.request(req)
            assert (await ctx.final()).status == 200
            assert ctx.dest == Destination("tcp", HOST, port)
            assert seen[0].flow.transport == "tcp"
            assert seen[0].request.top_via.transport == "TCP"  # 18.1.1: Via rewritten
        finally:
            await a.close()
            await b.close()

    run(main())


def test_handler_error_answers_500() -> None:
    async def main() -> None:
        def handler(ctx: ServerContext) -> None:
            raise RuntimeError("boom")

        a, b = SipEndpoint(modules=[HandlerModule(ok)]), SipEndpoint(modules=[HandlerModule(handler)])
        await a.listen("udp", HOST, 0)
        _, port = await b.listen("udp", HOST, 0)
        try:
            final = await a.request(make_request("OPTIONS", f"sip:bob@{HOST}:{port}")).final()
            assert final.status == 500
        finally:
            await a.close()
            await b.close()

    run(main())


def test_a_back_end_away_answers_503_with_retry_after() -> None:
    async def main() -> None:
        def handler(ctx: ServerContext) -> None:
            raise StoreUnavailable("PostgreSQL store postgresql://db/imsbox unavailable")

        a, b = SipEndpoint(modules=[HandlerModule(ok)]), SipEndpoint(modules=[HandlerModule(handler)])
        await a.listen("udp", HOST, 0)
        _, port = await b.listen("udp", HOST, 0)
        try:
            final = await a.request(make_request("MESSAGE", f"sip:bob@{HOST}:{port}")).final()
            assert (final.status, final.reason) == (503, "Service Unavailable - store unavailable")
            assert final.headers.get("Retry-After") == str(StoreUnavailable.retry_after)
        finally:
            await a.close()
            await b.close()

    run(main())


def test_send_stateless_response_follows_top_via() -> None:
    async def main() -> None:
        a = SipEndpoint(modules=[HandlerModule(ok)])
        await a.listen("udp", HOST, 0)
        raw, raw_port = await raw_udp()
        try:
            req = make_request("MESSAGE", "sip:bob@example.com")
            req.push_header("Via", f"SIP/2.0/UDP {HOST}:{raw_port};branch=z9hG4bKsl1")
            flow = await a.send_stateless(Response.for_request(req, 202, to_tag="x"))
            assert flow is not None and flow.remote == (HOST, raw_port)
            got = parse(await asyncio.wait_for(raw.queue.get(), 2))
            assert got.status == 202 and got.top_via.branch == "z9hG4bKsl1"
        finally:
            raw.transport.close()
            await a.close()

    run(main())
