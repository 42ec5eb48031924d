"""The messaging AS: OMA CPM / RCS pager, deferred delivery and session anchoring.

The S-CSCF reaches it through the default iFCs (docs/ims-core.md, config.py):
``Route: <AS;lr>, <sip:S-CSCF;lr;odi=TOKEN>``. What it does (docs/messaging.md):

* ``REGISTER`` (third-party, from the S-CSCF): track who is online; 200; on a
  registration deliver that user's deferred items, oldest first.
* pager ``MESSAGE``: 415 for content a pager message cannot carry, 413 above
  1300 bytes, 400 for broken CPIM; history by Conversation-ID; then relayed on
  along the remaining Route. On the terminating leg a 480/408 from the far
  side (nobody registered / unreachable) becomes a deferred item and ``202``.
* ``INVITE`` for cpm.session / cpm.largemsg / cpm.filetransfer on the
  originating leg: anchored as a B2BUA with our own MSRP endpoint
  (:mod:`imsbox.apps.anchor`).
* ``INVITE`` to ``sip:cpm-deferred@DOMAIN`` (our PSI, from the I-CSCF): the
  seed 003 deferred retrieval (:mod:`imsbox.apps.deferred`). A UE that
  registers the cpm.deferred ICSI gets no push on registration.

Leg: the terminating S-CSCF adds ``P-Called-Party-ID`` before running the
iFCs; the originating one never does. So a request with it is terminating.

Several instances (``[messaging_as] pool``, docs/scale-out.md) share the
store: every one hears of every registration (the S-CSCF sends the
third-party REGISTER to each), and a delivery first *claims* the recipient's
items with a lease (``claim_deferred``: ``FOR UPDATE SKIP LOCKED`` and a fencing
token on PostgreSQL) and removes an item only while its fence is still ours,
so two instances never deliver one item twice; an instance that finds older
items leased elsewhere leaves the recipient to their holder (order kept). A
holder killed mid-delivery leaves its lease to run out; the ``redeliver``
sweep of every instance then claims what is left for users registered now.
Our own requests enter the core at a live S-CSCF of ``[scscf] pool``.

Requests the AS originates itself (deferred deliveries, failure IMDNs, far
legs of anchored sessions) enter the S-CSCF as ordinary requests and reach
the AS again on the terminating leg: the AS knows their Call-IDs and simply
relays them on (no checks, no second deferral) - the terminating iFC firing
again is harmless because the AS accepts its own traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, UTC

from ..config import MAX_STORED_FILE_SIZE, Config
from ..content import CPIM, IMDN, ISCOMPOSING, ContentError, parse_cpim
from ..content.cpim import CpimAddress, CpimMessage
from ..content.imdn import (
    DispositionType, Imdn, ImdnStatus, build_imdn_message, imdn_reply,
    requested_notifications,
)
from ..msrp import MsrpEndpoint, MsrpSession
from ..rcs import cpm
from ..rcs.offer import offer_parts
from ..sip.endpoint import Priority, ServerContext
from ..sip.headers import HeaderError, NameAddr
from ..sip.identity import canonical_public_id
from ..sip.message import Request, Response, new_tag
from ..sip.pool import InstancePool, is_local_failure, keep_probing
from ..sip.parser import parse as parse_sip
from ..sip.proxy import RequestContext, StatefulProxy, Target
from ..sip.transaction import TimerValues
from ..sip.ua.dialog import build_request
from ..sip.ua.invite import InviteConfig
from ..sip.ua.useragent import Call, UserAgent
from ..store import DeferredMessage, HistoryEntry, Store, StoreError
from .node import listen_behind_guard, node_uri, open_msrp
from .anchor import Anchor, FileKeeper
from .deferred import DeferredRetrieval
from .deferred_files import (FILE_IDLE, FILE_KIND, FileDelivery, LegacyFiles,
                             StoredFileWriter, is_file_item, kept_size, stored_file_refusal)

__all__ = ["DeliveryKind", "Leg", "MessagingAs", "MessagingSettings", "PAGER_TYPES"]

log = logging.getLogger(__name__)

# What a pager MESSAGE may carry; anything else gets 415.
PAGER_TYPES = frozenset({CPIM, "text/plain", IMDN, ISCOMPOSING})
OFFLINE = frozenset({408, 480})     # far side answers meaning "store it for later"
ANCHORED = frozenset({cpm.CpmService.SESSION, cpm.CpmService.LARGEMSG,
                      cpm.CpmService.FILETRANSFER})
# Request headers kept with a deferred item and replayed on delivery.
REPLAYED_HEADERS = ("P-Asserted-Identity", "P-Asserted-Service", "Accept-Contact",
                    cpm.CONVERSATION_ID, cpm.CONTRIBUTION_ID, "In-Reply-To-Contribution-ID",
                    "User-Agent", "Subject")
OWN_CALL_ID_LIFETIME = 600.0        # how long our own requests may take to pass the core
STORED_IMDN_WAIT = 5.0              # a file's "stored" IMDN before its success REPORT


class Leg(enum.Enum):
    ORIGINATING = "originating"
    TERMINATING = "terminating"


class DeliveryKind(enum.Enum):
    """What a deferred item is, kept in its meta."""

    MESSAGE = "message"        # a pager message (or a chat message stored by an anchor)
    FILE = FILE_KIND           # a file transfer stored by an anchor (apps.deferred_files)
    NOTIFICATION = "imdn"      # an IMDN the AS itself generated


@dataclass(slots=True, frozen=True)
class MessagingSettings:
    deferred_ttl: float = 7 * 24 * 3600.0   # how long an undelivered item is kept
    max_wakeup: float = 30.0                # housekeeping runs at least this often
    lease: float = 30.0                     # seconds a delivery holds its claimed items
    redeliver_every: float = 5.0            # pool: sweep for items a dead instance left
    max_file_size: int | None = None        # file-selector size above it: 488 (None: no limit)
    max_stored_file_size: int = MAX_STORED_FILE_SIZE  # kept for an offline user (0: none)
    # an anchored chat message waits this long for the receiver's MSRP 200 before the
    # sender gets 408 (below the sender's own 30 s, RFC 4975 7.1.1; apps/chat_relay.py)
    relay_timeout: float = 20.0


class MessagingAs(StatefulProxy):
    """The CPM messaging AS on ``config.messaging_as``; ``await start()``, ``await close()``."""

    def __init__(self, config: Config, store: Store, *, timers: TimerValues | None = None,
                 settings: MessagingSettings | None = None,
                 clock: Callable[[], float] = time.time, trace: bool = False) -> None:
        # record_route=False: relayed sessions need not come back through us.
        super().__init__(self._route_direct, record_route=False, timers=timers, trace=trace,
                         limits=config.limits.sip, overload=config.limits.overload)
        self.config = config
        self.store = store
        self.timers = timers
        self.settings = settings or MessagingSettings()
        self.clock = clock
        self.registered: dict[str, float] = {}       # AOR -> registration expiry
        self.msrp: MsrpEndpoint | None = None
        self.ua: UserAgent | None = None
        self.anchors: set[Anchor] = set()
        self._own: dict[str, float] = {}             # our requests' Call-IDs -> until
        self._delivery_locks: dict[str, asyncio.Lock] = {}
        self._delivery_users: dict[str, int] = {}    # recipient -> holders and waiters
        self.retrievals: set[DeferredRetrieval] = set()
        self._wakeup = asyncio.Event()
        # files kept for offline users live in the store (store.files); only items
        # of an earlier imsbox name a file in this directory
        self.legacy_files = LegacyFiles(config.data_dir / "deferred-files")
        self._swept = 0.0
        # who holds a lease on deferred items: unique per process, readable in the store
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pooled = len(config.messaging_as.instances) > 1
        self.scscfs = InstancePool(config.scscf.instances)

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        node = self.config.messaging_as
        port = await listen_behind_guard(self.endpoint, self.listen, self.config, node,
                                         "messaging AS")  # only the core
        self.msrp = await open_msrp(node.host, self.config)
        await self._clean_files()
        uri = node_uri(node.host, port)
        timers = self.timers or TimerValues()
        self.ua = UserAgent(self.endpoint, f"<{uri}>", uri,
                            config=InviteConfig(t1=timers.t1, t2=timers.t2,
                                                session_timer=cpm.CPM_SESSION_TIMER),
                            on_call=self._on_call, serve_new=False)
        # We choose per request; the proxy module relays the rest.
        self.endpoint.add_module(_MessagingService(self))
        self._spawn(self._housekeeping())
        if self.pooled:
            self._spawn(self._redeliver())
        if len(self.scscfs) > 1:
            self._spawn(keep_probing(self.scscfs, self.endpoint, uri))
        log.info("messaging AS up on %s:%d", node.host, port)

    async def close(self) -> None:
        for anchor in list(self.anchors):
            await anchor.close()
        for retrieval in list(self.retrievals):
            await retrieval.close()
        if self.ua is not None:
            await self.ua.close()
        await StatefulProxy.close(self)
        if self.msrp is not None:
            await self.msrp.close()

    # -- dispatch: a service module; the UA's dialog layer has the anchored legs ---------
    def serve(self, ctx: ServerContext) -> bool:
        """Take the requests the AS itself serves; False lets the proxy relay it."""
        request = ctx.request
        assert self.ua is not None
        if request.method == "REGISTER":
            self._third_party_register(ctx)
        elif request.method == "MESSAGE" and not request.to.tag:
            self._pager(ctx)
        elif request.method == "INVITE" and not request.to.tag and \
                (self._anchors(request) or self.is_retrieval(request)):
            self.ua.new_call(ctx)               # -> _on_call
        else:
            return False                        # plain relay (the proxy module)
        return True

    async def _route_direct(self, ctx: RequestContext) -> list[Target] | Response:
        """A request with no Route to follow was addressed to us directly: not served."""
        return Response.for_request(ctx.request, 404, "Not Found - no such service",
                                    to_tag=new_tag())

    def leg(self, request: Request) -> Leg:
        return Leg.TERMINATING if request.headers.get("P-Called-Party-ID") else Leg.ORIGINATING

    def is_own(self, request: Request) -> bool:
        return request.call_id in self._own

    def remember_own(self, call_id: str) -> None:
        self._own[call_id] = self.clock() + OWN_CALL_ID_LIFETIME

    @property
    def max_file_size(self) -> int | None:
        """AnchorHost API: the largest file an anchored transfer may announce."""
        return self.settings.max_file_size

    @property
    def relay_timeout(self) -> float:
        """AnchorHost API: how long a relayed chat message waits for the receiver."""
        return self.settings.relay_timeout

    def stored_file_refusal(self, size: int | None) -> str | None:
        """AnchorHost API: the 413 reason for a file an offline user cannot be kept."""
        return stored_file_refusal(size, self.settings.max_stored_file_size)

    def file_keeper(self, max_size: int | None, session: MsrpSession) -> FileKeeper:
        """AnchorHost API: a new file streamed into the store from ``session``, never
        more than ``max_size`` bytes (the size the offer announced)."""
        return StoredFileWriter(self.store.files, session, max_size)

    @property
    def core_route(self) -> str:
        """DeliveryHost API: where our own requests enter the core (terminating): an
        S-CSCF of the pool that has not failed us lately."""
        return f"<{self.scscfs.order()[0]};lr>"

    def is_retrieval(self, request: Request) -> bool:
        """An INVITE to our CPMDeferredMsgMgmtURI, routed to us as its PSI (no Route on)."""
        try:
            target = canonical_public_id(str(request.uri))
        except ValueError:
            return False
        return target == cpm.deferred_messages_uri(self.config.domain) and \
            not self.remaining_route(request)

    def _anchors(self, request: Request) -> bool:
        """An originating CPM INVITE with SDP (plain or in multipart/mixed, seed 003)."""
        if self.is_own(request) or self.leg(request) is not Leg.ORIGINATING:
            return False
        return cpm.classify(request) in ANCHORED and offer_parts(request)[0] is not None

    # -- third-party REGISTER ---------------------------------------------------------
    def _third_party_register(self, ctx: ServerContext) -> None:
        request = ctx.request
        try:
            aor = canonical_public_id(str(request.to.uri))
            expires = request.expires()
        except (HeaderError, ValueError):
            ctx.respond(Response.for_request(request, 400, to_tag=new_tag()))
            return
        ctx.respond(Response.for_request(request, 200, to_tag=new_tag()))
        if expires:
            self.registered[aor] = self.clock() + expires
            # such a UE retrieves its messages itself; files are always pushed
            self._spawn(self.deliver_deferred(aor, files_only=registers_deferred(request)))
        else:
            self.registered.pop(aor, None)
        log.info("third-party REGISTER %s expires %s", aor, expires)

    def is_registered(self, aor: str) -> bool:
        return self.registered.get(aor, 0.0) > self.clock()

    # -- pager mode -------------------------------------------------------------------
    def _pager(self, ctx: ServerContext) -> None:
        request = ctx.request
        if not self.is_own(request):
            refusal = check_pager(request)
            if refusal is not None:
                ctx.respond(refusal)
                return
            self._spawn(self._history_of_request(request))
        self.relay(ctx)

    def on_request(self, ctx: RequestContext) -> Response | None:
        """A terminating MESSAGE of someone else's gets the failure route that keeps it."""
        request = ctx.request
        if request.method == "MESSAGE" and self.leg(request) is Leg.TERMINATING and \
                not self.is_own(request):
            ctx.failure_route = self._keep_for_later
        return None

    async def _keep_for_later(self, ctx: RequestContext, best: Response) -> Response | None:
        """Nobody could take it: store it, then say 202 Accepted (2xx means stored)."""
        if best.status not in OFFLINE:
            return None
        await self._defer_request(ctx.request)
        return Response.for_request(ctx.request, 202, "Accepted", to_tag=new_tag())

    async def _defer_request(self, request: Request) -> None:
        headers = [[n, v] for n, v in request.headers if n.title() in _REPLAYED_TITLES]
        from_ = request.from_
        sender = str(NameAddr(from_.uri, from_.display_name))
        ctype = request.content_type
        await self.defer(recipient=canonical_public_id(str(request.uri)),
                         sender=_asserted(request) or str(from_.uri),
                         content_type=ctype.mime if ctype else "text/plain", body=request.body,
                         meta={"kind": DeliveryKind.MESSAGE.value, "from": sender,
                               "headers": headers})
        log.info("MESSAGE %s for %s deferred", request.call_id, request.uri)

    async def defer(self, *, recipient: str, sender: str, content_type: str, body: bytes,
                    meta: dict[str, object], file_id: int | None = None) -> int:
        """Keep one item for ``recipient`` (AnchorHost API, also used for chats); with
        ``file_id`` the item keeps that file of ``store.files`` (one transaction)."""
        now = self.clock()
        item = DeferredMessage(recipient, sender, content_type, body,
                               now + self.settings.deferred_ttl, now, json.dumps(meta))
        item_id = await (self.store.messages.defer(item) if file_id is None
                         else self.store.files.keep(file_id, item))
        self._wakeup.set()  # its expiry may be the next deadline
        return item_id

    async def keeps_for(self, recipient: str) -> bool:
        """AnchorHost API: a subscriber's messages are kept for later; a PSI's (a
        group whose AS is down) are not - nobody would ever register for it."""
        return await self.store.subscribers.get_public_identity(recipient) is not None

    # -- history ----------------------------------------------------------------------
    async def _history_of_request(self, request: Request) -> None:
        conversation = request.headers.get(cpm.CONVERSATION_ID)
        if not conversation:
            return
        ctype = request.content_type
        await self.record_history(conversation, _message_key(request),
                                  _asserted(request) or str(request.from_.uri),
                                  canonical_public_id(str(request.uri)),
                                  ctype.mime if ctype else "", request.body)

    async def record_history(self, conversation_id: str, key: str, sender: str,
                             recipient: str, content_type: str, body: bytes) -> None:
        """Keep a message of a conversation once (both legs pass the AS)."""
        await self.store.messages.add_history(HistoryEntry(
            conversation_id, key, sender, recipient, content_type, body, self.clock()))

    # -- deferred delivery ------------------------------------------------------------
    async def deliver_deferred(self, recipient: str, *, files_only: bool = False) -> None:
        """Send ``recipient``'s stored items in order; stop at the first failure.

        The items are claimed first (a lease with a fencing token): another
        instance delivering at the same time gets none of them, and an item is
        removed only while the fence is still ours. Only the claimed items that
        are the oldest ones, with no gap, are sent (``_claim_head``); after them
        the rest is claimed again, so items another instance let go of follow."""
        async with self.delivering(recipient):
            while True:
                head, gap = await self._claim_head(recipient)
                if not head or not await self._deliver_claimed(head, files_only):
                    return
                if not gap or files_only:  # files_only let items go: no progress to retry
                    return

    async def _claim_head(self, recipient: str) -> tuple[list[DeferredMessage], bool]:
        """Claim, and keep only the claimed items that are the oldest unexpired ones
        without a gap (the rest released); and whether there was a gap. Two
        instances claiming at once may split the rows (SKIP LOCKED passes over the
        ones the other has just locked): sending past a row the other holds would
        break the order."""
        now = self.clock()
        claimed = await self.store.messages.claim_deferred(
            recipient, self.holder, self.settings.lease, now)
        if not claimed:
            return [], False
        oldest = await self.store.messages.deferred(recipient, now, limit=len(claimed))
        count = 0
        for mine, first in zip(claimed, oldest, strict=False):
            if mine.id != first.id:
                break
            count += 1
        head, rest = claimed[:count], claimed[count:]
        if rest:  # older or in-between items are another instance's: it sends them
            await self.store.messages.release_deferred(rest)
        return head, bool(rest)

    async def _deliver_claimed(self, claimed: list[DeferredMessage], files_only: bool) -> bool:
        """Send the claimed items in order; False at the first failure (the rest
        released for a later try)."""
        left = list(claimed)
        while left:
            item = left[0]
            if files_only and not is_file_item(item):
                await self.store.messages.release_deferred([left.pop(0)])
                continue
            if not await self._deliver(item):
                await self.store.messages.release_deferred(left)
                return False
            left.pop(0)
            if await self.store.messages.complete_deferred([item]):
                self._drop_file(item)
            else:
                log.warning("deferred item %s: lease lost while delivering", item.id)
        return True

    async def _redeliver(self) -> None:
        """Pool: items of registered users nobody delivers (their holder died
        and its lease ran out, or the push failed) are claimed again."""
        while True:
            await asyncio.sleep(self.settings.redeliver_every)
            try:
                for recipient in await self.store.messages.deferred_recipients(self.clock()):
                    lock = self._delivery_locks.get(recipient)
                    if self.is_registered(recipient) and not (lock and lock.locked()):
                        self._spawn(self.deliver_deferred(recipient))
            except Exception:  # the store away for a moment: next round
                log.exception("messaging AS: redelivery sweep failed")

    @contextlib.asynccontextmanager
    async def delivering(self, recipient: str) -> AsyncIterator[None]:
        """One delivery (push or retrieval) per recipient at a time: each item once."""
        # Kept while anyone holds or waits for it (dropping a lock others wait on
        # would let two run at once), then dropped: not one lock per user for ever.
        lock = self._delivery_locks.setdefault(recipient, asyncio.Lock())
        self._delivery_users[recipient] = self._delivery_users.get(recipient, 0) + 1
        try:
            async with lock:
                yield
        finally:
            left = self._delivery_users.pop(recipient) - 1
            if left:
                self._delivery_users[recipient] = left
            else:
                del self._delivery_locks[recipient]

    async def deferred_items(self, recipient: str) -> list[DeferredMessage]:
        """RetrievalHost API: the unexpired stored items of ``recipient``, oldest first."""
        return await self.store.messages.deferred(recipient, self.clock())

    async def remove_deferred(self, item: DeferredMessage) -> None:
        """RetrievalHost API: ``item`` was delivered (its 200 came); a file in the store
        goes with it, a legacy file after it (a kill between leaves a file, never a
        lost item)."""
        await self.store.messages.remove_deferred([item.id] if item.id is not None else [])
        self._drop_file(item)

    async def _clean_files(self) -> None:
        """Files a kill left behind that no deferred item keeps: their senders got
        no 200, so nothing accepted is lost by removing them. In the store, only
        those idle for FILE_IDLE (another instance may be writing one right now)."""
        await self._sweep_files()
        if not self.legacy_files.directory.is_dir():
            return
        kept: set[str] = set()
        for recipient in await self.store.messages.deferred_recipients(0.0):  # all of them
            for item in await self.store.messages.deferred(recipient, 0.0):
                meta = _meta(item)
                if meta.get("kind") == DeliveryKind.FILE.value:
                    kept.add(str(meta.get("file", "")))
        self.legacy_files.clean(kept)

    async def _sweep_files(self) -> None:
        now = time.time()  # the writers' clock (touched_at), not a test's virtual one
        self._swept = now
        swept = await self.store.files.sweep(now - FILE_IDLE)
        if swept:
            log.info("removed %d kept file(s) whose writer went away", swept)

    def _drop_file(self, item: DeferredMessage) -> None:
        """A legacy item's file (a file in the store went with its item)."""
        meta = _meta(item)
        if meta.get("kind") == DeliveryKind.FILE.value and "file_id" not in meta:
            self.legacy_files.remove(str(meta.get("file", "")))

    async def _deliver(self, item: DeferredMessage) -> bool:
        meta = _meta(item)
        if meta.get("kind") == DeliveryKind.FILE.value:
            assert self.ua is not None and self.msrp is not None
            if await kept_size(self.store.files, self.legacy_files, item) is None:
                # never deliverable: as if it had expired
                log.error("deferred file %s for %s: its file is gone", item.id,
                          item.recipient)
                await self._expired(item)
                return True  # removed, the next items go on
            return await FileDelivery(self, self.ua, self.msrp, self.store.files,
                                      self.legacy_files, item, meta).run()
        from_ = str(meta.get("from") or f"<{item.sender}>")
        request = self.new_request("MESSAGE", item.recipient, from_, _replayed(meta),
                                   item.body, item.content_type)
        entry = (request.headers.get("Route") or "").strip("<>").removesuffix(";lr")
        response = await self.endpoint.request(request).final()
        log.info("deferred item %s for %s: %d", item.id, item.recipient, response.status)
        if is_local_failure(response):  # that S-CSCF is gone: the next delivery another
            self.scscfs.mark_down(entry)
        return 200 <= response.status < 300

    def new_request(self, method: str, target: str, from_: str,
                    headers: list[tuple[str, str]], body: bytes, content_type: str) -> Request:
        """A pager MESSAGE of our own, entering the S-CSCF as a terminating request,
        with the seed's Contact (ICSI, instance) and ``Request-Disposition: no-fork``."""
        request = build_request(method, target, from_, f"<{target}>",
                                route=[self.core_route], headers=headers,
                                body=body, content_type=content_type)
        request.add_header("Contact", self.contact(cpm.CpmService.MSG))
        request.add_header("Request-Disposition", "no-fork")
        self.remember_own(request.call_id)
        return request

    def contact(self, service: cpm.CpmService) -> str:
        """Our Contact for ``service``: its ICSI and our ``+sip.instance`` (seed 003)."""
        uri = self.config.messaging_as.uri
        instance = uuid.uuid5(uuid.NAMESPACE_URL, uri)
        return f"<{uri}>{cpm.contact_params(service, f'urn:uuid:{instance}')}"

    # -- expiry -----------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        while True:
            now = self.clock()
            try:
                for item in await self.store.messages.expire_deferred(now):
                    self._spawn(self._expired(item))
                if time.time() - self._swept >= FILE_IDLE / 4:
                    await self._sweep_files()
            except Exception:  # one bad record must not stop expiry for good
                log.exception("messaging AS housekeeping failed")
            self._own = {c: t for c, t in self._own.items() if t > now}
            self._wakeup.clear()
            await self._sleep(now)

    async def _sleep(self, now: float) -> None:
        try:
            deadline = await self.store.messages.next_deferred_expiry()
        except StoreError as exc:  # away (a restart): look again soon
            log.warning("messaging AS housekeeping: %s", exc)
            deadline = now + 1.0
        delay = self.settings.max_wakeup if deadline is None else deadline - now
        try:
            await asyncio.wait_for(self._wakeup.wait(),
                                   min(max(delay, 0.01), self.settings.max_wakeup))
        except TimeoutError:
            pass

    def tell_stored(self, *, sender: str, recipient: str, body: bytes,
                    conversation_id: str) -> None:
        """AnchorHost API: the processing IMDN ``stored`` (RFC 5438) for a message kept
        for offline ``recipient``, when its sender asked for processing notifications
        (a large message has no 202 to say so). Sent in the background, best effort."""
        self._spawn(self._tell_stored(sender, recipient, body, conversation_id))

    async def announce_stored(self, *, sender: str, recipient: str, body: bytes,
                              conversation_id: str) -> None:
        """AnchorHost API: ``tell_stored`` awaited (bounded), for a file: the sender's
        client has the IMDN before the success REPORT that ends its transfer."""
        try:
            await asyncio.wait_for(self._tell_stored(sender, recipient, body,
                                                     conversation_id), STORED_IMDN_WAIT)
        except TimeoutError:
            log.info("stored IMDN to %s not answered in time", sender)

    async def _tell_stored(self, sender: str, recipient: str, body: bytes,
                           conversation_id: str) -> None:
        try:
            message = parse_cpim(body)
        except ContentError:
            return
        reply = imdn_reply(message, DispositionType.PROCESSING, ImdnStatus.STORED,
                           message_id=cpm.new_contribution_id()[:20],
                           sender=CpimAddress(recipient), date_time=datetime.now(UTC))
        if reply is None:
            return
        headers = [(cpm.CONVERSATION_ID, conversation_id)] if conversation_id else []
        await self._imdn_to_sender(sender, recipient, _imdn_headers(recipient, headers),
                                   reply.to_bytes())

    async def _imdn_to_sender(self, sender: str, recipient: str,
                              headers: list[tuple[str, str]], body: bytes) -> Response:
        """An IMDN about ``recipient``'s message, as a pager MESSAGE from it to ``sender``."""
        request = self.new_request("MESSAGE", sender, f"<{recipient}>", headers, body, CPIM)
        return await self.endpoint.request(request).final()

    async def _expired(self, item: DeferredMessage) -> None:
        """Tell the sender with a negative delivery IMDN (RFC 5438 ``failed``)."""
        log.info("deferred item %s for %s expired", item.id, item.recipient)
        self._drop_file(item)
        imdn = failure_imdn(item)
        if imdn is None:
            return
        meta = _meta(item)
        headers = _imdn_headers(item.recipient, [(n, v) for n, v in _replayed(meta)
                                                 if n.lower() in _IMDN_KEPT])
        body = imdn.to_bytes()
        response = await self._imdn_to_sender(item.sender, item.recipient, headers, body)
        if response.status in OFFLINE:  # the sender is offline too: keep the IMDN for it
            await self.defer(recipient=item.sender, sender=item.recipient, content_type=CPIM,
                             body=body, meta={"kind": DeliveryKind.NOTIFICATION.value,
                                              "from": f"<{item.recipient}>",
                                              "headers": headers})

    # -- anchoring (B2BUA) ------------------------------------------------------------
    def _on_call(self, call: Call) -> None:
        assert self.ua is not None and self.msrp is not None
        if self.is_retrieval(call.request):
            retrieval = DeferredRetrieval(self, self.msrp, call)
            self.retrievals.add(retrieval)
            self._spawn(self._run_retrieval(retrieval))
            return
        anchor = Anchor(self, self.ua, self.msrp, call)
        self.anchors.add(anchor)
        self._spawn(self._run_anchor(anchor))

    async def _run_anchor(self, anchor: Anchor) -> None:
        try:
            await anchor.run()
        except Exception:
            log.exception("anchored session %s failed", anchor.caller.call_id)
            await anchor.close()
        finally:
            self.anchors.discard(anchor)

    async def _run_retrieval(self, retrieval: DeferredRetrieval) -> None:
        try:
            await retrieval.run()
        except Exception:
            log.exception("deferred retrieval %s failed", retrieval.call.call_id)
        finally:
            self.retrievals.discard(retrieval)

    def remaining_route(self, request: Request) -> list[str]:
        """The Route entries after ours (the S-CSCF's odi entry)."""
        return [str(r) for r in request.route if not self.identity.is_me(r.uri)]


