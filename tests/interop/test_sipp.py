"""SIPp (3.6, the de-facto SIP load generator) against imsbox, on loopback.

* SIPp's built-in ``uac`` calls an imsbox UserAgent acting as UAS (180 + 200
  with an SDP answer, ACK, BYE);
* an imsbox UserAgent calls SIPp's built-in ``uas``;
* SIPp ``uac`` -> ``imsbox sip-proxy`` (the real CLI in a subprocess) -> SIPp
  ``uas``: 5,000 calls at 100 cps, then 5,000 calls at 100 cps with 10 %
  message loss on the uac (``-lost 10``: SIPp drops that share of what it
  sends and receives, so both SIPp and the proxy must retransmit; see
  test_sipp_through_imsbox_proxy_with_loss for the two SIPp quirks this
  meets);
* tshark decodes the UAS, UAC and a 100-call proxied run as SIP without a
  malformed frame.

Every sipp and proxy process runs in its own process group and is killed
when its ``with`` block ends; each sipp has ``-timeout``/``-timeout_error``
and a hard wait limit on top, so a hang fails the test instead of blocking.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from imsbox.sip import Response, parse
from imsbox.sip.endpoint import SipEndpoint
from imsbox.sip.transport.base import Flow
from imsbox.sip.ua.invite import InviteConfig, Reliability
from imsbox.sip.ua.useragent import Call, UserAgent

from .capture import Capture
from .sipp import ProxyProcess, Sipp, SippResult, aborted_calls, imsbox_proxy_command

HOST = "127.0.0.1"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
# no 100rel and no session timer: SIPp's default scenarios use neither
CONFIG = InviteConfig(reliable_provisionals=Reliability.NONE, session_timer=None)
OFFER = (b"v=0\r\no=imsbox 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
         b"t=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
ANSWER = OFFER.replace(b"40000", b"40002")


def sip_on(port: int) -> list[str]:
    """tshark decode-as for SIP on a non-5060 UDP port."""
    return [f"udp.port=={port},sip"]


def assert_clean_sip(cap: Capture, port: int, requests: dict[str, int],
                     responses: dict[str, int]) -> None:
    """No malformed frame, and at least the given counts of requests (by
    method) and responses (by "status CSeq-method") decoded as SIP."""
    decode = sip_on(port)
    assert cap.malformed(decode_as=decode) == []
    frames = cap.decode(decode_as=decode, display_filter="sip",
                        fields=["sip.Method", "sip.Status-Code", "sip.CSeq.method"])
    methods = Counter(m for f in frames for m in f.get("sip.Method", []))
    statuses = Counter(f"{s} {f['sip.CSeq.method'][0]}"
                       for f in frames for s in f.get("sip.Status-Code", []))
    for method, least in requests.items():
        assert methods[method] >= least, (method, methods)
    for status, least in responses.items():
        assert statuses[status] >= least, (status, statuses)


def assert_calls(result: SippResult, calls: int, *extra: str) -> None:
    message = "\n".join((result.describe(), *extra))
    assert result.returncode == 0, message
    assert result.successful == calls, message
    assert result.failed == 0, message


# -- a. SIPp uac -> imsbox UAS ------------------------------------------------
class Answerer:
    """The imsbox UAS: 180 (unreliable) then 200 with ANSWER for every call."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __call__(self, call: Call) -> None:
        self.calls.append(call)
        call.ring(180, reliable=False)
        call.accept(ANSWER)


async def run_uas(port: int, sipp_port: int, workdir: Path, calls: int,
                  rate: int) -> tuple[SippResult, Answerer]:
    endpoint = SipEndpoint()
    await endpoint.listen("udp", HOST, port)
    answerer = Answerer()
    UserAgent(endpoint, f"<sip:uas@{HOST}>", f"sip:uas@{HOST}:{port}", config=CONFIG,
              on_call=answerer)
    try:
        with Sipp("uac", port=sipp_port, remote=(HOST, port), workdir=workdir, calls=calls,
                  rate=rate, limit=100, timeout=60) as uac:
            result = await asyncio.to_thread(uac.wait)
        ended = [c.terminated for c in answerer.calls]
        if ended:
            await asyncio.wait(ended, timeout=5)
    finally:
        await endpoint.close()
    return result, answerer


