"""The ``imsbox`` command line."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__, serve
from .apps import telephony_cli
from .ims import provisioning
from .runtime import parse_hostport, stop_on_signals, tune_garbage_collector
from .sip.transport.base import TRANSPORTS
from .trace import cli as trace_cli
from .ue import cli as ue_cli

if TYPE_CHECKING:
    from .workers import WorkerSockets

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imsbox", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"imsbox {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    proxy = sub.add_parser(
        "sip-proxy", help="a generic transaction-stateful SIP proxy to one next hop")
    proxy.add_argument("--listen", type=parse_hostport, action="append", required=True,
                       metavar="HOST:PORT", help="address to listen on (repeatable)")
    proxy.add_argument("--to", type=parse_hostport, required=True, metavar="HOST:PORT",
                       help="next hop for every out-of-dialog request")
    proxy.add_argument("--transport", choices=TRANSPORTS[:2], default="udp",
                       help="transport towards the next hop (default udp); "
                            "the proxy listens on UDP and TCP")
    proxy.add_argument("--no-record-route", action="store_true",
                       help="do not stay in the path of dialogs")
    proxy.add_argument("--trace", action="store_true", help="print every SIP message")
    proxy.add_argument("--workers", type=_worker_count, default=1, metavar="N",
                       help="worker processes sharing the listen ports (SO_REUSEPORT, Linux), "
                            "each with a UDP port of its own for what it sends; a worker "
                            "that dies is restarted (default 1: one process)")
    proxy.set_defaults(run=_run_sip_proxy)

    serve.add_subcommand(sub)
    provisioning.add_subcommands(sub)
    telephony_cli.add_subcommands(sub)
    ue_cli.add_subcommand(sub)
    trace_cli.add_subcommand(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        outcome = args.run(args)   # a coroutine, or the status of a command with no loop
        status: int = asyncio.run(outcome) if inspect.iscoroutine(outcome) else outcome
        return status
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"imsbox: {exc}", file=sys.stderr)
        return 1


async def _until_signalled() -> None:
    with stop_on_signals() as stop:
        await stop.wait()


def _worker_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of workers 1-64")
    return int(text)


def _run_sip_proxy(args: argparse.Namespace) -> object:
    """One process (a coroutine for ``main``), or a supervisor forking workers:
    it must fork before any event loop runs, so it returns the exit status."""
    if args.workers == 1:
        return _sip_proxy(args, None)
    from .sip import proxy  # noqa: F401 - imported before the fork: a worker serves at once
    from .workers import Supervisor, bind_worker_sockets

    # Once bound, the port takes traffic (it waits in the kernel for the workers).
    sockets = bind_worker_sockets(args.listen, args.workers)
    for transport, sock in sockets[0].shared:
        host, port = sock.getsockname()[:2]
        print(f"sip-proxy listening on {transport} {host}:{port} "
              f"({args.workers} workers)", flush=True)
    supervisor = Supervisor(sockets, lambda ws: asyncio.run(_sip_proxy(args, ws)),
                            name="sip-proxy worker")
    return supervisor.run()


async def _sip_proxy(args: argparse.Namespace, worker: WorkerSockets | None) -> int:
    from .sip.proxy import run_forwarding_proxy

    adopted = [] if worker is None else \
        [(t, sock, False) for t, sock in worker.shared] + \
        [("udp", sock, True) for sock in worker.own]
    async with run_forwarding_proxy(
        listen=args.listen if worker is None else [], next_hop=args.to,
        transport=args.transport, record_route=not args.no_record_route, trace=args.trace,
        adopted=adopted, aliases=worker.siblings if worker else (),
    ) as proxy:
        if worker is None:
            for line in proxy.listening_lines():
                print(line, flush=True)
        else:
            own = ", ".join(f"{h}:{p}" for h, p in worker.own_addresses)
            print(f"sip-proxy worker {worker.index} (pid {os.getpid()}) serving, "
                  f"sending from udp {own}", flush=True)
        tune_garbage_collector()
        await _until_signalled()
        if worker is not None:  # what this worker carried (the tests check both did)
            # a second SIGTERM (to the whole group, then from the supervisor)
            # must not cut the shutdown short; a hang still gets SIGKILL
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stats = proxy.endpoint.transport.stats
            print(f"sip-proxy worker {worker.index} (pid {os.getpid()}) stopping: "
                  f"messages_in={stats['messages_in']} messages_out={stats['messages_out']}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
