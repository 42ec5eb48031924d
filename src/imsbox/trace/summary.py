"""What a traced message says, in one line, and what it can be filtered by.

:func:`describe` parses a record's bytes (SIP with the SIP parser, MSRP with
the MSRP parser) into a :class:`Summary`: the arrow label of a ladder
(``MESSAGE cpim 'Hello'``, ``INVITE sdp message``, ``SEND 1-2048/5000``,
``NOTIFY conference v3``, ``200 OK``) and the keys ``imsbox trace`` filters
on (users, Call-ID, Conversation-ID / Contribution-ID, method). An MSRP
message has no Call-ID of its own: :class:`~imsbox.trace.ladder.Ladder` links
it to the SIP dialog whose SDP carried its session's a=path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..msrp import MsrpRequest, MsrpResponse
from ..msrp import parse as parse_msrp
from ..msrp.errors import ParseError as MsrpParseError
from ..sip.message import Request, Response
from ..sip.parser import ParseError as SipParseError
from ..sip.parser import parse as parse_sip
from .record import TraceRecord

__all__ = ["Summary", "describe", "uri_user"]

TEXT_PREVIEW = 24
_URI = re.compile(r"<?((?:sips?|tel|im|pres):[^>;,\s]+)")
_PATH = re.compile(r"a=path:([^\r\n]+)")
_SESSION_OF = re.compile(r"msrps?://[^/\s]+/([^;\s]+)")
_CT = re.compile(rb"(?im)^content-type:\s*([^\s;]+)")
_STATUS = re.compile(rb"<status>\s*<([a-z-]+)")
_VERSION = re.compile(rb"<conference-info[^>]*\sversion=\"(\d+)\"")
_STATE = re.compile(rb"<conference-info[^>]*\sstate=\"([a-z]+)\"")
_MEDIA = re.compile(r"(?m)^m=([a-z]+) ")


@dataclass(slots=True)
class Summary:
    """One message, as a ladder shows it and as filters see it."""

    proto: str
    label: str
    method: str                     # request method, CSeq method of a response, MSRP method
    is_request: bool
    call_id: str = ""
    users: set[str] = field(default_factory=set)        # user parts and full URIs
    conversation_ids: set[str] = field(default_factory=set)
    msrp_sessions: set[str] = field(default_factory=set)  # own To/From-Path session ids
    sdp_sessions: set[str] = field(default_factory=set)   # a=path session ids in a body
    sdp_paths: list[str] = field(default_factory=list)
    register_user: str = ""          # the user a REGISTER is for
    from_user: str = ""
    to_user: str = ""
    msrp_from: str = ""              # session id of the last From-Path URI
    msrp_to: str = ""                # session id of the first To-Path URI
    contact: str = ""
    error: str = ""

    def text(self) -> str:
        return self.label


def describe(record: TraceRecord) -> Summary:
    """The summary of one record; an unparsable message is labelled as such."""
    if record.proto == "msrp":
        return _describe_msrp(record.data)
    return _describe_sip(record.data)


# -- SIP --------------------------------------------------------------------------------

def _describe_sip(data: bytes) -> Summary:
    try:
        message = parse_sip(data, max_header_size=max(65536, len(data)))
    except SipParseError as exc:
        return Summary("sip", f"(unparsable SIP: {exc.reason})", "", False, error=exc.reason)
    if isinstance(message, Request):
        method = message.method
        label = f"{method} {_request_key(message)}".rstrip()
        summary = Summary("sip", label, method, True)
        summary.users.update(_users(str(message.uri)))
    else:
        assert isinstance(message, Response)
        method = _cseq_method(message)
        label = f"{message.status} {message.reason}"
        sdp = _body_kind(message)
        if sdp:
            label += f" ({method}, {sdp})"
        elif method:
            label += f" ({method})"
        summary = Summary("sip", label, method, False)
    headers = message.headers
    summary.call_id = headers.get("Call-ID") or ""
    for name in ("From", "To", "P-Asserted-Identity"):
        for value in headers.get_all(name):
            summary.users.update(_users(value))
    summary.from_user = _user_of(headers.get("From") or "")
    summary.to_user = _user_of(headers.get("To") or "")
    for name in ("Conversation-ID", "Contribution-ID", "InReplyTo-Contribution-ID"):
        conversation = headers.get(name)
        if conversation:
            summary.conversation_ids.add(conversation.strip())
    _sdp_paths(summary, message.body)
    if isinstance(message, Request) and message.method == "REGISTER":
        summary.register_user = summary.to_user
        summary.contact = headers.get("Contact") or ""
    return summary


def _cseq_method(message: Response) -> str:
    try:
        return message.cseq.method
    except Exception:  # a response without a usable CSeq still gets a label
        return ""


def _request_key(request: Request) -> str:
    """The one thing worth reading on the arrow, by method."""
    method = request.method
    if method == "MESSAGE":
        return _content_key(request)
    if method in ("NOTIFY", "SUBSCRIBE", "PUBLISH"):
        event = (request.header("Event") or "").split(";")[0].strip()
        extra = _conference_version(request.body) if event == "conference" else ""
        return f"{event} {extra}".strip()
    if method == "REFER":
        refer_to = request.header("Refer-To") or ""
        found = _URI.search(refer_to)
        target = found.group(1) if found else refer_to
        bye = " (BYE)" if "method=BYE" in refer_to else ""
        return f"{target}{bye}"
    if method == "REGISTER":
        expires = request.header("Expires")
        return f"expires={expires}" if expires is not None else ""
    return _body_kind(request)


def _content_key(message: Request) -> str:
    mime = message.content_type.mime if message.content_type is not None else ""
    body = message.body
    if mime == "message/cpim":
        return _cpim_key(body)
    if mime == "application/im-iscomposing+xml":
        return "iscomposing"
    if mime.startswith("text/"):
        return f"text {_preview(body)}"
    return mime


def _cpim_key(body: bytes) -> str:
    """``cpim 'Hello'``, ``cpim imdn delivered``; the content type otherwise."""
    _, _, rest = body.partition(b"\r\n\r\n")
    inner_head, _, inner = rest.partition(b"\r\n\r\n")
    found = _CT.search(inner_head)
    inner_type = found.group(1).decode("ascii", "replace").lower() if found else ""
    if inner_type == "message/imdn+xml":
        status = _STATUS.search(inner)
        return f"cpim imdn {status.group(1).decode() if status else ''}".rstrip()
    if inner_type.startswith("text/"):
        return f"cpim {_preview(inner)}"
    if "iscomposing" in inner_type:
        return "cpim iscomposing"
    return f"cpim {inner_type}".rstrip()


def _preview(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\r", " ").replace("\n", " ")
    if len(text) > TEXT_PREVIEW:
        text = text[:TEXT_PREVIEW - 1] + "…"
    return repr(text)


def _body_kind(message: Request | Response) -> str:
    """``sdp message``, ``sdp audio``, ``sdp+resource-lists`` ... or nothing."""
    if not message.body or message.content_type is None:
        return ""
    mime = message.content_type.mime
    text = message.body.decode("utf-8", "replace")
    if mime == "application/sdp":
        media = " ".join(dict.fromkeys(_MEDIA.findall(text)))
        return f"sdp {media}".rstrip()
    if mime.startswith("multipart/"):
        parts = re.findall(r"(?im)^content-type:\s*application/([a-z0-9.+-]+)", text)
        names = [p.replace("+xml", "") for p in parts]
        media = " ".join(dict.fromkeys(_MEDIA.findall(text)))
        return "+".join(names) + (f" {media}" if media else "")
    return mime.split("/")[-1].replace("+xml", "")


def _conference_version(body: bytes) -> str:
    version = _VERSION.search(body)
    state = _STATE.search(body)
    out = f"v{version.group(1).decode()}" if version else ""
    if state and state.group(1) != b"full":
        out += f" {state.group(1).decode()}"
    return out


def _sdp_paths(summary: Summary, body: bytes) -> None:
    if b"a=path:" not in body:
        return
    for line in _PATH.findall(body.decode("utf-8", "replace")):
        for uri in line.split():
            summary.sdp_paths.append(uri)
            found = _SESSION_OF.match(uri)
            if found:
                summary.sdp_sessions.add(found.group(1))


def _users(value: str) -> set[str]:
    out: set[str] = set()
    for uri in _URI.findall(value):
        out.add(uri)
        user = uri_user(uri)
        if user:
            out.add(user)
    return out


def _user_of(value: str) -> str:
    found = _URI.search(value)
    return uri_user(found.group(1)) if found else ""


def uri_user(uri: str) -> str:
    """``sip:alice@ims.test`` -> ``alice``; ``tel:+1555`` -> ``+1555``."""
    scheme, _, rest = uri.partition(":")
    if scheme == "tel":
        return rest.split(";")[0]
    user, at, _ = rest.partition("@")
    return user.split(";")[0] if at else ""


# -- MSRP -------------------------------------------------------------------------------

def _describe_msrp(data: bytes) -> Summary:
    try:
        message = parse_msrp(data)
    except MsrpParseError as exc:
        return Summary("msrp", f"(unparsable MSRP: {exc.reason})", "", False,
                       error=str(exc.reason))
    if isinstance(message, MsrpResponse):
        label = f"{message.status} {message.comment}".rstrip()
        summary = Summary("msrp", label, "", False)
    else:
        summary = Summary("msrp", f"{message.method} {_msrp_key(message)}".rstrip(),
                          message.method, True)
    try:
        to_path, from_path = message.to_path, message.from_path
    except MsrpParseError:
        return summary
    for uri in (*to_path, *from_path):
        if uri.session_id:
            summary.msrp_sessions.add(uri.session_id)
    summary.msrp_to = to_path[0].session_id or "" if to_path else ""
    summary.msrp_from = from_path[-1].session_id or "" if from_path else ""
    return summary


def _msrp_key(message: MsrpRequest) -> str:
    try:
        byte_range = message.byte_range
        status = message.status
    except MsrpParseError as exc:
        return f"(bad header: {exc.reason})"
    if message.method == "REPORT":
        return f"{status.code} {byte_range}" if status is not None else ""
    if not message.body and (byte_range is None or byte_range.end == 0):
        return "empty"
    ranges = str(byte_range) if byte_range is not None else ""
    mime = (message.content_type or "").split(";")[0].strip().lower()
    complete = byte_range is not None and byte_range.start == 1 \
        and byte_range.total == len(message.body)
    if not complete:
        return ranges
    if mime == "message/cpim":
        return f"{ranges} {_cpim_key(message.body)}"
    if "iscomposing" in mime:
        return f"{ranges} iscomposing"
    return f"{ranges} {mime}".rstrip()
