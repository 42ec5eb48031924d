"""Signed self-contained tokens: a JSON list and its MAC, in SIP-safe characters.

``base64url(JSON) "." base64url(MAC)`` with HMAC-SHA-256 cut to 128 bits,
under a secret the nodes of the network share (the store's shared secrets)
and a domain string per use, so a token made for one purpose never opens
as another. Both parts are SIP token and user-part characters. The odi
tokens (odi.py) and the P-CSCF's flow tokens (flow_token.py) are these.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

__all__ = ["Sealer"]

_MAC_BYTES = 16


class Sealer:
    """Seals a list of JSON values under one key and domain; opens only its own."""

    def __init__(self, secret: bytes, domain: bytes) -> None:
        self._secret = secret
        self._domain = domain + b"\x00"

    def seal(self, fields: list[Any]) -> str:
        payload = json.dumps(fields, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def open(self, token: str) -> list[Any] | None:
        """The fields of a token this key sealed; None for anything else."""
        head, dot, tail = token.partition(".")
        if not dot:
            return None
        try:
            payload, mac = _unb64(head), _unb64(tail)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            fields = json.loads(payload)
        except ValueError:
            return None
        return fields if isinstance(fields, list) else None

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, self._domain + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    raw = text.encode("ascii")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
