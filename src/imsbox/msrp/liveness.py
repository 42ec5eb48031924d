"""Connection liveness as sans-I/O state: keep-alive, idle close, message deadline.

One ``ConnectionTimers`` per MSRP connection.  The I/O side tells it when
bytes came in or went out and when an incomplete message started; it asks
``next_deadline()`` and calls ``on_timer(now)`` when that time has come, the
same convention as the SIP transactions and ``SessionCore``.  Deadlines are
re-checked against the current state at ``on_timer``, so traffic does not
re-arm the timer on every read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ConnectionTimers", "Liveness", "LivenessAction"]


@dataclass(slots=True, frozen=True)
class Liveness:
    """The three limits; None switches one off.

    ``keepalive_interval``: an empty SEND after that long with nothing sent
    (RFC 4975 has no keep-alive of its own; an empty SEND is a no-op request).
    ``idle_timeout``: close after that long with nothing sent or received.
    ``message_timeout``: close when a message has been incomplete that long
    (a peer trickling one chunk forever)."""

    keepalive_interval: float | None = None
    idle_timeout: float | None = None
    message_timeout: float | None = None

    @property
    def active(self) -> bool:
        return bool(self.keepalive_interval or self.idle_timeout or self.message_timeout)


class LivenessAction(enum.Enum):
    NONE = "none"
    KEEPALIVE = "keepalive"            # send an empty SEND now
    CLOSE_IDLE = "close-idle"
    CLOSE_INCOMPLETE = "close-incomplete"


class ConnectionTimers:
    def __init__(self, limits: Liveness, now: float) -> None:
        self.limits = limits
        self.last_in = self.last_out = now
        self.keepalive_from = now   # last byte sent, or a keep-alive with nobody to send for
        self.message_since: float | None = None   # first byte of an incomplete message

    def received(self, now: float, in_message: bool, new_message: bool) -> None:
        """Bytes came in; ``in_message``: the parser is inside a message after
        them; ``new_message``: a message other than the one before started."""
        self.last_in = now
        if not in_message:
            self.message_since = None
        elif self.message_since is None or new_message:
            self.message_since = now

    def sent(self, now: float) -> None:
        self.last_out = self.keepalive_from = now

    def keepalive_skipped(self, now: float) -> None:
        """A keep-alive was due but no session could send it: ask again an
        interval later, without counting it as traffic for the idle close."""
        self.keepalive_from = now

    def next_deadline(self) -> float | None:
        limits = self.limits
        times = []
        if limits.idle_timeout:
            times.append(max(self.last_in, self.last_out) + limits.idle_timeout)
        if limits.message_timeout and self.message_since is not None:
            times.append(self.message_since + limits.message_timeout)
        if limits.keepalive_interval:
            times.append(self.keepalive_from + limits.keepalive_interval)
        return min(times) if times else None

    def on_timer(self, now: float) -> LivenessAction:
        """What is due at ``now`` (closing first: a dead connection needs no keep-alive)."""
        limits = self.limits
        if limits.idle_timeout and now - max(self.last_in, self.last_out) >= limits.idle_timeout:
            return LivenessAction.CLOSE_IDLE
        if limits.message_timeout and self.message_since is not None \
                and now - self.message_since >= limits.message_timeout:
            return LivenessAction.CLOSE_INCOMPLETE
        if limits.keepalive_interval and now - self.keepalive_from >= limits.keepalive_interval:
            return LivenessAction.KEEPALIVE
        return LivenessAction.NONE
