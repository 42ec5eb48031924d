"""Throw-away PostgreSQL and Redis servers on loopback, for tests and benchmarks.

Each runs the Debian engine's own binaries in a fresh temporary directory
(its data, its Unix socket), listens on 127.0.0.1 only, and is removed with
the directory when stopped. PostgreSQL refuses to run as root, so as root the
server runs as the ``postgres`` user the Debian package creates.

Missing binaries raise :class:`BackendUnavailable` with the package to install
(``scripts/setup.sh`` installs both), never a silent skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["BackendUnavailable", "ThrowawayPostgres", "ThrowawayRedis", "free_port"]

HOST = "127.0.0.1"


class BackendUnavailable(RuntimeError):
    """The engine cannot be started here; the message says what is missing."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path,
               timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BackendUnavailable(f"{what} exited with {proc.returncode}: "
                                     f"{log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
            return
        time.sleep(0.05)
    raise BackendUnavailable(f"{what} did not listen on {HOST}:{port} in {timeout:.0f} s")


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise BackendUnavailable(f"PostgreSQL's {name} not found: install the Debian "
                                 "package postgresql (scripts/setup.sh does)")
    return found


class ThrowawayPostgres:
    """``initdb`` + ``postgres -D dir -k dir -p PORT -h 127.0.0.1``; database ``imsbox``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="imsbox-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._initialized = False

    @property
    def url(self) -> str:
        return f"postgresql://{self._user}@{HOST}:{self.port}/imsbox"

    def _run_as(self) -> dict[str, object]:
        """Popen arguments that drop root to ``postgres`` in the child itself (so
        signals reach the server, not a runuser wrapper)."""
        if os.geteuid() != 0:
            return {}
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise BackendUnavailable("running as root but there is no 'postgres' user to run "
                                     "PostgreSQL as: install the Debian package postgresql") from None
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
                "cwd": str(self.dir)}

    def start(self) -> ThrowawayPostgres:
        if not self._initialized:
            self._init()
        self.log.touch()
        if os.geteuid() == 0:
            shutil.chown(self.log, "postgres")
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen([
                _postgres_bin("postgres"), "-D", str(self.data), "-k", str(self.dir),
                "-p", str(self.port), "-h", HOST, "-c", "fsync=off",
                "-c", "max_connections=200"], stdout=out, stderr=subprocess.STDOUT,
                **self._run_as())  # type: ignore[call-overload]
        _wait_port(self.port, self._proc, "postgres", self.log)
        if not self._has_db():
            self._psql("CREATE DATABASE imsbox")
        return self

    def _init(self) -> None:
        if os.geteuid() == 0:
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, "postgres")
        run = subprocess.run([
            _postgres_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", self._user,
            "-E", "UTF8", "--no-sync"], capture_output=True, check=False,
            **self._run_as())  # type: ignore[call-overload]
        if run.returncode:
            raise BackendUnavailable(f"initdb failed: {run.stderr.decode(errors='replace')}")
        self._initialized = True

    def _psql(self, sql: str, db: str = "postgres") -> str:
        run = subprocess.run([
            _postgres_bin("psql"), "-h", str(self.dir), "-p", str(self.port), "-U", self._user,
            "-d", db, "-At", "-c", sql], capture_output=True, check=False, timeout=30,
            **self._run_as())  # type: ignore[call-overload]
        if run.returncode:
            raise BackendUnavailable(f"psql {sql!r}: {run.stderr.decode(errors='replace')}")
        return str(run.stdout.decode())

    def _has_db(self) -> bool:
        return self._psql("SELECT 1 FROM pg_database WHERE datname = 'imsbox'").strip() == "1"

    def reset(self) -> None:
        """Drop and recreate the ``imsbox`` database: an empty store for the next test."""
        self._psql("DROP DATABASE IF EXISTS imsbox WITH (FORCE)")
        self._psql("CREATE DATABASE imsbox")

    def stop(self, fast: bool = False) -> None:
        """Shut the server down (SIGQUIT when ``fast``: as a crash would); data is kept."""
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGQUIT if fast else signal.SIGINT)
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ThrowawayRedis:
    """``redis-server --port N --bind 127.0.0.1 --save '' --dir tmp``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="imsbox-redis-"))
        self.log = self.dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> ThrowawayRedis:
        binary = shutil.which("redis-server")
        if not binary:
            raise BackendUnavailable("redis-server not found: install the Debian package "
                                     "redis-server (scripts/setup.sh does)")
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", HOST, "--save", "",
                 "--appendonly", "no", "--dir", str(self.dir)],
                stdout=out, stderr=subprocess.STDOUT)
        _wait_port(self.port, self._proc, "redis-server", self.log)
        return self

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
