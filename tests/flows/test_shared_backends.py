"""The network on the shared back ends: PostgreSQL for what must last, Redis for
what is hot, over real sockets on loopback (throw-away servers, tests/conftest.py).

``imsbox user``/``service`` and ``imsbox serve`` against ``--store postgresql://``
and ``--cache redis://``; REGISTER (its Path and Service-Route in the shared
store), pager MESSAGE and chat through the core and the messaging AS; and the
back ends going away mid-traffic: 503 with Retry-After while they are away,
service again without a restart once they are back.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imsbox.config import Config, load_config
from imsbox.ifc import SessionCase
from imsbox.ims.hss import Hss
from imsbox.ims.odi import OdiChain
from imsbox.ims.scscf import Scscf
from imsbox.serve import Network
from imsbox.sip.auth import Algorithm, VerifyOutcome, answer_challenge, compute_ha1
from imsbox.sip.message import Response
from imsbox.store import open_store
from imsbox.testing import FAST_TIMERS, LoopbackPorts, TestUe, write_loopback_config
from imsbox.testing_backends import ThrowawayPostgres, ThrowawayRedis
from imsbox.ue.client import ChatEnded, ChatMessage, ChatStarted, MessageReceived, MessageStatus

from helpers import alice_and_bob, client, network_with, run_within
from test_deploy_files import unit_exec_start
from test_serve_cli import Serve, imsbox, startup_lines

pytestmark = pytest.mark.timeout(90)
WAIT = 5.0


# -- the command line -------------------------------------------------------------------

def test_user_and_service_commands_work_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    for name in ("alice", "bob"):
        done = imsbox("user", "add", name, "--password", f"{name}-secret", "--store", pg_url,
                      "--data", str(tmp_path))
        assert done.returncode == 0, done.stderr
    listed = imsbox("user", "list", "--store", pg_url, "--data", str(tmp_path))
    assert listed.returncode == 0 and "alice@ims.test" in listed.stdout, listed.stderr
    assert "bob@ims.test" in listed.stdout
    set_ = imsbox("service", "set", "alice", "forward-unconditional", "bob", "--store", pg_url,
                  "--data", str(tmp_path))
    assert set_.returncode == 0, set_.stderr
    shown = imsbox("service", "show", "alice", "--store", pg_url, "--data", str(tmp_path))
    assert shown.returncode == 0 and "sip:bob@ims.test" in shown.stdout, shown.stderr
    # nothing went into the data dir's SQLite file: the state is PostgreSQL's
    assert not (tmp_path / "imsbox.sqlite3").exists()
    again = imsbox("user", "add", "alice", "--store", pg_url, "--data", str(tmp_path))
    assert again.returncode == 1 and "alice" in again.stderr


def test_unreachable_back_ends_say_what_to_fix(tmp_path: Path, pg_url: str) -> None:
    dead = imsbox("user", "list", "--store", "postgresql://imsbox@127.0.0.1:1/imsbox",
                  "--data", str(tmp_path))
    assert dead.returncode == 1 and "cannot reach PostgreSQL store" in dead.stderr
    assert "--store" in dead.stderr and "Traceback" not in dead.stderr
    missing = pg_url.rpartition("/")[0] + "/nosuchdb"
    wrong = imsbox("serve", "--data", str(tmp_path), "--store", missing)
    assert wrong.returncode == 2 and 'database "nosuchdb" does not exist' in wrong.stderr
    assert "check the user, password and database in the URL" in wrong.stderr
    result = imsbox("serve", "--data", str(tmp_path), "--store", pg_url,
                    "--cache", "redis://127.0.0.1:1/0")
    assert result.returncode == 2, result.stderr
    assert "Redis cache redis://127.0.0.1:1/0 unavailable" in result.stderr
    assert "--cache" in result.stderr and "Traceback" not in result.stderr
    assert "listening" not in result.stdout


def test_serve_runs_every_node_on_postgresql_and_redis(tmp_path: Path, pg_url: str,
                                                       redis_url: str) -> None:
    config_path, config = write_loopback_config(tmp_path)
    assert imsbox("user", "add", "alice", "--password", "alice-secret", "--config",
                  str(config_path), "--store", pg_url).returncode == 0
    server = Serve("--config", str(config_path), "--store", pg_url, "--cache", redis_url)
    try:
        expected = startup_lines(config, tuple(config.nodes))
        assert set(server.lines(len(expected))) == expected

        async def scenario() -> None:
            ue = await TestUe("alice", "alice-secret", config).start()
            try:
                reg = await ue.register()
                assert reg.ok, reg.statuses
            finally:
                await ue.close()
            async with open_store(pg_url) as store:  # the binding is PostgreSQL's
                bindings = await store.registrations.bindings("sip:alice@ims.test")
            assert [b.contact for b in bindings] == [ue.contact]
        asyncio.run(asyncio.wait_for(scenario(), 20))
    finally:
        status, _, stderr = server.stop(signal.SIGTERM)
    assert status == 0, stderr


def split_config(directory: Path, pg_url: str, redis_url: str) -> tuple[Path, Config]:
    """deploy/imsbox.toml on loopback: its ports made free ones, the throw-away
    store and cache in [store]."""
    template = (Path(__file__).resolve().parents[2] / "deploy" / "imsbox.toml").read_text()
    ports = LoopbackPorts()
    text = template.replace("10.0.0.1", "127.0.0.1").replace("10.0.0.2", "127.0.0.1")
    text = text.replace("/var/lib/imsbox", str(directory / "data"))
    for default in ("5060", "5061", "5070", "5080", "5090", "5100", "5110", "5120"):
        text = text.replace(f"port = {default}\n", f"port = {ports()}\n")
    text = text.replace('url = "postgresql://imsbox:CHANGE-ME@127.0.0.1:5432/imsbox"',
                        f'url = "{pg_url}"')
    text = text.replace('cache = "redis://:CHANGE-ME@127.0.0.1:6379/0"',
                        f'cache = "{redis_url}"')
    path = directory / "imsbox.toml"
    path.write_text(text)
    return path, load_config(path)


def test_the_deploy_layout_one_process_per_role_on_the_shared_store(
        tmp_path: Path, pg_url: str, redis_url: str) -> None:
    """Every role of deploy/imsbox.toml in its own process, started with the
    systemd unit's ExecStart: register, a pager MESSAGE through the AS."""
    path, config = split_config(tmp_path, pg_url, redis_url)
    assert config.security.udp_trust == "any" and config.store_url == pg_url
    for name in ("alice", "bob"):
        assert imsbox("user", "add", name, "--password", f"{name}-secret", "--config",
                      str(path)).returncode == 0
    roles = {"pcscf": "pcscf", "icscf": "icscf", "scscf": "scscf", "as": "messaging_as"}
    servers = [Serve(*unit_exec_start(role, str(path))[2:]) for role in roles]
    try:
        for server, section in zip(servers, roles.values()):
            expected = startup_lines(config, (section,))
            assert set(server.lines(len(expected), timeout=20)) == expected

        async def scenario() -> None:
            alice = await TestUe("alice", "alice-secret", config).start()
            bob = await TestUe("bob", "bob-secret", config).start()
            try:
                reg = await alice.register()
                assert reg.ok, [s.stderr for s in servers]
                assert (await bob.register()).ok
                response = await alice.message(bob.aor, "one process per role").final()
                assert response.status == 200, response
                got = await asyncio.wait_for(bob.requests.get(), WAIT)
                assert got.method == "MESSAGE" and got.body == b"one process per role"
            finally:
                await alice.close()
                await bob.close()
        asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        for server in servers:
            status, _, stderr = server.stop(signal.SIGTERM)
            assert status == 0, stderr


