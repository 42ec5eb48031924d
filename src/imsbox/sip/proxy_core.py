"""Proxy behaviour of RFC 3261 section 16 as plain functions (sans-I/O).

The asyncio ``StatefulProxy`` in ``proxy.py`` drives these; they are kept
apart so each step of 16.3-16.7 can be tested on its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

from .headers import Via
from .message import Request, Response, new_tag
from .uri import SipUri, Uri

__all__ = [
    "ProxyIdentity", "check_request", "preprocess_route", "forward_copy",
    "loop_hash", "ResponseContext", "BranchState", "order_targets", "next_hop_is_strict",
]

DEFAULT_MAX_FORWARDS = 70
T = TypeVar("T")


@dataclass(slots=True)
class ProxyIdentity:
    """How a proxy recognises itself: its addresses and Record-Route URI."""

    hostports: set[tuple[str, int | None]]
    record_route: SipUri | None = None
    supported: frozenset[str] = frozenset()

    def is_me(self, uri: Uri) -> bool:
        if not isinstance(uri, SipUri):
            return False
        host = uri.host.lower().strip("[]")
        return (host, uri.port) in self.hostports or (
            uri.port is None and (host, 5060) in self.hostports)


def check_request(request: Request, me: ProxyIdentity) -> Response | None:
    """16.3 request validation; returns the error response, if any."""
    mf = request.max_forwards
    if mf is not None and mf <= 0 and request.method != "ACK":
        return _reject(request, 483, "Too Many Hops")
    unsupported = [t for t in request.tokens("Proxy-Require") if t not in me.supported]
    if unsupported and request.method not in ("ACK", "CANCEL"):
        reply = _reject(request, 420, "Bad Extension")
        reply.add_header("Unsupported", ", ".join(unsupported))
        return reply
    if is_loop(request, me):
        return _reject(request, 482, "Loop Detected")
    return None


def _reject(request: Request, status: int, reason: str) -> Response:
    """A response of our own: we act as a UAS and add a To tag (8.2.6.2)."""
    return Response.for_request(request, status, reason, to_tag=new_tag())


def loop_hash(request: Request, me: ProxyIdentity | None = None) -> str:
    """16.6 step 8: a hash of what makes a request 'the same' at this proxy.

    With ``me`` the Via part is the topmost Via not placed by us, so a request
    that comes back to us hashes as it did when we first forwarded it.
    """
    h = hashlib.blake2s(digest_size=8)
    vias = [v for v in request.via if me is None or not _is_mine(v, me)]
    to_tag = request.to.tag or ""
    for part in (str(request.uri), to_tag, request.from_.tag or "", request.call_id,
                 str(request.cseq.seq), ",".join(request.headers.get_all("Proxy-Require")),
                 ",".join(request.headers.get_all("Route")),
                 str(vias[0]) if vias else ""):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()


def _is_mine(via: Via, me: ProxyIdentity) -> bool:
    return (via.host.lower().strip("[]"), via.port) in me.hostports


def is_loop(request: Request, me: ProxyIdentity) -> bool:
    """16.3 step 4: our own Via with the same loop hash means a true loop.

    The hash is taken as ``forward_copy`` callers take it: after 16.4.
    """
    mine = [v for v in request.via if _is_mine(v, me)]
    if not mine:
        return False
    probe = request.copy()
    preprocess_route(probe, me)
    digest = loop_hash(probe, me)
    return any((v.branch or "").startswith(f"z9hG4bK{digest}") for v in mine)


def preprocess_route(request: Request, me: ProxyIdentity) -> SipUri | None:
    """16.4: undo a strict-routing previous hop, and pop our own Route.

    Returns the URI of the Route entry popped (ours), None when there was none.
    """
    if me.is_me(request.uri) and request.route:
        # The previous hop strict-routed to our Record-Route URI: the real
        # Request-URI is the last Route entry.
        routes = request.route
        request.remove_header("Route")
        request.uri = routes[-1].uri
        for route in routes[:-1]:
            request.add_header("Route", str(route))
    routes = request.route
    top = routes[0].uri if routes else None
    if isinstance(top, SipUri) and me.is_me(top):
        request.pop_header("Route")
        return top
    return None


def forward_copy(request: Request, target: Uri | None, me: ProxyIdentity, *,
                 record_route: bool, path: bool = False) -> Request:
    """16.6 steps 1-6: the copy of a request sent to one target."""
    out = request.copy()
    if target is not None:
        out.uri = target
    mf = out.max_forwards
    out.set_header("Max-Forwards", str(DEFAULT_MAX_FORWARDS if mf is None else mf - 1))
    if me.record_route is not None:
        if record_route and out.method not in ("REGISTER", "ACK", "CANCEL"):
            out.push_header("Record-Route", f"<{me.record_route}>")
        if path and out.method == "REGISTER":
            out.push_header("Path", f"<{me.record_route}>")
    _strict_route_fixup(out)
    return out


def next_hop_is_strict(request: Request) -> bool:
    """The first Route is an RFC 2543 strict router (no lr)."""
    routes = request.route
    return bool(routes) and isinstance(routes[0].uri, SipUri) and not routes[0].uri.lr


def _strict_route_fixup(request: Request) -> None:
    """16.6 step 6: a strict next hop gets the Request-URI moved into Route."""
    if next_hop_is_strict(request):
        routes = request.route
        request.add_header("Route", f"<{request.uri}>")
        request.uri = routes[0].uri
        request.pop_header("Route")


def order_targets(targets: list[tuple[T, float]]) -> list[list[T]]:
    """Group targets by q (highest first): groups are tried in sequence,
    members of a group in parallel (16.6, RFC 3261 q-value forking)."""
    groups: dict[float, list[T]] = {}
    for uri, q in targets:
        groups.setdefault(q, []).append(uri)
    return [groups[q] for q in sorted(groups, reverse=True)]


class BranchState(Enum):
    PENDING = "pending"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"


@dataclass(slots=True)
class ResponseContext:
    """16.7: collects branch responses and picks what goes upstream."""

    method: str
    branches: dict[int, BranchState] = field(default_factory=dict)
    best: Response | None = None
    final_sent: bool = False
    challenges: list[tuple[str, str]] = field(default_factory=list)
    finals: dict[int, Response] = field(default_factory=dict)  # non-2xx final per branch

    def add_branch(self, key: int) -> None:
        self.branches[key] = BranchState.PENDING

    def on_response(self, key: int, response: Response) -> tuple[list[Response], bool]:
        """Returns (responses to forward now, whether to CANCEL other branches)."""
        if response.status < 200:
            self.branches[key] = BranchState.PROCEEDING
            if response.status == 100 or self.final_sent:
                return [], False
            return [response], False
        self.branches[key] = BranchState.COMPLETED
        if 200 <= response.status < 300:
            first = not self.final_sent
            self.final_sent = True
            # Every 2xx to an INVITE goes upstream (16.7 step 5).
            if first or self.method == "INVITE":
                return [response], first and self.method == "INVITE"
            return [], False
        if self.final_sent:
            return [], False
        self._consider(key, response)
        cancel = response.status >= 600
        return [], cancel

    def on_timeout(self, key: int) -> None:
        self.branches[key] = BranchState.COMPLETED
        if not self.final_sent:
            self._consider(key, Response(408, "Request Timeout"))

    def best_of(self, keys: Iterable[int]) -> Response | None:
        """The best final response among the branches ``keys`` (16.7 step 6
        ranking), e.g. what one target set of a failure route ended with."""
        return min((self.finals[k] for k in keys if k in self.finals), key=_rank, default=None)

    def _consider(self, key: int, response: Response) -> None:
        self.finals[key] = response
        for name in ("WWW-Authenticate", "Proxy-Authenticate"):
            if response.status in (401, 407):
                self.challenges.extend((name, v) for v in response.headers.get_all(name))
        if self.best is None or _rank(response) < _rank(self.best):
            self.best = response

    @property
    def all_completed(self) -> bool:
        return all(s is BranchState.COMPLETED for s in self.branches.values())

    @property
    def pending_keys(self) -> list[int]:
        return [k for k, s in self.branches.items() if s is not BranchState.COMPLETED]

    def final_response(self) -> Response | None:
        """The best final response once every branch completed (16.7 step 6)."""
        if self.final_sent or not self.all_completed or self.best is None:
            return None
        self.final_sent = True
        best = self.best
        if best.status == 503:
            best = _restatus(best, 500, "Server Internal Error")
        if best.status in (401, 407):
            best = best.copy()
            for name in ("WWW-Authenticate", "Proxy-Authenticate"):
                best.remove_header(name)
            for name, value in dict.fromkeys(self.challenges):
                best.add_header(name, value)
        return best


def _rank(response: Response) -> tuple[int, int]:
    """Lower is better: 6xx first, then the lowest class; 401/407 beat other 4xx."""
    cls = response.status // 100
    if cls == 6:
        return (0, response.status)
    preferred = 0 if response.status in (401, 407, 415, 420, 484) else 1
    return (cls, preferred * 1000 + response.status)


def _restatus(response: Response, status: int, reason: str) -> Response:
    return Response(status, reason, response.headers.copy(), response.body)

