"""multipart/mixed and multipart/related bodies (RFC 2046 section 5.1, RFC 2387)."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import ContentProtocolError
from .mime import (
    ContentType,
    Headers,
    format_header_block,
    get_header,
    parse_content_type,
    parse_header_block,
    split_head_body,
)

log = logging.getLogger(__name__)

# RFC 2046 section 5.1.1 bchars, 1..70 long, not ending in space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]\Z")
MAX_PARTS = 256


@dataclass(slots=True)
class BodyPart:
    """One body part: its MIME headers in order and its raw bytes."""

    headers: Headers = field(default_factory=list)
    body: bytes = b""

    def get(self, name: str) -> str | None:
        return get_header(self.headers, name)

    @property
    def content_type(self) -> str | None:
        """Media type without parameters, lower-cased (text/plain if absent, RFC 2046 5.1)."""
        value = self.get("Content-Type")
        if value is None:
            return "text/plain"
        return parse_content_type(value).mime_type

    def to_bytes(self) -> bytes:
        return format_header_block(self.headers) + b"\r\n" + self.body


@dataclass(slots=True)
class Multipart:
    """A multipart body; preamble and epilogue are the raw bytes outside the delimiters."""

    subtype: str
    boundary: str
    parts: list[BodyPart] = field(default_factory=list)
    preamble: bytes = b""
    epilogue: bytes = b"\r\n"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        """The Content-Type header value to send with this body."""
        params = {"boundary": self.boundary, **self.params}
        return str(ContentType("multipart", self.subtype, params))

    def find(self, mime_type: str) -> BodyPart | None:
        """The first part of that media type."""
        wanted = mime_type.lower()
        return next((p for p in self.parts if p.content_type == wanted), None)

    def to_bytes(self) -> bytes:
        """RFC 2046 section 5.1.1: CRLF before every delimiter but a leading one."""
        _check_boundary(self.boundary)
        dash = b"--" + self.boundary.encode("ascii")
        if not self.parts:
            raise ContentProtocolError("a multipart body needs at least one body part")
        out = [self.preamble]
        for part in self.parts:
            data = part.to_bytes()
            if dash in data:
                raise ContentProtocolError(f"body part contains the boundary {self.boundary!r}")
            out += [dash, b"\r\n", data, b"\r\n"]
        out += [dash, b"--", self.epilogue]
        return b"".join(out)


def _check_boundary(boundary: str) -> None:
    if not _BOUNDARY.match(boundary):
        raise ContentProtocolError(f"invalid multipart boundary {boundary!r}")


def parse_multipart(body: bytes, content_type: str | ContentType) -> Multipart:
    """Parse a multipart body given its Content-Type (boundary quoted or not)."""
    ctype = content_type if isinstance(content_type, ContentType) else parse_content_type(content_type)
    if ctype.type != "multipart":
        raise ContentProtocolError(f"{ctype.mime_type} is not a multipart type")
    boundary = ctype.params.get("boundary")
    if boundary is None:
        raise ContentProtocolError("multipart Content-Type lacks the boundary parameter")
    _check_boundary(boundary)
    params = {k: v for k, v in ctype.params.items() if k != "boundary"}
    preamble, chunks, epilogue = _split(body, boundary)
    parts = [_parse_part(chunk) for chunk in chunks]
    return Multipart(ctype.subtype, boundary, parts, preamble, epilogue, params)


def _split(body: bytes, boundary: str) -> tuple[bytes, list[bytes], bytes]:
    """Cut at delimiter lines; lax peers' bare LF line ends are accepted too."""
    delimiter = re.compile(
        rb"(?:\A|\r?\n)(--" + re.escape(boundary.encode("ascii")) + rb")(--)?[ \t]*(?=(\r?\n|\Z))"
    )
    preamble: bytes | None = None
    chunks: list[bytes] = []
    start = 0
    for match in delimiter.finditer(body):
        if preamble is None:
            preamble = body[:match.start(1)]
        else:
            chunks.append(body[start:max(start, match.start())])
        if match[2]:
            if not chunks:
                raise ContentProtocolError("multipart body closes before any body part")
            return preamble, chunks, body[match.end(2):]
        if len(chunks) >= MAX_PARTS:
            raise ContentProtocolError(f"multipart body has more than {MAX_PARTS} parts")
        start = match.end() + len(match[3])
    if preamble is None:
        raise ContentProtocolError(f"multipart body has no delimiter for boundary {boundary!r}")
    raise ContentProtocolError("multipart body lacks its close delimiter")


def _parse_part(chunk: bytes) -> BodyPart:
    if not chunk:
        return BodyPart()
    head, body = split_head_body(chunk, "multipart body part")
    return BodyPart(parse_header_block(head, "multipart body part"), body)


def build_multipart(
    parts: Iterable[BodyPart],
    subtype: str = "mixed",
    boundary: str | None = None,
    **params: str,
) -> Multipart:
    """Build a multipart body; a boundary is drawn at random when not given."""
    parts = list(parts)
    if boundary is None:
        boundary = "imsbox-" + secrets.token_hex(12)
    _check_boundary(boundary)
    multipart = Multipart(subtype, boundary, parts, params=dict(params))
    multipart.to_bytes()
    return multipart
