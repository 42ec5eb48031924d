"""The answerer side of the offer/answer model (RFC 3264) for audio and MSRP media.

``answer(offer, caps)`` builds an answer with one m= line per offered m= line,
in the same order; streams we cannot serve are rejected with port 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .attributes import Direction, FileRange, RtpMap, Setup
from .errors import NoCommonCodec, SdpError, SdpUsageError
from .model import Attribute, Connection, MediaDescription, Origin, SessionDescription, Timing

log = logging.getLogger(__name__)

# Seconds between the NTP epoch (1900) and the Unix epoch (1970), RFC 8866 section 5.2.
_NTP_OFFSET = 2208988800

PathFactory = Callable[[int, MediaDescription], Sequence[str]]


@dataclass(slots=True, frozen=True)
class Codec:
    """An RTP payload format we can receive; ``payload_type`` set for static types."""

    encoding_name: str
    clock_rate: int
    channels: int = 1
    payload_type: int | None = None
    fmtp: str | None = None

    def matches(self, rtpmap: RtpMap) -> bool:
        """Same encoding name (case-insensitive), clock rate and channels (RFC 3264 section 6.1)."""
        try:
            channels = rtpmap.channels
        except SdpError:
            return False
        return (rtpmap.encoding_name.casefold() == self.encoding_name.casefold()
                and rtpmap.clock_rate == self.clock_rate and channels == self.channels)

    @property
    def is_telephone_event(self) -> bool:
        return self.encoding_name.casefold() == "telephone-event"


PCMU = Codec("PCMU", 8000, payload_type=0)
PCMA = Codec("PCMA", 8000, payload_type=8)
TELEPHONE_EVENT = Codec("telephone-event", 8000, fmtp="0-15")  # the DTMF events (RFC 4733 3.2)


@dataclass(slots=True, kw_only=True)
class LocalCapabilities:
    """What the answering endpoint supports and where it listens."""

    address: str
    addr_type: str = "IP4"
    origin_username: str = "-"
    session_id: str | None = None          # default: NTP time now
    session_version: str | None = None     # default: session_id
    session_name: str = "-"
    # audio (RTP/AVP)
    audio_port: int | None = None          # None: reject audio
    audio_codecs: Sequence[Codec] = (PCMU, PCMA, TELEPHONE_EVENT)
    audio_direction: Direction = Direction.SENDRECV
    ptime: int | None = None
    # RFC 3264 6.1 recommends the offer's order; "local" lists the offered formats in
    # audio_codecs order, so the peer sends with our preferred codec.
    audio_order: str = "local"
    # message (MSRP)
    msrp_path: Sequence[str] | PathFactory | None = None   # None: reject message media
    msrp_port: int | None = None           # default: port of our own (last) path URI
    msrp_protos: Sequence[str] = ("TCP/MSRP", "TCP/TLS/MSRP")
    accept_types: Sequence[str] = ("message/cpim", "text/plain")
    accept_wrapped_types: Sequence[str] = ()
    max_size: int | None = None
    setup: Setup = Setup.ACTIVE            # our role when the offer says actpass (RFC 6135)
    msrp_cema: bool = False
    message_direction: Direction = Direction.SENDRECV
    file_range: FileRange | None = None    # range to ask for on a file push
    request_whole_file: bool = False       # add file-range 1-<size> on a file push
    extra_attributes: dict[str, Sequence[Attribute]] = field(default_factory=dict)

    def path_for(self, index: int, offered: MediaDescription) -> list[str] | None:
        if self.msrp_path is None:
            return None
        if callable(self.msrp_path):
            return list(self.msrp_path(index, offered))
        return list(self.msrp_path)


def answer(offer: SessionDescription, caps: LocalCapabilities) -> SessionDescription:
    """Build the SDP answer to ``offer`` (RFC 3264 section 6)."""
    session_id = caps.session_id or str(int(time.time()) + _NTP_OFFSET)
    sd = SessionDescription(
        origin=Origin(caps.origin_username, session_id, caps.session_version or session_id,
                      "IN", caps.addr_type, caps.address),
        session_name=caps.session_name,
        connection=Connection("IN", caps.addr_type, caps.address),
        # The t= line of the answer equals the offer's (RFC 3264 section 6).
        times=[Timing(t.start, t.stop, list(t.repeats)) for t in offer.times] or [Timing()],
    )
    for index, offered in enumerate(offer.media):
        sd.media.append(_answer_media(offer, index, offered, caps))
    if all(m.is_rejected for m in sd.media) and caps.audio_port is not None and any(
            _is_audio(m) and not m.is_rejected and not _has_audio_codec(m, caps) for m in offer.media):
        raise NoCommonCodec([_codec_name(c) for c in caps.audio_codecs])
    return sd


def _is_audio(m: MediaDescription) -> bool:
    return m.media == "audio" and m.proto.upper() == "RTP/AVP"


def _has_audio_codec(offered: MediaDescription, caps: LocalCapabilities) -> bool:
    try:
        chosen = _intersect_codecs(offered, caps.audio_codecs, "offer")
    except SdpError:
        return False
    return any(not codec.is_telephone_event for _, _, codec in chosen)


def _codec_name(codec: Codec) -> str:
    return f"{codec.encoding_name}/{codec.clock_rate}"


def _answer_media(offer: SessionDescription, index: int, offered: MediaDescription,
                  caps: LocalCapabilities) -> MediaDescription:
    if offered.is_rejected:
        return reject(offered)
    try:
        if _is_audio(offered):
            answered = _answer_audio(offer, offered, caps)
        elif offered.media == "message" and offered.is_msrp:
            answered = _answer_message(offer, index, offered, caps)
        else:
            answered = None
    except SdpError as exc:
        log.info("rejecting m=%s stream %d: %s", offered.media, index, exc.reason)
        answered = None
    if answered is None:
        return reject(offered)
    for attr in caps.extra_attributes.get(offered.media, ()):
        answered.attributes.append(Attribute(attr.name, attr.value))
    return answered


def reject(offered: MediaDescription) -> MediaDescription:
    """A port-0 m= line answering ``offered`` (RFC 3264 section 6; RFC 5547 section 8.3)."""
    rejected = MediaDescription(offered.media, 0, offered.proto, list(offered.formats))
    if offered.is_msrp:
        for name in ("file-selector", "file-transfer-id"):
            attr = offered.attribute(name)
            if attr is not None:
                rejected.attributes.append(Attribute(attr.name, attr.value))
    return rejected


def offered_direction(offer: SessionDescription, offered: MediaDescription) -> Direction:
    """The offered direction, with c=0.0.0.0 read as "do not send to me" (RFC 3264 section 8.4)."""
    direction = offer.direction_of(offered)
    if offer.is_legacy_hold(offered):
        return direction.restricted_to(Direction.SENDONLY)
    return direction


def answer_direction(offered: Direction, local: Direction) -> Direction:
    """Mirror the offered direction, limited by local preference (RFC 3264 section 6.1)."""
    return offered.mirrored().restricted_to(local)


def _set_direction(answered: MediaDescription, offer: SessionDescription,
                   offered: MediaDescription, direction: Direction) -> None:
    # Say sendrecv only if the offer spelled a direction out; it is the default.
    explicit = offered.direction or offer.direction
    if direction is not Direction.SENDRECV or explicit is not None:
        answered.direction = direction


# --- audio ---------------------------------------------------------------------


def _answer_audio(offer: SessionDescription, offered: MediaDescription,
                  caps: LocalCapabilities) -> MediaDescription | None:
    if caps.audio_port is None:
        return None
    chosen = _intersect_codecs(offered, caps.audio_codecs, caps.audio_order)
    if not any(not codec.is_telephone_event for _, _, codec in chosen):
        return None  # telephone-event alone carries no audio
    answered = MediaDescription("audio", caps.audio_port, offered.proto, [fmt for fmt, _, _ in chosen])
    for fmt, rtpmap, codec in chosen:
        answered.attributes.append(Attribute("rtpmap", f"{fmt} {rtpmap.encoding_name}/{rtpmap.clock_rate}"
                                             + (f"/{rtpmap.encoding_parameters}"
                                                if rtpmap.encoding_parameters else "")))
        fmtp = codec.fmtp or _offered_fmtp(offered, fmt)
        if fmtp:
            answered.attributes.append(Attribute("fmtp", f"{fmt} {fmtp}"))
    if caps.ptime is not None:
        answered.attributes.append(Attribute("ptime", str(caps.ptime)))
    local = caps.audio_direction
    _set_direction(answered, offer, offered, answer_direction(offered_direction(offer, offered), local))
    return answered


def _intersect_codecs(offered: MediaDescription, codecs: Sequence[Codec],
                      order: str) -> list[tuple[str, RtpMap, Codec]]:
    """Offered formats we support, in the offer's or our order (RFC 3264 section 6.1)."""
    chosen = []
    for fmt in offered.formats:
        rtpmap = offered.rtpmap(fmt)
        codec = None if rtpmap is None else next((c for c in codecs if c.matches(rtpmap)), None)
        if rtpmap is not None and codec is not None:
            chosen.append((fmt, rtpmap, codec))
    if order == "local":
        chosen.sort(key=lambda item: list(codecs).index(item[2]))
    return chosen


