"""``imsbox serve``: the IMS core (HSS, S-CSCF, I-CSCF, P-CSCF) and the messaging AS.

:class:`Network` builds the nodes from a :class:`~imsbox.config.Config`, each
on its own listen address, sharing one store and one HSS::

    async with Network(config, store) as net:
        for line in net.listening_lines():
            print(line)
        ...

``roles`` picks a subset (``imsbox serve --role scscf``): the nodes still reach
each other only over SIP at the addresses in the configuration. The HSS has
no network interface yet (no Diameter): it lives inside whichever process
runs the I-CSCF or S-CSCF, over the shared store.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import logging
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, TextIO

from ..config import Config, ConfigError, load_config
from ..runtime import stop_on_signals, tune_garbage_collector
from ..sip.transaction import TimerValues
from ..sip.transport.base import Flow
from ..sip.transport.tls import ensure_self_signed, server_context
from ..store import Store, StoreError, open_store
from .hss import Hss
from .icscf import Icscf
from .pcscf import Pcscf
from .provisioning import apply_config
from .scscf import Scscf

__all__ = [
    "NODE_ROLES", "ROLES", "Listener", "Network", "ServeError", "add_subcommand",
    "build_config", "make_tracer", "run_serve",
]

log = logging.getLogger(__name__)

NODE_ROLES = ("as", "scscf", "icscf", "pcscf")  # start order: downstream first
# Role -> its [node] in the configuration (the messaging AS is role "as").
NODE_OF_ROLE = {"as": "messaging_as"}
ROLES = ("pcscf", "icscf", "scscf", "hss", "as")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


class ServeError(Exception):
    """The network cannot start as asked; the message says what to fix."""


class Node(Protocol):
    """What the Network needs of an IMS node (a StatefulProxy subclass)."""

    endpoint: Any

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True, frozen=True)
class Listener:
    """One listening socket of one node."""

    node: str
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.node} listening on {self.transport} {host}:{self.port}"


Trace = Callable[[str, bytes, Flow], None]


def _hostport(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_tracer(node: str, out: TextIO | None = None) -> Trace:
    """A transport trace callback printing each message with its node and addresses.

    ``--- pcscf in udp 127.0.0.1:5060 <- 127.0.0.1:40312 (512 bytes)`` then the
    message as text; the stream is looked up at call time so tests can swap it.
    """

    def trace(direction: str, data: bytes, flow: Flow) -> None:
        arrow = "<-" if direction == "in" else "->"
        text = data.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
        stream = out or sys.stdout
        print(f"--- {node} {direction:<3} {flow.transport} {_hostport(flow.local)} {arrow} "
              f"{_hostport(flow.remote)} ({len(data)} bytes)\n{text}\n", file=stream,
              flush=True)

    return trace


@dataclass(slots=True)
class Network:
    """HSS + S-CSCF + I-CSCF + P-CSCF + messaging AS (role ``as``) from ``config``,
    as an async context manager.

    ``store`` None opens the configured store and closes it on exit; a given
    store belongs to the caller. ``trace`` True prints every SIP message to
    stdout, or pass a stream.
    """

    config: Config
    store: Store | None = None
    roles: Sequence[str] = NODE_ROLES
    timers: TimerValues | None = None
    trace: bool | TextIO = False
    hss: Hss | None = field(default=None, init=False)
    nodes: dict[str, Node] = field(default_factory=dict, init=False)
    _owns_store: bool = field(default=False, init=False)

    async def __aenter__(self) -> Network:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        roles = _check_roles(self.roles)
        try:
            await self._open_store(hss={"icscf", "scscf"} & set(roles) != set())
            for role in NODE_ROLES:
                if role in roles:
                    await self._start_node(role)
        except BaseException:
            await self.close()
            raise
        log.info("imsbox network up: domain %s, nodes %s", self.config.domain,
                 ", ".join(self.nodes))

    async def _open_store(self, hss: bool = True) -> None:
        """The store every node uses (the P-CSCF keeps its registrations there);
        the HSS, iFCs and PSIs only where the I-CSCF or S-CSCF runs."""
        if self.store is None:
            try:
                store = open_store(self.config.store_location, self.config.cache_url or None)
            except StoreError as exc:
                raise ServeError(str(exc)) from None
            try:
                self.store = await store.open()
            except StoreError as exc:
                await store.close()
                raise ServeError(str(exc)) from None
            self._owns_store = True
        if not hss:
            return
        await apply_config(self.store, self.config)  # serve owns the iFCs and PSIs
        self.hss = Hss(self.store.subscribers, self.config.domain, (self.config.scscf.uri,))

    async def _start_node(self, role: str) -> None:
        node = self._build(role)
        self.nodes[role] = node  # registered first so close() cleans up a half start
        if self.trace:
            stream = self.trace if not isinstance(self.trace, bool) else None
            node.endpoint.transport.trace = make_tracer(role, stream)
        try:
            await node.start()
        except OSError as exc:
            raise ServeError(_listen_error(role, self.config, exc)) from None

    def _build(self, role: str) -> Node:
        if role == "pcscf":  # the only node without the HSS
            return Pcscf(self.config, timers=self.timers, ssl_context=self._tls_context(),
                         store=self.store)
        if role == "as":
            # apps build on ims: imported late
            from ..apps.messaging import MessagingAs, MessagingSettings
            assert self.store is not None
            settings = MessagingSettings(
                deferred_ttl=float(self.config.messaging.deferred_ttl),
                max_file_size=self.config.messaging.max_file_size or None)
            return MessagingAs(self.config, self.store, timers=self.timers, settings=settings)
        assert self.store is not None and self.hss is not None
        if role == "scscf":
            return Scscf(self.config, self.store, self.hss, timers=self.timers)
        return Icscf(self.config, self.hss, timers=self.timers)

    def _tls_context(self) -> Any:
        """Server context for the P-CSCF's TLS port; key and cert made on first start."""
        pcscf = self.config.pcscf
        if "tls" not in pcscf.transports or pcscf.tls_port is None:
            return None
        names = list(dict.fromkeys([*pcscf.hosts, "localhost"]))
        try:
            cert, key = ensure_self_signed(self.config.data_dir, names)
        except OSError as exc:
            raise ServeError(f"cannot write the TLS key and certificate into "
                             f"{self.config.data_dir}: {exc.strerror or exc}; "
                             "check --data") from None
        return server_context(cert, key)

    async def close(self) -> None:
        """Entry point first (no new traffic), then inwards; the store last."""
        for role in reversed(NODE_ROLES):
            node = self.nodes.pop(role, None)
            if node is not None:
                try:
                    await node.close()
                except Exception:  # one node's bug must not keep the others open
                    log.exception("closing %s failed", role)
        # asyncio closes UDP sockets on the next loop turn: let it, so that a
        # Network started right after this one can bind the same ports.
        await asyncio.sleep(0)
        if self._owns_store and self.store is not None:
            await self.store.close()
            self.store = None
            self._owns_store = False

    def listeners(self) -> list[Listener]:
        out = []
        for role in ("pcscf", "icscf", "scscf", "as"):
            node = self.nodes.get(role)
            if node is None:
                continue
            name = NODE_OF_ROLE.get(role, role)
            for dest in node.endpoint.transport.listen_addresses:
                out.append(Listener(name, dest.transport, dest.host, dest.port))
        return out

    def listening_lines(self) -> list[str]:
        return [str(listener) for listener in self.listeners()]


