"""Bounded memory, overload control and connection limits (issue 9), over loopback.

Header-count, header-length and size limits with their answers (400, 413,
513), RFC 4475 request lines that cannot be parsed (400, then the TCP
connection closes), a trickling connection cut by the message deadline,
connection caps, idle and trickling MSRP connections, transactions that drop
their request after the final response, and floods answered with 503 +
Retry-After while in-dialog requests still get through.
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import socket
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from imsbox.config import LimitsConfig
from imsbox.serve import Network
from imsbox.msrp import MsrpEndpoint
from imsbox.sip import Response, parse
from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint
from imsbox.sip.overload import OverloadPolicy
from imsbox.sip.transport import Limits
from imsbox.testing import FAST_TIMERS, write_loopback_config

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"


def run(factory: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await factory()
    return asyncio.run(bounded())


def answer_200(ctx: ServerContext) -> None:
    if ctx.txn is not None:
        ctx.respond(Response.for_request(ctx.request, 200, to_tag="srv"))


async def sip_server(limits: Limits | None = None,
                     overload: OverloadPolicy | None = None) -> tuple[SipEndpoint, int]:
    endpoint = SipEndpoint(limits=limits, overload=overload, modules=[HandlerModule(answer_200)])
    port = (await endpoint.listen("udp", HOST, 0))[1]
    await endpoint.listen("tcp", HOST, port)
    return endpoint, port


def raw_request(method: str = "OPTIONS", transport: str = "UDP", *, extra: str = "",
                body: bytes = b"", to_tag: str | None = None, call_id: str | None = None,
                request_line: str | None = None, cseq: int = 1) -> bytes:
    to = "<sip:bob@ims.test>" + (f";tag={to_tag}" if to_tag else "")
    head = (f"{request_line or f'{method} sip:bob@ims.test SIP/2.0'}\r\n"
            f"Via: SIP/2.0/{transport} {HOST}:5999;branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:alice@ims.test>;tag={secrets.token_hex(4)}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id or secrets.token_hex(8)}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"{extra}"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class UdpPeer:
    """A raw UDP socket on loopback that sends datagrams and collects answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.loop = asyncio.get_running_loop()

    def send(self, data: bytes, port: int) -> None:
        try:
            self.sock.sendto(data, (HOST, port))
        except BlockingIOError:
            pass  # a flood may fill the send buffer: that datagram is lost, as on a wire

    async def response(self, timeout: float = 5.0) -> Response:
        async with asyncio.timeout(timeout):
            data = await self.loop.sock_recv(self.sock, 70000)
        message = parse(data)
        assert isinstance(message, Response)
        return message

    async def ask(self, data: bytes, port: int) -> Response:
        self.send(data, port)
        return await self.response()

    def close(self) -> None:
        self.sock.close()


