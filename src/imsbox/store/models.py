"""Value types kept by the store.

They hold plain strings and numbers only, so every back end (SQLite today,
PostgreSQL + Redis later) stores them the same way and the store package
depends on nothing above it. Structured data owned by upper layers (initial
filter criteria, P-CSCF flow info) travels as opaque text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# An endpoint's status in a conference (RFC 4575 5.7.1): the conference-info vocabulary.
from ..content.conference_info import EndpointStatus as ParticipantState

__all__ = [
    "Binding",
    "Conference",
    "ConferenceKind",
    "Credential",
    "DeferredMessage",
    "Group",
    "GroupMessage",
    "HistoryEntry",
    "LoginState",
    "ParkedCall",
    "Participant",
    "ParticipantState",
    "PcscfRegistration",
    "Psi",
    "PsiKind",
    "PublicIdentity",
    "RegSubscription",
    "RegistrationState",
    "ScscfAssignment",
    "ServiceProfile",
    "StoredFile",
    "Subscriber",
]


@dataclass(slots=True, frozen=True)
class Credential:
    """One H(A1) = H(username:realm:password); the password itself is never kept."""

    username: str
    realm: str
    algorithm: str  # "MD5" or "SHA-256" (imsbox.sip.auth.Algorithm values)
    ha1: str


@dataclass(slots=True, frozen=True)
class Subscriber:
    """An IMS subscription with one private identity (NAME@DOMAIN)."""

    private_id: str
    credentials: tuple[Credential, ...] = ()
    msisdn: str | None = None
    created_at: float = 0.0

    def credential(self, username: str, algorithm: str) -> Credential | None:
        for cred in self.credentials:
            if cred.username == username and cred.algorithm == algorithm:
                return cred
        return None


@dataclass(slots=True, frozen=True)
class PublicIdentity:
    """A public user identity; identities sharing ``irs_id`` register together."""

    uri: str
    private_id: str
    irs_id: str
    service_profile: str = "default"
    barred: bool = False
    default: bool = False  # the first identity of its implicit set


@dataclass(slots=True, frozen=True)
class ServiceProfile:
    """Named service profile; ``ifcs`` are serialized iFC documents (JSON text)."""

    name: str
    ifcs: tuple[str, ...] = ()


class PsiKind(enum.Enum):
    """How a PSI pattern matches (TS 29.228 distinct / wildcarded PSI)."""

    EXACT = "exact"
    WILDCARD = "wildcard"  # '*' glob, or TS 23.003 13.5 '!regex!' delimited part
    REGEX = "regex"  # the whole pattern is a regular expression


@dataclass(slots=True, frozen=True)
class Psi:
    """A public service identity hosted by an application server."""

    pattern: str
    as_uri: str
    kind: PsiKind = PsiKind.EXACT


@dataclass(slots=True, frozen=True)
class Group:
    """A pre-defined group: group URI and its member URIs, in order."""

    uri: str
    members: tuple[str, ...] = ()
    name: str = ""


class RegistrationState(enum.Enum):
    """Registration state of a subscription as the HSS sees it (TS 29.228 6.1.2)."""

    NOT_REGISTERED = "not_registered"
    REGISTERED = "registered"
    UNREGISTERED = "unregistered"  # served by an S-CSCF while not registered


@dataclass(slots=True, frozen=True)
class ScscfAssignment:
    """The S-CSCF serving a subscription and the subscription's state."""

    private_id: str
    server_name: str | None
    state: RegistrationState = RegistrationState.NOT_REGISTERED


@dataclass(slots=True, frozen=True)
class Binding:
    """One registrar binding of an address-of-record (RFC 3261 10.3, RFC 5626)."""

    contact: str
    expires_at: float  # absolute Unix time
    q: float | None = None
    instance_id: str | None = None  # +sip.instance
    reg_id: int | None = None
    params: str = ""  # feature tags and other contact params, as written
    path: tuple[str, ...] = ()
    call_id: str = ""
    cseq: int = 0
    flow: str = ""  # the P-CSCF's opaque flow token

    @property
    def key(self) -> str:
        """RFC 5626 section 6: instance + reg-id identify a flow, else the contact URI."""
        if self.instance_id is not None:
            return f"{self.instance_id}#{self.reg_id if self.reg_id is not None else ''}"
        return self.contact

    def remaining(self, now: float) -> int:
        """Seconds left, for an Expires parameter (never negative)."""
        return max(0, int(self.expires_at - now))


@dataclass(slots=True, frozen=True)
class PcscfRegistration:
    """One registered contact as a P-CSCF keeps it (TS 24.229 5.2.2), so that it
    survives a restart of the P-CSCF until it expires.

    ``node`` names the P-CSCF (its SIP URI) so several can share a store; ``key``
    is the P-CSCF's lookup key of the contact. ``flow`` is opaque to the store
    (the P-CSCF's JSON: transport, local and remote address).
    """

    node: str
    key: str
    contact: str
    flow: str
    public_ids: tuple[str, ...]
    service_route: tuple[str, ...]
    expires_at: float  # absolute Unix time


