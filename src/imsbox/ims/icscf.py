"""The I-CSCF (TS 24.229 5.3): finds the S-CSCF (or PSI-hosting AS) through the HSS.

Routing logic for requests that reach us without a further Route:

* REGISTER: Cx UAR (``Hss.user_authorization``) with the public identity
  from To and the private identity from the Authorization username (else
  derived from To) -> ``Route: <S-CSCF;lr>``.  An unknown user (or a
  private identity that does not own the public one) goes to the default
  S-CSCF like a first registration: its Digest challenge can never be
  answered, so the UE sees 401 then 403 exactly as for a wrong password and
  a REGISTER never reveals whether a subscriber exists.  Other refusals
  (roaming not allowed, de-registering an unregistered user) are 403.
* Other initial requests: Cx LIR (``Hss.location_info``) on the
  Request-URI -> ``Route: <S-CSCF;lr>`` (the terminating case) or, for a
  PSI, straight to the hosting AS without a Route (as in TS 24.247 A.5.1
  step 9); 404 for an unknown identity, 480 when the user is not
  registered and has no unregistered services.

**Several S-CSCFs** (``[scscf] pool``, TS 23.380 restoration): a user with no
S-CSCF yet gets the pool member its identity hashes to; an S-CSCF that does
not answer within ``scscf_answer_timeout`` (or cannot be reached: our own
408/500/503) is tried last for a while and the request goes to the next one,
which serves the user from the shared registration without a new REGISTER
(it takes the user over in the HSS: ``Scscf`` restoration).

The Request-URI is never changed and the I-CSCF does not Record-Route.
Only the trust domain (``imsbox.sip.trust``: the configured node sockets and
``[security] trusted_peers``) may send to it; anything else gets 403.
"""

from __future__ import annotations

import logging

from ..config import Config
from ..sip.auth import Credentials, DigestError
from ..sip.endpoint import resolve
from ..sip.headers import HeaderError
from ..sip.identity import canonical_public_id
from ..sip.message import Request, Response, new_tag
from ..sip.pool import InstancePool, is_local_failure, keep_probing
from ..sip.proxy import RequestContext, StatefulProxy, Target
from ..sip.transaction import TimerValues
from ..sip.transport import DEFAULT_PORTS
from ..sip.trust import TrustedPeers, TrustGuard
from ..sip.uri import SipUri, UriError, parse_uri
from .hss import AuthorizationType, Hss, ResultCode, ServerCapabilities

__all__ = ["Icscf"]

log = logging.getLogger(__name__)

# UAR results that depend on whether the subscriber exists (TS 29.228 6.1.1).
_HIDDEN_FAILURES = frozenset({ResultCode.DIAMETER_ERROR_USER_UNKNOWN,
                              ResultCode.DIAMETER_ERROR_IDENTITIES_DONT_MATCH})


