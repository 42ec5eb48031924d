"""The P-CSCF (TS 24.229 5.2): the UEs' entry point into the IMS core.

Routing logic, in the order ``_police`` applies it to every new request
(from the proxy's ``on_request`` hook: before RFC 3261 16.4 pops our Route,
so the Route we were reached by is still visible):

1. REGISTER (from a UE): drop the UE's Route/Path/P-Asserted-Identity, add
   ``Path: <sip:term.TOKEN@PCSCF:PORT;lr[;ob]>`` (TOKEN: an RFC 5626 5.2 flow
   token naming the UE's flow, ``imsbox.ims.flow_token``), ``Supported: path``,
   P-Visited-Network-ID and P-Charging-Vector, remember the flow it came on
   and forward it to the I-CSCF of the config, Request-URI unchanged.  The
   2xx (``on_response``) registers each contact of the REGISTER that the
   registrar lists with expires > 0, and forgets the others.
2. **From a UE** = the request came on the flow of a registered contact:
   same transport and source address and port (for TCP/TLS the UE's
   connection).  Never the Contact: a request from the core carries the
   calling UE's Contact.
   The P-CSCF asserts the identity (P-Asserted-Identity from the UE
   removed, P-Preferred-Identity honoured only from the registered set),
   Record-Routes itself and for initial requests replaces the Route with
   the stored Service-Route.
3. **From the core** = the flow is from a socket of the trust domain
   (``imsbox.sip.trust``: a configured node's exact address and port, or a
   ``[security] trusted_peers`` entry; never an IP alone or a Via) and the
   request came on our ``term`` Path Route, or is in a dialog (To tag)
   towards a registered contact.  On a Path with a flow token it goes over
   exactly that flow (RFC 5626 5.3): its connection gone, 430 Flow Failed for
   a UE that asked for outbound, a new connection to the Contact for one that
   did not; a token we did not sign gets 403.  Otherwise it goes
   to the UE over the UE's stored flow (to the contact address itself when
   we hold no flow for it, e.g. after a restart); P-Asserted-Identity is
   kept.  An outbound UE's REGISTER 2xx gets ``Flow-Timer`` (its CRLF
   keep-alives, answered by the stream transport, must come sooner than our
   idle close).
4. **Transport switch** (RFC 3261 18.1.1): a request on the other transport
   than a UE's registration (over 1300 bytes: TCP) is that UE's when it comes
   from the registration's address with its registered Contact and identity,
   and from the socket the Contact names or an address no other user is
   registered from (``_switched_transport``; ``[security] transport_switch``).
5. Anything else: 403 Forbidden (ACK: dropped).

Whatever comes from a UE loses the headers only the trust domain may set
(``CORE_ONLY_HEADERS``: P-Asserted-Identity, P-Served-User, P-Asserted-Service,
P-Profile-Key, the charging headers and our ``UE_SOURCE`` header).  A REGISTER
gets ``UE_SOURCE``: the UE's flow as we saw it, which the registrar's login
limits key on.

**Behind a load balancer** (``[pcscf] fronts``: a Kamailio dispatcher,
deploy/kamailio): a request from a front socket carries the UE's own flow in
its second Via (the UE's sent-by, with the ``received``/``rport`` the front
added), and that is the flow the P-CSCF polices and registers; requests to
the UE go to that address directly (the front only spreads the UEs' requests).
Only configured front sockets are believed, like the trust domain.

**Several S-CSCFs** (``[scscf] pool``): an initial request whose Service-Route
S-CSCF gives no answer within ``scscf_answer_timeout`` goes to the next one of
the pool (``sip:orig@NEXT;lr``), which serves the user from the shared
registration (TS 23.380 restoration); the silent one is tried last for a while.

Exception: an OPTIONS addressed to the P-CSCF itself (Request-URI = one of
our addresses, no user part, not in a dialog) is answered by the P-CSCF
with 200 and its Allow/Supported (RFC 3261 11.2), from anyone: it reaches
no one else, and UAs and monitors use it as a keep-alive/health check.

**Persistence.** With a ``store`` every registered contact (flow transport,
local and remote address, P-Associated-URI, Service-Route, expiry) is
written on each REGISTER 2xx (in order, without holding up the 2xx; ``close()``
waits for the writes) and reloaded by ``start()``, expired ones
dropped, so registrations survive a restart until they expire.  A restored
entry has no connection: over UDP the UE is reached at its stored source
address (received/rport); over TCP/TLS, and whenever the UE's connection is
gone, the P-CSCF opens a new connection to the **contact** address (the
UE's listening port; the remote port of the UE's old connection was an
ephemeral one nobody listens on).  Requests *from* the UE are recognised by
flow as before: a UDP UE is recognised at once after a restart, a TCP/TLS UE
on a new connection only after it registers again (RFC 5626: new flow).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..sip.endpoint import resolve
from ..sip.headers import HeaderError, NameAddr
from ..sip.identity import canonical_public_id
from ..sip.message import Request, Response, new_tag
from ..sip.pool import InstancePool, is_local_failure, keep_probing
from ..sip.proxy import RequestContext, StatefulProxy, Target
from ..sip.transaction import TimerValues
from ..sip.transport.base import Destination, Flow
from ..sip.trust import TrustedPeers
from ..sip.uri import SipUri, Uri, parse_uri
from ..store import PcscfRegistration, Store, StoreError
from .flow_token import TOKEN_PREFIX, FlowToken, FlowTokenSigner

__all__ = ["CORE_ONLY_HEADERS", "UE_SOURCE", "Pcscf", "Registrations", "UeRegistration",
           "contact_key", "ue_source"]

log = logging.getLogger(__name__)

TERM_USER = "term"
ORIG_USER = "orig"
# Charging headers belong to the trust domain: never taken from, or given to, a UE.
CHARGING_HEADERS = ("P-Charging-Vector", "P-Charging-Function-Addresses")
# The UE's flow (transport, address, port) as the P-CSCF saw it, on a REGISTER
# towards the registrar; imsbox's own, set only here.
UE_SOURCE = "P-Imsbox-UE-Source"
# Set only inside the trust domain (RFC 3325, RFC 5502, RFC 6050, TS 24.229
# 5.2.6.3.3 / 7.2A.8): removed from whatever a UE sends.
CORE_ONLY_HEADERS = ("P-Asserted-Identity", "P-Served-User", "P-Asserted-Service",
                     "P-Profile-Key", *CHARGING_HEADERS, UE_SOURCE)
TERMINATING = "pcscf.terminating"  # RequestContext.values: the UE a request goes to
UE_FLOW = "pcscf.ue_flow"          # ... the UE's flow seen through a front
FAILOVER = "pcscf.failover"        # ... the S-CSCF pool armed for this request
FLOW_TOKEN = "pcscf.flow_token"    # ... the flow our Path token names (RFC 5626 5.3)
OUTBOUND = "pcscf.outbound"        # ... a REGISTER asking for RFC 5626 outbound
DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061}
# What the P-CSCF proxies (OPTIONS to the P-CSCF itself lists these in Allow).
ALLOW = ("REGISTER, INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, "
         "REFER, INFO, UPDATE, PRACK, PUBLISH")

FlowKey = tuple[str, str, int]


def _norm_host(host: str) -> str:
    host = host[1:-1] if host.startswith("[") else host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def flow_key(flow: Flow) -> FlowKey:
    return (flow.transport, _norm_host(flow.remote[0]), flow.remote[1])


def contact_key(uri: Uri) -> str | None:
    """user@host:port of a contact: how a terminating Request-URI finds its UE."""
    if not isinstance(uri, SipUri):
        return None
    transport = uri.transport or ("tls" if uri.secure else "udp")
    port = uri.port or DEFAULT_PORT.get(transport, 5060)
    return f"{uri.user or ''}@{_norm_host(uri.host)}:{port}"


@dataclass(slots=True)
class UeRegistration:
    """One registered contact as the P-CSCF knows it (24.229 5.2.2)."""

    contact: SipUri
    flow: Flow
    public_ids: tuple[str, ...]      # P-Associated-URI values, default identity first
    service_route: tuple[str, ...]   # Service-Route values, in order
    expires_at: float

    @property
    def default_identity(self) -> str:
        return self.public_ids[0]


class Registrations:
    """Registered UE contacts, found by contact URI or by the flow they use.

    Both lookups are dictionary hits: every request reaching the P-CSCF asks
    ``by_flow``, so its cost must not grow with the number of registered UEs.
    Expired entries go when looked up, and all of them at most every
    ``PURGE_INTERVAL`` seconds.
    """

    PURGE_INTERVAL = 1.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_contact: dict[str, UeRegistration] = {}
        self._by_flow: dict[FlowKey, dict[str, UeRegistration]] = {}
        self._by_host: dict[str, dict[str, UeRegistration]] = {}  # the flow's source IP
        self._next_purge = 0.0

    def __len__(self) -> int:
        self._purge()
        return len(self._by_contact)

    def add(self, registration: UeRegistration) -> None:
        key = contact_key(registration.contact)
        if key is not None:
            self._drop(key)
            self._by_contact[key] = registration
            self._by_flow.setdefault(flow_key(registration.flow), {})[key] = registration
            self._by_host.setdefault(_norm_host(registration.flow.remote[0]), {})[key] = \
                registration

    def remove(self, contact: Uri) -> None:
        key = contact_key(contact)
        if key is not None:
            self._drop(key)

    def remove_flow(self, flow: Flow) -> None:
        for key in list(self._by_flow.get(flow_key(flow), {})):
            self._drop(key)

    def by_contact(self, uri: Uri) -> UeRegistration | None:
        key = contact_key(uri)
        found = self._by_contact.get(key) if key is not None else None
        if found is not None and found.expires_at <= self.clock():
            self._drop(key)  # type: ignore[arg-type]
            return None
        return found

    def by_flow(self, flow: Flow) -> list[UeRegistration]:
        now = self.clock()
        if now >= self._next_purge:
            self._purge()
        entries = self._by_flow.get(flow_key(flow))
        if not entries:
            return []
        for key in [k for k, r in entries.items() if r.expires_at <= now]:
            self._drop(key)
        return list(entries.values())

    def by_host(self, host: str) -> list[UeRegistration]:
        """Every unexpired registration whose flow comes from the address ``host``."""
        now = self.clock()
        entries = self._by_host.get(_norm_host(host), {})
        for key in [k for k, r in entries.items() if r.expires_at <= now]:
            self._drop(key)
        return list(entries.values())

    def _drop(self, key: str) -> None:
        old = self._by_contact.pop(key, None)
        if old is None:
            return
        fkey = flow_key(old.flow)
        entries = self._by_flow.get(fkey)
        if entries is not None:
            entries.pop(key, None)
            if not entries:
                del self._by_flow[fkey]
        host = _norm_host(old.flow.remote[0])
        same_host = self._by_host.get(host)
        if same_host is not None:
            same_host.pop(key, None)
            if not same_host:
                del self._by_host[host]

    def _purge(self) -> None:
        now = self.clock()
        self._next_purge = now + self.PURGE_INTERVAL
        for key in [k for k, r in self._by_contact.items() if r.expires_at <= now]:
            self._drop(key)


class Pcscf(StatefulProxy):
    """P-CSCF on every ``config.pcscf`` host: UDP+TCP ``port``, TLS ``tls_port``.

    Uses the proxy's hooks: ``on_request`` classifies before 16.3/16.4
    (needs the flow and our unpopped Route); the router (with
    ``follow_routes`` off) sends to a UE's flow before following a Route.
    """

    def __init__(self, config: Config, timers: TimerValues | None = None,
                 trace: bool = False, ssl_context: ssl.SSLContext | None = None,
                 store: Store | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(self._route, record_route=True, timers=timers, trace=trace,
                         follow_routes=False,
                         limits=config.limits.sip, overload=config.limits.overload)
        self.config = config
        self.ssl_context = ssl_context
        self.store = store  # None: registrations are kept in memory only
        self.wall_clock = wall_clock
        self.node_name = config.pcscf.uri
        self.registrations = Registrations()
        self.path_uri: SipUri | None = None
        self._icscf: Destination | None = None
        self.trust = TrustedPeers()
        self.fronts = frozenset((_norm_host(h), p) for h, p in config.pcscf.fronts)
        self.scscfs = InstancePool(config.scscf.instances, down_for=30.0)
        # The whole originating chain answers within this (ASs and the I-CSCF
        # fail over within it themselves); silence beyond: the S-CSCF is gone.
        self.scscf_answer_timeout = 24 * (timers or TimerValues()).t1
        # RFC 5626 5.2 flow tokens in our Path: the store's shared key from start().
        self.flow_tokens = FlowTokenSigner(secrets.token_bytes(32))
        # RFC 5626 4.4.1: outbound UEs ping at 80-100 % of this, well inside the
        # idle time after which we close a silent connection.
        idle = config.limits.sip.idle_timeout
        self.flow_timer = 120 if idle is None else max(1, int(idle * 2 / 3))

    # -- life cycle -----------------------------------------------------------
    async def start(self) -> None:
        node = self.config.pcscf
        for host in node.hosts:
            for transport in node.transports:
                if transport != "tls":
                    await self.listen(transport, host, node.port,
                                      reuse_port=transport == "tcp")
                elif self.ssl_context is None:
                    log.warning("P-CSCF: no TLS context given, not listening on TLS %s", host)
                elif node.tls_port is not None:
                    await self.listen("tls", host, node.tls_port, self.ssl_context,
                                      reuse_port=True)
        assert self.identity.record_route is not None
        self.path_uri = self.identity.record_route.copy(user=TERM_USER)
        icscf = self.config.icscf
        transport = "udp" if "udp" in icscf.transports else "tcp"
        self._icscf = await resolve(transport, icscf.host, icscf.port)
        self.trust = await TrustedPeers.resolve(self.config.trusted_sockets(),
                                                self.config.security.udp_trust)
        if self.store is not None:
            try:
                self.flow_tokens = FlowTokenSigner(
                    await self.store.nonces.shared_secret("flow-token"))
            except StoreError as exc:
                log.error("P-CSCF: no shared flow-token key (%s): tokens of this "
                          "process only", exc)
        await self._restore()
        if len(self.scscfs) > 1:
            self._spawn(keep_probing(self.scscfs, self.endpoint, node.uri))

    # -- persistence -----------------------------------------------------------------
    async def _restore(self) -> None:
        """Reload the registrations kept in the store; expired ones are deleted."""
        if self.store is None:
            return
        wall, mono = self.wall_clock(), self.registrations.clock()
        try:
            await self.store.flows.expire(wall)
            entries = await self.store.flows.registrations(self.node_name, wall)
        except StoreError as exc:
            log.error("P-CSCF: cannot reload registrations from the store: %s", exc)
            return
        for entry in entries:
            try:
                registration = _registration_from_store(entry, mono - wall)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("P-CSCF: dropping unreadable stored registration %s: %s",
                            entry.contact, exc)
                await self._forget(entry.key)
                continue
            self.registrations.add(registration)
        if entries:
            log.info("P-CSCF: restored %d registration(s) from the store",
                     len(self.registrations))

    async def _persist(self, registration: UeRegistration) -> None:
        key = contact_key(registration.contact)
        if self.store is None or key is None:
            return
        left = registration.expires_at - self.registrations.clock()
        flow = registration.flow
        try:
            await self.store.flows.save(PcscfRegistration(
                node=self.node_name, key=key, contact=str(registration.contact),
                flow=json.dumps({"transport": flow.transport, "local": list(flow.local),
                                 "remote": list(flow.remote)}),
                public_ids=registration.public_ids,
                service_route=registration.service_route,
                expires_at=self.wall_clock() + left))
        except StoreError as exc:
            log.error("P-CSCF: cannot store the registration of %s: %s",
                      registration.contact, exc)

    async def _forget(self, key: str | None) -> None:
        if self.store is None or key is None:
            return
        try:
            await self.store.flows.remove(self.node_name, key)
        except StoreError as exc:
            log.error("P-CSCF: cannot remove stored registration %s: %s", key, exc)

    def listening_lines(self) -> list[str]:
        return [f"P-CSCF listening on {d}" for d in self.endpoint.transport.listen_addresses]

    # -- requests: who sent it decides what we do --------------------------------
    def on_request(self, ctx: RequestContext) -> Response | None:
        """Before 16.3/16.4: who sent it (by flow and our unpopped Route) decides."""
        flow = self._ue_flow(ctx.request, ctx.flow)
        if flow is not ctx.flow:
            ctx.values[UE_FLOW] = flow
        refusal = self._police(ctx.request, flow, ctx)
        if refusal is None:
            self._arm_failover(ctx)
        return refusal

    def _ue_flow(self, request: Request, flow: Flow) -> Flow:
        """Through a front: the UE's flow from the second Via (RFC 3581 received/rport)."""
        if not self.fronts or (_norm_host(flow.remote[0]), flow.remote[1]) not in self.fronts:
            return flow
        try:
            vias = request.via
        except HeaderError:
            return flow
        if len(vias) < 2:
            return flow  # the front's own request (none: it only probes with OPTIONS)
        ue = vias[1]
        host = ue.received or ue.host
        port = ue.rport or ue.port or DEFAULT_PORT.get(ue.transport.lower(), 5060)
        return Flow(ue.transport.lower(), flow.local, (host, port))

    def _arm_failover(self, ctx: RequestContext) -> None:
        """An initial request from a UE towards a pooled S-CSCF: on to another on silence."""
        request = ctx.request
        if len(self.scscfs) < 2 or request.method in ("REGISTER", "ACK") or \
                request.to.tag is not None:
            return
        routes = request.route
        top = routes[0].uri if routes else None
        if not isinstance(top, SipUri) or top.user != ORIG_USER:
            return
        first = _node_uri(top.host, top.port, top.transport)
        if first not in self.scscfs:
            return
        tried = [first]
        if self.scscfs.is_down(first):
            tried = [self.scscfs.order(first=first)[0]]
            _replace_orig_route(request, tried[0])

        async def failover(ctx: RequestContext, best: Response) -> list[Target] | None:
            if not is_local_failure(best):
                return None
            self.scscfs.mark_down(tried[-1])
            following = self.scscfs.next_after(tried, first=tried[0])
            if following is None:
                return None
            log.info("%s from %s: S-CSCF %s did not answer (%d); trying %s", request.method,
                     request.from_.uri, tried[-1], best.status, following)
            tried.append(following)
            _replace_orig_route(ctx.request, following)
            return [Target(ctx.request.uri, response_timeout=self.scscf_answer_timeout)]

        ctx.failure_route = failover
        ctx.values[FAILOVER] = True

    def _police(self, request: Request, flow: Flow, ctx: RequestContext) -> Response | None:
        if self._options_for_me(request):
            return self._options_answer(request)
        if request.method == "REGISTER":
            ctx.values[OUTBOUND] = self._prepare_register(request, flow,
                                                          edge=UE_FLOW not in ctx.values)
            return None
        registrations = self.registrations.by_flow(flow)
        if registrations:
            self._prepare_originating(request, registrations)
            return None
        if self._from_core(request, flow):
            token = self._term_token(request)
            if isinstance(token, Response):
                return token
            if token is not None:
                ctx.values[FLOW_TOKEN] = token
            _strip_charging(request)  # not for the UE's eyes
            return None
        switched, refusal = self._switched_transport(request, flow)
        if switched is not None:
            log.info("%s from %s on %s: the UE registered on %s (RFC 3261 18.1.1)",
                     request.method, switched.contact, flow.transport, switched.flow.transport)
            self._prepare_originating(request, [switched])
            return None
        log.info("403 for %s from unregistered %s (Call-ID %s)", request.method,
                 flow.remote, request.call_id)
        return Response.for_request(request, 403, refusal or "Forbidden - not registered",
                                    to_tag=new_tag())

    def _switched_transport(self, request: Request,
                            flow: Flow) -> tuple[UeRegistration | None, str | None]:
        """A registered UE's request on another transport than its registration's: a
        request over 1300 bytes goes over TCP (RFC 3261 18.1.1), and some clients send
        a request over UDP while registered over TCP. It is that UE's when it comes
        from the registration's address, names its registered Contact (if it has one)
        and a registered identity, and either its source is the socket the Contact
        names (a bound socket, as everywhere in the trust model) or nobody else is
        registered from that address. Else (None, the 403 reason, if any)."""
        if request.method == "REGISTER" or self.trust.trusts(flow) or \
                self.config.security.transport_switch == "off":
            return None, None
        host = flow.remote[0]
        same_host = self.registrations.by_host(host)
        candidates = [r for r in same_host if r.flow.transport != flow.transport]
        if not candidates:
            return None, None
        try:
            contacts = request.contact
            claimed = _canonical(str(request.from_.uri))
        except HeaderError:
            return None, None
        if contacts and not contacts[0].is_star:
            key = contact_key(contacts[0].uri)
            candidates = [r for r in candidates if contact_key(r.contact) == key]
        candidates = [r for r in candidates
                      if claimed in {_canonical(p) for p in r.public_ids}]
        if not candidates:
            return None, None
        for registration in candidates:
            contact = registration.contact
            port = contact.port or DEFAULT_PORT[flow.transport]
            if (_norm_host(contact.host), port) == (_norm_host(host), flow.remote[1]):
                return registration, None  # from the very socket it registered
        if len({r.public_ids for r in same_host}) == 1:
            return candidates[0], None     # the only user registered from this address
        return None, (f"Forbidden - not registered on this {flow.transport} flow (several "
                      f"users are registered from {host}: register over "
                      f"{flow.transport.upper()})")

    def _options_for_me(self, request: Request) -> bool:
        """RFC 3261 11: an OPTIONS whose Request-URI is this proxy (no user part)."""
        uri = request.uri
        return (request.method == "OPTIONS" and request.to.tag is None
                and isinstance(uri, SipUri) and not uri.user and self.identity.is_me(uri))

    def _options_answer(self, request: Request) -> Response:
        """RFC 3261 11.2: 200 with what we handle; nothing is forwarded."""
        response = Response.for_request(request, 200, to_tag=new_tag())
        response.add_header("Allow", ALLOW)
        response.add_header("Supported", "path")
        response.add_header("Accept", "application/sdp")
        return response

    def _from_core(self, request: Request, flow: Flow) -> bool:
        if not self.trust.trusts(flow):
            return False
        return self._on_term_route(request) or self._in_dialog_to_ue(request)

    def _on_term_route(self, request: Request) -> bool:
        """Reached through the Path we gave the registrar (before 16.4 pops it):
        ``term`` (a Path given before flow tokens) or ``term.TOKEN``."""
        top = _top_route(request)
        return top is not None and top.user is not None and \
            (top.user == TERM_USER or top.user.startswith(TOKEN_PREFIX)) and \
            self.identity.is_me(top)

    def _term_token(self, request: Request) -> FlowToken | Response | None:
        """RFC 5626 5.3: the flow our Path's token names; 403 when we did not sign
        it (forged, or from another network's key); None: a Path without token."""
        top = _top_route(request)
        if top is None or top.user is None or not top.user.startswith(TOKEN_PREFIX) or \
                not self.identity.is_me(top):
            return None
        token = self.flow_tokens.open(top.user[len(TOKEN_PREFIX):])
        if token is None:
            log.warning("403 for %s to %s: flow token not signed by us (Call-ID %s)",
                        request.method, request.uri, request.call_id)
            return Response.for_request(request, 403, "Forbidden - invalid flow token",
                                        to_tag=new_tag())
        return token

    def _in_dialog_to_ue(self, request: Request) -> bool:
        return request.to.tag is not None and \
            self.registrations.by_contact(request.uri) is not None

    def _prepare_register(self, request: Request, flow: Flow, edge: bool) -> bool:
        """24.229 5.2.2: we pick the next hop and the Path; the UE does not.
        True: the UE asked for RFC 5626 outbound and we are its first hop (behind
        a front, ``edge`` False, the UE's connection is the front's, not ours)."""
        for name in ("Route", "Path", *CORE_ONLY_HEADERS):
            request.remove_header(name)
        request.set_header(UE_SOURCE, _format_source(flow))
        outbound = edge and _asks_outbound(request)
        request.push_header("Path", f"<{self._path_for(flow, outbound, edge)}>")
        if "path" not in request.tokens("Supported"):
            request.add_header("Supported", "path")
        request.set_header("P-Visited-Network-ID", self.config.domain)
        request.add_header("P-Charging-Vector", self._charging_vector())
        return outbound

    def _path_for(self, flow: Flow, outbound: bool, edge: bool) -> SipUri:
        """RFC 5626 5.1/5.2: ``sip:term.TOKEN@US;lr``, the token naming the UE's flow;
        ``;ob`` when we are the first hop and the UE asked for outbound or its
        flow is a connection (we answer its CRLF keep-alives there)."""
        assert self.path_uri is not None
        token = self.flow_tokens.issue(flow, outbound)
        uri = self.path_uri.copy(user=TOKEN_PREFIX + token)
        if edge and (outbound or flow.reliable):
            uri.set_param("ob")
        return uri

    def _prepare_originating(self, request: Request,
                             registrations: list[UeRegistration]) -> None:
        """24.229 5.2.6.3: assert the identity; initial requests take the Service-Route."""
        identity = _asserted_identity(request, registrations)
        for name in ("P-Preferred-Identity", *CORE_ONLY_HEADERS):
            request.remove_header(name)
        request.add_header("P-Asserted-Identity", identity)
        if request.to.tag is None:
            request.remove_header("Route")  # our own entry and whatever the UE preloaded
            for route in registrations[0].service_route or (self._default_service_route(),):
                request.add_header("Route", route)
            request.add_header("P-Charging-Vector", self._charging_vector())

    def _default_service_route(self) -> str:
        """No Service-Route in the 2xx: the configured S-CSCF, originating."""
        scscf = self.config.scscf
        host = f"[{scscf.host}]" if ":" in scscf.host else scscf.host
        return f"<sip:{ORIG_USER}@{host}:{scscf.port};lr{scscf.transport_param}>"

    def _charging_vector(self) -> str:
        host = self.path_uri.host if self.path_uri is not None else self.config.pcscf.host
        return f'icid-value="{secrets.token_hex(12)}";icid-generated-at={host}'

    # -- targets ---------------------------------------------------------------------
    async def _route(self, ctx: RequestContext) -> list[Target] | Response:
        """A registered contact with no Route left first (in a dialog too), then
        the request's own route; REGISTER goes to the I-CSCF."""
        request = ctx.request
        token = ctx.values.get(FLOW_TOKEN)
        if isinstance(token, FlowToken):
            registration = self.registrations.by_contact(request.uri)
            if registration is not None:
                ctx.values[TERMINATING] = registration  # for on_response
            return await self._to_token_flow(request, token, registration)
        registration = self._terminating_registration(request)
        if registration is not None:
            ctx.values[TERMINATING] = registration  # for on_response
            return await self._to_ue(request, registration)
        routed = ctx.follow_route()
        if routed is not None:
            if ctx.values.get(FAILOVER):
                for target in routed:
                    target.response_timeout = self.scscf_answer_timeout
            return routed
        if request.method == "REGISTER":
            return [Target(request.uri, self._icscf)]
        # From the core for a contact we hold no flow for (e.g. registered
        # before our restart): the contact address as written is all we have.
        return [Target(request.uri)]

    async def _to_ue(self, request: Request, registration: UeRegistration) -> list[Target]:
        """Over the UE's flow (its connection or UDP source), not to the contact."""
        flow = registration.flow
        if flow.transport == "udp" or self._connected(flow):
            return [Target(request.uri, flow.destination, flow=flow)]
        # The UE's connection is gone (closed, or registered before our
        # restart): a new connection to the address it listens on.
        contact = registration.contact
        dest = await resolve(flow.transport, contact.host,
                             contact.port or DEFAULT_PORT[flow.transport])
        return [Target(request.uri, dest)]

    async def _to_token_flow(self, request: Request, token: FlowToken,
                             registration: UeRegistration | None) -> list[Target] | Response:
        """RFC 5626 5.3: over exactly the flow the token names. Its connection gone:
        430 Flow Failed for a UE using outbound (it registers a new flow itself);
        a UE that did not ask for outbound gets a new connection to its Contact,
        as without a token (RFC 3261 18.2.2 style, e.g. after our restart)."""
        if not token.reliable:
            flow = token.flow
            return [Target(request.uri, flow.destination, flow=flow)]
        live = self.endpoint.transport.open_flow(token.transport, token.local, token.remote)
        if live is not None:
            return [Target(request.uri, live.destination, flow=live)]
        if token.outbound:
            log.info("430 for %s to %s: its %s flow %s is gone", request.method, request.uri,
                     token.transport, token.remote)
            return Response.for_request(request, 430, "Flow Failed", to_tag=new_tag())
        contact = registration.contact if registration is not None else request.uri
        if not isinstance(contact, SipUri):
            return Response.for_request(request, 430, "Flow Failed", to_tag=new_tag())
        dest = await resolve(token.transport, contact.host,
                             contact.port or DEFAULT_PORT[token.transport])
        return [Target(request.uri, dest)]

    def _connected(self, flow: Flow) -> bool:
        return flow.conn_id is not None and any(
            c.conn_id == flow.conn_id for c in self.endpoint.transport.connections)

    def _terminating_registration(self, request: Request) -> UeRegistration | None:
        if request.method == "REGISTER" or request.route:
            return None
        return self.registrations.by_contact(request.uri)

    # -- responses -------------------------------------------------------------------
    async def on_response(self, ctx: RequestContext, response: Response) -> Response:
        if ctx.request.method == "REGISTER":
            if response.status >= 200:
                seen = ctx.values.get(UE_FLOW)
                flow = seen if isinstance(seen, Flow) else ctx.flow
                await self._registered(ctx.request, flow, response)
            if ctx.values.get(OUTBOUND) and 200 <= response.status < 300 and \
                    "Flow-Timer" not in response.headers:
                # RFC 5626 4.4.1/5.4: how often the UE must ping this flow.
                response.add_header("Flow-Timer", str(self.flow_timer))
            _strip_charging(response)
            return response
        registration = ctx.values.get(TERMINATING)
        if isinstance(registration, UeRegistration):
            _assert_in_response(response, registration)  # the UE answers the core
        else:
            _strip_charging(response)  # going to the UE
        return response

    async def _registered(self, request: Request, flow: Flow, response: Response) -> None:
        """24.229 5.2.2.x: keep flow, P-Associated-URI, Service-Route per contact,
        stored before the 2xx goes on, so a P-CSCF restarted right after the UE
        saw its 200 still knows the flow."""
        if not 200 <= response.status < 300:
            return
        try:
            granted = self._granted_expiries(response)
            public_ids = tuple(response.headers.values("P-Associated-URI")) or \
                (f"<{request.to.uri}>",)
            service_route = tuple(str(r) for r in response.service_route)
            contacts = request.contact
        except HeaderError as exc:
            log.warning("REGISTER 2xx not understood (%s); registration of %s not stored",
                        exc, flow.remote)
            return
        now = self.registrations.clock()
        for contact in contacts:
            if contact.is_star:
                for gone in self.registrations.by_flow(flow):
                    await self._forget(contact_key(gone.contact))
                self.registrations.remove_flow(flow)
                continue
            expires = granted.get(contact_key(contact.uri) or "", 0)
            if expires > 0 and isinstance(contact.uri, SipUri):
                registration = UeRegistration(
                    contact.uri, flow, public_ids, service_route, now + expires)
                self.registrations.add(registration)
                await self._persist(registration)
                log.info("registered %s on %s %s", contact.uri, flow.transport, flow.remote)
            else:
                self.registrations.remove(contact.uri)
                await self._forget(contact_key(contact.uri))
                log.info("de-registered %s", contact.uri)

    def _granted_expiries(self, response: Response) -> dict[str, int]:
        """Contact key -> expiry the registrar granted (per contact, else Expires)."""
        default = response.expires()
        if default is None:
            default = self.config.registrar.default_expires
        out: dict[str, int] = {}
        for contact in response.contact:
            key = None if contact.is_star else contact_key(contact.uri)
            if key is not None:
                expires = contact.expires
                out[key] = default if expires is None else expires
        return out


