"""RTP benchmark: concurrent two-party calls in one process, CPU per call, one-way latency.

Run:  PYTHONPATH=src python3 tests/bench/bench_rtp.py [--calls 1,50,100,200,300,400] [--seconds 8]
Prints figures; it is not a test (no test_ functions).

Each call is two RtpSessions on 127.0.0.1 streaming 20 ms PCMU frames to each
other (a tone each way, decoded into the jitter buffer and played into a
counting sink), all on the loop's one MediaClock.  For each load it prints
packets/s (sent + received), the share of late packets (arrived after their
playout time), the RFC 3550 jitter (mean and worst stream), the clock's late
ticks, CPU per call, and the one-way latency (sendto -> datagram_received)
of a probe call.  A load passes with < 1 % late packets and worst jitter < 5 ms.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import statistics
import sys
import time
import timeit

from imsbox.media import AudioParams, MediaClock, RtpSession, ToneSource, g711


class CountingSink:
    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames = 0

    def write(self, pcm: bytes) -> None:
        self.frames += 1


def codec_bench() -> None:
    frame = array.array("h", (ToneSource(1000).read(160) or b"")).tobytes()
    coded = g711.ulaw_encode(frame)
    rows = [("audioop" if g711.BACKEND == "audioop" else "(default)", g711.ulaw_encode, g711.ulaw_decode),
            ("tables", g711.table_ulaw_encode, g711.table_ulaw_decode)]
    print(f"G.711 PCMU per 20 ms frame (backend in use: {g711.BACKEND}):")
    for name, enc, dec in rows:
        e = timeit.timeit(lambda enc=enc: enc(frame), number=20000) / 20000 * 1e6
        d = timeit.timeit(lambda dec=dec: dec(coded), number=20000) / 20000 * 1e6
        print(f"  {name:10s} encode {e:6.2f} us  decode {d:6.2f} us")


async def load(calls: int, seconds: float) -> dict[str, float]:
    clock = MediaClock()
    sessions: list[RtpSession] = []
    for _ in range(calls):
        a = await RtpSession.open(clock=clock)
        b = await RtpSession.open(clock=clock)
        a.configure(AudioParams("127.0.0.1", b.local_port))
        b.configure(AudioParams("127.0.0.1", a.local_port))
        for s, freq in ((a, 1000), (b, 600)):
            s.source = ToneSource(freq)
            s.sink = CountingSink()
        sessions += [a, b]
    probe_tx, probe_rx = sessions[0], sessions[1]
    sent_at: dict[int, float] = {}
    delays: list[float] = []
    probe_tx.on_sent = lambda seq, t: sent_at.__setitem__(seq, t)
    probe_rx.on_rtp = lambda p, t: delays.append(t - sent_at.pop(p.sequence, t))
    await asyncio.sleep(1.0)   # warm-up: jitter buffers filled, first RTCP out
    base = [(s.stats.packets_sent, s.stats.packets_received, s.jitter.late) for s in sessions]
    ticks0, late0 = clock.ticks, clock.late_ticks
    delays.clear()
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    sent = sum(s.stats.packets_sent - b[0] for s, b in zip(sessions, base, strict=True))
    received = sum(s.stats.packets_received - b[1] for s, b in zip(sessions, base, strict=True))
    late = sum(s.jitter.late - b[2] for s, b in zip(sessions, base, strict=True))
    jitters = [s.reception.jitter_ms for s in sessions]
    ticks = clock.ticks - ticks0
    late_ticks = clock.late_ticks - late0
    for s in sessions:
        await s.close()
    delays.sort()
    return {
        "calls": calls, "streams": 2 * calls, "pps": (sent + received) / wall,
        "sent_pps": sent / wall, "expected_pps": 2 * calls * 50,
        "late_pct": 100 * late / max(received, 1), "lost_pct": 100 * max(sent - received, 0) / max(sent, 1),
        "jitter_mean": statistics.fmean(jitters), "jitter_max": max(jitters),
        "cpu_pct": 100 * cpu / wall, "cpu_per_call_ms": 1000 * cpu / wall / calls,
        "ticks": ticks, "late_ticks": late_ticks,
        "lat_p50_us": 1e6 * delays[len(delays) // 2] if delays else float("nan"),
        "lat_p99_us": 1e6 * delays[int(len(delays) * 0.99)] if delays else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", default="1,50,100,200,300,400")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}")
    codec_bench()
    print(f"\nconcurrent calls, {args.seconds:.0f} s each (pass: late < 1 %, worst jitter < 5 ms):")
    print(f"{'calls':>6} {'streams':>7} {'pkt/s':>8} {'sent/exp':>9} {'late%':>6} {'lost%':>6} "
          f"{'jit avg':>7} {'jit max':>7} {'CPU%':>5} {'CPU/call':>9} {'late ticks':>10} "
          f"{'lat p50':>8} {'lat p99':>8}  verdict")
    best = 0
    for calls in (int(c) for c in args.calls.split(",")):
        r = asyncio.run(load(calls, args.seconds))
        ok = r["late_pct"] < 1 and r["jitter_max"] < 5 and r["sent_pps"] > 0.97 * r["expected_pps"]
        best = calls if ok else best
        print(f"{calls:>6} {r['streams']:>7.0f} {r['pps']:>8.0f} {r['sent_pps'] / r['expected_pps']:>9.3f} "
              f"{r['late_pct']:>6.2f} {r['lost_pct']:>6.2f} {r['jitter_mean']:>5.2f}ms {r['jitter_max']:>5.2f}ms "
              f"{r['cpu_pct']:>5.0f} {r['cpu_per_call_ms']:>6.2f} ms {r['late_ticks']:>4.0f}/{r['ticks']:<5.0f} "
              f"{r['lat_p50_us']:>6.0f}us {r['lat_p99_us']:>6.0f}us  {'ok' if ok else 'FAIL'}")
    print(f"\nlargest passing load: {best} calls ({2 * best} streams, {best * 200} packets/s sent+received)")
    print("CPU/call is CPU time per second of wall time per two-party call (both ends in this process).")


if __name__ == "__main__":
    main()
