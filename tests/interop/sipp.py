"""Run SIPp (3.6) as a subprocess and read back what it measured.

    with Sipp("uas", port=5070, workdir=tmp_path, calls=50) as uas:
        ...                               # uas.start() was called by __enter__
        result = uas.wait(60)             # SippResult; kills sipp on timeout
    assert result.ok, result.describe()

``ProxyProcess`` runs the proxy under test (``imsbox sip-proxy`` through
``imsbox_proxy_command``, or Kamailio) the same way.

Every run gets ``-trace_stat`` (the CSV of counters, read into
``SippResult.stats`` from its last line), ``-trace_err`` (unexpected and
retransmitted messages, for assertion messages) and its screen output in a
file.  SIPp's own ``-timeout N -timeout_error`` bounds the run, and ``wait``
kills the process group if that did not work; leaving the ``with`` block
always kills it.  Exit codes (SIPp manual): 0 every call succeeded, 1 some
call failed, 97 stopped by a command, 99 ended without processing a call,
255/254 fatal error / bind failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Sequence

__all__ = ["SippMissing", "SippResult", "Sipp", "aborted_calls", "ProxyProcess",
           "imsbox_proxy_command", "sipp_binary", "tail", "free_udp_ports", "udp_bound"]


class SippMissing(RuntimeError):
    """sipp is not installed (Debian: apt-get install sip-tester)."""


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise SippMissing("sipp not found on PATH (Debian: apt-get install sip-tester)")
    return path


def tail(path: Path | None, chars: int = 2000) -> str:
    """The last ``chars`` characters of a text file ('' if it does not exist)."""
    if path is None or not path.exists():
        return ""
    data = path.read_bytes()[-chars:]
    return data.decode("utf-8", "replace")


def free_udp_ports(count: int, span: int = 1) -> list[int]:
    """``count`` UDP ports p, each with p..p+span-1 free on every address."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("0.0.0.0", 0))
            base = s.getsockname()[1]
        if base + span > 65535 or any(p in ports for p in range(base, base + span)):
            continue
        if all(_udp_free(p) for p in range(base, base + span)):
            ports.append(base)
    return ports


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@dataclass
class SippResult:
    """How one sipp run ended: exit code, counters, file tails."""

    name: str
    returncode: int | None            # None: killed after the hard timeout
    error_file: Path | None = None
    stats: dict[str, str] = field(default_factory=dict)
    errors: str = ""
    screen: str = ""
    seconds: float = 0.0

    def count(self, name: str) -> int:
        """A cumulative counter, e.g. ``count("SuccessfulCall")`` (0 when absent)."""
        value = self.stats.get(f"{name}(C)", "0")
        return int(value) if value.isdigit() else 0

    @property
    def successful(self) -> int:
        return self.count("SuccessfulCall")

    @property
    def failed(self) -> int:
        return self.count("FailedCall")

    @property
    def call_rate(self) -> float:
        """CallRate(C): calls per second over the whole run."""
        try:
            return float(self.stats.get("CallRate(C)", "0"))
        except ValueError:
            return 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0

    def describe(self) -> str:
        keys = ("TotalCallCreated", "SuccessfulCall", "FailedCall", "Retransmissions",
                "FailedMaxUDPRetrans", "FailedUnexpectedMessage", "FailedTimeoutOnRecv",
                "DeadCallMsgs", "OutOfCallMsgs")
        counters = ", ".join(f"{k}={self.count(k)}" for k in keys)
        kinds: dict[tuple[str, str, str], int] = {}
        for reason, _, doing, got in aborted_calls(self.error_file):
            kinds[(reason, doing, got)] = kinds.get((reason, doing, got), 0) + 1
        return (f"sipp {self.name}: exit {self.returncode} after {self.seconds:.1f} s, "
                f"{counters}\naborted calls (reason, while, received): {kinds}"
                f"\n--- {self.name} error file (tail) ---\n{self.errors}"
                f"\n--- {self.name} screen (tail) ---\n{self.screen}")


def read_stats(path: Path) -> dict[str, str]:
    """The last row of a ``-trace_stat`` CSV (``;``-separated) keyed by header."""
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) < 2:
        return {}
    header = lines[0].rstrip(";").split(";")
    return dict(zip(header, lines[-1].rstrip(";").split(";")))


_ABORT = re.compile(r"Aborting call on (.+?) for Call-I[dD] '([^']*)'(?:: while (.+?) "
                    r"\(index \d+\), received '(\S+(?: \d{3})?))?")


