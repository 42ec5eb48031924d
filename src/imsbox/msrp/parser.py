"""Sans-I/O incremental MSRP parser (RFC 4975 section 9).

Bodies are streamed: the parser never holds more than one header section plus
a short tail that might be the start of an end-line, so a chunk of any size
passes through in pieces.  The end of a body is the exact end-line
``CRLF -------<tid><flag> CRLF``; it is found with ``bytearray.find``.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from .errors import ParseError
from .message import IDENT_RE, Flag, MsrpRequest, MsrpResponse, validate_headers

log = logging.getLogger(__name__)

_FLAGS = {36: Flag.COMPLETE, 43: Flag.CONTINUED, 35: Flag.ABORTED}  # $ + #
MAX_START_LINE = 1024


@dataclass(slots=True)
class MessageStart:
    """Start line and headers are complete; body pieces (if any) follow."""

    message: MsrpRequest | MsrpResponse


@dataclass(slots=True)
class BodyData:
    """A piece of the body of the current request."""

    transaction_id: str
    data: bytes


@dataclass(slots=True)
class MessageEnd:
    """The end-line of the current message."""

    transaction_id: str
    flag: Flag


@dataclass(slots=True)
class BadMessage:
    """A framed message with a fault; the parser skipped to its end-line.

    ``headers`` holds what was read, so a 400 can be addressed.
    """

    transaction_id: str
    is_request: bool
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)


Event = MessageStart | BodyData | MessageEnd | BadMessage


class _State(enum.Enum):
    START_LINE = "start-line"
    HEADERS = "headers"
    BODY = "body"
    SKIP = "skip"  # discarding a bad message up to its end-line
    FAILED = "failed"


class MsrpParser:
    """Feed bytes, get events.  Raises ParseError when framing is lost."""

    def __init__(self, max_header_size: int = 16384) -> None:
        self.max_header_size = max_header_size
        self._buf = bytearray()
        self._pos = 0
        self._state = _State.START_LINE
        self._tid = ""
        self._end = b""  # b"\r\n-------" + tid
        self._msg: MsrpRequest | MsrpResponse | None = None
        self._head_start = 0  # buffer offset where the current header section began
        self._head_size = 0
        self._pending_bad = ""
        self.messages_done = 0  # complete messages (requests, responses, bad ones) so far

    @property
    def in_message(self) -> bool:
        """True while a message has begun but not ended (for a deadline on it)."""
        return self._state is not _State.START_LINE or len(self._buf) > self._pos

    def _message_done(self) -> None:
        self._state = _State.START_LINE
        self.messages_done += 1

    def feed(self, data: bytes) -> list[Event]:
        """Consume bytes; return the events they complete."""
        if self._state is _State.FAILED:
            raise ParseError("connection framing already lost")
        self._buf += data
        events: list[Event] = []
        try:
            while self._step(events):
                pass
        except ParseError as e:
            self._state = _State.FAILED
            e.events = events
            raise
        if self._pos:
            del self._buf[: self._pos]
            self._head_start -= self._pos
            self._pos = 0
        return events

    def _step(self, events: list[Event]) -> bool:
        state = self._state
        if state is _State.BODY or state is _State.SKIP:
            return self._body(events)
        if state is _State.HEADERS:
            return self._header_line(events)
        return self._start_line()

    def _line(self, limit: int, reason: str = "") -> bytes | None:
        """Next CRLF-terminated line without its CRLF, or None if incomplete."""
        i = self._buf.find(b"\r\n", self._pos)
        if i < 0:
            if len(self._buf) - self._pos > limit:
                raise ParseError(reason or f"line longer than {limit} bytes", self._tid or None)
            return None
        line = bytes(self._buf[self._pos : i])
        self._pos = i + 2
        return line

    def _start_line(self) -> bool:
        line = self._line(MAX_START_LINE)
        if line is None:
            return False
        if not line:
            return True  # tolerate stray CRLF between messages
        parts = line.split(b" ", 3)
        if parts[0] != b"MSRP" or len(parts) < 3:
            raise ParseError("start line is not 'MSRP <tid> <method|status>'")
        if IDENT_RE.match(parts[1]) is None:
            raise ParseError("malformed transaction id in start line")
        tid = parts[1].decode("ascii")
        self._tid = tid
        self._end = b"\r\n-------" + parts[1]
        self._head_start = self._pos
        self._head_size = len(line)
        self._state = _State.HEADERS
        word = parts[2]
        if len(word) == 3 and word.isdigit():
            comment = parts[3] if len(parts) > 3 else b""
            self._msg = MsrpResponse(tid, [], int(word), self._text(comment))
        elif word.isalpha() and word.isupper() and len(parts) == 3:
            self._msg = MsrpRequest(tid, [], method=word.decode("ascii"))
        else:
            self._msg = MsrpRequest(tid, [], method="?")
            self._bad("malformed method or status in start line")
        return True

    def _text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("header text is not UTF-8", self._tid) from None

    def _header_line(self, events: list[Event]) -> bool:
        limit = self.max_header_size - self._head_size
        line = self._line(max(limit, 0), f"header section exceeds {self.max_header_size} bytes")
        if line is None:
            return False
        self._head_size += len(line) + 2
        if self._head_size > self.max_header_size:
            raise ParseError(f"header section exceeds {self.max_header_size} bytes", self._tid)
        msg = self._msg
        assert msg is not None
        if line.startswith(b"-------"):
            if line[:-1] != self._end[2:] or line[-1] not in _FLAGS:
                self._bad("unexpected end-line")
                return True
            return self._finish_headers(events, _FLAGS[line[-1]])
        if not line:
            if isinstance(msg, MsrpResponse):
                self._bad("a response must not have a body")
                return True
            msg.has_body = True
            return self._finish_headers(events, None)
        name, colon, value = line.partition(b":")
        name = name.strip()
        if not colon or not name or not name.replace(b"-", b"").isalnum():
            self._bad("malformed header line")
            return True
        msg.headers.append((name.decode("ascii"), self._text(value.strip())))
        return True

    def _finish_headers(self, events: list[Event], flag: Flag | None) -> bool:
        msg = self._msg
        assert msg is not None
        try:
            validate_headers(msg)
        except ParseError as e:
            if flag is None:
                self._bad(e.reason, back=False)  # body follows: skip it
            else:
                self._emit_bad(events, e.reason)
                self._message_done()
            return True
        events.append(MessageStart(msg))
        if flag is None:
            self._state = _State.BODY  # data starts here; an empty body is CRLF end-line
        else:
            events.append(MessageEnd(self._tid, flag))
            self._message_done()
        return True

    def _bad(self, reason: str, back: bool = True) -> None:
        """Skip to this tid's end-line; ``back`` re-reads the last CRLF, which
        may be the CRLF that precedes an end-line right after a header line."""
        if back:
            self._pos -= 2
        self._pending_bad = reason
        self._state = _State.SKIP

    def _emit_bad(self, events: list[Event], reason: str) -> None:
        msg = self._msg
        events.append(BadMessage(self._tid, isinstance(msg, MsrpRequest),
                                 reason, list(msg.headers) if msg else []))

    def _body(self, events: list[Event]) -> bool:
        buf = self._buf
        end = self._end
        pos = self._pos
        i = buf.find(end, pos)
        n = len(buf)
        while i >= 0:
            j = i + len(end)
            if j + 3 > n:
                self._data(events, pos, i)
                self._pos = i
                return False
            flag = _FLAGS.get(buf[j])
            if flag is not None and buf[j + 1] == 13 and buf[j + 2] == 10:
                self._data(events, pos, i)
                self._pos = j + 3
                if self._state is _State.SKIP:
                    self._emit_bad(events, self._pending_bad)
                else:
                    events.append(MessageEnd(self._tid, flag))
                self._message_done()
                return True
            i = buf.find(end, i + 1)
        safe = n - len(end) + 1
        if safe > pos:
            self._data(events, pos, safe)
            self._pos = safe
        return False

    def _data(self, events: list[Event], a: int, b: int) -> None:
        if b <= a or self._state is _State.SKIP:
            return
        with memoryview(self._buf) as mv:
            events.append(BodyData(self._tid, mv[a:b].tobytes()))


def parse(data: bytes) -> MsrpRequest | MsrpResponse:
    """Parse exactly one complete MSRP message; raise ParseError otherwise."""
    parser = MsrpParser(max_header_size=max(16384, len(data)))
    events = parser.feed(data)
    if parser._state is not _State.START_LINE or parser._buf.strip(b"\r\n"):
        raise ParseError("incomplete MSRP message")
    msg: MsrpRequest | MsrpResponse | None = None
    body: list[bytes] = []
    for ev in events:
        if isinstance(ev, BadMessage):
            raise ParseError(ev.reason, ev.transaction_id)
        if isinstance(ev, MessageStart):
            if msg is not None:
                raise ParseError("more than one MSRP message")
            msg = ev.message
        elif isinstance(ev, BodyData):
            body.append(ev.data)
        elif isinstance(ev, MessageEnd) and isinstance(msg, MsrpRequest):
            msg.flag = ev.flag
    if msg is None:
        raise ParseError("no MSRP message")
    if isinstance(msg, MsrpRequest):
        msg.body = b"".join(body)
    return msg
