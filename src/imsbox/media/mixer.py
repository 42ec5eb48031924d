"""Mix-minus audio mixing per 20 ms tick, sans-I/O (no sockets, no clock of its own).

A conference mixer sums 16-bit linear PCM frames so that every party hears
everyone but itself (mix-minus):

* a ``MixerPort`` is one remote party (one RTP leg): the leg's session writes
  the frame it received into the port (the port is the session's *sink*) and
  reads what that party hears out of it (the port is the session's *source*):
  the sum of every other port and of the local sources;
* ``add_source`` is a local input every port hears (the UE's own microphone
  or a file in a 3-way call);
* ``add_listener`` is a local output (the UE's own loudspeaker or recording):
  it hears every port, not the local sources (nobody hears themselves).

Driving it: ``tick(samples)`` once per frame period, before the legs' sessions
tick (``MediaClock.hooks``).  A tick pulls one frame from each local source
and hands each listener the mix of the ports' latest frames.  A port frame
older than one tick is no longer mixed, so a leg that stopped (ended, held,
its session closed) falls silent instead of repeating its last frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .pcm import add, scale

if TYPE_CHECKING:  # the protocols only; audio.py re-exports this module
    from .audio import Sink, Source

__all__ = ["Mixer", "MixerPort"]


class MixerPort:
    """One party of a ``Mixer``: write what it sends in, read what it should hear."""

    def __init__(self, mixer: Mixer, gain: float = 1.0) -> None:
        self.mixer = mixer
        self.gain = gain
        self.frame: bytes | None = None
        self.written = -1          # the mixer tick the frame was written in

    def write(self, pcm: bytes) -> None:
        self.frame = pcm if self.gain == 1.0 else scale(pcm, self.gain)
        self.written = self.mixer.ticks

    def read(self, samples: int) -> bytes | None:
        return self.mixer.mix(samples, exclude=self)

    def close(self) -> None:
        self.mixer.remove(self)

    def fresh(self, tick: int) -> bytes | None:
        """The frame if it was written this tick or the one before, else None."""
        return self.frame if self.written >= tick - 1 else None


class Mixer:
    """Mix-minus: each port hears the sum of the others' latest frames and of the sources;
    each listener hears the sum of the ports."""

    def __init__(self) -> None:
        self.ports: list[MixerPort] = []
        self.sources: list[Source] = []
        self.listeners: list[Sink] = []
        self.ticks = 0
        self._source_frames: list[bytes | None] = []

    def port(self, gain: float = 1.0) -> MixerPort:
        port = MixerPort(self, gain)
        self.ports.append(port)
        return port

    def remove(self, port: MixerPort) -> None:
        if port in self.ports:
            self.ports.remove(port)

    def add_source(self, source: Source) -> None:
        """A local input every port hears (the UE's own microphone or a file)."""
        self.sources.append(source)

    def remove_source(self, source: Source) -> None:
        if source in self.sources:
            self.sources.remove(source)

    def add_listener(self, sink: Sink) -> None:
        """A local output that hears every port (what the UE's user hears)."""
        self.listeners.append(sink)

    def remove_listener(self, sink: Sink) -> None:
        if sink in self.listeners:
            self.listeners.remove(sink)

    def tick(self, samples: int) -> None:
        """One frame period: pull the local sources, feed the listeners (before the legs tick)."""
        self.ticks += 1
        self._source_frames = [s.read(samples) for s in self.sources]
        if self.listeners:
            heard = self._sum(samples, self._port_frames(None)) or bytes(2 * samples)
            for sink in self.listeners:
                sink.write(heard)

    def mix(self, samples: int, exclude: MixerPort | None = None) -> bytes | None:
        """What ``exclude``'s party hears: every other port plus the local sources."""
        return self._sum(samples, [*self._port_frames(exclude), *self._source_frames])

    def _port_frames(self, exclude: MixerPort | None) -> list[bytes | None]:
        return [p.fresh(self.ticks) for p in self.ports if p is not exclude]

    @staticmethod
    def _sum(samples: int, frames: Iterable[bytes | None]) -> bytes | None:
        total: bytes | None = None
        for frame in frames:
            if frame is None or len(frame) != 2 * samples:
                continue
            total = frame if total is None else add(total, frame)   # clipped to 16 bits
        return total
