"""The reg event package (RFC 3680, TS 24.229 5.4.2.1): application/reginfo+xml
documents and the S-CSCF's notifier.

:class:`RegInfo` builds and parses the document (``to_xml()``,
:func:`parse_reginfo`).  :class:`RegEventNotifier` serves SUBSCRIBE requests
for ``Event: reg`` on top of the RFC 6665 :class:`~imsbox.sip.ua.events.Notifier`
and turns registration changes into NOTIFYs; it is sans-I/O like the
Notifier: the caller sends what :meth:`RegEventNotifier.requests` returns
and feeds the responses back.  Every NOTIFY carries full state; contacts
that just went away are listed once more as terminated with their event.

Several S-CSCFs share the subscriptions through the store: the caller keeps
each one as a :class:`~imsbox.store.RegSubscription` (:meth:`RegEventNotifier.record`)
and, before it notifies or serves a refresh, rebuilds it from the store with
the version it took there (:meth:`RegEventNotifier.restore`), so whichever
instance sends a NOTIFY sends the next version, with a CSeq that grows with it.
"""

from __future__ import annotations

import hashlib
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from enum import Enum

from ..content.errors import XmlError
from ..content.xmlsafe import (
    check_text, child_text, children, expect_root, parse_uint, parse_xml, required_attr,
    serialize, sub,
)
from ..sip.headers import Event, NameAddr
from ..sip.message import Request, Response
from ..sip.ua.dialog import Dialog, DialogId, DialogRole, DialogState, RouteSet
from ..sip.ua.events import (
    EventPackage, EventPackageRegistry, Notifier, NotifierState, NotifierSubscription,
    SendRequest, SubscriptionTerminated, TerminationReason,
)
from ..sip.uri import Uri, parse_uri
from ..store.models import RegSubscription

__all__ = [
    "REGINFO", "REGINFO_NS", "REG_PACKAGE", "ContactEvent", "ContactState", "DocumentState",
    "RegContact", "RegEventNotifier", "RegInfo", "Registration", "RegistrationState",
    "element_id", "parse_reginfo",
]

log = logging.getLogger(__name__)

REGINFO = "application/reginfo+xml"
REGINFO_NS = "urn:ietf:params:xml:ns:reginfo"
NS = REGINFO_NS


class DocumentState(Enum):
    FULL = "full"
    PARTIAL = "partial"


class RegistrationState(Enum):
    """<registration state> (RFC 3680 5.2)."""

    INIT = "init"
    ACTIVE = "active"
    TERMINATED = "terminated"


class ContactState(Enum):
    ACTIVE = "active"
    TERMINATED = "terminated"


class ContactEvent(Enum):
    """<contact event>: what last happened to the contact (RFC 3680 5.2)."""

    REGISTERED = "registered"
    CREATED = "created"
    REFRESHED = "refreshed"
    SHORTENED = "shortened"
    EXPIRED = "expired"
    DEACTIVATED = "deactivated"
    PROBATION = "probation"
    UNREGISTERED = "unregistered"
    REJECTED = "rejected"


@dataclass(slots=True)
class RegContact:
    """<contact>: one binding; ``params`` become <unknown-param> elements."""

    id: str
    uri: str
    state: ContactState = ContactState.ACTIVE
    event: ContactEvent = ContactEvent.REGISTERED
    expires: int | None = None
    q: float | None = None
    call_id: str | None = None
    cseq: int | None = None
    params: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Registration:
    """<registration>: one address-of-record (a public identity)."""

    aor: str
    id: str
    state: RegistrationState
    contacts: list[RegContact] = field(default_factory=list)


