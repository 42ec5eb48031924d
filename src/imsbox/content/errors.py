"""Typed errors for message body formats."""

from __future__ import annotations


class ContentError(ValueError):
    """A body could not be parsed or built; the message names the fault."""


class XmlError(ContentError):
    """An XML body is malformed, unsafe (DTD, entities) or too large."""
