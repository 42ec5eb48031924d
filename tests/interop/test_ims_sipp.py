"""SIPp against the whole IMS core: ``imsbox serve`` (the real CLI, in a
subprocess) with every node on a free loopback port and 1,000 provisioned
subscribers.

a. SIPp registers user0000..user0999 with Digest through the P-CSCF (one
   user per SIPp call from an injection file): 401, then 200, 1,000 times,
   none failed; the S-CSCF holds exactly one binding per user afterwards and
   the auth-failure limiter never fired (all REGISTERs come from 127.0.0.1).
b. A SIPp uas registered as ``callee`` and a SIPp uac registered as
   ``caller``: 2,000 calls UE -> P-CSCF -> S-CSCF -> I-CSCF -> S-CSCF ->
   P-CSCF -> UE and back (ACK and BYE along the Record-Route set), none
   failed on either side.
c. tshark on the P-CSCF's port during registrations and calls: every frame
   decodes as SIP, none malformed, the expected messages are all there.

The core is shared by the module's tests and must shut down cleanly
(exit 0 on SIGTERM) at the end.  Every SIPp and the serve process run in
their own process groups and are killed when their ``with`` blocks end;
SIPp has -timeout/-timeout_error and a hard wait limit on top.

Rate: 25 calls/s.  On this 2-core box (shared with other jobs) one imsbox
process carries each call through five SIP hops; above ~40 cps, stalls make
the P-CSCF retransmit INVITEs and 200s and the load snowballs (asyncio reads
one UDP datagram per loop turn, so due retransmission timers fire ahead of
queued responses).  25 cps leaves margin for the neighbours' load.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imsbox.store import open_store

from .capture import Capture
from .ims_sipp import (
    ImsCore, call_scenarios, continued_unexpected, register_users, user_names,
)
from .sipp import SippResult, free_udp_ports

PASSWORD = "sipp-secret"
USERS = user_names(1000)
CALLER, CALLEE = "caller", "callee"           # test b
ALICE, BOB = "alice", "bob"                   # test c
CALLS, CALL_RATE = 2000, 25


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImsCore]:
    """1,000 users + four call parties provisioned, ``imsbox serve`` running."""
    directory = tmp_path_factory.mktemp("ims-core")
    network = ImsCore.create(directory, [*USERS, CALLER, CALLEE, ALICE, BOB], PASSWORD)
    with network:
        yield network
        alive = network.alive()
    code = network.exit_code
    assert alive, f"imsbox serve died:\n{network.log_tail()}"
    assert code == 0, f"imsbox serve exit {code} on SIGTERM:\n{network.log_tail()}"


def sipp_ports(count: int) -> list[int]:
    return free_udp_ports(count)


def assert_sipp_ok(result: SippResult, calls: int, *extra: str) -> None:
    message = "\n".join((result.describe(), *extra))
    assert result.returncode == 0, message
    assert result.successful == calls, message
    assert result.failed == 0, message


def limiter_lines(core: ImsCore) -> list[str]:
    return [line for line in core.log_text().splitlines()
            if "too many failed logins" in line or "authentication failed" in line]


# -- a. 1,000 registrations with Digest -------------------------------------------------
@pytest.mark.load
@pytest.mark.timeout(150)
def test_sipp_registers_1000_users_with_digest(core: ImsCore, tmp_path: Path) -> None:
    (port,) = sipp_ports(1)
    started = time.time()
    result = register_users(core, USERS, PASSWORD, port=port, workdir=tmp_path, rate=100,
                            limit=200, timeout=90, name="register-1000")
    assert_sipp_ok(result, len(USERS), core.log_tail())
    assert core.alive(), core.log_tail()
    assert limiter_lines(core) == []

    # The registrar stored exactly one binding per user, the contact SIPp sent.
    now = time.time()
    async def in_store() -> None:
        async with open_store(core.config.store_location) as store:
            for name in USERS:
                bindings = await store.registrations.bindings(f"sip:{name}@{core.domain}", now)
                assert [b.contact for b in bindings] == [f"sip:{name}@127.0.0.1:{port}"], name
                assert bindings[0].expires_at > started + 3000, (name, bindings[0])
                (path,) = bindings[0].path  # RFC 5626 5.2 flow token, UDP: no ;ob
                assert re.fullmatch(r"<sip:term\.[\w-]+\.[\w-]+@127\.0\.0\.1:"
                                    rf"{core.config.pcscf.port};lr>", path), path
    asyncio.run(in_store())


# -- b. 2,000 calls through the core ------------------------------------------------------
@pytest.mark.load
@pytest.mark.timeout(240)
def test_sipp_2000_calls_through_ims_core(core: ImsCore, tmp_path: Path) -> None:
    uas_port, uac_port = sipp_ports(2)
    for name, port in ((CALLEE, uas_port), (CALLER, uac_port)):
        reg = register_users(core, [name], PASSWORD, port=port, workdir=tmp_path,
                             timeout=20, name=f"register-{name}")
        assert_sipp_ok(reg, 1, core.log_tail())
    uas, uac = call_scenarios(core, caller=CALLER, callee=CALLEE, uac_port=uac_port,
                              uas_port=uas_port, workdir=tmp_path, calls=CALLS,
                              rate=CALL_RATE, timeout=180)
    with uas:
        time.sleep(0.3)  # sipp binds its port
        assert uas.running(), uas.result(None).describe()
        with uac:
            uac_result = uac.wait()
        uas_result = uas.wait(20 if uac_result.returncode == 0 else 5)
    unexpected = continued_unexpected(uas_result)
    info = (f"uas tolerated {len(unexpected)} retransmitted/duplicate requests: "
            f"{Counter(u.split('received')[-1][:12] for u in unexpected)}")
    assert_sipp_ok(uac_result, CALLS, uas_result.describe(), info, core.log_tail())
    assert_sipp_ok(uas_result, CALLS, uac_result.describe(), info, core.log_tail())
    assert uac_result.count("FailedMaxUDPRetrans") == 0, uac_result.describe()
    assert core.alive(), core.log_tail()
    print(f"\n{CALLS} calls at {uac_result.call_rate:.1f} cps in {uac_result.seconds:.1f} s; "
          f"uac retransmissions {uac_result.count('Retransmissions')}; {info}")


# -- c. what tshark sees at the P-CSCF ------------------------------------------------------
@pytest.mark.timeout(120)
def test_pcscf_traffic_decodes_cleanly(core: ImsCore, capture: Callable[..., Capture],
                                       tmp_path: Path) -> None:
    registrations, calls = 20, 100
    reg_port, uas_port, uac_port = sipp_ports(3)
    pcscf = core.config.pcscf.port
    # TCP too: an INVITE that grew past 1300 bytes on its way through the core
    # (the telephony AS's Record-Route and History-Info) reaches the P-CSCF over
    # TCP from the S-CSCF (RFC 3261 18.1.1)
    with capture(ports=[pcscf]) as cap:
        reg = register_users(core, USERS[:registrations], PASSWORD, port=reg_port,
                             workdir=tmp_path, rate=20, timeout=30, name="register-20")
        assert_sipp_ok(reg, registrations, core.log_tail())
        for name, port in ((BOB, uas_port), (ALICE, uac_port)):
            assert_sipp_ok(register_users(core, [name], PASSWORD, port=port, workdir=tmp_path,
                                          timeout=20, name=f"register-{name}"), 1)
        uas, uac = call_scenarios(core, caller=ALICE, callee=BOB, uac_port=uac_port,
                                  uas_port=uas_port, workdir=tmp_path, calls=calls, rate=20,
                                  timeout=60)
        with uas:
            time.sleep(0.3)
            with uac:
                uac_result = uac.wait()
            uas_result = uas.wait(15)
    assert_sipp_ok(uac_result, calls, uas_result.describe())
    assert_sipp_ok(uas_result, calls, uac_result.describe())

    decode = [f"udp.port=={pcscf},sip", f"tcp.port=={pcscf},sip"]
    assert cap.malformed(decode_as=decode) == []
    frames = cap.decode(decode_as=decode, display_filter="sip",
                        fields=["sip.Method", "sip.Status-Code", "sip.CSeq.method",
                                "sip.auth.algorithm"])
    assert frames, "nothing captured"
    methods = Counter(m for f in frames for m in f.get("sip.Method", []))
    statuses = Counter(f"{s} {f['sip.CSeq.method'][0]}"
                       for f in frames for s in f.get("sip.Status-Code", []))
    regs = registrations + 2
    # each REGISTER: UE -> P-CSCF and P-CSCF -> I-CSCF, twice (401, then 200)
    assert methods["REGISTER"] >= 4 * regs, methods
    assert statuses["401 REGISTER"] >= 2 * regs, statuses
    assert statuses["200 REGISTER"] >= 2 * regs, statuses
    # each call passes the P-CSCF twice (originating and terminating side),
    # each pass one message in and one out
    for method in ("INVITE", "ACK", "BYE"):
        assert methods[method] >= 4 * calls, (method, methods)
    for status in ("180 INVITE", "200 INVITE", "200 BYE"):
        assert statuses[status] >= 4 * calls, (status, statuses)
    # SIPp answered the MD5 challenge, the first one offered (the 401s carry both)
    answered = Counter(a.strip('"') for f in frames if "REGISTER" in f.get("sip.Method", [])
                       for a in f.get("sip.auth.algorithm", []))
    assert answered["MD5"] >= 2 * regs and answered["SHA-256"] == 0, answered
    offered = Counter(a.strip('"') for f in frames if "401" in f.get("sip.Status-Code", [])
                      for a in f.get("sip.auth.algorithm", []))
    assert offered["MD5"] == offered["SHA-256"] >= 2 * regs, offered
