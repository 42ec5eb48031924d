"""message/sipfrag: a fragment of a SIP message, as REFER NOTIFYs carry (RFC 3420, RFC 3515)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import ContentProtocolError
from .mime import Headers, format_header_block, parse_header_block

log = logging.getLogger(__name__)

_STATUS_LINE = re.compile(r"SIP/(\d{1,3}\.\d{1,3}) ([1-6]\d\d)(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?\Z")
_REQUEST_LINE = re.compile(r"([A-Za-z0-9.!%*_+`'~-]+) ([^\s]+) SIP/(\d{1,3}\.\d{1,3})\Z")
_HEADER_START = re.compile(r"[\x21-\x39\x3b-\x7e]+[ \t]*:")


@dataclass(slots=True)
class SipFrag:
    """RFC 3420 section 2: [start-line] *message-header [CRLF [message-body]]."""

    status_code: int | None = None
    reason: str | None = None
    method: str | None = None
    request_uri: str | None = None
    headers: Headers = field(default_factory=list)
    body: bytes | None = None
    version: str = "2.0"

    @classmethod
    def status(cls, code: int, reason: str, headers: Iterable[tuple[str, str]] = ()) -> SipFrag:
        """A status-line fragment such as 'SIP/2.0 200 OK' (RFC 3515 section 2.4.5)."""
        frag = cls(status_code=code, reason=reason, headers=list(headers))
        frag.to_bytes()
        return frag

    @property
    def is_final(self) -> bool:
        """A final response ends the implicit REFER subscription (RFC 3515 section 2.4.7)."""
        return self.status_code is not None and self.status_code >= 200

    @property
    def is_success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def start_line(self) -> str | None:
        if self.status_code is not None:
            line = f"SIP/{self.version} {self.status_code} {self.reason or ''}".rstrip(" ")
            if not _STATUS_LINE.match(line):
                raise ContentProtocolError(f"invalid sipfrag status line {line!r}")
            return line
        if self.method is not None:
            line = f"{self.method} {self.request_uri} SIP/{self.version}"
            if not _REQUEST_LINE.match(line):
                raise ContentProtocolError(f"invalid sipfrag request line {line!r}")
            return line
        return None

    def to_bytes(self) -> bytes:
        line = self.start_line()
        out = (line + "\r\n").encode("utf-8") if line is not None else b""
        out += format_header_block(self.headers)
        if self.body is not None:
            out += b"\r\n" + self.body
        return out


def parse_sipfrag(data: bytes) -> SipFrag:
    """Parse a message/sipfrag body; a fragment without a start line is allowed."""
    if not data.strip():
        raise ContentProtocolError("empty sipfrag")
    head, body = _split_body(data)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContentProtocolError("sipfrag start line or headers are not UTF-8") from exc
    first, _, rest = text.partition("\n")
    first = first.removesuffix("\r")
    frag = _start_line(first)
    header_text = rest if frag is not None else text
    frag = frag or SipFrag()
    frag.headers = parse_header_block(header_text.encode("utf-8"), "sipfrag")
    frag.body = body
    return frag


def _split_body(data: bytes) -> tuple[bytes, bytes | None]:
    match = re.search(rb"\r?\n\r?\n", data)
    if match is None:
        return data, None
    rest = data[match.end():]
    return data[:match.start()], rest


def _start_line(line: str) -> SipFrag | None:
    status = _STATUS_LINE.match(line)
    if status:
        return SipFrag(status_code=int(status[2]), reason=status[3] or "", version=status[1])
    request = _REQUEST_LINE.match(line)
    if request:
        return SipFrag(method=request[1], request_uri=request[2], version=request[3])
    if _HEADER_START.match(line):
        return None
    raise ContentProtocolError(f"sipfrag does not start with a start line or header: {line[:60]!r}")
