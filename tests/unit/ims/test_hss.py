"""HSS Cx operations over the SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from imsbox.config import load_config
from imsbox.ims.hss import (
    PROFILE_TTL, AuthorizationType, Hss, ResultCode, ServerAssignmentType as SAT,
    psi_matches,
)
from imsbox.ifc import RequestView, SessionCase, matching_ifcs
from imsbox.ims.provisioning import add_group, add_user, apply_config
from imsbox.sip.auth import Algorithm, compute_ha1
from imsbox.store import Psi, PsiKind, RegistrationState, ServiceProfile, SqliteStore

SCSCF = "sip:127.0.0.1:5080"
ALICE = "sip:alice@ims.test"


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    async def provision() -> None:
        async with SqliteStore.in_data_dir(tmp_path) as s:
            await apply_config(s, load_config())
            await add_user(s, "ims.test", "alice", "secret", "+15550001")
            await add_user(s, "ims.test", "bob", "hunter2")
    asyncio.run(provision())
    return SqliteStore.in_data_dir(tmp_path)  # opened for the test (tests/unit/conftest.py)


@pytest.fixture
def hss(store: SqliteStore) -> Hss:
    return Hss(store.subscribers, "ims.test", scscf_names=(SCSCF,))


async def test_uar_first_then_subsequent_registration(hss: Hss) -> None:
    first = await hss.user_authorization(ALICE, "alice@ims.test")
    assert first.result is ResultCode.DIAMETER_FIRST_REGISTRATION
    assert first.result.code == 2001 and first.result.experimental
    assert first.server_name is None and first.capabilities.server_names == (SCSCF,)
    await hss.server_assignment(ALICE, SCSCF, SAT.REGISTRATION, "alice@ims.test")
    again = await hss.user_authorization(ALICE, "alice")  # bare name works too
    assert again.result is ResultCode.DIAMETER_SUBSEQUENT_REGISTRATION
    assert again.server_name == SCSCF
    dereg = await hss.user_authorization(ALICE, "alice", type=AuthorizationType.DE_REGISTRATION)
    assert dereg.result is ResultCode.DIAMETER_SUCCESS and dereg.server_name == SCSCF
    caps = await hss.user_authorization(ALICE, "alice",
                                  type=AuthorizationType.REGISTRATION_AND_CAPABILITIES)
    assert caps.capabilities.server_names == (SCSCF,)


async def test_uar_errors(hss: Hss) -> None:
    assert (await hss.user_authorization("sip:nobody@ims.test", "nobody")).result is \
        ResultCode.DIAMETER_ERROR_USER_UNKNOWN
    assert (await hss.user_authorization(ALICE, "bob@ims.test")).result is \
        ResultCode.DIAMETER_ERROR_IDENTITIES_DONT_MATCH
    assert (await hss.user_authorization(ALICE, "alice", visited_network="other.net")).result is \
        ResultCode.DIAMETER_ERROR_ROAMING_NOT_ALLOWED
    assert (await hss.user_authorization(ALICE, "alice", visited_network="ims.test")).result.success
    assert (await hss.user_authorization(ALICE, "alice", type=AuthorizationType.DE_REGISTRATION
                                  )).result is ResultCode.DIAMETER_ERROR_IDENTITY_NOT_REGISTERED
    assert (await hss.user_authorization("garbage", "alice")).result is \
        ResultCode.DIAMETER_ERROR_USER_UNKNOWN


@pytest.mark.parametrize("username", ["alice@ims.test", "alice"])
@pytest.mark.parametrize("algorithm", [Algorithm.MD5, Algorithm.SHA_256, Algorithm.SHA_256_SESS])
async def test_mar_returns_ha1_for_the_username_given(hss: Hss, username: str,
                                                algorithm: Algorithm) -> None:
    answer = await hss.multimedia_auth(username, ALICE, algorithm)
    assert answer.result is ResultCode.DIAMETER_SUCCESS
    assert answer.realm == "ims.test" and answer.username == username
    assert answer.private_id == "alice@ims.test" and answer.algorithm is algorithm
    base = Algorithm.SHA_256 if algorithm is Algorithm.SHA_256_SESS else algorithm
    assert answer.ha1 == compute_ha1(username, "ims.test", "secret", base)


async def test_mar_by_msisdn_identity_and_errors(hss: Hss) -> None:
    assert (await hss.multimedia_auth("alice", "tel:+15550001")).result.success
    assert (await hss.multimedia_auth("alice", "sip:+15550001@ims.test")).result.success  # no user=phone
    assert (await hss.multimedia_auth("nobody", "sip:nobody@ims.test")).result is \
        ResultCode.DIAMETER_ERROR_USER_UNKNOWN
    assert (await hss.multimedia_auth("bob", ALICE)).result is \
        ResultCode.DIAMETER_ERROR_IDENTITIES_DONT_MATCH
    assert (await hss.multimedia_auth("alice", ALICE, Algorithm.MD5_SESS)).result.success


async def test_mar_stores_server_name_for_unassigned_user(hss: Hss, store: SqliteStore) -> None:
    await hss.multimedia_auth("alice", ALICE, server_name=SCSCF)
    assert (await store.subscribers.get_assignment("alice@ims.test")).server_name == SCSCF
    # authentication failure of an unregistered user drops it again
    await hss.server_assignment(ALICE, SCSCF, SAT.AUTHENTICATION_FAILURE)
    assert (await store.subscribers.get_assignment("alice@ims.test")).server_name is None


async def test_sar_registration_returns_implicit_set_and_ifcs(hss: Hss) -> None:
    answer = await hss.server_assignment("tel:+15550001", SCSCF, SAT.REGISTRATION, "alice")
    assert answer.result is ResultCode.DIAMETER_SUCCESS
    profile = answer.profile
    assert profile.public_ids == (ALICE, "tel:+15550001", "sip:+15550001@ims.test;user=phone")
    assert profile.default_public_id == ALICE and profile.msisdn == "+15550001"
    assert [i.priority for i in profile.ifcs] == [10, 20, 30, 40, 50, 55]
    invite = RequestView("MESSAGE", "sip:bob@ims.test", [
        ("P-Asserted-Service", "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg")])
    found = matching_ifcs(profile.ifcs, invite, SessionCase.ORIGINATING)
    assert [i.application_server.server_name for i in found] == ["sip:127.0.0.1:5090"]


async def test_sar_state_transitions(hss: Hss, store: SqliteStore) -> None:
    async def state() -> tuple[str | None, RegistrationState]:
        a = await store.subscribers.get_assignment("bob@ims.test")
        assert a is not None
        return a.server_name, a.state

    bob = "sip:bob@ims.test"
    assert (await hss.server_assignment(bob, SCSCF, SAT.UNREGISTERED_USER)).profile is not None
    assert await state() == (SCSCF, RegistrationState.UNREGISTERED)
    await hss.server_assignment(bob, SCSCF, SAT.REGISTRATION)
    assert await state() == (SCSCF, RegistrationState.REGISTERED)
    await hss.server_assignment(bob, SCSCF, SAT.UNREGISTERED_USER)  # does not downgrade
    assert await state() == (SCSCF, RegistrationState.REGISTERED)
    await hss.server_assignment(bob, SCSCF, SAT.RE_REGISTRATION)
    assert (await hss.server_assignment(bob, SCSCF, SAT.NO_ASSIGNMENT)).profile is not None
    assert (await hss.server_assignment(bob, "sip:other", SAT.NO_ASSIGNMENT)).result is \
        ResultCode.DIAMETER_UNABLE_TO_COMPLY
    await hss.server_assignment(bob, SCSCF, SAT.AUTHENTICATION_TIMEOUT)  # registered: kept
    assert await state() == (SCSCF, RegistrationState.REGISTERED)
    await hss.server_assignment(bob, SCSCF, SAT.USER_DEREGISTRATION_STORE_SERVER_NAME)
    assert await state() == (SCSCF, RegistrationState.NOT_REGISTERED)
    await hss.server_assignment(bob, SCSCF, SAT.REGISTRATION)
    answer = await hss.server_assignment(bob, SCSCF, SAT.TIMEOUT_DEREGISTRATION)
    assert answer.result is ResultCode.DIAMETER_SUCCESS and answer.profile is None
    assert await state() == (None, RegistrationState.NOT_REGISTERED)


async def test_sar_unknown_user(hss: Hss) -> None:
    answer = await hss.server_assignment("sip:ghost@ims.test", SCSCF, SAT.REGISTRATION)
    assert answer.result is ResultCode.DIAMETER_ERROR_USER_UNKNOWN
    assert answer.result.code == 5001 and not answer.result.success


async def test_lir_registered_unregistered_and_unknown(hss: Hss) -> None:
    lia = await hss.location_info("sip:bob@ims.test")
    # default iFCs include terminating-unregistered services (deferred messaging)
    assert lia.result is ResultCode.DIAMETER_UNREGISTERED_SERVICE
    assert lia.capabilities.server_names == (SCSCF,)
    await hss.server_assignment("sip:bob@ims.test", SCSCF, SAT.REGISTRATION)
    lia = await hss.location_info("<sip:bob@IMS.test;transport=tcp>")
    assert lia.result is ResultCode.DIAMETER_SUCCESS and lia.server_name == SCSCF
    assert not lia.psi
    assert (await hss.location_info("sip:nobody@ims.test")).result is \
        ResultCode.DIAMETER_ERROR_USER_UNKNOWN
    await hss.server_assignment("sip:bob@ims.test", SCSCF, SAT.USER_DEREGISTRATION_STORE_SERVER_NAME)
    lia = await hss.location_info("sip:bob@ims.test")
    assert lia.result is ResultCode.DIAMETER_UNREGISTERED_SERVICE and lia.server_name == SCSCF


async def test_lir_without_unregistered_services(hss: Hss, store: SqliteStore) -> None:
    from imsbox.store import ServiceProfile
    await store.subscribers.put_service_profile(ServiceProfile("default", ()))
    assert (await hss.location_info("sip:bob@ims.test")).result is \
        ResultCode.DIAMETER_ERROR_IDENTITY_NOT_REGISTERED
    assert (await hss.location_info("sip:bob@ims.test", originating=True)).result is \
        ResultCode.DIAMETER_UNREGISTERED_SERVICE


async def test_lir_psi_exact_then_wildcard(hss: Hss, store: SqliteStore) -> None:
    conf_as = "sip:127.0.0.1:5100"
    lia = await hss.location_info("sip:conf-42@ims.test")
    assert lia.result is ResultCode.DIAMETER_SUCCESS and lia.psi and lia.server_name == conf_as
    assert (await hss.location_info("sip:group-friends@ims.test;transport=tcp")).server_name == conf_as
    # an exact PSI wins over the wildcard that also covers it
    await store.subscribers.put_psi(Psi("sip:conf-special@ims.test", "sip:127.0.0.1:6000"))
    assert (await hss.location_info("sip:conf-special@ims.test")).server_name == "sip:127.0.0.1:6000"
    # TS 23.003 '!regex!' wildcard and whole-pattern regex
    await store.subscribers.put_psi(Psi("sip:chatlist!.*!@ims.test", "sip:127.0.0.1:6001", PsiKind.WILDCARD))
    await store.subscribers.put_psi(Psi(r"sip:room[0-9]{2}@ims\.test", "sip:127.0.0.1:6002", PsiKind.REGEX))
    assert (await hss.location_info("sip:chatlist-x1@ims.test")).server_name == "sip:127.0.0.1:6001"
    assert (await hss.location_info("sip:room07@ims.test")).server_name == "sip:127.0.0.1:6002"
    assert (await hss.location_info("sip:room7@ims.test")).result is \
        ResultCode.DIAMETER_ERROR_USER_UNKNOWN
    assert (await hss.location_info("sip:conf-1@other.test")).result is \
        ResultCode.DIAMETER_ERROR_USER_UNKNOWN


async def test_group_is_a_psi(hss: Hss, store: SqliteStore) -> None:
    await add_group(store, load_config(), "sip:team@ims.test", ["alice", "+15550002"])
    lia = await hss.location_info("sip:team@ims.test")
    assert lia.psi and lia.server_name == "sip:127.0.0.1:5100"


def test_psi_matches_helper() -> None:
    psi = Psi("sip:conf-*@ims.test", "sip:as", PsiKind.WILDCARD)
    assert psi_matches(psi, "sip:conf-@ims.test")
    assert not psi_matches(psi, "sip:conference@ims.test.evil")
    assert not psi_matches(Psi("sip:a!(!@b", "sip:as", PsiKind.WILDCARD), "sip:a@b")


async def test_user_profile_cache_follows_writes(store: SqliteStore, hss: Hss) -> None:
    """Profiles are kept in memory, but a write to the subscriber data
    through the store is seen on the next lookup (write-through)."""
    first = await hss.user_profile(ALICE)
    assert first is not None and first.ifcs
    assert await hss.user_profile(ALICE) is first  # from memory: no store read
    await store.subscribers.put_service_profile(ServiceProfile("default", ()))
    changed = await hss.user_profile(ALICE)
    assert changed is not None and changed.ifcs == ()
    await store.subscribers.remove_subscriber("alice@ims.test")
    assert await hss.user_profile(ALICE) is None
    assert await hss.user_profile("sip:carol@ims.test") is None
    await add_user(store, "ims.test", "carol", "pw")
    assert await hss.user_profile("sip:carol@ims.test") is not None  # unknown is not kept


async def test_user_profile_cache_drops_expired_profiles(store: SqliteStore) -> None:
    """The profiles of users nobody asked for within PROFILE_TTL go: the cache
    holds the users active now, not every user that ever registered."""
    now = [100.0]
    hss = Hss(store.subscribers, "ims.test", clock=lambda: now[0])
    assert await hss.user_profile(ALICE) is not None
    assert await hss.user_profile("sip:bob@ims.test") is not None
    assert hss.cached_profiles == 2
    now[0] += PROFILE_TTL / 2
    assert await hss.user_profile("sip:+15550001@ims.test;user=phone") is not None
    assert hss.cached_profiles == 3  # nothing has expired yet
    now[0] += PROFILE_TTL + 0.1
    assert await hss.user_profile("sip:bob@ims.test") is not None
    assert hss.cached_profiles == 1  # bob's fresh entry only
