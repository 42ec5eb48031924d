"""application/im-iscomposing+xml and its composer/receiver state machines (RFC 3994)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from .errors import ContentProtocolError
from .xmlsafe import (
    child_text,
    child_uint,
    expect_root,
    format_datetime,
    parse_datetime,
    parse_xml,
    required_text,
    serialize,
    sub,
)

log = logging.getLogger(__name__)

ISCOMPOSING_NS = "urn:ietf:params:xml:ns:im-iscomposing"
DEFAULT_REFRESH = 120.0  # receiver's timeout when <refresh> is absent (section 3.3)
DEFAULT_IDLE_TIMEOUT = 15.0  # composer's idle timeout (section 3.2)


class ComposingState(Enum):
    ACTIVE = "active"
    IDLE = "idle"


@dataclass(slots=True)
class IsComposing:
    """An isComposing status message (RFC 3994 section 3.4)."""

    state: ComposingState
    lastactive: datetime | None = None
    contenttype: str | None = None
    refresh: int | None = None

    def __post_init__(self) -> None:
        if self.refresh is not None and self.refresh < 1:
            raise ContentProtocolError(f"refresh must be a positive integer, got {self.refresh}")

    def to_xml(self) -> bytes:
        root = ET.Element("isComposing", {"xmlns": ISCOMPOSING_NS})
        sub(root, "state", self.state.value)
        if self.lastactive is not None:
            sub(root, "lastactive", format_datetime(self.lastactive))
        if self.contenttype is not None:
            sub(root, "contenttype", self.contenttype)
        if self.refresh is not None:
            sub(root, "refresh", str(self.refresh))
        return serialize(root)


def parse_iscomposing(data: bytes) -> IsComposing:
    """RFC 3994 section 6; unknown state tokens read as idle (section 3.5)."""
    root = parse_xml(data)
    expect_root(root, ISCOMPOSING_NS, "isComposing")
    token = required_text(root, ISCOMPOSING_NS, "state")
    state = ComposingState.ACTIVE if token == "active" else ComposingState.IDLE
    lastactive = child_text(root, ISCOMPOSING_NS, "lastactive")
    return IsComposing(
        state=state,
        lastactive=parse_datetime(lastactive, "<lastactive>") if lastactive is not None else None,
        contenttype=child_text(root, ISCOMPOSING_NS, "contenttype"),
        refresh=child_uint(root, ISCOMPOSING_NS, "refresh", minimum=1),
    )


@dataclass(slots=True, frozen=True)
class SendStatus:
    """Action: send this isComposing document to the peer."""

    document: IsComposing


@dataclass(slots=True, frozen=True)
class ComposingIndication:
    """Action: show the user that the peer is now in `state`."""

    state: ComposingState


class MessageComposer:
    """Sender side of RFC 3994 section 3.2 (Figure 1); sans-I/O, driven by `now` seconds.

    Status messages go out on transitions and on active-state refresh only.
    """

    def __init__(self, refresh: int | None = 60, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 contenttype: str | None = None) -> None:
        if refresh is not None and refresh < 1:
            raise ContentProtocolError(f"refresh must be a positive integer, got {refresh}")
        self.refresh = refresh
        self.idle_timeout = idle_timeout
        self.contenttype = contenttype
        self.state = ComposingState.IDLE
        self.enabled = True
        self._idle_at: float | None = None
        self._refresh_at: float | None = None

    def composing(self, now: float) -> list[SendStatus]:
        """The user added or edited content."""
        self._idle_at = now + self.idle_timeout
        if self.state is ComposingState.ACTIVE:
            return []
        self.state = ComposingState.ACTIVE
        return self._send_active(now)

    def content_sent(self, now: float) -> list[SendStatus]:
        """The content message went out: idle without an 'idle' status message."""
        self._go_idle()
        return []

    def disable(self) -> None:
        """Section 4: stop after the peer answered 415 Unsupported Media Type."""
        self.enabled = False
        self._go_idle()

    def next_deadline(self) -> float | None:
        """When ``on_timer`` must next be called: idle timeout or refresh (None: none)."""
        deadlines = [t for t in (self._idle_at, self._refresh_at) if t is not None]
        return min(deadlines) if deadlines else None

    def on_timer(self, now: float) -> list[SendStatus]:
        """Fire what is due at ``now``: go idle, or refresh the active status."""
        if self.state is not ComposingState.ACTIVE:
            return []
        if self._idle_at is not None and now >= self._idle_at:
            self._go_idle()
            return self._send(IsComposing(ComposingState.IDLE, contenttype=self.contenttype))
        if self._refresh_at is not None and now >= self._refresh_at:
            return self._send_active(now)
        return []

    def _send_active(self, now: float) -> list[SendStatus]:
        if self.refresh is not None:
            self._refresh_at = now + self.refresh
        doc = IsComposing(ComposingState.ACTIVE, contenttype=self.contenttype, refresh=self.refresh)
        return self._send(doc)

    def _send(self, doc: IsComposing) -> list[SendStatus]:
        return [SendStatus(doc)] if self.enabled else []

    def _go_idle(self) -> None:
        self.state = ComposingState.IDLE
        self._idle_at = None
        self._refresh_at = None


class StatusMessageReceiver:
    """Receiver side of RFC 3994 section 3.3 (Figure 2); sans-I/O, driven by `now` seconds."""

    def __init__(self) -> None:
        self.state = ComposingState.IDLE
        self._expires_at: float | None = None

    def status_received(self, document: IsComposing, now: float) -> list[ComposingIndication]:
        if document.state is ComposingState.IDLE:
            return self._go_idle()
        timeout = float(document.refresh) if document.refresh is not None else DEFAULT_REFRESH
        self._expires_at = now + timeout
        if self.state is ComposingState.ACTIVE:
            return []
        self.state = ComposingState.ACTIVE
        return [ComposingIndication(ComposingState.ACTIVE)]

    def content_received(self, now: float) -> list[ComposingIndication]:
        return self._go_idle()

    def next_deadline(self) -> float | None:
        """When the active state expires without a refresh (None: idle)."""
        return self._expires_at

    def on_timer(self, now: float) -> list[ComposingIndication]:
        """Fall back to idle when the refresh did not come in time."""
        if self._expires_at is not None and now >= self._expires_at:
            return self._go_idle()
        return []

    def _go_idle(self) -> list[ComposingIndication]:
        self._expires_at = None
        if self.state is ComposingState.IDLE:
            return []
        self.state = ComposingState.IDLE
        return [ComposingIndication(ComposingState.IDLE)]
