"""Helpers for the third-party UA interop tests: ``imsbox serve`` as a real CLI
subprocess on free loopback ports, and baresip driven over ``ctrl_tcp``.

    net = ImsboxNet.start(tmp_path, users={"alice": "pw"})   # serve + users
    ...
    net.stop()                                               # SIGTERM, then kill

Ports: Debian's sipsak 0.9.8.1 cuts 5-digit ports in the URIs it writes
(``sip:127.0.0.1:59065`` becomes ``...:5906``), so the P-CSCF port comes
from :func:`low_port` (1024-9999).  The registrar offers MD5 only
(``[registrar] digest_algorithms``): sipsak 0.9.8 (built without OpenSSL)
and libre 1.1 (baresip 1.0) read only the first WWW-Authenticate and give up
on ``algorithm=SHA-256`` instead of picking the next challenge (RFC 8760 2.4).
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from imsbox.config import Config, load_config
from imsbox.testing import LoopbackPorts, write_loopback_config

from .phones import ENDED, ESTABLISHED, INCOMING, RINGING, WAIT, Events, wav_pcm

SRC = Path(__file__).resolve().parents[2] / "src"
HOST = "127.0.0.1"
DOMAIN = "ims.test"

__all__ = ["Baresip", "BaresipPhone", "ImsboxNet", "low_port", "pump"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


def _free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


_taken: set[int] = set()


def _low_range() -> range:
    """This test worker's share of 2000-9999 (pytest-xdist gwN), so two workers'
    phones never pick the same port between its probe and its bind."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return range(2000, 10000)
    index = int(worker[2:]) % 4
    return range(2000 + index * 2000, 4000 + index * 2000)


