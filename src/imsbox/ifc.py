"""Initial filter criteria: model and evaluation (TS 29.228 Annex B/C, TS 23.218 6.4).

An iFC names an application server and a trigger point. The trigger point is a
set of service point triggers (SPTs) combined in conjunctive normal form (CNF:
AND of OR-groups) or disjunctive normal form (DNF: OR of AND-groups); each SPT
carries the group numbers it belongs to and may be negated.

Evaluation works on :class:`RequestView` - method, Request-URI text, header
(name, value) pairs, body - so it does not depend on the SIP message classes.
Regular expressions are searched (not anchored); write ``^...$`` to anchor.

iFCs travel through the store as JSON documents (:meth:`InitialFilterCriteria.to_json`)
and through imsbox.toml as tables with the same shape (:meth:`from_dict`).
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .sip.headers import COMPACT_FORMS

__all__ = [
    "ApplicationServer",
    "DefaultHandling",
    "HeaderSpt",
    "IfcError",
    "InitialFilterCriteria",
    "MethodSpt",
    "ProfilePartIndicator",
    "RequestUriSpt",
    "RequestView",
    "SdpLineSpt",
    "ServicePointTrigger",
    "SessionCase",
    "SessionCaseSpt",
    "TriggerPoint",
    "matching_ifcs",
    "next_ifc",
]


class IfcError(ValueError):
    """An iFC document or value is invalid; the message names the field."""


class SessionCase(enum.Enum):
    """TS 29.228 SessionCase values."""

    ORIGINATING = 0
    TERMINATING_REGISTERED = 1
    TERMINATING_UNREGISTERED = 2
    ORIGINATING_UNREGISTERED = 3
    ORIGINATING_CDIV = 4

    @property
    def registered(self) -> bool:
        return self not in (SessionCase.TERMINATING_UNREGISTERED,
                            SessionCase.ORIGINATING_UNREGISTERED)


class DefaultHandling(enum.Enum):
    """What the S-CSCF does when the AS cannot be reached (TS 29.228 B.2.2)."""

    SESSION_CONTINUED = 0
    SESSION_TERMINATED = 1


class ProfilePartIndicator(enum.Enum):
    """Restricts an iFC to the registered or the unregistered state."""

    REGISTERED = 0
    UNREGISTERED = 1


@dataclass(slots=True, frozen=True)
class RequestView:
    """What iFC evaluation needs from a SIP request."""

    method: str
    request_uri: str
    headers: Sequence[tuple[str, str]] = ()
    body: str | bytes = ""
    # long header name -> values, built on the first header_values() call:
    # every SPT of every iFC asks, so the headers are folded once per view
    _by_name: dict[str, list[str]] | None = field(default=None, init=False, repr=False,
                                                  compare=False)

    def header_values(self, name: str) -> list[str]:
        """Values of header ``name``; names compare case-insensitively, compact forms fold."""
        by_name = self._by_name
        if by_name is None:
            by_name = {}
            for n, value in self.headers:
                by_name.setdefault(_long_name(n), []).append(value)
            object.__setattr__(self, "_by_name", by_name)
        return list(by_name.get(_long_name(name), ()))

    def body_text(self) -> str:
        if isinstance(self.body, bytes):
            return self.body.decode("utf-8", errors="replace")
        return self.body


@functools.lru_cache(maxsize=1024)  # a few dozen names, asked for every header per SPT
def _long_name(name: str) -> str:
    low = name.strip().lower()
    return COMPACT_FORMS.get(low, low).lower() if len(low) == 1 else low


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise IfcError(f"{what}: bad regular expression {pattern!r}: {exc}") from None


# -- service point triggers ----------------------------------------------------

@dataclass(slots=True, frozen=True)
class MethodSpt:
    """Matches the request method (exact, upper case as SIP methods are)."""

    method: str
    negated: bool = False
    groups: tuple[int, ...] = (0,)

    def test(self, request: RequestView, case: SessionCase) -> bool:
        return request.method.upper() == self.method.upper()


@dataclass(slots=True, frozen=True)
class RequestUriSpt:
    """Matches the Request-URI against a regular expression."""

    pattern: str
    negated: bool = False
    groups: tuple[int, ...] = (0,)
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", _compile(self.pattern, "request_uri"))

    def test(self, request: RequestView, case: SessionCase) -> bool:
        return self._regex.search(request.request_uri) is not None


@dataclass(slots=True, frozen=True)
class HeaderSpt:
    """Header present (``content`` None) or some instance's value matches ``content``."""

    header: str
    content: str | None = None
    negated: bool = False
    groups: tuple[int, ...] = (0,)
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.header.strip():
            raise IfcError("header: empty header name")
        regex = None if self.content is None else _compile(self.content, "content")
        object.__setattr__(self, "_regex", regex)

    def test(self, request: RequestView, case: SessionCase) -> bool:
        values = request.header_values(self.header)
        if self._regex is None:
            return bool(values)
        return any(self._regex.search(value) for value in values)


