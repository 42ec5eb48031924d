"""Automatic redial (RFC 5359 2.17): call again once a busy callee is idle.

The call is placed; when it fails busy (486 Busy Here, 600 Busy Everywhere)
we SUBSCRIBE to the callee's dialog event package (RFC 4235, ``Event:
dialog``, along the registered route) and read each NOTIFY's dialog-info:
the callee is idle when no dialog in it is trying, proceeding, early or
confirmed (all terminated, or none).  Then the call is placed again, up to
``attempts`` calls; the subscription goes on until that call is set up (or
refused again: then we wait on it once more) and is ended (Expires: 0) last,
as in RFC 5359 2.17 F14-F18.  The whole
wait is bounded by ``timeout``: past it, or when the callee refuses the
subscription (489 Bad Event, 403...) or ends it, redial gives up with a
``redial_failed`` saying why.

Events: ``redial_waiting`` (busy, watching), ``redial_retry`` (idle, calling
again: the new call's Call-ID), ``redial_failed`` (``reason``); the calls
themselves report call_ringing ... call_ended as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..content import dialog_info as di
from ..content.errors import ContentError
from ..sip.ua.dialog_event import DIALOG_INFO_TYPE
from ..sip.ua.refer import EventAgent, SubscriptionWatch
from ..sip.ua.useragent import Origin
from .call import CallService, VoiceCall
from .core import UeCore
from .events import RedialFailed, RedialRetry, RedialWaiting

__all__ = ["BUSY", "RedialService", "is_idle"]

log = logging.getLogger(__name__)

BUSY = ("busy",)          # the call_ended reasons of 486 and 600
SUBSCRIPTION_EXPIRES = 600
_ACTIVE = (di.DialogState.TRYING, di.DialogState.PROCEEDING, di.DialogState.EARLY,
           di.DialogState.CONFIRMED)


def is_idle(body: bytes) -> bool | None:
    """Whether a dialog-info document shows no dialog in progress; None if unreadable."""
    try:
        info = di.parse_dialog_info(body)
    except ContentError as exc:
        log.info("unreadable dialog-info: %s", exc)
        return None
    return not any(d.state in _ACTIVE for d in info.dialogs)


class RedialService:
    """Redials for one UE (see the module text)."""

    def __init__(self, core: UeCore, calls: CallService, agent: Callable[[], EventAgent],
                 origin: Callable[[], Origin]) -> None:
        self.core = core
        self.calls = calls
        self._agent_of = agent
        self._origin_of = origin

    async def redial(self, target: str, place: Callable[[], Awaitable[VoiceCall]],
                     timeout: float = 300.0, attempts: int = 3) -> VoiceCall:
        """Call ``target`` with ``place()`` until a call is answered or we give up;
        returns the last call (``answered`` set if it got through)."""
        deadline = asyncio.get_running_loop().time() + timeout
        voice = await place()
        watch: SubscriptionWatch | None = None
        try:
            for attempt in range(1, attempts + 1):
                if await voice.wait_answered() or voice.end_reason not in BUSY:
                    return voice   # answered, or failed otherwise than busy: not ours to retry
                if attempt == attempts:
                    self._failed(voice, target, attempt, f"still busy after {attempts} calls")
                    return voice
                watch = watch or self._subscribe(target)
                self._waiting(voice, target, attempt, deadline)
                why = await self._until_idle(watch, deadline)
                if why:
                    self._failed(voice, target, attempt, why)
                    return voice
                voice = await place()
                self.core.emit(RedialRetry(self.core.aor, target, voice.id, attempt + 1))
            return voice
        finally:   # RFC 5359 2.17 F16: the subscription ends once the call is set up
            if watch is not None:
                await self._unsubscribe(watch)

    def _waiting(self, voice: VoiceCall, target: str, attempt: int, deadline: float) -> None:
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        self.core.emit(RedialWaiting(self.core.aor, target, voice.id, attempt, round(left, 1)))

    def _failed(self, voice: VoiceCall, target: str, attempt: int, reason: str) -> None:
        self.core.emit(RedialFailed(self.core.aor, target, voice.id, attempt, reason))

    def _subscribe(self, target: str) -> SubscriptionWatch:
        """SUBSCRIBE ``target`` to its dialog package along the registered route."""
        return self._agent_of().subscribe(target, "dialog", expires=SUBSCRIPTION_EXPIRES,
                                          accept=[DIALOG_INFO_TYPE], origin=self._origin_of())

    async def _unsubscribe(self, watch: SubscriptionWatch) -> None:
        if not watch.terminated.done():
            with contextlib.suppress(Exception):
                await self._agent_of().unsubscribe(watch, timeout=2.0)

    async def _until_idle(self, watch: SubscriptionWatch, deadline: float) -> str:
        """Read NOTIFYs until one shows ``target`` idle: '' then, else why we gave up.
        Each is full state, so only the newest of those waiting counts."""
        loop = asyncio.get_running_loop()
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return "timeout: the callee stayed busy"
            notified = asyncio.ensure_future(watch.notifications.get())
            either: list[asyncio.Future[Any]] = [notified, watch.terminated]
            done, _ = await asyncio.wait(either, timeout=left,
                                         return_when=asyncio.FIRST_COMPLETED)
            if notified not in done:
                notified.cancel()
                if watch.terminated.done():
                    return _ended_why(watch)
                return "timeout: the callee stayed busy"
            notification = notified.result()
            while not watch.notifications.empty():
                notification = watch.notifications.get_nowait()
            if notification.body and is_idle(notification.body):
                return ""
            if watch.terminated.done() and watch.notifications.empty():
                return _ended_why(watch)


def _ended_why(watch: SubscriptionWatch) -> str:
    """Why the dialog subscription ended before the callee was idle."""
    ended = watch.terminated.result()
    response = ended.response
    if response is not None and response.status >= 300:
        return (f"the callee does not give its dialog state (SUBSCRIBE {response.status} "
                f"{response.reason})")
    return f"the callee ended the dialog subscription ({ended.reason or 'no reason'})"
