"""What a UE reports: errors, message statuses and the events of ``RcsClient.events()``.

Every event names who it is from and to; ``to_json()`` is its ``--json`` line
(at least "event", "from", "to", then its own fields).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ..sip.uri import UriError, parse_uri

__all__ = [
    "CallConference", "CallEarlyMedia", "CallJoined", "RedialFailed", "RedialRetry", "RedialWaiting",
    "CallEvent", "ChatEnded", "ChatMessage", "ChatStarted", "Composing", "FileFailed",
    "FileOffer", "FileProgress", "FileReceived", "FileTransferResult", "GroupJoined",
    "GroupLeft", "GroupMessage", "GroupSubject", "MessageReceived", "MessageStatus", "Notification",
    "ParticipantJoined", "ParticipantLeft", "RcsError", "RcsEvent", "Registered",
    "RegistrationError", "SendError", "resolve_target",
    "CallAnswered", "CallEnded", "CallHeld", "CallParked", "CallResumed", "CallRinging",
    "CallTransferred",
    "RtpStatsEvent",
]

_E164 = re.compile(r"\+[0-9]{3,15}")


class RcsError(Exception):
    """A client operation failed; the message says why, ``status`` is the SIP
    status behind it when there is one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SendError(RcsError):
    """A message, chat or file was refused or could not be sent. ``message_id``:
    the chat message that failed (its status is ``failed``: send it again)."""

    def __init__(self, message: str, status: int | None = None,
                 message_id: str | None = None) -> None:
        super().__init__(message, status)
        self.message_id = message_id


class RegistrationError(RcsError):
    """REGISTER failed; ``unanswered`` says the P-CSCF never answered (nothing
    listening: a local timeout or connection refused)."""

    def __init__(self, message: str, status: int | None = None,
                 unanswered: bool = False) -> None:
        super().__init__(message, status)
        self.unanswered = unanswered


class MessageStatus(enum.Enum):
    """Where a message we sent stands, from the IMDNs that came back."""

    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    DISPLAYED = "displayed"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {MessageStatus.SENDING: 0, MessageStatus.SENT: 1, MessageStatus.DELIVERED: 2,
         MessageStatus.DISPLAYED: 3, MessageStatus.FAILED: 4}


# -- events -----------------------------------------------------------------------------

@dataclass(slots=True)
class RcsEvent:
    """Base of every event: who it is from and to; ``to_json()`` for ``--json``."""

    sender: str
    recipient: str
    EVENT: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.EVENT, "from": self.sender, "to": self.recipient}
        for f in fields(self)[2:]:
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, enum.Enum) else value
        return out


@dataclass(slots=True)
class MessageReceived(RcsEvent):
    """A standalone message (pager or large message mode)."""

    text: str
    message_id: str | None
    content_type: str
    mode: str  # "pager", "large" or "deferred" (retrieved, seed 003)
    conversation_id: str | None = None
    EVENT: ClassVar[str] = "message"


@dataclass(slots=True)
class ChatMessage(RcsEvent):
    text: str
    message_id: str | None
    chat_id: str
    EVENT: ClassVar[str] = "chat_message"


@dataclass(slots=True)
class Composing(RcsEvent):
    """The peer started or stopped typing (RFC 3994)."""

    state: str  # "active" or "idle"
    chat_id: str | None = None
    EVENT: ClassVar[str] = "iscomposing"


@dataclass(slots=True)
class Notification(RcsEvent):
    """A delivery or display notification (IMDN) for a message we sent."""

    message_id: str
    notification: str  # "delivery", "display" or "processing" (the network stored it)
    status: str        # "delivered", "displayed", "failed", ...
    chat_id: str | None = None
    EVENT: ClassVar[str] = "notification"


@dataclass(slots=True)
class ChatStarted(RcsEvent):
    chat_id: str
    conversation_id: str | None
    direction: str  # "incoming" or "outgoing"
    EVENT: ClassVar[str] = "chat_started"


@dataclass(slots=True)
class ChatEnded(RcsEvent):
    chat_id: str
    reason: str
    EVENT: ClassVar[str] = "chat_ended"


@dataclass(slots=True)
class FileOffer(RcsEvent):
    transfer_id: str
    name: str
    size: int | None
    content_type: str | None
    EVENT: ClassVar[str] = "file_offer"


