"""The SDP offer of a CPM INVITE: plain, or one part of multipart/mixed.

A file transfer INVITE (seed 003, RFC 5547) carries a CPIM part with the
``imdn.Message-ID`` beside the SDP part (and a resource list for a group);
the UE that answers and the AS that anchors both need the SDP out of it, and
the AS puts its own SDP back in place of the caller's.
"""

from __future__ import annotations

from ..content import ContentError
from ..content.multipart import BodyPart, Multipart, build_multipart, parse_multipart
from ..sdp import MediaDescription, SessionDescription
from ..sip.message import Request

__all__ = ["msrp_media", "offer_parts", "with_sdp"]

SDP = "application/sdp"


def offer_parts(request: Request) -> tuple[bytes | None, Multipart | None]:
    """The SDP of an INVITE, plain or inside multipart/mixed (seed 003: CPIM + SDP
    (+ resource list)), and the multipart itself when there is one."""
    ctype = request.content_type
    if ctype is None or not request.body:
        return None, None
    if ctype.mime == SDP:
        return request.body, None
    if ctype.mime != "multipart/mixed":
        return None, None
    try:
        multipart = parse_multipart(request.body, str(ctype))
    except ContentError:
        return None, None
    part = multipart.find(SDP)
    return (part.body if part is not None else None), multipart


def with_sdp(multipart: Multipart | None, sdp_body: bytes) -> tuple[bytes, str | None]:
    """``sdp_body`` alone, or in place of the SDP part of ``multipart``; the body and
    its Content-Type (None: the body is plain SDP)."""
    if multipart is None:
        return sdp_body, None
    parts = [BodyPart([("Content-Type", SDP)], sdp_body)
             if p.content_type == SDP else p for p in multipart.parts]
    rebuilt = build_multipart(parts, multipart.subtype)
    return rebuilt.to_bytes(), rebuilt.content_type


def msrp_media(description: SessionDescription) -> MediaDescription | None:
    """The first MSRP media line that is not rejected (port 0), if any."""
    return next((m for m in description.media if m.is_msrp and not m.is_rejected), None)
