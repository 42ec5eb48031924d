"""sipsak (Debian 0.9.8.1) against ``imsbox serve`` run as the real CLI.

What is asserted:

* OPTIONS whose Request-URI is the P-CSCF itself (``sip:127.0.0.1:PORT``, no
  user part): 200 with Allow, from an unregistered sipsak (RFC 3261 11: a
  server answers OPTIONS addressed to it; nothing goes into the core).
* OPTIONS from an unregistered UE to a user (``sip:bob@ims.test``): 403 -
  only registered UEs send into the network.
* REGISTER with Digest (``-U -u alice -a PASSWORD``): 401 then 200; a wrong
  password ends in 403.
* MESSAGE from sipsak, registered as alice and sending from its registered
  flow, to bob (a registered imsbox TestUe): sipsak gets 200, bob gets the
  body with P-Asserted-Identity alice.

sipsak quirks worked around here (all in the Debian 0.9.8.1 build):

* URIs it writes cut 5-digit ports to 4 digits: the P-CSCF and sipsak's own
  ports are 4-digit ones (``low_port``);
* ``-p`` must come before ``-s`` or the domain of ``-s`` is resolved first
  (and ``ims.test`` does not resolve);
* without ``-u`` it sends ``username="alice@"``;
* only MD5 and only the first WWW-Authenticate: the registrar offers MD5;
* ``-M`` (message mode) segfaults when a reply buffer is not set up (with
  ``-p``, with or without ``-U``), so the MESSAGE is sent as a file (``-f``),
  which sipsak sends with its own Via like any other request.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imsbox.testing import TestUe

from .baresip import DOMAIN, HOST, ImsboxNet, low_port

pytestmark = pytest.mark.timeout(120)
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImsboxNet]:
    network = ImsboxNet.start(tmp_path_factory.mktemp("sipsak"), PASSWORDS)
    try:
        yield network
    finally:
        status = network.stop()
        assert status == 0, f"imsbox serve exit {status}: {network.stderr[-20:]}"


def sipsak(net: ImsboxNet, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    """sipsak -vv with the P-CSCF as outbound proxy (-p before -s, see above)."""
    cmd = ["sipsak", "-vv", "-p", f"{HOST}:{net.pcscf_port}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


async def sipsak_async(net: ImsboxNet, *args: str, timeout: float = 15,
                       ) -> tuple[int, str]:
    """sipsak while the event loop keeps serving a TestUe; killed on timeout."""
    proc = await asyncio.create_subprocess_exec(
        "sipsak", "-vv", "-p", f"{HOST}:{net.pcscf_port}", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def register_args(user: str, password: str, port: int) -> list[str]:
    # -S -l: send and receive on one port, so the registered flow is that port
    return ["-U", "-s", f"sip:{user}@{DOMAIN}", "-u", user, "-a", password, "-x", "600",
            "-l", str(port), "-S", "-i"]


def test_options_to_the_pcscf_itself_is_answered_200_with_allow(net: ImsboxNet) -> None:
    res = sipsak(net, "-s", f"sip:{HOST}:{net.pcscf_port}")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "SIP/2.0 200 OK" in out, out
    allow = next(line for line in out.splitlines() if line.startswith("Allow:"))
    for method in ("REGISTER", "INVITE", "MESSAGE", "OPTIONS", "BYE"):
        assert method in allow, allow


def test_options_from_an_unregistered_ue_to_a_user_is_forbidden(net: ImsboxNet) -> None:
    res = sipsak(net, "-s", f"sip:bob@{DOMAIN}")
    out = res.stdout + res.stderr
    assert "SIP/2.0 403 Forbidden" in out, out
    assert res.returncode != 0, out


def test_register_with_digest(net: ImsboxNet) -> None:
    port = low_port()
    res = sipsak(net, *register_args("alice", PASSWORDS["alice"], port))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "All usrloc tests completed successful" in out, out
    trace = net.trace()
    assert f"REGISTER sip:{DOMAIN} SIP/2.0" in trace
    assert 'username="alice"' in trace and "algorithm=MD5" in trace
    assert f"Contact: <sip:alice@{HOST}:{port}>;expires=600" in trace  # the 200's binding

    wrong = sipsak(net, *register_args("alice", "not-the-password", low_port()))
    out = wrong.stdout + wrong.stderr
    assert wrong.returncode != 0, out
    assert "SIP/2.0 403 Forbidden" in out, out


def test_message_from_registered_sipsak_to_registered_ue(net: ImsboxNet,
                                                          tmp_path: Path) -> None:
    port = low_port()
    text = "hello bob, from sipsak"
    body = text.encode()
    message = tmp_path / "message.sip"
    message.write_bytes(
        (f"MESSAGE sip:bob@{DOMAIN} SIP/2.0\r\n"
         f"From: <sip:alice@{DOMAIN}>;tag=sipsak1\r\n"
         f"To: <sip:bob@{DOMAIN}>\r\n"
         f"Call-ID: sipsak-message-{port}@{HOST}\r\n"
         "CSeq: 1 MESSAGE\r\n"
         "Max-Forwards: 70\r\n"
         "Content-Type: text/plain\r\n"
         f"Content-Length: {len(body)}\r\n\r\n").encode() + body)

    async def scenario() -> None:
        bob = await TestUe("bob", PASSWORDS["bob"], net.config).start()
        try:
            assert (await bob.register()).ok
            status, out = await sipsak_async(net, *register_args(
                "alice", PASSWORDS["alice"], port))
            assert status == 0, out
            # from the same source port as the REGISTER: the P-CSCF's flow for alice
            status, out = await sipsak_async(net, "-f", str(message), "-s",
                                             f"sip:bob@{DOMAIN}", "-l", str(port), "-S")
            assert status == 0, out
            assert "SIP/2.0 200 OK" in out, out
            got = await asyncio.wait_for(bob.requests.get(), 5)
            assert got.method == "MESSAGE" and got.body == body
            assert got.headers.get("Content-Type") == "text/plain"
            asserted = got.headers.get("P-Asserted-Identity") or ""
            assert f"sip:alice@{DOMAIN}" in asserted, asserted
        finally:
            await bob.close()
    asyncio.run(asyncio.wait_for(scenario(), 60))
