"""IMS benchmark: REGISTER/s with Digest and calls/s through the core, with SIPp,
imsbox (`imsbox serve`) beside Kamailio (tests/bench/kamailio-registrar.cfg:
stateful proxy + registrar + auth_db over db_text), on loopback.

Run:  python tests/bench/bench_ims.py [--reg-rates 100,200,...] [--call-rates 20,40,...]
      [--step-seconds 10] [--only imsbox|kamailio]

For each target and each rate, in increasing order, until the first step with
a failed SIPp call:

* REGISTER: SIPp registers ``rate * step_seconds`` (at least 500) users not
  registered before (register.xml: REGISTER, 401, REGISTER with Digest MD5,
  200), one user per SIPp call, ``-l`` unlimited;
* calls: a SIPp uas registered as ``callee`` and a SIPp uac registered as
  ``caller`` (uac_call.xml / uas_call.xml: INVITE, 180, 200, ACK, BYE, 200
  along the Record-Route set), ``rate * step_seconds`` calls.  imsbox: UE ->
  P-CSCF -> S-CSCF -> I-CSCF -> S-CSCF -> P-CSCF -> UE (the real IMS routing,
  five hops in one Python process); Kamailio: UE -> proxy -> UE.

The table gives, per target, the highest offered rate with 0 failed calls and
the rate SIPp achieved there (CallRate over the run), and for every step the
achieved rate, failures and retransmissions.  Not a test (no test_ functions).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import mkdtemp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.interop.ims_sipp import (  # noqa: E402
    ImsCore, call_scenarios, continued_unexpected, register_users, user_names,
)
from tests.interop.sipp import ProxyProcess, SippResult, free_udp_ports  # noqa: E402

PASSWORD = "bench-secret"
DOMAIN = "ims.test"
HERE = Path(__file__).resolve().parent
KAMAILIO_CFG = HERE / "kamailio-registrar.cfg"
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"


@dataclass
class Step:
    kind: str
    rate: float
    calls: int
    result: SippResult
    extra: str = ""

    @property
    def ok(self) -> bool:
        return self.result.returncode == 0 and self.result.failed == 0 and \
            self.result.successful == self.calls


class KamailioTarget:
    """Kamailio with the registrar config, users in a db_text subscriber table."""

    name = "kamailio"

    def __init__(self, workdir: Path, users: list[str]) -> None:
        self.workdir = workdir
        self.port = free_udp_ports(1)[0]
        db = workdir / "db"
        db.mkdir(parents=True, exist_ok=True)
        (db / "version").write_text("table_name(string) table_version(int)\nsubscriber:7\n")
        rows = [f"{i + 1}:{u}:{DOMAIN}:{PASSWORD}" for i, u in enumerate(users)]
        (db / "subscriber").write_text(
            "id(int,auto) username(string) domain(string) password(string)\n"
            + "\n".join(rows) + "\n")
        cfg = KAMAILIO_CFG.read_text().replace("LISTEN_PORT", str(self.port)) \
            .replace("MODULES_DIR", KAMAILIO_MODULES).replace("DB_DIR", str(db)) \
            .replace("DOMAIN", DOMAIN)
        self.cfg = workdir / "kamailio.cfg"
        self.cfg.write_text(cfg)
        kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
        self.proc = ProxyProcess([kamailio, "-f", str(self.cfg), "-DD", "-E", "-m", "256",
                                  "-M", "16"], self.port, workdir / "kamailio.log")

    @property
    def remote(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def __enter__(self) -> KamailioTarget:
        self.proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()

    def alive(self) -> bool:
        return self.proc.alive()


class ImsboxTarget:
    name = "imsbox"

    def __init__(self, workdir: Path, users: list[str]) -> None:
        self.core = ImsCore.create(workdir, users, PASSWORD)

    @property
    def remote(self) -> tuple[str, int]:
        return self.core.pcscf

    def __enter__(self) -> ImsboxTarget:
        self.core.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.core.stop()

    def alive(self) -> bool:
        return self.core.alive()


class _Remote:
    """What register_users/call_scenarios need of a target: pcscf and domain."""

    def __init__(self, remote: tuple[str, int]) -> None:
        self.pcscf = remote
        self.domain = DOMAIN


def ramp_registrations(target, rates: list[float], seconds: float, users: list[str],
                       workdir: Path) -> list[Step]:
    steps, offset = [], 0
    remote = _Remote(target.remote)
    for rate in rates:
        count = max(500, int(rate * seconds))
        names = users[offset:offset + count]
        offset += count
        (port,) = free_udp_ports(1)
        result = register_users(remote, names, PASSWORD, port=port, workdir=workdir,
                                rate=rate, limit=100000, timeout=max(60, 4 * seconds),
                                name=f"{target.name}-reg-{int(rate)}")
        step = Step("REGISTER", rate, len(names), result)
        steps.append(step)
        report(target.name, step)
        if not step.ok or not target.alive():
            break
        time.sleep(2)
    return steps


def ramp_calls(target, rates: list[float], seconds: float, workdir: Path) -> list[Step]:
    remote = _Remote(target.remote)
    uas_port, uac_port = free_udp_ports(2)
    for name, port in (("callee", uas_port), ("caller", uac_port)):
        reg = register_users(remote, [name], PASSWORD, port=port, workdir=workdir,
                             timeout=20, name=f"{target.name}-register-{name}")
        if reg.successful != 1:
            raise RuntimeError(f"{target.name}: cannot register {name}:\n{reg.describe()}")
    steps = []
    for rate in rates:
        calls = int(rate * seconds)
        uas, uac = call_scenarios(remote, caller="caller", callee="callee",
                                  uac_port=uac_port, uas_port=uas_port, workdir=workdir,
                                  calls=calls, rate=rate, limit=100000,
                                  timeout=max(90, 4 * seconds))
        uas.name = uas.name + f"-{int(rate)}"
        with uas:
            time.sleep(0.3)
            with uac:
                result = uac.wait()
            uas_result = uas.wait(20 if result.returncode == 0 else 5)
        tolerated = len(continued_unexpected(uas_result))
        step = Step("call", rate, calls, result,
                    f"uas ok {uas_result.successful}/{calls}, tolerated {tolerated}")
        if uas_result.failed or uas_result.successful != calls:
            step.result.returncode = step.result.returncode or 1
        steps.append(step)
        report(target.name, step)
        if not step.ok or not target.alive():
            break
        time.sleep(3)
    return steps


def report(target: str, step: Step) -> None:
    r = step.result
    print(f"  {target:9} {step.kind:8} offered {step.rate:7.0f}/s  achieved {r.call_rate:7.1f}/s"
          f"  ok {r.successful:6}/{step.calls:<6} failed {r.failed:5}"
          f"  retrans {r.count('Retransmissions'):6}  {step.extra}", flush=True)


SUSTAINED = 0.9  # achieved / offered for a step to count as keeping up


def best(steps: list[Step], sustained: bool) -> Step | None:
    """The 0-failure step with the highest achieved rate; ``sustained``: only
    steps that also kept up with the offered rate (no backlog building up)."""
    good = [s for s in steps if s.ok and
            (not sustained or s.result.call_rate >= SUSTAINED * s.rate)]
    return max(good, key=lambda s: s.result.call_rate) if good else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reg-rates", default="100,200,300,400,600,800,1200,1600,2400")
    parser.add_argument("--call-rates", default="20,30,40,60,80,120,160,240,320,480")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--only", choices=("imsbox", "kamailio"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    reg_rates = [float(x) for x in args.reg_rates.split(",")]
    call_rates = [float(x) for x in args.call_rates.split(",")]
    total = sum(max(500, int(r * args.step_seconds)) for r in reg_rates)
    users = user_names(total, prefix="u") if total <= 10000 else \
        [f"u{i:06d}" for i in range(total)]
    users += ["caller", "callee"]
    work = Path(mkdtemp(prefix="imsbox-bench-ims-"))
    print(f"work dir {work}; {len(users)} subscribers; steps of {args.step_seconds:g} s",
          flush=True)
    results: dict[str, tuple[list[Step], list[Step]]] = {}
    targets = [("imsbox", ImsboxTarget), ("kamailio", KamailioTarget)]
    try:
        for name, cls in targets:
            if args.only and args.only != name:
                continue
            wd = work / name
            wd.mkdir()
            t0 = time.monotonic()
            target = cls(wd, users)
            print(f"{name}: provisioned in {time.monotonic() - t0:.1f} s", flush=True)
            with target:
                regs = ramp_registrations(target, reg_rates, args.step_seconds, users, wd)
                calls = ramp_calls(target, call_rates, args.step_seconds, wd)
            results[name] = (regs, calls)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"{'':10} {'REGISTER/s (Digest)':>30}   {'calls/s':>30}")
    print(f"{'target':10} {'sustained':>14} {'peak 0-fail':>15}   {'sustained':>14} "
          f"{'peak 0-fail':>15}")
    figures: dict[str, list[float]] = {}
    for name, (regs, calls) in results.items():
        cells, figures[name] = [], []
        for steps in (regs, calls):
            for sustained in (True, False):
                step = best(steps, sustained)
                rate = step.result.call_rate if step else 0.0
                figures[name].append(rate)
                cells.append(f"{rate:7.1f} ({step.rate if step else 0:4.0f})")
        print(f"{name:10} {cells[0]:>14} {cells[1]:>15}   {cells[2]:>14} {cells[3]:>15}")
    if "imsbox" in figures and "kamailio" in figures and all(figures["kamailio"]):
        ratios = [f"{a / b:7.2f}" for a, b in zip(figures["imsbox"], figures["kamailio"])]
        print(f"{'ratio':10} {ratios[0]:>14} {ratios[1]:>15}   {ratios[2]:>14} "
              f"{ratios[3]:>15}   (imsbox / kamailio)")
    print(f"achieved rate (offered rate of that step). sustained: 0 failed SIPp calls and "
          f"achieved >= {SUSTAINED:.0%} of offered; peak 0-fail: 0 failed calls, backlog "
          "allowed. A ramp stops at its first failing step or the end of its list, so the "
          "last rate of a list is a lower bound.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
