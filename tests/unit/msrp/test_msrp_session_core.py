"""Sans-I/O session and connection cores: responses, reports, timers (virtual clock)."""

from __future__ import annotations

import pytest

from imsbox.msrp import (ConnectionCore, MsrpRequest, MsrpResponse, MsrpUri,
                         ParseError, SessionCore, parse)
from imsbox.msrp.session import (MessageAborted, MessageDelivered, MessageFailed,
                                 MessageReceived, ReportReceived, SessionBound)

A = MsrpUri.parse("msrp://a.example:1/sa;tcp")
B = MsrpUri.parse("msrp://b.example:2/sb;tcp")


def setup(**rx_kw) -> tuple[SessionCore, SessionCore, ConnectionCore, ConnectionCore]:
    tx = SessionCore([A], [B])
    rx = SessionCore([B], [A], **rx_kw)
    rx_conn = ConnectionCore(lambda u: rx if u.session_id == "sb" else None)
    tx_conn = ConnectionCore(lambda u: tx if u.session_id == "sa" else None)
    tx_conn.bind(tx)
    return tx, rx, rx_conn, tx_conn


def responses(conn: ConnectionCore) -> list:
    return [parse(b) for b in conn.data_to_send()]


def send(tx: SessionCore, payload: bytes, ct: str = "text/plain", **kw) -> list[bytes]:
    msg = tx.new_message(ct, len(payload), **kw)
    return [b"".join(tx.chunk(msg, payload, last=True, now=0.0))]


def test_send_200_and_delivery_events() -> None:
    tx, rx, rx_conn, tx_conn = setup()
    wire = send(tx, b"Hello")[0]
    events = rx_conn.receive_data(wire)
    assert isinstance(events[0][1], SessionBound)
    assert isinstance(events[1][1], MessageReceived) and events[1][1].message.sink.body == b"Hello"
    (resp,) = rx_conn.data_to_send()
    r = parse(resp)
    assert isinstance(r, MsrpResponse) and r.status == 200 and r.to_path == (A,)
    out = tx_conn.receive_data(resp)
    assert [type(e) for _, e in out] == [MessageDelivered]


def test_success_report_requested_and_received() -> None:
    tx, rx, rx_conn, tx_conn = setup()
    rx_conn.receive_data(send(tx, b"x" * 10, success_report=True)[0])
    resp, report = rx_conn.data_to_send()
    rep = parse(report)
    assert isinstance(rep, MsrpRequest) and rep.method == "REPORT"
    assert str(rep.byte_range) == "1-10/10" and rep.status is not None and rep.status.code == 200
    assert [type(e) for _, e in tx_conn.receive_data(resp)] == []  # still waiting for REPORT
    out = [type(e) for _, e in tx_conn.receive_data(report)]
    assert out == [ReportReceived, MessageDelivered]
    assert tx_conn.data_to_send() == []  # never answer a REPORT


def test_held_final_response_goes_out_when_the_application_answers() -> None:
    """hold_final_responses: earlier chunks get their 200 at once, the last one's
    waits for answer_final (a store-and-forward server: "kept" once on disk)."""
    tx, rx, rx_conn, tx_conn = setup()
    rx.hold_final_responses = True
    msg = tx.new_message("text/plain", 8)
    first = rx_conn.receive_data(b"".join(tx.chunk(msg, b"abcd", last=False, now=0)))
    assert not any(isinstance(e, MessageReceived) for _, e in first)
    assert [r.status for r in responses(rx_conn)] == [200]
    events = rx_conn.receive_data(b"".join(tx.chunk(msg, b"efgh", last=True, now=0)))
    assert any(isinstance(e, MessageReceived) for _, e in events)
    assert rx_conn.data_to_send() == []  # held
    assert rx_conn.answer_final(rx, msg.message_id, 500, "not stored")
    (r,) = responses(rx_conn)
    assert r.status == 500 and r.comment == "not stored"
    assert not rx_conn.answer_final(rx, msg.message_id)  # once


def test_481_for_unknown_session() -> None:
    tx = SessionCore([A], [MsrpUri.parse("msrp://b.example:2/nope;tcp")])
    _, _, rx_conn, _ = setup()
    assert rx_conn.receive_data(send(tx, b"hi")[0]) == []
    (r,) = responses(rx_conn)
    assert r.status == 481


def test_413_when_total_exceeds_max_size_and_sender_stops() -> None:
    tx, rx, rx_conn, tx_conn = setup(max_size=100)
    rx_conn.receive_data(send(tx, b"x" * 101)[0])
    (resp,) = rx_conn.data_to_send()
    assert parse(resp).status == 413
    out = tx_conn.receive_data(resp)
    assert isinstance(out[0][1], MessageFailed) and out[0][1].status == 413


