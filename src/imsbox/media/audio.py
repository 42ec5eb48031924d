"""Audio sources and sinks for a session's 20 ms clock, as plain objects.

A *source* gives one frame of 16-bit linear PCM per tick: ``read(samples)``
returns ``samples`` samples, or ``None`` when it has nothing (then the
session sends silence, or nothing if told so).  A *sink* takes the frame
received at each tick: ``write(pcm)``.

* ``ToneSource(frequency, ...)``, ``DtmfToneSource(digits)``: generated sine tones;
* ``Silence``; ``WavSource(path, loop=False)``, ``WavSink(path)``: 8 kHz mono 16-bit
  files (others are converted on read when audioop is there, else refused);
* ``Recorder``: keeps what it was given, for tests and detectors;
* ``Mixer`` (``mixer.py``, re-exported here): mix-minus for N parties;
* ``goertzel_ratio``/``tone_present``: is a frequency in a recording?
"""

from __future__ import annotations

import array
import math
import os
import wave
from dataclasses import dataclass, field
from typing import Protocol

from .errors import MediaUsageError
from .mixer import Mixer, MixerPort
from .pcm import load_audioop, silence

__all__ = ["DTMF_FREQUENCIES", "DtmfToneSource", "Mixer", "MixerPort", "Recorder", "Silence", "Sink",
           "Source", "ToneSource", "WavSink", "WavSource", "goertzel_ratio", "tone_present"]

RATE = 8000
DTMF_FREQUENCIES = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}


class Source(Protocol):
    def read(self, samples: int) -> bytes | None: ...


class Sink(Protocol):
    def write(self, pcm: bytes) -> None: ...


class Silence:
    def read(self, samples: int) -> bytes | None:
        return silence(samples)


@dataclass(slots=True)
class ToneSource:
    """A sine of ``frequencies`` (summed) at ``amplitude`` (0-1), for ``duration`` s or forever.

    One period table is built once so each frame is a slice (cheap at hundreds of calls)."""

    frequencies: tuple[float, ...] | float = 1000.0
    amplitude: float = 0.3
    duration: float | None = None
    rate: int = RATE
    _table: bytes = b""
    _position: int = 0
    _left: int | None = None

    def __post_init__(self) -> None:
        freqs = (self.frequencies,) if isinstance(self.frequencies, (int, float)) else self.frequencies
        period = self.rate  # one second repeats exactly for integer frequencies
        peak = 32767 * self.amplitude / len(freqs)
        samples = [int(peak * sum(math.sin(2 * math.pi * f * n / self.rate) for f in freqs))
                   for n in range(period)]
        self._table = array.array("h", samples).tobytes() * 2
        self._left = None if self.duration is None else int(self.duration * self.rate)

    def read(self, samples: int) -> bytes | None:
        if self._left is not None:
            if self._left <= 0:
                return None
            self._left -= samples
        start = 2 * self._position
        frame = self._table[start:start + 2 * samples]
        self._position = (self._position + samples) % self.rate
        return frame


class DtmfToneSource:
    """The dual tones of ``digits``, each ``on`` seconds, ``off`` seconds of silence between."""

    def __init__(self, digits: str, on: float = 0.1, off: float = 0.1, amplitude: float = 0.3) -> None:
        self._parts: list[bytes] = []
        for digit in digits.upper():
            if digit not in DTMF_FREQUENCIES:
                raise MediaUsageError(f"not a DTMF digit: {digit!r}")
            tone = ToneSource(DTMF_FREQUENCIES[digit], amplitude, duration=on)
            self._parts.append(tone.read(int(on * RATE)) or b"")
            self._parts.append(silence(int(off * RATE)))
        self._data = b"".join(self._parts)
        self._offset = 0

    def read(self, samples: int) -> bytes | None:
        if self._offset >= len(self._data):
            return None
        frame = self._data[self._offset:self._offset + 2 * samples]
        self._offset += 2 * samples
        return frame + silence(samples)[len(frame):]


class WavSource:
    """Frames from a WAV file; 8 kHz mono 16-bit, or converted to it when audioop is there."""

    def __init__(self, path: str | os.PathLike[str], loop: bool = False) -> None:
        self.path = path
        self.loop = loop
        self._data = _read_wav(path)
        self._offset = 0

    def read(self, samples: int) -> bytes | None:
        if self._offset >= len(self._data):
            if not self.loop or not self._data:
                return None
            self._offset = 0
        frame = self._data[self._offset:self._offset + 2 * samples]
        self._offset += 2 * samples
        return frame + silence(samples)[len(frame):]


def _read_wav(path: str | os.PathLike[str]) -> bytes:
    try:
        with wave.open(os.fspath(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            data = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise MediaUsageError(f"{path}: not a PCM WAV file ({exc})") from None
    if (channels, width, rate) == (1, 2, RATE):
        return data
    audioop = load_audioop()
    if audioop is None:
        raise MediaUsageError(f"{path}: {rate} Hz, {channels} channel(s), {8 * width}-bit; "
                              "convert it to 8000 Hz mono 16-bit (no audioop here to do it)")
    if width == 1:
        data = audioop.bias(data, 1, -128)  # WAV 8-bit is unsigned
    if width != 2:
        data = audioop.lin2lin(data, width, 2)
    if channels == 2:
        data = audioop.tomono(data, 2, 0.5, 0.5)
    elif channels != 1:
        raise MediaUsageError(f"{path}: {channels} channels; only mono and stereo are converted")
    if rate != RATE:
        data, _ = audioop.ratecv(data, 2, 1, rate, RATE, None)
    return bytes(data)


class WavSink:
    """Writes each frame to an 8 kHz mono 16-bit WAV file; ``close()`` finishes it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self._wave = wave.open(os.fspath(path), "wb")  # noqa: SIM115 - closed by close()
        self._wave.setnchannels(1)
        self._wave.setsampwidth(2)
        self._wave.setframerate(RATE)

    def write(self, pcm: bytes) -> None:
        self._wave.writeframes(pcm)

    def close(self) -> None:
        self._wave.close()


@dataclass(slots=True)
class Recorder:
    """Keeps every frame written (``pcm``), at most ``limit`` seconds."""

    limit: float = 600.0
    frames: list[bytes] = field(default_factory=list)
    _bytes: int = 0

    def write(self, pcm: bytes) -> None:
        if self._bytes < self.limit * RATE * 2:
            self.frames.append(pcm)
            self._bytes += len(pcm)

    @property
    def pcm(self) -> bytes:
        return b"".join(self.frames)

    def clear(self) -> None:
        self.frames.clear()
        self._bytes = 0


def goertzel_ratio(pcm: bytes, frequency: float, rate: int = RATE) -> float:
    """The share of the signal's energy at ``frequency`` (Goertzel): ~1 for a pure tone, ~0 without."""
    samples = array.array("h", pcm)
    n = len(samples)
    energy = sum(s * s for s in samples)
    if n == 0 or energy == 0:
        return 0.0
    k = round(n * frequency / rate)
    coeff = 2 * math.cos(2 * math.pi * k / n)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * power / (n * energy)


def tone_present(pcm: bytes, frequency: float, rate: int = RATE, window: float = 0.2,
                 threshold: float = 0.5, min_windows: int = 3) -> bool:
    """Whether at least ``min_windows`` windows of ``window`` s carry ``frequency`` as most
    of their energy."""
    size = 2 * int(window * rate)
    hits = sum(goertzel_ratio(pcm[i:i + size], frequency, rate) >= threshold
               for i in range(0, len(pcm) - size + 1, size))
    return hits >= min_windows
