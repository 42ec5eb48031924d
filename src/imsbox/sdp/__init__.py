"""SDP: session descriptions (RFC 8866/4566) and offer/answer (RFC 3264) for audio and MSRP.

Parsing and serializing::

    sd = parse(body)                 # bytes or str; CRLF or LF line ends
    bytes(sd), str(sd)               # CRLF line ends; a well-formed body round-trips byte for byte
    SessionDescription.parse(body)   # same as parse()

Malformed input raises ``SdpError`` (a ValueError) whose ``reason`` names the
fault and whose ``line`` gives the 1-based line number when known.  v=, o=
and s= must be the first three lines; a missing t= line is tolerated (some
RCS servers omit it); c= must be present at session level or in every
non-rejected m= section.

Model (dataclasses, mutable)::

    SessionDescription(version=0, origin=Origin(...), session_name="-",
                       connection=Connection|None, times=[Timing], attributes=[Attribute],
                       media=[MediaDescription], other=[Line])
    MediaDescription(media, port, proto, formats, port_count=None,
                     connection=None, attributes=[], other=[])
    Attribute(name, value=None)      # value None for property attributes (a=sendonly)
    Origin(username, sess_id, sess_version, net_type, addr_type, unicast_address)
    Connection(net_type, addr_type, address)   .is_legacy_hold  (c=IN IP4 0.0.0.0)
    Timing(start=0, stop=0, repeats=[])
    Line(type, value)                # i=, u=, e=, p=, b=, z=, k= and unknown letters, verbatim

Attributes are stored as raw text in order; typed accessors parse on access
(raising SdpError on malformed values) and setters rewrite the attribute:

* both levels: ``attribute(name)``, ``attribute_values(name)``, ``has_attribute``,
  ``set_attribute(name, value=None)``, ``remove_attribute(name)``,
  ``direction`` (Direction | None, explicit at that level)
* SessionDescription: ``direction_of(m)`` (media, else session, else sendrecv),
  ``connection_for(m)``, ``is_legacy_hold(m)``
* MediaDescription: ``rtpmaps``, ``rtpmap(fmt)`` (falls back to static types
  0/3/8/9/18), ``fmtp(fmt)``, ``is_rejected``, ``is_msrp``, and for MSRP
  ``path`` (list[str]), ``accept_types``, ``accept_wrapped_types``,
  ``max_size``, ``setup`` (Setup), ``msrp_cema`` (bool), ``file_selector``
  (FileSelector), ``file_transfer_id``, ``file_disposition``, ``file_date``
  (FileDate), ``file_range`` (FileRange), ``file_icon`` (cid: URL).

Value types: ``Direction`` (SENDRECV/SENDONLY/RECVONLY/INACTIVE; ``mirrored()``,
``restricted_to()``), ``Setup`` (ACTIVE/PASSIVE/ACTPASS/HOLDCONN;
``answer_role(preferred)``), ``RtpMap``, ``Fmtp``, ``FileSelector(name, type,
type_parameters, size, hash)``, ``FileHash(algorithm, digest)``,
``FileDate(creation, modification, read)``, ``FileRange(start, stop|None)``.

Offer/answer::

    answer(offer: SessionDescription, caps: LocalCapabilities) -> SessionDescription

One answer m= line per offered m= line, same order; unsupported streams get
port 0 (``reject(m)``).  Audio (RTP/AVP): offered formats we support, in our
``audio_codecs`` order (``audio_order="offer"``: the offer's), keeping the offer's
payload numbers; telephone-event alone is rejected; an offer whose only
streams are audio without a common codec raises ``NoCommonCodec`` (488, its
``codecs`` list ours).
Direction mirrors the offer, limited by local preference; c=0.0.0.0 counts as
a sendonly offer.  Message (TCP/MSRP, TCP/TLS/MSRP): accept-types and
accept-wrapped-types are the local entries overlapping offered ones (``*``
and ``type/*`` match either way; a pushed file's type counts as offered);
setup active<->passive, actpass -> ``caps.setup`` (active by default);
max-size is ours; msrp-cema only if both support it; file-selector and
file-transfer-id are mirrored, file-range added on a push if the offer has
one or caps ask.  ``LocalCapabilities``, ``Codec`` (PCMU, PCMA,
TELEPHONE_EVENT), ``offered_direction``, ``answer_direction``,
``intersect_types``, ``media_type_matches``, ``msrp_uri_port`` are public too.

The offerer side, audio::

    audio_offer(caps, direction=None, previous=None) -> SessionDescription

PCMU 0, PCMA 8, telephone-event 101 (fmtp 0-15) by default, ptime, direction;
``previous`` makes it a re-offer keeping o= with the version rules of RFC 3264
section 8 (``next_version``).  ``hold_direction(d)``/``resume_direction(d)``:
sendrecv <-> sendonly, recvonly <-> inactive.
"""

from .attributes import (
    Direction,
    FileDate,
    FileHash,
    FileRange,
    FileSelector,
    Fmtp,
    RtpMap,
    Setup,
)
from .errors import NoCommonCodec, SdpError, SdpProtocolError, SdpUsageError
from .model import (
    STATIC_PAYLOAD_TYPES,
    Attribute,
    Connection,
    Line,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
    parse,
)
from .offer_answer import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    LocalCapabilities,
    answer,
    audio_offer,
    hold_direction,
    next_version,
    resume_direction,
    answer_direction,
    intersect_types,
    media_type_matches,
    msrp_uri_port,
    offered_direction,
    reject,
)

__all__ = [
    "Attribute", "Codec", "Connection", "Direction", "FileDate", "FileHash", "FileRange",
    "FileSelector", "Fmtp", "Line", "LocalCapabilities", "MediaDescription", "Origin",
    "PCMA", "PCMU", "RtpMap", "STATIC_PAYLOAD_TYPES", "SdpError", "SdpProtocolError", "SdpUsageError",
    "SessionDescription",
    "Setup", "TELEPHONE_EVENT", "Timing", "answer", "answer_direction", "intersect_types",
    "media_type_matches", "msrp_uri_port", "offered_direction", "parse", "reject",
    "NoCommonCodec", "audio_offer", "hold_direction", "next_version", "resume_direction",
]
