"""Client side of imsbox: the RCS UE (``RcsClient``, ``imsbox ue``) and its helpers."""

from .client import (
    CallEvent,
    Chat,
    ChatEnded,
    ChatMessage,
    ChatStarted,
    Composing,
    FileFailed,
    FileOffer,
    FileProgress,
    FileReceived,
    FileTransferResult,
    GroupChat,
    GroupJoined,
    GroupLeft,
    GroupMessage,
    MessageReceived,
    MessageStatus,
    Notification,
    ParticipantJoined,
    ParticipantLeft,
    RcsClient,
    RcsError,
    RcsEvent,
    ReferResult,
    Registered,
    RegistrationError,
    SendError,
    resolve_target,
)
from .register import Registration, register

__all__ = [
    "CallEvent", "Chat", "ChatEnded", "ChatMessage", "ChatStarted", "Composing", "FileFailed",
    "FileOffer", "FileProgress", "FileReceived", "FileTransferResult", "GroupChat",
    "GroupJoined", "GroupLeft", "GroupMessage", "MessageReceived", "MessageStatus",
    "Notification", "ParticipantJoined", "ParticipantLeft", "RcsClient", "RcsError", "RcsEvent",
    "ReferResult", "Registered", "Registration", "RegistrationError", "SendError", "register",
    "resolve_target",
]
