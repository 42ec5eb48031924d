"""Session description model, parser and serializer (RFC 8866, RFC 4566).

Attribute values are kept as raw text and parsed on access, so a parsed
description serializes back to the same bytes.  Lines the model does not
type (i=, u=, e=, p=, b=, z=, k=, unknown letters) are kept verbatim in
``other`` and written back in their RFC 8866 grammar slot, in input order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .attributes import (
    TOKEN,
    Direction,
    FileDate,
    FileRange,
    FileSelector,
    Fmtp,
    RtpMap,
    Setup,
    parse_file_icon,
    parse_format_list,
    parse_int,
    parse_path,
    parse_token,
)
from .errors import SdpError, SdpProtocolError, SdpUsageError

log = logging.getLogger(__name__)

_ADDRESS = re.compile(r"[0-9A-Za-z.:\-\[\]%_]+(?:/[0-9]+){0,2}\Z")
_PROTO = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+(?:/[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)*\Z")
_SESSION_ONLY = frozenset("vosuepzrt")
_DIRECTIONS = frozenset(d.value for d in Direction)


@dataclass(slots=True)
class Line:
    """A line the model keeps verbatim: ``<type>=<value>``."""

    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}={self.value}"


@dataclass(slots=True)
class Attribute:
    """``a=<name>`` (property) or ``a=<name>:<value>`` (value) (RFC 8866 section 5.13)."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Attribute:
        name, sep, value = text.partition(":")
        if not TOKEN.match(name):
            raise SdpProtocolError(f"bad attribute name {name!r}")
        return cls(name, value if sep else None)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``
    (RFC 8866 section 5.2)."""

    username: str
    sess_id: str
    sess_version: str
    net_type: str
    addr_type: str
    unicast_address: str

    @classmethod
    def parse(cls, value: str) -> Origin:
        user, sess_id, version, net, addr_type, address = _fields(value, 6, "o=")
        for text, what in ((sess_id, "o= sess-id"), (version, "o= sess-version")):
            if not (text.isascii() and text.isdigit()):
                raise SdpProtocolError(f"bad {what}: {text!r} is not a number")
        _check_address(address, "o=")
        return cls(user, sess_id, version, parse_token(net, "o= nettype"),
                   parse_token(addr_type, "o= addrtype"), address)

    def __str__(self) -> str:
        return " ".join((self.username, self.sess_id, self.sess_version,
                         self.net_type, self.addr_type, self.unicast_address))


@dataclass(slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (RFC 8866 section 5.7)."""

    net_type: str
    addr_type: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Connection:
        net, addr_type, address = _fields(value, 3, "c=")
        _check_address(address, "c=")
        return cls(parse_token(net, "c= nettype"), parse_token(addr_type, "c= addrtype"), address)

    @property
    def is_legacy_hold(self) -> bool:
        """c=IN IP4 0.0.0.0: the deprecated way to put a stream on hold (RFC 3264 section 8.4)."""
        return self.addr_type == "IP4" and self.address.split("/")[0] == "0.0.0.0"

    def __str__(self) -> str:
        return f"{self.net_type} {self.addr_type} {self.address}"


