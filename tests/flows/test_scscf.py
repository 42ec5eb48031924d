"""The S-CSCF over real loopback UDP: plain SipEndpoints play the P-CSCF,
the I-CSCF, an application server and the UEs around it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imsbox.config import Config, NodeConfig, RegistrarConfig
from imsbox.ims.hss import Hss
from imsbox.ifc import (
    ApplicationServer, InitialFilterCriteria, MethodSpt, SessionCase, SessionCaseSpt,
    TriggerPoint,
)
from imsbox.ims.provisioning import add_user, apply_config
from imsbox.ims.regevent import ContactEvent, RegistrationState, parse_reginfo
from imsbox.config import LoginLimits
from imsbox.ims.login_guard import LoginGuard
from imsbox.ims.scscf import Scscf
from imsbox.sip import Request, Response, SubscriptionState, new_tag
from imsbox.sip.auth import Challenge, answer_challenge
from imsbox.sip.endpoint import HandlerModule, ServerContext, SipEndpoint
from imsbox.sip.transaction import TimerValues
from imsbox.sip.transport.base import Destination
from imsbox.store import RegistrationState as HssState, SqliteStore

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"
DOMAIN = "ims.test"
FAST = TimerValues(t1=0.02, t2=0.1, t4=0.1)
SESSION = "urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


# -- the peers ---------------------------------------------------------------------------

Handler = Callable[["Peer", ServerContext], Awaitable[None]]


async def answer_200(peer: Peer, ctx: ServerContext) -> None:
    if ctx.txn is not None:
        ctx.respond(Response.for_request(ctx.request, 200, to_tag=new_tag()))


@dataclass
class Peer:
    """A SipEndpoint standing in for a node: records requests, answers them."""

    handler: Handler = answer_200
    received: asyncio.Queue[Request] = field(default_factory=asyncio.Queue)
    port: int = 0

    def __post_init__(self) -> None:
        self.ep = SipEndpoint(FAST, modules=[HandlerModule(self._on_request)])

    async def start(self) -> Peer:
        """UDP and TCP on one port: large requests (NOTIFY) switch to TCP."""
        for _ in range(20):
            self.port = (await self.ep.listen("udp", HOST, 0))[1]
            try:
                await self.ep.listen("tcp", HOST, self.port)
                return self
            except OSError:
                await self.ep.close()
                self.ep = SipEndpoint(FAST, modules=[HandlerModule(self._on_request)])
        raise RuntimeError("no free UDP+TCP port pair")

    @property
    def uri(self) -> str:
        return f"sip:{HOST}:{self.port}"

    async def _on_request(self, ctx: ServerContext) -> None:
        if ctx.request.method != "ACK":
            self.received.put_nowait(ctx.request)
        await self.handler(self, ctx)

    async def next(self, method: str | None = None) -> Request:
        while True:
            request = await asyncio.wait_for(self.received.get(), 5)
            if method is None or request.method == method:
                return request

    def drain(self, method: str) -> list[Request]:
        out = []
        while not self.received.empty():
            request = self.received.get_nowait()
            if request.method == method:
                out.append(request)
        return out


async def application_server(peer: Peer, ctx: ServerContext) -> None:
    """Accepts third-party REGISTERs; hands every other request back along its Route."""
    request = ctx.request
    if request.method == "REGISTER":
        return await answer_200(peer, ctx)
    if ctx.txn is None:
        return
    onward = request.copy()
    onward.pop_header("Route")  # ours
    final = await peer.ep.request(onward).final()
    upstream = final.copy()
    upstream.pop_header("Via")
    ctx.respond(upstream)


async def busy(peer: Peer, ctx: ServerContext) -> None:
    if ctx.txn is not None:
        ctx.respond(Response.for_request(ctx.request, 486, to_tag=new_tag()))


# -- the network -----------------------------------------------------------------------

@dataclass
class Net:
    tmp: Path
    pcscf: Peer
    icscf: Peer
    app: Peer
    ue1: Peer
    ue2: Peer
    config: Config
    store: SqliteStore
    hss: Hss
    scscf: Scscf

    @property
    def dest(self) -> Destination:
        return Destination("udp", HOST, self.scscf_port)

    @property
    def scscf_port(self) -> int:
        return self.scscf.endpoint.listening["udp"][1]

    @property
    def orig_route(self) -> str:
        return f"<sip:orig@{HOST}:{self.scscf_port};lr>"

    async def restart(self, **kwargs: object) -> None:
        """Close the S-CSCF and the store; open both again on the same file."""
        await self.scscf.close()
        await self.store.close()
        self.store = await SqliteStore(self.tmp / "imsbox.sqlite3").open()
        self.hss = Hss(self.store.subscribers, DOMAIN)
        self.scscf = Scscf(self.config, self.store, self.hss, timers=FAST,
                           **kwargs)  # type: ignore[arg-type]
        await self.scscf.start()


def ifcs_for(as_uri: str) -> tuple[InitialFilterCriteria, ...]:
    server = ApplicationServer(as_uri)
    return (
        InitialFilterCriteria(1, server, TriggerPoint((MethodSpt("REGISTER"),)), name="reg"),
        InitialFilterCriteria(10, server, TriggerPoint((
            MethodSpt("INVITE"), SessionCaseSpt(SessionCase.ORIGINATING, groups=(1,)))),
            name="orig-invite"),
    )


@contextlib.asynccontextmanager
async def network(tmp: Path, **kwargs: object) -> AsyncIterator[Net]:
    pcscf, icscf = await Peer().start(), await Peer().start()
    app = await Peer(application_server).start()
    ue1, ue2 = await Peer().start(), await Peer().start()
    node = lambda port: NodeConfig((HOST,), port)  # noqa: E731
    config = Config(DOMAIN, tmp, nodes={
        "pcscf": node(pcscf.port), "icscf": node(icscf.port), "scscf": node(0),
        "messaging_as": node(app.port), "conference_as": node(app.port)},
        registrar=RegistrarConfig(min_expires=2, default_expires=600, max_expires=3600),
        ifcs=ifcs_for(app.uri))
    store = await SqliteStore(tmp / "imsbox.sqlite3").open()
    await apply_config(store, config)
    await add_user(store, DOMAIN, "alice", "secret", "+15550001")
    await add_user(store, DOMAIN, "bob", "hunter2", "+15550002")
    await add_user(store, DOMAIN, "carol", "pw")
    hss = Hss(store.subscribers, DOMAIN)
    scscf = Scscf(config, store, hss, timers=FAST, **kwargs)  # type: ignore[arg-type]
    net = Net(tmp, pcscf, icscf, app, ue1, ue2, config, store, hss, scscf)
    try:
        await scscf.start()
        yield net
    finally:
        await net.scscf.close()
        for peer in (pcscf, icscf, app, ue1, ue2):
            await peer.ep.close()
        await net.store.close()


# -- REGISTER helpers ------------------------------------------------------------------

@dataclass
class Reg:
    """One UE's registration dialog (Call-ID and CSeq kept across REGISTERs)."""

    user: str
    password: str
    call_id: str = field(default_factory=lambda: f"{new_tag()}@{HOST}")
    cseq: int = 0
    tag: str = field(default_factory=new_tag)

    def request(self, contacts: list[str], expires: int | None = None,
                path: str | None = None, auth: str | None = None) -> Request:
        self.cseq += 1
        aor = f"<sip:{self.user}@{DOMAIN}>"
        headers = [("From", f"{aor};tag={self.tag}"), ("To", aor), ("Call-ID", self.call_id),
                   ("CSeq", f"{self.cseq} REGISTER")]
        headers += [("Contact", c) for c in contacts]
        if expires is not None:
            headers.append(("Expires", str(expires)))
        if path:
            headers.append(("Path", path))
        if auth:
            headers.append(("Authorization", auth))
        return Request("REGISTER", f"sip:{DOMAIN}", headers)


