"""SIP proxy benchmark: `imsbox sip-proxy` against Kamailio, same SIPp load.

Uses SIPp's built-in ``uac``, which fails a call on a 180 after the 200 (a
legal reordering Kamailio's workers produce under load): for the fair
comparison (tolerant UAC, CPU per call) use bench_vs_kamailio.py.

Run:  python tests/bench/bench_proxy.py [--rates 100,200,...] [--seconds 10]

For each rate (calls per second) the script starts a fresh proxy, SIPp's
built-in ``uas`` behind it and the built-in ``uac`` in front, places
``rate * seconds`` calls and counts failed calls on both SIPp sides.  imsbox
and Kamailio (tests/bench/kamailio-forwarder.cfg: the same transaction-
stateful forwarder with Record-Route) alternate at each rate, so both see the
same machine load.  A step with a failed call is run once more (``--retries``)
to tell noise from a limit; a proxy stops ramping when it fails again.  Prints a table and, per proxy, the highest rate with 0 failed calls,
the CallRate SIPp measured there, and the imsbox/Kamailio ratio.

SIPp shares the machine with the proxy: on a small box the figures are the
limit of the whole set-up, not of the proxy alone (see the proxy CPU column).
Installs nothing: exits with a message if sipp or kamailio is missing.  Every
process runs in its own process group and is killed after its step.  Not a
test (no test_ functions).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "interop"))
from sipp import (  # noqa: E402
    ProxyProcess, Sipp, SippResult, aborted_calls, free_udp_ports, imsbox_proxy_command,
)

HOST = "127.0.0.1"
KAMAILIO_CFG = HERE / "kamailio-forwarder.cfg"
MODULES_DIR = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
RATES = (100, 200, 300, 400, 500, 600, 800, 1000)
PROXIES = ("imsbox", "kamailio")


@dataclass
class Step:
    proxy: str
    rate: int
    calls: int
    uac: SippResult
    uas: SippResult
    proxy_alive: bool
    proxy_cpu: float  # CPU seconds of the proxy (all its processes) during the step

    @property
    def failed(self) -> int:
        """Failed calls on either side, plus calls the uac never finished."""
        unfinished = max(0, self.calls - self.uac.successful - self.uac.failed)
        return self.uac.failed + self.uas.failed + unfinished

    @property
    def ok(self) -> bool:
        return (self.uac.returncode == 0 and self.uas.returncode == 0 and self.failed == 0
                and self.proxy_alive)


def require_tools() -> str:
    missing = [tool for tool in ("sipp", "kamailio") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"bench_proxy: {', '.join(missing)} not found on PATH; install it first "
                 "(Debian: apt-get install sip-tester kamailio)")
    if not Path(MODULES_DIR, "tm.so").exists():
        sys.exit(f"bench_proxy: Kamailio modules not found in {MODULES_DIR}")
    return str(shutil.which("kamailio"))


def kamailio_command(kamailio: str, port: int, next_hop: int, workdir: Path) -> list[str]:
    cfg = (KAMAILIO_CFG.read_text().replace("LISTEN_PORT", str(port))
           .replace("NEXT_HOP_PORT", str(next_hop)).replace("MODULES_DIR", MODULES_DIR))
    path = workdir / f"kamailio-{port}.cfg"
    path.write_text(cfg)
    return [kamailio, "-f", str(path), "-P", str(workdir / f"kamailio-{port}.pid"),
            "-w", str(workdir), "-DD", "-E"]


def run_step(name: str, rate: int, seconds: float, workdir: Path, kamailio: str) -> Step:
    proxy_port, uas_port, uac_port = free_udp_ports(3)
    calls = int(rate * seconds)
    cmd = imsbox_proxy_command(proxy_port, uas_port) if name == "imsbox" else \
        kamailio_command(kamailio, proxy_port, uas_port, workdir)
    timeout = int(seconds * 3 + 60)
    tag = f"{name}-{rate}"
    with ProxyProcess(cmd, proxy_port, workdir / f"{tag}-proxy.log") as proxy, \
            Sipp("uas", port=uas_port, workdir=workdir, name=f"{tag}-uas", calls=calls,
                 timeout=timeout) as uas, \
            Sipp("uac", port=uac_port, remote=(HOST, proxy_port), workdir=workdir,
                 name=f"{tag}-uac", calls=calls, rate=rate, limit=max(1000, rate * 5),
                 timeout=timeout) as uac:
        cpu0 = proxy.cpu_seconds()
        uac_result = uac.wait()
        cpu = proxy.cpu_seconds() - cpu0
        # the uas ends after its last 4 s timewait; it never does if calls were lost
        uas_result = uas.wait(15 if uac_result.ok else 6)
        alive = proxy.alive()
    return Step(name, rate, calls, uac_result, uas_result, alive, cpu)


def why(step: Step) -> str:
    """What SIPp aborted calls on, e.g. "uac: 3 unexpected message while pausing (180)"."""
    parts = []
    for side, result in (("uac", step.uac), ("uas", step.uas)):
        seen: dict[str, int] = {}
        for reason, _, doing, got in aborted_calls(result.error_file):
            key = reason + (f" while {doing}" if doing else "") + \
                (f" ({got.replace('SIP/2.0 ', '')})" if got else "")
            seen[key] = seen.get(key, 0) + 1
        top = sorted(seen.items(), key=lambda kv: -kv[1])[:2]
        parts += [f"{side}: {n} {key}" for key, n in top]
    return "; ".join(parts)


def describe(step: Step) -> str:
    verdict = "ok" if step.ok else f"FAIL  {why(step)}"
    return (f"{step.proxy:9} {step.rate:6} {step.calls:7} {step.uac.call_rate:9.1f} "
            f"{step.uac.successful:7} {step.failed:6} {step.uac.count('Retransmissions'):7} "
            f"{step.proxy_cpu:7.1f}  {verdict}")


def ramp(rates: list[int], seconds: float, proxies: list[str], workdir: Path,
         kamailio: str, retries: int) -> dict[str, list[Step]]:
    steps: dict[str, list[Step]] = {p: [] for p in proxies}
    active = list(proxies)
    print(f"{'proxy':9} {'cps':>6} {'calls':>7} {'CallRate':>9} {'success':>7} {'failed':>6} "
          f"{'retrans':>7} {'cpu s':>7}", flush=True)
    for rate in rates:
        for name in list(active):
            for _ in range(1 + retries):
                step = run_step(name, rate, seconds, workdir, kamailio)
                steps[name].append(step)
                print(describe(step), flush=True)
                if step.ok:
                    break
            else:
                active.remove(name)
        if not active:
            break
    return steps


def summary(steps: dict[str, list[Step]]) -> None:
    best: dict[str, Step | None] = {}
    print("\nhighest rate with 0 failed calls:")
    for name, runs in steps.items():
        passed = [s for s in runs if s.ok]
        best[name] = passed[-1] if passed else None
        b = best[name]
        text = f"{b.rate} cps (SIPp CallRate {b.uac.call_rate:.1f})" if b else "none"
        failed = [s for s in runs if not s.ok and (b is None or s.rate > b.rate)]
        limit = f", failed at {failed[0].rate} cps" if failed else \
            ", no failure up to the last rate"
        cpu = f"; {1000 * b.proxy_cpu / b.calls:.2f} ms proxy CPU per call there" if b else ""
        print(f"  {name:9} {text}{limit}{cpu}")
    imsbox, kamailio = best.get("imsbox"), best.get("kamailio")
    if imsbox and kamailio:
        print(f"  ratio imsbox/kamailio: {imsbox.rate / kamailio.rate:.2f} (target rates), "
              f"{imsbox.uac.call_rate / kamailio.uac.call_rate:.2f} (measured CallRate)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default=",".join(map(str, RATES)),
                        help="comma-separated call rates (cps)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of calls per step")
    parser.add_argument("--proxies", default=",".join(PROXIES), help="imsbox,kamailio")
    parser.add_argument("--retries", type=int, default=1, help="re-runs of a failed step")
    parser.add_argument("--keep", action="store_true", help="keep the SIPp/proxy logs")
    args = parser.parse_args()
    kamailio = require_tools()
    workdir = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    try:
        steps = ramp([int(r) for r in args.rates.split(",")], args.seconds,
                     args.proxies.split(","), workdir, kamailio, args.retries)
        summary(steps)
    finally:
        if args.keep:
            print(f"logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
