"""SIPp against the IMS core (``imsbox serve`` as a real CLI subprocess).

    core = ImsCore.create(tmp, users=[...], password="secret")   # provisioned, config written
    with core:                                                  # imsbox serve running
        result = register_users(core, names, port=..., workdir=tmp, rate=100)

* :class:`ImsCore` writes an imsbox.toml with every node on a free loopback
  port (``write_loopback_config``), provisions subscribers in-process through
  the store API (``provisioning.add_user``; 1,000 take well under a second),
  then runs ``python -m imsbox.cli serve --config FILE --data DIR`` in its own
  process group with the same imsbox package the test imported (PYTHONPATH),
  ready once the P-CSCF's UDP port is bound (the P-CSCF starts last).
  Leaving the ``with`` block sends SIGTERM, then SIGKILL to what is left;
  ``exit_code`` is the serve process's status (0 = clean shutdown).
* The S-CSCF challenges with ``[registrar] digest_algorithms`` in that order.
  SIPp 3.6 answers only the topmost WWW-Authenticate and knows only MD5
  ("createAuthHeader: authentication must use MD5 or AKAv1-MD5" on a
  SHA-256 first challenge), so the SIPp runs use ``["MD5", "SHA-256"]``
  (:data:`SIPP_ALGORITHMS`); imsbox's default is SHA-256 first (RFC 8760).
* Scenarios live in ``ims_scenarios/``: ``register.xml`` (REGISTER, 401,
  REGISTER with [authentication], 200; one user per call from an injection
  file), ``uac_call.xml`` / ``uas_call.xml`` (a call between two registered
  UEs through P-CSCF, S-CSCF, I-CSCF, S-CSCF, P-CSCF with Record-Route).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imsbox
from imsbox.config import Config, load_config
from imsbox.ims.provisioning import add_user, apply_config
from imsbox.store import open_store
from imsbox.testing import LoopbackPorts, write_loopback_config

from .sipp import ProxyProcess, Sipp, SippResult, udp_bound

__all__ = ["HOST", "IMS_SCENARIOS", "SIPP_ALGORITHMS", "ImsCore", "ServeProcess",
           "call_scenarios", "continued_unexpected", "register_users", "serve_command", "user_names",
           "write_users_csv"]

HOST = "127.0.0.1"
IMS_SCENARIOS = Path(__file__).resolve().parent / "ims_scenarios"
SIPP_ALGORITHMS = ("MD5", "SHA-256")
# The directory holding the imsbox package this process imported: the serve
# subprocess runs the same code (an installed copy elsewhere must not win).
IMSBOX_PATH = str(Path(imsbox.__file__).resolve().parents[1])


def user_names(count: int, prefix: str = "user") -> list[str]:
    """user0000, user0001, ... (zero-padded to 4 digits)."""
    return [f"{prefix}{i:04d}" for i in range(count)]


def write_users_csv(path: Path, names: Iterable[str], password: str) -> Path:
    """A SIPp injection file: SEQUENTIAL, one ``NAME;[authentication ...]`` per line.

    SIPp 3.6 does not expand ``[fieldN]`` inside ``[authentication ...]``, but a
    field may hold the whole keyword, which the scenario then uses as ``[field1]``.
    """
    lines = ["SEQUENTIAL"] + [f"{n};[authentication username={n} password={password}]"
                              for n in names]
    path.write_text("\n".join(lines) + "\n")
    return path


def serve_command(config: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "imsbox.cli", "serve", "--config", str(config),
            "--data", str(data)]


class ServeProcess(ProxyProcess):
    """ProxyProcess (stop, log, cpu_seconds) whose child runs the imported
    imsbox package (PYTHONPATH), ready once UDP ``port`` is bound."""

    def start(self) -> ServeProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (IMSBOX_PATH, env.get("PYTHONPATH", "")) if p)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while not udp_bound(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"imsbox serve did not start listening on {self.port}:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)
        return self


@dataclass
class ImsCore:
    """A provisioned imsbox network on free loopback ports; ``with`` runs ``imsbox serve``."""

    directory: Path
    config_path: Path
    config: Config
    algorithms: Sequence[str] = SIPP_ALGORITHMS
    process: ServeProcess | None = field(default=None, init=False)
    exit_code: int | None = field(default=None, init=False)

    @classmethod
    def create(cls, directory: Path, users: Iterable[str], password: str,
               algorithms: Sequence[str] = SIPP_ALGORITHMS) -> ImsCore:
        directory.mkdir(parents=True, exist_ok=True)
        path, _ = write_loopback_config(directory, LoopbackPorts())
        algos = ", ".join(f'"{a}"' for a in algorithms)
        with open(path, "a") as fh:
            fh.write(f"\n[registrar]\ndigest_algorithms = [{algos}]\n")
        config = load_config(path)
        async def in_store() -> None:
            async with open_store(config.store_location) as store:
                await apply_config(store, config, replace=False)
                for name in users:
                    await add_user(store, config.domain, name, password)
        asyncio.run(in_store())
        return cls(directory, path, config, tuple(algorithms))

    @property
    def domain(self) -> str:
        return self.config.domain

    @property
    def pcscf(self) -> tuple[str, int]:
        return (self.config.pcscf.host, self.config.pcscf.port)

    @property
    def ports(self) -> list[int]:
        """UDP ports of P-CSCF, I-CSCF, S-CSCF."""
        return [self.config.nodes[n].port for n in ("pcscf", "icscf", "scscf")]

    @property
    def log_file(self) -> Path:
        return self.directory / "serve.log"

    def start(self) -> ImsCore:
        self.process = ServeProcess(serve_command(self.config_path, self.config.data_dir),
                                    self.config.pcscf.port, self.log_file, start_timeout=30)
        self.process.start()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def log_tail(self, chars: int = 3000) -> str:
        return self.process.log_tail(chars) if self.process is not None else ""

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> int | None:
        if self.process is not None and self.exit_code is None:
            self.exit_code = self.process.stop()
        return self.exit_code

    def __enter__(self) -> ImsCore:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def register_users(core: ImsCore, names: Sequence[str], password: str, *, port: int,
                   workdir: Path, rate: float = 100, limit: int = 200,
                   timeout: float = 120, name: str | None = None,
                   extra: Sequence[str] = ()) -> SippResult:
    """SIPp registers ``names`` (one REGISTER 401 / REGISTER 200 exchange each)
    from local UDP ``port`` through the P-CSCF; returns when sipp exits."""
    name = name or f"register-{port}"
    csv = write_users_csv(workdir / f"{name}.csv", names, password)
    with Sipp(IMS_SCENARIOS / "register.xml", port=port, workdir=workdir,
              remote=core.pcscf, calls=len(names), rate=rate, limit=limit,
              timeout=timeout, name=name,
              extra=["-inf", str(csv), "-key", "domain", core.domain, *extra]) as sipp:
        return sipp.wait()


def call_scenarios(core: ImsCore, *, caller: str, callee: str, uac_port: int,
                   uas_port: int, workdir: Path, calls: int, rate: float,
                   limit: int = 500, timeout: float = 150,
                   pause_ms: int = 0) -> tuple[Sipp, Sipp]:
    """The uas (answering as ``callee`` on ``uas_port``) and uac (``caller`` on
    ``uac_port``, to the P-CSCF) Sipp objects, not started.  Both users must
    be registered from those ports first (:func:`register_users`).

    The uas runs with ``-default_behaviors all,-abortunexp``: a stalled core
    legitimately retransmits an INVITE after the uas answered it, or passes
    on a second ACK (the caller re-ACKs each 200 retransmission), which SIPp
    would otherwise abort the call on; it logs them ("Continuing call on
    unexpected message") and the call still has to complete its scenario.
    """
    uas = Sipp(IMS_SCENARIOS / "uas_call.xml", port=uas_port, workdir=workdir, calls=calls,
               timeout=timeout, name=f"uas-{uas_port}",
               extra=["-key", "callee", callee, "-default_behaviors", "all,-abortunexp"])
    uac = Sipp(IMS_SCENARIOS / "uac_call.xml", port=uac_port, workdir=workdir,
               remote=core.pcscf, calls=calls, rate=rate, limit=limit, timeout=timeout,
               name=f"uac-{uac_port}",
               extra=["-key", "caller", caller, "-key", "domain", core.domain, "-s", callee,
                      "-d", str(pause_ms)])
    return uas, uac


def continued_unexpected(result: SippResult) -> list[str]:
    """The first line of each "Continuing call on unexpected message" warning."""
    if result.error_file is None or not result.error_file.exists():
        return []
    text = result.error_file.read_text(errors="replace")
    return [line[line.index("Continuing"):][:200] for line in text.splitlines()
            if "Continuing call on unexpected message" in line]