def rtp_ports() -> str:
    """baresip's RTP range: this worker's share of 10000-11999, below the test
    workers' node ports (imsbox.testing.worker_port) and the 4-digit ones."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) % 4 if worker.startswith("gw") and worker[2:].isdigit() else 0
    return f"{10000 + index * 500}-{10499 + index * 500}"


def low_port(span: int = 1) -> int:
    """A port in 2000-9999 (4 digits: see above) with it and the ``span - 1``
    after it free for UDP and TCP on 127.0.0.1, not handed out again."""
    ports = _low_range()
    for _ in range(500):
        port = random.randrange(ports.start, ports.stop - span)
        block = range(port, port + span)
        if not _taken.intersection(block) and all(_free(p) for p in block):
            _taken.update(block)
            return port
    raise RuntimeError("no free 4-digit port")


def pump(stream: IO[str] | None, put: Callable[[str], None]) -> threading.Thread:
    def run() -> None:
        assert stream is not None
        for line in stream:
            put(line.rstrip("\n"))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def imsbox_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imsbox.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=_env(), stdin=subprocess.DEVNULL)


@dataclass
class ImsboxNet:
    """``imsbox serve --trace`` in the background, every node on a free port."""

    config: Config
    config_path: Path
    data: Path
    pcscf_port: int
    proc: subprocess.Popen[str] | None = None
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _lines: queue.Queue[str] = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, directory: Path, users: dict[str, str],
              extra_toml: str = '[registrar]\ndigest_algorithms = ["MD5"]\n',
              ) -> ImsboxNet:
        directory.mkdir(parents=True, exist_ok=True)
        path, _ = write_loopback_config(directory, LoopbackPorts())
        path.write_text(path.read_text() + "\n" + extra_toml)
        # the P-CSCF on 4-digit ports (--port/--tls-port override imsbox.toml)
        port = low_port()
        config = load_config(path).with_node("pcscf", port=port, tls_port=low_port())
        net = cls(config, path, directory / "data", port)
        for name, password in users.items():
            added = imsbox_cli("user", "add", name, "--password", password, *net.common)
            if added.returncode != 0:
                raise RuntimeError(f"imsbox user add {name} failed: {added.stderr}")
        net._run()
        return net

    @property
    def common(self) -> tuple[str, ...]:
        return ("--data", str(self.data), "--config", str(self.config_path))

    def _run(self) -> None:
        pcscf = self.config.pcscf
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imsbox.cli", "serve", *self.common, "--port",
             str(pcscf.port), "--tls-port", str(pcscf.tls_port), "--trace"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=_env(), start_new_session=True)

        def out(line: str) -> None:
            self.stdout.append(line)
            self._lines.put(line)
        pump(self.proc.stdout, out)
        pump(self.proc.stderr, self.stderr.append)
        want = {f"pcscf listening on udp {HOST}:{pcscf.port}",
                f"scscf listening on udp {HOST}:{self.config.scscf.port}",
                f"icscf listening on udp {HOST}:{self.config.icscf.port}"}
        deadline = time.monotonic() + 20
        while want:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"imsbox serve did not start: {self.stderr[-20:]}") from None
            want.discard(line)

    def trace(self) -> str:
        return "\n".join(self.stdout)

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return proc.returncode


# -- baresip ------------------------------------------------------------------------------

def baresip_binary() -> str:
    path = shutil.which("baresip")
    if path is None:
        raise RuntimeError("baresip not found on PATH (Debian: apt-get install baresip-core)")
    return path


MODULE_PATH = "/usr/lib/baresip/modules"


class Baresip:
    """One baresip with its own config dir, no audio device (ausine source,
    aufile player), no video, commands and events over ctrl_tcp (netstrings
    of JSON)."""

    def __init__(self, directory: Path, user: str, password: str, pcscf_port: int,
                 answermode: str = "auto", peers: tuple[str, ...] = (),
                 play: Path | None = None, max_calls: int | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.user = user
        # baresip also listens for TLS on sip port + 1: both kept free
        self.sip_port = low_port(span=2)
        self.ctrl_port = low_port()
        (self.dir / "config").write_text("\n".join([
            "poll_method\t\tepoll",
            f"sip_listen\t\t{HOST}:{self.sip_port}",
            "sip_transports\t\tudp",
            *(self._audio_opus() if play is None else self._audio_g711(play)),
            "audio_level\t\tno",
            f"module_path\t\t{MODULE_PATH}",
            "module_app\t\taccount.so",
            "module_app\t\tmenu.so",
            "module_app\t\tcontact.so",  # the 'message' command (to the current contact)
            "module_app\t\tctrl_tcp.so",
            f"ctrl_tcp_listen\t\t{HOST}:{self.ctrl_port}",
            f"rtp_ports\t\t{rtp_ports()}",
            f"net_interface\t\t{HOST}",
            # a one-line phone: 486 to a call while in one (baresip's default is 4)
            *([f"call_max_calls\t\t{max_calls}"] if max_calls else []),
            "",
        ]))
        (self.dir / "accounts").write_text(
            f"<sip:{user}@{DOMAIN};transport=udp>;auth_pass={password};"
            f'outbound="sip:{HOST}:{pcscf_port};transport=udp";regint=600;'
            f"answermode={answermode}\n")
        (self.dir / "contacts").write_text("".join(
            f'"{name}" <sip:{name}@{DOMAIN}>\n' for name in peers))
        if peers:
            (self.dir / "current_contact").write_text(f"sip:{peers[0]}@{DOMAIN}")
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._taken: set[int] = set()
        self.all_events: list[dict[str, Any]] = []
        self.events = Events(f"baresip {user}", lambda: "\n".join(self.output[-40:]))
        self.responses = Events(f"baresip {user} responses")
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None

    def _audio_opus(self) -> list[str]:
        """ausine's 440 Hz, which it makes at 48 kHz only: opus first."""
        return [f"audio_player\t\taufile,{self.dir / 'played.wav'}",
                "audio_source\t\tausine,440",
                f"audio_alert\t\taufile,{self.dir / 'alert.wav'}",
                "module\t\t\topus.so", "module\t\t\tg711.so", "module\t\t\tausine.so",
                "module\t\t\taufile.so"]

    def _audio_g711(self, play: Path) -> list[str]:
        """G.711 only (what imsbox offers): ``play`` (an 8 kHz WAV) as the microphone,
        and the sndfile module dumping what it decodes to ``dump-*-dec.wav``."""
        self.records = self.dir / "records"
        self.records.mkdir(exist_ok=True)
        return ["audio_player\t\taubridge,nil", f"audio_source\t\taufile,{play}",
                "audio_alert\t\taubridge,nil", "ausrc_srate\t\t8000", "auplay_srate\t\t8000",
                "ausrc_channels\t\t1", "auplay_channels\t\t1",
                "module\t\t\tg711.so", "module\t\t\taufile.so", "module\t\t\taubridge.so",
                "module\t\t\tsndfile.so", f"snd_path\t\t{self.records}"]

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{DOMAIN}"

    def start(self, timeout: float = 15) -> Baresip:
        self.proc = subprocess.Popen(
            [baresip_binary(), "-f", str(self.dir)], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        pump(self.proc.stdout, self.output.append)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.create_connection((HOST, self.ctrl_port), timeout=1)
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("baresip ctrl_tcp did not come up:\n"
                                       + "\n".join(self.output[-30:])) from None
                time.sleep(0.1)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self._sock is not None
        self._sock.settimeout(None)
        buf = b""
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while True:
                colon = buf.find(b":")
                if colon < 0:
                    break
                size = int(buf[:colon])
                if len(buf) < colon + 1 + size + 1:
                    break
                item = json.loads(buf[colon + 1:colon + 1 + size])
                buf = buf[colon + 1 + size + 1:]
                if item.get("event"):
                    self.all_events.append(item)
                    self.events.put(item)
                elif item.get("response"):
                    self.responses.put(item)

    def command(self, command: str, params: str = "", timeout: float = 5) -> dict[str, Any]:
        """Send a ctrl_tcp command; returns baresip's response object."""
        assert self._sock is not None
        token = f"t{time.monotonic_ns()}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        with self._send_lock:   # commands may come from two threads (busy())
            self._sock.sendall(str(len(body)).encode() + b":" + body + b",")
        return self.responses.wait(lambda r: r.get("token") == token, f"response to {command}",
                                   timeout)

    def wait_event(self, type_: str, timeout: float = 10) -> dict[str, Any]:
        """The oldest not yet returned event of ``type_`` (e.g. CALL_ESTABLISHED),
        whenever it arrived (events of different types come in any order)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(list(self.all_events)):
                if index not in self._taken and event.get("type") == type_:
                    self._taken.add(index)
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.user}: no {type_} event in {timeout}s; events: "
                    f"{[e.get('type') for e in self.all_events]}\noutput:\n"
                    + "\n".join(line for line in self.output[-60:]
                                 if line.strip() and "audio=" not in line))
            time.sleep(0.05)

    def wait_output(self, text: str, timeout: float = 10) -> str:
        """The first output line containing ``text`` (baresip prints e.g.
        ``alice@ims.test: {0/UDP/v4} 200 OK () [1 binding]`` when registered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.output):
                if text in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"{self.user}: no output line with {text!r} in {timeout}s:\n"
                             + "\n".join(self.output[-40:]))

    def stop(self) -> None:
        (self.dir / "output.txt").write_text("\n".join(self.output))   # for a failure
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# baresip's ctrl_tcp event types -> phones.py states
BARESIP_STATES = {"CALL_INCOMING": INCOMING, "CALL_RINGING": RINGING,
                  "CALL_ESTABLISHED": ESTABLISHED, "CALL_CLOSED": ENDED}


