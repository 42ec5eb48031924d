"""The real ``imsbox`` CLI in a subprocess: provisioning, ``serve``, REGISTER, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from imsbox.config import Config
from imsbox.sip.endpoint import HandlerModule, SipEndpoint
from imsbox.sip.transport.base import Destination
from imsbox.sip.transport.tls import CERT_FILE, KEY_FILE, client_context
from imsbox.ue.register import register
from imsbox.testing import FAST_TIMERS, LoopbackPorts, write_loopback_config

pytestmark = pytest.mark.timeout(60)
SRC = Path(__file__).resolve().parents[2] / "src"


def imsbox(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imsbox.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


class Serve:
    """``imsbox serve`` running in the background; its output read by threads."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "imsbox.cli", "serve", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=_env())
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout.put),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append),
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream: IO[str] | None, put: Callable[[str], None]) -> None:
        assert stream is not None
        for line in stream:
            put(line.rstrip("\n"))

    def lines(self, count: int, timeout: float = 10.0) -> list[str]:
        out, deadline = [], time.monotonic() + timeout
        while len(out) < count:
            try:
                out.append(self.stdout.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"serve printed {out} then nothing; exit status "
                                     f"{self.proc.poll()}, stderr: {self.stderr}") from None
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, str, str]:
        """Signal, wait, and return (status, rest of stdout, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        for thread in self._threads:
            thread.join(5)
        rest = []
        while not self.stdout.empty():
            rest.append(self.stdout.get())
        return status, "\n".join(rest), "\n".join(self.stderr)


def startup_lines(config: Config, nodes: tuple[str, ...] = ("pcscf", "icscf", "scscf"),
                  ) -> set[str]:
    out = set()
    for name in nodes:
        node = config.nodes[name]
        for host in node.hosts:
            for transport in node.transports:
                port = node.tls_port if transport == "tls" else node.port
                out.add(f"{name} listening on {transport} {host}:{port}")
    return out


async def register_over_udp(config: Config, password: str) -> list[int]:
    endpoint = SipEndpoint(FAST_TIMERS, modules=[HandlerModule(lambda ctx: None)])
    try:
        await endpoint.listen("udp", "127.0.0.1", 0)
        pcscf = Destination("udp", config.pcscf.host, config.pcscf.port)
        reg = await register(endpoint, "alice", password, config.domain, pcscf)
        return reg.statuses
    finally:
        await endpoint.close()


async def tls_handshake(config: Config, cafile: Path) -> str:
    """Connect to the P-CSCF's TLS port trusting only the generated certificate."""
    context = client_context(cafile)
    reader, writer = await asyncio.open_connection(
        config.pcscf.host, config.pcscf.tls_port, ssl=context)
    version = writer.get_extra_info("ssl_object").version()
    writer.close()
    await writer.wait_closed()
    return version


def test_provision_serve_register_and_sigterm(tmp_path: Path) -> None:
    ports = LoopbackPorts()
    config_path, config = write_loopback_config(tmp_path, ports)
    data = str(tmp_path / "cli-data")
    common = ("--data", data, "--config", str(config_path))
    added = imsbox("user", "add", "alice", "--password", "secret", *common)
    assert added.returncode == 0, added.stderr
    assert "alice@ims.test" in added.stdout and "secret" not in added.stdout
    listed = imsbox("user", "list", *common)
    assert listed.returncode == 0 and "alice@ims.test  sip:alice@ims.test" in listed.stdout

    # --port/--tls-port override what imsbox.toml says for the P-CSCF
    port, tls_port = ports(), ports()
    config = config.with_node("pcscf", port=port, tls_port=tls_port)
    server = Serve(*common, "--port", str(port), "--tls-port", str(tls_port), "--trace")
    try:
        expected = startup_lines(config)
        assert set(server.lines(len(expected))) == expected
        cert, key = Path(data) / CERT_FILE, Path(data) / KEY_FILE
        assert cert.exists() and key.exists() and key.stat().st_mode & 0o077 == 0
        assert asyncio.run(tls_handshake(config, cert)).startswith("TLS")
        assert asyncio.run(register_over_udp(config, "secret")) == [401, 200]
        assert asyncio.run(register_over_udp(config, "wrong"))[-1] == 403
    finally:
        status, trace, stderr = server.stop(signal.SIGTERM)
    assert status == 0, stderr
    assert "Traceback" not in stderr
    assert f"--- pcscf in  udp 127.0.0.1:{port} <- 127.0.0.1:" in trace
    assert "REGISTER sip:ims.test SIP/2.0" in trace and "SIP/2.0 401 " in trace
    assert "--- scscf out" in trace
    assert "--- messaging_as in" in trace  # the name of its listening lines

    # the registration is in the data dir after the shutdown
    listed = imsbox("user", "list", *common)
    assert "alice@ims.test" in listed.stdout


