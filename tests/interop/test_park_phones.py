"""Call park (RFC 5359 2.15) with third-party phones (baresip, linphone, pjsua2)
through the real core and the media server: the phone needs nothing beyond
registering, because the park server is in the network.

* the phone parks imsbox's alice by transferring her to sip:park@DOMAIN (its
  plain blind transfer): alice hears the orbit's DTMF digits and the music, carol
  (imsbox) gets her back with a call to sip:park-701@DOMAIN;
* imsbox's alice parks the phone (REFER to sip:park@ with Replaces): the park
  server's INVITE with Replaces takes the phone over (baresip 1.0 has no Replaces
  and refuses it 420: alice then transfers it to sip:park@ and learns the orbit
  from the park server's MESSAGE), the phone hears the music, then carol once she
  retrieves the orbit; the phone's recording holds both;
* the phone retrieves a call imsbox's alice parked (carol) by calling the orbit.
"""

from __future__ import annotations

import time

import pytest

from .baresip import ImsboxNet
from .phones import DOMAIN, ENDED, ESTABLISHED, ImsboxUe, Phone, heard, hears
from .phone_kit import CAROL_TONE, IMSBOX_TONE, PHONE_TONE, imsbox_calls

# the fixtures (the network, alice, carol, each phone) are tests/interop/conftest.py's

pytestmark = pytest.mark.timeout(180)
PARK = f"sip:park@{DOMAIN}"
ORBIT = f"sip:park-701@{DOMAIN}"
MELODY = (523.0, 659.0, 784.0)     # the media server's default music on hold


def hears_music(pcm: bytes) -> bool:
    return any(hears(pcm, note, min_windows=3) for note in MELODY)


def test_phone_parks_imsbox_by_transfer(ue: ImsboxUe, carol: ImsboxUe, phone: Phone,
                                        net: ImsboxNet) -> None:
    call = imsbox_calls(ue, phone)
    phone.transfer(PARK)
    assert ue.ended(call) == "transferred"
    parked = ue.sync(lambda: ue.client.transfers.successors[call.id])
    assert ue.answered(parked)
    phone.wait_state(ENDED)
    assert str(parked.call.request.uri) == PARK
    assert hears_music(ue.listen(parked, 4.0))
    back = carol.call(ORBIT)
    assert carol.answered(back), back.end_reason
    pcm = ue.listen(parked, 2.0)
    assert hears(pcm, CAROL_TONE) and not hears_music(pcm)
    assert hears(carol.listen(back, 2.0), IMSBOX_TONE)
    carol.hangup(back)
    assert ue.ended(parked) == "remote hangup"


def test_imsbox_parks_phone(ue: ImsboxUe, carol: ImsboxUe, phone: Phone, kind: str) -> None:
    call = imsbox_calls(ue, phone)
    parked = ue.run(ue.client.park(call), 40)
    assert parked.orbit == 701, parked.to_json()
    assert parked.status == 200
    # baresip has no Replaces: parked by transfer to sip:park@;parker=alice instead
    assert (call.end_reason == "transferred") == (kind == "baresip"), call.end_reason
    phone.wait_state(ESTABLISHED)          # the park server's call
    time.sleep(4.0)                        # on the music (after the orbit's digits, by transfer)
    back = carol.call(ORBIT)
    assert carol.answered(back), back.end_reason
    assert hears(carol.listen(back, 2.0), PHONE_TONE)
    carol.hangup(back)
    phone.wait_state(ENDED)
    phone.stop()
    # the phone's recording is of its last call, the park server's: music, then carol
    assert heard(phone.record_path, CAROL_TONE)
    assert any(heard(phone.record_path, note) for note in MELODY)   # the music between


def test_phone_retrieves_a_parked_call(ue: ImsboxUe, carol: ImsboxUe, phone: Phone) -> None:
    call = ue.call(f"sip:carol@{DOMAIN}")
    assert ue.answered(call)
    carol_call = carol.incoming()
    parked = ue.run(ue.client.park(call), 30)
    assert parked.orbit == 701, parked.to_json()
    carol.until(lambda: carol_call.ended.is_set(), "replaced by the park")
    phone.call(ORBIT)
    phone.wait_state(ESTABLISHED)
    now = carol.incoming()
    assert hears(carol.listen(now, 2.0), PHONE_TONE)
    phone.hangup()
    assert carol.ended(now) == "remote hangup"
