"""The one store interface every back end implements.

Callers (HSS, S-CSCF registrar, messaging AS, provisioning) use only this
class, so a PostgreSQL + Redis back end can replace SQLite without changing
them. Operations are synchronous and small; asyncio callers may run them in a
thread (``asyncio.to_thread``). Times are absolute Unix seconds; methods that
depend on the clock take ``now`` so tests can use a virtual one.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType

from .models import (
    Binding, DeferredMessage, Group, HistoryEntry, PcscfRegistration, Psi, PsiKind,
    PublicIdentity, ScscfAssignment, ServiceProfile, Subscriber,
)

__all__ = ["AlreadyExists", "Store", "StoreError"]


class StoreError(Exception):
    """The store cannot do what was asked; the message says why."""


class AlreadyExists(StoreError):
    """A record with the same key (private id, public id, MSISDN ...) exists."""


class Store(abc.ABC):
    """Durable IMS state: subscriptions, routing data, registrations, deferred messages."""

    # -- life cycle -----------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release the back end; the object is unusable afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- subscribers and public identities -----------------------------------
    @abc.abstractmethod
    def add_subscriber(self, subscriber: Subscriber,
                       identities: Sequence[PublicIdentity]) -> None:
        """Create a subscription and its public identities atomically.

        Raises AlreadyExists when the private id, an identity or the MSISDN is taken.
        """

    @abc.abstractmethod
    def get_subscriber(self, private_id: str) -> Subscriber | None: ...

    @abc.abstractmethod
    def list_subscribers(self) -> list[Subscriber]:
        """All subscriptions, ordered by private id."""

    @abc.abstractmethod
    def remove_subscriber(self, private_id: str) -> bool:
        """Delete a subscription with its identities, assignment and bindings."""

    @abc.abstractmethod
    def get_public_identity(self, uri: str) -> PublicIdentity | None: ...

    @abc.abstractmethod
    def public_identities(self, private_id: str) -> list[PublicIdentity]:
        """The subscription's identities, default identity of each set first."""

    @abc.abstractmethod
    def implicit_set(self, uri: str) -> list[PublicIdentity]:
        """The implicit registration set containing ``uri`` (empty when unknown)."""

    # -- service profiles -----------------------------------------------------
    @abc.abstractmethod
    def put_service_profile(self, profile: ServiceProfile) -> None:
        """Create or replace a profile (its iFC list is replaced as a whole)."""

    @abc.abstractmethod
    def get_service_profile(self, name: str) -> ServiceProfile | None: ...

    # -- public service identities -------------------------------------------
    @abc.abstractmethod
    def put_psi(self, psi: Psi) -> None:
        """Create or replace the PSI with this pattern."""

    @abc.abstractmethod
    def get_psi(self, pattern: str) -> Psi | None:
        """The PSI stored under exactly this pattern."""

    @abc.abstractmethod
    def list_psis(self, kind: PsiKind | None = None) -> list[Psi]: ...

    @abc.abstractmethod
    def remove_psi(self, pattern: str) -> bool: ...

    # -- pre-defined groups ---------------------------------------------------
    @abc.abstractmethod
    def put_group(self, group: Group) -> None:
        """Create or replace a group (members replaced as a whole)."""

    @abc.abstractmethod
    def get_group(self, uri: str) -> Group | None: ...

    @abc.abstractmethod
    def list_groups(self) -> list[Group]: ...

    @abc.abstractmethod
    def remove_group(self, uri: str) -> bool: ...

    # -- S-CSCF assignment ----------------------------------------------------
    @abc.abstractmethod
    def get_assignment(self, private_id: str) -> ScscfAssignment | None: ...

    @abc.abstractmethod
    def set_assignment(self, assignment: ScscfAssignment) -> None:
        """Create or replace; the subscriber must exist."""

    # -- registrations --------------------------------------------------------
    @abc.abstractmethod
    def save_binding(self, aor: str, binding: Binding) -> None:
        """Create or refresh the binding with the same ``binding.key``."""

    @abc.abstractmethod
    def remove_binding(self, aor: str, key: str) -> bool: ...

    @abc.abstractmethod
    def remove_bindings(self, aor: str) -> int:
        """Drop every binding of an AOR; returns how many."""

    @abc.abstractmethod
    def bindings(self, aor: str, now: float | None = None) -> list[Binding]:
        """Unexpired bindings, highest q first, then most recently refreshed."""

    @abc.abstractmethod
    def registered_aors(self, now: float | None = None) -> list[str]:
        """AORs with at least one unexpired binding."""

    @abc.abstractmethod
    def expire_bindings(self, now: float | None = None) -> list[tuple[str, Binding]]:
        """Delete expired bindings and return them (for reg-event / cleanup)."""

    @abc.abstractmethod
    def next_binding_expiry(self) -> float | None:
        """Earliest ``expires_at`` of any binding, for scheduling cleanup."""

    # -- P-CSCF registrations (flows) ------------------------------------------
    @abc.abstractmethod
    def save_pcscf_registration(self, registration: PcscfRegistration) -> None:
        """Create or replace the entry with the same ``(node, key)``."""

    @abc.abstractmethod
    def remove_pcscf_registration(self, node: str, key: str) -> bool: ...

    @abc.abstractmethod
    def pcscf_registrations(self, node: str,
                            now: float | None = None) -> list[PcscfRegistration]:
        """The node's unexpired entries, oldest first."""

    @abc.abstractmethod
    def expire_pcscf_registrations(self, now: float | None = None) -> int:
        """Delete every node's expired entries; returns how many."""

    # -- deferred messages ----------------------------------------------------
    @abc.abstractmethod
    def defer_message(self, message: DeferredMessage) -> int:
        """Store durably; returns the id. Ids grow, so they give the order."""

    @abc.abstractmethod
    def deferred_messages(self, recipient: str, now: float | None = None,
                          limit: int | None = None) -> list[DeferredMessage]:
        """Unexpired messages for ``recipient``, oldest first."""

    @abc.abstractmethod
    def remove_deferred(self, ids: Sequence[int]) -> int:
        """Delete delivered messages; returns how many were deleted."""

    @abc.abstractmethod
    def deferred_recipients(self, now: float | None = None) -> list[str]:
        """Recipients with unexpired messages waiting."""

    @abc.abstractmethod
    def expire_deferred(self, now: float | None = None) -> list[DeferredMessage]:
        """Delete expired messages and return them (for failure notifications)."""

    @abc.abstractmethod
    def next_deferred_expiry(self) -> float | None:
        """Earliest ``expires_at`` of any deferred message, for scheduling expiry."""

    # -- message history --------------------------------------------------------
    @abc.abstractmethod
    def add_history(self, entry: HistoryEntry) -> bool:
        """Record a message; False when (conversation_id, message_key) is already kept."""

    @abc.abstractmethod
    def history(self, conversation_id: str, limit: int | None = None) -> list[HistoryEntry]:
        """A conversation's messages, oldest first."""
