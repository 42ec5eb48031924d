"""``imsbox ue``: an RCS client on the command line (the contract in PRODUCT.md).

    imsbox ue --user NAME --password P [--pcscf HOST:PORT] [--transport udp|tcp|tls]
              [--domain D] [--json] COMMAND

Commands: ``listen [--interactive]``, ``send TO TEXT``, ``chat TO``,
``send-file TO PATH``, ``retrieve-deferred`` (seed 003: register the cpm.deferred
ICSI, fetch what the network stored while offline, exit), ``group-chat [--subject S]
MEMBER...`` / ``group-chat --join URI`` (stdin lines are messages; ``/invite NAME``,
``/remove NAME``, ``/leave``), ``call TO [--play FILE.wav] [--tone HZ] [--record
FILE.wav] [--redial [--redial-timeout S]] [--join DIALOG] [--no-music-on-hold]`` (a voice
call; stdin commands ``hold`` (with the network's music when it has a music server),
``resume``, ``hangup``, ``transfer TARGET``, ``consult TARGET``, ``complete``,
``im-transfer TO``, ``conference [TARGET]``, ``park``; stdin EOF hangs up),
``retrieve ORBIT`` (a call to the parked call of ``sip:park-ORBIT@DOMAIN``, then as
``call``),
``listen --answer [--after S] [--busy] [--no-call-waiting] [--early-media
[--early-tone HZ | --early-play FILE.wav]] [--take-im-transfers]`` (answer voice
calls, or refuse them 486 busy; REFERs in a call and INVITEs with Join are always
acted on, docs/telephony.md). With ``--json`` every event is one JSON object per line
on stdout (at least "event", "from", "to"); otherwise one readable line.
Diagnostics go to stderr. ``send``, ``chat`` and ``send-file`` report the
notifications of what they sent themselves; ``listen`` reports every one.

Exit status: 0 success (delivered, confirmed); 1 not delivered / refused /
timed out / not registered (wrong password, no P-CSCF answering); 2 bad
usage; 3 accepted by the network for later delivery (the recipient is
offline: ``send`` got 202, ``chat`` lines were taken but not delivered yet);
5 ``call``: a transfer (or a park) failed (the call went on and ended later).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..media import WavSink
from ..rcs.cpm import deferred_messages_uri
from ..runtime import parse_hostport, positive_number, stop_on_signals
from ..sip.transport.base import TRANSPORTS
from .call import VoiceCall, file_source
from .events import CallJoined, CallTransferred
from .music_hold import MusicHold
from .client import (
    Chat,
    ChatEnded,
    ChatMessage,
    ChatStarted,
    Composing,
    FileFailed,
    FileOffer,
    FileProgress,
    FileReceived,
    GroupChat,
    GroupJoined,
    GroupLeft,
    GroupMessage,
    MessageReceived,
    MessageStatus,
    Notification,
    ParticipantJoined,
    ParticipantLeft,
    RcsClient,
    RcsError,
    RcsEvent,
    Registered,
    SendError,
)

__all__ = ["add_subcommand", "run_ue"]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DEFERRED = 0, 1, 2, 3
EXIT_TRANSFER_FAILED = 5
CALL_COMMANDS = ("hold", "resume", "hangup", "transfer", "consult", "complete", "im-transfer",
                 "conference", "park")
NEEDS_TARGET = ("transfer", "consult", "im-transfer")
BAR_WIDTH = 30
PROGRESS_EVERY = 0.1     # seconds: the progress bar / JSON progress at most this often ...
PROGRESS_STEP = 0.01     # ... or once per this share of the file
LAST_NOTIFICATIONS = 3.0  # seconds a chat waits for the last delivery notifications


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
    texts: dict[str, Callable[[], str]] = {
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
        "sent": lambda: f"message to {recipient}: "
                        + (data["reason"] if data["status"] == "deferred" else data["status"]
                           + (f" ({data['reason']})" if data.get("reason") else "")),
        "retrieved": lambda: (f"{data['count']} stored message(s) retrieved"
                              if data["status"] == "ok" else
                              f"retrieval failed: {data['reason']}"),
        "chat_result": lambda: (f"chat with {recipient}: {data['sent']} sent, "
                                f"{data['delivered']} delivered, {data['stored']} accepted "
                                f"for later delivery, {data['not_sent']} not sent"
                                + (f" ({data['reason']})" if data.get("reason") else "")),
        "chat_unconfirmed": lambda: (f"not confirmed by {recipient}, send it again: "
                                     f"{data['text']}" + (f" ({data['reason']})"
                                                          if data.get("reason") else "")),
        FileFailed.EVENT: lambda: (f"file {data['name']} from {sender} broke off: "
                                   f"{data['reason']}; {data['kept']} bytes kept in "
                                   f"{data['part']} for a resumed transfer"),
        "file_sent": lambda: (f"file {data['name']} to {recipient}: "
                              + (data["reason"] if data.get("deferred") else "confirmed"
                                 if data["ok"] else f"failed ({data['reason']})")),
        GroupJoined.EVENT: lambda: (f"in group {data['conference']}"
                                    + (f" \"{data['subject']}\"" if data["subject"] else "")
                                    + f" ({data['how']}): {', '.join(data['participants'])}"),
        ParticipantJoined.EVENT: lambda: f"{sender} joined {data['conference']}",
        ParticipantLeft.EVENT: lambda: f"{sender} left {data['conference']} ({data['reason']})",
        GroupMessage.EVENT: lambda: f"[{data['conference']}] {sender}: {data['text']}",
        GroupLeft.EVENT: lambda: f"out of group {data['conference']}: {data['reason']}",
        "group_subject": lambda: f"[{data['conference']}] subject: {data['subject']}",
        "call_ringing": lambda: f"call {sender} -> {recipient} ringing",
        "call_answered": lambda: f"call {sender} -> {recipient} answered",
        "call_held": lambda: f"call with {recipient} on hold ({data['direction']})",
        "call_parked": lambda: (f"call with {recipient} parked in orbit {data['orbit']} "
                                f"(retrieve: {data['uri']})" if data["orbit"] is not None else
                                f"park of {recipient} failed: {data['status']} {data['reason']}"),
        "call_resumed": lambda: f"call with {recipient} resumed",
        "call_ended": lambda: f"call {sender} -> {recipient} ended: {data['reason']}",
        "call_transferred": lambda: (f"call {sender} -> {recipient} {data['kind']} transfer "
                                     f"to {data['target']} ({data['role']}): {data['outcome']}"
                                     + (f" {data['status']}" if data.get("status") else "")),
        "rtp_stats": lambda: ("RTP " + ", ".join(f"{k} {data['stats'][k]}" for k in
                                                 ("packets_sent", "packets_received", "lost",
                                                  "jitter_ms"))),
        "refer_result": lambda: (f"{data['action']} {recipient}: "
                                 + ("done" if data["ok"] else f"failed ({data['reason']})")),
        "call_early_media": lambda: f"call {sender} -> {recipient}: early media ({data['status']})",
        "call_conference": lambda: (f"3-way call {data['state']}: "
                                    + (", ".join(data["parties"]) or "nobody left")),
        "call_joined": lambda: f"{sender} joined the call {data['joined_call_id']}",
        "redial_waiting": lambda: (f"{recipient} is busy: waiting until idle "
                                   f"(at most {data['timeout']:g} s)"),
        "redial_retry": lambda: f"{recipient} is idle: calling again (attempt {data['attempt']})",
        "redial_failed": lambda: f"redial {recipient} gave up: {data['reason']}",
    }
    text = texts.get(kind)
    return text() if text else json.dumps(data, ensure_ascii=False)


# -- argument parsing ---------------------------------------------------------------------

def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``ue`` on an argparse subparsers object."""
    ue: argparse.ArgumentParser = subparsers.add_parser(
        "ue", help="an RCS client: listen, send, chat, send-file, retrieve-deferred, "
                   "group-chat, call, retrieve",
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
    listen.add_argument("--answer", action="store_true", help="answer voice calls")
    listen.add_argument("--after", type=float, default=0.0, metavar="S",
                        help="with --answer: ring this many seconds first (default 0)")
    listen.add_argument("--busy", action="store_true",
                        help="refuse voice calls with 486 Busy Here")
    listen.add_argument("--no-call-waiting", action="store_true",
                        help="with --answer: 486 Busy Here to a call while one is in progress")
    listen.add_argument("--early-media", action="store_true",
                        help="with --answer: alert with 183 Session Progress and SDP, playing "
                             "--early-tone / --early-play (else the call's audio) until answered")
    listen.add_argument("--early-tone", metavar="HZ", type=positive_number, default=None,
                        help="with --early-media: the tone played before the answer")
    listen.add_argument("--early-play", metavar="FILE.wav", type=Path, default=None,
                        help="with --early-media: the WAV played before the answer")
    listen.add_argument("--take-im-transfers", action="store_true",
                        help="call the URIs with Replaces that arrive in messages "
                             "(RFC 5359 2.6 IM transfer)")
    _media_arguments(listen)
    listen.add_argument("--interactive", action="store_true",
                        help="answer chats: each stdin line goes to the latest open chat "
                             "(/bye ends it)")
    send = commands.add_parser("send", help="send a standalone message")
    send.add_argument("to", metavar="TO")
    send.add_argument("text", metavar="TEXT")
    send.add_argument("--display", action="store_true",
                      help="also wait for the display notification")
    send.add_argument("--timeout", type=positive_number, default=30.0,
                      help="seconds to wait for the notification (default 30)")
    chat = commands.add_parser("chat", help="a 1-to-1 chat: each stdin line is a message")
    chat.add_argument("to", metavar="TO")
    send_file = commands.add_parser("send-file", help="transfer a file")
    send_file.add_argument("to", metavar="TO")
    send_file.add_argument("path", metavar="PATH", type=Path)
    send_file.add_argument("--timeout", type=positive_number, default=300.0,
                           help="seconds for the whole transfer (default 300)")
    commands.add_parser(
        "retrieve-deferred", help="fetch the messages stored while offline and exit",
        description="Register with the cpm.deferred ICSI (nothing is pushed then) and fetch "
                    "the stored messages from the deferred-messages PSI (seed 003), oldest "
                    "first; each is printed and removed from the store as taken.")
    group = commands.add_parser(
        "group-chat", help="a group chat: each stdin line is a message",
        description="Start an ad-hoc group with MEMBERs, or --join a conference or "
                    "pre-defined group by its URI. Each stdin line is a message; "
                    "/invite NAME, /remove NAME and /leave act on the group.")
    group.add_argument("members", metavar="MEMBER", nargs="*",
                       help="members of a new group (with --join: invited once in)")
    group.add_argument("--subject", default=None, help="the new group's subject")
    group.add_argument("--join", metavar="URI", default=None,
                       help="join this conference / group URI instead of starting one")
    call = commands.add_parser(
        "call", help="a voice call; stdin commands: hold, resume, transfer TARGET, "
                     "consult TARGET, complete, im-transfer TO, conference [TARGET], "
                     "hangup (EOF hangs up)")
    call.add_argument("to", metavar="TO")
    _hold_arguments(call)
    call.add_argument("--redial", action="store_true",
                      help="automatic redial (RFC 5359 2.17): when TO is busy, watch its dialog "
                           "events and call again once it is idle")
    call.add_argument("--redial-timeout", metavar="S", type=positive_number, default=300.0,
                      help="with --redial: give up after this many seconds (default 300)")
    call.add_argument("--join", metavar="DIALOG", default=None,
                      help="join TO's call (RFC 3911): CALLID;to-tag=T;from-tag=F as TO sees "
                           "the dialog (to-tag: TO's tag, from-tag: its peer's)")
    _media_arguments(call)
    retrieve = commands.add_parser(
        "retrieve", help="get a parked call back (RFC 5359 2.15); stdin commands as for call",
        description="Call sip:park-ORBIT@DOMAIN: the call parked in ORBIT is connected to "
                    "us (404 when nothing is parked there); then as `call`.")
    retrieve.add_argument("orbit", metavar="ORBIT", help="the orbit number call_parked named")
    _hold_arguments(retrieve)
    _media_arguments(retrieve)
    retrieve.set_defaults(redial=False, redial_timeout=300.0, join=None)
    pickup = commands.add_parser(
        "pickup", help="pick up a call ringing for your pickup group (RFC 5359 2.16: calls "
                       "sip:pickup@DOMAIN, with NAME sip:pickup-NAME@DOMAIN); then as call")
    pickup.add_argument("name", metavar="NAME", nargs="?", default=None,
                        help="directed pickup: only the call ringing for NAME")
    pickup.add_argument("--direct", action="store_true",
                        help="with NAME: do it ourselves (SUBSCRIBE to NAME's dialog events, "
                             "INVITE the caller with Replaces) instead of the network service")
    _hold_arguments(pickup)
    _media_arguments(pickup)
    ue.set_defaults(run=run_ue)
    return ue


def _hold_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-music-on-hold", dest="music_on_hold", action="store_false",
                        help="stdin hold is the plain hold (RFC 5359 2.1: re-INVITE sendonly)")
    parser.add_argument("--music-on-hold", dest="music_on_hold", action="store_true",
                        help="hold plays the network's music (RFC 5359 2.3: REFER sip:moh@DOMAIN "
                             "to the held party; the default); without a music server it is "
                             "the plain hold")
    parser.set_defaults(music_on_hold=True)


