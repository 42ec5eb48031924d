"""The media server's media pieces: the shared music, announcements, the 2.3 NOTIFY dialog."""

from __future__ import annotations

import pytest

from imsbox.apps.mrf_media import DEFAULT_MELODY, Music, announcement
from imsbox.media import MediaUsageError, tone_present
from imsbox.sip.ua.refer import sipfrag
from imsbox.ue.music_hold import music_dialog


def test_default_melody_and_shared_cursors() -> None:
    music = Music.load(None)
    assert len(music.pcm) == 2 * 8000 * len(DEFAULT_MELODY)
    first, second = music.listener(), music.listener()
    assert music.listeners == 2
    second.read(8000)                            # one note ahead
    a = b"".join(first.read(160) or b"" for _ in range(50))
    b = b"".join(second.read(160) or b"" for _ in range(50))
    assert tone_present(a, DEFAULT_MELODY[0]) and tone_present(b, DEFAULT_MELODY[1])
    for _ in range(50 * len(DEFAULT_MELODY)):    # it loops round
        assert len(first.read(160) or b"") == 320


def test_music_too_short_or_missing() -> None:
    with pytest.raises(MediaUsageError, match="too short"):
        Music(b"\x00\x00", "x")
    with pytest.raises(MediaUsageError):
        Music.load("/nonexistent/moh.wav")


def test_announcements() -> None:
    busy = announcement("busy")
    assert busy is not None and len(busy) == 2 * 8000 * 3
    assert tone_present(busy, 480, threshold=0.3)
    orbit = announcement("orbit-42")
    assert orbit is not None and tone_present(orbit[:4800], 1000, min_windows=1)
    for bad in ("nothing", "orbit-", "orbit-x", "../etc", "A" * 80):
        assert announcement(bad) is None


def test_music_dialog_from_the_final_notify() -> None:
    body = sipfrag(200) + (b"Call-ID: abc@h\r\nFrom: <sip:moh@ims.test>;tag=m1\r\n"
                           b"To: <sip:alice@ims.test>;tag=a1\r\n")
    dialog = music_dialog(body)
    assert dialog is not None
    # as the held party sees it: to-tag is hers, from-tag the music server's
    assert (dialog.call_id, dialog.to_tag, dialog.from_tag) == ("abc@h", "a1", "m1")
    assert music_dialog(sipfrag(200)) is None
    assert music_dialog(sipfrag(200) + b"Call-ID: x\r\nFrom: <sip:moh@d>\r\nTo: <sip:a@d>;tag=1\r\n") is None
