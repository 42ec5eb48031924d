"""SIP message parse/serialize rate on one core.

Run:  python tests/bench/bench_sip_parse.py [--seconds 1.0] [--repeat 5] [FILE.sip ...]

For each message (default: the seed's chat INVITE and a 200 OK from
tests/fixtures/sip) prints messages per second, best of ``--repeat`` runs of
about ``--seconds`` each, for:

* parse       ``imsbox.sip.parse(data)`` (start line, framing, the headers
              every element checks; other headers stay lazy)
* +views      parse, then read the typed views a proxy uses (Via stack,
              From, To, Call-ID, CSeq, Max-Forwards, Route, Record-Route)
* serialize   ``bytes(message)`` of an already parsed message
* round trip  parse + serialize

The process is pinned to one CPU and timed by its own CPU time
(``time.process_time``), so other work on a shared machine does not count.
Not a test (no test_ functions).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from collections.abc import Callable

from imsbox.sip import Request, Response, parse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sip"
DEFAULT = (FIXTURES / "000_01_invite.sip", FIXTURES / "000_04_200_ok.sip")


def views(message: Request | Response) -> None:
    message.via, message.from_, message.to, message.call_id, message.cseq
    message.max_forwards, message.route, message.record_route


def rate(work: Callable[[], object], seconds: float, repeat: int) -> float:
    """Best calls per CPU second over ``repeat`` batches of ~``seconds`` CPU."""
    n = 1
    while True:  # calibrate a batch size
        start = time.process_time()
        for _ in range(n):
            work()
        elapsed = time.process_time() - start
        if elapsed > 0.05:
            break
        n *= 4
    batch = max(1, int(n * seconds / elapsed))
    best = 0.0
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(batch):
            work()
        best = max(best, batch / (time.process_time() - start))
    return best


def bench(path: Path, seconds: float, repeat: int) -> None:
    data = path.read_bytes()
    message = parse(data)
    assert parse(bytes(message)).call_id == message.call_id  # the round trip holds
    first = data.split(b"\r\n", 1)[0].decode(errors="replace")[:48]
    print(f"{path.name} ({len(data)} bytes, {len(message.headers)} header lines): {first}")
    for label, work in (
        ("parse", lambda: parse(data)),
        ("+views", lambda: views(parse(data))),
        ("serialize", lambda: bytes(message)),
        ("round trip", lambda: bytes(parse(data))),
    ):
        per_second = rate(work, seconds, repeat)
        print(f"  {label:11} {per_second:10,.0f} msg/s  {1e6 / per_second:7.1f} us/msg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path, default=list(DEFAULT))
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    for path in args.files:
        bench(path, args.seconds, args.repeat)


if __name__ == "__main__":
    main()
