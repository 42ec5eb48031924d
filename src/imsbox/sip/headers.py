"""Typed views of the SIP header fields the stack reads (RFC 3261 section 20).

Each view is built from a header value string by ``X.parse(value)`` and
turned back into one by ``str()``.  Parse errors raise HeaderError, which is
a ValueError carrying the header name so a UAS can answer 400 naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipProtocolError
from .grammar import (
    GrammarError,
    format_params,
    is_token,
    quote,
    split_params,
    split_unquoted,
    strip_comments,
    unquote,
)
from .uri import SipUri, Uri, UriError, _parse_hostport, parse_uri

__all__ = [
    "HeaderError", "Params", "Via", "NameAddr", "Contact", "CSeq", "Event",
    "SubscriptionState", "Replaces", "Join", "TargetDialog", "SessionExpires", "RAck", "MediaType",
    "FeatureSet", "ReferredBy", "COMPACT_FORMS", "canonical_name", "parse_int",
    "token_list",
]


class HeaderError(SipProtocolError, ValueError):
    """A header field value is malformed; ``header`` names the field."""

    def __init__(self, header: str, reason: str) -> None:
        super().__init__(f"bad {header} header: {reason}")
        self.header = header
        self.reason = reason


# RFC 3261 7.3.3 and later RFCs' compact forms.
COMPACT_FORMS = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via",
    "c": "Content-Type", "o": "Event", "r": "Refer-To", "u": "Allow-Events",
    "x": "Session-Expires", "y": "Identity", "b": "Referred-By",
    "a": "Accept-Contact", "j": "Reject-Contact", "d": "Request-Disposition",
}

_WELL_KNOWN = {
    n.lower(): n
    for n in (
        "Call-ID", "CSeq", "WWW-Authenticate", "Max-Forwards", "Record-Route",
        "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Min-SE",
        "RSeq", "RAck", "P-Asserted-Identity", "P-Preferred-Identity",
        "Service-Route", "P-Access-Network-Info", "Session-Expires", "Min-Expires",
        "Refer-To", "Referred-By", "Subscription-State", "Allow-Events", "MIME-Version",
        "Conversation-ID", "Contribution-ID", "P-Preferred-Service",
        "P-Asserted-Service", "P-Charging-Vector", "P-Called-Party-ID",
    )
}


def canonical_name(name: str) -> str:
    """The long, conventionally capitalised form of a header name."""
    if len(name) == 1:
        long = COMPACT_FORMS.get(name.lower())
        if long:
            return long
    low = name.lower()
    known = _WELL_KNOWN.get(low)
    if known:
        return known
    return "-".join(p[:1].upper() + p[1:] for p in low.split("-"))


def parse_int(header: str, value: str, maximum: int = 2**32 - 1) -> int:
    value = value.strip()
    if not value.isdigit() or not value.isascii() or len(value) > 10 or int(value) > maximum:
        raise HeaderError(header, f"not an integer in range: {value[:40]!r}")
    return int(value)


def token_list(header: str, value: str) -> list[str]:
    """Comma-separated tokens (Require, Supported, Allow, Proxy-Require ...)."""
    out = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if not is_token(item):
            raise HeaderError(header, f"not a token: {item[:40]!r}")
        out.append(item)
    return out


class Params(list[tuple[str, str | None]]):
    """Ordered ``(name, raw value)`` pairs with case-insensitive lookup."""

    def get(self, name: str, default: str | None = None) -> str | None:
        low = name.lower()
        for n, v in self:
            if n.lower() == low:
                return unquote(v) if v is not None else ""
        return default

    def has(self, name: str) -> bool:
        low = name.lower()
        return any(n.lower() == low for n, _ in self)

    def set(self, name: str, value: str | None = None) -> None:
        self.discard(name)
        self.append((name, value))

    def discard(self, name: str) -> None:
        low = name.lower()
        self[:] = [(n, v) for n, v in self if n.lower() != low]

    def __str__(self) -> str:
        return format_params(self)


def _params(header: str, text: str) -> Params:
    try:
        return Params(split_params(text))
    except GrammarError as exc:
        raise HeaderError(header, str(exc)) from None


_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
# sent-protocol LWS sent-by, with LWS allowed around "/" and ":" (25.1)
_VIA_RE = re.compile(
    rf"({_TOKEN})\s*/\s*({_TOKEN})\s*/\s*({_TOKEN})\s+(\[[^\]]*\]|[^\s:]+)(?:\s*:\s*(\S+))?")


@dataclass(slots=True)
class Via:
    """One Via element (RFC 3261 20.42, 18.2.1, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=Params)
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, value: str) -> Via:
        try:
            value = strip_comments(value)
        except GrammarError as exc:
            raise HeaderError("Via", str(exc)) from None
        proto, _, rest = value.partition(";")
        match = _VIA_RE.fullmatch(proto.strip())
        if not match:
            raise HeaderError("Via", f"bad sent-protocol or sent-by {proto.strip()[:60]!r}")
        name, version, transport, host_text, port_text = match.groups()
        try:
            host, port = _parse_hostport(
                host_text if port_text is None else f"{host_text}:{port_text}")
        except UriError as exc:
            raise HeaderError("Via", str(exc)) from None
        protocol = "SIP/2.0" if name == "SIP" and version == "2.0" else f"{name}/{version}"
        return cls(transport.upper(), host, port, _params("Via", rest), protocol)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def wants_rport(self) -> bool:
        return self.params.has("rport")

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{self.params}"


