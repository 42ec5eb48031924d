"""The answerer: seed offer/answer pairs reproduced, audio codecs and hold, rejection."""

from __future__ import annotations

from pathlib import Path

import pytest

from imsbox.sdp import (
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    Direction,
    FileRange,
    LocalCapabilities,
    MediaDescription,
    NoCommonCodec,
    SessionDescription,
    Setup,
    answer,
    intersect_types,
    media_type_matches,
    msrp_uri_port,
    parse,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "sdp"


def load(name: str) -> SessionDescription:
    return parse((FIXTURES / f"{name}.sdp").read_bytes())


def caps_like(seed_answer: SessionDescription, **overrides: object) -> LocalCapabilities:
    """Local capabilities matching what the answerer in a seed declared."""
    m = seed_answer.media[0]
    assert seed_answer.connection is not None and m.path is not None
    settings: dict[str, object] = dict(
        address=seed_answer.connection.address, addr_type=seed_answer.connection.addr_type,
        session_id="1", msrp_path=m.path, accept_types=m.accept_types or (),
        accept_wrapped_types=m.accept_wrapped_types or (), max_size=m.max_size,
        msrp_cema=m.msrp_cema)
    settings.update(overrides)
    return LocalCapabilities(**settings)  # type: ignore[arg-type]


def same_negotiation(ours: MediaDescription, ours_sd: SessionDescription,
                     seed: MediaDescription, seed_sd: SessionDescription) -> None:
    assert ours.port == seed.port
    assert ours.proto == seed.proto
    assert ours.setup is (seed.setup or Setup.PASSIVE)  # RFC 4145: absent in an answer = passive
    assert ours.accept_types == seed.accept_types
    assert ours.accept_wrapped_types == seed.accept_wrapped_types
    assert ours.max_size == seed.max_size
    assert ours.msrp_cema == seed.msrp_cema
    assert ours.path == seed.path
    assert ours_sd.direction_of(ours) is seed_sd.direction_of(seed)
    assert ours.file_selector == seed.file_selector
    assert ours.file_transfer_id == seed.file_transfer_id
    assert ours.file_range == seed.file_range


@pytest.mark.parametrize("pair", ["000_chat", "001_chat", "002_a51_conference", "002_a52_conference",
                                  "003_cpm_session", "003_file_transfer", "rfc5547_push"])
def test_seed_answers_reproduced(pair: str) -> None:
    offer, seed = load(f"{pair}_offer"), load(f"{pair}_answer")
    extra = {"request_whole_file": True} if pair == "003_file_transfer" else {}
    ours = answer(offer, caps_like(seed, **extra))
    assert len(ours.media) == len(offer.media)
    same_negotiation(ours.media[0], ours, seed.media[0], seed)
    assert ours.connection == seed.connection
    assert ours.times == (offer.times or ours.times)
    assert parse(bytes(ours)) == ours  # the answer is well-formed


def test_chat_answer_exact_attributes() -> None:
    seed = load("000_chat_answer")
    ours = answer(load("000_chat_offer"), caps_like(seed))
    assert bytes(ours) == (
        b"v=0\r\no=- 1 1 IN IP6 2001:0:0:1::2\r\ns=-\r\nc=IN IP6 2001:0:0:1::2\r\nt=0 0\r\n"
        b"m=message 16000 TCP/MSRP *\r\n"
        b"a=accept-types:message/cpim application/im-iscomposing+xml\r\n"
        b"a=accept-wrapped-types:*\r\n"
        b"a=path:msrp://[2001:0000:0000:0001:0000:0000:0000:0002]:16000/558f02b9d0;tcp\r\n"
        b"a=setup:passive\r\na=msrp-cema\r\na=sendrecv\r\n")


def test_file_push_answer_is_recvonly_and_omits_offer_only_attributes() -> None:
    seed = load("003_file_transfer_answer")
    m = answer(load("003_file_transfer_offer"), caps_like(seed, request_whole_file=True)).media[0]
    assert m.direction is Direction.RECVONLY
    assert m.setup is Setup.ACTIVE  # offer was passive
    assert m.accept_types == ["image/jpeg"]
    for name in ("file-disposition", "file-date", "file-icon"):
        assert not m.has_attribute(name)  # RFC 5547 section 8.3.1


MSRP_CAPS = dict(address="192.0.2.5", session_id="7", msrp_path=["msrp://192.0.2.5:2855/abc;tcp"])


def message_offer(*attributes: str, proto: str = "TCP/MSRP") -> SessionDescription:
    return parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
                 f"m=message 9 {proto} *\n" + "".join(f"a={a}\n" for a in attributes))


