"""Sans-I/O MSRP session and connection cores (RFC 4975 sections 5-7).

``ConnectionCore`` turns bytes from one connection into work for the
``SessionCore`` objects sharing it; both return events and queue bytes to
send.  Time is passed in (``now``); timers are ``next_deadline()`` /
``on_timer(now)`` values, so tests can run them on a virtual clock.
"""

from __future__ import annotations

import bisect
import enum
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .errors import MsrpUsageError, ParseError
from .message import REASON_PHRASES, ByteRange, Flag, MsrpRequest, MsrpResponse
from .parser import BadMessage, BodyData, MessageEnd, MessageStart, MsrpParser
from .uri import MsrpUri

log = logging.getLogger(__name__)

ALWAYS_ACCEPTED = ("multipart/mixed", "multipart/alternative")  # RFC 4975 section 7.3.1


class Sink(Protocol):
    """Where a received message body goes; offsets are 0-based."""

    def write_at(self, offset: int, data: bytes) -> None: ...


class BufferSink:
    """Keeps the body in memory (fine for chat-sized messages)."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write_at(self, offset: int, data: bytes) -> None:
        n = len(self.buffer)
        if offset == n:
            self.buffer += data
        elif offset > n:
            self.buffer += bytes(offset - n)
            self.buffer += data
        else:
            self.buffer[offset : offset + len(data)] = data

    @property
    def body(self) -> bytes:
        return bytes(self.buffer)


class FileSink:
    """Writes the body to a seekable binary file as chunks arrive."""

    __slots__ = ("file", "_pos")

    def __init__(self, file: BinaryFile) -> None:
        self.file = file
        self._pos = -1

    def write_at(self, offset: int, data: bytes) -> None:
        if offset != self._pos:
            self.file.seek(offset)
        self.file.write(data)
        self._pos = offset + len(data)


class BinaryFile(Protocol):
    def seek(self, offset: int, whence: int = ..., /) -> int: ...
    def write(self, data: bytes, /) -> int: ...


class ByteRanges:
    """Set of received [start, end) intervals, merged (for reassembly and reports)."""

    __slots__ = ("_starts", "_ends")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        if self._ends and self._ends[-1] == start:  # in-order fast path
            self._ends[-1] = end
            return
        i = bisect.bisect_left(self._ends, start)
        j = bisect.bisect_right(self._starts, end)
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def covers(self, start: int, end: int) -> bool:
        if end <= start:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end


class SessionMatching(enum.Enum):
    """How To-Path is matched to a session."""

    URI = "uri"  # RFC 4975 section 6.1 full comparison
    SESSION_ID = "session-id"  # RFC 7977 / CEMA: only the session-id (middleboxes rewrite authority)


class MessageState(enum.Enum):
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(slots=True)
class OutgoingMessage:
    """Sender-side state of one message (RFC 4975 section 7.1.1)."""

    message_id: str
    content_type: str | None
    total: int | None
    success_report: bool
    failure_report: str
    sent: int = 0
    finished: bool = False
    pending: set[str] = field(default_factory=set)
    reported: ByteRanges = field(default_factory=ByteRanges)
    state: MessageState = MessageState.SENDING
    status: int = 0
    comment: str = ""


@dataclass(slots=True)
class IncomingMessage:
    """Receiver-side reassembly buffer of one message (RFC 4975 section 7.3.1)."""

    message_id: str
    content_type: str | None
    headers: list[tuple[str, str]]
    sink: Sink
    success_report: bool
    received: ByteRanges = field(default_factory=ByteRanges)
    size: int | None = None  # known once the "$" chunk arrived
    refused: int = 0  # status once refused (413)
    high: int = 0  # highest byte offset written


# Events handed to the application layer.
@dataclass(slots=True)
class MessageReceived:
    message: IncomingMessage


@dataclass(slots=True)
class MessageAborted:
    message_id: str


@dataclass(slots=True)
class MessageDelivered:
    message_id: str


@dataclass(slots=True)
class MessageFailed:
    message_id: str
    status: int
    comment: str


@dataclass(slots=True)
class ReportReceived:
    request: MsrpRequest


@dataclass(slots=True)
class SessionBound:
    """The session is now bound to a connection (RFC 4975 section 5.4)."""


SessionEvent = (MessageReceived | MessageAborted | MessageDelivered | MessageFailed
                | ReportReceived | SessionBound)


def new_id() -> str:
    return secrets.token_hex(8)


class SessionCore:
    """Sans-I/O state of one MSRP session."""

    def __init__(
        self,
        local_path: Sequence[MsrpUri],
        remote_path: Sequence[MsrpUri] = (),
        *,
        accept_types: Sequence[str] = ("*",),
        max_size: int | None = None,
        chunk_size: int = 2048,
        transaction_timeout: float = 30.0,
    ) -> None:
        self.local_path = tuple(local_path)
        self.remote_path: tuple[MsrpUri, ...] = ()
        self.set_remote_path(remote_path)
        self.accept_types = [t.lower() for t in accept_types]
        self.max_size = max_size
        self.chunk_size = chunk_size
        self.transaction_timeout = transaction_timeout
        self.connection: ConnectionCore | None = None
        # The application confirms complete messages itself (send_report), e.g. a
        # file receiver after its hash check or a relay after the next hop's REPORT.
        self.defer_success_reports = False
        # The application answers the last chunk of each message itself (answer_final),
        # e.g. a store-and-forward server once the message is on disk: its 200 then
        # means "kept", with or without a success REPORT (seed 001 asks none).
        self.hold_final_responses = False
        self.held: dict[str, MsrpRequest] = {}  # message id -> its unanswered last chunk
        self.sink_factory: Callable[[MsrpRequest], Sink] = lambda req: BufferSink()
        self.outgoing: dict[str, OutgoingMessage] = {}
        self._incoming: dict[str, IncomingMessage] = {}
        self._completed: dict[str, None] = {}  # recent Message-IDs, to drop late duplicates
        self._transactions: dict[str, tuple[str, float]] = {}  # tid -> (message id, deadline)
        self._tid_base = secrets.token_hex(5)
        self._tid_seq = 0

    @property
    def session_id(self) -> str | None:
        return self.local_path[-1].session_id

    def set_remote_path(self, remote_path: Sequence[MsrpUri]) -> None:
        self.remote_path = tuple(remote_path)
        self._to = " ".join(map(str, self.remote_path))
        self._from = " ".join(map(str, self.local_path))

    # -- sending -------------------------------------------------------------

    def new_message(self, content_type: str | None, total: int | None, *,
                    success_report: bool = False, failure_report: str = "yes",
                    message_id: str | None = None) -> OutgoingMessage:
        if failure_report not in ("yes", "no", "partial"):
            raise MsrpUsageError(f"Failure-Report must be yes, no or partial, not {failure_report!r}")
        msg = OutgoingMessage(message_id or new_id(), content_type, total,
                              success_report, failure_report)
        self.outgoing[msg.message_id] = msg
        return msg

    def _new_tid(self, data: bytes) -> str:
        """A tid whose end-line does not occur in the body (RFC 4975 section 7.1)."""
        while True:
            self._tid_seq += 1
            tid = f"{self._tid_base}{self._tid_seq:x}"
            if not data or (b"-------" + tid.encode()) not in data:
                return tid

    def _request_head(self, tid: str, method: str, message_id: str) -> str:
        """Start line, To-Path, From-Path and Message-ID (RFC 4975 section 7.1)."""
        return (f"MSRP {tid} {method}\r\nTo-Path: {self._to}\r\nFrom-Path: {self._from}\r\n"
                f"Message-ID: {message_id}\r\n")

    def chunk(self, msg: OutgoingMessage, data: bytes, *, last: bool, now: float,
              flag: Flag | None = None) -> list[bytes]:
        """Wire buffers for the next SEND chunk of ``msg`` (RFC 4975 section 7.1.1)."""
        tid = self._new_tid(data)
        start = msg.sent + 1
        msg.sent += len(data)
        if flag is None:
            flag = Flag.COMPLETE if last else Flag.CONTINUED
        if last and msg.total is None:
            msg.total = msg.sent
        # chunks over 2048 octets must be interruptible, hence "*" (section 7.1.1)
        end = str(msg.sent) if len(data) <= 2048 or last else "*"
        total = "*" if msg.total is None else str(msg.total)
        head = [self._request_head(tid, "SEND", msg.message_id)]
        if msg.success_report:
            head.append("Success-Report: yes\r\n")
        if msg.failure_report != "yes":
            head.append(f"Failure-Report: {msg.failure_report}\r\n")
        head.append(f"Byte-Range: {start}-{end}/{total}\r\n")
        if msg.content_type is not None:
            head.append(f"Content-Type: {msg.content_type}\r\n\r\n")
            tail = f"\r\n-------{tid}{flag.value}\r\n"
        else:
            tail = f"-------{tid}{flag.value}\r\n"
        if msg.failure_report == "yes":
            self._transactions[tid] = (msg.message_id, now + self.transaction_timeout)
            msg.pending.add(tid)
        if last or flag is Flag.ABORTED:
            msg.finished = True
        return [("".join(head)).encode(), data, tail.encode()]

    def empty_send(self, now: float) -> list[bytes]:
        """The empty SEND that binds a connection or keeps it alive (RFC 4975 section 5.4)."""
        msg = self.new_message(None, 0)
        return self.chunk(msg, b"", last=True, now=now)

    def abort(self, msg: OutgoingMessage, now: float) -> list[bytes]:
        """End the message with a "#" chunk (RFC 4975 section 7.3.2)."""
        return self.chunk(msg, b"", last=False, now=now, flag=Flag.ABORTED)

    def done_sending(self, msg: OutgoingMessage) -> list[SessionEvent]:
        """Call after the last chunk was written: may complete the message."""
        return self._check_delivered(msg)

    def _check_delivered(self, msg: OutgoingMessage) -> list[SessionEvent]:
        if msg.state is not MessageState.SENDING or not msg.finished or msg.pending:
            return []
        if msg.success_report and not msg.reported.covers(0, msg.total or 0):
            return []
        msg.state = MessageState.DELIVERED
        self.outgoing.pop(msg.message_id, None)
        return [MessageDelivered(msg.message_id)]

    def _fail(self, msg: OutgoingMessage, status: int, comment: str) -> list[SessionEvent]:
        if msg.state is not MessageState.SENDING:
            return []
        msg.state = MessageState.FAILED
        msg.status, msg.comment = status, comment
        for tid in msg.pending:
            self._transactions.pop(tid, None)
        msg.pending.clear()
        self.outgoing.pop(msg.message_id, None)
        return [MessageFailed(msg.message_id, status, comment)]

    def handle_response(self, resp: MsrpResponse) -> list[SessionEvent]:
        """A transaction response to one of our SENDs (RFC 4975 section 7.2)."""
        entry = self._transactions.pop(resp.transaction_id, None)
        if entry is None:
            return []
        msg = self.outgoing.get(entry[0])
        if msg is None:
            return []
        msg.pending.discard(resp.transaction_id)
        if resp.status != 200:
            return self._fail(msg, resp.status, resp.comment)
        return self._check_delivered(msg)

    def next_deadline(self) -> float | None:
        """When ``on_timer`` must next be called: the earliest transaction deadline
        (insertion order is deadline order); None when nothing is outstanding."""
        for _, deadline in self._transactions.values():
            return deadline
        return None

    def on_timer(self, now: float) -> list[SessionEvent]:
        """Expire transactions: 408 (RFC 4975 sections 7.1.1 and 10.4)."""
        events: list[SessionEvent] = []
        while self._transactions:
            tid, (mid, deadline) = next(iter(self._transactions.items()))
            if deadline > now:
                break
            del self._transactions[tid]
            msg = self.outgoing.get(mid)
            if msg is not None:
                events += self._fail(msg, 408, "Request Timeout")
        return events

    # -- receiving ------------------------------------------------------------

    def accepts(self, content_type: str) -> bool:
        media = content_type.split(";", 1)[0].strip().strip('"').lower()
        if media in ALWAYS_ACCEPTED:
            return True
        for t in self.accept_types:
            if t == "*" or t == media or (t.endswith("/*") and media.startswith(t[:-1])):
                return True
        return False

    def begin_send(self, req: MsrpRequest) -> tuple[int, IncomingMessage | None, int]:
        """Check a SEND chunk's headers: (status, message, 0-based offset).

        status 0 means accept; else the response code (RFC 4975 section 7.3.1).
        """
        mid = req.message_id or ""
        br = req.byte_range or ByteRange(1, None, None)
        inc = self._incoming.get(mid)
        if inc is None:
            if mid in self._completed:
                return 0, None, 0  # duplicate chunk of a delivered message (section 7.3.1)
            if not req.has_body and req.content_type is None:
                return 0, None, 0  # empty SEND: bind / keep-alive, nothing to deliver
            ct = req.content_type
            if ct is not None and not self.accepts(ct):
                return 415, None, 0
            if self.max_size is not None and br.total is not None and br.total > self.max_size:
                return 413, None, 0
            inc = IncomingMessage(mid, ct, req.headers, self.sink_factory(req),
                                  req.success_report)
            self._incoming[mid] = inc
        elif inc.content_type is None and req.content_type is not None:
            inc.content_type = req.content_type
        if inc.refused:
            return inc.refused, None, 0
        return 0, inc, br.start - 1

    def body_data(self, inc: IncomingMessage, offset: int, data: bytes) -> int:
        """Write a body piece at ``offset``; returns 413 when max-size is exceeded."""
        end = offset + len(data)
        if self.max_size is not None and end > self.max_size:
            inc.refused = 413
            return 413
        inc.sink.write_at(offset, data)
        if end > inc.high:
            inc.high = end
        return 0

    def end_send(self, inc: IncomingMessage, start: int, end: int, flag: Flag,
                 now: float) -> tuple[list[SessionEvent], list[bytes]]:
        """Chunk complete: reassemble; maybe deliver and build a success REPORT."""
        if flag is Flag.ABORTED:
            self._incoming.pop(inc.message_id, None)
            return [MessageAborted(inc.message_id)], []
        inc.received.add(start, end)
        if flag is Flag.COMPLETE:
            inc.size = end  # the "$" chunk defines the total length (section 7.3.1)
        if inc.size is None or not inc.received.covers(0, inc.size):
            return [], []
        self._incoming.pop(inc.message_id, None)
        self._completed[inc.message_id] = None
        if len(self._completed) > 4096:
            del self._completed[next(iter(self._completed))]
        out: list[bytes] = []
        if inc.success_report and not self.defer_success_reports:
            out.append(self.report(inc.message_id, 200, "OK", ByteRange(1, inc.size, inc.size)))
        return [MessageReceived(inc)], out

    def refuse(self, mid: str) -> None:
        inc = self._incoming.get(mid)
        if inc is not None:
            inc.refused = inc.refused or 413

    def report(self, message_id: str, status: int, comment: str,
               byte_range: ByteRange | None) -> bytes:
        """A REPORT request (RFC 4975 sections 7.1.2-7.1.4)."""
        tid = self._new_tid(b"")
        br = f"Byte-Range: {byte_range}\r\n" if byte_range is not None else ""
        return (f"{self._request_head(tid, 'REPORT', message_id)}{br}"
                f"Status: 000 {status} {comment}\r\n-------{tid}$\r\n").encode()

    def handle_report(self, req: MsrpRequest) -> list[SessionEvent]:
        """Correlate a REPORT with a sent message (RFC 4975 section 7.3.2)."""
        events: list[SessionEvent] = [ReportReceived(req)]
        msg = self.outgoing.get(req.message_id or "")
        status = req.status
        if msg is None or status is None:
            return events  # unknown Message-ID: silently ignored
        if status.code != 200:
            return events + self._fail(msg, status.code, status.comment)
        br = req.byte_range
        if br is None:
            msg.reported.add(0, msg.total or msg.sent)
        else:
            msg.reported.add(br.start - 1, br.end if br.end is not None else msg.sent)
        return events + self._check_delivered(msg)


@dataclass(slots=True)
class _Inbound:
    """The request currently being read from a connection."""

    request: MsrpRequest
    session: SessionCore | None
    status: int
    message: IncomingMessage | None
    start: int
    offset: int
    report_body: list[bytes] = field(default_factory=list)


SessionLookup = Callable[[MsrpUri], SessionCore | None]


class ConnectionCore:
    """One MSRP connection shared by any number of sessions (sans-I/O)."""

    def __init__(self, lookup: SessionLookup, *, max_header_size: int = 16384,
                 name: str = "") -> None:
        self.lookup = lookup
        self.name = name or os.urandom(4).hex()
        self.owner: object = None  # the I/O adapter's connection object
        self.parser = MsrpParser(max_header_size)
        self.sessions: set[SessionCore] = set()
        self._out: list[bytes] = []
        self._cur: _Inbound | None = None

    def bind(self, session: SessionCore) -> bool:
        """Bind a session to this connection; False if bound elsewhere (506)."""
        if session.connection is not None and session.connection is not self:
            return False
        if session.connection is None:
            session.connection = self
            self.sessions.add(session)
        return True

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def receive_data(self, data: bytes, now: float = 0.0) -> list[tuple[SessionCore, SessionEvent]]:
        """Feed bytes; returns (session, event) pairs.  Raises ParseError when
        framing is lost - the caller then closes this connection only."""
        try:
            events = self.parser.feed(data)
        except ParseError as e:
            e.events = self._dispatch(e.events, now)
            raise
        return self._dispatch(events, now)

    def _dispatch(self, events: Sequence[object], now: float) -> list[tuple[SessionCore, SessionEvent]]:
        result: list[tuple[SessionCore, SessionEvent]] = []
        for ev in events:
            if isinstance(ev, BodyData):
                self._body(ev.data)
            elif isinstance(ev, MessageStart):
                self._start(ev.message, result)
            elif isinstance(ev, MessageEnd):
                self._end(ev.flag, now, result)
            elif isinstance(ev, BadMessage):
                self._bad(ev)
        return result

    def _find(self, path: Sequence[MsrpUri]) -> SessionCore | None:
        return self.lookup(path[0]) if path else None

    def _start(self, msg: MsrpRequest | MsrpResponse,
               result: list[tuple[SessionCore, SessionEvent]]) -> None:
        if isinstance(msg, MsrpResponse):
            session = self._find(msg.to_path)
            if session is not None:
                result.extend((session, e) for e in session.handle_response(msg))
            self._cur = None
            return
        session = self._find(msg.to_path)
        status, inc, start = 0, None, 0
        if session is None:
            status = 481  # RFC 4975 section 7.3
        elif session.connection is None:
            self.bind(session)  # the first request binds the session (section 5.4)
            result.append((session, SessionBound()))
        elif session.connection is not self:
            status = 506  # RFC 4975 section 10.10
        if status == 0 and session is not None and msg.method == "SEND":
            status, inc, start = session.begin_send(msg)
        elif status == 0 and msg.method != "REPORT":
            status = 501
        self._cur = _Inbound(msg, session, status, inc, start, start)

    def _body(self, data: bytes) -> None:
        cur = self._cur
        if cur is None or cur.status:
            return
        if cur.message is not None and cur.session is not None:
            if cur.session.body_data(cur.message, cur.offset, data):
                cur.status = 413  # RFC 4975 section 10.5
            cur.offset += len(data)
        elif cur.request.method == "REPORT":
            cur.report_body.append(data)

    def _end(self, flag: Flag, now: float,
             result: list[tuple[SessionCore, SessionEvent]]) -> None:
        cur, self._cur = self._cur, None
        if cur is None:
            return
        req, session = cur.request, cur.session
        if req.method == "REPORT":
            if session is not None and not cur.status:
                req.body = b"".join(cur.report_body)
                result.extend((session, e) for e in session.handle_report(req))
            return  # never answer a REPORT (section 7.1.2)
        extra: list[bytes] = []
        if not cur.status and cur.message is not None and session is not None:
            events, extra = session.end_send(cur.message, cur.start, cur.offset, flag, now)
            result.extend((session, e) for e in events)
            if session.hold_final_responses and any(isinstance(e, MessageReceived)
                                                    for e in events):
                session.held[cur.message.message_id] = req  # see answer_final
                self._out.extend(extra)
                return
        elif cur.status == 413 and session is not None and cur.message is not None:
            session.refuse(cur.message.message_id)
            result.append((session, MessageAborted(cur.message.message_id)))
        self._respond(req, cur.status or 200)
        self._out.extend(extra)

    def answer_final(self, session: SessionCore, message_id: str, status: int = 200,
                     comment: str | None = None) -> bool:
        """The held response to a message's last chunk (``hold_final_responses``);
        False when none is held for ``message_id``."""
        req = session.held.pop(message_id, None)
        if req is None:
            return False
        self._respond(req, status, comment)
        return True

    def _respond(self, req: MsrpRequest, status: int, comment: str | None = None) -> None:
        """Transaction response per Failure-Report (RFC 4975 sections 7.1.4, 7.2)."""
        fr = req.failure_report
        if fr == "no" or (fr == "partial" and status == 200):
            return
        to = req.header("From-Path") or ""
        to = to.split()[0] if to else to
        frm = (req.header("To-Path") or "").split()
        self._out.append(response_bytes(req.transaction_id, status, to, frm[0] if frm else "",
                                        comment))

    def _bad(self, ev: BadMessage) -> None:
        """400 for a framed but malformed request (RFC 4975 section 10.2)."""
        self._cur = None
        if not ev.is_request:
            return
        hdr = {n.lower(): v for n, v in reversed(ev.headers)}
        to, frm = hdr.get("from-path", "").split(), hdr.get("to-path", "").split()
        if not to or not frm:
            raise ParseError(f"cannot address a 400: {ev.reason}", ev.transaction_id)
        log.info("conn %s: 400 for %s: %s", self.name, ev.transaction_id, ev.reason)
        self._out.append(response_bytes(ev.transaction_id, 400, to[0], frm[0], ev.reason))


def response_bytes(tid: str, status: int, to_path: str, from_path: str,
                   comment: str | None = None) -> bytes:
    """A transaction response; To-Path is the previous hop (RFC 4975 section 7.2)."""
    text = REASON_PHRASES.get(status, "") if comment is None else comment
    text = text.replace("\r", " ").replace("\n", " ")
    line = f"MSRP {tid} {status} {text}".rstrip()
    return f"{line}\r\nTo-Path: {to_path}\r\nFrom-Path: {from_path}\r\n-------{tid}$\r\n".encode()