@dataclass(slots=True)
class Timing:
    """``t=<start> <stop>`` with its ``r=`` repeat lines kept verbatim (RFC 8866 section 5.9)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, value: str) -> Timing:
        start, stop = _fields(value, 2, "t=")
        return cls(parse_int(start, "t= start time"), parse_int(stop, "t= stop time"))


def _fields(value: str, count: int, what: str) -> list[str]:
    parts = value.split(" ")
    if len(parts) != count or not all(parts):
        raise SdpProtocolError(
            f"bad {what} line {value!r}: expected {count} fields separated by single spaces")
    return parts


def _check_address(address: str, what: str) -> None:
    if not _ADDRESS.match(address):
        raise SdpProtocolError(f"bad {what} address {address!r}")


class _Attributed:
    """Attribute list helpers shared by session and media level."""

    __slots__ = ()
    attributes: list[Attribute]

    def attribute(self, name: str) -> Attribute | None:
        """The first attribute called ``name``."""
        return next((a for a in self.attributes if a.name == name), None)

    def attribute_values(self, name: str) -> list[str | None]:
        return [a.value for a in self.attributes if a.name == name]

    def has_attribute(self, name: str) -> bool:
        return self.attribute(name) is not None

    def set_attribute(self, name: str, value: str | None = None) -> None:
        """Replace the first ``name`` attribute in place (dropping others), or append one."""
        first = self.attribute(name)
        if first is None:
            self.attributes.append(Attribute(name, value))
            return
        first.value = value
        self.attributes[:] = [a for a in self.attributes if a.name != name or a is first]

    def remove_attribute(self, name: str) -> None:
        self.attributes[:] = [a for a in self.attributes if a.name != name]

    def _value(self, name: str) -> str | None:
        """The value of the first ``name`` attribute; a property attribute is an error."""
        attr = self.attribute(name)
        if attr is None:
            return None
        if attr.value is None:
            raise SdpProtocolError(f"a={name} has no value")
        return attr.value

    @property
    def direction(self) -> Direction | None:
        """The explicit direction attribute at this level, if any (RFC 3264 section 5.1)."""
        return next((Direction(a.name) for a in self.attributes
                     if a.name in _DIRECTIONS and a.value is None), None)

    @direction.setter
    def direction(self, direction: Direction | None) -> None:
        index = next((i for i, a in enumerate(self.attributes) if a.name in _DIRECTIONS), None)
        self.attributes[:] = [a for a in self.attributes if a.name not in _DIRECTIONS]
        if direction is not None:
            position = len(self.attributes) if index is None else index
            self.attributes.insert(position, Attribute(direction.value))


@dataclass(slots=True)
class MediaDescription(_Attributed):
    """``m=<media> <port>[/<number of ports>] <proto> <fmt> ...`` and its lines (RFC 8866 section 5.14)."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    other: list[Line] = field(default_factory=list)

    @classmethod
    def parse_m_line(cls, value: str) -> MediaDescription:
        parts = value.split(" ")
        if len(parts) < 4 or not all(parts):
            raise SdpProtocolError(f"bad m= line {value!r}: expected '<media> <port> <proto> <fmt> ...'")
        media, port_text, proto, *formats = parts
        port_part, slash, count_text = port_text.partition("/")
        port = parse_int(port_part, "m= port")
        if port > 65535:
            raise SdpProtocolError(f"bad m= port {port}: above 65535")
        count = parse_int(count_text, "m= number of ports") if slash else None
        if count == 0:
            raise SdpProtocolError("bad m= number of ports: 0")
        if not _PROTO.match(proto):
            raise SdpProtocolError(f"bad m= proto {proto!r}")
        for fmt in formats:
            parse_token(fmt, "m= format")
        return cls(parse_token(media, "m= media"), port, proto, formats, port_count=count)

    @property
    def m_line(self) -> str:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        return " ".join([self.media, port, self.proto, *self.formats])

    @property
    def is_rejected(self) -> bool:
        """Port 0 marks a rejected or disabled stream (RFC 3264 section 6)."""
        return self.port == 0

    @property
    def is_msrp(self) -> bool:
        return self.proto.upper() in ("TCP/MSRP", "TCP/TLS/MSRP")

    # --- RTP (RFC 8866 sections 6.6, 6.15) ---------------------------------

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        maps = (RtpMap.parse(v) for v in self.attribute_values("rtpmap") if v is not None)
        return {m.payload_type: m for m in maps}

    def rtpmap(self, fmt: str | int) -> RtpMap | None:
        """The rtpmap for a format, or the static RTP/AVP mapping (RFC 3551 table 4)."""
        text = str(fmt)
        pt = int(text) if text.isascii() and text.isdigit() and len(text) < 4 else -1
        return self.rtpmaps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)

    def fmtp(self, fmt: str | int) -> Fmtp | None:
        fmtps = (Fmtp.parse(v) for v in self.attribute_values("fmtp") if v is not None)
        return next((f for f in fmtps if f.format == str(fmt)), None)

    # --- MSRP (RFC 4975 section 8.2, RFC 6714, RFC 4145) ---------------------

    @property
    def path(self) -> list[str] | None:
        value = self._value("path")
        return None if value is None else parse_path(value)

    @path.setter
    def path(self, uris: Iterable[str] | None) -> None:
        self._set_or_remove("path", None if uris is None else " ".join(uris))

    @property
    def accept_types(self) -> list[str] | None:
        value = self._value("accept-types")
        return None if value is None else parse_format_list(value, "accept-types")

    @accept_types.setter
    def accept_types(self, types: Iterable[str] | None) -> None:
        self._set_or_remove("accept-types", None if types is None else " ".join(types))

    @property
    def accept_wrapped_types(self) -> list[str] | None:
        value = self._value("accept-wrapped-types")
        return None if value is None else parse_format_list(value, "accept-wrapped-types")

    @accept_wrapped_types.setter
    def accept_wrapped_types(self, types: Iterable[str] | None) -> None:
        self._set_or_remove("accept-wrapped-types", None if types is None else " ".join(types))

    @property
    def max_size(self) -> int | None:
        value = self._value("max-size")
        return None if value is None else parse_int(value, "max-size")

    @max_size.setter
    def max_size(self, size: int | None) -> None:
        self._set_or_remove("max-size", None if size is None else str(size))

    @property
    def setup(self) -> Setup | None:
        value = self._value("setup")
        return None if value is None else Setup.parse(value)

    @setup.setter
    def setup(self, role: Setup | None) -> None:
        self._set_or_remove("setup", None if role is None else role.value)

    @property
    def msrp_cema(self) -> bool:
        return self.has_attribute("msrp-cema")

    @msrp_cema.setter
    def msrp_cema(self, supported: bool) -> None:
        if not supported:
            self.remove_attribute("msrp-cema")
        elif not self.msrp_cema:
            self.attributes.append(Attribute("msrp-cema"))

    # --- file transfer (RFC 5547 section 6) -----------------------------------

    @property
    def file_selector(self) -> FileSelector | None:
        attr = self.attribute("file-selector")
        return None if attr is None else FileSelector.parse(attr.value or "")

    @file_selector.setter
    def file_selector(self, selector: FileSelector | None) -> None:
        self._set_or_remove("file-selector", None if selector is None else str(selector))

    @property
    def file_transfer_id(self) -> str | None:
        value = self._value("file-transfer-id")
        return None if value is None else parse_token(value, "file-transfer-id")

    @file_transfer_id.setter
    def file_transfer_id(self, value: str | None) -> None:
        self._set_or_remove("file-transfer-id", value)

    @property
    def file_disposition(self) -> str | None:
        value = self._value("file-disposition")
        return None if value is None else parse_token(value, "file-disposition")

    @file_disposition.setter
    def file_disposition(self, value: str | None) -> None:
        self._set_or_remove("file-disposition", value)

    @property
    def file_date(self) -> FileDate | None:
        value = self._value("file-date")
        return None if value is None else FileDate.parse(value)

    @file_date.setter
    def file_date(self, value: FileDate | None) -> None:
        self._set_or_remove("file-date", None if value is None else str(value))

    @property
    def file_range(self) -> FileRange | None:
        value = self._value("file-range")
        return None if value is None else FileRange.parse(value)

    @file_range.setter
    def file_range(self, value: FileRange | None) -> None:
        self._set_or_remove("file-range", None if value is None else str(value))

    @property
    def file_icon(self) -> str | None:
        value = self._value("file-icon")
        return None if value is None else parse_file_icon(value)

    @file_icon.setter
    def file_icon(self, value: str | None) -> None:
        self._set_or_remove("file-icon", None if value is None else parse_file_icon(value))

    def _set_or_remove(self, name: str, value: str | None) -> None:
        if value is None:
            self.remove_attribute(name)
        else:
            self.set_attribute(name, value)

    def lines(self) -> Iterator[str]:
        """Lines in RFC 8866 order: m, i, c, b, k, unknown, a."""
        yield f"m={self.m_line}"
        yield from _other(self.other, "i")
        if self.connection is not None:
            yield f"c={self.connection}"
        yield from _other(self.other, "b")
        yield from _other(self.other, "k")
        yield from (str(line) for line in self.other if line.type not in "ibk")
        yield from (f"a={a}" for a in self.attributes)


