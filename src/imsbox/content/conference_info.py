"""application/conference-info+xml: the conference event package document (RFC 4575)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import ContentProtocolError, XmlError
from .xmlsafe import (
    check_text,
    child,
    child_text,
    child_uint,
    children,
    expect_root,
    format_bool,
    parse_bool,
    parse_child,
    parse_enum,
    parse_uint,
    parse_xml,
    required_attr,
    serialize,
    sub,
    sub_texts,
)

log = logging.getLogger(__name__)

CONFERENCE_INFO_NS = "urn:ietf:params:xml:ns:conference-info"
NS = CONFERENCE_INFO_NS


class ElementState(Enum):
    """The 'state' attribute of partial-notification elements (section 4.4)."""

    FULL = "full"
    PARTIAL = "partial"
    DELETED = "deleted"


class EndpointStatus(Enum):
    PENDING = "pending"
    DIALING_OUT = "dialing-out"
    DIALING_IN = "dialing-in"
    ALERTING = "alerting"
    ON_HOLD = "on-hold"
    CONNECTED = "connected"
    MUTED_VIA_FOCUS = "muted-via-focus"
    DISCONNECTING = "disconnecting"
    DISCONNECTED = "disconnected"


class JoiningMethod(Enum):
    DIALED_IN = "dialed-in"
    DIALED_OUT = "dialed-out"
    FOCUS_OWNER = "focus-owner"


class DisconnectionMethod(Enum):
    DEPARTED = "departed"
    BOOTED = "booted"
    FAILED = "failed"
    BUSY = "busy"


class MediaStatus(Enum):
    RECVONLY = "recvonly"
    SENDONLY = "sendonly"
    SENDRECV = "sendrecv"
    INACTIVE = "inactive"


@dataclass(slots=True)
class Execution:
    """execution-type: <when>, <reason>, <by> (section 5.7.2)."""

    when: str | None = None
    reason: str | None = None
    by: str | None = None


@dataclass(slots=True)
class UriEntry:
    uri: str
    display_text: str | None = None
    purpose: str | None = None
    modified: Execution | None = None


@dataclass(slots=True)
class Uris:
    """uris-type: conf-uris, service-uris, associated-aors, sidebars-by-ref."""

    entries: list[UriEntry] = field(default_factory=list)
    state: ElementState = ElementState.FULL


@dataclass(slots=True)
class AvailableMedium:
    """<available-media> <entry label=...> (section 5.3.4)."""

    label: str
    type: str
    display_text: str | None = None
    status: MediaStatus | None = None


@dataclass(slots=True)
class ConferenceDescription:
    display_text: str | None = None
    subject: str | None = None
    free_text: str | None = None
    keywords: list[str] = field(default_factory=list)
    conf_uris: Uris | None = None
    service_uris: Uris | None = None
    maximum_user_count: int | None = None
    available_media: list[AvailableMedium] = field(default_factory=list)


@dataclass(slots=True)
class HostInfo:
    display_text: str | None = None
    web_page: str | None = None
    uris: Uris | None = None


@dataclass(slots=True)
class ConferenceState:
    user_count: int | None = None
    active: bool | None = None
    locked: bool | None = None


@dataclass(slots=True)
class Media:
    """<media id=...> of an endpoint (section 5.8)."""

    id: str
    display_text: str | None = None
    type: str | None = None
    label: str | None = None
    src_id: str | None = None
    status: MediaStatus | None = None


@dataclass(slots=True)
class SipDialogId:
    """<call-info><sip> (section 5.7.9)."""

    call_id: str
    from_tag: str
    to_tag: str
    display_text: str | None = None


@dataclass(slots=True)
class Endpoint:
    entity: str | None = None
    state: ElementState = ElementState.FULL
    display_text: str | None = None
    referred: Execution | None = None
    status: EndpointStatus | None = None
    joining_method: JoiningMethod | None = None
    joining_info: Execution | None = None
    disconnection_method: DisconnectionMethod | None = None
    disconnection_info: Execution | None = None
    media: list[Media] = field(default_factory=list)
    call_info: SipDialogId | None = None


@dataclass(slots=True)
class User:
    entity: str | None = None
    state: ElementState = ElementState.FULL
    display_text: str | None = None
    associated_aors: Uris | None = None
    roles: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    cascaded_focus: str | None = None
    endpoints: list[Endpoint] = field(default_factory=list)


@dataclass(slots=True)
class Users:
    users: list[User] = field(default_factory=list)
    state: ElementState = ElementState.FULL


@dataclass(slots=True)
class SidebarsByVal:
    entries: list[ConferenceInfo] = field(default_factory=list)
    state: ElementState = ElementState.FULL


@dataclass(slots=True)
class ConferenceInfo:
    """<conference-info> (section 5.2)."""

    entity: str
    state: ElementState = ElementState.FULL
    version: int | None = None
    description: ConferenceDescription | None = None
    host_info: HostInfo | None = None
    conference_state: ConferenceState | None = None
    users: Users | None = None
    sidebars_by_ref: Uris | None = None
    sidebars_by_val: SidebarsByVal | None = None

    def user(self, entity: str) -> User | None:
        if self.users is None:
            return None
        return next((u for u in self.users.users if u.entity == entity), None)

    def to_xml(self) -> bytes:
        root = _build_conference(None, self, "conference-info")
        root.set("xmlns", NS)
        return serialize(root)


# ---------------------------------------------------------------- parsing


def parse_conference_info(data: bytes) -> ConferenceInfo:
    root = parse_xml(data)
    expect_root(root, NS, "conference-info")
    return _parse_conference(root)


def _state(elem: ET.Element) -> ElementState:
    return parse_enum(ElementState, elem.get("state"), "state") or ElementState.FULL


def _opt_bool(elem: ET.Element, name: str) -> bool | None:
    text = child_text(elem, NS, name)
    return parse_bool(text, f"<{name}>") if text is not None else None


def _parse_conference(elem: ET.Element) -> ConferenceInfo:
    version = elem.get("version")
    return ConferenceInfo(
        entity=required_attr(elem, "entity"),
        state=_state(elem),
        version=parse_uint(version, "version") if version is not None else None,
        description=parse_child(elem, NS, "conference-description", _parse_description),
        host_info=parse_child(elem, NS, "host-info", _parse_host),
        conference_state=parse_child(elem, NS, "conference-state", _parse_cstate),
        users=parse_child(elem, NS, "users", _parse_users),
        sidebars_by_ref=_opt_uris(elem, "sidebars-by-ref"),
        sidebars_by_val=parse_child(elem, NS, "sidebars-by-val", _parse_by_val),
    )


def _parse_description(elem: ET.Element) -> ConferenceDescription:
    media = child(elem, NS, "available-media")
    return ConferenceDescription(
        display_text=child_text(elem, NS, "display-text"),
        subject=child_text(elem, NS, "subject"),
        free_text=child_text(elem, NS, "free-text"),
        keywords=(child_text(elem, NS, "keywords") or "").split(),
        conf_uris=_opt_uris(elem, "conf-uris"),
        service_uris=_opt_uris(elem, "service-uris"),
        maximum_user_count=child_uint(elem, NS, "maximum-user-count"),
        available_media=[_parse_medium(e) for e in children(media, NS, "entry")] if media is not None else [],
    )


def _parse_medium(elem: ET.Element) -> AvailableMedium:
    type_ = child_text(elem, NS, "type")
    if not type_:
        raise XmlError("<available-media> entry lacks <type>")
    return AvailableMedium(
        label=required_attr(elem, "label"),
        type=type_,
        display_text=child_text(elem, NS, "display-text"),
        status=parse_enum(MediaStatus, child_text(elem, NS, "status"), "media status"),
    )


def _parse_host(elem: ET.Element) -> HostInfo:
    return HostInfo(
        display_text=child_text(elem, NS, "display-text"),
        web_page=child_text(elem, NS, "web-page"),
        uris=_opt_uris(elem, "uris"),
    )


def _parse_cstate(elem: ET.Element) -> ConferenceState:
    return ConferenceState(
        user_count=child_uint(elem, NS, "user-count"),
        active=_opt_bool(elem, "active"),
        locked=_opt_bool(elem, "locked"),
    )


def _opt_uris(elem: ET.Element, name: str) -> Uris | None:
    return parse_child(elem, NS, name, _parse_uris)


def _parse_uris(elem: ET.Element) -> Uris:
    entries = []
    for entry in children(elem, NS, "entry"):
        uri = child_text(entry, NS, "uri")
        if not uri:
            raise XmlError("URI <entry> lacks <uri>")
        entries.append(UriEntry(
            uri=uri,
            display_text=child_text(entry, NS, "display-text"),
            purpose=child_text(entry, NS, "purpose"),
            modified=_opt_execution(entry, "modified"),
        ))
    return Uris(entries, _state(elem))


def _parse_execution(elem: ET.Element) -> Execution:
    return Execution(
        when=child_text(elem, NS, "when"),
        reason=child_text(elem, NS, "reason"),
        by=child_text(elem, NS, "by"),
    )


def _opt_execution(elem: ET.Element, name: str) -> Execution | None:
    return parse_child(elem, NS, name, _parse_execution)


def _parse_users(elem: ET.Element) -> Users:
    return Users([_parse_user(u) for u in children(elem, NS, "user")], _state(elem))


def _parse_user(elem: ET.Element) -> User:
    roles = child(elem, NS, "roles")
    return User(
        entity=elem.get("entity"),
        state=_state(elem),
        display_text=child_text(elem, NS, "display-text"),
        associated_aors=_opt_uris(elem, "associated-aors"),
        roles=[r.text.strip() for r in children(roles, NS, "entry") if r.text] if roles is not None else [],
        languages=(child_text(elem, NS, "languages") or "").split(),
        cascaded_focus=child_text(elem, NS, "cascaded-focus"),
        endpoints=[_parse_endpoint(e) for e in children(elem, NS, "endpoint")],
    )


def _parse_endpoint(elem: ET.Element) -> Endpoint:
    return Endpoint(
        entity=elem.get("entity"),
        state=_state(elem),
        display_text=child_text(elem, NS, "display-text"),
        referred=_opt_execution(elem, "referred"),
        status=parse_enum(EndpointStatus, child_text(elem, NS, "status"), "endpoint status"),
        joining_method=parse_enum(JoiningMethod, child_text(elem, NS, "joining-method"), "joining-method"),
        joining_info=_opt_execution(elem, "joining-info"),
        disconnection_method=parse_enum(
            DisconnectionMethod, child_text(elem, NS, "disconnection-method"), "disconnection-method"
        ),
        disconnection_info=_opt_execution(elem, "disconnection-info"),
        media=[_parse_media(m) for m in children(elem, NS, "media")],
        call_info=parse_child(elem, NS, "call-info", _parse_call_info),
    )


def _parse_media(elem: ET.Element) -> Media:
    return Media(
        id=required_attr(elem, "id"),
        display_text=child_text(elem, NS, "display-text"),
        type=child_text(elem, NS, "type"),
        label=child_text(elem, NS, "label"),
        src_id=child_text(elem, NS, "src-id"),
        status=parse_enum(MediaStatus, child_text(elem, NS, "status"), "media status"),
    )


def _parse_call_info(elem: ET.Element) -> SipDialogId | None:
    sip = child(elem, NS, "sip")
    if sip is None:
        return None
    values = [child_text(sip, NS, n) for n in ("call-id", "from-tag", "to-tag")]
    if any(v is None for v in values):
        raise XmlError("<call-info><sip> needs <call-id>, <from-tag> and <to-tag>")
    call_id, from_tag, to_tag = values
    return SipDialogId(call_id, from_tag, to_tag, child_text(sip, NS, "display-text"))  # type: ignore[arg-type]


def _parse_by_val(elem: ET.Element) -> SidebarsByVal:
    return SidebarsByVal([_parse_conference(e) for e in children(elem, NS, "entry")], _state(elem))


# ---------------------------------------------------------------- building


def _node(parent: ET.Element | None, tag: str, **attrs: str) -> ET.Element:
    if parent is None:
        return ET.Element(tag, {k: check_text(v, k) for k, v in attrs.items()})
    return sub(parent, tag, **attrs)


def _state_attr(state: ElementState, always: bool = False) -> dict[str, str]:
    return {"state": state.value} if always or state is not ElementState.FULL else {}


def _build_conference(parent: ET.Element | None, conf: ConferenceInfo, tag: str) -> ET.Element:
    attrs = {"entity": conf.entity, **_state_attr(conf.state, always=parent is None)}
    if conf.version is not None:
        attrs["version"] = str(conf.version)
    elem = _node(parent, tag, **attrs)
    if conf.description is not None:
        _build_description(elem, conf.description)
    if conf.host_info is not None:
        host = sub(elem, "host-info")
        sub_texts(host, ("display-text", conf.host_info.display_text), ("web-page", conf.host_info.web_page))
        _build_uris(host, "uris", conf.host_info.uris)
    if conf.conference_state is not None:
        _build_cstate(elem, conf.conference_state)
    if conf.users is not None:
        users = sub(elem, "users", **_state_attr(conf.users.state))
        for user in conf.users.users:
            _build_user(users, user)
    _build_uris(elem, "sidebars-by-ref", conf.sidebars_by_ref)
    if conf.sidebars_by_val is not None:
        by_val = sub(elem, "sidebars-by-val", **_state_attr(conf.sidebars_by_val.state))
        for entry in conf.sidebars_by_val.entries:
            _build_conference(by_val, entry, "entry")
    return elem


def _build_description(parent: ET.Element, desc: ConferenceDescription) -> None:
    elem = sub(parent, "conference-description")
    sub_texts(elem, ("display-text", desc.display_text), ("subject", desc.subject),
           ("free-text", desc.free_text))
    if desc.keywords:
        sub(elem, "keywords", " ".join(desc.keywords))
    _build_uris(elem, "conf-uris", desc.conf_uris)
    _build_uris(elem, "service-uris", desc.service_uris)
    if desc.maximum_user_count is not None:
        sub(elem, "maximum-user-count", str(desc.maximum_user_count))
    if desc.available_media:
        media = sub(elem, "available-media")
        for medium in desc.available_media:
            entry = sub(media, "entry", label=medium.label)
            sub_texts(entry, ("display-text", medium.display_text), ("type", medium.type),
                   ("status", medium.status.value if medium.status else None))


def _build_cstate(parent: ET.Element, cstate: ConferenceState) -> None:
    elem = sub(parent, "conference-state")
    if cstate.user_count is not None:
        sub(elem, "user-count", str(cstate.user_count))
    for tag, flag in (("active", cstate.active), ("locked", cstate.locked)):
        if flag is not None:
            sub(elem, tag, format_bool(flag))


def _build_uris(parent: ET.Element, tag: str, uris: Uris | None) -> None:
    if uris is None:
        return
    elem = sub(parent, tag, **_state_attr(uris.state))
    for entry in uris.entries:
        node = sub(elem, "entry")
        sub_texts(node, ("uri", entry.uri), ("display-text", entry.display_text), ("purpose", entry.purpose))
        _build_execution(node, "modified", entry.modified)


def _build_execution(parent: ET.Element, tag: str, execution: Execution | None) -> None:
    if execution is not None:
        elem = sub(parent, tag)
        sub_texts(elem, ("when", execution.when), ("reason", execution.reason), ("by", execution.by))


def _build_user(parent: ET.Element, user: User) -> None:
    attrs = {"entity": user.entity} if user.entity is not None else {}
    elem = sub(parent, "user", **attrs, **_state_attr(user.state))
    sub_texts(elem, ("display-text", user.display_text))
    _build_uris(elem, "associated-aors", user.associated_aors)
    if user.roles:
        roles = sub(elem, "roles")
        for role in user.roles:
            sub(roles, "entry", role)
    if user.languages:
        sub(elem, "languages", " ".join(user.languages))
    sub_texts(elem, ("cascaded-focus", user.cascaded_focus))
    for endpoint in user.endpoints:
        _build_endpoint(elem, endpoint)


def _build_endpoint(parent: ET.Element, ep: Endpoint) -> None:
    attrs = {"entity": ep.entity} if ep.entity is not None else {}
    elem = sub(parent, "endpoint", **attrs, **_state_attr(ep.state))
    sub_texts(elem, ("display-text", ep.display_text))
    _build_execution(elem, "referred", ep.referred)
    sub_texts(elem, ("status", ep.status.value if ep.status else None),
           ("joining-method", ep.joining_method.value if ep.joining_method else None))
    _build_execution(elem, "joining-info", ep.joining_info)
    sub_texts(elem, ("disconnection-method",
                  ep.disconnection_method.value if ep.disconnection_method else None))
    _build_execution(elem, "disconnection-info", ep.disconnection_info)
    for media in ep.media:
        node = sub(elem, "media", id=media.id)
        sub_texts(node, ("display-text", media.display_text), ("type", media.type), ("label", media.label),
               ("src-id", media.src_id), ("status", media.status.value if media.status else None))
    if ep.call_info is not None:
        sip = sub(sub(elem, "call-info"), "sip")
        sub_texts(sip, ("display-text", ep.call_info.display_text), ("call-id", ep.call_info.call_id),
               ("from-tag", ep.call_info.from_tag), ("to-tag", ep.call_info.to_tag))


# ------------------------------------------------------ coherent state (4.6)


class NotificationOutcome(Enum):
    APPLIED = "applied"
    DISCARDED = "discarded"  # version not newer than the local one
    NEED_FULL_STATE = "need-full-state"  # gap or no base: refresh the subscription
    TERMINATED = "terminated"  # conference deleted: unsubscribe


@dataclass(slots=True)
class NotificationResult:
    outcome: NotificationOutcome
    state: ConferenceInfo | None


def apply_notification(local: ConferenceInfo | None, update: ConferenceInfo) -> NotificationResult:
    """RFC 4575 section 4.6: fold a received document into the local conference state."""
    if update.version is None:
        raise ContentProtocolError("conference-info notification lacks the version attribute")
    if local is not None and local.version is not None and update.version <= local.version:
        return NotificationResult(NotificationOutcome.DISCARDED, local)
    if update.state is ElementState.DELETED:
        return NotificationResult(NotificationOutcome.TERMINATED, None)
    if update.state is ElementState.FULL:
        return NotificationResult(NotificationOutcome.APPLIED, copy.deepcopy(update))
    if local is None or local.version is None or update.version > local.version + 1:
        return NotificationResult(NotificationOutcome.NEED_FULL_STATE, local)
    merged = merge_partial(local, update)
    merged.version = update.version
    return NotificationResult(NotificationOutcome.APPLIED, merged)


def merge_partial(full: ConferenceInfo, partial: ConferenceInfo) -> ConferenceInfo:
    """Apply a partial <conference-info> onto a full one (section 4.6 steps 1-3); inputs untouched."""
    result = copy.deepcopy(full)
    update = copy.deepcopy(partial)
    for name in ("description", "host_info", "conference_state"):
        if getattr(update, name) is not None:
            setattr(result, name, getattr(update, name))
    result.users = _merge_container(result.users, update.users, "users", _user_key, _merge_user)
    result.sidebars_by_ref = _merge_container(
        result.sidebars_by_ref, update.sidebars_by_ref, "entries", lambda e: e.uri, None
    )
    result.sidebars_by_val = _merge_container(
        result.sidebars_by_val, update.sidebars_by_val, "entries", lambda e: e.entity, merge_partial
    )
    result.state = ElementState.FULL
    return result


def _merge_container(local: Any, update: Any, rows: str, key: Callable[[Any], Any],
                     merge: Callable[[Any, Any], Any] | None) -> Any:
    if update is None:
        return local
    if update.state is ElementState.DELETED:
        return None
    if update.state is ElementState.FULL or local is None:
        return update
    setattr(local, rows, _merge_rows(getattr(local, rows), getattr(update, rows), key, merge))
    return local


def _merge_rows(local: list[Any], update: list[Any], key: Callable[[Any], Any],
                merge: Callable[[Any, Any], Any] | None) -> list[Any]:
    """Steps 3.1.x: rows matched by element key; partial rows merged, others replaced."""
    rows = list(local)
    for row in update:
        index = next((i for i, r in enumerate(rows) if key(r) == key(row)), None)
        state = getattr(row, "state", ElementState.FULL)
        if state is ElementState.DELETED:
            if index is not None:
                del rows[index]
        elif index is None:
            rows.append(row)
        elif state is ElementState.PARTIAL and merge is not None:
            rows[index] = merge(rows[index], row)
        else:
            rows[index] = row
    return rows


def _user_key(user: User) -> str | None:
    return user.entity


def _overlay(local: Any, update: Any, skip: tuple[str, ...]) -> Any:
    """Step 3.2: every element present in the update replaces the local one."""
    for f in dataclasses.fields(local):
        value = getattr(update, f.name)
        if f.name not in skip and value is not None and value != []:
            setattr(local, f.name, value)
    return local


def _merge_user(local: User, update: User) -> User:
    _overlay(local, update, ("entity", "state", "associated_aors", "endpoints"))
    local.associated_aors = _merge_container(
        local.associated_aors, update.associated_aors, "entries", lambda e: e.uri, None
    )
    local.endpoints = _merge_rows(local.endpoints, update.endpoints, lambda e: e.entity, _merge_endpoint)
    local.state = ElementState.FULL
    return local


def _merge_endpoint(local: Endpoint, update: Endpoint) -> Endpoint:
    _overlay(local, update, ("entity", "state", "media"))
    local.media = _merge_rows(local.media, update.media, lambda m: m.id, None)
    local.state = ElementState.FULL
    return local
