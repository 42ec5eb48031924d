"""Two S-CSCFs of one pool (``[scscf] pool``) on one PostgreSQL store, as two
processes would run them (each its own store connection and HSS): a reg event
subscription accepted by one is refreshed through the other, whichever changes
the registration notifies the watcher with the next version, a restarted
instance still knows the subscription; failed logins counted by one hold back
the next attempt on the other. Plain SipEndpoints play the P-CSCF (and watcher),
the I-CSCF and the AS (test_scscf's peers)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_scscf import DOMAIN, FAST, HOST, Peer, Reg, application_server, challenge_of, ifcs_for, run

from imsbox.config import Config, LoginLimits, NodeConfig, RegistrarConfig
from imsbox.ims.hss import Hss
from imsbox.ims.provisioning import add_user, apply_config
from imsbox.ims.regevent import ContactEvent, RegInfo, parse_reginfo
from imsbox.ims.scscf import Scscf
from imsbox.sip import Request, Response, SubscriptionState, new_tag
from imsbox.sip.auth import answer_challenge
from imsbox.sip.transport.base import Destination
from imsbox.store import Store, open_store
from imsbox.testing import LoopbackPorts

pytestmark = pytest.mark.timeout(40)
ALICE = f"sip:alice@{DOMAIN}"


@dataclass
class Pool:
    pcscf: Peer
    configs: tuple[Config, Config]
    url: str
    stores: list[Store]
    scscfs: list[Scscf]
    clock: Callable[[], float] = time.time

    def dest(self, n: int) -> Destination:
        return Destination("udp", HOST, self.configs[n].scscf.port)

    async def restart(self, n: int) -> None:
        """Instance ``n`` stops and comes back on a fresh connection: it starts
        with nothing in memory, as a restarted process."""
        await self.scscfs[n].close()
        await self.stores[n].close()
        self.stores[n] = await open_store(self.url).open()
        self.scscfs[n] = Scscf(self.configs[n], self.stores[n],
                               Hss(self.stores[n].subscribers, DOMAIN), timers=FAST,
                               clock=self.clock)
        await self.scscfs[n].start()


@contextlib.asynccontextmanager
async def pool(tmp: Path, url: str, login: LoginLimits | None = None,
               clock: Callable[[], float] = time.time) -> AsyncIterator[Pool]:
    pcscf, icscf = await Peer().start(), await Peer().start()
    app = await Peer(application_server).start()
    take = LoopbackPorts()
    ports = (take(), take())
    node = lambda port: NodeConfig((HOST,), port)  # noqa: E731
    first = Config(DOMAIN, tmp, nodes={
        "pcscf": node(pcscf.port), "icscf": node(icscf.port),
        "scscf": NodeConfig((HOST,), ports[0], pool=tuple((HOST, p) for p in ports)),
        "messaging_as": node(app.port), "conference_as": node(app.port)},
        registrar=RegistrarConfig(min_expires=2, default_expires=600, max_expires=3600,
                                  login=login or LoginLimits()),
        ifcs=ifcs_for(app.uri))
    configs = (first, first.with_node("scscf", port=ports[1]))
    stores: list[Store] = [await open_store(url).open() for _ in configs]
    await apply_config(stores[0], first)
    await add_user(stores[0], DOMAIN, "alice", "secret", "+15550001")
    await add_user(stores[0], DOMAIN, "bob", "hunter2")
    scscfs = [Scscf(c, s, Hss(s.subscribers, DOMAIN), timers=FAST, clock=clock)
              for c, s in zip(configs, stores)]
    net = Pool(pcscf, configs, url, stores, scscfs, clock)
    try:
        for scscf in scscfs:
            await scscf.start()
        yield net
    finally:
        for scscf in net.scscfs:
            await scscf.close()
        for peer in (pcscf, icscf, app):
            await peer.ep.close()
        for store in net.stores:
            await store.close()


async def register(net: Pool, n: int, reg: Reg, contacts: list[str]) -> Response:
    """REGISTER through S-CSCF ``n``: the 401, then the credentials."""
    first = await net.pcscf.ep.request(reg.request(contacts, 600), net.dest(n)).final()
    if first.status != 401:
        return first
    credentials = answer_challenge(challenge_of(first), "REGISTER", f"sip:{DOMAIN}",
                                   f"{reg.user}@{DOMAIN}", reg.password)
    return await net.pcscf.ep.request(reg.request(contacts, 600, auth=str(credentials)),
                                      net.dest(n)).final()


@dataclass
class Watcher:
    """The subscriber's side of one reg event dialog (the P-CSCF watching alice)."""

    net: Pool
    call_id: str = ""
    tag: str = ""
    remote_tag: str = ""
    cseq: int = 0
    target: str = ALICE   # the notifier's Contact once known (RFC 6665 target refresh)

    def subscribe(self, expires: int = 600) -> Request:
        self.cseq += 1
        to = f"<{ALICE}>" + (f";tag={self.remote_tag}" if self.remote_tag else "")
        return Request("SUBSCRIBE", self.target, [
            ("P-Asserted-Identity", f"<{ALICE}>"),
            ("From", f"<sip:pcscf@{DOMAIN}>;tag={self.tag}"), ("To", to),
            ("Call-ID", self.call_id), ("CSeq", f"{self.cseq} SUBSCRIBE"), ("Event", "reg"),
            ("Expires", str(expires)), ("Contact", f"<sip:pcscf@{HOST}:{self.net.pcscf.port}>")])

    async def send(self, n: int, expires: int = 600) -> Response:
        """The SUBSCRIBE to S-CSCF ``n``'s socket, whichever S-CSCF its Request-URI
        names (a refresh that failed over there)."""
        if not self.call_id:
            self.call_id, self.tag = new_tag(), new_tag()
        response = await self.net.pcscf.ep.request(self.subscribe(expires),
                                                   self.net.dest(n)).final()
        if response.status == 200:
            self.remote_tag = self.remote_tag or response.to.tag or ""
            self.target = str(response.contact[0].uri)
        return response

    async def notify(self) -> tuple[Request, RegInfo, SubscriptionState]:
        notify = await self.net.pcscf.next("NOTIFY")
        assert (notify.call_id, notify.from_.tag, notify.to.tag) == (
            self.call_id, self.remote_tag, self.tag)
        state = SubscriptionState.parse(notify.headers.get("Subscription-State") or "")
        if notify.contact:
            self.target = str(notify.contact[0].uri)
        return notify, parse_reginfo(notify.body) if notify.body else RegInfo(), state


