"""The SDP layer's error tree (see imsbox.errors for the split).

    SdpError (ValueError)
    ├── SdpUsageError (LocalProtocolError)
    └── SdpProtocolError (RemoteProtocolError)  status 488: a malformed or
        │                                       unusable description
        └── NoCommonCodec                       an audio offer with none of our codecs;
                                                ``codecs`` lists ours for the 488

``reason`` names the fault and ``line`` (when known) where it is.
"""

from __future__ import annotations

from ..errors import ImsboxError, LocalProtocolError, RemoteProtocolError

__all__ = ["NoCommonCodec", "SdpError", "SdpProtocolError", "SdpUsageError"]


class SdpError(ImsboxError, ValueError):
    """Root of the SDP layer's errors; ``reason`` names the fault."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(reason if line is None else f"line {line}: {reason}")


class SdpUsageError(SdpError, LocalProtocolError):
    """Our code built or changed a description wrongly."""


class SdpProtocolError(SdpError, RemoteProtocolError):
    """A peer's description is malformed: an offer like that gets 488 (RFC 3261 21.4.26)."""

    status = 488


class NoCommonCodec(SdpProtocolError):
    """No offered audio format is one of ours; the UA answers 488 naming ``codecs``
    (RFC 3261 section 13.3.1.3: a Warning header with the formats we support)."""

    def __init__(self, codecs: list[str]) -> None:
        self.codecs = codecs
        super().__init__("no common audio codec; we support " + ", ".join(codecs))