@dataclass(slots=True)
class FileProgress(RcsEvent):
    transfer_id: str
    name: str
    sent: int
    size: int
    EVENT: ClassVar[str] = "file_progress"


@dataclass(slots=True)
class FileReceived(RcsEvent):
    """A whole file arrived; ``ok`` says the sha-1 of the offer matched."""

    transfer_id: str
    name: str
    size: int
    path: str
    sha256: str
    ok: bool
    EVENT: ClassVar[str] = "file_received"


@dataclass(slots=True)
class FileFailed(RcsEvent):
    """An incoming file broke off (connection or session gone, stalled): ``kept``
    octets stay in ``part``, which a resumed transfer of the same file continues."""

    transfer_id: str
    name: str
    size: int | None
    kept: int
    part: str
    reason: str
    EVENT: ClassVar[str] = "file_failed"


@dataclass(slots=True)
class CallEvent(RcsEvent):
    """An INVITE that is no CPM service (a voice call): reported, then declined."""

    call_id: str
    media: list[str]
    EVENT: ClassVar[str] = "call"


@dataclass(slots=True)
class Registered(RcsEvent):
    """The registration changed: ``state`` "registered" or "failed"."""

    state: str
    expires: int
    status: int | None = None
    EVENT: ClassVar[str] = "registration"


@dataclass(slots=True)
class GroupJoined(RcsEvent):
    """We are in a group chat (from: the inviter, else the conference): who is in it
    (the first conference-info, RFC 4575); ``how`` "created", "joined" or "invited"."""

    conference: str
    participants: list[str]
    subject: str | None
    how: str
    group_id: str
    conversation_id: str | None
    EVENT: ClassVar[str] = "group_joined"


@dataclass(slots=True)
class ParticipantJoined(RcsEvent):
    """Someone (from) came into the group chat."""

    conference: str
    display_name: str | None
    group_id: str
    EVENT: ClassVar[str] = "participant_joined"


@dataclass(slots=True)
class ParticipantLeft(RcsEvent):
    """Someone (from) left the group chat: ``reason`` "departed", "booted" (removed),
    "failed" or "busy" (RFC 4575 disconnection-method)."""

    conference: str
    reason: str
    group_id: str
    EVENT: ClassVar[str] = "participant_left"


@dataclass(slots=True)
class GroupSubject(RcsEvent):
    """The group chat's subject changed (from: the conference; RFC 4575 subject)."""

    conference: str
    subject: str
    group_id: str
    EVENT: ClassVar[str] = "group_subject"


@dataclass(slots=True)
class GroupMessage(RcsEvent):
    """A message in a group chat; from is its original sender (CPIM From)."""

    conference: str
    text: str
    message_id: str | None
    group_id: str
    EVENT: ClassVar[str] = "group_message"


@dataclass(slots=True)
class GroupLeft(RcsEvent):
    """Our part in the group chat ended: we left, were removed or it ended."""

    conference: str
    reason: str
    group_id: str
    EVENT: ClassVar[str] = "group_left"


# -- voice calls (ue/call.py) ------------------------------------------------------------

@dataclass(slots=True)
class CallRinging(RcsEvent):
    """The callee is alerted (180), or a call rings here."""

    call_id: str
    EVENT: ClassVar[str] = "call_ringing"


@dataclass(slots=True)
class CallAnswered(RcsEvent):
    call_id: str
    direction: str      # our RTP direction, sendrecv unless the answer says otherwise
    EVENT: ClassVar[str] = "call_answered"


@dataclass(slots=True)
class CallHeld(RcsEvent):
    """We put the call on hold (our direction is now sendonly or inactive)."""

    call_id: str
    direction: str
    EVENT: ClassVar[str] = "call_held"


@dataclass(slots=True)
class CallResumed(RcsEvent):
    call_id: str
    direction: str
    EVENT: ClassVar[str] = "call_resumed"


@dataclass(slots=True)
class CallEnded(RcsEvent):
    """``reason``: local hangup, remote hangup, busy, cancelled, not acceptable, ..."""

    call_id: str
    reason: str
    EVENT: ClassVar[str] = "call_ended"


