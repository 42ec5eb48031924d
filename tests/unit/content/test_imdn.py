from __future__ import annotations

import pytest

from imsbox.content import (
    IMDN_NS,
    ContentError,
    CpimAddress,
    DispositionType,
    Imdn,
    ImdnStatus,
    NotificationRequest,
    XmlError,
    build_cpim,
    build_imdn_message,
    imdn_reply,
    notification_wanted,
    parse_cpim,
    parse_disposition_notification,
    parse_imdn,
    requested_notifications,
)
from imsbox.content.imdn import ALLOWED_STATUS, format_disposition_notification, is_notification

NR = NotificationRequest


def test_seed_001_delivery_notification(fixture_bytes):
    msg = parse_cpim(fixture_bytes("cpim_001_imdn_delivered.bin"))
    assert is_notification(msg)
    imdn = parse_imdn(msg.body)
    assert imdn == Imdn("wYcJuXBbGOfCtBqIPQqz0I", DispositionType.DELIVERY, ImdnStatus.DELIVERED)


def test_seed_001_second_notification_has_datetime(fixture_bytes):
    imdn = parse_imdn(parse_cpim(fixture_bytes("cpim_001_imdn_delivered_hi.bin")).body)
    assert imdn.message_id == "dc5ebabb21"
    assert imdn.datetime == "2015-02-24T06:48:25-00:00"


def test_seed_003_display_notification(fixture_bytes):
    imdn = parse_imdn(parse_cpim(fixture_bytes("cpim_003_imdn_displayed.bin")).body)
    assert (imdn.message_id, imdn.disposition, imdn.status) == (
        "PH7qAIV8cgH5", DispositionType.DISPLAY, ImdnStatus.DISPLAYED)


