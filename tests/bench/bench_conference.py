"""Group chat benchmark: the real core and conference AS on loopback, raw SIP + MSRP peers.

Run:  PYTHONPATH=src python tests/bench/bench_conference.py [--messages 2000] [--window 64]
                                                           [--participants 10] [--conferences 100]
Prints a table; it is not a test (no test_ functions).

Everything runs in this process on one asyncio loop (HSS, P-CSCF, I-CSCF,
S-CSCF, messaging AS, conference AS, and the peers: one TestUe each for SIP, one
shared MsrpEndpoint for their MSRP), SQLite store in a temporary data dir.

* fan-out: one ad-hoc conference of ``participants``; its creator sends N CPIM
  messages with at most ``window`` unanswered; the rate is N over the time until
  every other participant has received all N (N x (participants-1) MSRP
  deliveries, every copy counted).
* join latency: INVITE to the conference URI (A.5.1: UE -> P-CSCF -> S-CSCF ->
  I-CSCF -> AS) until the 200 OK, then the MSRP connection bound; p50/p99 over
  every join of the RSS run.
* peak RSS: ``conferences`` ad-hoc conferences of ``participants`` each, all
  joined, one message sent in each (ru_maxrss of this process, peers included).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "flows"))

from conference_peers import answer, create, established, join  # noqa: E402
from imsbox.config import Config  # noqa: E402
from imsbox.content import CPIM, CpimAddress, build_cpim  # noqa: E402
from imsbox.ims.provisioning import add_user  # noqa: E402
from imsbox.msrp import MsrpEndpoint, MsrpSession  # noqa: E402
from imsbox.serve import Network  # noqa: E402
from imsbox.store import open_store  # noqa: E402
from imsbox.testing import FAST_TIMERS, TestUe, write_loopback_config  # noqa: E402

DOMAIN = "ims.test"


async def provision(config: Config, count: int) -> list[str]:
    names = [f"u{i}" for i in range(count)]
    async with open_store(config.store_location) as store:
        for name in names:
            await add_user(store, DOMAIN, name, f"{name}-secret")
    return names


async def conference_of(config: Config, names: list[str], msrp: MsrpEndpoint,
                        joins: list[float]) -> tuple[list[TestUe], list[MsrpSession]]:
    """The first creates it listing the second; the rest join by its URI."""
    peers = [await TestUe(n, f"{n}-secret", config, timers=FAST_TIMERS).start()
             for n in names]
    for ue in peers:
        assert (await ue.register()).ok
    call, session = await create(peers[0], msrp, [peers[1].aor])
    uri = await established(call, session)
    sessions = [session, (await answer(peers[1], msrp))[1]]
    for ue in peers[2:]:
        started = time.perf_counter()
        joined, joined_session = await join(ue, msrp, uri)
        assert await established(joined, joined_session) == uri
        await joined_session.wait_bound(5)
        joins.append(time.perf_counter() - started)
        sessions.append(joined_session)
    return peers, sessions


async def fan_out(config: Config, messages: int, window: int, participants: int) -> dict[str, str]:
    names = await provision(config, participants)
    async with Network(config, timers=FAST_TIMERS), MsrpEndpoint() as msrp:
        joins: list[float] = []
        peers, sessions = await conference_of(config, names, msrp, joins)
        await asyncio.sleep(0.2)  # every leg in the focus
        receivers = sessions[1:]
        got = [0] * len(receivers)
        done = asyncio.get_running_loop().create_future()

        async def count(i: int, session: MsrpSession) -> None:
            while got[i] < messages:
                await session.receive()
                got[i] += 1
            if all(g >= messages for g in got) and not done.done():
                done.set_result(None)

        counters = [asyncio.ensure_future(count(i, s)) for i, s in enumerate(receivers)]
        body = build_cpim("text/plain", b"x" * 40, sender=CpimAddress(peers[0].aor),
                          recipients=[CpimAddress(peers[0].aor)]).to_bytes()
        slots = asyncio.Semaphore(window)
        started = time.perf_counter()

        async def send_one() -> None:
            async with slots:
                await sessions[0].send_message(CPIM, body)

        sends = [asyncio.ensure_future(send_one()) for _ in range(messages)]
        await asyncio.wait_for(done, 300)
        elapsed = time.perf_counter() - started
        await asyncio.gather(*sends)
        for task in counters:
            task.cancel()
        for ue in peers:
            await ue.close()
    copies = messages * len(receivers)
    return {"fan-out messages/s (every copy delivered)": f"{messages / elapsed:,.0f}",
            "fan-out MSRP deliveries/s": f"{copies / elapsed:,.0f}",
            "messages x receivers": f"{messages} x {len(receivers)}"}


async def many(config: Config, conferences: int, participants: int) -> dict[str, str]:
    names = await provision(config, conferences * participants)
    joins: list[float] = []
    async with Network(config, timers=FAST_TIMERS) as net, MsrpEndpoint() as msrp:
        everyone: list[TestUe] = []
        for c in range(conferences):
            peers, sessions = await conference_of(
                config, names[c * participants:(c + 1) * participants], msrp, joins)
            everyone += peers
            body = build_cpim("text/plain", b"hello", sender=CpimAddress(peers[0].aor),
                              recipients=[CpimAddress(peers[0].aor)]).to_bytes()
            await sessions[0].send_message(CPIM, body)
            for session in sessions[1:]:
                await asyncio.wait_for(session.receive(), 10)
        hosted = len(net.nodes["conference"].foci)  # type: ignore[attr-defined]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        for ue in everyone:
            await ue.close()
    ms = sorted(j * 1000 for j in joins)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return {f"conferences hosted (x {participants} participants)": str(hosted),
            "peak RSS, whole process (MiB)": f"{rss:,.0f}",
            "join latency p50 / p99 (ms)": f"{statistics.median(ms):.1f} / {p99:.1f}",
            "joins measured": str(len(ms))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--participants", type=int, default=10)
    parser.add_argument("--conferences", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        _, config = write_loopback_config(Path(one))
        rows |= asyncio.run(fan_out(config, args.messages, args.window, args.participants))
        _, config = write_loopback_config(Path(two))
        rows |= asyncio.run(many(config, args.conferences, args.participants))
    width = max(map(len, rows))
    for metric, value in rows.items():
        print(f"{metric:<{width}}  {value}")


if __name__ == "__main__":
    main()
