"""What the call interop tests need of a third-party phone, and imsbox's own UE
driven from a synchronous test.

``Phone`` is the small protocol the drivers (baresip.py, linphone.py, pjsua.py)
implement: register on start, call, answer, refuse busy, hold, resume, hang
up, and wait for one of the call states below. Each phone plays a tone WAV
(:func:`tone_wav`) into its calls and records what it hears to a WAV that
:func:`heard` checks with imsbox.media's Goertzel detector.

``ImsboxUe`` runs an :class:`~imsbox.ue.client.RcsClient` on an asyncio loop in
a thread of the test process, so a test reads as a plain sequence of steps on
both phones. Every wait is event-driven (a condition variable, or the UE's
own asyncio events) and bounded: nothing sleeps to decide an outcome; the
only sleeps are the listening windows in which audio is recorded.
"""

from __future__ import annotations

import array
import asyncio
import math
import threading
import time
import wave
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

from imsbox.media import Recorder, ToneSource, tone_present
from imsbox.media.audio import Sink
from imsbox.sdp import Direction
from imsbox.ue.call import VoiceCall
from imsbox.ue.client import RcsClient

T = TypeVar("T")
HOST = "127.0.0.1"
DOMAIN = "ims.test"
# Generous: two cores shared with other sessions; a healthy step takes < 1 s.
WAIT = 20.0

# The call states every driver reports (its own events mapped onto these).
REGISTERED = "registered"
INCOMING = "incoming"         # an INVITE arrived (the phone rings)
RINGING = "ringing"           # our INVITE got a 180
ESTABLISHED = "established"   # 200 / ACK: the call is up
ENDED = "ended"               # BYE, CANCEL, a failure: the call is over


class Phone(Protocol):
    """A third-party phone registered as ``user`` through the P-CSCF."""

    name: str
    user: str
    sip_port: int
    refusal: tuple[str, int]   # (imsbox's call_ended reason, SIP status) of busy()
    records_after_reinvite: bool   # its recording goes on after a hold / focus re-INVITE
    events: Events                 # what the driver saw, in its own terms

    @property
    def record_path(self) -> Path: ...    # what the phone heard (complete after stop())

    def start(self) -> Phone: ...
    def call(self, uri: str) -> None: ...
    def answer(self) -> None: ...
    def busy(self) -> None: ...           # refuse the next incoming call (486 Busy Here)
    def hold(self) -> None: ...
    def resume(self) -> None: ...
    def hangup(self) -> None: ...         # BYE, or CANCEL while our INVITE rings
    def transfer(self, uri: str) -> None: ...   # REFER the peer to ``uri`` (unattended)
    def wait_state(self, state: str, timeout: float = WAIT) -> dict[str, Any]: ...
    def stop(self) -> None: ...


class Events:
    """A thread-safe log of a driver's events with event-driven waits.

    ``wait(match)`` returns the oldest event not returned before for which
    ``match`` is true, blocking on a condition variable until one arrives."""

    def __init__(self, name: str, describe: Callable[[], str] = lambda: "") -> None:
        self.name = name
        self.items: list[dict[str, Any]] = []
        self._taken: set[int] = set()
        self._cond = threading.Condition()
        self._describe = describe

    def put(self, event: dict[str, Any]) -> None:
        with self._cond:
            self.items.append(event)
            self._cond.notify_all()

    def wait(self, match: Callable[[dict[str, Any]], bool], what: str,
             timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, event in enumerate(self.items):
                    if index not in self._taken and match(event):
                        self._taken.add(index)
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: no {what} in {timeout}s; events:\n"
                                         + "\n".join(map(str, self.items[-30:]))
                                         + "\n" + self._describe())
                self._cond.wait(left)

    def skip(self) -> None:
        """Forget the events so far: a later ``wait`` sees only newer ones (a call
        the phone refused by itself may have left an INCOMING behind)."""
        with self._cond:
            self._taken.update(range(len(self.items)))

    def snapshot(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.items)


# -- audio ---------------------------------------------------------------------------------

def tone_wav(path: Path, frequency: float, seconds: float = 120.0, rate: int = 8000) -> Path:
    """A mono 16-bit WAV of a sine at ``frequency`` (8 kHz: what G.711 carries); long,
    since some phones stop at the end of the file instead of looping."""
    one = array.array("h", (int(9000 * math.sin(2 * math.pi * frequency * i / rate))
                            for i in range(rate)))   # one second repeats for integer Hz
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(one.tobytes() * int(seconds))
    return path