def _offered_fmtp(offered: MediaDescription, fmt: str) -> str | None:
    fmtp = offered.fmtp(fmt)
    return None if fmtp is None else fmtp.parameters


# --- message (MSRP) ------------------------------------------------------------


def _answer_message(offer: SessionDescription, index: int, offered: MediaDescription,
                    caps: LocalCapabilities) -> MediaDescription | None:
    if offered.proto.upper() not in (p.upper() for p in caps.msrp_protos):
        return None
    path = caps.path_for(index, offered)
    if not path:
        return None
    direction = answer_direction(offered_direction(offer, offered), caps.message_direction)
    accept = _answer_accept_types(offered, caps, direction)
    if not accept:
        return None
    port = caps.msrp_port if caps.msrp_port is not None else msrp_uri_port(path[-1]) or 9
    answered = MediaDescription("message", port, offered.proto, ["*"])
    answered.accept_types = accept
    wrapped = _answer_wrapped_types(offered, caps)
    if wrapped:
        answered.accept_wrapped_types = wrapped
    answered.path = path
    if caps.max_size is not None:
        answered.max_size = caps.max_size  # what we can receive (RFC 4975 section 8.6)
    answered.setup = (offered.setup or Setup.ACTIVE).answer_role(caps.setup)
    _answer_file_transfer(offered, answered, direction, caps)
    if offered.msrp_cema and caps.msrp_cema:
        answered.msrp_cema = True  # RFC 6714 section 4.3
    _set_direction(answered, offer, offered, direction)
    return answered


