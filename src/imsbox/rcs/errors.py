"""The rcs layer's error tree (see imsbox.errors for the split).

    CpmError
    └── CpmProtocolError (RemoteProtocolError)  status 400

Named after OMA CPM, the vocabulary this layer holds (``ue.RcsError`` is the
client's own failure type).  The helpers here are lenient readers today: a
malformed CPM header or body classifies as "not CPM" (None) rather than
raising, and the errors of the layers below (HeaderError, ContentError,
SdpError) pass through with their own status.
"""

from __future__ import annotations

from ..errors import ImsboxError, RemoteProtocolError

__all__ = ["CpmError", "CpmProtocolError"]


class CpmError(ImsboxError):
    """Root of the rcs layer's errors."""


class CpmProtocolError(CpmError, RemoteProtocolError):
    """A peer's CPM request is unusable; answer ``status`` (400)."""
