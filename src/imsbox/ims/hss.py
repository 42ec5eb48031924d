"""The HSS: subscription data over the store, with Cx operations (TS 29.228 / 29.229).

The methods mirror the Cx commands as an in-process API - UAR/UAA
(:meth:`Hss.user_authorization`), MAR/MAA (:meth:`Hss.multimedia_auth`), SAR/SAA
(:meth:`Hss.server_assignment`), LIR/LIA (:meth:`Hss.location_info`) - with
requests and answers as plain values carrying Diameter result codes, so a
Diameter front end can be put in front of it later without changing callers.
They are coroutines: the data is in the store's subscriber repository.

Digest is the only authentication scheme: the HSS hands out H(A1), never a
password. A private identity may be given as NAME@DOMAIN or as the bare NAME
(generic SIP clients put the bare name in the Digest username); the H(A1)
returned is the one for exactly the username given, because the username is
part of what is hashed.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..sip.auth import Algorithm
from ..sip.identity import canonical_public_id
from ..store import (
    Psi, PsiKind, PublicIdentity, RegistrationState, ScscfAssignment, SubscriberRepository,
)
from ..ifc import IfcError, InitialFilterCriteria, ProfilePartIndicator

__all__ = [
    "AuthorizationType",
    "Hss",
    "LocationInfoAnswer",
    "MultimediaAuthAnswer",
    "ResultCode",
    "ServerAssignmentAnswer",
    "ServerAssignmentType",
    "ServerCapabilities",
    "UserAuthorizationAnswer",
    "UserProfile",
    "psi_matches",
]

log = logging.getLogger(__name__)


class ResultCode(enum.Enum):
    """Cx result codes (TS 29.229 6.2, RFC 6733 7.1): value is (code, experimental)."""

    DIAMETER_SUCCESS = (2001, False)
    DIAMETER_FIRST_REGISTRATION = (2001, True)
    DIAMETER_SUBSEQUENT_REGISTRATION = (2002, True)
    DIAMETER_UNREGISTERED_SERVICE = (2003, True)
    DIAMETER_SUCCESS_SERVER_NAME_NOT_STORED = (2004, True)
    DIAMETER_UNABLE_TO_COMPLY = (5012, False)
    DIAMETER_ERROR_USER_UNKNOWN = (5001, True)
    DIAMETER_ERROR_IDENTITIES_DONT_MATCH = (5002, True)
    DIAMETER_ERROR_IDENTITY_NOT_REGISTERED = (5003, True)
    DIAMETER_ERROR_ROAMING_NOT_ALLOWED = (5004, True)
    DIAMETER_ERROR_AUTH_SCHEME_NOT_SUPPORTED = (5006, True)

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def experimental(self) -> bool:
        """True when carried in Experimental-Result rather than Result-Code."""
        return self.value[1]

    @property
    def success(self) -> bool:
        return 2000 <= self.code < 3000


class AuthorizationType(enum.Enum):
    """User-Authorization-Type (TS 29.229 6.3.24)."""

    REGISTRATION = 0
    DE_REGISTRATION = 1
    REGISTRATION_AND_CAPABILITIES = 2


class ServerAssignmentType(enum.Enum):
    """Server-Assignment-Type (TS 29.229 6.3.15)."""

    NO_ASSIGNMENT = 0
    REGISTRATION = 1
    RE_REGISTRATION = 2
    UNREGISTERED_USER = 3
    TIMEOUT_DEREGISTRATION = 4
    USER_DEREGISTRATION = 5
    TIMEOUT_DEREGISTRATION_STORE_SERVER_NAME = 6
    USER_DEREGISTRATION_STORE_SERVER_NAME = 7
    ADMINISTRATIVE_DEREGISTRATION = 8
    AUTHENTICATION_FAILURE = 9
    AUTHENTICATION_TIMEOUT = 10
    DEREGISTRATION_TOO_MUCH_DATA = 11
    AAA_USER_DATA_REQUEST = 12
    PGW_UPDATE = 13
    RESTORATION = 14


_DEREGISTRATIONS = frozenset({
    ServerAssignmentType.TIMEOUT_DEREGISTRATION,
    ServerAssignmentType.USER_DEREGISTRATION,
    ServerAssignmentType.ADMINISTRATIVE_DEREGISTRATION,
    ServerAssignmentType.DEREGISTRATION_TOO_MUCH_DATA,
})
_DEREGISTRATIONS_KEEP_NAME = frozenset({
    ServerAssignmentType.TIMEOUT_DEREGISTRATION_STORE_SERVER_NAME,
    ServerAssignmentType.USER_DEREGISTRATION_STORE_SERVER_NAME,
})
_AUTH_FAILURES = frozenset({ServerAssignmentType.AUTHENTICATION_FAILURE,
                            ServerAssignmentType.AUTHENTICATION_TIMEOUT})


@dataclass(slots=True, frozen=True)
class ServerCapabilities:
    """Server-Capabilities AVP: what the I-CSCF uses to pick an S-CSCF."""

    mandatory: tuple[int, ...] = ()
    optional: tuple[int, ...] = ()
    server_names: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class UserAuthorizationAnswer:
    result: ResultCode
    server_name: str | None = None
    capabilities: ServerCapabilities | None = None


@dataclass(slots=True, frozen=True)
class MultimediaAuthAnswer:
    """Digest vector: realm, algorithm and H(A1) for ``username``."""

    result: ResultCode
    private_id: str | None = None
    username: str | None = None
    realm: str | None = None
    algorithm: Algorithm | None = None
    ha1: str | None = None


@dataclass(slots=True, frozen=True)
class UserProfile:
    """User-Data of an SAA: the implicit registration set and its service profile."""

    private_id: str
    public_ids: tuple[str, ...]  # implicit registration set, default identity first
    barred: frozenset[str]
    ifcs: tuple[InitialFilterCriteria, ...]  # ordered by priority
    msisdn: str | None = None

    @property
    def default_public_id(self) -> str:
        return self.public_ids[0]


@dataclass(slots=True, frozen=True)
class ServerAssignmentAnswer:
    result: ResultCode
    private_id: str | None = None
    profile: UserProfile | None = None


@dataclass(slots=True, frozen=True)
class LocationInfoAnswer:
    """S-CSCF name or capabilities; for a PSI, ``server_name`` is the hosting AS."""

    result: ResultCode
    server_name: str | None = None
    capabilities: ServerCapabilities | None = None
    psi: bool = False


# -- identities -------------------------------------------------------------------------

def _wildcard_regex(psi: Psi) -> re.Pattern[str]:
    """Regex for a wildcarded PSI.

    WILDCARD: TS 23.003 13.5 '!regex!' delimits a regular expression part, and
    any other '*' is a glob for any characters; REGEX: the whole pattern.
    """
    if psi.kind is PsiKind.REGEX:
        return re.compile(psi.pattern)
    parts = psi.pattern.split("!")
    if len(parts) % 2 == 0:
        raise ValueError(f"wildcarded PSI {psi.pattern!r}: unbalanced '!'")
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"(?:{part})")
        else:
            out.append(".*".join(re.escape(piece) for piece in part.split("*")))
    return re.compile("".join(out))


def psi_matches(psi: Psi, uri: str) -> bool:
    """Does canonical ``uri`` fall under ``psi``? Host parts compare case-insensitively."""
    if psi.kind is PsiKind.EXACT:
        return _safe_canonical(psi.pattern) == uri
    try:
        regex = _wildcard_regex(psi)
    except (ValueError, re.error) as exc:
        log.warning("ignoring PSI %r: %s", psi.pattern, exc)
        return False
    return regex.fullmatch(uri) is not None or regex.fullmatch(uri.lower()) is not None


def _safe_canonical(text: str) -> str:
    try:
        return canonical_public_id(text)
    except ValueError:
        return text


# -- the HSS --------------------------------------------------------------------------------

PROFILE_TTL = 2.0  # seconds a cached user profile may lag another process's write
PROFILE_CACHE_SIZE = 20000


class Hss:
    """Cx server over the store's subscriber repository for home ``domain``.

    ``scscf_names`` are the S-CSCFs offered in Server-Capabilities when a user
    has none assigned yet.
    """

    def __init__(self, subscribers: SubscriberRepository, domain: str,
                 scscf_names: tuple[str, ...] = (), *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.subscribers = subscribers
        self.clock = clock
        self.domain = domain.lower()
        self.capabilities = ServerCapabilities(server_names=tuple(scscf_names))
        # Decoded iFC documents by their text: the S-CSCF asks for a profile on
        # every request, and a changed profile is a new text, so no invalidation.
        self._decoded_ifcs: dict[str, InitialFilterCriteria] = {}
        # public id -> (profile generation, expiry, profile): see user_profile
        self._profiles: dict[str, tuple[int, float, UserProfile]] = {}
        self._next_prune = 0.0

    @property
    def cached_profiles(self) -> int:
        """User profiles held in memory now (at most those asked for within PROFILE_TTL)."""
        return len(self._profiles)

    # -- lookups -------------------------------------------------------------------
    def private_id(self, name: str) -> str:
        """NAME@DOMAIN for a bare NAME; NAME@DOMAIN stays as given."""
        return name if "@" in name else f"{name}@{self.domain}"

    async def find_identity(self, public_id: str) -> PublicIdentity | None:
        """The stored public identity for any spelling of ``public_id``."""
        try:
            uri = canonical_public_id(public_id)
        except ValueError:
            return None
        found = await self.subscribers.get_public_identity(uri)
        if found is None and uri.startswith("sip:+") and ";user=phone" not in uri:
            # Clients often leave out user=phone on sip:+E164 identities.
            found = await self.subscribers.get_public_identity(uri + ";user=phone")
        return found

    async def find_psi(self, public_id: str) -> Psi | None:
        """PSI hosting ``public_id``: exact match first, then the most specific wildcard."""
        try:
            uri = canonical_public_id(public_id)
        except ValueError:
            return None
        exact = await self.subscribers.get_psi(uri)
        if exact is not None:
            return exact
        for psi in await self.subscribers.list_psis(PsiKind.EXACT):
            if psi_matches(psi, uri):
                return psi
        wildcards = (await self.subscribers.list_psis(PsiKind.WILDCARD)
                     + await self.subscribers.list_psis(PsiKind.REGEX))
        for psi in sorted(wildcards, key=lambda p: (-len(p.pattern), p.pattern)):
            if psi_matches(psi, uri):
                return psi
        return None

    async def _assignment(self, private_id: str) -> ScscfAssignment:
        found = await self.subscribers.get_assignment(private_id)
        return found or ScscfAssignment(private_id, None, RegistrationState.NOT_REGISTERED)

    async def _resolve(self, public_id: str, private_id: str | None,
                 ) -> tuple[PublicIdentity | None, ResultCode | None]:
        """Identity lookup shared by UAR/MAR/SAR, with the Cx error when it fails."""
        identity = await self.find_identity(public_id)
        if identity is None:
            return None, ResultCode.DIAMETER_ERROR_USER_UNKNOWN
        if private_id is not None and self.private_id(private_id) != identity.private_id:
            return None, ResultCode.DIAMETER_ERROR_IDENTITIES_DONT_MATCH
        return identity, None

    # -- UAR ---------------------------------------------------------------------------
    async def user_authorization(self, public_id: str, private_id: str,
                           visited_network: str | None = None,
                           type: AuthorizationType = AuthorizationType.REGISTRATION,
                           ) -> UserAuthorizationAnswer:
        """UAR (TS 29.228 6.1.1): may this user register, and which S-CSCF serves it."""
        identity, error = await self._resolve(public_id, private_id)
        if identity is None:
            return UserAuthorizationAnswer(error or ResultCode.DIAMETER_UNABLE_TO_COMPLY)
        if identity.barred and type is not AuthorizationType.DE_REGISTRATION:
            # A barred identity may not be registered on its own (29.228 6.1.1.1).
            return UserAuthorizationAnswer(ResultCode.DIAMETER_ERROR_USER_UNKNOWN)
        if visited_network and visited_network.lower() != self.domain:
            return UserAuthorizationAnswer(ResultCode.DIAMETER_ERROR_ROAMING_NOT_ALLOWED)
        assignment = await self._assignment(identity.private_id)
        if type is AuthorizationType.DE_REGISTRATION:
            if assignment.server_name is None:
                return UserAuthorizationAnswer(ResultCode.DIAMETER_ERROR_IDENTITY_NOT_REGISTERED)
            return UserAuthorizationAnswer(ResultCode.DIAMETER_SUCCESS, assignment.server_name)
        if type is AuthorizationType.REGISTRATION_AND_CAPABILITIES:
            return UserAuthorizationAnswer(ResultCode.DIAMETER_FIRST_REGISTRATION,
                                           capabilities=self.capabilities)
        if assignment.state is RegistrationState.REGISTERED and assignment.server_name:
            return UserAuthorizationAnswer(ResultCode.DIAMETER_SUBSEQUENT_REGISTRATION,
                                           assignment.server_name)
        if assignment.server_name:
            return UserAuthorizationAnswer(ResultCode.DIAMETER_FIRST_REGISTRATION,
                                           assignment.server_name)
        return UserAuthorizationAnswer(ResultCode.DIAMETER_FIRST_REGISTRATION,
                                       capabilities=self.capabilities)

    # -- MAR ---------------------------------------------------------------------------
    async def multimedia_auth(self, private_id: str, public_id: str,
                        algorithm: Algorithm = Algorithm.MD5,
                        server_name: str | None = None) -> MultimediaAuthAnswer:
        """MAR (TS 29.228 6.3): the Digest H(A1) for ``private_id`` as the client spells it."""
        identity, error = await self._resolve(public_id, private_id)
        if identity is None:
            return MultimediaAuthAnswer(error or ResultCode.DIAMETER_UNABLE_TO_COMPLY)
        subscriber = await self.subscribers.get_subscriber(identity.private_id)
        base = _base_algorithm(algorithm)
        credential = subscriber.credential(private_id, base.value) if subscriber else None
        if subscriber is None or credential is None:
            return MultimediaAuthAnswer(ResultCode.DIAMETER_ERROR_AUTH_SCHEME_NOT_SUPPORTED)
        if server_name:
            await self._store_server_name_for_auth(identity.private_id, server_name)
        return MultimediaAuthAnswer(ResultCode.DIAMETER_SUCCESS, identity.private_id,
                                    credential.username, credential.realm, algorithm,
                                    credential.ha1)

    async def _store_server_name_for_auth(self, private_id: str, server_name: str) -> None:
        """29.228 6.3.1: an unassigned user gets the authenticating S-CSCF stored."""
        assignment = await self._assignment(private_id)
        if assignment.server_name is None:
            await self.subscribers.set_assignment(
                ScscfAssignment(private_id, server_name, assignment.state))

    # -- SAR ---------------------------------------------------------------------------
    async def server_assignment(self, public_id: str, server_name: str,
                          type: ServerAssignmentType,
                          private_id: str | None = None) -> ServerAssignmentAnswer:
        """SAR (TS 29.228 6.1.2): record the S-CSCF and state, return the user profile."""
        identity, error = await self._resolve(public_id, private_id)
        if identity is None:
            return ServerAssignmentAnswer(error or ResultCode.DIAMETER_UNABLE_TO_COMPLY)
        owner = identity.private_id
        current = await self._assignment(owner)
        if type is ServerAssignmentType.NO_ASSIGNMENT:
            if current.server_name != server_name:
                return ServerAssignmentAnswer(ResultCode.DIAMETER_UNABLE_TO_COMPLY, owner)
            return await self._profile_answer(identity)
        if type in _DEREGISTRATIONS or type in _DEREGISTRATIONS_KEEP_NAME:
            keep = server_name if type in _DEREGISTRATIONS_KEEP_NAME else None
            await self._assign(current, ScscfAssignment(owner, keep,
                                                        RegistrationState.NOT_REGISTERED))
            return ServerAssignmentAnswer(ResultCode.DIAMETER_SUCCESS, owner)
        if type in _AUTH_FAILURES:
            if current.state is not RegistrationState.REGISTERED:
                # Drop the name the MAR stored; a registered user keeps its S-CSCF.
                await self._assign(current, ScscfAssignment(owner, None, current.state))
            return ServerAssignmentAnswer(ResultCode.DIAMETER_SUCCESS, owner)
        if type in (ServerAssignmentType.AAA_USER_DATA_REQUEST, ServerAssignmentType.PGW_UPDATE):
            return await self._profile_answer(identity)
        if type is ServerAssignmentType.UNREGISTERED_USER:
            if current.state is RegistrationState.REGISTERED:
                state = RegistrationState.REGISTERED  # serving unregistered never downgrades
            else:
                state = RegistrationState.UNREGISTERED
            await self._assign(current, ScscfAssignment(owner, server_name, state))
            return await self._profile_answer(identity)
        if identity.barred and type is ServerAssignmentType.REGISTRATION:
            return ServerAssignmentAnswer(ResultCode.DIAMETER_ERROR_USER_UNKNOWN, owner)
        # REGISTRATION, RE_REGISTRATION, RESTORATION
        await self._assign(current, ScscfAssignment(owner, server_name,
                                                    RegistrationState.REGISTERED))
        return await self._profile_answer(identity)

    async def _assign(self, current: ScscfAssignment, new: ScscfAssignment) -> None:
        """Store ``new`` unless it is what is stored: every re-REGISTER and every
        request to an unregistered user sends a SAR, mostly changing nothing."""
        if new != current:
            await self.subscribers.set_assignment(new)

    async def _profile_answer(self, identity: PublicIdentity) -> ServerAssignmentAnswer:
        profile = await self.user_profile(identity.uri)
        if profile is None:
            return ServerAssignmentAnswer(ResultCode.DIAMETER_ERROR_USER_UNKNOWN)
        return ServerAssignmentAnswer(ResultCode.DIAMETER_SUCCESS, identity.private_id, profile)

    async def user_profile(self, public_id: str) -> UserProfile | None:
        """The implicit registration set of ``public_id`` with its iFCs.

        The S-CSCF asks on every request of a chain (about ten times per
        MESSAGE end to end), four store reads each: answers are kept in memory
        while the repository's profile generation is unchanged (this process
        wrote nothing) and for at most PROFILE_TTL seconds (another process
        may have).  An unknown identity is not remembered."""
        generation = self.subscribers.profile_generation()
        now = self.clock()
        if generation is not None:
            hit = self._profiles.get(public_id)
            if hit is not None and hit[0] == generation and hit[1] > now:
                return hit[2]
        profile = await self._load_profile(public_id)
        if profile is not None and generation is not None:
            self._prune(now)
            if len(self._profiles) >= PROFILE_CACHE_SIZE:
                self._profiles.clear()
            self._profiles[public_id] = (generation, now + PROFILE_TTL, profile)
        return profile

    def _prune(self, now: float) -> None:
        """Drop the expired profiles, at most once per PROFILE_TTL: an entry is of
        no use after its TTL, and every user who ever registered must not stay
        (about 600 bytes each) until the cache is full."""
        if now < self._next_prune:
            return
        self._next_prune = now + PROFILE_TTL
        for key in [k for k, hit in self._profiles.items() if hit[1] <= now]:
            del self._profiles[key]

    async def _load_profile(self, public_id: str) -> UserProfile | None:
        identity = await self.find_identity(public_id)
        if identity is None:
            return None
        members = await self.subscribers.implicit_set(identity.uri)
        subscriber = await self.subscribers.get_subscriber(identity.private_id)
        return UserProfile(
            private_id=identity.private_id,
            public_ids=tuple(m.uri for m in members),
            barred=frozenset(m.uri for m in members if m.barred),
            ifcs=await self.ifcs(identity.service_profile),
            msisdn=subscriber.msisdn if subscriber else None,
        )

    async def ifcs(self, profile_name: str) -> tuple[InitialFilterCriteria, ...]:
        """The profile's iFCs by priority; a broken document is logged and skipped."""
        profile = await self.subscribers.get_service_profile(profile_name)
        if profile is None:
            return ()
        out = []
        for document in profile.ifcs:
            try:
                out.append(self._decode_ifc(document))
            except IfcError as exc:
                log.error("service profile %s: skipping bad iFC: %s", profile_name, exc)
        return tuple(sorted(out, key=lambda i: i.priority))

    def _decode_ifc(self, document: str) -> InitialFilterCriteria:
        ifc = self._decoded_ifcs.get(document)
        if ifc is None:
            if len(self._decoded_ifcs) >= 4096:  # bound it if profiles churn
                self._decoded_ifcs.clear()
            ifc = self._decoded_ifcs[document] = InitialFilterCriteria.from_json(document)
        return ifc

    # -- LIR ---------------------------------------------------------------------------
    async def location_info(self, public_id: str, originating: bool = False) -> LocationInfoAnswer:
        """LIR (TS 29.228 6.1.4): the S-CSCF serving a user, or the AS hosting a PSI."""
        identity = await self.find_identity(public_id)
        if identity is None:
            psi = await self.find_psi(public_id)
            if psi is None:
                return LocationInfoAnswer(ResultCode.DIAMETER_ERROR_USER_UNKNOWN)
            return LocationInfoAnswer(ResultCode.DIAMETER_SUCCESS, psi.as_uri, psi=True)
        assignment = await self._assignment(identity.private_id)
        if assignment.state is RegistrationState.REGISTERED and assignment.server_name:
            return LocationInfoAnswer(ResultCode.DIAMETER_SUCCESS, assignment.server_name)
        if assignment.server_name:
            return LocationInfoAnswer(ResultCode.DIAMETER_UNREGISTERED_SERVICE,
                                      assignment.server_name)
        if originating or await self._has_unregistered_services(identity):
            return LocationInfoAnswer(ResultCode.DIAMETER_UNREGISTERED_SERVICE,
                                      capabilities=self.capabilities)
        return LocationInfoAnswer(ResultCode.DIAMETER_ERROR_IDENTITY_NOT_REGISTERED)

    async def _has_unregistered_services(self, identity: PublicIdentity) -> bool:
        """29.228 6.1.4.1: services for the unregistered state exist (iFCs not REGISTERED-only)."""
        ifcs = await self.ifcs(identity.service_profile)
        return any(i.profile_part is not ProfilePartIndicator.REGISTERED for i in ifcs)


def _base_algorithm(algorithm: Algorithm) -> Algorithm:
    """-sess variants start from the same H(username:realm:password)."""
    if algorithm is Algorithm.MD5_SESS:
        return Algorithm.MD5
    if algorithm is Algorithm.SHA_256_SESS:
        return Algorithm.SHA_256
    return algorithm
