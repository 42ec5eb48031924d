"""imsbox beside Kamailio, step by step in one run, with the same SIPp scenarios.

Run:  python tests/bench/bench_vs_kamailio.py [--kinds call,message,register]
      [--call-rates 300,600,...] [--message-rates 300,...] [--register-rates 200,...]
      [--seconds 8] [--repeat 2] [--workers N] [--uacs K]

What is compared (each step: a fresh proxy for calls and messages, the same
running registrar for REGISTER; imsbox and Kamailio alternate at every step so
both see the same machine load):

* call      SIPp uac (scenarios/uac_tolerant.xml: accepts a 180 after the
            200, a legal reordering a multi-process proxy produces under load)
            -> proxy (Record-Route, transaction stateful) -> SIPp built-in uas.
            imsbox: ``imsbox sip-proxy [--workers N]``; Kamailio:
            kamailio-forwarder.cfg (2 UDP worker processes on one socket).
            ``--uacs K`` splits the load over K SIPp uacs on consecutive
            ports (for both targets): the imsbox workers share the port with
            SO_REUSEPORT and take each source port mod N, so the calls of one
            uac socket all land on one worker.  (SIPp's socket per call,
            ``-t un``, costs SIPp itself too much above 300 cps here.)
* message   SIPp MESSAGE uac -> the same proxies -> SIPp MESSAGE uas (200).
* register  SIPp register.xml (REGISTER, 401, REGISTER with Digest MD5, 200),
            new users each step.  imsbox: ``imsbox serve`` (P-CSCF -> I-CSCF
            -> S-CSCF, third-party REGISTER to the AS, SQLite); Kamailio:
            kamailio-registrar.cfg (one registrar, users in db_text).  Not the
            same work: the imsbox figure is the whole IMS chain.

Each line gives the offered rate, what SIPp achieved, failed calls, and the
CPU the server used during the step (user+system of all its processes, from
/proc) per call / message / registration.  The summary gives, per kind, the
median CPU per unit at each rate both carried with 0 failures, the ratio
imsbox/Kamailio, and each one's highest rate with 0 failures.

A step with a failure is run once more (``--retries``); a target stops
ramping when it fails again.  Installs nothing: exits with a message if sipp
or kamailio is missing.  Not a test (no test_ functions).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_ims import PASSWORD, ImsboxTarget, KamailioTarget, _Remote  # noqa: E402
from bench_proxy import MODULES_DIR, kamailio_command  # noqa: E402
from tests.interop.ims_sipp import register_users, user_names  # noqa: E402
from tests.interop.sipp import (  # noqa: E402
    ProxyProcess, Sipp, SippResult, free_udp_ports, imsbox_proxy_command,
)

HOST = "127.0.0.1"
SCENARIOS = HERE / "scenarios"
TARGETS = ("imsbox", "kamailio")
UNIT = {"call": "call", "message": "message", "register": "registration"}


@dataclass
class Step:
    kind: str
    target: str
    rate: int
    count: int
    uac: SippResult
    uas: SippResult | None
    alive: bool
    cpu: float  # CPU seconds of the server during the step

    @property
    def failed(self) -> int:
        unfinished = max(0, self.count - self.uac.successful - self.uac.failed)
        return self.uac.failed + (self.uas.failed if self.uas else 0) + unfinished

    @property
    def ok(self) -> bool:
        return self.uac.returncode == 0 and self.failed == 0 and self.alive and \
            (self.uas is None or self.uas.returncode == 0)

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / max(1, self.count)


def require_tools() -> str:
    missing = [tool for tool in ("sipp", "kamailio") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"bench_vs_kamailio: {', '.join(missing)} not found on PATH "
                 "(Debian: apt-get install sip-tester kamailio)")
    if not Path(MODULES_DIR, "tm.so").exists():
        sys.exit(f"bench_vs_kamailio: Kamailio modules not found in {MODULES_DIR}")
    return str(shutil.which("kamailio"))


def proxy_step(kind: str, target: str, rate: int, seconds: float, workdir: Path,
               kamailio: str, workers: int = 1, uacs: int = 1) -> Step:
    """One call or message step through a fresh proxy, from ``uacs`` SIPp
    uacs on consecutive ports, each with its share of the rate."""
    proxy_port, uas_port = free_udp_ports(2)
    (first_uac,) = free_udp_ports(1, span=uacs)
    count = int(rate * seconds) // uacs * uacs
    cmd = imsbox_proxy_command(proxy_port, uas_port, workers=workers) if target == "imsbox" \
        else kamailio_command(kamailio, proxy_port, uas_port, workdir)
    uac_scenario = SCENARIOS / ("uac_tolerant.xml" if kind == "call" else "message_uac.xml")
    uas_scenario = "uas" if kind == "call" else SCENARIOS / "message_uas.xml"
    timeout = int(seconds * 3 + 60)
    tag = f"{kind}-{target}-{rate}-{time.monotonic_ns()}"
    with contextlib.ExitStack() as stack:
        proxy = stack.enter_context(ProxyProcess(cmd, proxy_port, workdir / f"{tag}-proxy.log"))
        uas = stack.enter_context(Sipp(uas_scenario, port=uas_port, workdir=workdir,
                                       name=f"{tag}-uas", calls=count, timeout=timeout))
        callers = [stack.enter_context(Sipp(
            uac_scenario, port=first_uac + i, remote=(HOST, proxy_port), workdir=workdir,
            name=f"{tag}-uac{i}", calls=count // uacs,
            rate=rate // uacs if rate % uacs == 0 else rate / uacs,
            limit=max(1000, rate * 5) // uacs, timeout=timeout)) for i in range(uacs)]
        cpu0 = proxy.cpu_seconds()
        uac_result = combined([caller.wait() for caller in callers])
        cpu = proxy.cpu_seconds() - cpu0
        uas_result = uas.wait(15 if uac_result.ok else 6)
        alive = proxy.alive()
    return Step(kind, target, rate, count, uac_result, uas_result, alive, cpu)


def combined(results: list[SippResult]) -> SippResult:
    """Several uacs' results as one: counters and call rates summed."""
    if len(results) == 1:
        return results[0]
    stats: dict[str, str] = {}
    for name in ("SuccessfulCall(C)", "FailedCall(C)", "TotalCallCreated(C)",
                 "Retransmissions(C)"):
        stats[name] = str(sum(r.count(name[:-3]) for r in results))
    stats["CallRate(C)"] = str(sum(r.call_rate for r in results))
    codes = [r.returncode for r in results]
    code = None if None in codes else max(c for c in codes if c is not None)
    return SippResult("+".join(r.name for r in results), code, results[0].error_file, stats,
                      "\n".join(r.errors for r in results if r.errors),
                      results[0].screen, max(r.seconds for r in results))


