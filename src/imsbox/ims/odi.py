"""Self-contained odi tokens: where an iFC chain stands, signed, in the Route.

TS 24.229 5.4.3.2 lets the S-CSCF put an "original dialog identifier" in the
Route it hands an AS, so that the request coming back continues the chain
where it stopped. Kept in one process's memory, only that S-CSCF could
continue it; signed with a key every S-CSCF of the network shares (the
store's shared secret ``odi``), the token carries the chain's state itself
and any instance continues it, also after a restart, with nothing to store.

A token is ``base64url(JSON [case, served user, priority, expiry]) "." MAC``,
both parts SIP token characters (a Route parameter value as it is). The MAC
(HMAC-SHA-256, 128 bits) stops an AS or a UE from forging a chain position
(skipping services, or claiming another user's).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ifc import SessionCase
from .signed import Sealer

__all__ = ["OdiChain", "OdiSigner"]



@dataclass(slots=True, frozen=True)
class OdiChain:
    """The state of one iFC chain while an AS has the request."""

    case: SessionCase
    served_user: str      # default public identity of the served implicit set
    priority: int         # the last iFC executed
    expires_at: float     # the AS must hand the request back before this


class OdiSigner:
    """Issues and opens odi tokens under one key."""

    def __init__(self, secret: bytes) -> None:
        self._sealer = Sealer(secret, b"imsbox odi")

    def issue(self, chain: OdiChain) -> str:
        return self._sealer.seal([chain.case.value, chain.served_user, chain.priority,
                                  int(chain.expires_at)])

    def open(self, token: str, now: float) -> OdiChain | None:
        """The chain of a token this key signed and still valid; None otherwise."""
        fields = self._sealer.open(token)
        if fields is None:
            return None
        try:
            case, served_user, priority, expires_at = fields
            chain = OdiChain(SessionCase(case), str(served_user), int(priority),
                             float(expires_at))
        except (ValueError, TypeError):
            return None
        return chain if chain.expires_at >= now else None
