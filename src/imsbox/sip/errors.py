"""The SIP layer's error tree (see imsbox.errors for the split).

    SipError
    ├── SipUsageError (LocalProtocolError)     SessionError
    └── SipProtocolError (RemoteProtocolError) ParseError, HeaderError,
                                               GrammarError, UriError,
                                               DigestError, DialogError

The members keep their old bases (ValueError, RuntimeError) so callers that
catch those still do.
"""

from __future__ import annotations

from ..errors import ImsboxError, LocalProtocolError, RemoteProtocolError

__all__ = ["SipError", "SipProtocolError", "SipUsageError"]


class SipError(ImsboxError):
    """Root of the SIP layer's errors."""


class SipUsageError(SipError, LocalProtocolError):
    """Our code used the SIP API wrongly (an action the state does not allow)."""


class SipProtocolError(SipError, RemoteProtocolError):
    """A peer's SIP message is malformed or unusable; answer ``status`` (400)."""
