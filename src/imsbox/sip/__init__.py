"""imsbox's SIP stack (RFC 3261 and friends).

Messages
    ``parse(data) -> Request | Response`` parses one complete message and
    raises ``ParseError`` (a ValueError with ``reason``, the ``status`` a UAS
    should answer and the ``partial`` message) on malformed input.
    ``bytes(message)`` is the wire form.  ``Request(method, uri, headers, body)``
    and ``Response(status, reason, headers, body)`` build messages;
    ``Response.for_request(req, status, ...)`` copies the 8.2.6 headers.

Headers
    ``msg.headers`` keeps every line in order (``get``, ``get_all``,
    ``values``, ``add``, ``push``, ``pop_first``, ``set``, ``remove``); use the
    ``msg.*_header`` methods to edit so the typed cache stays in step.  Typed
    views: ``msg.via``, ``top_via``, ``from_``, ``to``, ``call_id``, ``cseq``,
    ``max_forwards``, ``contact``, ``route``, ``record_route``, ``path``,
    ``service_route``, ``content_type``, ``tokens(name)``, ``expires()``; other
    headers through the classes in ``imsbox.sip.headers`` (Event,
    SubscriptionState, Replaces, SessionExpires, RAck, FeatureSet ...).

URIs
    ``parse_uri(text)`` gives ``SipUri`` / ``TelUri`` / ``AbsoluteUri``;
    equality follows RFC 3261 19.1.4 (``uri_equal``).
"""

from .headers import (
    Contact, CSeq, Event, FeatureSet, HeaderError, Join, MediaType, NameAddr, Params,
    RAck, ReferredBy, Replaces, SessionExpires, SubscriptionState, Via,
)
from .errors import SipError, SipProtocolError, SipUsageError
from .message import Headers, Message, Request, Response, new_branch, new_tag
from .parser import ParseError, parse
from .uri import AbsoluteUri, SipUri, TelUri, Uri, UriError, parse_uri, uri_equal

__all__ = [
    "SipError", "SipProtocolError", "SipUsageError",
    "parse", "ParseError", "Request", "Response", "Message", "Headers",
    "HeaderError", "Via", "NameAddr", "Contact", "CSeq", "Event", "FeatureSet",
    "MediaType", "Params", "RAck", "ReferredBy", "Replaces", "Join", "SessionExpires",
    "SubscriptionState", "SipUri", "TelUri", "AbsoluteUri", "Uri", "UriError",
    "parse_uri", "uri_equal", "new_branch", "new_tag",
]