def test_file_pull_answer_is_sendonly() -> None:
    offer = message_offer("recvonly", "accept-types:message/cpim", "path:msrp://h:1/x;tcp",
                          "setup:actpass", 'file-selector:name:"a.txt" type:text/plain',
                          "file-transfer-id:t1")
    m = answer(offer, LocalCapabilities(**MSRP_CAPS, accept_types=["text/plain"])).media[0]
    assert m.direction is Direction.SENDONLY
    assert m.setup is Setup.ACTIVE
    assert m.file_transfer_id == "t1"
    assert m.file_selector is not None and m.file_selector.name == "a.txt"
    assert m.file_range is None


def test_actpass_with_passive_preference_and_holdconn() -> None:
    offer = message_offer("accept-types:text/plain", "path:msrp://h:1/x;tcp", "setup:actpass")
    caps = LocalCapabilities(**MSRP_CAPS, setup=Setup.PASSIVE)
    assert answer(offer, caps).media[0].setup is Setup.PASSIVE
    held = message_offer("accept-types:text/plain", "path:msrp://h:1/x;tcp", "setup:holdconn")
    assert answer(held, caps).media[0].setup is Setup.HOLDCONN
    legacy = message_offer("accept-types:text/plain", "path:msrp://h:1/x;tcp")
    assert answer(legacy, caps).media[0].setup is Setup.PASSIVE  # absent means active offerer


def test_accept_types_wildcards() -> None:
    assert media_type_matches("*", "text/plain")
    assert media_type_matches("text/*", "TEXT/html")
    assert not media_type_matches("text/*", "image/png")
    assert intersect_types(["image/*", "text/plain", "*"], ["image/png"]) == ["image/*", "*"]
    assert intersect_types(["text/plain"], ["*"]) == ["text/plain"]
    assert intersect_types(["message/cpim"], ["text/plain", "message/*"]) == ["message/cpim"]
    offer = message_offer("accept-types:image/*", "path:msrp://h:1/x;tcp")
    m = answer(offer, LocalCapabilities(**MSRP_CAPS, accept_types=["text/plain", "image/png"])).media[0]
    assert m.accept_types == ["image/png"]


def test_no_common_accept_types_rejects_stream() -> None:
    offer = message_offer("accept-types:video/mp4", "path:msrp://h:1/x;tcp",
                          "file-transfer-id:t9", "file-selector:size:5")
    m = answer(offer, LocalCapabilities(**MSRP_CAPS, accept_types=["text/plain"])).media[0]
    assert (m.port, m.proto, m.formats) == (0, "TCP/MSRP", ["*"])
    # A rejected file transfer mirrors file-selector and file-transfer-id (RFC 5547 section 8.3).
    assert [a.name for a in m.attributes] == ["file-selector", "file-transfer-id"]


def test_tls_msrp_support_and_rejection() -> None:
    offer = message_offer("accept-types:text/plain", "path:msrps://h:1/x;tcp", proto="TCP/TLS/MSRP")
    assert answer(offer, LocalCapabilities(**MSRP_CAPS)).media[0].proto == "TCP/TLS/MSRP"
    tcp_only = LocalCapabilities(**MSRP_CAPS, msrp_protos=["TCP/MSRP"])
    assert answer(offer, tcp_only).media[0].port == 0


