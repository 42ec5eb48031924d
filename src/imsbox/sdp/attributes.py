"""Typed values of the SDP attributes imsbox understands.

Each value class has ``parse(value: str)`` (raising SdpError) and ``__str__``
giving the attribute value text (without the ``name:`` prefix).
"""

from __future__ import annotations

import email.utils
import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import unquote

from .errors import SdpProtocolError

# RFC 8866 section 9: token characters.
TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+\Z")
_DIGITS = re.compile(r"[0-9]+\Z")
_HASH_VALUE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*\Z")
_PERCENT_OK = re.compile(r"(?:[^%]|%[0-9A-Fa-f]{2})*\Z")
# RFC 4975 section 9: format-entry = "*" / type "/" subtype / type "/*".
_FORMAT_ENTRY = re.compile(r"\*\Z|[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+/(?:\*|[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)\Z")
_MSRP_URI = re.compile(r"msrps?://[^\s]+\Z", re.IGNORECASE)

MAX_INT = 2**63 - 1


def parse_int(text: str, what: str) -> int:
    """A non-negative decimal integer as SDP writes it."""
    if not _DIGITS.match(text) or len(text) > 19 or int(text) > MAX_INT:
        raise SdpProtocolError(f"bad {what}: {text!r} is not a non-negative integer")
    return int(text)


def parse_token(text: str, what: str) -> str:
    if not TOKEN.match(text):
        raise SdpProtocolError(f"bad {what}: {text!r} is not a token")
    return text


class Direction(enum.Enum):
    """Media direction attributes (RFC 3264 section 5.1, RFC 8866 section 6.7)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, sends: bool, receives: bool) -> Direction:
        if sends and receives:
            return cls.SENDRECV
        if sends:
            return cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE

    def mirrored(self) -> Direction:
        """The direction seen from the other end (RFC 3264 section 6.1)."""
        return Direction.from_flags(sends=self.receives, receives=self.sends)

    def restricted_to(self, allowed: Direction) -> Direction:
        """Keep only the flows ``allowed`` also permits."""
        return Direction.from_flags(self.sends and allowed.sends, self.receives and allowed.receives)


class Setup(enum.Enum):
    """Connection setup role, ``a=setup`` (RFC 4145 section 4, RFC 6135)."""

    ACTIVE = "active"
    PASSIVE = "passive"
    ACTPASS = "actpass"
    HOLDCONN = "holdconn"

    @classmethod
    def parse(cls, value: str) -> Setup:
        try:
            return cls(value)
        except ValueError:
            raise SdpProtocolError(f"bad setup value {value!r}") from None

    def answer_role(self, preferred: Setup) -> Setup:
        """The answerer's role for this offered role (RFC 4145 section 4.1)."""
        if self is Setup.ACTIVE:
            return Setup.PASSIVE
        if self is Setup.PASSIVE:
            return Setup.ACTIVE
        if self is Setup.HOLDCONN:
            return Setup.HOLDCONN
        return Setup.PASSIVE if preferred is Setup.PASSIVE else Setup.ACTIVE


@dataclass(slots=True, frozen=True)
class RtpMap:
    """``a=rtpmap:<payload type> <encoding name>/<clock rate>[/<params>]`` (RFC 8866 section 6.6)."""

    payload_type: int
    encoding_name: str
    clock_rate: int
    encoding_parameters: str | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        pt, sep, rest = value.partition(" ")
        parts = rest.split("/")
        if not sep or len(parts) not in (2, 3) or not parts[0]:
            raise SdpProtocolError(f"bad rtpmap {value!r}: expected '<pt> <name>/<rate>[/<params>]'")
        payload_type = parse_int(pt, "rtpmap payload type")
        if payload_type > 127:
            raise SdpProtocolError(f"bad rtpmap payload type {payload_type}: above 127")
        params = parts[2] if len(parts) == 3 else None
        if params == "":
            raise SdpProtocolError(f"bad rtpmap {value!r}: empty encoding parameters")
        return cls(payload_type, parse_token(parts[0], "rtpmap encoding name"),
                   parse_int(parts[1], "rtpmap clock rate"), params)

    @property
    def channels(self) -> int:
        """Audio channel count; encoding parameters default to 1 (RFC 8866 section 6.6)."""
        if self.encoding_parameters is None:
            return 1
        return parse_int(self.encoding_parameters, "rtpmap channels")

    def __str__(self) -> str:
        text = f"{self.payload_type} {self.encoding_name}/{self.clock_rate}"
        return text if self.encoding_parameters is None else f"{text}/{self.encoding_parameters}"


