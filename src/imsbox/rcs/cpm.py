"""OMA CPM / RCS identifiers and helpers shared by the UE and the application servers.

ICSIs appear in two spellings: the URN as written (P-Preferred-Service,
P-Asserted-Service) and %-escaped inside the ``+g.3gpp.icsi-ref`` feature tag
(Contact, Accept-Contact), e.g. ``urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg``.
"""

from __future__ import annotations

import enum
import logging
import secrets
import uuid
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import unquote

from ..content.cpim import parse_cpim
from ..content.errors import ContentError
from ..sip.grammar import GrammarError, split_unquoted
from ..sip.headers import FeatureSet, HeaderError
from ..sip.ua.invite import SessionTimerConfig

__all__ = [
    "ACCEPT_CONTACT", "CONTRIBUTION_ID", "CPM_SESSION_TIMER", "CONVERSATION_ID", "CPIM_PAGER_LIMIT",
    "DEFAULT_USER_AGENT", "DEFERRED_EVENT", "DEFERRED_PSI_USER", "ICSI_DEFERRED",
    "ICSI_FILETRANSFER", "ICSI_LARGEMSG", "ICSI_MSG",
    "ICSI_REF_TAG", "ICSI_SESSION", "IMDN_NAMESPACE", "P_ASSERTED_SERVICE",
    "P_PREFERRED_SERVICE", "UE_SERVICES", "CpmService", "accept_contact", "classify",
    "contact_feature_param", "contact_params", "cpim_message_id", "cpm_request_headers",
    "deferred_messages_uri", "escape_icsi",
    "fits_pager", "icsi_ref_value", "new_contribution_id", "new_conversation_id",
    "parse_icsi_ref", "services_of_feature_set", "unescape_icsi",
]

log = logging.getLogger(__name__)

ICSI_PREFIX = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm."
ICSI_MSG = ICSI_PREFIX + "msg"
ICSI_LARGEMSG = ICSI_PREFIX + "largemsg"
ICSI_SESSION = ICSI_PREFIX + "session"
ICSI_FILETRANSFER = ICSI_PREFIX + "filetransfer"
ICSI_DEFERRED = ICSI_PREFIX + "deferred"

ICSI_REF_TAG = "+g.3gpp.icsi-ref"
P_PREFERRED_SERVICE = "P-Preferred-Service"
P_ASSERTED_SERVICE = "P-Asserted-Service"
ACCEPT_CONTACT = "Accept-Contact"
CONVERSATION_ID = "Conversation-ID"
CONTRIBUTION_ID = "Contribution-ID"
DEFAULT_USER_AGENT = "imsbox/CPM-1.0"
# Seed 003 deferred retrieval: INVITE to the CPMDeferredMsgMgmtURI with this Event.
DEFERRED_PSI_USER = "cpm-deferred"
DEFERRED_EVENT = "deferred-messages"
IMDN_NAMESPACE = "urn:ietf:params:imdn"

# RFC 4028 on CPM sessions as seed 003 has them: Supported: timer,
# Session-Expires: 3600;refresher=uac, Min-SE: 90 (UE and AS alike).
CPM_SESSION_TIMER = SessionTimerConfig(session_expires=3600, min_se=90, refresher="uac")

# Largest CPIM body (bytes) sent as a pager MESSAGE; bigger ones use large
# message mode (OMA CPM / RCS: 1300), and the AS answers 413 otherwise.
CPIM_PAGER_LIMIT = 1300


class CpmService(enum.Enum):
    """A CPM service; ``value`` is its ICSI in URN form."""

    MSG = ICSI_MSG
    LARGEMSG = ICSI_LARGEMSG
    SESSION = ICSI_SESSION
    FILETRANSFER = ICSI_FILETRANSFER
    DEFERRED = ICSI_DEFERRED

    @property
    def icsi(self) -> str:
        return self.value

    @property
    def escaped(self) -> str:
        """The %-escaped form used inside +g.3gpp.icsi-ref."""
        return escape_icsi(self.value)

    @classmethod
    def from_icsi(cls, text: str) -> CpmService | None:
        """The service named by an ICSI in either spelling (None if not CPM)."""
        urn = unescape_icsi(text.strip().strip("<>").strip()).lower()
        for service in cls:
            if service.value == urn:
                return service
        return None


# The four ICSIs a CPM UE registers (deferred is served by the network).
UE_SERVICES: tuple[CpmService, ...] = (
    CpmService.MSG, CpmService.LARGEMSG, CpmService.SESSION, CpmService.FILETRANSFER,
)


class _HasHeaders(Protocol):
    def header(self, name: str, default: str | None = None) -> str | None: ...


def escape_icsi(urn: str) -> str:
    """``urn:urn-7:...`` -> ``urn%3Aurn-7%3A...`` (only ':' is escaped, as the seeds)."""
    return urn.replace(":", "%3A")


