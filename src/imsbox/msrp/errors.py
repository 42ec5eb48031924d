"""The MSRP layer's error tree (see imsbox.errors for the split).

    MsrpError
    ├── MsrpUsageError (LocalProtocolError)
    ├── MsrpProtocolError (RemoteProtocolError)  status 400
    │   └── ParseError (ValueError)
    │       └── UriError
    └── outcomes of our own requests, neither misuse nor a bad peer message:
        MsrpStatusError (.status: the status the peer reported)
        ├── TransactionTimeout (408)
        SessionClosed
"""

from __future__ import annotations

from typing import Any

from ..errors import ImsboxError, LocalProtocolError, RemoteProtocolError

__all__ = ["MsrpError", "MsrpProtocolError", "MsrpStatusError", "MsrpUsageError",
           "ParseError", "SessionClosed", "TransactionTimeout", "UriError"]


class MsrpError(ImsboxError):
    """Root of the MSRP layer's errors."""


class MsrpUsageError(MsrpError, LocalProtocolError):
    """Our code used the MSRP API wrongly."""


class MsrpProtocolError(MsrpError, RemoteProtocolError):
    """A peer's MSRP input is malformed; a request like that gets ``status`` (400)."""


class ParseError(MsrpProtocolError, ValueError):
    """Malformed MSRP input; ``reason`` names the fault.

    ``transaction_id`` is set when the start line could be read, so the
    caller can still answer 400.  ``events`` holds the parser events that
    were complete before the fault (an incremental parser must not lose them).
    """

    def __init__(self, reason: str, transaction_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transaction_id = transaction_id
        self.events: list[Any] = []


class UriError(ParseError):
    """Malformed MSRP URI (RFC 4975 section 9)."""


class MsrpStatusError(MsrpError):
    """A message failed with an MSRP status (transaction response or REPORT)."""

    def __init__(self, message_id: str, status: int, comment: str = "") -> None:
        super().__init__(f"message {message_id} failed: {status} {comment}".rstrip())
        self.message_id = message_id
        self.status = status
        self.comment = comment


class TransactionTimeout(MsrpStatusError):
    """No response within the transaction timer (RFC 4975 section 7.1.1); status 408."""

    def __init__(self, message_id: str) -> None:
        super().__init__(message_id, 408, "Request Timeout")


class SessionClosed(MsrpError):
    """The session or its connection is gone."""