class Icscf(StatefulProxy):
    """I-CSCF on every ``config.icscf`` host (UDP/TCP ``port``)."""

    def __init__(self, config: Config, hss: Hss, timers: TimerValues | None = None,
                 trace: bool = False) -> None:
        super().__init__(self._route, record_route=False, timers=timers, trace=trace,
                         limits=config.limits.sip, overload=config.limits.overload,
                         follow_routes=False)
        self.config = config
        self.hss = hss
        # A PSI's AS is one hop away on loopback/LAN: silence this long means it is
        # down, answered 480 in seconds instead of Timer F's 64*T1 (32 s over UDP).
        self.as_answer_timeout = 8 * (timers or TimerValues()).t1
        # The S-CSCFs sharing the users; with more than one, a silent one is
        # skipped after this long (the same reasoning as for an AS).
        self.scscfs = InstancePool(config.scscf.instances)
        self.scscf_answer_timeout = self.as_answer_timeout
        # Conference AS instances: a conference URI hashes to the one that hosts it
        # (its owner lease), the next one takes it over when that one is silent.
        self.conference_ases = InstancePool(config.conference_as.instances)

    async def start(self) -> None:
        node = self.config.icscf
        trust = await TrustedPeers.resolve(self.config.trusted_sockets(),
                                           self.config.security.udp_trust)
        self.endpoint.add_module(TrustGuard(trust, "I-CSCF"))
        for host in node.hosts:
            for transport in node.transports:
                if transport == "tls":
                    log.warning("I-CSCF: TLS between core nodes is not supported; skipped")
                    continue
                await self.listen(transport, host, node.port, reuse_port=transport == "tcp")
        if len(self.scscfs) > 1:
            self._spawn(keep_probing(self.scscfs, self.endpoint, node.uri))
        if len(self.conference_ases) > 1:
            self._spawn(keep_probing(self.conference_ases, self.endpoint, node.uri))

    def listening_lines(self) -> list[str]:
        return [f"I-CSCF listening on {d}" for d in self.endpoint.transport.listen_addresses]

    # -- routing --------------------------------------------------------------------
    async def _route(self, ctx: RequestContext) -> list[Target] | Response:
        request = ctx.request
        if request.route:
            return [Target(request.uri)]
        if request.method == "REGISTER":
            return await self._register(request, ctx)
        # Also in a dialog: a request for a PSI (a focus's Contact) is routed by
        # the HSS like the initial one (TS 24.247 A.5.1 step 20), not by DNS.
        return await self._initial(request, ctx)

    async def _register(self, request: Request,
                        ctx: RequestContext) -> list[Target] | Response:
        """24.229 5.3.1.2: UAR, then on to the S-CSCF the HSS names (or we pick)."""
        public_id = str(request.to.uri)
        kind = AuthorizationType.DE_REGISTRATION if _is_deregistration(request) \
            else AuthorizationType.REGISTRATION
        private_id = await self._private_id(request)
        answer = await self.hss.user_authorization(
            public_id, private_id, request.header("P-Visited-Network-ID"), kind)
        if answer.result in _HIDDEN_FAILURES:
            # Challenged and refused by an S-CSCF like a wrong password, so the
            # answers never tell an unknown user from a known one.
            log.info("REGISTER for %s: %s, left to the S-CSCF to refuse", public_id,
                     answer.result.name)
            return self._to_scscf(ctx, self._pick_scscf(self.hss.capabilities, public_id))
        if not answer.result.success:
            log.info("REGISTER for %s refused: %s", public_id, answer.result.name)
            return _reply(request, 403, "Forbidden")
        return self._to_scscf(ctx, answer.server_name
                              or self._pick_scscf(answer.capabilities, public_id))

    async def _initial(self, request: Request,
                       ctx: RequestContext) -> list[Target] | Response:
        """24.229 5.3.2.1: LIR on the Request-URI; a PSI goes straight to its AS."""
        answer = await self.hss.location_info(str(request.uri))
        if answer.result is ResultCode.DIAMETER_ERROR_USER_UNKNOWN:
            return _reply(request, 404, "Not Found")
        if not answer.result.success:
            log.info("%s to %s: %s", request.method, request.uri, answer.result.name)
            return _reply(request, 480, "Temporarily Unavailable")
        if answer.psi and answer.server_name:
            return await self._to_psi_host(ctx, answer.server_name)
        return self._to_scscf(ctx, answer.server_name
                              or self._pick_scscf(answer.capabilities, str(request.uri)))

    async def _private_id(self, request: Request) -> str:
        """The Authorization username for our realm, else derived from To."""
        for value in request.headers.get_all("Authorization"):
            try:
                credentials = Credentials.parse(value)
            except (DigestError, ValueError):
                continue
            if credentials.realm.lower() == self.hss.domain:
                return credentials.username
        uri = request.to.uri
        if isinstance(uri, SipUri) and uri.user:
            return f"{uri.user}@{uri.host.lower()}"
        identity = await self.hss.find_identity(str(uri))  # tel: has no user@host to derive from
        return identity.private_id if identity is not None else str(uri)

    def _pick_scscf(self, capabilities: ServerCapabilities | None, key: str) -> str:
        """No S-CSCF assigned yet: one of our pool that is up (by the identity's
        hash, which spreads the users), else the first the HSS offers."""
        if len(self.scscfs) > 1:
            return self.scscfs.order(key)[0]
        if capabilities is not None and capabilities.server_names:
            return capabilities.server_names[0]
        return self.config.scscf.uri

    def _to_scscf(self, ctx: RequestContext, server: str) -> list[Target] | Response:
        """On to ``server``; with several S-CSCFs, to another one when it is down."""
        if len(self.scscfs) < 2 or server not in self.scscfs:
            return self._route_to(ctx.request, server)
        if self.scscfs.is_down(server):  # known silent: do not wait for it again
            server = self.scscfs.order(str(ctx.request.uri), server)[0]
        tried = [server]

        async def failover(ctx: RequestContext, best: Response) -> list[Target] | Response | None:
            if not is_local_failure(best):
                return None
            self.scscfs.mark_down(tried[-1])
            following = self.scscfs.next_after(tried, first=tried[0])
            if following is None:
                return None
            log.info("%s %s: S-CSCF %s did not answer (%d); trying %s", ctx.request.method,
                     ctx.request.uri, tried[-1], best.status, following)
            tried.append(following)
            ctx.request.pop_header("Route")  # the Route to the silent one
            return self._scscf_targets(ctx.request, following)

        ctx.failure_route = failover
        return self._scscf_targets(ctx.request, server)

    async def _to_psi_host(self, ctx: RequestContext, server: str) -> list[Target] | Response:
        """A PSI's AS; with several conference AS instances, the one the PSI hashes to
        (the same hash the instances pick their conference URIs by), then the next."""
        pool = self.conference_ases
        if len(pool) < 2 or server not in pool:
            ctx.failure_route = _psi_unreachable
            return await self._direct_to(ctx.request, server, self.as_answer_timeout)
        try:
            key = canonical_public_id(str(ctx.request.uri))
        except ValueError:
            key = str(ctx.request.uri)
        tried = [pool.order(key)[0]]

        async def failover(ctx: RequestContext, best: Response) -> list[Target] | Response | None:
            if is_local_failure(best):
                pool.mark_down(tried[-1])
                following = pool.next_after(tried, key)
                if following is not None:
                    log.info("%s %s: conference AS %s did not answer (%d); trying %s",
                             ctx.request.method, ctx.request.uri, tried[-1], best.status,
                             following)
                    tried.append(following)
                    return await self._direct_to(ctx.request, following,
                                                 self.as_answer_timeout)
            return await _psi_unreachable(ctx, best)

        ctx.failure_route = failover
        return await self._direct_to(ctx.request, tried[0], self.as_answer_timeout)

    def _scscf_targets(self, request: Request, server: str) -> list[Target] | Response:
        targets = self._route_to(request, server)
        if isinstance(targets, list):
            for target in targets:
                target.response_timeout = self.scscf_answer_timeout
        return targets

    @staticmethod
    def _route_to(request: Request, server: str) -> list[Target] | Response:
        uri = _sip_uri(server)
        if uri is None:
            return _reply(request, 500, "Server Internal Error - bad server name")
        uri = uri.copy()
        uri.set_param("lr")
        request.push_header("Route", f"<{uri}>")
        return [Target(request.uri)]


    @staticmethod
    async def _direct_to(request: Request, server: str,
                         answer_timeout: float) -> list[Target] | Response:
        """A PSI: straight to the hosting AS, no Route (24.229 5.3.2.1, TS 24.247 A.5.1-9);
        no response at all within ``answer_timeout``: the AS is down (408, then 480)."""
        uri = _sip_uri(server)
        if uri is None:
            return _reply(request, 500, "Server Internal Error - bad AS name")
        transport = uri.transport or ("tls" if uri.secure else "udp")
        host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
        try:
            dest = await resolve(transport, host, uri.port or DEFAULT_PORTS[transport])
        except (OSError, KeyError) as exc:
            log.warning("cannot reach AS %s: %s", server, exc)
            return _reply(request, 480, _unreachable(request))
        return [Target(request.uri, dest, response_timeout=answer_timeout)]


