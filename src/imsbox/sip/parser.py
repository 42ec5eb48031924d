"""Bytes to SIP messages (RFC 3261 sections 7, 18.3, 25).

``parse`` checks the start line, the Content-Length framing and the headers
every element relies on (Via, From, To, Call-ID, CSeq, Max-Forwards,
Content-Length); everything else is validated lazily by the typed views.
"""

from __future__ import annotations

import re

from .errors import SipProtocolError
from .grammar import is_token
from .headers import CSeq, HeaderError, NameAddr, canonical_name, parse_int
from .message import Message, Request, Response, header_key
from .uri import UriError, parse_uri

__all__ = [
    "ParseError", "parse", "MAX_REQUEST_URI", "MAX_HEADERS", "MAX_HEADER_LENGTH",
    "MAX_HEADER_SIZE",
]

MAX_REQUEST_URI = 4096
MAX_HEADERS = 256            # header lines per message (after unfolding)
MAX_HEADER_LENGTH = 8192     # bytes of one (unfolded) header line
MAX_HEADER_SIZE = 64 * 1024  # bytes of the whole header section
_VERSION_RE = re.compile(r"SIP/(\d+)\.(\d+)", re.IGNORECASE)
# Each of these appears at most once in a valid message (20.*).
# Stands in for a Request-URI that was not parsed (partial messages only).
_UNUSABLE_URI = "sip:invalid"
_UNIQUE = ("from", "to", "call-id", "cseq", "max-forwards", "content-length")
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
# Header names as written -> lookup key, for names already checked to be
# tokens: real traffic repeats a few dozen spellings.  Bounded (a flood of
# invented names is parsed the slow way, not remembered).
_NAME_KEYS: dict[str, tuple[str, str]] = {}
_NAME_KEYS_MAX = 2048


class ParseError(SipProtocolError, ValueError):
    """Malformed SIP message.

    ``status`` is the response a UAS should send (400 unless a more precise
    code fits: 414, 505, 513 ...); ``partial`` is the message as far as it
    could be built, so a 400 can still be addressed back to its sender.
    ``bad_start_line`` says the start line itself was unparseable: on a stream
    the sender cannot be trusted to frame what follows either.
    """

    def __init__(self, reason: str, status: int = 400,
                 partial: Message | None = None, *, bad_start_line: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial
        self.bad_start_line = bad_start_line


def parse(data: bytes, *, max_headers: int = MAX_HEADERS,
          max_header_length: int = MAX_HEADER_LENGTH,
          max_header_size: int = MAX_HEADER_SIZE) -> Request | Response:
    """Parse one complete SIP message (a datagram or a framed stream message).

    Beyond the limits nothing more is kept: the error's partial message holds
    the headers read so far (bounded), enough to address the answer."""
    head, body = _split_head(data)
    deferred: ParseError | None = None
    if len(head) > max_header_size:
        head = head[:max_header_size]
        deferred = ParseError(f"header section exceeds {max_header_size} bytes", 513)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("header section is not UTF-8") from None
    lines = _lines(text)
    if deferred is not None:
        lines = lines[:-1]  # cut mid-line
    if not lines:
        raise ParseError("empty message")
    message, start_error = _start_line(lines[0])
    try:
        header_error = _read_headers(message, lines, max_headers, max_header_length)
    except _Folded:
        message.headers._lines.clear()
        lines = _unfold(lines)
        header_error = _read_headers(message, lines, max_headers, max_header_length)
    deferred, start_error, header_error = start_error or deferred or header_error, None, None
    keys = [key for key, _, _ in message.headers._lines]
    if deferred is not None:
        deferred.partial = message
        try:
            raise deferred
        finally:
            # No exception -> traceback -> this frame -> exception cycle: a
            # flood of bad messages would keep their lines until a full GC.
            del deferred
    message.body = _frame_body(message, body, keys.count("content-length"))
    _validate(message, keys)
    return message


def _read_headers(message: Message, lines: list[str], max_headers: int,
                  max_header_length: int) -> ParseError | None:
    """Append the header lines to message; a limit overrun is returned."""
    out = message.headers._lines
    name_keys = _NAME_KEYS
    if len(lines) - 1 <= max_headers and max(map(len, lines)) <= max_header_length:
        # Within every limit (nearly always): only names seen before are cheap.
        for line in lines[1:]:
            written, colon, value = line.partition(":")
            known = name_keys.get(written) if colon else None
            if known is None:
                known = _header_name(message, line, written, colon)
            out.append((known[0], known[1], value.strip(" \t")))
        return None
    deferred = None
    for line in lines[1:]:
        if len(out) >= max_headers:
            deferred = deferred or ParseError(f"too many headers (over {max_headers})")
            break
        if len(line) > max_header_length:
            deferred = deferred or ParseError(
                f"header {line[:20].partition(':')[0]!r} longer than {max_header_length} bytes")
            continue
        written, colon, value = line.partition(":")
        known = name_keys.get(written) if colon else None
        if known is None:
            known = _header_name(message, line, written, colon)
        out.append((known[0], known[1], value.strip(" \t")))
    return deferred


def _header_name(message: Message, line: str, written: str, colon: str) -> tuple[str, str]:
    """(lookup key, name) of a header name not seen before; checks it is a token."""
    if line[:1] in (" ", "\t"):
        raise _Folded
    name = written.rstrip(" \t")
    if not colon or not is_token(name):
        raise ParseError(f"malformed header line {line[:40]!r}", partial=message)
    known = (header_key(name), name)
    if len(_NAME_KEYS) < _NAME_KEYS_MAX:
        _NAME_KEYS[written] = known
    return known


class _Folded(Exception):
    """A continuation line (7.3.1 LWS folding): the lines must be unfolded."""


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    # Leading CRLFs are keep-alives or stream slack (7.5).
    data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4:]
    end = data.find(b"\n\n")
    if end >= 0:
        return data[:end], data[end + 2:]
    if data.endswith(b"\n"):
        return data.rstrip(b"\r\n"), b""
    raise ParseError("no empty line after the header section")


