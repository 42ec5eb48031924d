"""Voice calls (MMTel, RFC 5359 2.1): INVITE with an audio offer, RTP through
imsbox.media, answer or refuse busy, ringing, hangup, CANCEL, hold and resume.

One :class:`CallMedia` per call is both the INVITE session's ``OfferAnswer``
(so a re-INVITE from the peer, e.g. its hold offer, is answered and applied
to the RTP session by the UA itself) and the owner of its ``RtpSession``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from ..media import MediaError, PortAllocator, RtpSession, ToneSource, WavSink, WavSource
from ..media.audio import Sink, Source
from ..media.offer_answer import AudioOfferAnswer
from ..rcs.cpm import escape_icsi
from ..sdp import (
    Direction,
    hold_direction,
    resume_direction,
)
from ..sip.ua.useragent import Call, Origin
from . import early_media
from .core import UeCore
from .events import CallAnswered, CallEnded, CallHeld, CallResumed, RtpStatsEvent, SendError

__all__ = ["MMTEL", "CallMedia", "CallService", "VoiceCall"]

log = logging.getLogger(__name__)

MMTEL = "urn:urn-7:3gpp-service.ims.icsi.mmtel"   # TS 24.173: the IMS voice service
MMTEL_TAG = f'+g.3gpp.icsi-ref="{escape_icsi(MMTEL)}"'
SourceFactory = Callable[[], Source | None]
SinkFactory = Callable[[], Sink | None]

# What the INVITE session says when it ends -> the call_ended reason of the contract.
_REASONS = {"local BYE": "local hangup", "remote BYE": "remote hangup",
            "failed 486": "busy", "rejected 486": "busy", "failed 600": "busy",
            "failed 603": "declined", "rejected 603": "declined",
            "failed 487": "cancelled", "rejected 487": "cancelled",
            "failed 488": "not acceptable", "rejected 488": "not acceptable",
            "failed 408": "no answer", "failed 480": "unavailable", "failed 404": "not found"}


class CallMedia(AudioOfferAnswer):
    """The SDP offers/answers of one call and the RTP session they configure."""

    @property
    def direction(self) -> Direction:
        return self.session.direction

    # -- the OfferAnswer protocol of the INVITE session ----------------------------
    def offer(self) -> bytes:
        return self.make_offer(self.direction if self.session.params else Direction.SENDRECV)


class VoiceCall:
    """One voice call: ``hold``/``resume``/``hangup``; ``ended`` is set when it is over."""

    def __init__(self, service: CallService, call: Call, media: CallMedia, peer: str,
                 incoming: bool) -> None:
        self.service, self.call, self.media, self.peer = service, call, media, peer
        self.incoming = incoming
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.held = False          # we hold the peer
        self.end_as: str | None = None   # the call_ended reason a service expects (transfer)
        self._hanging_up: str | None = None
        self._sink: Sink | None = None

    @property
    def id(self) -> str:
        return self.call.call_id

    @property
    def rtp(self) -> RtpSession:
        return self.media.session

    @property
    def _core(self) -> UeCore:
        return self.service.core

    def _parties(self) -> tuple[str, str]:
        return (self.peer, self._core.aor) if self.incoming else (self._core.aor, self.peer)

    def start(self, source: Source | None, sink: Sink | None) -> None:
        self.rtp.source, self.rtp.sink, self._sink = source, sink, sink
        self.service.calls[self.id] = self
        if not self.incoming:
            early_media.watch_provisionals(self)   # call_ringing, call_early_media
        self._core.spawn(self._watch())

    async def wait_answered(self, timeout: float | None = None) -> bool:
        """True once the call is answered, False if it ended first (or timed out)."""
        waiters = [asyncio.ensure_future(self.answered.wait()),
                   asyncio.ensure_future(self.ended.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        return self.answered.is_set() and not self.ended.is_set()

    async def hold(self) -> bool:
        """RFC 5359 2.1: re-INVITE sendonly; the peer answers recvonly and stops sending."""
        return await self._reoffer(hold_direction(self.rtp.direction), True)

    async def resume(self) -> bool:
        return await self._reoffer(resume_direction(self.rtp.direction), False)

    async def _reoffer(self, direction: Direction, hold: bool) -> bool:
        if self.ended.is_set() or not self.answered.is_set():
            raise SendError("the call is not established")
        # answered here means our 200 went out; a re-INVITE must wait for its ACK
        # (RFC 3261 14.1), which takes longer the more proxies are on the route
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.call.established.wait(), 16.0)
        response = await self.call.reinvite(self.media.make_offer(direction))
        if response is None or not 200 <= response.status < 300:
            return False
        self.held = hold
        kind = CallHeld if hold else CallResumed
        self._core.emit(kind(*self._parties(), self.id, self.rtp.direction.value))
        return True

    def take_media(self) -> tuple[Source | None, Sink | None]:
        """Hand what this call plays and records to another call (a transfer, a
        consultation) or to a conference's mixer: this one goes on with silence
        and records nothing."""
        source, sink = self.rtp.source, self.rtp.sink
        self.rtp.source = self.rtp.sink = self._sink = None
        return source, sink

    def give_media(self, media: tuple[Source | None, Sink | None], owner: bool = True) -> None:
        """Play and record these; ``owner``: this call closes the WAV sink when it ends."""
        self.rtp.source, self.rtp.sink = media
        self._sink = media[1] if owner else None

    @property
    def parties(self) -> tuple[str, str]:
        """(caller, callee): the from and to of this call's events."""
        return self._parties()

    async def hangup(self, reason: str | None = None) -> None:
        """BYE; while still ringing CANCEL (caller) or 603 Decline (callee).
        ``reason``: the call_ended reason instead of local hangup (e.g. transferred)."""
        if self.ended.is_set():
            return
        if reason is not None:
            self._hanging_up = reason
        elif self.answered.is_set():
            self._hanging_up = "local hangup"
        else:
            self._hanging_up = "declined" if self.incoming else "cancelled"
        with contextlib.suppress(Exception):
            if self.incoming and not self.answered.is_set():
                self.call.reject(603)
            else:
                await asyncio.wait_for(self.call.bye(), 5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), 5)
        await self._finish(self._hanging_up)   # the session could not end it: end ours

    async def _watch(self) -> None:
        if not self.incoming:
            self._core.spawn(self._progress())
        if self.service.rtp_timeout is not None:
            self._core.spawn(self._media_watch(self.service.rtp_timeout))
        event = await asyncio.shield(self.call.terminated)
        reason = self._hanging_up or self.end_as or _REASONS.get(event.reason, event.reason)
        await self._finish(reason)

    async def _media_watch(self, timeout: float) -> None:
        """Hang up after ``timeout`` s with no RTP in while the call should receive."""
        last, quiet = -1, 0.0
        step = min(0.5, timeout / 4)
        while not self.ended.is_set():
            await asyncio.sleep(step)
            received = self.rtp.stats.packets_received
            expecting = self.answered.is_set() and self.rtp.direction.receives
            quiet = quiet + step if expecting and received == last else 0.0
            last = received
            if quiet >= timeout:
                log.info("call %s: no RTP for %.1f s, hanging up", self.id, quiet)
                await self.hangup("media timeout")
                return

    async def _progress(self) -> None:
        """Caller side: call_answered on the 2xx (the 1xx: early_media.py)."""
        response = await asyncio.shield(self.call.final)
        if response is not None and 200 <= response.status < 300:
            self.set_answered()

    def set_answered(self) -> None:
        self.answered.set()
        self._core.emit(CallAnswered(*self._parties(), self.id, self.rtp.direction.value))

    async def _finish(self, reason: str) -> None:
        if self.end_reason:   # ending already (the watcher and hangup may both get here)
            return
        self.end_reason = reason
        stats = self.rtp.update_stats().as_dict()
        await self.rtp.close()
        if isinstance(self._sink, WavSink):
            self._sink.close()
        self.service.calls.pop(self.id, None)
        self._core.emit(RtpStatsEvent(*self._parties(), self.id, stats))
        self._core.emit(CallEnded(*self._parties(), self.id, reason))
        self.ended.set()


