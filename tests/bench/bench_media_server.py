"""Media server benchmark: conference participants mixed and MoH streams served in
real time by one media server process.

Run:  PYTHONPATH=src python3 tests/bench/bench_media_server.py \\
          [--conferences 20 --per-conference 3] [--moh 200] [--seconds 8]
Prints figures; it is not a test (no test_ functions).

The media server side runs in a child process with the media server's own media
objects (``LegMedia`` answering each SDP offer, a ``RtpSession`` per leg from
the ``[media_server]`` port range, a mix-minus ``Mixer`` per conference, the
shared ``Music`` for hold); the participants and held parties are RtpSessions
in this process, each sending its own tone (conference) or only listening
(MoH).  Offers and answers cross between the processes as SDP text.  For each
run it prints the packets the server received and sent per second, the share
of late packets (arrived after their playout time) at the server and at the
phones, the server clock's late ticks and its CPU.  Pass: < 1 % late on both
sides and the server sent >= 97 % of the frames real time asks for.
SIP signalling is not part of it (tests/flows/test_media_server.py has that).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from imsbox.apps.mrf_media import LegMedia, Music
from imsbox.media import AudioParams, MediaClock, Mixer, PortAllocator, RtpSession, ToneSource
from imsbox.sdp import Direction, LocalCapabilities, audio_offer, parse

HOST = "127.0.0.1"


class CountingSink:
    __slots__ = ("frames",)

    def __init__(self) -> None:
        self.frames = 0

    def write(self, pcm: bytes) -> None:
        self.frames += 1


# -- the media server process ---------------------------------------------------------

async def serve(seconds: float) -> None:
    """Read the offers (one JSON line), answer them, stream for ``seconds``, report."""
    request = json.loads(sys.stdin.readline())
    clock = MediaClock.for_loop()
    ports = PortAllocator(HOST, 42000, 52000)
    music = Music.load(None)
    mixers: dict[int, Mixer] = {}
    sessions: list[RtpSession] = []
    answers = []
    for conference, offer in request["offers"]:
        direction = Direction.SENDONLY if conference < 0 else Direction.SENDRECV
        session = await RtpSession.open(ports, host=HOST)
        media = LegMedia(session, HOST, direction)
        answers.append(media.answer(offer.encode()).decode())  # type: ignore[union-attr]
        if conference < 0:
            session.source = music.listener()
        else:
            port = mixers.setdefault(conference, Mixer()).port()
            session.source = session.sink = port
        sessions.append(session)
    print(json.dumps({"answers": answers}), flush=True)
    await asyncio.sleep(1.0)   # warm up: jitter buffers fill
    base = [(s.stats.packets_sent, s.stats.packets_received, s.jitter.late) for s in sessions]
    ticks0, late0 = clock.ticks, clock.late_ticks
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    sent = sum(s.stats.packets_sent - b[0] for s, b in zip(sessions, base, strict=True))
    received = sum(s.stats.packets_received - b[1] for s, b in zip(sessions, base, strict=True))
    late = sum(s.jitter.late - b[2] for s, b in zip(sessions, base, strict=True))
    print(json.dumps({"sent": sent, "received": received, "late": late, "wall": wall,
                      "cpu": cpu, "ticks": clock.ticks - ticks0,
                      "late_ticks": clock.late_ticks - late0}), flush=True)
    sys.stdin.readline()   # the phones are done
    for session in sessions:
        await session.close()


# -- the phones -----------------------------------------------------------------------------

async def run(conferences: int, per_conference: int, moh: int, seconds: float) -> dict[str, float]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--seconds", str(seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.stdin is not None and child.stdout is not None
    phones: list[tuple[RtpSession, object, int]] = []
    offers = []
    legs = [(c, i) for c in range(conferences) for i in range(per_conference)]
    legs += [(-1, i) for i in range(moh)]
    for conference, index in legs:
        session = await RtpSession.open(host=HOST)
        caps = LocalCapabilities(address=HOST, audio_port=session.local_port, ptime=20)
        direction = Direction.RECVONLY if conference < 0 else Direction.SENDRECV
        offer = audio_offer(caps, direction=direction)
        if conference >= 0:
            session.source = ToneSource(300 + 100 * index)
        session.sink = CountingSink()
        phones.append((session, offer, conference))
        offers.append([conference, bytes(offer).decode()])
    loop = asyncio.get_running_loop()
    child.stdin.write(json.dumps({"offers": offers}) + "\n")
    child.stdin.flush()
    answers = json.loads(await loop.run_in_executor(None, child.stdout.readline))["answers"]
    for (session, offer, _), answer in zip(phones, answers, strict=True):
        session.configure(AudioParams.from_sdp(offer, parse(answer.encode())))
    await asyncio.sleep(1.0)
    base = [(s.stats.packets_received, s.jitter.late) for s, _, _ in phones]
    server = json.loads(await loop.run_in_executor(None, child.stdout.readline))
    received = sum(s.stats.packets_received - b[0] for (s, _, _), b in zip(phones, base, strict=True))
    late = sum(s.jitter.late - b[1] for (s, _, _), b in zip(phones, base, strict=True))
    child.stdin.write("done\n")
    child.stdin.flush()
    await loop.run_in_executor(None, child.wait)
    for session, _, _ in phones:
        await session.close()
    streams = len(legs)
    expected = streams * 50 * server["wall"]
    return {
        "streams": streams, "server_rx_pps": server["received"] / server["wall"],
        "server_tx_pps": server["sent"] / server["wall"], "sent_share": server["sent"] / expected,
        "server_late_pct": 100 * server["late"] / max(server["received"], 1),
        "phone_late_pct": 100 * late / max(received, 1),
        "cpu_pct": 100 * server["cpu"] / server["wall"],
        "late_ticks": server["late_ticks"], "ticks": server["ticks"],
    }


def report(title: str, r: dict[str, float]) -> bool:
    ok = r["server_late_pct"] < 1 and r["phone_late_pct"] < 1 and r["sent_share"] >= 0.97
    print(f"{title:<34} streams {r['streams']:>4.0f}  server rx {r['server_rx_pps']:>6.0f} pkt/s "
          f"tx {r['server_tx_pps']:>6.0f} pkt/s ({100 * r['sent_share']:.1f} % of real time)  "
          f"late server {r['server_late_pct']:.2f} % phones {r['phone_late_pct']:.2f} %  "
          f"server CPU {r['cpu_pct']:.0f} %  late ticks {r['late_ticks']:.0f}/{r['ticks']:.0f}  "
          f"{'PASS' if ok else 'FAIL'}", flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conferences", type=int, default=20)
    parser.add_argument("--per-conference", type=int, default=3)
    parser.add_argument("--moh", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.seconds))
        return
    ok = True
    if args.conferences:
        r = asyncio.run(run(args.conferences, args.per_conference, 0, args.seconds))
        ok &= report(f"{args.conferences} conferences x {args.per_conference} participants", r)
    if args.moh:
        r = asyncio.run(run(0, 0, args.moh, args.seconds))
        ok &= report(f"{args.moh} music-on-hold streams", r)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
