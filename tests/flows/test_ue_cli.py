"""``imsbox ue`` in subprocesses against ``imsbox serve`` on free loopback ports.

bob runs ``listen --json``; alice runs ``send`` and ``send-file``: listen
prints the message and the file as JSON lines, and the senders exit 0 only
once bob's UE confirmed (delivery notification, success REPORT).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from imsbox.config import Config
from imsbox.ims.provisioning import add_user
from imsbox.store import open_store
from imsbox.testing import write_loopback_config

pytestmark = pytest.mark.timeout(60)
SRC = Path(__file__).resolve().parents[2] / "src"
DOMAIN = "ims.test"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


class Proc:
    """An ``imsbox`` subprocess whose stdout lines are read by a thread."""

    def __init__(self, *args: str, stdin: int | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "imsbox.cli", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=stdin, text=True, env=_env())
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        for stream, put in ((self.proc.stdout, self.stdout.put),
                            (self.proc.stderr, self.stderr.append)):
            threading.Thread(target=self._pump, args=(stream, put), daemon=True).start()

    @staticmethod
    def _pump(stream: IO[str] | None, put: Callable[[str], None]) -> None:
        assert stream is not None
        for line in stream:
            put(line.rstrip("\n"))

    def wait_line(self, match: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline, seen = time.monotonic() + timeout, []
        while True:
            try:
                line = self.stdout.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching line; saw {seen}; exit status "
                                     f"{self.proc.poll()}; stderr {self.stderr}") from None
            seen.append(line)
            if match(line):
                return line

    def wait_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        line = self.wait_line(lambda text: json.loads(text)["event"] == kind, timeout)
        return json.loads(line)

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def ue(config: Config, user: str, *args: str,
       timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imsbox.cli", *ue_args(config, user), *args],
                          capture_output=True, text=True, timeout=timeout, env=_env())


def ue_args(config: Config, user: str) -> list[str]:
    return ["ue", "--user", user, "--password", f"{user}-secret",
            "--pcscf", f"{config.pcscf.host}:{config.pcscf.port}", "--json"]


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Path, Config]]:
    """``imsbox serve`` (core and messaging AS, default iFCs), alice and bob provisioned."""
    path, config = write_loopback_config(tmp_path)
    async def in_store() -> None:
        async with open_store(config.store_location) as store:
            await add_user(store, DOMAIN, "alice", "alice-secret")
            await add_user(store, DOMAIN, "bob", "bob-secret")
    asyncio.run(in_store())
    serve = Proc("serve", "--config", str(path))
    try:
        serve.wait_line(lambda line: "pcscf listening on udp" in line, 15)
        yield path, config
    finally:
        assert serve.stop() == 0, serve.stderr


def test_listen_prints_message_and_send_exits_0_when_delivered(
        network: tuple[Path, Config], tmp_path: Path) -> None:
    _, config = network
    downloads = tmp_path / "inbox"
    listen = Proc(*ue_args(config, "bob"), "listen", "--downloads", str(downloads),
                  "--mark-displayed")
    try:
        ready = listen.wait_event("listening", 15)
        assert ready["from"] == ready["to"] == "sip:bob@ims.test"

        sent = ue(config, "alice", "send", "bob", "hello from the CLI", "--display",
                  "--timeout", "10")
        assert sent.returncode == 0, (sent.stdout, sent.stderr)
        result = json.loads(sent.stdout.splitlines()[-1])
        assert result["event"] == "sent" and result["status"] == "displayed"
        assert (result["from"], result["to"]) == ("sip:alice@ims.test", "sip:bob@ims.test")

        message = listen.wait_event("message")
        assert message["from"] == "sip:alice@ims.test" and message["to"] == "sip:bob@ims.test"
        assert message["text"] == "hello from the CLI"
        assert message["message_id"] == result["message_id"]

        payload = os.urandom(5000)
        source = tmp_path / "blob.bin"
        source.write_bytes(payload)
        pushed = ue(config, "alice", "send-file", "sip:bob@ims.test", str(source))
        assert pushed.returncode == 0, (pushed.stdout, pushed.stderr)
        lines = [json.loads(line) for line in pushed.stdout.splitlines()]
        assert [e["event"] for e in lines][-1] == "file_sent" and lines[-1]["ok"] is True
        progress = [e for e in lines if e["event"] == "file_progress"]
        assert progress and progress[-1]["sent"] == progress[-1]["size"] == len(payload)

        received = listen.wait_event("file_received")
        assert received["ok"] is True
        assert received["sha256"] == hashlib.sha256(payload).hexdigest()
        assert Path(received["path"]).read_bytes() == payload

        chat = subprocess.run([sys.executable, "-m", "imsbox.cli", *ue_args(config, "alice"),
                               "chat", "bob"], input="hello chat\n", capture_output=True,
                              text=True, timeout=20, env=_env())
        assert chat.returncode == 0, (chat.stdout, chat.stderr)
        events = [json.loads(line) for line in chat.stdout.splitlines()]
        statuses = [e["status"] for e in events if e["event"] == "notification"]
        assert "delivered" in statuses, events
        assert listen.wait_event("chat_message")["text"] == "hello chat"
        assert listen.wait_event("chat_ended")["from"] == "sip:alice@ims.test"
    finally:
        assert listen.stop(signal.SIGINT) == 0, listen.stderr


def test_send_to_offline_user_is_accepted_for_later_delivery(
        network: tuple[Path, Config]) -> None:
    """bob is not registered: the AS stores the message (202); ``send`` says so and
    exits 3 (not 1 with "timeout"), in JSON and in text."""
    _, config = network
    started = time.monotonic()
    sent = ue(config, "alice", "send", "bob", "anyone there?", "--timeout", "20")
    assert sent.returncode == 3, (sent.stdout, sent.stderr)
    assert time.monotonic() - started < 15  # no wait for a notification that cannot come
    result = json.loads(sent.stdout.splitlines()[-1])
    assert result["event"] == "sent" and result["status"] == "deferred"
    assert result["reason"] == "accepted for later delivery (202)" and result["message_id"]
    args = [a for a in ue_args(config, "alice") if a != "--json"]
    text = subprocess.run([sys.executable, "-m", "imsbox.cli", *args, "send", "bob", "again"],
                          capture_output=True, text=True, timeout=20, env=_env())
    assert text.returncode == 3
    assert text.stdout.strip() == "message to sip:bob@ims.test: accepted for later delivery (202)"


def test_large_message_to_offline_user_is_accepted_for_later_delivery(
        network: tuple[Path, Config]) -> None:
    """Large message mode has no 202: the AS's processing IMDN "stored" makes ``send``
    say so and exit 3 at once, not "timeout" after 30 s."""
    _, config = network
    started = time.monotonic()
    sent = ue(config, "alice", "send", "bob", "x" * 2000, "--timeout", "20")
    assert sent.returncode == 3, (sent.stdout, sent.stderr)
    assert time.monotonic() - started < 15
    result = json.loads(sent.stdout.splitlines()[-1])
    assert result["status"] == "deferred", result
    assert result["reason"] == "accepted for later delivery (stored)"


def test_retrieve_deferred_fetches_the_stored_messages_once(
        network: tuple[Path, Config]) -> None:
    """Seed 003 from the command line: bob, offline while alice sent, runs
    ``retrieve-deferred``: the stored messages oldest first (mode "deferred"), one
    ``retrieved`` record, exit 0; a second run finds nothing (each is taken once)."""
    _, config = network
    for text in ("first", "second"):
        sent = ue(config, "alice", "send", "bob", text)
        assert sent.returncode == 3, (sent.stdout, sent.stderr)
    got = ue(config, "bob", "retrieve-deferred")
    assert got.returncode == 0, (got.stdout, got.stderr)
    events = [json.loads(line) for line in got.stdout.splitlines()]
    messages = [e for e in events if e["event"] == "message"]
    assert [(m["text"], m["mode"], m["from"]) for m in messages] == \
        [("first", "deferred", "sip:alice@ims.test"), ("second", "deferred", "sip:alice@ims.test")]
    assert events[-1] == {"event": "retrieved", "from": "sip:bob@ims.test",
                          "to": "sip:cpm-deferred@ims.test", "count": 2, "status": "ok"}
    again = ue(config, "bob", "retrieve-deferred")
    assert again.returncode == 0, again.stderr
    assert [json.loads(line) for line in again.stdout.splitlines()][-1]["count"] == 0
    args = [a for a in ue_args(config, "bob") if a != "--json"]
    text = subprocess.run([sys.executable, "-m", "imsbox.cli", *args, "retrieve-deferred"],
                          capture_output=True, text=True, timeout=20, env=_env())
    assert text.returncode == 0 and text.stdout.strip() == "0 stored message(s) retrieved"


def test_bad_password_exits_1(network: tuple[Path, Config]) -> None:
    _, config = network
    args = ue_args(config, "alice")
    args[args.index("--password") + 1] = "wrong"
    done = subprocess.run([sys.executable, "-m", "imsbox.cli", *args, "send", "bob", "x"],
                          capture_output=True, text=True, timeout=20, env=_env())
    assert done.returncode == 1 and "registration" in done.stderr
    assert "wrong user name or password (403)" in done.stderr, done.stderr


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_no_server_fails_fast_and_says_why(transport: str) -> None:
    """Nothing listens on the P-CSCF's port: a clear message within seconds (not a
    408 after 32 s over UDP, not a bare 503 over TCP)."""
    import socket
    with socket.socket() as sock:  # a port nobody listens on, UDP or TCP
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "imsbox.cli", "ue", "--user", "alice",
                           "--password", "x", "--pcscf", f"127.0.0.1:{port}", "--transport",
                           transport, "send", "bob", "hi"],
                          capture_output=True, text=True, timeout=30, env=_env())
    assert time.monotonic() - started < 12
    assert done.returncode == 1
    assert (f"no answer from the P-CSCF at 127.0.0.1:{port} - is imsbox serve running?"
            in done.stderr), done.stderr
    assert "408" not in done.stderr and "503" not in done.stderr


def test_chat_to_offline_user_reports_what_became_of_the_lines(
        network: tuple[Path, Config]) -> None:
    """bob is offline: every typed line is either stored by the network (exit 3,
    "accepted for later delivery") or reported as not sent (exit 1) - never a silent
    exit 0."""
    _, config = network
    chat = subprocess.run([sys.executable, "-m", "imsbox.cli", *ue_args(config, "alice"),
                           "chat", "bob"], input="one\ntwo\nthree\n", capture_output=True,
                          text=True, timeout=30, env=_env())
    events = [json.loads(line) for line in chat.stdout.splitlines()]
    if not events:  # the session ended before MSRP was even up: nothing went out
        assert chat.returncode == 1 and "chat with sip:bob@ims.test" in chat.stderr
        return
    assert events[-1]["event"] == "chat_result", (events, chat.stderr)
    result = events[-1]
    assert result["delivered"] == 0 and result["sent"] + result["not_sent"] == 3, result
    unconfirmed = [e["text"] for e in events if e["event"] == "chat_unconfirmed"]
    assert len(unconfirmed) == result["not_sent"], events  # the lines to send again
    assert set(unconfirmed) <= {"one", "two", "three"}
    if chat.returncode == 3:
        assert result["stored"] == 3 and "kept for later delivery" in chat.stderr
    else:
        assert chat.returncode == 1, (chat.returncode, chat.stderr)
        assert result["not_sent"] + result["failed"] > 0
        assert "not delivered and not stored" in chat.stderr


def test_send_file_progress_is_throttled_and_names_the_transfer(
        network: tuple[Path, Config], tmp_path: Path) -> None:
    """A 4 MB file (2048 chunks): the JSON progress events come at most every 100 ms
    or 1 %, each with the transfer's file-transfer-id."""
    _, config = network
    listen = Proc(*ue_args(config, "bob"), "listen", "--downloads", str(tmp_path / "in"))
    try:
        listen.wait_event("listening", 15)
        source = tmp_path / "big.bin"
        source.write_bytes(os.urandom(4 * 1024 * 1024))
        started = time.monotonic()
        pushed = ue(config, "alice", "send-file", "bob", str(source), timeout=60)
        elapsed = time.monotonic() - started
        assert pushed.returncode == 0, (pushed.stdout, pushed.stderr)
        lines = [json.loads(line) for line in pushed.stdout.splitlines()]
        progress = [e for e in lines if e["event"] == "file_progress"]
        transfer_id = lines[-1]["transfer_id"]
        assert transfer_id and {e["transfer_id"] for e in progress} == {transfer_id}
        assert 2 <= len(progress) <= 101 + elapsed / 0.1, len(progress)
        assert progress[-1]["sent"] == progress[-1]["size"] == 4 * 1024 * 1024
        assert listen.wait_event("file_received", 20)["ok"] is True
    finally:
        assert listen.stop(signal.SIGINT) == 0, listen.stderr


