"""The store contract every back end implements, split by role.

A :class:`Store` groups one repository per role: ``subscribers`` (HSS data),
``registrations`` (S-CSCF bindings), ``flows`` (P-CSCF registrations),
``messages`` (deferred, history, group chat logs), ``files`` (the bytes of
files kept for offline users), ``conferences`` and ``service_data``
(per-subscriber telephony settings). Callers (HSS, registrar,
P-CSCF, ASs, provisioning) use only these classes, so a PostgreSQL + Redis
back end can replace SQLite without changing them.

Every method is a coroutine and never blocks the event loop. A write is
durable when its await returns ("2xx means stored"). Times are absolute Unix
seconds; methods that depend on the clock take ``now`` so tests can use a
virtual one. Values are the dataclasses of :mod:`imsbox.store.models`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self

from ..errors import Unavailable
from .models import (
    Binding, Conference, ConferenceKind, DeferredMessage, Group, GroupMessage, HistoryEntry,
    LoginState, ParkedCall, Participant, PcscfRegistration, Psi, PsiKind, PublicIdentity,
    RegSubscription, ScscfAssignment, ServiceProfile, StoredFile, Subscriber,
)

__all__ = [
    "FILE_CHUNK", "AlreadyExists", "ConferenceRepository", "FileRepository", "FlowRepository",
    "LoginRepository", "MessageRepository", "NonceRepository", "ParkingRepository",
    "RegSubscriptionRepository",
    "RegistrationRepository", "ServiceDataRepository", "Store", "StoreError",
    "StoreUnavailable", "SubscriberRepository",
]


# The rows a kept file is stored in: big enough that a 100 MiB file is 400 rows, small
# enough that a reader or writer holds one or two of them, never the file.
FILE_CHUNK = 256 << 10


class StoreError(Exception):
    """The store cannot do what was asked; the message says why."""


class StoreUnavailable(StoreError, Unavailable):
    """The back end (PostgreSQL, Redis) cannot be reached now; retry later. The
    SIP endpoint answers a request that hit this with 503 and Retry-After."""


class AlreadyExists(StoreError):
    """A record with the same key (private id, public id, MSISDN ...) exists."""


class SubscriberRepository(abc.ABC):
    """HSS data: subscriptions, public identities, profiles, PSIs, groups, assignments."""

    def profile_generation(self) -> int | None:
        """A number that changes after every write this process makes to
        subscribers, identities, service profiles, PSIs or groups (not
        assignments), so a reader may cache what it derived from them (the
        HSS's user profiles).  None (the default): no such number, do not cache."""
        return None

    # -- subscribers and public identities -----------------------------------
    @abc.abstractmethod
    async def add_subscriber(self, subscriber: Subscriber,
                             identities: Sequence[PublicIdentity]) -> None:
        """Create a subscription and its public identities atomically.

        Raises AlreadyExists when the private id, an identity or the MSISDN is taken.
        """

    @abc.abstractmethod
    async def get_subscriber(self, private_id: str) -> Subscriber | None: ...

    @abc.abstractmethod
    async def list_subscribers(self) -> list[Subscriber]:
        """All subscriptions, ordered by private id."""

    @abc.abstractmethod
    async def remove_subscriber(self, private_id: str) -> bool:
        """Delete a subscription with its identities, assignment, bindings and
        the service data of its identities."""

    @abc.abstractmethod
    async def get_public_identity(self, uri: str) -> PublicIdentity | None: ...

    @abc.abstractmethod
    async def public_identities(self, private_id: str) -> list[PublicIdentity]:
        """The subscription's identities, default identity of each set first."""

    @abc.abstractmethod
    async def implicit_set(self, uri: str) -> list[PublicIdentity]:
        """The implicit registration set containing ``uri`` (empty when unknown)."""

    # -- service profiles -----------------------------------------------------
    @abc.abstractmethod
    async def put_service_profile(self, profile: ServiceProfile) -> None:
        """Create or replace a profile (its iFC list is replaced as a whole)."""

    @abc.abstractmethod
    async def get_service_profile(self, name: str) -> ServiceProfile | None: ...

    # -- public service identities -------------------------------------------
    @abc.abstractmethod
    async def put_psi(self, psi: Psi) -> None:
        """Create or replace the PSI with this pattern."""

    @abc.abstractmethod
    async def get_psi(self, pattern: str) -> Psi | None:
        """The PSI stored under exactly this pattern."""

    @abc.abstractmethod
    async def list_psis(self, kind: PsiKind | None = None) -> list[Psi]: ...

    @abc.abstractmethod
    async def remove_psi(self, pattern: str) -> bool: ...

    # -- pre-defined groups ---------------------------------------------------
    @abc.abstractmethod
    async def put_group(self, group: Group) -> None:
        """Create or replace a group (members replaced as a whole)."""

    @abc.abstractmethod
    async def get_group(self, uri: str) -> Group | None: ...

    @abc.abstractmethod
    async def list_groups(self) -> list[Group]: ...

    @abc.abstractmethod
    async def remove_group(self, uri: str) -> bool: ...

    # -- S-CSCF assignment ----------------------------------------------------
    @abc.abstractmethod
    async def get_assignment(self, private_id: str) -> ScscfAssignment | None: ...

    @abc.abstractmethod
    async def set_assignment(self, assignment: ScscfAssignment) -> None:
        """Create or replace; the subscriber must exist (else StoreError)."""


class RegistrationRepository(abc.ABC):
    """The S-CSCF registrar's bindings, per address-of-record."""

    @abc.abstractmethod
    async def save(self, aor: str, binding: Binding) -> None:
        """Create or refresh the binding with the same ``binding.key``."""

    @abc.abstractmethod
    async def remove(self, aor: str, key: str) -> bool: ...

    @abc.abstractmethod
    async def remove_all(self, aor: str) -> int:
        """Drop every binding of an AOR; returns how many."""

    @abc.abstractmethod
    async def bindings(self, aor: str, now: float | None = None) -> list[Binding]:
        """Unexpired bindings, highest q first, then most recently refreshed."""

    @abc.abstractmethod
    async def registered_aors(self, now: float | None = None) -> list[str]:
        """AORs with at least one unexpired binding."""

    @abc.abstractmethod
    async def expire(self, now: float | None = None) -> list[tuple[str, Binding]]:
        """Delete expired bindings and return them (for reg-event / cleanup)."""

    @abc.abstractmethod
    async def next_expiry(self) -> float | None:
        """Earliest ``expires_at`` of any binding, for scheduling cleanup."""


class FlowRepository(abc.ABC):
    """Registered contacts as P-CSCFs keep them (their flows), per P-CSCF node."""

    @abc.abstractmethod
    async def save(self, registration: PcscfRegistration) -> None:
        """Create or replace the entry with the same ``(node, key)``."""

    @abc.abstractmethod
    async def remove(self, node: str, key: str) -> bool: ...

    @abc.abstractmethod
    async def registrations(self, node: str,
                            now: float | None = None) -> list[PcscfRegistration]:
        """The node's unexpired entries, oldest first."""

    @abc.abstractmethod
    async def expire(self, now: float | None = None) -> int:
        """Delete every node's expired entries; returns how many."""


class MessageRepository(abc.ABC):
    """Deferred messages, conversation history and group chat message logs."""

    # -- deferred messages ----------------------------------------------------
    @abc.abstractmethod
    async def defer(self, message: DeferredMessage) -> int:
        """Store durably; returns the id. Ids grow, so they give the order."""

    @abc.abstractmethod
    async def deferred(self, recipient: str, now: float | None = None,
                       limit: int | None = None) -> list[DeferredMessage]:
        """Unexpired messages for ``recipient``, oldest first."""

    @abc.abstractmethod
    async def claim_deferred(self, recipient: str, holder: str, lease: float,
                             now: float | None = None,
                             limit: int | None = None) -> list[DeferredMessage]:
        """Lease ``recipient``'s unexpired, unleased messages to ``holder`` for
        ``lease`` seconds, oldest first; each comes back with a new ``fence``.

        While the lease runs no other claim gets them, so two AS instances never
        deliver one item twice; when the holder dies the lease runs out and
        another instance claims them.
        """

    @abc.abstractmethod
    async def complete_deferred(self, claimed: Sequence[DeferredMessage]) -> int:
        """Delete delivered claimed messages whose fence is still theirs (a holder
        whose lease ran out and was claimed again removes nothing); returns how many."""

    @abc.abstractmethod
    async def release_deferred(self, claimed: Sequence[DeferredMessage]) -> int:
        """Give back a lease (delivery failed): the messages can be claimed at once."""

    @abc.abstractmethod
    async def remove_deferred(self, ids: Sequence[int]) -> int:
        """Delete delivered messages; returns how many were deleted."""

    @abc.abstractmethod
    async def deferred_recipients(self, now: float | None = None) -> list[str]:
        """Recipients with unexpired messages waiting."""

    @abc.abstractmethod
    async def expire_deferred(self, now: float | None = None) -> list[DeferredMessage]:
        """Delete expired messages and return them (for failure notifications)."""

    @abc.abstractmethod
    async def next_deferred_expiry(self) -> float | None:
        """Earliest ``expires_at`` of any deferred message, for scheduling expiry."""

    # -- message history --------------------------------------------------------
    @abc.abstractmethod
    async def add_history(self, entry: HistoryEntry) -> bool:
        """Record a message; False when (conversation_id, message_key) is already kept."""

    @abc.abstractmethod
    async def history(self, conversation_id: str,
                      limit: int | None = None) -> list[HistoryEntry]:
        """A conversation's messages, oldest first."""

    # -- group chat: a conference's log and each member's position in it -------
    @abc.abstractmethod
    async def append_group_message(self, message: GroupMessage) -> int | None:
        """Log a message; returns its id, or None when a non-empty
        ``message_key`` is already logged in this conference."""

    @abc.abstractmethod
    async def group_messages(self, conference: str, after: int = 0,
                             limit: int | None = None) -> list[GroupMessage]:
        """The conference's messages with an id above ``after``, oldest first."""

    @abc.abstractmethod
    async def set_delivered(self, conference: str, member: str, message_id: int) -> None:
        """Record that ``member`` has every message up to ``message_id``; the
        position never moves back."""

    @abc.abstractmethod
    async def delivered(self, conference: str, member: str) -> int:
        """The member's position: the id of the last message it has, 0 for none."""

    @abc.abstractmethod
    async def undelivered(self, conference: str, member: str,
                          limit: int | None = None) -> list[GroupMessage]:
        """Messages after the member's position, oldest first (store and forward)."""

    @abc.abstractmethod
    async def remove_group_log(self, conference: str) -> int:
        """Drop a conference's log and positions; returns how many messages."""


class FileRepository(abc.ABC):
    """The bytes of files kept for offline users, in rows of :data:`FILE_CHUNK` bytes
    keyed by (file id, sequence number), so that every messaging AS on the store
    can send a file another one received, and none holds a whole file in memory.

    A file is made with :meth:`create`, filled in order with :meth:`put_chunk`
    (0, 1, 2 ...; every chunk ``FILE_CHUNK`` bytes but the last), and becomes a
    deferred item with :meth:`keep`: one transaction, so from then on the item
    and its file exist together, and removing the item (``complete_deferred``,
    ``remove_deferred``, ``expire_deferred``) removes the file and its chunks
    in the same transaction. A file no item keeps (its sender went away, its
    writer was killed) is removed by :meth:`delete`, or by :meth:`sweep` once
    nothing has been written to it for a while: nothing is left orphaned.
    """

    @abc.abstractmethod
    async def create(self, now: float | None = None) -> int:
        """A new, empty file no item keeps yet; returns its id."""

    @abc.abstractmethod
    async def put_chunk(self, file_id: int, seq: int, data: bytes,
                        now: float | None = None) -> None:
        """Store chunk ``seq`` durably (and mark the file written to at ``now``);
        StoreError when the file is gone (swept or deleted) or ``seq`` is taken."""

    @abc.abstractmethod
    def chunks(self, file_id: int, first: int = 0) -> AsyncIterator[bytes]:
        """The file's chunks from ``first`` on, in order, read one at a time as the
        consumer asks (one round trip each: a slow consumer holds one chunk)."""

    @abc.abstractmethod
    async def get(self, file_id: int) -> StoredFile | None:
        """The file's size, chunk count and keeper; None when there is no such file."""

    @abc.abstractmethod
    async def ids(self) -> list[int]:
        """Every file's id, kept or not, oldest first (for checks and tools)."""

    @abc.abstractmethod
    async def keep(self, file_id: int, message: DeferredMessage) -> int:
        """Store ``message`` as a deferred item (as ``messages.defer``) that keeps the
        file, atomically; returns the item's id. StoreError when the file is gone
        or already kept (then no item is stored either)."""

    @abc.abstractmethod
    async def delete(self, file_id: int) -> bool:
        """Remove a file no item keeps, with its chunks; False for a kept one (its
        item owns it) or an unknown one."""

    @abc.abstractmethod
    async def sweep(self, idle_since: float) -> int:
        """Remove every file no item keeps that was last written to before
        ``idle_since`` (left by a writer that died); returns how many."""


class ConferenceRepository(abc.ABC):
    """Conferences (ad-hoc and pre-defined) with their participants."""

    @abc.abstractmethod
    async def create(self, conference: Conference) -> None:
        """Store a new conference; AlreadyExists when the URI is taken."""

    @abc.abstractmethod
    async def put(self, conference: Conference) -> None:
        """Create or replace (admins and participants replaced as a whole)."""

    @abc.abstractmethod
    async def get(self, uri: str) -> Conference | None: ...

    @abc.abstractmethod
    async def conferences(self, kind: ConferenceKind | None = None) -> list[Conference]:
        """All conferences (of one kind), ordered by URI."""

    @abc.abstractmethod
    async def remove(self, uri: str) -> bool: ...

    @abc.abstractmethod
    async def set_subject(self, uri: str, subject: str) -> bool:
        """False when there is no such conference."""

    @abc.abstractmethod
    async def set_participant(self, uri: str, participant: Participant) -> bool:
        """Add the participant or update the one with the same URI (its place
        in the list is kept); False when there is no such conference."""

    @abc.abstractmethod
    async def remove_participant(self, uri: str, participant_uri: str) -> bool: ...

    @abc.abstractmethod
    async def set_expiry(self, uri: str, expires_at: float | None) -> bool:
        """Move the idle expiry (None: never); False when there is no such conference."""

    @abc.abstractmethod
    async def expire(self, now: float | None = None) -> list[Conference]:
        """Delete conferences idle past their expiry and return them."""

    @abc.abstractmethod
    async def next_expiry(self) -> float | None:
        """Earliest idle expiry of any conference, for scheduling."""

    # A conference is owned by one conference AS instance at a time: a lease row per
    # URI with a fencing token. The fence grows each time another holder takes the
    # lease, so a stalled former owner can neither renew nor release it.

    @abc.abstractmethod
    async def claim_owner(self, uri: str, holder: str, lease: float,
                          now: float | None = None) -> int | None:
        """Take (or extend) the owner lease of ``uri`` for ``lease`` seconds; returns the
        fence, or None while another holder's lease is live. An expired or released
        lease goes to the claimer with a higher fence; the same holder keeps its fence."""

    @abc.abstractmethod
    async def renew_owner(self, uri: str, holder: str, fence: int, lease: float,
                          now: float | None = None) -> bool:
        """Extend the lease while ``holder`` still has it with ``fence``; False when
        another instance has taken it over (the caller stops serving ``uri``)."""

    @abc.abstractmethod
    async def release_owner(self, uri: str, fence: int) -> bool:
        """Give the lease up if ``fence`` still holds it (it is free at once, the fence kept)."""

    @abc.abstractmethod
    async def owner(self, uri: str, now: float | None = None) -> tuple[str, int] | None:
        """The live lease's (holder, fence), None when nobody holds ``uri``."""


class ServiceDataRepository(abc.ABC):
    """Per-subscriber service settings: KEY -> list of opaque values (JSON text
    is fine), e.g. forward-busy, find-me, screen-incoming, pickup-group.

    ``owner`` is the served user's default public identity (what an AS sees).
    """

    @abc.abstractmethod
    async def get(self, owner: str, key: str) -> tuple[str, ...]:
        """The values in order; empty when the setting is not there."""

    @abc.abstractmethod
    async def put(self, owner: str, key: str, values: Sequence[str]) -> None:
        """Create or replace the whole list (an empty list removes the key)."""

    @abc.abstractmethod
    async def remove(self, owner: str, key: str) -> bool: ...

    @abc.abstractmethod
    async def settings(self, owner: str) -> dict[str, tuple[str, ...]]:
        """Every setting of ``owner``, by key."""

    @abc.abstractmethod
    async def owners(self, key: str, value: str) -> list[str]:
        """Owners whose ``key`` list holds ``value`` (e.g. a pickup group's members)."""


class NonceRepository(abc.ABC):
    """Digest nonce-counts shared by every instance (RFC 7616 3.4.6 replay
    protection): a nonce-count is accepted once, and only above the last one."""

    @abc.abstractmethod
    async def advance(self, nonce: str, nc: int, expires_at: float) -> bool:
        """Atomically record ``nc`` for ``nonce`` when it is higher than any seen;
        False (a replay) otherwise. The record is dropped after ``expires_at``."""

    @abc.abstractmethod
    async def expire(self, now: float | None = None) -> int:
        """Drop the records of expired nonces; returns how many."""

    @abc.abstractmethod
    async def shared_secret(self, name: str) -> bytes:
        """The 32-byte random key called ``name``, the same for every instance on
        this store: made by whichever asks first, kept durably. Digest nonces
        and odi tokens are signed with it, so any instance verifies what
        another issued, also after a restart."""


class ParkingRepository(abc.ABC):
    """Call park orbits (RFC 5359 2.15), shared by every media server instance: an
    orbit of a lot holds at most one call (a unique key, not a check in the caller)."""

    @abc.abstractmethod
    async def claim(self, lot: str, first: int, last: int, token: str, parker: str,
                    parked: str, holder: str = "",
                    now: float | None = None) -> ParkedCall | None:
        """Atomically take the lowest free orbit of ``lot`` in ``first..last`` for this
        call; None when every one is taken. Two claims at once never get the same."""

    @abc.abstractmethod
    async def get(self, lot: str, orbit: int) -> ParkedCall | None: ...

    @abc.abstractmethod
    async def take(self, lot: str, orbit: int) -> ParkedCall | None:
        """Atomically remove and return the orbit's call (a retrieve): of two takers
        of one orbit only one gets it, the other None."""

    @abc.abstractmethod
    async def release(self, lot: str, orbit: int, token: str) -> bool:
        """Free the orbit if it still holds the park ``token`` (hangup, ring-back)."""

    @abc.abstractmethod
    async def parked(self, lot: str) -> list[ParkedCall]:
        """The lot's parked calls, by orbit."""


class RegSubscriptionRepository(abc.ABC):
    """Reg event subscriptions (RFC 3680), shared by every S-CSCF on the store: any
    of them serves a refresh and notifies the watchers of a change it makes. A
    subscription is named by its dialog: (Call-ID, our tag, the subscriber's tag)."""

    @abc.abstractmethod
    async def put(self, subscription: RegSubscription) -> None:
        """Create the subscription, or update one with the same key; an update
        keeps the stored ``version`` (only ``take`` moves it)."""

    @abc.abstractmethod
    async def get(self, call_id: str, local_tag: str, remote_tag: str,
                  now: float | None = None) -> RegSubscription | None:
        """The unexpired subscription, None when there is none."""

    @abc.abstractmethod
    async def take(self, call_id: str, local_tag: str, remote_tag: str,
                   now: float | None = None) -> RegSubscription | None:
        """Atomically claim the next version of an unexpired subscription: it comes
        back with the version its next NOTIFY carries, and the stored one is one
        higher, so two S-CSCFs never send the same version."""

    @abc.abstractmethod
    async def take_watching(self, aor: str, now: float | None = None) -> list[RegSubscription]:
        """``take`` for every unexpired subscription watching ``aor``."""

    @abc.abstractmethod
    async def remove(self, call_id: str, local_tag: str, remote_tag: str) -> bool: ...

    @abc.abstractmethod
    async def expire(self, now: float | None = None) -> list[RegSubscription]:
        """Delete the expired subscriptions and return them, so exactly one
        S-CSCF sends each one's final NOTIFY."""

    @abc.abstractmethod
    async def next_expiry(self) -> float | None:
        """Earliest ``expires_at`` of any subscription, for scheduling."""


class LoginRepository(abc.ABC):
    """The failed-login counters of the registrar's LoginGuard, shared by every
    S-CSCF on the store, so its limits hold across instances. The rules stay in
    :mod:`imsbox.ims.login_guard`; this keeps what they count."""

    @abc.abstractmethod
    async def state(self, account: str, address: str, port: int,
                    since: float) -> LoginState:
        """The account's failures, ``address``'s failure times after ``since``
        (oldest first), and when (account, address, port) last logged in."""

    @abc.abstractmethod
    async def failed(self, account: str, address: str, port: int, now: float, *,
                     source_window: float, keep: float) -> None:
        """Count a failed login: the account's failures + 1 (kept ``keep`` seconds
        after this one), a failure time for ``address`` (kept ``source_window``),
        and the (account, address, port) pair no longer trusted."""

    @abc.abstractmethod
    async def succeeded(self, account: str, address: str, port: int, now: float, *,
                        reset_account: bool, keep: float) -> None:
        """Trust (account, address, port) for ``keep`` seconds from ``now``; with
        ``reset_account`` the account's failures are forgotten."""

    @abc.abstractmethod
    async def expire(self, now: float | None = None) -> int:
        """Drop the records kept past their time; returns how many."""


class Store(abc.ABC):
    """Durable IMS state, one repository per role.

    ``await store.open()`` (or ``async with store``) before use;
    ``await store.close()`` finishes the writes under way and releases the back end.
    """

    subscribers: SubscriberRepository
    registrations: RegistrationRepository
    flows: FlowRepository
    messages: MessageRepository
    files: FileRepository
    conferences: ConferenceRepository
    service_data: ServiceDataRepository
    nonces: NonceRepository
    parking: ParkingRepository
    reg_subscriptions: RegSubscriptionRepository
    logins: LoginRepository

    @abc.abstractmethod
    async def open(self) -> Self:
        """Connect and bring the schema up to date; returns the store itself."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release the back end; the object is unusable afterwards."""

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