def wav_pcm(path: Path) -> bytes:
    """8 kHz mono 16-bit samples of a recording, also of one whose header a phone has
    not finished yet (size 0 while it records) or that is at another rate."""
    data = path.read_bytes()
    with wave.open(str(path), "rb") as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
    start = data.find(b"data") + 8
    pcm = data[start:] if start >= 8 else b""
    pcm = pcm[:len(pcm) - len(pcm) % (width * channels)]
    assert width == 2, f"{path}: {8 * width}-bit samples"
    samples = array.array("h", pcm)
    if channels > 1:
        samples = samples[::channels]
    if rate != 8000:   # the phones here record at a multiple of 8 kHz: decimate
        step = rate // 8000
        assert rate % 8000 == 0, f"{path}: {rate} Hz"
        samples = samples[::step]
    return samples.tobytes()


def hears(pcm: bytes, frequency: float, min_windows: int = 5) -> bool:
    """Whether ``pcm`` carries ``frequency`` in at least ``min_windows`` windows of 0.1 s.

    Short windows: under load a jitter buffer (the phone's or ours) drops or
    stretches a frame now and then, and a phase jump spoils the window it
    falls in; 0.1 s keeps most windows clean and still resolves 10 Hz."""
    return tone_present(pcm, frequency, window=0.1, min_windows=min_windows)


def heard(path: Path, frequency: float) -> bool:
    """Whether the recording at ``path`` carries ``frequency`` (>= 0.5 s of it)."""
    return path.exists() and hears(wav_pcm(path), frequency)


# -- imsbox's own UE in a thread -----------------------------------------------------------

class ImsboxUe:
    """An RcsClient on its own asyncio loop (a daemon thread), driven synchronously."""

    def __init__(self, user: str, password: str, pcscf_port: int, tone: float,
                 **client_kwargs: Any) -> None:
        self.user = user
        self.tone = tone
        self.client = RcsClient(user, password, DOMAIN, pcscf=(HOST, pcscf_port), **client_kwargs)
        self.client.call_service.source = lambda: ToneSource(self.tone)
        self.client.call_service.sink = Recorder
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name=f"imsbox-ue-{user}")

    def start(self) -> ImsboxUe:
        self._thread.start()
        self.run(self.client.start())
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the UE's loop (the client's state is the loop's alone)."""
        async def call() -> T:
            return fn()
        return self.run(call())

    def until(self, condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Block until ``condition()`` (evaluated on the loop, each 10 ms) holds."""
        async def poll() -> None:
            async with asyncio.timeout(timeout):
                while not condition():
                    await asyncio.sleep(0.01)
        try:
            self.run(poll(), timeout + 5)
        except TimeoutError:
            raise AssertionError(f"{self.user}: not {what} within {timeout}s") from None

    # -- calls ---------------------------------------------------------------------------
    def call(self, target: str) -> VoiceCall:
        """INVITE ``target`` playing our tone and recording into a Recorder."""
        async def place() -> VoiceCall:
            return await self.client.call_service.place(
                target, ToneSource(self.tone), Recorder())
        return self.run(place())

    def incoming(self, timeout: float = WAIT) -> VoiceCall:
        self.until(lambda: bool(self.client.calls), "called", timeout)
        return self.sync(lambda: next(iter(self.client.calls.values())))

    def answered(self, call: VoiceCall, timeout: float = WAIT) -> bool:
        return self.run(call.wait_answered(timeout), timeout + 5)

    def ended(self, call: VoiceCall, timeout: float = WAIT) -> str:
        self.run(asyncio.wait_for(call.ended.wait(), timeout), timeout + 5)
        return call.end_reason

    def hold(self, call: VoiceCall) -> bool:
        return self.run(call.hold())

    def resume(self, call: VoiceCall) -> bool:
        return self.run(call.resume())

    def hangup(self, call: VoiceCall) -> None:
        self.run(call.hangup())

    def direction(self, call: VoiceCall) -> Direction:
        return self.sync(lambda: call.rtp.direction)

    def sent(self, call: VoiceCall) -> int:
        return self.sync(lambda: call.rtp.stats.packets_sent)

    def listen(self, call: VoiceCall, seconds: float = 2.0) -> bytes:
        """What we hear of ``call`` over the next ``seconds`` (a recording window)."""
        sink: Sink | None = self.sync(lambda: call.rtp.sink)
        assert isinstance(sink, Recorder)
        self.sync(sink.clear)
        time.sleep(seconds)
        return self.sync(lambda: sink.pcm)

    def hears(self, call: VoiceCall, frequency: float, seconds: float = 2.0) -> bool:
        return hears(self.listen(call, seconds), frequency)

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self.run(self.client.close(), 15)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(5)