@dataclass(slots=True)
class NameAddr:
    """name-addr or addr-spec with header params (From, To, Route, Contact ...)."""

    uri: Uri
    display_name: str | None = None
    params: Params = field(default_factory=Params)

    @classmethod
    def parse(cls, value: str, header: str = "name-addr") -> NameAddr:
        value = value.strip()
        display = None
        try:
            if "<" in value:
                lt = _angle_start(value)
                head = value[:lt].strip()
                gt = value.find(">", lt)
                if gt < 0:
                    raise HeaderError(header, "missing '>'")
                uri = parse_uri(value[lt + 1:gt])
                rest = value[gt + 1:].strip()
                if head:
                    display = unquote(head) if head.startswith('"') else " ".join(head.split())
                    if not head.startswith('"') and not all(is_token(t) for t in head.split()):
                        raise HeaderError(header, f"bad display name {head[:40]!r}")
            else:
                # addr-spec: parameters after ';' belong to the header (20.10)
                uri_text, semi, rest = value.partition(";")
                rest = semi + rest
                uri = parse_uri(uri_text)
        except UriError as exc:
            raise HeaderError(header, str(exc)) from None
        if rest and not rest.startswith(";"):
            raise HeaderError(header, f"junk after address: {rest[:40]!r}")
        return cls(uri, display, _params(header, rest[1:]))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        name = ""
        if self.display_name is not None:
            dn = self.display_name
            name = (dn if dn and all(is_token(t) for t in dn.split()) else quote(dn)) + " "
        return f"{name}<{self.uri}>{self.params}"


def _angle_start(value: str) -> int:
    """Index of the '<' that opens the URI, skipping a quoted display name."""
    i = 0
    if value.startswith('"'):
        i = 1
        while i < len(value) and value[i] != '"':
            i += 2 if value[i] == "\\" else 1
        if i >= len(value):
            raise HeaderError("name-addr", "unterminated display name")
    lt = value.find("<", i)
    if lt < 0:
        raise HeaderError("name-addr", "missing '<'")
    return lt


@dataclass(slots=True)
class Contact:
    """A Contact value (20.10): an address with expires/q/feature tags, or '*'."""

    address: NameAddr | None

    @classmethod
    def parse(cls, value: str) -> Contact:
        if value.strip() == "*":
            return cls(None)
        return cls(NameAddr.parse(value, "Contact"))

    @property
    def is_star(self) -> bool:
        return self.address is None

    @property
    def uri(self) -> Uri:
        if self.address is None:
            raise HeaderError("Contact", "'*' has no URI")
        return self.address.uri

    @property
    def params(self) -> Params:
        return self.address.params if self.address else Params()

    @property
    def expires(self) -> int | None:
        value = self.params.get("expires")
        if value is None:
            return None
        return parse_int("Contact", value)

    @property
    def q(self) -> float:
        value = self.params.get("q")
        try:
            return float(value) if value else 1.0
        except ValueError:
            raise HeaderError("Contact", f"bad q value {value!r}") from None

    @property
    def instance(self) -> str | None:
        return self.params.get("+sip.instance")

    @property
    def reg_id(self) -> int | None:
        value = self.params.get("reg-id")
        return parse_int("Contact", value) if value else None

    @property
    def feature_tags(self) -> FeatureSet:
        return FeatureSet.from_params(self.params)

    def __str__(self) -> str:
        return "*" if self.address is None else str(self.address)