# -- the core and the messaging AS on the shared back ends --------------------------------

@pytest.fixture
def shared(tmp_path: Path, pg_url: str, redis_url: str) -> Config:
    return alice_and_bob(tmp_path, store_url=pg_url, cache_url=redis_url)


def test_register_keeps_path_and_service_route_in_the_shared_store(shared: Config,
                                                                   pg_url: str) -> None:
    async def scenario() -> None:
        async with Network(shared, timers=FAST_TIMERS) as net:
            ue = await TestUe("alice", "alice-secret", shared).start()
            try:
                reg = await ue.register()
                assert reg.ok, reg.statuses
                ok = reg.responses[-1]
                service_route = ok.headers.get("Service-Route")
                assert service_route is not None and "orig@" in service_route
                assert net.store is not None
                flows = await net.store.flows.registrations(shared.pcscf.uri)
                assert [f.contact for f in flows] == [ue.contact]
                assert flows[0].service_route == (service_route,)
            finally:
                await ue.close()
        # another process (another S-CSCF) sees the binding with its Path
        async with open_store(pg_url) as store:
            binding, = await store.registrations.bindings("sip:alice@ims.test")
        assert binding.contact == ue.contact
        assert len(binding.path) == 1 and f":{shared.pcscf.port};lr" in binding.path[0]
    run_within(scenario, 30)