RFC_EXAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<imdn xmlns="urn:ietf:params:xml:ns:imdn">
      <message-id>34jk324j</message-id>
      <datetime>2008-04-04T12:16:49-05:00</datetime>
     <recipient-uri>im:bob@example.com</recipient-uri>
      <original-recipient-uri
        >im:bob@example.com</original-recipient-uri>
      <display-notification>
         <status>
            <displayed/>
         </status>
      </display-notification>
    </imdn>"""


def test_rfc_example_all_fields():
    imdn = parse_imdn(RFC_EXAMPLE)
    assert imdn.recipient_uri == "im:bob@example.com"
    assert imdn.original_recipient_uri == "im:bob@example.com"
    assert imdn.datetime == "2008-04-04T12:16:49-05:00"
    assert parse_imdn(imdn.to_xml()) == imdn


@pytest.mark.parametrize("disposition", list(DispositionType))
def test_every_allowed_status_round_trips(disposition):
    for status in ALLOWED_STATUS[disposition]:
        imdn = Imdn("m1", disposition, status, "2008-04-04T12:16:49Z", "im:b@x", "im:c@x", "hello")
        xml = imdn.to_xml()
        assert f"<{status.value} />".encode() in xml
        assert parse_imdn(xml) == imdn


def test_all_statuses_covered():
    assert {s for allowed in ALLOWED_STATUS.values() for s in allowed} == set(ImdnStatus)
    assert ImdnStatus.STORED in ALLOWED_STATUS[DispositionType.PROCESSING]
    assert ImdnStatus.FAILED not in ALLOWED_STATUS[DispositionType.DISPLAY]


def test_status_not_allowed_for_type():
    with pytest.raises(ContentError, match="not allowed in display-notification"):
        Imdn("m", DispositionType.DISPLAY, ImdnStatus.DELIVERED)
    bad = RFC_EXAMPLE.replace(b"<displayed/>", b"<failed/>")
    with pytest.raises(XmlError, match="not allowed"):
        parse_imdn(bad)


@pytest.mark.parametrize(
    "doc, reason",
    [
        (b'<imdn xmlns="urn:x"/>', "root element"),
        (b'<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>a</message-id></imdn>', "exactly one"),
        (b'<imdn xmlns="urn:ietf:params:xml:ns:imdn"><delivery-notification><status><delivered/>'
         b"</status></delivery-notification></imdn>", "message-id"),
        (b'<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>a</message-id><delivery-notification>'
         b"</delivery-notification></imdn>", "lacks <status>"),
        (b'<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>a</message-id><delivery-notification>'
         b"<status><bogus/></status></delivery-notification></imdn>", "known status"),
    ],
)
def test_bad_documents(doc, reason):
    with pytest.raises(XmlError, match=reason):
        parse_imdn(doc)


def test_extension_status_elements_in_other_namespaces_are_ignored():
    doc = RFC_EXAMPLE.replace(b"<displayed/>", b'<displayed/><x:ext xmlns:x="urn:x"/>')
    assert parse_imdn(doc).status is ImdnStatus.DISPLAYED


def test_disposition_notification_header():
    assert parse_disposition_notification("positive-delivery, display") == {NR.POSITIVE_DELIVERY, NR.DISPLAY}
    assert parse_disposition_notification("negative-delivery;x=1 ,processing,future-thing") == {
        NR.NEGATIVE_DELIVERY, NR.PROCESSING}
    assert parse_disposition_notification("") == frozenset()
    assert format_disposition_notification({NR.DISPLAY, NR.POSITIVE_DELIVERY}) == "positive-delivery, display"


def test_requested_notifications_from_seed(fixture_bytes):
    msg = parse_cpim(fixture_bytes("cpim_001_hello.bin"))
    assert requested_notifications(msg) == {NR.POSITIVE_DELIVERY, NR.DISPLAY}


def test_any_prefix_is_accepted():
    msg = build_cpim("text/plain", b"x", namespaces=[("zz", IMDN_NS)],
                     headers=[("zz.Message-ID", "1"), ("zz.Disposition-Notification", "display")])
    assert requested_notifications(parse_cpim(msg.to_bytes())) == {NR.DISPLAY}


def test_no_imdn_for_an_imdn(fixture_bytes):
    msg = parse_cpim(fixture_bytes("cpim_001_imdn_delivered.bin"))
    msg.headers.append(type(msg.headers[0])("imdn.Disposition-Notification", "display"))
    assert requested_notifications(msg) == frozenset()


@pytest.mark.parametrize(
    "requests, disposition, status, wanted",
    [
        ({NR.POSITIVE_DELIVERY}, DispositionType.DELIVERY, ImdnStatus.DELIVERED, True),
        ({NR.POSITIVE_DELIVERY}, DispositionType.DELIVERY, ImdnStatus.FAILED, False),
        ({NR.NEGATIVE_DELIVERY}, DispositionType.DELIVERY, ImdnStatus.FAILED, True),
        ({NR.NEGATIVE_DELIVERY}, DispositionType.DELIVERY, ImdnStatus.FORBIDDEN, True),
        ({NR.NEGATIVE_DELIVERY}, DispositionType.DELIVERY, ImdnStatus.DELIVERED, False),
        ({NR.DISPLAY}, DispositionType.DISPLAY, ImdnStatus.DISPLAYED, True),
        ({NR.DISPLAY}, DispositionType.DISPLAY, ImdnStatus.ERROR, True),
        ({NR.POSITIVE_DELIVERY}, DispositionType.DISPLAY, ImdnStatus.DISPLAYED, False),
        ({NR.PROCESSING}, DispositionType.PROCESSING, ImdnStatus.STORED, True),
        (set(), DispositionType.PROCESSING, ImdnStatus.PROCESSED, False),
    ],
)
def test_notification_wanted(requests, disposition, status, wanted):
    assert notification_wanted(requests, disposition, status) is wanted


def test_imdn_reply_to_seed_hi_matches_seed_notification(fixture_bytes):
    original = parse_cpim(fixture_bytes("cpim_001_hi.bin"))
    reply = imdn_reply(original, DispositionType.DELIVERY, ImdnStatus.DELIVERED,
                       message_id="tZLoOeSS8nxrj0Pi4s7JGAyP9GUqJB",
                       sender=CpimAddress("sip:anonymous@anonymous.invalid"),
                       date_time="2015-02-24T06:48:25-00:00")
    assert reply is not None
    wire = parse_cpim(reply.to_bytes())
    assert is_notification(wire)
    assert wire.content_type == "message/imdn+xml"
    assert wire.get("Message-ID", IMDN_NS) == "tZLoOeSS8nxrj0Pi4s7JGAyP9GUqJB"
    assert wire.get("Disposition-Notification", IMDN_NS) is None
    assert wire.recipients == [CpimAddress("sip:anonymous@anonymous.invalid")]
    seed = parse_imdn(parse_cpim(fixture_bytes("cpim_001_imdn_delivered_hi.bin")).body)
    ours = parse_imdn(wire.body)
    assert (ours.message_id, ours.disposition, ours.status) == (seed.message_id, seed.disposition, seed.status)
    assert ours.datetime == "2015-02-24T06:48:26.5388096Z"  # the IM's DateTime (section 11.1.2)
    assert ours.recipient_uri == "sip:anonymous@anonymous.invalid"
    assert int(wire.content_headers[-1][1]) == len(wire.body)


def test_imdn_reply_none_when_not_requested(fixture_bytes):
    original = parse_cpim(fixture_bytes("cpim_001_hi.bin"))
    assert imdn_reply(original, DispositionType.DELIVERY, ImdnStatus.FAILED, message_id="x") is None


def test_imdn_reply_copies_record_route_and_original_to():
    original = build_cpim(
        "text/plain", b"hi",
        sender=CpimAddress("im:alice@example.com", "Alice"),
        recipients=[CpimAddress("im:bob@example.com")],
        date_time="2006-04-04T12:16:49-05:00",
        subjects=[("lunch?", None)],
        namespaces=[("imdn", IMDN_NS)],
        headers=[("imdn.Message-ID", "34jk324j"),
                 ("imdn.Disposition-Notification", "positive-delivery, negative-delivery"),
                 ("imdn.Original-To", "<im:bob@old.example.com>"),
                 ("imdn.IMDN-Record-Route", "<sip:as1@example.com>"),
                 ("imdn.IMDN-Record-Route", "<sip:as2@example.com>")],
    )
    reply = imdn_reply(parse_cpim(original.to_bytes()), DispositionType.DELIVERY, ImdnStatus.FAILED,
                       message_id="d834jied93rf")
    assert reply is not None
    assert [h.value for h in reply.get_all("IMDN-Route", IMDN_NS)] == [
        "<sip:as1@example.com>", "<sip:as2@example.com>"]
    assert reply.recipients == [CpimAddress("im:alice@example.com", "Alice")]
    doc = parse_imdn(reply.body)
    assert doc.original_recipient_uri == "im:bob@old.example.com"
    assert doc.subject == "lunch?"
    assert doc.status is ImdnStatus.FAILED


def test_for_message_needs_message_id():
    msg = build_cpim("text/plain", b"x")
    with pytest.raises(ContentError, match="Message-ID"):
        Imdn.for_message(msg, DispositionType.DELIVERY, ImdnStatus.DELIVERED)


def test_build_imdn_message_shape():
    imdn = Imdn("wYcJuXBbGOfCtBqIPQqz0I", DispositionType.DELIVERY, ImdnStatus.DELIVERED)
    msg = build_imdn_message(imdn, message_id="2252a2757d",
                             sender=CpimAddress("sip:anonymous@anonymous.invalid"),
                             recipient=CpimAddress("sip:anonymous@anonymous.invalid"),
                             date_time="2015-02-24T06:48:10.7749079Z")
    data = msg.to_bytes()
    assert data.startswith(
        b"From: <sip:anonymous@anonymous.invalid>\r\nTo: <sip:anonymous@anonymous.invalid>\r\n"
        b"DateTime: 2015-02-24T06:48:10.7749079Z\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
        b"imdn.Message-ID: 2252a2757d\r\n\r\nContent-Type: message/imdn+xml\r\n"
        b"Content-Disposition: notification\r\nContent-Length: ")
    assert parse_imdn(parse_cpim(data).body) == imdn
