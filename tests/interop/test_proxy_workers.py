"""``imsbox sip-proxy --workers 2`` (the real CLI in a subprocess) on loopback.

* SIPp uac (one socket per call, ``-t un``, so the kernel's SO_REUSEPORT hash
  spreads the calls) -> the 2-worker proxy -> SIPp uas: every call completes
  and both workers carried traffic (each prints its counters when stopped);
* a CANCEL reaches the worker holding its INVITE's server transaction (same
  source 4-tuple): 200 for the CANCEL, 487 for the INVITE, over callers on
  16 ports so both workers see some; the callee sees INVITE and CANCEL from
  the same worker's own port, worker (caller's source port mod 2);
* a worker killed with SIGKILL in the middle of a SIPp run is restarted by
  the supervisor and the calls go on;
* TCP callers get their answers on their connection, forwarded over UDP from
  the own port of the worker that accepted it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imsbox.sip import Request, Response, new_tag, parse
from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint
from imsbox.sip.transport.base import Destination, Flow

from .sipp import ProxyProcess, Sipp, SippResult, imsbox_proxy_command

HOST = "127.0.0.1"
SERVING = re.compile(r"sip-proxy worker (\d+) \(pid (\d+)\) serving, sending from udp "
                     r"[\d.]+:(\d+)")
STOPPING = re.compile(r"sip-proxy worker (\d+) \(pid (\d+)\) stopping: messages_in=(\d+)")
PER_CALL = ["-t", "un", "-max_socket", "2000"]   # SIPp: a socket (a source port) per call


def worker_proxy(port: int, next_hop: int, log: Path) -> ProxyProcess:
    return ProxyProcess(imsbox_proxy_command(port, next_hop, workers=2), port, log)


def serving(proxy: ProxyProcess, count: int = 2, timeout: float = 15.0) -> list[tuple[int, ...]]:
    """(index, pid, own port) of each worker's "serving" line, once ``count`` are there."""
    deadline = time.monotonic() + timeout
    while True:
        found = [tuple(map(int, m)) for m in SERVING.findall(proxy.log_file.read_text())]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def traffic_at_stop(proxy: ProxyProcess) -> dict[int, int]:
    """Stop the proxy; messages each worker index received (its last life)."""
    proxy.stop()
    counts = {int(i): int(n) for i, _, n in STOPPING.findall(proxy.log_file.read_text())}
    return counts


def assert_all_calls(result: SippResult, calls: int, log: str) -> None:
    message = f"{result.describe()}\n--- proxy log ---\n{log[-3000:]}"
    assert result.returncode == 0, message
    assert result.successful == calls and result.failed == 0, message


@pytest.mark.load
@pytest.mark.timeout(120)
def test_sipp_calls_through_two_workers(free_port: Callable[[], int], tmp_path: Path) -> None:
    calls, proxy_port, uas_port, uac_port = 400, free_port(), free_port(), free_port()
    proxy = worker_proxy(proxy_port, uas_port, tmp_path / "proxy.log")
    with proxy, Sipp("uas", port=uas_port, workdir=tmp_path, calls=calls, timeout=60) as uas, \
            Sipp("uac", port=uac_port, remote=(HOST, proxy_port), workdir=tmp_path,
                 calls=calls, rate=100, limit=200, timeout=60, extra=PER_CALL) as uac:
        assert len(serving(proxy)) == 2, proxy.log_tail()
        uac_result = uac.wait()
        uas_result = uas.wait(20 if uac_result.ok else 5)
        assert proxy.alive(), proxy.log_tail()
        counts = traffic_at_stop(proxy)
    log = proxy.log_file.read_text()
    assert_all_calls(uac_result, calls, log)
    assert_all_calls(uas_result, calls, log)
    # each call is 5 messages in from the caller (INVITE ACK BYE) and callee
    # (180 200, 200): every one was read by one worker or the other
    assert sorted(counts) == [0, 1], log
    assert min(counts.values()) > 0, counts
    assert sum(counts.values()) >= calls * 6, counts


class RingUntilCancel:
    """A UAS: 180, then 487 when the CANCEL comes; records the Via sent-by port
    of every request it gets (which worker forwarded it)."""

    def __init__(self) -> None:
        self.ep = SipEndpoint(modules=[HandlerModule(self._handle)])
        self.ep.transport.trace = self._seen
        self.vias: dict[str, dict[str, int]] = {}   # Call-ID -> method -> sent-by port

    def _seen(self, direction: str, data: bytes, flow: Flow) -> None:
        message = parse(data)
        if direction == "in" and isinstance(message, Request):
            ports = self.vias.setdefault(message.call_id, {})
            ports[message.method] = message.top_via.port or 0

    async def _handle(self, ctx: ServerContext) -> None:
        if ctx.txn is not None and ctx.request.method == "OPTIONS":
            ctx.respond(Response.for_request(ctx.request, 200, to_tag=new_tag()))
        if ctx.txn is None or ctx.request.method != "INVITE":
            return   # an ACK
        tag = new_tag()
        ctx.respond(Response.for_request(ctx.request, 180, to_tag=tag))
        await ctx.cancelled.wait()
        ctx.respond(Response.for_request(ctx.request, 487, to_tag=tag))


def invite(uas_port: int, method: str = "INVITE") -> Request:
    return Request(method, f"sip:bob@{HOST}:{uas_port}", [
        ("From", f"<sip:alice@{HOST}>;tag={new_tag()}"), ("To", f"<sip:bob@{HOST}>"),
        ("Call-ID", f"{new_tag()}@{HOST}"), ("CSeq", f"1 {method}"),
        ("Contact", f"<sip:alice@{HOST}>")])