def sent_by(net: Pool, notify: Request) -> int:
    """Which S-CSCF sent a NOTIFY: the port in its Via."""
    port = notify.via[0].port
    return [c.scscf.port for c in net.configs].index(port)


def contacts(info: RegInfo) -> dict[str, tuple[str, ContactEvent]]:
    return {c.uri: (c.state.value, c.event) for c in info.registrations[0].contacts}


def test_a_reg_subscription_is_served_by_every_s_cscf_of_the_pool(tmp_path: Path,
                                                                   pg_url: str) -> None:
    async def main() -> None:
        async with pool(tmp_path, pg_url) as net:
            alice = Reg("alice", "secret")
            assert (await register(net, 0, alice, ["<sip:a@10.0.0.1>"])).status == 200
            watcher = Watcher(net)
            assert (await watcher.send(0)).status == 200
            first, info, state = await watcher.notify()
            assert (sent_by(net, first), info.version, state.state) == (0, 0, "active")
            assert contacts(info) == {"sip:a@10.0.0.1": ("active", ContactEvent.REGISTERED)}

            # (a) the refresh, addressed to S-CSCF 1, reaches S-CSCF 2, which never
            # saw the subscription
            assert watcher.target == net.configs[0].scscf.uri
            refreshed = await watcher.send(1)
            assert refreshed.status == 200 and refreshed.headers.get("Expires") == "600"
            notify, info, state = await watcher.notify()
            assert (sent_by(net, notify), info.version, state.state) == (1, 1, "active")
            assert notify.cseq.seq == first.cseq.seq + 1  # one dialog, CSeq in order
            assert watcher.target == net.configs[1].scscf.uri   # refreshes come here now

            # (b) a re-REGISTER handled by S-CSCF 2 notifies the watcher
            assert (await register(net, 1, alice, ["<sip:b@10.0.0.2>"])).status == 200
            notify, info, _ = await watcher.notify()
            assert (sent_by(net, notify), info.version) == (1, 2)
            assert notify.cseq.seq == first.cseq.seq + 2
            assert contacts(info) == {"sip:a@10.0.0.1": ("active", ContactEvent.REGISTERED),
                                      "sip:b@10.0.0.2": ("active", ContactEvent.REGISTERED)}
            # ... and one by S-CSCF 1 carries on from S-CSCF 2's version
            assert (await register(net, 0, alice, ["<sip:b@10.0.0.2>"])).status == 200
            notify, info, _ = await watcher.notify()
            assert (sent_by(net, notify), info.version) == (0, 3)
            assert contacts(info)["sip:b@10.0.0.2"] == ("active", ContactEvent.REFRESHED)

            # (c) a restarted S-CSCF 1 still knows it: the unsubscribe is served there
            await net.restart(0)
            assert (await watcher.send(0, expires=0)).status == 200
            notify, info, state = await watcher.notify()
            assert (sent_by(net, notify), info.version) == (0, 4)
            assert (state.state, state.reason) == ("terminated", "timeout")
            assert notify.cseq.seq == first.cseq.seq + 4
            # ended everywhere: a refresh at S-CSCF 2 now gets 481, no NOTIFY
            gone = await watcher.send(1)
            assert gone.status == 481
            assert (await register(net, 1, alice, ["<sip:c@10.0.0.3>"])).status == 200
            assert net.pcscf.drain("NOTIFY") == []
            assert await net.stores[0].reg_subscriptions.take_watching(ALICE) == []

    run(main())


