"""The media server (MRF): music on hold, the audio conference focus, announcements.

A node like the application servers: it reaches the core only over SIP (a
TrustGuard ahead of its modules), and the I-CSCF's HSS query sends it every
request for its PSIs (docs/media-server.md):

* ``sip:moh@DOMAIN`` (RFC 5359 2.3): an INVITE is answered ``sendonly`` and
  gets the music; a REFER with ``Refer-To: <held party?Replaces=...>`` (F8)
  makes us INVITE the held party with that Replaces (F12) and play to it;
  the NOTIFY sipfrag carries the final status *and* the new dialog's Call-ID,
  From and To, so the holder can take the call back with Replaces (F19).
  Every stream reads one decoded source (``Music``).
* ``sip:conference@DOMAIN``, the conference factory (RFC 4579 5.1, 2.10 network
  focus): an INVITE creates ``sip:conference-ID@DOMAIN`` and joins it; the 200
  OK's Contact is that URI with ``;isfocus``.  Others join with an INVITE to it,
  or a participant's REFER (in its dialog, or outside one to the conference URI;
  403 from anyone else) makes the focus invite someone (RFC 4579 5.5).  A
  ``Mixer`` per conference: each participant hears the others (mix-minus), one
  20 ms tick for all.  A leaving participant drops only its own leg; the
  conference ends with its last leg (a later INVITE gets 404).
* ``sip:announce@DOMAIN;play=NAME`` or ``sip:announce-NAME@DOMAIN``: plays the
  announcement (``mrf_media.announcement``) and sends BYE.
* ``sip:park@DOMAIN`` and ``sip:park-N@DOMAIN``: call park (RFC 5359 2.15), in
  ``imsbox.apps.park``: orbits in the store, music while parked, retrieve, ring-back.

Refusals: no common codec 488 with a Warning; an unknown conference or
announcement 404 with the reason; no free RTP port in the range 480 with the
reason and Retry-After (a 503 would reach the phone as a bare 500: proxies
rewrite it, RFC 3261 16.7).  On ``close()`` every leg gets BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass, field

from ..config import Config, ConfigError
from ..media import MediaError, Mixer, MixerPort, PortAllocator, RtpSession
from ..sdp import Direction
from ..sip.endpoint import Priority, ServerContext, SipEndpoint
from ..sip.headers import HeaderError, NameAddr
from ..sip.message import Request, Response, new_tag
from ..sip.transaction import TimerValues
from ..sip.ua.dialog import build_request
from ..sip.ua.invite import InviteConfig
from ..sip.ua.refer import EventAgent, IncomingRefer, sipfrag
from ..sip.ua.useragent import Call, Origin, UserAgent
from ..sip.uri import SipUri, Uri, UriError, parse_uri
from ..store import Store
from .anchor import caller_identity
from .focus import FOCUS_PARAMS
from .mrf_media import LegMedia, Music, announcement
from .node import listen_behind_guard, node_uri
from .park import (
    ORBIT_PREFIX, PARK_KINDS, PARK_USER, CallPark, ParkError, orbit_in, orbit_of,
)

__all__ = ["ANNOUNCE_USER", "AudioConference", "FACTORY_USER", "Leg", "MOH_USER", "MediaServer",
           "MediaServerError"]

log = logging.getLogger(__name__)

MOH_USER = "moh"
FACTORY_USER = "conference"
CONFERENCE_PREFIX = "conference-"
ANNOUNCE_USER = "announce"
ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "REFER", "NOTIFY", "SUBSCRIBE")
RETRY_AFTER = "5"
INVITE_WAIT = 40.0      # for the answer of someone we invite (REFER, music)
ANNOUNCE_TAIL = 0.2     # seconds after an announcement before the BYE
# legs that send and receive: the conference, and park (retrieve needs no re-INVITE)
SENDRECV_KINDS = ("conference", *PARK_KINDS)


class MediaServerError(Exception):
    """A request the media server refuses: ``status`` and ``reason`` of the answer."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()
                 ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(slots=True)
class Leg:
    """One call of the media server and what it plays."""

    kind: str                       # "moh", "conference", "announce"
    call: Call
    media: LegMedia
    uri: str                        # the service URI of our side
    peer: str = ""
    port: MixerPort | None = None
    conference: AudioConference | None = None

    @property
    def rtp(self) -> RtpSession:
        return self.media.session