class BaresipPhone(Baresip):
    """baresip 1.0 as a :class:`~.phones.Phone`: G.711 only, ``play`` (8 kHz WAV) as
    its microphone (aufile), what it hears dumped by the sndfile module, calls
    answered by command (``answermode=manual``), driven over ctrl_tcp."""

    name = "baresip"
    refusal = ("busy", 486)   # what busy() makes of a call
    # its sndfile dump of what it decodes stops at the call's first re-INVITE
    records_after_reinvite = False

    def __init__(self, directory: Path, user: str, password: str, pcscf_port: int,
                 play: Path, max_calls: int | None = None) -> None:
        super().__init__(directory, user, password, pcscf_port, answermode="manual", play=play,
                         max_calls=max_calls)

    @property
    def record_path(self) -> Path:
        """What it decoded, all calls: sndfile writes a ``dump-<time>-dec.wav`` each
        time a stream starts (a call, and again after a re-INVITE), joined here."""
        joined = self.dir / "heard.wav"
        with wave.open(str(joined), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            for dump in sorted(self.records.glob("dump-*-dec.wav")):
                out.writeframes(wav_pcm(dump))
        return joined

    def start(self, timeout: float = WAIT) -> BaresipPhone:
        super().start(timeout)
        self.wait_output(f"{self.user}@{DOMAIN}: {{0/UDP/v4}} 200 OK", timeout)
        return self

    def _ok(self, command: str, params: str = "") -> None:
        response = self.command(command, params, timeout=WAIT)
        assert response.get("ok"), f"baresip {command} {params}: {response}"

    def call(self, uri: str) -> None:
        self._ok("dial", uri)

    def answer(self) -> None:
        self._ok("accept")

    def busy(self) -> None:
        """baresip has no busy mode: hang up the next call as it rings (baresip then
        answers 486 Busy Here, as its ``hangup`` of an incoming call does)."""
        def refuse() -> None:
            self.wait_state(INCOMING)
            self._ok("hangup")
        threading.Thread(target=refuse, daemon=True).start()

    def hold(self) -> None:
        self._ok("hold")

    def resume(self) -> None:
        self._ok("resume")

    def hangup(self) -> None:
        self._ok("hangup")

    def transfer(self, uri: str) -> None:
        self._ok("transfer", uri)

    def wait_state(self, state: str, timeout: float = WAIT) -> dict[str, Any]:
        return self.events.wait(lambda e: BARESIP_STATES.get(e.get("type", "")) == state,
                                state, timeout)