def test_413_when_unknown_size_grows_past_max_size() -> None:
    tx, rx, rx_conn, _ = setup(max_size=100)
    msg = tx.new_message("text/plain", None)
    rx_conn.receive_data(b"".join(tx.chunk(msg, b"x" * 80, last=False, now=0)))
    events = rx_conn.receive_data(b"".join(tx.chunk(msg, b"x" * 80, last=False, now=0)))
    statuses = [r.status for r in responses(rx_conn)]
    assert statuses == [200, 413]
    assert any(isinstance(e, MessageAborted) for _, e in events)
    rx_conn.receive_data(b"".join(tx.chunk(msg, b"x", last=True, now=0)))
    assert [r.status for r in responses(rx_conn)] == [413]  # later chunks refused too


def test_415_unacceptable_type_but_multipart_always_accepted() -> None:
    tx, rx, rx_conn, _ = setup(accept_types=["message/cpim", "text/*"])
    for ct, code in [("image/png", 415), ("text/plain; charset=utf-8", 200),
                     ("multipart/mixed; boundary=x", 200), ("message/cpim", 200)]:
        rx_conn.receive_data(send(tx, b"x", ct)[0])
        assert [r.status for r in responses(rx_conn)] == [code], ct


def test_501_unknown_method_and_400_bad_request() -> None:
    _, _, rx_conn, _ = setup()
    rx_conn.receive_data(b"MSRP abcd FROB\r\nTo-Path: msrp://b.example:2/sb;tcp\r\n"
                         b"From-Path: msrp://a.example:1/sa;tcp\r\n-------abcd$\r\n")
    rx_conn.receive_data(b"MSRP efgh SEND\r\nTo-Path: msrp://b.example:2/sb;tcp\r\n"
                         b"From-Path: msrp://a.example:1/sa;tcp\r\nByte-Range: nonsense\r\n"
                         b"-------efgh$\r\n")
    r501, r400 = responses(rx_conn)
    assert (r501.status, r400.status) == (501, 400)
    assert "Byte-Range" in r400.comment and r400.to_path == (A,)


def test_unaddressable_bad_request_closes_connection() -> None:
    _, _, rx_conn, _ = setup()
    with pytest.raises(ParseError):
        rx_conn.receive_data(b"MSRP abcd SEND\r\nbad\r\n-------abcd$\r\n")


def test_506_when_bound_to_another_connection() -> None:
    tx, rx, rx_conn, _ = setup()
    rx_conn.receive_data(send(tx, b"1")[0])
    other = ConnectionCore(lambda u: rx)
    other.receive_data(send(tx, b"2")[0])
    assert [r.status for r in responses(other)] == [506]


def test_abort_discards_message() -> None:
    tx, rx, rx_conn, _ = setup()
    msg = tx.new_message("text/plain", 10)
    rx_conn.receive_data(b"".join(tx.chunk(msg, b"abcde", last=False, now=0)))
    events = rx_conn.receive_data(b"".join(tx.abort(msg, now=0)))
    assert [type(e) for _, e in events] == [MessageAborted]


def test_failure_report_no_and_partial_suppress_200() -> None:
    tx, rx, rx_conn, _ = setup()
    rx_conn.receive_data(send(tx, b"a", failure_report="no")[0])
    rx_conn.receive_data(send(tx, b"b", failure_report="partial")[0])
    assert rx_conn.data_to_send() == []
    rx_conn.receive_data(send(tx, b"c", "image/x", failure_report="partial")[0])  # accepted: "*"
    assert rx_conn.data_to_send() == []


def test_408_transaction_timeout_on_virtual_clock() -> None:
    tx = SessionCore([A], [B], transaction_timeout=2.0)
    msg = tx.new_message("text/plain", 3)
    tx.chunk(msg, b"abc", last=True, now=10.0)
    assert tx.next_deadline() == 12.0
    assert tx.on_timer(11.9) == []
    (ev,) = tx.on_timer(12.0)
    assert isinstance(ev, MessageFailed) and ev.status == 408
    assert tx.next_deadline() is None


def test_empty_send_binds_without_delivering() -> None:
    tx, rx, rx_conn, _ = setup()
    events = rx_conn.receive_data(b"".join(tx.empty_send(0)))
    assert [type(e) for _, e in events] == [SessionBound]
    assert rx.connection is rx_conn and [r.status for r in responses(rx_conn)] == [200]


def test_chunk_tid_avoids_end_line_in_body() -> None:
    tx = SessionCore([A], [B])
    nxt = f"{tx._tid_base}{tx._tid_seq + 1:x}"
    body = b"evil\r\n-------" + nxt.encode() + b"$\r\n"
    msg = tx.new_message("text/plain", len(body))
    wire = b"".join(tx.chunk(msg, body, last=True, now=0))
    got = parse(wire)
    assert isinstance(got, MsrpRequest) and got.body == body and got.transaction_id != nxt


def test_large_chunks_use_star_range_end() -> None:
    tx = SessionCore([A], [B])
    msg = tx.new_message("application/octet-stream", 10000)
    first = parse(b"".join(tx.chunk(msg, b"x" * 4096, last=False, now=0)))
    assert isinstance(first, MsrpRequest) and str(first.byte_range) == "1-*/10000"