def _other(lines: list[Line], letters: str) -> Iterator[str]:
    return (str(line) for line in lines if line.type in letters)


# RFC 3551 table 4: the static audio payload types imsbox offers or recognises.
STATIC_PAYLOAD_TYPES: Mapping[int, RtpMap] = MappingProxyType({
    0: RtpMap(0, "PCMU", 8000),
    3: RtpMap(3, "GSM", 8000),
    8: RtpMap(8, "PCMA", 8000),
    9: RtpMap(9, "G722", 8000),
    18: RtpMap(18, "G729", 8000),
})


@dataclass(slots=True, kw_only=True)
class SessionDescription(_Attributed):
    """A whole session description (RFC 8866 section 5)."""

    version: int = 0
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    times: list[Timing] = field(default_factory=lambda: [Timing()])
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other: list[Line] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        return _Parser(_split_lines(_decode(data))).parse()

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """The media-level c= or else the session-level one (RFC 8866 section 5.7)."""
        return media.connection or self.connection

    def direction_of(self, media: MediaDescription) -> Direction:
        """Media direction, else session direction, else sendrecv (RFC 3264 section 5.1)."""
        return media.direction or self.direction or Direction.SENDRECV

    def is_legacy_hold(self, media: MediaDescription) -> bool:
        """Whether the stream is held the RFC 2543 way, c= 0.0.0.0 (RFC 3264 section 8.4)."""
        connection = self.connection_for(media)
        return connection is not None and connection.is_legacy_hold

    def lines(self) -> Iterator[str]:
        """Lines in RFC 8866 order: v o s i u e p c b (t r)* z k unknown a, then media."""
        yield f"v={self.version}"
        yield f"o={self.origin}"
        yield f"s={self.session_name}"
        yield from _other(self.other, "iuep")
        if self.connection is not None:
            yield f"c={self.connection}"
        yield from _other(self.other, "b")
        for timing in self.times:
            yield f"t={timing.start} {timing.stop}"
            yield from (f"r={r}" for r in timing.repeats)
        yield from _other(self.other, "zk")
        yield from (str(line) for line in self.other if line.type not in "iuepbzk")
        yield from (f"a={a}" for a in self.attributes)
        for media in self.media:
            yield from media.lines()

    def __str__(self) -> str:
        lines = list(self.lines())
        for line in lines:
            if any(c in line for c in "\r\n\0"):
                # our own builder put a line break in a field: local misuse
                raise SdpUsageError(f"cannot serialize {line[:2]} line containing CR, LF or NUL")
        return "\r\n".join(lines) + "\r\n"

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")