@dataclass(slots=True, frozen=True)
class Fmtp:
    """``a=fmtp:<format> <format specific parameters>`` (RFC 8866 section 6.15)."""

    format: str
    parameters: str

    @classmethod
    def parse(cls, value: str) -> Fmtp:
        fmt, sep, params = value.partition(" ")
        if not sep or not params:
            raise SdpProtocolError(f"bad fmtp {value!r}: expected '<format> <parameters>'")
        return cls(parse_token(fmt, "fmtp format"), params)

    def __str__(self) -> str:
        return f"{self.format} {self.parameters}"


def parse_path(value: str) -> list[str]:
    """``a=path``: MSRP URIs separated by spaces (RFC 4975 section 8.2)."""
    uris = value.split(" ")
    for uri in uris:
        if not _MSRP_URI.match(uri):
            raise SdpProtocolError(f"bad path: {uri!r} is not an MSRP URI")
    return uris


def parse_format_list(value: str, what: str) -> list[str]:
    """``accept-types`` / ``accept-wrapped-types`` format lists (RFC 4975 section 9)."""
    entries = value.split(" ")
    for entry in entries:
        if not _FORMAT_ENTRY.match(entry):
            raise SdpProtocolError(f"bad {what}: {entry!r} is not '*', type/subtype or type/*")
    return entries


def parse_file_icon(value: str) -> str:
    """``a=file-icon``: a cid: URL (RFC 5547 section 6, RFC 2392)."""
    if not value.lower().startswith("cid:") or len(value) == 4 or " " in value:
        raise SdpProtocolError(f"bad file-icon {value!r}: expected a cid: URL")
    return value


def split_quoted(value: str, what: str) -> list[str]:
    """Split on spaces outside double quotes."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == " " and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise SdpProtocolError(f"bad {what}: unterminated quoted string")
    items.append("".join(current))
    if any(not item for item in items):
        raise SdpProtocolError(f"bad {what}: empty item (stray space)")
    return items


def _unquote(text: str, what: str) -> str:
    """A DQUOTE'd filename-string, percent-decoded (RFC 5547 section 6)."""
    if len(text) < 3 or text[0] != '"' or text[-1] != '"' or '"' in text[1:-1]:
        raise SdpProtocolError(f"bad {what}: expected a non-empty quoted string, got {text!r}")
    inner = text[1:-1]
    if not _PERCENT_OK.match(inner):
        raise SdpProtocolError(f"bad {what}: '%' not followed by two hex digits")
    try:
        return unquote(inner, errors="strict")
    except UnicodeDecodeError:
        raise SdpProtocolError(f"bad {what}: percent-encoding is not UTF-8") from None


def _quote(text: str) -> str:
    """Percent-encode the bytes a filename-string cannot hold."""
    for char, code in (("%", "%25"), ('"', "%22"), ("\r", "%0D"), ("\n", "%0A"), ("\0", "%00")):
        text = text.replace(char, code)
    return f'"{text}"'


@dataclass(slots=True, frozen=True)
class FileHash:
    """``hash:<algorithm>:<XX:XX:...>`` selector (RFC 5547 section 6)."""

    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> FileHash:
        algorithm, sep, hex_value = text.partition(":")
        if not sep or not _HASH_VALUE.match(hex_value):
            raise SdpProtocolError(f"bad hash selector {text!r}: expected algorithm:XX:XX...")
        return cls(parse_token(algorithm, "hash algorithm"), bytes.fromhex(hex_value.replace(":", "")))

    def __str__(self) -> str:
        return f"{self.algorithm}:" + ":".join(f"{b:02X}" for b in self.digest)