@dataclass(slots=True)
class FeatureSet:
    """Feature tags of RFC 3840 (Contact) / RFC 3841 (Accept-/Reject-Contact)."""

    tags: dict[str, str | None]
    require: bool = False
    explicit: bool = False

    @classmethod
    def from_params(cls, params: Params) -> FeatureSet:
        tags: dict[str, str | None] = {}
        require = explicit = False
        for name, value in params:
            low = name.lower()
            if low == "require":
                require = True
            elif low == "explicit":
                explicit = True
            elif low.startswith("+") or low in _BASE_TAGS:
                tags[low] = unquote(value) if value is not None else None
        return cls(tags, require, explicit)

    @classmethod
    def parse(cls, value: str) -> FeatureSet:
        """An Accept-Contact / Reject-Contact element: '*' followed by params."""
        value = value.strip()
        if not value.startswith("*"):
            raise HeaderError("Accept-Contact", "element must start with '*'")
        rest = value[1:].strip()
        if rest and not rest.startswith(";"):
            raise HeaderError("Accept-Contact", f"junk after '*': {rest[:40]!r}")
        return cls.from_params(_params("Accept-Contact", rest[1:]))

    def values(self, tag: str) -> set[str]:
        """A tag's value set; a quoted list "a,b" means either value."""
        raw = self.tags.get(tag.lower())
        if raw is None:
            return set()
        return {v.strip() for v in raw.split(",") if v.strip()}

    def __str__(self) -> str:
        out = ["*"]
        for name, value in self.tags.items():
            out.append(f";{name}" if value is None else f";{name}={quote(value)}")
        if self.require:
            out.append(";require")
        if self.explicit:
            out.append(";explicit")
        return "".join(out)


_BASE_TAGS = {
    "audio", "automata", "class", "duplex", "data", "control", "mobility",
    "description", "events", "priority", "methods", "schemes", "application",
    "video", "language", "type", "isfocus", "actor", "text", "extensions",
}


@dataclass(slots=True)
class CSeq:
    """CSeq (20.16): sequence number and method."""

    seq: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        parts = value.split()
        if len(parts) != 2:
            raise HeaderError("CSeq", "expected 'number method'")
        seq = parse_int("CSeq", parts[0])
        if not is_token(parts[1]):
            raise HeaderError("CSeq", f"bad method {parts[1]!r}")
        return cls(seq, parts[1])

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@dataclass(slots=True)
class MediaType:
    """Content-Type / Accept element: type/subtype;params (RFC 3261 20.15)."""

    type: str
    subtype: str
    params: Params = field(default_factory=Params)

    @classmethod
    def parse(cls, value: str) -> MediaType:
        main, _, rest = value.partition(";")
        t, slash, s = main.strip().partition("/")
        if not slash or not is_token(t.strip()) or not is_token(s.strip()):
            raise HeaderError("Content-Type", f"bad media type {main.strip()[:60]!r}")
        return cls(t.strip().lower(), s.strip().lower(), _params("Content-Type", rest))

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        return f"{self.mime}{self.params}"


@dataclass(slots=True)
class Event:
    """Event (RFC 6665 8.2.1): package with template and id param."""

    package: str
    params: Params = field(default_factory=Params)

    @classmethod
    def parse(cls, value: str) -> Event:
        name, _, rest = value.partition(";")
        name = name.strip()
        if not is_token(name):
            raise HeaderError("Event", f"bad event type {name[:40]!r}")
        return cls(name.lower(), _params("Event", rest))

    @property
    def id(self) -> str | None:
        return self.params.get("id")

    def matches(self, other: Event) -> bool:
        """Same package and same id (RFC 6665 8.2.1)."""
        return self.package == other.package and self.id == other.id

    def __str__(self) -> str:
        return f"{self.package}{self.params}"


@dataclass(slots=True)
class SubscriptionState:
    """Subscription-State (RFC 6665 8.2.3)."""

    state: str
    params: Params = field(default_factory=Params)

    @classmethod
    def parse(cls, value: str) -> SubscriptionState:
        name, _, rest = value.partition(";")
        name = name.strip().lower()
        if not is_token(name):
            raise HeaderError("Subscription-State", f"bad state {name[:40]!r}")
        return cls(name, _params("Subscription-State", rest))

    @property
    def expires(self) -> int | None:
        v = self.params.get("expires")
        return parse_int("Subscription-State", v) if v else None

    @property
    def reason(self) -> str | None:
        return self.params.get("reason")

    @property
    def retry_after(self) -> int | None:
        v = self.params.get("retry-after")
        return parse_int("Subscription-State", v) if v else None

    def __str__(self) -> str:
        return f"{self.state}{self.params}"


