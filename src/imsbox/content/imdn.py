"""message/imdn+xml: Instant Message Disposition Notification (RFC 5438)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from types import MappingProxyType

from .cpim import CpimAddress, CpimMessage, build_cpim
from .errors import ContentProtocolError, XmlError
from .xmlsafe import (
    child,
    child_text,
    expect_root,
    parse_xml,
    qname,
    required_text,
    serialize,
    sub,
    sub_texts,
)

log = logging.getLogger(__name__)

IMDN_NS = "urn:ietf:params:imdn"
IMDN_XML_NS = "urn:ietf:params:xml:ns:imdn"
IMDN_CONTENT_TYPE = "message/imdn+xml"
NOTIFICATION_DISPOSITION = "notification"


class NotificationRequest(Enum):
    """A notify-req value of Disposition-Notification (RFC 5438 section 10)."""

    POSITIVE_DELIVERY = "positive-delivery"
    NEGATIVE_DELIVERY = "negative-delivery"
    PROCESSING = "processing"
    DISPLAY = "display"


class DispositionType(Enum):
    """The notification element an IMDN carries (RFC 5438 section 11.1.6)."""

    DELIVERY = "delivery-notification"
    PROCESSING = "processing-notification"
    DISPLAY = "display-notification"


class ImdnStatus(Enum):
    """The <status> child element (RFC 5438 section 11.1.7)."""

    DELIVERED = "delivered"
    FAILED = "failed"
    FORBIDDEN = "forbidden"
    ERROR = "error"
    DISPLAYED = "displayed"
    PROCESSED = "processed"
    STORED = "stored"


_COMMON = frozenset({ImdnStatus.FORBIDDEN, ImdnStatus.ERROR})
ALLOWED_STATUS: Mapping[DispositionType, frozenset[ImdnStatus]] = MappingProxyType({
    DispositionType.DELIVERY: _COMMON | {ImdnStatus.DELIVERED, ImdnStatus.FAILED},
    DispositionType.DISPLAY: _COMMON | {ImdnStatus.DISPLAYED},
    DispositionType.PROCESSING: _COMMON | {ImdnStatus.PROCESSED, ImdnStatus.STORED},
})


def parse_disposition_notification(value: str) -> frozenset[NotificationRequest]:
    """RFC 5438 section 7.2.1: unknown values and their parameters are ignored."""
    found = set()
    for item in value.split(","):
        token = item.split(";", 1)[0].strip()
        try:
            found.add(NotificationRequest(token))
        except ValueError:
            if token:
                log.debug("ignoring unknown Disposition-Notification value %r", token)
    return frozenset(found)


def format_disposition_notification(requests: Iterable[NotificationRequest]) -> str:
    wanted = set(requests)
    return ", ".join(r.value for r in NotificationRequest if r in wanted)


def is_notification(message: CpimMessage) -> bool:
    """True when the CPIM part is itself an IMDN (Content-Disposition: notification)."""
    disposition = message.content_disposition or ""
    return disposition.split(";", 1)[0].strip().lower() == NOTIFICATION_DISPOSITION


def requested_notifications(message: CpimMessage) -> frozenset[NotificationRequest]:
    """RFC 5438 section 7.2.1: what the IM Sender asked for; never an IMDN for an IMDN."""
    if is_notification(message):
        return frozenset()
    found: set[NotificationRequest] = set()
    for header in message.get_all("Disposition-Notification", IMDN_NS):
        found |= parse_disposition_notification(header.decoded)
    return frozenset(found)


def notification_wanted(
    requests: Iterable[NotificationRequest], disposition: DispositionType, status: ImdnStatus
) -> bool:
    """RFC 5438 section 7.1.1.3: does an IMDN with this status answer a request?"""
    wanted = set(requests)
    if disposition is DispositionType.DELIVERY:
        positive = status is ImdnStatus.DELIVERED
        need = NotificationRequest.POSITIVE_DELIVERY if positive else NotificationRequest.NEGATIVE_DELIVERY
        return need in wanted
    if disposition is DispositionType.DISPLAY:
        return NotificationRequest.DISPLAY in wanted
    return NotificationRequest.PROCESSING in wanted


@dataclass(slots=True)
class Imdn:
    """An IMDN document (RFC 5438 section 11.1)."""

    message_id: str
    disposition: DispositionType
    status: ImdnStatus
    datetime: str | None = None
    recipient_uri: str | None = None
    original_recipient_uri: str | None = None
    subject: str | None = None

    def __post_init__(self) -> None:
        if self.status not in ALLOWED_STATUS[self.disposition]:
            raise ContentProtocolError(
                f"status {self.status.value!r} is not allowed in {self.disposition.value}"
            )

    @classmethod
    def for_message(
        cls, message: CpimMessage, disposition: DispositionType, status: ImdnStatus
    ) -> Imdn:
        """RFC 5438 sections 11.1.1-11.1.5: fields copied from the IM being reported on."""
        message_id = message.get("Message-ID", IMDN_NS)
        if not message_id:
            raise ContentProtocolError("the message carries no imdn.Message-ID to report on")
        recipients = message.recipients
        original = message.addresses("Original-To", IMDN_NS)
        subjects = message.subjects
        return cls(
            message_id=message_id,
            disposition=disposition,
            status=status,
            datetime=message.get("DateTime"),
            recipient_uri=recipients[0].uri if recipients else None,
            original_recipient_uri=original[0].uri if original else None,
            subject=subjects[0][0] if subjects else None,
        )

    def to_xml(self) -> bytes:
        root = ET.Element("imdn", {"xmlns": IMDN_XML_NS})
        sub_texts(
            root,
            ("message-id", self.message_id),
            ("datetime", self.datetime),
            ("recipient-uri", self.recipient_uri),
            ("original-recipient-uri", self.original_recipient_uri),
            ("subject", self.subject),
        )
        status = sub(sub(root, self.disposition.value), "status")
        sub(status, self.status.value)
        return serialize(root)


def parse_imdn(data: bytes) -> Imdn:
    """Parse a message/imdn+xml document; a missing <datetime> is tolerated (seen in RCS)."""
    root = parse_xml(data)
    expect_root(root, IMDN_XML_NS, "imdn")
    disposition, status = _disposition(root)
    return Imdn(
        message_id=required_text(root, IMDN_XML_NS, "message-id"),
        disposition=disposition,
        status=status,
        datetime=child_text(root, IMDN_XML_NS, "datetime"),
        recipient_uri=child_text(root, IMDN_XML_NS, "recipient-uri"),
        original_recipient_uri=child_text(root, IMDN_XML_NS, "original-recipient-uri"),
        subject=child_text(root, IMDN_XML_NS, "subject"),
    )


def _disposition(root: ET.Element) -> tuple[DispositionType, ImdnStatus]:
    found = [d for d in DispositionType if child(root, IMDN_XML_NS, d.value) is not None]
    if len(found) != 1:
        raise XmlError(f"IMDN must carry exactly one notification element, found {len(found)}")
    disposition = found[0]
    status_elem = child(child(root, IMDN_XML_NS, disposition.value), IMDN_XML_NS, "status")  # type: ignore[arg-type]
    if status_elem is None:
        raise XmlError(f"<{disposition.value}> lacks <status>")
    values = [c.tag for c in status_elem if c.tag.startswith("{" + IMDN_XML_NS + "}")]
    statuses = {s for s in ImdnStatus if qname(IMDN_XML_NS, s.value) in values}
    if len(values) != 1 or len(statuses) != 1:
        raise XmlError(f"<{disposition.value}> <status> must hold exactly one known status")
    status = statuses.pop()
    if status not in ALLOWED_STATUS[disposition]:
        raise XmlError(f"status {status.value!r} is not allowed in {disposition.value}")
    return disposition, status


def build_imdn_message(
    imdn: Imdn,
    *,
    message_id: str,
    sender: CpimAddress | None = None,
    recipient: CpimAddress | None = None,
    date_time: datetime | str | None = None,
    imdn_routes: Sequence[CpimAddress] = (),
    prefix: str = "imdn",
) -> CpimMessage:
    """RFC 5438 section 7.2.1: the CPIM wrapper of an IMDN, Content-Disposition: notification."""
    headers = [(f"{prefix}.Message-ID", message_id)]
    headers += [(f"{prefix}.IMDN-Route", str(route)) for route in imdn_routes]
    return build_cpim(
        IMDN_CONTENT_TYPE,
        imdn.to_xml(),
        sender=sender,
        recipients=[recipient] if recipient else (),
        date_time=date_time,
        namespaces=[(prefix, IMDN_NS)],
        headers=headers,
        content_headers=[("Content-Disposition", NOTIFICATION_DISPOSITION)],
    )


def imdn_reply(
    message: CpimMessage,
    disposition: DispositionType,
    status: ImdnStatus,
    *,
    message_id: str,
    sender: CpimAddress | None = None,
    date_time: datetime | str | None = None,
) -> CpimMessage | None:
    """The IMDN answering `message`, or None when the sender did not ask for it.

    RFC 5438 section 7.2.1: IMDN-Record-Route values become IMDN-Route;
    the IMDN goes to the IM's From.
    """
    if not notification_wanted(requested_notifications(message), disposition, status):
        return None
    routes = message.addresses("IMDN-Record-Route", IMDN_NS)
    return build_imdn_message(
        Imdn.for_message(message, disposition, status),
        message_id=message_id,
        sender=sender,
        recipient=message.sender,
        date_time=date_time,
        imdn_routes=routes,
    )
