"""Public identities in lookup form (imsbox.sip.identity)."""

from __future__ import annotations

import pytest

from imsbox.sip.identity import canonical_public_id

ALICE = "sip:alice@ims.test"


def test_canonical_public_id() -> None:
    assert canonical_public_id("<sips:alice@IMS.Test:5061;transport=tls>") == ALICE
    assert canonical_public_id("tel:+1-555-0001") == "tel:+15550001"
    assert canonical_public_id("sip:+15550001@ims.test;user=phone;x=y") == \
        "sip:+15550001@ims.test;user=phone"
    with pytest.raises(ValueError):
        canonical_public_id("not a uri")