@dataclass(slots=True, frozen=True)
class SessionCaseSpt:
    """Matches the session case the S-CSCF is evaluating for."""

    session_case: SessionCase
    negated: bool = False
    groups: tuple[int, ...] = (0,)

    def test(self, request: RequestView, case: SessionCase) -> bool:
        return case is self.session_case


@dataclass(slots=True, frozen=True)
class SdpLineSpt:
    """A body SDP line of type ``line`` (e.g. "m") exists, and matches ``content`` if given."""

    line: str
    content: str | None = None
    negated: bool = False
    groups: tuple[int, ...] = (0,)
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.line) != 1 or not self.line.isalpha():
            raise IfcError(f"sdp_line: expected one SDP line type letter, got {self.line!r}")
        regex = None if self.content is None else _compile(self.content, "content")
        object.__setattr__(self, "_regex", regex)

    def test(self, request: RequestView, case: SessionCase) -> bool:
        prefix = self.line + "="
        # Scanning every body line also finds SDP inside multipart bodies.
        for text in request.body_text().splitlines():
            if text.startswith(prefix) and (self._regex is None or self._regex.search(text[2:])):
                return True
        return False


ServicePointTrigger = MethodSpt | RequestUriSpt | HeaderSpt | SessionCaseSpt | SdpLineSpt


def _spt_matches(spt: ServicePointTrigger, request: RequestView, case: SessionCase) -> bool:
    return spt.test(request, case) != spt.negated


@dataclass(slots=True, frozen=True)
class TriggerPoint:
    """SPTs combined in CNF (``cnf=True``: AND of OR-groups) or DNF (OR of AND-groups)."""

    spts: tuple[ServicePointTrigger, ...] = ()
    cnf: bool = True

    def matches(self, request: RequestView, case: SessionCase) -> bool:
        """TS 29.228 Annex C; an empty trigger point matches every request."""
        if not self.spts:
            return True
        groups: dict[int, list[bool]] = {}
        for spt in self.spts:
            result = _spt_matches(spt, request, case)
            for group in spt.groups:
                groups.setdefault(group, []).append(result)
        if self.cnf:
            return all(any(results) for results in groups.values())
        return any(all(results) for results in groups.values())


@dataclass(slots=True, frozen=True)
class ApplicationServer:
    """The AS to route to and how to fare without it (TS 29.228 B.2.2)."""

    server_name: str
    default_handling: DefaultHandling = DefaultHandling.SESSION_CONTINUED
    service_info: str | None = None
    include_register_request: bool = False
    include_register_response: bool = False

    def __post_init__(self) -> None:
        if not self.server_name.lower().startswith(("sip:", "sips:")):
            raise IfcError(f"application_server.server_name: expected a SIP URI, "
                           f"got {self.server_name!r}")


