"""``imsbox serve``: the composition root that builds the network's nodes.

Above ims and apps: it knows every node role and builds each from a
:class:`NodeFactory` in a :class:`NodeRegistry` - the P-CSCF, I-CSCF and S-CSCF
(with the in-process HSS) of the core, the messaging AS (role ``as``), the
conference AS (role ``conference``) and the telephony AS (role ``telephony``).
:class:`Network` builds the nodes of a registry from a
:class:`~imsbox.config.Config`, each on its own listen address, sharing one
store and one HSS::

    async with Network(config, store) as net:
        for line in net.listening_lines():
            print(line)
        ...

A new application server plugs in with one factory, without an edit to the
core::

    registry = default_registry()
    registry.register(NodeFactory("voicemail", "voicemail_as", VoicemailAs.from_context))
    Network(config, registry=registry)

``roles`` picks a subset (``imsbox serve --role scscf``): the nodes still reach
each other only over SIP at the addresses in the configuration. The HSS has
no network interface yet (no Diameter): it lives inside whichever process
runs a node that uses it (I-CSCF, S-CSCF), over the shared store.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import logging
import os
import re
import ssl
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, TextIO

from .apps.conference import ConferenceAs, ConferenceSettings
from .apps.media_server import MediaServer
from .apps.messaging import MessagingAs, MessagingSettings
from .apps.telephony import TelephonyAs
from .config import Config, ConfigError, load_config
from .ims.hss import Hss
from .ims.icscf import Icscf
from .ims.pcscf import Pcscf
from .ims.provisioning import apply_config
from .ims.scscf import Scscf
from .runtime import parse_hostport, stop_on_signals, tune_garbage_collector
from .sip.transaction import TimerValues
from .sip.transport.base import Flow
from .sip.transport.tls import ensure_self_signed, server_context
from .store import Store, StoreError, open_store
from .console import ConsoleError, WebConsole
from .trace.feed import TraceFeed, feed_path, find_feeds

__all__ = [
    "HSS_ROLE", "Listener", "Network", "Node", "NodeContext", "NodeFactory", "NodeRegistry",
    "ServeError", "add_subcommand", "build_config", "default_registry", "make_tracer",
    "run_serve",
]

log = logging.getLogger(__name__)

HSS_ROLE = "hss"  # a --role name, refused: the HSS has no network interface yet
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


class ServeError(Exception):
    """The network cannot start as asked; the message says what to fix."""


class Node(Protocol):
    """What the Network needs of a node (a StatefulProxy subclass)."""

    endpoint: Any

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True, frozen=True)
class NodeContext:
    """What a factory builds its node from: the configuration, the shared store,
    the HSS (None unless the factory ``uses_hss``) and the transaction timers."""

    config: Config
    store: Store
    hss: Hss | None = None
    timers: TimerValues | None = None


@dataclass(slots=True, frozen=True)
class NodeFactory:
    """One node role of ``imsbox serve``.

    ``role`` is the ``--role`` name (and the trace's node name), ``section`` the
    node's [section] in imsbox.toml and its name in the listening lines;
    ``build`` makes the node (``start()`` / ``close()`` / ``endpoint``);
    ``uses_hss`` asks for the in-process HSS; ``listen_hint`` says what to change
    when the node cannot listen (default: its section's host/port).
    """

    role: str
    section: str
    build: Callable[[NodeContext], Node]
    uses_hss: bool = False
    listen_hint: str | None = None

    def hint(self) -> str:
        return self.listen_hint or f"[{self.section}] host/port in imsbox.toml (--config)"


class NodeRegistry:
    """Node factories by role, in entry order: the network's entry point first.

    Nodes start in reverse order (downstream first, so that a node's next hop
    listens before traffic comes) and close in entry order.
    """

    def __init__(self, factories: Iterable[NodeFactory] = ()) -> None:
        self._factories: dict[str, NodeFactory] = {}
        for factory in factories:
            self.register(factory)

    def register(self, factory: NodeFactory) -> None:
        if factory.role in self._factories or factory.role == HSS_ROLE:
            raise ValueError(f"role {factory.role!r} is taken")
        self._factories[factory.role] = factory

    def __getitem__(self, role: str) -> NodeFactory:
        return self._factories[role]

    def __contains__(self, role: object) -> bool:
        return role in self._factories

    def __iter__(self) -> Iterator[NodeFactory]:
        return iter(list(self._factories.values()))

    @property
    def roles(self) -> tuple[str, ...]:
        """The node roles, in entry order."""
        return tuple(self._factories)

    def role_of(self, name: str) -> str | None:
        """The role called ``name``: a role, or a node's section (its name in the
        listening lines and traces: ``messaging_as`` is ``as``); None if unknown."""
        if name in self._factories:
            return name
        return next((f.role for f in self._factories.values() if f.section == name), None)

    def names(self) -> tuple[str, ...]:
        """What ``--role`` takes: the role choices, then the sections that differ."""
        choices = self.role_choices()
        return choices + tuple(f.section for f in self._factories.values()
                               if f.section not in choices)

    def role_choices(self) -> tuple[str, ...]:
        """``--role`` choices: the node roles, with ``hss`` after the last node that
        carries the HSS (it is refused with a reason, not unknown)."""
        roles = list(self._factories)
        carriers = [i for i, f in enumerate(self._factories.values()) if f.uses_hss]
        roles.insert(carriers[-1] + 1 if carriers else len(roles), HSS_ROLE)
        return tuple(roles)


def _pcscf(ctx: NodeContext) -> Node:
    return Pcscf(ctx.config, timers=ctx.timers, ssl_context=_tls_context(ctx.config),
                 store=ctx.store)


def _icscf(ctx: NodeContext) -> Node:
    assert ctx.hss is not None
    return Icscf(ctx.config, ctx.hss, timers=ctx.timers)


def _scscf(ctx: NodeContext) -> Node:
    assert ctx.hss is not None
    return Scscf(ctx.config, ctx.store, ctx.hss, timers=ctx.timers)


def _messaging_as(ctx: NodeContext) -> Node:
    settings = MessagingSettings(
        deferred_ttl=float(ctx.config.messaging.deferred_ttl),
        max_file_size=ctx.config.messaging.max_file_size or None,
        max_stored_file_size=ctx.config.messaging.max_stored_file_size)
    return MessagingAs(ctx.config, ctx.store, timers=ctx.timers, settings=settings)


def _conference_as(ctx: NodeContext) -> Node:
    settings = ConferenceSettings(idle_timeout=float(ctx.config.conference.idle_timeout))
    return ConferenceAs(ctx.config, ctx.store, timers=ctx.timers, settings=settings)


def _telephony_as(ctx: NodeContext) -> Node:
    return TelephonyAs(ctx.config, ctx.store, timers=ctx.timers)


def _media_server(ctx: NodeContext) -> Node:
    # a bad moh_file: ConfigError; the store keeps the park orbits
    return MediaServer(ctx.config, timers=ctx.timers, store=ctx.store)


def default_registry() -> NodeRegistry:
    """The IMS core, the messaging, conference and telephony ASs and the media server
    (MRF), as ``imsbox serve`` runs them."""
    return NodeRegistry([
        NodeFactory("pcscf", "pcscf", _pcscf,
                    listen_hint="--host/--port/--tls-port or [pcscf] in imsbox.toml"),
        NodeFactory("icscf", "icscf", _icscf, uses_hss=True),
        NodeFactory("scscf", "scscf", _scscf, uses_hss=True),
        NodeFactory("as", "messaging_as", _messaging_as),
        NodeFactory("conference", "conference_as", _conference_as),
        NodeFactory("telephony", "telephony_as", _telephony_as),
        NodeFactory("media", "media_server", _media_server,
                    listen_hint="[media_server] host/port (and rtp_ports) in imsbox.toml"),
    ])


def _tls_context(config: Config) -> ssl.SSLContext | None:
    """Server context for the P-CSCF's TLS port; key and cert made on first start."""
    pcscf = config.pcscf
    if "tls" not in pcscf.transports or pcscf.tls_port is None:
        return None
    names = list(dict.fromkeys([*pcscf.hosts, "localhost"]))
    try:
        cert, key = ensure_self_signed(config.data_dir, names)
    except OSError as exc:
        raise ServeError(f"cannot write the TLS key and certificate into "
                         f"{config.data_dir}: {exc.strerror or exc}; "
                         "check --data") from None
    return server_context(cert, key)


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
    """The nodes of ``registry`` (default: HSS + S-CSCF + I-CSCF + P-CSCF +
    messaging AS) from ``config``, as an async context manager.

    ``roles`` None runs every node of the registry. ``store`` None opens the
    configured store and closes it on exit; a given store belongs to the caller.
    ``trace`` True prints every SIP message to stdout, or pass a stream.
    ``feed`` True opens the trace feed (``DATA/trace/ROLES-PID.sock``) that
    ``imsbox trace`` attaches to; it costs nothing while nobody is attached.
    ``web`` (host, port) starts the read-only web console (``imsbox.console``),
    ``web_password`` its login (required beyond loopback).
    """

    config: Config
    store: Store | None = None
    roles: Sequence[str] | None = None
    timers: TimerValues | None = None
    trace: bool | TextIO = False
    registry: NodeRegistry = field(default_factory=default_registry)
    feed: bool = False
    web: tuple[str, int] | None = None
    web_password: str | None = None
    trace_feed: TraceFeed | None = field(default=None, init=False)
    console: WebConsole | None = field(default=None, init=False)
    hss: Hss | None = field(default=None, init=False)
    nodes: dict[str, Node] = field(default_factory=dict, init=False)
    _owns_store: bool = field(default=False, init=False)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        factories = _chosen(self.registry, self.roles)
        try:
            await self._open_store(hss=any(f.uses_hss for f in factories))
            if self.feed:
                await self._open_feed(factories)
            for factory in reversed(factories):  # downstream first
                await self._start_node(factory)
            if self.web is not None:
                await self._start_console(*self.web)
        except BaseException:
            await self.close()
            raise
        log.info("imsbox network up: domain %s, nodes %s", self.config.domain,
                 ", ".join(self.nodes))

    async def _open_store(self, hss: bool = True) -> None:
        """The store every node uses (the P-CSCF keeps its registrations there);
        the HSS, iFCs and PSIs only where a node that uses the HSS runs."""
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
        self.hss = Hss(self.store.subscribers, self.config.domain, self.config.scscf.instances)

    async def _open_feed(self, factories: Sequence[NodeFactory]) -> None:
        """The trace feed of this process; a network without one still runs."""
        roles = [f.role for f in factories] if self.roles is not None else ["all"]
        path = feed_path(self.config.data_dir, roles)
        feed = TraceFeed(path)
        try:
            self.trace_feed = await feed.start()
        except OSError as exc:
            log.warning("no trace feed (imsbox trace cannot attach): %s", exc)

    async def _start_console(self, host: str, port: int) -> None:
        assert self.store is not None
        data_dir = self.config.data_dir
        try:
            console = WebConsole(self.store, lambda: find_feeds(data_dir), host, port,
                                 self.web_password)
            self.console = await console.start()
        except ConsoleError as exc:
            raise ServeError(str(exc)) from None
        except OSError as exc:
            raise ServeError(f"--web {host}:{port}: cannot listen: "
                             f"{exc.strerror or exc}; pick another --web address") from None

    async def _start_node(self, factory: NodeFactory) -> None:
        assert self.store is not None
        node = factory.build(NodeContext(self.config, self.store,
                                         self.hss if factory.uses_hss else None, self.timers))
        self.nodes[factory.role] = node  # registered first so close() cleans up a half start
        tracers: list[Trace] = []
        if self.trace:
            stream = self.trace if not isinstance(self.trace, bool) else None
            tracers.append(make_tracer(factory.section, stream))
        if self.trace_feed is not None:
            tracers.append(self.trace_feed.sip_tracer(factory.role))
        if tracers:
            node.endpoint.transport.trace = _chain(tracers)
        try:
            await node.start()
        except OSError as exc:
            raise ServeError(_listen_error(factory, self.config, exc)) from None
        if self.trace_feed is not None:
            self._feed_node(factory.role, node, self.trace_feed)

    def _feed_node(self, role: str, node: Node, feed: TraceFeed) -> None:
        """The node's addresses for the feed's hello, and its MSRP endpoint's hook."""
        listen = [(d.transport, d.host, d.port) for d in node.endpoint.transport.listen_addresses]
        msrp = getattr(node, "msrp", None)  # an AS's MSRP endpoint (apps: MsrpEndpoint)
        if msrp is not None and hasattr(msrp, "trace"):
            msrp.trace = feed.msrp_tracer(role)
            listen.append(("msrp", msrp.host, msrp.port))
        feed.add_node(role, listen)

    async def close(self) -> None:
        """Entry point first (no new traffic), then inwards; the store last."""
        if self.console is not None:
            await self.console.close()
            self.console = None
        for role in [*self.registry.roles, *self.nodes]:
            node = self.nodes.pop(role, None)
            if node is not None:
                try:
                    await node.close()
                except Exception:  # one node's bug must not keep the others open
                    log.exception("closing %s failed", role)
        # asyncio closes UDP sockets on the next loop turn: let it, so that a
        # Network started right after this one can bind the same ports.
        await asyncio.sleep(0)
        if self.trace_feed is not None:
            await self.trace_feed.close()
            self.trace_feed = None
        if self._owns_store and self.store is not None:
            await self.store.close()
            self.store = None
            self._owns_store = False

    def listeners(self) -> list[Listener]:
        out = []
        for factory in self.registry:
            node = self.nodes.get(factory.role)
            if node is None:
                continue
            for dest in node.endpoint.transport.listen_addresses:
                out.append(Listener(factory.section, dest.transport, dest.host, dest.port))
        return out

    def listening_lines(self) -> list[str]:
        lines = [str(listener) for listener in self.listeners()]
        if self.console is not None:
            lines.append(f"web console on {self.console.url}")
        return lines


def _chain(tracers: list[Trace]) -> Trace:
    if len(tracers) == 1:
        return tracers[0]

    def trace(direction: str, data: bytes, flow: Flow) -> None:
        for tracer in tracers:
            tracer(direction, data, flow)
    return trace


def _chosen(registry: NodeRegistry, roles: Iterable[str] | None) -> list[NodeFactory]:
    """The factories of ``roles`` (all when None), in the registry's order."""
    if roles is None:
        return list(registry)
    roles = tuple(roles)
    if HSS_ROLE in roles:
        carriers = " and ".join(f"--role {f.role}" for f in registry if f.uses_hss)
        raise ServeError(
            "--role hss: the HSS has no network interface yet (no Diameter Cx); it runs "
            "in-process over the store inside the I-CSCF and S-CSCF. Run "
            f"{carriers} against the same --data/--store instead")
    unknown = [r for r in roles if registry.role_of(r) is None]
    if unknown or not roles:
        raise ServeError(f"unknown role {unknown or roles!r}; use one of "
                         + ", ".join(registry.role_choices()))
    wanted = {registry.role_of(r) for r in roles}
    return [f for f in registry if f.role in wanted]


def _listen_error(factory: NodeFactory, config: Config, exc: OSError) -> str:
    node = config.nodes[factory.section]
    ports = ", ".join(str(p) for p in (node.port, node.tls_port) if p is not None)
    hosts = ", ".join(node.hosts)
    what = exc.strerror or str(exc)
    return (f"{factory.section}: cannot listen on {hosts} port {ports}: {what}; "
            f"change {factory.hint()}")


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


def _web_address(text: str) -> tuple[str, int]:
    return parse_hostport(text, 8080)


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on an argparse subparsers object."""
    serve: argparse.ArgumentParser = subparsers.add_parser(
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
                       help="store URL instead of the data dir's SQLite file: "
                            "postgresql://USER[:PW]@HOST[:PORT]/DB shared by every instance "
                            "(docs/scale-out.md)")
    serve.add_argument("--cache", metavar="URL", default=None,
                       help="redis://HOST:PORT/DB cache in front of a PostgreSQL store")
    serve.add_argument("--role", choices=default_registry().names(), default=None,
                       help="run one network function alone (a node's name in the listening "
                            "lines and traces works too: messaging_as = as)")
    serve.add_argument("--web", metavar="HOST:PORT", type=_web_address, default=None,
                       help="serve the read-only web console there (beyond loopback it "
                            "asks for user imsbox and $IMSBOX_WEB_PASSWORD)")
    serve.add_argument("--trace", action="store_true",
                       help="print every SIP message in and out with addresses "
                            "(imsbox trace attaches to a running serve without it)")
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
    """A Redis cache is shared state in front of a shared store: refuse it on a
    store that only this machine sees, before anything starts."""
    url, cache = config.store_url, config.cache_url
    if cache and not url.startswith(("postgresql://", "postgres://")):
        raise ServeError(f"--cache {cache}: a Redis cache goes with a shared PostgreSQL "
                         "store; add --store postgresql://... (or [store] url in "
                         "imsbox.toml), or leave out --cache for the embedded SQLite store")


async def run_serve(args: argparse.Namespace) -> int:
    """``imsbox serve``: exit 0 after a clean SIGINT/SIGTERM shutdown, 2 on bad input."""
    with stop_on_signals() as stop:  # before the first line: a quick ^C is clean too
        try:
            config = build_config(args)
            roles = (args.role,) if args.role else None
            network = Network(config, roles=roles, trace=args.trace, feed=True,
                              web=args.web,
                              web_password=os.environ.get("IMSBOX_WEB_PASSWORD") or None)
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