_REPLAYED_TITLES = frozenset(h.title() for h in REPLAYED_HEADERS)
_IMDN_KEPT = frozenset({cpm.CONVERSATION_ID.lower(), "user-agent"})


def check_pager(request: Request) -> Response | None:
    """415 / 413 / 400 for a pager MESSAGE the AS will not carry, else None."""
    ctype = request.content_type
    if request.body and (ctype is None or ctype.mime not in PAGER_TYPES):
        response = Response.for_request(request, 415, to_tag=new_tag())
        response.add_header("Accept", ", ".join(sorted(PAGER_TYPES)))
        return response
    if len(request.body) > cpm.CPIM_PAGER_LIMIT:
        return Response.for_request(request, 413, "Request Entity Too Large - use large "
                                    "message mode", to_tag=new_tag())
    if ctype is not None and ctype.mime == CPIM:
        try:
            parse_cpim(request.body)
        except ContentError as exc:
            return Response.for_request(request, 400, f"Bad Request - CPIM: {exc}"[:100],
                                        to_tag=new_tag())
    return None


def registers_deferred(third_party: Request) -> bool:
    """The UE's REGISTER (message/sip body of the third-party REGISTER, TS 24.229
    5.4.1.7) registers the cpm.deferred ICSI: it retrieves its deferred messages."""
    ctype = third_party.content_type
    if ctype is None or ctype.mime != "message/sip" or not third_party.body:
        return False
    try:
        register = parse_sip(third_party.body)
        contacts = register.contact if isinstance(register, Request) else []
    except (HeaderError, ValueError):
        return False
    return any(cpm.CpmService.DEFERRED in cpm.parse_icsi_ref(c.params.get(cpm.ICSI_REF_TAG) or "")
               for c in contacts if not c.is_star)