def _media_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--play", metavar="FILE.wav", type=Path, default=None,
                        help="play this WAV (8 kHz 16-bit mono; looped) into calls")
    parser.add_argument("--tone", metavar="HZ", type=positive_number, default=None,
                        help="play a sine tone of this frequency instead (default: silence)")
    parser.add_argument("--record", metavar="FILE.wav", type=Path, default=None,
                        help="record what the other side sends to this WAV")


# -- running ---------------------------------------------------------------------------------

def _client(args: argparse.Namespace) -> RcsClient:
    ssl_context = None
    if args.ca:
        from ..sip.transport.tls import client_context
        ssl_context = client_context(args.ca)
    downloads = getattr(args, "downloads", None)
    pcscf = args.pcscf or ("127.0.0.1", 5061 if args.transport == "tls" else 5060)
    return RcsClient(args.user, args.password, args.domain, pcscf=pcscf,
                     transport=args.transport, downloads=downloads, ssl_context=ssl_context,
                     report_all_notifications=args.ue_command == "listen",
                     deferred_retrieval=args.ue_command == "retrieve-deferred",
                     answer_calls=args.after if getattr(args, "answer", False) else None,
                     busy_calls=getattr(args, "busy", False),
                     take_im_transfers=getattr(args, "take_im_transfers", False))


