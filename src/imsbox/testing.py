"""Loopback test kit: free ports, an imsbox.toml with every node on them, a simple UE.

Used by the flow tests and handy for scripts: everything runs over real
sockets on 127.0.0.1, nothing is mocked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config, load_config
from .sip.endpoint import ClientContext, ServerContext, SipEndpoint
from .sip.message import Request, Response, new_tag
from .sip.transaction import TimerValues
from .sip.transport.base import Destination
from .sip.ua.dialog import build_request
from .sip.ua.invite import InviteConfig
from .sip.ua.useragent import Call, UserAgent
from .ue.register import Registration, register

__all__ = ["FAST_TIMERS", "LoopbackPorts", "TestUe", "free_udp_block", "worker_port",
           "write_loopback_config"]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Short SIP timers so a lost message fails a test in seconds, not minutes.
FAST_TIMERS = TimerValues(t1=0.05, t2=0.4, t4=0.4, trying=0.05)
Header = tuple[str, str]


@dataclass(slots=True)
class LoopbackPorts:
    """Hands out distinct ports free for both TCP and UDP on every one of ``hosts``."""

    hosts: tuple[str, ...] = (HOST,)
    seen: set[int] = field(default_factory=set)

    def __call__(self) -> int:
        for _ in range(100):
            port = self._probe()
            if port is not None and port not in self.seen:
                self.seen.add(port)
                return port
        raise RuntimeError("no free port found")

    def _probe(self) -> int | None:
        with _bound(self.hosts[0], socket.SOCK_STREAM, worker_port()) as first:
            port: int = first.getsockname()[1]
            try:
                for host in self.hosts:
                    with _bound(host, socket.SOCK_DGRAM, port):
                        pass
                    if host != self.hosts[0]:
                        with _bound(host, socket.SOCK_STREAM, port):
                            pass
            except OSError:
                return None
            return port


# Parallel test workers (pytest-xdist: PYTEST_XDIST_WORKER=gwN) each take ports
# from their own block below the kernel's ephemeral range (32768 and up), so a
# port one worker probed and released is never the one another worker's kernel
# hands out for a bind to port 0 or an outgoing connection before it is used.
_WORKER_BLOCK = 5000
_WORKER_BASE = 12000
_next_in_block = 0


def worker_port() -> int:
    """A candidate port: the next one of this test worker's block, 0 (the kernel
    picks) outside parallel workers."""
    global _next_in_block
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return 0
    start = _WORKER_BASE + (int(worker[2:]) % 4) * _WORKER_BLOCK
    port = start + (os.getpid() * 7 + _next_in_block) % _WORKER_BLOCK
    _next_in_block += 1
    return port


def free_udp_block(span: int, host: str = HOST) -> int:
    """An even port p with p .. p+span-1 free for UDP on ``host`` (an RTP range
    for a test), from this worker's block like ``LoopbackPorts``: the block's
    ports are skipped by the later picks, so a node's port never lands in it."""
    global _next_in_block
    for _ in range(200):
        candidate = worker_port()
        if candidate % 2:
            continue
        _next_in_block += span - 1
        try:
            with _bound(host, socket.SOCK_DGRAM, candidate) as first:
                base: int = first.getsockname()[1] & ~1
            if base + span > 65535:
                continue
            for port in range(base, base + span):
                with _bound(host, socket.SOCK_DGRAM, port):
                    pass
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {span} free UDP ports in a row")


