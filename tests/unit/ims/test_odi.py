"""Signed odi tokens (imsbox.ims.odi): any S-CSCF with the key continues the
chain, nobody without it can forge or alter one."""

from __future__ import annotations

from imsbox.ifc import SessionCase
from imsbox.ims.odi import OdiChain, OdiSigner
from imsbox.sip.grammar import is_token

KEY = b"k" * 32
CHAIN = OdiChain(SessionCase.TERMINATING_REGISTERED, "sip:bob@ims.test", 20, 1300.0)


def test_another_instance_with_the_key_opens_what_one_issued() -> None:
    token = OdiSigner(KEY).issue(CHAIN)
    assert is_token(token)  # a Route parameter value as it is
    assert OdiSigner(KEY).open(token, now=1000.0) == CHAIN


def test_a_forged_or_altered_token_is_refused() -> None:
    token = OdiSigner(KEY).issue(CHAIN)
    assert OdiSigner(b"x" * 32).open(token, now=1000.0) is None  # another network's key
    forged = OdiSigner(b"x" * 32).issue(OdiChain(SessionCase.ORIGINATING, "sip:eve@ims.test",
                                                 99, 1300.0))
    head = forged.partition(".")[0]
    assert OdiSigner(KEY).open(f"{head}.{token.partition('.')[2]}", now=1000.0) is None
    for bad in ("", "abc", "a.b", token + "x", "!!.!!", token.replace(".", "")):
        assert OdiSigner(KEY).open(bad, now=1000.0) is None, bad


def test_an_expired_token_is_refused() -> None:
    token = OdiSigner(KEY).issue(CHAIN)
    assert OdiSigner(KEY).open(token, now=1300.0) == CHAIN
    assert OdiSigner(KEY).open(token, now=1300.5) is None