async def run_ue(args: argparse.Namespace) -> int:
    """``imsbox ue``: register, run the command, de-register."""
    if not getattr(args, "verbose", False):
        logging.getLogger("imsbox").setLevel(logging.WARNING)  # keep stderr for the user
    printer = Printer(args.json, sys.stdout, sys.stderr)
    command = {"listen": _listen, "send": _send, "chat": _chat,
               "send-file": _send_file, "retrieve-deferred": _retrieve_deferred,
               "group-chat": _group_chat, "call": _call,
               "retrieve": _retrieve, "pickup": _pickup}[args.ue_command]
    play = getattr(args, "play", None)
    if play is not None and not play.is_file():
        printer.error(f"{play}: no such file")
        return EXIT_USAGE
    if args.ue_command == "send-file" and not args.path.is_file():
        printer.error(f"{args.path}: no such file")
        return EXIT_USAGE
    if args.ue_command == "retrieve" and not (args.orbit.isdigit() and len(args.orbit) <= 6):
        printer.error(f"retrieve: {args.orbit!r} is not an orbit number (e.g. 701)")
        return EXIT_USAGE
    if args.ue_command == "pickup" and args.direct and not args.name:
        printer.error("pickup --direct needs the NAME whose call it takes")
        return EXIT_USAGE
    if args.ue_command == "group-chat" and not args.members and not args.join:
        printer.error("group-chat needs MEMBERs to start a group or --join URI")
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
        if mark_displayed and isinstance(event, (MessageReceived, ChatMessage, GroupMessage)) \
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


