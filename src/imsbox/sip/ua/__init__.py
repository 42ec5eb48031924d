"""The SIP UA core: dialogs (RFC 3261 12), INVITE sessions (13-15, RFC 3262,
3311, 4028) and the asyncio UserAgent on top of SipEndpoint."""

from .dialog import (
    TARGET_REFRESH_METHODS, Dialog, DialogError, DialogId, DialogRole, DialogState,
    DialogTable, RouteSet, build_cancel, build_request,
)
from .invite import (
    InviteConfig, InviteSession, InviteState, OfferAnswer, Reliability, SessionError,
    SessionTimerConfig, StaticOfferAnswer, options_response,
)
from .useragent import Call, UserAgent

__all__ = [
    "UserAgent", "Call",
    "Dialog", "DialogError", "DialogId", "DialogRole", "DialogState", "DialogTable",
    "RouteSet", "TARGET_REFRESH_METHODS", "build_cancel", "build_request",
    "InviteConfig", "InviteSession", "InviteState", "OfferAnswer", "Reliability",
    "SessionError", "SessionTimerConfig", "StaticOfferAnswer", "options_response",
]
