"""The audio offerer side and the RFC 3264 hold matrix, offer -> answer -> what RTP does."""

from __future__ import annotations

import pytest

from imsbox.media import AudioParams
from imsbox.sdp import (
    PCMA,
    PCMU,
    Direction,
    LocalCapabilities,
    NoCommonCodec,
    answer,
    audio_offer,
    hold_direction,
    next_version,
    parse,
    resume_direction,
)

ALICE = dict(address="192.0.2.1", session_id="100", audio_port=4000, ptime=20)
BOB = dict(address="192.0.2.2", session_id="200", audio_port=5000)


def test_default_audio_offer() -> None:
    offer = audio_offer(LocalCapabilities(**ALICE))
    assert str(offer) == (
        "v=0\r\no=- 100 100 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n")
    assert parse(bytes(offer)) == offer


def test_offer_direction_and_codec_order() -> None:
    offer = audio_offer(LocalCapabilities(**ALICE, audio_codecs=[PCMA, PCMU]),
                        direction=Direction.SENDONLY)
    (m,) = offer.media
    assert m.formats == ["8", "0"] and m.direction is Direction.SENDONLY


def test_reoffer_increments_version_only_when_changed() -> None:
    caps = LocalCapabilities(**ALICE)
    first = audio_offer(caps)
    same = audio_offer(LocalCapabilities(**{**ALICE, "session_id": "999"}), previous=first)
    assert (same.origin.sess_id, same.origin.sess_version) == ("100", "100")
    held = audio_offer(caps, direction=Direction.SENDONLY, previous=first)
    assert (held.origin.sess_id, held.origin.sess_version) == ("100", "101")
    resumed = audio_offer(caps, previous=held)
    assert resumed.origin.sess_version == "102"
    # the answerer's own re-answers follow the same rule
    ans = answer(first, LocalCapabilities(**BOB))
    again = next_version(ans, answer(held, LocalCapabilities(**BOB)))
    assert again.origin.sess_version == "201"


# RFC 3264 section 8.4 and 6.1: offered direction x answerer's own preference.
@pytest.mark.parametrize(("offered", "local", "answered"), [
    (Direction.SENDRECV, Direction.SENDRECV, Direction.SENDRECV),
    (Direction.SENDONLY, Direction.SENDRECV, Direction.RECVONLY),    # held by the offerer
    (Direction.RECVONLY, Direction.SENDRECV, Direction.SENDONLY),
    (Direction.INACTIVE, Direction.SENDRECV, Direction.INACTIVE),
    (Direction.SENDRECV, Direction.SENDONLY, Direction.SENDONLY),    # the answerer holds
    (Direction.SENDONLY, Direction.SENDONLY, Direction.INACTIVE),    # both hold
    (Direction.RECVONLY, Direction.SENDONLY, Direction.SENDONLY),
    (Direction.INACTIVE, Direction.SENDONLY, Direction.INACTIVE),
    (Direction.SENDRECV, Direction.RECVONLY, Direction.RECVONLY),
    (Direction.SENDONLY, Direction.RECVONLY, Direction.RECVONLY),
    (Direction.RECVONLY, Direction.RECVONLY, Direction.INACTIVE),
    (Direction.SENDRECV, Direction.INACTIVE, Direction.INACTIVE),
])
def test_hold_matrix(offered: Direction, local: Direction, answered: Direction) -> None:
    offer = audio_offer(LocalCapabilities(**ALICE), direction=offered)
    ours = answer(offer, LocalCapabilities(**BOB, audio_direction=local))
    assert ours.direction_of(ours.media[0]) is answered
    # and the RTP sessions of both ends do what the pair says
    alice = AudioParams.from_sdp(offer, ours)
    bob = AudioParams.from_sdp(ours, offer)
    assert alice.direction.sends == bob.direction.receives == (offered.sends and answered.receives)
    assert bob.direction.sends == alice.direction.receives == (answered.sends and offered.receives)


def test_legacy_hold_offer_is_recognized() -> None:
    offer = parse("v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
                  "m=audio 4000 RTP/AVP 0\r\n")
    ours = answer(offer, LocalCapabilities(**BOB))
    assert ours.media[0].direction is Direction.RECVONLY
    bob = AudioParams.from_sdp(ours, offer)
    assert bob.remote_host is None and not bob.direction.sends


@pytest.mark.parametrize(("current", "held", "resumed"), [
    (Direction.SENDRECV, Direction.SENDONLY, Direction.SENDRECV),
    (Direction.RECVONLY, Direction.INACTIVE, Direction.RECVONLY),
])
def test_hold_and_resume_offers(current: Direction, held: Direction, resumed: Direction) -> None:
    assert hold_direction(current) is held
    assert resume_direction(held) is resumed


def test_no_common_codec_lists_ours() -> None:
    offer = parse("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
                  "m=audio 4000 RTP/AVP 18 96\r\na=rtpmap:96 opus/48000/2\r\n")
    with pytest.raises(NoCommonCodec) as caught:
        answer(offer, LocalCapabilities(**BOB))
    assert caught.value.status == 488
    assert caught.value.codecs == ["PCMU/8000", "PCMA/8000", "telephone-event/8000"]


def test_params_from_offer_and_answer() -> None:
    offer = audio_offer(LocalCapabilities(**ALICE))
    ours = answer(offer, LocalCapabilities(**BOB, audio_codecs=[PCMA, PCMU]))
    alice = AudioParams.from_sdp(offer, ours)
    assert (alice.remote_host, alice.remote_port, alice.rtcp_port) == ("192.0.2.2", 5000, 5001)
    assert (alice.payload_type, alice.encoding, alice.telephone_event) == (8, "PCMA", None)
    assert alice.receive == {0: "PCMU", 8: "PCMA"}
    bob = AudioParams.from_sdp(ours, offer)
    assert (bob.payload_type, bob.encoding, bob.telephone_event, bob.ptime) == (0, "PCMU", 101, 20)