@pytest.mark.timeout(120)
def test_sipp_uac_calls_imsbox_uas(free_port: Callable[[], int],
                                   capture: Callable[..., Capture], tmp_path: Path) -> None:
    port, sipp_port, calls = free_port(), free_port(), 200
    with capture(ports=[port], tcp=False) as cap:
        result, answerer = asyncio.run(run_uas(port, sipp_port, tmp_path, calls, rate=50))
    assert_calls(result, calls)
    assert len(answerer.calls) == calls
    for call in answerer.calls:
        assert call.established.is_set(), call
        assert call.terminated.done() and call.terminated.result().reason == "remote BYE", call
        assert call.remote_sdp is not None and b"m=audio" in call.remote_sdp
        assert call.local_sdp == ANSWER
    assert_clean_sip(cap, port, {"INVITE": calls, "ACK": calls, "BYE": calls},
                     {"180 INVITE": calls, "200 INVITE": calls, "200 BYE": calls})


# -- b. imsbox UAC -> SIPp uas ------------------------------------------------
class ResponseLog:
    """Every response the UAC's transport received, as "status METHOD" per Call-ID."""

    def __init__(self) -> None:
        self.by_call: dict[str, list[str]] = {}

    def __call__(self, direction: str, data: bytes, flow: Flow) -> None:
        if direction != "in":
            return
        message = parse(data)
        if isinstance(message, Response):
            self.by_call.setdefault(message.call_id, []).append(
                f"{message.status} {message.cseq.method}")


async def one_call(ua: UserAgent, target: str) -> Call:
    call = await ua.invite(target, OFFER)
    final = await asyncio.wait_for(call.wait_final(), 10)
    assert final is not None and final.status == 200, (call, final)
    await asyncio.wait_for(call.established.wait(), 5)
    await asyncio.wait_for(call.bye(), 10)
    return call


async def run_uac(port: int, sipp_port: int, workdir: Path, calls: int,
                  parallel: int) -> tuple[SippResult, list[Call], ResponseLog]:
    endpoint = SipEndpoint()
    await endpoint.listen("udp", HOST, port)
    log = ResponseLog()
    endpoint.transport.trace = log
    ua = UserAgent(endpoint, f"<sip:uac@{HOST}>", f"sip:uac@{HOST}:{port}", config=CONFIG)
    slots = asyncio.Semaphore(parallel)

    async def limited() -> Call:
        async with slots:
            return await one_call(ua, f"sip:service@{HOST}:{sipp_port}")
    try:
        with Sipp("uas", port=sipp_port, workdir=workdir, calls=calls, timeout=60) as uas:
            await asyncio.sleep(0.3)  # sipp binds its port
            assert uas.running(), uas.result(None).describe()
            done = await asyncio.wait_for(asyncio.gather(*(limited() for _ in range(calls))), 60)
            # the uas ends each call after a 4 s timewait, then exits
            result = await asyncio.to_thread(uas.wait, 30)
    finally:
        await endpoint.close()
    return result, done, log


@pytest.mark.timeout(120)
def test_imsbox_uac_calls_sipp_uas(free_port: Callable[[], int],
                                   capture: Callable[..., Capture], tmp_path: Path) -> None:
    port, sipp_port, calls = free_port(), free_port(), 50
    with capture(ports=[port], tcp=False) as cap:
        result, done, log = asyncio.run(run_uac(port, sipp_port, tmp_path, calls, parallel=10))
    assert_calls(result, calls)
    assert len(done) == calls and len({c.call_id for c in done}) == calls
    for call in done:
        assert call.ringing.is_set() and call.progress[0].status == 180, call
        assert call.terminated.result().reason == "local BYE", call
        assert call.remote_sdp is not None and b"m=audio" in call.remote_sdp
        seen = log.by_call[call.call_id]
        assert {"180 INVITE", "200 INVITE", "200 BYE"} <= set(seen), (call, seen)
    assert_clean_sip(cap, port, {"INVITE": calls, "ACK": calls, "BYE": calls},
                     {"180 INVITE": calls, "200 INVITE": calls, "200 BYE": calls})


