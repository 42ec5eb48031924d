"""Message body formats: build and parse what SIP and MSRP messages carry.

Every parser takes ``bytes`` and returns typed values; every fault raises
:class:`ContentError` (a ``ValueError``; :class:`XmlError` for XML bodies)
whose message names the fault. XML is parsed through :mod:`.xmlsafe`
(defusedxml: no DTDs, entities or external references; size and depth
limits). Builders return documents as ``bytes`` via ``to_xml()`` /
``to_bytes()``.

Media types
    CPIM, IMDN, ISCOMPOSING, MULTIPART_MIXED, MULTIPART_RELATED,
    RESOURCE_LISTS, CONFERENCE_INFO, DIALOG_INFO, SIPFRAG, SDP, TEXT_PLAIN.

CPIM (RFC 3862) - :mod:`.cpim`
    ``parse_cpim(data) -> CpimMessage``;
    ``build_cpim(content_type, body, *, sender=None, recipients=(), cc=(),
    date_time=None, subjects=(), namespaces=(), require=(), headers=(),
    content_headers=(), content_length=True) -> CpimMessage``.
    ``CpimMessage``: ``headers`` (ordered ``CpimHeader``), ``content_headers``,
    ``body``; ``get(name, namespace)``, ``get_all``, ``namespaces()``,
    ``sender``, ``recipients``, ``cc``, ``datetime``, ``subjects``,
    ``require``, ``content_type``, ``to_bytes()``.
    ``CpimAddress(uri, display_name)``; ``cpim_escape`` / ``cpim_unescape``.

IMDN (RFC 5438) - :mod:`.imdn`
    ``Imdn(message_id, disposition, status, datetime, recipient_uri,
    original_recipient_uri, subject)``, ``Imdn.for_message(msg, ...)``,
    ``parse_imdn(data)``; ``DispositionType``, ``ImdnStatus``,
    ``NotificationRequest``; ``requested_notifications(msg)``,
    ``notification_wanted(requests, disposition, status)``,
    ``parse_disposition_notification`` / ``format_disposition_notification``;
    ``build_imdn_message(imdn, *, message_id, sender, recipient, date_time)``
    and ``imdn_reply(msg, disposition, status, *, message_id, ...)``
    produce the CPIM wrapper with ``Content-Disposition: notification``.

isComposing (RFC 3994) - :mod:`.iscomposing`
    ``IsComposing(state, lastactive, contenttype, refresh)``,
    ``parse_iscomposing(data)``; sans-I/O ``MessageComposer`` (sender:
    ``composing(now)``, ``content_sent(now)``, ``on_timer(now)``,
    ``next_deadline()``, returns ``SendStatus`` actions) and
    ``StatusMessageReceiver`` (``status_received(doc, now)``,
    ``content_received(now)``, ``on_timer(now)``; returns
    ``ComposingIndication`` actions).

Multipart (RFC 2046) - :mod:`.multipart`
    ``parse_multipart(body, content_type) -> Multipart``,
    ``build_multipart(parts, subtype="mixed", boundary=None, **params)``;
    ``Multipart.content_type`` gives the header value; ``BodyPart(headers, body)``.
    ``parse_content_type(value) -> ContentType`` from :mod:`.mime`.

resource-lists (RFC 4826, copy control RFC 5364) - :mod:`.resource_lists`
    ``ResourceLists``, ``ResourceList``, ``Entry(uri, display_name,
    copy_control, anonymize)``, ``CopyControl``; ``parse_resource_lists``,
    ``build_recipient_list([(uri, CopyControl.TO), ...])``.

conference-info (RFC 4575) - :mod:`.conference_info`
    ``ConferenceInfo`` and its parts, ``parse_conference_info``,
    ``apply_notification(local, update)`` / ``merge_partial(full, partial)``.

dialog-info (RFC 4235) - :mod:`.dialog_info`
    ``DialogInfo``, ``Dialog``, ``DialogState``, ``parse_dialog_info``,
    ``apply_notification(local, update)``.

sipfrag (RFC 3420) - :mod:`.sipfrag`
    ``SipFrag.status(200, "OK")``, ``parse_sipfrag(data)``.
"""

