"""The roots every layer's exceptions share (the h11 split).

Each protocol layer (sip, sdp, msrp, content, rcs) has one root exception
and, under it, two kinds:

- a *local* error (``LocalProtocolError``): our own code called the API
  wrongly, e.g. answered an INVITE twice.  A bug or a caller's mistake,
  never something to answer a peer with;
- a *remote* error (``RemoteProtocolError``): the peer sent something bad.
  It carries a status hint, the response a server should answer with:
  ``status`` (400, 415, 488 ...) and ``str(exc)``, the detail for the reason
  phrase ("Bad Request - bad Contact header: ...").

A module-failure handler can therefore catch ``RemoteProtocolError`` from
any layer and answer ``exc.status`` instead of 500.
"""

from __future__ import annotations

__all__ = ["ImsboxError", "LocalProtocolError", "RemoteProtocolError", "Unavailable"]


class ImsboxError(Exception):
    """Root of the layers' error trees."""


class LocalProtocolError(ImsboxError):
    """Our own code used a protocol API wrongly."""


class RemoteProtocolError(ImsboxError):
    """The peer sent something bad; ``status`` is the response to answer it with.

    A class default that subclasses and single instances refine (a parser
    sets 414 or 513 on the instance it raises).
    """

    status: int = 400


class Unavailable(ImsboxError):
    """A back end this node needs (its store, its cache) is away for now: the
    request gets 503 with Retry-After (RFC 3261 21.5.4) instead of a 500."""

    retry_after = 5