# -- c/d. SIPp uac -> imsbox sip-proxy -> SIPp uas ----------------------------
def proxied_run(ports: tuple[int, int, int], workdir: Path, calls: int, rate: int,
                lost: int | None = None, uac: str | Path = "uac",
                uas: str | Path = "uas", timeout: int = 120) -> tuple[SippResult, SippResult, str]:
    """One run through the real CLI proxy on ports (proxy, uas, uac); asserts
    the uac side and that the proxy survived; returns both results and the
    proxy's log tail."""
    proxy_port, uas_port, uac_port = ports
    proxy = ProxyProcess(imsbox_proxy_command(proxy_port, uas_port), proxy_port,
                         workdir / f"proxy-{proxy_port}.log")
    with proxy, \
            Sipp(uas, port=uas_port, workdir=workdir, name=f"uas-{uas_port}", calls=calls,
                 timeout=timeout) as callee, \
            Sipp(uac, port=uac_port, remote=(HOST, proxy_port), workdir=workdir,
                 name=f"uac-{uac_port}",
                 calls=calls, rate=rate, limit=1000, lost=lost, timeout=timeout) as caller:
        uac_result = caller.wait()
        uas_result = callee.wait(30 if uac_result.returncode == 0 else 5)
        alive = proxy.alive()
        proxy_log = f"--- proxy (alive={alive}) log tail ---\n{proxy.log_tail()}"
    assert_calls(uac_result, calls, uas_result.describe(), proxy_log)
    assert alive, proxy_log
    return uac_result, uas_result, proxy_log


def three_ports(free_port: Callable[[], int]) -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


@pytest.mark.load
@pytest.mark.timeout(150)
def test_sipp_through_imsbox_proxy_5000_calls(free_port: Callable[[], int],
                                              tmp_path: Path) -> None:
    """100 cps, not more: the proxy's CPython cyclic GC stops it for 0.1-0.5 s
    (more as the ~32 s of live transactions grow with the rate, and on a
    loaded machine); a stall near T1 (0.5 s) makes it retransmit INVITEs whose
    200 is already queued in its socket. SIPp's built-in uas aborts a call on
    such a (legal) retransmission; scenarios/uas_tolerant.xml absorbs it."""
    uac, uas, proxy_log = proxied_run(three_ports(free_port), tmp_path, calls=5000, rate=100,
                                      uas=SCENARIOS / "uas_tolerant.xml")
    assert_calls(uas, 5000, uac.describe(), proxy_log)


@pytest.mark.load
@pytest.mark.timeout(150)
def test_sipp_through_imsbox_proxy_with_loss(free_port: Callable[[], int],
                                             tmp_path: Path) -> None:
    """10 % loss at the caller.  The caller runs scenarios/uac_txn.xml (the
    built-in uac, but only the BYE's own 200 ends a call: the built-in one
    takes a 200 (INVITE) retransmission for it when ACK and BYE were both
    lost), so each of its successes means the callee answered the BYE.

    The callee is SIPp's built-in uas, which aborts a call on an ACK that
    arrives after the BYE.  The caller sends one when it lost its ACK and
    its first BYE and re-ACKs the callee's 200 retransmission after its BYE
    retransmission: legal (the ACK of a 2xx is its own request) and forwarded
    as it came.  Those are the only callee failures allowed."""
    calls = 5000
    uac, uas, proxy_log = proxied_run(three_ports(free_port), tmp_path, calls=calls, rate=100,
                                      lost=10, uac=SCENARIOS / "uac_txn.xml")
    message = "\n".join((uas.describe(), uac.describe(), proxy_log))
    assert uac.count("Retransmissions") > 0, message  # the loss was real
    assert uas.count("IncomingCall") == calls and uas.returncode in (0, 1), message
    aborted = aborted_calls(uas.error_file)
    assert len(aborted) == uas.failed, (aborted, message)
    late_acks = [a for a in aborted if a[0] == "unexpected message" and a[3] == "ACK"
                 and a[2] == "pausing"]
    assert late_acks == aborted, (aborted, message)
    assert uas.successful + len(late_acks) == calls, message


@pytest.mark.timeout(120)
def test_proxied_sipp_calls_decode_cleanly(free_port: Callable[[], int],
                                           capture: Callable[..., Capture],
                                           tmp_path: Path) -> None:
    calls, ports = 100, three_ports(free_port)
    with capture(ports=ports[:1], tcp=False) as cap:
        _, uas, proxy_log = proxied_run(ports, tmp_path, calls=calls, rate=50)
    assert_calls(uas, calls, proxy_log)
    proxy_port = ports[0]
    # both legs (uac<->proxy and proxy<->uas) touch the proxy's port
    assert_clean_sip(cap, proxy_port, {"INVITE": 2 * calls, "ACK": 2 * calls, "BYE": 2 * calls},
                     {"180 INVITE": 2 * calls, "200 INVITE": 2 * calls, "200 BYE": 2 * calls,
                      "100 INVITE": calls})