def test_pager_message_and_chat_through_the_as_on_postgresql_and_redis(
        shared: Config) -> None:
    alice, bob = client(shared, "alice"), client(shared, "bob")

    async def scenario() -> None:
        async with network_with(shared, alice, bob):
            mid = await alice.send_message("bob", "hello over postgres")
            got = await bob.wait_event(MessageReceived, WAIT)
            assert isinstance(got, MessageReceived) and got.text == "hello over postgres"
            assert got.sender == alice.aor and got.message_id == mid
            assert await alice.wait_status(mid, timeout=WAIT) is MessageStatus.DELIVERED

            chat = await alice.open_chat("bob")
            started = await bob.wait_event(ChatStarted, WAIT)
            assert isinstance(started, ChatStarted) and started.sender == alice.aor
            said = await chat.send("chat over redis")
            line = await bob.wait_event(ChatMessage, WAIT)
            assert isinstance(line, ChatMessage) and line.text == "chat over redis"
            assert await alice.wait_status(said, timeout=WAIT) is MessageStatus.DELIVERED
            await chat.close()
            assert isinstance(await bob.wait_event(ChatEnded, WAIT), ChatEnded)
    run_within(scenario, 40)


def test_a_message_for_an_offline_user_waits_in_postgresql(shared: Config) -> None:
    alice, bob = client(shared, "alice"), client(shared, "bob")

    async def scenario() -> None:
        async with network_with(shared, alice) as net:
            mid = await alice.send_message("bob", "stored in postgres")
            assert alice.status(mid) is MessageStatus.SENT  # 202: stored for later
            assert net.store is not None
            assert [m.recipient for m in await net.store.messages.deferred(
                "sip:bob@ims.test")] == ["sip:bob@ims.test"]
            await bob.start()
            try:
                got = await bob.wait_event(MessageReceived, WAIT)
                assert isinstance(got, MessageReceived) and got.text == "stored in postgres"
                assert await alice.wait_status(mid, timeout=WAIT) is MessageStatus.DELIVERED
            finally:
                await bob.close()
    run_within(scenario, 40)


# -- the back ends going away mid-traffic ----------------------------------------------------

@pytest.fixture
def own_backends() -> Iterator[tuple[ThrowawayPostgres, ThrowawayRedis]]:
    """A PostgreSQL and a Redis of this test's own, to stop and start."""
    pg, cache = ThrowawayPostgres().start(), ThrowawayRedis().start()
    try:
        yield pg, cache
    finally:
        pg.destroy()
        cache.destroy()


def away(response: Response) -> bool:
    """The answer of a core whose store is away, as the UE gets it."""
    return response.status == 500 and response.headers.get("Retry-After") == "5"


async def until_status(ue: TestUe, target: str, status: int, limit: float) -> float:
    """Send MESSAGEs until one gets ``status``; the seconds it took."""
    start = time.monotonic()
    while True:
        response = await ue.message(target, "are you back?").final()
        if response.status == status:
            return time.monotonic() - start
        assert time.monotonic() - start < limit, f"still {response.status} after {limit} s"
        await asyncio.sleep(0.2)


