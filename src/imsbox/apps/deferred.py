"""Deferred-message retrieval (seed 003, OMA CPM): the UE asks, the AS streams.

The UE sends an INVITE to the CPMDeferredMsgMgmtURI (``sip:cpm-deferred@DOMAIN``,
a PSI of the messaging AS: UE -> P-CSCF -> S-CSCF -> I-CSCF -> AS) with
``Event: deferred-messages``, the cpm.deferred ICSI in Contact and an MSRP
offer with ``a=recvonly``. The AS answers ``a=sendonly``, sends each stored
item of the served user (P-Asserted-Identity) oldest first as one MSRP SEND,
removes an item only when its SEND got the UE's 200, and then sends BYE.
Kept files are not in the stream: they are pushed as file transfers.
A SEND that fails stops the stream; what is left stays stored.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from .. import sdp
from ..msrp import MsrpEndpoint, MsrpError, MsrpSession
from ..msrp import Setup as MsrpSetup
from ..rcs import cpm
from ..rcs.offer import msrp_media
from ..sip.ua.invite import SessionError
from ..sip.ua.useragent import Call
from ..store import DeferredMessage
from .anchor import BIND_TIMEOUT, BYE_TIMEOUT, caller_identity, near_answer
from .deferred_files import is_file_item

__all__ = ["DeferredRetrieval", "RetrievalHost", "is_retrieval_request"]

log = logging.getLogger(__name__)


class RetrievalHost(Protocol):
    """What a retrieval needs of the messaging AS."""

    async def deferred_items(self, recipient: str) -> list[DeferredMessage]: ...

    async def remove_deferred(self, item: DeferredMessage) -> None: ...

    def delivering(self, recipient: str) -> AbstractAsyncContextManager[None]: ...


def is_retrieval_request(event: str | None) -> bool:
    """``Event: deferred-messages`` (parameters ignored)."""
    return (event or "").split(";")[0].strip().lower() == cpm.DEFERRED_EVENT


class DeferredRetrieval:
    """One retrieval session: answer, stream the stored items, BYE."""

    def __init__(self, host: RetrievalHost, msrp: MsrpEndpoint, call: Call) -> None:
        self.host = host
        self.msrp = msrp
        self.call = call
        self.user = caller_identity(call.request)
        self.session: MsrpSession | None = None
        self.sent = 0

    async def run(self) -> None:
        try:
            if await self._answer():
                await self._stream()
        finally:
            await self.close()

    async def _answer(self) -> bool:
        request = self.call.request
        if not is_retrieval_request(request.headers.get("Event")):
            self.call.reject(489, f"Bad Event - use Event: {cpm.DEFERRED_EVENT}")
            return False
        offer = _recvonly_offer(request.body)
        if offer is None:
            self.call.reject(488, "Not Acceptable Here - an MSRP offer with a=recvonly")
            return False
        self.session = self.msrp.create_session(setup=MsrpSetup.PASSIVE)
        answer = near_answer(offer, self.session, self.msrp)
        media = msrp_media(offer)
        assert media is not None
        self.session.set_remote_path(media.path or [])
        active = msrp_media(answer).setup is sdp.Setup.ACTIVE  # type: ignore[union-attr]
        self.call.accept(bytes(answer))
        try:
            await asyncio.wait_for(self.call.established.wait(), BIND_TIMEOUT)
            if active:  # the UE offered passive: we connect to it
                self.session.setup = MsrpSetup.ACTIVE
                await self.session.connect()
            else:
                await self.session.wait_bound(BIND_TIMEOUT)
        except (TimeoutError, MsrpError, OSError) as exc:
            log.info("retrieval %s: no MSRP connection: %s", self.call.call_id, exc)
            return False
        return True

    async def _stream(self) -> None:
        assert self.session is not None
        async with self.host.delivering(self.user):
            for item in await self.host.deferred_items(self.user):
                if self.call.terminated.done():
                    return
                if is_file_item(item):  # pushed as a file transfer instead
                    continue
                try:  # resolves on the UE's 200 (every chunk)
                    await self.session.send_message(item.content_type, item.body)
                except (TimeoutError, MsrpError) as exc:
                    log.info("retrieval %s stopped at item %s: %s", self.call.call_id,
                             item.id, exc)
                    return
                await self.host.remove_deferred(item)
                self.sent += 1
        log.info("retrieval %s: %d deferred items sent to %s", self.call.call_id, self.sent,
                 self.user)

    async def close(self) -> None:
        if not self.call.terminated.done():
            try:
                await asyncio.wait_for(self.call.bye(), BYE_TIMEOUT)
            except (TimeoutError, SessionError) as exc:
                log.info("ending retrieval %s: %s", self.call.call_id, exc)
        if self.session is not None:
            await self.session.close()


def _recvonly_offer(body: bytes) -> sdp.SessionDescription | None:
    try:
        offer = sdp.parse(body)
    except sdp.SdpError:
        return None
    media = msrp_media(offer)
    if media is None or offer.direction_of(media) is not sdp.Direction.RECVONLY:
        return None
    return offer