def challenge_of(response: Response, algorithm: str = "SHA-256") -> Challenge:
    for value in response.headers.get_all("WWW-Authenticate"):
        challenge = Challenge.parse(value)
        if challenge.effective_algorithm.value == algorithm:
            return challenge
    raise AssertionError(f"no {algorithm} challenge in {response}")


async def register(net: Net, reg: Reg, contacts: list[str], expires: int | None = 600,
                   path: str | None = None, username: str | None = None,
                   algorithm: str = "SHA-256") -> Response:
    """REGISTER, answer the 401, return the final answer to the credentials."""
    first = await net.pcscf.ep.request(reg.request(contacts, expires, path), net.dest).final()
    assert first.status == 401, first
    credentials = answer_challenge(challenge_of(first, algorithm), "REGISTER", f"sip:{DOMAIN}",
                                   username or f"{reg.user}@{DOMAIN}", reg.password)
    return await net.pcscf.ep.request(
        reg.request(contacts, expires, path, str(credentials)), net.dest).final()


def contacts_of(response: Response) -> dict[str, dict[str, str]]:
    return {str(c.uri): {n.lower(): v or "" for n, v in c.params} for c in response.contact}


def message(target: str, *headers: tuple[str, str], route: str | None = None) -> Request:
    base = [("From", f"<sip:alice@{DOMAIN}>;tag={new_tag()}"), ("To", f"<{target}>"),
            ("Call-ID", new_tag()), ("CSeq", "1 MESSAGE"), ("Content-Type", "text/plain")]
    if route:
        base.insert(0, ("Route", route))
    return Request("MESSAGE", target, base + list(headers), b"hello")