# -- helpers ---------------------------------------------------------------------------

def _registration_from_store(entry: PcscfRegistration, offset: float) -> UeRegistration:
    """A stored entry back as a UeRegistration; ``offset`` = monotonic - wall clock.

    The flow has no connection: the old process's connections are gone.
    """
    contact = parse_uri(entry.contact)
    if not isinstance(contact, SipUri):
        raise ValueError(f"not a SIP contact: {entry.contact!r}")
    data = json.loads(entry.flow)
    local, remote = data["local"], data["remote"]
    flow = Flow(str(data["transport"]), (str(local[0]), int(local[1])),
                (str(remote[0]), int(remote[1])))
    if not entry.public_ids:
        raise ValueError("no public identities")
    return UeRegistration(contact, flow, tuple(entry.public_ids),
                          tuple(entry.service_route), entry.expires_at + offset)


def _format_source(flow: Flow) -> str:
    host = _norm_host(flow.remote[0])
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{flow.remote[1]};transport={flow.transport}"


def ue_source(request: Request) -> tuple[str, int] | None:
    """The UE's (address, port) from ``UE_SOURCE``; None when absent or junk.
    Believe it only in a request from the trust domain."""
    value = request.headers.get(UE_SOURCE)
    if value is None:
        return None
    hostport = value.split(";", 1)[0].strip()
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return _norm_host(host), int(port)


