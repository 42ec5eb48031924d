"""MSRP URIs: ``msrp://`` and ``msrps://`` (RFC 4975 sections 6 and 9)."""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from .errors import UriError

_URI_RE = re.compile(
    r"(?P<scheme>[A-Za-z]+)://"
    r"(?:(?P<userinfo>[^@/\[\];]*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,=-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?:/(?P<session_id>[A-Za-z0-9._~+=/%-]+))?"
    r";(?P<params>.+)\Z",
    re.ASCII,
)
_TOKEN_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z", re.ASCII)


@dataclass(slots=True, frozen=True, eq=False)
class MsrpUri:
    """One MSRP URI; ``==`` and ``hash`` follow RFC 4975 section 6.1."""

    scheme: str
    host: str  # as written; IPv6 without brackets
    port: int | None
    session_id: str | None
    transport: str = "tcp"
    userinfo: str | None = None
    params: tuple[tuple[str, str | None], ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> MsrpUri:
        """Parse ``msrp[s]://authority[/session-id];transport*(;param)``."""
        m = _URI_RE.match(text)
        if m is None:
            raise UriError(f"malformed MSRP URI {text[:80]!r}")
        scheme = m["scheme"].lower()
        if scheme not in ("msrp", "msrps"):
            raise UriError(f"MSRP URI scheme must be msrp or msrps, not {m['scheme']!r}")
        host = m["host"]
        if host.startswith("["):
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise UriError(f"bad IPv6 address in MSRP URI: {host!r}") from None
        port = int(m["port"]) if m["port"] else None
        if port is not None and port > 65535:
            raise UriError(f"MSRP URI port out of range: {port}")
        if port is None and _ip(host) is not None:
            raise UriError("MSRP URI with a numeric IP address must carry a port")
        parts = m["params"].split(";")
        transport = parts[0]
        if not transport.isalnum() or not transport.isascii():
            raise UriError(f"bad transport in MSRP URI: {transport!r}")
        params: list[tuple[str, str | None]] = []
        for p in parts[1:]:
            name, eq, value = p.partition("=")
            if not _TOKEN_RE.match(name) or (eq and not _TOKEN_RE.match(value)):
                raise UriError(f"bad URI parameter in MSRP URI: {p!r}")
            params.append((name, value if eq else None))
        return cls(scheme, host, port, m["session_id"], transport, m["userinfo"], tuple(params))

    @property
    def is_secure(self) -> bool:
        return self.scheme == "msrps"

    @property
    def authority(self) -> tuple[str, int | None]:
        """(host, port) to connect to (RFC 4975 section 6.2)."""
        return self.host, self.port

    def _key(self) -> tuple[object, ...]:
        """Comparison key, RFC 4975 section 6.1 (userinfo is not considered)."""
        host: object = _ip(self.host) or unquote(self.host).lower()
        return (self.scheme.lower(), host, self.port, self.session_id, self.transport.lower())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MsrpUri):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        out = f"{self.scheme}://"
        if self.userinfo is not None:
            out += f"{self.userinfo}@"
        out += host
        if self.port is not None:
            out += f":{self.port}"
        if self.session_id is not None:
            out += f"/{self.session_id}"
        out += f";{self.transport}"
        for name, value in self.params:
            out += f";{name}" if value is None else f";{name}={value}"
        return out


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1024)
def parse_path(value: str) -> tuple[MsrpUri, ...]:
    """Parse a To-Path / From-Path value: SP-separated URIs (RFC 4975 section 9).

    Cached: every chunk and response of a session repeats the same two paths,
    and MsrpUri is frozen, so the parsed tuple can be shared (bounded LRU)."""
    parts = value.split()
    if not parts:
        raise UriError("empty path")
    return tuple(MsrpUri.parse(p) for p in parts)