def aborted_calls(path: Path | None) -> list[tuple[str, str, str, str]]:
    """(reason, Call-ID, what sipp was doing, what it received: a method or
    "SIP/2.0 180") for each call sipp aborted, from its ``-trace_err`` file."""
    if path is None or not path.exists():
        return []
    text = path.read_text(errors="replace")
    return [(m[1], m[2], m[3] or "", m[4] or "") for m in _ABORT.finditer(text)]


class Sipp:
    """One sipp process running a built-in (``uac``/``uas``) or XML scenario."""

    def __init__(self, scenario: str | Path, *, port: int, workdir: Path,
                 remote: tuple[str, int] | None = None, calls: int | None = None,
                 rate: float | None = None, limit: int | None = None,
                 lost: int | None = None, timeout: float = 120.0, host: str = "127.0.0.1",
                 name: str | None = None, extra: Sequence[str] = ()) -> None:
        self.scenario = scenario
        self.port = port
        self.timeout = timeout
        self.name = name or f"{Path(str(scenario)).stem}-{port}"
        self.workdir = Path(workdir)
        self.stat_file = self.workdir / f"{self.name}.csv"
        self.error_file = self.workdir / f"{self.name}-errors.log"
        self.screen_file = self.workdir / f"{self.name}-screen.log"
        self.args = self._args(host, remote, calls, rate, limit, lost, extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    def _args(self, host: str, remote: tuple[str, int] | None, calls: int | None,
              rate: float | None, limit: int | None, lost: int | None,
              extra: Sequence[str]) -> list[str]:
        media, control = free_udp_ports(2, span=3)
        scen = ["-sn", str(self.scenario)] if self.scenario in ("uac", "uas") else \
            ["-sf", str(self.scenario)]
        args = [sipp_binary(), *scen, "-i", host, "-p", str(self.port),
                "-mp", str(media), "-cp", str(control), "-nostdin",
                "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
                "-trace_err", "-error_file", str(self.error_file),
                "-timeout", f"{int(self.timeout)}s", "-timeout_error"]
        for flag, value in (("-m", calls), ("-r", rate), ("-l", limit), ("-lost", lost)):
            if value is not None:
                args += [flag, str(value)]
        args += list(extra)
        if remote is not None:
            args.append(f"{remote[0]}:{remote[1]}")
        return args

    def start(self) -> Sipp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.screen_file, "wb") as screen:
            # own process group: wait()/kill() end sipp and nothing else
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=screen,
                                         stderr=subprocess.STDOUT, cwd=self.workdir,
                                         start_new_session=True)
        self._started = time.monotonic()
        return self

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for sipp to exit (at most ``timeout``, default its -timeout + 15 s)."""
        assert self.proc is not None, "start() first"
        try:
            code: int | None = self.proc.wait(self.timeout + 15 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        return self.result(code)

    def result(self, code: int | None) -> SippResult:
        return SippResult(self.name, code, self.error_file, read_stats(self.stat_file),
                          tail(self.error_file), tail(self.screen_file, 1500),
                          time.monotonic() - self._started)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL sipp's process group (it is the group leader) and reap it."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def __enter__(self) -> Sipp:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()


def udp_bound(port: int, host: str = "127.0.0.1") -> bool:
    """True if something has bound UDP ``host:port`` (we cannot bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def imsbox_proxy_command(listen: int, next_hop: int, host: str = "127.0.0.1",
                         workers: int = 1) -> list[str]:
    """The real CLI: ``imsbox sip-proxy --listen H:P --to H:P [--workers N]``."""
    return [sys.executable, "-m", "imsbox.cli", "sip-proxy", "--listen", f"{host}:{listen}",
            "--to", f"{host}:{next_hop}", *(["--workers", str(workers)] if workers > 1 else [])]


class ProxyProcess:
    """A SIP proxy under test (imsbox, Kamailio) as a subprocess in its own
    process group; ready once its UDP port is bound, output in ``log_file``."""

    def __init__(self, cmd: Sequence[str], port: int, log_file: Path,
                 start_timeout: float = 15.0) -> None:
        self.cmd = list(cmd)
        self.port = port
        self.log_file = Path(log_file)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProxyProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while not udp_bound(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.cmd[0]} did not start listening on {self.port}:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        return tail(self.log_file, chars)

    def cpu_seconds(self) -> float:
        """User+system CPU time so far of every live process in its group
        (a forking server's children too; Linux /proc)."""
        if self.proc is None:
            return 0.0
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(fields[2]) == self.proc.pid:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int | None:
        """SIGTERM the process group, then SIGKILL what is left of it (forked
        children too); returns the leader's exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:   # generous: a serve that just carried SIPp's load shares 2 cores with the suite
                proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)
        proc.wait(10)
        return proc.returncode

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