def failure_imdn(item: DeferredMessage) -> CpimMessage | None:
    """The ``failed`` delivery IMDN for an expired CPIM message that asked for a
    delivery notification (positive or negative: either way the sender waits)."""
    if item.content_type != CPIM:
        return None
    try:
        message = parse_cpim(item.body)
    except ContentError:
        return None
    if (message.content_disposition or "").lower() == "notification":
        return None  # never an IMDN about an IMDN
    message_id = message.get("Message-ID", cpm.IMDN_NAMESPACE)
    wanted = {r.value for r in requested_notifications(message)}
    if not message_id or not wanted & {"positive-delivery", "negative-delivery"}:
        return None
    imdn = Imdn.for_message(message, DispositionType.DELIVERY, ImdnStatus.FAILED)
    return build_imdn_message(imdn, message_id=cpm.new_contribution_id()[:20],
                              sender=CpimAddress(item.recipient),
                              recipient=message.sender or CpimAddress(item.sender),
                              date_time=datetime.now(UTC))


def _imdn_headers(recipient: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` and those of an IMDN on behalf of ``recipient`` (it is the sender)."""
    return [*headers, ("P-Asserted-Identity", f"<{recipient}>"),
            ("P-Asserted-Service", cpm.ICSI_MSG),
            ("Accept-Contact", cpm.accept_contact(cpm.CpmService.MSG))]


def _message_key(request: Request) -> str:
    """IMDN Message-ID of a CPIM body, else the Call-ID."""
    ctype = request.content_type
    found = cpm.cpim_message_id(request.body) if ctype and ctype.mime == CPIM else None
    return found or request.call_id


def _asserted(request: Request) -> str | None:
    try:
        values = request.headers.values("P-Asserted-Identity")
        return canonical_public_id(str(NameAddr.parse(values[0]).uri)) if values else None
    except (HeaderError, ValueError):
        return None


def _meta(item: DeferredMessage) -> dict[str, object]:
    try:
        meta = json.loads(item.meta) if item.meta else {}
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _replayed(meta: dict[str, object]) -> list[tuple[str, str]]:
    headers = meta.get("headers", [])
    return [(str(p[0]), str(p[1])) for p in headers if isinstance(p, list) and len(p) == 2] \
        if isinstance(headers, list) else []


class _MessagingService:
    """The AS's service module (apart from the AS: StatefulProxy.on_request is a hook)."""

    name = "messaging"
    priority = Priority.SERVICE
    methods = ("REGISTER", "MESSAGE", "INVITE")

    def __init__(self, node: MessagingAs) -> None:
        self.node = node

    def on_request(self, ctx: ServerContext) -> bool:
        return self.node.serve(ctx)
