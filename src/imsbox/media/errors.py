"""The media layer's error tree (see imsbox.errors for the split).

    MediaError (ValueError)
    ├── MediaUsageError (LocalProtocolError)   our code configured a session wrongly
    └── RtpProtocolError (RemoteProtocolError) a malformed RTP/RTCP packet or
                                               telephone-event payload

A session never raises ``RtpProtocolError`` out of its receive path: it
counts the packet (``RtpStats.malformed``) and drops it.
"""

from __future__ import annotations

from ..errors import ImsboxError, LocalProtocolError, RemoteProtocolError

__all__ = ["MediaError", "MediaUsageError", "RtpProtocolError"]


class MediaError(ImsboxError, ValueError):
    """Root of the media layer's errors; ``reason`` names the fault."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class MediaUsageError(MediaError, LocalProtocolError):
    """Our code asked for something the media layer cannot do (unknown codec, bad WAV)."""


class RtpProtocolError(MediaError, RemoteProtocolError):
    """A peer's RTP or RTCP packet is malformed (RFC 3550 section 5.1, 6.4)."""
