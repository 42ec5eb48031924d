"""``imsbox ue``: an RCS client on the command line (the contract in PRODUCT.md).

    imsbox ue --user NAME --password P [--pcscf HOST:PORT] [--transport udp|tcp|tls]
              [--domain D] [--json] COMMAND

Commands: ``listen``, ``send TO TEXT``, ``chat TO``, ``send-file TO PATH``.
With ``--json`` every event is one JSON object per line on stdout (at least
"event", "from", "to"); otherwise one readable line. Diagnostics go to stderr.
Exit status: 0 success, 1 not delivered / refused / timed out, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..runtime import parse_hostport, stop_on_signals
from ..sip.transport.base import TRANSPORTS
from .client import (
    ChatEnded, ChatMessage, ChatStarted, Composing, FileOffer, FileProgress, FileReceived,
    MessageReceived, MessageStatus, Notification, RcsClient, RcsError, RcsEvent, Registered,
    SendError,
)

__all__ = ["add_subcommand", "run_ue"]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
BAR_WIDTH = 30


@dataclass(slots=True)
class Printer:
    """Writes events as JSON lines or readable text."""

    as_json: bool
    out: TextIO
    err: TextIO

    def event(self, event: RcsEvent) -> None:
        self.record(event.to_json())

    def record(self, data: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps(data, ensure_ascii=False), file=self.out, flush=True)
        else:
            print(_human(data), file=self.out, flush=True)

    def error(self, text: str) -> None:
        print(f"imsbox ue: {text}", file=self.err, flush=True)


def _human(data: dict[str, Any]) -> str:
    kind, sender, recipient = data["event"], data["from"], data["to"]
    text = {
        MessageReceived.EVENT: lambda: f"message from {sender}: {data['text']}",
        ChatMessage.EVENT: lambda: f"{sender}: {data['text']}",
        Composing.EVENT: lambda: f"{sender} is {'typing' if data['state'] == 'active' else 'idle'}",
        Notification.EVENT: lambda: f"message {data['message_id']} {data['status']} ({sender})",
        ChatStarted.EVENT: lambda: f"chat {data['direction']} {sender} -> {recipient}",
        ChatEnded.EVENT: lambda: f"chat with {sender} ended: {data['reason']}",
        FileOffer.EVENT: lambda: f"file offered by {sender}: {data['name']} ({data['size']} bytes)",
        FileReceived.EVENT: lambda: (f"file from {sender} saved to {data['path']} "
                                     f"sha256 {data['sha256']}"
                                     + ("" if data["ok"] else " HASH MISMATCH")),
        "call": lambda: f"call from {sender} ({', '.join(data['media'])}) declined",
        "registration": lambda: f"{sender} {data['state']} (expires {data['expires']})",
        "listening": lambda: f"registered as {sender} ({data['contact']}); ^C to stop",
        "sent": lambda: f"message to {recipient}: {data['status']}"
                        + (f" ({data['reason']})" if data.get("reason") else ""),
        "file_sent": lambda: (f"file {data['name']} to {recipient}: "
                              + ("confirmed" if data["ok"] else f"failed ({data['reason']})")),
    }.get(kind)
    return text() if text else json.dumps(data, ensure_ascii=False)


# -- argument parsing ---------------------------------------------------------------------

def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return value


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``ue`` on an argparse subparsers object."""
    ue: argparse.ArgumentParser = subparsers.add_parser(
        "ue", help="an RCS client: listen, send, chat, send-file",
        description="Register as NAME and send or receive RCS messages, chats and files.")
    ue.add_argument("--user", required=True, help="user name (identity sip:NAME@DOMAIN)")
    ue.add_argument("--password", required=True, help="the subscriber's password")
    ue.add_argument("--pcscf", type=parse_hostport, default=None, metavar="HOST:PORT",
                    help="P-CSCF address (default 127.0.0.1:5060, 127.0.0.1:5061 for tls)")
    ue.add_argument("--transport", choices=TRANSPORTS, default="udp",
                    help="transport to the P-CSCF (default udp)")
    ue.add_argument("--domain", default="ims.test", help="home domain (default ims.test)")
    ue.add_argument("--json", action="store_true", help="one JSON object per event")
    ue.add_argument("--ca", metavar="FILE", default=None,
                    help="CA certificate to verify the P-CSCF's TLS certificate")
    commands = ue.add_subparsers(dest="ue_command", required=True, metavar="COMMAND")
    listen = commands.add_parser("listen", help="print incoming events until interrupted")
    listen.add_argument("--downloads", metavar="DIR", default=".",
                        help="where accepted files go (default: current directory)")
    listen.add_argument("--mark-displayed", action="store_true",
                        help="send the display notification for every message received")
    send = commands.add_parser("send", help="send a standalone message")
    send.add_argument("to", metavar="TO")
    send.add_argument("text", metavar="TEXT")
    send.add_argument("--display", action="store_true",
                      help="also wait for the display notification")
    send.add_argument("--timeout", type=_positive, default=30.0,
                      help="seconds to wait for the notification (default 30)")
    chat = commands.add_parser("chat", help="a 1-to-1 chat: each stdin line is a message")
    chat.add_argument("to", metavar="TO")
    send_file = commands.add_parser("send-file", help="transfer a file")
    send_file.add_argument("to", metavar="TO")
    send_file.add_argument("path", metavar="PATH", type=Path)
    send_file.add_argument("--timeout", type=_positive, default=300.0,
                           help="seconds for the whole transfer (default 300)")
    ue.set_defaults(run=run_ue)
    return ue


# -- running ---------------------------------------------------------------------------------

