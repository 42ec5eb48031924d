"""SIP, SIPS and tel URIs (RFC 3261 section 19.1, RFC 3966)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote as _pct_decode

from .grammar import format_params, split_params, GrammarError
from .errors import SipProtocolError

__all__ = ["UriError", "SipUri", "TelUri", "AbsoluteUri", "Uri", "parse_uri", "uri_equal"]


class UriError(SipProtocolError, ValueError):
    """A URI does not follow RFC 3261 / RFC 3966 syntax."""


_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# RFC 3261 hostnames, plus "_" which real deployments (and TS 24.247) use.
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_\-.]*[A-Za-z0-9_])?\.?")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
# characters that may never appear raw in a URI carried in a header
_FORBIDDEN = re.compile(r"[\s<>\"]")
_PCT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Parameters whose presence in only one URI makes the URIs differ (19.1.4).
_SIGNIFICANT = ("user", "ttl", "method", "maddr", "transport")


def _decode(text: str) -> str:
    return _pct_decode(text, errors="surrogateescape")


def _check_escapes(text: str, what: str) -> None:
    if _PCT_RE.search(text):
        raise UriError(f"bad %-escape in {what}")


@dataclass(slots=True, eq=False)
class SipUri:
    """sip: or sips: URI; user/password/params/headers kept as written."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: list[tuple[str, str | None]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    scheme: str = "sip"

    # -- parameters -------------------------------------------------------
    def param(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for n, v in self.params:
            if n.lower() == name:
                return v if v is not None else ""
        return default

    def has_param(self, name: str) -> bool:
        name = name.lower()
        return any(n.lower() == name for n, _ in self.params)

    def set_param(self, name: str, value: str | None = None) -> None:
        self.remove_param(name)
        self.params.append((name, value))

    def remove_param(self, name: str) -> None:
        low = name.lower()
        self.params = [(n, v) for n, v in self.params if n.lower() != low]

    @property
    def transport(self) -> str | None:
        t = self.param("transport")
        return t.lower() if t else None

    @property
    def lr(self) -> bool:
        return self.has_param("lr")

    @property
    def maddr(self) -> str | None:
        return self.param("maddr")

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def aor(self) -> str:
        """Address-of-record form: scheme:user@host, no port or params."""
        user = f"{self.user}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.host.lower()}"

    def copy(self, **changes: object) -> SipUri:
        fields: dict[str, Any] = {
            "host": self.host, "user": self.user, "password": self.password,
            "port": self.port, "params": list(self.params),
            "headers": list(self.headers), "scheme": self.scheme,
        }
        fields.update(changes)
        return SipUri(**fields)

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.hostport)
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{n}={v}" for n, v in self.headers))
        return "".join(out)

    def __repr__(self) -> str:
        return f"SipUri({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SipUri) and uri_equal(self, other)

    def __hash__(self) -> int:
        return hash((self.scheme, _decode(self.user or ""), self.host.lower(), self.port))


@dataclass(slots=True, eq=False)
class TelUri:
    """tel: URI (RFC 3966); number keeps its visual separators."""

    number: str
    params: list[tuple[str, str | None]] = field(default_factory=list)
    scheme: str = "tel"

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    @property
    def digits(self) -> str:
        """The number without visual separators (RFC 3966 section 5.1.1)."""
        return re.sub(r"[\-.()]", "", self.number)

    def param(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for n, v in self.params:
            if n.lower() == name:
                return v if v is not None else ""
        return default

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"TelUri({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TelUri) and uri_equal(self, other)

    def __hash__(self) -> int:
        return hash(self.digits.lower())


@dataclass(slots=True)
class AbsoluteUri:
    """Any other absolute URI (urn:, im:, http:, mailto: ...), kept verbatim."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse an absolute URI; sip/sips/tel get typed objects."""
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or (scheme not in _COMMON_SCHEMES and not _SCHEME_RE.fullmatch(scheme)):
        raise UriError(f"not an absolute URI: {text[:80]!r}")
    if _FORBIDDEN.search(rest):
        raise UriError("whitespace or <>\" inside URI")
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest)
    if scheme == "tel":
        return _parse_tel(rest)
    if not rest:
        raise UriError(f"empty {scheme}: URI")
    return AbsoluteUri(scheme, rest)


