"""``imsbox trace``: attach to the running network's trace feeds and show it.

    imsbox trace [--data DIR] [--config FILE] [--user U] [--call-id X]
                 [--conversation-id X] [--method M] [--node N] [--count N]
                 [--duration S] [--tui | --plain] [--pcap FILE] [--html FILE]

It attaches to every feed of the data directory (one per ``imsbox serve``
process). ``--tui`` (the default on a terminal) shows the live ladder until q;
otherwise it collects until ``--count`` messages, ``--duration`` seconds, the
network stops or SIGINT/SIGTERM. Then it writes the views asked for. Exit
status 0, or 1 when no ``imsbox serve`` runs on that data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_config
from ..runtime import stop_on_signals
from .feed import attach, feed_dir, find_feeds
from .html import render_html
from .ladder import Arrow, Filter, Group, Ladder
from .pcap import write_pcap
from .plain import render_plain
from .tui import run_tui

__all__ = ["add_subcommand", "run_trace"]


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    trace: argparse.ArgumentParser = subparsers.add_parser(
        "trace", help="show a running network's SIP and MSRP traffic as a ladder, "
                      "pcapng or HTML",
        description="Attach to the trace feeds of a running imsbox serve (same --data / "
                    "--config) and write the traffic as a text ladder, pcapng or HTML.")
    trace.add_argument("--data", metavar="DIR", default=None,
                       help="the data directory of the serve to attach to (default ./.imsbox)")
    trace.add_argument("--config", metavar="FILE", default=None,
                       help="the serve's imsbox.toml (for its data directory)")
    trace.add_argument("--user", action="append", default=[],
                       help="only dialogs with this user (name or URI) in the R-URI, From, "
                            "To or P-Asserted-Identity (repeatable)")
    trace.add_argument("--call-id", action="append", default=[], help="only this Call-ID")
    trace.add_argument("--conversation-id", action="append", default=[],
                       help="only this Conversation-ID / Contribution-ID")
    trace.add_argument("--method", action="append", default=[],
                       help="only dialogs with a request of this method (MESSAGE, INVITE...)")
    trace.add_argument("--node", action="append", default=[],
                       help="only messages traced by this node role (pcscf, scscf, as...)")
    trace.add_argument("--count", type=_positive_int, default=None,
                       help="stop after N messages (after filtering)")
    trace.add_argument("--duration", type=_positive_float, default=None,
                       help="stop after S seconds")
    trace.add_argument("--tui", action="store_true",
                       help="the live ladder in the terminal (the default on a terminal)")
    trace.add_argument("--plain", action="store_true",
                       help="print the ladder as text on stdout when the trace stops")
    trace.add_argument("--pcap", metavar="FILE", default=None, help="write pcapng to FILE")
    trace.add_argument("--html", metavar="FILE", default=None,
                       help="write a self-contained HTML page to FILE")
    trace.set_defaults(run=run_trace)
    return trace


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number above 0")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds above 0")
    return value


def _filter(args: argparse.Namespace) -> Filter:
    return Filter(tuple(args.user), tuple(args.call_id), tuple(args.conversation_id),
                  tuple(args.method), tuple(args.node))


def _fail(message: str) -> int:
    print(f"imsbox trace: error: {message}", file=sys.stderr, flush=True)
    return 1


async def run_trace(args: argparse.Namespace) -> int:
    if not (args.plain or args.pcap or args.html or args.tui):
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            return _fail("say what to show: --tui (on a terminal), --plain, --pcap FILE "
                         "and/or --html FILE")
        args.tui = True
    if args.tui and args.plain:
        return _fail("--tui and --plain both want the terminal; pick one")
    try:
        data_dir = load_config(args.config, data_dir=args.data).data_dir
    except ConfigError as exc:
        return _fail(str(exc))
    feeds = find_feeds(data_dir)
    attached, events = await attach(feeds)
    if not attached:
        where = feed_dir(data_dir)
        return _fail(f"no imsbox serve is running on {data_dir} (no live trace feed in "
                     f"{where}); start `imsbox serve --data {data_dir}` or pass the "
                     "--data/--config it runs with")
    print(f"imsbox trace: attached to {len(attached)} feed(s): "
          + ", ".join(p.name for p in attached), file=sys.stderr, flush=True)
    ladder = Ladder()
    keep = _filter(args)
    with stop_on_signals() as stop:  # held while writing: a late ^C must not lose the files
        if args.tui:
            await run_tui(ladder, events, keep, stop)
        else:
            await _collect(ladder, events, keep, args, stop)
        await events.aclose()
        groups = ladder.groups(keep)
        return _write(ladder, groups, args)


async def _collect(ladder: Ladder, events: Any, keep: Filter, args: argparse.Namespace,
                   stop: asyncio.Event) -> None:
    """Feed the ladder until a stop condition; --count counts kept messages."""
    deadline = None if args.duration is None else time.monotonic() + args.duration
    kept = _Kept(keep)

    async def pump() -> None:
        async for event in events:
            arrow = ladder.feed(event)
            if arrow is not None and args.count is not None and kept.add(arrow) >= args.count:
                return

    task = asyncio.create_task(pump())
    waiter = asyncio.create_task(stop.wait())
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    await asyncio.wait({task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, waiter):
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending


class _Kept:
    """How many arrows the filter keeps so far, group by group, without
    regrouping everything for each new arrow."""

    def __init__(self, keep: Filter) -> None:
        self.keep = keep
        self.count = 0
        self._groups: dict[str, Group] = {}
        self._matched: set[str] = set()

    def add(self, arrow: Arrow) -> int:
        group = self._groups.setdefault(arrow.group, Group(arrow.group))
        group.arrows.append(arrow)
        if not self.keep or arrow.group in self._matched:
            self.count += 1
        elif self.keep.matches(group):
            self._matched.add(arrow.group)
            self.count += len(group.arrows)
        return self.count


def _write(ladder: Ladder, groups: list[Group], args: argparse.Namespace) -> int:
    arrows = sorted((a for g in groups for a in g.arrows), key=lambda a: (a.t, a.n))
    if args.count is not None:
        keep = {id(a) for a in arrows[:args.count]}
        groups = [Group(g.key, [a for a in g.arrows if id(a) in keep]) for g in groups]
        groups = [g for g in groups if g.arrows]
        arrows = arrows[:args.count]
    try:
        if args.pcap:
            with open(args.pcap, "wb") as fh:
                write_pcap(arrows, fh)
        if args.html:
            Path(args.html).write_text(render_html(ladder, groups), encoding="utf-8")
    except OSError as exc:
        return _fail(f"cannot write: {exc}")
    if args.plain:
        render_plain(ladder, groups, sys.stdout)
        sys.stdout.flush()
    print(f"imsbox trace: {len(arrows)} messages ({ladder.records} records"
          f"{f', {ladder.dropped} dropped by the feed' if ladder.dropped else ''})",
          file=sys.stderr, flush=True)
    return 0
