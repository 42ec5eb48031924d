"""A subscriber's telephony service data: keys, validation, and what a call asks of it.

Sans-I/O: the telephony AS reads the values from ``store.service_data`` (KEY ->
list of strings, owner = the subscriber's default public identity) and turns
them into :class:`Services`; ``imsbox service set`` validates with
:func:`validate` before it writes, so the AS only ever sees good values.

Keys (docs/telephony-as.md)::

    forward-unconditional URI            RFC 5359 2.7
    forward-busy URI                     2.8: every contact answered 486 / 600
    forward-no-answer URI [after=S]      2.9: no answer within S s: CANCEL, forward
    find-me URI... [after=S]             2.12: each target in turn, S s each
    screen-incoming PATTERN...           2.13: callers refused 603
    screen-outgoing PATTERN...           2.14: targets refused 403
    pickup-group NAME                    2.16: who may pick up whose calls (default:
                                         the whole home domain is one group)
    diversion on|off                     add Diversion (RFC 5806) beside History-Info
                                         on calls forwarded to this subscriber

A URI value is a ``sip:``/``sips:``/``tel:`` URI, a ``+E164`` number (made
``tel:``) or a bare user NAME (made ``sip:NAME@DOMAIN``). A PATTERN is one of
those, and may use ``*`` for any characters (``sip:*@spam.example``,
``+1900*``); a number pattern matches the party's E.164 identities.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..sip.identity import canonical_public_id
from ..sip.uri import UriError, parse_uri

__all__ = [
    "FIND_ME", "FORWARD_BUSY", "FORWARD_NO_ANSWER", "FORWARD_UNCONDITIONAL", "KEYS",
    "DIVERSION", "PICKUP_GROUP", "SCREEN_INCOMING", "SCREEN_OUTGOING", "ServiceDataError", "Services",
    "describe", "matches", "validate",
]

FORWARD_UNCONDITIONAL = "forward-unconditional"
FORWARD_BUSY = "forward-busy"
FORWARD_NO_ANSWER = "forward-no-answer"
FIND_ME = "find-me"
SCREEN_INCOMING = "screen-incoming"
SCREEN_OUTGOING = "screen-outgoing"
PICKUP_GROUP = "pickup-group"
DIVERSION = "diversion"
# key -> (at least, at most) values, not counting after=S
KEYS: dict[str, tuple[int, int]] = {
    FORWARD_UNCONDITIONAL: (1, 1),
    FORWARD_BUSY: (1, 1),
    FORWARD_NO_ANSWER: (1, 1),
    FIND_ME: (1, 10),
    SCREEN_INCOMING: (1, 100),
    SCREEN_OUTGOING: (1, 100),
    PICKUP_GROUP: (1, 1),
    DIVERSION: (1, 1),
}
TIMED = (FORWARD_NO_ANSWER, FIND_ME)   # the keys that take after=S
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,63}")
_NUMBER = re.compile(r"\+?[0-9][0-9*]{0,15}|\*")
_AFTER = re.compile(r"after=([0-9]+(?:\.[0-9]+)?)")


class ServiceDataError(ValueError):
    """A service setting that cannot be stored; the message says what to fix."""


def _uri(text: str, domain: str, key: str, canonical: bool = False) -> str:
    """A forwarding target as a URI (ServiceDataError if it is none): as written
    (a gateway's port and transport matter), or ``canonical`` for matching."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if text.startswith("+") and text[1:].isdigit() and 1 < len(text) <= 16:
        return f"tel:{text}"
    if _NAME.fullmatch(text):
        return f"sip:{text}@{domain}"
    if not text.lower().startswith(("sip:", "sips:", "tel:")):
        raise ServiceDataError(f"{key}: {text!r} is not a URI; expected sip:USER@HOST, "
                               "tel:+NUMBER, +NUMBER or a user name")
    try:
        uri = canonical_public_id(text)
        written = str(parse_uri(text))
    except (ValueError, UriError) as exc:
        raise ServiceDataError(f"{key}: malformed URI {text!r}: {exc}") from None
    if uri.startswith("sip") and "@" not in uri:
        raise ServiceDataError(f"{key}: {text!r} names no user (sip:USER@HOST)")
    return uri if canonical else written


def _pattern(text: str, domain: str, key: str) -> str:
    """A screening pattern: a number (glob) or a URI (glob), canonical."""
    if _NUMBER.fullmatch(text):
        return text if text.startswith(("+", "*")) else f"+{text}"
    if "*" not in text:
        return _uri(text, domain, key, canonical=True)
    probe = text.replace("*", "x")
    if not probe.lower().startswith(("sip:", "sips:", "tel:")):
        raise ServiceDataError(f"{key}: pattern {text!r}: expected a URI such as "
                               "sip:*@example.com or a number such as +1900*")
    _uri(probe, domain, key)   # the shape must be a URI once the wildcards are filled
    return text.lower() if text.lower().startswith(("sip:", "sips:")) else text


def validate(key: str, values: Sequence[str], domain: str,
             after: float | None = None) -> list[str]:
    """The values to store for ``key`` (canonical, ``after=S`` last), or ServiceDataError."""
    if key not in KEYS:
        raise ServiceDataError(f"unknown setting {key!r}; expected one of " + ", ".join(KEYS))
    low, high = KEYS[key]
    if not low <= len(values) <= high:
        want = f"{low}" if low == high else f"{low} to {high}"
        raise ServiceDataError(f"{key}: expected {want} value(s), got {len(values)}")
    if after is not None and key not in TIMED:
        raise ServiceDataError(f"{key}: --after applies only to " + " and ".join(TIMED))
    if after is not None and not 0 < after <= 3600:
        raise ServiceDataError(f"--after: expected seconds 0-3600, got {after}")
    if key in (SCREEN_INCOMING, SCREEN_OUTGOING):
        out = [_pattern(v, domain, key) for v in values]
    elif key == PICKUP_GROUP:
        if not _NAME.fullmatch(values[0]):
            raise ServiceDataError(f"{key}: {values[0]!r}: expected a group name")
        out = list(values)
    elif key == DIVERSION:
        if values[0].lower() not in ("on", "off"):
            raise ServiceDataError(f"{key}: {values[0]!r}: expected on or off")
        out = [values[0].lower()]
    else:
        out = [_uri(v, domain, key) for v in values]
    return out + ([f"after={after:g}"] if after is not None else [])


def describe(key: str, values: Sequence[str]) -> str:
    """One line of ``imsbox service show``: ``KEY  VALUE... (after S s)``."""
    plain = [v for v in values if not _AFTER.fullmatch(v)]
    after = [v[6:] for v in values if _AFTER.fullmatch(v)]
    return f"{key}  {' '.join(plain)}" + (f"  (after {after[0]} s)" if after else "")


def matches(pattern: str, identities: Iterable[str]) -> bool:
    """Does a screening pattern match one of a party's identities (canonical URIs)?"""
    for identity in identities:
        if pattern.startswith(("+", "*")) and not pattern.startswith("*@"):
            number = _number_of(identity)
            if number is not None and fnmatch.fnmatchcase(number, pattern):
                return True
        elif fnmatch.fnmatchcase(identity.lower() if identity.startswith("sip") else identity,
                                 pattern):
            return True
    return False


def _number_of(identity: str) -> str | None:
    """``+E164`` of tel:+N and sip:+N@host;user=phone; else None."""
    if identity.startswith("tel:"):
        return identity[4:]
    if identity.startswith("sip:+") and identity.endswith(";user=phone"):
        return identity[4:identity.index("@")]
    return None


@dataclass(slots=True, frozen=True)
class Services:
    """What one subscriber's settings ask of a call."""

    unconditional: str | None = None
    busy: str | None = None
    no_answer: str | None = None
    no_answer_after: float | None = None
    find_me: tuple[str, ...] = ()
    find_me_after: float | None = None
    screen_incoming: tuple[str, ...] = ()
    screen_outgoing: tuple[str, ...] = ()
    pickup_group: str | None = None   # None: the home domain's group
    diversion: bool = False           # calls forwarded to us also carry Diversion

    @classmethod
    def from_settings(cls, settings: Mapping[str, Sequence[str]]) -> Services:
        def targets(key: str) -> tuple[str, ...]:
            return tuple(v for v in settings.get(key, ()) if not _AFTER.fullmatch(v))

        def after(key: str) -> float | None:
            found = [_AFTER.fullmatch(v) for v in settings.get(key, ())]
            return next((float(m.group(1)) for m in found if m), None)

        def first(key: str) -> str | None:
            return next(iter(targets(key)), None)

        return cls(first(FORWARD_UNCONDITIONAL), first(FORWARD_BUSY),
                   first(FORWARD_NO_ANSWER), after(FORWARD_NO_ANSWER),
                   targets(FIND_ME), after(FIND_ME),
                   targets(SCREEN_INCOMING), targets(SCREEN_OUTGOING),
                   pickup_group=first(PICKUP_GROUP),
                   diversion=first(DIVERSION) == "on")

    @property
    def rings_for(self) -> bool:
        """Does a call to this subscriber need a no-answer timer on its first leg?"""
        return self.no_answer is not None or bool(self.find_me)
