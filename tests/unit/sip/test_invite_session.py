"""InviteSession (RFC 3261 13-15, RFC 3262, 3311, 4028) on a virtual clock.

Two sessions are wired back to back with no transaction layer in between:
what one emits, the other receives, unless the test drops it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from imsbox.sip import Request, Response, SessionExpires
from imsbox.sip.headers import NameAddr
from imsbox.sip.ua.dialog import build_request
from imsbox.sip.ua.invite import (
    SDP, Established, InviteConfig, InviteSession, InviteState, Reliability,
    SendAck, SendRequest, SendResponse, SessionError, SessionTimerConfig,
    StaticOfferAnswer, Terminated, options_response,
)

Message = Request | Response
OFFER = b"v=0\r\no=alice 1 1 IN IP4 10.0.0.1\r\n"
ANSWER = b"v=0\r\no=bob 1 1 IN IP4 10.0.0.2\r\n"


class Wire:
    """Back-to-back sessions: ``a`` calls ``b``; ``drop`` filters messages."""

    def __init__(self, a_config: InviteConfig | None = None,
                 b_config: InviteConfig | None = None, offer: bytes = OFFER,
                 headers: list[tuple[str, str]] | None = None,
                 contact: str = "<sip:alice@10.0.0.1>") -> None:
        self.now = 0.0
        self.b_config = b_config or InviteConfig()
        self.a_oa = StaticOfferAnswer(OFFER)
        self.b_oa = StaticOfferAnswer(ANSWER)
        self.sent: list[tuple[str, Message]] = []
        self.drop: Callable[[str, Message], bool] = lambda who, m: False
        self.terminated: dict[str, Terminated] = {}
        self.established: set[str] = set()
        invite = build_request("INVITE", "sip:bob@b.example", "<sip:alice@a.example>",
                               "<sip:bob@b.example>", contact=NameAddr.parse(contact),
                               headers=headers or [], body=offer,
                               content_type=SDP if offer else None)
        self.a = InviteSession.outgoing(invite, self.now, a_config, self.a_oa,
                                        rng=random.Random(1))
        self.b: InviteSession | None = None
        self.pump()

    def peer(self, who: str) -> InviteSession | None:
        return self.b if who == "a" else self.a

    def pump(self) -> None:
        while True:
            batch = [("a", e) for e in self.a.events()]
            if self.b is not None:
                batch += [("b", e) for e in self.b.events()]
            if not batch:
                return
            for who, event in batch:
                self.deliver(who, event)

    def deliver(self, who: str, event: object) -> None:
        if isinstance(event, Terminated):
            self.terminated[who] = event
        if isinstance(event, Established):
            self.established.add(who)
        message: Message | None = None
        if isinstance(event, SendRequest):
            message = event.request
        elif isinstance(event, SendAck):
            message = event.ack
        elif isinstance(event, SendResponse):
            message = event.response
        if message is None:
            return
        self.sent.append((who, message))
        if self.drop(who, message):
            return
        peer = self.peer(who)
        if isinstance(message, Response):
            assert peer is not None
            peer.receive_response(message, self.now)
        elif message.method == "INVITE" and not message.to.tag:
            if self.b is None or message is not self.b.invite:
                self.b = InviteSession.incoming(message, self.now, self.b_config, self.b_oa,
                                                local_contact=message.uri,
                                                rng=random.Random(2))
        elif message.method == "CANCEL":
            assert peer is not None
            peer.cancel_received(self.now)
        else:
            assert peer is not None
            peer.receive_request(message, self.now)

    def advance(self, until: float) -> None:
        """Run both sessions' timers up to ``until``."""
        while True:
            deadlines = [d for d in (self.a.next_deadline(),
                                     self.b.next_deadline() if self.b else None)
                         if d is not None and d <= until]
            if not deadlines:
                self.now = until
                return
            self.now = max(self.now, min(deadlines))
            self.a.on_timer(self.now)
            if self.b is not None:
                self.b.on_timer(self.now)
            self.pump()

    def sent_by(self, who: str, kind: str) -> list[Message]:
        """Messages sent by ``who``: a method name, or a status like '200 INVITE'."""
        out = []
        for sender, m in self.sent:
            if sender != who:
                continue
            if isinstance(m, Request) and m.method == kind:
                out.append(m)
            if isinstance(m, Response) and f"{m.status} {m.cseq.method}" == kind:
                out.append(m)
        return out

    @property
    def uas(self) -> InviteSession:
        assert self.b is not None
        return self.b


