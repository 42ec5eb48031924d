"""The SIP transport layer over real loopback sockets (RFC 3261 18, RFC 3581, RFC 5923)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any
from collections.abc import Awaitable, Callable

import pytest

from imsbox.sip import Request, Response, Via, new_branch, new_tag, parse
from imsbox.sip.message import Message
from imsbox.sip.transport import (
    Destination, Flow, Limits, TransportLayer, client_context, ensure_self_signed,
    response_destination, server_context,
)

pytestmark = pytest.mark.timeout(30)

V4, V6 = "127.0.0.1", "::1"


def run(factory: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await factory()
    return asyncio.run(bounded())


class Inbox:
    """on_message callback that queues (message, flow) pairs."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Message, Flow]] = asyncio.Queue()

    def __call__(self, message: Message, flow: Flow) -> None:
        self.queue.put_nowait((message, flow))

    async def get(self, timeout: float = 3.0) -> tuple[Any, Flow]:
        async with asyncio.timeout(timeout):
            return await self.queue.get()

    async def nothing(self, wait: float = 0.2) -> bool:
        await asyncio.sleep(wait)
        return self.queue.empty()


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_request(transport: str, sent_by: str, call_id: str | None = None,
                 body: bytes = b"", via_params: str = ";rport") -> Request:
    return Request("MESSAGE", "sip:bob@example.com", [
        ("Via", f"SIP/2.0/{transport.upper()} {sent_by};branch={new_branch()}{via_params}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:alice@example.com>;tag={new_tag()}"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", call_id or new_tag()),
        ("CSeq", "1 MESSAGE"),
        ("Content-Type", "text/plain"),
    ], body)


async def pair(transport: str, host: str, limits: Limits | None = None,
               tls_dir: Path | None = None) -> tuple[TransportLayer, Inbox, tuple[str, int],
                                                     TransportLayer, Inbox, tuple[str, int]]:
    """Two layers, A and B, each listening on ``transport`` at ``host``."""
    server_ctx = client_ctx = None
    if transport == "tls":
        assert tls_dir is not None
        cert, key = ensure_self_signed(tls_dir, ["localhost", V4, V6])
        server_ctx, client_ctx = server_context(cert, key), client_context(cert)
    a_in, b_in = Inbox(), Inbox()
    a = TransportLayer(a_in, limits=limits, client_ssl_context=client_ctx)
    b = TransportLayer(b_in, limits=limits, client_ssl_context=client_ctx)
    a_addr = await a.listen(transport, host, 0, ssl_context=server_ctx)
    b_addr = await b.listen(transport, host, 0, ssl_context=server_ctx)
    return a, a_in, a_addr, b, b_in, b_addr


# -- UDP -----------------------------------------------------------------

@pytest.mark.parametrize("host", [V4, V6])
def test_udp_exchange_and_rport(host: str) -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair("udp", host)
        try:
            request = make_request("udp", hostport(*a_addr))
            sent = await a.send(request, Destination("udp", host, b_addr[1]))
            assert sent.local == a_addr and sent.remote == (host, b_addr[1])
            got, flow = await b_in.get()
            assert isinstance(got, Request) and got.call_id == request.call_id
            assert flow.transport == "udp" and flow.conn_id is None
            assert flow.remote == a_addr  # sent from the listening socket
            assert flow.local == b_addr
            via = got.top_via
            assert via.rport == a_addr[1] and via.received == host  # RFC 3581 4
            b.send_response(Response.for_request(got, 200, to_tag=new_tag()), flow)
            answer, _ = await a_in.get()
            assert isinstance(answer, Response) and answer.status == 200
            assert answer.call_id == request.call_id
            assert answer.top_via.rport == a_addr[1]
        finally:
            await a.close()
            await b.close()
    run(main)


def test_udp_received_added_only_when_sent_by_differs() -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair("udp", V4)
        try:
            dest = Destination("udp", V4, b_addr[1])
            await a.send(make_request("udp", hostport(*a_addr), via_params=""), dest)
            got, _ = await b_in.get()
            assert got.top_via.received is None and not got.top_via.wants_rport
            await a.send(make_request("udp", f"192.0.2.7:{a_addr[1]}", via_params=""), dest)
            got, flow = await b_in.get()
            assert got.top_via.received == V4  # 18.2.1
            assert got.header("Via").startswith("SIP/2.0/UDP 192.0.2.7:")
            # 18.2.2: no rport -> received address and sent-by port, which is A.
            b.send_response(Response.for_request(got, 202), flow)
            answer, _ = await a_in.get()
            assert answer.status == 202
        finally:
            await a.close()
            await b.close()
    run(main)


def test_udp_response_routed_to_rport_not_sent_by_port() -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair("udp", V4)
        try:
            # Sent-by names a port nobody listens on (a NAT would do this).
            request = make_request("udp", "10.9.9.9:9", via_params=";rport")
            await a.send(request, Destination("udp", V4, b_addr[1]))
            got, flow = await b_in.get()
            assert response_destination(Response.for_request(got, 200)) == \
                Destination("udp", V4, a_addr[1])
            b.send_response(Response.for_request(got, 200), flow)
            answer, answer_flow = await a_in.get()
            assert answer.status == 200 and answer_flow.remote == b_addr
        finally:
            await a.close()
            await b.close()
    run(main)


def test_udp_large_message_still_sent_over_udp() -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair("udp", V4)
        try:
            request = make_request("udp", hostport(*a_addr), body=b"x" * 5000)
            await a.send(request, Destination("udp", V4, b_addr[1]))
            got, _ = await b_in.get()
            assert got.body == b"x" * 5000
        finally:
            await a.close()
            await b.close()
    run(main)


def test_trace_sees_both_directions() -> None:
    async def main() -> None:
        seen: list[tuple[str, bytes, Flow]] = []
        inbox = Inbox()
        a = TransportLayer(lambda m, f: None, trace=lambda d, data, f: seen.append((d, data, f)))
        b = TransportLayer(inbox)
        try:
            a_addr = await a.listen("udp", V4, 0)
            b_addr = await b.listen("udp", V4, 0)
            request = make_request("udp", hostport(*a_addr))
            await a.send(request, Destination("udp", V4, b_addr[1]))
            got, flow = await inbox.get()
            b.send_response(Response.for_request(got, 200), flow)
            for _ in range(100):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.01)
            assert [d for d, _, _ in seen] == ["out", "in"]
            assert seen[0][1] == bytes(request)
            assert parse(seen[1][1]).status == 200  # type: ignore[union-attr]
        finally:
            await a.close()
            await b.close()
    run(main)


