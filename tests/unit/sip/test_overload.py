"""sip.overload: which requests a loaded node sheds, and how it says so."""

from __future__ import annotations

import pytest

from imsbox.sip import Request, new_branch, parse
from imsbox.sip.overload import (
    OverloadController,
    OverloadPolicy,
    Priority,
    priority_of,
)


def request(method: str, to_tag: str | None = None) -> Request:
    to = "<sip:bob@ims.test>" + (f";tag={to_tag}" if to_tag else "")
    req = Request(method, "sip:bob@ims.test", [
        ("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()}"),
        ("Max-Forwards", "70"), ("From", "<sip:alice@ims.test>;tag=a"), ("To", to),
        ("Call-ID", "c1"), ("CSeq", f"1 {method}")])
    parsed = parse(bytes(req))
    assert isinstance(parsed, Request)
    return parsed


@pytest.mark.parametrize("method, to_tag, expected", [
    ("INVITE", None, Priority.NEW), ("MESSAGE", None, Priority.NEW),
    ("REGISTER", None, Priority.NEW), ("INVITE", "t", Priority.IN_DIALOG),
    ("MESSAGE", "t", Priority.IN_DIALOG), ("BYE", "t", Priority.ESSENTIAL),
    ("CANCEL", None, Priority.ESSENTIAL), ("ACK", "t", Priority.ESSENTIAL),
])
def test_priorities(method: str, to_tag: str | None, expected: Priority) -> None:
    assert priority_of(request(method, to_tag)) is expected


def test_new_work_shed_first_then_in_dialog_never_bye() -> None:
    control = OverloadController(OverloadPolicy(max_transactions=100, retry_after=30))
    new, dialog, bye = request("MESSAGE"), request("MESSAGE", "t"), request("BYE", "t")
    assert control.admit(new, 99) is None
    refusal = control.admit(new, 100)
    assert refusal is not None and refusal.status == 503
    assert refusal.headers.get("Retry-After") == "30"
    assert refusal.reason == "Service Unavailable - overloaded (100 transactions)"
    assert refusal.to.tag and refusal.call_id == "c1"
    assert control.admit(dialog, 199) is None and control.admit(dialog, 200) is not None
    assert control.admit(bye, 10**9, queue_delay=60.0) is None
    assert control.stats == {"shed_new": 1, "shed_in_dialog": 1}


def test_queue_delay_bound() -> None:
    control = OverloadController(OverloadPolicy(max_queue_delay=0.5))
    assert control.admit(request("OPTIONS"), 0, queue_delay=0.4) is None
    refusal = control.admit(request("OPTIONS"), 0, queue_delay=0.6)
    assert refusal is not None and "queued 0.6s" in refusal.reason
    assert control.admit(request("UPDATE", "t"), 0, queue_delay=0.6) is None


def test_a_shed_transaction_stays_shed_for_64_t1() -> None:
    control = OverloadController(OverloadPolicy(max_transactions=10))
    invite = request("INVITE")
    refusal = control.admit(invite, 10, now=100.0)
    assert refusal is not None
    assert control.shed_before(invite, 101.0) is refusal  # the retransmission
    ack = Request("ACK", invite.uri, [("Via", invite.headers.get("Via")),
                                      ("Call-ID", "c1"), ("CSeq", "1 ACK")])
    assert control.shed_before(ack, 101.0) is refusal  # the endpoint drops it
    cancel = Request("CANCEL", invite.uri, [("Via", invite.headers.get("Via")),
                                            ("Call-ID", "c1"), ("CSeq", "1 CANCEL")])
    assert control.shed_before(cancel, 101.0) is None
    assert control.shed_before(request("INVITE"), 101.0) is None  # another branch
    assert control.shed_before(invite, 132.5) is None  # forgotten after 32 s