def parse(data: bytes | str) -> SessionDescription:
    """Parse a session description; CRLF or LF line ends (RFC 8866 section 5)."""
    return SessionDescription.parse(data)


def _decode(data: bytes | str) -> str:
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpProtocolError(f"not UTF-8 at byte {exc.start}") from None
    if not isinstance(data, str):
        raise SdpProtocolError(f"expected bytes or str, got {type(data).__name__}")
    return data


def _split_lines(text: str) -> list[tuple[int, str, str]]:
    """Split into (line number, type letter, value); trailing blank lines are ignored."""
    raw = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    while raw and raw[-1] == "":
        raw.pop()
    if not raw:
        raise SdpProtocolError("empty session description")
    result = []
    for number, line in enumerate(raw, start=1):
        if "\r" in line or "\0" in line:
            raise SdpProtocolError("bare CR or NUL inside a line", number)
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpProtocolError(f"malformed line {line[:40]!r}: expected '<letter>=<value>'", number)
        result.append((number, line[0], line[2:]))
    return result


class _Parser:
    """One pass over the lines; the section (session or media) decides what is allowed."""

    def __init__(self, lines: list[tuple[int, str, str]]) -> None:
        self.lines = lines

    def parse(self) -> SessionDescription:
        self._expect_prefix()
        try:
            origin = Origin.parse(self.lines[1][2])
        except SdpError as exc:
            raise SdpProtocolError(exc.reason, self.lines[1][0]) from None
        sd = SessionDescription(origin=origin, session_name=self.lines[2][2], times=[])
        current: MediaDescription | None = None
        for number, kind, value in self.lines[3:]:
            try:
                current = self._line(sd, current, kind, value)
            except SdpError as exc:
                raise SdpProtocolError(exc.reason, number) from None
        self._check_connections(sd)
        return sd

    def _expect_prefix(self) -> None:
        kinds = "".join(kind for _, kind, _ in self.lines[:3])
        if not kinds.startswith("v"):
            raise SdpProtocolError("missing v= line: a session description starts with v=", 1)
        if self.lines[0][2] != "0":
            raise SdpProtocolError(f"unsupported version v={self.lines[0][2]!r}", 1)
        if kinds != "vos":
            raise SdpProtocolError("v= must be followed by o= and s= lines", min(len(self.lines), 3))

    def _line(self, sd: SessionDescription, media: MediaDescription | None,
              kind: str, value: str) -> MediaDescription | None:
        if kind == "m":
            media = MediaDescription.parse_m_line(value)
            sd.media.append(media)
            return media
        if media is None:
            self._session_line(sd, kind, value)
        elif kind in _SESSION_ONLY:
            raise SdpProtocolError(f"{kind}= line not allowed after the first m= line")
        else:
            self._media_line(media, kind, value)
        return media

    @staticmethod
    def _session_line(sd: SessionDescription, kind: str, value: str) -> None:
        if kind in "vos":
            raise SdpProtocolError(f"duplicate {kind}= line")
        if kind == "c":
            if sd.connection is not None:
                raise SdpProtocolError("duplicate session-level c= line")
            sd.connection = Connection.parse(value)
        elif kind == "t":
            sd.times.append(Timing.parse(value))
        elif kind == "r":
            if not sd.times:
                raise SdpProtocolError("r= line without a preceding t= line")
            sd.times[-1].repeats.append(value)
        elif kind == "a":
            sd.attributes.append(Attribute.parse(value))
        else:
            sd.other.append(Line(kind, value))

    @staticmethod
    def _media_line(media: MediaDescription, kind: str, value: str) -> None:
        if kind == "c":
            if media.connection is not None:
                raise SdpProtocolError("multiple c= lines in one media description are not supported")
            media.connection = Connection.parse(value)
        elif kind == "a":
            media.attributes.append(Attribute.parse(value))
        else:
            media.other.append(Line(kind, value))

    @staticmethod
    def _check_connections(sd: SessionDescription) -> None:
        if sd.connection is None and any(m.connection is None and m.port for m in sd.media):
            raise SdpProtocolError("missing c= line: needed at session level or in every m= section")
