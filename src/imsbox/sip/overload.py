"""Overload control for one SIP node (RFC 3261 21.5.4, RFC 7339 ideas), sans-I/O.

Before the endpoint starts a server transaction for a new request it asks
``OverloadController.admit``; a refusal is a ``503 Service Unavailable`` with
``Retry-After`` (RFC 3261 20.33), sent statelessly so that shed work costs no
memory.  The signals are the node's own load:

* ``transactions``: how many transactions the node holds (its queue of work,
  including those waiting out Timer J/K/H - the memory it uses);
* ``queue_delay``: how long the request waited before the node read it (the
  latency of the node's input queue; the kernel's datagram timestamp).

Work is shed in priority order: new out-of-dialog requests first (at the
limits), in-dialog requests only at ``in_dialog_factor`` times the limits,
and ACK, CANCEL and BYE never (they end work rather than start it).

A shed transaction stays shed: its branch is kept (bounded, for 64*T1) so a
retransmission gets the same 503 and the ACK of a shed INVITE is absorbed.
Without it the oldest copy of a queued request would be refused while its
retransmission, read sooner, was taken: the upstream proxy would end the
call on the 503 while the callee answers it.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict
from dataclasses import dataclass

from .headers import HeaderError
from .message import Request, Response, new_tag

__all__ = ["OverloadController", "OverloadPolicy", "Priority", "priority_of"]

_NEVER_SHED = frozenset({"ACK", "CANCEL", "BYE"})
SHED_MEMORY = 32.0        # seconds a shed branch is remembered (64*T1, Timer H/J)
SHED_MEMORY_SIZE = 20000  # branches remembered at most


@dataclass(slots=True, frozen=True)
class OverloadPolicy:
    """When a node sheds load (imsbox.toml ``[limits]``, docs/limits.md)."""

    # Held transactions before new work is refused: a stateful proxy holds about
    # four per call for 32 s (Timers L, M, J), so 100 calls/s need ~13,000.
    max_transactions: int = 50000
    # Seconds a request may have waited to be read: beyond the first UDP
    # retransmissions, and above the pauses of a full garbage collection.
    max_queue_delay: float = 2.0
    in_dialog_factor: float = 2.0   # in-dialog requests are shed this much later
    retry_after: int = 10           # seconds, in the 503's Retry-After


class Priority(enum.IntEnum):
    """What shedding a request costs, lowest shed first."""

    NEW = 0         # out-of-dialog: starts new work
    IN_DIALOG = 1   # continues existing work (re-INVITE, UPDATE, MESSAGE in a session ...)
    ESSENTIAL = 2   # ACK, CANCEL, BYE: end work, never shed


def priority_of(request: Request) -> Priority:
    if request.method in _NEVER_SHED:
        return Priority.ESSENTIAL
    try:
        in_dialog = request.to.tag is not None
    except HeaderError:
        in_dialog = False
    return Priority.IN_DIALOG if in_dialog else Priority.NEW


class OverloadController:
    """Decides, per new request, whether the node takes it (see module doc)."""

    def __init__(self, policy: OverloadPolicy | None = None) -> None:
        self.policy = policy if policy is not None else OverloadPolicy()
        self.stats: Counter[str] = Counter()
        self._shed: OrderedDict[str, tuple[float, Response]] = OrderedDict()

    def shed_before(self, request: Request, now: float) -> Response | None:
        """The 503 sent for the transaction of ``request`` if it was shed: a
        retransmission is answered with it again, an ACK for it is dropped."""
        if not self._shed or request.method == "CANCEL":
            return None
        self._forget(now)
        try:
            branch = request.top_via.branch
        except HeaderError:
            return None
        entry = self._shed.get(branch) if branch else None
        return entry[1] if entry is not None else None

    def admit(self, request: Request, transactions: int,
              queue_delay: float = 0.0, now: float = 0.0) -> Response | None:
        """None to take ``request``; else the 503 to send back without a transaction."""
        priority = priority_of(request)
        if priority is Priority.ESSENTIAL:
            return None
        policy = self.policy
        scale = 1.0 if priority is Priority.NEW else policy.in_dialog_factor
        if transactions >= policy.max_transactions * scale:
            why = f"overloaded ({transactions} transactions)"
        elif queue_delay >= policy.max_queue_delay * scale:
            why = f"overloaded (queued {queue_delay:.1f}s)"
        else:
            return None
        self.stats[f"shed_{priority.name.lower()}"] += 1
        refusal = self.refusal(request, why)
        self._remember(request, refusal, now)
        return refusal

    def _remember(self, request: Request, refusal: Response, now: float) -> None:
        try:
            branch = request.top_via.branch
        except HeaderError:
            return
        if branch:
            self._shed[branch] = (now, refusal)
            if len(self._shed) > SHED_MEMORY_SIZE:
                self._shed.popitem(last=False)

    def _forget(self, now: float) -> None:
        shed = self._shed
        while shed:
            branch, (when, _) = next(iter(shed.items()))
            if now - when < SHED_MEMORY:
                return
            del shed[branch]

    def refusal(self, request: Request, why: str) -> Response:
        """21.5.4: 503 with Retry-After, so well-behaved clients back off."""
        response = Response.for_request(request, 503, f"Service Unavailable - {why}",
                                        to_tag=new_tag())
        response.add_header("Retry-After", str(self.policy.retry_after))
        return response
