"""Group chat from the client's side (ue/group.py) through the real IMS core.

The focus here is a small stand-in built from our own SIP, event and MSRP
layers on the conference AS's address (the I-CSCF finds it by the HSS PSI
query, TS 24.247 A.5.1): it answers the factory and conference URIs, serves
``Event: conference`` with a full then partial conference-info and switches
every MSRP message to the other participants unchanged (CPIM From = the
original sender); a factory INVITE's members get an INVITE from it (A.5.2:
to the I-CSCF, Contact with isfocus, Referred-By the creator). It stands in for
requests that need no in-dialog routing to a PSI; test_ue_group_focus.py has the
flows and the CLI through the real conference AS.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TypeVar

import pytest

from imsbox.config import Config, load_config
from imsbox.content import (
    CPIM,
    RESOURCE_LISTS,
    CpimMessage,
    parse_cpim,
    parse_resource_lists,
)
from imsbox.content.conference_info import (
    ConferenceInfo,
    ElementState,
    Endpoint,
    EndpointStatus,
    User,
    Users,
)
from imsbox.ims.provisioning import add_user
from imsbox.msrp import MsrpEndpoint, MsrpSession, ReceivedMessage
from imsbox.msrp import Setup as MsrpSetup
from imsbox.rcs.cpm import CpmService, accept_contact
from imsbox.rcs.offer import msrp_media, offer_parts
from imsbox.sdp import (
    Connection,
    LocalCapabilities,
    MediaDescription,
    Origin,
    SessionDescription,
    Setup,
    answer,
    parse,
)
from imsbox.sip.endpoint import SipEndpoint
from imsbox.sip.message import Request
from imsbox.sip.ua.dialog import Dialog, build_request
from imsbox.sip.ua.events import EventPackageRegistry, NotifierSubscription
from imsbox.sip.ua.invite import InviteConfig
from imsbox.sip.ua.refer import EventAgent, IncomingRefer
from imsbox.sip.uri import SipUri
from imsbox.sip.ua.useragent import Call, UserAgent
from imsbox.store import open_store
from imsbox.ue.client import (
    GroupJoined,
    GroupMessage,
    MessageStatus,
    Notification,
    ParticipantJoined,
    SendError,
)
from imsbox.ue.group import CONFERENCE_PACKAGE
from imsbox.ue.testing import FAST_TIMERS, write_loopback_config

from helpers import CORE_ROLES, DOMAIN, client, network_with

pytestmark = pytest.mark.timeout(40)
WAIT = 5.0
CONFERENCE = f"sip:conf-1@{DOMAIN}"
T = TypeVar("T")


def group_config(tmp_path: Path) -> Config:
    """Loopback config without iFCs (the messaging AS keeps out), three users."""
    path, _ = write_loopback_config(tmp_path)
    path.write_text("ifc = []\n" + path.read_text())
    config = load_config(path)

    async def in_store() -> None:
        async with open_store(config.store_location) as store:
            for name in ("alice", "bob", "carol"):
                await add_user(store, DOMAIN, name, f"{name}-secret")
    asyncio.run(in_store())
    return config


class StandInFocus:
    """conf-factory and conf-1 on the conference AS's address (see the module doc)."""

    def __init__(self, config: Config) -> None:
        node = config.conference_as
        self.host, self.port = node.host, node.port
        self.endpoint = SipEndpoint(FAST_TIMERS)
        self.msrp = MsrpEndpoint(node.host, 0)
        self.initial: list[Request] = []            # INVITEs and SUBSCRIBEs that reached us
        self.messages: asyncio.Queue[tuple[str, CpimMessage]] = asyncio.Queue()
        self.sessions: dict[str, MsrpSession] = {}  # participant -> MSRP session
        self.versions: dict[int, int] = {}          # id(subscription) -> last version sent
        self.invited: asyncio.Queue[tuple[str, int]] = asyncio.Queue()  # member, final status
        self.icscf = config.icscf.uri
        self.refers: list[Request] = []             # REFERs in the dialogs, as received

    async def start(self) -> StandInFocus:
        await self.endpoint.listen("udp", self.host, self.port)
        await self.endpoint.listen("tcp", self.host, self.port)
        await self.msrp.start()
        config = InviteConfig(t1=FAST_TIMERS.t1, t2=FAST_TIMERS.t2, session_timer=None,
                              extensions=("recipient-list-invite",))  # RFC 5366
        self.ua = UserAgent(self.endpoint, f"<{CONFERENCE}>", CONFERENCE, config=config,
                            on_call=self._on_call)
        self.agent = EventAgent(self.ua, EventPackageRegistry([CONFERENCE_PACKAGE]),
                                state_of=self._full, on_subscription=self._subscribed,
                                on_refer=self._refer)
        return self

    async def _refer(self, refer: IncomingRefer) -> None:
        """RFC 4579 5.5: Refer-To a user invites them, with method=BYE removes them;
        the outcome goes back as the NOTIFY sipfrag."""
        self.refers.append(refer.request)
        target = refer.target
        params = dict(target.params) if isinstance(target, SipUri) else {}
        if params.get("method", "").upper() == "BYE":
            self.agent.report(refer, 200)
            return
        inviter = str(refer.referred_by.address.uri) if refer.referred_by else CONFERENCE
        await self.invite(str(target), inviter)
        self.agent.report(refer, 200)

    async def close(self) -> None:
        self.agent.close()
        await self.ua.close()
        await self.msrp.close()
        await self.endpoint.close()

    # -- INVITE: factory or conference URI -------------------------------------------------
    async def _on_call(self, call: Call) -> None:
        request = call.request
        self.initial.append(request)
        user = getattr(request.uri, "user", "")
        if user not in ("conf-factory", "conf-1"):
            call.reject(404, "Conference Not Found")
            return
        sdp_body, _ = offer_parts(request)
        offer = parse(sdp_body or b"")
        theirs = msrp_media(offer)
        assert theirs is not None
        session = self.msrp.create_session()
        caps = LocalCapabilities(address=self.host, msrp_path=[str(session.local_uri)],
                                 accept_types=["message/cpim"], setup=Setup.PASSIVE,
                                 msrp_cema=True)
        session.set_remote_path(theirs.path or [])
        session.setup = MsrpSetup.PASSIVE
        call.accept(bytes(answer(offer, caps)))
        await asyncio.wait_for(session.start(), WAIT)
        self._joined(str(request.from_.uri), session)
        if user == "conf-factory":
            _, multipart = offer_parts(request)
            listing = multipart.find(RESOURCE_LISTS) if multipart is not None else None
            assert listing is not None
            for entry in parse_resource_lists(listing.body).all_entries():
                self.endpoint.spawn(self.invite(entry.uri, str(request.from_.uri)))

    def _joined(self, peer: str, session: MsrpSession) -> None:
        session.on_message = lambda message: self._switch(peer, message)
        self.sessions[peer] = session
        for sub in self.agent.notifier.subscriptions:
            if sub.event.package == "conference":
                self._notify(sub, peer)

    async def invite(self, member: str, inviter: str) -> None:
        """A.5.2: INVITE to the I-CSCF, Contact <conference>;isfocus, Referred-By."""
        session = self.msrp.create_session(setup=MsrpSetup.ACTIVE)
        offer = SessionDescription(origin=Origin("-", "1", "1", "IN", "IP4", self.host),
                                   session_name="-",
                                   connection=Connection("IN", "IP4", self.host))
        media = MediaDescription("message", self.msrp.port, "TCP/MSRP", ["*"])
        media.accept_types, media.setup = ["message/cpim"], Setup.ACTIVE
        media.path, media.msrp_cema = [str(session.local_uri)], True
        offer.media.append(media)
        request = build_request("INVITE", member, f"<{CONFERENCE}>", f"<{member}>",
                                route=[f"<{self.icscf};lr>"], body=bytes(offer),
                                content_type="application/sdp",
                                headers=[("Referred-By", f"<{inviter}>"),
                                         ("Subject", "Lunch"),
                                         ("Accept-Contact", accept_contact(CpmService.SESSION))])
        request.set_header("Contact", f"<{CONFERENCE}>;isfocus")
        final = await self.endpoint.request(request).final()
        self.invited.put_nowait((member, final.status))
        if final.status != 200:
            return
        self.endpoint.send_stateless(Dialog.from_uac(request, final).create_ack(
            request.cseq.seq))
        theirs = msrp_media(parse(final.body))
        assert theirs is not None
        session.set_remote_path(theirs.path or [])
        await asyncio.wait_for(session.start(), WAIT)
        self._joined(member, session)

    def _switch(self, sender: str, message: ReceivedMessage) -> None:
        if (message.content_type or "").startswith(CPIM):
            self.messages.put_nowait((sender, parse_cpim(message.body)))
        for peer, session in self.sessions.items():
            if peer != sender:
                self.endpoint.spawn(session.send_message(message.content_type or CPIM,
                                                         message.body))

    # -- the conference event package ---------------------------------------------------
    def _subscribed(self, sub: NotifierSubscription) -> None:
        self.initial.append(sub.request)

    def _full(self, sub: NotifierSubscription) -> bytes:
        self.versions[id(sub)] = 1
        users = [_connected(p) for p in self.sessions]
        return ConferenceInfo(CONFERENCE, version=1, users=Users(users)).to_xml()

    def _notify(self, sub: NotifierSubscription, joined: str) -> None:
        version = self.versions[id(sub)] = self.versions.get(id(sub), 0) + 1
        user = _connected(joined)
        user.state = ElementState.FULL
        partial = ConferenceInfo(CONFERENCE, state=ElementState.PARTIAL, version=version,
                                 users=Users([user], state=ElementState.PARTIAL))
        self.agent.notify(sub, partial.to_xml())


