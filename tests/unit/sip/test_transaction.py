"""Transaction layer (RFC 3261 17, RFC 6026) on a virtual clock."""

from __future__ import annotations

import pytest

from imsbox.sip import Request, Response, new_branch, parse
from imsbox.sip.transaction import (
    AckReceived, CancelReceived, ClientInviteTransaction, ClientNonInviteTransaction,
    ResponseReceived, ServerInviteTransaction, ServerNonInviteTransaction, StrayResponse,
    Timer, TimerValues, TransactionLayer, TransactionState, TransactionTerminated,
    TransactionTimeout, Transmit, TransportFailure, make_cancel,
)
from imsbox.sip.transport.base import Destination, Flow
import itertools

S = TransactionState
UDP_DEST = Destination("udp", "192.0.2.2", 5060)
TCP_DEST = Destination("tcp", "192.0.2.2", 5060)
UDP_FLOW = Flow("udp", ("192.0.2.2", 5060), ("192.0.2.1", 5062))
TCP_FLOW = Flow("tcp", ("192.0.2.2", 5060), ("192.0.2.1", 40000), conn_id=7)


def make_request(method: str = "INVITE", branch: str | None = None, transport: str = "UDP",
                 sent_by: str = "192.0.2.1:5062", cseq: int = 1, to_tag: str | None = None,
                 call_id: str = "call-1@192.0.2.1") -> Request:
    branch = branch or new_branch()
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    req = Request(method, "sip:bob@example.com", [
        ("Via", f"SIP/2.0/{transport} {sent_by};branch={branch}"),
        ("Route", "<sip:proxy.example.com;lr>"),
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@example.com>;tag=a1"),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
    ])
    return parse(bytes(req))  # as received off the wire


def reply(req: Request, status: int, tag: str | None = "b1") -> Response:
    return parse(bytes(Response.for_request(req, status, to_tag=tag if status > 100 else None)))


class Clock:
    """Drives a layer on virtual time: run timers up to ``until``, log sends."""

    def __init__(self, layer: TransactionLayer) -> None:
        self.layer = layer
        self.now = 0.0
        self.log: list[tuple[float, object]] = []

    def drain(self) -> list[object]:
        events = self.layer.events()
        self.log.extend((self.now, e) for e in events)
        return events

    def run(self, until: float) -> list[object]:
        out = self.drain()
        while (d := self.layer.next_deadline()) is not None and d <= until:
            self.now = d
            self.layer.on_timer(d)
            out += self.drain()
        self.now = until
        return out

    def sends(self, kind: type | None = None) -> list[float]:
        return [t for t, e in self.log if isinstance(e, Transmit)
                and (kind is None or isinstance(e.message, kind))]


