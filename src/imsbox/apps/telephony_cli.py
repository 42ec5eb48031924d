"""``imsbox service`` and ``imsbox call-control``: the telephony AS from the command line.

``service set|show|unset`` work on the store of a data dir (like ``imsbox
user``) whether or not ``imsbox serve`` runs; the AS reads the settings on
every call, so a change takes effect on the next one. ``call-control dial``
asks the running telephony AS (its control socket in the data dir) to make a
click-to-dial call and prints its progress.

Exit status: 0 done (``dial``: connected), 1 refused by the store or the
network (no such subscriber, busy, no answer), 2 bad input (a malformed
URI, an unknown key), 3 no telephony AS running for that data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

from ..config import Config, ConfigError, load_config
from ..store import StoreError, open_store
from .telephony import CONTROL_SOCKET
from .telephony_services import KEYS, ServiceDataError, describe, validate

__all__ = ["add_subcommands", "call_control_dial", "service_command"]

EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_RUNNING = 1, 2, 3


def add_subcommands(subparsers: Any) -> None:
    """Register ``service`` and ``call-control`` on an argparse subparsers object."""
    service = subparsers.add_parser("service", help="a subscriber's telephony services")
    sub = service.add_subparsers(dest="service_command", required=True)
    put = _common(sub.add_parser("set", help="set one service (replaces its values)"))
    put.add_argument("name", metavar="NAME")
    put.add_argument("key", metavar="KEY", help=", ".join(KEYS))
    put.add_argument("values", metavar="VALUE", nargs="+")
    put.add_argument("--after", type=float, default=None, metavar="S",
                     help="seconds of ringing (forward-no-answer, find-me)")
    show = _common(sub.add_parser("show", help="print a subscriber's services"))
    show.add_argument("name", metavar="NAME")
    unset = _common(sub.add_parser("unset", help="remove one service"))
    unset.add_argument("name", metavar="NAME")
    unset.add_argument("key", metavar="KEY")
    service.set_defaults(run=_run_service)

    control = subparsers.add_parser("call-control", help="third-party call control")
    csub = control.add_subparsers(dest="control_command", required=True)
    dial = _common(csub.add_parser("dial", help="click to dial: ring FROM, then connect "
                                                "FROM to TO (RFC 5359 2.18)"))
    dial.add_argument("caller", metavar="FROM")
    dial.add_argument("callee", metavar="TO")
    dial.add_argument("--json", action="store_true", help="print the progress as JSON lines")
    control.set_defaults(run=_run_dial)


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="data directory (default ./.imsbox)")
    parser.add_argument("--config", metavar="FILE", default=None, help="imsbox.toml")
    parser.add_argument("--domain", default=None, help="home domain (default ims.test)")
    parser.add_argument("--store", metavar="URL", default=None,
                        help="store URL instead of the data dir's SQLite file")
    return parser


async def _run_service(args: argparse.Namespace) -> int:
    return await service_command(args, sys.stdout, sys.stderr)


async def service_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``imsbox service set|show|unset``; the exit status."""
    try:
        config = load_config(args.config, domain=args.domain, data_dir=args.data)
        async with open_store(args.store or config.store_location) as store:
            owner = await _owner(store, config, args.name)
            if args.service_command == "set":
                values = validate(args.key, args.values, config.domain, args.after)
                await store.service_data.put(owner, args.key, values)
                print(f"{owner}: {describe(args.key, values)}", file=out)
            elif args.service_command == "unset":
                if args.key not in KEYS:
                    raise ServiceDataError(f"unknown setting {args.key!r}; expected one of "
                                           + ", ".join(KEYS))
                if not await store.service_data.remove(owner, args.key):
                    print(f"imsbox service: {owner} has no {args.key}", file=err)
                    return EXIT_REFUSED
                print(f"{owner}: {args.key} removed", file=out)
            else:
                settings = await store.service_data.settings(owner)
                print(f"{owner}" + ("" if settings else ": no services set"), file=out)
                for key in sorted(settings):
                    print(f"  {describe(key, settings[key])}", file=out)
        return 0
    except (ServiceDataError, ConfigError) as exc:
        print(f"imsbox service: {exc}", file=err)
        return EXIT_USAGE
    except (LookupError, StoreError) as exc:
        print(f"imsbox service: {exc.args[0] if exc.args else exc}", file=err)
        return EXIT_REFUSED


async def _owner(store: Any, config: Config, name: str) -> str:
    """The subscriber's default public identity (the AS's key); LookupError if none."""
    uri = validate("forward-unconditional", [name], config.domain)[0]
    identities = await store.subscribers.implicit_set(uri)
    if not identities:
        raise LookupError(f"no subscriber {uri} (imsbox user add NAME first)")
    owner: str = next((i.uri for i in identities if i.default), identities[0].uri)
    return owner


async def _run_dial(args: argparse.Namespace) -> int:
    return await call_control_dial(args, sys.stdout, sys.stderr)


async def call_control_dial(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``imsbox call-control dial FROM TO``: progress lines, then the exit status."""
    try:
        config = load_config(args.config, domain=args.domain, data_dir=args.data)
    except ConfigError as exc:
        print(f"imsbox call-control: {exc}", file=err)
        return EXIT_USAGE
    path = config.data_dir / CONTROL_SOCKET
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        print(f"imsbox call-control: no telephony AS running for {config.data_dir} "
              f"({path} missing); start imsbox serve with the same --data", file=err)
        return EXIT_NOT_RUNNING
    writer.write(json.dumps({"command": "dial", "from": args.caller,
                             "to": args.callee}).encode() + b"\n")
    await writer.drain()
    status = EXIT_REFUSED
    while line := await reader.readline():
        event = json.loads(line)
        if args.json:
            print(json.dumps(event), file=out, flush=True)
        else:
            print(_text(event), file=out if event["event"] != "failed" else err, flush=True)
        if event["event"] == "connected":
            status = 0
        elif event["event"] == "failed":
            status = EXIT_USAGE if event.get("status") == 400 else EXIT_REFUSED
    writer.close()
    return status


def _text(event: dict[str, Any]) -> str:
    kind = event["event"]
    if kind == "connected":
        return f"connected {event['from']} <-> {event['to']}"
    if kind == "failed":
        return f"imsbox call-control: failed: {event.get('reason')} ({event.get('status')})"
    return f"{kind} {event.get('party', '')}".rstrip()
