"""Safe XML parsing for message bodies (defusedxml, no DTDs, size limits)."""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import TypeVar

import defusedxml
import defusedxml.ElementTree as DET

from .errors import ContentProtocolError, XmlError

log = logging.getLogger(__name__)

MAX_XML_SIZE = 256 * 1024
MAX_XML_DEPTH = 32

Element = ET.Element
E = TypeVar("E", bound=Enum)
T = TypeVar("T")

# XML 1.0 Char production minus the C0 controls other than tab/LF/CR.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z"
)
_DIGITS = re.compile(r"[0-9]{1,10}\Z")


def parse_xml(
    data: bytes | str,
    *,
    max_size: int = MAX_XML_SIZE,
    max_depth: int = MAX_XML_DEPTH,
) -> ET.Element:
    """Parse a body with DTDs, entities and external references forbidden."""
    if len(data) > max_size:
        raise XmlError(f"XML body of {len(data)} bytes exceeds the {max_size} byte limit")
    try:
        root: ET.Element = DET.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DefusedXmlException as exc:
        raise XmlError(f"unsafe XML rejected: {type(exc).__name__}") from exc
    except ET.ParseError as exc:
        raise XmlError(f"malformed XML: {exc}") from exc
    except (ValueError, LookupError, UnicodeError) as exc:
        raise XmlError(f"undecodable XML: {exc}") from exc
    _check_depth(root, max_depth)
    return root


def _check_depth(root: ET.Element, max_depth: int) -> None:
    stack = [(root, 1)]
    while stack:
        elem, depth = stack.pop()
        if depth > max_depth:
            raise XmlError(f"XML nesting deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in elem)


def qname(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def expect_root(root: ET.Element, ns: str, local: str) -> None:
    if root.tag != qname(ns, local):
        raise XmlError(f"root element is {root.tag!r}, expected {local!r} in {ns}")


def children(elem: ET.Element, ns: str, local: str) -> list[ET.Element]:
    return elem.findall(qname(ns, local))


def child(elem: ET.Element, ns: str, local: str) -> ET.Element | None:
    return elem.find(qname(ns, local))


def text_of(elem: ET.Element | None) -> str | None:
    """Element text, whitespace-trimmed (documents are pretty-printed)."""
    if elem is None:
        return None
    return (elem.text or "").strip()


def child_text(elem: ET.Element, ns: str, local: str) -> str | None:
    return text_of(child(elem, ns, local))


def parse_child(elem: ET.Element, ns: str, local: str, parse: Callable[[ET.Element], T]) -> T | None:
    """`parse` applied to the optional child <local>."""
    found = child(elem, ns, local)
    return parse(found) if found is not None else None


def child_uint(elem: ET.Element, ns: str, local: str, *, minimum: int = 0) -> int | None:
    """The optional child <local> as a decimal integer."""
    text = child_text(elem, ns, local)
    return parse_uint(text, f"<{local}>", minimum=minimum) if text is not None else None


def required_text(elem: ET.Element, ns: str, local: str) -> str:
    value = child_text(elem, ns, local)
    if not value:
        raise XmlError(f"<{_local(elem.tag)}> lacks a non-empty <{local}>")
    return value


def required_attr(elem: ET.Element, name: str) -> str:
    value = elem.get(name)
    if value is None:
        raise XmlError(f"<{_local(elem.tag)}> lacks the mandatory '{name}' attribute")
    return value


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def parse_uint(text: str | None, what: str, *, minimum: int = 0, maximum: int = 2**32 - 1) -> int:
    """ASCII decimal integer in range; int() alone would accept '1_0' or ' ٣'."""
    if text is None or not _DIGITS.match(text):
        raise ContentProtocolError(f"{what} is not a decimal integer: {text!r}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise ContentProtocolError(f"{what} {value} is outside {minimum}..{maximum}")
    return value


def parse_enum(cls: type[E], text: str | None, what: str) -> E | None:
    """An enumerated token; None when absent."""
    if text is None:
        return None
    try:
        return cls(text)
    except ValueError:
        raise ContentProtocolError(f"unknown {what} value {text!r}") from None


def parse_bool(text: str | None, what: str) -> bool:
    """xs:boolean lexical forms."""
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ContentProtocolError(f"{what} is not a boolean: {text!r}")


def format_bool(value: bool) -> str:
    return "true" if value else "false"


def parse_datetime(text: str, what: str) -> datetime:
    """RFC 3339 date-time (the profile CPIM DateTime and XML bodies use)."""
    if not _RFC3339.match(text):
        raise ContentProtocolError(f"{what} is not an RFC 3339 date-time: {text!r}")
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ContentProtocolError(f"{what} is not a valid date-time: {text!r}") from exc


def format_datetime(value: datetime) -> str:
    """RFC 3339 with 'Z' for UTC; naive values are taken as UTC."""
    text = value.isoformat()
    if value.tzinfo is None:
        return text + "Z"
    return text.replace("+00:00", "Z")


def check_text(value: str, what: str) -> str:
    """Refuse characters XML 1.0 cannot carry, before building a document."""
    if _ILLEGAL_XML.search(value):
        raise ContentProtocolError(f"{what} holds a character XML cannot carry")
    return value


def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    """Append a child element; attribute names use '_' for '-'."""
    elem = ET.SubElement(parent, tag, {k.replace("_", "-"): check_text(v, k) for k, v in attrs.items()})
    if text is not None:
        elem.text = check_text(text, tag)
    return elem


def sub_texts(parent: ET.Element, *pairs: tuple[str, str | None]) -> None:
    """Append a text child for each (tag, value) whose value is present."""
    for tag, value in pairs:
        if value is not None:
            sub(parent, tag, value)


def serialize(root: ET.Element) -> bytes:
    """UTF-8 document with declaration; tags carry literal prefixes."""
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode("utf-8")