def _bound(host: str, kind: int, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def write_loopback_config(directory: Path, ports: LoopbackPorts | None = None, *,
                          domain: str = "ims.test", pcscf_hosts: Iterable[str] = (HOST,),
                          ) -> tuple[Path, Config]:
    """Write ``directory/imsbox.toml`` with every node on a free port; returns it loaded.

    The data dir is ``directory/data``.
    """
    pcscf_hosts = tuple(pcscf_hosts)
    ports = ports or LoopbackPorts(pcscf_hosts)
    hosts = ", ".join(f'"{h}"' for h in pcscf_hosts)
    lines = [f'domain = "{domain}"', f'data_dir = "{directory / "data"}"', "",
             "[pcscf]", f"host = [{hosts}]", f"port = {ports()}", f"tls_port = {ports()}"]
    for node in ("icscf", "scscf", "messaging_as", "conference_as", "telephony_as",
                 "media_server"):
        lines += ["", f"[{node}]", f'host = "{HOST}"', f"port = {ports()}"]
    path = directory / "imsbox.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, load_config(path)


class TestUe:
    """A UE on loopback UDP: registers through the P-CSCF, calls, sends MESSAGE.

    Incoming INVITEs land in ``ua.incoming`` (Calls); other incoming requests
    are answered 200 and kept in ``requests``.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, user: str, password: str, config: Config, *,
                 timers: TimerValues = FAST_TIMERS, host: str = HOST) -> None:
        self.user = user
        self.password = password
        self.domain = config.domain
        self.host = host  # the UE's address; the P-CSCF is reached on the same family
        pcscf = config.pcscf
        same_family = [h for h in pcscf.hosts if (":" in h) == (":" in host)]
        self.pcscf = Destination("udp", (same_family or [pcscf.host])[0], pcscf.port)
        self.endpoint = SipEndpoint(timers)
        self.requests: asyncio.Queue[Request] = asyncio.Queue()
        self.contact = ""  # sip:USER@HOST:PORT once started
        self.registration: Registration | None = None
        self.ua: UserAgent | None = None
        self._timers = timers

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    async def start(self) -> TestUe:
        host, port = await self.endpoint.listen("udp", self.host, 0)
        host = f"[{host}]" if ":" in host else host
        self.contact = f"sip:{self.user}@{host}:{port}"
        config = InviteConfig(t1=self._timers.t1, t2=self._timers.t2, session_timer=None)
        self.ua = UserAgent(self.endpoint, f"<{self.aor}>", self.contact, config=config,
                            on_request=self._on_request, route=self._route())
        return self

    async def close(self) -> None:
        if self.ua is not None:
            await self.ua.close()
        await self.endpoint.close()

    def _route(self) -> list[str]:
        if self.registration is not None and self.registration.ok:
            return self.registration.route()
        host = f"[{self.pcscf.host}]" if ":" in self.pcscf.host else self.pcscf.host
        return [f"<sip:{host}:{self.pcscf.port};lr>"]

    async def register(self, *, password: str | None = None, attempts: int = 2,
                       expires: int = 600) -> Registration:
        reg = await register(self.endpoint, self.user, password or self.password, self.domain,
                             self.pcscf, contact=self.contact, attempts=attempts,
                             expires=expires)
        if reg.ok:
            self.registration = reg
            assert self.ua is not None
            self.ua.route = self._route()
        return reg

    def _on_request(self, ctx: ServerContext) -> None:
        self.requests.put_nowait(ctx.request)
        if ctx.txn is not None:
            ctx.respond(Response.for_request(ctx.request, 200, to_tag=new_tag()))

    def message(self, target: str, text: str, headers: Iterable[Header] = ()) -> ClientContext:
        """A pager-mode MESSAGE (RFC 3428) along the registered route.

        A Max-Forwards among ``headers`` replaces the default 70.
        """
        extra = list(headers)
        request = build_request("MESSAGE", target, f"<{self.aor}>", f"<{target}>",
                                route=self._route(), body=text.encode(),
                                content_type="text/plain",
                                headers=[h for h in extra if h[0].lower() != "max-forwards"])
        for name, value in extra:
            if name.lower() == "max-forwards":
                request.set_header("Max-Forwards", value)
        return self.endpoint.request(request)

    async def call(self, target: str, sdp: bytes, headers: Iterable[Header] = ()) -> Call:
        assert self.ua is not None
        self.ua.route = self._route()
        return await self.ua.invite(target, sdp, headers)