def media_type_matches(pattern: str, media_type: str) -> bool:
    """Whether ``pattern`` ("*", "type/*" or "type/subtype") covers ``media_type``."""
    pattern, media_type = pattern.casefold(), media_type.casefold()
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        return media_type.startswith(pattern[:-1])
    return pattern == media_type


def _overlaps(local: str, offered: str) -> bool:
    return media_type_matches(local, offered) or media_type_matches(offered, local)


def intersect_types(local: Sequence[str], offered: Sequence[str]) -> list[str]:
    """Local entries (in local order, as written locally) that overlap an offered entry."""
    return [entry for entry in local if any(_overlaps(entry, o) for o in offered)]


def _answer_accept_types(offered: MediaDescription, caps: LocalCapabilities,
                         direction: Direction) -> list[str]:
    offered_types = list(offered.accept_types or [])
    selector = offered.file_selector
    if selector is not None and selector.type is not None and direction.receives:
        offered_types.append(selector.type)  # a pushed file arrives as its own type
    accept = intersect_types(caps.accept_types, offered_types)
    if not accept and not direction.receives:
        return list(caps.accept_types)  # we only send: accept-types is a formality
    return accept


def _answer_wrapped_types(offered: MediaDescription, caps: LocalCapabilities) -> list[str]:
    offered_wrapped = offered.accept_wrapped_types
    if offered_wrapped is None:
        return []
    return intersect_types(caps.accept_wrapped_types, offered_wrapped)


