"""MIME header blocks and Content-Type values (RFC 2045, RFC 2822 syntax)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from .errors import ContentProtocolError

log = logging.getLogger(__name__)

# RFC 2045 token: any CHAR except SPACE, CTLs and tspecials.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")

Headers = list[tuple[str, str]]


@dataclass(slots=True)
class ContentType:
    """A parsed media type: type/subtype plus parameters (names lower-cased)."""

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def mime_type(self) -> str:
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        parts = [self.mime_type]
        parts += [f"{k}={_quote_param(v)}" for k, v in self.params.items()]
        return ";".join(parts)


def _quote_param(value: str) -> str:
    if _TOKEN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def parse_content_type(value: str) -> ContentType:
    """RFC 2045 section 5.1 Content-Type, parameters quoted or not."""
    text = value.strip()
    match = re.match(r"([^/;\s]+)\s*/\s*([^;\s]+)", text)
    if not match or not _TOKEN.fullmatch(match[1]) or not _TOKEN.fullmatch(match[2]):
        raise ContentProtocolError(f"malformed Content-Type: {value!r}")
    ctype = ContentType(match[1].lower(), match[2].lower())
    rest = text[match.end():]
    while rest.strip():
        name, val, rest = _next_param(rest, value)
        if name:
            ctype.params[name] = val
    return ctype


def _next_param(rest: str, whole: str) -> tuple[str, str, str]:
    match = re.match(r"\s*;\s*([^=\s;]+)\s*=\s*", rest)
    if not match or not _TOKEN.fullmatch(match[1]):
        # Tolerate a stray trailing ';' as many stacks emit it.
        if re.fullmatch(r"\s*;\s*", rest):
            return "", "", ""
        raise ContentProtocolError(f"malformed Content-Type parameter in {whole!r}")
    rest = rest[match.end():]
    if rest.startswith('"'):
        qmatch = re.match(r'"((?:[^"\\]|\\.)*)"', rest, re.S)
        if not qmatch:
            raise ContentProtocolError(f"unterminated quoted parameter in {whole!r}")
        return match[1].lower(), re.sub(r"\\(.)", r"\1", qmatch[1], flags=re.S), rest[qmatch.end():]
    tmatch = _TOKEN.match(rest)
    if not tmatch:
        raise ContentProtocolError(f"empty Content-Type parameter value in {whole!r}")
    return match[1].lower(), tmatch[0], rest[tmatch.end():]


def parse_header_block(block: bytes, what: str) -> Headers:
    """'Name: value' lines (CRLF or LF), folded lines joined, order kept."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContentProtocolError(f"{what} headers are not UTF-8") from exc
    headers: Headers = []
    for line in re.split(r"\r?\n", text):
        if not line:
            continue
        if line[0] in " \t":
            if not headers:
                raise ContentProtocolError(f"{what} header block starts with a continuation line")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.match(name):
            raise ContentProtocolError(f"malformed {what} header line: {line[:60]!r}")
        headers.append((name, value.strip()))
    return headers


def format_header_block(headers: Headers) -> bytes:
    """Serialize headers with CRLF line ends; refuses line breaks in values."""
    out = []
    for name, value in headers:
        if not _FIELD_NAME.match(name):
            raise ContentProtocolError(f"invalid header name {name!r}")
        if "\r" in value or "\n" in value:
            raise ContentProtocolError(f"header {name} value contains a line break")
        out.append(f"{name}: {value}\r\n")
    return "".join(out).encode("utf-8")


def get_header(headers: Headers, name: str) -> str | None:
    """First value of a header, name matched case-insensitively."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


def split_head_body(data: bytes, what: str) -> tuple[bytes, bytes]:
    """Split at the first empty line (CRLF CRLF, or LF LF from lax peers)."""
    for blank in (b"\r\n", b"\n"):
        if data.startswith(blank):
            return b"", data[len(blank):]
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf < 0 and lf < 0:
        raise ContentProtocolError(f"{what} has no empty line ending its headers")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return data[:crlf], data[crlf + 4:]
    return data[:lf], data[lf + 2:]