# -- malformed input -----------------------------------------------------

BAD_MAX_FORWARDS = (
    "MESSAGE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/{t} {sent_by};branch=z9hG4bKbad1;rport\r\n"
    "Max-Forwards: lots\r\n"
    "From: <sip:alice@example.com>;tag=99\r\n"
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: broken-1\r\n"
    "CSeq: 1 MESSAGE\r\n"
    "Content-Length: 0\r\n\r\n"
)


def udp_client(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(3.0)
    return sock


def test_malformed_udp_request_answered_with_reason() -> None:
    async def main() -> None:
        inbox = Inbox()
        tl = TransportLayer(inbox)
        sock = udp_client(V4)
        try:
            port = (await tl.listen("udp", V4, 0))[1]
            raw = BAD_MAX_FORWARDS.format(t="UDP", sent_by="client.invalid:5060")
            sock.sendto(raw.encode(), (V4, port))
            data, _ = await asyncio.to_thread(sock.recvfrom, 65535)
            answer = parse(data)
            assert isinstance(answer, Response) and answer.status == 400
            assert answer.reason.startswith("Bad Request - ")
            assert "Max-Forwards" in answer.reason and len(answer.reason) <= 100
            assert answer.call_id == "broken-1"
            assert answer.top_via.received == V4
            assert answer.top_via.rport == sock.getsockname()[1]
            assert tl.stats["malformed_answered"] == 1
            assert await inbox.nothing(0.05)
        finally:
            sock.close()
            await tl.close()
    run(main)


def test_unsupported_version_answered_505() -> None:
    async def main() -> None:
        tl = TransportLayer(Inbox())
        sock = udp_client(V6)
        try:
            port = (await tl.listen("udp", V6, 0))[1]
            raw = BAD_MAX_FORWARDS.format(t="UDP", sent_by="[::1]:5060").replace(
                "SIP/2.0\r\n", "SIP/3.0\r\n", 1).replace("lots", "70")
            sock.sendto(raw.encode(), (V6, port))
            data, _ = await asyncio.to_thread(sock.recvfrom, 65535)
            answer = parse(data)
            assert answer.status == 505  # type: ignore[union-attr]
            assert "SIP/3.0" in answer.reason  # type: ignore[union-attr]
        finally:
            sock.close()
            await tl.close()
    run(main)


def test_unaddressable_garbage_and_bad_responses_dropped() -> None:
    async def main() -> None:
        inbox = Inbox()
        tl = TransportLayer(inbox)
        sock = udp_client(V4)
        try:
            addr = await tl.listen("udp", V4, 0)
            # Missing Call-ID: nothing to build a response from; dropped.
            no_call_id = BAD_MAX_FORWARDS.format(t="UDP", sent_by="127.0.0.1:1").replace(
                "Call-ID: broken-1\r\n", "")
            bad_response = ("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n"
                            "Content-Length: 0\r\n\r\n")
            for raw in (b"\x00\xff\xfe garbage", no_call_id.encode(), bad_response.encode(),
                        b"\r\n\r\n"):
                sock.sendto(raw, addr)
            # The listener still works for everyone else.
            good = make_request("udp", hostport(*sock.getsockname()))
            sock.sendto(bytes(good), addr)
            got, _ = await inbox.get()
            assert got.call_id == good.call_id
            assert tl.stats["malformed_dropped"] == 3
            assert tl.stats["keepalives_in"] == 1
            sock.settimeout(0.2)
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(sock.recvfrom, 65535)
        finally:
            sock.close()
            await tl.close()
    run(main)


# -- TCP and TLS ---------------------------------------------------------

@pytest.mark.parametrize("transport,host", [("tcp", V4), ("tcp", V6), ("tls", V4), ("tls", V6)])
def test_stream_exchange_and_connection_reuse(transport: str, host: str, tmp_path: Path) -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair(transport, host, tls_dir=tmp_path)
        try:
            dest = Destination(transport, host, b_addr[1])
            r1 = make_request(transport, hostport(*a_addr))
            r2 = make_request(transport, hostport(*a_addr))
            f1 = await a.send(r1, dest)
            f2 = await a.send(r2, dest)
            assert f1.conn_id is not None and f1 == f2  # one connection, reused
            assert a.stats["connections_opened"] == 1
            got1, in1 = await b_in.get()
            got2, in2 = await b_in.get()
            assert (got1.call_id, got2.call_id) == (r1.call_id, r2.call_id)
            assert in1 == in2 and in1.conn_id is not None and in1.transport == transport
            assert in1.remote == f1.local and in1.local == b_addr
            assert b.stats["connections_accepted"] == 1
            # Source port is ephemeral, so the Via gets received (18.2.1) but
            # the response goes back over the connection (18.2.2).
            b.send_response(Response.for_request(got1, 200), in1)
            answer, answer_flow = await a_in.get()
            assert answer.status == 200 and answer.call_id == r1.call_id
            assert answer_flow.conn_id == f1.conn_id
            assert len(a.connections) == 1 and len(b.connections) == 1
        finally:
            await a.close()
            await b.close()
    run(main)


def test_tcp_response_uses_connection_even_with_unreachable_sent_by() -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair("tcp", V4)
        try:
            await a.send(make_request("tcp", "192.0.2.99:5999"), Destination("tcp", V4, b_addr[1]))
            got, flow = await b_in.get()
            assert got.top_via.received == V4
            b.send_response(Response.for_request(got, 486), flow)
            answer, _ = await a_in.get()
            assert answer.status == 486
            assert b.stats["connections_opened"] == 0
        finally:
            await a.close()
            await b.close()
    run(main)


def test_tcp_response_reopens_connection_to_sent_by_when_closed() -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair("tcp", V4)
        try:
            await a.send(make_request("tcp", hostport(*a_addr)), Destination("tcp", V4, b_addr[1]))
            got, flow = await b_in.get()
            for conn in a.connections:
                await conn.close()
            for _ in range(100):
                if not b.connections:
                    break
                await asyncio.sleep(0.01)
            assert not b.connections
            b.send_response(Response.for_request(got, 200), flow)
            answer, answer_flow = await a_in.get()
            assert answer.status == 200
            assert answer_flow.local == a_addr  # arrived on A's listening port
            assert b.stats["connections_opened"] == 1
        finally:
            await a.close()
            await b.close()
    run(main)


def test_accepted_connection_reused_by_alias_and_by_remote_address() -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair("tcp", V4)
        try:
            flow = await a.send(make_request("tcp", hostport(*a_addr), via_params=";alias"),
                                Destination("tcp", V4, b_addr[1]))
            got, b_flow = await b_in.get()
            # B sends a new request to A's sent-by: the aliased connection is used.
            await b.send(make_request("tcp", hostport(*b_addr)), Destination("tcp", V4, a_addr[1]))
            back, back_flow = await a_in.get()
            assert isinstance(back, Request) and back_flow.conn_id == flow.conn_id
            # And to the remote address of the accepted connection.
            await b.send(make_request("tcp", hostport(*b_addr)), b_flow.destination)
            back, back_flow = await a_in.get()
            assert back_flow.conn_id == flow.conn_id
            assert b.stats["connections_opened"] == 0
            assert a.stats["connections_accepted"] == 0
        finally:
            await a.close()
            await b.close()
    run(main)


def test_no_alias_opens_a_new_connection_to_listen_port() -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair("tcp", V4)
        try:
            await a.send(make_request("tcp", hostport(*a_addr), via_params=""),
                         Destination("tcp", V4, b_addr[1]))
            await b_in.get()
            await b.send(make_request("tcp", hostport(*b_addr)), Destination("tcp", V4, a_addr[1]))
            _, back_flow = await a_in.get()
            assert back_flow.local == a_addr
            assert b.stats["connections_opened"] == 1
        finally:
            await a.close()
            await b.close()
    run(main)


def test_two_nodes_connecting_to_each_other_at_once_keep_their_listen_ports() -> None:
    """With reuse_port, two nodes have one 4-tuple between them. When both open
    it at the same moment one connect finds it taken (EADDRNOTAVAIL): that side
    must use the peer's connection, never go out from another port, which the
    peer's trust guard would refuse (403, sip.trust)."""
    async def main() -> None:
        a_in, b_in = Inbox(), Inbox()
        a, b = TransportLayer(a_in), TransportLayer(b_in)
        a_addr = await a.listen("tcp", V4, 0, reuse_port=True)
        b_addr = await b.listen("tcp", V4, 0, reuse_port=True)
        try:
            for _round in range(3):
                await asyncio.gather(
                    a.send(make_request("tcp", hostport(*a_addr)), Destination("tcp", *b_addr)),
                    b.send(make_request("tcp", hostport(*b_addr)), Destination("tcp", *a_addr)))
                (_, at_a), (_, at_b) = await a_in.get(), await b_in.get()
                assert at_a.remote == b_addr and at_b.remote == a_addr
                for conn in a.connections + b.connections:
                    assert {conn.local, conn.remote} == {a_addr, b_addr}
                    await conn.close()
        finally:
            await a.close()
            await b.close()
    run(main)


def test_concurrent_sends_share_one_connection() -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair("tcp", V4)
        try:
            dest = Destination("tcp", V4, b_addr[1])
            flows = await asyncio.gather(*(a.send(make_request("tcp", hostport(*a_addr)), dest)
                                           for _ in range(5)))
            assert len({f.conn_id for f in flows}) == 1
            for _ in range(5):
                await b_in.get()
            assert a.stats["connections_opened"] == 1
        finally:
            await a.close()
            await b.close()
    run(main)


def test_large_request_over_tcp() -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair("tcp", V4)
        try:
            body = bytes(range(256)) * 800  # 204800 bytes
            request = make_request("tcp", hostport(*a_addr), body=body)
            await a.send(request, Destination("tcp", V4, b_addr[1]))
            got, _ = await b_in.get(timeout=5)
            assert got.body == body and got.call_id == request.call_id
        finally:
            await a.close()
            await b.close()
    run(main)


def test_idle_connections_close() -> None:
    async def main() -> None:
        limits = Limits(idle_timeout=0.2)
        a, a_in, a_addr, b, b_in, b_addr = await pair("tcp", V4, limits=limits)
        try:
            flow = await a.send(make_request("tcp", hostport(*a_addr)),
                                Destination("tcp", V4, b_addr[1]))
            await b_in.get()
            assert a.connections and b.connections
            await asyncio.sleep(0.6)
            assert not a.connections and not b.connections
            # The next send opens a fresh connection.
            again = await a.send(make_request("tcp", hostport(*a_addr)),
                                 Destination("tcp", V4, b_addr[1]))
            assert again.conn_id != flow.conn_id
            await b_in.get()
        finally:
            await a.close()
            await b.close()
    run(main)


async def raw_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(V4, port)


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    message = parse(head)
    assert isinstance(message, Response)
    return message


def test_tcp_missing_content_length_answered_400_then_closed() -> None:
    async def main() -> None:
        tl = TransportLayer(Inbox())
        try:
            port = (await tl.listen("tcp", V4, 0))[1]
            reader, writer = await raw_stream(port)
            raw = BAD_MAX_FORWARDS.format(t="TCP", sent_by="127.0.0.1:5060").replace(
                "Max-Forwards: lots", "Max-Forwards: 70").replace("Content-Length: 0\r\n", "")
            writer.write(raw.encode())
            answer = await read_response(reader)
            assert answer.status == 400
            assert answer.reason == "Bad Request - missing Content-Length on stream transport"
            assert await reader.read() == b""  # then closed
            writer.close()
        finally:
            await tl.close()
    run(main)


def test_tcp_body_too_large_answered_413_then_closed() -> None:
    async def main() -> None:
        inbox = Inbox()
        tl = TransportLayer(inbox, limits=Limits(max_body_size=1000))
        try:
            port = (await tl.listen("tcp", V4, 0))[1]
            reader, writer = await raw_stream(port)
            raw = BAD_MAX_FORWARDS.format(t="TCP", sent_by="127.0.0.1:5060").replace(
                "Max-Forwards: lots", "Max-Forwards: 70").replace(
                "Content-Length: 0", "Content-Length: 5000")
            writer.write(raw.encode() + b"z" * 100)
            answer = await read_response(reader)
            assert answer.status == 413 and "5000" in answer.reason
            assert await reader.read() == b""
            assert await inbox.nothing(0.05)
            writer.close()
        finally:
            await tl.close()
    run(main)


def test_tcp_keepalive_ping_gets_pong_and_bad_framed_request_keeps_connection() -> None:
    async def main() -> None:
        inbox = Inbox()
        tl = TransportLayer(inbox)
        try:
            port = (await tl.listen("tcp", V4, 0))[1]
            reader, writer = await raw_stream(port)
            writer.write(b"\r\n\r\n")
            async with asyncio.timeout(3):
                assert await reader.readexactly(2) == b"\r\n"
            writer.write(BAD_MAX_FORWARDS.format(t="TCP", sent_by="127.0.0.1:5060").encode())
            answer = await read_response(reader)
            assert answer.status == 400 and "Max-Forwards" in answer.reason
            good = make_request("tcp", "127.0.0.1:5060")
            writer.write(bytes(good))
            got, _ = await inbox.get()
            assert got.call_id == good.call_id
            writer.close()
        finally:
            await tl.close()
    run(main)


def test_garbage_stream_closes_only_its_connection() -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair("tcp", V4)
        try:
            dest = Destination("tcp", V4, b_addr[1])
            await a.send(make_request("tcp", hostport(*a_addr)), dest)
            await b_in.get()
            reader, writer = await raw_stream(b_addr[1])
            writer.write(b"\x16\x03\x01 not sip at all \xff\x00\r\n\r\nmore junk")
            async with asyncio.timeout(3):
                assert await reader.read() == b""
            writer.close()
            # Oversized header section: also closed, without an answer.
            reader2, writer2 = await raw_stream(b_addr[1])
            writer2.write(b"MESSAGE sip:x SIP/2.0\r\nX: " + b"a" * (70 * 1024))
            async with asyncio.timeout(3):
                assert await reader2.read() == b""
            writer2.close()
            assert b.stats["framing_errors"] == 2
            # A's connection is still up and working.
            request = make_request("tcp", hostport(*a_addr))
            flow = await a.send(request, dest)
            got, _ = await b_in.get()
            assert got.call_id == request.call_id
            assert a.stats["connections_opened"] == 1 and flow.conn_id in {
                c.conn_id for c in a.connections}
        finally:
            await a.close()
            await b.close()
    run(main)


def test_send_response_failure_reported_not_raised() -> None:
    async def main() -> None:
        errors: list[tuple[Exception, Message, Destination | None]] = []
        tl = TransportLayer(Inbox(), on_error=lambda e, m, d: errors.append((e, m, d)),
                            limits=Limits(connect_timeout=2.0))
        try:
            await tl.listen("tcp", V4, 0)
            probe = socket.socket()
            probe.bind((V4, 0))
            dead_port = probe.getsockname()[1]
            probe.close()  # nobody listens there now
            response = Response.for_request(
                make_request("tcp", f"127.0.0.1:{dead_port}"), 200)
            tl.send_response(response, None)
            for _ in range(200):
                if errors:
                    break
                await asyncio.sleep(0.01)
            assert errors and isinstance(errors[0][0], OSError)
            assert errors[0][2] == Destination("tcp", V4, dead_port)
            assert tl.stats["send_errors"] == 1
        finally:
            await tl.close()
    run(main)


def test_ensure_self_signed_reuses_files(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path, ["localhost", V4])
    first = cert.read_bytes()
    assert ensure_self_signed(tmp_path, ["localhost"]) == (cert, key)
    assert cert.read_bytes() == first
    ensure_self_signed(tmp_path, ["sip.example.net"])  # not covered: regenerated
    assert cert.read_bytes() != first
    assert (key.stat().st_mode & 0o077) == 0


def test_via_fixup_keeps_other_vias() -> None:
    from imsbox.sip.transport import add_received
    request = make_request("udp", "host.example:5070", via_params=";rport;foo=bar")
    request.add_header("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKlower")
    add_received(request, ("203.0.113.5", 40000))
    top, lower = request.via
    assert top.received == "203.0.113.5" and top.rport == 40000
    assert [n for n, _ in top.params] == ["branch", "rport", "foo", "received"]
    assert lower.branch == "z9hG4bKlower" and lower.received is None
    assert isinstance(Via.parse(request.headers.get_all("Via")[0]), Via)


def test_many_large_concurrent_sends_arrive_whole() -> None:
    async def main() -> None:
        a, a_in, a_addr, b, b_in, b_addr = await pair("tcp", V4)
        try:
            dest = Destination("tcp", V4, b_addr[1])
            requests = [make_request("tcp", hostport(*a_addr), body=bytes([i]) * 100_000)
                        for i in range(20)]
            await asyncio.gather(*(a.send(r, dest) for r in requests))
            got = [(await b_in.get(timeout=5))[0] for _ in requests]
            assert {m.call_id: m.body for m in got} == {r.call_id: r.body for r in requests}
            assert a.stats["connections_opened"] == 1
        finally:
            await a.close()
            await b.close()
    run(main)