def _answer_file_transfer(offered: MediaDescription, answered: MediaDescription,
                          direction: Direction, caps: LocalCapabilities) -> None:
    """Mirror file-selector and file-transfer-id (RFC 5547 sections 8.3.1, 8.3.2)."""
    selector = offered.attribute("file-selector")
    if selector is None:
        return
    answered.attributes.append(Attribute(selector.name, selector.value))
    transfer_id = offered.file_transfer_id
    if transfer_id is not None:
        answered.file_transfer_id = transfer_id
    if not direction.receives:
        return
    file_range = offered.file_range or caps.file_range
    size = offered.file_selector.size if offered.file_selector else None
    if file_range is None and caps.request_whole_file and size:
        file_range = FileRange(1, size)
    if file_range is not None:
        answered.file_range = file_range


def msrp_uri_port(uri: str) -> int | None:
    """The port of an MSRP URI's authority, or None (RFC 4975 section 6)."""
    _, sep, rest = uri.partition("://")
    authority = rest.split("/", 1)[0].rpartition("@")[2]
    if not sep:
        return None
    if authority.startswith("["):
        authority = authority.partition("]")[2]
    port = authority.rpartition(":")[2] if ":" in authority else ""
    return int(port) if port.isascii() and port.isdigit() and int(port) <= 65535 else None


# --- the offerer side (audio) ----------------------------------------------------

FIRST_DYNAMIC_PT = 101


def audio_offer(caps: LocalCapabilities, *, direction: Direction | None = None,
                previous: SessionDescription | None = None) -> SessionDescription:
    """An audio offer (RFC 3264 section 5): ``caps.audio_codecs`` in preference order
    (static payload types as such, dynamic ones from 101), their rtpmap/fmtp,
    ``caps.ptime`` and ``direction`` (default ``caps.audio_direction``; sendrecv is
    left implicit).  With ``previous`` (our last offer or answer in this
    session) it is a re-offer: same o= session id, version + 1 if anything changed
    (section 8)."""
    if caps.audio_port is None:
        raise SdpUsageError("an audio offer needs caps.audio_port")
    session_id = caps.session_id or str(int(time.time()) + _NTP_OFFSET)
    sd = SessionDescription(
        origin=Origin(caps.origin_username, session_id, caps.session_version or session_id,
                      "IN", caps.addr_type, caps.address),
        session_name=caps.session_name,
        connection=Connection("IN", caps.addr_type, caps.address),
    )
    m = MediaDescription("audio", caps.audio_port, "RTP/AVP", [])
    dynamic = FIRST_DYNAMIC_PT
    for codec in caps.audio_codecs:
        if codec.payload_type is not None:
            pt = codec.payload_type
        else:
            pt, dynamic = dynamic, dynamic + 1
        m.formats.append(str(pt))
        channels = f"/{codec.channels}" if codec.channels != 1 else ""
        m.attributes.append(Attribute("rtpmap", f"{pt} {codec.encoding_name}/{codec.clock_rate}{channels}"))
        if codec.fmtp:
            m.attributes.append(Attribute("fmtp", f"{pt} {codec.fmtp}"))
    if not m.formats:
        raise SdpUsageError("an audio offer needs at least one codec")
    if caps.ptime is not None:
        m.attributes.append(Attribute("ptime", str(caps.ptime)))
    wanted = caps.audio_direction if direction is None else direction
    if wanted is not Direction.SENDRECV:
        m.direction = wanted
    for attr in caps.extra_attributes.get("audio", ()):
        m.attributes.append(Attribute(attr.name, attr.value))
    sd.media.append(m)
    return sd if previous is None else next_version(previous, sd)


def next_version(previous: SessionDescription, new: SessionDescription) -> SessionDescription:
    """``new`` with ``previous``'s o= line, its version incremented by one if the
    description changed, kept if not (RFC 3264 section 8)."""
    old = previous.origin
    new.origin = Origin(old.username, old.sess_id, old.sess_version, old.net_type, old.addr_type,
                        old.unicast_address)
    if str(new) != str(previous):
        new.origin.sess_version = str(int(old.sess_version) + 1)
    return new


def hold_direction(current: Direction) -> Direction:
    """What to offer to put a stream on hold: stop receiving (RFC 3264 section 8.4)."""
    return current.restricted_to(Direction.SENDONLY)


def resume_direction(current: Direction) -> Direction:
    """What to offer to take a stream off hold: receive again (the inverse of hold_direction)."""
    return Direction.from_flags(sends=current.sends, receives=True)
