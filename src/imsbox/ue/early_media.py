"""Early media for voice calls (RFC 3261 13.2.1 and 13.3.1.1, RFC 3960).

Callee: with ``CallService.early_media`` the call is alerted with 183 Session
Progress carrying the SDP answer instead of 180 Ringing, and its RTP session
plays ``CallService.early_source()`` (an announcement, ringback) until the 200,
which repeats the same answer (13.3.1.1: an unreliable provisional's answer is
the one of the 2xx) and switches to the call's own source.

Caller: every 1xx is looked at as it arrives (``Call.on_provisional``): the
first 180 gives ``call_ringing``; a provisional with an SDP answer configures
the call's RTP session at once, so what the callee sends before answering is
heard (one early dialog: RFC 3960's gateway model, the last answer wins), and
gives ``call_early_media``.  The 2xx's answer then applies as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..sip.message import Response
from .events import CallEarlyMedia, CallRinging

if TYPE_CHECKING:
    from .call import CallService, VoiceCall

__all__ = ["alert", "watch_provisionals"]

log = logging.getLogger(__name__)

EARLY_STATUS = 183   # Session Progress


def watch_provisionals(voice: VoiceCall) -> None:
    """Caller side: report (and play) each 1xx of ``voice``'s INVITE as it comes."""
    seen = {"ringing": False, "early": False}

    def provisional(response: Response) -> None:
        try:
            _provisional(voice, response, seen)
        except Exception:   # a bad body must not break the INVITE session's dispatch
            log.exception("provisional %d of %s", response.status, voice.id)

    for response in list(voice.call.progress):   # arrived before we looked
        provisional(response)
    voice.call.on_provisional.append(provisional)


def _provisional(voice: VoiceCall, response: Response, seen: dict[str, bool]) -> None:
    if voice.ended.is_set() or voice.answered.is_set():
        return
    caller, callee = voice.parties
    sdp = response.body if _is_sdp(response) else b""
    if sdp:
        voice.media.answered(sdp)     # the early answer: RTP plays from now on
        if not seen["early"]:
            seen["early"] = True
            voice.service.core.emit(CallEarlyMedia(caller, callee, voice.id, response.status))
        return
    if not seen["ringing"] and not seen["early"]:
        seen["ringing"] = True
        voice.service.core.emit(CallRinging(caller, callee, voice.id))


def _is_sdp(response: Response) -> bool:
    content_type = (response.header("Content-Type") or "application/sdp").lower()
    return bool(response.body) and content_type.split(";")[0].strip() == "application/sdp"


def alert(service: CallService, voice: VoiceCall, answer_sdp: bytes) -> Callable[[], None]:
    """Callee side: 180 Ringing, or 183 with the answer and the early source playing.
    Returns what to do once answered (the call's own source back)."""
    call = voice.call
    caller, callee = voice.parties
    if not service.early_media:
        call.ring(180)
        service.core.emit(CallRinging(caller, callee, voice.id))
        return lambda: None
    call.ring(EARLY_STATUS, answer_sdp)
    service.core.emit(CallEarlyMedia(caller, callee, voice.id, EARLY_STATUS))
    early = service.early_source()
    if early is None:
        return lambda: None
    own = voice.rtp.source
    voice.rtp.source = early

    def answered() -> None:
        if voice.rtp.source is early:
            voice.rtp.source = own
    return answered
