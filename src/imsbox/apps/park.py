"""Call park (RFC 5359 2.15) on the media server: orbits, music, retrieve, ring-back.

The media server hosts ``sip:park@DOMAIN`` and ``sip:park-N@DOMAIN`` (orbit N):

* **park by REFER** (2.15 F5): the parker REFERs ``sip:park@DOMAIN`` outside a
  dialog with ``Refer-To: <parked party?Replaces=...>``, as for music on hold.
  An orbit is claimed in the store first, then the parked party is INVITEd from
  ``sip:park-N@DOMAIN`` with that Replaces (F9); the final NOTIFY's sipfrag names
  the park dialog (its ``From`` is the orbit URI) and carries ``Subject: orbit N``.
* **park by transfer**: a phone told to call ``sip:park@DOMAIN`` (a blind
  transfer there) is answered and parked in an orbit; its parker is the
  ``Referred-By``, else the user ``sip:park@DOMAIN;parker=NAME`` names (for
  phones that drop Referred-By), else the caller itself, who learns the orbit from a MESSAGE
  (text/plain, from ``sip:park-N@DOMAIN``): the transfer's NOTIFY comes from the
  parked phone, which cannot know it. The parked party hears the orbit first
  (the ``orbit-N`` announcement: a beep and N's DTMF tones), then the music, so
  either of them can pass it on.
* **retrieve**: an INVITE to ``sip:park-N@DOMAIN`` takes the orbit from the store
  (of two retrievers only one gets it) and is bridged to the parked leg: the
  music stops and the two hear each other through a two-port mix-minus mixer.
  An empty orbit gets 404 with the reason.
* **ring-back**: a call still parked after ``[telephony] park_timeout`` seconds
  is taken from its orbit and the parker is called from the orbit URI; answered,
  the two are bridged; not answered, the parked call ends (BYE).

Orbits live in the store (``Store.parking``): the lowest free orbit of
``[telephony] park_orbits`` is claimed atomically, so two calls parked at the
same moment never share one, also across media server instances. While parked,
the leg is ``sendrecv`` (only the music is sent), so a retrieve needs no
re-INVITE of the parked party.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..media import Mixer, Source
from ..sip.uri import SipUri, UriError, parse_uri
from ..store import ParkedCall, SqliteStore, Store, StoreError
from .mrf_media import announcement

if TYPE_CHECKING:
    from .media_server import Leg, MediaServer

__all__ = ["ORBIT_PREFIX", "PARK_KINDS", "PARK_USER", "CallPark", "ParkError", "orbit_in",
           "orbit_of"]

log = logging.getLogger(__name__)

PARK_USER = "park"
ORBIT_PREFIX = "park-"
# the kinds of media server legs this module looks after
PARK_KINDS = ("park", "retrieve", "ringback")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")   # a user part of ours


class ParkError(Exception):
    """A park or retrieve refused: ``status`` and ``reason`` of the answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def orbit_of(user: str) -> int | None:
    """``park-701`` -> 701; None when it is not an orbit URI's user part."""
    number = user.lower().removeprefix(ORBIT_PREFIX)
    if user.lower() == number or not number.isdigit() or len(number) > 6:
        return None
    return int(number)


class Then:
    """Plays ``first`` once, then ``rest`` (an announcement before the music)."""

    def __init__(self, first: bytes, rest: Source) -> None:
        self._first, self._offset, self._rest = first, 0, rest

    def read(self, samples: int) -> bytes | None:
        if self._offset >= len(self._first):
            return self._rest.read(samples)
        frame = self._first[self._offset:self._offset + 2 * samples]
        self._offset += 2 * samples
        return frame + bytes(2 * samples - len(frame))


def orbit_in(uri: str) -> int | None:
    """The orbit of ``sip:park-N@DOMAIN``; None for any other URI."""
    try:
        parsed = parse_uri(uri)
    except UriError:
        return None
    return orbit_of(parsed.user or "") if isinstance(parsed, SipUri) else None


@dataclass(slots=True)
class Parked:
    """A call in an orbit on this media server."""

    record: ParkedCall
    leg: Leg | None = None             # None until the parked party answered
    timer: asyncio.Task[None] | None = None
    tell: bool = False                 # a MESSAGE tells the parker the orbit (by transfer)