class Registrars:
    """Both registrars running for the REGISTER steps, users provisioned once."""

    def __init__(self, workdir: Path, users: int) -> None:
        self.names = user_names(users)
        self.offset = {name: 0 for name in TARGETS}
        self.targets = {"imsbox": ImsboxTarget(workdir / "imsbox", self.names),
                        "kamailio": KamailioTarget(workdir / "kamailio", self.names)}
        self.workdir = workdir

    def __enter__(self) -> Registrars:
        for target in self.targets.values():
            target.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for target in self.targets.values():
            target.__exit__()

    def process(self, name: str) -> ProxyProcess:
        target = self.targets[name]
        if isinstance(target, KamailioTarget):
            return target.proc
        assert target.core.process is not None
        return target.core.process

    def step(self, name: str, rate: int, seconds: float) -> Step:
        count = max(200, int(rate * seconds))
        start = self.offset[name]
        names = self.names[start:start + count]
        if len(names) < count:
            sys.exit(f"bench_vs_kamailio: --users too small for {count} more registrations")
        self.offset[name] = start + count
        target = self.targets[name]
        process = self.process(name)
        (port,) = free_udp_ports(1)
        cpu0 = process.cpu_seconds()
        result = register_users(_Remote(target.remote), names, PASSWORD, port=port,
                                workdir=self.workdir, rate=rate, limit=100000,
                                timeout=max(60, 4 * seconds),
                                name=f"reg-{name}-{rate}-{start}")
        cpu = process.cpu_seconds() - cpu0
        return Step("register", name, rate, count, result, None, target.alive(), cpu)


def why(step: Step) -> str:
    parts = []
    for side, result in (("uac", step.uac), ("uas", step.uas)):
        if result is not None and not result.ok:
            parts.append(f"{side}: {result.describe()[:160]}")
    if not step.alive:
        parts.append("server died")
    return "; ".join(parts)


def describe(step: Step) -> str:
    verdict = "ok" if step.ok else f"FAIL {why(step)}"
    return (f"{step.kind:8} {step.target:9} {step.rate:6} {step.count:7} "
            f"{step.uac.call_rate:9.1f} {step.uac.successful:7} {step.failed:6} "
            f"{step.cpu:7.2f} {step.cpu_ms:8.3f}  {verdict}")


