"""Soak benchmark: the RSS of ``imsbox serve`` during and after a UDP flood.

Run:  python tests/bench/bench_flood.py [--rate 2000] [--seconds 10] [--after 40]
      [--node pcscf|icscf|scscf|messaging_as] [--body 300] [--headers 0]
      [--max-transactions N]

Starts the whole network (``imsbox serve``, default ``[limits]``) on free
loopback ports, then floods one node from a single loopback UDP socket with
new out-of-dialog requests, OPTIONS and MESSAGE in turn (``--body`` bytes of
body, ``--headers`` extra header lines: 5000 reproduces issue 9's datagrams),
at ``--rate`` per second for ``--seconds``.  Once a second it prints what was
sent and answered (by status) and the server's RSS, during the flood and for
``--after`` seconds after it (Timer J holds completed transactions 32 s, so
their memory is given back by then).  ``--max-transactions`` sets
``[limits] max_transactions`` (default: imsbox's own default).  Not a test (no test_ functions).
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from tempfile import mkdtemp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from imsbox.testing import write_loopback_config  # noqa: E402 (after sys.path)

HOST = "127.0.0.1"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def request(method: str, port: int, body: bytes, extra: str) -> bytes:
    head = (f"{method} sip:bob@ims.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:flood@ims.test>;tag={secrets.token_hex(4)}\r\n"
            "To: <sip:bob@ims.test>\r\n"
            f"Call-ID: {secrets.token_hex(10)}\r\n"
            f"CSeq: 1 {method}\r\n{extra}"
            + ("Content-Type: text/plain\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class Answers(threading.Thread):
    """Counts the responses that come back to the flooding socket."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.statuses: Counter[int] = Counter()
        self.retry_after: Counter[str] = Counter()
        self.stop = False

    def run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                data = self.sock.recv(70000)
            except TimeoutError:
                continue
            except OSError:
                return
            status = int(data[8:11]) if data.startswith(b"SIP/2.0 ") else 0
            self.statuses[status] += 1
            if status == 503:
                for line in data.split(b"\r\n"):
                    if line.lower().startswith(b"retry-after:"):
                        self.retry_after[line.split(b":", 1)[1].strip().decode()] += 1


def start_network(directory: Path, max_transactions: int | None,
                  ) -> tuple[subprocess.Popen[str], dict[str, int]]:
    path, config = write_loopback_config(directory)
    if max_transactions is not None:
        with path.open("a") as toml:
            toml.write(f"\n[limits]\nmax_transactions = {max_transactions}\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "imsbox.cli", "serve", "--config",
                             str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"imsbox serve exited with {proc.wait()}")
        if line.startswith("messaging_as listening on udp"):
            break
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    ports = {name: node.port for name, node in config.nodes.items()}
    return proc, ports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--after", type=float, default=40.0)
    parser.add_argument("--node", default="pcscf")
    parser.add_argument("--body", type=int, default=300)
    parser.add_argument("--headers", type=int, default=0)
    parser.add_argument("--max-transactions", type=int, default=None)
    args = parser.parse_args()

    proc, ports = start_network(Path(mkdtemp(prefix="imsbox-flood-")), args.max_transactions)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind((HOST, 0))
    own_port = sock.getsockname()[1]
    answers = Answers(sock)
    answers.start()
    target = (HOST, ports[args.node])
    body = b"x" * args.body
    extra = "".join(f"X{i}: a\r\n" for i in range(args.headers))
    try:
        time.sleep(1.0)
        baseline = rss_mb(proc.pid)
        print(f"imsbox serve pid {proc.pid}, flooding {args.node} udp {target[1]} at "
              f"{args.rate}/s for {args.seconds:.0f} s; RSS before {baseline:.0f} MB")
        print(f"{'t/s':>5} {'sent':>7} {'answered':>8} {'503':>7} {'RSS/MB':>7}  statuses")
        sent, peak, start = 0, baseline, time.monotonic()
        slice_s = 0.01
        per_slice = max(1, round(args.rate * slice_s))
        next_report = 1.0
        end = args.seconds + args.after
        while (elapsed := time.monotonic() - start) < end:
            if elapsed < args.seconds and sent < args.rate * elapsed:
                for _ in range(per_slice):
                    method = "OPTIONS" if sent % 2 else "MESSAGE"
                    try:
                        sock.sendto(request(method, own_port, body if method == "MESSAGE"
                                            else b"", extra), target)
                    except OSError:
                        pass
                    sent += 1
            else:
                time.sleep(slice_s)
            if elapsed >= next_report:
                rss = rss_mb(proc.pid)
                peak = max(peak, rss)
                total = sum(answers.statuses.values())
                print(f"{next_report:5.0f} {sent:7d} {total:8d} {answers.statuses[503]:7d} "
                      f"{rss:7.0f}  {dict(sorted(answers.statuses.items()))}", flush=True)
                next_report += 1.0
        final = rss_mb(proc.pid)
        print(f"RSS: before {baseline:.0f} MB, peak {peak:.0f} MB, {args.after:.0f} s after "
              f"the flood {final:.0f} MB; Retry-After values {dict(answers.retry_after)}")
    finally:
        answers.stop = True
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        sock.close()


if __name__ == "__main__":
    main()