def no_timer() -> InviteConfig:
    return InviteConfig(session_timer=None)


def test_basic_call_offer_answer_and_bye() -> None:
    w = Wire(no_timer(), no_timer())
    b = w.uas
    assert b.state is InviteState.INCOMING
    b.provisional(w.now, 180)
    w.pump()
    assert w.a.state is InviteState.EARLY and len(w.a.early) == 1
    b.accept(w.now)
    w.pump()
    assert w.a.state is InviteState.CONFIRMED and b.state is InviteState.CONFIRMED
    assert w.established == {"a", "b"}
    assert w.a.remote_sdp == ANSWER and b.remote_sdp == OFFER
    ok = w.sent_by("b", "200 INVITE")[0]
    assert ok.body == ANSWER and ok.contact
    ack = w.sent_by("a", "ACK")[0]
    assert ack.cseq.seq == w.a.invite.cseq.seq
    assert w.a.dialog is not None and b.dialog is not None
    assert w.a.dialog.id.local_tag == b.dialog.id.remote_tag
    w.a.bye(w.now)
    w.pump()
    assert w.sent_by("b", "200 BYE")
    assert w.a.terminated and b.terminated
    assert w.terminated["b"].reason == "remote BYE"


def test_offerless_invite_gets_offer_in_2xx_and_answer_in_ack() -> None:
    w = Wire(no_timer(), no_timer(), offer=b"")
    w.uas.accept(w.now)
    w.pump()
    assert w.sent_by("b", "200 INVITE")[0].body == ANSWER
    ack = w.sent_by("a", "ACK")[0]
    assert ack.body == OFFER  # StaticOfferAnswer answers with its own SDP
    assert w.uas.remote_sdp == OFFER and w.a.remote_sdp == ANSWER


# -- reliable provisionals (RFC 3262) ------------------------------------------
def test_reliable_provisional_prack_and_deferred_2xx() -> None:
    w = Wire(no_timer(), no_timer())
    invite = w.a.invite
    assert "100rel" in invite.tokens("Supported")
    b = w.uas
    w.drop = lambda who, m: isinstance(m, Request) and m.method == "PRACK"
    b.provisional(w.now, 183, body=ANSWER)
    w.pump()
    p183 = w.sent_by("b", "183 INVITE")[0]
    assert "100rel" in p183.tokens("Require")
    rseq = int(p183.header("RSeq") or 0)
    prack = w.sent_by("a", "PRACK")[0]
    assert prack.header("RAck") == f"{rseq} {invite.cseq.seq} INVITE"
    assert w.a.remote_sdp == ANSWER  # the answer came reliably
    # 2xx must wait for the PRACK since the 1xx carried SDP
    b.accept(w.now)
    w.pump()
    assert not w.sent_by("b", "200 INVITE")
    # retransmission at T1, 2*T1 ...; the UAC does not PRACK them again
    w.advance(0.5)
    w.advance(1.5)
    assert len(w.sent_by("b", "183 INVITE")) == 3
    assert len(w.sent_by("a", "PRACK")) == 1
    w.drop = lambda who, m: False
    w.uas.receive_request(prack, w.now)  # the PRACK finally gets through
    w.pump()
    assert w.sent_by("b", "200 PRACK")
    assert w.sent_by("b", "200 INVITE")
    w.advance(10)
    assert len(w.sent_by("b", "183 INVITE")) == 3  # retransmission stopped
    assert w.a.state is InviteState.CONFIRMED


def test_prack_not_matching_gets_481_and_gives_up_after_64_t1() -> None:
    w = Wire(no_timer(), no_timer())
    w.drop = lambda who, m: isinstance(m, Request) and m.method == "PRACK"
    w.uas.provisional(w.now, 180)
    w.pump()
    prack = w.sent_by("a", "PRACK")[0].copy()
    rseq = int(w.sent_by("b", "180 INVITE")[0].header("RSeq") or 0)
    prack.set_header("RAck", f"{rseq + 5} {w.a.invite.cseq.seq} INVITE")
    prack.set_header("CSeq", f"{prack.cseq.seq + 1} PRACK")
    w.drop = lambda who, m: False
    w.uas.receive_request(prack, w.now)
    w.pump()
    assert w.sent_by("b", "481 PRACK")
    w.drop = lambda who, m: isinstance(m, Request) and m.method == "PRACK"
    w.advance(40)
    assert w.sent_by("b", "500 INVITE")  # RFC 3262 3: reject after 64*T1
    assert w.uas.terminated and w.a.terminated
    assert w.terminated["a"].status == 500


