"""The S-CSCF: registrar, Digest authentication, iFC service triggering and
terminating delivery (TS 24.229 5.4, conventions in docs/ims-core.md).

Routing logic, in the order :meth:`Scscf.route` applies it::

    REGISTER                         -> registrar (401 / 200 / 423 / 403)
    SUBSCRIBE Event: reg in a dialog -> reg event notifier, also when the
      to any S-CSCF of the pool         Request-URI names another instance
    SUBSCRIBE Event: reg to a user   -> reg event notifier (RFC 3680)
    Route ;odi=TOKEN came back       -> continue the iFC chain after that AS
    Route sip:orig@S-CSCF            -> originating: iFC ORIGINATING, then the I-CSCF
    anything else                    -> terminating: iFC TERMINATING_*, then the
                                        registered contacts (caller prefs, Path)

Bindings live in the Store under the implicit set's default public identity,
so they survive a restart; a housekeeping task drops expired ones, telling
reg event watchers and the application servers.

**Several S-CSCFs** (``[scscf] pool``) share the users through the store: one
that is asked to serve a registered user the HSS assigned to another (the
I-CSCF or P-CSCF failed over to us, TS 23.380) takes the user over with a SAR of
type RESTORATION, so that the next LIR names us; no new REGISTER is needed. Reg
event subscriptions are in the store too: any instance serves a refresh, and
the one that changes a registration notifies every watcher with the next
version (taken atomically in the store). The failed-login counts of a pool are
in the store (Redis with ``--cache``), so the login limits hold across it.
**Several instances of an AS** (``[messaging_as] pool``): a request for the
AS goes to the instance the served user hashes to, to the next one when it
does not answer; a third-party REGISTER goes to every instance (each knows
who is registered; the store's leases keep them from delivering one deferred
item twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from ..config import Config
from ..content.multipart import BodyPart, build_multipart
from ..sip.auth import (
    Algorithm, DigestAuthenticator, VerifyOutcome, credentials_for_realm,
)
from ..sip.endpoint import resolve
from ..sip.transport import Destination
from ..sip.grammar import GrammarError, format_params, split_params, unquote
from ..sip.headers import Contact, Event, HeaderError, NameAddr
from ..sip.identity import canonical_public_id
from ..sip.message import Request, Response, new_tag
from ..sip.pool import InstancePool, is_local_failure, keep_probing
from ..sip.proxy import RequestContext, StatefulProxy, Target, remote_target_is_domain
from ..sip.transaction import TimerValues
from ..sip.trust import TrustedPeers, TrustGuard
from ..sip.ua.dialog import DialogId, build_request
from ..sip.uri import SipUri, TelUri, Uri, UriError, parse_uri
from ..store import Binding, Store, StoreError
from .caller_prefs import CallerPreferences, contact_features, rank_contacts
from .hss import Hss, ServerAssignmentType, UserProfile
from .login_guard import LoginGuard, SharedLoginGuard, Source
from .odi import OdiChain, OdiSigner
from .pcscf import ue_source
from ..ifc import (
    ApplicationServer, DefaultHandling, RequestView, SessionCase, matching_ifcs, next_ifc,
)
from .regevent import (
    ContactEvent, ContactState, RegContact, RegEventNotifier, RegInfo, Registration,
    RegistrationState, element_id,
)

__all__ = ["IfcProgress", "Registrar", "RegistrationChange", "Scscf"]

log = logging.getLogger(__name__)

# DigestAuthenticator's log reason for a wrong response (or unknown user):
# the only BAD_CREDENTIALS outcome that counts as a failed login.  The others
# (foreign nonce or opaque, e.g. from before a restart) just get a new challenge.
_WRONG_RESPONSE = "response does not match"
ODI_LIFETIME = 300.0        # how long an AS may take to hand a request back
SERVED_RECHECK = 30.0       # seconds a user we took over is not checked again
HOUSEKEEPING_MAX = 30.0     # wake up at least this often
HOUSEKEEPING_RETRY = 1.0    # after the store was away
# Every REGISTER wakes the housekeeping (its bindings may expire first); the
# subscriptions and login counters are swept at most this often, not each time.
SUBSCRIPTION_SWEEP = 1.0
LOGIN_SWEEP = 60.0


# -- small value types ------------------------------------------------------------------

@dataclass(slots=True)
class IfcProgress:
    """Where an iFC chain stands (keyed by the odi token while an AS has it)."""

    case: SessionCase
    served_user: str          # default public identity of the served implicit set
    priority: int = -1        # the last iFC executed
    expires_at: float = 0.0


@dataclass(slots=True)
class RegistrationChange:
    """What a REGISTER (or an expiry) changed, for reg event and third-party REGISTER."""

    aor: str                                  # default identity of the implicit set
    public_id: str                            # the identity registered (To)
    profile: UserProfile
    events: list[tuple[Binding, ContactEvent]]
    remaining: list[Binding]
    request: Request | None = None
    response: Response | None = None

    @property
    def deregistered(self) -> bool:
        return not self.remaining

    def expires(self, now: float) -> int:
        # Rounded: a few milliseconds since the 200 must not show as one second less.
        return max((max(0, round(b.expires_at - now)) for b in self.remaining), default=0)


# -- the registrar --------------------------------------------------------------------

class Registrar:
    """RFC 3261 10.3 / TS 24.229 5.4.1: authentication and bindings of REGISTER."""

    def __init__(self, config: Config, store: Store, hss: Hss,
                 clock: Callable[[], float], guard: LoginGuard | SharedLoginGuard) -> None:
        self.config = config
        self.store = store
        self.hss = hss
        self.clock = clock
        self.guard = guard
        self.realm = config.domain
        algorithms = tuple(Algorithm.parse(a) for a in config.registrar.digest_algorithms)
        # nonce-counts in the store: every S-CSCF on it accepts each one once
        self.auth = DigestAuthenticator(config.domain, clock=clock, algorithms=algorithms,
                                        nonce_counts=store.nonces)
        self.server_name = config.scscf.uri
        self.service_route = ""
        self._aor_locks: dict[str, tuple[asyncio.Lock, int]] = {}  # AOR -> lock, users

    # -- REGISTER --------------------------------------------------------------------
    async def register(self, request: Request, ue_source: Source
                       ) -> tuple[Response, RegistrationChange | None]:
        """``ue_source``: the UE's flow (address, port) as the P-CSCF saw it."""
        now = self.clock()
        try:
            public_id = canonical_public_id(str(request.to.uri))
        except (HeaderError, ValueError):
            return Response.for_request(request, 400, "Bad Request - To"), None
        wait = await self._retry_after(public_id, ue_source, now)
        if wait is not None:
            # Before any challenge or password check, alike for every account.
            log.warning("REGISTER %s from %s refused for %.1fs: too many failed logins",
                        public_id, ue_source, wait)
            response = Response.for_request(request, 403)
            response.add_header("Retry-After", str(max(1, math.ceil(wait))))
            return response, None
        refused = await self._authenticate(request, public_id, ue_source, now)
        if refused is not None:
            return refused, None
        return await self._update(request, public_id, now)

    async def _authenticate(self, request: Request, public_id: str, ue_source: Source,
                            now: float) -> Response | None:
        """None when authenticated; otherwise the 401 / 403 / 400 to send."""
        credentials = credentials_for_realm(request.headers.get_all("Authorization"), self.realm)
        if credentials is None:
            return self._challenge(request)
        # MAR first: the verifier's lookup is synchronous, the HSS is not.
        ha1 = await self._ha1(credentials.username, credentials.realm,
                              credentials.effective_algorithm.base, public_id)
        result = await self.auth.verify_shared(credentials, "REGISTER", lambda *_: ha1)
        match result.outcome:
            case VerifyOutcome.OK:
                await self._login(public_id, ue_source, now, ok=True)
                return None
            case VerifyOutcome.MALFORMED:
                return Response.for_request(request, 400, f"Bad Request - {result.reason}"[:80])
            case VerifyOutcome.STALE:
                return self._challenge(request, stale=True)
            case VerifyOutcome.BAD_CREDENTIALS if result.reason == _WRONG_RESPONSE:
                # Unknown user and wrong password look the same from outside.
                log.info("REGISTER %s: authentication failed from %s", public_id, ue_source)
                await self._login(public_id, ue_source, now, ok=False)
                return Response.for_request(request, 403)
            case _:
                return self._challenge(request)

    async def _retry_after(self, account: str, source: Source, now: float) -> float | None:
        if isinstance(self.guard, SharedLoginGuard):
            return await self.guard.retry_after(account, source, now)
        return self.guard.retry_after(account, source, now)

    async def _login(self, account: str, source: Source, now: float, ok: bool) -> None:
        """Count a login with the guard (in the store when it is shared)."""
        guard = self.guard
        if isinstance(guard, SharedLoginGuard):
            await (guard.succeeded if ok else guard.failed)(account, source, now)
        else:
            (guard.succeeded if ok else guard.failed)(account, source, now)

    def _challenge(self, request: Request, stale: bool = False) -> Response:
        response = Response.for_request(request, 401, to_tag=new_tag())
        for name, value in self.auth.challenge_headers(401, stale):
            response.add_header(name, value)
        return response

    async def _ha1(self, username: str, realm: str, algorithm: Algorithm,
                   public_id: str) -> str | None:
        """MAR: H(A1) for this username, only if it owns ``public_id``."""
        if realm != self.realm:
            return None
        answer = await self.hss.multimedia_auth(username, public_id, algorithm, self.server_name)
        if not answer.result.success or answer.realm != realm:
            return None
        return answer.ha1

    # -- bindings -------------------------------------------------------------------
    async def _update(self, request: Request, public_id: str, now: float
                      ) -> tuple[Response, RegistrationChange | None]:
        profile = await self.hss.user_profile(public_id)
        if profile is None or public_id in profile.barred:
            return Response.for_request(request, 403), None
        aor = profile.default_public_id
        wanted = self._requested(request)
        if isinstance(wanted, Response):
            return wanted, None
        # 10.3 steps 7-8 read, change and answer one AOR's bindings: one
        # REGISTER at a time per AOR, now that the store is awaited.
        async with self._one_at_a_time(aor):
            before = await self.store.registrations.bindings(aor, now)
            events = await self._apply(aor, request, wanted, before, now)
            if isinstance(events, Response):
                return events, None
            remaining = await self.store.registrations.bindings(aor, now)
            refused = await self._assign(request, public_id, before, remaining, events, aor)
        if refused is not None:
            return refused, None
        response = self._ok(request, profile, remaining, now)
        change = RegistrationChange(aor, public_id, profile, events, remaining, request, response)
        return response, change if events else None

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, aor: str) -> AsyncIterator[None]:
        lock, users = self._aor_locks.get(aor, (asyncio.Lock(), 0))
        self._aor_locks[aor] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._aor_locks[aor]
            if users == 1:
                del self._aor_locks[aor]
            else:
                self._aor_locks[aor] = (lock, users - 1)

    def _requested(self, request: Request) -> list[tuple[Contact, int]] | Response | None:
        """10.3 steps 6-7: the contacts with their expiry; None for ``*``."""
        try:
            contacts = request.contact
            header = request.expires()
            if any(c.is_star for c in contacts):
                if len(contacts) != 1 or header != 0:
                    return Response.for_request(request, 400, "Bad Request - '*' needs Expires: 0")
                return None
            limits = self.config.registrar
            out = []
            for contact in contacts:
                asked = contact.expires if contact.expires is not None else header
                expires = limits.default_expires if asked is None else asked
                if 0 < expires < limits.min_expires:
                    response = Response.for_request(request, 423)
                    response.add_header("Min-Expires", str(limits.min_expires))
                    return response
                out.append((contact, min(expires, limits.max_expires)))
            return out
        except HeaderError as exc:
            return Response.for_request(request, 400, f"Bad Request - {exc}"[:100])

    async def _apply(self, aor: str, request: Request, wanted: list[tuple[Contact, int]] | None,
                     before: list[Binding], now: float
                     ) -> list[tuple[Binding, ContactEvent]] | Response:
        if wanted is None:  # Contact: * with Expires: 0
            await self.store.registrations.remove_all(aor)
            return [(b, ContactEvent.UNREGISTERED) for b in before]
        new = [(self._binding(c, e, request, now), e) for c, e in wanted]
        for binding, _ in new:
            old = _same_binding(before, binding)
            if old is not None and old.call_id == binding.call_id and old.cseq >= binding.cseq:
                # 10.3 step 7: an out-of-order REGISTER must not change anything.
                return Response.for_request(request, 500,
                                            "Server Internal Error - CSeq out of order")
        events = []
        for binding, expires in new:
            old = _same_binding(before, binding)
            if old is not None and old.key != binding.key:
                await self.store.registrations.remove(aor, old.key)
            if expires == 0:
                if old is not None:
                    await self.store.registrations.remove(aor, old.key)
                    events.append((old, ContactEvent.UNREGISTERED))
                continue
            await self.store.registrations.save(aor, binding)
            events.append((binding, ContactEvent.REFRESHED if old else ContactEvent.REGISTERED))
        return events

    @staticmethod
    def _binding(contact: Contact, expires: int, request: Request, now: float) -> Binding:
        params = [(n, v) for n, v in contact.params if n.lower() not in ("expires", "q")]
        q = contact.q if contact.params.has("q") else None
        return Binding(
            contact=str(contact.uri), expires_at=now + expires, q=q,
            instance_id=contact.instance, reg_id=contact.reg_id, params=format_params(params),
            path=tuple(str(p) for p in request.path), call_id=request.call_id,
            cseq=request.cseq.seq)

    async def _assign(self, request: Request, public_id: str, before: list[Binding],
                      remaining: list[Binding], events: list[tuple[Binding, ContactEvent]],
                      aor: str) -> Response | None:
        """SAR for the whole implicit set; a refusal undoes nothing but answers 403."""
        if not events:
            return None
        if not remaining:
            kind = ServerAssignmentType.USER_DEREGISTRATION
        elif before:
            kind = ServerAssignmentType.RE_REGISTRATION
        else:
            kind = ServerAssignmentType.REGISTRATION
        answer = await self.hss.server_assignment(public_id, self.server_name, kind)
        if answer.result.success:
            return None
        log.warning("SAR %s for %s failed: %s", kind.name, public_id, answer.result.name)
        if kind is ServerAssignmentType.REGISTRATION:
            await self.store.registrations.remove_all(aor)
        return Response.for_request(request, 403)

    def _ok(self, request: Request, profile: UserProfile, bindings: list[Binding],
            now: float) -> Response:
        """10.3 step 8 and TS 24.229 5.4.1.2.2: the 200 with every binding."""
        response = Response.for_request(request, 200, to_tag=new_tag())
        for binding in bindings:
            response.add_header("Contact", contact_value(binding, now))
        for value in request.headers.get_all("Path"):
            response.add_header("Path", value)
        response.add_header("Service-Route", self.service_route)
        response.add_header("P-Associated-URI", ", ".join(
            f"<{uri}>" for uri in profile.public_ids if uri not in profile.barred))
        if request.headers.get("Path") is not None:
            response.add_header("Supported", "path")
        return response


