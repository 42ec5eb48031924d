"""Directed call pickup done by the phone itself (RFC 5359 2.16 as drawn).

``RcsClient.pickup(NAME, direct=True)`` / ``imsbox ue pickup --direct NAME``:
SUBSCRIBE to NAME's dialog event package (F3; the telephony AS, or NAME's
phone, answers), read the first NOTIFY's dialog-info (F5), take the early
incoming dialog in it and INVITE its remote party - the caller, the UAC of
that early dialog - with Replaces naming it as the caller sees it (F7:
``imsbox.sip.ua.pickup``, early-only); the subscription then ends. The caller's
phone answers and CANCELs NAME's phone (F8-F12).

Without ``direct`` the client calls ``sip:pickup@DOMAIN`` and the network
does this (docs/telephony-as.md), with pickup groups; here nothing but the
dialog event package decides who may pick up whose call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from ..content import dialog_info as di
from ..content.errors import ContentError
from ..media import Sink, Source
from ..sip.ua.dialog_event import DIALOG_INFO_TYPE
from ..sip.ua.pickup import pickup_replaces, ringing_dialogs
from ..sip.ua.refer import EventAgent, SubscriptionWatch
from ..sip.ua.useragent import Origin
from .call import CallService, VoiceCall
from .events import RcsError

__all__ = ["DirectPickup"]

NOTIFY_WAIT = 5.0        # for the first NOTIFY of the dialog subscription
SUBSCRIPTION_EXPIRES = 30


class DirectPickup:
    """The phone's own pickup (see the module text)."""

    def __init__(self, calls: CallService, agent: Callable[[], EventAgent],
                 origin: Callable[[], Origin]) -> None:
        self.calls = calls
        self._agent_of = agent
        self._origin_of = origin

    async def pick_up(self, target: str, source: Source | None,
                      sink: Sink | None) -> VoiceCall:
        """Take over the call ringing for ``target``; RcsError when nothing rings."""
        agent = self._agent_of()
        watch = agent.subscribe(target, "dialog", expires=SUBSCRIPTION_EXPIRES,
                                accept=[DIALOG_INFO_TYPE], origin=self._origin_of())
        try:
            dialog = await _ringing(watch, target)
        finally:
            if not watch.terminated.done():
                with contextlib.suppress(Exception):
                    await agent.unsubscribe(watch, timeout=2.0)
        remote = dialog.remote
        caller = remote.identity.uri if remote and remote.identity else ""
        if not caller:
            raise RcsError(f"pickup: the ringing call of {target} names no caller")
        headers = [("Replaces", str(pickup_replaces(dialog))), ("Require", "replaces")]
        return await self.calls.place(caller, source, sink, headers=headers)


async def _ringing(watch: SubscriptionWatch, target: str) -> di.Dialog:
    """The first early incoming dialog of the first NOTIFY."""
    notified = asyncio.ensure_future(watch.notifications.get())
    waiters: list[asyncio.Future[Any]] = [notified, watch.terminated]
    try:
        done, _ = await asyncio.wait(waiters, timeout=NOTIFY_WAIT,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        notified.cancel()
    if notified not in done:
        raise RcsError(f"pickup: no dialog events from {target}")
    try:
        info = di.parse_dialog_info(notified.result().body)
    except ContentError as exc:
        raise RcsError(f"pickup: bad dialog-info from {target}: {exc}") from None
    ringing = ringing_dialogs(info)
    if not ringing:
        raise RcsError(f"pickup: nothing ringing for {target}")
    return ringing[0]
