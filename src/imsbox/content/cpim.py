"""message/cpim: Common Presence and Instant Messaging message format (RFC 3862)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from .errors import ContentProtocolError, ContentUsageError
from .mime import Headers, format_header_block, get_header, parse_header_block, split_head_body
from .xmlsafe import format_datetime, parse_datetime, parse_uint

log = logging.getLogger(__name__)

CPIM_HEADERS_NS = "urn:ietf:params:cpim-headers:"

_NAME = r"[!#$%&'*+\-^_`|~A-Za-z0-9]+"
_HEADER_NAME = re.compile(rf"(?:({_NAME})\.)?({_NAME})\Z")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~A-Za-z0-9\x80-\U0010ffff]+\Z")
_CTL = re.compile("[\x00-\x1f\x7f]")
_SIMPLE_ESCAPES = MappingProxyType({"\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_UNESCAPES = MappingProxyType({"b": "\b", "t": "\t", "n": "\n", "r": "\r"})


def cpim_escape(text: str, quote: str | None = None) -> str:
    """RFC 3862 section 2.3.1: escape a header value, or a string quoted by `quote`."""
    out = []
    for ch in text:
        if ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif _CTL.match(ch):
            out.append(f"\\u{ord(ch):04x}")
        elif quote is not None and ch == quote:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def cpim_unescape(text: str) -> str:
    """RFC 3862 section 2.3.1: unknown escapes yield the next char; a lone final '\\' is dropped."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", text[i + 2:i + 6]):
            out.append(chr(int(text[i + 2:i + 6], 16)))
            i += 6
            continue
        out.append(_UNESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


@dataclass(slots=True, frozen=True)
class CpimAddress:
    """From/To/cc value: [Formal-name] "<" URI ">" (RFC 3862 section 4.1)."""

    uri: str
    display_name: str | None = None

    def __post_init__(self) -> None:
        _check_uri(self.uri, self.uri)

    @classmethod
    def parse(cls, value: str) -> CpimAddress:
        """Parse a wire value; a bare URI without brackets is tolerated."""
        value = value.strip()
        if not value.endswith(">"):
            return cls(_check_uri(value, value))
        lt = _find_open_bracket(value)
        uri = _check_uri(value[lt + 1:-1], value)
        name = value[:lt].strip()
        if not name:
            return cls(uri)
        if name.startswith('"'):
            if len(name) < 2 or not name.endswith('"'):
                raise ContentProtocolError(f"unterminated display name in {value!r}")
            return cls(uri, cpim_unescape(name[1:-1]))
        return cls(uri, cpim_unescape(name))

    def __str__(self) -> str:
        if self.display_name is None:
            return f"<{self.uri}>"
        return f'"{cpim_escape(self.display_name, quote=chr(34))}" <{self.uri}>'


def _find_open_bracket(value: str) -> int:
    lt = value.rfind("<")
    if lt < 0:
        raise ContentProtocolError(f"address lacks '<' before its URI: {value!r}")
    return lt


def _check_uri(uri: str, whole: str) -> str:
    if not uri or any(c in uri for c in " <>\"") or _CTL.search(uri):
        raise ContentProtocolError(f"address has no valid URI: {whole!r}")
    if ":" not in uri:
        raise ContentProtocolError(f"address URI lacks a scheme: {whole!r}")
    return uri


@dataclass(slots=True, frozen=True)
class CpimHeader:
    """One message header line; `value` is the wire text with escapes kept."""

    name: str
    value: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def prefix(self) -> str | None:
        prefix, _, local = self.name.partition(".")
        return prefix if local else None

    @property
    def local_name(self) -> str:
        return self.name.rpartition(".")[2]

    @property
    def decoded(self) -> str:
        return cpim_unescape(self.value)

    @property
    def lang(self) -> str | None:
        return dict(self.params).get("lang")

    def to_line(self) -> str:
        params = "".join(f";{k}={_param_value(v)}" for k, v in self.params)
        return f"{self.name}:{params} {self.value}"


def _param_value(value: str) -> str:
    if value and _TOKEN.match(value):
        return value
    return '"' + cpim_escape(value, quote='"') + '"'


def parse_cpim_header(line: str) -> CpimHeader:
    """RFC 3862 section 3.6: Header-name ":" *( ";" Parameter ) SP Header-value."""
    name, colon, rest = line.partition(":")
    if not colon or not _HEADER_NAME.match(name):
        raise ContentProtocolError(f"malformed CPIM header name in {line[:60]!r}")
    if _CTL.search(line):
        raise ContentProtocolError(f"CPIM header {name} contains a control character")
    params: list[tuple[str, str]] = []
    while rest.startswith(";"):
        param, rest = _parse_param(rest[1:], name)
        params.append(param)
    if rest.startswith(" "):
        rest = rest[1:]
    return CpimHeader(name, rest, tuple(params))


def _parse_param(rest: str, header: str) -> tuple[tuple[str, str], str]:
    match = re.match(rf"({_NAME})=", rest)
    if not match:
        raise ContentProtocolError(f"malformed parameter on CPIM header {header}")
    rest = rest[match.end():]
    if rest.startswith('"'):
        qmatch = re.match(r'"((?:[^"\\]|\\.)*)"', rest)
        if not qmatch:
            raise ContentProtocolError(f"unterminated quoted parameter on CPIM header {header}")
        return (match[1], cpim_unescape(qmatch[1])), rest[qmatch.end():]
    vmatch = re.match(r"[^; ]+", rest)
    if not vmatch:
        raise ContentProtocolError(f"empty parameter value on CPIM header {header}")
    return (match[1], vmatch[0]), rest[vmatch.end():]


@dataclass(slots=True)
class CpimMessage:
    """A message/cpim body: message headers, then the encapsulated MIME part."""

    headers: list[CpimHeader] = field(default_factory=list)
    content_headers: Headers = field(default_factory=list)
    body: bytes = b""

    def resolved(self) -> list[tuple[str | None, str, CpimHeader]]:
        """Each header as (namespace URI or None if undeclared, local name, header), RFC 3862 3.4."""
        prefixes: dict[str, str] = {"": CPIM_HEADERS_NS}
        out: list[tuple[str | None, str, CpimHeader]] = []
        for header in self.headers:
            prefix = header.prefix or ""
            out.append((prefixes.get(prefix), header.local_name, header))
            if header.name == "NS":
                alias, uri = _parse_ns(header.decoded)
                prefixes[alias] = uri
        return out

    def namespaces(self) -> dict[str, str]:
        """Prefix -> namespace URI as declared by NS headers ('' is the default)."""
        return dict(_parse_ns(h.decoded) for h in self.headers if h.name == "NS")

    def prefix_for(self, namespace: str) -> str | None:
        for alias, uri in self.namespaces().items():
            if uri == namespace:
                return alias
        return None

    def get_all(self, name: str, namespace: str = CPIM_HEADERS_NS) -> list[CpimHeader]:
        return [h for ns, local, h in self.resolved() if ns == namespace and local == name]

    def get(self, name: str, namespace: str = CPIM_HEADERS_NS) -> str | None:
        """Decoded value of the first header with that name in that namespace."""
        found = self.get_all(name, namespace)
        return found[0].decoded if found else None

    def addresses(self, name: str, namespace: str = CPIM_HEADERS_NS) -> list[CpimAddress]:
        """Address-valued headers, parsed from the wire text (escapes live in quoted names)."""
        return [CpimAddress.parse(h.value) for h in self.get_all(name, namespace)]

    @property
    def sender(self) -> CpimAddress | None:
        found = self.addresses("From")
        return found[0] if found else None

    @property
    def recipients(self) -> list[CpimAddress]:
        return self.addresses("To")

    @property
    def cc(self) -> list[CpimAddress]:
        return self.addresses("cc")

    @property
    def datetime(self) -> datetime | None:
        value = self.get("DateTime")
        return parse_datetime(value, "CPIM DateTime") if value is not None else None

    @property
    def subjects(self) -> list[tuple[str, str | None]]:
        """(text, language tag) for each Subject header (RFC 3862 section 4.5)."""
        return [(h.decoded, h.lang) for h in self.get_all("Subject")]

    @property
    def require(self) -> list[str]:
        names: list[str] = []
        for header in self.get_all("Require"):
            names += [n.strip() for n in header.decoded.split(",") if n.strip()]
        return names

    @property
    def content_type(self) -> str | None:
        return get_header(self.content_headers, "Content-Type")

    @property
    def content_disposition(self) -> str | None:
        return get_header(self.content_headers, "Content-Disposition")

    def to_bytes(self) -> bytes:
        head = "".join(h.to_line() + "\r\n" for h in self.headers).encode("utf-8")
        if not self.content_headers and not self.body:
            return head + b"\r\n"
        return head + b"\r\n" + format_header_block(self.content_headers) + b"\r\n" + self.body


def _parse_ns(value: str) -> tuple[str, str]:
    """NS header value: [Name-prefix] "<" URI ">" (RFC 3862 section 4.6)."""
    match = re.fullmatch(rf"\s*({_NAME})?\s*<([^<>\s]+)>\s*", value)
    if not match:
        raise ContentProtocolError(f"malformed NS header value: {value!r}")
    return match[1] or "", match[2]


def parse_cpim(data: bytes) -> CpimMessage:
    """Parse a message/cpim body (the part after the outer Content-Type)."""
    head, rest = split_head_body(data, "CPIM message")
    headers = [parse_cpim_header(line) for line in _cpim_lines(head)]
    for header in headers:
        if header.name == "NS":
            _parse_ns(header.decoded)
    if not rest:
        # Metadata only, as in the message/cpim part of CPM file-transfer INVITEs.
        return CpimMessage(headers, [], b"")
    content_head, body = split_head_body(rest, "CPIM encapsulated part")
    content_headers = parse_header_block(content_head, "CPIM encapsulated part")
    if get_header(content_headers, "Content-Type") is None:
        raise ContentProtocolError("CPIM encapsulated part lacks Content-Type")
    return CpimMessage(headers, content_headers, _apply_length(content_headers, body))


def _cpim_lines(head: bytes) -> list[str]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContentProtocolError("CPIM message headers are not UTF-8") from exc
    lines = [line for line in re.split(r"\r?\n", text) if line]
    for line in lines:
        if line[0] in " \t":
            raise ContentProtocolError("CPIM message headers must not be folded or indented")
    return lines


def _apply_length(content_headers: Headers, body: bytes) -> bytes:
    value = get_header(content_headers, "Content-Length")
    if value is None:
        return body
    length = parse_uint(value, "CPIM Content-Length", maximum=2**63)
    if length > len(body):
        raise ContentProtocolError(f"CPIM Content-Length {length} exceeds the {len(body)} body bytes")
    if length < len(body):
        log.debug("dropping %d bytes after CPIM Content-Length", len(body) - length)
    return body[:length]


def build_cpim(
    content_type: str,
    body: bytes,
    *,
    sender: CpimAddress | None = None,
    recipients: Sequence[CpimAddress] = (),
    cc: Sequence[CpimAddress] = (),
    date_time: datetime | str | None = None,
    subjects: Sequence[tuple[str, str | None]] = (),
    namespaces: Iterable[tuple[str, str]] = (),
    require: Sequence[str] = (),
    headers: Iterable[tuple[str, str]] = (),
    content_headers: Iterable[tuple[str, str]] = (),
    content_length: bool = True,
) -> CpimMessage:
    """Build a CPIM message; `headers` values are plain text and get escaped here."""
    out: list[CpimHeader] = []
    if sender is not None:
        out.append(CpimHeader("From", str(sender)))
    out += [CpimHeader("To", str(a)) for a in recipients]
    out += [CpimHeader("cc", str(a)) for a in cc]
    if date_time is not None:
        text = date_time if isinstance(date_time, str) else format_datetime(date_time)
        out.append(CpimHeader("DateTime", cpim_escape(text)))
    for text, lang in subjects:
        out.append(CpimHeader("Subject", cpim_escape(text), (("lang", lang),) if lang else ()))
    for alias, uri in namespaces:
        out.append(CpimHeader("NS", f"{alias} <{uri}>" if alias else f"<{uri}>"))
    if require:
        out.append(CpimHeader("Require", ",".join(require)))
    out += [CpimHeader(name, cpim_escape(value)) for name, value in headers]
    mime: Headers = [("Content-Type", content_type), *content_headers]
    if content_length:
        mime.append(("Content-Length", str(len(body))))
    try:  # what we build must parse back: a bad argument is our misuse, not the peer's
        for header in out:
            parse_cpim_header(header.to_line())
            if header.name == "NS":
                _parse_ns(header.value)
        format_header_block(mime)
    except ContentProtocolError as exc:
        raise ContentUsageError(f"cannot build CPIM: {exc}") from None
    return CpimMessage(out, mime, body)