@dataclass(slots=True, frozen=True)
class InitialFilterCriteria:
    """One iFC: lower ``priority`` is evaluated first."""

    priority: int
    application_server: ApplicationServer
    trigger_point: TriggerPoint | None = None
    profile_part: ProfilePartIndicator | None = None
    name: str = ""

    def matches(self, request: RequestView, case: SessionCase) -> bool:
        if self.profile_part is not None:
            wanted = self.profile_part is ProfilePartIndicator.REGISTERED
            if case.registered != wanted:
                return False
        return self.trigger_point is None or self.trigger_point.matches(request, case)

    # -- serialization -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _ifc_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InitialFilterCriteria:
        """Build from a dict (JSON / TOML shape); IfcError names the bad field."""
        return _ifc_from_dict(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> InitialFilterCriteria:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IfcError(f"iFC document is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise IfcError("iFC document must be a JSON object")
        return cls.from_dict(data)


# -- evaluation -------------------------------------------------------------------

def matching_ifcs(ifcs: Iterable[InitialFilterCriteria], request: RequestView,
                  case: SessionCase, after_priority: int | None = None,
                  ) -> list[InitialFilterCriteria]:
    """The iFCs matching ``request`` in priority order, skipping priorities <= ``after_priority``.

    ``after_priority`` lets the S-CSCF resume after an AS hands the request back
    (TS 23.218 6.4: evaluation continues with the next unexecuted iFC).
    """
    candidates = sorted((i for i in ifcs
                         if after_priority is None or i.priority > after_priority),
                        key=lambda i: i.priority)
    return [ifc for ifc in candidates if ifc.matches(request, case)]


def next_ifc(ifcs: Iterable[InitialFilterCriteria], request: RequestView,
             case: SessionCase, after_priority: int | None = None,
             ) -> InitialFilterCriteria | None:
    """The first matching iFC after ``after_priority``, or None."""
    candidates = sorted((i for i in ifcs
                         if after_priority is None or i.priority > after_priority),
                        key=lambda i: i.priority)
    # The first match ends the search: the others' triggers are not evaluated.
    return next((ifc for ifc in candidates if ifc.matches(request, case)), None)


# -- dict form ------------------------------------------------------------------------

_SPT_KEYS = ("method", "request_uri", "header", "session_case", "sdp_line")


def _enum(kind: type[enum.Enum], value: Any, where: str) -> Any:
    names = [m.name for m in kind]
    if isinstance(value, str) and value.upper() in names:
        return kind[value.upper()]
    raise IfcError(f"{where}: expected one of {', '.join(names)}, got {value!r}")


def _typed(data: Mapping[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
    value = data.get(key, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise IfcError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise IfcError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                       f"allowed: {', '.join(sorted(allowed))}")


def _spt_from_dict(data: Any, where: str) -> ServicePointTrigger:
    if not isinstance(data, Mapping):
        raise IfcError(f"{where}: expected a table/object, got {data!r}")
    kinds = [k for k in _SPT_KEYS if k in data]
    if len(kinds) != 1:
        raise IfcError(f"{where}: give exactly one of {', '.join(_SPT_KEYS)}")
    kind = kinds[0]
    allowed = {kind, "negated", "group", "content"} if kind in ("header", "sdp_line") \
        else {kind, "negated", "group"}
    _check_keys(data, allowed, where)
    negated = _typed(data, "negated", bool, where, False)
    groups = _groups(data.get("group", 0), where)
    value = data[kind]
    if kind == "session_case":
        return SessionCaseSpt(_enum(SessionCase, value, f"{where}.session_case"), negated, groups)
    if not isinstance(value, str) or not value:
        raise IfcError(f"{where}.{kind}: expected a non-empty string, got {value!r}")
    content = _typed(data, "content", str, where, None)
    try:
        if kind == "method":
            return MethodSpt(value, negated, groups)
        if kind == "request_uri":
            return RequestUriSpt(value, negated, groups)
        if kind == "header":
            return HeaderSpt(value, content, negated, groups)
        return SdpLineSpt(value, content, negated, groups)
    except IfcError as exc:
        raise IfcError(f"{where}: {exc}") from None


def _groups(value: Any, where: str) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(g, int) and not isinstance(g, bool) for g in items):
        raise IfcError(f"{where}.group: expected an integer or a list of integers, "
                       f"got {value!r}")
    return tuple(items)


def _trigger_from_dict(data: Any, where: str) -> TriggerPoint:
    if not isinstance(data, Mapping):
        raise IfcError(f"{where}: expected a table/object, got {data!r}")
    _check_keys(data, ("condition", "spt"), where)
    condition = data.get("condition", "CNF")
    if not isinstance(condition, str) or condition.upper() not in ("CNF", "DNF"):
        raise IfcError(f"{where}.condition: expected CNF or DNF, got {condition!r}")
    spts = data.get("spt", [])
    if not isinstance(spts, list):
        raise IfcError(f"{where}.spt: expected a list of service point triggers")
    return TriggerPoint(tuple(_spt_from_dict(s, f"{where}.spt[{i}]") for i, s in enumerate(spts)),
                        cnf=condition.upper() == "CNF")


def _as_from_dict(data: Any, where: str) -> ApplicationServer:
    if isinstance(data, str):
        data = {"server_name": data}
    if not isinstance(data, Mapping):
        raise IfcError(f"{where}: expected a SIP URI or a table/object, got {data!r}")
    _check_keys(data, ("server_name", "default_handling", "service_info",
                       "include_register_request", "include_register_response"), where)
    name = data.get("server_name")
    if not isinstance(name, str):
        raise IfcError(f"{where}.server_name: expected a SIP URI, got {name!r}")
    handling = data.get("default_handling", "SESSION_CONTINUED")
    try:
        return ApplicationServer(
            name, _enum(DefaultHandling, handling, f"{where}.default_handling"),
            _typed(data, "service_info", str, where, None),
            _typed(data, "include_register_request", bool, where, False),
            _typed(data, "include_register_response", bool, where, False))
    except IfcError as exc:
        raise IfcError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None


def _ifc_from_dict(data: Mapping[str, Any]) -> InitialFilterCriteria:
    _check_keys(data, ("priority", "application_server", "trigger_point",
                       "profile_part", "name"), "ifc")
    priority = data.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
        raise IfcError(f"ifc.priority: expected a non-negative integer, got {priority!r}")
    if "application_server" not in data:
        raise IfcError("ifc.application_server: missing")
    server = _as_from_dict(data["application_server"], "ifc.application_server")
    trigger = None
    if "trigger_point" in data:
        trigger = _trigger_from_dict(data["trigger_point"], "ifc.trigger_point")
    part = data.get("profile_part")
    if part is not None:
        part = _enum(ProfilePartIndicator, part, "ifc.profile_part")
    name = _typed(data, "name", str, "ifc", "")
    return InitialFilterCriteria(priority, server, trigger, part, name)


def _spt_to_dict(spt: ServicePointTrigger) -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(spt, MethodSpt):
        out = {"method": spt.method}
    elif isinstance(spt, RequestUriSpt):
        out = {"request_uri": spt.pattern}
    elif isinstance(spt, SessionCaseSpt):
        out = {"session_case": spt.session_case.name}
    elif isinstance(spt, HeaderSpt):
        out = {"header": spt.header}
    else:
        out = {"sdp_line": spt.line}
    if isinstance(spt, (HeaderSpt, SdpLineSpt)) and spt.content is not None:
        out["content"] = spt.content
    out["group"] = list(spt.groups)
    if spt.negated:
        out["negated"] = True
    return out


def _ifc_to_dict(ifc: InitialFilterCriteria) -> dict[str, Any]:
    server = ifc.application_server
    as_dict: dict[str, Any] = {
        "server_name": server.server_name,
        "default_handling": server.default_handling.name,
        "include_register_request": server.include_register_request,
        "include_register_response": server.include_register_response,
    }
    if server.service_info is not None:
        as_dict["service_info"] = server.service_info
    out: dict[str, Any] = {"priority": ifc.priority, "application_server": as_dict}
    if ifc.trigger_point is not None:
        out["trigger_point"] = {
            "condition": "CNF" if ifc.trigger_point.cnf else "DNF",
            "spt": [_spt_to_dict(s) for s in ifc.trigger_point.spts],
        }
    if ifc.profile_part is not None:
        out["profile_part"] = ifc.profile_part.name
    if ifc.name:
        out["name"] = ifc.name
    return out
