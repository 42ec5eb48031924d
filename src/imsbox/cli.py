"""The ``imsbox`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from . import __version__, serve
from .apps import telephony_cli
from .ims import provisioning
from .runtime import parse_hostport, stop_on_signals, tune_garbage_collector
from .sip.transport.base import TRANSPORTS
from .trace import cli as trace_cli
from .ue import cli as ue_cli

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
        status: int = asyncio.run(args.run(args))
        return status
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"imsbox: {exc}", file=sys.stderr)
        return 1


async def _until_signalled() -> None:
    with stop_on_signals() as stop:
        await stop.wait()


async def _run_sip_proxy(args: argparse.Namespace) -> int:
    from .sip.proxy import run_forwarding_proxy

    async with run_forwarding_proxy(
        listen=args.listen, next_hop=args.to, transport=args.transport,
        record_route=not args.no_record_route, trace=args.trace,
    ) as proxy:
        for line in proxy.listening_lines():
            print(line, flush=True)
        tune_garbage_collector()
        await _until_signalled()
    return 0


if __name__ == "__main__":
    sys.exit(main())