@dataclass(slots=True)
class Replaces:
    """Replaces (RFC 3891 6.1): the dialog an INVITE replaces, by Call-ID and
    tags as its recipient sees them (to-tag is the recipient's own)."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    @classmethod
    def parse(cls, value: str, header: str = "Replaces") -> Replaces:
        call_id, params = _dialog_ref(value, header)
        return cls(call_id, params.get("to-tag") or "", params.get("from-tag") or "",
                   params.has("early-only"))

    def __str__(self) -> str:
        early = ";early-only" if self.early_only else ""
        return f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}{early}"


@dataclass(slots=True)
class Join:
    """Join (RFC 3911 7.1): the dialog an INVITE joins, named as in Replaces."""

    call_id: str
    to_tag: str
    from_tag: str

    @classmethod
    def parse(cls, value: str, header: str = "Join") -> Join:
        call_id, params = _dialog_ref(value, header)
        return cls(call_id, params.get("to-tag") or "", params.get("from-tag") or "")

    def __str__(self) -> str:
        return f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}"


@dataclass(slots=True)
class TargetDialog:
    """Target-Dialog (RFC 4538 7): the dialog a request outside it is about, as
    its sender sees it (local-tag is the sender's own)."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def parse(cls, value: str, header: str = "Target-Dialog") -> TargetDialog:
        call_id, _, rest = value.partition(";")
        params = _params(header, rest)
        local, remote = params.get("local-tag"), params.get("remote-tag")
        if not call_id.strip() or not local or not remote:
            raise HeaderError(header, "needs Call-ID, local-tag and remote-tag")
        return cls(call_id.strip(), local, remote)

    def __str__(self) -> str:
        return f"{self.call_id};local-tag={self.local_tag};remote-tag={self.remote_tag}"


def _dialog_ref(value: str, header: str) -> tuple[str, Params]:
    """callid *(SEMI params) with the to-tag and from-tag both present."""
    call_id, _, rest = value.partition(";")
    params = _params(header, rest)
    if not call_id.strip() or not params.get("to-tag") or not params.get("from-tag"):
        raise HeaderError(header, "needs Call-ID, to-tag and from-tag")
    return call_id.strip(), params


@dataclass(slots=True)
class SessionExpires:
    """Session-Expires / Min-SE (RFC 4028): delta seconds and refresher."""

    delta: int
    params: Params = field(default_factory=Params)

    @classmethod
    def parse(cls, value: str, header: str = "Session-Expires") -> SessionExpires:
        num, _, rest = value.partition(";")
        return cls(parse_int(header, num), _params(header, rest))

    @property
    def refresher(self) -> str | None:
        r = self.params.get("refresher")
        return r.lower() if r else None

    def __str__(self) -> str:
        return f"{self.delta}{self.params}"


@dataclass(slots=True)
class RAck:
    """RAck (RFC 3262 7.2): response number, CSeq number, method."""

    rseq: int
    cseq: int
    method: str

    @classmethod
    def parse(cls, value: str) -> RAck:
        parts = value.split()
        if len(parts) != 3 or not is_token(parts[2]):
            raise HeaderError("RAck", "expected 'rseq cseq method'")
        return cls(parse_int("RAck", parts[0]), parse_int("RAck", parts[1]), parts[2])

    def __str__(self) -> str:
        return f"{self.rseq} {self.cseq} {self.method}"


@dataclass(slots=True)
class ReferredBy:
    """Referred-By (RFC 3892): an address with an optional cid param."""

    address: NameAddr

    @classmethod
    def parse(cls, value: str) -> ReferredBy:
        return cls(NameAddr.parse(value, "Referred-By"))

    @property
    def uri(self) -> Uri:
        return self.address.uri

    def __str__(self) -> str:
        return str(self.address)


def name_addr_list(header: str, value: str) -> list[NameAddr]:
    try:
        return [NameAddr.parse(v, header) for v in split_unquoted(value)]
    except GrammarError as exc:
        raise HeaderError(header, str(exc)) from None


def refer_to_target(value: str) -> tuple[NameAddr, dict[str, str]]:
    """Refer-To (RFC 3515 2.1): the address and its embedded URI headers
    (e.g. Replaces), %-decoded."""
    from urllib.parse import unquote as pct

    addr = NameAddr.parse(value, "Refer-To")
    embedded: dict[str, str] = {}
    if isinstance(addr.uri, SipUri):
        embedded = {canonical_name(n): pct(v) for n, v in addr.uri.headers}
    return addr, embedded

