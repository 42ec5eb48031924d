"""SIP dialogs (RFC 3261 section 12), sans-I/O.

A Dialog holds the state both peers share after an INVITE (or SUBSCRIBE /
REFER) succeeds: the dialog id, the CSeq spaces, the route set and the remote
target.  It builds in-dialog requests and checks incoming ones; it sends
nothing itself.  Usages (RFC 5057: an INVITE session, subscriptions, REFER's
implicit subscription) keep their own state and share one Dialog; the
DialogTable holds a UA's dialogs and drops one when its last usage ends.
"""

from __future__ import annotations

import enum
import logging
import secrets
from dataclasses import dataclass, field
from typing import Protocol
from collections.abc import Iterable, Iterator

from ..errors import SipProtocolError
from ..headers import Join, NameAddr, Params, Replaces
from ..message import Headers, Request, Response, new_tag
from ..uri import SipUri, Uri, parse_uri

__all__ = [
    "DialogState", "DialogRole", "DialogId", "RouteSet", "Dialog", "DialogError",
    "DialogTable", "DialogUsage", "UsageKind", "InviteMatch", "TARGET_REFRESH_METHODS",
    "EVENT_METHODS", "build_request", "build_cancel",
]

log = logging.getLogger(__name__)

# Methods whose request and 2xx carry a new remote target (12.2, RFC 3311, 6665, 3515).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
MAX_FORWARDS = "70"
# RFC 5057 5: requests that belong to a subscription usage; the rest of a
# dialog's requests belong to its INVITE usage.
EVENT_METHODS = frozenset({"SUBSCRIBE", "NOTIFY", "REFER"})


class DialogError(SipProtocolError, ValueError):
    """A message cannot create or be used with a dialog."""


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogRole(enum.Enum):
    UAC = "uac"
    UAS = "uas"


class UsageKind(enum.Enum):
    """The kinds of dialog usage (RFC 5057 3)."""

    INVITE = "invite"              # an INVITE-initiated session
    SUBSCRIPTION = "subscription"  # an RFC 6665 subscription, either side
    REFER = "refer"                # REFER's implicit subscription (RFC 3515)


class DialogUsage(Protocol):
    """Anything sharing a dialog: it says which kind of usage it is."""

    @property
    def usage_kind(self) -> UsageKind: ...


@dataclass(slots=True, frozen=True)
class DialogId:
    """Call-ID plus local and remote tag (12)."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def for_incoming_request(cls, request: Request) -> DialogId:
        """The id as seen by the UAS of an in-dialog request: To tag is ours."""
        return cls(request.call_id, request.to.tag or "", request.from_.tag or "")

    @classmethod
    def for_incoming_response(cls, response: Response) -> DialogId:
        """The id as seen by the UAC receiving a response: From tag is ours."""
        return cls(response.call_id, response.from_.tag or "", response.to.tag or "")


@dataclass(slots=True)
class RouteSet:
    """The dialog's route set, in the order requests traverse it (12.1)."""

    routes: list[NameAddr] = field(default_factory=list)

    @classmethod
    def from_record_route(cls, message: Request | Response, reverse: bool) -> RouteSet:
        """12.1.1 (UAS, in order) and 12.1.2 (UAC, reversed)."""
        routes = [NameAddr(r.uri, None, Params(r.params)) for r in message.record_route]
        return cls(routes[::-1] if reverse else routes)

    @property
    def strict(self) -> bool:
        """The next hop is a strict router (RFC 2543): its URI lacks lr."""
        first = self.routes[0].uri if self.routes else None
        return isinstance(first, SipUri) and not first.lr

    def __bool__(self) -> bool:
        return bool(self.routes)

    def __iter__(self) -> Iterator[NameAddr]:
        return iter(self.routes)

    def __len__(self) -> int:
        return len(self.routes)

    def apply(self, request: Request, remote_target: Uri) -> None:
        """Set Request-URI and Route headers of an in-dialog request (12.2.1.1)."""
        request.remove_header("Route")
        if not self.routes:
            request.uri = _copy(remote_target)
            return
        routes = [str(r) for r in self.routes]
        if self.strict:
            request.uri = _request_uri_form(self.routes[0].uri)
            routes = [*routes[1:], f"<{remote_target}>"]
        else:
            request.uri = _copy(remote_target)
        for value in routes:
            request.add_header("Route", value)


