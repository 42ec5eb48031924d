"""The mix-minus mixer (media/mixer.py) driven tick by tick, as a 3-way call uses it:
two RTP legs as ports, the UE's own voice as a local source, its ear as a listener."""

from __future__ import annotations

import array

from imsbox.media import Mixer, Recorder, ToneSource, goertzel_ratio, tone_present

SAMPLES = 160


def frame(value: int) -> bytes:
    return array.array("h", [value] * SAMPLES).tobytes()


def samples(pcm: bytes | None) -> list[int]:
    assert pcm is not None
    return list(array.array("h", pcm))


def run_three_way(ticks: int = 50) -> tuple[Recorder, Recorder, Recorder]:
    """A (local: 600 Hz source, listener) mixes B (1000 Hz) and C (1400 Hz)."""
    mixer = Mixer()
    b, c = mixer.port(), mixer.port()
    mixer.add_source(ToneSource(600))
    a_ear = Recorder()
    mixer.add_listener(a_ear)
    b_voice, c_voice = ToneSource(1000), ToneSource(1400)
    b_ear, c_ear = Recorder(), Recorder()
    for _ in range(ticks):
        mixer.tick(SAMPLES)                    # the clock hook runs before the sessions
        b.write(b_voice.read(SAMPLES) or b"")  # each leg: its received frame in ...
        b_ear.write(b.read(SAMPLES) or bytes(2 * SAMPLES))   # ... what it hears out
        c.write(c_voice.read(SAMPLES) or b"")
        c_ear.write(c.read(SAMPLES) or bytes(2 * SAMPLES))
    return a_ear, b_ear, c_ear


def test_each_party_hears_the_other_two_and_not_itself() -> None:
    a_ear, b_ear, c_ear = run_three_way()
    for ear, own, others in ((a_ear, 600, (1000, 1400)), (b_ear, 1000, (600, 1400)),
                             (c_ear, 1400, (600, 1000))):
        assert all(tone_present(ear.pcm, f, threshold=0.3) for f in others), own
        assert goertzel_ratio(ear.pcm, own) < 0.01, own


def test_sum_is_sample_wise_and_clipped() -> None:
    mixer = Mixer()
    b, c = mixer.port(), mixer.port()
    mixer.tick(SAMPLES)
    b.write(frame(1000))
    c.write(frame(-300))
    assert samples(b.read(SAMPLES)) == [-300] * SAMPLES      # c only
    assert samples(mixer.mix(SAMPLES)) == [700] * SAMPLES   # everyone (no exclusion)
    b.write(frame(30000))
    c.write(frame(30000))
    assert samples(mixer.mix(SAMPLES)) == [32767] * SAMPLES  # clipped, no wrap-around


def test_listener_hears_ports_not_local_sources() -> None:
    mixer = Mixer()
    b = mixer.port()
    mixer.add_source(ToneSource(600))
    ear = Recorder()
    mixer.add_listener(ear)
    mixer.tick(SAMPLES)
    assert ear.pcm == bytes(2 * SAMPLES)      # nothing from the ports yet: silence
    b.write(frame(123))
    mixer.tick(SAMPLES)
    assert samples(ear.frames[-1]) == [123] * SAMPLES
    mixer.remove_listener(ear)
    mixer.tick(SAMPLES)
    assert len(ear.frames) == 2


def test_a_leg_that_stops_writing_falls_silent() -> None:
    mixer = Mixer()
    b, c = mixer.port(), mixer.port()
    mixer.tick(SAMPLES)
    c.write(frame(500))
    mixer.tick(SAMPLES)
    assert samples(b.read(SAMPLES)) == [500] * SAMPLES   # last tick's frame still mixes
    mixer.tick(SAMPLES)
    assert b.read(SAMPLES) is None                       # two ticks old: dropped, not repeated


def test_gain_removed_port_and_wrong_length_frames() -> None:
    mixer = Mixer()
    b, c, d = mixer.port(), mixer.port(gain=0.5), mixer.port()
    mixer.tick(SAMPLES)
    c.write(frame(1000))
    d.write(b"\x00\x01")                  # a short frame is skipped, not mixed misaligned
    assert samples(b.read(SAMPLES)) == [500] * SAMPLES
    c.close()
    assert b.read(SAMPLES) is None and c not in mixer.ports
    source = ToneSource(600)
    mixer.add_source(source)
    mixer.tick(SAMPLES)
    assert b.read(SAMPLES) is not None
    mixer.remove_source(source)
    mixer.tick(SAMPLES)
    assert b.read(SAMPLES) is None
