"""Dialog layer (RFC 3261 section 12): creation, route sets, CSeq rules, matching."""

from __future__ import annotations

import pytest

from imsbox.sip import Request, Response, parse
from imsbox.sip.ua.dialog import (
    Dialog, DialogError, DialogId, DialogRole, DialogState, DialogTable, RouteSet, UsageKind,
    build_cancel, build_request,
)

INVITE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    "Max-Forwards: 70\r\n"
    "Route: <sip:p1.example.com;lr>\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "From: \"Alice A\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    "Record-Route: <sip:p2.example.com;lr>\r\n"
    "Record-Route: <sip:p1.example.com;lr>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def invite() -> Request:
    msg = parse(INVITE.encode())
    assert isinstance(msg, Request)
    return msg


def answer(request: Request, status: int = 200, tag: str = "a6c85cf",
           contact: str = "<sip:bob@192.0.2.4>") -> Response:
    response = Response.for_request(request, status, to_tag=tag)
    response.add_header("Contact", contact)
    return response


def test_uac_dialog_from_2xx_reverses_record_route() -> None:
    request = invite()
    dialog = Dialog.from_uac(request, answer(request))
    assert dialog.role is DialogRole.UAC
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.id == DialogId("a84b4c76e66710@pc33.atlanta.example.com", "1928301774", "a6c85cf")
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4"
    assert dialog.local_seq == 314159 and dialog.remote_seq is None
    assert str(dialog.local_target) == "sip:alice@pc33.atlanta.example.com"
    assert dialog.local_addr.display_name == "Alice A"


def test_uac_early_dialog_from_1xx_and_confirm_recomputes_route_set() -> None:
    request = invite()
    ringing = answer(request, 180)
    dialog = Dialog.from_uac(request, ringing)
    assert dialog.is_early
    ok = answer(request, 200, contact="<sip:bob@192.0.2.99>")
    ok.remove_header("Record-Route")
    ok.add_header("Record-Route", "<sip:p9.example.com;lr>")
    dialog.confirm(ok)
    assert dialog.is_confirmed
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p9.example.com;lr"]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.99"


def test_uac_dialog_needs_tag_and_dialog_status() -> None:
    request = invite()
    with pytest.raises(DialogError):
        Dialog.from_uac(request, Response.for_request(request, 180))
    with pytest.raises(DialogError):
        Dialog.from_uac(request, answer(request, 100))
    with pytest.raises(DialogError):
        Dialog.from_uac(request, answer(request, 486))


def test_uas_dialog_keeps_record_route_order() -> None:
    request = invite()
    dialog = Dialog.from_uas(request, local_tag="xyz")
    assert dialog.role is DialogRole.UAS
    assert dialog.id == DialogId(request.call_id, "xyz", "1928301774")
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert str(dialog.remote_target) == "sip:alice@pc33.atlanta.example.com"
    assert dialog.remote_seq == 314159 and dialog.local_seq is None
    assert dialog.local_addr.tag == "xyz" and dialog.remote_addr.tag == "1928301774"
    assert not dialog.secure
    assert Dialog.is_secure(request, "tls") is False
    request.uri = request.uri.copy(scheme="sips")
    assert Dialog.is_secure(request, "tls") and not Dialog.is_secure(request, "tcp")


def test_uas_dialog_rejects_tagged_request_and_missing_contact() -> None:
    request = invite()
    request.remove_header("Contact")
    with pytest.raises(DialogError):
        Dialog.from_uas(request)
    tagged = invite()
    tagged.set_header("To", "<sip:bob@biloxi.example.com>;tag=1")
    with pytest.raises(DialogError):
        Dialog.from_uas(tagged)


