"""pjsua2 (PJSIP 2.15, the PyPI wheel ``pjsua2-python``) as a :class:`~.phones.Phone`.

The phone runs in a subprocess (pjsua_agent.py: pjsua2 owns threads and a
conference bridge; a crash or a hang stays there) and speaks line-JSON on
stdin/stdout. Settings that make it work with imsbox: the P-CSCF as the
account's outbound proxy (``sipConfig.proxies``, loose routing), registrar
``sip:ims.test``, Digest user NAME, no ICE and no NAT rewriting (loopback),
G.711 only, the null sound device with a WAV player and recorder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from .baresip import low_port, pump
from .phones import DOMAIN, ENDED, ESTABLISHED, HOST, INCOMING, REGISTERED, RINGING, WAIT, Events

AGENT = Path(__file__).resolve().parent / "pjsua_agent.py"

__all__ = ["PjsuaPhone", "pjsua_missing"]


def pjsua_missing() -> str | None:
    """Why pjsua2 cannot run here (None when it can): the wheel exists for CPython 3.11
    on Linux x86-64 only (pyproject.toml's ``interop`` extra)."""
    if importlib.util.find_spec("pjsua2") is not None:
        return None
    supported = sys.platform == "linux" and os.uname().machine == "x86_64" \
        and sys.version_info[:2] == (3, 11)
    if supported:   # it should be installed here: a setup problem, not a skip
        raise RuntimeError("pjsua2 is not installed: pip install -e '.[interop]' "
                           "(scripts/setup.sh)")
    return (f"pjsua2-python has no wheel for Python {sys.version_info[0]}.{sys.version_info[1]} "
            f"on {sys.platform}/{os.uname().machine} (only cp311 Linux x86-64)")


def _state(event: dict[str, Any]) -> str | None:
    """The phones.py state an agent event stands for."""
    kind = event.get("event")
    if kind == "reg":
        return REGISTERED if event.get("code") == 200 else None
    if kind != "call":
        return None
    return {"INCOMING": INCOMING, "EARLY": RINGING, "CONFIRMED": ESTABLISHED,
            "DISCONNECTED": ENDED}.get(event["state"])


class PjsuaPhone:
    name = "pjsua2"
    records_after_reinvite = True
    refusal = ("busy", 486)   # what busy() makes of a call

    def __init__(self, directory: Path, user: str, password: str, pcscf_port: int,
                 play: Path, max_calls: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.record_path = directory / "heard.wav"
        self.sip_port = low_port()
        self.conf = {"user": user, "password": password, "domain": DOMAIN, "host": HOST,
                     "port": self.sip_port, "proxy": f"sip:{HOST}:{pcscf_port};transport=udp;lr",
                     "play": str(play), "record": str(self.record_path), "log_level": 3,
                     "max_calls": max_calls}
        self.log: list[str] = []
        self.events = Events(f"pjsua2 {user}", lambda: "\n".join(self.log[-40:]))
        self.replies = Events(f"pjsua2 {user} replies")
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> PjsuaPhone:
        self.proc = subprocess.Popen(
            [sys.executable, str(AGENT), json.dumps(self.conf)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        pump(self.proc.stdout, self._line)
        pump(self.proc.stderr, self.log.append)
        self.wait_state(REGISTERED)
        return self

    def _line(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self.log.append(line)
            return
        (self.replies if "reply" in event else self.events).put(event)

    def _do(self, cmd: str, **args: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        reply = self.replies.wait(lambda e: e["reply"] == cmd, f"reply to {cmd}")
        assert reply["ok"], f"pjsua2 {cmd}: {reply.get('error')}"

    # -- the Phone protocol ------------------------------------------------------------
    def call(self, uri: str, headers: dict[str, str] | None = None) -> None:
        self._do("call", uri=uri, headers=headers or {})

    def answer(self) -> None:
        self._do("answer", code=200)

    def busy(self) -> None:
        self._do("auto", code=486, once=True)

    def hold(self) -> None:
        self._do("hold")
        self.events.wait(lambda e: e.get("event") == "media" and e["status"] == "LOCAL_HOLD",
                         "local hold")

    def resume(self) -> None:
        self._do("resume")
        self.events.wait(lambda e: e.get("event") == "media" and e["status"] == "ACTIVE",
                         "media active again")

    def hangup(self) -> None:
        self._do("hangup")

    def transfer(self, uri: str) -> None:
        self._do("transfer", uri=uri)

    def attended_transfer(self) -> None:
        """REFER the first call to the latest one's party, with Replaces naming it."""
        self._do("transfer_replaces")

    def wait_state(self, state: str, timeout: float = WAIT) -> dict[str, Any]:
        return self.events.wait(lambda e: _state(e) == state, state, timeout)

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            proc.stdin.close()
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
