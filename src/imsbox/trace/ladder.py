"""From trace records to a ladder: who sent what to whom, once per message.

:class:`Ladder` takes the feed's events (hellos and records, of one or several
serve processes) and keeps one :class:`Arrow` per message on the wire:

- **Dedup.** A message between two nodes is traced twice, ``out`` by the sender
  and ``in`` by the receiver, with the same bytes on mirrored addresses; the
  second record joins the first arrow. A byte-identical message traced again by
  the same node in the same direction is a retransmission: an arrow of its own.
- **Parties.** Addresses are named by role from the hellos' listening
  addresses and from the local address of every record (a node's outgoing TCP
  connections); an address a UE registered from (REGISTER at the P-CSCF, its
  Contact) or sent a request from is named by that user (``alice``); an MSRP
  endpoint by the user whose SDP a=path named it.
- **Groups.** SIP by Call-ID; MSRP with the dialog whose SDP carried its
  session's a=path (session ids from To-Path / From-Path).
- **Filters** (:class:`Filter`) by user, Call-ID, Conversation-ID, method and
  node; a group matches when any of its messages does, and MSRP messages
  follow their group.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .feed import FeedEvent
from .record import Address, Hello, TraceRecord
from .summary import Summary, describe, uri_user

__all__ = ["Arrow", "Filter", "Group", "Ladder", "ROLE_NAMES", "role_name"]

ROLE_NAMES = {"pcscf": "P-CSCF", "icscf": "I-CSCF", "scscf": "S-CSCF",
              "as": "messaging AS", "conference": "conference AS"}
# Column order of the network's nodes; UEs stand outside them.
ROLE_ORDER = ("pcscf", "scscf", "icscf", "as", "conference")


def role_name(role: str) -> str:
    return ROLE_NAMES.get(role, role)


@dataclass(slots=True)
class Arrow:
    """One message on the wire (one or two records of it)."""

    n: int
    record: TraceRecord
    summary: Summary
    src: Address
    dst: Address
    seen_by: list[tuple[str, str]]        # (node, direction) of each record of it
    group: str = ""
    src_name: str = ""
    dst_name: str = ""

    @property
    def t(self) -> float:
        return self.record.t

    @property
    def proto(self) -> str:
        return self.record.proto

    @property
    def transport(self) -> str:
        return self.record.transport

    @property
    def label(self) -> str:
        return self.summary.label

    @property
    def data(self) -> bytes:
        return self.record.data

    @property
    def nodes(self) -> set[str]:
        return {node for node, _ in self.seen_by}


@dataclass(slots=True)
class Group:
    """A SIP dialog / transaction (one Call-ID) and the MSRP sessions it set up."""

    key: str
    arrows: list[Arrow] = field(default_factory=list)

    @property
    def title(self) -> str:
        first = next((a for a in self.arrows if a.proto == "sip"), None)
        what = first.summary.method if first is not None else "MSRP"
        return f"{what} {self.key}"


@dataclass(slots=True, frozen=True)
class Filter:
    """What ``imsbox trace`` keeps; an empty filter keeps everything."""

    users: tuple[str, ...] = ()
    call_ids: tuple[str, ...] = ()
    conversation_ids: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.users or self.call_ids or self.conversation_ids or self.methods
                    or self.nodes)

    def matches(self, group: Group) -> bool:
        """Every given criterion holds for some message of the group."""
        arrows = group.arrows
        if self.call_ids and not any(a.summary.call_id in self.call_ids for a in arrows):
            return False
        if self.users and not any(_user_match(u, a.summary.users)
                                  for u in self.users for a in arrows):
            return False
        if self.conversation_ids and not any(
                c in a.summary.conversation_ids for c in self.conversation_ids
                for a in arrows):
            return False
        if self.methods:
            wanted = {m.upper() for m in self.methods}
            if not any(a.summary.method.upper() in wanted for a in arrows):
                return False
        return not self.nodes or any(a.nodes & set(self.nodes) for a in arrows)


def _user_match(wanted: str, users: set[str]) -> bool:
    return wanted in users or uri_user(wanted) in users if ":" in wanted else wanted in users


class Ladder:
    """The arrows of everything fed in, with their parties and groups."""

    def __init__(self) -> None:
        self.arrows: list[Arrow] = []
        self.dropped = 0
        self.records = 0
        self._roles: dict[Address, str] = {}      # node addresses, from hellos and records
        self._users: dict[Address, str] = {}      # UE addresses, learned
        self._pending: dict[tuple[object, ...], list[Arrow]] = {}
        self._session_group: dict[str, str] = {}  # MSRP session id -> group key
        self._session_user: dict[str, str] = {}   # MSRP session id -> the UE's user

    # -- input ----------------------------------------------------------------------
    def feed(self, event: FeedEvent) -> Arrow | None:
        """Take one feed event; the new arrow, or None (a hello, the second
        record of a message, a drop count)."""
        if isinstance(event, Hello):
            for node in event.nodes:
                for _, host, port in node.listen:
                    self._roles[(host, port)] = node.role
            return None
        if isinstance(event, int):
            self.dropped += event
            return None
        return self.add(event)

    def add(self, record: TraceRecord) -> Arrow | None:
        self.records += 1
        self._roles.setdefault(record.local, record.node)
        key = _wire_key(record)
        twin = self._twin(key, record)
        if twin is not None:
            twin.seen_by.append((record.node, record.direction))
            if record.direction == "out":  # the sender's time is the wire's
                twin.record = record
            return None
        summary = describe(record)
        arrow = Arrow(len(self.arrows), record, summary, record.src, record.dst,
                      [(record.node, record.direction)])
        self._learn(arrow)
        arrow.group = self._group_of(arrow)
        self.arrows.append(arrow)
        self._pending.setdefault(key, []).append(arrow)
        if len(self._pending) > 20000:  # only recent twins matter
            self._pending.pop(next(iter(self._pending)))
        return arrow

    def _twin(self, key: tuple[object, ...], record: TraceRecord) -> Arrow | None:
        """The arrow this record is the other side of: same bytes, same ends, the
        other direction, another node (and not already matched)."""
        for arrow in self._pending.get(key, ()):
            if len(arrow.seen_by) == 1:
                node, direction = arrow.seen_by[0]
                if direction != record.direction and node != record.node:
                    return arrow
        return None

    def _learn(self, arrow: Arrow) -> None:
        """Name UE addresses from what the nodes see of them."""
        s, record = arrow.summary, arrow.record
        far = record.remote
        if s.error or far in self._roles:
            return
        if record.proto == "msrp":
            session = s.msrp_from if record.direction == "in" else s.msrp_to
            user = self._session_user.get(session)
            if user and far not in self._users:
                self._users[far] = user  # e.g. the UE's outgoing MSRP connection
            return
        user = ""
        if s.register_user:
            user = s.register_user
            contact = _hostport(s.contact)
            if contact is not None:
                self._users.setdefault(contact, user)
        elif s.is_request:  # a UE's own request, or one the P-CSCF sends to a UE
            user = s.from_user if record.direction == "in" else s.to_user
        if user and far not in self._users:
            self._users[far] = user
        owner = self._users.get(far) if record.direction == "in" else None
        if not owner:
            return
        for uri in s.sdp_paths:  # the MSRP endpoint of the UE that sent this SDP
            address = _hostport(uri)
            if address is not None and address not in self._roles:
                self._users.setdefault(address, owner)
        for session in s.sdp_sessions:
            self._session_user.setdefault(session, owner)

    def _group_of(self, arrow: Arrow) -> str:
        s = arrow.summary
        if arrow.proto == "sip":
            for session in s.sdp_sessions:
                self._session_group.setdefault(session, s.call_id)
            return s.call_id
        for session in sorted(s.msrp_sessions):
            group = self._session_group.get(session)
            if group:
                return group
        return "msrp " + (min(s.msrp_sessions) if s.msrp_sessions else "?")

    # -- views ----------------------------------------------------------------------
    def name(self, address: Address) -> str:
        role = self._roles.get(address)
        if role is not None:
            return role_name(role)
        user = self._users.get(address)
        if user is not None:
            return f"{user}'s UE"
        host, port = address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def resolve(self) -> None:
        """Name every arrow's ends with what is known now (UEs learned late)."""
        for arrow in self.arrows:
            arrow.src_name, arrow.dst_name = self.name(arrow.src), self.name(arrow.dst)

    def ordered(self) -> list[Arrow]:
        """Arrows in wire order (the sender's monotonic time; several processes
        share the host's clock)."""
        return sorted(self.arrows, key=lambda a: (a.t, a.n))

    def groups(self, keep: Filter | None = None) -> list[Group]:
        self.resolve()
        groups: dict[str, Group] = {}
        for arrow in self.ordered():
            groups.setdefault(arrow.group, Group(arrow.group)).arrows.append(arrow)
        out = list(groups.values())
        return [g for g in out if keep is None or keep.matches(g)]

    def columns(self, arrows: Iterable[Arrow]) -> list[str]:
        """Parties left to right: the first UE, the nodes in network order, the
        other UEs (and unknown addresses) in order of appearance."""
        names: list[str] = []
        for arrow in arrows:
            for name in (arrow.src_name, arrow.dst_name):
                if name not in names:
                    names.append(name)
        nodes = [role_name(r) for r in ROLE_ORDER]
        known = set(ROLE_NAMES.values()) | {role_name(r) for r in self._roles.values()}
        others = [n for n in names if n not in known]
        middle = [n for n in nodes if n in names] + \
            [n for n in names if n in known and n not in nodes]
        return others[:1] + middle + others[1:]


def _wire_key(record: TraceRecord) -> tuple[object, ...]:
    ends = frozenset((record.local, record.remote))
    return (record.proto, record.transport, ends, hashlib.blake2b(
        record.data, digest_size=12).digest())


def _hostport(text: str) -> Address | None:
    """host:port of a SIP Contact or an MSRP URI, IPv6 in brackets."""
    at = text.rfind("@")
    rest = text[at + 1:] if at >= 0 else text.split("//", 1)[-1]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, tail = rest.partition(":")
        port_text = tail
    digits = ""
    for ch in port_text:
        if not ch.isdigit():
            break
        digits += ch
    return (host, int(digits)) if host and digits else None


def iter_arrows(groups: Iterable[Group]) -> Iterator[Arrow]:
    for group in groups:
        yield from group.arrows