def test_prack_after_the_2xx_gets_200() -> None:
    """RFC 3262 3: a 2xx may go out while a reliable 1xx without SDP is unacknowledged;
    the UAS still answers that 1xx's PRACK 200 (pjsua2 drops the call on a 481)."""
    w = Wire(no_timer(), no_timer())
    w.drop = lambda who, m: isinstance(m, Request) and m.method == "PRACK"
    w.uas.provisional(w.now, 180)
    w.pump()
    prack = w.sent_by("a", "PRACK")[0]
    w.uas.accept(w.now)
    w.pump()
    assert w.sent_by("b", "200 INVITE")   # no SDP in the 180: the 2xx does not wait
    w.drop = lambda who, m: False
    w.uas.receive_request(prack, w.now)
    w.pump()
    assert w.sent_by("b", "200 PRACK") and not w.sent_by("b", "481 PRACK")
    again = prack.copy()
    again.set_header("CSeq", f"{prack.cseq.seq + 1} PRACK")
    w.uas.receive_request(again, w.now)   # only once: a second one matches nothing
    w.pump()
    assert w.sent_by("b", "481 PRACK")
    assert not w.uas.terminated


def test_second_reliable_provisional_waits_for_first_prack() -> None:
    w = Wire(no_timer(), no_timer())
    w.drop = lambda who, m: isinstance(m, Request) and m.method == "PRACK"
    w.uas.provisional(w.now, 180)
    w.uas.provisional(w.now, 183)
    w.pump()
    assert w.sent_by("b", "180 INVITE") and not w.sent_by("b", "183 INVITE")
    w.drop = lambda who, m: False
    w.uas.receive_request(w.sent_by("a", "PRACK")[0], w.now)
    w.pump()
    p183 = w.sent_by("b", "183 INVITE")[0]
    p180 = w.sent_by("b", "180 INVITE")[0]
    assert int(p183.header("RSeq") or 0) == int(p180.header("RSeq") or 0) + 1
    assert len(w.sent_by("a", "PRACK")) == 2


def test_uac_drops_out_of_order_reliable_provisional() -> None:
    w = Wire(no_timer(), no_timer())
    w.uas.provisional(w.now, 180)
    w.pump()
    p180 = w.sent_by("b", "180 INVITE")[0]
    gap = p180.copy()
    gap.set_header("RSeq", str(int(p180.header("RSeq") or 0) + 2))
    w.a.receive_response(gap, w.now)
    w.a.receive_response(p180, w.now)  # retransmission
    w.pump()
    assert len(w.sent_by("a", "PRACK")) == 1


def test_required_100rel_without_support_gets_421() -> None:
    a_cfg = InviteConfig(reliable_provisionals=Reliability.NONE, session_timer=None)
    b_cfg = InviteConfig(reliable_provisionals=Reliability.REQUIRED, session_timer=None)
    w = Wire(a_cfg, b_cfg)
    response = w.sent_by("b", "421 INVITE")[0]
    assert response.header("Require") == "100rel"
    assert w.a.terminated


def test_unsupported_require_gets_420() -> None:
    w = Wire(no_timer(), no_timer(), headers=[("Require", "foo")])
    assert w.sent_by("b", "420 INVITE")[0].header("Unsupported") == "foo"


# -- 2xx retransmission (13.3.1.4) -----------------------------------------------
def test_2xx_retransmitted_until_ack_and_uac_reacks() -> None:
    w = Wire(no_timer(), no_timer())
    acks_dropped = 3
    def drop(who: str, m: Message) -> bool:
        nonlocal acks_dropped
        if isinstance(m, Request) and m.method == "ACK" and acks_dropped:
            acks_dropped -= 1
            return True
        return False
    w.drop = drop
    w.uas.accept(w.now)
    w.pump()
    assert w.uas.state is InviteState.CONNECTING
    w.advance(0.5)
    w.advance(1.5)
    times = []
    assert len(w.sent_by("b", "200 INVITE")) == 3
    w.advance(3.5)  # 4th 2xx at 3.5; its ACK gets through
    times.append(w.now)
    assert len(w.sent_by("b", "200 INVITE")) == 4
    assert len(w.sent_by("a", "ACK")) == 4  # one ACK per 2xx
    assert len({id(m) for m in w.sent_by("a", "ACK")}) == 1  # the same ACK resent
    assert w.uas.state is InviteState.CONFIRMED
    w.advance(30)
    assert len(w.sent_by("b", "200 INVITE")) == 4


