"""The media layer: RTP audio for calls, media servers and mixers (see docs/media.md).

Sans-I/O parts (plain state, no sockets, no clock of their own):

* ``rtp``: ``RtpPacket`` parse/build (RFC 3550 section 5), ``SequenceTracker``
  (A.1 extended sequence numbers and loss), ``Packetizer`` (sequence,
  timestamp, SSRC, marker, wrap-around);
* ``rtcp``: SR, RR, SDES, BYE (section 6.4-6.6), ``parse_compound``,
  ``ReceptionStats`` (loss, fraction lost, A.8 jitter, LSR/DLSR), ``ReportTimer``;
* ``g711``: PCMU/PCMA codecs (audioop, or bit-exact lookup tables);
* ``jitter``: ``JitterBuffer`` (reorder, duplicates, late, loss, drift,
  adaptation) and ``Concealer`` (packet-loss concealment);
* ``dtmf``: RFC 4733 ``DtmfSender``/``DtmfReceiver``;
* ``audio``: sources and sinks (tones, DTMF tones, WAV, ``Recorder``),
  the mix-minus ``Mixer`` and the Goertzel ``tone_present`` detector;
* ``negotiate``: ``AudioParams.from_sdp`` (what an SDP offer/answer means for RTP).

asyncio: ``RtpSession`` (sockets from a ``PortAllocator``, symmetric RTP,
the shared 20 ms ``MediaClock``, direction for hold, ``RtpStats``).

Errors: ``MediaError`` > ``MediaUsageError`` (our mistake) and
``RtpProtocolError`` (a malformed packet: counted and dropped by a session).
"""

from .audio import (
    DTMF_FREQUENCIES,
    DtmfToneSource,
    Recorder,
    Silence,
    Sink,
    Source,
    ToneSource,
    WavSink,
    WavSource,
    goertzel_ratio,
    tone_present,
)
from .dtmf import DtmfEvent, DtmfReceiver, DtmfSender, TelephoneEvent
from .errors import MediaError, MediaUsageError, RtpProtocolError
from .jitter import Concealer, JitterBuffer
from .mixer import Mixer, MixerPort
from .negotiate import AudioParams
from .ports import PortAllocator
from .rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    ReportTimer,
    RtcpUnknown,
    Sdes,
    SenderReport,
    build_compound,
    parse_compound,
)
from .rtp import Packetizer, RtpPacket, SequenceTracker
from .session import MediaClock, RtpSession, RtpStats

__all__ = [
    "AudioParams", "Bye", "Concealer", "DTMF_FREQUENCIES", "DtmfEvent", "DtmfReceiver", "DtmfSender",
    "DtmfToneSource", "JitterBuffer", "MediaClock", "MediaError", "MediaUsageError", "Mixer",
    "MixerPort", "Packetizer", "PortAllocator", "ReceiverReport", "ReceptionStats", "Recorder",
    "ReportBlock", "ReportTimer", "RtcpUnknown", "RtpPacket", "RtpProtocolError", "RtpSession",
    "RtpStats", "Sdes", "SenderReport", "SequenceTracker", "Silence", "Sink", "Source",
    "TelephoneEvent", "ToneSource", "WavSink", "WavSource", "build_compound", "goertzel_ratio",
    "parse_compound", "tone_present",
]