def _connected(entity: str) -> User:
    return User(entity=entity, endpoints=[Endpoint(entity=entity,
                                                   status=EndpointStatus.CONNECTED)])


def run(scenario: object, limit: float = 30) -> None:
    asyncio.run(asyncio.wait_for(scenario(), limit))  # type: ignore[operator]


def test_create_join_messages_and_participants(tmp_path: Path) -> None:
    config = group_config(tmp_path)
    alice, bob = client(config, "alice"), client(config, "bob")

    async def scenario() -> None:
        focus = await StandInFocus(config).start()
        try:
            async with network_with(config, alice, bob, roles=CORE_ROLES):
                # carol is offline, dave unknown: the focus's invitations fail
                group = await alice.create_group(["carol", "sip:dave@ims.test"], "Lunch")
                create = focus.initial[0]
                assert str(create.uri) == f"sip:conf-factory@{DOMAIN}"
                assert create.header("Require") == "recipient-list-invite"
                assert create.header("Subject") == "Lunch"
                assert "oma.cpm.session" in (create.header("Accept-Contact") or "")
                assert create.header("Conversation-ID") and create.header("Contribution-ID")
                assert "sip:alice@ims.test" in (create.header("P-Asserted-Identity") or "")
                _, multipart = offer_parts(create)
                assert multipart is not None
                listing = multipart.find("application/resource-lists+xml")
                assert listing is not None
                assert listing.get("Content-Disposition") == "recipient-list"
                assert [e.uri for e in parse_resource_lists(listing.body).all_entries()] == \
                    ["sip:carol@ims.test", "sip:dave@ims.test"]
                assert group.conference == CONFERENCE   # the focus's Contact

                joined = await alice.wait_event(GroupJoined, WAIT)
                assert isinstance(joined, GroupJoined)
                assert joined.conference == CONFERENCE and joined.how == "created"
                assert joined.participants == ["sip:alice@ims.test"]
                subscribe = focus.initial[1]
                assert subscribe.method == "SUBSCRIBE" and str(subscribe.uri) == CONFERENCE
                assert subscribe.header("Event") == "conference"

                bobs = await bob.join_group(CONFERENCE)
                assert str(focus.initial[2].uri) == CONFERENCE
                assert focus.initial[2].header("Require") is None
                seen = await bob.wait_event(GroupJoined, WAIT)
                assert isinstance(seen, GroupJoined) and seen.how == "joined"
                assert seen.participants == ["sip:alice@ims.test", "sip:bob@ims.test"]
                came = await alice.wait_event(ParticipantJoined, WAIT)
                assert isinstance(came, ParticipantJoined)
                assert came.sender == "sip:bob@ims.test" and came.conference == CONFERENCE

                message_id = await group.send("hello all")
                sender, cpim = await asyncio.wait_for(focus.messages.get(), WAIT)
                assert sender == "sip:alice@ims.test"
                assert cpim.sender is not None and cpim.sender.uri == "sip:alice@ims.test"
                assert [r.uri for r in cpim.recipients] == [CONFERENCE]
                got = await bob.wait_event(GroupMessage, WAIT)
                assert isinstance(got, GroupMessage)
                assert (got.sender, got.text, got.message_id, got.conference) == \
                    ("sip:alice@ims.test", "hello all", message_id, CONFERENCE)
                # bob's delivery notification goes back in his session, To alice
                _, imdn = await asyncio.wait_for(focus.messages.get(), WAIT)
                assert [r.uri for r in imdn.recipients] == ["sip:alice@ims.test"]
                note = await alice.wait_event(Notification, WAIT)
                assert isinstance(note, Notification) and note.sender == "sip:bob@ims.test"
                assert await alice.wait_status(message_id, MessageStatus.DELIVERED, WAIT) \
                    is MessageStatus.DELIVERED
                assert bobs.id in bob.groups and group.id in alice.groups
        finally:
            await focus.close()

    run(scenario)