def test_cema_only_when_both_support_it() -> None:
    offer = message_offer("accept-types:text/plain", "path:msrp://h:1/x;tcp", "msrp-cema")
    assert not answer(offer, LocalCapabilities(**MSRP_CAPS)).media[0].msrp_cema
    assert answer(offer, LocalCapabilities(**MSRP_CAPS, msrp_cema=True)).media[0].msrp_cema
    plain = message_offer("accept-types:text/plain", "path:msrp://h:1/x;tcp")
    assert not answer(plain, LocalCapabilities(**MSRP_CAPS, msrp_cema=True)).media[0].msrp_cema


def test_path_factory_port_and_offered_file_range() -> None:
    offer = message_offer("sendonly", "accept-types:text/plain", "path:msrp://h:1/x;tcp",
                          "file-selector:size:100 type:text/plain", "file-transfer-id:a",
                          "file-range:50-*")
    calls: list[int] = []

    def factory(index: int, offered: MediaDescription) -> list[str]:
        calls.append(index)
        return [f"msrp://[2001:db8::1]:4000/s{index};tcp"]

    caps = LocalCapabilities(address="2001:db8::1", addr_type="IP6", msrp_path=factory,
                             accept_types=["text/plain"], request_whole_file=True)
    m = answer(offer, caps).media[0]
    assert calls == [0]
    assert m.port == 4000
    assert m.path == ["msrp://[2001:db8::1]:4000/s0;tcp"]
    assert m.file_range == FileRange(50, None)  # the offered range wins
    explicit = LocalCapabilities(**MSRP_CAPS, msrp_port=5000, file_range=FileRange(1, 10))
    no_range = message_offer("sendonly", "accept-types:text/plain", "path:msrp://h:1/x;tcp",
                             "file-selector:size:100", "file-transfer-id:a")
    m2 = answer(no_range, explicit).media[0]
    assert (m2.port, m2.file_range) == (5000, FileRange(1, 10))


def test_msrp_uri_port() -> None:
    assert msrp_uri_port("msrp://[2001::1]:8880/FmnP;tcp") == 8880
    assert msrp_uri_port("msrps://user@host.example.com:2855/x;tcp") == 2855
    assert msrp_uri_port("msrp://host/x;tcp") is None
    assert msrp_uri_port("garbage") is None


def test_message_without_local_path_or_malformed_offer_rejected() -> None:
    offer = message_offer("accept-types:text/plain", "path:msrp://h:1/x;tcp")
    assert answer(offer, LocalCapabilities(address="192.0.2.5")).media[0].port == 0
    bad = message_offer("accept-types:text/plain", "path:msrp://h:1/x;tcp", "setup:bogus")
    assert answer(bad, LocalCapabilities(**MSRP_CAPS)).media[0].port == 0


# --- audio -----------------------------------------------------------------------

AUDIO_CAPS = dict(address="192.0.2.200", session_id="9", audio_port=6000)


def test_audio_codec_intersection_in_our_order_keeps_offer_numbers() -> None:
    ours = answer(load("audio_offer"), LocalCapabilities(**AUDIO_CAPS))
    (m,) = ours.media
    assert (m.port, m.formats) == (6000, ["0", "8", "101"])
    assert [str(a) for a in m.attributes] == [
        "rtpmap:0 PCMU/8000", "rtpmap:8 PCMA/8000", "rtpmap:101 telephone-event/8000",
        "fmtp:101 0-15"]
    assert ours.direction_of(m) is Direction.SENDRECV
    pcma_first = LocalCapabilities(**AUDIO_CAPS, audio_codecs=[Codec("PCMA", 8000), PCMU], ptime=20)
    m2 = answer(load("audio_offer"), pcma_first).media[0]
    assert m2.formats == ["8", "0"]  # our preference first; telephone-event not supported locally
    assert m2.attribute_values("ptime") == ["20"]
    offer_order = LocalCapabilities(**AUDIO_CAPS, audio_codecs=[Codec("PCMA", 8000), PCMU],
                                    audio_order="offer")
    assert answer(load("audio_offer"), offer_order).media[0].formats == ["0", "8"]  # RFC 3264 6.1