def _copy(uri: Uri) -> Uri:
    return uri.copy() if isinstance(uri, SipUri) else parse_uri(str(uri))


def _request_uri_form(uri: Uri) -> Uri:
    """Strip what a Request-URI may not carry (19.1.1 table: method, headers)."""
    if not isinstance(uri, SipUri):
        return _copy(uri)
    out = uri.copy(headers=[])
    out.remove_param("method")
    return out


def _addr(addr: NameAddr, tag: str | None) -> NameAddr:
    params = Params(p for p in addr.params if p[0].lower() != "tag")
    if tag:
        params.append(("tag", tag))
    return NameAddr(addr.uri, addr.display_name, params)


def _initial_seq() -> int:
    """8.1.1.5: a fresh CSeq below 2**31."""
    return secrets.randbelow(2**31 - 1) + 1


class Dialog:
    """One dialog's state (12.1) and the requests built from it (12.2.1.1)."""

    def __init__(self, role: DialogRole, id: DialogId, local_addr: NameAddr,
                 remote_addr: NameAddr, remote_target: Uri, route_set: RouteSet,
                 local_seq: int | None, remote_seq: int | None,
                 local_target: Uri | None, secure: bool = False,
                 state: DialogState = DialogState.EARLY) -> None:
        self.role = role
        self.id = id
        self.local_addr = _addr(local_addr, id.local_tag)
        self.remote_addr = _addr(remote_addr, id.remote_tag)
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.local_target = local_target
        self.contact_params = ""   # our Contact's header parameters (``;isfocus``)
        self.secure = secure
        self.state = state
        self.usages: list[DialogUsage] = []   # kept by the DialogTable

    @property
    def invite_usage(self) -> DialogUsage | None:
        """The INVITE session sharing this dialog, if there is one."""
        return next((u for u in self.usages if u.usage_kind is UsageKind.INVITE), None)

    def __repr__(self) -> str:
        return f"<Dialog {self.role.value} {self.state.value} {self.id}>"

    # -- creation --------------------------------------------------------
    @classmethod
    def from_uac(cls, request: Request, response: Response, secure: bool = False) -> Dialog:
        """12.1.2: the UAC side, from a 1xx with a To tag or a 2xx."""
        if not 100 < response.status < 300 or response.to.tag is None:
            raise DialogError("dialog needs a 101-299 response with a To tag")
        target = response.contact[0].uri if response.contact else request.uri
        local_target = request.contact[0].uri if request.contact else None
        state = DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY
        return cls(
            DialogRole.UAC, DialogId.for_incoming_response(response),
            request.from_, response.to, _copy(target),
            RouteSet.from_record_route(response, reverse=True),
            request.cseq.seq, None, local_target, secure, state,
        )

    @classmethod
    def from_uas(cls, request: Request, local_tag: str | None = None,
                 local_target: Uri | None = None, secure: bool = False,
                 state: DialogState = DialogState.EARLY) -> Dialog:
        """12.1.1: the UAS side, from the dialog-creating request."""
        if request.to.tag:
            raise DialogError("request already carries a To tag")
        if not request.contact:
            raise DialogError(f"{request.method} without Contact cannot create a dialog")
        tag = local_tag or new_tag()
        return cls(
            DialogRole.UAS, DialogId(request.call_id, tag, request.from_.tag or ""),
            request.to, request.from_, _copy(request.contact[0].uri),
            RouteSet.from_record_route(request, reverse=False),
            None, request.cseq.seq, local_target, secure, state,
        )

    @staticmethod
    def is_secure(request: Request, transport: str) -> bool:
        """12.1.1 / 12.1.2: TLS and a SIPS Request-URI."""
        return transport.lower() == "tls" and request.uri.scheme == "sips"

    # -- state -----------------------------------------------------------
    @property
    def is_early(self) -> bool:
        return self.state is DialogState.EARLY

    @property
    def is_confirmed(self) -> bool:
        return self.state is DialogState.CONFIRMED

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    def confirm(self, response: Response | None = None) -> None:
        """13.2.2.4: on the 2xx an early UAC dialog recomputes its route set."""
        if response is not None and self.role is DialogRole.UAC and self.is_early:
            self.route_set = RouteSet.from_record_route(response, reverse=True)
            self.refresh_target(response)
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def refresh_target(self, message: Request | Response) -> bool:
        """12.2.1.2 / 12.2.2: a target refresh replaces the remote target."""
        if not message.contact or message.contact[0].is_star:
            return False
        self.remote_target = _copy(message.contact[0].uri)
        return True

    # -- UAS behaviour (12.2.2) --------------------------------------------
    def receive_request(self, request: Request) -> int | None:
        """Check an in-dialog request; returns the error status to answer, or None.

        12.2.2: a CSeq lower than the remote sequence number is out of order
        (500); a target refresh request replaces the remote target.
        """
        if request.method in ("ACK", "CANCEL"):
            return None
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            log.info("out-of-order %s (CSeq %d < %d) in %s", request.method, seq,
                     self.remote_seq, self.id)
            return 500
        self.remote_seq = seq
        if request.method in TARGET_REFRESH_METHODS:
            self.refresh_target(request)
        return None

    # -- UAC behaviour (12.2.1) --------------------------------------------
    def receive_response(self, method: str, response: Response) -> None:
        """12.2.1.2: 2xx to a target refresh request updates the remote target."""
        if 200 <= response.status < 300 and method in TARGET_REFRESH_METHODS:
            self.refresh_target(response)

    def next_cseq(self) -> int:
        """12.2.1.1: the local sequence number grows by one per request."""
        self.local_seq = _initial_seq() if self.local_seq is None else self.local_seq + 1
        return self.local_seq

    def create_request(self, method: str, headers: Iterable[tuple[str, str]] = (),
                       body: bytes = b"", content_type: str | None = None,
                       cseq: int | None = None) -> Request:
        """Build an in-dialog request (12.2.1.1), without Via (the sender adds it)."""
        seq = cseq if cseq is not None else self.next_cseq()
        request = Request(method, self.remote_target, Headers(), body)
        self.route_set.apply(request, self.remote_target)
        request.add_header("Max-Forwards", MAX_FORWARDS)
        request.add_header("From", str(self.local_addr))
        request.add_header("To", str(self.remote_addr))
        request.add_header("Call-ID", self.id.call_id)
        request.add_header("CSeq", f"{seq} {method}")
        if method in TARGET_REFRESH_METHODS and self.local_target is not None:
            request.add_header("Contact", f"<{self.local_target}>{self.contact_params}")
        for name, value in headers:
            request.add_header(name, value)
        if body and content_type:
            request.set_header("Content-Type", content_type)
        return request

    def create_ack(self, invite_cseq: int, body: bytes = b"",
                   content_type: str | None = None,
                   headers: Iterable[tuple[str, str]] = ()) -> Request:
        """13.2.2.4: ACK for a 2xx: the INVITE's CSeq number, a new transaction."""
        return self.create_request("ACK", headers, body, content_type, cseq=invite_cseq)


