"""Caller preferences (RFC 3841 section 7.2): which registered contacts a
request may reach, and in what order.

Contacts carry feature tags (RFC 3840) as Contact parameters of their
REGISTER; requests carry Accept-Contact / Reject-Contact predicates.  This
module is pure: it takes feature sets and predicates and returns the kept
contacts ordered by (q, caller preference score).

Simplifications: only the contact's explicit feature tags are known (no
implicit ``methods``/``events`` from Allow and Allow-Events), and numeric
ranges are compared as ``#=N``, ``#>=N``, ``#<=N`` and ``#A:B``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import unquote

from ..sip.headers import FeatureSet, HeaderError
from ..sip.message import Request

__all__ = ["CallerPreferences", "Ranked", "contact_features", "rank_contacts"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Contact parameters that look like feature tags but identify the binding.
_NOT_FEATURES = frozenset({"+sip.instance"})


@dataclass(slots=True, frozen=True)
class CallerPreferences:
    """The Accept-Contact and Reject-Contact predicates of one request."""

    accept: tuple[FeatureSet, ...] = ()
    reject: tuple[FeatureSet, ...] = ()

    @classmethod
    def from_request(cls, request: Request) -> CallerPreferences:
        """Raises HeaderError on a malformed element (answer 400)."""
        return cls(_predicates(request, "Accept-Contact"), _predicates(request, "Reject-Contact"))

    @property
    def empty(self) -> bool:
        return not self.accept and not self.reject


def _predicates(request: Request, name: str) -> tuple[FeatureSet, ...]:
    out = []
    for value in request.headers.values(name):
        try:
            out.append(FeatureSet.parse(value))
        except HeaderError as exc:
            raise HeaderError(name, exc.reason) from None
    return tuple(out)


def contact_features(params: Iterable[tuple[str, str | None]]) -> FeatureSet:
    """The feature set a contact registered (its Contact parameters)."""
    features = FeatureSet.from_params(params)  # type: ignore[arg-type]
    for name in _NOT_FEATURES:
        features.tags.pop(name, None)
    return features


@dataclass(slots=True, frozen=True)
class Ranked(Generic[T]):
    """A kept contact with its q value and caller preference score Qa."""

    item: T
    q: float
    score: float


def rank_contacts(contacts: Sequence[tuple[T, FeatureSet, float]],
                  prefs: CallerPreferences) -> list[Ranked[T]]:
    """RFC 3841 7.2.4: drop rejected / not matching contacts, order the rest
    by q (highest first), then by score Qa, keeping registration order on ties."""
    kept: list[Ranked[T]] = []
    for item, features, q in contacts:
        if any(_rejects(predicate, features) for predicate in prefs.reject):
            continue
        score = _accept_score(prefs.accept, features)
        if score is not None:
            kept.append(Ranked(item, q, score))
    return sorted(kept, key=lambda r: (-r.q, -r.score))


def _rejects(predicate: FeatureSet, features: FeatureSet) -> bool:
    """A Reject-Contact predicate discards a contact that lists all its tags
    explicitly and matches them all."""
    if not predicate.tags:
        return False
    return all(tag in features.tags and _tag_matches(predicate, features, tag)
               for tag in predicate.tags)


def _accept_score(predicates: Sequence[FeatureSet], features: FeatureSet) -> float | None:
    """Qa of a contact, or None when a ``require`` predicate discards it."""
    scores = []
    for predicate in predicates:
        if not predicate.tags:
            continue
        # Tags the contact does not list could have any value: only the
        # listed ones are compared, and they must all match.
        listed = [tag for tag in predicate.tags if tag in features.tags]
        matched = all(_tag_matches(predicate, features, tag) for tag in listed)
        score = len(listed) / len(predicate.tags)
        if not matched or (predicate.explicit and score < 1.0):
            if predicate.require:
                return None
            continue
        scores.append(score)
    return sum(scores) / len(scores) if scores else 0.0


def _tag_matches(predicate: FeatureSet, features: FeatureSet, tag: str) -> bool:
    """RFC 3840 9: some value the caller accepts is one the contact has."""
    wanted = _values(predicate, tag)
    have = _values(features, tag)
    return any(_value_matches(w, have) for w in wanted)


def _values(features: FeatureSet, tag: str) -> set[str]:
    """A tag's value set; a bare tag means boolean TRUE."""
    if features.tags.get(tag) is None:
        return {"true"}
    return {_normal(v) for v in features.values(tag)} or {"true"}


def _normal(value: str) -> str:
    """%-decoded; <string> values compare exactly, tokens case-insensitively."""
    value = unquote(value.strip())
    if value.startswith("<") and value.endswith(">"):
        return value
    return value.lower()


def _value_matches(wanted: str, have: set[str]) -> bool:
    if wanted.startswith("!"):
        return not _value_matches(wanted[1:], have)
    if wanted.startswith("#"):
        return any(_numeric_matches(wanted[1:], h) for h in have)
    return wanted in have


def _numeric_matches(condition: str, value: str) -> bool:
    number = _number(value.lstrip("#="))
    if number is None:
        return False
    try:
        if condition.startswith(">="):
            return number >= float(condition[2:])
        if condition.startswith("<="):
            return number <= float(condition[2:])
        if condition.startswith("="):
            return number == float(condition[1:])
        low, _, high = condition.partition(":")
        return float(low) <= number <= float(high)
    except ValueError:
        log.debug("bad numeric feature condition %r", condition)
        return False


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