@dataclass(slots=True)
class FileSelector:
    """``a=file-selector`` (RFC 5547 section 6): name, type, size and hash of a file."""

    name: str | None = None
    type: str | None = None
    type_parameters: dict[str, str] = field(default_factory=dict)
    size: int | None = None
    hash: FileHash | None = None

    @classmethod
    def parse(cls, value: str) -> FileSelector:
        selector = cls()
        seen: set[str] = set()
        for item in split_quoted(value, "file-selector") if value else []:
            key, sep, rest = item.partition(":")
            if not sep or key not in ("name", "type", "size", "hash"):
                raise SdpProtocolError(f"bad file-selector: unknown selector {item!r}")
            if key in seen:
                raise SdpProtocolError(f"bad file-selector: duplicate {key} selector")
            seen.add(key)
            selector._set(key, rest)
        return selector

    def _set(self, key: str, rest: str) -> None:
        if key == "name":
            self.name = _unquote(rest, "file-selector name")
        elif key == "size":
            self.size = parse_int(rest, "file-selector size")
        elif key == "hash":
            self.hash = FileHash.parse(rest)
        else:
            self.type, self.type_parameters = _parse_file_type(rest)

    def __str__(self) -> str:
        parts = []
        if self.name is not None:
            parts.append(f"name:{_quote(self.name)}")
        if self.type is not None:
            params = "".join(f";{k}={_quote(v)}" for k, v in self.type_parameters.items())
            parts.append(f"type:{self.type}{params}")
        if self.size is not None:
            parts.append(f"size:{self.size}")
        if self.hash is not None:
            parts.append(f"hash:{self.hash}")
        return " ".join(parts)


def _parse_file_type(text: str) -> tuple[str, dict[str, str]]:
    """type "/" subtype *(";" attribute "=" DQUOTE value DQUOTE) (RFC 5547 section 6)."""
    media_type, *params = _split_params(text)
    main, sep, sub = media_type.partition("/")
    if not sep or not TOKEN.match(main) or not TOKEN.match(sub):
        raise SdpProtocolError(f"bad file-selector type {media_type!r}: expected type/subtype")
    parsed: dict[str, str] = {}
    for param in params:
        key, eq, quoted = param.partition("=")
        if not eq or not TOKEN.match(key):
            raise SdpProtocolError(f"bad file-selector type parameter {param!r}")
        parsed[key] = _unquote(quoted, "file-selector type parameter")
    return media_type, parsed


def _split_params(text: str) -> list[str]:
    """Split on ';' outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


@dataclass(slots=True)
class FileDate:
    """``a=file-date`` (RFC 5547 section 6): creation, modification and read dates."""

    creation: datetime | None = None
    modification: datetime | None = None
    read: datetime | None = None

    @classmethod
    def parse(cls, value: str) -> FileDate:
        dates = cls()
        seen: set[str] = set()
        for item in split_quoted(value, "file-date"):
            key, sep, quoted = item.partition(":")
            if not sep or key not in ("creation", "modification", "read"):
                raise SdpProtocolError(f"bad file-date: unknown date parameter {item!r}")
            if key in seen:
                raise SdpProtocolError(f"bad file-date: duplicate {key} date")
            seen.add(key)
            setattr(dates, key, _parse_date(_unquote(quoted, f"file-date {key}")))
        return dates

    def __str__(self) -> str:
        parts = [
            f'{key}:"{email.utils.format_datetime(getattr(self, key))}"'
            for key in ("creation", "modification", "read")
            if getattr(self, key) is not None
        ]
        return " ".join(parts)


def _parse_date(text: str) -> datetime:
    """RFC 5322 date-time with a numeric zone."""
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise SdpProtocolError(f"bad file-date: {text!r} is not an RFC 5322 date-time") from None
    if parsed.tzinfo is None:
        raise SdpProtocolError(f"bad file-date: {text!r} has no numeric time zone")
    return parsed


@dataclass(slots=True, frozen=True)
class FileRange:
    """``a=file-range:<start>-<stop|*>``, 1-based inclusive octets (RFC 5547 section 6)."""

    start: int
    stop: int | None = None

    @classmethod
    def parse(cls, value: str) -> FileRange:
        start_text, sep, stop_text = value.partition("-")
        if not sep:
            raise SdpProtocolError(f"bad file-range {value!r}: expected start-stop")
        start = parse_int(start_text, "file-range start")
        stop = None if stop_text == "*" else parse_int(stop_text, "file-range stop")
        if start < 1 or (stop is not None and stop < start):
            raise SdpProtocolError(f"bad file-range {value!r}: start must be >= 1 and <= stop")
        return cls(start, stop)

    def __str__(self) -> str:
        return f"{self.start}-{'*' if self.stop is None else self.stop}"
