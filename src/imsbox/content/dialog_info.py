"""application/dialog-info+xml: the INVITE-initiated dialog event package document (RFC 4235)."""

from __future__ import annotations

import copy
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from enum import Enum

from .errors import ContentProtocolError, XmlError
from .xmlsafe import (
    check_text,
    child,
    child_uint,
    children,
    expect_root,
    parse_child,
    parse_enum,
    parse_uint,
    parse_xml,
    required_attr,
    serialize,
    sub,
    text_of,
)

log = logging.getLogger(__name__)

DIALOG_INFO_NS = "urn:ietf:params:xml:ns:dialog-info"
NS = DIALOG_INFO_NS


class DocumentState(Enum):
    FULL = "full"
    PARTIAL = "partial"


class DialogState(Enum):
    """States of the dialog FSM (RFC 4235 section 3.7.1)."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogEvent(Enum):
    """The 'event' attribute: why the dialog terminated (section 4.1.2)."""

    CANCELLED = "cancelled"
    REJECTED = "rejected"
    REPLACED = "replaced"
    LOCAL_BYE = "local-bye"
    REMOTE_BYE = "remote-bye"
    ERROR = "error"
    TIMEOUT = "timeout"


class Direction(Enum):
    INITIATOR = "initiator"
    RECIPIENT = "recipient"


@dataclass(slots=True)
class Identity:
    """<identity display=...>URI</identity> (section 4.1.6.1)."""

    uri: str
    display: str | None = None


@dataclass(slots=True)
class Target:
    """<target uri=...> with Contact parameters as <param pname pval> (section 4.1.6.2)."""

    uri: str
    params: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class SessionDescription:
    type: str
    text: str


@dataclass(slots=True)
class Participant:
    """<local> or <remote> (section 4.1.6)."""

    identity: Identity | None = None
    target: Target | None = None
    session_description: SessionDescription | None = None
    cseq: int | None = None


@dataclass(slots=True)
class Replaces:
    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(slots=True)
class Dialog:
    """<dialog> (section 4.1.1)."""

    id: str
    state: DialogState
    call_id: str | None = None
    local_tag: str | None = None
    remote_tag: str | None = None
    direction: Direction | None = None
    event: DialogEvent | None = None
    code: int | None = None
    duration: int | None = None
    replaces: Replaces | None = None
    referred_by: Identity | None = None
    route_set: list[str] = field(default_factory=list)
    local: Participant | None = None
    remote: Participant | None = None


@dataclass(slots=True)
class DialogInfo:
    """<dialog-info> (section 4.1)."""

    entity: str | None
    version: int = 0
    state: DocumentState = DocumentState.FULL
    dialogs: list[Dialog] = field(default_factory=list)

    def dialog(self, dialog_id: str) -> Dialog | None:
        return next((d for d in self.dialogs if d.id == dialog_id), None)

    def to_xml(self) -> bytes:
        root = ET.Element("dialog-info", {"xmlns": NS})
        root.set("version", str(self.version))
        root.set("state", self.state.value)
        if self.entity is not None:
            root.set("entity", check_text(self.entity, "entity"))
        for dialog in self.dialogs:
            _build_dialog(root, dialog)
        return serialize(root)


def parse_dialog_info(data: bytes) -> DialogInfo:
    root = parse_xml(data)
    expect_root(root, NS, "dialog-info")
    # 'notify-state' appears in one RFC 4235 example; accept it as a synonym.
    state = root.get("state") or root.get("notify-state")
    return DialogInfo(
        # Mandatory per the schema, yet the RFC's own sample (4.2) omits it.
        entity=root.get("entity"),
        version=parse_uint(required_attr(root, "version"), "version"),
        state=parse_enum(DocumentState, state, "dialog-info state") or DocumentState.FULL,
        dialogs=[_parse_dialog(d) for d in children(root, NS, "dialog")],
    )


def _parse_dialog(elem: ET.Element) -> Dialog:
    state_elem = child(elem, NS, "state")
    if state_elem is None:
        raise XmlError("<dialog> lacks the mandatory <state>")
    code = state_elem.get("code")
    replaces = child(elem, NS, "replaces")
    route_set = child(elem, NS, "route-set")
    state = parse_enum(DialogState, text_of(state_elem), "dialog state")
    if state is None:
        raise XmlError("<dialog> has an empty <state>")
    return Dialog(
        id=required_attr(elem, "id"),
        state=state,
        call_id=elem.get("call-id"),
        local_tag=elem.get("local-tag"),
        remote_tag=elem.get("remote-tag"),
        direction=parse_enum(Direction, elem.get("direction"), "direction"),
        event=parse_enum(DialogEvent, state_elem.get("event"), "state event"),
        code=parse_uint(code, "state code", minimum=100, maximum=699) if code is not None else None,
        duration=child_uint(elem, NS, "duration"),
        replaces=Replaces(*(required_attr(replaces, a) for a in ("call-id", "local-tag", "remote-tag")))
        if replaces is not None else None,
        referred_by=parse_child(elem, NS, "referred-by", _parse_identity),
        route_set=[text_of(h) or "" for h in children(route_set, NS, "hop")] if route_set is not None else [],
        local=parse_child(elem, NS, "local", _parse_participant),
        remote=parse_child(elem, NS, "remote", _parse_participant),
    )


def _parse_identity(elem: ET.Element) -> Identity:
    uri = text_of(elem)
    if not uri:
        raise XmlError(f"<{elem.tag.rpartition('}')[2]}> has no URI")
    # The schema says display-name, the prose and examples say display.
    return Identity(uri, elem.get("display", elem.get("display-name")))


def _parse_participant(elem: ET.Element) -> Participant:
    target = child(elem, NS, "target")
    sessd = child(elem, NS, "session-description")
    return Participant(
        identity=parse_child(elem, NS, "identity", _parse_identity),
        target=Target(
            required_attr(target, "uri"),
            [(required_attr(p, "pname"), required_attr(p, "pval")) for p in children(target, NS, "param")],
        ) if target is not None else None,
        session_description=SessionDescription(required_attr(sessd, "type"), sessd.text or "")
        if sessd is not None else None,
        cseq=child_uint(elem, NS, "cseq"),
    )


def _build_dialog(parent: ET.Element, dialog: Dialog) -> None:
    attrs = {"id": dialog.id}
    for name, value in (("call-id", dialog.call_id), ("local-tag", dialog.local_tag),
                        ("remote-tag", dialog.remote_tag),
                        ("direction", dialog.direction.value if dialog.direction else None)):
        if value is not None:
            attrs[name] = value
    elem = sub(parent, "dialog", **attrs)
    state_attrs = {}
    if dialog.event is not None:
        state_attrs["event"] = dialog.event.value
    if dialog.code is not None:
        if not 100 <= dialog.code <= 699:
            raise ContentProtocolError(f"state code {dialog.code} is outside 100..699")
        state_attrs["code"] = str(dialog.code)
    sub(elem, "state", dialog.state.value, **state_attrs)
    if dialog.duration is not None:
        sub(elem, "duration", str(dialog.duration))
    if dialog.replaces is not None:
        r = dialog.replaces
        sub(elem, "replaces", call_id=r.call_id, local_tag=r.local_tag, remote_tag=r.remote_tag)
    if dialog.referred_by is not None:
        _build_identity(elem, "referred-by", dialog.referred_by)
    if dialog.route_set:
        routes = sub(elem, "route-set")
        for hop in dialog.route_set:
            sub(routes, "hop", hop)
    for tag, participant in (("local", dialog.local), ("remote", dialog.remote)):
        if participant is not None:
            _build_participant(sub(elem, tag), participant)


def _build_identity(parent: ET.Element, tag: str, identity: Identity) -> None:
    attrs = {"display": identity.display} if identity.display is not None else {}
    sub(parent, tag, identity.uri, **attrs)


def _build_participant(elem: ET.Element, participant: Participant) -> None:
    if participant.identity is not None:
        _build_identity(elem, "identity", participant.identity)
    if participant.target is not None:
        target = sub(elem, "target", uri=participant.target.uri)
        for pname, pval in participant.target.params:
            sub(target, "param", pname=pname, pval=pval)
    if participant.session_description is not None:
        sd = participant.session_description
        sub(elem, "session-description", sd.text, type=sd.type)
    if participant.cseq is not None:
        sub(elem, "cseq", str(participant.cseq))


class NotificationOutcome(Enum):
    APPLIED = "applied"
    DISCARDED = "discarded"
    APPLIED_NEED_FULL_STATE = "applied-need-full-state"  # gap in versions: refresh


@dataclass(slots=True)
class NotificationResult:
    outcome: NotificationOutcome
    state: DialogInfo


def apply_notification(local: DialogInfo | None, update: DialogInfo) -> NotificationResult:
    """RFC 4235 section 4.3: keep a dialog table coherent across full and partial documents."""
    if local is not None and update.version < local.version:
        return NotificationResult(NotificationOutcome.DISCARDED, local)
    gap = local is None or update.version > local.version + 1
    if update.state is DocumentState.FULL or local is None:
        result = copy.deepcopy(update)
    else:
        result = copy.deepcopy(local)
        for dialog in copy.deepcopy(update.dialogs):
            index = next((i for i, d in enumerate(result.dialogs) if d.id == dialog.id), None)
            if index is None:
                result.dialogs.append(dialog)
            else:
                result.dialogs[index] = dialog
    result.version = update.version
    result.state = DocumentState.FULL
    need_full = gap and update.state is DocumentState.PARTIAL
    outcome = NotificationOutcome.APPLIED_NEED_FULL_STATE if need_full else NotificationOutcome.APPLIED
    return NotificationResult(outcome, result)
