"""Scale-out benchmark: pager messages/s and CPU per message with 1 and with 2
S-CSCF + messaging AS processes on PostgreSQL + Redis.

Run:  python tests/bench/bench_scale_out.py [--messages 200] [--window 4] [--timeout 180]
Prints a table; it is not a test (no test_ functions).

Each run starts a throw-away PostgreSQL and Redis and, each in its own
``imsbox serve --role`` process (as in tests/flows/test_scale_out.py, without
the Kamailio front): 1 P-CSCF, 1 I-CSCF, N S-CSCFs and N messaging ASs with
``[scscf] pool`` / ``[messaging_as] pool``. Eight UEs in this process (four
senders, four receivers; the users hash onto the instances) send
``--messages`` pager MESSAGEs in all, at most ``--window`` in flight per
sender. Each one goes UE -> P-CSCF -> S-CSCF -> AS -> S-CSCF -> I-CSCF ->
S-CSCF -> AS -> S-CSCF -> P-CSCF -> UE, and its delivery IMDN comes back the
same way. Figures:

* messages/s: the messages received over the time until every one that got
  a 2xx has arrived;
* CPU ms per message: user + system time of every serve process over that
  time (``/proc/PID/stat``), in all and per role; PostgreSQL, Redis and the
  UEs (this process) are not in it.

The machine is shared: run it on a quiet one for figures worth comparing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))

from test_scale_out import DOMAIN, HOST, PASSWORD, Layout, Proc, _serve

from imsbox.ims.provisioning import add_user
from imsbox.store import open_store
from imsbox.testing_backends import ThrowawayPostgres, ThrowawayRedis
from imsbox.ue import MessageReceived, RcsClient, SendError

TICKS = os.sysconf("SC_CLK_TCK")
USERS = 8


@dataclass
class Result:
    instances: int
    messages: int
    seconds: float
    cpu: dict[str, float]      # role -> CPU seconds over the run
    refused: int               # sends that got an error (not counted)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def cpu_ms_per_message(self, role: str | None = None) -> float:
        used = sum(v for k, v in self.cpu.items() if role is None or k.startswith(role))
        return 1000 * used / self.messages


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (proc(5): fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_network(directory: Path, layout: Layout, pg: str, redis: str) -> dict[str, Proc]:
    def config(name: str, **own: int) -> Path:
        return layout.toml(directory, name, pg, redis, **own)

    procs: dict[str, Proc] = {}
    for i, port in enumerate(layout.messaging):
        procs[f"as{i + 1}"] = _serve(f"as{i + 1}", config(f"as{i + 1}", messaging=port), "as")
    for i, port in enumerate(layout.scscf):
        procs[f"scscf{i + 1}"] = _serve(f"scscf{i + 1}", config(f"scscf{i + 1}", scscf=port),
                                        "scscf")
    procs["icscf"] = _serve("icscf", config("icscf"), "icscf")
    procs["pcscf"] = _serve("pcscf", config("pcscf", pcscf=layout.pcscf[0]), "pcscf")
    return procs


async def provision(pg: str, redis: str) -> None:
    store = await open_store(pg, redis).open()
    try:
        for i in range(USERS):
            await add_user(store, DOMAIN, f"u{i}", PASSWORD)
    finally:
        await store.close()


async def traffic(layout: Layout, procs: dict[str, Proc], messages: int, window: int,
                  timeout: float) -> Result:
    ues = [RcsClient(f"u{i}", PASSWORD, DOMAIN, pcscf=(HOST, layout.pcscf[0]))
           for i in range(USERS)]
    for ue in ues:
        await ue.start()
    senders, receivers = ues[:USERS // 2], ues[USERS // 2:]
    per_sender = messages // len(senders)
    got = {ue.aor: 0 for ue in receivers}
    acked, refused = [0], [0]

    async def count(ue: RcsClient) -> None:
        async for event in ue.events():
            if isinstance(event, MessageReceived):
                got[ue.aor] += 1

    async def send(sender: RcsClient, receiver: RcsClient) -> None:
        slots = asyncio.Semaphore(window)

        async def one(seq: int) -> None:
            async with slots:
                try:
                    await sender.send_message(receiver.aor, f"bench {seq}")
                    acked[0] += 1
                except SendError:
                    refused[0] += 1
        await asyncio.gather(*(one(seq) for seq in range(per_sender)))

    async def all_in() -> None:
        await asyncio.gather(*(send(s, r) for s, r in zip(senders, receivers, strict=True)))
        while sum(got.values()) < acked[0]:
            await asyncio.sleep(0.05)

    counters = [asyncio.ensure_future(count(ue)) for ue in receivers]
    await asyncio.sleep(1.0)  # registrations settle (third-party REGISTERs to the ASs)
    pids = {name: proc.proc.pid for name, proc in procs.items()}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    try:
        await asyncio.wait_for(all_in(), timeout)
    finally:
        seconds = time.monotonic() - started
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        for task in counters:
            task.cancel()
        for ue in ues:
            await ue.close()
    return Result(len(layout.scscf), sum(got.values()), seconds, cpu, refused[0])


def run(instances: int, messages: int, window: int, timeout: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-scale-out-") as tmp:
        pg, redis = ThrowawayPostgres().start(), ThrowawayRedis().start()
        procs: dict[str, Proc] = {}
        try:
            asyncio.run(provision(pg.url, redis.url))
            layout = Layout(instances=instances)
            procs = start_network(Path(tmp), layout, pg.url, redis.url)
            return asyncio.run(traffic(layout, procs, messages, window, timeout))
        finally:
            for proc in procs.values():
                proc.stop()
            redis.destroy()
            pg.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    results = [run(n, args.messages, args.window, args.timeout) for n in (1, 2)]
    print(f"\npager messages through P-CSCF, I-CSCF and N x (S-CSCF + messaging AS), "
          f"PostgreSQL + Redis, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'N':>2} {'messages':>8} {'seconds':>8} {'msg/s':>7} {'CPU ms/msg':>10} "
          f"{'S-CSCFs':>8} {'ASs':>6} {'I-CSCF':>7} {'P-CSCF':>7} {'refused':>7}")
    for r in results:
        print(f"{r.instances:>2} {r.messages:>8} {r.seconds:>8.1f} {r.rate:>7.1f} "
              f"{r.cpu_ms_per_message():>10.2f} {r.cpu_ms_per_message('scscf'):>8.2f} "
              f"{r.cpu_ms_per_message('as'):>6.2f} {r.cpu_ms_per_message('icscf'):>7.2f} "
              f"{r.cpu_ms_per_message('pcscf'):>7.2f} {r.refused:>7}")
    print(f"2 instances / 1: {results[1].rate / results[0].rate:.2f}x messages/s")


if __name__ == "__main__":
    main()
