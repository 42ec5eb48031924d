"""History-Info (RFC 7044) with the forwarding cause (RFC 4458), sans-I/O.

The telephony AS records each target of a call it serves: the first entry is
the called user (``index=1``); a forwarding adds the Reason of the response
that caused it to the entry it leaves (``?Reason=SIP;cause=486;text="Busy
Here"``, RFC 7044 9.4) and a new entry for the new target, a child of it, with
``mp`` (the target user changed, RFC 7044 4.2.3) and the RFC 4458 ``cause``
URI parameter (302 unconditional, 486 busy, 408 no reply, 503 not
reachable)::

    History-Info: <sip:bob@ims.test?Reason=SIP%3Bcause%3D486%3Btext%3D%22Busy%20Here%22>;index=1,
     <sip:carol@ims.test;cause=486>;index=1.1;mp=1

So the forwarded-to party sees who was called and why the call came to it,
and the AS sees a loop: a served user already in the list (not as its
newest entry) is calling itself round again.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from ..sip.headers import HeaderError, name_addr_list
from ..sip.identity import canonical_public_id
from ..sip.message import Request

__all__ = ["CAUSE_BUSY", "CAUSE_NO_REPLY", "CAUSE_NOT_REACHABLE", "CAUSE_UNCONDITIONAL",
           "HistoryEntry", "History", "HISTORY_INFO"]

HISTORY_INFO = "History-Info"
CAUSE_UNCONDITIONAL = 302
CAUSE_BUSY = 486
CAUSE_NO_REPLY = 408
CAUSE_NOT_REACHABLE = 503
_CAUSE_TEXT = {302: "Moved Temporarily", 486: "Busy Here", 408: "Request Timeout",
               503: "Service Unavailable"}


@dataclass(slots=True)
class HistoryEntry:
    """One hi-entry: the target URI text (no <>), its index, its other params."""

    uri: str
    index: str
    params: str = ""   # ";mp=1" etc., as sent

    @property
    def target(self) -> str:
        """The canonical identity of the target ('' when it is not one)."""
        try:
            return canonical_public_id(self.uri.split("?", 1)[0])
        except ValueError:
            return ""

    def __str__(self) -> str:
        return f"<{self.uri}>;index={self.index}{self.params}"


@dataclass(slots=True)
class History:
    """The History-Info entries of a request, in order."""

    entries: list[HistoryEntry]

    @classmethod
    def of(cls, request: Request) -> History:
        """The request's entries; malformed ones are dropped (a stranger's header)."""
        out: list[HistoryEntry] = []
        for value in request.headers.get_all(HISTORY_INFO):
            try:
                addrs = name_addr_list(HISTORY_INFO, value)
            except HeaderError:
                continue
            for addr in addrs:
                index = addr.params.get("index") or str(len(out) + 1)
                rest = "".join(f";{k}" + (f"={v}" if v is not None else "")
                               for k, v in addr.params if k != "index")
                out.append(HistoryEntry(str(addr.uri), index, rest))
        return cls(out)

    def called(self, uri: str) -> None:
        """The first target: ``index=1`` when the list is empty; a target that is
        not already the newest entry becomes a child of it."""
        target = canonical_public_id(uri)
        if not self.entries:
            self.entries.append(HistoryEntry(uri, "1"))
        elif self.entries[-1].target != target:
            last = self.entries[-1]
            self.entries.append(HistoryEntry(uri, f"{last.index}.1",
                                             f";rc={last.index}"))

    def forwarded(self, new_target: str, cause: int, status: int | None = None) -> None:
        """Leave the newest entry for ``new_target`` (RFC 7044 with RFC 4458 cause);
        ``status`` is the response that made us leave it (None: unconditional)."""
        last = self.entries[-1]
        if status is not None and "?" not in last.uri:
            text = _CAUSE_TEXT.get(status, "")
            reason = f'SIP;cause={status}' + (f';text="{text}"' if text else "")
            last.uri = f"{last.uri}?Reason={quote(reason, safe='')}"
        sep = "&" if "?" in new_target else ";"
        self.entries.append(HistoryEntry(f"{new_target}{sep}cause={cause}",
                                         f"{last.index}.1", f";mp={last.index}"))

    def seen_before(self, identities: frozenset[str]) -> bool:
        """Is one of a served user's identities an earlier (not the newest) target?"""
        return any(e.target in identities for e in self.entries[:-1])

    @property
    def diversions(self) -> int:
        return sum(1 for e in self.entries if ";mp=" in e.params)

    def write(self, request: Request) -> None:
        request.remove_header(HISTORY_INFO)
        if self.entries:
            request.add_header(HISTORY_INFO, ", ".join(str(e) for e in self.entries))
