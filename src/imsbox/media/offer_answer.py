"""One call leg's SDP offers and answers (RFC 3264) and the RTP session they
configure: the INVITE session's ``OfferAnswer`` for an audio leg, shared by the
UE's calls and the media server's legs (each says what its offer is)."""

from __future__ import annotations

import logging
import secrets

from ..sdp import (
    Direction, LocalCapabilities, NoCommonCodec, SdpError, SessionDescription, answer,
    audio_offer, parse,
)
from .errors import MediaError
from .negotiate import AudioParams
from .session import RtpSession

__all__ = ["AudioOfferAnswer"]

log = logging.getLogger(__name__)


class AudioOfferAnswer:
    """``answer``/``answered`` apply the negotiated audio to ``session``;
    ``refused`` keeps the NoCommonCodec of an offer answered 488."""

    def __init__(self, session: RtpSession, host: str,
                 direction: Direction = Direction.SENDRECV) -> None:
        self.session = session
        self.caps = LocalCapabilities(address=host, addr_type="IP6" if ":" in host else "IP4",
                                      audio_port=session.local_port, ptime=20,
                                      audio_direction=direction,
                                      session_id=str(secrets.randbelow(2**31)))
        self.version = int(self.caps.session_id or 0)
        self.local: SessionDescription | None = None
        self.refused: NoCommonCodec | None = None

    def make_offer(self, direction: Direction = Direction.SENDRECV) -> bytes:
        self.local = audio_offer(self.caps, direction=direction, previous=self.local)
        return bytes(self.local)

    def answer(self, offer: bytes) -> bytes | None:
        """Our answer, applied to the RTP session; None (488) when unusable."""
        try:
            remote = parse(offer)
            self.version += 1
            self.caps.session_version = str(self.version)
            local = answer(remote, self.caps)
            self.session.configure(AudioParams.from_sdp(local, remote))
        except NoCommonCodec as exc:
            self.refused = exc
            return None
        except (SdpError, MediaError) as exc:
            log.info("unusable audio offer: %s", exc)
            return None
        self.local = local
        return bytes(local)

    def answered(self, answer_body: bytes) -> None:
        if self.local is None:
            return
        try:
            self.session.configure(AudioParams.from_sdp(self.local, parse(answer_body)))
        except (SdpError, MediaError) as exc:
            log.info("unusable audio answer: %s", exc)