def build_request(method: str, target: Uri | str, local: NameAddr | str,
                  remote: NameAddr | str, *, contact: Uri | NameAddr | str | None = None,
                  call_id: str | None = None, cseq: int = 1,
                  local_tag: str | None = None, route: Iterable[str] = (),
                  headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                  content_type: str | None = None) -> Request:
    """A request outside any dialog (8.1.1), without Via. A NameAddr ``contact``
    goes out with its header parameters (feature tags, RFC 3840)."""
    local_addr = local if isinstance(local, NameAddr) else NameAddr.parse(local, "From")
    remote_addr = remote if isinstance(remote, NameAddr) else NameAddr.parse(remote, "To")
    request = Request(method, target if not isinstance(target, str) else parse_uri(target),
                      Headers(), body)
    for r in route:
        request.add_header("Route", r)
    request.add_header("Max-Forwards", MAX_FORWARDS)
    request.add_header("From", str(_addr(local_addr, local_tag or new_tag())))
    request.add_header("To", str(_addr(remote_addr, None)))
    request.add_header("Call-ID", call_id or secrets.token_hex(12))
    request.add_header("CSeq", f"{cseq} {method}")
    if isinstance(contact, NameAddr):
        request.add_header("Contact", str(contact))
    elif contact is not None:
        request.add_header("Contact", f"<{contact}>")
    for name, value in headers:
        request.add_header(name, value)
    if body and content_type:
        request.set_header("Content-Type", content_type)
    return request


