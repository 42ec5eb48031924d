"""The media of the media server (MRF): what each leg plays and how its SDP is made.

* :class:`Music`: one decoded music-on-hold source (a WAV file, or a generated
  tone melody) shared by every held party; each listener is a cursor into it.
* :func:`announcement`: the PCM of a named announcement (tone patterns, DTMF
  digits for an orbit number, or ``NAME.wav`` of the announcements directory).
* :class:`LegMedia`: one leg's SDP offer/answer (the INVITE session's
  ``OfferAnswer``) and the RTP session it configures, with the direction the
  service allows (music and announcements only send, RFC 5359 2.3 F12/F13).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..media import (
    DTMF_FREQUENCIES, DtmfToneSource, MediaUsageError, RtpSession,
    ToneSource, WavSource,
)
from ..media.offer_answer import AudioOfferAnswer
from ..sdp import (
    Direction,
)

__all__ = ["ANNOUNCEMENTS", "DEFAULT_MELODY", "LegMedia", "Music", "announcement"]

log = logging.getLogger(__name__)

RATE = 8000
# The generated music on hold when no file is configured: one second per note
# (integer frequencies, so the tone tables repeat exactly).
DEFAULT_MELODY = (523, 659, 784, 659)
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class _Cursor:
    """One listener's position in the shared music."""

    __slots__ = ("_music", "_offset")

    def __init__(self, music: Music, offset: int) -> None:
        self._music = music
        self._offset = offset

    def read(self, samples: int) -> bytes | None:
        data = self._music.pcm
        size = 2 * samples
        start = self._offset
        frame = data[start:start + size]
        if len(frame) < size:   # loop round
            frame += data[:size - len(frame)]
        self._offset = (start + size) % len(data)
        return frame


class Music:
    """The decoded music on hold, loaded once; ``listener()`` for each held party."""

    def __init__(self, pcm: bytes, name: str) -> None:
        if len(pcm) < 2 * RATE // 50:
            raise MediaUsageError(f"{name}: too short for music on hold")
        self.pcm = pcm
        self.name = name
        self.listeners = 0

    @classmethod
    def load(cls, path: str | Path | None) -> Music:
        """The WAV ``path`` (8 kHz mono 16-bit, or converted), else the melody."""
        if not path:
            return cls(melody(DEFAULT_MELODY), "melody " + "-".join(map(str, DEFAULT_MELODY)))
        return cls(read_pcm(path), str(path))

    def listener(self) -> _Cursor:
        """A new cursor from the start (each held party hears the music from its beginning)."""
        self.listeners += 1
        return _Cursor(self, 0)


def melody(notes: tuple[int, ...], seconds: float = 1.0) -> bytes:
    return b"".join(tone(n, seconds) for n in notes)


def tone(frequencies: float | tuple[float, ...], seconds: float) -> bytes:
    samples = int(seconds * RATE)
    return ToneSource(frequencies, 0.3).read(samples) or b""


def silent(seconds: float) -> bytes:
    return bytes(2 * int(seconds * RATE))


def read_pcm(path: str | Path) -> bytes:
    """All of a WAV file as 8 kHz 16-bit PCM."""
    try:
        source = WavSource(path)
    except OSError as exc:
        raise MediaUsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    parts = []
    while (frame := source.read(RATE)) is not None:
        parts.append(frame)
    return b"".join(parts)


def _cadence(frequencies: tuple[float, ...], on: float, off: float, times: int) -> bytes:
    return (tone(frequencies, on) + silent(off)) * times


# The tone announcements: name -> PCM (ITU-T E.180 style busy / congestion,
# the special information tone before an error announcement).
ANNOUNCEMENTS = {
    "busy": lambda: _cadence((480, 620), 0.5, 0.5, 3),
    "congestion": lambda: _cadence((480, 620), 0.25, 0.25, 6),
    "error": lambda: (tone(950, 0.33) + tone(1400, 0.33) + tone(1800, 0.33) + silent(0.5)) * 2,
    "beep": lambda: tone(1000, 0.5),
}


def announcement(name: str, directory: str | Path | None = None) -> bytes | None:
    """The PCM of announcement ``name``: ``NAME.wav`` in ``directory`` first, then the
    tones; ``digits-123`` (or ``orbit-123``) plays those DTMF digits (a park orbit)."""
    name = name.lower()
    if not NAME.fullmatch(name):
        return None
    if directory:
        path = Path(directory) / f"{name}.wav"
        if path.is_file():
            try:
                return read_pcm(path)
            except MediaUsageError as exc:   # a bad file: the tones, if any, instead
                log.warning("announcement %s: %s", name, exc)
    kind, _, digits = name.partition("-")
    if kind in ("digits", "orbit") and digits and all(d.upper() in DTMF_FREQUENCIES for d in digits):
        source = DtmfToneSource(digits, on=0.2, off=0.2)
        return tone(1000, 0.3) + silent(0.3) + read_all(source)
    make = ANNOUNCEMENTS.get(name)
    return make() if make is not None else None


def read_all(source: DtmfToneSource) -> bytes:
    parts = []
    while (frame := source.read(160)) is not None:
        parts.append(frame)
    return b"".join(parts)


class LegMedia(AudioOfferAnswer):
    """One leg's offers and answers and the RTP session they configure.

    ``direction`` is the most this leg may do: ``SENDONLY`` for music and
    announcements (we never listen), ``SENDRECV`` for a conference.
    """

    def __init__(self, session: RtpSession, host: str, direction: Direction) -> None:
        super().__init__(session, host, direction)
        self.allowed = direction

    def offer(self) -> bytes:
        return self.make_offer(self.allowed)

    def warning(self, host: str) -> str:
        """The Warning of a 488 (RFC 3261 20.43, code 305)."""
        codecs = ", ".join(self.refused.codecs) if self.refused is not None else "PCMU, PCMA"
        return f'305 {host} "Incompatible media format; the media server supports {codecs}"'