def test_2xx_interval_capped_at_t2_and_bye_after_64_t1() -> None:
    w = Wire(no_timer(), no_timer())
    w.drop = lambda who, m: isinstance(m, Request) and m.method == "ACK"
    w.uas.accept(w.now)
    w.pump()
    w.advance(31.9)
    assert not w.sent_by("b", "BYE")
    # 0.5, 1.5, 3.5, 7.5, then every T2=4: 11.5 ... 31.5
    assert len(w.sent_by("b", "200 INVITE")) == 1 + 4 + 6
    w.advance(32.0)
    assert w.sent_by("b", "BYE")
    assert w.uas.terminated and w.a.terminated


# -- session timers (RFC 4028) -------------------------------------------------
def test_session_timer_negotiation_and_refresh_by_update() -> None:
    w = Wire(InviteConfig(session_timer=SessionTimerConfig(session_expires=120, min_se=90)),
             InviteConfig(session_timer=SessionTimerConfig(session_expires=1800, min_se=90)))
    invite = w.a.invite
    assert invite.header("Session-Expires") == "120" and invite.header("Min-SE") == "90"
    w.uas.accept(w.now)
    w.pump()
    ok = w.sent_by("b", "200 INVITE")[0]
    se = SessionExpires.parse(ok.header("Session-Expires") or "")
    assert se.delta == 120 and se.refresher == "uac"
    assert "timer" in ok.tokens("Require")
    assert w.a.timer is not None and w.a.timer.local_refresher
    assert w.uas.timer is not None and not w.uas.timer.local_refresher
    w.advance(59.9)
    assert not w.sent_by("a", "UPDATE")
    w.advance(60)
    update = w.sent_by("a", "UPDATE")[0]
    assert update.header("Session-Expires") == "120;refresher=uac"
    assert w.sent_by("b", "200 UPDATE")
    w.advance(200)  # refreshed at 60, 120, 180: never expires
    assert len(w.sent_by("a", "UPDATE")) == 3
    assert not w.a.terminated and not w.uas.terminated


def test_uas_chooses_refresher_when_uac_does_not_support_timer() -> None:
    w = Wire(no_timer(), InviteConfig(session_timer=SessionTimerConfig(session_expires=300)))
    w.uas.accept(w.now)
    w.pump()
    ok = w.sent_by("b", "200 INVITE")[0]
    assert ok.header("Session-Expires") == "300;refresher=uas"
    assert "timer" not in ok.tokens("Require")
    assert w.uas.timer is not None and w.uas.timer.local_refresher


def test_422_and_uac_retry_with_larger_interval() -> None:
    w = Wire(InviteConfig(session_timer=SessionTimerConfig(session_expires=100, min_se=90)),
             InviteConfig(session_timer=SessionTimerConfig(session_expires=1800, min_se=600)))
    rejected = w.sent_by("b", "422 INVITE")[0]
    assert rejected.header("Min-SE") == "600"
    retry = w.a.invite
    first = w.sent_by("a", "INVITE")[0]
    assert retry is not first
    assert retry.cseq.seq == first.cseq.seq + 1
    assert retry.header("Session-Expires") == "600" and retry.header("Min-SE") == "600"
    assert retry.from_.tag == first.from_.tag and retry.call_id == first.call_id
    assert not w.a.terminated
    w.uas.accept(w.now)
    w.pump()
    assert w.a.state is InviteState.CONFIRMED
    assert w.a.timer is not None and w.a.timer.interval == 600


def test_session_expires_without_refresh_sends_bye() -> None:
    w = Wire(InviteConfig(session_timer=SessionTimerConfig(session_expires=90, min_se=90,
                                                           refresher="uac")),
             InviteConfig(session_timer=SessionTimerConfig(min_se=90)))
    w.uas.accept(w.now)
    w.pump()
    w.drop = lambda who, m: isinstance(m, Request) and m.method == "UPDATE"
    w.advance(59.9)
    assert not w.uas.terminated
    w.advance(60.1)  # 90 - min(32, 30) = 60
    bye = w.sent_by("b", "BYE")
    assert bye and w.uas.terminated
    assert w.terminated["b"].reason == "session expired"


