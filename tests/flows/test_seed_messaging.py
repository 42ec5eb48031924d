"""The seed flows 000, 001 and 003, end to end through the real IMS core and the
messaging AS on loopback, checked as a ladder recorded at the UEs.

Two RcsClients (alice, bob) register through the P-CSCF of a Network with the
default CPM iFCs, so every request goes UE -> P-CSCF -> S-CSCF -> messaging AS
-> S-CSCF -> I-CSCF -> S-CSCF -> messaging AS -> S-CSCF -> P-CSCF -> UE, and
chats and large messages are anchored by the AS (its own MSRP endpoint).

What each UE sends and receives is recorded where it crosses the UE's sockets:
SIP through the transport layer's trace hook, MSRP by wrapping the asyncio
transport of every MSRP connection of the UE's endpoint (bytes in and out,
cut into messages at their end-lines). Nothing is mocked. The ladders are
compared per SIP dialog / transaction (Call-ID) and per MSRP session, because
independent flows (an IMDN MESSAGE and a BYE, say) may interleave either way.

Not in the ladders: retransmissions (byte-identical copies) and the optional
100 Trying of a UAS or of a non-INVITE transaction (RFC 3261 17.2.1 / 17.2.2,
sent only when an answer takes longer than a timer). The P-CSCF's 100 Trying
to an INVITE is immediate (16.2) and is in the ladder, as in seed 000.

Seed 000 shows 183 Session Progress before the 200: the messaging AS sends it
(no SDP, unreliable) when it starts the far leg of an anchored session.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from imsbox.rcs import cpm
from imsbox.apps.messaging import MessagingAs
from imsbox.config import Config
from imsbox.content import (
    CpimMessage, DispositionType, ImdnStatus, parse_cpim, parse_imdn, parse_iscomposing,
)
from imsbox.content.imdn import IMDN_NS
from imsbox.serve import Network
from imsbox.msrp import MsrpRequest, MsrpResponse
from imsbox.msrp import endpoint as msrp_endpoint
from imsbox.msrp import parse as parse_msrp
from imsbox.sdp import Direction, SessionDescription, Setup
from imsbox.sdp import parse as parse_sdp
from imsbox.sip.message import Request, Response
from imsbox.sip.parser import parse as parse_sip
from imsbox.sip.transport.base import Flow
from imsbox.ue.client import (
    ChatEnded, ChatMessage, ChatStarted, Composing, MessageReceived, MessageStatus,
    Notification, RcsClient,
)
from imsbox.testing import FAST_TIMERS

from helpers import DOMAIN, alice_and_bob, client

pytestmark = pytest.mark.timeout(40)
ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"
WAIT = 5.0
Address = tuple[str, int]
Step = tuple[str, str]  # (direction, label)


# -- recording the wire at the UEs ------------------------------------------------------

@dataclass(frozen=True)
class Wire:
    """One SIP or MSRP message crossing a UE's socket."""

    n: int
    ue: str
    proto: str        # "sip" or "msrp"
    direction: str    # "out" or "in"
    local: Address    # the UE's socket
    peer: Address     # the other end: the P-CSCF, the AS's MSRP endpoint
    data: bytes

    @property
    def sip(self) -> Request | Response:
        return parse_sip(self.data)

    @property
    def msrp(self) -> MsrpRequest | MsrpResponse:
        return parse_msrp(self.data)

    @property
    def label(self) -> str:
        return _sip_label(self.sip) if self.proto == "sip" else _msrp_label(self.msrp)

    @property
    def step(self) -> Step:
        return self.direction, self.label


def _sip_label(message: Request | Response) -> str:
    if isinstance(message, Request):
        return message.method
    return f"{message.status} {message.cseq.method}"


def _msrp_label(message: MsrpRequest | MsrpResponse) -> str:
    if isinstance(message, MsrpResponse):
        return str(message.status)
    kind = (message.content_type or "").split(";")[0].strip().lower()
    if not message.body:
        return f"{message.method} empty"
    if kind == "message/cpim":
        inner = (parse_cpim(message.body).content_type or "").split(";")[0].lower()
        return f"{message.method} {'imdn' if inner == 'message/imdn+xml' else 'text'}"
    return f"{message.method} {'iscomposing' if 'iscomposing' in kind else kind}"


_MSRP_START = re.compile(rb"MSRP ([A-Za-z0-9][A-Za-z0-9.+%=-]{3,31}) ")


