"""Typed error for malformed session descriptions."""

from __future__ import annotations


class SdpError(ValueError):
    """A session description or attribute value is malformed; ``reason`` names the fault."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(reason if line is None else f"line {line}: {reason}")
