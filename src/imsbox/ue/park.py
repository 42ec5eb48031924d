"""Call park, the parker's side (RFC 5359 2.15), and the orbit a park server names.

``park(call)`` is the music-on-hold flow of ``imsbox.ue.music_hold`` towards
``sip:park@DOMAIN``: hold the call, REFER the park server outside any dialog
with ``Refer-To: <parked party?Replaces=our dialog>`` (F5); the park server
claims an orbit and INVITEs the parked party with that Replaces from
``sip:park-N@DOMAIN`` (F9), whose phone swaps our call for the park and BYEs
us (F12). The final NOTIFY's sipfrag (F14) names the park dialog; its ``From``
is the orbit URI and ``Subject: orbit N`` says it plainly. A ``call_parked``
event reports the orbit (``--json``: an ``orbit`` field). When the park fails
(no park server, lot full, the party refused) the call is resumed and the event
has ``orbit`` None with the status and reason.

A parked phone without Replaces (baresip 1.0 answers the park server's INVITE
420 Bad Extension) is parked by transfer instead: we REFER it, in our call, to
``sip:park@DOMAIN;parker=OUR-NAME`` (2.4); its INVITE is parked and the park
server tells us (the parker: its Referred-By, else ``;parker=``) the orbit in a
MESSAGE from ``sip:park-N@DOMAIN``, which the event then reports.

Retrieving is an ordinary call to ``sip:park-N@DOMAIN`` (``imsbox ue retrieve N``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from ..sip.headers import HeaderError, NameAddr
from ..sip.uri import SipUri
from .call import CallService, VoiceCall
from .core import UeCore
from .events import CallParked, MessageReceived, RcsError, RcsEvent
from .music_hold import MusicOnHold
from .transfer import TransferService

__all__ = ["ParkService", "orbit_uri", "sipfrag_orbit"]

ORBIT_PREFIX = "park-"
BYE_WAIT = 3.0    # seconds for the parked party's BYE (F12) before we hang up ourselves
TOLD_WAIT = 10.0  # seconds for the park server's MESSAGE after a park by transfer
NO_REPLACES = 420  # the parked phone refused the INVITE with Require: replaces
_TOLD = re.compile(r"parked in orbit ([0-9]{1,6})\b")


def orbit_uri(orbit: int | str, domain: str) -> str:
    return f"sip:{ORBIT_PREFIX}{orbit}@{domain}"


def sipfrag_orbit(sipfrag: bytes) -> int | None:
    """The orbit a park server's final NOTIFY names: ``Subject: orbit N``, else the
    ``park-N`` user of its ``From`` (the park dialog's side of the park server)."""
    headers: dict[str, str] = {}
    for line in sipfrag.decode("utf-8", "replace").splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    subject = headers.get("subject", "").lower().removeprefix("orbit").strip()
    if subject.isdigit():
        return int(subject)
    try:
        uri = NameAddr.parse(headers.get("from", "")).uri
    except HeaderError:
        return None
    user = uri.user.lower() if isinstance(uri, SipUri) and uri.user else ""
    number = user.removeprefix(ORBIT_PREFIX)
    return int(number) if user.startswith(ORBIT_PREFIX) and number.isdigit() else None


class ParkService:
    """Parks a UE's calls at ``sip:park@DOMAIN``."""

    def __init__(self, core: UeCore, calls: CallService, transfers: TransferService,
                 domain: str) -> None:
        self.core, self.calls, self.transfers = core, calls, transfers
        self.domain = domain
        self.flow = MusicOnHold(core, calls, transfers, f"sip:park@{domain}")

    async def park(self, call: VoiceCall) -> CallParked:
        held = await self.flow.hold(call)           # raises SendError when it cannot hold
        orbit = sipfrag_orbit(held.sipfrag) if held.playing else None
        status, reason = held.status, held.reason
        if orbit is None and status == NO_REPLACES and not call.ended.is_set():
            orbit, status, reason = await self._by_transfer(call)
        uri = orbit_uri(orbit, self.domain) if orbit is not None else ""
        if orbit is None:
            if held.playing:
                status, reason = 500, "the park server named no orbit"
            with contextlib.suppress(RcsError):     # the call goes on
                await call.resume()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.ended.wait(), BYE_WAIT)
            if not call.ended.is_set():
                await call.hangup("parked")
        event = CallParked(self.core.aor, call.peer, call.id, orbit, uri, status, reason)
        self.core.emit(event)
        return event

    async def _by_transfer(self, call: VoiceCall) -> tuple[int | None, int, str]:
        """REFER the peer to sip:park@ (it has no Replaces); the orbit from the park
        server's MESSAGE to us: (orbit, status, reason)."""
        told: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def listen(event: RcsEvent) -> None:
            if isinstance(event, MessageReceived) and event.sender.startswith(
                    f"sip:{ORBIT_PREFIX}") and call.peer in event.text and not told.done():
                found = _TOLD.search(event.text)
                if found:
                    told.set_result(int(found.group(1)))

        self.core.listeners.append(listen)
        try:
            user = self.core.aor.removeprefix("sip:").partition("@")[0]
            # ;parker=: the parked phone may not pass our Referred-By on (baresip)
            result = await self.transfers.transfer(call, f"sip:park@{self.domain};parker={user}")
            if result.outcome != "transferred":
                return None, result.status or 500, result.reason or "the transfer failed"
            try:
                return await asyncio.wait_for(told, TOLD_WAIT), result.status or 200, ""
            except TimeoutError:
                return None, 500, "parked by transfer, but the park server named no orbit"
        finally:
            self.core.listeners.remove(listen)