from __future__ import annotations

from .conference_info import (
    CONFERENCE_INFO_NS,
    ConferenceInfo,
    EndpointStatus,
    parse_conference_info,
)
from .cpim import (
    CPIM_HEADERS_NS,
    CpimAddress,
    CpimHeader,
    CpimMessage,
    build_cpim,
    cpim_escape,
    cpim_unescape,
    parse_cpim,
)
from .dialog_info import DIALOG_INFO_NS, Dialog, DialogInfo, DialogState, parse_dialog_info
from .errors import ContentError, ContentProtocolError, ContentUsageError, XmlError
from .imdn import (
    IMDN_NS,
    IMDN_XML_NS,
    DispositionType,
    Imdn,
    ImdnStatus,
    NotificationRequest,
    build_imdn_message,
    imdn_reply,
    notification_wanted,
    parse_disposition_notification,
    parse_imdn,
    requested_notifications,
)
from .iscomposing import (
    ComposingIndication,
    ComposingState,
    IsComposing,
    MessageComposer,
    SendStatus,
    StatusMessageReceiver,
    parse_iscomposing,
)
from .mime import ContentType, parse_content_type
from .multipart import BodyPart, Multipart, build_multipart, parse_multipart
from .resource_lists import (
    COPY_CONTROL_NS,
    RESOURCE_LISTS_NS,
    CopyControl,
    Entry,
    ResourceList,
    ResourceLists,
    build_recipient_list,
    parse_resource_lists,
)
from .sipfrag import SipFrag, parse_sipfrag
from .xmlsafe import parse_xml

CPIM = "message/cpim"
IMDN = "message/imdn+xml"
ISCOMPOSING = "application/im-iscomposing+xml"
MULTIPART_MIXED = "multipart/mixed"
MULTIPART_RELATED = "multipart/related"
RESOURCE_LISTS = "application/resource-lists+xml"
CONFERENCE_INFO = "application/conference-info+xml"
DIALOG_INFO = "application/dialog-info+xml"
SIPFRAG = "message/sipfrag"
SDP = "application/sdp"
TEXT_PLAIN = "text/plain"

__all__ = [
    "BodyPart", "COPY_CONTROL_NS", "CONFERENCE_INFO", "CONFERENCE_INFO_NS", "CPIM",
    "CPIM_HEADERS_NS", "ComposingIndication", "ComposingState", "ConferenceInfo",
    "ContentError", "ContentProtocolError", "ContentUsageError", "ContentType", "CopyControl",
    "CpimAddress", "CpimHeader", "CpimMessage",
    "DIALOG_INFO", "DIALOG_INFO_NS", "Dialog", "DialogInfo", "DialogState", "DispositionType",
    "EndpointStatus", "Entry", "IMDN", "IMDN_NS", "IMDN_XML_NS", "ISCOMPOSING", "Imdn",
    "ImdnStatus", "IsComposing", "MULTIPART_MIXED", "MULTIPART_RELATED", "MessageComposer",
    "Multipart", "NotificationRequest", "RESOURCE_LISTS", "RESOURCE_LISTS_NS", "ResourceList",
    "ResourceLists", "SDP", "SIPFRAG", "SendStatus", "SipFrag", "StatusMessageReceiver",
    "TEXT_PLAIN", "XmlError", "build_cpim", "build_imdn_message", "build_multipart",
    "build_recipient_list", "cpim_escape", "cpim_unescape", "imdn_reply", "notification_wanted",
    "parse_conference_info", "parse_content_type", "parse_cpim", "parse_dialog_info",
    "parse_disposition_notification", "parse_imdn", "parse_iscomposing", "parse_multipart",
    "parse_resource_lists", "parse_sipfrag", "parse_xml", "requested_notifications",
]
