"""3-way calls mixed in the UE (RFC 5359 2.10 and 2.11, RFC 3911 Join).

*Third party added* (2.10): with a call up, ``add_party`` holds it and calls
the third party (a consultation); ``conference`` then joins the calls: each
leg is re-INVITEd with ``;isfocus`` on our Contact (RFC 4579: we are the
focus now; a held leg is resumed by the same re-INVITE) and its RTP session
is wired to one ``Mixer`` port.

*Third party joins* (2.11): an INVITE with Join (RFC 3911 4) naming one of
our calls rings (180), re-INVITEs the joined leg with ``;isfocus``, and is
answered 200 with ``;isfocus``; the calls are mixed. A Join naming no dialog
of ours gets 481, two Join headers or Join with Replaces 400, a UE that does
not take joins (``accept_joins`` False) 403.

Mixing is mix-minus (media/mixer.py): each remote party hears us and the
others, never itself; what we play (the first leg's source) goes to every
leg, and what we hear (into the first leg's sink, e.g. its recording) is the
sum of the legs. The mixer ticks from the media clock before the sessions.
When a leg ends the others go on; with one left it is a plain call again,
with our own source and sink back on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from ..media import MediaClock, MediaError, Mixer, MixerPort, RtpSession
from ..media.audio import Sink, Source
from ..sdp import Direction
from ..sip.errors import SipError
from ..sip.headers import Join
from ..sip.ua.useragent import Call
from .call import CallMedia, CallService, VoiceCall
from .core import UeCore
from .events import CallConference, CallJoined, SendError

__all__ = ["FOCUS", "Conference", "ThreeWayService"]

log = logging.getLogger(__name__)

FOCUS = ";isfocus"        # RFC 3840 / RFC 4579 feature tag: this Contact mixes
SAMPLES = 160             # 20 ms at 8 kHz, the media clock's frame
Media = tuple[Source | None, Sink | None]


class Conference:
    """Calls mixed here; ``legs`` in the order they came in, ``ended`` once dissolved."""

    def __init__(self, service: ThreeWayService, media: Media) -> None:
        self.service = service
        self.legs: list[VoiceCall] = []
        self.mixer = Mixer()
        self.ended = asyncio.Event()
        self._ports: dict[str, MixerPort] = {}
        self._media = media
        self._source_in = self._sink_in = False
        self._clock = MediaClock.for_loop()
        self._clock.hooks.append(self._tick)
        self._set_local(media)

    @property
    def id(self) -> str:
        return self.legs[0].id if self.legs else ""

    @property
    def parties(self) -> list[str]:
        return [leg.peer for leg in self.legs]

    def _set_local(self, media: Media) -> None:
        source, sink = media
        if source is not None:
            self.mixer.add_source(source)
        if sink is not None:
            self.mixer.add_listener(sink)

    def _tick(self) -> None:
        try:
            self.mixer.tick(SAMPLES)
        except Exception:   # a broken sink must not stop the clock of every call
            log.exception("conference %s mixer tick failed", self.id)

    def wire(self, leg: VoiceCall) -> None:
        """Mix this leg: its session's sink and source become a mixer port."""
        if leg.id in self._ports:
            return
        leg.take_media()
        port = self.mixer.port()
        leg.rtp.source = leg.rtp.sink = port
        self._ports[leg.id] = port
        self.legs.append(leg)
        self.service.core.spawn(self._watch(leg))

    async def _watch(self, leg: VoiceCall) -> None:
        await leg.ended.wait()
        self._drop(leg)

    def _drop(self, leg: VoiceCall) -> None:
        port = self._ports.pop(leg.id, None)
        if port is None:
            return
        port.close()
        self.legs.remove(leg)
        if len(self.legs) > 1:
            self.service.emit(self, "party_left")
            return
        self.dissolve()

    def dissolve(self) -> None:
        """Back to a plain call (one leg left) or nothing: stop mixing."""
        if self.ended.is_set():
            return
        with contextlib.suppress(ValueError):
            self._clock.hooks.remove(self._tick)
        given = False
        for leg in list(self.legs):
            self._ports.pop(leg.id).close()
            if not leg.ended.is_set():
                leg.give_media(self._media)   # our own voice and ear on the last call
                given = True
        if not given:   # nobody left to own the recording: finish it here
            _close_sink(self._media[1])
        self.service.emit(self, "ended")
        self.service.conferences.remove(self)
        self.ended.set()

    async def hangup(self) -> None:
        """End every leg (BYE)."""
        for leg in list(self.legs):
            await leg.hangup()


