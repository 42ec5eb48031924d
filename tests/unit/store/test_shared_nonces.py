"""Digest replay protection across instances: two authenticators (two S-CSCF
processes) sharing the store's key and nonce-counts, on each back end."""

from __future__ import annotations

from imsbox.sip.auth import (
    Algorithm, DigestAuthenticator, VerifyOutcome, answer_challenge, compute_ha1,
)
from imsbox.store import Store

REALM = "ims.test"
HA1 = compute_ha1("alice@ims.test", REALM, "alice-secret", Algorithm.SHA_256)


async def two_instances(store: Store) -> tuple[DigestAuthenticator, DigestAuthenticator]:
    pair = []
    for _ in range(2):
        auth = DigestAuthenticator(REALM, algorithms=(Algorithm.SHA_256,),
                                   nonce_counts=store.nonces)
        auth.use_secret(await store.nonces.shared_secret("digest"))
        pair.append(auth)
    return pair[0], pair[1]


async def test_a_nonce_count_used_on_one_instance_is_a_replay_on_the_other(
        store: Store) -> None:
    one, two = await two_instances(store)
    challenge = one.challenges()[0]
    first = answer_challenge(challenge, "REGISTER", "sip:ims.test", "alice@ims.test",
                             ha1=HA1, nc=1)
    result = await two.verify_shared(first, "REGISTER", lambda *_: HA1)
    assert result.outcome is VerifyOutcome.OK  # issued by one, accepted by two
    again = await one.verify_shared(first, "REGISTER", lambda *_: HA1)
    assert again.outcome is VerifyOutcome.REPLAY  # one has never seen it used: the store has
    later = answer_challenge(challenge, "REGISTER", "sip:ims.test", "alice@ims.test",
                             ha1=HA1, nc=2)
    assert (await one.verify_shared(later, "REGISTER", lambda *_: HA1)).ok


async def test_without_the_shared_key_the_other_instance_challenges_again(
        store: Store) -> None:
    one, _ = await two_instances(store)
    stranger = DigestAuthenticator(REALM, algorithms=(Algorithm.SHA_256,),
                                   nonce_counts=store.nonces)  # its own random key
    credentials = answer_challenge(one.challenges()[0], "REGISTER", "sip:ims.test",
                                   "alice@ims.test", ha1=HA1)
    result = await stranger.verify_shared(credentials, "REGISTER", lambda *_: HA1)
    assert result.outcome is VerifyOutcome.BAD_CREDENTIALS
    assert result.reason in ("opaque mismatch", "nonce not issued here")