def _same_binding(bindings: list[Binding], binding: Binding) -> Binding | None:
    """The binding a new one replaces: same key (instance/reg-id), else same contact URI."""
    for old in bindings:
        if old.key == binding.key:
            return old
    for old in bindings:
        if _uri_equal_text(old.contact, binding.contact):
            return old
    return None


def _uri_equal_text(a: str, b: str) -> bool:
    try:
        return parse_uri(a) == parse_uri(b)
    except UriError:
        return a == b


def binding_params(binding: Binding) -> list[tuple[str, str | None]]:
    text = binding.params.lstrip(";")
    try:
        return split_params(text) if text else []
    except GrammarError:
        return []


def contact_value(binding: Binding, now: float) -> str:
    params = binding.params
    if binding.q is not None:
        params += f";q={binding.q:g}"
    return f"<{binding.contact}>{params};expires={binding.remaining(now)}"


# -- the S-CSCF ------------------------------------------------------------------------

# The reason of our 480 for a UE whose flow failed at its P-CSCF (RFC 5626 430).
FLOW_FAILED_REASON = "Temporarily Unavailable - the UE's flow failed"


class Scscf(StatefulProxy):
    """Serving CSCF over one Store and Hss; ``await start()``, ``await close()``."""

    def __init__(self, config: Config, store: Store, hss: Hss,
                 timers: TimerValues | None = None, trace: bool = False, *,
                 clock: Callable[[], float] = time.time,
                 login_guard: LoginGuard | SharedLoginGuard | None = None,
                 ssl_context: object | None = None) -> None:
        super().__init__(self.route, record_route=True, timers=timers, trace=trace,
                         supported=frozenset({"path"}), limits=config.limits.sip,
                         overload=config.limits.overload, follow_routes=False)
        self.config = config
        self.store = store
        self.hss = hss
        self.clock = clock
        self.ssl_context = ssl_context
        limits = config.registrar.login
        # A pool's S-CSCFs count failed logins in the store: one limit for all of
        # them. One S-CSCF alone keeps the counts in memory (nothing to share).
        shared = len(config.scscf.instances) > 1
        self.registrar = Registrar(config, store, hss, clock, login_guard or (
            SharedLoginGuard(store.logins, limits) if shared else LoginGuard(limits)))
        self.server_name = config.scscf.uri
        self.regevent: RegEventNotifier | None = None
        self.odi = OdiSigner(secrets.token_bytes(32))  # the shared key from start()
        self._wakeup = asyncio.Event()
        self._swept = {"subscriptions": -math.inf, "logins": -math.inf}   # last sweeps
        self._subscriptions_due: float | None = None   # earliest reg subscription expiry
        self.peers = len(config.scscf.instances) > 1   # S-CSCFs share the users
        self._served: dict[str, float] = {}              # AOR -> checked until
        # the AS pools by each member's URI (one AS name in the iFCs, several processes)
        self.as_pools = {uri: pool for pool in (InstancePool(config.messaging_as.instances),)
                         if len(pool) > 1 for uri in pool.uris}
        self.as_answer_timeout = 16 * (timers or TimerValues()).t1  # > the I-CSCF's failover

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        node = self.config.scscf
        # Keys every S-CSCF on this store shares: any of them checks the Digest
        # nonces and continues the odi chains another issued.
        self.registrar.auth.use_secret(await self.store.nonces.shared_secret("digest"))
        self.odi = OdiSigner(await self.store.nonces.shared_secret("odi"))
        trust = await TrustedPeers.resolve(self.config.trusted_sockets(),
                                           self.config.security.udp_trust)
        self.endpoint.add_module(TrustGuard(trust, "S-CSCF"))
        port = node.port
        for host in node.hosts:
            port = await self._listen_host(host, port, node.transports, node.tls_port)
        host = self.endpoint.listening[next(iter(self.endpoint.listening))][0]
        host_text = f"[{host}]" if ":" in host else host
        self.server_name = f"sip:{host_text}:{port}{node.transport_param}"
        self.registrar.server_name = self.server_name
        self.registrar.service_route = f"<sip:orig@{host_text}:{port};lr{node.transport_param}>"
        self.regevent = RegEventNotifier(self.server_name)
        self._spawn(self._housekeeping())
        for pool in {id(p): p for p in self.as_pools.values()}.values():
            self._spawn(keep_probing(pool, self.endpoint, self.server_name))
        log.info("S-CSCF %s up", self.server_name)

    async def _listen_host(self, host: str, port: int, transports: tuple[str, ...],
                           tls_port: int | None) -> int:
        """UDP and TCP share one port number, also when it is picked (port 0)."""
        for attempt in range(20):
            bound = port
            try:
                for transport in (t for t in transports if t != "tls"):
                    bound = (await self.listen(transport, host, bound,
                                               reuse_port=transport == "tcp"))[1]
                break
            except OSError:
                if port != 0 or attempt == 19:
                    raise
        if "tls" in transports and tls_port is not None and self.ssl_context is not None:
            await self.listen("tls", host, tls_port, self.ssl_context, reuse_port=True)
        return bound

    async def on_response(self, ctx: RequestContext, response: Response) -> Response:
        """RFC 5626 11.5: 430 Flow Failed (a P-CSCF's: the UE's flow is gone) is for us,
        the authoritative proxy, never for an endpoint; every contact was tried
        (we fork to all), so upstream learns the user is unreachable for now:
        480, which the messaging AS keeps as a deferred item."""
        if response.status == 430:
            response.status, response.reason = 480, FLOW_FAILED_REASON
        return response

    # -- the routing logic ------------------------------------------------------------
    async def route(self, ctx: RequestContext) -> list[Target] | Response:
        """The router; ``ctx.route`` is our own Route the request came on."""
        request = ctx.request
        if self._pool_reg_refresh(request):
            return await self._reg_refresh(request)
        own = ctx.follow_route()
        if own is not None:
            return await self._own_route(request, own)
        if request.method == "REGISTER":
            return await self._register(request, ctx)
        if request.method == "SUBSCRIBE" and _is_reg_event(request):
            answer = await self._reg_subscribe(request, ctx)
            if answer is not None:
                return answer
        odi = ctx.route.param("odi") if ctx.route is not None else None
        if odi is not None:
            return await self._continue_chain(request, odi, ctx)
        if ctx.route is not None and ctx.route.user == "orig":
            return await self._originating(request, ctx)
        return await self._terminating(request, ctx)

    async def _own_route(self, request: Request, own: list[Target]) -> list[Target]:
        """A request with its own route; in a dialog with a PSI (a focus's
        ``conf-ID@DOMAIN`` Contact) the I-CSCF finds its AS."""
        if remote_target_is_domain(request, self.config.domain):
            return [Target(request.uri, await self._icscf())]
        return own

    async def _icscf(self) -> Destination:
        """The I-CSCF, next hop for home-domain URIs that are not ours to route."""
        icscf = self.config.icscf
        return await resolve(icscf.transports[0], icscf.host, icscf.port)

    # -- REGISTER -------------------------------------------------------------------
    async def _register(self, request: Request, ctx: RequestContext) -> Response:
        # The P-CSCF's word for the UE's flow (a trusted node sent this), else
        # whoever handed it to us.
        source = ue_source(request) or ctx.flow.remote
        response, change = await self.registrar.register(request, source)
        if change is not None:
            await self._registration_changed(change)
        return response

    async def _registration_changed(self, change: RegistrationChange,
                                    third_party: bool = True) -> None:
        now = self.clock()
        await self._notify_watchers(change.aor, change.events, final=change.deregistered)
        if third_party:
            self._third_party_register(change, now)
        self._wakeup.set()  # a new binding may expire before the next planned wake-up

    # -- reg event --------------------------------------------------------------------
    # The subscriptions live in the store (one row per dialog) so that every S-CSCF
    # of a pool serves them: a refresh reaching any instance, a registration
    # changed on any instance, an instance restarted. The notifier's own copy is
    # rebuilt from the store before each use, with the version taken there.

    async def _reg_subscribe(self, request: Request, ctx: RequestContext) -> Response | None:
        """TS 24.229 5.4.2.1.1; None when the Request-URI is not a user of ours."""
        assert self.regevent is not None
        if request.to.tag:
            return await self._reg_refresh(request)
        profile = await self.hss.user_profile(str(request.uri))
        if profile is None:
            return None
        refused = await self._refuse_watcher(request, profile)
        if refused is not None:
            return refused
        aor = profile.default_public_id
        state = await self._reginfo(aor)
        response = self.regevent.subscribe(request, aor, self.clock(), state)
        if response.status < 300 and response.to.tag:
            await self._keep_subscription(DialogId(request.call_id, response.to.tag,
                                                   request.from_.tag or ""))
        asyncio.get_running_loop().call_soon(self._send_notifies)  # after the 200
        return response

    def _pool_reg_refresh(self, request: Request) -> bool:
        """A reg event refresh addressed to any S-CSCF of our pool (the Contact it
        gave): ours to serve from the store, not to forward, when it reaches us."""
        uri = request.uri
        return (request.method == "SUBSCRIBE" and request.to.tag is not None
                and not request.route   # none left for others (ours is popped)
                and isinstance(uri, SipUri) and not uri.user and _is_reg_event(request)
                and _node_uri(uri.host, uri.port or 5060) in self.config.scscf.instances)

    async def _reg_refresh(self, request: Request) -> Response:
        """RFC 6665 4.2.1.4 refresh or unsubscribe, whichever S-CSCF accepted the
        subscription: it comes from the store with the version its NOTIFY carries."""
        assert self.regevent is not None
        dialog = DialogId.for_incoming_request(request)
        record = await self.store.reg_subscriptions.take(*_key(dialog), self.clock())
        state = await self._reginfo(record.aor) if record is not None else None
        held = self.regevent.subscription(dialog)
        if record is not None:
            self.regevent.restore(record)
        elif held is not None:
            self.regevent.forget(held)  # gone from the store: ended elsewhere (481)
        response = self.regevent.subscribe(request, None, self.clock(), state)
        if record is not None:
            await self._keep_subscription(dialog)
        asyncio.get_running_loop().call_soon(self._send_notifies)  # after the 200
        return response

    async def _keep_subscription(self, dialog: DialogId) -> None:
        """Store what a SUBSCRIBE left of its subscription, or its end; "2xx means
        stored": awaited before the 200 goes out."""
        assert self.regevent is not None
        sub = self.regevent.subscription(dialog)
        if sub is None:
            await self.store.reg_subscriptions.remove(*_key(dialog))
            return
        await self.store.reg_subscriptions.put(self.regevent.record(sub))
        due = self._subscriptions_due
        self._subscriptions_due = sub.expires_at if due is None else min(due, sub.expires_at)

    async def _refuse_watcher(self, request: Request,
                              profile: UserProfile) -> Response | None:
        """The user itself (asserted by the P-CSCF) or a trusted node may watch
        (only the trust domain gets past the TrustGuard)."""
        asserted = _asserted_identity(request)
        if asserted is not None and asserted not in profile.public_ids:
            return Response.for_request(request, 403)
        if not await self.store.registrations.bindings(profile.default_public_id, self.clock()):
            return Response.for_request(request, 403, "Forbidden - not registered")
        return None

    async def _reginfo(self, aor: str, events: list[tuple[Binding, ContactEvent]] | None = None
                       ) -> RegInfo:
        """Full state of an implicit set; ``events`` mark what just changed."""
        now = self.clock()
        profile = await self.hss.user_profile(aor)
        ids = [u for u in profile.public_ids if u not in profile.barred] if profile else [aor]
        changed = {b.key: e for b, e in events or []}
        contacts = [_reg_contact(aor, b, changed.get(b.key, ContactEvent.REGISTERED), now)
                    for b in await self.store.registrations.bindings(aor, now)]
        active = {c.id for c in contacts}
        contacts += [_reg_contact(aor, b, e, now, ContactState.TERMINATED)
                     for b, e in events or [] if element_id(aor, b.key) not in active]
        state = RegistrationState.ACTIVE if active else RegistrationState.TERMINATED
        return RegInfo([Registration(uri, element_id(uri), state, list(contacts))
                        for uri in ids])

    async def _notify_watchers(self, aor: str, events: list[tuple[Binding, ContactEvent]],
                               final: bool) -> None:
        """Every watcher of ``aor`` in the store, whichever S-CSCF it subscribed
        through, gets the next version from us."""
        if self.regevent is None:
            return
        records = await self.store.reg_subscriptions.take_watching(aor, self.clock())
        if not records:
            return
        info = await self._reginfo(aor, events)
        # restored only now, after the last await: the versions just taken are theirs
        watchers = [self.regevent.restore(r) for r in records]
        self.regevent.changed(aor, info, self.clock(), final=final, watchers=watchers)
        self._send_notifies()
        if final:
            for record in records:
                await self.store.reg_subscriptions.remove(*record.key)

    def _send_notifies(self) -> None:
        if self.regevent is None:
            return
        for notify in self.regevent.requests():
            self._spawn(self._send_notify(notify))

    async def _send_notify(self, notify: Request) -> None:
        response = await self.endpoint.request(notify).final()
        if self.regevent is None:
            return
        ended = self.regevent.receive_response(notify, response, self.clock())
        if ended is not None:  # a fatal answer (481, 408 ...): the subscription is gone
            try:
                await self.store.reg_subscriptions.remove(*_key(ended.dialog.id))
            except StoreError as exc:  # its expiry removes it then
                log.warning("reg event: cannot drop ended subscription: %s", exc)

    # -- third-party REGISTER -----------------------------------------------------------
    def _third_party_register(self, change: RegistrationChange, now: float) -> None:
        """TS 24.229 5.4.1.7: every AS whose iFC matches the REGISTER."""
        request = change.request
        view = RequestView("REGISTER", str(request.uri) if request else self.server_name,
                           list(request.headers) if request else [("To", change.public_id)])
        for ifc in matching_ifcs(change.profile.ifcs, view, SessionCase.ORIGINATING):
            server = ifc.application_server
            pool = self.as_pools.get(server.server_name)
            if pool is None:
                self._spawn(self._register_at(server, change, change.expires(now)))
            else:
                self._spawn(self._register_at_pool(server, pool, change, change.expires(now)))

    async def _register_at_pool(self, server: ApplicationServer, pool: InstancePool,
                                change: RegistrationChange, expires: int) -> None:
        """Every instance hears of the registration; it failed only if none took it."""
        results = await asyncio.gather(*(
            self._register_at(replace(server, server_name=uri), change, expires, alone=False)
            for uri in pool.uris))
        if not any(results):
            log.warning("third-party REGISTER: no instance of %s answered", server.server_name)
            if server.default_handling is DefaultHandling.SESSION_TERMINATED and expires > 0:
                await self._network_deregister(change.aor, change.public_id)

    async def _register_at(self, server: ApplicationServer, change: RegistrationChange,
                           expires: int, alone: bool = True) -> bool:
        register = build_request(
            "REGISTER", _request_uri(server.server_name), f"<{self.server_name}>",
            f"<{change.public_id}>", contact=self.server_name,
            headers=[("Expires", str(expires))])
        _attach_register_bodies(register, server, change)
        response = await self.endpoint.request(register).final()
        if response.status < 300:
            return True
        log.warning("third-party REGISTER to %s failed: %d", server.server_name, response.status)
        if alone and server.default_handling is DefaultHandling.SESSION_TERMINATED and \
                expires > 0:
            await self._network_deregister(change.aor, change.public_id)
        return False

    async def _network_deregister(self, aor: str, public_id: str) -> None:
        """TS 24.229 5.4.1.7: the AS failed with SESSION_TERMINATED: deregister."""
        now = self.clock()
        removed = await self.store.registrations.bindings(aor, now)
        await self.store.registrations.remove_all(aor)
        await self.hss.server_assignment(aor, self.server_name,
                                         ServerAssignmentType.ADMINISTRATIVE_DEREGISTRATION)
        await self._notify_watchers(aor, [(b, ContactEvent.DEACTIVATED) for b in removed], final=True)

    # -- iFC chain ----------------------------------------------------------------------
    async def _originating(self, request: Request,
                           ctx: RequestContext) -> list[Target] | Response:
        """TS 24.229 5.4.3.2: the served user is the one the P-CSCF asserted."""
        asserted = _asserted_identity(request)
        profile = await self.hss.user_profile(asserted) if asserted else None
        if profile is None:
            return Response.for_request(request, 403, "Forbidden - no served user")
        aor = profile.default_public_id
        registered = bool(await self.store.registrations.bindings(aor, self.clock()))
        if registered:
            await self._restore(aor)
        case = SessionCase.ORIGINATING if registered else SessionCase.ORIGINATING_UNREGISTERED
        return await self._next_step(request, IfcProgress(case, aor), ctx)

    async def _terminating(self, request: Request,
                           ctx: RequestContext) -> list[Target] | Response:
        """TS 24.229 5.4.3.3: the Request-URI names the served user."""
        profile = await self.hss.user_profile(str(request.uri))
        if profile is None:
            return Response.for_request(request, 404)
        aor = profile.default_public_id
        if await self.store.registrations.bindings(aor, self.clock()):
            case = SessionCase.TERMINATING_REGISTERED
            await self._restore(aor)
        else:
            case = SessionCase.TERMINATING_UNREGISTERED
            await self.hss.server_assignment(aor, self.server_name,
                                             ServerAssignmentType.UNREGISTERED_USER)
        if request.headers.get("P-Called-Party-ID") is None:
            request.add_header("P-Called-Party-ID", f"<{request.uri}>")
        return await self._next_step(request, IfcProgress(case, aor), ctx)

    async def _restore(self, aor: str) -> None:
        """TS 23.380: serving a registered user another S-CSCF of the pool had (it
        is gone, or the I-CSCF / P-CSCF could not reach it): SAR RESTORATION
        makes us its S-CSCF in the HSS, from the registration in the store."""
        now = self.clock()
        if not self.peers or self._served.get(aor, 0.0) > now:
            return
        answer = await self.hss.location_info(aor)
        if answer.server_name and answer.server_name != self.server_name:
            log.info("serving %s in place of S-CSCF %s (restoration)", aor, answer.server_name)
            await self.hss.server_assignment(aor, self.server_name,
                                             ServerAssignmentType.RESTORATION)
        if len(self._served) >= 100_000:
            self._served.clear()
        self._served[aor] = now + SERVED_RECHECK

    async def _continue_chain(self, request: Request, token: str,
                              ctx: RequestContext) -> list[Target] | Response:
        chain = self.odi.open(token, self.clock())
        if chain is None:
            return Response.for_request(request, 403, "Forbidden - unknown odi")
        progress = IfcProgress(chain.case, chain.served_user, chain.priority, chain.expires_at)
        ctx.record_route = False  # recorded when this session case began: once per case
        if progress.case in (SessionCase.TERMINATING_REGISTERED,
                             SessionCase.TERMINATING_UNREGISTERED) and \
                await self._retargeted(request, progress.served_user):
            # TS 24.229 5.4.3.3: a terminating AS changed the Request-URI (call
            # forwarding): no more of this user's services, on to the new target.
            return await self._towards_target(request)
        return await self._next_step(request, replace(progress), ctx)

    async def _retargeted(self, request: Request, served_user: str) -> bool:
        """Does the Request-URI no longer name the served user?"""
        profile = await self.hss.user_profile(str(request.uri))
        return profile is None or profile.default_public_id != served_user

    async def _next_step(self, request: Request, progress: IfcProgress,
                         ctx: RequestContext) -> list[Target] | Response:
        """The next matching iFC's AS, or, when none is left, the target."""
        ctx.session_case = progress.case
        profile = await self.hss.user_profile(progress.served_user)
        if profile is None:
            return Response.for_request(request, 404)
        ifc = next_ifc(profile.ifcs, _view(request), progress.case, progress.priority)
        if ifc is not None:
            server = ifc.application_server
            pool = self.as_pools.get(server.server_name)
            if pool is not None:
                return self._to_as_pool(ctx, server, pool,
                                        replace(progress, priority=ifc.priority))
            return self._to_application_server(request, server,
                                               replace(progress, priority=ifc.priority))
        if progress.case in (SessionCase.ORIGINATING, SessionCase.ORIGINATING_UNREGISTERED):
            return await self._towards_target(request)
        return await self._deliver(request, progress.served_user)

    def _to_application_server(self, request: Request, server: ApplicationServer,
                               progress: IfcProgress) -> list[Target]:
        """Route: <AS;lr>, <sip:S-CSCF;lr;odi=TOKEN> (TS 24.229 5.4.3.2 step 4)."""
        progress.expires_at = self.clock() + ODI_LIFETIME
        token = self.odi.issue(OdiChain(progress.case, progress.served_user, progress.priority,
                                        progress.expires_at))
        host, port = self.endpoint.listening[next(iter(self.endpoint.listening))]
        host_text = f"[{host}]" if ":" in host else host
        request.push_header("Route", f"<sip:{host_text}:{port};lr"
                                     f"{self.config.scscf.transport_param};odi={token}>")
        as_uri = parse_uri(server.server_name)
        if isinstance(as_uri, SipUri):
            as_uri = as_uri.copy()
            as_uri.set_param("lr")
        request.push_header("Route", f"<{as_uri}>")
        log.debug("%s %s -> AS %s (%s)", request.method, request.uri, server.server_name,
                  progress.case.name)
        return [Target(request.uri)]

    def _to_as_pool(self, ctx: RequestContext, server: ApplicationServer, pool: InstancePool,
                    progress: IfcProgress) -> list[Target]:
        """The served user's instance of the AS; the next one when it does not answer
        (the odi Route below the AS's stays: the chain goes on here either way)."""
        # The AS's own request (a deferred delivery) comes back to the instance
        # that sent it, which knows it for its own; others by the served user.
        source = _node_uri(*ctx.flow.remote)
        if source not in pool and f"{source};transport=tcp" in pool:
            source += ";transport=tcp"  # an AS instance on TCP alone
        tried = [pool.order(progress.served_user, source)[0]]

        async def failover(ctx: RequestContext, best: Response) -> list[Target] | None:
            if not is_local_failure(best):
                return None
            pool.mark_down(tried[-1])
            following = pool.next_after(tried, progress.served_user)
            if following is None:
                return None
            log.info("%s %s: AS %s did not answer (%d); trying %s", ctx.request.method,
                     ctx.request.uri, tried[-1], best.status, following)
            tried.append(following)
            ctx.request.pop_header("Route")
            ctx.request.push_header("Route", f"<{_loose(following)}>")
            return [Target(ctx.request.uri, response_timeout=self.as_answer_timeout)]

        ctx.failure_route = failover
        targets = self._to_application_server(
            ctx.request, replace(server, server_name=tried[0]), progress)
        for target in targets:
            target.response_timeout = self.as_answer_timeout
        return targets

    async def _towards_target(self, request: Request) -> list[Target] | Response:
        """Originating, after the ASs: tel / user=phone numbers through the HSS,
        home-domain targets to the I-CSCF, others by DNS."""
        uri = request.uri
        if _is_number(uri):
            profile = await self.hss.user_profile(str(uri))
            sip_id = _sip_identity(profile) if profile else None
            if sip_id is None:
                return Response.for_request(request, 404, "Not Found - unknown number")
            request.uri = parse_uri(sip_id)
            uri = request.uri
        if isinstance(uri, SipUri) and uri.host.lower() == self.config.domain:
            return [Target(request.uri, await self._icscf())]
        return [Target(request.uri)]

    async def _deliver(self, request: Request, aor: str) -> list[Target] | Response:
        """Fork to the registered contacts the caller accepts, Route = Path."""
        bindings = await self.store.registrations.bindings(aor, self.clock())
        if not bindings:
            return Response.for_request(request, 480)
        try:
            prefs = CallerPreferences.from_request(request)
        except HeaderError as exc:
            return Response.for_request(request, 400, f"Bad Request - {exc}"[:100])
        ranked = rank_contacts(
            [(b, contact_features(binding_params(b)), b.q if b.q is not None else 1.0)
             for b in bindings], prefs)
        if not ranked:
            return Response.for_request(request, 480)
        return [Target(parse_uri(r.item.contact), q=r.q, route=r.item.path) for r in ranked]

    # -- housekeeping -------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        """Drop expired bindings, subscriptions and nonce-counts on time; a store
        that is away (restarting) is tried again on the next round."""
        while True:
            now = self.clock()
            try:
                await self._expire(now)
            except StoreError as exc:  # away for now (a restart): the next round retries
                log.warning("S-CSCF housekeeping: %s", exc)
            except Exception:  # one bad record must not stop the cleanup for good
                log.exception("S-CSCF housekeeping failed")
            self._wakeup.clear()
            try:
                delay = await self._next_wakeup(now)
            except StoreError as exc:
                log.warning("S-CSCF housekeeping: %s", exc)
                delay = HOUSEKEEPING_RETRY
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay)
            except TimeoutError:
                pass

    async def _next_wakeup(self, now: float) -> float:
        due = self._subscriptions_due
        if due is not None:  # not before the next sweep may run
            due = max(due, self._swept["subscriptions"] + SUBSCRIPTION_SWEEP)
        deadlines = [d for d in (await self.store.registrations.next_expiry(), due)
                     if d is not None]
        soonest = min(deadlines, default=now + HOUSEKEEPING_MAX)
        return min(max(soonest - now, 0.01), HOUSEKEEPING_MAX)

    async def _expire(self, now: float) -> None:
        expired: dict[str, list[Binding]] = {}
        for aor, binding in await self.store.registrations.expire(now):
            expired.setdefault(aor, []).append(binding)
        for aor, bindings in expired.items():
            await self._bindings_expired(aor, bindings, now)
        if self._sweep_due("subscriptions", SUBSCRIPTION_SWEEP, now):
            await self._expire_subscriptions(now)
        await self.store.nonces.expire(now)
        if isinstance(self.registrar.guard, SharedLoginGuard) and \
                self._sweep_due("logins", LOGIN_SWEEP, now):
            await self.store.logins.expire(now)

    def _sweep_due(self, what: str, every: float, now: float) -> bool:
        if now - self._swept[what] < every:
            return False
        self._swept[what] = now
        return True

    async def _expire_subscriptions(self, now: float) -> None:
        """The store hands each expired reg subscription to one S-CSCF of the
        pool, which sends its final NOTIFY (reason=timeout)."""
        if self.regevent is None:
            return
        for record in await self.store.reg_subscriptions.expire(now):
            self.regevent.expired(self.regevent.restore(record), now)
        self.regevent.forget_expired(now)
        self._send_notifies()
        # other S-CSCFs' subscriptions too: the soonest of any in the store
        self._subscriptions_due = await self.store.reg_subscriptions.next_expiry()

    async def _bindings_expired(self, aor: str, bindings: list[Binding], now: float) -> None:
        remaining = await self.store.registrations.bindings(aor, now)
        profile = await self.hss.user_profile(aor)
        if profile is None:
            return
        if not remaining:
            await self.hss.server_assignment(aor, self.server_name,
                                             ServerAssignmentType.TIMEOUT_DEREGISTRATION)
        events = [(b, ContactEvent.EXPIRED) for b in bindings]
        log.info("%d binding(s) of %s expired", len(bindings), aor)
        # The ASs hear of a timeout only when the whole set is gone.
        await self._registration_changed(
            RegistrationChange(aor, aor, profile, events, remaining), third_party=not remaining)


# -- helpers ----------------------------------------------------------------------------

def _key(dialog: DialogId) -> tuple[str, str, str]:
    """A reg subscription's key in the store: its dialog as the notifier names it."""
    return dialog.call_id, dialog.local_tag, dialog.remote_tag