def _close_sink(sink: Sink | None) -> None:
    close = getattr(sink, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


class ThreeWayService:
    """3-way calls of one UE (``conferences``); see the module text."""

    def __init__(self, core: UeCore, calls: CallService, accept_joins: bool = True) -> None:
        self.core = core
        self.calls = calls
        self.accept_joins = accept_joins
        self.conferences: list[Conference] = []

    def emit(self, conference: Conference, state: str) -> None:
        legs = conference.legs
        self.core.emit(CallConference(self.core.aor, legs[-1].peer if legs else "",
                                      conference.id or state, state,
                                      [leg.id for leg in legs], conference.parties))

    def conference_of(self, voice: VoiceCall) -> Conference | None:
        return next((c for c in self.conferences if voice in c.legs), None)

    # -- 2.10: third party added ------------------------------------------------------
    async def add_party(self, call: VoiceCall, target: str) -> VoiceCall:
        """Hold ``call`` and call ``target`` with what ``call`` played and recorded
        (a consultation, RFC 5359 2.2); ``conference`` then mixes them."""
        if not call.answered.is_set() or call.ended.is_set():
            raise SendError("the call is not established")
        if not call.held:
            await call.hold()
        media = call.take_media()
        added = await self.calls.place(target, *media)
        self.core.spawn(self._back_if_refused(call, added, media))
        return added

    @staticmethod
    async def _back_if_refused(call: VoiceCall, added: VoiceCall, media: Media) -> None:
        """The third party did not answer: our voice and ear go back to the held call."""
        if not await added.wait_answered() and not call.ended.is_set():
            call.give_media(media)

    async def conference(self, calls: Iterable[VoiceCall] | None = None) -> Conference:
        """Mix ``calls`` (default: every answered call in progress) into one 3-way call."""
        legs = [c for c in (calls if calls is not None else self.calls.calls.values())
                if c.answered.is_set() and not c.ended.is_set()]
        existing = next((c for c in self.conferences for leg in legs if leg in c.legs), None)
        if existing is None and len(legs) < 2:
            raise SendError("a conference needs two answered calls")
        conference = existing or self._new(legs)
        for leg in legs:
            if leg not in conference.legs:
                await self._focus(leg)
                conference.wire(leg)
        self.emit(conference, "mixing")
        return conference

    def _new(self, legs: list[VoiceCall]) -> Conference:
        """A conference with our voice and ear: the first of the legs' sources and sinks."""
        source: Source | None = None
        sink: Sink | None = None
        for leg in legs:
            leg_source, leg_sink = leg.rtp.source, leg.rtp.sink
            source = source if source is not None else leg_source
            sink = sink if sink is not None else leg_sink
        conference = Conference(self, (source, sink))
        self.conferences.append(conference)
        return conference

    async def _focus(self, leg: VoiceCall) -> None:
        """RFC 4579 / RFC 5359 2.10 F5: re-INVITE with ``;isfocus`` (and sendrecv)."""
        dialog = leg.call.session.dialog
        if dialog is not None and FOCUS not in dialog.contact_params:
            dialog.contact_params += FOCUS
        leg.call.session.local_contact_params += FOCUS if FOCUS not in \
            leg.call.session.local_contact_params else ""
        try:
            if leg.held:
                await leg.resume()
            else:
                await leg.call.reinvite(leg.media.make_offer(Direction.SENDRECV))
        except (SipError, RuntimeError) as exc:   # a re-INVITE in progress: mix anyway
            log.info("focus re-INVITE of %s: %s", leg.id, exc)

    # -- 2.11: third party joins ---------------------------------------------------------
    async def join(self, target: str, join: Join | str, source: Source | None = None,
                   sink: Sink | None = None) -> VoiceCall:
        """INVITE ``target`` with Join naming one of its dialogs (RFC 3911 5)."""
        header = join if isinstance(join, Join) else Join.parse(join)
        return await self.calls.place(target, source, sink,
                                      headers=[("Join", str(header)), ("Require", "join")])

    async def incoming_join(self, call: Call, peer: str, offer: bytes) -> None:
        """RFC 3911 4: match the dialog, then ring, focus the joined leg, answer, mix."""
        joined = self._joined(call)
        if joined is None:
            return
        try:
            rtp = await RtpSession.open(self.calls.ports, host=self.core.host)
        except MediaError as exc:
            call.reject(503, f"Service Unavailable - {exc}"[:80])
            return
        media = CallMedia(rtp, self.core.host)
        voice = VoiceCall(self.calls, call, media, peer, True)
        voice.start(None, None)
        answer = media.answer(offer)
        if answer is None:   # RFC 3911 4: the matched dialog stays as it was
            call.reject(488, headers=[("Warning", f'305 {self.core.host} "Incompatible '
                                                  'media format"')])
            return
        call.session.offer_answer = media
        call.session.local_contact_params = self.calls.contact_params() + FOCUS
        call.ring(180)
        conference = self.conference_of(joined) or self._new([joined])
        if joined not in conference.legs:
            await self._focus(joined)
            conference.wire(joined)
        if voice.ended.is_set() or call.terminated.done():
            return
        call.accept(answer)
        voice.set_answered()
        conference.wire(voice)
        self.core.emit(CallJoined(peer, self.core.aor, voice.id, joined.id))
        self.emit(conference, "mixing")

    def _joined(self, call: Call) -> VoiceCall | None:
        """The call a Join names, else the INVITE is refused here (400, 403, 481)."""
        request = call.request
        joins = request.headers.values("Join")
        if len(joins) != 1 or request.headers.get("Replaces") is not None:
            call.reject(400, "Bad Request - one Join and no Replaces (RFC 3911 4)")
            return None
        try:
            header = Join.parse(joins[0])
        except SipError as exc:
            call.reject(400, f"Bad Request - {exc}"[:80])
            return None
        ua = self.core.ua
        matched = ua.call_for(header) if ua is not None else None
        voice = next((v for v in self.calls.calls.values()
                      if matched is not None and v.call is matched and not v.ended.is_set()),
                     None)
        if voice is None:
            call.reject(481, "Call/Transaction Does Not Exist - no dialog for Join")
            return None
        if not self.accept_joins:
            call.reject(403, "Forbidden - joins are not accepted here")
            return None
        return voice