@dataclass(slots=True)
class RegInfo:
    """<reginfo>: the whole document."""

    registrations: list[Registration] = field(default_factory=list)
    version: int = 0
    state: DocumentState = DocumentState.FULL

    def to_xml(self) -> bytes:
        root = ET.Element("reginfo", {"xmlns": NS})
        root.set("version", str(self.version))
        root.set("state", self.state.value)
        for registration in self.registrations:
            _build_registration(root, registration)
        return serialize(root)

    def registration(self, aor: str) -> Registration | None:
        return next((r for r in self.registrations if r.aor == aor), None)


def element_id(*parts: str) -> str:
    """A stable id attribute for a registration or contact."""
    return hashlib.blake2s("\x00".join(parts).encode(), digest_size=6).hexdigest()


def _build_registration(root: ET.Element, registration: Registration) -> None:
    elem = sub(root, "registration", aor=registration.aor, id=registration.id,
               state=registration.state.value)
    for contact in registration.contacts:
        attrs = {"id": contact.id, "state": contact.state.value, "event": contact.event.value}
        if contact.expires is not None:
            attrs["expires"] = str(contact.expires)
        if contact.q is not None:
            attrs["q"] = f"{contact.q:.3g}"
        if contact.call_id is not None:
            attrs["callid"] = contact.call_id
        if contact.cseq is not None:
            attrs["cseq"] = str(contact.cseq)
        node = sub(elem, "contact", **attrs)
        sub(node, "uri", contact.uri)
        for name, value in contact.params:
            param = sub(node, "unknown-param", name=name)
            if value:
                param.text = check_text(value, "unknown-param")


def parse_reginfo(data: bytes) -> RegInfo:
    """Parse a reginfo document; XmlError / ContentError name the fault."""
    root = parse_xml(data)
    expect_root(root, NS, "reginfo")
    return RegInfo(
        [_parse_registration(r) for r in children(root, NS, "registration")],
        parse_uint(required_attr(root, "version"), "version"),
        _enum(DocumentState, required_attr(root, "state"), "reginfo state"),
    )


def _parse_registration(elem: ET.Element) -> Registration:
    return Registration(
        required_attr(elem, "aor"), required_attr(elem, "id"),
        _enum(RegistrationState, required_attr(elem, "state"), "registration state"),
        [_parse_contact(c) for c in children(elem, NS, "contact")])


def _parse_contact(elem: ET.Element) -> RegContact:
    uri = child_text(elem, NS, "uri")
    if not uri:
        raise XmlError("<contact> lacks a non-empty <uri>")
    expires = elem.get("expires")
    cseq = elem.get("cseq")
    q = elem.get("q")
    try:
        q_value = float(q) if q is not None else None
    except ValueError:
        raise XmlError(f"<contact> q is not a number: {q!r}") from None
    return RegContact(
        required_attr(elem, "id"), uri,
        _enum(ContactState, required_attr(elem, "state"), "contact state"),
        _enum(ContactEvent, required_attr(elem, "event"), "contact event"),
        parse_uint(expires, "expires") if expires is not None else None,
        q_value, elem.get("callid"),
        parse_uint(cseq, "cseq") if cseq is not None else None,
        [(p.get("name") or "", (p.text or "").strip())
         for p in children(elem, NS, "unknown-param")])


def _enum(kind: type[Enum], text: str, what: str):  # type: ignore[no-untyped-def]
    try:
        return kind(text)
    except ValueError:
        raise XmlError(f"{what} {text!r} is not one of "
                       f"{', '.join(str(m.value) for m in kind)}") from None


# -- the notifier -------------------------------------------------------------------------

REG_PACKAGE = EventPackage("reg", REGINFO, default_expires=3600, min_expires=60,
                           max_expires=7200, render=lambda state: state if isinstance(
                               state, bytes) else b"")


@dataclass(slots=True)
class _Watch:
    """What a subscription watches and its document version (RFC 3680 5.2)."""

    aor: str
    version: int = 0               # the next NOTIFY's reginfo version
    cseq_base: int | None = None   # the NOTIFY of version v has CSeq cseq_base + v