# -- re-INVITE, glare, UPDATE ----------------------------------------------------
def confirmed_call(**kw: object) -> Wire:
    w = Wire(no_timer(), no_timer(), **kw)  # type: ignore[arg-type]
    w.uas.accept(w.now)
    w.pump()
    assert w.a.state is InviteState.CONFIRMED and w.uas.state is InviteState.CONFIRMED
    return w


def test_reinvite_hold_passes_sdp_through() -> None:
    w = confirmed_call()
    hold = OFFER + b"a=sendonly\r\n"
    w.b_oa.sdp = ANSWER + b"a=recvonly\r\n"
    request = w.a.reinvite(w.now, hold)
    w.pump()
    assert request.cseq.seq == w.a.invite.cseq.seq + 1
    assert w.uas.remote_sdp == hold
    assert w.a.remote_sdp == ANSWER + b"a=recvonly\r\n"
    acks = w.sent_by("a", "ACK")
    assert acks[-1].cseq.seq == request.cseq.seq


def test_in_dialog_requests_and_their_2xx_keep_the_invites_feature_tags() -> None:
    """Seed 000/001: the Contact of a re-INVITE or UPDATE (and of the 2xx answering
    it) carries the same +g.3gpp.icsi-ref and +sip.instance as the initial INVITE's."""
    a_tags = ';+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"' \
             ';+sip.instance="<urn:uuid:a>"'
    b_tags = ';+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"' \
             ';+sip.instance="<urn:uuid:b>"'
    w = Wire(no_timer(), no_timer(), contact=f"<sip:alice@10.0.0.1>{a_tags}")
    w.uas.local_contact_params = b_tags
    w.uas.accept(w.now)
    w.pump()
    w.a.reinvite(w.now, OFFER + b"a=sendonly\r\n")
    w.pump()
    w.a.update(w.now, None)
    w.pump()
    w.uas.update(w.now, None)
    w.pump()
    w.uas.reinvite(w.now, ANSWER)
    w.pump()
    for who, tags, sent, answered in (("a", a_tags, 3, 2), ("b", b_tags, 2, 3)):
        requests = w.sent_by(who, "INVITE") + w.sent_by(who, "UPDATE")
        answers = w.sent_by(who, "200 INVITE") + w.sent_by(who, "200 UPDATE")
        assert (len(requests), len(answers)) == (sent, answered)
        for message in requests + answers:
            assert (message.headers.get("Contact") or "").endswith(tags), message


def test_glare_491_and_random_backoff() -> None:
    w = confirmed_call()
    w.a.reinvite(w.now, OFFER + b"a=sendonly\r\n")
    w.uas.reinvite(w.now, ANSWER + b"a=sendonly\r\n")
    w.pump()
    assert w.sent_by("a", "491 INVITE") and w.sent_by("b", "491 INVITE")
    a_retry, b_retry = w.a._timers["glare"], w.uas._timers["glare"]
    assert 2.1 <= a_retry <= 4.0   # a owns the Call-ID (it was the UAC)
    assert 0.0 <= b_retry <= 2.0
    with pytest.raises(SessionError):
        w.a.reinvite(w.now, OFFER)  # still backing off
    w.advance(4.0)
    assert len(w.sent_by("b", "INVITE")) == 2
    # b retried first and won; a's later retry then succeeded too
    assert len(w.sent_by("a", "200 INVITE")) == 1
    assert len(w.sent_by("a", "INVITE")) == 3 and len(w.sent_by("b", "200 INVITE")) == 2
    assert w.uas.remote_sdp == OFFER + b"a=sendonly\r\n"
    assert w.a.state is InviteState.CONFIRMED and w.uas.state is InviteState.CONFIRMED


def test_update_in_early_dialog_and_491_when_offer_pending() -> None:
    w = Wire(no_timer(), no_timer())
    w.uas.provisional(w.now, 183, body=ANSWER)
    w.pump()
    w.a.update(w.now, OFFER + b"a=inactive\r\n")
    w.pump()
    update = w.sent_by("a", "UPDATE")[0]
    ok = w.sent_by("b", "200 UPDATE")[0]
    assert ok.body == ANSWER and update.body.endswith(b"a=inactive\r\n")
    assert w.uas.remote_sdp == OFFER + b"a=inactive\r\n"
    # b has its own offer outstanding (dropped on the way): a's UPDATE gets 491
    w.drop = lambda who, m: who == "b" and isinstance(m, Request)
    w.uas.update(w.now, ANSWER + b"a=sendonly\r\n")
    w.pump()
    w.drop = lambda who, m: False
    w.a.update(w.now, OFFER)
    w.pump()
    assert w.sent_by("b", "491 UPDATE")