async def ring_and_cancel(proxy_port: int, uas_port: int) -> tuple[Request, int, int, int]:
    """One caller on its own port: INVITE, wait for the 180, CANCEL.  Returns
    the INVITE, the final statuses of the CANCEL and the INVITE, the caller's port."""
    caller = SipEndpoint()
    _, port = await caller.listen("udp", HOST, 0)
    try:
        ctx = caller.request(invite(uas_port), Destination("udp", HOST, proxy_port))
        async with asyncio.timeout(10):
            while (response := await ctx.next_response()) is not None:
                if response.status == 180:
                    break
            cancelled = await ctx.cancel()
            final = await ctx.final()
        return ctx.request, cancelled.status if cancelled else 0, final.status, port
    finally:
        await caller.close()


@pytest.mark.timeout(60)
def test_cancel_reaches_the_worker_of_its_invite(free_port: Callable[[], int],
                                                 tmp_path: Path) -> None:
    proxy_port, uas_port = free_port(), free_port()
    proxy = worker_proxy(proxy_port, uas_port, tmp_path / "proxy.log")

    async def scenario() -> None:
        uas = RingUntilCancel()
        await uas.ep.listen("udp", HOST, uas_port)
        try:
            outcomes = await asyncio.gather(*(ring_and_cancel(proxy_port, uas_port)
                                              for _ in range(16)))
        finally:
            await uas.ep.close()
        assert [(c, f) for _, c, f, _ in outcomes] == [(200, 487)] * 16, outcomes
        own_port = {index: port for index, _, port in serving(proxy)}
        assert sorted(own_port) == [0, 1] and proxy_port not in own_port.values()
        for request, _, _, caller_port in outcomes:
            vias = uas.vias[request.call_id]
            # worker (source port mod 2) forwarded the INVITE, and its CANCEL too
            assert vias["INVITE"] == vias["CANCEL"] == own_port[caller_port % 2], vias
        assert {port % 2 for *_, port in outcomes} == {0, 1}  # 16 callers: both (1 - 2^-15)

    with proxy:
        assert len(serving(proxy)) == 2, proxy.log_tail()
        asyncio.run(scenario())
        counts = traffic_at_stop(proxy)
    assert sorted(counts) == [0, 1] and min(counts.values()) > 0, proxy.log_tail()


@pytest.mark.load
@pytest.mark.timeout(120)
def test_killed_worker_is_restarted_and_calls_go_on(free_port: Callable[[], int],
                                                    tmp_path: Path) -> None:
    """SIGKILL worker 0 two seconds into 600 calls at 100 cps.  Its sockets
    stay open in the supervisor, so what reaches them while it is down waits
    for its successor, which forwards the responses of the dead one's
    transactions statelessly by their Via.  Only a call whose INVITE the dead
    worker had read and answered 100 but not forwarded yet can be lost."""
    calls, proxy_port, uas_port, uac_port = 600, free_port(), free_port(), free_port()
    proxy = worker_proxy(proxy_port, uas_port, tmp_path / "proxy.log")
    with proxy, Sipp("uas", port=uas_port, workdir=tmp_path, calls=calls, timeout=60) as uas, \
            Sipp("uac", port=uac_port, remote=(HOST, proxy_port), workdir=tmp_path,
                 calls=calls, rate=100, limit=200, timeout=60,
                 extra=[*PER_CALL, "-recv_timeout", "10000"]) as uac:
        first = {index: pid for index, pid, _ in serving(proxy)}
        assert len(first) == 2, proxy.log_tail()
        time.sleep(2)
        os.kill(first[0], signal.SIGKILL)
        again = serving(proxy, count=3)
        assert len(again) == 3 and again[2][0] == 0 and again[2][1] != first[0], \
            proxy.log_tail()
        uac_result = uac.wait()
        uas.wait(20 if uac_result.ok else 5)
        assert proxy.alive(), proxy.log_tail()
        counts = traffic_at_stop(proxy)
    log = proxy.log_file.read_text()
    assert f"worker 0 (pid {first[0]}) killed by signal 9" in log, log[-3000:]
    message = f"{uac_result.describe()}\n--- proxy log ---\n{log[-3000:]}"
    assert uac_result.successful >= calls - 5 and uac_result.failed <= 5, message
    assert min(counts.values()) > 0, counts   # the new worker 0 carried calls too


@pytest.mark.timeout(60)
def test_tcp_clients_are_served_by_the_worker_that_accepted_them(
        free_port: Callable[[], int], tmp_path: Path) -> None:
    """OPTIONS over TCP from 8 callers: the worker that accepted a connection
    forwards over UDP from its own port and sends the 200 back on it."""
    proxy_port, uas_port = free_port(), free_port()
    proxy = worker_proxy(proxy_port, uas_port, tmp_path / "proxy.log")

    async def ask(uas: RingUntilCancel) -> tuple[int, int]:
        caller = SipEndpoint()
        await caller.listen("tcp", HOST, 0)
        try:
            async with asyncio.timeout(10):
                ctx = caller.request(invite(uas_port, "OPTIONS"),
                                     Destination("tcp", HOST, proxy_port))
                final = await ctx.final()
            return final.status, uas.vias[ctx.request.call_id]["OPTIONS"]
        finally:
            await caller.close()

    async def scenario() -> None:
        uas = RingUntilCancel()
        await uas.ep.listen("udp", HOST, uas_port)
        try:
            answers = await asyncio.gather(*(ask(uas) for _ in range(8)))
        finally:
            await uas.ep.close()
        own_ports = {port for *_, port in serving(proxy)}
        assert [status for status, _ in answers] == [200] * 8, answers
        assert {port for _, port in answers} <= own_ports, (answers, own_ports)

    with proxy:
        assert len(serving(proxy)) == 2, proxy.log_tail()
        asyncio.run(scenario())