def _lines(text: str) -> list[str]:
    """Header section to non-empty lines (CRLF or bare LF); folded lines
    are joined later, by _read_headers, only when there are any."""
    lines = text.split("\r\n")
    if text.count("\n") != len(lines) - 1:  # some bare LF line ends
        lines = text.replace("\r\n", "\n").split("\n")
    if "" in lines:
        return [line for line in lines if line]
    return lines


def _unfold(lines: list[str]) -> list[str]:
    """Join continuation lines (7.3.1: LWS folding) onto their header."""
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            out[-1] = out[-1].rstrip(" \t") + " " + line.strip(" \t")
        elif line:
            out.append(line)
    return out


def _start_line(line: str) -> tuple[Request | Response, ParseError | None]:
    """The message begun by the start line, and an error to raise once the
    headers are read: a bad version or Request-URI is answerable (8.2.6)."""
    if line.startswith("SIP/") or line[:4].upper() == "SIP/":
        return _status_line(line), None
    parts = line.split(" ")
    if len(parts) != 3:
        # RFC 4475 3.1.2.11-13 (lwsruri, lwsstart, trws): answerable when the
        # method is readable, so the sender learns why (8.2.6).
        reason = f"malformed Request-Line {line[:60]!r}"
        if not is_token(parts[0]):
            raise ParseError(reason, bad_start_line=True)
        return Request(parts[0], _UNUSABLE_URI), ParseError(reason, bad_start_line=True)
    method, uri_text, version = parts
    if not is_token(method):
        raise ParseError(f"bad method {method[:20]!r}", bad_start_line=True)
    try:
        _check_version(version)
        if len(uri_text) > MAX_REQUEST_URI:
            raise ParseError("Request-URI too long", status=414)
        uri = parse_uri(uri_text)
    except ParseError as exc:
        return Request(method, _UNUSABLE_URI), exc
    except UriError as exc:
        return Request(method, _UNUSABLE_URI), ParseError(f"bad Request-URI: {exc}")
    return Request(method, uri), None


def _status_line(line: str) -> Response:
    version, _, rest = line.partition(" ")
    _check_version(version)
    code, _, reason = rest.partition(" ")
    if len(code) != 3 or not code.isdigit() or not "100" <= code <= "699":
        raise ParseError(f"bad status code {code[:10]!r}")
    return Response(int(code), reason.strip())


def _check_version(version: str) -> None:
    if version == "SIP/2.0":
        return
    match = _VERSION_RE.fullmatch(version)
    if not match:
        raise ParseError(f"bad SIP-Version {version[:20]!r}")
    if (int(match.group(1)), int(match.group(2))) != (2, 0):
        raise ParseError(f"SIP version {version} not supported", status=505)


def _frame_body(message: Message, body: bytes, count: int) -> bytes:
    """18.3: Content-Length frames the body; extra datagram bytes are dropped."""
    if not count:
        return body
    if count > 1:
        raise ParseError("more than one Content-Length header", partial=message)
    try:
        length = parse_int("Content-Length", message.headers.get("content-length") or "")
    except HeaderError as exc:
        raise ParseError(str(exc), partial=message) from None
    if length > len(body):
        raise ParseError(
            f"body shorter than Content-Length ({len(body)} < {length})", partial=message)
    return body[:length]


def _validate(message: Request | Response, keys: list[str]) -> None:
    """Check the headers every element relies on (8.1.1, 8.2.2).

    The typed views parsed here go straight into the message's cache: the
    element that reads them next does not parse them again."""
    lines = message.headers._lines
    first = {key: value for key, _, value in reversed(lines)}
    for key in _REQUIRED:
        if key not in first:
            raise ParseError(f"missing {canonical_name(key)} header", partial=message)
    if len(first) != len(keys):  # some header repeats: none of these may
        for key in _UNIQUE:
            if keys.count(key) > 1:
                raise ParseError(f"more than one {canonical_name(key)} header",
                                 partial=message)
    cache = message._cache
    try:
        if not message.headers.values("via"):
            raise ParseError("empty Via header", partial=message)
        message.first_via()  # the rest of the stack is parsed when read
        cache["from"] = NameAddr.parse(first["from"], "From")
        cache["to"] = NameAddr.parse(first["to"], "To")
        max_forwards = first.get("max-forwards")
        if max_forwards is not None:
            parse_int("Max-Forwards", max_forwards, 255)
        cseq = CSeq.parse(first["cseq"])
        cache["cseq"] = cseq
        if not first["call-id"].strip():
            raise HeaderError("Call-ID", "empty")
    except HeaderError as exc:
        cache.clear()
        raise ParseError(str(exc), partial=message) from None
    if isinstance(message, Request) and cseq.method != message.method:
        raise ParseError(
            f"CSeq method {cseq.method} does not match {message.method}", partial=message)