def test_a_postgresql_and_a_redis_restart_give_503_then_service_again(
        tmp_path: Path, own_backends: tuple[ThrowawayPostgres, ThrowawayRedis],
        caplog: pytest.LogCaptureFixture) -> None:
    pg, cache = own_backends
    config = alice_and_bob(tmp_path, via_as=False, min_expires=1, carol=True,
                           store_url=pg.url, cache_url=cache.url)

    async def scenario() -> None:
        async with Network(config, timers=FAST_TIMERS) as net:
            alice = await TestUe("alice", "alice-secret", config).start()
            bob = await TestUe("bob", "bob-secret", config).start()
            try:
                assert (await alice.register()).ok and (await bob.register()).ok
                assert (await alice.message(bob.aor, "before").final()).status == 200
                # carol's binding runs out while PostgreSQL is away: the S-CSCF's
                # expiry meets the store away, and must do it once it is back
                carol = await TestUe("carol", "carol-secret", config).start()
                assert (await carol.register(expires=2)).ok
                await carol.close()

                await asyncio.to_thread(pg.stop, True)  # as a crash would
                # The S-CSCF answers 503 + Retry-After; the P-CSCF passes it on as
                # 500 with the Retry-After (RFC 3261 16.7 step 6: a proxy never
                # forwards a 503, which would say the P-CSCF itself is down).
                response = await alice.message(bob.aor, "while away").final()
                assert away(response), response
                reg = await alice.register()
                assert away(reg.responses[-1]) and not reg.ok
                await asyncio.sleep(2.5)  # carol expires now
                await asyncio.to_thread(pg.start)
                took = await until_status(alice, bob.aor, 200, 15)
                assert took < 10
                assert (await alice.register()).ok  # registrations work again too
                assert net.store is not None
                async with asyncio.timeout(5):
                    while await net.store.registrations.bindings(carol.aor, now=0.0):
                        await asyncio.sleep(0.1)  # the expiry caught up

                await asyncio.to_thread(cache.stop)
                response = await alice.message(bob.aor, "while redis is away").final()
                assert away(response), response
                await asyncio.to_thread(cache.start)  # empty: refilled from PostgreSQL
                await until_status(alice, bob.aor, 200, 15)
                assert (await bob.message(alice.aor, "after").final()).status == 200
                assert all(node is not None for node in net.nodes.values())
            finally:
                await alice.close()
                await bob.close()
    run_within(scenario, 80)
    # every node's background work (expiry, deliveries) lived through it: warnings
    # that the store is away, no failure with a traceback
    crashed = [r for r in caplog.records if r.levelno >= logging.ERROR and
               (r.name.startswith("imsbox") or r.name == "asyncio")]
    assert not crashed, [r.getMessage() for r in crashed]
    assert any("store" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)



# -- two S-CSCFs on one store share their keys ----------------------------------------------

def test_two_scscfs_on_one_store_verify_each_others_nonces_and_odi_tokens(
        tmp_path: Path, pg_url: str, redis_url: str) -> None:
    """What a second S-CSCF instance needs of the first: a REGISTER answering
    one's challenge is accepted by the other, once; an odi token one put in a
    Route continues on the other; the other's fresh key would refuse both."""
    config = alice_and_bob(tmp_path, store_url=pg_url, cache_url=redis_url)
    ha1 = compute_ha1("alice@ims.test", "ims.test", "alice-secret", Algorithm.SHA_256)

    async def scenario() -> None:
        async with open_store(pg_url, redis_url) as store:
            hss = Hss(store.subscribers, config.domain, (config.scscf.uri,))
            one = Scscf(config, store, hss, timers=FAST_TIMERS)
            two = Scscf(config.with_node("scscf", port=LoopbackPorts()()), store, hss,
                        timers=FAST_TIMERS)
            fresh = two.odi  # before start(): a key of its own
            await one.start()
            await two.start()
            try:
                challenge = one.registrar.auth.challenges()[0]
                answer = answer_challenge(challenge, "REGISTER", "sip:ims.test",
                                          "alice@ims.test", ha1=ha1)
                first = await two.registrar.auth.verify_shared(answer, "REGISTER",
                                                               lambda *_: ha1)
                assert first.ok, first
                again = await one.registrar.auth.verify_shared(answer, "REGISTER",
                                                               lambda *_: ha1)
                assert again.outcome is VerifyOutcome.REPLAY

                chain = OdiChain(SessionCase.ORIGINATING, "sip:alice@ims.test", 0,
                                 float(int(time.time()) + 60))  # whole seconds in a token
                token = one.odi.issue(chain)
                assert two.odi.open(token, time.time()) == chain
                assert fresh.open(token, time.time()) is None
            finally:
                await two.close()
                await one.close()
    run_within(scenario, 30)