def _is_reg_event(request: Request) -> bool:
    value = request.headers.get("Event")
    try:
        return value is not None and Event.parse(value).package == "reg"
    except HeaderError:
        return False


def _asserted_identity(request: Request) -> str | None:
    """The first P-Asserted-Identity, canonical; None when absent or junk."""
    try:
        values = request.headers.values("P-Asserted-Identity")
        return canonical_public_id(str(NameAddr.parse(values[0]).uri)) if values else None
    except (HeaderError, ValueError):
        return None


def _view(request: Request) -> RequestView:
    return RequestView(request.method, str(request.uri), list(request.headers), request.body)


def _is_number(uri: Uri) -> bool:
    if isinstance(uri, TelUri):
        return True
    return isinstance(uri, SipUri) and (uri.param("user") or "").lower() == "phone"


def _sip_identity(profile: UserProfile) -> str | None:
    """The implicit set's first sip: identity that is not a telephone number."""
    for uri in profile.public_ids:
        if uri.startswith("sip:") and ";user=phone" not in uri:
            return uri
    return None


def _node_uri(host: str, port: int) -> str:
    return f"sip:[{host}]:{port}" if ":" in host else f"sip:{host}:{port}"


def _loose(server_name: str) -> str:
    """An AS's URI as a loose-routing Route value."""
    uri = parse_uri(server_name)
    if isinstance(uri, SipUri):
        uri = uri.copy()
        uri.set_param("lr")
    return str(uri)