class CallService:
    """Places and takes the voice calls of one UE.

    ``answer_after``: answer incoming calls after that many seconds (None: refuse
    them as before calls existed, 486); ``busy``: refuse every call 486 Busy Here.
    ``source``/``sink`` give each new call what it plays and where it records.
    """

    def __init__(self, core: UeCore, answer_after: float | None = None, busy: bool = False,
                 ports: PortAllocator | None = None) -> None:
        self.core = core
        self.answer_after = answer_after
        self.busy = busy
        self.call_waiting = True    # False: 486 to a call while another one is in progress
        self.early_media = False    # alert with 183 + SDP and play early_source (early_media.py)
        self.early_source: SourceFactory = lambda: None
        # seconds without RTP while we expect it (answered, receiving) before we hang
        # up with reason "media timeout" (a media server or phone that died); None: off
        self.rtp_timeout: float | None = None
        self.ports = ports
        self.source: SourceFactory = lambda: None
        self.sink: SinkFactory = lambda: None
        self.calls: dict[str, VoiceCall] = {}

    @property
    def answering(self) -> bool:
        return self.busy or self.answer_after is not None

    def contact_params(self) -> str:
        """The MMTel feature tag and our +sip.instance, on every Contact of a call."""
        return f";{MMTEL_TAG}" + (f';+sip.instance="<{self.core.registration.instance}>"'
                                  if self.core.registration.instance else "")

    def origin(self) -> Origin:
        assert self.core.ua is not None
        return Origin(self.core.ua.local, self.core.ua.contact,
                      tuple(self.core.registration.route()),
                      contact_params=self.contact_params())

    async def place(self, target: str, source: Source | None = None,
                    sink: Sink | None = None, headers: Iterable[tuple[str, str]] = ()) -> VoiceCall:
        """INVITE with an audio offer; returns at once (``wait_answered``).
        ``headers``: more headers for the INVITE (a transfer's Referred-By, Replaces)."""
        assert self.core.ua is not None
        rtp = await RtpSession.open(self.ports, host=self.core.host)
        media = CallMedia(rtp, self.core.host)
        headers = [("Accept-Contact", f"*;{MMTEL_TAG}"),
                   ("P-Preferred-Service", MMTEL),
                   ("P-Preferred-Identity", f"<{self.core.aor}>"),
                   ("User-Agent", self.core.user_agent), *headers]
        call = await self.core.ua.invite(target, media.make_offer(), headers,
                                         offer_answer=media, origin=self.origin())
        voice = VoiceCall(self, call, media, target, False)
        voice.start(source, sink)
        return voice

    async def incoming(self, call: Call, peer: str, offer: bytes,
                       replacing: VoiceCall | None = None) -> VoiceCall | None:
        """Ring, then answer after ``answer_after`` s, or refuse 486 / 488.
        ``replacing``: the call an INVITE with Replaces takes over (RFC 3891 3):
        answered at once without ringing, with that call's source and sink."""
        try:
            rtp = await RtpSession.open(self.ports, host=self.core.host)
        except MediaError as exc:   # no free RTP port
            log.warning("call %s refused: %s", call.call_id, exc)
            call.reject(503, "Service Unavailable - no free RTP port")
            return None
        media = CallMedia(rtp, self.core.host)
        voice = VoiceCall(self, call, media, peer, True)
        in_call = any(v is not voice and not v.ended.is_set() for v in self.calls.values())
        if replacing is not None:
            source, sink = replacing.take_media()
            voice.start(source, sink)
        else:
            voice.start(self.source(), self.sink())
        if replacing is None and (self.busy or (in_call and not self.call_waiting)):
            call.reject(486)
            return None
        answer_sdp = media.answer(offer)
        if answer_sdp is None:
            refused = media.refused
            codecs = ", ".join(refused.codecs) if refused is not None else "PCMU, PCMA"
            call.reject(488, headers=[("Warning",
                                       f'305 {self.core.host} "Incompatible media format; '
                                       f'we support {codecs}"')])
            return None
        call.session.offer_answer = media   # re-INVITEs (hold) are answered by the media
        call.session.local_contact_params = self.contact_params()  # 200s: the tags too
        answered = None
        if replacing is None:   # 180, or 183 with the answer (early_media.py)
            answered = early_media.alert(self, voice, answer_sdp)
            await asyncio.sleep(self.answer_after or 0)
        if voice.ended.is_set() or call.terminated.done():
            return None
        call.accept(answer_sdp)
        if answered is not None:
            answered()
        voice.set_answered()
        return voice

    async def close(self) -> None:
        for voice in list(self.calls.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(voice.hangup(), 2)


def file_source(path: str | Path | None, tone: float | None = None) -> Source | None:
    """What a call plays: a WAV file (looped), else a tone, else silence."""
    if path is not None:
        return WavSource(path, loop=True)
    return ToneSource(tone) if tone else None
