"""REGISTER a UE through a P-CSCF, answering the Digest challenge (TS 24.229 5.1.1).

A small building block for tests, scripts and ``imsbox ue``: one call sends the
REGISTER, answers a 401/407 with Digest credentials computed from the password
and returns every response it saw, so callers can assert on the exchange.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..sip.auth import (
    AUTHORIZATION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, WWW_AUTHENTICATE, DigestError,
    answer_challenge, choose_challenge,
)
from ..sip.endpoint import SipEndpoint
from ..sip.message import Request, Response, new_tag
from ..sip.transport.base import Destination

__all__ = ["Registration", "register"]

log = logging.getLogger(__name__)

Header = tuple[str, str]


@dataclass(slots=True)
class Registration:
    """What a REGISTER exchange produced; ``final`` is the last response."""

    aor: str
    contact: str
    pcscf: Destination
    responses: list[Response] = field(default_factory=list)
    call_id: str = ""
    cseq: int = 0

    @property
    def final(self) -> Response:
        return self.responses[-1]

    @property
    def ok(self) -> bool:
        return 200 <= self.final.status < 300

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    @property
    def service_route(self) -> list[str]:
        """Service-Route entries of the 200 (TS 24.229 5.1.1.2), in order."""
        return [f"<{entry.uri}>" for entry in self.final.service_route] if self.ok else []

    @property
    def associated_uris(self) -> list[str]:
        """P-Associated-URI values of the 200 (the implicit registration set)."""
        if not self.ok:
            return []
        return [_strip_brackets(v) for v in self.final.headers.values("P-Associated-URI")]

    def route(self) -> list[str]:
        """Preloaded Route for originating requests: the P-CSCF, then the Service-Route."""
        host = f"[{self.pcscf.host}]" if ":" in self.pcscf.host else self.pcscf.host
        transport = "" if self.pcscf.transport == "udp" else f";transport={self.pcscf.transport}"
        return [f"<sip:{host}:{self.pcscf.port};lr{transport}>", *self.service_route]


def _strip_brackets(value: str) -> str:
    value = value.strip()
    if value.startswith("<"):
        return value[1:value.index(">")]
    return value


async def register(endpoint: SipEndpoint, user: str, password: str, domain: str,
                   pcscf: Destination | tuple[str, int], *, contact: str | None = None,
                   expires: int = 600, transport: str = "udp", attempts: int = 2,
                   username: str | None = None,
                   headers: Iterable[Header] = ()) -> Registration:
    """REGISTER ``sip:USER@DOMAIN`` at ``pcscf``; answer up to ``attempts`` challenges.

    ``username`` is the Digest username (default the private identity
    USER@DOMAIN). Never raises for a SIP failure: look at ``final``/``statuses``.
    """
    dest = pcscf if isinstance(pcscf, Destination) else Destination(transport, *pcscf)
    aor = f"sip:{user}@{domain}"
    reg = Registration(aor, contact or _default_contact(endpoint, user, dest.transport), dest,
                       call_id=secrets.token_hex(12))
    tag = new_tag()
    extra = list(headers)
    auth: Header | None = None
    for _ in range(attempts + 1):
        reg.cseq += 1
        request = _build(reg, domain, tag, expires, extra + ([auth] if auth else []))
        response = await endpoint.request(request, dest).final()
        reg.responses.append(response)
        if response.status not in (401, 407) or len(reg.responses) > attempts:
            break
        auth = _authorization(response, request, username or f"{user}@{domain}", password)
        if auth is None:
            break
    log.debug("REGISTER %s: %s", aor, reg.statuses)
    return reg


def _default_contact(endpoint: SipEndpoint, user: str, transport: str) -> str:
    host, port = endpoint.listening.get(transport) or next(iter(endpoint.listening.values()))
    host = f"[{host}]" if ":" in host else host
    suffix = "" if transport == "udp" else f";transport={transport}"
    return f"sip:{user}@{host}:{port}{suffix}"


def _build(reg: Registration, domain: str, tag: str, expires: int,
           headers: list[Header]) -> Request:
    request = Request("REGISTER", f"sip:{domain}")
    request.add_header("From", f"<{reg.aor}>;tag={tag}")
    request.add_header("To", f"<{reg.aor}>")
    request.add_header("Call-ID", reg.call_id)
    request.add_header("CSeq", f"{reg.cseq} REGISTER")
    request.add_header("Contact", f"<{reg.contact}>")
    request.add_header("Expires", str(expires))
    request.add_header("Supported", "path")
    for name, value in headers:
        request.add_header(name, value)
    return request


def _authorization(response: Response, request: Request, username: str,
                   password: str) -> Header | None:
    """Digest credentials for the response's challenge; None when it has none usable."""
    proxy = response.status == 407
    values = response.headers.get_all(PROXY_AUTHENTICATE if proxy else WWW_AUTHENTICATE)
    try:
        challenge = choose_challenge(values)
        credentials = answer_challenge(challenge, "REGISTER", str(request.uri), username,
                                       password=password)
    except DigestError as exc:
        log.info("cannot answer the challenge: %s", exc)
        return None
    return (PROXY_AUTHORIZATION if proxy else AUTHORIZATION, str(credentials))