def ramp(kind: str, rates: list[int], seconds: float, repeat: int, retries: int,
         run: StepRunner) -> list[Step]:
    steps: list[Step] = []
    active = list(TARGETS)
    for rate in rates:
        for _ in range(repeat):
            for target in list(active):
                for _ in range(1 + retries):
                    step = run(kind, target, rate, seconds)
                    steps.append(step)
                    print(describe(step), flush=True)
                    if step.ok:
                        break
                else:
                    active.remove(target)
        if not active:
            break
    return steps


class StepRunner:
    def __init__(self, workdir: Path, kamailio: str, registrars: Registrars | None,
                 workers: int = 1, uacs: int = 1) -> None:
        self.workdir = workdir
        self.kamailio = kamailio
        self.registrars = registrars
        self.workers = workers
        self.uacs = uacs

    def __call__(self, kind: str, target: str, rate: int, seconds: float) -> Step:
        if kind == "register":
            assert self.registrars is not None
            return self.registrars.step(target, rate, seconds)
        return proxy_step(kind, target, rate, seconds, self.workdir, self.kamailio,
                          self.workers, self.uacs)


def summary(kind: str, steps: list[Step]) -> None:
    unit = UNIT[kind]
    print(f"\n{kind}: CPU per {unit} (median of the 0-failure steps), ratio imsbox/kamailio")
    rates = sorted({s.rate for s in steps})
    for rate in rates:
        cpu = {}
        for target in TARGETS:
            good = [s.cpu_ms for s in steps if s.target == target and s.rate == rate and s.ok]
            cpu[target] = statistics.median(good) if good else None
        text = "  ".join(f"{t} {c:.3f} ms" if c is not None else f"{t} -" for t, c in cpu.items())
        ratio = (f"  ratio {cpu['imsbox'] / cpu['kamailio']:.2f}"
                 if cpu["imsbox"] and cpu["kamailio"] else "")
        print(f"  {rate:6}/s  {text}{ratio}")
    for target in TARGETS:
        good = [s for s in steps if s.target == target and s.ok]
        best = max(good, key=lambda s: s.rate) if good else None
        failed = sorted({s.rate for s in steps if s.target == target and not s.ok
                         and (best is None or s.rate > best.rate)})
        limit = f", failed at {failed[0]}/s" if failed else ", no failure up to the last rate"
        text = f"{best.rate}/s (SIPp measured {best.uac.call_rate:.1f}/s)" if best else "none"
        print(f"  highest with 0 failures: {target:9} {text}{limit}")


def load_average() -> str:
    """1, 5 and 15 minute load averages (the machine may be shared)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def rate_list(text: str) -> list[int]:
    return [int(r) for r in text.split(",") if r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default="call,message,register")
    parser.add_argument("--call-rates", default="300,600,900,1200,1600,2000,2400")
    parser.add_argument("--message-rates", default="300,600,1000,1600,2400")
    parser.add_argument("--register-rates", default="200,400,800,1600")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of load per step")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each step per target")
    parser.add_argument("--retries", type=int, default=1, help="re-runs of a failed step")
    parser.add_argument("--users", type=int, default=40000, help="users for REGISTER steps")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    parser.add_argument("--workers", type=int, default=1,
                        help="imsbox sip-proxy worker processes (call, message)")
    parser.add_argument("--uacs", type=int, default=1,
                        help="SIPp uac processes, on consecutive ports (call, message; "
                             "both targets)")
    args = parser.parse_args()
    kamailio = require_tools()
    kinds = args.kinds.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="bench-vs-kamailio-"))
    results: dict[str, list[Step]] = {}
    print(f"imsbox workers: {args.workers}, SIPp uacs: {args.uacs}, "
          f"load average before: {load_average()}", flush=True)
    try:
        print(f"{'kind':8} {'target':9} {'rate':>6} {'count':>7} {'achieved':>9} "
              f"{'success':>7} {'failed':>6} {'cpu s':>7} {'ms/unit':>8}", flush=True)
        for kind in kinds:
            rates = rate_list(getattr(args, f"{kind}_rates"))
            if kind == "register":
                with Registrars(workdir / "registrars", args.users) as registrars:
                    run = StepRunner(workdir, kamailio, registrars)
                    results[kind] = ramp(kind, rates, args.seconds, args.repeat,
                                         args.retries, run)
            else:
                run = StepRunner(workdir, kamailio, None, args.workers, args.uacs)
                results[kind] = ramp(kind, rates, args.seconds, args.repeat, args.retries, run)
        for kind, steps in results.items():
            summary(kind, steps)
        print(f"\nload average after: {load_average()}")
    finally:
        if args.keep:
            print(f"logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