def _top_route(request: Request) -> SipUri | None:
    routes = request.route
    top = routes[0].uri if routes else None
    return top if isinstance(top, SipUri) else None


def _asks_outbound(request: Request) -> bool:
    """RFC 5626 4.2: a UE using outbound puts reg-id (with +sip.instance) on its
    Contact and ``outbound`` in Supported. +sip.instance alone is GRUU's (RFC
    5627; every RCS client sends it) and asks for nothing here."""
    if "outbound" in request.tokens("Supported") or "outbound" in request.tokens("Require"):
        return True
    try:
        return any(not c.is_star and c.params.has("reg-id") for c in request.contact)
    except HeaderError:
        return False


def _node_uri(host: str, port: int | None, transport: str | None) -> str:
    """The URI of a node as config.py writes it (``NodeConfig.instances``)."""
    host = host if host.startswith("[") or ":" not in host else f"[{host}]"
    return f"sip:{host}:{port or 5060}" + (";transport=tcp" if transport == "tcp" else "")


def _replace_orig_route(request: Request, scscf: str) -> None:
    """The top Route (an S-CSCF's ``orig``) becomes ``scscf``'s."""
    request.pop_header("Route")
    request.push_header("Route", f"<{scscf.replace('sip:', f'sip:{ORIG_USER}@', 1)};lr>")


def _strip_charging(message: Request | Response) -> None:
    for name in CHARGING_HEADERS:
        message.remove_header(name)


def _asserted_identity(message: Request | Response,
                       registrations: list[UeRegistration]) -> str:
    """P-Preferred-Identity if it is one of the registered identities, else the default."""
    allowed = {_canonical(v) for r in registrations for v in r.public_ids}
    allowed.discard(None)
    for value in message.headers.values("P-Preferred-Identity"):
        try:
            preferred = NameAddr.parse(value, "P-Preferred-Identity")
        except HeaderError:
            continue
        if _canonical(str(preferred.uri)) in allowed:
            return str(preferred)
    return registrations[0].default_identity


def _assert_in_response(response: Response, registration: UeRegistration) -> None:
    """24.229 5.2.6.4: a UE's response to a terminating request gets its identity asserted."""
    identity = _asserted_identity(response, [registration])
    for name in ("P-Asserted-Identity", "P-Preferred-Identity"):
        response.remove_header(name)
    if response.status > 100:
        response.add_header("P-Asserted-Identity", identity)


def _canonical(value: str) -> str | None:
    try:
        return canonical_public_id(value)
    except ValueError:
        return None
