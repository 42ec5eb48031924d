"""linphone 5.1 (Debian ``linphone-cli``: ``linphonec``) as a :class:`~.phones.Phone`.

``linphonec -c RC`` is driven through its stdin (its commands: ``call``,
``answer``, ``terminate``, ``pause``, ``resume``) and its stdout lines are read
as call states (``Call 1 with sip:... connected.``). Settings that make it
work with imsbox, written to its linphonerc:

* ``[proxy_0]`` ``reg_proxy`` and ``reg_route`` both the P-CSCF (every request,
  not only REGISTER, goes to the P-CSCF: TS 24.229's outbound route),
  identity ``sip:NAME@ims.test``, ``[auth_info_0]`` user NAME, realm ims.test;
* UDP only (``sip_tcp_port=-1``), no video, no ICE/STUN;
* a HOME of its own: linphone writes its call log and friends database under
  ``$HOME/.local/share/linphone`` and stops there when it cannot;
* no sound card: ``soundcard use files``, ``play FILE`` (what it sends) and
  ``record FILE`` (what it hears) before any call.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from .baresip import low_port, pump
from .phones import DOMAIN, ENDED, ESTABLISHED, HOST, INCOMING, REGISTERED, RINGING, WAIT, Events

__all__ = ["LinphonePhone", "linphonec_binary"]

# linphonec's console lines -> phones.py states
STATES = [
    (re.compile(r"Receiving new incoming call from \S+, assigned id (\d+)"), INCOMING),
    (re.compile(r"Establishing call id to \S+, assigned id (\d+)"), "outgoing"),
    (re.compile(r"Call (\d+) to (\S+) ringing"), RINGING),
    (re.compile(r"Call (\d+) with (\S+) (?:connected|early media)"), ESTABLISHED),
    (re.compile(r"Call (\d+) with (\S+) ended \((.*)\)"), ENDED),
    (re.compile(r"Call (\d+) with (\S+) error\."), ENDED),   # a final error response
    (re.compile(r"Call (\d+) .*(?:is now paused|has been paused|paused)"), "paused"),
    (re.compile(r"Call (\d+) with (\S+) (?:resumed|is now resumed)"), "resumed"),
]


def linphonec_binary() -> str:
    path = shutil.which("linphonec")
    if path is None:
        raise RuntimeError("linphonec not found (Debian: apt-get install linphone-cli; "
                           "scripts/setup.sh does it)")
    return path


class LinphonePhone:
    name = "linphone"
    records_after_reinvite = True
    refusal = ("declined", 603)   # what busy() makes of a call (see there)

    def __init__(self, directory: Path, user: str, password: str, pcscf_port: int,
                 play: Path) -> None:
        self.dir = directory
        (directory / "home" / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.user = user
        self.play = play
        self._record = directory / "heard.wav"
        self.sip_port = low_port()
        base = low_port(span=3)  # an even RTP port and its RTCP port + 1 in it
        self.rtp_port = base + base % 2
        self.pcscf_port, self.password = pcscf_port, password
        self._write_rc()
        self.output: list[str] = []
        self.events = Events(f"linphone {user}", lambda: "\n".join(self.output[-40:]))
        self.proc: subprocess.Popen[str] | None = None

    def _write_rc(self) -> None:
        """The linphonerc (linphonec rewrites it on exit)."""
        user, password, pcscf_port = self.user, self.password, self.pcscf_port
        proxy = f"<sip:{HOST}:{pcscf_port};transport=udp>"
        (self.dir / "linphonerc").write_text("\n".join([
            "[sip]", f"sip_port={self.sip_port}", "sip_tcp_port=-1", "sip_tls_port=-1",
            f"bind_address={HOST}", "default_proxy=0", "inc_timeout=120",
            "[net]", "firewall_policy=0", "ipv6=0",
            "[rtp]", f"audio_rtp_port={self.rtp_port}", "audio_jitt_comp=60",
            "[sound]", "echocancellation=0",
            "[video]", "capture=0", "display=0", "automatically_initiate=0",
            "automatically_accept=0",
            "[proxy_0]", f"reg_proxy={proxy}",
            f"reg_route=<sip:{HOST}:{pcscf_port};transport=udp;lr>",
            f'reg_identity="{user}" <sip:{user}@{DOMAIN}>', "reg_expires=600",
            "reg_sendregister=1", "publish=0",
            "[auth_info_0]", f"username={user}", f"userid={user}", f"passwd={password}",
            f"realm={DOMAIN}", f"domain={DOMAIN}", "",
        ]))

    @property
    def record_path(self) -> Path:
        return self._record

    def start(self) -> LinphonePhone:
        env = dict(os.environ, HOME=str(self.dir / "home"))
        self.proc = subprocess.Popen(
            [linphonec_binary(), "-c", str(self.dir / "linphonerc")], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            cwd=self.dir, start_new_session=True)
        pump(self.proc.stdout, self._line)
        for command in ("soundcard use files", f"play {self.play}", f"record {self._record}"):
            self._type(command)
        self.wait_state(REGISTERED)
        return self

    def _line(self, line: str) -> None:
        self.output.append(line)
        if "registered: yes" in line:
            self.events.put({"state": "registered-line", "line": line})
        for pattern, state in STATES:
            m = pattern.search(line)
            if m:
                self.events.put({"state": state, "line": line, "groups": m.groups()})
                return

    def _type(self, command: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    # -- the Phone protocol ------------------------------------------------------------
    def call(self, uri: str) -> None:
        self._type(f"call {uri}")

    def answer(self) -> None:
        self._type("answer")

    def busy(self) -> None:
        """Refuse the next call as it rings. linphonec has no busy command: its
        ``terminate`` of a ringing call declines it 603 Decline (``refusal``), and
        its ``max_calls`` limit (486 "Busy - too many calls") does not refuse a
        first call, even at 0."""
        def refuse() -> None:
            self.wait_state(INCOMING)
            self._type("terminate")
        threading.Thread(target=refuse, daemon=True).start()

    def hold(self) -> None:
        self._type("pause")

    def resume(self) -> None:
        self._type("resume")

    def hangup(self) -> None:
        self._type("terminate")

    def transfer(self, uri: str) -> None:
        self._type(f"transfer {uri}")

    def attended_transfer(self) -> None:
        """REFER the first call to the latest one's party, with Replaces naming it."""
        ids = list(dict.fromkeys(e["groups"][0] for e in self.events.snapshot()
                                 if e["state"] in (INCOMING, "outgoing")))
        assert len(ids) >= 2, f"linphone: two calls needed, saw {ids}"
        self._type(f"transfer {ids[-2]} --to-call {ids[-1]}")

    def wait_state(self, state: str, timeout: float = WAIT) -> dict[str, Any]:
        if state == REGISTERED:   # linphonec tells only when asked: "proxy list" each 0.5 s
            deadline = time.monotonic() + timeout
            while True:
                self._type("proxy list")
                try:
                    return self.events.wait(lambda e: e["state"] == "registered-line", state,
                                            min(0.5, max(0.01, deadline - time.monotonic())))
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
        return self.events.wait(lambda e: e["state"] == state, state, timeout)

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            self._type("quit")
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
