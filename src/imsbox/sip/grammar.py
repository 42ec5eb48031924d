"""Lexical helpers shared by the SIP header views (RFC 3261 section 25.1)."""

from __future__ import annotations

import re

from .errors import SipProtocolError

__all__ = [
    "TOKEN_RE",
    "is_token",
    "quote",
    "unquote",
    "split_unquoted",
    "split_params",
    "strip_comments",
    "GrammarError",
]

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


class GrammarError(SipProtocolError, ValueError):
    """A header value does not follow the RFC 3261 grammar."""


# Tokens seen before (header and parameter names, methods, transports) are
# few and repeat on every message: a dict lookup answers them without the
# regex.  Bounded so that a flood of distinct names cannot grow it.
_KNOWN_TOKENS: dict[str, bool] = {}
_KNOWN_TOKENS_MAX = 4096


def is_token(text: str) -> bool:
    known = _KNOWN_TOKENS.get(text)
    if known is not None:
        return known
    ok = TOKEN_RE.fullmatch(text) is not None
    if len(_KNOWN_TOKENS) < _KNOWN_TOKENS_MAX and len(text) <= 64:
        _KNOWN_TOKENS[text] = ok
    return ok


def quote(text: str) -> str:
    """Make a quoted-string, escaping backslash and double quote."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote(text: str) -> str:
    """Undo quote(); values that are not quoted are returned unchanged."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        if "\\" not in inner:
            return inner
        out: list[str] = []
        i = 0
        while i < len(inner):
            ch = inner[i]
            if ch == "\\" and i + 1 < len(inner):
                i += 1
                ch = inner[i]
            out.append(ch)
            i += 1
        return "".join(out)
    return text


def _scan(text: str, separator: str, keep_angles: bool = True) -> list[str]:
    """Split on separator outside quoted strings and (optionally) <...>."""
    if '"' not in text:
        if "<" not in text or not keep_angles:
            return text.split(separator)
        return _scan_angles(text, separator)
    parts: list[str] = []
    start = 0
    i = 0
    n = len(text)
    in_angle = False
    while i < n:
        ch = text[i]
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                i += 1
            if i >= n:
                raise GrammarError("unterminated quoted string")
        elif ch == "<" and keep_angles:
            in_angle = True
        elif ch == ">" and keep_angles:
            in_angle = False
        elif ch == separator and not in_angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_angle:
        raise GrammarError("unterminated '<'")
    parts.append(text[start:])
    return parts


def _scan_angles(text: str, separator: str) -> list[str]:
    """_scan without quoted strings: split, then glue back the pieces that
    end inside <...> (a part is open while its last '<' follows its last '>')."""
    parts: list[str] = []
    pending: str | None = None
    for piece in text.split(separator):
        pending = piece if pending is None else pending + separator + piece
        if pending.rfind("<") <= pending.rfind(">"):
            parts.append(pending)
            pending = None
    if pending is not None:
        raise GrammarError("unterminated '<'")
    return parts


def split_unquoted(text: str, separator: str = ",") -> list[str]:
    """Split a header value into its comma-separated elements (7.3.1)."""
    return [p.strip() for p in _scan(text, separator) if p.strip()]


def split_params(text: str) -> list[tuple[str, str | None]]:
    """Parse ';name=value;flag' (text without the leading ';') into pairs.

    Values keep their quotes so that serialisation is faithful; callers
    unquote() what they read.
    """
    out: list[tuple[str, str | None]] = []
    pieces = text.split(";") if '"' not in text else _scan(text, ";", keep_angles=False)
    known = _KNOWN_TOKENS
    for piece in pieces:
        name, eq, value = piece.partition("=")
        if not known.get(name):  # the common case: a known name, no spaces
            name = name.strip()
            if not name and not eq:
                continue  # empty piece (";;" or a trailing ";")
            if not is_token(name):
                raise GrammarError(f"bad parameter name {name!r}")
        out.append((name, value.strip() if eq else None))
    return out


def strip_comments(text: str) -> str:
    """Remove parenthesised comments (with nesting and quoted-pairs)."""
    if "(" not in text:
        return text
    out: list[str] = []
    depth = 0
    i = 0
    in_quote = False
    while i < len(text):
        ch = text[i]
        if in_quote:
            out.append(ch)
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"' and depth == 0:
            in_quote = True
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif ch == "\\" and depth:
            i += 1
        elif depth == 0:
            out.append(ch)
        i += 1
    if depth:
        raise GrammarError("unterminated comment")
    return "".join(out).strip()


def format_params(params: list[tuple[str, str | None]]) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)
