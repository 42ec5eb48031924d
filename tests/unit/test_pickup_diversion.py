"""Call pickup's Replaces from a dialog-info document, pickup URIs, the pickup
and diversion settings, and Diversion from History-Info (the sans-I/O parts;
the flows are tests/flows/test_telephony_pickup.py and _forwarding.py)."""

from __future__ import annotations

import pytest

from imsbox.apps.diversion import diversions, write_diversion
from imsbox.apps.history_info import History, HistoryEntry
from imsbox import sdp
from imsbox.apps.pickup import crossed_answer, pickup_name
from imsbox.apps.telephony_services import ServiceDataError, Services, validate
from imsbox.content import dialog_info as di
from imsbox.sip.message import Request
from imsbox.sip.ua.pickup import pickup_replaces, ringing_dialogs
from imsbox.sip.uri import parse_uri

# RFC 5359 F5: bob's document; the INVITE goes to alice, whose tag is 1234567
F5 = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full"
    entity="sips:bob@biloxi.example.com">
  <dialog id="94992014524" call-id="12345600@atlanta.example.com"
      local-tag="3145678" remote-tag="1234567" direction="recipient">
    <state>early</state>
  </dialog>
  <dialog id="2" call-id="other" local-tag="x" remote-tag="y" direction="recipient">
    <state>confirmed</state>
  </dialog>
  <dialog id="3" call-id="out" local-tag="p" remote-tag="q" direction="initiator">
    <state>early</state>
  </dialog>
</dialog-info>"""


def test_replaces_names_the_dialog_as_the_caller_sees_it() -> None:
    (dialog,) = ringing_dialogs(di.parse_dialog_info(F5))   # not confirmed, not outgoing
    assert str(pickup_replaces(dialog)) == \
        "12345600@atlanta.example.com;to-tag=1234567;from-tag=3145678;early-only"


def test_a_dialog_without_tags_cannot_be_picked_up() -> None:
    trying = di.Dialog(id="1", state=di.DialogState.EARLY, call_id="c", local_tag=None,
                       remote_tag="a", direction=di.Direction.RECIPIENT)
    assert ringing_dialogs(di.DialogInfo("sip:b@x", 0, di.DocumentState.FULL, [trying])) == []
    with pytest.raises(ValueError, match="both tags"):
        pickup_replaces(trying)


@pytest.mark.parametrize(("uri", "name"), [
    ("sip:pickup@ims.test", ""), ("sip:PickUp@IMS.test", ""),
    ("sip:pickup-bob@ims.test", "bob"), ("sip:pickup-@ims.test", None),
    ("sip:pickup@other.test", None), ("sip:bob@ims.test", None), ("tel:+1555", None)])
def test_pickup_uris(uri: str, name: str | None) -> None:
    assert pickup_name(parse_uri(uri), "ims.test") == name


def test_pickup_group_and_diversion_settings() -> None:
    assert validate("diversion", ["ON"], "ims.test") == ["on"]
    with pytest.raises(ServiceDataError, match="expected on or off"):
        validate("diversion", ["yes"], "ims.test")
    services = Services.from_settings({"pickup-group": ["sales"], "diversion": ["on"]})
    assert services.pickup_group == "sales" and services.diversion
    assert Services.from_settings({}).pickup_group is None
    assert not Services.from_settings({"diversion": ["off"]}).diversion


def test_diversion_from_history_info_newest_first() -> None:
    history = History([
        HistoryEntry("sip:bob@ims.test?Reason=SIP%3Bcause%3D408", "1"),
        HistoryEntry("sip:carol@ims.test;cause=408?Reason=SIP%3Bcause%3D486", "1.1", ";mp=1"),
        HistoryEntry("tel:+15550004;cause=486", "1.1.1", ";mp=1.1"),
        HistoryEntry("sip:dave@ims.test", "1.1.1.1", ";rc=1.1.1")])
    assert diversions(history) == ["<sip:carol@ims.test>;reason=user-busy;counter=1",
                                   "<sip:bob@ims.test>;reason=no-answer;counter=1"]
    request = Request("INVITE", parse_uri("sip:dave@ims.test"))
    request.add_header("Diversion", "<sip:old@x>;reason=unknown")
    write_diversion(request, history)
    assert request.headers.values("Diversion") == diversions(history)
    plain = Request("INVITE", parse_uri("sip:dave@ims.test"))
    write_diversion(plain, History([HistoryEntry("sip:dave@ims.test", "1")]))
    assert plain.header("Diversion") is None                 # never forwarded


ALICE_SDP = (b"v=0\r\no=alice 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
             b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
             b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n")
CAROL_SDP = (b"v=0\r\no=carol 7 7 IN IP4 10.0.0.3\r\ns=-\r\nc=IN IP4 10.0.0.3\r\nt=0 0\r\n"
             b"m=audio 5000 RTP/AVP 8 0 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
             b"a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n")


def test_crossed_answer_points_at_the_other_party() -> None:
    answer = sdp.parse(crossed_answer(ALICE_SDP, CAROL_SDP) or b"")
    (media,) = answer.media
    assert (answer.connection.address if answer.connection else None) == "10.0.0.3"
    assert media.port == 5000 and media.formats == ["8", "0"]   # 96 is not alice's 101
    assert media.attribute_values("fmtp") == []
    assert crossed_answer(ALICE_SDP, CAROL_SDP.replace(b"RTP/AVP 8 0 96", b"RTP/AVP 96")) is None
    assert crossed_answer(b"not sdp", CAROL_SDP) is None