async def _psi_unreachable(ctx: RequestContext, best: Response) -> Response | None:
    """The PSI's AS did not answer (transport error, timeout: our own 408/500/503
    without a To-tag): 480 with a reason. A 503 would reach the UE as a bare 500,
    as every proxy on the way back turns 503 into 500 (RFC 3261 16.7 step 6)."""
    if best.status not in (408, 500, 503) or _answered(best):
        return None
    log.info("%s to %s: its AS did not answer (%d)", ctx.request.method, ctx.request.uri,
             best.status)
    return _reply(ctx.request, 480, _unreachable(ctx.request))


def _answered(response: Response) -> bool:
    """A response from a UAS (To-tag), not one our own transaction made up."""
    try:
        return response.headers.get("To") is not None and response.to.tag is not None
    except HeaderError:
        return False


def _unreachable(request: Request) -> str:
    return f"Temporarily Unavailable - no answer from the AS of {request.uri}"[:120]


def _sip_uri(text: str) -> SipUri | None:
    try:
        uri = parse_uri(text)
    except UriError:
        return None
    if not isinstance(uri, SipUri):
        log.error("HSS named %r as next hop: not a SIP URI", text)
        return None
    return uri


def _reply(request: Request, status: int, reason: str) -> Response:
    return Response.for_request(request, status, reason, to_tag=new_tag())


def _is_deregistration(request: Request) -> bool:
    """Every contact with expires 0 (or ``Contact: *``, which requires Expires: 0)."""
    try:
        contacts = request.contact
        default = request.expires()
    except HeaderError:
        return False
    if not contacts:
        return False
    return all(c.is_star or (c.expires if c.expires is not None else default) == 0
               for c in contacts)
