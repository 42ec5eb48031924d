"""What a negotiated audio stream means for the RTP session: ``AudioParams.from_sdp``."""

from __future__ import annotations

from dataclasses import dataclass

from ..sdp import Direction, MediaDescription, SessionDescription, offered_direction
from .errors import MediaUsageError

__all__ = ["AudioParams", "AUDIO_ENCODINGS"]

AUDIO_ENCODINGS = ("PCMU", "PCMA")


@dataclass(slots=True)
class AudioParams:
    """Where and how to send, what to accept: the RTP session's configuration.

    ``payload_type``/``encoding`` is what we send; ``receive`` maps every
    payload type we accept to its encoding (the peer may switch among the
    formats of the answer, RFC 3264 section 5.1).
    """

    remote_host: str | None
    remote_port: int
    payload_type: int = 0
    encoding: str = "PCMU"
    receive: dict[int, str] | None = None
    telephone_event: int | None = 101
    ptime: int = 20
    direction: Direction = Direction.SENDRECV
    remote_rtcp_port: int | None = None    # default remote_port + 1 (or remote_port with rtcp_mux)
    rtcp_mux: bool = False

    def __post_init__(self) -> None:
        if self.encoding.upper() not in AUDIO_ENCODINGS:
            raise MediaUsageError(f"unsupported audio encoding {self.encoding!r}")
        if self.receive is None:
            self.receive = {self.payload_type: self.encoding.upper()}

    @property
    def rtcp_port(self) -> int:
        if self.remote_rtcp_port is not None:
            return self.remote_rtcp_port
        return self.remote_port if self.rtcp_mux else self.remote_port + 1

    @classmethod
    def from_sdp(cls, local: SessionDescription, remote: SessionDescription,
                 index: int | None = None) -> AudioParams:
        """Our side of the audio stream ``index`` (default: the first audio m= line).

        ``local`` and ``remote`` are our and the peer's descriptions (offer and
        answer, either way round).  We send the first format of the answer both
        sides support; a held peer (c=0.0.0.0) gets nothing.
        """
        ours, theirs = _audio_pair(local, remote, index)
        receive = {}
        te = None
        for fmt in ours.formats:
            rtpmap = ours.rtpmap(fmt)
            if rtpmap is None:
                continue
            name = rtpmap.encoding_name.upper()
            if name in AUDIO_ENCODINGS and rtpmap.clock_rate == 8000:
                receive[rtpmap.payload_type] = name
        send_pt, send_name = None, None
        for fmt in theirs.formats:
            rtpmap = theirs.rtpmap(fmt)
            if rtpmap is None or rtpmap.clock_rate != 8000:
                continue
            name = rtpmap.encoding_name.upper()
            if name == "TELEPHONE-EVENT":
                te = rtpmap.payload_type if te is None else te
            elif name in AUDIO_ENCODINGS and send_pt is None:
                send_pt, send_name = rtpmap.payload_type, name
        if send_pt is None or send_name is None or not receive:
            raise MediaUsageError("no common audio codec in the negotiated descriptions")
        connection = remote.connection_for(theirs)
        held = remote.is_legacy_hold(theirs)
        direction = local.direction_of(ours)
        their_direction = offered_direction(remote, theirs)
        direction = direction.restricted_to(their_direction.mirrored())
        ptime = _ptime(theirs) or _ptime(ours) or 20
        rtcp_port = _rtcp_port(theirs)
        return cls(remote_host=None if connection is None or held else connection.address.split("/")[0],
                   remote_port=theirs.port, payload_type=send_pt, encoding=send_name,
                   receive=receive, telephone_event=te, ptime=ptime, direction=direction,
                   remote_rtcp_port=rtcp_port,
                   rtcp_mux=ours.has_attribute("rtcp-mux") and theirs.has_attribute("rtcp-mux"))


def _audio_pair(local: SessionDescription, remote: SessionDescription,
                index: int | None) -> tuple[MediaDescription, MediaDescription]:
    if index is None:
        index = next((i for i, m in enumerate(local.media) if m.media == "audio" and m.port), -1)
    if not 0 <= index < min(len(local.media), len(remote.media)):
        raise MediaUsageError("no audio stream in both descriptions")
    ours, theirs = local.media[index], remote.media[index]
    if ours.media != "audio" or theirs.media != "audio" or not ours.port or not theirs.port:
        raise MediaUsageError(f"stream {index} is not an accepted audio stream")
    return ours, theirs


def _ptime(m: MediaDescription) -> int | None:
    value = m.attribute("ptime")
    text = value.value if value is not None else None
    return int(text) if text and text.isdigit() and 10 <= int(text) <= 200 else None


def _rtcp_port(m: MediaDescription) -> int | None:
    value = m.attribute("rtcp")  # RFC 3605: a=rtcp:<port> [address]
    text = (value.value or "").split(" ")[0] if value is not None else ""
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None