def test_unknown_conference_is_a_404(tmp_path: Path) -> None:
    config = group_config(tmp_path)
    alice = client(config, "alice")

    async def scenario() -> None:
        focus = await StandInFocus(config).start()
        try:
            async with network_with(config, alice, roles=CORE_ROLES):
                with pytest.raises(SendError) as refused:
                    await alice.join_group("sip:conf-gone@ims.test")
                assert refused.value.status == 404
                with pytest.raises(SendError, match="at least one member"):
                    await alice.create_group([])
                assert [str(r.uri) for r in focus.initial] == ["sip:conf-gone@ims.test"]
        finally:
            await focus.close()

    run(scenario)


def test_invitations_from_the_focus_are_accepted_and_messages_fan_out(tmp_path: Path) -> None:
    """Three clients: alice creates with bob and carol, the focus invites them
    (Referred-By alice), each joins; carol's message reaches alice and bob from carol."""
    config = group_config(tmp_path)
    alice, bob, carol = (client(config, n) for n in ("alice", "bob", "carol"))

    async def scenario() -> None:
        focus = await StandInFocus(config).start()
        try:
            async with network_with(config, alice, bob, carol, roles=CORE_ROLES):
                await alice.create_group(["bob", "carol"], "Lunch")
                invited = {await asyncio.wait_for(focus.invited.get(), WAIT) for _ in range(2)}
                assert invited == {("sip:bob@ims.test", 200), ("sip:carol@ims.test", 200)}
                for ue in (bob, carol):
                    joined = await ue.wait_event(GroupJoined, WAIT)
                    assert isinstance(joined, GroupJoined)
                    assert (joined.how, joined.sender, joined.conference, joined.subject) == \
                        ("invited", "sip:alice@ims.test", CONFERENCE, "Lunch")
                    assert "sip:alice@ims.test" in joined.participants
                (carols,) = carol.groups.values()
                await carols.send("pizza?")
                for ue in (alice, bob):
                    got = await ue.wait_event(GroupMessage, WAIT)
                    assert isinstance(got, GroupMessage)
                    assert (got.sender, got.text) == ("sip:carol@ims.test", "pizza?")
        finally:
            await focus.close()

    run(scenario)