def test_dynamic_payload_type_and_offered_fmtp() -> None:
    offer = parse("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
                  "m=audio 5 RTP/AVP 96 0\na=rtpmap:96 TELEPHONE-EVENT/8000\na=fmtp:96 0-11\n")
    caps = LocalCapabilities(**AUDIO_CAPS, audio_codecs=[PCMU, Codec("telephone-event", 8000)])
    m = answer(offer, caps).media[0]
    assert m.formats == ["0", "96"]
    assert m.fmtp("96") is not None and m.fmtp("96").parameters == "0-11"


def test_only_telephone_event_in_common_is_no_common_codec() -> None:
    offer = parse("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
                  "m=audio 5 RTP/AVP 18 101\na=rtpmap:101 telephone-event/8000\n")
    with pytest.raises(NoCommonCodec) as caught:
        answer(offer, LocalCapabilities(**AUDIO_CAPS, audio_codecs=[PCMU, TELEPHONE_EVENT]))
    assert caught.value.status == 488
    assert caught.value.codecs == ["PCMU/8000", "telephone-event/8000"]
    # beside an accepted stream, the audio stream is only rejected (port 0)
    mixed = parse("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
                  "m=audio 5 RTP/AVP 18\nm=message 9 TCP/MSRP *\na=accept-types:text/plain\n"
                  "a=path:msrp://h:1/x;tcp\n")
    ours = answer(mixed, LocalCapabilities(**MSRP_CAPS, audio_port=6000))
    assert [m.port for m in ours.media] == [0, 2855]


@pytest.mark.parametrize(("offered", "local", "expected"), [
    ("sendonly", Direction.SENDRECV, Direction.RECVONLY),
    ("recvonly", Direction.SENDRECV, Direction.SENDONLY),
    ("inactive", Direction.SENDRECV, Direction.INACTIVE),
    ("sendrecv", Direction.SENDRECV, Direction.SENDRECV),
    ("sendrecv", Direction.RECVONLY, Direction.RECVONLY),
    ("sendrecv", Direction.SENDONLY, Direction.SENDONLY),
    ("sendonly", Direction.SENDONLY, Direction.INACTIVE),
])
def test_hold_and_resume_directions(offered: str, local: Direction, expected: Direction) -> None:
    offer = load("audio_hold_sendonly_offer")
    offer.media[0].direction = Direction(offered)
    ours = answer(offer, LocalCapabilities(**AUDIO_CAPS, audio_direction=local))
    assert ours.media[0].direction is expected


def test_legacy_hold_is_a_sendonly_offer() -> None:
    ours = answer(load("audio_hold_legacy_offer"), LocalCapabilities(**AUDIO_CAPS))
    assert ours.media[0].direction is Direction.RECVONLY
    assert ours.connection is not None and ours.connection.address == "192.0.2.200"


def test_unsupported_streams_rejected_in_place() -> None:
    offer = load("audio_video_offer")
    ours = answer(offer, LocalCapabilities(**AUDIO_CAPS))
    assert [(m.media, m.port, m.formats) for m in ours.media] == [
        ("audio", 6000, ["0"]), ("video", 0, ["31", "32"])]
    no_audio = answer(offer, LocalCapabilities(address="192.0.2.200"))
    assert [m.port for m in no_audio.media] == [0, 0]


def test_mixed_offer_keeps_m_line_order_and_disabled_streams() -> None:
    offer = parse("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
                  "m=message 9 TCP/MSRP *\na=accept-types:text/plain\na=path:msrp://h:1/x;tcp\n"
                  "m=audio 0 RTP/AVP 0\n"
                  "m=audio 7 RTP/AVP 0\n")
    ours = answer(offer, LocalCapabilities(**MSRP_CAPS, audio_port=6000))
    assert [(m.media, m.port) for m in ours.media] == [("message", 2855), ("audio", 0), ("audio", 6000)]


def test_default_origin_is_ntp_time() -> None:
    ours = answer(load("audio_offer"), LocalCapabilities(address="192.0.2.200", audio_port=1))
    assert int(ours.origin.sess_id) > 3_900_000_000
    assert ours.origin.sess_version == ours.origin.sess_id