async def tcp_ask(port: int, data: bytes) -> tuple[Response, bool]:
    """Send over a fresh TCP connection: the answer, and whether the server then closed."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        try:
            async with asyncio.timeout(0.5):
                closed = await reader.read() == b""
        except TimeoutError:
            closed = False
        message = parse(head)
        assert isinstance(message, Response)
        return message, closed
    finally:
        writer.close()


# -- sizes and counts --------------------------------------------------------------------

def test_too_many_headers_answered_400_over_udp_and_tcp() -> None:
    async def main() -> None:
        endpoint, port = await sip_server(Limits(max_headers=40))
        peer = UdpPeer()
        try:
            many = "".join(f"X-H{i}: v\r\n" for i in range(60))
            answer = await peer.ask(raw_request(extra=many), port)
            assert answer.status == 400
            assert answer.reason == "Bad Request - too many headers (over 40)"
            ok = await peer.ask(raw_request(extra="".join(f"X-H{i}: v\r\n" for i in range(30))),
                                port)
            assert ok.status == 200
            answer, closed = await tcp_ask(port, raw_request(transport="TCP", extra=many))
            assert answer.status == 400 and "too many headers" in answer.reason
            assert not closed  # framed correctly: the connection stays usable
            assert len(endpoint.layer) == 1  # only the good request made a transaction
        finally:
            peer.close()
            await endpoint.close()
    run(main)


def test_default_header_count_limit_stops_a_5000_header_datagram() -> None:
    async def main() -> None:
        endpoint, port = await sip_server()
        peer = UdpPeer()
        try:
            tiny = "".join(f"X{i}: a\r\n" for i in range(5000))
            answer = await peer.ask(raw_request("MESSAGE", extra=tiny), port)
            assert answer.status == 400 and "too many headers (over 256)" in answer.reason
            assert len(answer.headers) < 10  # the answer copies only what 8.2.6 asks for
            # Nothing of a refused message outlives its answer, not even until a
            # garbage collection (a reference cycle would keep all 5,000 lines).
            gc.collect()
            gc.disable()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                for _ in range(50):
                    assert (await peer.ask(raw_request("MESSAGE", extra=tiny), port)).status \
                        == 400
                held = tracemalloc.get_traced_memory()[0] - base
            finally:
                tracemalloc.stop()
                gc.enable()
            assert held < 1_000_000, f"{held} bytes held after 50 refused 45 KB datagrams"
        finally:
            peer.close()
            await endpoint.close()
    run(main)


def test_long_header_line_answered_400() -> None:
    async def main() -> None:
        endpoint, port = await sip_server(Limits(max_header_length=1000))
        peer = UdpPeer()
        try:
            answer = await peer.ask(raw_request(extra="Subject: " + "s" * 1200 + "\r\n"), port)
            assert answer.status == 400
            assert answer.reason == "Bad Request - header 'Subject' longer than 1000 bytes"
        finally:
            peer.close()
            await endpoint.close()
    run(main)


def test_header_section_over_limit_answered_513_over_udp() -> None:
    async def main() -> None:
        endpoint, port = await sip_server(Limits(max_header_size=2048, max_header_length=8192))
        peer = UdpPeer()
        try:
            big = "".join(f"X-Pad{i}: {'p' * 100}\r\n" for i in range(30))
            answer = await peer.ask(raw_request(extra=big), port)
            assert answer.status == 513
            assert answer.reason == "Message Too Large - header section exceeds 2048 bytes"
        finally:
            peer.close()
            await endpoint.close()
    run(main)


def test_body_over_limit_answered_413_over_udp_and_tcp() -> None:
    async def main() -> None:
        endpoint, port = await sip_server(Limits(max_body_size=4096))
        peer = UdpPeer()
        try:
            body = b"b" * 5000
            answer = await peer.ask(raw_request("MESSAGE", body=body), port)
            assert answer.status == 413
            assert answer.reason == "Request Entity Too Large - body of 5000 bytes exceeds " \
                "limit of 4096"
            answer, closed = await tcp_ask(port, raw_request("MESSAGE", "TCP", body=body))
            assert answer.status == 413 and closed
            assert (await peer.ask(raw_request("MESSAGE", body=b"b" * 4096), port)).status == 200
        finally:
            peer.close()
            await endpoint.close()
    run(main)


# -- RFC 4475 request lines that cannot be parsed ----------------------------------------

BAD_REQUEST_LINES = {
    "lwsruri": "INVITE sip:user@example.com; lr SIP/2.0",
    "lwsstart": "INVITE  sip:user@example.com  SIP/2.0",
    "trws": "OPTIONS sip:remote-target@example.com SIP/2.0  ",
}


@pytest.mark.parametrize("name", sorted(BAD_REQUEST_LINES))
def test_unparseable_request_line_400_then_tcp_connection_closed(name: str) -> None:
    line = BAD_REQUEST_LINES[name]
    method = line.split(" ")[0]

    async def main() -> None:
        endpoint, port = await sip_server()
        peer = UdpPeer()
        try:
            data = raw_request(method, "TCP", request_line=line)
            # A good request after the bad one on the same connection is never read.
            answer, closed = await tcp_ask(port, data + raw_request("OPTIONS", "TCP"))
            assert answer.status == 400
            assert answer.reason.startswith("Bad Request - malformed Request-Line")
            assert closed
            answer = await peer.ask(raw_request(method, request_line=line), port)
            assert answer.status == 400 and answer.cseq.method == method
            assert len(endpoint.layer) == 0
        finally:
            peer.close()
            await endpoint.close()
    run(main)


# -- connections ---------------------------------------------------------------------------

def test_trickling_connection_closed_by_message_deadline() -> None:
    async def main() -> None:
        endpoint, port = await sip_server(Limits(message_timeout=0.6, idle_timeout=5.0))
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            data = raw_request("MESSAGE", "TCP")
            start = time.monotonic()
            closed_at = None
            for byte in data[:-1]:  # one byte every 50 ms: the idle timer never fires
                try:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    async with asyncio.timeout(0.05):
                        if await reader.read(100) == b"":
                            closed_at = time.monotonic()
                            break
                except TimeoutError:
                    continue
                except ConnectionError:
                    closed_at = time.monotonic()
                    break
            writer.close()
            assert closed_at is not None, "the trickling connection stayed open"
            assert 0.5 < closed_at - start < 3.0
            assert not endpoint.transport.connections
            # A prompt message on a new connection is served as before.
            answer, _ = await tcp_ask(port, raw_request("OPTIONS", "TCP"))
            assert answer.status == 200
        finally:
            await endpoint.close()
    run(main)


async def closed_at_once(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(2):
            return await reader.read(1) == b""
    except ConnectionError:
        return True


async def connect_from(source: str, port: int) -> tuple[asyncio.StreamReader,
                                                        asyncio.StreamWriter]:
    return await asyncio.open_connection(HOST, port, local_addr=(source, 0))


def test_connection_caps_per_source_and_in_total() -> None:
    async def main() -> None:
        endpoint, port = await sip_server(Limits(max_connections=3,
                                                 max_connections_per_source=2))
        opened: list[asyncio.StreamWriter] = []
        try:
            for _ in range(2):
                opened.append((await connect_from("127.0.0.1", port))[1])
            reader, writer = await connect_from("127.0.0.1", port)
            opened.append(writer)
            assert await closed_at_once(reader)  # third from the same address
            r2, w2 = await connect_from("127.0.0.2", port)  # another source still may
            opened.append(w2)
            w2.write(raw_request("OPTIONS", "TCP"))
            async with asyncio.timeout(3):
                assert b"SIP/2.0 200" in await r2.readuntil(b"\r\n\r\n")
            r3, w3 = await connect_from("127.0.0.3", port)
            opened.append(w3)
            assert await closed_at_once(r3)  # fourth in total
            assert endpoint.transport.stats["connections_refused"] == 2
            opened[0].close()  # a place comes free
            await asyncio.sleep(0.2)
            r4, w4 = await connect_from("127.0.0.1", port)
            opened.append(w4)
            w4.write(raw_request("OPTIONS", "TCP"))
            async with asyncio.timeout(3):
                assert b"SIP/2.0 200" in await r4.readuntil(b"\r\n\r\n")
        finally:
            for writer in opened:
                writer.close()
            await endpoint.close()
    run(main)


def test_msrp_trickled_message_closed_by_deadline() -> None:
    async def main() -> None:
        async with MsrpEndpoint(idle_timeout=5.0, message_timeout=0.5) as server:
            reader, writer = await asyncio.open_connection(HOST, server.port)
            start = time.monotonic()
            closed = False
            for byte in b"MSRP a786hjs2 SEND\r\nTo-Path: msrp://127.0.0.1:1/x;tcp\r\n":
                writer.write(bytes([byte]))
                try:
                    async with asyncio.timeout(0.05):
                        if await reader.read(100) == b"":
                            closed = True
                            break
                except TimeoutError:
                    continue
                except ConnectionError:
                    closed = True
                    break
            writer.close()
            assert closed and 0.4 < time.monotonic() - start < 3.0
    run(main)


# -- the nodes take their limits from imsbox.toml -----------------------------------------

def test_nodes_apply_configured_limits_and_as_closes_idle_msrp(tmp_path: Path) -> None:
    _, config = write_loopback_config(tmp_path)
    config = replace(config, limits=LimitsConfig(
        sip=Limits(max_headers=30), msrp_idle_timeout=0.5))

    async def main() -> None:
        async with Network(config, timers=FAST_TIMERS) as net:
            peer = UdpPeer()
            try:
                many = "".join(f"X-H{i}: v\r\n" for i in range(40))
                for node in (config.pcscf, config.icscf, config.scscf, config.messaging_as):
                    answer = await peer.ask(raw_request(extra=many), node.port)
                    assert answer.status == 400, node
                    assert "too many headers (over 30)" in answer.reason
            finally:
                peer.close()
            msrp = net.nodes["as"].msrp  # type: ignore[attr-defined]
            reader, writer = await asyncio.open_connection(HOST, msrp.port)
            start = time.monotonic()
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # nothing sent: closed when idle
            assert time.monotonic() - start >= 0.4
            writer.close()
    run(main)


# -- transactions keep what they need only ---------------------------------------------------

def test_completed_transactions_do_not_keep_their_requests() -> None:
    n = 100

    async def main() -> None:
        endpoint, port = await sip_server()
        peer = UdpPeer()
        try:
            await peer.ask(raw_request(), port)  # warm up code paths and caches
            padding = "".join(f"X-Pad-{i}: {'p' * 80}\r\n" for i in range(200))
            body = os.urandom(20_000).hex().encode()  # 40 KB
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(n):
                answer = await peer.ask(raw_request("MESSAGE", extra=padding, body=body), port)
                assert answer.status == 200
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            assert len(endpoint.layer) == n + 1  # all still in Completed (Timer J)
            # each request was ~60 KB; what a completed transaction keeps is small
            assert held / n < 4_000, f"{held / n:.0f} bytes per completed transaction"
        finally:
            tracemalloc.stop()
            peer.close()
            await endpoint.close()
    run(main)


# -- overload -------------------------------------------------------------------------------

def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_udp_flood_gets_503_with_retry_after_and_in_dialog_gets_through() -> None:
    async def main() -> None:
        endpoint, port = await sip_server(
            overload=OverloadPolicy(max_transactions=300, retry_after=7))
        flooder, dialog = UdpPeer(), UdpPeer()
        statuses: dict[int, int] = {}
        retry_after: set[str | None] = set()

        async def collect() -> None:
            while True:
                answer = await flooder.response(timeout=30)
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
                if answer.status == 503:
                    retry_after.add(answer.headers.get("Retry-After"))

        reader = asyncio.create_task(collect())
        try:
            rss_before = rss_bytes()
            in_dialog: list[int] = []
            for burst in range(40):  # 4,000 datagrams in ~2 s
                for i in range(100):
                    method = "OPTIONS" if i % 2 else "MESSAGE"
                    flooder.send(raw_request(method, body=b"x" * 300), port)
                if burst % 4 == 3:  # a dialog keeps working meanwhile
                    call_id = "dialog-1"
                    method = "BYE" if burst == 39 else "MESSAGE"
                    answer = await dialog.ask(raw_request(method, to_tag="t1", call_id=call_id,
                                                          cseq=burst), port)
                    in_dialog.append(answer.status)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            assert statuses.get(503, 0) > 1000, statuses
            assert 250 <= statuses.get(200, 0) <= 400, statuses  # about max_transactions
            assert retry_after == {"7"}
            assert in_dialog == [200] * 10, in_dialog
            assert len(endpoint.layer) < 400
            assert rss_bytes() - rss_before < 40 * 1024 * 1024
        finally:
            reader.cancel()
            flooder.close()
            dialog.close()
            await endpoint.close()
    run(main)


def test_requests_that_waited_too_long_are_shed_new_work_first() -> None:
    async def main() -> None:
        endpoint, port = await sip_server(overload=OverloadPolicy(max_queue_delay=0.3))
        peer = UdpPeer()
        try:
            assert (await peer.ask(raw_request(), port)).status == 200
            peer.send(raw_request("OPTIONS"), port)
            peer.send(raw_request("MESSAGE", to_tag="t1"), port)
            peer.send(raw_request("BYE", to_tag="t1"), port)
            time.sleep(0.45)
            answers = {(a.cseq.method, a.status) for a in
                       [await peer.response() for _ in range(3)]}
            assert answers == {("OPTIONS", 503), ("MESSAGE", 200), ("BYE", 200)}
            assert endpoint.overload.stats["shed_new"] == 1
            assert (await peer.ask(raw_request(), port)).status == 200  # caught up
        finally:
            peer.close()
            await endpoint.close()
    run(main)


def test_retransmission_of_a_shed_invite_gets_the_same_503() -> None:
    """The queued first copy is shed; its retransmission, read at once, must not
    be taken: the upstream proxy already ended the call on the 503."""
    async def main() -> None:
        endpoint, port = await sip_server(overload=OverloadPolicy(max_queue_delay=0.3))
        peer = UdpPeer()
        try:
            invite = raw_request("INVITE")
            peer.send(invite, port)
            time.sleep(0.45)
            first = await peer.response()
            assert first.status == 503 and "queued" in first.reason
            peer.send(invite, port)  # Timer A fired upstream
            again = await peer.response()
            assert (again.status, again.reason, again.to.tag) == \
                (503, first.reason, first.to.tag)
            assert endpoint.overload.stats["shed_new"] == 1
            assert (await peer.ask(raw_request("INVITE"), port)).status == 200
        finally:
            peer.close()
            await endpoint.close()
    run(main)
