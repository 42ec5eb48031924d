"""The SIP UA core: dialogs with their usages (RFC 3261 12, RFC 5057), INVITE
sessions (13-15, RFC 3262, 3311, 4028) and the asyncio UserAgent, whose
modules serve requests on a SipEndpoint."""

from .dialog import (
    EVENT_METHODS, TARGET_REFRESH_METHODS, Dialog, DialogError, DialogId, DialogRole,
    DialogState, DialogTable, DialogUsage, InviteMatch, RouteSet, UsageKind, build_cancel,
    build_request,
)
from .invite import (
    InviteConfig, InviteSession, InviteState, OfferAnswer, Reliability, SessionError,
    SessionTimerConfig, StaticOfferAnswer, options_response,
)
from .useragent import Call, Origin, UserAgent

__all__ = [
    "UserAgent", "Call", "Origin",
    "Dialog", "DialogError", "DialogId", "DialogRole", "DialogState", "DialogTable",
    "DialogUsage", "InviteMatch", "UsageKind", "RouteSet", "EVENT_METHODS",
    "TARGET_REFRESH_METHODS", "build_cancel", "build_request",
    "InviteConfig", "InviteSession", "InviteState", "OfferAnswer", "Reliability",
    "SessionError", "SessionTimerConfig", "StaticOfferAnswer", "options_response",
]