def build_cancel(request: Request) -> Request:
    """9.1: CANCEL copies Request-URI, Call-ID, To, From, CSeq number, top Via, Route."""
    cancel = Request("CANCEL", _copy(request.uri), Headers())
    if request.headers.get("Via") is not None:
        cancel.add_header("Via", str(request.top_via))
    cancel.add_header("Max-Forwards", MAX_FORWARDS)
    for name in ("From", "To", "Call-ID"):
        cancel.add_header(name, request.headers.get(name) or "")
    cancel.add_header("CSeq", f"{request.cseq.seq} CANCEL")
    for value in request.headers.get_all("Route"):
        cancel.add_header("Route", value)
    return cancel


@dataclass(slots=True, frozen=True)
class InviteMatch:
    """What a Replaces or Join names: the dialog and its INVITE session."""

    dialog: Dialog
    session: DialogUsage


class DialogTable:
    """A UA's dialogs by DialogId, each with its usages (RFC 5057).

    ``add_usage`` enters a dialog with its first usage; ``remove_usage``
    drops the dialog when its last usage is gone.  Lookups find early and
    confirmed dialogs; in-dialog requests and responses match by 12.2.
    """

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def __contains__(self, dialog_id: object) -> bool:
        return dialog_id in self._dialogs

    def add_usage(self, dialog: Dialog, usage: DialogUsage) -> Dialog:
        """Add a usage to ``dialog`` (entering it in the table), or to the
        dialog with its id already here; returns the dialog in the table."""
        held = self._dialogs.setdefault(dialog.id, dialog)
        if not any(u is usage for u in held.usages):
            held.usages.append(usage)
        return held

    def remove_usage(self, dialog: Dialog | DialogId, usage: DialogUsage) -> bool:
        """End one usage; True when it was the last and the dialog left the table."""
        held = self._dialogs.get(dialog.id if isinstance(dialog, Dialog) else dialog)
        if held is None:
            return False
        held.usages = [u for u in held.usages if u is not usage]
        if held.usages:
            return False
        del self._dialogs[held.id]
        return True

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def find(self, call_id: str, local_tag: str, remote_tag: str) -> Dialog | None:
        """An early or confirmed dialog by Call-ID and tags."""
        dialog = self._dialogs.get(DialogId(call_id, local_tag, remote_tag))
        return None if dialog is None or dialog.terminated else dialog

    def find_invite(self, header: Replaces | Join) -> InviteMatch | None:
        """The dialog and INVITE session a Replaces (RFC 3891 3) or Join
        (RFC 3911 4) names: to-tag is ours, from-tag the peer's.  None when
        nothing matches, when the match is an early dialog we did not
        initiate, or for early-only on a confirmed dialog."""
        dialog = self.find(header.call_id, header.to_tag, header.from_tag)
        session = dialog.invite_usage if dialog is not None else None
        if dialog is None or session is None:
            return None
        if dialog.is_early and dialog.role is not DialogRole.UAC:
            return None
        if isinstance(header, Replaces) and header.early_only and dialog.is_confirmed:
            return None
        return InviteMatch(dialog, session)

    def match_request(self, request: Request) -> Dialog | None:
        """The dialog an incoming request with a To tag belongs to (12.2.2)."""
        if not request.to.tag:
            return None
        return self._dialogs.get(DialogId.for_incoming_request(request))

    def match_response(self, response: Response) -> Dialog | None:
        return self._dialogs.get(DialogId.for_incoming_response(response))

    def dialog_set(self, call_id: str, local_tag: str) -> list[Dialog]:
        """Dialogs from one request (forked early dialogs share Call-ID and local tag)."""
        return [d for k, d in self._dialogs.items()
                if k.call_id == call_id and k.local_tag == local_tag]

    def unmatched(self, request: Request) -> Response | None:
        """12.2.2: a request with a To tag that matches no dialog gets 481."""
        if request.method == "ACK" or not request.to.tag:
            return None
        if self.match_request(request) is not None:
            return None
        return Response.for_request(request, 481)
