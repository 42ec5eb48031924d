"""REGISTER a UE through a P-CSCF, answering the Digest challenge (TS 24.229 5.1.1).

One implementation for everything that registers: tests and scripts call
:func:`register` once; :class:`~imsbox.ue.client.RcsClient` keeps one
:class:`Registration` fresh through :class:`RegistrationService` (refresh
before expiry, back-off after failures, clear errors). Each
exchange sends the REGISTER, answers a 401/407 with Digest credentials computed
from the password and keeps every response it saw, so callers can assert on
the exchange::

    reg = await register(endpoint, "alice", "secret", "ims.test", ("127.0.0.1", 5060))
    reg.ok, reg.expires, reg.route()       # 2xx?, granted lifetime, preloaded Route
    await reg.send(endpoint, "secret", 600) # a refresh: same Call-ID, next CSeq
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..sip.auth import (
    AUTHORIZATION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    WWW_AUTHENTICATE,
    DigestError,
    answer_challenge,
    choose_challenge,
)
from ..sip.endpoint import SipEndpoint
from ..sip.headers import Contact, HeaderError
from ..sip.message import Request, Response, new_tag
from ..sip.transport.base import Destination
from ..sip.uri import UriError, parse_uri, uri_equal
from .events import Registered, RegistrationError

if TYPE_CHECKING:
    from .core import UeCore

__all__ = ["Registration", "RegistrationService", "register"]

log = logging.getLogger(__name__)

Header = tuple[str, str]
MIN_REFRESH = 1.0      # never re-REGISTER more often than this
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # after a failed (re-)registration


@dataclass(slots=True)
class Registration:
    """One contact's registration at the registrar of ``aor``'s domain.

    Call-ID and From tag stay the same for every refresh and the CSeq counts
    up (RFC 3261 10.2.4). ``responses`` are those of the last exchange;
    ``expires`` is the lifetime the registrar granted our contact (0: not
    registered); ``unanswered`` says the last final response was made up
    locally (timeout, connection refused); ``service_route`` and
    ``associated_uris`` come from the last 2xx. ``contact_params`` (feature tags) and ``instance`` (RFC 5626
    ``+sip.instance``) go on our Contact.
    """

    aor: str
    contact: str
    pcscf: Destination
    responses: list[Response] = field(default_factory=list)
    call_id: str = field(default_factory=lambda: secrets.token_hex(12))
    cseq: int = 0
    tag: str = field(default_factory=new_tag)
    username: str | None = None
    contact_params: str = ""
    instance: str | None = None
    expires: int = 0
    service_route: list[str] = field(default_factory=list)
    associated_uris: list[str] = field(default_factory=list)
    unanswered: bool = False  # the last final response was a local 408/503 (no answer)

    @property
    def final(self) -> Response:
        return self.responses[-1]

    @property
    def ok(self) -> bool:
        """The last exchange ended in a 2xx (a de-registration too)."""
        return bool(self.responses) and 200 <= self.final.status < 300

    @property
    def registered(self) -> bool:
        """Our contact is bound now (a 2xx granted it a lifetime)."""
        return self.expires > 0

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    @property
    def registrar(self) -> str:
        """The Request-URI of REGISTER: the home domain (TS 24.229 5.1.1.2)."""
        return "sip:" + self.aor.partition("@")[2]

    def route(self) -> list[str]:
        """Preloaded Route for originating requests: the P-CSCF, then the Service-Route."""
        host = f"[{self.pcscf.host}]" if ":" in self.pcscf.host else self.pcscf.host
        transport = "" if self.pcscf.transport == "udp" else f";transport={self.pcscf.transport}"
        return [f"<sip:{host}:{self.pcscf.port};lr{transport}>", *self.service_route]

    def contact_header(self) -> str:
        params = f";{self.contact_params}" if self.contact_params else ""
        instance = f';+sip.instance="<{self.instance}>"' if self.instance else ""
        return f"<{self.contact}>{params}{instance}"

    async def send(self, endpoint: SipEndpoint, password: str, expires: int, *,
                   attempts: int = 2, headers: Iterable[Header] = ()) -> Response:
        """One REGISTER exchange asking for ``expires`` (0 removes our binding),
        answering up to ``attempts`` challenges; the final response. Never raises
        for a SIP failure."""
        self.responses = []
        extra = list(headers)
        auth: Header | None = None
        for _ in range(attempts + 1):
            request = self._request(expires, extra + ([auth] if auth else []))
            sent = endpoint.request(request, self.pcscf)
            response = await sent.final()
            self.unanswered = sent.local_failure
            self.responses.append(response)
            if response.status not in (401, 407) or len(self.responses) > attempts:
                break
            auth = _authorization(response, request,
                                  self.username or self.aor.removeprefix("sip:"), password)
            if auth is None:
                break
        self._update(self.final, expires)
        log.debug("REGISTER %s: %s, %ds", self.aor, self.statuses, self.expires)
        return self.final

    def _request(self, expires: int, headers: list[Header]) -> Request:
        self.cseq += 1
        request = Request("REGISTER", self.registrar)
        request.add_header("From", f"<{self.aor}>;tag={self.tag}")
        request.add_header("To", f"<{self.aor}>")
        request.add_header("Call-ID", self.call_id)
        request.add_header("CSeq", f"{self.cseq} REGISTER")
        request.add_header("Contact", self.contact_header())
        request.add_header("Expires", str(expires))
        request.add_header("Supported", "path")
        for name, value in headers:
            request.add_header(name, value)
        return request

    def _update(self, response: Response, asked: int) -> None:
        if not 200 <= response.status < 300:
            self.expires = 0
            return
        self.expires = self._granted(response, asked) if asked else 0
        try:
            self.service_route = [f"<{entry.uri}>" for entry in response.service_route]
        except HeaderError as exc:
            log.warning("REGISTER %s: ignoring a malformed Service-Route: %s", self.aor, exc)
            self.service_route = []
        self.associated_uris = [_strip_brackets(v)
                                for v in response.headers.values("P-Associated-URI")]

    def _granted(self, response: Response, asked: int) -> int:
        """RFC 3261 10.2.4: the expires of our binding as the 200 lists it (the URI
        compared by 19.1.4, or the same +sip.instance), else its Expires header,
        else what we asked for."""
        ours = self._our_binding(response)
        try:
            if ours is not None and ours.expires is not None:
                return ours.expires
            header = response.expires()
        except HeaderError as exc:
            log.warning("REGISTER %s: %s; assuming %ds", self.aor, exc, asked)
            return asked
        return header if header is not None else asked

    def _our_binding(self, response: Response) -> Contact | None:
        try:
            mine = parse_uri(self.contact)
            bindings = response.contact
        except (UriError, HeaderError) as exc:
            log.warning("REGISTER %s: cannot read the bindings: %s", self.aor, exc)
            return None
        for binding in bindings:
            if binding.is_star:
                continue
            if uri_equal(binding.uri, mine) or (
                    self.instance is not None and _instance_of(binding) == self.instance):
                return binding
        return None


class RegistrationService:
    """Keeps one UE's :class:`Registration` (``core.registration``) alive: each
    exchange answers one Digest challenge and reports a :class:`Registered`
    event; ``keep`` refreshes at half a short lifetime (10 minutes before
    expiry for long ones) and retries with back-off after a failure."""

    def __init__(self, core: UeCore, password: str, expires: int) -> None:
        self.core, self.password, self.expires = core, password, expires
        self._refresh = asyncio.Event()

    @property
    def registration(self) -> Registration:
        return self.core.registration

    async def register(self, expires: int) -> int:
        """One REGISTER exchange; the final status."""
        core = self.core
        response = await self.registration.send(core.endpoint, self.password, expires,
                                                attempts=1,
                                                headers=[("User-Agent", core.user_agent)])
        self._report(response, expires)
        return response.status

    def _report(self, response: Response, expires: int) -> None:
        reg, core = self.registration, self.core
        if not reg.registered:
            if expires:
                core.emit(Registered(reg.aor, reg.aor, "failed", 0, response.status))
            return
        if core.ua is not None:
            core.ua.route = reg.route()
        core.emit(Registered(reg.aor, reg.aor, "registered", reg.expires, response.status))
        log.info("%s registered for %ds", reg.aor, reg.expires)

    async def first(self, answer_timeout: float) -> None:
        """The first registration; RegistrationError unless it succeeded. Without any
        answer in ``answer_timeout`` seconds the P-CSCF counts as not there (a UDP
        REGISTER would otherwise take timer F, 32 s, to fail)."""
        try:
            await asyncio.wait_for(self.register(self.expires), answer_timeout)
        except TimeoutError:
            self.registration.unanswered = True
        if not self.registration.registered:
            raise self.error()

    def error(self) -> RegistrationError:
        """Why the last exchange did not register us, in the user's words."""
        reg = self.registration
        if reg.unanswered:
            host = f"[{reg.pcscf.host}]" if ":" in reg.pcscf.host else reg.pcscf.host
            return RegistrationError(f"no answer from the P-CSCF at {host}:{reg.pcscf.port} - "
                                     f"is imsbox serve running?", None, unanswered=True)
        status = reg.final.status if reg.responses else None
        if status == 403:
            return RegistrationError(f"registration of {reg.aor} refused: wrong user name "
                                     f"or password (403)", 403)
        reason = f"{status} {reg.final.reason}" if reg.responses else "no response"
        return RegistrationError(f"registration of {reg.aor} failed ({reason})", status)

    def refresh_delay(self) -> float:
        """Half the lifetime when short, else 10 minutes before expiry."""
        granted = self.registration.expires
        return max(MIN_REFRESH, granted / 2 if granted <= 1200 else granted - 600)

    async def keep(self) -> None:
        """Refresh before expiry; after a failure retry with back-off."""
        failures = 0
        while True:
            delay = (self.refresh_delay() if failures == 0
                     else RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), delay)
            self._refresh.clear()
            status = await self.register(self.expires)
            failures = 0 if self.registration.registered else failures + 1
            if failures:
                log.warning("re-registration of %s failed (%d), retrying",
                            self.registration.aor, status)

    def refresh_now(self) -> None:
        self._refresh.set()

    async def recover(self) -> bool:
        """The P-CSCF no longer knows our flow (restart, new connection): register again."""
        await self.register(self.expires)
        return self.registration.registered

    async def close(self) -> None:
        """De-register, best effort."""
        if self.registration.registered:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.register(0), 2)


def _instance_of(binding: Contact) -> str | None:
    value = binding.instance
    return value.strip('"').strip("<>") if value is not None else None


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
    reg = Registration(f"sip:{user}@{domain}",
                       contact or _default_contact(endpoint, user, dest.transport), dest,
                       username=username or f"{user}@{domain}")
    await reg.send(endpoint, password, expires, attempts=attempts, headers=headers)
    return reg


def _default_contact(endpoint: SipEndpoint, user: str, transport: str) -> str:
    host, port = endpoint.listening.get(transport) or next(iter(endpoint.listening.values()))
    host = f"[{host}]" if ":" in host else host
    suffix = "" if transport == "udp" else f";transport={transport}"
    return f"sip:{user}@{host}:{port}{suffix}"


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