def unescape_icsi(text: str) -> str:
    return unquote(text)


def icsi_ref_value(services: Iterable[CpmService] = UE_SERVICES) -> str:
    """The quoted value of +g.3gpp.icsi-ref: ``"esc1,esc2,..."``."""
    return '"' + ",".join(s.escaped for s in services) + '"'


def contact_feature_param(services: Iterable[CpmService] = UE_SERVICES) -> str:
    """``+g.3gpp.icsi-ref="..."`` to append (after ';') to a Contact."""
    return f"{ICSI_REF_TAG}={icsi_ref_value(services)}"


def contact_params(service: CpmService, instance: str | None = None) -> str:
    """``;+g.3gpp.icsi-ref="<service>"[;+sip.instance="<instance>"]``: the header
    parameters of a Contact on a CPM request other than REGISTER (seed 003)."""
    params = f";{contact_feature_param([service])}"
    return params + (f';+sip.instance="<{instance}>"' if instance else "")


def accept_contact(service: CpmService) -> str:
    """``*;+g.3gpp.icsi-ref="<escaped ICSI>"`` for one request."""
    return f'*;{ICSI_REF_TAG}="{service.escaped}"'


def parse_icsi_ref(value: str) -> list[CpmService]:
    """The CPM services of a +g.3gpp.icsi-ref value (quoted or not), in order."""
    out: list[CpmService] = []
    for item in unquote_tag(value).split(","):
        service = CpmService.from_icsi(item) if item.strip() else None
        if service is not None and service not in out:
            out.append(service)
    return out


def unquote_tag(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def services_of_feature_set(features: FeatureSet) -> list[CpmService]:
    """CPM services named by a Contact's or Accept-Contact's feature set."""
    raw = features.tags.get(ICSI_REF_TAG)
    return parse_icsi_ref(raw) if raw else []


def classify(message: _HasHeaders) -> CpmService | None:
    """The CPM service of a request: P-Asserted-Service, then P-Preferred-Service,
    then the first Accept-Contact naming a CPM ICSI; None for non-CPM traffic."""
    for name in (P_ASSERTED_SERVICE, P_PREFERRED_SERVICE):
        value = message.header(name)
        if value:
            for item in value.split(","):
                service = CpmService.from_icsi(item)
                if service is not None:
                    return service
    return _from_accept_contact(message)


def _from_accept_contact(message: _HasHeaders) -> CpmService | None:
    headers = getattr(message, "headers", None)
    lines = headers.get_all(ACCEPT_CONTACT) if headers is not None else [
        message.header(ACCEPT_CONTACT) or ""]
    for line in lines:
        try:
            elements = split_unquoted(line)
        except GrammarError:
            continue
        for element in elements:
            try:
                services = services_of_feature_set(FeatureSet.parse(element))
            except HeaderError:
                log.debug("ignoring malformed Accept-Contact %r", element)
                continue
            if services:
                return services[0]
    return None


def fits_pager(cpim: bytes | str) -> bool:
    """True when a CPIM body may travel as a pager MESSAGE (<= 1300 bytes)."""
    size = len(cpim.encode() if isinstance(cpim, str) else cpim)
    return size <= CPIM_PAGER_LIMIT


def cpim_message_id(body: bytes) -> str | None:
    """The ``imdn.Message-ID`` of a CPIM body (None when absent or not CPIM)."""
    try:
        return parse_cpim(body).get("Message-ID", IMDN_NAMESPACE)
    except ContentError:
        return None


def new_conversation_id() -> str:
    return uuid.uuid4().hex


def new_contribution_id() -> str:
    return secrets.token_hex(20)


def deferred_messages_uri(domain: str) -> str:
    """The CPMDeferredMsgMgmtURI of ``domain`` (a PSI of the messaging AS)."""
    return f"sip:{DEFERRED_PSI_USER}@{domain}"


def cpm_request_headers(service: CpmService, conversation_id: str,
                        contribution_id: str | None = None,
                        user_agent: str = DEFAULT_USER_AGENT,
                        pager: bool | None = None) -> list[tuple[str, str]]:
    """The CPM headers of an originating request, as in the seeds; a ``pager``
    MESSAGE (default: a cpm.msg one) gets ``Request-Disposition: no-fork`` (seed 003)."""
    pager = service is CpmService.MSG if pager is None else pager
    return [
        (P_PREFERRED_SERVICE, service.icsi),
        (ACCEPT_CONTACT, accept_contact(service)),
        (CONVERSATION_ID, conversation_id),
        (CONTRIBUTION_ID, contribution_id or new_contribution_id()),
        ("User-Agent", user_agent),
        *([("Request-Disposition", "no-fork")] if pager else []),
    ]