def _client(args: argparse.Namespace) -> RcsClient:
    ssl_context = None
    if args.ca:
        from ..sip.transport.tls import client_context
        ssl_context = client_context(args.ca)
    downloads = getattr(args, "downloads", None)
    pcscf = args.pcscf or ("127.0.0.1", 5061 if args.transport == "tls" else 5060)
    return RcsClient(args.user, args.password, args.domain, pcscf=pcscf,
                     transport=args.transport, downloads=downloads, ssl_context=ssl_context)


async def run_ue(args: argparse.Namespace) -> int:
    """``imsbox ue``: register, run the command, de-register."""
    if not getattr(args, "verbose", False):
        logging.getLogger("imsbox").setLevel(logging.WARNING)  # keep stderr for the user
    printer = Printer(args.json, sys.stdout, sys.stderr)
    command = {"listen": _listen, "send": _send, "chat": _chat,
               "send-file": _send_file}[args.ue_command]
    if args.ue_command == "send-file" and not args.path.is_file():
        printer.error(f"{args.path}: no such file")
        return EXIT_USAGE
    try:
        client = _client(args)
        await client.start()
    except (RcsError, OSError) as exc:
        printer.error(str(exc))
        return EXIT_FAILED
    try:
        return await command(client, args, printer)
    except RcsError as exc:
        printer.error(str(exc))
        return EXIT_FAILED
    finally:
        await client.close()


async def _print_events(client: RcsClient, printer: Printer,
                        mark_displayed: bool = False) -> None:
    async for event in client.events():
        if not isinstance(event, Registered) or event.state != "registered":
            printer.event(event)
        if mark_displayed and isinstance(event, (MessageReceived, ChatMessage)) \
                and event.message_id:
            await client.mark_displayed(event.message_id)


async def _until(stop: asyncio.Event, *tasks: asyncio.Task[Any]) -> None:
    """Run until ``stop`` is set or any task ends; cancel the rest."""
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, *tasks):
            task.cancel()
        await asyncio.gather(waiter, *tasks, return_exceptions=True)


async def _listen(client: RcsClient, args: argparse.Namespace, printer: Printer) -> int:
    printer.record({"event": "listening", "from": client.aor, "to": client.aor,
                    "contact": client.contact})
    with stop_on_signals() as stop:
        await _until(stop, asyncio.ensure_future(
            _print_events(client, printer, args.mark_displayed)))
    return EXIT_OK


async def _send(client: RcsClient, args: argparse.Namespace, printer: Printer) -> int:
    target = client.resolve(args.to)
    wanted = MessageStatus.DISPLAYED if args.display else MessageStatus.DELIVERED
    record = {"event": "sent", "from": client.aor, "to": target}
    message_id = ""
    try:
        message_id = await asyncio.wait_for(
            client.send_message(target, args.text, display=args.display), args.timeout)
        status = await client.wait_status(message_id, wanted, args.timeout)
    except SendError as exc:
        printer.record({**record, "status": "failed", "reason": str(exc)})
        return EXIT_FAILED
    except TimeoutError:
        reached = client.status(message_id) if message_id else None
        printer.record({**record, "message_id": message_id, "status": "timeout",
                        "reached": reached.value if reached else None,
                        "reason": f"no {wanted.value} notification in {args.timeout:g} s"})
        return EXIT_FAILED
    printer.record({**record, "message_id": message_id, "status": status.value})
    return EXIT_OK if status.rank >= wanted.rank and status is not MessageStatus.FAILED \
        else EXIT_FAILED


async def _chat(client: RcsClient, args: argparse.Namespace, printer: Printer) -> int:
    chat = await client.open_chat(args.to)
    sent: list[str] = []
    with stop_on_signals() as stop:
        await _until(stop, asyncio.ensure_future(_print_events(client, printer)),
                     asyncio.ensure_future(_type_lines(chat, sent)),
                     asyncio.ensure_future(chat.closed.wait()))
    # Give the last notifications a moment before hanging up.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(_all_delivered(client, sent), 3)
    for event in client.pending_events():
        if not isinstance(event, Registered):
            printer.event(event)
    await chat.close()
    return EXIT_OK


async def _type_lines(chat: Any, sent: list[str]) -> None:
    """Each stdin line: isComposing, then the message; EOF ends the chat."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        text = line.rstrip("\r\n")
        if not text:
            continue
        await chat.composing()
        sent.append(await chat.send(text))


async def _all_delivered(client: RcsClient, sent: list[str]) -> None:
    for message_id in sent:
        await client.wait_status(message_id, MessageStatus.DELIVERED)


async def _send_file(client: RcsClient, args: argparse.Namespace, printer: Printer) -> int:
    target = client.resolve(args.to)
    name = args.path.name

    def progress(done: int, total: int) -> None:
        if printer.as_json:
            printer.event(FileProgress(client.aor, target, "", name, done, total))
        else:
            _bar(printer.err, name, done, total)

    try:
        result = await asyncio.wait_for(client.send_file(target, args.path, progress),
                                        args.timeout)
    except TimeoutError:
        printer.record({"event": "file_sent", "from": client.aor, "to": target,
                        "name": name, "ok": False, "reason": "timeout"})
        return EXIT_FAILED
    if not printer.as_json:
        print(file=printer.err)
    printer.record({"event": "file_sent", "from": client.aor, "to": target, "name": name,
                    "size": result.size, "sha256": result.sha256, "ok": result.ok,
                    "transfer_id": result.transfer_id, "status": result.status,
                    "reason": result.reason})
    return EXIT_OK if result.ok else EXIT_FAILED


def _bar(err: TextIO, name: str, done: int, total: int) -> None:
    share = done / total if total else 1.0
    filled = int(share * BAR_WIDTH)
    err.write(f"\r{name} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
              f"{share * 100:5.1f}% {done}/{total} bytes")
    err.flush()