def test_in_dialog_request_loose_routing() -> None:
    request = invite()
    dialog = Dialog.from_uac(request, answer(request))
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:bob@192.0.2.4"
    assert [str(r.uri) for r in bye.route] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert bye.cseq.seq == 314160 and bye.cseq.method == "BYE"
    assert bye.from_.tag == "1928301774" and bye.to.tag == "a6c85cf"
    assert bye.call_id == request.call_id
    assert "Contact" not in bye.headers
    reinvite = dialog.create_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
    assert reinvite.cseq.seq == 314161
    assert str(reinvite.contact[0].uri) == "sip:alice@pc33.atlanta.example.com"
    assert reinvite.content_type is not None and reinvite.content_type.mime == "application/sdp"
    # with the sender's Via the wire form parses back
    reinvite.push_header("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx")
    assert parse(bytes(reinvite)).cseq.seq == 314161  # type: ignore[union-attr]


def test_strict_route_fixup() -> None:
    """12.2.1.1: first route without lr -> Request-URI, remote target last Route."""
    request = invite()
    ok = answer(request)
    ok.remove_header("Record-Route")
    ok.add_header("Record-Route", "<sip:strict.example.com;method=INVITE>, <sip:loose.example.com;lr>")
    dialog = Dialog.from_uac(request, ok)
    assert [str(r.uri) for r in dialog.route_set] == ["sip:loose.example.com;lr",
                                                      "sip:strict.example.com;method=INVITE"]
    # make the first hop strict
    dialog.route_set = RouteSet(list(reversed(dialog.route_set.routes)))
    assert dialog.route_set.strict
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:strict.example.com"  # method param stripped
    assert [str(r.uri) for r in bye.route] == ["sip:loose.example.com;lr", "sip:bob@192.0.2.4"]


def test_no_route_set_uses_remote_target() -> None:
    request = invite()
    request.remove_header("Record-Route")
    ok = Response.for_request(request, 200, to_tag="t")
    ok.add_header("Contact", "<sip:bob@192.0.2.4:5070;transport=udp>")
    dialog = Dialog.from_uac(request, ok)
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:bob@192.0.2.4:5070;transport=udp"
    assert "Route" not in bye.headers


def test_remote_cseq_rules() -> None:
    """12.2.2: lower CSeq -> 500; equal/higher accepted; ACK/CANCEL not checked."""
    request = invite()
    dialog = Dialog.from_uas(request, local_tag="l")
    def indialog(method: str, seq: int) -> Request:
        r = invite()
        r.method = method
        r.set_header("To", "<sip:bob@biloxi.example.com>;tag=l")
        r.set_header("CSeq", f"{seq} {method}")
        return r
    assert dialog.receive_request(indialog("INFO", 314160)) is None
    assert dialog.remote_seq == 314160
    assert dialog.receive_request(indialog("INFO", 314100)) == 500
    assert dialog.remote_seq == 314160
    assert dialog.receive_request(indialog("ACK", 1)) is None
    assert dialog.receive_request(indialog("BYE", 314161)) is None


def test_remote_seq_empty_takes_first_value_and_local_seq_random() -> None:
    request = invite()
    dialog = Dialog.from_uac(request, answer(request))
    notify = invite()
    notify.method = "NOTIFY"
    notify.set_header("CSeq", "5 NOTIFY")
    assert dialog.receive_request(notify) is None and dialog.remote_seq == 5
    uas = Dialog.from_uas(invite())
    first = uas.create_request("BYE").cseq.seq
    assert 0 < first < 2**31
    assert uas.create_request("INFO").cseq.seq == first + 1


