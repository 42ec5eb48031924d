"""Click to dial (RFC 5359 2.18) by third-party call control (RFC 3725).

The telephony AS is the controller; ``imsbox call-control dial FROM TO`` asks
it over a Unix socket in the data dir (``telephony.sock``, owner-only, the
way an operator's tool reaches a running server) and reads its progress
as JSON lines. The flow needs nothing of the phones but plain INVITEs with
SDP (no offerless INVITE, no REFER support)::

    AS -> FROM   INVITE  offer: inactive, no media     (FROM rings first)
    FROM -> AS   200     answer A (FROM's address, codec, inactive)
    AS -> FROM   ACK
    AS -> TO     INVITE  offer: A made sendrecv        (TO rings; its caller is FROM)
    TO -> AS     200     answer B (TO's address)
    AS -> TO     ACK
    AS -> FROM   re-INVITE offer: B made sendrecv       (RFC 3725 flow IV's reconnect)
    FROM -> AS   200     answer A' (same address), ACK  -> RTP FROM <-> TO directly
    AS -> TO     re-INVITE offer: A' (only if A held the RFC 2543 way, c= 0.0.0.0,
                 as linphone 5.1 answers an inactive offer: TO has no address yet)

Both legs go through the I-CSCF to the parties' S-CSCFs (terminating
services apply). A BYE on either leg ends the other. Each leg's INVITE
asserts the other party (P-Asserted-Identity), so each phone shows whom it
is connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Coroutine
from pathlib import Path

from .. import sdp
from ..config import Config
from ..sip.headers import NameAddr
from ..sip.ua.useragent import Call, Origin, UserAgent, end_together
from ..sip.uri import parse_uri
from ..store import Store
from .telephony_services import ServiceDataError, validate

__all__ = ["ClickToDial", "DialFailed"]

log = logging.getLogger(__name__)

RING_TIMEOUT = 60.0
Report = Callable[[dict[str, object]], None]


class DialFailed(Exception):
    """The call could not be made: ``status`` (SIP or 400/404) and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ClickToDial:
    """The 3PCC controller and its control socket."""

    def __init__(self, config: Config, store: Store, ua: UserAgent) -> None:
        self.config = config
        self.store = store
        self.ua = ua
        self.server: asyncio.AbstractServer | None = None
        self.path: Path | None = None
        self.pairs: list[tuple[Call, Call]] = []
        self._tasks: set[asyncio.Future[object]] = set()

    async def serve(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()   # left over by a process that died
        self.server = await asyncio.start_unix_server(self._client, path=str(path))
        os.chmod(path, 0o600)
        self.path = path

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for a, b in self.pairs:
            for call in (a, b):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.bye(), 2)
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def report(event: dict[str, object]) -> None:
            writer.write(json.dumps(event).encode() + b"\n")
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            command = json.loads(line or b"{}")
            if command.get("command") != "dial":
                raise DialFailed(400, "unknown command; expected dial")
            await self.dial(str(command.get("from", "")), str(command.get("to", "")), report)
        except DialFailed as exc:
            report({"event": "failed", "status": exc.status, "reason": exc.reason})
        except (ValueError, TimeoutError) as exc:
            report({"event": "failed", "status": 400, "reason": f"bad request: {exc}"})
        finally:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

    async def _party(self, text: str) -> str:
        try:
            uri = validate("forward-unconditional", [text], self.config.domain)[0]
        except ServiceDataError:
            raise DialFailed(400, f"{text!r} is not a user, number or URI") from None
        if await self.store.subscribers.get_public_identity(uri) is None:
            raise DialFailed(404, f"no subscriber {uri}")
        return uri

    def _origin(self, identity: str) -> Origin:
        icscf = self.config.icscf
        host = f"[{icscf.host}]" if ":" in icscf.host else icscf.host
        return Origin(NameAddr(parse_uri(identity)), self.ua.contact,
                      (f"<sip:{host}:{icscf.port};lr{icscf.transport_param}>",))

    async def dial(self, caller_text: str, callee_text: str, report: Report) -> None:
        """Ring the caller, then the callee, then connect them (see the module doc)."""
        caller, callee = await self._party(caller_text), await self._party(callee_text)
        host = self.config.telephony_as.host
        leg = _LegSdp(host)
        report({"event": "calling", "party": caller})
        first = await self.ua.invite(caller, leg.offer(None), [
            ("P-Asserted-Identity", f"<{callee}>"), ("Subject", "click to dial")],
            to=NameAddr(parse_uri(caller)), origin=self._origin(callee))
        answer_a = await self._answered(first, caller, report)
        report({"event": "calling", "party": callee})
        second = await self.ua.invite(callee, _LegSdp(host).offer(answer_a), [
            ("P-Asserted-Identity", f"<{caller}>")],
            to=NameAddr(parse_uri(callee)), origin=self._origin(caller))
        try:
            answer_b = await self._answered(second, callee, report)
        except DialFailed:
            await first.bye()
            raise
        final = await first.reinvite(leg.offer(answer_b))
        if final is None or final.status >= 300:
            await asyncio.gather(first.bye(), second.bye(), return_exceptions=True)
            raise DialFailed(final.status if final else 408,
                             f"{caller} refused the reconnect re-INVITE")
        await self._tell_callee(first, second, answer_a, _LegSdp(host))
        self.pairs.append((first, second))
        self._spawn(self._tie(first, second))
        report({"event": "connected", "from": caller, "to": callee,
                "call_ids": [first.call_id, second.call_id]})
        log.info("click to dial: %s <-> %s", caller, callee)

    async def _tell_callee(self, first: Call, second: Call, answer_a: bytes,
                           leg: _LegSdp) -> None:
        """A caller whose first answer held the RFC 2543 way (c= 0.0.0.0, RFC 3264
        8.4) gave the callee no address to send to: offer the callee the caller's
        reconnect answer (A'), which has it. The callee's new answer is what the
        caller already has, so one round is enough."""
        if not _legacy_hold(answer_a) or not first.remote_sdp:
            return
        final = await second.reinvite(leg.offer(first.remote_sdp))
        if final is None or final.status >= 300:
            log.warning("click to dial: the callee refused the caller's address: %s",
                        final.status if final else "no answer")

    async def _answered(self, call: Call, party: str, report: Report) -> bytes:
        ringing: asyncio.Future[object] = asyncio.ensure_future(call.ringing.wait())
        answered: asyncio.Future[object] = asyncio.ensure_future(asyncio.shield(call.final))
        try:
            done, _ = await asyncio.wait({ringing, answered}, timeout=RING_TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
            if ringing in done:
                report({"event": "ringing", "party": party})
            final = await asyncio.wait_for(asyncio.shield(call.final), RING_TIMEOUT)
        except TimeoutError:
            await call.cancel()
            raise DialFailed(408, f"{party} did not answer") from None
        finally:
            ringing.cancel()
            answered.cancel()
        if final is None or final.status >= 300:
            status = final.status if final is not None else 408
            reason = final.reason if final is not None else "no answer"
            raise DialFailed(status, f"{party}: {status} {reason}")
        report({"event": "answered", "party": party})
        return call.remote_sdp or b""

    async def _tie(self, a: Call, b: Call) -> None:
        """Either leg hanging up ends the other."""
        await end_together(a, b)
        with contextlib.suppress(ValueError):
            self.pairs.remove((a, b))

    def _spawn(self, coro: Coroutine[object, object, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _LegSdp:
    """Our offers on the caller's leg: one origin, its version counted up (RFC 3264 8)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.session_id = str(secrets.randbelow(2**31))
        self.version = 0
        self.addr_type = "IP6" if ":" in host else "IP4"

    def offer(self, remote: bytes | None) -> bytes:
        """The first offer (``remote`` None): no media yet (inactive, discard port);
        later ones: the other party's answer, made our sendrecv offer."""
        self.version += 1
        origin = sdp.Origin("imsbox-3pcc", self.session_id, str(self.version), "IN",
                            self.addr_type, self.host)
        if remote is None:
            body = (f"v=0\r\no={origin}\r\ns=-\r\nc=IN {self.addr_type} {self.host}\r\n"
                    f"t=0 0\r\nm=audio 9 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
                    f"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                    f"a=fmtp:101 0-15\r\na=ptime:20\r\na=inactive\r\n")
            return body.encode()
        return _as_offer(remote, origin)


def _legacy_hold(body: bytes) -> bool:
    try:
        description = sdp.parse(body)
    except ValueError:
        return False
    return any(description.is_legacy_hold(media) for media in description.media)


def _as_offer(answer: bytes, origin: sdp.Origin) -> bytes:
    """An answer turned into an offer for the other leg: sendrecv, our origin line."""
    description = sdp.parse(answer)
    description.origin = origin
    description.direction = None
    for media in description.media:
        media.direction = None
    return bytes(description)