def _request_uri(server_name: str) -> str:
    uri = parse_uri(server_name)
    if isinstance(uri, SipUri):
        uri = uri.copy()
        uri.remove_param("lr")
    return str(uri)


def _attach_register_bodies(register: Request, server: ApplicationServer,
                            change: RegistrationChange) -> None:
    """TS 24.229 5.4.1.7: the original REGISTER and/or its 200 as message/sip."""
    parts = []
    if server.include_register_request and change.request is not None:
        parts.append(bytes(change.request))
    if server.include_register_response and change.response is not None:
        parts.append(bytes(change.response))
    if len(parts) == 1:
        register.body = parts[0]
        register.set_header("Content-Type", "message/sip")
    elif parts:
        multipart = build_multipart(
            [BodyPart([("Content-Type", "message/sip")], p) for p in parts])
        register.body = multipart.to_bytes()
        register.set_header("Content-Type", multipart.content_type)


def _reg_contact(aor: str, binding: Binding, event: ContactEvent, now: float,
                 state: ContactState = ContactState.ACTIVE) -> RegContact:
    params = [(n, unquote(v) if v else "") for n, v in binding_params(binding)]
    active = state is ContactState.ACTIVE
    return RegContact(element_id(aor, binding.key), binding.contact, state, event,
                      binding.remaining(now) if active else 0, binding.q,
                      binding.call_id or None, binding.cseq or None, params)