def _parse_sip(scheme: str, rest: str) -> SipUri:
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        if not userinfo:
            raise UriError("empty user part before '@'")
        if "%" in userinfo:
            _check_escapes(userinfo, "user part")
        user, colon, pw = userinfo.partition(":")
        if colon:
            password = pw
    rest, qmark, hdrs = rest.partition("?")
    hostport, _, params_text = rest.partition(";")
    host, port = _parse_hostport(hostport)
    try:
        params = split_params(params_text) if params_text else []
    except GrammarError as exc:
        raise UriError(f"bad URI parameter: {exc}") from None
    headers: list[tuple[str, str]] = []
    if qmark:
        for item in hdrs.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise UriError(f"bad URI header {item!r}")
            _check_escapes(value, "URI header")
            headers.append((name, value))
    return SipUri(host, user, password, port, params, headers, scheme)


def _parse_hostport(text: str) -> tuple[str, int | None]:
    known = _KNOWN_HOSTPORTS.get(text)
    if known is not None:
        return known
    hostport = _check_hostport(text)
    if len(_KNOWN_HOSTPORTS) < _KNOWN_HOSTPORTS_MAX:
        _KNOWN_HOSTPORTS[text] = hostport
    return hostport


# host[:port] texts already checked: peers, proxies and domains repeat on
# every message, so the host regex runs once per name.  Bounded.
_KNOWN_HOSTPORTS: dict[str, tuple[str, int | None]] = {}
_KNOWN_HOSTPORTS_MAX = 4096
_COMMON_SCHEMES = frozenset({"sip", "sips", "tel"})


def _check_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UriError("unterminated IPv6 reference")
        host, tail = text[: end + 1], text[end + 1:]
        if not _IPV6_RE.fullmatch(host):
            raise UriError(f"bad IPv6 reference {host!r}")
        if tail and not tail.startswith(":"):
            raise UriError(f"junk after IPv6 reference: {tail!r}")
        port_text = tail[1:] if tail else None
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = None
        if not host or not _HOSTNAME_RE.fullmatch(host):
            raise UriError(f"bad host {host!r}")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not port_text.isascii() or int(port_text) > 65535:
        raise UriError(f"bad port {port_text!r}")
    return host, int(port_text)


_TEL_GLOBAL = re.compile(r"\+[0-9\-.()]*[0-9][0-9\-.()]*")
_TEL_LOCAL = re.compile(r"[0-9A-Fa-f*#\-.()]*[0-9A-Fa-f*#][0-9A-Fa-f*#\-.()]*")


def _parse_tel(rest: str) -> TelUri:
    number, _, params_text = rest.partition(";")
    try:
        params = split_params(params_text) if params_text else []
    except GrammarError as exc:
        raise UriError(f"bad tel parameter: {exc}") from None
    if _TEL_GLOBAL.fullmatch(number):
        return TelUri(number, params)
    if _TEL_LOCAL.fullmatch(number):
        if not any(n.lower() == "phone-context" for n, _ in params):
            raise UriError("local tel number without phone-context")
        return TelUri(number, params)
    raise UriError(f"bad telephone number {number!r}")


def _param_map(params: list[tuple[str, str | None]]) -> dict[str, str]:
    return {n.lower(): _decode(v or "").lower() for n, v in params}


def uri_equal(a: Uri, b: Uri) -> bool:
    """URI comparison of RFC 3261 19.1.4 (and RFC 3966 section 4 for tel)."""
    if isinstance(a, SipUri) and isinstance(b, SipUri):
        return _sip_equal(a, b)
    if isinstance(a, TelUri) and isinstance(b, TelUri):
        return (a.digits.lower() == b.digits.lower()
                and _param_map(a.params) == _param_map(b.params))
    if isinstance(a, AbsoluteUri) and isinstance(b, AbsoluteUri):
        return a.scheme == b.scheme and a.rest == b.rest
    return False


def _sip_equal(a: SipUri, b: SipUri) -> bool:
    if a.scheme != b.scheme or a.port != b.port:
        return False
    if _decode(a.user or "") != _decode(b.user or "") or (a.user is None) != (b.user is None):
        return False
    if _decode(a.password or "") != _decode(b.password or ""):
        return False
    if a.host.lower() != b.host.lower():
        return False
    pa, pb = _param_map(a.params), _param_map(b.params)
    for name in _SIGNIFICANT:
        if (name in pa or name in pb) and pa.get(name) != pb.get(name):
            return False
    for name in pa.keys() & pb.keys():
        if pa[name] != pb[name]:
            return False
    ha = {n.lower(): _decode(v) for n, v in a.headers}
    hb = {n.lower(): _decode(v) for n, v in b.headers}
    return ha == hb