@dataclass(slots=True)
class AudioConference:
    """One network-focus conference: its legs and their mix-minus mixer."""

    uri: str
    creator: str
    mixer: Mixer = field(default_factory=Mixer)
    legs: dict[str, Leg] = field(default_factory=dict)   # by Call-ID
    ended: bool = False

    @property
    def participants(self) -> list[str]:
        return [leg.peer for leg in self.legs.values()]


@dataclass(slots=True)
class _Pending:
    kind: str
    uri: str                     # our side: the PSI or the conference URI
    conference: AudioConference | None = None
    play: bytes = b""
    orbit: int | None = None     # a retrieve's orbit


class MediaServer:
    """The MRF node on ``config.media_server``; ``await start()``, ``await close()``."""

    def __init__(self, config: Config, *, timers: TimerValues | None = None,
                 trace: bool = False, store: Store | None = None) -> None:
        self.config = config
        self.timers = timers
        node = config.media_server
        settings = config.media
        self.endpoint = SipEndpoint(timers, trace, limits=config.limits.sip,
                                    overload=config.limits.overload)
        self.ports = PortAllocator(node.host, settings.rtp_start, settings.rtp_stop)
        try:
            self.music = Music.load(settings.moh_file or None)
        except MediaError as exc:   # `imsbox serve` prints it and exits 2
            raise ConfigError("media_server.moh_file", f"{exc.reason}; give an 8 kHz "
                              "mono 16-bit WAV (or leave it empty for the melody)") from None
        self.announcements = settings.announcements or None
        self.ua: UserAgent | None = None
        self.events: EventAgent | None = None
        self.legs: dict[str, Leg] = {}
        self.conferences: dict[str, AudioConference] = {}
        self.ended_conferences = 0
        domain = config.domain
        self.moh_uri = f"sip:{MOH_USER}@{domain}"
        self.factory_uri = f"sip:{FACTORY_USER}@{domain}"
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Future[object]] = set()
        self.uri = ""
        self.park = CallPark(self, store, lambda: self.uri)   # the store keeps the orbits

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        node = self.config.media_server
        port = await listen_behind_guard(self.endpoint, self.endpoint.listen, self.config, node,
                                         "media server")
        uri = self.uri = node_uri(node.host, port)
        await self.park.start()
        timers = self.timers or TimerValues()
        self.ua = UserAgent(self.endpoint, f"<{uri}>", uri,
                            config=InviteConfig(t1=timers.t1, t2=timers.t2, allow=ALLOW,
                                                extensions=("replaces",)),
                            on_call=self._on_call, serve_new=False)
        self.events = EventAgent(self.ua, on_refer=self._on_refer, contact_of=self._contact_of)
        self.endpoint.add_module(_InviteModule(self))
        self.endpoint.add_module(_ReferGuard(self))
        log.info("media server up on %s:%d (RTP %d-%d, music %s)", node.host, port,
                 self.ports.start, self.ports.stop, self.music.name)

    async def close(self) -> None:
        """BYE every leg (the phones' calls end cleanly), then stop."""
        legs = list(self.legs.values())
        await asyncio.gather(*(self.hangup(leg) for leg in legs), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for leg in list(self.legs.values()):
            await self._drop(leg)
        await self.park.close()
        if self.events is not None:
            self.events.close()
        if self.ua is not None:
            await self.ua.close()
        await self.endpoint.close()

    def listening_lines(self) -> list[str]:
        return [f"media server listening on {d}" for d in self.endpoint.transport.listen_addresses]

    def spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- which service a Request-URI names ----------------------------------------------
    def service_of(self, request: Request) -> _Pending:
        """The service of a new INVITE's Request-URI; MediaServerError (404) if none."""
        uri = request.uri
        if not isinstance(uri, SipUri) or uri.user is None or \
                uri.host.lower() != self.config.domain:
            raise MediaServerError(404, "Not Found - not a media server URI")
        user = uri.user.lower()
        if user == MOH_USER:
            return _Pending("moh", self.moh_uri)
        if user == FACTORY_USER:
            return _Pending("factory", self.factory_uri)
        if user.startswith(CONFERENCE_PREFIX):
            return _Pending("conference", self._conference_uri(user), self._conference(user))
        if user == PARK_USER:
            return _Pending("park", f"sip:{PARK_USER}@{self.config.domain}")
        if user.startswith(ORBIT_PREFIX):
            return _Pending("retrieve", f"sip:{user}@{self.config.domain}",
                            orbit=orbit_of(user))
        if user == ANNOUNCE_USER or user.startswith(ANNOUNCE_USER + "-"):
            name = uri.param("play") or user[len(ANNOUNCE_USER) + 1:]
            if not name:
                raise MediaServerError(404, "Not Found - say which announcement (;play=NAME)")
            pcm = announcement(name, self.announcements)
            if pcm is None:
                raise MediaServerError(404, f"Not Found - no announcement {name[:40]!r}")
            return _Pending("announce", f"sip:{user}@{self.config.domain}", play=pcm)
        raise MediaServerError(404, "Not Found - no such media service")

    def _conference_uri(self, user: str) -> str:
        return f"sip:{user}@{self.config.domain}"

    def _conference(self, user: str) -> AudioConference:
        conference = self.conferences.get(self._conference_uri(user))
        if conference is None or conference.ended:
            raise MediaServerError(404, "Not Found - no such conference (it ended or never was)")
        return conference

    # -- new INVITEs ------------------------------------------------------------------
    def serve_invite(self, ctx: ServerContext) -> None:
        request = ctx.request
        try:
            pending = self.service_of(request)
        except MediaServerError as exc:
            log.info("INVITE %s from %s: %d %s", request.uri, caller_identity(request),
                     exc.status, exc.reason)
            ctx.respond(Response.for_request(request, exc.status, exc.reason[:120],
                                             to_tag=new_tag()))
            return
        assert self.ua is not None
        if pending.kind == "factory":   # RFC 4579 5.1: a new conference for this INVITE
            uri = self._conference_uri(f"{CONFERENCE_PREFIX}{secrets.token_hex(6)}")
            pending = _Pending("conference", uri,
                               AudioConference(uri, caller_identity(request)))
        self._pending[request.call_id] = pending
        focus = pending.kind == "conference"
        self.ua.new_call(ctx, contact=parse_uri(pending.uri),
                         contact_params=FOCUS_PARAMS if focus else "")

    async def _on_call(self, call: Call) -> None:
        pending = self._pending.pop(call.call_id, None)
        if pending is None:
            call.reject(500, "Server Internal Error - no service for this call")
            return
        try:
            await self._prepare_park(call, pending)
            leg = await self._answer(call, pending)
        except (MediaServerError, ParkError) as exc:
            log.info("INVITE %s: %d %s", pending.uri, exc.status, exc.reason)
            headers = exc.headers if isinstance(exc, MediaServerError) else ()
            call.reject(exc.status, exc.reason, headers=list(headers))
            await self.park.unclaim(pending.uri)
            return
        self._start_leg(leg, pending)

    async def _prepare_park(self, call: Call, pending: _Pending) -> None:
        """Park by transfer: claim an orbit (the call's URI from now on); retrieve:
        take the orbit (ParkError 404 when empty) before the INVITE is answered."""
        if pending.kind == "park":
            request = call.request
            parker = referred_by(request) or self.park.named_parker(request.uri) \
                or caller_identity(request)
            pending.uri = await self.park.claim(parker, caller_identity(request), tell=True)
        elif pending.kind == "retrieve":
            pending.uri = await self.park.take(pending.orbit)

    async def _answer(self, call: Call, pending: _Pending) -> Leg:
        """Open the RTP session, answer the offer, accept: the leg."""
        direction = Direction.SENDRECV if pending.kind in SENDRECV_KINDS else Direction.SENDONLY
        media = await self._media(direction)
        answer_sdp = media.answer(call.request.body) if call.request.body else None
        if answer_sdp is None:
            await media.session.close()
            host = self.config.media_server.host
            if media.refused is None and not call.request.body:
                raise MediaServerError(488, "Not Acceptable Here - an INVITE without an SDP "
                                       "offer is not served")
            raise MediaServerError(488, "Not Acceptable Here - no common audio codec",
                                   (("Warning", media.warning(host)),))
        call.session.offer_answer = media   # re-INVITEs (hold) are answered by the media
        leg = Leg(pending.kind, call, media, pending.uri, caller_identity(call.request))
        headers = [("Allow-Events", "refer")] if pending.kind == "conference" else []
        call.accept(answer_sdp, headers=headers)
        return leg

    async def _media(self, direction: Direction) -> LegMedia:
        try:
            session = await RtpSession.open(self.ports, host=self.config.media_server.host)
        except MediaError as exc:
            log.warning("no RTP port for a call: %s", exc)
            # 480, not 503: every proxy on the way back would turn a 503 into a bare
            # 500 (RFC 3261 16.7 step 6), losing the reason (as the I-CSCF does too)
            raise MediaServerError(480, "Temporarily Unavailable - no free RTP port on the "
                                   "media server", (("Retry-After", RETRY_AFTER),)) from None
        return LegMedia(session, self.config.media_server.host, direction)

    def _start_leg(self, leg: Leg, pending: _Pending) -> None:
        """What the leg plays, and its end."""
        self.legs[leg.call.call_id] = leg
        if leg.kind == "moh":
            leg.rtp.source = self.music.listener()
        elif leg.kind == "announce":
            leg.rtp.source = _Once(pending.play)
            self.spawn(self._announce(leg, len(pending.play) / 16000))
        elif leg.kind == "park":
            self.park.hold(leg)
        elif leg.kind in PARK_KINDS:
            self.park.retrieved(leg)
        elif pending.conference is not None:
            self._join(pending.conference, leg)
        self.spawn(self._watch(leg))

    # -- conferences ------------------------------------------------------------------
    def _join(self, conference: AudioConference, leg: Leg) -> None:
        if conference.uri not in self.conferences:
            self.conferences[conference.uri] = conference
            log.info("conference %s created by %s", conference.uri, conference.creator)
        port = conference.mixer.port()
        leg.port, leg.conference = port, conference
        leg.rtp.source = leg.rtp.sink = port
        conference.legs[leg.call.call_id] = leg
        log.info("%s joined %s (%d in it)", leg.peer, conference.uri, len(conference.legs))

    def _leave(self, leg: Leg) -> None:
        conference = leg.conference
        if conference is None:
            return
        if leg.port is not None:
            leg.port.close()
        conference.legs.pop(leg.call.call_id, None)
        leg.rtp.source = leg.rtp.sink = None
        log.info("%s left %s (%d left)", leg.peer, conference.uri, len(conference.legs))
        if not conference.legs:   # the last one out ends it
            conference.ended = True
            self.conferences.pop(conference.uri, None)
            self.ended_conferences += 1
            log.info("conference %s ended", conference.uri)

    def conference_origin(self, uri: str) -> Origin:
        """Our side of a dialog we start: ``uri`` (with ``;isfocus`` for a conference),
        routed to the I-CSCF, which finds the invitee's S-CSCF."""
        icscf = self.config.icscf
        host = f"[{icscf.host}]" if ":" in icscf.host else icscf.host
        parsed = parse_uri(uri)
        params = FOCUS_PARAMS if uri in self.conferences else ""
        route = f"<sip:{host}:{icscf.port};lr{icscf.transport_param}>"
        return Origin(NameAddr(parsed), parsed, (route,), contact_params=params)

    # -- REFER: the focus invites someone (RFC 4579 5.5), music for a held party (2.3) --
    def refusal(self, request: Request) -> Response | None:
        """A REFER outside a dialog to a URI we do not serve: 404 with the reason."""
        if request.to.tag:
            return None
        uri = request.uri
        user = uri.user.lower() if isinstance(uri, SipUri) and uri.user else ""
        if user in (MOH_USER, PARK_USER):
            return None
        if user.startswith(CONFERENCE_PREFIX):
            conference = self.conferences.get(self._conference_uri(user))
            if conference is None:
                return _answer(request, 404, "Not Found - no such conference")
            if caller_identity(request) not in conference.participants:
                return _answer(request, 403, "Forbidden - not a participant of this conference")
            return None
        return _answer(request, 404, "Not Found - REFER is served by sip:moh and conferences")

    def _contact_of(self, request: Request) -> tuple[Uri, str]:
        """The REFER dialog's Contact: the URI it was sent to (``;isfocus`` for a conference)."""
        assert self.ua is not None
        uri = request.uri
        if isinstance(uri, SipUri) and uri.user:
            ours = f"sip:{uri.user.lower()}@{self.config.domain}"
            if ours in self.conferences:
                return parse_uri(ours), FOCUS_PARAMS
            if ours == self.moh_uri or uri.user.lower() == PARK_USER:
                return parse_uri(ours), ""
        return self.ua.contact, ""

    async def _on_refer(self, incoming: IncomingRefer) -> None:
        assert self.events is not None
        request = incoming.request
        ours = self._refer_service(incoming)
        if ours is None:
            self.events.report(incoming, 404, "Not Found - no such conference")
            return
        kind, uri = ours
        target = str(incoming.target)
        if kind == "park":   # 2.15: the orbit first; the parked party is called from it
            try:
                uri = await self.park.claim(caller_identity(request), canonical(target))
            except ParkError as exc:
                self.events.report(incoming, exc.status, exc.reason)
                return
        headers = [("Referred-By", f"<{caller_identity(request)}>")]
        if incoming.replaces is not None:   # 2.3 F12: INVITE with Replaces
            headers.append(("Replaces", str(incoming.replaces)))
            headers.append(("Require", "replaces"))
        leg, status, reason = await self.invite_leg(kind, uri, target, headers)
        if leg is None:
            await self.park.unclaim(uri)
            self.events.report(incoming, status, reason)
            return
        self._report_dialog(incoming, leg)

    def _refer_service(self, incoming: IncomingRefer) -> tuple[str, str] | None:
        """(kind, our URI) of a REFER: in a conference leg's dialog, or to a PSI."""
        request = incoming.request
        leg = self.legs.get(request.call_id)
        if leg is not None and leg.conference is not None and not leg.conference.ended:
            return "conference", leg.conference.uri
        uri = request.uri
        user = uri.user.lower() if isinstance(uri, SipUri) and uri.user else ""
        if user == MOH_USER:
            return "moh", self.moh_uri
        if user == PARK_USER:
            return "park", ""
        conference = self.conferences.get(self._conference_uri(user))
        return ("conference", conference.uri) if conference is not None else None

    def _report_dialog(self, incoming: IncomingRefer, leg: Leg) -> None:
        """The final NOTIFY: ``200 OK`` with the new dialog's Call-ID, From and To in the
        sipfrag (RFC 3420 allows headers), so the holder can Replace it on resume."""
        assert self.events is not None
        dialog = leg.call.session.dialog
        sub = incoming.subscription
        if dialog is None or sub is None or sub.terminated:
            self.events.report(incoming, 200)
            return
        body = sipfrag(200) + (
            f"Call-ID: {dialog.id.call_id}\r\n"
            f"From: <{leg.uri}>;tag={dialog.id.local_tag}\r\n"
            f"To: <{leg.peer}>;tag={dialog.id.remote_tag}\r\n"
            + (f"Subject: orbit {orbit_in(leg.uri)}\r\n" if leg.kind == "park" else "")
        ).encode()
        self.events.terminate(sub, body=body)

    async def invite_leg(self, kind: str, uri: str, target: str,
                      headers: list[tuple[str, str]]) -> tuple[Leg | None, int, str]:
        """INVITE ``target`` from ``uri``: music (sendonly), a conference leg, or a
        park leg (sendrecv: the parked party, a ring-back to its parker)."""
        assert self.ua is not None
        direction = Direction.SENDRECV if kind in SENDRECV_KINDS else Direction.SENDONLY
        try:
            media = await self._media(direction)
        except MediaServerError as exc:
            return None, exc.status, exc.reason
        try:
            call = await self.ua.invite(target, media.offer(), headers, offer_answer=media,
                                        origin=self.conference_origin(uri))
        except (UriError, ValueError) as exc:
            await media.session.close()
            log.info("cannot invite %s: %s", target, exc)
            return None, 400, "Bad Request - Refer-To"
        try:
            final = await asyncio.wait_for(asyncio.shield(call.final), INVITE_WAIT)
        except TimeoutError:
            with contextlib.suppress(Exception):
                await call.cancel()
            final = None
        if final is None or final.status >= 300:
            await media.session.close()
            return None, final.status if final else 408, final.reason if final else "Timeout"
        leg = Leg(kind, call, media, uri, canonical(target))
        conference = self.conferences.get(uri)
        pending = _Pending(kind, uri, conference)
        self._start_leg(leg, pending)
        return leg, final.status, final.reason

    async def message(self, uri: str, target: str, text: str,
                      headers: list[tuple[str, str]]) -> str:
        """A text/plain MESSAGE from our ``uri`` to ``target`` via the I-CSCF: its
        final status and reason (a park orbit for its parker)."""
        origin = self.conference_origin(uri)
        try:
            request = build_request("MESSAGE", target, origin.local, NameAddr(parse_uri(target)),
                                    route=origin.route, headers=headers, body=text.encode(),
                                    content_type="text/plain;charset=UTF-8")
            final = await asyncio.wait_for(self.endpoint.request(request).final(), INVITE_WAIT)
        except (UriError, ValueError, TimeoutError) as exc:
            return f"not sent ({exc or 'timeout'})"
        return f"{final.status} {final.reason}"

    # -- endings ----------------------------------------------------------------------
    async def _announce(self, leg: Leg, seconds: float) -> None:
        await asyncio.sleep(seconds + ANNOUNCE_TAIL)
        await self.hangup(leg)

    async def hangup(self, leg: Leg) -> None:
        if leg.call.terminated.done():
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(leg.call.bye(), 5)

    async def _watch(self, leg: Leg) -> None:
        await asyncio.shield(leg.call.terminated)
        await self._drop(leg)

    async def _drop(self, leg: Leg) -> None:
        if self.legs.pop(leg.call.call_id, None) is None:
            return
        self._leave(leg)
        await self.park.dropped(leg)
        await leg.rtp.close()


def referred_by(request: Request) -> str:
    """The Referred-By identity (RFC 3892) of a transferred INVITE, '' without one."""
    value = request.headers.get("Referred-By")
    if not value:
        return ""
    try:
        return canonical(str(NameAddr.parse(value).uri))
    except (HeaderError, UriError):   # a malformed header: as if there were none
        return ""


def canonical(target: str) -> str:
    try:
        uri = parse_uri(target)
    except UriError:
        return target
    return str(uri.copy(params=[], headers=[])) if isinstance(uri, SipUri) else str(uri)


class _Once:
    """Plays ``pcm`` once, then nothing."""

    def __init__(self, pcm: bytes) -> None:
        self._pcm = pcm
        self._offset = 0

    def read(self, samples: int) -> bytes | None:
        if self._offset >= len(self._pcm):
            return None
        frame = self._pcm[self._offset:self._offset + 2 * samples]
        self._offset += 2 * samples
        return frame + bytes(2 * samples - len(frame))


def _answer(request: Request, status: int, reason: str) -> Response:
    return Response.for_request(request, status, reason, to_tag=request.to.tag or new_tag())


class _InviteModule:
    """New INVITEs to the media server's URIs; the UA's dialog layer has the rest."""

    name = "media-server"
    priority = Priority.SERVICE
    methods = ("INVITE",)

    def __init__(self, node: MediaServer) -> None:
        self.node = node

    def on_request(self, ctx: ServerContext) -> bool:
        request = ctx.request
        if request.method != "INVITE" or request.to.tag:
            return False
        if request.headers.get("Replaces") is not None:
            ctx.respond(_answer(request, 481, "Call/Transaction Does Not Exist - the media "
                                              "server takes no Replaces"))
            return True
        self.node.serve_invite(ctx)
        return True


class _ReferGuard:
    """REFER to an unknown conference is refused (404) before the event agent's 202."""

    name = "media-server-refer"
    priority = Priority.EVENT - 1
    methods = ("REFER",)

    def __init__(self, node: MediaServer) -> None:
        self.node = node

    def on_request(self, ctx: ServerContext) -> bool:
        if ctx.request.method != "REFER":
            return False
        refusal = self.node.refusal(ctx.request)
        if refusal is None:
            return False
        ctx.respond(refusal)
        return True