class RegEventNotifier:
    """Subscriptions to ``Event: reg`` keyed by the watched implicit set.

    The caller resolves and authorises a subscription and hands in the current
    reginfo of the implicit set (named by its default identity) with the
    SUBSCRIBE, so the notifier itself never looks anything up.
    """

    def __init__(self, contact: Uri | str, *, min_expires: int = 60) -> None:
        self._pending: tuple[str | None, RegInfo] | None = None
        self._unsent: list[Request] = []
        self._notifier = Notifier(EventPackageRegistry([REG_PACKAGE]), contact,
                                  min_expires=min_expires, state_of=self._document)

    # -- SUBSCRIBE ------------------------------------------------------------------
    def watched_aor(self, request: Request) -> str | None:
        """The implicit set an in-dialog SUBSCRIBE (a refresh) watches; None when
        the request is outside every subscription."""
        sub = self.subscription(DialogId.for_incoming_request(request))
        return _watch(sub).aor if sub is not None else None

    def subscription(self, dialog: DialogId) -> NotifierSubscription | None:
        """The live reg subscription of a dialog (as the notifier names it)."""
        held = self._notifier.dialogs.get(dialog)
        for usage in held.usages if held is not None else ():
            if isinstance(usage, NotifierSubscription) and isinstance(usage.usage, _Watch) \
                    and not usage.terminated:
                return usage
        return None

    def subscribe(self, request: Request, aor: str | None, now: float,
                  state: RegInfo | None = None) -> Response:
        """Answer a SUBSCRIBE; a new subscription watches ``aor`` (None for a
        refresh inside an existing subscription dialog). ``state`` is the
        watched set's current reginfo, for the NOTIFY that follows."""
        self._pending = (aor, state or RegInfo())
        try:
            return self._notifier.receive_subscribe(request, now)
        finally:
            self._pending = None

    def _document(self, sub: NotifierSubscription) -> bytes:
        aor, state = self._pending or (None, RegInfo())
        watch = sub.usage
        if not isinstance(watch, _Watch):
            watch = sub.usage = _Watch(aor or "")
        return self._versioned(watch, state)

    @staticmethod
    def _versioned(watch: _Watch, info: RegInfo) -> bytes:
        info.version = watch.version
        watch.version += 1
        return info.to_xml()

    # -- kept in a store (several S-CSCFs) ----------------------------------------------
    def record(self, sub: NotifierSubscription) -> RegSubscription:
        """The subscription as the store keeps it (after its first NOTIFY)."""
        watch = _watch(sub)
        dialog = sub.dialog
        if watch.cseq_base is None:  # fixed by the first NOTIFY, version 0
            watch.cseq_base = (dialog.local_seq or 0) - max(watch.version - 1, 0)
        return RegSubscription(
            dialog.id.call_id, dialog.id.local_tag, dialog.id.remote_tag, watch.aor,
            str(sub.event), str(sub.resource), str(dialog.local_addr), str(dialog.remote_addr),
            str(dialog.remote_target), str(dialog.local_target or self._notifier.contact),
            tuple(str(r) for r in dialog.route_set), dialog.remote_seq or 0, watch.cseq_base,
            watch.version, sub.expires_at)

    def restore(self, record: RegSubscription) -> NotifierSubscription:
        """Make this notifier's copy of a subscription what the store says (it may
        have been made, refreshed or notified by another S-CSCF, or before a
        restart); its next NOTIFY carries ``record.version``."""
        dialog_id = DialogId(*record.key)
        sub = self.subscription(dialog_id)
        if sub is None:
            dialog = Dialog(
                DialogRole.UAS, dialog_id, NameAddr.parse(record.local_uri),
                NameAddr.parse(record.remote_uri), parse_uri(record.remote_target),
                RouteSet([NameAddr.parse(r) for r in record.route_set]), None,
                record.remote_cseq or None, parse_uri(record.local_target),
                state=DialogState.CONFIRMED)
            sub = self._notifier.adopt(NotifierSubscription(
                dialog, Event.parse(record.event), REG_PACKAGE, NotifierState.ACTIVE,
                record.expires_at, parse_uri(record.resource), usage=_Watch(record.aor)))
        dialog = sub.dialog
        # Our own Contact from now on: the subscriber's next refresh comes here.
        dialog.local_target = self._notifier.contact
        dialog.remote_target = parse_uri(record.remote_target)
        dialog.remote_seq = max(dialog.remote_seq or 0, record.remote_cseq) or None
        dialog.local_seq = record.cseq_base + record.version - 1  # next: base + version
        sub.expires_at = record.expires_at
        watch = _watch(sub)
        watch.aor, watch.version, watch.cseq_base = record.aor, record.version, record.cseq_base
        return sub

    def forget(self, sub: NotifierSubscription) -> None:
        """Drop this notifier's copy without a NOTIFY (the store has the truth)."""
        self._notifier.forget(sub)

    def forget_expired(self, now: float) -> None:
        """Drop copies past their expiry: the store's expiry sends the final NOTIFY
        (from one S-CSCF), and one refreshed elsewhere is restored when next used."""
        for held in self.subscriptions:
            if held.expires_at <= now:
                self.forget(held)

    def expired(self, sub: NotifierSubscription, now: float) -> None:
        """4.2.1.4: the subscription was not refreshed in time (reason=timeout)."""
        self._notifier.terminate(sub, now, TerminationReason.TIMEOUT)

    # -- changes --------------------------------------------------------------------
    def watching(self, aor: str) -> list[NotifierSubscription]:
        return [s for s in self._notifier.subscriptions
                if isinstance(s.usage, _Watch) and s.usage.aor == aor]

    def changed(self, aor: str, info: RegInfo, now: float, final: bool = False,
                watchers: list[NotifierSubscription] | None = None) -> None:
        """Notify every watcher of ``aor`` (``watchers``: those, as restored from
        the store); ``final`` ends the subscriptions (the whole implicit set was
        deregistered, TS 24.229 5.4.2.1.2)."""
        for watcher in self.watching(aor) if watchers is None else watchers:
            body = self._versioned(_watch(watcher), _copy(info))
            if final:
                self._notifier.terminate(watcher, now, TerminationReason.NORESOURCE, body=body)
            else:
                self._notifier.notify(watcher, now, body=body)

    # -- plumbing -------------------------------------------------------------------
    def requests(self) -> list[Request]:
        """NOTIFYs to send, each in its own client transaction."""
        self._drain()
        out, self._unsent = self._unsent, []
        return out

    def receive_response(self, request: Request, response: Response,
                         now: float) -> NotifierSubscription | None:
        """Feed a NOTIFY's answer back; returns the subscription it ended (a fatal
        answer, RFC 6665 4.2.2), for the caller to drop from the store."""
        self._notifier.receive_response(request, response, now)
        return self._drain()

    def _drain(self) -> NotifierSubscription | None:
        ended = None
        for event in self._notifier.events():
            if isinstance(event, SendRequest):
                self._unsent.append(event.request)
            elif isinstance(event, SubscriptionTerminated) and \
                    isinstance(event.subscription, NotifierSubscription):
                ended = event.subscription
        return ended

    def next_deadline(self) -> float | None:
        return self._notifier.next_deadline()

    def on_timer(self, now: float) -> None:
        self._notifier.on_timer(now)

    @property
    def subscriptions(self) -> list[NotifierSubscription]:
        return self._notifier.subscriptions


def _watch(sub: NotifierSubscription) -> _Watch:
    if not isinstance(sub.usage, _Watch):
        raise TypeError(f"{sub!r} is not a reg event subscription")
    return sub.usage


def _copy(info: RegInfo) -> RegInfo:
    return RegInfo(list(info.registrations), info.version, info.state)