def of(events: list[object], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


@pytest.fixture
def layer() -> TransactionLayer:
    return TransactionLayer(TimerValues(t1=0.5, t2=4.0, t4=5.0))


def test_timer_values_derived() -> None:
    tv = TimerValues(t1=0.1, t2=1.0, t4=2.0)
    assert tv.timeout == pytest.approx(6.4)
    assert tv.timer_d(False) == 32.0 and tv.timer_d(True) == 0
    assert tv.timer_i(False) == 2.0 and tv.timer_i(True) == 0
    assert tv.timer_k(False) == 2.0 and tv.timer_k(True) == 0
    assert tv.timer_j(False) == pytest.approx(6.4) and tv.timer_j(True) == 0


# -- client INVITE ----------------------------------------------------------

def test_timer_a_doubles_and_b_times_out_at_64_t1(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    txn = layer.client_transaction(make_request(), UDP_DEST, 0.0)
    assert isinstance(txn, ClientInviteTransaction) and txn.state is S.CALLING
    events = clock.run(40.0)
    assert clock.sends(Request) == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    timeout = of(events, TransactionTimeout)
    assert [e.txn for e in timeout] == [txn]
    assert [t for t, e in clock.log if isinstance(e, TransactionTimeout)] == [32.0]
    assert txn.state is S.TERMINATED and len(layer) == 0
    assert layer.next_deadline() is None


def test_reliable_transport_disables_timer_a(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    txn = layer.client_transaction(make_request(), TCP_DEST, 0.0)
    assert not txn.armed(Timer.A) and txn.armed(Timer.B)
    clock.run(40.0)
    assert clock.sends() == [0.0]
    assert [t for t, e in clock.log if isinstance(e, TransactionTimeout)] == [32.0]


def test_provisional_stops_retransmissions_and_timer_b(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    req = make_request()
    txn = layer.client_transaction(req, UDP_DEST, 0.0)
    clock.run(0.7)
    assert layer.receive(reply(req, 180), UDP_FLOW, 0.7)
    events = clock.run(100.0)
    assert txn.state is S.PROCEEDING
    assert [e.response.status for e in of(events, ResponseReceived)] == [180]
    assert clock.sends() == [0.0, 0.5] and not of(events, TransactionTimeout)


def test_non_2xx_acked_and_timer_d_absorbs_retransmissions(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    req = make_request()
    txn = layer.client_transaction(req, UDP_DEST, 0.0)
    clock.drain()
    busy = reply(req, 486, tag="busy")
    layer.receive(busy, UDP_FLOW, 1.0)
    clock.now = 1.0
    events = clock.drain()
    assert txn.state is S.COMPLETED
    acks = [e for e in of(events, Transmit) if e.message.method == "ACK"]
    assert len(acks) == 1 and acks[0].dest == UDP_DEST
    ack = acks[0].message
    # 17.1.1.3: same Request-URI, top Via, From, Call-ID, Route; To of the response
    assert str(ack.uri) == str(req.uri)
    assert ack.top_via.branch == req.top_via.branch and len(ack.via) == 1
    assert ack.to.tag == "busy" and ack.from_.tag == "a1"
    assert str(ack.cseq) == "1 ACK" and ack.call_id == req.call_id
    assert [str(r.uri) for r in ack.route] == ["sip:proxy.example.com;lr"]
    assert [e.response.status for e in of(events, ResponseReceived)] == [486]
    # a retransmitted 486 is re-ACKed, not passed up
    assert layer.receive(reply(req, 486, tag="busy"), UDP_FLOW, 5.0)
    events = clock.drain()
    assert [e.message.method for e in of(events, Transmit)] == ["ACK"]
    assert not of(events, ResponseReceived)
    assert clock.run(32.9) == [] and txn.state is S.COMPLETED
    events = clock.run(33.0)
    assert of(events, TransactionTerminated) and txn.state is S.TERMINATED
    # afterwards the same response is stray
    assert not layer.receive(reply(req, 486, tag="busy"), UDP_FLOW, 34.0)
    assert of(layer.events(), StrayResponse)


def test_timer_d_zero_on_reliable_transport(layer: TransactionLayer) -> None:
    req = make_request(transport="TCP")
    txn = layer.client_transaction(req, TCP_DEST, 0.0)
    layer.events()
    layer.receive(reply(req, 404), TCP_FLOW, 0.1)
    events = layer.events()
    assert txn.state is S.TERMINATED
    ack = of(events, Transmit)[0]
    assert ack.message.method == "ACK" and ack.flow == TCP_FLOW  # same connection
    assert isinstance(events[-1], TransactionTerminated)


def test_2xx_accepted_passes_retransmissions_up_until_timer_m(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    req = make_request()
    txn = layer.client_transaction(req, UDP_DEST, 0.0)
    clock.drain()
    layer.receive(reply(req, 200), UDP_FLOW, 0.2)
    clock.now = 0.2
    assert txn.state is S.ACCEPTED
    assert txn.armed(Timer.M) and not txn.armed(Timer.A)
    layer.receive(reply(req, 200), UDP_FLOW, 1.0)
    layer.receive(reply(req, 200, tag="fork2"), UDP_FLOW, 2.0)
    events = clock.drain()
    assert [e.response.to.tag for e in of(events, ResponseReceived)] == ["b1", "b1", "fork2"]
    assert not of(events, Transmit)  # the TU ACKs a 2xx, not the transaction
    assert clock.run(32.1) == [] and txn.state is S.ACCEPTED
    events = clock.run(32.2)
    assert of(events, TransactionTerminated) and txn.state is S.TERMINATED


# -- client non-INVITE --------------------------------------------------------

def test_timer_e_capped_at_t2_and_f_times_out(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    txn = layer.client_transaction(make_request("OPTIONS"), UDP_DEST, 0.0)
    assert isinstance(txn, ClientNonInviteTransaction) and txn.state is S.TRYING
    events = clock.run(40.0)
    times = clock.sends()
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(times)]
    assert gaps[:5] == [0.5, 1.0, 2.0, 4.0, 4.0] and max(gaps) == 4.0
    assert times[-1] < 32.0
    assert [t for t, e in clock.log if isinstance(e, TransactionTimeout)] == [32.0]
    assert of(events, TransactionTerminated)


def test_timer_e_is_t2_in_proceeding(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    req = make_request("MESSAGE")
    txn = layer.client_transaction(req, UDP_DEST, 0.0)
    clock.run(0.6)  # sent at 0, 0.5
    layer.receive(reply(req, 100), UDP_FLOW, 0.6)
    clock.run(13.0)
    assert txn.state is S.PROCEEDING
    assert clock.sends() == [0.0, 0.5, 1.5, 5.5, 9.5]


def test_final_completes_and_timer_k_absorbs(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    req = make_request("MESSAGE")
    txn = layer.client_transaction(req, UDP_DEST, 0.0)
    clock.drain()
    layer.receive(reply(req, 202), UDP_FLOW, 1.0)
    clock.now = 1.0
    assert layer.receive(reply(req, 202), UDP_FLOW, 2.0)  # absorbed
    events = clock.drain()
    assert [e.response.status for e in of(events, ResponseReceived)] == [202]
    assert txn.state is S.COMPLETED
    assert clock.run(5.9) == []
    assert of(clock.run(6.0), TransactionTerminated)  # K = T4 after 1.0
    assert clock.sends() == [0.0]


def test_timer_k_zero_on_reliable_transport(layer: TransactionLayer) -> None:
    req = make_request("MESSAGE", transport="TCP")
    txn = layer.client_transaction(req, TCP_DEST, 0.0)
    layer.receive(reply(req, 200), TCP_FLOW, 0.1)
    assert txn.state is S.TERMINATED and layer.next_deadline() is None


# -- server INVITE ------------------------------------------------------------

def test_automatic_100_trying_after_200_ms(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    req = make_request()
    txn = layer.server_transaction(req, UDP_FLOW, 0.0)
    assert isinstance(txn, ServerInviteTransaction) and txn.state is S.PROCEEDING
    assert clock.run(0.19) == []
    events = clock.run(0.2)
    sent = of(events, Transmit)
    assert len(sent) == 1 and sent[0].message.status == 100 and sent[0].flow == UDP_FLOW
    assert sent[0].message.to.tag is None
    # a retransmitted INVITE gets the 100 again
    assert layer.receive(req, UDP_FLOW, 0.5)
    assert [e.message.status for e in of(layer.events(), Transmit)] == [100]


def test_no_100_trying_when_tu_answers_in_time(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    req = make_request()
    txn = layer.server_transaction(req, UDP_FLOW, 0.0)
    txn.respond(reply(req, 180), 0.1)
    events = clock.run(1.0)
    assert [e.message.status for e in of(events, Transmit)] == [180]


def test_retransmitted_invite_before_any_response_is_absorbed(layer: TransactionLayer) -> None:
    req = make_request()
    layer.server_transaction(req, UDP_FLOW, 0.0)
    assert layer.receive(req, UDP_FLOW, 0.05)
    assert layer.events() == []


def test_timers_g_and_h(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    req = make_request()
    txn = layer.server_transaction(req, UDP_FLOW, 0.0)
    txn.respond(reply(req, 180), 0.0)
    txn.respond(reply(req, 486), 0.0)
    assert txn.state is S.COMPLETED
    events = clock.run(40.0)
    finals = [t for t, e in clock.log
              if isinstance(e, Transmit) and e.message.status == 486]
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(finals)]
    assert finals[:4] == [0.0, 0.5, 1.5, 3.5] and gaps[3:] == [4.0] * len(gaps[3:])
    assert [t for t, e in clock.log if isinstance(e, TransactionTimeout)] == [32.0]
    assert of(events, TransactionTerminated) and txn.state is S.TERMINATED


def test_ack_confirms_and_timer_i_absorbs(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    req = make_request()
    txn = layer.server_transaction(req, UDP_FLOW, 0.0)
    txn.respond(reply(req, 603), 0.0)
    clock.run(0.6)  # 603 sent and retransmitted once by G
    ack = make_request("ACK", branch=req.top_via.branch, to_tag="b1")
    assert layer.receive(ack, UDP_FLOW, 0.6)
    assert txn.state is S.CONFIRMED and not txn.armed(Timer.G) and not txn.armed(Timer.H)
    # Confirmed absorbs both ACK and INVITE retransmissions silently
    assert layer.receive(ack, UDP_FLOW, 1.0) and layer.receive(req, UDP_FLOW, 1.0)
    assert clock.run(5.5) == []
    assert of(clock.run(5.6), TransactionTerminated)  # I = T4 after 0.6
    assert len(clock.sends()) == 2


def test_reliable_server_invite_no_g_and_i_zero(layer: TransactionLayer) -> None:
    req = make_request(transport="TCP")
    txn = layer.server_transaction(req, TCP_FLOW, 0.0)
    txn.respond(reply(req, 486), 0.0)
    assert txn.armed(Timer.H) and not txn.armed(Timer.G)
    layer.receive(make_request("ACK", branch=req.top_via.branch, transport="TCP",
                               to_tag="b1"), TCP_FLOW, 0.1)
    assert txn.state is S.TERMINATED


def test_accepted_state_timer_l(layer: TransactionLayer) -> None:
    """RFC 6026 7.1: INVITE retransmissions absorbed, ACKs and TU 2xx pass."""
    clock = Clock(layer)
    req = make_request()
    txn = layer.server_transaction(req, UDP_FLOW, 0.0)
    txn.respond(reply(req, 200), 0.1)
    assert txn.state is S.ACCEPTED and txn.armed(Timer.L)
    clock.run(0.1)
    layer.receive(req, UDP_FLOW, 0.5)  # absorbed: the TU owns 2xx retransmission
    assert clock.drain() == []
    assert clock.run(10.0) == []      # no G-style retransmission of 2xx
    txn.respond(reply(req, 200), 10.0)
    assert [e.message.status for e in of(layer.events(), Transmit)] == [200]
    ack = make_request("ACK", branch=req.top_via.branch, to_tag="b1")
    assert layer.receive(ack, UDP_FLOW, 11.0)
    got = of(layer.events(), AckReceived)
    assert len(got) == 1 and got[0].txn is txn and got[0].ack is ack
    txn.respond(reply(req, 500), 12.0)  # non-2xx after 2xx: ignored
    assert layer.events() == []
    assert clock.run(31.9) == []
    assert of(clock.run(32.1), TransactionTerminated)


# -- server non-INVITE --------------------------------------------------------

def test_server_non_invite_states_and_timer_j(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    req = make_request("MESSAGE")
    txn = layer.server_transaction(req, UDP_FLOW, 0.0)
    assert isinstance(txn, ServerNonInviteTransaction) and txn.state is S.TRYING
    assert layer.receive(req, UDP_FLOW, 0.1) and layer.events() == []  # Trying discards
    txn.respond(reply(req, 100), 0.2)
    layer.receive(req, UDP_FLOW, 0.3)
    assert [e.message.status for e in of(layer.events(), Transmit)] == [100, 100]
    txn.respond(reply(req, 200), 1.0)
    clock.now = 1.0
    layer.receive(req, UDP_FLOW, 2.0)
    txn.respond(reply(req, 500), 2.0)  # a second final is ignored
    assert [e.message.status for e in of(clock.drain(), Transmit)] == [200, 200]
    assert clock.run(32.9) == [] and txn.state is S.COMPLETED
    assert of(clock.run(33.0), TransactionTerminated)  # J = 64*T1 after 1.0
    assert not layer.receive(req, UDP_FLOW, 34.0)  # now a new request


def test_timer_j_zero_on_reliable_transport(layer: TransactionLayer) -> None:
    req = make_request("MESSAGE", transport="TCP")
    txn = layer.server_transaction(req, TCP_FLOW, 0.0)
    txn.respond(reply(req, 200), 0.0)
    assert txn.state is S.TERMINATED and layer.next_deadline() is None


# -- matching -----------------------------------------------------------------

def test_client_matching_branch_and_cseq_method(layer: TransactionLayer) -> None:
    invite = make_request()
    inv_txn = layer.client_transaction(invite, UDP_DEST, 0.0)
    layer.receive(reply(invite, 180), UDP_FLOW, 0.1)
    cancel = make_cancel(invite)
    can_txn = layer.client_transaction(cancel, UDP_DEST, 0.2)
    assert cancel.top_via.branch == invite.top_via.branch
    layer.events()
    layer.receive(reply(cancel, 200), UDP_FLOW, 0.3)
    layer.receive(reply(invite, 487), UDP_FLOW, 0.4)
    got = [(e.txn, e.response.status) for e in of(layer.events(), ResponseReceived)]
    assert got == [(can_txn, 200), (inv_txn, 487)]
    other = make_request(branch=new_branch())
    assert not layer.receive(reply(other, 200), UDP_FLOW, 0.5)
    stray = of(layer.events(), StrayResponse)
    assert len(stray) == 1 and stray[0].flow == UDP_FLOW


def test_server_matching_branch_sent_by_and_method(layer: TransactionLayer) -> None:
    req = make_request("MESSAGE")
    txn = layer.server_transaction(req, UDP_FLOW, 0.0)
    branch = req.top_via.branch
    assert layer.find_server_transaction(req) is txn
    assert layer.find_server_transaction(make_request("MESSAGE", branch=branch,
                                                      sent_by="192.0.2.9:5062")) is None
    assert layer.find_server_transaction(make_request("INFO", branch=branch)) is None
    # an ACK whose branch is new (ACK for a 2xx) matches nothing: it goes to the TU
    assert not layer.receive(make_request("ACK", to_tag="b1"), UDP_FLOW, 0.1)
    with pytest.raises(ValueError):
        layer.server_transaction(make_request("ACK"), UDP_FLOW, 0.0)


def test_rfc2543_fallback_matching(layer: TransactionLayer) -> None:
    req = make_request(branch="legacy-1")
    txn = layer.server_transaction(req, UDP_FLOW, 0.0)
    again = make_request(branch="legacy-1")
    assert layer.find_server_transaction(again) is txn
    assert layer.find_server_transaction(make_request(branch="legacy-1", cseq=2)) is None
    assert layer.find_server_transaction(
        make_request(branch="legacy-1", call_id="other")) is None
    assert layer.find_server_transaction(
        make_request(branch="legacy-1", sent_by="192.0.2.7")) is None  # top Via differs
    txn.respond(reply(req, 486, tag="t9"), 0.1)
    # ACK: To tag must be the one our response carried
    assert layer.find_server_transaction(
        make_request("ACK", branch="legacy-1", to_tag="wrong")) is None
    ack = make_request("ACK", branch="legacy-1", to_tag="t9")
    assert layer.receive(ack, UDP_FLOW, 0.2)
    assert txn.state is S.CONFIRMED


def test_rfc2543_cancel_matching(layer: TransactionLayer) -> None:
    req = make_request(branch="legacy-2")
    txn = layer.server_transaction(req, UDP_FLOW, 0.0)
    cancel_txn = layer.server_transaction(make_cancel(req), UDP_FLOW, 0.1)
    got = of(layer.events(), CancelReceived)
    assert len(got) == 1 and got[0].txn is txn and got[0].cancel_txn is cancel_txn


def test_cancel_names_the_invite_and_tu_answers(layer: TransactionLayer) -> None:
    invite = make_request()
    inv_txn = layer.server_transaction(invite, UDP_FLOW, 0.0)
    cancel = make_cancel(invite)
    assert not layer.receive(cancel, UDP_FLOW, 0.1)  # a new transaction of its own
    cancel_txn = layer.server_transaction(cancel, UDP_FLOW, 0.1)
    assert cancel_txn is not inv_txn and cancel_txn.method == "CANCEL"
    got = of(layer.events(), CancelReceived)
    assert len(got) == 1 and got[0].txn is inv_txn and got[0].cancel is cancel
    cancel_txn.respond(reply(cancel, 200), 0.1)
    inv_txn.respond(reply(invite, 487), 0.1)
    sent = [(e.message.status, e.message.cseq.method) for e in of(layer.events(), Transmit)]
    assert sent == [(200, "CANCEL"), (487, "INVITE")]
    assert inv_txn.state is S.COMPLETED
    # a retransmitted CANCEL is absorbed by its own transaction
    assert layer.receive(cancel, UDP_FLOW, 0.5)
    assert [e.message.status for e in of(layer.events(), Transmit)] == [200]


def test_cancel_for_unknown_transaction_gets_481(layer: TransactionLayer) -> None:
    cancel = make_cancel(make_request())
    txn = layer.server_transaction(cancel, UDP_FLOW, 0.0)
    events = layer.events()
    assert not of(events, CancelReceived)
    sent = of(events, Transmit)
    assert len(sent) == 1 and sent[0].message.status == 481
    assert sent[0].message.to.tag and txn.state is S.COMPLETED


# -- errors and misuse --------------------------------------------------------

def test_transport_error_informs_tu(layer: TransactionLayer) -> None:
    txn = layer.client_transaction(make_request("OPTIONS"), UDP_DEST, 0.0)
    sent = of(layer.events(), Transmit)
    assert sent[0].txn is txn
    layer.transport_error(txn, 0.01)
    events = layer.events()
    assert [type(e) for e in events] == [TransportFailure, TransactionTerminated]
    assert layer.next_deadline() is None and len(layer) == 0


def test_client_transaction_needs_rfc3261_branch(layer: TransactionLayer) -> None:
    with pytest.raises(ValueError):
        layer.client_transaction(make_request(branch="old"), UDP_DEST, 0.0)
    req = make_request()
    layer.client_transaction(req, UDP_DEST, 0.0)
    with pytest.raises(ValueError):
        layer.client_transaction(req, UDP_DEST, 0.0)


def test_many_transactions_share_one_timer_heap(layer: TransactionLayer) -> None:
    clock = Clock(layer)
    txns = [layer.client_transaction(make_request("OPTIONS"), UDP_DEST, i * 0.01)
            for i in range(50)]
    assert layer.next_deadline() == pytest.approx(0.5)
    clock.run(100.0)
    assert all(t.state is S.TERMINATED for t in txns)
    assert len([e for _, e in clock.log if isinstance(e, TransactionTimeout)]) == 50


def test_invite_given_up_64_t1_after_cancel(layer: TransactionLayer) -> None:
    """9.1: no final response 64*T1 after the CANCEL -> the INVITE is destroyed."""
    clock = Clock(layer)
    invite = make_request()
    inv_txn = layer.client_transaction(invite, UDP_DEST, 0.0)
    layer.receive(reply(invite, 180), UDP_FLOW, 0.1)
    assert layer.next_deadline() is None or not inv_txn.armed(Timer.B)
    layer.client_transaction(make_cancel(invite), UDP_DEST, 10.0)
    layer.receive(reply(invite, 183), UDP_FLOW, 11.0)  # a late 1xx keeps the guard
    clock.run(41.9)
    assert inv_txn.state is S.PROCEEDING
    clock.run(42.0)
    assert [t for t, e in clock.log
            if isinstance(e, TransactionTimeout) and e.txn is inv_txn] == [42.0]


def test_completed_server_transaction_keeps_a_compact_request(layer: TransactionLayer) -> None:
    req = make_request("MESSAGE", branch="z9hG4bKcompact1")
    req.add_header("X-Big", "x" * 5000)
    req.body = b"b" * 10000
    txn = layer.server_transaction(req, UDP_FLOW, 0.0)
    txn.respond(reply(req, 200), 0.0)
    kept = txn.request
    assert kept.body == b"" and "X-Big" not in kept.headers and "Route" not in kept.headers
    assert (kept.method, kept.call_id, kept.cseq.seq, kept.from_.tag) == \
        ("MESSAGE", req.call_id, 1, "a1")
    assert layer.find_server_transaction(parse(bytes(req))) is txn  # still matches
    layer.events()
    layer.on_timer(100.0)  # Timer J: forgotten by its compact key
    assert len(layer) == 0


def test_completed_client_transaction_keeps_a_compact_request(layer: TransactionLayer) -> None:
    req = make_request("INVITE")
    req.body = b"v=0\r\n" * 1000
    txn = layer.client_transaction(req, UDP_DEST, 0.0)
    layer.receive(reply(req, 486), UDP_FLOW, 0.0)
    assert txn.request.body == b"" and txn.ack is not None
    assert txn.ack.headers.get_all("Route") == ["<sip:proxy.example.com;lr>"]
    layer.on_timer(100.0)
    assert len(layer) == 0
