"""16-bit linear PCM helpers: scale, add (with clipping), silence; audioop when present.

audioop is C (stdlib on 3.11/3.12, ``audioop-lts`` on 3.13+); the array
fallbacks give the same results, slower.
"""

from __future__ import annotations

import array
import sys
import warnings
from types import ModuleType

__all__ = ["add", "load_audioop", "scale", "silence"]


def load_audioop() -> ModuleType | None:
    if sys.byteorder != "little":
        return None  # G.711 and WAV data here are little-endian 16-bit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in 3.11/3.12 only
        try:
            import audioop
        except ImportError:
            return None
    return audioop


_audioop = load_audioop()
_SILENCE: dict[int, bytes] = {}


def silence(samples: int) -> bytes:
    frame = _SILENCE.get(samples)
    if frame is None:
        frame = _SILENCE[samples] = bytes(2 * samples)
    return frame


def _clip(value: float) -> int:
    return max(-32768, min(32767, int(value)))


def scale(pcm: bytes, factor: float) -> bytes:
    if _audioop is not None:
        return bytes(_audioop.mul(pcm, 2, factor))
    return array.array("h", (_clip(s * factor) for s in array.array("h", pcm))).tobytes()


def add(a: bytes, b: bytes) -> bytes:
    """Sample-wise sum of two frames of equal length, clipped to 16 bits."""
    if _audioop is not None:
        return bytes(_audioop.add(a, b, 2))
    return array.array("h", (_clip(x + y) for x, y in zip(array.array("h", a), array.array("h", b),
                                                         strict=True))).tobytes()