def invite(target: str, route: str) -> Request:
    return Request("INVITE", target, [
        ("Route", route), ("P-Asserted-Identity", f"<sip:alice@{DOMAIN}>"),
        ("From", f"<sip:alice@{DOMAIN}>;tag={new_tag()}"), ("To", f"<{target}>"),
        ("Call-ID", new_tag()), ("CSeq", "1 INVITE"),
        ("Contact", f"<sip:alice@{HOST}:5999>")])


# -- registration ---------------------------------------------------------------------

def test_register_challenge_and_200_contents(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            reg = Reg("alice", "secret")
            first = await net.pcscf.ep.request(reg.request(["<sip:alice@10.0.0.1:5062>"]),
                                               net.dest).final()
            assert first.status == 401
            algorithms = [Challenge.parse(v).effective_algorithm.value
                          for v in first.headers.get_all("WWW-Authenticate")]
            assert algorithms == ["SHA-256", "MD5"]
            assert challenge_of(first).realm == DOMAIN
            path = f"<sip:term@{HOST}:{net.pcscf.port};lr>"
            ok = await register(net, reg, ["<sip:alice@10.0.0.1:5062>"], 600, path)
            assert ok.status == 200 and ok.to.tag
            assert contacts_of(ok) == {"sip:alice@10.0.0.1:5062": {"expires": "600"}}
            assert ok.headers.get_all("Path") == [path]
            assert [str(r) for r in ok.service_route] == [net.orig_route]
            assert ok.headers.values("P-Associated-URI") == [
                f"<sip:alice@{DOMAIN}>", "<tel:+15550001>",
                f"<sip:+15550001@{DOMAIN};user=phone>"]
            assignment = await net.store.subscribers.get_assignment(f"alice@{DOMAIN}")
            assert assignment is not None and assignment.state is HssState.REGISTERED
            assert assignment.server_name == net.scscf.server_name
            # A bare user name and MD5 work too; the refresh keeps one binding.
            again = await register(net, reg, ["<sip:alice@10.0.0.1:5062>"], 300,
                                   username="alice", algorithm="MD5")
            assert again.status == 200
            assert contacts_of(again) == {"sip:alice@10.0.0.1:5062": {"expires": "300"}}

    run(main())


def test_concurrent_registers_of_one_aor_all_land(tmp_path: Path) -> None:
    """Phones of one user registering at once: every binding is kept, every 200
    lists the bindings stored so far, and the HSS ends registered."""
    async def main() -> None:
        async with network(tmp_path) as net:
            regs = [Reg("alice", "secret") for _ in range(4)]
            contacts = [f"<sip:alice@10.0.0.{i + 1}:5062>" for i in range(4)]
            answers = await asyncio.gather(*(register(net, reg, [contact])
                                             for reg, contact in zip(regs, contacts)))
            assert [a.status for a in answers] == [200] * 4
            assert sorted(len(a.contact) for a in answers) == [1, 2, 3, 4]
            bound = await net.store.registrations.bindings(f"sip:alice@{DOMAIN}")
            assert sorted(f"<{b.contact}>" for b in bound) == sorted(contacts)
            assignment = await net.store.subscribers.get_assignment(f"alice@{DOMAIN}")
            assert assignment is not None and assignment.state is HssState.REGISTERED

    run(main())


def test_stale_nonce_gets_a_new_challenge(tmp_path: Path) -> None:
    now = [time.time()]

    async def main() -> None:
        async with network(tmp_path, clock=lambda: now[0]) as net:
            reg = Reg("alice", "secret")
            first = await net.pcscf.ep.request(reg.request(["<sip:a@10.0.0.1>"]), net.dest).final()
            now[0] += 600  # past the 300 s nonce lifetime
            credentials = answer_challenge(challenge_of(first), "REGISTER", f"sip:{DOMAIN}",
                                           f"alice@{DOMAIN}", "secret")
            stale = await net.pcscf.ep.request(
                reg.request(["<sip:a@10.0.0.1>"], auth=str(credentials)), net.dest).final()
            assert stale.status == 401
            assert all(Challenge.parse(v).stale for v in stale.headers.get_all("WWW-Authenticate"))
            credentials = answer_challenge(challenge_of(stale), "REGISTER", f"sip:{DOMAIN}",
                                           f"alice@{DOMAIN}", "secret")
            ok = await net.pcscf.ep.request(
                reg.request(["<sip:a@10.0.0.1>"], auth=str(credentials)), net.dest).final()
            assert ok.status == 200

    run(main())


def _shape(response: Response) -> tuple[int, str, list[str]]:
    names = sorted({n.lower() for n, _ in response.headers} - {"to"})
    return response.status, response.reason, names


def test_wrong_password_and_unknown_user_look_alike_then_rate_limit(tmp_path: Path) -> None:
    async def main() -> None:
        guard = LoginGuard(LoginLimits(source_failures=3, source_window=60))
        async with network(tmp_path, login_guard=guard) as net:
            wrong = await register(net, Reg("alice", "not-the-password"), ["<sip:a@10.0.0.1>"])
            unknown = await register(net, Reg("mallory", "whatever"), ["<sip:m@10.0.0.1>"])
            # Alice's credentials for Bob's identity are no better.
            foreign = await register(net, Reg("bob", "secret"), ["<sip:b@10.0.0.1>"],
                                     username=f"alice@{DOMAIN}")
            assert wrong.status == unknown.status == foreign.status == 403
            assert _shape(wrong) == _shape(unknown) == _shape(foreign)
            assert await net.store.registrations.bindings(f"sip:alice@{DOMAIN}") == []
            # Three failures from this source: even the right password is refused now.
            blocked = await net.pcscf.ep.request(
                Reg("alice", "secret").request(["<sip:a@10.0.0.1>"]), net.dest).final()
            assert blocked.status == 403

    run(main())


def test_expiry_limits(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            reg = Reg("alice", "secret")
            brief = await register(net, reg, ["<sip:a@10.0.0.1>"], expires=1)
            assert brief.status == 423 and brief.headers.get("Min-Expires") == "2"
            long = await register(net, reg, ["<sip:a@10.0.0.1>;expires=99999"], expires=None)
            assert contacts_of(long)["sip:a@10.0.0.1"]["expires"] == "3600"

    run(main())


def test_contacts_instances_q_and_deregistration(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            reg = Reg("alice", "secret")
            instance = '+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>"'
            ok = await register(net, reg, [f"<sip:a@10.0.0.1:5001>;{instance};q=0.5",
                                           "<sip:b@10.0.0.2:5002>;audio;q=0.9"])
            assert set(contacts_of(ok)) == {"sip:a@10.0.0.1:5001", "sip:b@10.0.0.2:5002"}
            assert contacts_of(ok)["sip:a@10.0.0.1:5001"]["q"] == "0.5"
            assert "audio" in contacts_of(ok)["sip:b@10.0.0.2:5002"]
            # The same instance from a new address replaces its binding.
            moved = await register(net, reg, [f"<sip:a@10.0.0.3:6001>;{instance}"])
            assert set(contacts_of(moved)) == {"sip:a@10.0.0.3:6001", "sip:b@10.0.0.2:5002"}
            one_off = await register(net, reg, ["<sip:b@10.0.0.2:5002>"], expires=0)
            assert set(contacts_of(one_off)) == {"sip:a@10.0.0.3:6001"}
            bad_star = await register(net, reg, ["*"], expires=600)
            assert bad_star.status == 400
            gone = await register(net, reg, ["*"], expires=0)
            assert gone.status == 200 and gone.contact == []
            assert await net.store.registrations.bindings(f"sip:alice@{DOMAIN}") == []
            assignment = await net.store.subscribers.get_assignment(f"alice@{DOMAIN}")
            assert assignment is not None and assignment.state is HssState.NOT_REGISTERED

    run(main())


def test_third_party_register_on_registration_and_deregistration(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            reg = Reg("alice", "secret")
            assert (await register(net, reg, ["<sip:a@10.0.0.1>"], 600)).status == 200
            third = await net.app.next("REGISTER")
            assert str(third.uri) == net.app.uri
            assert str(third.from_.uri) == net.scscf.server_name
            assert str(third.to.uri) == f"sip:alice@{DOMAIN}"
            assert str(third.contact[0].uri) == net.scscf.server_name
            assert third.headers.get("Expires") == "600"
            assert (await register(net, reg, ["*"], 0)).status == 200
            last = await net.app.next("REGISTER")
            assert last.headers.get("Expires") == "0"

    run(main())


def test_bindings_survive_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            contact = f"<sip:bob@{HOST}:{net.ue1.port}>"
            assert (await register(net, Reg("bob", "hunter2"), [contact])).status == 200
            await net.restart()
            final = await net.icscf.ep.request(message(f"sip:bob@{DOMAIN}"), net.dest).final()
            assert final.status == 200
            delivered = await net.ue1.next("MESSAGE")
            assert str(delivered.uri) == f"sip:bob@{HOST}:{net.ue1.port}"

    run(main())


# -- routing ----------------------------------------------------------------------------

def test_originating_invite_through_the_as_to_the_icscf(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            net.icscf.handler = busy
            assert (await register(net, Reg("alice", "secret"), ["<sip:a@10.0.0.1>"])).status == 200
            await net.app.next("REGISTER")
            final = await net.pcscf.ep.request(invite(f"sip:bob@{DOMAIN}", net.orig_route)).final()
            assert final.status == 486
            at_as = await net.app.next("INVITE")
            routes = [str(r.uri) for r in at_as.route]
            assert routes[0] == f"{net.app.uri};lr"
            assert routes[1].startswith(f"sip:{HOST}:{net.scscf_port};lr;odi=")
            at_icscf = await net.icscf.next("INVITE")
            assert str(at_icscf.uri) == f"sip:bob@{DOMAIN}"
            assert at_icscf.route == []
            assert f"sip:{HOST}:{net.scscf_port};lr" in [str(r.uri) for r in at_icscf.record_route]
            # A tel URI of a known user is translated to the user's SIP identity.
            tel = await net.pcscf.ep.request(message(
                "tel:+15550002", ("P-Asserted-Identity", f"<sip:alice@{DOMAIN}>"),
                route=net.orig_route)).final()
            assert tel.status == 486
            assert str((await net.icscf.next("MESSAGE")).uri) == f"sip:bob@{DOMAIN}"
            unknown = await net.pcscf.ep.request(message(
                "tel:+19999999", ("P-Asserted-Identity", f"<sip:alice@{DOMAIN}>"),
                route=net.orig_route)).final()
            assert unknown.status == 404
            # Only the P-CSCF (or an AS) may claim an originating identity.
            forged = await net.ue1.ep.request(invite(f"sip:bob@{DOMAIN}", net.orig_route)).final()
            assert forged.status == 403

    run(main())


def test_terminating_fork_with_caller_preferences(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            reg = Reg("bob", "hunter2")
            ue1 = f"<sip:bob@{HOST}:{net.ue1.port}>;+g.3gpp.icsi-ref=\"{SESSION}\""
            ue2 = f"<sip:bob@{HOST}:{net.ue2.port}>"
            for contact, peer in ((ue1, net.ue1), (ue2, net.ue2)):
                path = f"<sip:term@{HOST}:{peer.port};lr>"
                assert (await register(net, reg, [contact], path=path)).status == 200
            final = await net.icscf.ep.request(message(f"sip:bob@{DOMAIN}"), net.dest).final()
            assert final.status == 200
            both = [await net.ue1.next("MESSAGE"), await net.ue2.next("MESSAGE")]
            for request, peer in zip(both, (net.ue1, net.ue2)):
                assert str(request.uri) == f"sip:bob@{HOST}:{peer.port}"
                assert [str(r) for r in request.route] == [f"<sip:term@{HOST}:{peer.port};lr>"]
                assert request.headers.get("P-Called-Party-ID") == f"<sip:bob@{DOMAIN}>"
            chat = message(f"sip:bob@{DOMAIN}", ("Accept-Contact",
                           f'*;+g.3gpp.icsi-ref="{SESSION}";require;explicit'))
            assert (await net.icscf.ep.request(chat, net.dest).final()).status == 200
            assert str((await net.ue1.next("MESSAGE")).uri).endswith(f":{net.ue1.port}")
            await asyncio.sleep(0.1)
            assert net.ue2.drain("MESSAGE") == []
            rejected = message(f"sip:bob@{DOMAIN}", ("Reject-Contact",
                               f'*;+g.3gpp.icsi-ref="{SESSION}"'))
            assert (await net.icscf.ep.request(rejected, net.dest).final()).status == 200
            assert str((await net.ue2.next("MESSAGE")).uri).endswith(f":{net.ue2.port}")
            nobody = message(f"sip:bob@{DOMAIN}", ("Accept-Contact", "*;video;require;explicit"))
            assert (await net.icscf.ep.request(nobody, net.dest).final()).status == 480

    run(main())


def test_unregistered_and_unknown_targets(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            offline = await net.icscf.ep.request(message(f"sip:carol@{DOMAIN}"), net.dest).final()
            assert offline.status == 480
            assignment = await net.store.subscribers.get_assignment(f"carol@{DOMAIN}")
            assert assignment is not None and assignment.state is HssState.UNREGISTERED
            unknown = await net.icscf.ep.request(message(f"sip:nobody@{DOMAIN}"), net.dest).final()
            assert unknown.status == 404

    run(main())


# -- reg event --------------------------------------------------------------------------

def subscribe(net: Net, identity: str) -> Request:
    return Request("SUBSCRIBE", f"sip:alice@{DOMAIN}", [
        ("P-Asserted-Identity", f"<{identity}>"),
        ("From", f"<{identity}>;tag={new_tag()}"), ("To", f"<sip:alice@{DOMAIN}>"),
        ("Call-ID", new_tag()), ("CSeq", "1 SUBSCRIBE"), ("Event", "reg"),
        ("Expires", "600"), ("Contact", f"<sip:alice@{HOST}:{net.pcscf.port}>")])


def test_reg_event_subscribe_and_notify_on_every_change(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            reg = Reg("alice", "secret")
            assert (await register(net, reg, ["<sip:a@10.0.0.1>"])).status == 200
            ok = await net.pcscf.ep.request(subscribe(net, f"sip:alice@{DOMAIN}"), net.dest).final()
            assert ok.status == 200 and ok.headers.get("Expires") == "600"
            notify = await net.pcscf.next("NOTIFY")
            state = SubscriptionState.parse(notify.headers.get("Subscription-State") or "")
            assert state.state == "active"
            info = parse_reginfo(notify.body)
            assert info.version == 0
            assert [r.aor for r in info.registrations] == [
                f"sip:alice@{DOMAIN}", "tel:+15550001", f"sip:+15550001@{DOMAIN};user=phone"]
            [contact] = info.registrations[0].contacts
            assert (contact.uri, contact.event) == ("sip:a@10.0.0.1", ContactEvent.REGISTERED)

            assert (await register(net, reg, ["<sip:b@10.0.0.2>"], expires=2)).status == 200
            info = parse_reginfo((await net.pcscf.next("NOTIFY")).body)
            assert info.version == 1
            events = {c.uri: c.event for c in info.registrations[0].contacts}
            assert events == {"sip:a@10.0.0.1": ContactEvent.REGISTERED,
                              "sip:b@10.0.0.2": ContactEvent.REGISTERED}

            info = parse_reginfo((await net.pcscf.next("NOTIFY")).body)  # ~2 s later
            assert info.version == 2
            gone = {c.uri: (c.state.value, c.event) for c in info.registrations[0].contacts}
            assert gone["sip:b@10.0.0.2"] == ("terminated", ContactEvent.EXPIRED)

            assert (await register(net, reg, ["*"], expires=0)).status == 200
            last = await net.pcscf.next("NOTIFY")
            state = SubscriptionState.parse(last.headers.get("Subscription-State") or "")
            assert state.state == "terminated"
            info = parse_reginfo(last.body)
            assert info.registrations[0].state is RegistrationState.TERMINATED
            assert info.registrations[0].contacts[0].event is ContactEvent.UNREGISTERED

    run(main())


def test_reg_event_subscriptions_survive_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            reg = Reg("alice", "secret")
            assert (await register(net, reg, ["<sip:a@10.0.0.1>"])).status == 200
            request = subscribe(net, f"sip:alice@{DOMAIN}")
            ok = await net.pcscf.ep.request(request, net.dest).final()
            assert ok.status == 200
            first = await net.pcscf.next("NOTIFY")
            await net.restart()   # the same SQLite file, nothing in memory
            assert (await register(net, reg, ["<sip:b@10.0.0.2>"])).status == 200
            notify = await net.pcscf.next("NOTIFY")
            assert (notify.call_id, notify.from_.tag, notify.to.tag) == (
                first.call_id, first.from_.tag, first.to.tag)
            assert notify.cseq.seq == first.cseq.seq + 1
            info = parse_reginfo(notify.body)
            assert info.version == 1
            assert {c.uri for c in info.registrations[0].contacts} == {
                "sip:a@10.0.0.1", "sip:b@10.0.0.2"}
            # the refresh, in the dialog, to the Contact the last NOTIFY gave (the
            # restarted S-CSCF listens on another port here)
            refresh = request.copy()
            refresh.uri = notify.contact[0].uri
            refresh.set_header("To", f"<sip:alice@{DOMAIN}>;tag={ok.to.tag}")
            refresh.set_header("CSeq", "2 SUBSCRIBE")
            refresh.set_header("Expires", "0")
            refresh.remove_header("Via")
            assert (await net.pcscf.ep.request(refresh, net.dest).final()).status == 200
            last = await net.pcscf.next("NOTIFY")
            state = SubscriptionState.parse(last.headers.get("Subscription-State") or "")
            assert (state.state, parse_reginfo(last.body).version) == ("terminated", 2)
            assert await net.store.reg_subscriptions.take_watching(f"sip:alice@{DOMAIN}") == []

    run(main())


def test_reg_event_refuses_strangers(tmp_path: Path) -> None:
    async def main() -> None:
        async with network(tmp_path) as net:
            assert (await register(net, Reg("alice", "secret"), ["<sip:a@10.0.0.1>"])).status == 200
            # Bob, asserted by the P-CSCF, may not watch Alice; nor may a UE directly.
            other = await net.pcscf.ep.request(subscribe(net, f"sip:bob@{DOMAIN}"),
                                               net.dest).final()
            assert other.status == 403
            direct = await net.ue1.ep.request(subscribe(net, f"sip:alice@{DOMAIN}"),
                                              net.dest).final()
            assert direct.status == 403

    run(main())