class CallPark:
    """The park service of one media server (see the module text)."""

    def __init__(self, server: MediaServer, store: Store | None,
                 holder: Callable[[], str]) -> None:
        self.server = server
        settings = server.config.telephony
        self.first, self.last = settings.park_first, settings.park_last
        self.timeout = float(settings.park_timeout)
        self.lot = server.config.domain
        self._store = store
        self._own_store: Store | None = None
        self._holder = holder
        self.orbits: dict[str, Parked] = {}        # by orbit URI
        self.bridges: dict[str, Leg] = {}          # Call-ID -> the leg it is bridged to
        self._taken: dict[str, Parked] = {}        # orbit URI -> a park being retrieved

    @property
    def store(self) -> Store:
        assert self._store is not None, "CallPark.start() first"
        return self._store

    async def start(self) -> None:
        """Without a shared store (a media server run on its own), one in memory.
        Orbits a killed run of this instance left behind are freed: their calls
        went with it."""
        if self._store is None:
            self._own_store = await SqliteStore(":memory:").open()
            self._store = self._own_store
        for stale in await self.store.parking.parked(self.lot):
            if stale.holder == self._holder():
                await self.store.parking.release(self.lot, stale.orbit, stale.token)
                log.info("orbit %d freed: left by an earlier run", stale.orbit)

    async def close(self) -> None:
        for parked in list(self.orbits.values()):
            await self._free(parked)
        if self._own_store is not None:
            await self._own_store.close()

    def uri(self, orbit: int) -> str:
        return f"sip:{ORBIT_PREFIX}{orbit}@{self.lot}"

    def named_parker(self, uri: object) -> str:
        """``sip:park@DOMAIN;parker=NAME``: sip:NAME@DOMAIN. A phone transferred to
        park dials the Refer-To URI as given but may drop Referred-By (baresip 1.0
        does), so a parker that wants the orbit's MESSAGE names itself there."""
        name = uri.param("parker") if isinstance(uri, SipUri) else None
        if not name or not _NAME.fullmatch(name):
            return ""
        return f"sip:{name.lower()}@{self.lot}"

    # -- parking -----------------------------------------------------------------------
    async def claim(self, parker: str, parked: str, tell: bool = False) -> str:
        """An orbit for a new park: its URI; ParkError 480 when the lot is full.
        ``tell``: once parked, a MESSAGE names the orbit to the parker."""
        try:
            record = await self.store.parking.claim(
                self.lot, self.first, self.last, secrets.token_hex(8), parker, parked,
                self._holder())
        except StoreError as exc:
            log.warning("park: %s", exc)
            raise ParkError(480, "Temporarily Unavailable - the park store failed") from None
        if record is None:
            raise ParkError(480, f"Temporarily Unavailable - every park orbit "
                                 f"({self.first}-{self.last}) is taken")
        uri = self.uri(record.orbit)
        self.orbits[uri] = Parked(record, tell=tell)
        log.info("orbit %d claimed by %s for %s", record.orbit, parker, parked)
        return uri

    async def unclaim(self, uri: str) -> None:
        """A park or retrieve INVITE failed. Park: the party never answered (or
        refused), the orbit is free again. Retrieve: the call goes back into its
        orbit (the same number: a claim of exactly that one)."""
        parked = self.orbits.get(uri)
        if parked is not None and parked.leg is None:
            await self._free(parked)
            return
        parked = self._taken.pop(uri, None)
        if parked is None:
            return
        old = parked.record
        record = await self.store.parking.claim(self.lot, old.orbit, old.orbit, old.token,
                                                old.parker, old.parked, old.holder)
        if record is None and parked.leg is not None:   # taken meanwhile: nowhere to go
            await self.server.hangup(parked.leg)
        elif record is not None:
            parked.record = record

    def hold(self, leg: Leg) -> None:
        """The parked party answered: music until a retrieve or the ring-back."""
        parked = self.orbits.get(leg.uri)
        if parked is None:   # freed in between (close): nothing to hold it for
            self.server.spawn(self.server.hangup(leg))
            return
        parked.leg = leg
        music = self.server.music.listener()
        orbit = parked.record.orbit
        digits = announcement(f"orbit-{orbit}") if parked.tell else None
        leg.rtp.source = Then(digits, music) if digits else music
        parked.timer = asyncio.ensure_future(self._ring_back_later(parked))
        if parked.tell:
            self.server.spawn(self._tell(parked.record))

    async def _tell(self, record: ParkedCall) -> None:
        """The orbit, in a MESSAGE from it to the parker (through the I-CSCF)."""
        uri = self.uri(record.orbit)
        text = (f"{record.parked} is parked in orbit {record.orbit}: call {uri} "
                f"(imsbox ue retrieve {record.orbit}) to take the call")
        answer = await self.server.message(uri, record.parker, text,
                                           [("Subject", f"orbit {record.orbit}")])
        log.info("orbit %d told to %s: %s", record.orbit, record.parker, answer)

    # -- retrieving --------------------------------------------------------------------
    async def take(self, orbit: int | None) -> str:
        """Before a retrieve INVITE is answered: the orbit is ours (its URI) or ParkError."""
        if orbit is None:
            raise ParkError(404, "Not Found - no such park orbit (sip:park-NUMBER)")
        uri = self.uri(orbit)
        parked = self.orbits.get(uri)
        if parked is None or parked.leg is None:
            record = await self.store.parking.get(self.lot, orbit)
            if record is not None and record.holder != self._holder():
                raise ParkError(480, f"Temporarily Unavailable - orbit {orbit} is held by "
                                     "another media server")
            raise ParkError(404, f"Not Found - no call parked in orbit {orbit}")
        if uri in self._taken:
            raise ParkError(404, f"Not Found - no call parked in orbit {orbit} "
                                 "(already retrieved)")
        if await self.store.parking.take(self.lot, orbit) is None:
            raise ParkError(404, f"Not Found - no call parked in orbit {orbit} "
                                 "(already retrieved)")
        self._taken[uri] = parked
        return uri

    def retrieved(self, leg: Leg) -> None:
        """The retriever's call is answered: bridge it to the parked party."""
        parked = self._taken.pop(leg.uri, None)
        if parked is None or parked.leg is None:
            self.server.spawn(self.server.hangup(leg))
            return
        self._bridge(parked, leg)

    def _bridge(self, parked: Parked, other: Leg) -> None:
        held = parked.leg
        assert held is not None
        self._forget(parked)
        if held.call.terminated.done():     # the parked party hung up meanwhile
            self.server.spawn(self.server.hangup(other))
            return
        mixer = Mixer()   # two ports, mix-minus: each hears the other
        for one in (held, other):
            port = mixer.port()
            one.port = port
            one.rtp.source = one.rtp.sink = port
        self.bridges[held.call.call_id] = other
        self.bridges[other.call.call_id] = held
        log.info("orbit %d: %s connected to %s", parked.record.orbit, held.peer, other.peer)

    # -- ring-back ---------------------------------------------------------------------
    async def _ring_back_later(self, parked: Parked) -> None:
        await asyncio.sleep(self.timeout)
        record = parked.record
        try:
            taken = await self.store.parking.take(self.lot, record.orbit)
        except StoreError as exc:   # the call stays parked; a retrieve still works
            log.warning("orbit %d: no ring-back: %s", record.orbit, exc)
            return
        if taken is None:
            return      # retrieved at this very moment
        uri = self.uri(record.orbit)
        self._taken[uri] = parked
        parked.timer = None
        log.info("orbit %d: nobody retrieved %s in %g s, ringing %s", record.orbit,
                 record.parked, self.timeout, record.parker)
        headers = [("Subject", f"parked call from {record.parked} (orbit {record.orbit})")]
        leg, status, reason = await self.server.invite_leg("ringback", uri, record.parker,
                                                           headers)
        if leg is None:
            log.info("orbit %d: ring-back of %s: %d %s; ending the parked call",
                     record.orbit, record.parker, status, reason)
            self._taken.pop(uri, None)
            self._forget(parked)
            if parked.leg is not None:
                await self.server.hangup(parked.leg)

    # -- endings -----------------------------------------------------------------------
    async def dropped(self, leg: Leg) -> None:
        """A leg of ours ended: free its orbit, or end the call it was bridged to."""
        other = self.bridges.pop(leg.call.call_id, None)
        if other is not None:
            self.bridges.pop(other.call.call_id, None)
            await self.server.hangup(other)
            return
        parked = self.orbits.get(leg.uri)
        if parked is not None and parked.leg is leg:
            await self._free(parked)

    async def _free(self, parked: Parked) -> None:
        self._forget(parked)
        record = parked.record
        with contextlib.suppress(StoreError):
            await self.store.parking.release(self.lot, record.orbit, record.token)
        log.info("orbit %d free", record.orbit)

    def _forget(self, parked: Parked) -> None:
        if parked.timer is not None and parked.timer is not asyncio.current_task():
            parked.timer.cancel()
        parked.timer = None
        uri = self.uri(parked.record.orbit)
        if self.orbits.get(uri) is parked:
            del self.orbits[uri]