def test_in_dialog_request_with_unknown_tag_gets_481_and_low_cseq_500() -> None:
    w = confirmed_call()
    info = w.a.dialog.create_request("INFO")  # type: ignore[union-attr]
    info.set_header("To", "<sip:bob@b.example>;tag=unknown")
    w.uas.receive_request(info, w.now)
    w.pump()
    assert w.sent_by("b", "481 INFO")
    newer = w.a.dialog.create_request("OPTIONS", cseq=5)  # type: ignore[union-attr]
    w.uas.receive_request(newer, w.now)
    old = w.a.dialog.create_request("INFO", cseq=3)  # type: ignore[union-attr]
    w.uas.receive_request(old, w.now)
    w.pump()
    assert w.sent_by("b", "200 OPTIONS")
    assert w.sent_by("b", "500 INFO")


def test_cancel_waits_for_provisional_then_487() -> None:
    w = Wire(no_timer(), no_timer())
    w.a.cancel(w.now)
    w.pump()
    assert not w.sent_by("a", "CANCEL")
    w.uas.provisional(w.now, 180)
    w.pump()
    assert w.sent_by("a", "CANCEL")
    assert w.sent_by("b", "487 INVITE")
    assert w.a.terminated and w.terminated["a"].status == 487
    with pytest.raises(SessionError):
        w.uas.accept(w.now)


def test_2xx_racing_cancel_is_acked_then_byed() -> None:
    w = Wire(no_timer(), no_timer())
    w.uas.provisional(w.now, 180)
    w.pump()
    w.drop = lambda who, m: isinstance(m, Request) and m.method == "CANCEL"
    w.a.cancel(w.now)
    w.pump()
    w.uas.accept(w.now)
    w.pump()
    assert w.sent_by("a", "CANCEL") and w.sent_by("a", "ACK") and w.sent_by("a", "BYE")
    assert w.a.terminated and w.uas.terminated


def test_refresh_uses_reinvite_when_peer_does_not_allow_update() -> None:
    b_cfg = InviteConfig(session_timer=SessionTimerConfig(min_se=90),
                         allow=("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"))
    w = Wire(InviteConfig(session_timer=SessionTimerConfig(session_expires=90,
                                                           refresher="uac")), b_cfg)
    w.uas.accept(w.now)
    w.pump()
    w.advance(46)
    assert not w.sent_by("a", "UPDATE")
    refresh = w.sent_by("a", "INVITE")[-1]
    assert refresh.to.tag and refresh.body == OFFER  # same session description
    assert refresh.header("Session-Expires") == "90;refresher=uac"
    assert len(w.sent_by("b", "200 INVITE")) == 2 and len(w.sent_by("a", "ACK")) == 2


def test_bye_in_early_dialog_gets_487_for_invite() -> None:
    w = Wire(no_timer(), no_timer())
    w.uas.provisional(w.now, 180)
    w.pump()
    bye = next(iter(w.a.early.values())).create_request("BYE")
    w.uas.receive_request(bye, w.now)
    w.pump()
    assert w.sent_by("b", "200 BYE") and w.sent_by("b", "487 INVITE")
    assert w.uas.terminated and w.a.terminated


def test_fork_second_2xx_is_acked_and_byed() -> None:
    w = Wire(no_timer(), no_timer())
    w.uas.accept(w.now)
    w.pump()
    other = w.sent_by("b", "200 INVITE")[0].copy()
    other.set_header("To", "<sip:bob@b.example>;tag=fork2")
    w.a.receive_response(other, w.now)
    events = w.a.events()
    acks = [e.ack for e in events if isinstance(e, SendAck)]
    byes = [e.request for e in events if isinstance(e, SendRequest) and e.request.method == "BYE"]
    assert acks[0].to.tag == "fork2" and byes[0].to.tag == "fork2"
    assert w.a.state is InviteState.CONFIRMED


def test_options_response_lists_capabilities() -> None:
    request = build_request("OPTIONS", "sip:bob@b.example", "<sip:alice@a.example>",
                            "<sip:bob@b.example>")
    response = options_response(request, InviteConfig(), to_tag="t")
    assert response.status == 200 and response.to.tag == "t"
    assert "UPDATE" in response.tokens("Allow") and "PRACK" in response.tokens("Allow")
    assert response.header("Accept") == "application/sdp"
    assert set(response.tokens("Supported")) == {"100rel", "timer"}
