"""Sources, sinks, the mix-minus mixer and the Goertzel detector."""

from __future__ import annotations

import array
import wave
from pathlib import Path

import pytest

from imsbox.media import (
    DtmfToneSource,
    MediaUsageError,
    Mixer,
    Recorder,
    Silence,
    ToneSource,
    WavSink,
    WavSource,
    goertzel_ratio,
    tone_present,
)
from imsbox.media.pcm import load_audioop


def seconds(source, s: float = 1.0) -> bytes:
    return b"".join(source.read(160) or bytes(320) for _ in range(int(s * 50)))


def test_tone_is_detected_only_at_its_frequency() -> None:
    pcm = seconds(ToneSource(1000))
    assert goertzel_ratio(pcm, 1000) > 0.99 and goertzel_ratio(pcm, 1200) < 0.01
    assert tone_present(pcm, 1000) and not tone_present(pcm, 440)
    assert not tone_present(seconds(Silence()), 1000)


def test_tone_duration_ends_the_source() -> None:
    tone = ToneSource(440, duration=0.04)
    assert tone.read(160) and tone.read(160) and tone.read(160) is None


def test_dtmf_tones_carry_both_frequencies() -> None:
    pcm = seconds(DtmfToneSource("5", on=0.5, off=0.1), 0.5)
    assert goertzel_ratio(pcm, 770) > 0.3 and goertzel_ratio(pcm, 1336) > 0.3
    assert goertzel_ratio(pcm, 697) < 0.05
    with pytest.raises(MediaUsageError):
        DtmfToneSource("x")


def test_wav_sink_then_source(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    sink = WavSink(path)
    tone = ToneSource(800)
    for _ in range(25):
        sink.write(tone.read(160) or b"")
    sink.close()
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 8000, 4000)
    source = WavSource(path)
    pcm = b"".join(iter(lambda: source.read(160) or b"", b""))
    assert len(pcm) == 8000 and tone_present(pcm, 800, min_windows=2)
    looped = WavSource(path, loop=True)
    assert all(looped.read(160) for _ in range(100))


def test_other_wav_formats_converted_or_refused(tmp_path: Path) -> None:
    path = tmp_path / "stereo16k.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        mono = array.array("h", (ToneSource(500, rate=16000).read(16000) or b""))
        w.writeframes(array.array("h", [s for s in mono for _ in (0, 1)]).tobytes())
    if load_audioop() is None:
        with pytest.raises(MediaUsageError, match="8000 Hz mono 16-bit"):
            WavSource(path)
    else:
        converted = WavSource(path)
        pcm = b"".join(iter(lambda: converted.read(8000) or b"", b""))
        assert len(pcm) == 16000          # 1 s at 8 kHz
        assert tone_present(pcm, 500, min_windows=2)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....nope")
    with pytest.raises(MediaUsageError, match="not a PCM WAV"):
        WavSource(bad)


def test_mixer_is_mix_minus() -> None:
    mixer = Mixer()
    a, b, c = mixer.port(), mixer.port(), mixer.port()
    tones = {a: ToneSource(600), b: ToneSource(1000), c: ToneSource(1400)}
    heard = {p: Recorder() for p in tones}
    for _ in range(50):
        for port, tone in tones.items():
            port.write(tone.read(160) or b"")
        mixer.tick(160)
        for port, rec in heard.items():
            rec.write(port.read(160) or bytes(320))
    assert tone_present(heard[a].pcm, 1000, threshold=0.3) and tone_present(heard[a].pcm, 1400, threshold=0.3)
    assert goertzel_ratio(heard[a].pcm, 600) < 0.01                     # not its own voice
    assert goertzel_ratio(heard[b].pcm, 1000) < 0.01 and goertzel_ratio(heard[b].pcm, 600) > 0.3
    c.close()
    mixer.add_source(ToneSource(2000))
    a.write(ToneSource(600).read(160) or b"")
    mixer.tick(160)
    out = b.read(160) or b""
    assert goertzel_ratio(out, 2000) > 0.3 and goertzel_ratio(out, 1400) < 0.01


def test_recorder_limit() -> None:
    rec = Recorder(limit=0.04)
    for _ in range(5):
        rec.write(bytes(320))
    assert len(rec.pcm) == 640
