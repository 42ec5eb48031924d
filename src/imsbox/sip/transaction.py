"""SIP transactions (RFC 3261 section 17, updated by RFC 6026), sans-I/O.

The layer never touches a socket or a clock: the caller passes ``now`` in,
asks ``next_deadline()`` when to call ``on_timer(now)``, and drains
``events()`` for what to send (``Transmit``) and what to tell the TU.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
import heapq
import itertools
import logging
from dataclasses import dataclass

from .headers import HeaderError, Via
from .message import Headers, Request, Response, new_tag
from .parser import parse
from .transport.base import Destination, Flow
from .uri import uri_equal

__all__ = [
    "MAGIC_COOKIE", "TimerValues", "TransactionState", "Timer",
    "Transmit", "ResponseReceived", "TransactionTimeout", "TransportFailure",
    "TransactionTerminated", "AckReceived", "CancelReceived", "StrayResponse", "Event",
    "Transaction", "ClientTransaction", "ServerTransaction",
    "ClientInviteTransaction", "ClientNonInviteTransaction",
    "ServerInviteTransaction", "ServerNonInviteTransaction",
    "TransactionLayer", "make_ack", "make_cancel", "compact_request",
]

log = logging.getLogger(__name__)

MAGIC_COOKIE = "z9hG4bK"


@dataclass(slots=True, frozen=True)
class TimerValues:
    """T1, T2, T4 and the timers derived from them (RFC 3261 Table 4, RFC 6026)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0       # Timer D on unreliable transports: "at least 32 s"
    trying: float = 0.2   # 17.2.1: send 100 if the TU is silent this long

    @property
    def timeout(self) -> float:
        """Timers B, F, H, L, M: 64*T1."""
        return 64 * self.t1

    def timer_d(self, reliable: bool) -> float:
        return 0.0 if reliable else self.d

    def timer_i(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        return 0.0 if reliable else self.timeout

    def timer_k(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4


class TransactionState(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Timer(enum.Enum):
    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 - the RFC's name
    J = "J"
    K = "K"
    L = "L"
    M = "M"
    TRYING = "100 Trying"


# -- events ---------------------------------------------------------------

@dataclass(slots=True)
class Transmit:
    """Send ``message``: requests to ``dest`` (over ``flow`` if set), responses
    along ``flow`` (18.2.2).  ``txn`` is the sender, for transport errors."""

    message: Request | Response
    dest: Destination | None
    flow: Flow | None
    txn: Transaction | None = None


@dataclass(slots=True)
class ResponseReceived:
    txn: ClientTransaction
    response: Response


@dataclass(slots=True)
class TransactionTimeout:
    """Timer B, F (client: treat as 408, 8.1.3.1) or H (server: no ACK)."""

    txn: Transaction


@dataclass(slots=True)
class TransportFailure:
    """A send failed (client: treat as 503, 8.1.3.1)."""

    txn: Transaction


@dataclass(slots=True)
class TransactionTerminated:
    txn: Transaction


@dataclass(slots=True)
class AckReceived:
    """An ACK matched an INVITE server transaction in Accepted (RFC 6026 8.6)."""

    txn: ServerInviteTransaction
    ack: Request


@dataclass(slots=True)
class CancelReceived:
    """A CANCEL matched ``txn`` (9.2); the TU answers ``cancel_txn`` with 200
    and, for a pending INVITE, ``txn`` with 487."""

    txn: ServerTransaction
    cancel: Request
    cancel_txn: ServerNonInviteTransaction


@dataclass(slots=True)
class StrayResponse:
    """A response matching no client transaction (forward it or re-ACK a 2xx)."""

    response: Response
    flow: Flow


Event = (Transmit | ResponseReceived | TransactionTimeout | TransportFailure
         | TransactionTerminated | AckReceived | CancelReceived | StrayResponse)


# -- helpers --------------------------------------------------------------

def _top_via_value(request: Request) -> str:
    return request.headers.values("Via")[0]


def make_ack(request: Request, response: Response) -> Request:
    """ACK for a non-2xx final response to ``request`` (17.1.1.3)."""
    return _same_branch(request, "ACK", response.headers.get("To"))


def make_cancel(request: Request) -> Request:
    """CANCEL for a pending ``request`` (9.1): same top Via, so same branch."""
    return _same_branch(request, "CANCEL", request.headers.get("To"))


def _same_branch(request: Request, method: str, to: str | None) -> Request:
    """``method`` with the top Via, Route, From, Call-ID and CSeq number of ``request``."""
    new = Request(method, request.uri)
    new.add_header("Via", _top_via_value(request))
    for route in request.headers.get_all("Route"):
        new.add_header("Route", route)
    new.add_header("Max-Forwards", "70")
    new.add_header("From", request.headers.get("From") or "")
    new.add_header("To", to or "")
    new.add_header("Call-ID", request.call_id)
    new.add_header("CSeq", f"{request.cseq.seq} {method}")
    return new


_KEPT = ("via", "from", "to", "call-id", "cseq")


def compact_request(request: Request) -> Request:
    """What a transaction still needs once its final response is out.

    Matching (17.1.3, 17.2.3 with the RFC 2543 rules), CANCEL and the wait
    timers (D, I, J, K, M) read the start line, the top Via, From, To, Call-ID
    and CSeq only; the rest of the request and its body can go (a flood of
    large requests must not stay in memory for 32 s of Timer J).
    """
    headers = Headers()
    lines = headers._lines
    via_seen = False
    for line in request.headers._lines:
        key = line[0]
        if key in _KEPT and not (key == "via" and via_seen):
            lines.append(line if key != "via" else (key, line[1], _top_via_value(request)))
            via_seen = via_seen or key == "via"
    return Request(request.method, request.uri, headers)


def _is_rfc3261_branch(branch: str | None) -> bool:
    return bool(branch) and branch.startswith(MAGIC_COOKIE)  # type: ignore[union-attr]


def _server_key(request: Request) -> tuple[str, str, str] | None:
    """17.2.3: branch + sent-by + method (ACK matches INVITE); None for RFC 2543."""
    via = request.top_via
    if not _is_rfc3261_branch(via.branch):
        return None
    method = "INVITE" if request.method == "ACK" else request.method
    return (via.branch or "", via.sent_by.lower(), method)


def _client_key(message: Request | Response) -> tuple[str, str] | None:
    """17.1.3: top Via branch + CSeq method."""
    branch = message.top_via.branch
    return (branch, message.cseq.method) if branch else None


# -- transactions ---------------------------------------------------------

class Transaction(ABC):
    """Common machinery: state, timers, output through the owning layer."""

    def __init__(self, layer: TransactionLayer, request: Request, reliable: bool,
                 state: TransactionState) -> None:
        self.request = request
        self.reliable = reliable
        self.state = state
        self._layer = layer
        self._timers: dict[Timer, int] = {}   # armed timer -> heap entry seq
        self._interval = layer.timers.t1      # current A / E / G interval

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def branch(self) -> str | None:
        return self.request.top_via.branch

    @property
    def call_id(self) -> str:
        return self.request.call_id

    @property
    def terminated(self) -> bool:
        return self.state is TransactionState.TERMINATED

    @property
    def timers(self) -> TimerValues:
        return self._layer.timers

    def armed(self, timer: Timer) -> bool:
        return timer in self._timers

    def _arm(self, timer: Timer, at: float) -> None:
        self._layer._arm(self, timer, at)

    def _disarm(self, *timers: Timer) -> None:
        for timer in timers:
            self._timers.pop(timer, None)

    def _emit(self, event: Event) -> None:
        self._layer._events.append(event)

    def _goto(self, state: TransactionState) -> None:
        if log.isEnabledFor(logging.DEBUG):  # branch and call_id parse headers
            log.debug("%s %s: %s -> %s (Call-ID %s)", type(self).__name__, self.branch,
                      self.state.value, state.value, self.call_id)
        self.state = state

    def _wait_then_terminate(self, timer: Timer, duration: float, now: float) -> None:
        """Arm a wait timer; a zero duration (reliable transport) ends at once."""
        if duration <= 0:
            self._terminate()
        else:
            self._arm(timer, now + duration)

    def _terminate(self) -> None:
        if self.terminated:
            return
        self._goto(TransactionState.TERMINATED)
        self._timers.clear()
        self._layer._forget(self)
        self._emit(TransactionTerminated(self))

    def _start_timers(self, retransmit: Timer, timeout: Timer, now: float) -> None:
        """Arm the retransmit timer (unreliable transports only) and the 64*T1 timeout."""
        if not self.reliable:
            self._arm(retransmit, now + self._interval)
        self._arm(timeout, now + self.timers.timeout)

    def _time_out(self) -> None:
        self._emit(TransactionTimeout(self))
        self._terminate()

    @abstractmethod
    def _on_timer(self, timer: Timer, now: float) -> None:
        """What a timer firing does in this state machine."""

    def transport_error(self, now: float) -> None:
        """17.1.4 / 17.2.4: inform the TU and terminate."""
        if self.terminated:
            return
        self._emit(TransportFailure(self))
        self._terminate()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.branch} {self.state.value}>"


class ClientTransaction(Transaction):
    """Base of the two client transactions: sends to ``dest``."""

    def __init__(self, layer: TransactionLayer, request: Request, dest: Destination,
                 flow: Flow | None, state: TransactionState) -> None:
        super().__init__(layer, request, dest.reliable, state)
        self.dest = dest
        self.flow = flow
        # INVITE: the final response (Accepted / Completed); non-INVITE: None,
        # the response goes up and nothing here needs it any more.
        self.final_response: Response | None = None
        self._key: tuple[str, str] | None = None  # 17.1.3, kept: the request gets compacted

    def _send(self, message: Request) -> None:
        self._emit(Transmit(message, self.dest, self.flow, self))

    @abstractmethod
    def receive_response(self, response: Response, flow: Flow | None, now: float) -> None:
        """A response matched to this client transaction (17.1.3)."""

    def _pass_up(self, response: Response) -> None:
        self._emit(ResponseReceived(self, response))


class ClientInviteTransaction(ClientTransaction):
    """17.1.1 with the Accepted state of RFC 6026 7.2."""

    def __init__(self, layer: TransactionLayer, request: Request, dest: Destination,
                 flow: Flow | None, now: float) -> None:
        super().__init__(layer, request, dest, flow, TransactionState.CALLING)
        self.ack: Request | None = None
        self.cancel_sent = False
        self._send(request)
        self._start_timers(Timer.A, Timer.B, now)

    def receive_response(self, response: Response, flow: Flow | None, now: float) -> None:
        if flow is not None and self.reliable:
            self.flow = flow   # ACK goes on the connection the response came on
        s = self.state
        if s in (TransactionState.CALLING, TransactionState.PROCEEDING):
            self._disarm(Timer.A)
            if response.status < 200:
                if not self.cancel_sent:
                    self._disarm(Timer.B)  # B only guards Calling (17.1.1.2)
                self._goto(TransactionState.PROCEEDING)
                self._pass_up(response)
                return
            self._disarm(Timer.B)
            if response.status < 300:
                self._accept(response, now)
            else:
                self._complete(response, now)
        elif s is TransactionState.COMPLETED and response.status >= 300:
            self._send(self.ack)  # type: ignore[arg-type]  # re-ACK, absorb
        elif s is TransactionState.ACCEPTED and 200 <= response.status < 300:
            self._pass_up(response)  # RFC 6026 7.2: 2xx retransmissions and forks

    def _cancelling(self, now: float) -> None:
        """9.1: no final response 64*T1 after the CANCEL: give the INVITE up."""
        self.cancel_sent = True
        if self.state is TransactionState.PROCEEDING:
            self._arm(Timer.B, now + self.timers.timeout)

    def _accept(self, response: Response, now: float) -> None:
        """RFC 6026 7.2: 2xx -> Accepted, Timer M."""
        self.final_response = response
        self.request = compact_request(self.request)
        self._goto(TransactionState.ACCEPTED)
        self._pass_up(response)
        self._arm(Timer.M, now + self.timers.timeout)

    def _complete(self, response: Response, now: float) -> None:
        """17.1.1.2: 300-699 -> ACK, Completed, Timer D."""
        self.final_response = response
        self.ack = make_ack(self.request, response)
        self.request = compact_request(self.request)
        self._goto(TransactionState.COMPLETED)
        self._send(self.ack)
        self._pass_up(response)
        self._wait_then_terminate(Timer.D, self.timers.timer_d(self.reliable), now)

    def _on_timer(self, timer: Timer, now: float) -> None:
        if timer is Timer.A and self.state is TransactionState.CALLING:
            self._send(self.request)
            self._interval *= 2
            self._arm(Timer.A, now + self._interval)
        elif timer is Timer.B and (self.state is TransactionState.CALLING
                                   or self.cancel_sent):
            self._time_out()
        elif timer in (Timer.D, Timer.M):
            self._terminate()


class ClientNonInviteTransaction(ClientTransaction):
    """17.1.2."""

    def __init__(self, layer: TransactionLayer, request: Request, dest: Destination,
                 flow: Flow | None, now: float) -> None:
        super().__init__(layer, request, dest, flow, TransactionState.TRYING)
        self._send(request)
        self._start_timers(Timer.E, Timer.F, now)

    def receive_response(self, response: Response, flow: Flow | None, now: float) -> None:
        if self.state not in (TransactionState.TRYING, TransactionState.PROCEEDING):
            return  # Completed absorbs retransmitted finals
        if response.status < 200:
            self._goto(TransactionState.PROCEEDING)
            self._pass_up(response)
            return
        self._disarm(Timer.E, Timer.F)
        # Not kept (final_response stays None): Completed only absorbs
        # retransmissions, and a parsed response held for Timer K is ~3 KB.
        self.request = compact_request(self.request)
        self._goto(TransactionState.COMPLETED)
        self._pass_up(response)
        self._wait_then_terminate(Timer.K, self.timers.timer_k(self.reliable), now)

    def _on_timer(self, timer: Timer, now: float) -> None:
        if timer is Timer.E:
            self._send(self.request)
            if self.state is TransactionState.TRYING:
                self._interval = min(2 * self._interval, self.timers.t2)
            else:
                self._interval = self.timers.t2
            self._arm(Timer.E, now + self._interval)
        elif timer is Timer.F:
            self._time_out()
        elif timer is Timer.K:
            self._terminate()


class ServerTransaction(Transaction):
    """Base of the two server transactions: responds along ``flow`` (18.2.2)."""

    def __init__(self, layer: TransactionLayer, request: Request, flow: Flow,
                 state: TransactionState) -> None:
        super().__init__(layer, request, flow.reliable, state)
        self.flow = flow
        self._key: tuple[str, str, str] | None = None  # 17.2.3, kept as well
        self._provisional: Response | None = None
        self._final: bytes | None = None  # the final response as sent, for retransmissions

    @property
    def last_response(self) -> Response | None:
        """The last response sent (after the final one: parsed again from its bytes)."""
        if self._final is not None:
            response = parse(self._final)
            assert isinstance(response, Response)
            return response
        return self._provisional

    def sent(self, response: Response) -> bool:
        """Whether ``response`` is the last one this transaction sent."""
        if self._final is not None:
            return bytes(response) == self._final
        return response is self._provisional

    @property
    def to_tag(self) -> str | None:
        """To tag of the last response sent (RFC 2543 ACK matching)."""
        last = self.last_response
        return last.to.tag if last is not None else None

    def _send(self, response: Response) -> None:
        self._emit(Transmit(response, None, self.flow, self))
        if response.status >= 200:
            # Keep only bytes and a compact request until Timer J / H / I / L.
            self._final, self._provisional = bytes(response), None
            self.request = compact_request(self.request)
        else:
            self._provisional = response

    def _resend(self) -> None:
        last = self.last_response
        if last is not None:
            self._emit(Transmit(last, None, self.flow, self))

    @abstractmethod
    def receive_request(self, request: Request, flow: Flow, now: float) -> None:
        """A retransmission (or ACK) matched to this server transaction (17.2.3)."""

    @abstractmethod
    def respond(self, response: Response, now: float) -> None:
        """The TU's response, sent and remembered for retransmissions."""

    def _ignore(self, response: Response) -> None:
        log.warning("%r: ignoring %d from TU (Call-ID %s)", self, response.status, self.call_id)


class ServerInviteTransaction(ServerTransaction):
    """17.2.1 with the Accepted state of RFC 6026 7.1."""

    def __init__(self, layer: TransactionLayer, request: Request, flow: Flow,
                 now: float) -> None:
        super().__init__(layer, request, flow, TransactionState.PROCEEDING)
        self._arm(Timer.TRYING, now + self.timers.trying)

    def receive_request(self, request: Request, flow: Flow, now: float) -> None:
        if request.method == "ACK":
            self._receive_ack(request, now)
        elif self.state in (TransactionState.PROCEEDING, TransactionState.COMPLETED):
            self._resend()  # retransmitted INVITE: repeat the last response
        # Accepted / Confirmed absorb INVITE retransmissions

    def _receive_ack(self, ack: Request, now: float) -> None:
        if self.state is TransactionState.COMPLETED:
            self._disarm(Timer.G, Timer.H)
            self._goto(TransactionState.CONFIRMED)
            self._wait_then_terminate(Timer.I, self.timers.timer_i(self.reliable), now)
        elif self.state is TransactionState.ACCEPTED:
            self._emit(AckReceived(self, ack))

    def respond(self, response: Response, now: float) -> None:
        if self.state is TransactionState.PROCEEDING:
            self._disarm(Timer.TRYING)
            self._send(response)
            if 200 <= response.status < 300:
                self._goto(TransactionState.ACCEPTED)
                self._arm(Timer.L, now + self.timers.timeout)
            elif response.status >= 300:
                self._goto(TransactionState.COMPLETED)
                self._start_timers(Timer.G, Timer.H, now)
        elif self.state is TransactionState.ACCEPTED and 200 <= response.status < 300:
            self._send(response)  # RFC 6026 7.1: the TU retransmits 2xx
        else:
            self._ignore(response)

    def _on_timer(self, timer: Timer, now: float) -> None:
        if timer is Timer.TRYING and self.last_response is None:
            self._send(Response.for_request(self.request, 100))
        elif timer is Timer.G:
            self._resend()
            self._interval = min(2 * self._interval, self.timers.t2)
            self._arm(Timer.G, now + self._interval)
        elif timer is Timer.H:
            self._time_out()
        elif timer in (Timer.I, Timer.L):
            self._terminate()

    def transport_error(self, now: float) -> None:
        if self.state is TransactionState.ACCEPTED:
            self._emit(TransportFailure(self))  # RFC 6026: stay, L still runs
        else:
            super().transport_error(now)


class ServerNonInviteTransaction(ServerTransaction):
    """17.2.2."""

    def __init__(self, layer: TransactionLayer, request: Request, flow: Flow,
                 now: float) -> None:
        super().__init__(layer, request, flow, TransactionState.TRYING)

    def receive_request(self, request: Request, flow: Flow, now: float) -> None:
        if self.state is not TransactionState.TRYING:
            self._resend()  # Trying discards; later states repeat the response

    def respond(self, response: Response, now: float) -> None:
        if self.state not in (TransactionState.TRYING, TransactionState.PROCEEDING):
            self._ignore(response)
            return
        self._send(response)
        if response.status < 200:
            self._goto(TransactionState.PROCEEDING)
        else:
            self._goto(TransactionState.COMPLETED)
            self._wait_then_terminate(Timer.J, self.timers.timer_j(self.reliable), now)

    def _on_timer(self, timer: Timer, now: float) -> None:
        if timer is Timer.J:
            self._terminate()


# -- the layer ------------------------------------------------------------

class TransactionLayer:
    """All transactions of one element: matching (17.1.3, 17.2.3), CANCEL (9.2),
    timers on one heap, output as events."""

    def __init__(self, timers: TimerValues | None = None) -> None:
        self.timers = timers or TimerValues()
        self._client: dict[tuple[str, str], ClientTransaction] = {}
        self._server: dict[tuple[str, str, str], ServerTransaction] = {}
        self._cancellable: dict[tuple[str, str], ServerTransaction] = {}
        self._legacy: list[ServerTransaction] = []   # RFC 2543 peers, no magic cookie
        self._heap: list[tuple[float, int, Transaction, Timer]] = []
        self._seq = itertools.count()
        self._events: list[Event] = []

    def __len__(self) -> int:
        return len(self._client) + len(self._server) + len(self._legacy)

    # -- creation -------------------------------------------------------
    def client_transaction(self, request: Request, dest: Destination, now: float,
                           flow: Flow | None = None) -> ClientTransaction:
        """Start a client transaction; its first Transmit is queued at once."""
        if request.method == "ACK":
            raise ValueError("ACK is sent without a client transaction (17.1.1.3)")
        key = _client_key(request)
        if key is None or not _is_rfc3261_branch(key[0]):
            raise ValueError("request needs a top Via with an RFC 3261 branch")
        if key in self._client:
            raise ValueError(f"a client transaction already uses branch {key[0]}")
        cls = ClientInviteTransaction if request.method == "INVITE" else ClientNonInviteTransaction
        txn = cls(self, request, dest, flow, now)
        txn._key = key
        self._client[key] = txn
        if request.method == "CANCEL":
            invite = self._client.get((key[0], "INVITE"))
            if isinstance(invite, ClientInviteTransaction):
                invite._cancelling(now)
        return txn

    def server_transaction(self, request: Request, flow: Flow, now: float) -> ServerTransaction:
        """Create the server transaction for a new request (17.2); for CANCEL,
        find what it cancels (9.2) or answer 481."""
        if request.method == "ACK":
            raise ValueError("an ACK never creates a server transaction")
        cls = ServerInviteTransaction if request.method == "INVITE" else ServerNonInviteTransaction
        txn = cls(self, request, flow, now)
        key = txn._key = _server_key(request)
        if key is None:
            self._legacy.append(txn)
        else:
            self._server[key] = txn
            if request.method != "CANCEL":
                self._cancellable[key[:2]] = txn
        if request.method == "CANCEL":
            self._dispatch_cancel(txn, now)  # type: ignore[arg-type]
        return txn

    def _dispatch_cancel(self, cancel_txn: ServerNonInviteTransaction, now: float) -> None:
        cancel = cancel_txn.request
        target = self.find_cancelled(cancel)
        if target is None:
            response = Response.for_request(cancel, 481, to_tag=new_tag())
            cancel_txn.respond(response, now)
        else:
            self._events.append(CancelReceived(target, cancel, cancel_txn))

    # -- matching -------------------------------------------------------
    def find_client_transaction(self, response: Response) -> ClientTransaction | None:
        """17.1.3."""
        key = _client_key(response)
        return self._client.get(key) if key else None

    def find_server_transaction(self, request: Request) -> ServerTransaction | None:
        """17.2.3, with the RFC 2543 fallback for branches without the cookie."""
        key = _server_key(request)
        if key is not None:
            return self._server.get(key)
        method = "INVITE" if request.method == "ACK" else request.method
        for txn in self._legacy:
            if txn.method == method and _legacy_match(txn, request):
                return txn
        return None

    def find_server_transaction_for(self, response: Response) -> ServerTransaction | None:
        """The server transaction that sent ``response`` (to report a send error)."""
        via = response.top_via
        if not _is_rfc3261_branch(via.branch):
            return next((t for t in self._legacy if t.sent(response)), None)
        return self._server.get((via.branch or "", via.sent_by.lower(), response.cseq.method))

    def find_cancelled(self, cancel: Request) -> ServerTransaction | None:
        """9.2: match as if the CANCEL had the method of the request it cancels."""
        key = _server_key(cancel)
        if key is not None:
            return self._cancellable.get(key[:2])
        for txn in self._legacy:
            if txn.method not in ("CANCEL", "ACK") and _legacy_match(txn, cancel,
                                                                     any_method=True):
                return txn
        return None

    # -- input ----------------------------------------------------------
    def receive(self, message: Request | Response, flow: Flow, now: float) -> bool:
        """Feed a received message; True if a transaction took it.  A response
        no transaction takes is reported as StrayResponse."""
        try:
            if isinstance(message, Response):
                return self._receive_response(message, flow, now)
            txn = self.find_server_transaction(message)
        except HeaderError as exc:
            log.info("unmatchable message dropped: %s", exc)
            return False
        if txn is None:
            return False
        txn.receive_request(message, flow, now)
        return True

    def _receive_response(self, response: Response, flow: Flow, now: float) -> bool:
        txn = self.find_client_transaction(response)
        if txn is None:
            self._events.append(StrayResponse(response, flow))
            return False
        txn.receive_response(response, flow, now)
        return True

    def transport_error(self, txn: Transaction, now: float) -> None:
        """The transport could not send something ``txn`` emitted."""
        txn.transport_error(now)

    # -- timers ---------------------------------------------------------
    def _arm(self, txn: Transaction, timer: Timer, at: float) -> None:
        seq = next(self._seq)
        txn._timers[timer] = seq
        heapq.heappush(self._heap, (at, seq, txn, timer))

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            _, seq, txn, timer = heap[0]
            if txn._timers.get(timer) == seq:
                return
            heapq.heappop(heap)

    def next_deadline(self) -> float | None:
        """When ``on_timer`` must next be called (None: no timer armed)."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def on_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return
            _, _, txn, timer = heapq.heappop(self._heap)
            del txn._timers[timer]
            txn._on_timer(timer, now)

    # -- output ---------------------------------------------------------
    def events(self) -> list[Event]:
        """Drain the events produced since the last call, in order."""
        out, self._events = self._events, []
        return out

    def _forget(self, txn: Transaction) -> None:
        if isinstance(txn, ClientTransaction):
            key = txn._key
            if key and self._client.get(key) is txn:
                del self._client[key]
            return
        assert isinstance(txn, ServerTransaction)
        skey = txn._key
        if skey is None:
            self._legacy = [t for t in self._legacy if t is not txn]
            return
        if self._server.get(skey) is txn:
            del self._server[skey]
        if self._cancellable.get(skey[:2]) is txn:
            del self._cancellable[skey[:2]]


def _via_equal(a: Via, b: Via) -> bool:
    return str(a).lower() == str(b).lower()


def _legacy_match(txn: ServerTransaction, request: Request, any_method: bool = False) -> bool:
    """17.2.3 RFC 2543 rules: Request-URI, tags, Call-ID, CSeq, top Via."""
    original = txn.request
    if request.call_id != original.call_id or request.cseq.seq != original.cseq.seq:
        return False
    if not any_method and request.method != "ACK" and request.method != original.method:
        return False
    if request.from_.tag != original.from_.tag:
        return False
    if request.method == "ACK":
        # the ACK's To tag is the one our response carried
        if request.to.tag != txn.to_tag:
            return False
    elif request.to.tag != original.to.tag:
        return False
    return uri_equal(request.uri, original.uri) and _via_equal(request.top_via,
                                                              original.top_via)