def test_invite_and_remove_by_refer_in_the_dialog(tmp_path: Path) -> None:
    """alice REFERs the focus in her INVITE dialog: Refer-To bob invites him (202,
    NOTIFY sipfrag 200); Refer-To bob;method=BYE asks for his removal."""
    config = group_config(tmp_path)
    alice, bob = client(config, "alice"), client(config, "bob")

    async def scenario() -> None:
        focus = await StandInFocus(config).start()
        try:
            async with network_with(config, alice, bob, roles=CORE_ROLES):
                group = await alice.create_group(["carol"])     # carol is offline
                added = await group.invite("sip:bob@ims.test")
                assert (added.action, added.status, added.result, added.ok) == \
                    ("invite", 202, 200, True)
                refer = focus.refers[0]
                assert refer.method == "REFER" and str(refer.uri) == CONFERENCE
                assert refer.to.tag == group.call.session.dialog.id.remote_tag  # in dialog
                assert refer.header("Refer-To") == "<sip:bob@ims.test>"
                assert refer.header("Referred-By") == "<sip:alice@ims.test>"
                joined = await bob.wait_event(GroupJoined, WAIT)
                assert isinstance(joined, GroupJoined)
                assert (joined.how, joined.sender) == ("invited", "sip:alice@ims.test")

                removed = await group.remove("sip:bob@ims.test")
                assert (removed.action, removed.status, removed.ok) == ("remove", 202, True)
                assert focus.refers[1].header("Refer-To") == "<sip:bob@ims.test;method=BYE>"
        finally:
            await focus.close()

    run(scenario)