def _cut_msrp(buffer: bytearray) -> list[bytes]:
    """Take every complete MSRP message off the front of ``buffer``."""
    out: list[bytes] = []
    while (start := _MSRP_START.match(buffer)) is not None:
        end = re.compile(rb"\r\n-------" + re.escape(start.group(1)) + rb"[+$#]\r\n")
        found = end.search(buffer, start.end())
        if found is None:
            break
        out.append(bytes(buffer[:found.end()]))
        del buffer[:found.end()]
    return out


class _TappedTransport:
    """An asyncio transport that tells the Recorder what is written to it."""

    def __init__(self, transport: Any, on_write: Callable[[bytes], None]) -> None:
        self._transport, self._on_write = transport, on_write

    def write(self, data: bytes) -> None:
        self._on_write(bytes(data))
        self._transport.write(data)

    def writelines(self, bufs: Iterable[bytes]) -> None:
        bufs = list(bufs)
        self._on_write(b"".join(bytes(b) for b in bufs))
        self._transport.writelines(bufs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@dataclass
class Recorder:
    """Every SIP and MSRP message in and out of the watched UEs, in order."""

    wires: list[Wire] = field(default_factory=list)
    active: bool = True
    _msrp_names: dict[int, str] = field(default_factory=dict)
    _buffers: dict[tuple[int, str], bytearray] = field(default_factory=dict)
    _seen: set[tuple[str, str, str, bytes]] = field(default_factory=set)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Wrap every MSRP connection (the AS's too; only the UEs' are kept)."""
        made = msrp_endpoint.MsrpConnection.connection_made
        received = msrp_endpoint.MsrpConnection.data_received
        recorder = self

        def connection_made(conn: Any, transport: Any) -> None:
            made(conn, transport)
            conn.transport = _TappedTransport(
                conn.transport, lambda data: recorder._msrp(conn, "out", data))

        def data_received(conn: Any, data: bytes) -> None:
            recorder._msrp(conn, "in", data)
            received(conn, data)

        monkeypatch.setattr(msrp_endpoint.MsrpConnection, "connection_made", connection_made)
        monkeypatch.setattr(msrp_endpoint.MsrpConnection, "data_received", data_received)

    def watch(self, name: str, ue: RcsClient) -> None:
        """Record ``ue`` from now on (after its REGISTER)."""
        ue._endpoint.transport.trace = lambda d, data, flow: self._sip(name, d, data, flow)
        self._msrp_names[id(ue._msrp)] = name

    def _add(self, ue: str, proto: str, direction: str, ends: tuple[Address, Address],
             data: bytes) -> None:
        key = (ue, proto, direction, data)
        if not self.active or key in self._seen:  # a retransmission
            return
        self._seen.add(key)
        local, peer = ends
        self.wires.append(Wire(len(self.wires), ue, proto, direction, local, peer, data))

    def _sip(self, ue: str, direction: str, data: bytes, flow: Flow) -> None:
        ends = ((flow.local[0], flow.local[1]), (flow.remote[0], flow.remote[1]))
        self._add(ue, "sip", direction, ends, bytes(data))

    def _msrp(self, conn: Any, direction: str, data: bytes) -> None:
        name = self._msrp_names.get(id(conn.endpoint))
        if name is None:
            return
        buffer = self._buffers.setdefault((id(conn), direction), bytearray())
        buffer += data
        transport = conn.transport
        ends = (transport.get_extra_info("sockname")[:2], transport.get_extra_info("peername")[:2])
        for message in _cut_msrp(buffer):
            self._add(name, "msrp", direction, ends, message)

    # -- views ----------------------------------------------------------------------
    def of(self, ue: str, proto: str) -> list[Wire]:
        return [w for w in self.wires if w.ue == ue and w.proto == proto]

    def dialog(self, ue: str, call_id: str) -> list[Wire]:
        """The SIP messages of one Call-ID at ``ue``, without optional 100 Trying."""
        return [w for w in self.of(ue, "sip") if w.sip.call_id == call_id
                and not _optional_trying(w)]

    def call_ids(self, ue: str) -> list[str]:
        return list(dict.fromkeys(w.sip.call_id for w in self.of(ue, "sip")))

    def calls_from(self, ue: str, step: Step) -> list[str]:
        """The Call-IDs at ``ue`` whose first message is ``step``."""
        return [c for c in self.call_ids(ue) if self.dialog(ue, c)[0].step == step]

    def first(self, ue: str, proto: str, direction: str, label: str) -> Wire:
        return next(w for w in self.of(ue, proto) if w.step == (direction, label))

    def all(self, ue: str, proto: str, direction: str, label: str) -> list[Wire]:
        return [w for w in self.of(ue, proto) if w.step == (direction, label)]


def _optional_trying(wire: Wire) -> bool:
    """A 100 Trying a UAS sent, or one to a non-INVITE: timer-driven, not in a ladder."""
    message = wire.sip
    if not isinstance(message, Response) or message.status != 100:
        return False
    return wire.direction == "out" or message.cseq.method != "INVITE"


def steps(wires: Iterable[Wire]) -> list[Step]:
    return [w.step for w in wires]


# -- the network ------------------------------------------------------------------------

def seed_config(tmp_path: Path) -> Config:
    """Loopback network with the default CPM iFCs (through the messaging AS)."""
    return alice_and_bob(tmp_path)


@dataclass
class Seed:
    """The running network, both UEs and the recorder."""

    net: Network
    alice: RcsClient
    bob: RcsClient
    rec: Recorder

    @property
    def pcscf(self) -> Address:
        return self.net.config.pcscf.host, self.net.config.pcscf.port

    @property
    def as_msrp(self) -> Address:
        node = self.net.nodes["as"]
        assert isinstance(node, MessagingAs) and node.msrp is not None
        return node.msrp.host, node.msrp.port


@contextlib.asynccontextmanager
async def seed_network(config: Config, rec: Recorder) -> AsyncIterator[Seed]:
    alice, bob = client(config, "alice"), client(config, "bob")
    async with Network(config, timers=FAST_TIMERS) as net:
        started: list[RcsClient] = []
        try:
            for name, ue in (("alice", alice), ("bob", bob)):
                started.append(await ue.start())
                rec.watch(name, ue)
            yield Seed(net, alice, bob, rec)
        finally:
            rec.active = False  # leave the de-REGISTERs out
            for ue in started:
                await ue.close()


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        scenario: Callable[[Seed], Awaitable[None]]) -> Recorder:
    config = seed_config(tmp_path)
    rec = Recorder()
    rec.install(monkeypatch)

    async def main() -> None:
        async with seed_network(config, rec) as seed:
            await scenario(seed)
    asyncio.run(asyncio.wait_for(main(), 30))
    return rec


# -- content checks -------------------------------------------------------------------------

def sdp_of(message: Request | Response) -> SessionDescription:
    assert message.content_type is not None and message.content_type.mime == "application/sdp"
    return parse_sdp(message.body)


def msrp_line(sd: SessionDescription) -> Any:
    (media,) = [m for m in sd.media if m.is_msrp]
    return media


def assert_cpm_request(request: Request, service: cpm.CpmService) -> None:
    """The CPM headers of seeds 000 / 003 (long or compact names)."""
    assert request.header("P-Preferred-Service") == service.icsi
    assert request.header("Accept-Contact") == f'*;+g.3gpp.icsi-ref="{service.escaped}"'
    assert request.header("Conversation-ID") and request.header("Contribution-ID")
    assert request.header("P-Preferred-Identity") == f"<{ALICE}>"
    assert request.header("User-Agent")


def _path_of(media: Any) -> str:
    """The single a=path URI, on the m= line's port (no relays, RFC 4975)."""
    (path,) = media.path
    assert path.startswith("msrp://") and path.endswith(";tcp"), path
    assert f":{media.port}/" in path, (media.port, path)
    return str(path)


def assert_offer(sd: SessionDescription, direction: Direction, accept: list[str],
                 wrapped: list[str] | None) -> str:
    """m=message PORT TCP/MSRP *, accept(-wrapped)-types, setup:active, path, CEMA;
    returns the path."""
    media = msrp_line(sd)
    assert (media.media, media.proto, media.formats) == ("message", "TCP/MSRP", ["*"])
    assert media.accept_types == accept
    assert media.accept_wrapped_types == wrapped
    assert media.setup is Setup.ACTIVE and media.msrp_cema
    assert sd.direction_of(media) is direction
    return _path_of(media)


def assert_answer(sd: SessionDescription, direction: Direction) -> str:
    """setup:passive, msrp-cema, the answerer's own path; returns the path."""
    media = msrp_line(sd)
    assert (media.media, media.proto) == ("message", "TCP/MSRP")
    assert media.setup is Setup.PASSIVE and media.msrp_cema
    assert sd.direction_of(media) is direction
    return _path_of(media)


def cpim_of(body: bytes) -> CpimMessage:
    return parse_cpim(body)


def assert_cpim_text(body: bytes, text: str, message_id: str, notify: str,
                     sender: str = ALICE, recipient: str = BOB) -> None:
    """CPIM as in seeds 001 / 003: From, To, DateTime, NS imdn, imdn.Message-ID,
    imdn.Disposition-Notification, then text/plain."""
    cpim = cpim_of(body)
    assert cpim.sender is not None and cpim.sender.uri == sender
    assert [r.uri for r in cpim.recipients] == [recipient]
    assert cpim.datetime is not None
    assert cpim.namespaces().get("imdn") == IMDN_NS
    assert cpim.get("Message-ID", IMDN_NS) == message_id
    assert cpim.get("Disposition-Notification", IMDN_NS) == notify
    assert (cpim.content_type or "").lower().startswith("text/plain")
    assert cpim.body == text.encode()


def assert_imdn(body: bytes, about: str, disposition: DispositionType,
                status: ImdnStatus) -> None:
    """message/imdn+xml in CPIM with Content-Disposition: notification (RFC 5438)."""
    cpim = cpim_of(body)
    assert cpim.content_type == "message/imdn+xml"
    assert cpim.content_disposition == "notification"
    assert cpim.get("Message-ID", IMDN_NS) not in (None, about)
    imdn = parse_imdn(cpim.body)
    assert (imdn.message_id, imdn.disposition, imdn.status) == (about, disposition, status)


def assert_peers(wires: Iterable[Wire], peer: Address) -> None:
    assert {w.peer for w in wires} == {peer}


# -- 000 + 001: the 1-to-1 chat ---------------------------------------------------------------

INVITE_LADDER_CALLER = [("out", "INVITE"), ("in", "100 INVITE"), ("in", "183 INVITE"),
                        ("in", "200 INVITE"), ("out", "ACK")]
INVITE_LADDER_CALLEE = [("in", "INVITE"), ("out", "200 INVITE"), ("in", "ACK")]
BYE_SENT = [("out", "BYE"), ("in", "200 BYE")]
BYE_RECEIVED = [("in", "BYE"), ("out", "200 BYE")]
# Seed 001 from UA1's side: binding SEND, Hello, its delivery IMDN, bob typing, "hi",
# our delivery IMDN for it - each SEND answered by the next hop's 200.
CHAT_MSRP_ALICE = [("out", "SEND empty"), ("in", "200"), ("out", "SEND text"), ("in", "200"),
                   ("in", "SEND imdn"), ("out", "200"), ("in", "SEND iscomposing"),
                   ("out", "200"), ("in", "SEND text"), ("out", "200"), ("out", "SEND imdn"),
                   ("in", "200")]
CHAT_MSRP_BOB = [("in", "SEND empty"), ("out", "200"), ("in", "SEND text"), ("out", "200"),
                 ("out", "SEND imdn"), ("in", "200"), ("out", "SEND iscomposing"),
                 ("in", "200"), ("out", "SEND text"), ("in", "200"), ("in", "SEND imdn"),
                 ("out", "200")]


@dataclass
class ChatRun:
    hello: str = ""
    reply: str = ""
    conversation: str | None = None


async def chat_scenario(seed: Seed, out: ChatRun) -> None:
    alice, bob = seed.alice, seed.bob
    chat = await alice.open_chat("bob")
    started = await bob.wait_event(ChatStarted, WAIT)
    assert isinstance(started, ChatStarted) and started.sender == ALICE
    out.conversation = chat.conversation_id
    out.hello = await chat.send("Hello")
    got = await bob.wait_event(ChatMessage, WAIT)
    assert isinstance(got, ChatMessage) and (got.text, got.message_id) == ("Hello", out.hello)
    assert await alice.wait_status(out.hello, timeout=WAIT) is MessageStatus.DELIVERED
    theirs = bob.chats[started.chat_id]
    await theirs.composing()
    typing = await alice.wait_event(Composing, WAIT)
    assert isinstance(typing, Composing) and typing.state == "active"
    out.reply = await theirs.send("hi")
    back = await alice.wait_event(ChatMessage, WAIT)
    assert isinstance(back, ChatMessage) and (back.text, back.sender) == ("hi", BOB)
    assert await bob.wait_status(out.reply, timeout=WAIT) is MessageStatus.DELIVERED
    await chat.close()
    assert isinstance(await bob.wait_event(ChatEnded, WAIT), ChatEnded)


def test_seed_000_001_chat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = ChatRun()
    seed_info: dict[str, Address] = {}

    async def scenario(seed: Seed) -> None:
        seed_info.update(pcscf=seed.pcscf, as_msrp=seed.as_msrp)
        await chat_scenario(seed, result)
    rec = run(tmp_path, monkeypatch, scenario)

    alice_path, as_near = check_chat_sip_alice(rec, seed_info["pcscf"], result)
    bob_path, as_far = check_chat_sip_bob(rec, seed_info["pcscf"], result)
    check_chat_msrp(rec, "alice", CHAT_MSRP_ALICE, seed_info["as_msrp"], alice_path, as_near)
    check_chat_msrp(rec, "bob", CHAT_MSRP_BOB, seed_info["as_msrp"], bob_path, as_far)
    check_chat_bodies(rec, result)
    # the MSRP session starts once the dialog is confirmed, and ends before the BYE
    alice_msrp = rec.of("alice", "msrp")
    assert rec.first("alice", "sip", "out", "ACK").n < alice_msrp[0].n
    assert alice_msrp[-1].n < rec.first("alice", "sip", "out", "BYE").n
    assert rec.first("bob", "sip", "out", "200 INVITE").n < rec.of("bob", "msrp")[0].n


def check_chat_sip_alice(rec: Recorder, pcscf: Address, run_: ChatRun) -> tuple[str, str]:
    """INVITE -> 100 -> 183 -> 200 (answer) -> ACK ... BYE -> 200, all via the P-CSCF."""
    (call_id,) = rec.call_ids("alice")
    ladder = rec.dialog("alice", call_id)
    assert steps(ladder) == INVITE_LADDER_CALLER + BYE_SENT
    assert_peers(ladder, pcscf)
    invite, _, progress, ok, ack = (w.sip for w in ladder[:5])
    assert isinstance(invite, Request) and str(invite.uri) == BOB
    assert_cpm_request(invite, cpm.CpmService.SESSION)
    assert invite.header("Conversation-ID") == run_.conversation
    alice_path = assert_offer(sdp_of(invite), Direction.SENDRECV,
                              ["message/cpim", "application/im-iscomposing+xml"],
                              ["text/plain", "message/imdn+xml"])
    assert isinstance(progress, Response) and progress.reason == "Session Progress"
    assert progress.to.tag and not progress.body
    assert isinstance(ok, Response) and ok.to.tag == progress.to.tag
    as_path = assert_answer(sdp_of(ok), Direction.SENDRECV)
    assert "a=msrp-cema" in ok.body.decode() and "a=setup:passive" in ok.body.decode()
    assert isinstance(ack, Request) and ack.cseq.seq == invite.cseq.seq
    assert ack.to.tag == ok.to.tag
    return alice_path, as_path


def check_chat_sip_bob(rec: Recorder, pcscf: Address, run_: ChatRun) -> tuple[str, str]:
    """The AS's far leg: INVITE (its own offer) -> 200 (bob's answer) -> ACK ... BYE."""
    (call_id,) = rec.call_ids("bob")
    ladder = rec.dialog("bob", call_id)
    assert steps(ladder) == INVITE_LADDER_CALLEE + BYE_RECEIVED
    assert_peers(ladder, pcscf)
    invite, ok = ladder[0].sip, ladder[1].sip
    assert isinstance(invite, Request) and invite.header("P-Asserted-Identity") == f"<{ALICE}>"
    assert invite.header("Conversation-ID") == run_.conversation
    assert invite.header("Accept-Contact") == \
        f'*;+g.3gpp.icsi-ref="{cpm.CpmService.SESSION.escaped}"'
    offer = sdp_of(invite)
    as_path = assert_offer(offer, Direction.SENDRECV,
                           ["message/cpim", "application/im-iscomposing+xml"],
                           ["text/plain", "message/imdn+xml"])
    bob_path = assert_answer(sdp_of(ok), Direction.SENDRECV)
    return bob_path, as_path


def check_chat_msrp(rec: Recorder, ue: str, ladder: list[Step], as_msrp: Address,
                    own_path: str, as_path: str) -> None:
    """Seed 001's MSRP ladder on one connection with the AS's MSRP endpoint (the
    caller connects to its listening port, the AS connects to the callee's), with
    To-Path / From-Path from the SDP and one 200 per SEND (same transaction id)."""
    wires = rec.of(ue, "msrp")
    assert steps(wires) == ladder
    assert len({(w.local, w.peer) for w in wires}) == 1
    if ue == "alice":  # setup:active towards the AS's setup:passive
        assert_peers(wires, as_msrp)
    else:              # the AS is active on its far leg
        assert {w.peer[0] for w in wires} == {as_msrp[0]}
        assert all(f":{w.local[1]}/" in own_path for w in wires)
    for wire in wires:
        message = wire.msrp
        to, frm = (as_path, own_path) if wire.direction == "out" else (own_path, as_path)
        assert [str(u) for u in message.to_path] == [to]
        assert [str(u) for u in message.from_path] == [frm]
    requests = [w.msrp for w in wires if isinstance(w.msrp, MsrpRequest)]
    responses = [w.msrp for w in wires if isinstance(w.msrp, MsrpResponse)]
    assert sorted(r.transaction_id for r in requests) == \
        sorted(r.transaction_id for r in responses)
    empty = requests[0]
    assert empty.message_id and empty.content_type is None and not empty.body


def check_chat_bodies(rec: Recorder, run_: ChatRun) -> None:
    """Hello and hi in CPIM with IMDN requests; the delivery IMDNs; isComposing."""
    hello = rec.first("alice", "msrp", "out", "SEND text").msrp
    assert hello.content_type == "message/cpim"
    assert_cpim_text(hello.body, "Hello", run_.hello, "positive-delivery, display")
    assert rec.first("bob", "msrp", "in", "SEND text").msrp.body == hello.body
    note = rec.first("alice", "msrp", "in", "SEND imdn").msrp
    assert_imdn(note.body, run_.hello, DispositionType.DELIVERY, ImdnStatus.DELIVERED)
    typing = rec.first("alice", "msrp", "in", "SEND iscomposing").msrp
    assert typing.content_type == "application/im-iscomposing+xml"
    assert parse_iscomposing(typing.body).state.value == "active"
    hi = rec.all("alice", "msrp", "in", "SEND text")[0].msrp
    assert_cpim_text(hi.body, "hi", run_.reply, "positive-delivery, display", BOB, ALICE)
    ours = rec.first("alice", "msrp", "out", "SEND imdn").msrp
    assert_imdn(ours.body, run_.reply, DispositionType.DELIVERY, ImdnStatus.DELIVERED)
    assert rec.first("bob", "msrp", "in", "SEND imdn").msrp.body == ours.body


# -- 003: pager mode with delivery and display notifications ---------------------------------

PAGER_TEXT = "123456789abcdef"


@dataclass
class PagerRun:
    message_id: str = ""
    notes: list[Notification] = field(default_factory=list)
    received: list[MessageReceived] = field(default_factory=list)


async def pager_scenario(seed: Seed, out: PagerRun) -> None:
    alice, bob = seed.alice, seed.bob
    out.message_id = await alice.send_message("bob", PAGER_TEXT, display=True)
    got = await bob.wait_event(MessageReceived, WAIT)
    assert isinstance(got, MessageReceived)
    out.received.append(got)
    assert await alice.wait_status(out.message_id, timeout=WAIT) is MessageStatus.DELIVERED
    out.notes.append(await alice.wait_event(Notification, WAIT))  # type: ignore[arg-type]
    assert await bob.mark_displayed(out.message_id)
    assert await alice.wait_status(out.message_id, MessageStatus.DISPLAYED, WAIT) is \
        MessageStatus.DISPLAYED
    out.notes.append(await alice.wait_event(Notification, WAIT))  # type: ignore[arg-type]


def test_seed_003_pager_with_delivery_and_display(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    result = PagerRun()
    pcscf: list[Address] = []

    async def scenario(seed: Seed) -> None:
        pcscf.append(seed.pcscf)
        await pager_scenario(seed, result)
    rec = run(tmp_path, monkeypatch, scenario)

    # 1) MESSAGE -> 2) 200, then 3)/5) the delivery and display IMDNs in, each 200ed
    alice = [w for w in rec.of("alice", "sip") if not _optional_trying(w)]
    assert steps(alice) == [("out", "MESSAGE"), ("in", "200 MESSAGE"), ("in", "MESSAGE"),
                            ("out", "200 MESSAGE"), ("in", "MESSAGE"), ("out", "200 MESSAGE")]
    bob = [w for w in rec.of("bob", "sip") if not _optional_trying(w)]
    assert steps(bob) == [("in", "MESSAGE"), ("out", "200 MESSAGE"), ("out", "MESSAGE"),
                          ("in", "200 MESSAGE"), ("out", "MESSAGE"), ("in", "200 MESSAGE")]
    assert_peers(alice + bob, pcscf[0])
    assert len(rec.call_ids("alice")) == len(rec.call_ids("bob")) == 3
    for ue in ("alice", "bob"):  # each response answers the request before it
        wires = [w.sip for w in (alice if ue == "alice" else bob)]
        for request, response in zip(wires[::2], wires[1::2]):
            assert request.call_id == response.call_id
            assert response.to.tag  # type: ignore[union-attr]
    check_pager_message(alice[0].sip, bob[0].sip, result)
    check_pager_imdns(alice, bob, result)


def check_pager_message(sent: Request | Response, got: Request | Response,
                        run_: PagerRun) -> None:
    assert isinstance(sent, Request) and isinstance(got, Request)
    assert str(sent.uri) == BOB
    assert_cpm_request(sent, cpm.CpmService.MSG)
    assert sent.content_type is not None and sent.content_type.mime == "message/cpim"
    assert len(sent.body) <= cpm.CPIM_PAGER_LIMIT
    assert_cpim_text(sent.body, PAGER_TEXT, run_.message_id,
                     "positive-delivery, negative-delivery, display")
    # the terminating side: asserted identity from the core, CPM headers and body kept
    assert got.header("P-Asserted-Identity") == f"<{ALICE}>"
    for name in ("Conversation-ID", "Contribution-ID", "Accept-Contact"):
        assert got.header(name) == sent.header(name)
    assert got.body == sent.body
    (received,) = run_.received
    assert (received.sender, received.text, received.message_id, received.mode) == \
        (ALICE, PAGER_TEXT, run_.message_id, "pager")


def check_pager_imdns(alice: list[Wire], bob: list[Wire], run_: PagerRun) -> None:
    """IMDNs as SIP MESSAGE (seed 003 steps 3 and 5): CPIM with Content-Disposition
    notification, to the sender, in the same conversation."""
    conversation = alice[0].sip.header("Conversation-ID")
    expected = [(DispositionType.DELIVERY, ImdnStatus.DELIVERED),
                (DispositionType.DISPLAY, ImdnStatus.DISPLAYED)]
    for (sent, got), (disposition, status) in zip([(bob[2], alice[2]), (bob[4], alice[4])],
                                                  expected):
        out, inn = sent.sip, got.sip
        assert isinstance(out, Request) and isinstance(inn, Request)
        assert str(out.uri) == ALICE and out.header("Conversation-ID") == conversation
        assert out.content_type is not None and out.content_type.mime == "message/cpim"
        assert_imdn(out.body, run_.message_id, disposition, status)
        assert inn.body == out.body and inn.header("P-Asserted-Identity") == f"<{BOB}>"
    assert [(n.message_id, n.notification, n.status, n.sender) for n in run_.notes] == \
        [(run_.message_id, "delivery", "delivered", BOB),
         (run_.message_id, "display", "displayed", BOB)]


# -- 003: large message mode ---------------------------------------------------------------------

# 1520 bytes: over the 1300-byte pager limit, and the CPIM still fits one 2048-byte
# MSRP chunk - "one SEND" as in the seed
LARGE_TEXT = "large message mode " * 80


@dataclass
class LargeRun:
    pager_id: str = ""
    large_id: str = ""
    received: list[MessageReceived] = field(default_factory=list)


async def large_scenario(seed: Seed, out: LargeRun) -> None:
    alice, bob = seed.alice, seed.bob
    out.pager_id = await alice.send_message("bob", "short")
    out.received.append(await bob.wait_event(MessageReceived, WAIT))  # type: ignore[arg-type]
    assert await alice.wait_status(out.pager_id, timeout=WAIT) is MessageStatus.DELIVERED
    out.large_id = await alice.send_message("bob", LARGE_TEXT)
    out.received.append(await bob.wait_event(MessageReceived, WAIT))  # type: ignore[arg-type]
    assert await alice.wait_status(out.large_id, timeout=WAIT) is MessageStatus.DELIVERED
    # bob's side of the session ends with the AS's BYE
    for _ in range(100):
        if any(w.step == ("in", "BYE") for w in seed.rec.of("bob", "sip")):
            break
        await asyncio.sleep(0.05)


def test_seed_003_large_message_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = LargeRun()
    addresses: dict[str, Address] = {}

    async def scenario(seed: Seed) -> None:
        addresses.update(pcscf=seed.pcscf, as_msrp=seed.as_msrp)
        await large_scenario(seed, result)
    rec = run(tmp_path, monkeypatch, scenario)

    (pager_call,) = rec.calls_from("alice", ("out", "MESSAGE"))
    (large_call,) = rec.calls_from("alice", ("out", "INVITE"))
    assert len(rec.calls_from("alice", ("in", "MESSAGE"))) == 2  # the delivery IMDNs
    ladder = rec.dialog("alice", large_call)
    assert steps(ladder) == INVITE_LADDER_CALLER + BYE_SENT
    assert_peers(ladder, addresses["pcscf"])
    alice_path, as_near = check_large_invite(ladder)
    (bob_call,) = rec.calls_from("bob", ("in", "INVITE"))
    bob_ladder = rec.dialog("bob", bob_call)
    assert steps(bob_ladder) == INVITE_LADDER_CALLEE + BYE_RECEIVED
    bob_path, as_far = check_large_far_leg(bob_ladder)
    # MSRP: the binding SEND, then the one SEND of the CPIM; nothing comes back but 200s
    one_send = [("out", "SEND empty"), ("in", "200"), ("out", "SEND text"), ("in", "200")]
    check_chat_msrp(rec, "alice", one_send, addresses["as_msrp"], alice_path, as_near)
    check_chat_msrp(rec, "bob", [("in" if d == "out" else "out", label) for d, label in one_send],
                    addresses["as_msrp"], bob_path, as_far)
    check_same_as_pager(rec, result, pager_call)


def check_large_invite(ladder: list[Wire]) -> tuple[str, str]:
    invite, ok = ladder[0].sip, ladder[3].sip
    assert isinstance(invite, Request) and isinstance(ok, Response)
    assert_cpm_request(invite, cpm.CpmService.LARGEMSG)
    offer = sdp_of(invite)
    alice_path = assert_offer(offer, Direction.SENDONLY, ["message/cpim"], ["text/plain"])
    selector = msrp_line(offer).file_selector  # seed 003: file-selector:size only
    assert selector is not None and selector.size is not None and selector.name is None
    as_path = assert_answer(sdp_of(ok), Direction.RECVONLY)
    return alice_path, as_path


def check_large_far_leg(ladder: list[Wire]) -> tuple[str, str]:
    invite, ok = ladder[0].sip, ladder[1].sip
    assert isinstance(invite, Request) and isinstance(ok, Response)
    assert invite.header("Accept-Contact") == \
        f'*;+g.3gpp.icsi-ref="{cpm.CpmService.LARGEMSG.escaped}"'
    offer = sdp_of(invite)
    as_path = assert_offer(offer, Direction.SENDONLY, ["message/cpim"], ["text/plain"])
    bob_path = assert_answer(sdp_of(ok), Direction.RECVONLY)
    return bob_path, as_path


def check_same_as_pager(rec: Recorder, run_: LargeRun, pager_call: str) -> None:
    """Bob gets the large message as he got the pager one: the same CPIM headers,
    the same event (but the mode), the same delivery notification back."""
    pager_body = next(w.sip.body for w in rec.dialog("bob", _bob_call(rec, pager_call))
                      if w.step == ("in", "MESSAGE"))
    large = rec.first("bob", "msrp", "in", "SEND text").msrp
    assert isinstance(large, MsrpRequest) and large.content_type == "message/cpim"
    large_body = large.body
    assert str(large.byte_range) == f"1-{len(large_body)}/{len(large_body)}"
    assert large_body == rec.first("alice", "msrp", "out", "SEND text").msrp.body
    assert_cpim_text(pager_body, "short", run_.pager_id, "positive-delivery, negative-delivery")
    assert_cpim_text(large_body, LARGE_TEXT, run_.large_id,  # processing: "stored" if kept
                     "positive-delivery, negative-delivery, processing")
    assert len(large_body) > cpm.CPIM_PAGER_LIMIT
    names = [[h.name for h in cpim_of(b).headers] for b in (pager_body, large_body)]
    assert names[0] == names[1]
    pager, large = run_.received
    assert (pager.mode, large.mode) == ("pager", "large")
    for event, mid, text in ((pager, run_.pager_id, "short"), (large, run_.large_id, LARGE_TEXT)):
        assert (event.sender, event.recipient, event.text, event.message_id) == \
            (ALICE, BOB, text, mid)
        assert event.content_type == pager.content_type and event.conversation_id
    imdns = [w for w in rec.of("bob", "sip") if w.step == ("out", "MESSAGE")]
    for wire, mid in zip(imdns, (run_.pager_id, run_.large_id)):
        assert_imdn(wire.sip.body, mid, DispositionType.DELIVERY, ImdnStatus.DELIVERED)
    assert len(imdns) == 2


def _bob_call(rec: Recorder, alice_call: str) -> str:
    """Bob's Call-ID for the pager MESSAGE alice sent with ``alice_call``'s body."""
    body = rec.dialog("alice", alice_call)[0].sip.body
    return next(w.sip.call_id for w in rec.of("bob", "sip")
                if w.step == ("in", "MESSAGE") and w.sip.body == body)