def test_users_and_groups_are_managed_while_serve_runs(tmp_path: Path) -> None:
    """The CLI and a running server share the store file: a user added now can
    register at once; listing and removing work too."""
    config_path, config = write_loopback_config(tmp_path)
    common = ("--config", str(config_path))
    server = Serve(*common)
    try:
        expected = startup_lines(config)
        assert set(server.lines(len(expected))) == expected
        added = imsbox("user", "add", "alice", "--password", "secret", *common)
        assert added.returncode == 0, added.stderr
        assert "migration" not in added.stderr
        assert asyncio.run(register_over_udp(config, "secret")) == [401, 200]
        group = imsbox("group", "add", "sip:group-team@ims.test", "alice", *common)
        assert group.returncode == 0, group.stderr
        assert "sip:group-team@ims.test" in imsbox("group", "list", *common).stdout
        assert imsbox("group", "remove", "sip:group-team@ims.test", *common).returncode == 0
        assert "alice@ims.test" in imsbox("user", "list", *common).stdout
        assert imsbox("user", "remove", "alice", *common).returncode == 0
        assert asyncio.run(register_over_udp(config, "secret"))[-1] == 403
    finally:
        status, _, stderr = server.stop(signal.SIGTERM)
    assert status == 0 and "Traceback" not in stderr, stderr


def test_one_role_alone_and_sigint(tmp_path: Path) -> None:
    config_path, config = write_loopback_config(tmp_path)
    server = Serve("--config", str(config_path), "--role", "icscf")
    try:
        expected = startup_lines(config, ("icscf",))
        assert set(server.lines(len(expected))) == expected
    finally:
        status, rest, stderr = server.stop(signal.SIGINT)
    assert status == 0, stderr
    assert "listening" not in rest  # nothing else started
    server = Serve("--config", str(config_path), "--role", "messaging_as")  # = --role as
    try:
        expected = startup_lines(config, ("messaging_as",))
        assert set(server.lines(len(expected))) == expected
    finally:
        status, rest, stderr = server.stop(signal.SIGTERM)
    assert status == 0, stderr
    assert "listening" not in rest


@pytest.mark.parametrize(("args", "says"), [
    (("--port", "0"), "--port"),
    (("--port", "5o6o"), "--port"),
    (("--host", "not a host"), "--host"),
    (("--role", "mgcf"), "--role"),
    (("--role", "hss"), "HSS has no network interface"),
    (("--cache", "redis://127.0.0.1:6379"), "goes with a shared PostgreSQL store"),
    (("--store", "postgresql://imsbox@127.0.0.1:1/imsbox"),
     "cannot reach PostgreSQL store postgresql://imsbox@127.0.0.1:1/imsbox"),
    (("--store", "mysql://db/imsbox"), "unknown scheme"),
    (("--config", "missing.toml"), "file not found"),
    (("--domain", "bad domain!"), "--domain"),
])
def test_bad_options_exit_2_with_what_to_fix(tmp_path: Path, args: tuple[str, ...],
                                             says: str) -> None:
    result = imsbox("serve", "--data", str(tmp_path), *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "listening" not in result.stdout


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    config_path, config = write_loopback_config(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((config.pcscf.host, config.pcscf.port))
        result = imsbox("serve", "--config", str(config_path))
    assert result.returncode == 2, result.stderr
    assert f"pcscf: cannot listen on 127.0.0.1 port {config.pcscf.port}" in result.stderr
    assert "--port" in result.stderr and "Traceback" not in result.stderr


def test_version() -> None:
    from imsbox import __version__
    result = imsbox("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"imsbox {__version__}"
