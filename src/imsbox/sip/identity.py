"""Public user identities (TS 23.003 13.4, TS 24.229): the form nodes compare and look up.

Below the IMS core and the application servers: the HSS, the CSCFs, the ASs
and the client all name a user by the same canonical URI.
"""

from __future__ import annotations

from .uri import SipUri, TelUri, UriError, parse_uri

__all__ = ["canonical_public_id"]


def canonical_public_id(text: str) -> str:
    """Lookup form of a public identity: no display name, port or params but user=phone.

    ``<sips:Alice@IMS.Test:5061;transport=tls>`` -> ``sip:Alice@ims.test``;
    ``tel:+1-555-0100`` -> ``tel:+15550100``. Raises ValueError on junk.
    """
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    try:
        uri = parse_uri(text)
    except UriError as exc:
        raise ValueError(f"not a public identity: {text!r} ({exc})") from None
    if isinstance(uri, TelUri):
        return f"tel:{uri.digits}"
    if isinstance(uri, SipUri):
        user = f"{uri.user}@" if uri.user is not None else ""
        phone = ";user=phone" if (uri.param("user") or "").lower() == "phone" else ""
        return f"sip:{user}{uri.host.lower()}{phone}"
    raise ValueError(f"not a SIP or tel URI: {text!r}")