def test_listen_interactive_answers_a_chat(network: tuple[Path, Config]) -> None:
    """bob runs ``listen --interactive``: alice's chat comes in, the line bob types
    goes back to her in the same chat; ``/bye`` ends it."""
    _, config = network
    bob = Proc(*ue_args(config, "bob"), "listen", "--interactive", stdin=subprocess.PIPE)
    alice: Proc | None = None
    try:
        bob.wait_event("listening", 15)
        alice = Proc(*ue_args(config, "alice"), "chat", "bob", stdin=subprocess.PIPE)
        alice.wait_event("chat_started", 15)
        alice.type("hello bob")
        assert bob.wait_event("chat_message", 15)["text"] == "hello bob"
        bob.type("hello alice")
        answer = alice.wait_event("chat_message", 15)
        assert answer["text"] == "hello alice" and answer["from"] == "sip:bob@ims.test"
        bob.type("/bye")
        assert alice.wait_event("chat_ended", 15)["from"] == "sip:bob@ims.test"
        assert alice.proc.wait(15) == 0, alice.stderr
    finally:
        if alice is not None:
            alice.stop()
        assert bob.stop(signal.SIGINT) == 0, bob.stderr


# -- voice calls (issue 12) --------------------------------------------------------------

def test_call_answered_held_resumed_hung_up_json(network: tuple[Path, Config],
                                                  tmp_path: Path) -> None:
    """``listen --answer --json`` takes alice's ``call``; stdin hold (the plain hold:
    ``--no-music-on-hold``), resume, hangup; both print the call events, bob records
    alice's tone."""
    import wave

    from imsbox.media import tone_present

    _, config = network
    record = tmp_path / "bob.wav"
    bob = Proc(*ue_args(config, "bob"), "listen", "--answer", "--after", "0.3",
               "--tone", "1000", "--record", str(record))
    try:
        bob.wait_event("listening")
        alice = Proc(*ue_args(config, "alice"), "call", "bob", "--tone", "440",
                     "--no-music-on-hold", stdin=subprocess.PIPE)
        assert alice.wait_event("call_ringing")["to"] == "sip:bob@ims.test"
        answered = alice.wait_event("call_answered")
        assert answered["direction"] == "sendrecv"
        assert bob.wait_event("call_answered")["call_id"] == answered["call_id"]
        time.sleep(1.0)
        alice.type("hold")
        assert alice.wait_event("call_held")["direction"] == "sendonly"
        alice.type("resume")
        assert alice.wait_event("call_resumed")["direction"] == "sendrecv"
        alice.type("hangup")
        stats = alice.wait_event("rtp_stats")["stats"]
        assert stats["packets_sent"] > 25 and stats["packets_received"] > 25
        assert alice.wait_event("call_ended")["reason"] == "local hangup"
        assert alice.proc.wait(10) == 0
        assert bob.wait_event("call_ended")["reason"] == "remote hangup"
    finally:
        assert bob.stop() == 0, bob.stderr
    with wave.open(str(record), "rb") as wav:
        pcm = wav.readframes(wav.getnframes())
    assert tone_present(pcm, 440) and not tone_present(pcm, 1000)


def test_call_refused_busy_json(network: tuple[Path, Config]) -> None:
    _, config = network
    bob = Proc(*ue_args(config, "bob"), "listen", "--busy")
    try:
        bob.wait_event("listening")
        alice = Proc(*ue_args(config, "alice"), "call", "bob", "--tone", "440",
                     stdin=subprocess.PIPE)   # kept open: EOF would hang up (CANCEL)
        assert alice.wait_event("call_ended")["reason"] == "busy"
        assert alice.proc.wait(10) == 1
        assert bob.wait_event("call_ended")["reason"] == "busy"
    finally:
        assert bob.stop() == 0, bob.stderr
