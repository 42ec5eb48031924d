"""Telephony AS benchmark: calls/s through the core with and without the AS, and
forwarded calls/s, on loopback in one process (as ``imsbox serve`` runs it).

Run:  python tests/bench/bench_telephony.py [--calls 400] [--concurrency 20]

Three runs of ``--calls`` calls each (INVITE with an audio offer, 180, 200, ACK,
BYE, 200; signalling only, no RTP), ``--concurrency`` at a time, between simple
UDP UEs (imsbox.testing.TestUe):

* ``core only``: alice -> carol with no iFCs (P-CSCF, S-CSCF, I-CSCF, S-CSCF, P-CSCF);
* ``plain via AS``: the same call with the default iFCs, so the telephony AS
  serves it on both sides (two more AS hops, two more S-CSCF passes);
* ``forwarded``: alice -> bob, bob has ``forward-unconditional carol``: bob's
  AS re-targets, the call goes round the S-CSCF and I-CSCF to carol's
  S-CSCF and AS, with History-Info.

It prints calls/s per run (wall clock from the first INVITE to the last BYE's
200) and the failed calls (any final response other than 200); a run with a
failure is reported as such. Not a test (no test_ functions).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from tempfile import mkdtemp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from imsbox.apps.telephony_services import validate  # noqa: E402
from imsbox.config import Config, load_config  # noqa: E402
from imsbox.ims.provisioning import add_user  # noqa: E402
from imsbox.serve import Network  # noqa: E402
from imsbox.store import open_store  # noqa: E402
from imsbox.testing import TestUe, write_loopback_config  # noqa: E402

DOMAIN = "ims.test"
OFFER = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
ANSWER = OFFER.replace(b"40000", b"40002")


def make_config(workdir: Path, with_ifcs: bool) -> Config:
    directory = workdir / ("as" if with_ifcs else "core")
    directory.mkdir()
    path, _ = write_loopback_config(directory)
    if not with_ifcs:
        path.write_text("ifc = []\n" + path.read_text())
    config = load_config(path)

    async def users() -> None:
        async with open_store(config.store_location) as store:
            for i, name in enumerate(("alice", "bob", "carol")):
                await add_user(store, DOMAIN, name, "bench-secret", f"+1555000{i + 1}")
            await store.service_data.put(f"sip:bob@{DOMAIN}", "forward-unconditional",
                                         validate("forward-unconditional", ["carol"], DOMAIN))
    asyncio.run(users())
    return config


async def answer_all(callee: TestUe) -> None:
    assert callee.ua is not None
    while True:
        call = await callee.ua.incoming.get()
        call.ring(180)
        call.accept(ANSWER)


async def one_call(caller: TestUe, target: str) -> bool:
    call = await caller.call(target, OFFER)
    final = await call.wait_final()
    if final is None or final.status != 200:
        return False
    await call.bye()
    return True


async def run(config: Config, target: str, calls: int, concurrency: int) -> tuple[float, int]:
    async with Network(config) as _net:
        alice = await TestUe("alice", "bench-secret", config).start()
        carol = await TestUe("carol", "bench-secret", config).start()
        try:
            assert (await alice.register()).ok and (await carol.register()).ok
            answering = asyncio.ensure_future(answer_all(carol))
            semaphore = asyncio.Semaphore(concurrency)

            async def bounded() -> bool:
                async with semaphore:
                    return await one_call(alice, target)
            await one_call(alice, target)   # warm up (connections, caches)
            started = time.perf_counter()
            results = await asyncio.gather(*(bounded() for _ in range(calls)))
            elapsed = time.perf_counter() - started
            answering.cancel()
            return calls / elapsed, results.count(False)
        finally:
            await alice.close()
            await carol.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per run (bounded)")
    parser.add_argument("--concurrency", type=int, default=20, help="calls at a time")
    args = parser.parse_args()
    workdir = Path(mkdtemp(prefix="bench-telephony-"))
    runs = [("core only", make_config(workdir, False), "sip:carol@ims.test"),
            ("plain via AS", make_config(workdir, True), "sip:carol@ims.test"),
            ("forwarded", None, "sip:bob@ims.test")]
    print(f"{args.calls} calls per run, {args.concurrency} at a time")
    print(f"{'run':<14} {'calls/s':>8} {'failed':>7}")
    for name, config, target in runs:
        config = config or runs[1][1]
        assert config is not None
        rate, failed = asyncio.run(run(config, target, args.calls, args.concurrency))
        print(f"{name:<14} {rate:8.1f} {failed:7d}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
