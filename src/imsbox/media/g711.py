"""G.711 PCMU (mu-law) and PCMA (A-law) to and from 16-bit linear PCM.

Two implementations of the same ITU-T G.711 tables: ``audioop`` (C, in the
standard library on 3.11/3.12, the ``audioop-lts`` package on 3.13+) and
pure-Python lookup tables built here from the G.711 segment rules.  The
codec functions use audioop when it imports, the tables otherwise;
tests/bench/bench_rtp.py measures both (audioop is ~20x faster per 20 ms frame:
0.6 against 12.7 us to encode one, which is what lets one process carry
hundreds of calls); the tables are bit-exact with audioop.

Linear audio is 16-bit signed samples in native byte order, as ``wave`` and
``array('h')`` use on the platforms imsbox runs on (little-endian).
"""

from __future__ import annotations

import array
import functools
from collections.abc import Callable

from .pcm import load_audioop

__all__ = ["BACKEND", "alaw_decode", "alaw_encode", "decoder", "encoder",
           "table_alaw_decode", "table_alaw_encode", "table_ulaw_decode", "table_ulaw_encode",
           "ulaw_decode", "ulaw_encode"]


# --- the G.711 rules, sample by sample ---------------------------------------------

_BIAS = 0x84
_ULAW_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def ulaw_from_linear(sample: int) -> int:
    """One 16-bit sample to its mu-law code (G.711 table 2, on the 14-bit magnitude)."""
    pcm = sample >> 2
    mask = 0x7F if pcm < 0 else 0xFF
    pcm = min(-pcm if pcm < 0 else pcm, 8159) + (_BIAS >> 2)
    segment = next((i for i, end in enumerate(_ULAW_SEGMENT_ENDS) if pcm <= end), 8)
    if segment == 8:
        return 0x7F ^ mask  # beyond the last segment: the largest code
    return (segment << 4 | (pcm >> (segment + 1)) & 0x0F) ^ mask


def linear_from_ulaw(code: int) -> int:
    code = ~code & 0xFF
    exponent, mantissa = (code >> 4) & 0x07, code & 0x0F
    magnitude = ((mantissa << 3) + _BIAS << exponent) - _BIAS
    return -magnitude if code & 0x80 else magnitude


def alaw_from_linear(sample: int) -> int:
    """One 16-bit sample to its A-law code (G.711 table 1; even bits inverted, 0x55)."""
    sign = 0x80 if sample >= 0 else 0
    magnitude = min(sample if sample >= 0 else -sample - 1, 0x7FFF) >> 3  # 13-bit
    if magnitude < 32:
        code = magnitude >> 1
    else:
        exponent = magnitude.bit_length() - 5
        code = exponent << 4 | (magnitude >> exponent) & 0x0F
    return (sign | code) ^ 0x55


def linear_from_alaw(code: int) -> int:
    code ^= 0x55
    exponent, mantissa = (code >> 4) & 0x07, code & 0x0F
    magnitude = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if code & 0x80 else -magnitude


# --- pure-Python table codecs ------------------------------------------------------

@functools.cache
def _decode_table(law: str) -> array.array[int]:
    rule = linear_from_ulaw if law == "u" else linear_from_alaw
    return array.array("h", [rule(c) for c in range(256)])


@functools.cache
def _encode_table(law: str) -> bytes:
    """Codes indexed by the sample read as an unsigned 16-bit number (built on first use)."""
    rule = ulaw_from_linear if law == "u" else alaw_from_linear
    return bytes(rule(s - 65536 if s >= 32768 else s) for s in range(65536))


def _table_encoder(law: str) -> Callable[[bytes], bytes]:
    def encode(pcm: bytes) -> bytes:
        return bytes(map(_encode_table(law).__getitem__, memoryview(pcm).cast("B").cast("H")))
    return encode


def _table_decoder(law: str) -> Callable[[bytes], bytes]:
    def decode(data: bytes) -> bytes:
        return array.array("h", map(_decode_table(law).__getitem__, data)).tobytes()
    return decode


table_ulaw_encode = _table_encoder("u")
table_alaw_encode = _table_encoder("a")
table_ulaw_decode = _table_decoder("u")
table_alaw_decode = _table_decoder("a")

_audioop = load_audioop()
BACKEND = "audioop" if _audioop is not None else "tables"

def _audioop_codec(name: str) -> Callable[[bytes], bytes]:
    function = getattr(_audioop, name)

    def codec(data: bytes) -> bytes:
        return bytes(function(data, 2))
    return codec


ulaw_encode: Callable[[bytes], bytes]
ulaw_decode: Callable[[bytes], bytes]
alaw_encode: Callable[[bytes], bytes]
alaw_decode: Callable[[bytes], bytes]
if _audioop is not None:
    ulaw_encode, ulaw_decode = _audioop_codec("lin2ulaw"), _audioop_codec("ulaw2lin")
    alaw_encode, alaw_decode = _audioop_codec("lin2alaw"), _audioop_codec("alaw2lin")
else:
    ulaw_encode, ulaw_decode = table_ulaw_encode, table_ulaw_decode
    alaw_encode, alaw_decode = table_alaw_encode, table_alaw_decode

_CODECS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "PCMU": (ulaw_encode, ulaw_decode),
    "PCMA": (alaw_encode, alaw_decode),
}


def encoder(encoding_name: str) -> Callable[[bytes], bytes]:
    """The linear -> G.711 function for an rtpmap encoding name (PCMU, PCMA)."""
    return _CODECS[encoding_name.upper()][0]


def decoder(encoding_name: str) -> Callable[[bytes], bytes]:
    return _CODECS[encoding_name.upper()][1]
