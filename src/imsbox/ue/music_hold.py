"""Music on hold from the network's music server, the holder's side (RFC 5359 2.3).

``hold(call)``: hold the call (re-INVITE sendonly, F5), then REFER the music
server (``sip:moh@DOMAIN``) outside any dialog with ``Refer-To: <held party
?Require=replaces&Replaces=our dialog>`` (F8).  The music server INVITEs the
held party with that Replaces (F12): the held party's phone swaps our call for
the music and ends ours with BYE (F15).  Its final NOTIFY (F17) says 200 and
names the music dialog (Call-ID, From and To with tags in the sipfrag).

``resume(held)``: INVITE the held party with Replaces naming the music dialog
(F19): its phone swaps the music for us and BYEs the music server (F22); our
audio goes on in the new call.  When the music server is not there or the held
party refuses the music (F12 answered >= 300), the call stays held in
silence and ``resume`` is an ordinary resume (re-INVITE sendrecv).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from ..media.audio import Sink, Source
from ..sip.headers import HeaderError, NameAddr, Replaces
from .call import CallService, VoiceCall
from .core import UeCore
from .events import SendError
from .transfer import REFER_WAIT, TRANSFER_WAIT, TransferService, transfer_uri

__all__ = ["MusicHold", "MusicOnHold", "music_dialog"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MusicHold:
    """One call held with the network's music."""

    call: VoiceCall                       # the held call (ended once the music took over)
    peer: str
    status: int                           # the music INVITE's final status (408: none)
    reason: str = ""
    dialog: Replaces | None = None        # the music dialog, as the held party sees it
    sipfrag: bytes = b""                  # the final NOTIFY's body (a park names the orbit)
    media: tuple[Source | None, Sink | None] = field(default=(None, None))

    @property
    def playing(self) -> bool:
        return self.dialog is not None and 200 <= self.status < 300


def music_dialog(sipfrag: bytes) -> Replaces | None:
    """The dialog a music server's final NOTIFY names: Call-ID, From tag (its own)
    and To tag (the held party's), as a Replaces the held party matches."""
    headers: dict[str, str] = {}
    for line in sipfrag.decode("utf-8", "replace").splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    try:
        call_id = headers["call-id"]
        from_tag = NameAddr.parse(headers["from"]).tag
        to_tag = NameAddr.parse(headers["to"]).tag
    except (KeyError, HeaderError):
        return None
    if not call_id or not from_tag or not to_tag:
        return None
    return Replaces(call_id, to_tag, from_tag)


class MusicOnHold:
    """Holds a UE's calls with the music of ``moh_uri`` (see the module text)."""

    def __init__(self, core: UeCore, calls: CallService, transfers: TransferService,
                 moh_uri: str) -> None:
        self.core, self.calls, self.transfers = core, calls, transfers
        self.moh_uri = moh_uri

    async def hold(self, call: VoiceCall) -> MusicHold:
        if call.ended.is_set() or not call.answered.is_set():
            raise SendError("the call is not established")
        if not call.held and not await call.hold():          # F5
            raise SendError("the other side refused to be held")
        dialog = call.call.session.dialog
        if dialog is None:
            raise SendError("the call has no dialog")
        ours = Replaces(dialog.id.call_id, dialog.id.remote_tag, dialog.id.local_tag)
        media = call.take_media()       # our audio waits for the call to come back
        held = MusicHold(call, call.peer, 408, media=media)
        try:
            watch = self.transfers.agent.refer_out_of_dialog(          # F8
                self.moh_uri, transfer_uri(call.peer, ours),
                referred_by=f"<{self.core.aor}>", origin=self.calls.origin())
            answer = await asyncio.wait_for(asyncio.shield(watch.answered), REFER_WAIT)
            if answer.status >= 300:
                held.status, held.reason = answer.status, answer.reason
            else:
                final = await asyncio.wait_for(asyncio.shield(watch.done), TRANSFER_WAIT)
                if final is not None:
                    held.status, held.reason = final.status, final.reason
                    held.dialog = music_dialog(final.body)
                    held.sipfrag = final.body
        except TimeoutError:
            held.reason = "no answer from the music server"
        if not held.playing:
            log.info("no music on hold for %s: %d %s", call.peer, held.status, held.reason)
            call.give_media(media)
        return held

    async def resume(self, held: MusicHold) -> VoiceCall:
        """Take the call back (F19); an ordinary resume if the music never played."""
        if not held.playing:
            if not await held.call.resume():
                raise SendError("the other side refused to resume")
            return held.call
        assert held.dialog is not None
        headers = [("Replaces", str(held.dialog)), ("Require", "replaces")]
        new = await self.calls.place(held.peer, *held.media, headers=headers)
        if not await new.wait_answered(TRANSFER_WAIT):
            raise SendError(f"{held.peer} did not take the call back")
        with contextlib.suppress(Exception):   # F15 ended it already, normally
            await held.call.hangup("resumed")
        return new
