"""MSRP requests and responses as typed values (RFC 4975 section 9)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from .errors import ParseError
from .uri import MsrpUri, parse_path

IDENT_RE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9.+%=-]{3,31}\Z")
_IDENT_STR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+%=-]{3,31}\Z", re.ASCII)
_BYTE_RANGE_RE = re.compile(r"([0-9]{1,18})-([0-9]{1,18}|\*)/([0-9]{1,18}|\*)\Z", re.ASCII)
_STATUS_RE = re.compile(r"([0-9]{3}) ([0-9]{3})(?: (.*))?\Z", re.ASCII | re.DOTALL)

REASON_PHRASES: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    413: "Message Too Large",
    415: "Unsupported Media Type",
    423: "Parameter Out Of Bounds",
    481: "Session Does Not Exist",
    501: "Unknown Method",
    506: "Session Already Bound",
}


class Flag(enum.Enum):
    """End-line continuation flag (RFC 4975 section 9)."""

    COMPLETE = "$"
    CONTINUED = "+"
    ABORTED = "#"


def is_ident(value: str) -> bool:
    """ident = ALPHANUM 3*31ident-char (RFC 4975 section 9)."""
    return _IDENT_STR_RE.match(value) is not None


@dataclass(slots=True, frozen=True)
class ByteRange:
    """Byte-Range: start-end/total, 1-based, ``None`` for ``*`` (RFC 4975 section 7.1.1)."""

    start: int
    end: int | None
    total: int | None

    @classmethod
    def parse(cls, value: str) -> ByteRange:
        m = _BYTE_RANGE_RE.match(value.strip())
        if m is None:
            raise ParseError(f"malformed Byte-Range {value[:40]!r}")
        start = int(m[1])
        end = None if m[2] == "*" else int(m[2])
        total = None if m[3] == "*" else int(m[3])
        if start < 1:
            raise ParseError("Byte-Range start must be at least 1")
        if end is not None and end < start - 1:
            raise ParseError("Byte-Range end lies before its start")
        if total is not None and end is not None and end > total:
            raise ParseError("Byte-Range end exceeds its total")
        return cls(start, end, total)

    def __str__(self) -> str:
        end = "*" if self.end is None else str(self.end)
        total = "*" if self.total is None else str(self.total)
        return f"{self.start}-{end}/{total}"


@dataclass(slots=True, frozen=True)
class Status:
    """Status header: namespace, code, comment (RFC 4975 section 9)."""

    code: int
    comment: str = ""
    namespace: str = "000"

    @classmethod
    def parse(cls, value: str) -> Status:
        m = _STATUS_RE.match(value.strip())
        if m is None:
            raise ParseError(f"malformed Status {value[:40]!r}")
        return cls(int(m[2]), m[3] or "", m[1])

    def __str__(self) -> str:
        return f"{self.namespace} {self.code} {self.comment}".rstrip()


@dataclass(slots=True)
class _Message:
    transaction_id: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """First value of a header, name compared case-insensitively."""
        lname = name.lower()
        for n, v in self.headers:  # n == name first: peers mostly write RFC case
            if n == name or n.lower() == lname:
                return v
        return None

    @property
    def to_path(self) -> tuple[MsrpUri, ...]:
        return parse_path(self.header("To-Path") or "")

    @property
    def from_path(self) -> tuple[MsrpUri, ...]:
        return parse_path(self.header("From-Path") or "")

    @property
    def message_id(self) -> str | None:
        return self.header("Message-ID")

    def _head(self, start_line: str) -> str:
        lines = [start_line]
        lines.extend(f"{n}: {v}" for n, v in self.headers)
        return "\r\n".join(lines) + "\r\n"


@dataclass(slots=True)
class MsrpRequest(_Message):
    """An MSRP request (SEND, REPORT or an extension method)."""

    method: str = "SEND"
    body: bytes = b""
    flag: Flag = Flag.COMPLETE
    has_body: bool = False  # a blank line and content-stuff were present

    @property
    def byte_range(self) -> ByteRange | None:
        v = self.header("Byte-Range")
        return None if v is None else ByteRange.parse(v)

    @property
    def content_type(self) -> str | None:
        return self.header("Content-Type")

    @property
    def success_report(self) -> bool:
        """Absent means "no" (RFC 4975 section 7.1.1)."""
        return (self.header("Success-Report") or "no").strip().lower() == "yes"

    @property
    def failure_report(self) -> str:
        """Absent means "yes" (RFC 4975 section 7.1.1)."""
        return (self.header("Failure-Report") or "yes").strip().lower()

    @property
    def status(self) -> Status | None:
        v = self.header("Status")
        return None if v is None else Status.parse(v)

    def __bytes__(self) -> bytes:
        head = self._head(f"MSRP {self.transaction_id} {self.method}").encode()
        end = f"-------{self.transaction_id}{self.flag.value}\r\n".encode()
        if self.has_body or self.body or self.content_type is not None:
            return head + b"\r\n" + self.body + b"\r\n" + end
        return head + end


@dataclass(slots=True)
class MsrpResponse(_Message):
    """An MSRP transaction response; never has a body (RFC 4975 section 7.2)."""

    status: int = 200
    comment: str = ""

    def __bytes__(self) -> bytes:
        line = f"MSRP {self.transaction_id} {self.status}"
        if self.comment:
            line += f" {self.comment}"
        return (self._head(line) + f"-------{self.transaction_id}$\r\n").encode()


def validate_headers(msg: MsrpRequest | MsrpResponse) -> None:
    """Header rules of RFC 4975 section 9; raises ParseError naming the fault."""
    names = [n.lower() for n, _ in msg.headers]
    if len(names) < 2 or names[0] != "to-path" or names[1] != "from-path":
        raise ParseError("To-Path and From-Path must be the first two headers",
                         msg.transaction_id)
    try:
        msg.to_path, msg.from_path  # noqa: B018 - parse for validation
        if isinstance(msg, MsrpResponse):
            return
        mid = msg.message_id
        if mid is not None and not is_ident(mid.strip()):
            raise ParseError(f"malformed Message-ID {mid[:40]!r}")
        msg.byte_range  # noqa: B018
        if msg.header("Success-Report") is not None and \
                msg.header("Success-Report").strip().lower() not in ("yes", "no"):  # type: ignore[union-attr]
            raise ParseError("Success-Report must be yes or no")
        if msg.failure_report not in ("yes", "no", "partial"):
            raise ParseError("Failure-Report must be yes, no or partial")
        msg.status  # noqa: B018
        if msg.has_body and msg.content_type is None:
            raise ParseError("a body requires a Content-Type")
        if msg.method == "SEND" and mid is None:
            raise ParseError("SEND without Message-ID")
        if msg.method == "REPORT" and (mid is None or msg.header("Status") is None):
            raise ParseError("REPORT needs Message-ID and Status")
    except ParseError as e:
        e.transaction_id = msg.transaction_id
        raise