def test_a_deregistration_on_the_other_s_cscf_ends_the_subscription(tmp_path: Path,
                                                                     pg_url: str) -> None:
    async def main() -> None:
        async with pool(tmp_path, pg_url) as net:
            alice = Reg("alice", "secret")
            assert (await register(net, 0, alice, ["<sip:a@10.0.0.1>"])).status == 200
            watcher = Watcher(net)
            assert (await watcher.send(0)).status == 200
            await watcher.notify()
            first = await net.pcscf.ep.request(alice.request(["*"], 0), net.dest(1)).final()
            credentials = answer_challenge(challenge_of(first), "REGISTER", f"sip:{DOMAIN}",
                                           f"alice@{DOMAIN}", "secret")
            gone = await net.pcscf.ep.request(alice.request(["*"], 0, auth=str(credentials)),
                                              net.dest(1)).final()
            assert gone.status == 200
            notify, info, state = await watcher.notify()
            assert (sent_by(net, notify), info.version) == (1, 1)
            assert (state.state, state.reason) == ("terminated", "noresource")
            assert contacts(info)["sip:a@10.0.0.1"] == ("terminated", ContactEvent.UNREGISTERED)
            assert (await watcher.send(0)).status == 481

    run(main())


def test_an_expired_subscription_gets_one_final_notify(tmp_path: Path, pg_url: str) -> None:
    async def main() -> None:
        ahead = [0.0]
        async with pool(tmp_path, pg_url, clock=lambda: time.time() + ahead[0]) as net:
            assert (await register(net, 0, Reg("alice", "secret"),
                                   ["<sip:a@10.0.0.1>"])).status == 200
            watcher = Watcher(net)
            assert (await watcher.send(1, expires=100)).status == 200
            await watcher.notify()
            ahead[0] = 101.0   # not refreshed in time; both instances look
            for scscf in net.scscfs:
                scscf._wakeup.set()
            _, _, state = await watcher.notify()
            assert (state.state, state.reason) == ("terminated", "timeout")
            await asyncio.sleep(1.5)   # past the next sweep of both
            assert net.pcscf.drain("NOTIFY") == []
            assert (await watcher.send(0)).status == 481

    run(main())


def test_failed_logins_on_one_s_cscf_count_on_the_other(tmp_path: Path, pg_url: str) -> None:
    async def main() -> None:
        limits = LoginLimits(source_failures=3, source_window=60)
        async with pool(tmp_path, pg_url, login=limits) as net:
            for n in range(3):  # three wrong passwords at S-CSCF 1, from one source
                wrong = await register(net, 0, Reg("bob", f"guess-{n}"), ["<sip:b@10.0.0.1>"])
                assert wrong.status == 403 and wrong.headers.get("Retry-After") is None
            # S-CSCF 2 refuses the source at once, before any challenge
            held = await net.pcscf.ep.request(Reg("alice", "secret").request(
                ["<sip:a@10.0.0.1>"], 600), net.dest(1)).final()
            assert held.status == 403
            assert 50 <= int(held.headers.get("Retry-After") or 0) <= 60

    run(main())
