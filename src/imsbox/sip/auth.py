"""SIP Digest authentication (RFC 3261 section 22, RFC 7616, RFC 8760), sans-I/O.

Works on header *values* (the text after ``WWW-Authenticate:`` and friends):

* :class:`Challenge` - WWW-Authenticate / Proxy-Authenticate values.
* :class:`Credentials` - Authorization / Proxy-Authorization values.
* :func:`answer_challenge` - the UAC side.
* :class:`DigestAuthenticator` - the UAS / proxy side: stateless HMAC nonces,
  stale detection, nonce-count replay protection.

Secrets are kept as H(A1) only (:class:`HA1Store`), never as passwords.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .errors import SipProtocolError

__all__ = [
    "AUTHORIZATION",
    "PROXY_AUTHENTICATE",
    "PROXY_AUTHORIZATION",
    "WWW_AUTHENTICATE",
    "Algorithm",
    "Challenge",
    "Credentials",
    "DigestAuthenticator",
    "DigestError",
    "HA1Lookup",
    "HA1Store",
    "NonceCounts",
    "Qop",
    "Verification",
    "VerifyOutcome",
    "answer_challenge",
    "choose_challenge",
    "compute_ha1",
    "compute_response",
    "compute_userhash",
    "credentials_for_realm",
]

WWW_AUTHENTICATE = "WWW-Authenticate"
PROXY_AUTHENTICATE = "Proxy-Authenticate"
AUTHORIZATION = "Authorization"
PROXY_AUTHORIZATION = "Proxy-Authorization"


class DigestError(SipProtocolError, ValueError):
    """Malformed or unusable Digest input; ``reason`` says why (fit for a 400 reason phrase)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Algorithm(enum.Enum):
    """Digest algorithms (RFC 7616 section 3.2, RFC 8760 section 2)."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA_256 = "SHA-256"
    SHA_256_SESS = "SHA-256-sess"

    @classmethod
    def parse(cls, token: str) -> Algorithm:
        """Algorithm tokens compare case-insensitively."""
        for algorithm in cls:
            if algorithm.value.lower() == token.lower():
                return algorithm
        raise DigestError(f"unsupported algorithm {token!r}")

    @property
    def is_session(self) -> bool:
        return self.value.endswith("-sess")

    @property
    def base(self) -> Algorithm:
        """The non-session algorithm whose H(A1) a store keeps."""
        return Algorithm(self.value.removesuffix("-sess"))

    @property
    def hash_name(self) -> str:
        return "md5" if self.base is Algorithm.MD5 else "sha256"

    def hash(self, data: bytes | str) -> str:
        """Hex digest; text is hashed as UTF-8 (RFC 7616 section 3.4.1)."""
        if isinstance(data, str):
            data = _utf8(data)
        return hashlib.new(self.hash_name, data).hexdigest()


class Qop(enum.Enum):
    """Quality of protection (RFC 7616 section 3.3)."""

    AUTH = "auth"
    AUTH_INT = "auth-int"


# ---------------------------------------------------------------------------
# auth-param list grammar (RFC 3261 section 25.1, RFC 7235 section 2.1)

# Union of SIP token chars and HTTP tchar, so both peers' tokens pass.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_WS_RE = re.compile(r"[ \t]*")
_FOLD_RE = re.compile(r"\r?\n[ \t]+")
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise DigestError("text is not valid Unicode") from None


def _is_token(value: str) -> bool:
    return _TOKEN_RE.fullmatch(value) is not None


def _check_text(value: str, what: str) -> None:
    """Reject controls (except HT), which break or inject header lines, and lone surrogates."""
    for char in value:
        if (char < " " and char != "\t") or char == "\x7f":
            raise DigestError(f"control character in {what}")
        if "\ud800" <= char <= "\udfff":
            raise DigestError(f"undecodable character in {what}")


def _quote(value: str) -> str:
    """RFC 3261 section 25.1 quoted-string, escaping DQUOTE and backslash."""
    _check_text(value, "quoted-string")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _token_or_quoted(value: str) -> str:
    return value if _is_token(value) else _quote(value)


class _Scanner:
    """Cursor over one header value; every failure is a DigestError."""

    __slots__ = ("text", "pos")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> int:
        start = self.pos
        self.pos = _WS_RE.match(self.text, self.pos).end()  # type: ignore[union-attr]
        return self.pos - start

    def token(self, what: str) -> str:
        match = _TOKEN_RE.match(self.text, self.pos)
        if match is None:
            raise DigestError(f"expected {what} at offset {self.pos}")
        self.pos = match.end()
        return match.group()

    def quoted_string(self) -> str:
        """Consume a quoted-string starting at DQUOTE and return it unescaped."""
        out: list[str] = []
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == "\\":
                if self.pos >= len(self.text):
                    break
                char = self.text[self.pos]
                self.pos += 1
            _check_text(char, "quoted-string")
            out.append(char)
        raise DigestError("unterminated quoted-string")


def _parse_auth_value(value: str) -> tuple[str, dict[str, str]]:
    """Split ``scheme auth-param *("," auth-param)`` into scheme and params.

    Param names are lowercased; values are unquoted. Empty list elements are
    tolerated (RFC 7230 section 7), duplicates are not (RFC 7616 section 3.4).
    """
    if not isinstance(value, str):
        raise DigestError("header value must be str")
    scanner = _Scanner(_FOLD_RE.sub(" ", value).strip(" \t"))
    scheme = scanner.token("auth-scheme")
    if not scanner.at_end() and scanner.skip_ws() == 0:
        raise DigestError("expected whitespace after auth-scheme")
    params: dict[str, str] = {}
    while True:
        scanner.skip_ws()
        if scanner.at_end():
            return scheme, params
        if scanner.peek() == ",":
            scanner.pos += 1
            continue
        name, param_value = _parse_auth_param(scanner)
        if name in params:
            raise DigestError(f"duplicate parameter {name!r}")
        params[name] = param_value
        scanner.skip_ws()
        if not scanner.at_end() and scanner.peek() != ",":
            raise DigestError(f"expected ',' at offset {scanner.pos}")


def _parse_auth_param(scanner: _Scanner) -> tuple[str, str]:
    name = scanner.token("parameter name").lower()
    scanner.skip_ws()
    if scanner.peek() != "=":
        raise DigestError(f"expected '=' after {name!r}")
    scanner.pos += 1
    scanner.skip_ws()
    if scanner.peek() == '"':
        return name, scanner.quoted_string()
    return name, scanner.token(f"value of {name!r}")


def _check_scheme(scheme: str) -> None:
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported auth-scheme {scheme!r}")


def _require(params: Mapping[str, str], name: str) -> str:
    try:
        return params[name]
    except KeyError:
        raise DigestError(f"missing {name!r} parameter") from None


def _parse_bool(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise DigestError(f"{name!r} must be true or false")
    return raw == "true"


def _parse_algorithm(params: Mapping[str, str]) -> Algorithm | None:
    raw = params.get("algorithm")
    return None if raw is None else Algorithm.parse(raw)


def _render(pairs: Iterable[tuple[str, str | None]], extra: Mapping[str, str]) -> str:
    """``Digest a=b, c=d`` with pre-rendered values, skipping absent ones."""
    parts = [f"{name}={rendered}" for name, rendered in pairs if rendered is not None]
    for name, raw in extra.items():
        if not _is_token(name):
            raise DigestError(f"invalid parameter name {name!r}")
        parts.append(f"{name}={_token_or_quoted(raw)}")
    return "Digest " + ", ".join(parts)


def _quoted_or_none(value: str | None) -> str | None:
    return None if value is None else _quote(value)


# ---------------------------------------------------------------------------
# Challenge and Credentials values

_CHALLENGE_KNOWN = frozenset(
    {"realm", "nonce", "opaque", "stale", "algorithm", "qop", "domain", "charset", "userhash"}
)


@dataclass(slots=True, frozen=True)
class Challenge:
    """A Digest challenge (RFC 3261 section 22.4, RFC 7616 section 3.3)."""

    realm: str
    nonce: str
    opaque: str | None = None
    stale: bool = False
    algorithm: Algorithm | None = None
    qop: tuple[str, ...] = ()
    domain: tuple[str, ...] = ()
    charset: str | None = None
    userhash: bool = False
    params: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def effective_algorithm(self) -> Algorithm:
        """An absent algorithm means MD5 (RFC 7616 section 3.3)."""
        return self.algorithm or Algorithm.MD5

    @classmethod
    def parse(cls, value: str) -> Challenge:
        scheme, params = _parse_auth_value(value)
        _check_scheme(scheme)
        qop = params.get("qop")
        domain = params.get("domain")
        return cls(
            realm=_require(params, "realm"),
            nonce=_require(params, "nonce"),
            opaque=params.get("opaque"),
            stale=_parse_bool(params, "stale"),
            algorithm=_parse_algorithm(params),
            qop=() if qop is None else _split_qop_options(qop),
            domain=() if domain is None else tuple(domain.split()),
            charset=params.get("charset"),
            userhash=_parse_bool(params, "userhash"),
            params={k: v for k, v in params.items() if k not in _CHALLENGE_KNOWN},
        )

    def __str__(self) -> str:
        pairs = [
            ("realm", _quote(self.realm)),
            ("domain", _quote(" ".join(self.domain)) if self.domain else None),
            ("nonce", _quote(self.nonce)),
            ("opaque", _quoted_or_none(self.opaque)),
            ("stale", "true" if self.stale else None),
            ("algorithm", self.algorithm.value if self.algorithm else None),
            ("qop", _quote(",".join(self.qop)) if self.qop else None),
            ("charset", None if self.charset is None else _token_or_quoted(self.charset)),
            ("userhash", "true" if self.userhash else None),
        ]
        return _render(pairs, self.params)


def _split_qop_options(raw: str) -> tuple[str, ...]:
    """qop-options: comma separated tokens; unknown ones are kept for the caller to ignore."""
    options = tuple(part.strip(" \t").lower() for part in raw.split(","))
    if not all(_is_token(option) for option in options):
        raise DigestError("malformed qop options")
    return options


_CREDENTIALS_KNOWN = frozenset(
    {"username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "opaque", "qop", "nc",
     "userhash"}
)


@dataclass(slots=True, frozen=True)
class Credentials:
    """A Digest authorization response (RFC 3261 section 22.4, RFC 7616 section 3.4).

    ``uri`` may be absent in what a peer sent; the authenticator refuses that.
    ``nc`` is kept exactly as sent because it is hashed as text.
    """

    username: str
    realm: str
    nonce: str
    uri: str | None
    response: str
    algorithm: Algorithm | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: Qop | None = None
    nc: str | None = None
    userhash: bool = False
    params: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def effective_algorithm(self) -> Algorithm:
        return self.algorithm or Algorithm.MD5

    @property
    def nonce_count(self) -> int | None:
        return None if self.nc is None else int(self.nc, 16)

    @classmethod
    def parse(cls, value: str) -> Credentials:
        scheme, params = _parse_auth_value(value)
        _check_scheme(scheme)
        return cls(
            username=_require(params, "username"),
            realm=_require(params, "realm"),
            nonce=_require(params, "nonce"),
            uri=params.get("uri"),
            response=_require(params, "response"),
            algorithm=_parse_algorithm(params),
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
            qop=_parse_message_qop(params.get("qop")),
            nc=_parse_nc(params.get("nc")),
            userhash=_parse_bool(params, "userhash"),
            params={k: v for k, v in params.items() if k not in _CREDENTIALS_KNOWN},
        )

    def __str__(self) -> str:
        if self.nc is not None:
            _parse_nc(self.nc)
        pairs = [
            ("username", _quote(self.username)),
            ("realm", _quote(self.realm)),
            ("nonce", _quote(self.nonce)),
            ("uri", _quoted_or_none(self.uri)),
            ("response", _quote(self.response)),
            ("algorithm", self.algorithm.value if self.algorithm else None),
            ("cnonce", _quoted_or_none(self.cnonce)),
            ("opaque", _quoted_or_none(self.opaque)),
            ("qop", self.qop.value if self.qop else None),
            ("nc", self.nc),
            ("userhash", "true" if self.userhash else None),
        ]
        return _render(pairs, self.params)


def _parse_message_qop(raw: str | None) -> Qop | None:
    if raw is None:
        return None
    try:
        return Qop(raw.lower())
    except ValueError:
        raise DigestError(f"unsupported qop {raw!r}") from None


def _parse_nc(raw: str | None) -> str | None:
    """nonce-count = 8LHEX (RFC 3261 section 25.1)."""
    if raw is not None and _NC_RE.fullmatch(raw) is None:
        raise DigestError("nc must be 8 hex digits")
    return raw


def choose_challenge(values: Iterable[str]) -> Challenge:
    """The topmost challenge whose algorithm and qop we support (RFC 8760 section 2.4)."""
    reasons: list[str] = []
    for value in values:
        try:
            challenge = Challenge.parse(value)
            _choose_qop(challenge)
        except DigestError as exc:
            reasons.append(exc.reason)
            continue
        return challenge
    raise DigestError("no usable Digest challenge" + (f" ({'; '.join(reasons)})" if reasons else ""))


def credentials_for_realm(values: Iterable[str], realm: str) -> Credentials | None:
    """The Digest credentials for ``realm`` among (Proxy-)Authorization values (RFC 3261 22.3).

    Values that do not parse are skipped: they may belong to another realm.
    """
    for value in values:
        try:
            credentials = Credentials.parse(value)
        except DigestError:
            continue
        if credentials.realm == realm:
            return credentials
    return None


# ---------------------------------------------------------------------------
# Hash computations (RFC 7616 section 3.4.1 - 3.4.3)


def compute_ha1(username: str, realm: str, password: str, algorithm: Algorithm = Algorithm.MD5) -> str:
    """H(username:realm:password) - the base H(A1) a store keeps, also for -sess."""
    return algorithm.hash(f"{username}:{realm}:{password}")


def compute_userhash(username: str, realm: str, algorithm: Algorithm) -> str:
    """RFC 7616 section 3.4.4: H(username:realm)."""
    return algorithm.hash(f"{username}:{realm}")


def compute_response(
    *,
    algorithm: Algorithm,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: Qop | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """request-digest (RFC 7616 section 3.4.1; RFC 2069 form when qop is None)."""
    if algorithm.is_session:
        if cnonce is None:
            raise DigestError(f"{algorithm.value} needs a cnonce")
        ha1 = algorithm.hash(f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop is Qop.AUTH_INT:
        a2 += ":" + algorithm.hash(body)
    ha2 = algorithm.hash(a2)
    if qop is None:
        return algorithm.hash(f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise DigestError("qop needs nc and cnonce")
    return algorithm.hash(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop.value}:{ha2}")


# ---------------------------------------------------------------------------
# Client side


def _choose_qop(challenge: Challenge) -> Qop | None:
    """Prefer auth over auth-int; no qop offered means RFC 2069 mode."""
    if not challenge.qop:
        return None
    for qop in (Qop.AUTH, Qop.AUTH_INT):
        if qop.value in challenge.qop:
            return qop
    raise DigestError("no supported qop offered")


def answer_challenge(
    challenge: Challenge,
    method: str,
    uri: str,
    username: str,
    password: str | None = None,
    ha1: str | None = None,
    body: bytes = b"",
    nc: int = 1,
    cnonce: str | None = None,
) -> Credentials:
    """Build the Authorization value for ``challenge`` (RFC 3261 section 22.2, RFC 7616 3.4).

    Give either ``password`` or the base ``ha1`` for the challenge's algorithm.
    ``cnonce`` defaults to a fresh random value; pass one for determinism.
    """
    algorithm = challenge.effective_algorithm
    qop = _choose_qop(challenge)
    if (password is None) == (ha1 is None):
        raise DigestError("give exactly one of password or ha1")
    if ha1 is None:
        ha1 = compute_ha1(username, challenge.realm, password or "", algorithm.base)
    if qop is None and algorithm.is_session:
        raise DigestError(f"{algorithm.value} needs qop")
    if not 0 < nc <= 0xFFFFFFFF:
        raise DigestError("nc out of range")
    nc_text = f"{nc:08x}" if qop else None
    if qop is not None and cnonce is None:
        cnonce = secrets.token_urlsafe(16)
    response = compute_response(
        algorithm=algorithm, ha1=ha1, nonce=challenge.nonce, method=method, uri=uri,
        qop=qop, nc=nc_text, cnonce=cnonce if qop else None, body=body,
    )
    if challenge.userhash:
        username = compute_userhash(username, challenge.realm, algorithm.base)
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        cnonce=cnonce if qop else None,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc_text,
        userhash=challenge.userhash,
    )


# ---------------------------------------------------------------------------
# Server side

HA1Lookup = Callable[[str, str, Algorithm], str | None]
"""``(username, realm, base algorithm) -> H(A1) hex or None if unknown``."""


class HA1Store:
    """In-memory H(A1) per (username, realm, algorithm); passwords are never kept."""

    __slots__ = ("_ha1",)

    def __init__(self) -> None:
        self._ha1: dict[tuple[str, str, Algorithm], str] = {}

    def add_password(
        self,
        username: str,
        realm: str,
        password: str,
        algorithms: Sequence[Algorithm] = (Algorithm.SHA_256, Algorithm.MD5),
    ) -> None:
        for algorithm in algorithms:
            self.set_ha1(username, realm, algorithm, compute_ha1(username, realm, password, algorithm.base))

    def set_ha1(self, username: str, realm: str, algorithm: Algorithm, ha1: str) -> None:
        self._ha1[(username, realm, algorithm.base)] = ha1.lower()

    def lookup(self, username: str, realm: str, algorithm: Algorithm) -> str | None:
        return self._ha1.get((username, realm, algorithm.base))


class VerifyOutcome(enum.Enum):
    """What a server does next with a request's credentials."""

    OK = "ok"  # authenticated
    MISSING = "missing"  # no credentials: challenge
    MALFORMED = "malformed"  # unusable directives: 400 Bad Request (RFC 2617 3.2.2)
    BAD_CREDENTIALS = "bad-credentials"  # wrong or unknown user alike: challenge again
    STALE = "stale"  # correct but nonce expired: challenge with stale=true
    REPLAY = "replay"  # nonce-count not above the last one seen: challenge again


