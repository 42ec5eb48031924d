"""application/resource-lists+xml (RFC 4826) with copy control (RFC 5364, used by RFC 5365/5366)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum

from .errors import ContentProtocolError, XmlError
from .xmlsafe import (
    child_text,
    expect_root,
    format_bool,
    parse_bool,
    parse_xml,
    qname,
    required_attr,
    serialize,
    sub,
)

log = logging.getLogger(__name__)

RESOURCE_LISTS_NS = "urn:ietf:params:xml:ns:resource-lists"
COPY_CONTROL_NS = "urn:ietf:params:xml:ns:copycontrol"
RECIPIENT_LIST_DISPOSITION = "recipient-list"
_COPY_CONTROL = qname(COPY_CONTROL_NS, "copyControl")
_ANONYMIZE = qname(COPY_CONTROL_NS, "anonymize")


class CopyControl(Enum):
    """The role a recipient takes in the request (RFC 5364 section 4)."""

    TO = "to"
    CC = "cc"
    BCC = "bcc"


@dataclass(slots=True)
class Entry:
    """<entry uri=...> with optional copy control attributes."""

    uri: str
    display_name: str | None = None
    copy_control: CopyControl | None = None
    anonymize: bool | None = None


@dataclass(slots=True)
class EntryRef:
    """<entry-ref ref=...>: a reference to an entry elsewhere (RFC 4826 section 3.2)."""

    ref: str
    display_name: str | None = None


@dataclass(slots=True)
class External:
    """<external anchor=...>: a list held on another server (RFC 4826 section 3.2)."""

    anchor: str
    display_name: str | None = None


@dataclass(slots=True)
class ResourceList:
    """<list>: items in document order, which may nest further lists."""

    name: str | None = None
    display_name: str | None = None
    items: list[Entry | EntryRef | External | ResourceList] = field(default_factory=list)

    @property
    def entries(self) -> list[Entry]:
        return [i for i in self.items if isinstance(i, Entry)]

    def walk_entries(self) -> Iterator[Entry]:
        """Every <entry> here and in nested lists, in document order."""
        for item in self.items:
            if isinstance(item, Entry):
                yield item
            elif isinstance(item, ResourceList):
                yield from item.walk_entries()


@dataclass(slots=True)
class ResourceLists:
    """<resource-lists> document."""

    lists: list[ResourceList] = field(default_factory=list)

    def all_entries(self) -> list[Entry]:
        return [e for lst in self.lists for e in lst.walk_entries()]

    def recipients(self, copy_control: CopyControl) -> list[str]:
        """URIs with that role; entries without copyControl count as 'to' (RFC 5364 section 4)."""
        return [
            e.uri for e in self.all_entries()
            if (e.copy_control or CopyControl.TO) is copy_control
        ]

    def to_xml(self) -> bytes:
        uses_cp = any(
            e.copy_control is not None or e.anonymize is not None for e in self.all_entries()
        )
        attrs = {"xmlns": RESOURCE_LISTS_NS}
        if uses_cp:
            attrs["xmlns:cp"] = COPY_CONTROL_NS
        root = ET.Element("resource-lists", attrs)
        for lst in self.lists:
            _build_list(root, lst)
        return serialize(root)


def build_recipient_list(recipients: Iterable[tuple[str, CopyControl | None] | str]) -> ResourceLists:
    """A single-list URI list as MESSAGE/INVITE recipient-list bodies carry (RFC 5365/5366)."""
    entries: list[Entry | EntryRef | External | ResourceList] = []
    for item in recipients:
        uri, role = (item, None) if isinstance(item, str) else item
        entries.append(Entry(uri, copy_control=role))
    return ResourceLists([ResourceList(items=entries)])


def _build_list(parent: ET.Element, lst: ResourceList) -> None:
    elem = sub(parent, "list", **({"name": lst.name} if lst.name is not None else {}))
    _display_name(elem, lst.display_name)
    for item in lst.items:
        if isinstance(item, ResourceList):
            _build_list(elem, item)
        elif isinstance(item, Entry):
            _build_entry(elem, item)
        elif isinstance(item, EntryRef):
            _display_name(sub(elem, "entry-ref", ref=item.ref), item.display_name)
        else:
            _display_name(sub(elem, "external", anchor=item.anchor), item.display_name)


def _build_entry(parent: ET.Element, entry: Entry) -> None:
    elem = sub(parent, "entry", uri=entry.uri)
    if entry.copy_control is not None:
        elem.set("cp:copyControl", entry.copy_control.value)
    if entry.anonymize is not None:
        elem.set("cp:anonymize", format_bool(entry.anonymize))
    _display_name(elem, entry.display_name)


def _display_name(elem: ET.Element, name: str | None) -> None:
    if name is not None:
        sub(elem, "display-name", name)


def parse_resource_lists(data: bytes) -> ResourceLists:
    """Parse a resource-lists document; unknown extension elements are skipped."""
    root = parse_xml(data)
    expect_root(root, RESOURCE_LISTS_NS, "resource-lists")
    return ResourceLists([_parse_list(e) for e in root.findall(qname(RESOURCE_LISTS_NS, "list"))])


def _parse_list(elem: ET.Element) -> ResourceList:
    lst = ResourceList(elem.get("name"), child_text(elem, RESOURCE_LISTS_NS, "display-name"))
    for item in elem:
        parsed = _parse_item(item)
        if parsed is not None:
            lst.items.append(parsed)
    return lst


def _parse_item(item: ET.Element) -> Entry | EntryRef | External | ResourceList | None:
    name = qname(RESOURCE_LISTS_NS, "")
    display = child_text(item, RESOURCE_LISTS_NS, "display-name")
    if item.tag == name + "list":
        return _parse_list(item)
    if item.tag == name + "entry":
        return _parse_entry(item, display)
    if item.tag == name + "entry-ref":
        return EntryRef(required_attr(item, "ref"), display)
    if item.tag == name + "external":
        return External(required_attr(item, "anchor"), display)
    return None


def _parse_entry(item: ET.Element, display: str | None) -> Entry:
    uri = required_attr(item, "uri").strip()
    if not uri:
        raise XmlError("<entry> has an empty uri")
    control = item.get(_COPY_CONTROL)
    anonymize = item.get(_ANONYMIZE)
    try:
        role = CopyControl(control) if control is not None else None
    except ValueError:
        raise ContentProtocolError(f"unknown copyControl value {control!r} for {uri}") from None
    return Entry(
        uri,
        display,
        role,
        parse_bool(anonymize, "cp:anonymize") if anonymize is not None else None,
    )