@dataclass(slots=True, frozen=True)
class DeferredMessage:
    """A message waiting for its recipient; ``id`` is set by the store."""

    recipient: str
    sender: str
    content_type: str
    body: bytes
    expires_at: float
    created_at: float = 0.0
    meta: str = ""  # opaque to the store (e.g. JSON with headers, message id)
    id: int | None = field(default=None, compare=False)
    fence: int = field(default=0, compare=False)  # the lease's fencing token (claim_deferred)


@dataclass(slots=True, frozen=True)
class StoredFile:
    """A file kept for an offline user, as the store holds it (store.files):
    ``size`` bytes in ``chunks`` rows; ``item_id`` is the deferred item that keeps
    it, None while it is being written (or was left half-written)."""

    id: int
    size: int
    chunks: int
    item_id: int | None
    touched_at: float  # when its last chunk was written


@dataclass(slots=True, frozen=True)
class HistoryEntry:
    """One message of a conversation as the messaging AS saw it pass.

    ``message_key`` (IMDN Message-ID, MSRP Message-ID or SIP Call-ID) makes a
    message seen on both the originating and terminating leg count once.
    """

    conversation_id: str
    message_key: str
    sender: str
    recipient: str
    content_type: str
    body: bytes
    created_at: float = 0.0
    id: int | None = field(default=None, compare=False)


@dataclass(slots=True, frozen=True)
class GroupMessage:
    """One message of a conference's log (group chat store-and-forward).

    ``message_key`` (the IMDN Message-ID) makes a message logged once even when
    it arrives twice; ``id`` is set by the store and gives the order.
    """

    conference: str
    sender: str
    content_type: str
    body: bytes
    message_key: str = ""
    created_at: float = 0.0
    meta: str = ""  # opaque to the store
    id: int | None = field(default=None, compare=False)


class ConferenceKind(enum.Enum):
    """Ad-hoc (created by an INVITE to the factory URI) or pre-defined (provisioned)."""

    AD_HOC = "ad-hoc"
    PRE_DEFINED = "pre-defined"


@dataclass(slots=True, frozen=True)
class Participant:
    """A user of a conference and its state; ``uri`` identifies it in the conference."""

    uri: str
    state: ParticipantState = ParticipantState.PENDING
    display_name: str = ""
    joined_at: float = 0.0


@dataclass(slots=True, frozen=True)
class Conference:
    """A conference (RFC 4353) as its focus keeps it.

    ``expires_at`` is the idle expiry (absolute Unix time; None: kept until
    removed); the focus moves it on with activity.
    """

    uri: str
    creator: str
    kind: ConferenceKind = ConferenceKind.AD_HOC
    subject: str = ""
    admins: tuple[str, ...] = ()
    participants: tuple[Participant, ...] = ()
    created_at: float = 0.0
    expires_at: float | None = None

    def participant(self, uri: str) -> Participant | None:
        for participant in self.participants:
            if participant.uri == uri:
                return participant
        return None


@dataclass(slots=True, frozen=True)
class ParkedCall:
    """A call held in a park orbit (RFC 5359 2.15): ``lot`` is the parking lot (the
    domain), ``orbit`` its number there; ``token`` names this one park (a release
    names it, so a late release never frees the orbit's next call);
    ``holder`` the media server instance that has the call's media."""

    lot: str
    orbit: int
    token: str
    parker: str
    parked: str
    holder: str = ""
    parked_at: float = 0.0


@dataclass(slots=True, frozen=True)
class RegSubscription:
    """A reg event subscription (RFC 3680) as every S-CSCF on the store sees it: the
    notifier's side of its dialog (RFC 3261 12.1.1) and the watched implicit set.

    ``version`` is the reginfo version the next NOTIFY carries; only the store's
    atomic ``take`` moves it, so versions grow across instances. The NOTIFY with
    version ``v`` has CSeq ``cseq_base + v``, so its CSeq grows with it.
    """

    call_id: str
    local_tag: str            # ours: the To tag of the 200 to the SUBSCRIBE
    remote_tag: str           # the subscriber's From tag
    aor: str                  # default identity of the watched implicit set
    event: str                # the Event header value (``reg``, ``reg;id=..``)
    resource: str             # the SUBSCRIBE's Request-URI
    local_uri: str            # our From of the NOTIFYs (name-addr)
    remote_uri: str           # their To (name-addr)
    remote_target: str        # where NOTIFYs go (the subscriber's Contact)
    local_target: str         # our Contact (refreshes come there)
    route_set: tuple[str, ...] = ()
    remote_cseq: int = 0      # the last SUBSCRIBE's CSeq (12.2.2 ordering)
    cseq_base: int = 0
    version: int = 0
    expires_at: float = 0.0

    @property
    def key(self) -> tuple[str, str, str]:
        return self.call_id, self.local_tag, self.remote_tag


@dataclass(slots=True, frozen=True)
class LoginState:
    """What the login limits (imsbox.ims.login_guard) look at for one attempt."""

    failures: int = 0                     # the account's failed logins
    last_failure: float = 0.0
    source_failures: tuple[float, ...] = ()   # the address's recent failure times, oldest first
    trusted_at: float | None = None       # last success of this (account, address, port)