class _StdinLines:
    """stdin lines read by a daemon thread (a blocked read never holds up the exit);
    None once stdin ended."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, args=(loop,), daemon=True).start()

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens any more
            for line in sys.stdin:
                loop.call_soon_threadsafe(self.queue.put_nowait, line.rstrip("\r\n"))
            loop.call_soon_threadsafe(self.queue.put_nowait, None)

    async def next(self) -> str | None:
        return await self.queue.get()

    def unread(self) -> list[str]:
        """The lines read and not taken yet (taken out)."""
        lines = []
        while not self.queue.empty():
            line = self.queue.get_nowait()
            if line is not None:
                lines.append(line)
        return lines


async def _listen(client: RcsClient, args: argparse.Namespace, printer: Printer) -> int:
    printer.record({"event": "listening", "from": client.aor, "to": client.aor,
                    "contact": client.contact})
    if args.answer or args.busy:
        _call_media(client, args)
    tasks = [asyncio.ensure_future(_print_events(client, printer, args.mark_displayed))]
    if args.interactive:
        tasks.append(asyncio.ensure_future(_answer_chats(client, printer)))
    with stop_on_signals() as stop:
        await _until(stop, *tasks)
    return EXIT_OK


async def _answer_chats(client: RcsClient, printer: Printer) -> None:
    """``listen --interactive``: each stdin line goes to the latest open chat."""
    lines = _StdinLines()
    while (text := await lines.next()) is not None:
        chat = next(reversed(client.chats.values()), None)
        if not text:
            continue
        if chat is None:
            printer.error("no chat to answer yet; a line is sent once one is open")
            continue
        try:
            if text == "/bye":
                await chat.close()
            else:
                await chat.composing()
                await chat.send(text)
        except SendError as exc:
            printer.error(str(exc))
    await asyncio.Event().wait()  # stdin ended: go on listening until interrupted


async def _send(client: RcsClient, args: argparse.Namespace, printer: Printer) -> int:
    target = client.resolve(args.to)
    wanted = MessageStatus.DISPLAYED if args.display else MessageStatus.DELIVERED
    record = {"event": "sent", "from": client.aor, "to": target}
    message_id = ""
    try:
        message_id = await asyncio.wait_for(
            client.send_message(target, args.text, display=args.display), args.timeout)
        if client.deferred(message_id):
            printer.record({**record, "message_id": message_id, "status": "deferred",
                            "reason": "accepted for later delivery (202)"})
            return EXIT_DEFERRED
        status = await client.wait_status(message_id, wanted, args.timeout, or_deferred=True)
        if client.deferred(message_id):  # a large message: the network's "stored" IMDN
            printer.record({**record, "message_id": message_id, "status": "deferred",
                            "reason": "accepted for later delivery (stored)"})
            return EXIT_DEFERRED
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


async def _retrieve_deferred(client: RcsClient, args: argparse.Namespace,
                             printer: Printer) -> int:
    """Seed 003 retrieval: each stored message as an event, then one ``retrieved``
    record; exit 0 when the network served the retrieval (even with nothing stored)."""
    record = {"event": "retrieved", "from": client.aor,
              "to": deferred_messages_uri(client.domain)}
    try:
        received = await client.retrieve_deferred()
    except SendError as exc:
        printer.record({**record, "count": 0, "status": "failed", "reason": str(exc)})
        return EXIT_FAILED
    await client.notifications.settle(LAST_NOTIFICATIONS)  # their delivery IMDNs out first
    for event in client.pending_events():
        if not isinstance(event, Registered):
            printer.event(event)
    printer.record({**record, "count": len(received), "status": "ok"})
    return EXIT_OK


@dataclass(slots=True)
class _ChatLines:
    """What became of the lines typed into ``chat``."""

    # Message-IDs with an MSRP 200: through the messaging AS, the receiver's
    sent: list[str] = field(default_factory=list)
    # texts without a 200 (refused, timed out, connection lost, or never went out):
    # they may not have arrived, so they are the ones to send again
    not_sent: list[str] = field(default_factory=list)
    # text -> (its SendError, the Message-ID to send it again under)
    why: dict[str, tuple[str, str | None]] = field(default_factory=dict)


async def _chat(client: RcsClient, args: argparse.Namespace, printer: Printer) -> int:
    chat = await client.open_chat(args.to)
    lines, typed = _ChatLines(), _StdinLines()
    with stop_on_signals() as stop:
        await _until(stop, asyncio.ensure_future(_print_events(client, printer)),
                     asyncio.ensure_future(_type_lines(chat, typed, lines)),
                     asyncio.ensure_future(chat.closed.wait()))
    # Give the last notifications a moment before hanging up.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(_all_delivered(client, lines.sent), LAST_NOTIFICATIONS)
    if chat.closed.is_set():  # ended by the other side: what was typed after is lost
        await asyncio.sleep(0.2)  # let the reader take what is waiting in the pipe
        lines.not_sent.extend(typed.unread())
    for event in client.pending_events():
        if not isinstance(event, Registered):
            printer.event(event)
    reason = chat.end_reason if chat.closed.is_set() else ""
    await chat.close()
    return _chat_result(client, chat, lines, reason, printer)


def _chat_result(client: RcsClient, chat: Chat, lines: _ChatLines, reason: str,
                 printer: Printer) -> int:
    """One line on what became of every message: delivered, stored or lost."""
    statuses = [client.status(mid) for mid in lines.sent]
    delivered = sum(1 for s in statuses if s is not None and s.rank >= MessageStatus.DELIVERED.rank
                    and s is not MessageStatus.FAILED)
    stored = sum(1 for s in statuses if s is MessageStatus.SENT)  # confirmed: REPORT 200
    failed = len(statuses) - delivered - stored  # refused, or never confirmed
    for text in lines.not_sent:  # one line each: which lines to send again
        why, message_id = lines.why.get(text, ("", None))
        printer.record({"event": "chat_unconfirmed", "from": client.aor, "to": chat.peer,
                        "text": text, "message_id": message_id, "reason": why})
    printer.record({"event": "chat_result", "from": client.aor, "to": chat.peer,
                    "sent": len(lines.sent), "delivered": delivered, "stored": stored,
                    "failed": failed, "not_sent": len(lines.not_sent),
                    "reason": f"the chat ended: {reason}" if reason else ""})
    if failed or lines.not_sent:
        printer.error(f"{failed + len(lines.not_sent)} message(s) not delivered and not "
                      f"stored" + (f" (the chat ended: {reason})" if reason else ""))
        return EXIT_FAILED
    if stored:
        printer.error(f"{stored} message(s) stored by the network (its MSRP 200 comes "
                      f"after the store write) but not delivered yet: kept for later delivery")
        return EXIT_DEFERRED
    return EXIT_OK


async def _type_lines(chat: Chat, typed: _StdinLines, lines: _ChatLines) -> None:
    """Each stdin line: isComposing, then the message; EOF ends the chat."""
    while (text := await typed.next()) is not None:
        if not text:
            continue
        try:
            await chat.composing()
            lines.sent.append(await chat.send(text))
        except SendError as exc:
            lines.not_sent.append(text)
            lines.why[text] = (str(exc), exc.message_id)


async def _all_delivered(client: RcsClient, sent: list[str]) -> None:
    for message_id in sent:
        await client.wait_status(message_id, MessageStatus.DELIVERED)


async def _send_file(client: RcsClient, args: argparse.Namespace, printer: Printer) -> int:
    target = client.resolve(args.to)
    name = args.path.name
    transfer_id = uuid.uuid4().hex
    throttle = _Throttle()

    def progress(done: int, total: int) -> None:
        if not throttle.due(done, total):
            return
        if printer.as_json:
            printer.event(FileProgress(client.aor, target, transfer_id, name, done, total))
        else:
            _bar(printer.err, name, done, total)

    try:
        result = await asyncio.wait_for(
            client.send_file(target, args.path, progress, transfer_id=transfer_id),
            args.timeout)
    except TimeoutError:
        printer.record({"event": "file_sent", "from": client.aor, "to": target,
                        "name": name, "ok": False, "transfer_id": transfer_id,
                        "reason": "timeout"})
        return EXIT_FAILED
    if not printer.as_json:
        print(file=printer.err)
    printer.record({"event": "file_sent", "from": client.aor, "to": target, "name": name,
                    "size": result.size, "sha256": result.sha256, "ok": result.ok,
                    "transfer_id": result.transfer_id, "status": result.status,
                    "reason": result.reason, "deferred": result.deferred})
    if result.deferred:
        return EXIT_DEFERRED
    return EXIT_OK if result.ok else EXIT_FAILED


class _Throttle:
    """Progress at most every PROGRESS_EVERY seconds or PROGRESS_STEP of the file
    (and always the last octet): a 50 MB file is about 100 lines, not 25,000."""

    def __init__(self) -> None:
        self.at = -1.0     # share of the file last shown
        self.when = 0.0    # monotonic time it was shown

    def due(self, done: int, total: int) -> bool:
        share = done / total if total else 1.0
        now = asyncio.get_running_loop().time()
        if share < 1.0 and share - self.at < PROGRESS_STEP and now - self.when < PROGRESS_EVERY:
            return False
        self.at, self.when = share, now
        return True


def _bar(err: TextIO, name: str, done: int, total: int) -> None:
    share = done / total if total else 1.0
    filled = int(share * BAR_WIDTH)
    err.write(f"\r{name} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
              f"{share * 100:5.1f}% {done}/{total} bytes")
    err.flush()


# -- group chat --------------------------------------------------------------------------

async def _group_chat(client: RcsClient, args: argparse.Namespace, printer: Printer) -> int:
    """``group-chat``: create or join, type lines until EOF or /leave, then leave."""
    try:
        if args.join:
            group = await client.join_group(args.join)
        else:
            group = await client.create_group(args.members, args.subject)
    except SendError as exc:
        printer.error(_refusal(exc, args.join))
        return EXIT_FAILED
    lines, typed = _ChatLines(), _StdinLines()
    refers: list[asyncio.Task[bool]] = []
    if args.join:
        refers += [asyncio.ensure_future(_refer(client, group, "/invite", m, printer))
                   for m in args.members]
    with stop_on_signals() as stop:
        await _until(stop, asyncio.ensure_future(_print_events(client, printer)),
                     asyncio.ensure_future(_group_lines(client, group, typed, lines, refers,
                                                        printer)),
                     asyncio.ensure_future(group.closed.wait()))
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(_all_delivered(client, lines.sent), LAST_NOTIFICATIONS)
    if refers:
        await asyncio.wait(refers, timeout=LAST_NOTIFICATIONS)
    if group.closed.is_set():  # removed, or the conference ended: the rest is lost
        await asyncio.sleep(0.2)
        lines.not_sent.extend(t for t in typed.unread() if not t.startswith("/"))
    await group.leave()
    for event in client.pending_events():
        if not isinstance(event, Registered):
            printer.event(event)
    if lines.not_sent:
        printer.error(f"{len(lines.not_sent)} message(s) not sent"
                      + (f" (out of the group: {group.end_reason})" if group.end_reason else ""))
        return EXIT_FAILED
    return EXIT_OK


def _refusal(exc: SendError, join: str | None) -> str:
    """What a refused create / join means to the user."""
    what = f"cannot join {join}" if join else "cannot start the group"
    if exc.status == 404:
        return f"{what}: no such conference or group (404); it may have ended"
    if exc.status == 403:
        return f"{what}: not a member of that group (403)"
    return f"{what}: {exc}"


async def _group_lines(client: RcsClient, group: GroupChat, typed: _StdinLines,
                       lines: _ChatLines, refers: list[asyncio.Task[bool]],
                       printer: Printer) -> None:
    """Each stdin line: a message, or /invite NAME, /remove NAME, /leave; EOF leaves."""
    with contextlib.suppress(asyncio.TimeoutError):  # who is in first, then talk
        await asyncio.wait_for(group.joined.wait(), LAST_NOTIFICATIONS * 2)
    while (text := await typed.next()) is not None:
        command, _, name = text.strip().partition(" ")
        if not command:
            continue
        if command == "/leave":
            return
        if command in ("/invite", "/remove"):
            if not name.strip():
                printer.error(f"usage: {command} NAME")
            else:
                refers.append(asyncio.ensure_future(
                    _refer(client, group, command, name.strip(), printer)))
            continue
        try:
            await group.composing()
            lines.sent.append(await group.send(text))
        except SendError:
            lines.not_sent.append(text)


async def _refer(client: RcsClient, group: GroupChat, command: str, name: str,
                 printer: Printer) -> bool:
    """/invite or /remove: one ``refer_result`` line; a refusal also on stderr."""
    target = client.resolve(name)
    action = command[1:]
    record: dict[str, Any] = {"event": "refer_result", "from": client.aor, "to": target,
                              "action": action, "conference": group.conference}
    try:
        result = await (group.invite if action == "invite" else group.remove)(target)
    except SendError as exc:
        printer.error(f"{action} {target}: refused: {exc}")
        printer.record({**record, "status": exc.status, "result": None, "ok": False,
                        "reason": str(exc)})
        return False
    printer.record({**record, "status": result.status, "result": result.result,
                    "ok": result.ok, "reason": result.reason})
    return result.ok


# -- voice calls ------------------------------------------------------------------------------

def _call_media(client: RcsClient, args: argparse.Namespace) -> None:
    """What ``listen --answer`` plays into and records of each call."""
    client.call_service.source = lambda: file_source(args.play, args.tone)
    record = args.record
    client.call_service.sink = lambda: WavSink(record) if record is not None else None
    _call_options(client, args)


def _call_options(client: RcsClient, args: argparse.Namespace) -> None:
    """``listen --no-call-waiting`` and ``--early-media`` (ue/early_media.py)."""
    service = client.call_service
    service.call_waiting = not args.no_call_waiting
    service.early_media = args.early_media
    if args.early_play is not None or args.early_tone is not None:
        early_play, early_tone = args.early_play, args.early_tone
        service.early_source = lambda: file_source(early_play, early_tone)
    elif args.early_media:
        service.early_source = service.source


async def _call(client: RcsClient, args: argparse.Namespace, printer: Printer) -> int:
    """``call TO``: the call's events; stdin commands (``_CallCommands``); exit 0 once
    an answered call ended (transferred too), 1 if it was never answered (busy,
    refused, cancelled), 5 after a failed transfer or park."""
    return await _follow_call(client, await _place_call(client, args, printer), args, printer)


async def _retrieve(client: RcsClient, args: argparse.Namespace, printer: Printer) -> int:
    """``retrieve ORBIT``: a call to sip:park-ORBIT@DOMAIN, then as ``call``; an empty
    orbit (404) says so on stderr and exits 1."""
    media = {"play": args.play, "tone": args.tone, "record": args.record}
    call = await client.retrieve(args.orbit, **media)
    status = await _follow_call(client, call, args, printer)
    final = call.call.final.result() if call.call.final.done() else None
    if not call.answered.is_set() and final is not None and final.status >= 300:
        printer.error(f"retrieve {args.orbit}: {final.status} {final.reason}")
    return status


async def _follow_call(client: RcsClient, call: VoiceCall, args: argparse.Namespace,
                       printer: Printer) -> int:
    commands = _CallCommands(client, call, printer)
    commands.music_on_hold = args.music_on_hold
    with stop_on_signals() as stop:
        await _until(stop, asyncio.ensure_future(_print_events(client, printer)),
                     asyncio.ensure_future(commands.run(_StdinLines())),
                     asyncio.ensure_future(commands.follow()))
    await commands.hangup_all()
    for event in client.pending_events():
        if not isinstance(event, Registered):
            printer.event(event)
    if not call.answered.is_set():
        return EXIT_FAILED
    return EXIT_TRANSFER_FAILED if commands.failed_transfer else EXIT_OK


async def _pickup(client: RcsClient, args: argparse.Namespace, printer: Printer) -> int:
    """``pickup [NAME]``: a call to the network's pickup service, then as ``call``
    (exit 1 when refused: nothing ringing, not in the group, already answered)."""
    call = await client.pickup(args.name, play=args.play, tone=args.tone, record=args.record,
                               direct=args.direct)
    status = await _follow_call(client, call, args, printer)
    final = call.call.final.result() if call.call.final.done() else None
    if final is not None and final.status >= 300:   # the AS says why (480, 403, 481 ...)
        printer.error(f"pickup refused: {final.status} {final.reason}")
    return status


async def _place_call(client: RcsClient, args: argparse.Namespace, printer: Printer) -> VoiceCall:
    """``call TO``, ``call --join DIALOG TO`` or ``call --redial TO`` (events print
    while redial waits)."""
    media = {"play": args.play, "tone": args.tone, "record": args.record}
    if args.join:
        return await client.join(args.to, args.join, **media)
    if not args.redial:
        return await client.call(args.to, **media)
    printing = asyncio.ensure_future(_print_events(client, printer))
    redial = asyncio.ensure_future(client.redial(args.to, timeout=args.redial_timeout, **media))
    with stop_on_signals() as stop:     # ^C while waiting: stop (and unsubscribe)
        await _until(stop, printing, redial)
    if redial.done() and not redial.cancelled():
        return redial.result()
    last = client.redialer.last
    if last is None:
        raise RcsError("redial stopped before the first call")
    return last      # the busy call: ended, never answered (exit 1)


class _CallCommands:
    """The stdin commands of ``call``: ``hold``/``resume`` (the current call: the
    consultation while there is one), ``transfer TARGET`` (unattended, RFC 5359
    2.4), ``consult TARGET`` (2.2: hold and call TARGET), ``complete`` (2.5: the
    attended transfer of the held party to the consulted one), ``im-transfer TO``
    (2.6), ``conference [TARGET]`` (2.10: mix the call and the consultation here, or
    hold, call TARGET and mix the three once it answers; not answered: back to the
    call), ``park`` (RFC 5359 2.15: the call goes to an orbit, call_parked names it),
    ``hangup`` (the consultation, which resumes the first call; else every call)."""

    def __init__(self, client: RcsClient, call: VoiceCall, printer: Printer) -> None:
        self.client, self.call, self.printer = client, call, printer
        self.consultation: VoiceCall | None = None
        self.mixed: list[VoiceCall] = []   # the legs of our 3-way call
        client.core.listeners.append(self._joined)
        self.failed_transfer = False
        self.music_on_hold = True           # hold with the network's music (else plain)
        self.music: MusicHold | None = None  # the call held with music, until resume
        # a park or a music hold under way: the server's INVITE with Replaces may end
        # our call (F15) before its final NOTIFY says what became of it
        self.referring = False

    @property
    def current(self) -> VoiceCall:
        return self.consultation or self.call

    def _over(self) -> bool:
        return self.call.ended.is_set() and self.call.id not in self.client.transfers.successors \
            and not self._on_music()

    def _on_music(self) -> bool:
        """Our call was replaced by the music server's (2.3 F15): it comes back on resume."""
        return self.music is not None and self.music.playing and self.music.call is self.call

    async def follow(self) -> None:
        """Until the call ended; when we were transferred (or our call replaced) the
        new call is the call from then on."""
        while True:
            await self.call.ended.wait()
            while self._on_music() or self.referring:
                await asyncio.sleep(0.05)
            if not self.call.ended.is_set():
                continue   # resumed from music: the new call
            successor = (self.client.transfers.successors.get(self.call.id)
                         or self._other_leg())   # a 3-way call goes on without this leg
            if successor is None or successor.ended.is_set():
                return
            self.call = successor

    async def run(self, typed: _StdinLines) -> None:
        while (line := await typed.next()) is not None:
            command, _, rest = line.strip().partition(" ")
            command, target = command.lower(), rest.strip()
            if not command:
                continue
            if command not in CALL_COMMANDS:
                self.printer.error(f"{command}: unknown command ({', '.join(CALL_COMMANDS)})")
                continue
            if command in NEEDS_TARGET and not target:
                self.printer.error(f"{command} needs a TARGET")
                continue
            if command == "hangup" and self.consultation is None:
                break
            try:
                await self._do(command, target)
            except RcsError as exc:
                self.printer.error(f"{command}: {exc}")
            if self._over():   # transferred: stop reading even if a cancel got lost
                return
        await self.hangup_all()

    async def _do(self, command: str, target: str) -> None:
        if command != "hangup":   # typed ahead (a script): act once it is answered
            await self.current.wait_answered()
        if command in ("hold", "resume") and await self._music(command):
            return
        if command in ("hold", "resume"):
            call = self.current
            if not await (call.hold() if command == "hold" else call.resume()):
                self.printer.error(f"{command}: the other side refused the re-INVITE")
        elif command == "hangup":
            await self._end_consultation()
        elif command == "consult":
            if self.consultation is not None:
                raise SendError("already consulting: complete or hang up first")
            self.consultation = await self.client.consult(self.call, target)
            self.client.core.spawn(self._consulting(self.consultation))
        elif command == "complete":
            await self._complete()
        elif command == "conference":
            await self._conference(target)
        elif self.consultation is not None:
            raise SendError("complete or hang up the consultation first")
        elif command == "transfer":
            self._result(await self.client.transfer(self.call, target))
        elif command == "park":
            await self._park()
        else:
            self._result(await self.client.im_transfer(self.call, target))

    async def _park(self) -> None:
        """2.15: the call_parked event names the orbit; our call ends (the parked
        party BYEs us) and the command with it. Refused: the call goes on."""
        if self.music is not None:
            raise SendError("resume first: the call is on music")
        self.referring = True
        try:
            parked = await self.client.park(self.call)
        finally:
            self.referring = False
        if parked.orbit is None:
            self.failed_transfer = True
            self.printer.error(f"park: {parked.status} {parked.reason}; the call goes on")

    async def _music(self, command: str) -> bool:
        """Hold with the network's music (unless ``--no-music-on-hold``), resume from
        it; False for a plain hold or resume. No music server (the REFER to sip:moh is
        refused or unanswered): the call stays on the plain hold, which a note says."""
        if command == "hold" and self.music_on_hold and self.consultation is None:
            self.referring = True
            try:
                self.music = await self.client.music_hold(self.call)
            finally:
                self.referring = False
            if not self.music.playing:
                self.printer.error(f"hold: no music on hold ({self.music.status} "
                                   f"{self.music.reason}); the plain hold")
            return True
        if command == "resume" and self.music is not None:
            # self.music stays until the new call is ours: follow() waits on it
            self.call = await self.client.music_resume(self.music)
            self.music = None
            return True
        return False

    async def _complete(self) -> None:
        consultation, self.consultation = self.consultation, None   # no resume when it ends
        if consultation is None:
            raise SendError("no consultation: consult TARGET first")
        try:
            result = await self.client.complete(consultation)
        except RcsError:
            self.consultation = consultation
            raise
        if result.outcome != "transferred":
            self.consultation = consultation
        self._result(result)

    def _result(self, result: CallTransferred) -> None:
        if result.outcome != "transferred":
            self.failed_transfer = True

    async def _consulting(self, consultation: VoiceCall) -> None:
        """A consultation that ends without complete (busy, hung up): back to the call."""
        await consultation.ended.wait()
        if self.consultation is consultation:
            await self._end_consultation()

    async def _end_consultation(self) -> None:
        consultation, self.consultation = self.consultation, None
        if consultation is not None:
            await consultation.hangup()
        if self.call.held and not self.call.ended.is_set():
            with contextlib.suppress(RcsError):
                await self.call.resume()

    async def _conference(self, target: str) -> None:
        """RFC 5359 2.10 (ue/threeway.py): the calls mixed here, mix-minus."""
        legs = [self.call]
        if self.consultation is not None:
            legs.append(self.consultation)
        elif target:
            added = await self.client.add_party(self.call, target)
            if not await added.wait_answered():
                self.printer.error(f"conference {target}: not answered ({added.end_reason}); "
                                   "back to the call")
                await asyncio.sleep(0)     # the held call has its audio back first
                if self.call.held and not self.call.ended.is_set():
                    await self.call.resume()
                return
            legs.append(added)
        elif len(self.client.calls) < 2:
            raise SendError("nobody to mix with: conference TARGET, or consult TARGET first")
        conference = await self.client.conference(*legs) if len(legs) > 1 \
            else await self.client.conference()
        self.consultation = None     # a leg of the 3-way call now, not a consultation
        self.mixed = list(conference.legs)

    def _joined(self, event: RcsEvent) -> None:
        """Someone joined our call (INVITE with Join, RFC 5359 2.11): a 3-way call too."""
        if isinstance(event, CallJoined) and event.call_id in self.client.calls:
            self.mixed = [*dict.fromkeys([*self.mixed, self.call,
                                          self.client.calls[event.call_id]])]

    def _other_leg(self) -> VoiceCall | None:
        """A leg still up of the 3-way call this call was in."""
        return next((leg for leg in self.mixed if leg is not self.call
                     and not leg.ended.is_set()), None)

    async def hangup_all(self) -> None:
        if self.consultation is not None:
            await self.consultation.hangup()
        await self.call.hangup()
        for leg in self.mixed:    # the other parties of a 3-way call
            await leg.hangup()