@dataclass(slots=True)
class CallTransferred(RcsEvent):
    """A transfer of the call ``call_id`` (RFC 5359 2.4-2.6) came to an end here.

    ``role``: transferor (we sent the REFER or the IM), transferee (we got the
    REFER), target (our call was replaced by the transferee's INVITE with
    Replaces); ``kind``: unattended, attended or im; ``outcome``: transferred
    or failed; ``status``: the referenced INVITE's final status (the NOTIFY
    sipfrag) when known; ``new_call_id``: the call that goes on, if ours."""

    call_id: str
    target: str
    outcome: str
    role: str
    kind: str
    status: int | None = None
    reason: str = ""
    new_call_id: str | None = None
    EVENT: ClassVar[str] = "call_transferred"


@dataclass(slots=True)
class CallParked(RcsEvent):
    """We parked the call ``call_id`` (RFC 5359 2.15) with the party ``to``:
    ``orbit`` is its number (anyone gets the call back by calling ``uri``,
    sip:park-ORBIT@DOMAIN); on failure ``orbit`` is None, ``status``/``reason``
    say why and the call goes on."""

    call_id: str
    orbit: int | None
    uri: str
    status: int
    reason: str = ""
    EVENT: ClassVar[str] = "call_parked"


@dataclass(slots=True)
class RtpStatsEvent(RcsEvent):
    """The call's RTP counters (``RtpStats``: packets_sent/received, lost, jitter_ms...)."""

    call_id: str
    stats: dict[str, Any]
    EVENT: ClassVar[str] = "rtp_stats"


@dataclass(slots=True)
class CallEarlyMedia(RcsEvent):
    """A provisional (183 Session Progress) brought the callee's answer: its audio
    plays before the call is answered (RFC 3261 13.2.1, RFC 3960)."""

    call_id: str
    status: int
    EVENT: ClassVar[str] = "call_early_media"


@dataclass(slots=True)
class CallConference(RcsEvent):
    """A 3-way call mixed here (RFC 5359 2.10, 2.11): ``state`` mixing (the legs in
    ``calls``, to ``parties``, are mixed mix-minus), party_left (one leg ended, the
    rest go on) or ended (one party left: a plain call again, or none)."""

    call_id: str                 # the conference: its first leg's Call-ID
    state: str
    calls: list[str]
    parties: list[str]
    EVENT: ClassVar[str] = "call_conference"


@dataclass(slots=True)
class CallJoined(RcsEvent):
    """An INVITE with Join (RFC 3911) added its sender (from) to our call
    ``joined_call_id``; ``call_id`` is the joining call."""

    call_id: str
    joined_call_id: str
    EVENT: ClassVar[str] = "call_joined"


@dataclass(slots=True)
class RedialWaiting(RcsEvent):
    """Automatic redial (RFC 5359 2.17): the callee was busy (``call_id`` the refused
    call); we watch its dialog events until it is idle, at most ``timeout`` s."""

    call_id: str
    attempt: int
    timeout: float
    EVENT: ClassVar[str] = "redial_waiting"


@dataclass(slots=True)
class RedialRetry(RcsEvent):
    """The callee's dialog events show it idle: calling again (``call_id`` the new call)."""

    call_id: str
    attempt: int
    EVENT: ClassVar[str] = "redial_retry"


@dataclass(slots=True)
class RedialFailed(RcsEvent):
    """Redial gave up: ``reason`` timeout, the subscription was refused, still busy..."""

    call_id: str
    attempt: int
    reason: str
    EVENT: ClassVar[str] = "redial_failed"


@dataclass(slots=True)
class FileTransferResult:
    """What ``send_file`` achieved; ``ok`` only when the receiver confirmed every byte."""

    ok: bool
    target: str
    name: str
    size: int
    sha256: str
    transfer_id: str
    status: int | None = None
    reason: str = ""
    message_id: str = ""   # imdn.Message-ID of the INVITE's CPIM part (the IMDN's subject)
    file_range: str = ""   # the octets sent, "START-STOP" (less than the file when resumed)
    deferred: bool = False  # the recipient is offline: the network keeps the file for it


def resolve_target(to: str, domain: str) -> str:
    """TO as the contract has it: SIP/tel URI, E.164 -> tel:, bare name -> sip:NAME@DOMAIN."""
    text = to.strip()
    if _E164.fullmatch(text):
        text = f"tel:{text}"
    elif not text.lower().startswith(("sip:", "sips:", "tel:")):
        text = f"sip:{text}" if "@" in text else f"sip:{text}@{domain}"
    try:
        parse_uri(text)
    except (UriError, ValueError) as exc:
        raise RcsError(f"{to!r} is not a SIP URI, tel URI, name or E.164 number: {exc}") from None
    return text

