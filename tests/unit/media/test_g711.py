"""G.711 against ITU-T reference values, round trips, and the table codec against audioop."""

from __future__ import annotations

import array

import pytest

from imsbox.media import g711
from imsbox.media.pcm import load_audioop


def pcm(*samples: int) -> bytes:
    return array.array("h", samples).tobytes()


def samples(data: bytes) -> list[int]:
    return list(array.array("h", data))


@pytest.mark.parametrize(("encode", "decode"), [
    (g711.ulaw_encode, g711.ulaw_decode), (g711.table_ulaw_encode, g711.table_ulaw_decode)])
def test_ulaw_reference_codes(encode, decode) -> None:
    # G.711 mu-law: 0 -> 0xFF, full scale -> 0x80 / 0x00; 0x7F and 0xFF both decode to 0
    assert encode(pcm(0, 32767, -32768, -1, 8)) == bytes([0xFF, 0x80, 0x00, 0x7E, 0xFE])
    assert samples(decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xF0]))) == [0, 0, 32124, -32124, 120]


@pytest.mark.parametrize(("encode", "decode"), [
    (g711.alaw_encode, g711.alaw_decode), (g711.table_alaw_encode, g711.table_alaw_decode)])
def test_alaw_reference_codes(encode, decode) -> None:
    # G.711 A-law: even bits inverted, 0 -> 0xD5, -1 -> 0x55, full scale 0xAA / 0x2A
    assert encode(pcm(0, -1, 32767, -32768)) == bytes([0xD5, 0x55, 0xAA, 0x2A])
    assert samples(decode(bytes([0xD5, 0x55, 0xAA, 0x2A]))) == [8, -8, 32256, -32256]


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_every_code_round_trips(law: str) -> None:
    encode, decode = getattr(g711, f"{law}_encode"), getattr(g711, f"{law}_decode")
    codes = bytes(range(256))
    again = encode(decode(codes))
    if law == "ulaw":   # 0x7F and 0xFF both mean 0; 0 encodes as 0xFF
        assert again == codes.replace(b"\x7f", b"\xff")
    else:
        assert again == codes


def test_quantization_error_is_bounded() -> None:
    for law in ("ulaw", "alaw"):
        encode, decode = getattr(g711, f"{law}_encode"), getattr(g711, f"{law}_decode")
        values = list(range(-32000, 32000, 37))
        back = samples(decode(encode(pcm(*values))))
        assert all(abs(a - b) <= max(16, abs(a) // 16) for a, b in zip(values, back))


def test_tables_are_bit_exact_with_audioop() -> None:
    audioop = load_audioop()
    if audioop is None:
        pytest.skip("no audioop on this Python (3.13+ without audioop-lts)")
    every = array.array("h", range(-32768, 32768)).tobytes()
    assert g711.table_ulaw_encode(every) == audioop.lin2ulaw(every, 2)
    assert g711.table_alaw_encode(every) == audioop.lin2alaw(every, 2)
    codes = bytes(range(256))
    assert g711.table_ulaw_decode(codes) == audioop.ulaw2lin(codes, 2)
    assert g711.table_alaw_decode(codes) == audioop.alaw2lin(codes, 2)


def test_codec_lookup_by_encoding_name() -> None:
    assert g711.encoder("pcmu") is g711.ulaw_encode and g711.decoder("PCMA") is g711.alaw_decode
