"""Wireshark decodes the telephony AS's forwarding (RFC 5359 2.7) and screening
(2.13) with a phone (baresip) cleanly: carol forwards everything to bob, the
phone gets alice's call with History-Info and talks to her; then bob screens
alice and the AS answers her INVITE 603. Every SIP hop (UEs, P-, I-, S-CSCF,
the telephony AS) and the RTP both ways decode with no malformed frame.

One phone only: the SIP on the wire is the core's and the AS's, the same
whichever phone answers (test_phone_services.py runs the services with all
three)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from imsbox.media import PortAllocator

from .baresip import ImsboxNet, low_port
from .capture import Capture
from .phone_kit import BOB, CAROL, hears_phone, ue_port
from .phones import ENDED, HOST, INCOMING, ImsboxUe, Phone
from .test_messaging_tshark import sip_counts
from .test_phone_services import service

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["baresip"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_forwarding_and_screening_decode_cleanly(ue: ImsboxUe, carol: ImsboxUe, phone: Phone,
                                                  net: ImsboxNet,
                                                  capture: Callable[..., Capture]) -> None:
    base = low_port() // 2 * 2
    ue.sync(lambda: setattr(ue.client.call_service, "ports", PortAllocator(HOST, base, base + 2)))
    config = net.config
    sip = [config.pcscf.port, config.icscf.port, config.scscf.port, config.telephony_as.port,
           ue_port(ue), ue_port(carol), phone.sip_port]
    service(net, "set", "carol", "forward-unconditional", "bob")
    cap = capture(ports=[*sip, base], tcp=False)
    cap.start()
    call = ue.call(CAROL)                 # 2.7: on to bob's phone
    phone.wait_state(INCOMING)
    phone.answer()
    assert ue.answered(call) and hears_phone(ue, call)
    ue.hangup(call)
    phone.wait_state(ENDED)
    # set after the forwarded call: alice's call to carol reached bob as alice's
    service(net, "set", "bob", "screen-incoming", "alice")
    screened = ue.call(BOB)               # 2.13: the AS declines
    ue.ended(screened)
    cap.stop()

    decode = [f"udp.port=={base},rtp", *(f"udp.port=={n},sip" for n in sip)]
    assert cap.malformed(decode_as=decode) == []
    cap.decode_as = decode
    methods, statuses = sip_counts(cap)
    assert methods["INVITE"] >= 2 and methods["BYE"] >= 1
    assert statuses[("200", "INVITE")] >= 1 and statuses[("603", "INVITE")] >= 1
    invites = cap.decode(decode_as=decode, display_filter='sip.Method == "INVITE"',
                         fields=["sip.History-Info", "udp.dstport"])
    to_phone = [f for f in invites if f["udp.dstport"] == [str(phone.sip_port)]]
    assert to_phone and all(
        any("cause=302" in v for v in f.get("sip.History-Info", [])) for f in to_phone), to_phone
    declines = cap.decode(decode_as=decode, display_filter="sip.Status-Code == 603",
                          fields=["sip.Status-Line", "udp.dstport"])
    assert any(f.get("sip.Status-Line") == ["SIP/2.0 603 Screening Failure (Terminating)"]
               for f in declines), declines
    assert not any(f["udp.dstport"] == [str(phone.sip_port)] for f in declines)
    frames = cap.decode(decode_as=decode, display_filter="rtp",
                        fields=["rtp.p_type", "udp.dstport"])
    to_us = [f for f in frames if f["udp.dstport"] == [str(base)]]
    from_us = [f for f in frames if f["udp.dstport"] != [str(base)]]
    assert len(to_us) >= 80 and len(from_us) >= 80
    assert {f["rtp.p_type"][0] for f in to_us + from_us} <= {"0", "8", "101"}