@dataclass(slots=True, frozen=True)
class Verification:
    """Outcome of :meth:`DigestAuthenticator.verify`; ``reason`` is for logs only."""

    outcome: VerifyOutcome
    reason: str
    username: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is VerifyOutcome.OK


class NonceCounts(Protocol):
    """Where the nonce-counts are kept when several servers share the nonces
    (imsbox.store's NonceRepository is one): an atomic compare-and-set."""

    async def advance(self, nonce: str, nc: int, expires_at: float) -> bool:
        """Record ``nc`` for ``nonce`` if above every one seen; False: a replay."""
        ...


@dataclass(slots=True)
class _NonceUse:
    issued: int
    highest_nc: int


# Same text for unknown user and wrong password so logs or replies cannot tell them apart.
_BAD_RESPONSE = "response does not match"
_NONCE_DOMAIN = b"imsbox sip digest nonce\x00"
_OPAQUE_DOMAIN = b"imsbox sip digest opaque\x00"
_NONCE_BYTES = 36  # 8 timestamp + 8 salt + 20 MAC


class DigestAuthenticator:
    """Server side of Digest (RFC 3261 section 22.1/22.3, RFC 7616, RFC 8760).

    Nonces are ``base64url(timestamp || salt || HMAC(secret, realm, timestamp, salt))``:
    verifiable without state, so they survive a restart when ``secret`` is kept.
    :meth:`verify` remembers the highest nonce-count per nonce in bounded memory;
    :meth:`verify_shared` keeps it in ``nonce_counts`` instead, so that servers
    sharing ``secret`` (several S-CSCFs) accept each nonce-count only once
    between them. Not thread-safe: use it from one event loop.
    """

    def __init__(
        self,
        realm: str,
        nonce_lifetime: float = 300.0,
        clock: Callable[[], float] = time.time,
        secret: bytes | None = None,
        *,
        algorithms: Sequence[Algorithm] = (Algorithm.SHA_256, Algorithm.MD5),
        qop: Sequence[Qop] = (Qop.AUTH,),
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        max_tracked_nonces: int = 4096,
        nonce_counts: NonceCounts | None = None,
    ) -> None:
        if not algorithms or not qop:
            raise DigestError("offer at least one algorithm and qop")
        _check_text(realm, "realm")
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self.algorithms = tuple(algorithms)
        self.qop = tuple(qop)
        self._clock = clock
        self._random_bytes = random_bytes
        self._secret = secret if secret is not None else random_bytes(32)
        self._max_tracked = max_tracked_nonces
        self.nonce_counts = nonce_counts
        self._seen: OrderedDict[str, _NonceUse] = OrderedDict()
        # Nonces issued at or before this time may have lost their nc record to eviction.
        self._evicted_up_to = -1
        self.opaque = _b64(self._mac(_OPAQUE_DOMAIN)[:12])

    def use_secret(self, secret: bytes) -> None:
        """Sign and check nonces with ``secret`` from now on: the key every server
        of a realm shares, so that a nonce one issued verifies on another. Nonces
        issued under the old key get a fresh challenge."""
        self._secret = secret
        self.opaque = _b64(self._mac(_OPAQUE_DOMAIN)[:12])

    # -- challenges ---------------------------------------------------------

    def challenges(self, stale: bool = False) -> list[Challenge]:
        """One challenge per algorithm, strongest first, sharing a fresh nonce (RFC 8760 2.4)."""
        nonce = self._new_nonce()
        qop = tuple(q.value for q in self.qop)
        return [
            Challenge(realm=self.realm, nonce=nonce, opaque=self.opaque, stale=stale,
                      algorithm=algorithm, qop=qop)
            for algorithm in self.algorithms
        ]

    def challenge_headers(self, status: int, stale: bool = False) -> list[tuple[str, str]]:
        """(name, value) pairs for a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate)."""
        name = {401: WWW_AUTHENTICATE, 407: PROXY_AUTHENTICATE}.get(status)
        if name is None:
            raise DigestError(f"status {status} carries no challenge")
        return [(name, str(challenge)) for challenge in self.challenges(stale)]

    # -- verification -------------------------------------------------------

    def verify(
        self,
        credentials: Credentials | str | None,
        method: str,
        ha1_lookup: HA1Lookup,
        body: bytes = b"",
    ) -> Verification:
        """Check a request's credentials (RFC 3261 section 22.4, RFC 7616 section 3.5)."""
        checked = self._authentic(credentials, method, ha1_lookup, body)
        if isinstance(checked, Verification):
            return checked
        return self._check_freshness(*checked)

    async def verify_shared(
        self,
        credentials: Credentials | str | None,
        method: str,
        ha1_lookup: HA1Lookup,
        body: bytes = b"",
    ) -> Verification:
        """:meth:`verify` with the nonce-count checked in ``nonce_counts`` (RFC 7616
        3.4.6 across servers); without ``nonce_counts`` the same as :meth:`verify`."""
        if self.nonce_counts is None:
            return self.verify(credentials, method, ha1_lookup, body)
        checked = self._authentic(credentials, method, ha1_lookup, body)
        if isinstance(checked, Verification):
            return checked
        credentials, issued = checked
        if self._clock() - issued > self.nonce_lifetime:
            return Verification(VerifyOutcome.STALE, "nonce expired", credentials.username)
        nc = int(credentials.nc or "0", 16)
        if not await self.nonce_counts.advance(credentials.nonce, nc,
                                               issued + self.nonce_lifetime):
            return Verification(VerifyOutcome.REPLAY, "nonce-count not increasing",
                                credentials.username)
        return Verification(VerifyOutcome.OK, "authenticated", credentials.username)

    def _authentic(
        self, credentials: Credentials | str | None, method: str, ha1_lookup: HA1Lookup,
        body: bytes,
    ) -> Verification | tuple[Credentials, int]:
        """The credentials and their nonce's issue time when the response is
        right, else the refusal; the nonce-count is not checked yet."""
        if credentials is None:
            return Verification(VerifyOutcome.MISSING, "no credentials")
        if isinstance(credentials, str):
            try:
                credentials = Credentials.parse(credentials)
            except DigestError as exc:
                return Verification(VerifyOutcome.MALFORMED, exc.reason)
        refused = self._check_directives(credentials)
        if refused is not None:
            return refused
        issued = self._nonce_issued(credentials.nonce)
        if issued is None:
            return self._bad("nonce not issued here", credentials)
        if not self._response_matches(credentials, method, ha1_lookup, body):
            return self._bad(_BAD_RESPONSE, credentials)
        return credentials, issued

    def _check_directives(self, credentials: Credentials) -> Verification | None:
        """Directive checks that need no secret; None when all pass."""
        if credentials.uri is None:
            return Verification(VerifyOutcome.MALFORMED, "missing 'uri' parameter")
        if credentials.qop is None:
            return Verification(VerifyOutcome.MALFORMED, "missing 'qop' parameter")
        if credentials.nc is None or credentials.cnonce is None:
            return Verification(VerifyOutcome.MALFORMED, "qop without nc or cnonce")
        if credentials.userhash:
            return self._bad("userhash not offered", credentials)
        if credentials.realm != self.realm:
            return self._bad("realm mismatch", credentials)
        if credentials.effective_algorithm not in self.algorithms:
            return self._bad("algorithm not offered", credentials)
        if credentials.qop not in self.qop:
            return self._bad("qop not offered", credentials)
        if not _same(credentials.opaque or "", self.opaque):
            return self._bad("opaque mismatch", credentials)
        return None

    def _response_matches(
        self, credentials: Credentials, method: str, ha1_lookup: HA1Lookup, body: bytes
    ) -> bool:
        algorithm = credentials.effective_algorithm
        ha1 = ha1_lookup(credentials.username, credentials.realm, algorithm.base)
        known = ha1 is not None
        # An unknown user costs the same work as a known one.
        ha1 = ha1 if ha1 is not None else algorithm.hash(self._random_bytes(16))
        expected = compute_response(
            algorithm=algorithm, ha1=ha1.lower(), nonce=credentials.nonce, method=method,
            uri=credentials.uri or "", qop=credentials.qop, nc=credentials.nc,
            cnonce=credentials.cnonce, body=body,
        )
        return _same(expected, credentials.response.lower()) and known

    def _check_freshness(self, credentials: Credentials, issued: int) -> Verification:
        now = self._clock()
        if now - issued > self.nonce_lifetime:
            return Verification(VerifyOutcome.STALE, "nonce expired", credentials.username)
        nc = int(credentials.nc or "0", 16)
        use = self._seen.get(credentials.nonce)
        if use is None and issued <= self._evicted_up_to:
            return Verification(VerifyOutcome.STALE, "nonce record evicted", credentials.username)
        if use is not None and nc <= use.highest_nc:
            return Verification(VerifyOutcome.REPLAY, "nonce-count not increasing", credentials.username)
        self._record(credentials.nonce, issued, nc, now)
        return Verification(VerifyOutcome.OK, "authenticated", credentials.username)

    # -- nonces ---------------------------------------------------------------

    def _new_nonce(self) -> str:
        stamp = int(self._clock()).to_bytes(8, "big", signed=True)
        salt = self._random_bytes(8)
        return _b64(stamp + salt + self._mac(_NONCE_DOMAIN, stamp, salt)[:20])

    def _nonce_issued(self, nonce: str) -> int | None:
        """The issue time of a nonce we made, or None if it is not ours."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii") + b"==")
        except (UnicodeEncodeError, ValueError):
            return None
        if len(raw) != _NONCE_BYTES or _b64(raw) != nonce:
            return None
        stamp, salt, mac = raw[:8], raw[8:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(_NONCE_DOMAIN, stamp, salt)[:20]):
            return None
        return int.from_bytes(stamp, "big", signed=True)

    def _mac(self, domain: bytes, *parts: bytes) -> bytes:
        message = domain + _utf8(self.realm) + b"\x00" + b"".join(parts)
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def _record(self, nonce: str, issued: int, nc: int, now: float) -> None:
        if nonce in self._seen:
            self._seen[nonce].highest_nc = nc
            return
        if len(self._seen) >= self._max_tracked:
            self._evict(now)
        self._seen[nonce] = _NonceUse(issued, nc)

    def _evict(self, now: float) -> None:
        """Drop expired records; if still full, drop the oldest and remember its age."""
        for nonce in [n for n, use in self._seen.items() if now - use.issued > self.nonce_lifetime]:
            del self._seen[nonce]
        while len(self._seen) >= self._max_tracked:
            _, use = self._seen.popitem(last=False)
            self._evicted_up_to = max(self._evicted_up_to, use.issued)

    def _bad(self, reason: str, credentials: Credentials) -> Verification:
        return Verification(VerifyOutcome.BAD_CREDENTIALS, reason, credentials.username)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _same(a: str, b: str) -> bool:
    """Constant-time comparison; bytes because compare_digest refuses non-ASCII str."""
    return hmac.compare_digest(_utf8(a), _utf8(b))
