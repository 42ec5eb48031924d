"""Service data validation and matching, History-Info and the dialog state of the
telephony AS (the sans-I/O parts; the flows are in tests/flows/test_telephony_*.py)."""

from __future__ import annotations

import pytest

from imsbox.apps.history_info import History
from imsbox.apps.telephony_dialogs import CallDialogs
from imsbox.apps.telephony_services import (
    ServiceDataError, Services, describe, matches, validate,
)
from imsbox.content.dialog_info import DialogEvent, DialogState
from imsbox.sip.message import Request, Response

D = "ims.test"


def test_values_are_made_canonical() -> None:
    assert validate("forward-busy", ["carol"], D) == ["sip:carol@ims.test"]
    assert validate("forward-busy", ["+15550003"], D) == ["tel:+15550003"]
    assert validate("forward-busy", ["<sip:gw@10.0.0.1:5070;transport=tcp>"], D) == [
        "sip:gw@10.0.0.1:5070;transport=tcp"]                 # a gateway's port stays
    assert validate("screen-incoming", ["<sip:Eve@Spam.test:5060>"], D) == ["sip:Eve@spam.test"]
    assert validate("find-me", ["a", "b"], D, after=2.5) == [
        "sip:a@ims.test", "sip:b@ims.test", "after=2.5"]
    assert validate("screen-incoming", ["15550001", "+1900*", "SIP:*@Spam.test"], D) == [
        "+15550001", "+1900*", "sip:*@spam.test"]


@pytest.mark.parametrize(("key", "values", "after", "message"), [
    ("forward-busy", ["sip:"], None, "malformed URI"),
    ("forward-busy", ["mailto:x@y"], None, "is not a URI"),
    ("forward-busy", ["sip:example.com"], None, "names no user"),
    ("forward-busy", [], None, "expected 1 value(s), got 0"),
    ("find-me", ["a"] * 11, None, "expected 1 to 10"),
    ("screen-outgoing", ["sip:*@"], None, "malformed URI"),
    ("forward-no-answer", ["a"], 0.0, "--after: expected seconds"),
    ("screen-incoming", ["a"], 5.0, "--after applies only to"),
    ("ring-tone", ["a"], None, "unknown setting"),
    ("pickup-group", ["a b"], None, "expected a group name"),
])
def test_bad_values(key: str, values: list[str], after: float | None, message: str) -> None:
    with pytest.raises(ServiceDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(key, values, D, after)


def test_services_from_settings_and_describe() -> None:
    services = Services.from_settings({"forward-no-answer": ("sip:c@ims.test", "after=4"),
                                       "find-me": ("sip:a@ims.test", "tel:+1")})
    assert services.no_answer == "sip:c@ims.test" and services.no_answer_after == 4.0
    assert services.find_me == ("sip:a@ims.test", "tel:+1") and services.find_me_after is None
    assert services.unconditional is None and services.rings_for
    assert describe("forward-no-answer", ["sip:c@ims.test", "after=4"]) == \
        "forward-no-answer  sip:c@ims.test  (after 4 s)"


def test_patterns_match_uris_and_numbers() -> None:
    alice = {"sip:alice@ims.test", "tel:+15550001", "sip:+15550001@ims.test;user=phone"}
    assert matches("+15550001", alice) and matches("+1555*", alice)
    assert not matches("+1900*", alice)
    assert matches("sip:*@ims.test", alice) and not matches("sip:*@spam.test", alice)
    assert matches("sip:alice@ims.test", alice)
    assert matches("*", {"tel:+44"}) and not matches("+44*", {"sip:x@ims.test"})


def invite(history: str | None = None) -> Request:
    headers = [("From", "<sip:alice@ims.test>;tag=a1"), ("To", "<sip:bob@ims.test>"),
               ("Call-ID", "c1"), ("CSeq", "1 INVITE")]
    if history:
        headers.append(("History-Info", history))
    return Request("INVITE", "sip:bob@ims.test", headers)


def test_history_of_a_forwarded_call() -> None:
    request = invite()
    history = History.of(request)
    history.called("sip:bob@ims.test")
    history.forwarded("sip:carol@ims.test", 486, 486)
    history.write(request)
    assert request.headers.values("History-Info") == [
        "<sip:bob@ims.test?Reason=SIP%3Bcause%3D486%3Btext%3D%22Busy%20Here%22>;index=1",
        "<sip:carol@ims.test;cause=486>;index=1.1;mp=1"]
    again = History.of(request)
    assert again.diversions == 1
    assert again.seen_before(frozenset({"sip:bob@ims.test"}))
    assert not again.seen_before(frozenset({"sip:carol@ims.test"}))   # the newest entry
    again.called("sip:carol@ims.test")                                # already the newest
    assert len(again.entries) == 2


def test_history_ignores_garbage() -> None:
    assert History.of(invite("<not a uri;index=1, <sip:x@y>;index=1")).entries == []


def test_dialog_state_of_a_callee() -> None:
    calls = CallDialogs()
    request = invite()
    watched = calls.invite("sip:bob@ims.test", request, False, "sip:alice@ims.test",
                           "sip:bob@ims.test")
    assert calls.take_changed() == {"sip:bob@ims.test"}
    ringing = Response.for_request(request, 180, to_tag="b1")
    calls.response(watched, ringing)
    doc = calls.document("sip:bob@ims.test", 3)
    (dialog,) = doc.dialogs
    assert (dialog.state, dialog.local_tag, dialog.remote_tag, doc.version) == \
        (DialogState.EARLY, "b1", "a1", 3)
    calls.response(watched, Response.for_request(request, 200, to_tag="b1"))
    assert calls.document("sip:bob@ims.test", 4).dialogs[0].state is DialogState.CONFIRMED
    bye = Request("BYE", "sip:bob@x", [("From", "<sip:alice@ims.test>;tag=a1"),
                                       ("To", "<sip:bob@ims.test>;tag=b1"),
                                       ("Call-ID", "c1"), ("CSeq", "2 BYE")])
    calls.bye(bye)
    ended = calls.document("sip:bob@ims.test", 5).dialogs[0]
    assert ended.state is DialogState.TERMINATED and ended.event is DialogEvent.REMOTE_BYE
    calls.forget_ended("sip:bob@ims.test")
    assert calls.document("sip:bob@ims.test", 6).dialogs == []