def _check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    roles = tuple(roles)
    if "hss" in roles:
        raise ServeError(
            "--role hss: the HSS has no network interface yet (no Diameter Cx); it runs "
            "in-process over the store inside the I-CSCF and S-CSCF. Run --role icscf "
            "and --role scscf against the same --data/--store instead")
    unknown = [r for r in roles if r not in NODE_ROLES]
    if unknown or not roles:
        raise ServeError(f"unknown role {unknown or roles!r}; use one of "
                         + ", ".join(ROLES))
    return roles


def _listen_error(role: str, config: Config, exc: OSError) -> str:
    role = NODE_OF_ROLE.get(role, role)
    node = config.nodes[role]
    ports = ", ".join(str(p) for p in (node.port, node.tls_port) if p is not None)
    hosts = ", ".join(node.hosts)
    what = exc.strerror or str(exc)
    fix = ("--host/--port/--tls-port or [pcscf] in imsbox.toml" if role == "pcscf"
           else f"[{role}] host/port in imsbox.toml (--config)")
    return f"{role}: cannot listen on {hosts} port {ports}: {what}; change {fix}"


# -- command line ---------------------------------------------------------------------------

def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number 1-65535")
    return int(text)


def _host(text: str) -> str:
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(bare):
        raise argparse.ArgumentTypeError(f"{text!r}: expected an IP address such as "
                                         "127.0.0.1 or ::1, or a host name")
    return bare


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on an argparse subparsers object."""
    serve = subparsers.add_parser(
        "serve", help="run the IMS core (P-CSCF, I-CSCF, S-CSCF, HSS) and the messaging AS",
        description="Run the IMS network until SIGINT/SIGTERM.")
    serve.add_argument("--data", metavar="DIR", default=None,
                       help="data directory: SQLite store, TLS key (default ./.imsbox)")
    serve.add_argument("--domain", default=None, help="home domain (default ims.test)")
    serve.add_argument("--config", metavar="FILE", default=None,
                       help="imsbox.toml with the nodes' addresses")
    serve.add_argument("--host", type=_host, action="append", default=None,
                       help="P-CSCF listen address (repeatable; IPv6 such as ::1 ok)")
    serve.add_argument("--port", type=_port, default=None,
                       help="P-CSCF UDP and TCP port (default 5060)")
    serve.add_argument("--tls-port", type=_port, default=None,
                       help="P-CSCF TLS port (default 5061)")
    serve.add_argument("--store", metavar="URL", default=None,
                       help="store URL instead of the data dir's SQLite file")
    serve.add_argument("--cache", metavar="URL", default=None,
                       help="redis:// cache for a shared PostgreSQL store")
    serve.add_argument("--role", choices=ROLES, default=None,
                       help="run one network function alone")
    serve.add_argument("--trace", action="store_true",
                       help="print every SIP message in and out with addresses")
    serve.set_defaults(run=run_serve)
    return serve


def build_config(args: argparse.Namespace) -> Config:
    """The Config from imsbox.toml plus the command-line overrides."""
    config = load_config(args.config, domain=args.domain, data_dir=args.data)
    changes: dict[str, Any] = {}
    if args.host:
        changes["hosts"] = tuple(dict.fromkeys(args.host))
    if args.port is not None:
        changes["port"] = args.port
    if args.tls_port is not None:
        changes["tls_port"] = args.tls_port
    if changes:
        config = config.with_node("pcscf", **changes)
    pcscf = config.pcscf
    if pcscf.tls_port == pcscf.port and "tls" in pcscf.transports:
        raise ServeError(f"--tls-port {pcscf.tls_port} is the same as --port: TCP and "
                         "TLS cannot share a port; pick another")
    if args.store is not None:
        config = dataclasses.replace(config, store_url=args.store)
    if args.cache is not None:
        config = dataclasses.replace(config, cache_url=args.cache)
    _check_backends(config)
    return config


def _check_backends(config: Config) -> None:
    """Scale-out back ends are part of the contract but not built yet: say so up front."""
    url, cache = config.store_url, config.cache_url
    if url.startswith(("postgresql://", "postgres://")) or cache:
        given = " and ".join(x for x in (url, cache) if x)
        raise ServeError(f"{given}: the PostgreSQL/Redis back ends are not available yet; "
                         "leave out --store/--cache (and [store] in imsbox.toml) to use "
                         "the embedded SQLite store in --data")


async def run_serve(args: argparse.Namespace) -> int:
    """``imsbox serve``: exit 0 after a clean SIGINT/SIGTERM shutdown, 2 on bad input."""
    with stop_on_signals() as stop:  # before the first line: a quick ^C is clean too
        try:
            config = build_config(args)
            roles = (args.role,) if args.role else NODE_ROLES
            network = Network(config, roles=roles, trace=args.trace)
            await network.start()
        except (ServeError, ConfigError, StoreError) as exc:
            print(f"imsbox serve: error: {exc}", file=sys.stderr, flush=True)
            return 2
        try:
            for line in network.listening_lines():
                print(line, flush=True)
            tune_garbage_collector()
            await stop.wait()
            log.info("shutting down")
        finally:
            await network.close()
    log.info("stopped")
    return 0
