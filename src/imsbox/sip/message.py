"""SIP requests and responses (RFC 3261 section 7) with lazily typed headers.

Headers are kept as written, in order, as ``(name, value)`` lines; typed views
(``msg.via``, ``msg.cseq`` ...) are parsed on first use and cached until the
header is changed.  Typed views are read-only: to change a header, build a new
value (or copy the view) and set it; ``copy()`` shares the parsed views.
``bytes(msg)`` gives the wire form with a Content-Length that always matches
the body.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from typing import TypeVar
from collections.abc import Callable, Iterator

from .grammar import GrammarError, split_unquoted
from .headers import (
    COMPACT_FORMS,
    CSeq,
    Contact,
    HeaderError,
    MediaType,
    NameAddr,
    Via,
    canonical_name,
    name_addr_list,
    parse_int,
    token_list,
)
from .uri import Uri, parse_uri

__all__ = ["Headers", "Message", "Request", "Response", "REASON_PHRASES", "new_branch", "new_tag"]

T = TypeVar("T")

_KEY_OF_COMPACT = {k: v.lower() for k, v in COMPACT_FORMS.items()}

# Headers whose value is never a comma list (20.*): commas inside are data.
SINGLE_VALUE = frozenset({
    "call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type",
    "date", "subject", "user-agent", "server", "authorization", "proxy-authorization",
    "www-authenticate", "proxy-authenticate", "expires", "min-expires", "session-expires",
    "min-se", "rseq", "rack", "event", "subscription-state", "refer-to", "referred-by",
    "replaces", "join", "timestamp", "organization", "retry-after", "priority",
    "conversation-id", "contribution-id", "p-access-network-info", "p-charging-vector",
    "p-charging-function-addresses", "content-disposition", "mime-version",
})


def header_key(name: str) -> str:
    """Lookup key of a header name: lower-case long form."""
    low = name.lower()
    return _KEY_OF_COMPACT.get(low, low) if len(low) == 1 else low


def new_branch() -> str:
    """A fresh RFC 3261 branch (8.1.1.7: starts with the magic cookie)."""
    return "z9hG4bK" + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


# Cache key of the top Via parsed alone (see first_via); never a header name.
_TOP_VIA = " top-via"

# List headers whose cached typed view push/pop keep up to date in place.
_ELEMENT_PARSERS: dict[str, Callable[[str], object]] = {
    "via": Via.parse,
    "route": lambda v: NameAddr.parse(v, "Route"),
    "record-route": lambda v: NameAddr.parse(v, "Record-Route"),
}


class Headers:
    """Ordered header lines; names case-insensitive, compact forms folded."""

    __slots__ = ("_lines",)

    def __init__(self, lines: list[tuple[str, str]] | None = None) -> None:
        # (key, name as written, value)
        self._lines: list[tuple[str, str, str]] = [
            (header_key(n), n, v) for n, v in (lines or [])
        ]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _, n, v in self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, name: str) -> bool:
        key = header_key(name)
        return any(k == key for k, _, _ in self._lines)

    def copy(self) -> Headers:
        h = Headers()
        h._lines = list(self._lines)
        return h

    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first header line with this name."""
        key = header_key(name)
        for k, _, v in self._lines:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every header line's value, in order."""
        key = header_key(name)
        return [v for k, _, v in self._lines if k == key]

    def values(self, name: str) -> list[str]:
        """Every element of a list header: lines split at top-level commas."""
        key = header_key(name)
        out: list[str] = []
        for k, _, v in self._lines:
            if k == key:
                if key in SINGLE_VALUE:
                    out.append(v)
                else:
                    try:
                        out.extend(split_unquoted(v))
                    except GrammarError as exc:
                        raise HeaderError(canonical_name(name), str(exc)) from None
        return out

    def add(self, name: str, value: str) -> None:
        """Append a header line at the end."""
        self._lines.append((header_key(name), name, value))

    def push(self, name: str, value: str) -> None:
        """Insert above the first line of that name (or on top): Via, Record-Route."""
        key = header_key(name)
        for i, (k, _, _) in enumerate(self._lines):
            if k == key:
                self._lines.insert(i, (key, name, value))
                return
        self._lines.insert(0, (key, name, value))

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first element of a list header (top Via, Route)."""
        key = header_key(name)
        for i, (k, n, v) in enumerate(self._lines):
            if k == key:
                items = split_unquoted(v) if key not in SINGLE_VALUE else [v]
                if len(items) <= 1:
                    del self._lines[i]
                else:
                    self._lines[i] = (k, n, ", ".join(items[1:]))
                return items[0] if items else None
        return None

    def set(self, name: str, value: str) -> None:
        """Replace every line of this name with one line (kept in place)."""
        key = header_key(name)
        for i, (k, n, _) in enumerate(self._lines):
            if k == key:
                self._lines[i] = (k, n, value)
                self._lines[i + 1:] = [t for t in self._lines[i + 1:] if t[0] != key]
                return
        self._lines.append((key, name, value))

    def remove(self, name: str) -> int:
        key = header_key(name)
        before = len(self._lines)
        self._lines = [t for t in self._lines if t[0] != key]
        return before - len(self._lines)

    def items_raw(self) -> list[tuple[str, str, str]]:
        return list(self._lines)


class Message(ABC):
    """Common part of Request and Response."""

    __slots__ = ("headers", "body", "_cache")

    def __init__(self, headers: Headers | list[tuple[str, str]] | None = None,
                 body: bytes = b"") -> None:
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body
        self._cache: dict[str, object] = {}

    # -- header editing that keeps the typed cache honest -----------------
    def _changed(self, name: str) -> None:
        key = header_key(name)
        self._cache.pop(key, None)
        if key == "via":
            self._cache.pop(_TOP_VIA, None)

    def add_header(self, name: str, value: str) -> None:
        self.headers.add(name, value)
        self._changed(name)

    def push_header(self, name: str, value: str) -> None:
        key = header_key(name)
        self.headers.push(name, value)
        if key == "via":
            self._cache.pop(_TOP_VIA, None)
        cached = self._cache.get(key)
        element = _ELEMENT_PARSERS.get(key)
        if cached is None or element is None:
            self._cache.pop(key, None)
            return
        # Proxies push a Via/Record-Route on every hop: parse just the new one.
        try:
            self._cache[key] = [element(v) for v in split_unquoted(value)] + cached  # type: ignore[operator]
        except (HeaderError, GrammarError):
            self._cache.pop(key, None)

    def pop_header(self, name: str) -> str | None:
        key = header_key(name)
        if key == "via":
            self._cache.pop(_TOP_VIA, None)
        cached = self._cache.get(key)
        value = self.headers.pop_first(name)
        if value is not None and cached is not None and key in _ELEMENT_PARSERS:
            self._cache[key] = cached[1:]  # type: ignore[index]
        else:
            self._cache.pop(key, None)
        return value

    def set_header(self, name: str, value: str) -> None:
        self.headers.set(name, value)
        self._changed(name)

    def remove_header(self, name: str) -> int:
        self._changed(name)
        return self.headers.remove(name)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def _typed(self, key: str, build: Callable[[], T]) -> T:
        try:
            return self._cache[key]  # type: ignore[return-value]
        except KeyError:
            value = build()
            self._cache[key] = value
            return value

    def _single(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise HeaderError(name, "missing")
        return value

    # -- typed views ------------------------------------------------------
    @property
    def via(self) -> list[Via]:
        return self._typed("via", lambda: [Via.parse(v) for v in self.headers.values("via")])

    @property
    def top_via(self) -> Via:
        return self.first_via()

    def first_via(self) -> Via:
        """The top Via, parsed alone when the stack is not parsed yet (the
        rest of the stack is parsed when ``via`` is read): a later malformed
        Via must not stop a reply to the sender."""
        cached = self._cache.get("via")
        if cached:
            return cached[0]  # type: ignore[index, no-any-return]
        top = self._cache.get(_TOP_VIA)
        if top is not None:
            return top  # type: ignore[return-value]
        values = self.headers.values("via")
        if not values:
            raise HeaderError("Via", "missing")
        via = Via.parse(values[0])
        if len(values) == 1:
            self._cache["via"] = [via]
        else:
            self._cache[_TOP_VIA] = via
        return via

    def replace_top_via(self, via: Via) -> None:
        """Put ``via`` in place of the top Via (18.2.1 received / rport)."""
        self.pop_header("Via")
        self.headers.push("Via", str(via))
        cached = self._cache.get("via")
        if cached is not None:
            self._cache["via"] = [via, *cached]  # type: ignore[misc]

    @property
    def from_(self) -> NameAddr:
        return self._typed("from", lambda: NameAddr.parse(self._single("From"), "From"))

    @property
    def to(self) -> NameAddr:
        return self._typed("to", lambda: NameAddr.parse(self._single("To"), "To"))

    @property
    def call_id(self) -> str:
        return self._single("Call-ID").strip()

    @property
    def cseq(self) -> CSeq:
        return self._typed("cseq", lambda: CSeq.parse(self._single("CSeq")))

    @property
    def max_forwards(self) -> int | None:
        v = self.headers.get("Max-Forwards")
        return None if v is None else parse_int("Max-Forwards", v, 255)

    @property
    def contact(self) -> list[Contact]:
        return self._typed("contact",
                           lambda: [Contact.parse(v) for v in self.headers.values("contact")])

    @property
    def route(self) -> list[NameAddr]:
        return self._typed("route", lambda: self._addr_list("Route"))

    @property
    def record_route(self) -> list[NameAddr]:
        return self._typed("record-route", lambda: self._addr_list("Record-Route"))

    @property
    def path(self) -> list[NameAddr]:
        return self._typed("path", lambda: self._addr_list("Path"))

    @property
    def service_route(self) -> list[NameAddr]:
        return self._typed("service-route", lambda: self._addr_list("Service-Route"))

    def _addr_list(self, name: str) -> list[NameAddr]:
        out: list[NameAddr] = []
        for v in self.headers.get_all(name):
            out.extend(name_addr_list(name, v))
        return out

    @property
    def content_type(self) -> MediaType | None:
        v = self.headers.get("Content-Type")
        return None if v is None else self._typed("content-type", lambda: MediaType.parse(v))

    def tokens(self, name: str) -> list[str]:
        """Require / Supported / Allow / Proxy-Require / Unsupported as tokens."""
        out: list[str] = []
        for v in self.headers.get_all(name):
            out.extend(token_list(canonical_name(name), v))
        return out

    def expires(self) -> int | None:
        v = self.headers.get("Expires")
        return None if v is None else parse_int("Expires", v)

    # -- wire form --------------------------------------------------------
    @abstractmethod
    def start_line(self) -> str:
        """The Request-Line or Status-Line, without CRLF."""

    def __bytes__(self) -> bytes:
        lines = [self.start_line()]
        has_length = False
        for key, name, value in self.headers._lines:
            if key == "content-length":
                if has_length:
                    continue
                has_length = True
                value = str(len(self.body))
            lines.append(f"{name}: {value}")
        if not has_length:
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8") + self.body

    def __str__(self) -> str:
        return bytes(self).decode("utf-8", "replace")


class Request(Message):
    """A SIP request: method, Request-URI, headers, body."""

    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri: Uri | str,
                 headers: Headers | list[tuple[str, str]] | None = None,
                 body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def copy(self) -> Request:
        out = Request(self.method, _copy_uri(self.uri), self.headers.copy(), self.body)
        out._cache = dict(self._cache)  # typed views are never edited in place
        return out

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response: status code, reason phrase, headers, body."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str | None = None,
                 headers: Headers | list[tuple[str, str]] | None = None,
                 body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason if reason is not None else REASON_PHRASES.get(status, "Unknown")

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_final(self) -> bool:
        return self.status >= 200

    def copy(self) -> Response:
        out = Response(self.status, self.reason, self.headers.copy(), self.body)
        out._cache = dict(self._cache)  # typed views are never edited in place
        return out

    @classmethod
    def for_request(cls, request: Request, status: int, reason: str | None = None,
                    to_tag: str | None = None, body: bytes = b"",
                    content_type: str | None = None) -> Response:
        """Build a response per 8.2.6: copy Via, From, To, Call-ID, CSeq."""
        headers = Headers()
        for key, name, value in request.headers._lines:
            if key in ("via", "from", "call-id", "cseq", "timestamp"):
                headers._lines.append((key, name, value))
            elif key == "to":
                if to_tag and ";tag=" not in value.replace(" ", "").lower():
                    value = f"{value};tag={to_tag}"
                headers._lines.append((key, name, value))
            elif key == "record-route" and 100 < status < 300:
                headers._lines.append((key, name, value))
        if content_type:
            headers.add("Content-Type", content_type)
        return cls(status, reason, headers, body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _copy_uri(uri: Uri) -> Uri:
    copy = getattr(uri, "copy", None)
    return copy() if copy else parse_uri(str(uri))


REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief",
    429: "Provide Referrer Identity", 430: "Flow Failed", 439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
