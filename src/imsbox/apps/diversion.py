"""Diversion (RFC 5806) derived from History-Info (RFC 7044), sans-I/O.

History-Info stays the record of a forwarded call; a subscriber whose phone
or server reads only Diversion (an older voicemail system, a PBX) sets
``diversion on`` and the telephony AS, serving that subscriber's terminating
side, adds one Diversion value per forwarding in the History-Info, newest
first, as RFC 6044 7.1 maps them: the diverting party is the entry the call
left (the one its ``mp`` names), the reason comes from the new entry's
RFC 4458 ``cause``::

    History-Info: <sip:bob@ims.test>;index=1, <sip:carol@ims.test;cause=302>;index=1.1;mp=1
    Diversion: <sip:bob@ims.test>;reason=unconditional;counter=1
"""

from __future__ import annotations

import re

from ..sip.message import Request
from .history_info import History

__all__ = ["DIVERSION", "diversions", "write_diversion"]

DIVERSION = "Diversion"
# RFC 4458 cause (and the status that made us leave a target) -> RFC 5806 reason
REASONS = {302: "unconditional", 486: "user-busy", 600: "user-busy", 408: "no-answer",
           480: "no-answer", 503: "unavailable", 404: "unavailable"}
_CAUSE = re.compile(r"[;&]cause=([0-9]{3})")
_MP = re.compile(r";mp=([0-9.]+)")


def _plain(uri: str) -> str:
    """An hi-targeted-to-uri without its headers (``?Reason=``) and cause."""
    return _CAUSE.sub("", uri.split("?", 1)[0])


def diversions(history: History) -> list[str]:
    """The Diversion values for the forwardings (``mp`` entries), newest first."""
    by_index = {entry.index: entry for entry in history.entries}
    out: list[str] = []
    for entry in history.entries:
        mp = _MP.search(entry.params)
        left = by_index.get(mp.group(1)) if mp else None
        if left is None:
            continue
        cause = _CAUSE.search(entry.uri)
        reason = REASONS.get(int(cause.group(1)), "unknown") if cause else "unknown"
        out.append(f"<{_plain(left.uri)}>;reason={reason};counter=1")
    return out[::-1]


def write_diversion(request: Request, history: History) -> None:
    """Diversion from ``history`` on ``request`` (ours replace any earlier ones,
    which the History-Info covers); a call never forwarded is left alone."""
    values = diversions(history)
    if not values:
        return
    request.remove_header(DIVERSION)
    request.add_header(DIVERSION, ", ".join(values))
