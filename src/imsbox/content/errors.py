"""The content layer's error tree (see imsbox.errors for the split).

    ContentError (ValueError)
    ├── ContentUsageError (LocalProtocolError)
    └── ContentProtocolError (RemoteProtocolError)  status 400
        └── XmlError

A body from a peer that cannot be parsed is answered 400; a body of a type
the service does not take is the service's own 415, not a parse error.
"""

from __future__ import annotations

from ..errors import ImsboxError, LocalProtocolError, RemoteProtocolError

__all__ = ["ContentError", "ContentProtocolError", "ContentUsageError", "XmlError"]


class ContentError(ImsboxError, ValueError):
    """Root of the content layer's errors; the message names the fault."""


class ContentUsageError(ContentError, LocalProtocolError):
    """Our code asked for a body that cannot be built."""


class ContentProtocolError(ContentError, RemoteProtocolError):
    """A body could not be parsed (or a value in it is not allowed); answer 400."""


class XmlError(ContentProtocolError):
    """An XML body is malformed, unsafe (DTD, entities) or too large."""