def test_target_refresh() -> None:
    request = invite()
    dialog = Dialog.from_uas(request, local_tag="l")
    reinvite = invite()
    reinvite.set_header("To", "<sip:bob@biloxi.example.com>;tag=l")
    reinvite.set_header("CSeq", "314160 INVITE")
    reinvite.set_header("Contact", "<sip:alice@198.51.100.7>")
    assert dialog.receive_request(reinvite) is None
    assert str(dialog.remote_target) == "sip:alice@198.51.100.7"
    # INFO is not a target refresh
    info = reinvite.copy()
    info.method = "INFO"
    info.set_header("CSeq", "314161 INFO")
    info.set_header("Contact", "<sip:elsewhere@198.51.100.8>")
    dialog.receive_request(info)
    assert str(dialog.remote_target) == "sip:alice@198.51.100.7"
    # UAC side: 2xx to UPDATE refreshes, 2xx to INFO does not
    uac = Dialog.from_uac(invite(), answer(invite()))
    ok = answer(invite(), contact="<sip:bob@203.0.113.5>")
    uac.receive_response("INFO", ok)
    assert str(uac.remote_target) == "sip:bob@192.0.2.4"
    uac.receive_response("UPDATE", ok)
    assert str(uac.remote_target) == "sip:bob@203.0.113.5"


def test_ack_for_2xx_keeps_cseq_number() -> None:
    request = invite()
    dialog = Dialog.from_uac(request, answer(request))
    ack = dialog.create_ack(314159, body=b"sdp", content_type="application/sdp")
    assert ack.method == "ACK" and ack.cseq.seq == 314159 and ack.cseq.method == "ACK"
    assert dialog.local_seq == 314159
    assert ack.body == b"sdp"
    assert "Via" not in ack.headers  # a new transaction: the sender adds a new branch


def test_cancel_construction() -> None:
    request = invite()
    cancel = build_cancel(request)
    assert cancel.method == "CANCEL"
    assert str(cancel.uri) == str(request.uri)
    assert cancel.top_via.branch == "z9hG4bK776asdhds"
    assert len(cancel.via) == 1
    assert cancel.cseq.seq == 314159 and cancel.cseq.method == "CANCEL"
    assert cancel.headers.get("To") == request.headers.get("To")
    assert cancel.headers.get("From") == request.headers.get("From")
    assert cancel.call_id == request.call_id
    assert [str(r.uri) for r in cancel.route] == ["sip:p1.example.com;lr"]


def test_build_request_out_of_dialog() -> None:
    request = build_request("INVITE", "sip:bob@example.com", "Alice <sip:alice@example.com>",
                            "sip:bob@example.com", contact="sip:alice@127.0.0.1:5060",
                            cseq=7, body=b"v=0\r\n", content_type="application/sdp")
    assert request.from_.tag and request.to.tag is None
    assert request.cseq.seq == 7 and request.call_id
    assert str(request.contact[0].uri) == "sip:alice@127.0.0.1:5060"
    assert request.headers.get("Max-Forwards") == "70"


class _Usage:
    usage_kind = UsageKind.INVITE


def test_dialog_table_matching_and_481() -> None:
    table = DialogTable()
    request = invite()
    uas = Dialog.from_uas(request, local_tag="l1")
    usage = _Usage()
    table.add_usage(uas, usage)
    bye = invite()
    bye.method = "BYE"
    bye.set_header("CSeq", "314160 BYE")
    bye.set_header("To", "<sip:bob@biloxi.example.com>;tag=l1")
    assert table.match_request(bye) is uas
    assert table.unmatched(bye) is None
    bye.set_header("To", "<sip:bob@biloxi.example.com>;tag=nope")
    assert table.match_request(bye) is None
    reply = table.unmatched(bye)
    assert reply is not None and reply.status == 481
    # requests without To tag are not in-dialog: no 481
    assert table.unmatched(invite()) is None
    table.remove_usage(uas, usage)
    assert len(table) == 0


def test_dialog_set_for_forked_early_dialogs() -> None:
    table = DialogTable()
    request = invite()
    d1 = Dialog.from_uac(request, answer(request, 180, tag="fork1"))
    d2 = Dialog.from_uac(request, answer(request, 183, tag="fork2"))
    table.add_usage(d1, _Usage())
    table.add_usage(d2, _Usage())
    assert set(d.id.remote_tag for d in table.dialog_set(request.call_id, "1928301774")) == {
        "fork1", "fork2"}
    assert table.match_response(answer(request, 200, tag="fork2")) is d2
