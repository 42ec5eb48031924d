"""MSRP endpoints over real loopback sockets (TCP and TLS)."""

from __future__ import annotations

import asyncio
import datetime
import gc
import hashlib
import io
import ipaddress
import os
import socket
import ssl
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imsbox.msrp import (FileSink, MsrpEndpoint, MsrpSession, MsrpStatusError, MsrpUri,
                         SessionClosed, TransactionTimeout)

pytestmark = pytest.mark.timeout(60)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def pair(a: MsrpEndpoint, b: MsrpEndpoint, **kw) -> tuple[MsrpSession, MsrpSession]:
    """Offer/answer in miniature: B passive, A active, paths exchanged."""
    sb = b.create_session(setup="passive", **kw)
    sa = a.create_session(remote_path=[sb.local_uri], setup="active")
    sb.set_remote_path([sa.local_uri])
    await sa.start()
    await sb.wait_bound(5)
    return sa, sb


def test_text_both_ways() -> None:
    async def main() -> None:
        async with MsrpEndpoint() as a, MsrpEndpoint() as b:
            sa, sb = await pair(a, b)
            res = await sa.send_message("text/plain", "Hello")
            msg = await sb.receive()
            assert (msg.body, msg.content_type, msg.message_id) == (b"Hello", "text/plain",
                                                                    res.message_id)
            await sb.send_message("text/plain", b"hi")
            assert (await sa.receive()).body == b"hi"
    run(main())


def test_five_megabyte_file_in_2k_chunks_streams_to_file() -> None:
    payload = os.urandom(5 * 1024 * 1024)

    async def main(tmp: Path) -> None:
        src = tmp / "src.bin"
        src.write_bytes(payload)
        with open(tmp / "dest.bin", "w+b") as dest:
            async with MsrpEndpoint() as a, MsrpEndpoint() as b:
                sa, sb = await pair(a, b)
                sb.sink_factory = lambda req: FileSink(dest)
                with open(src, "rb") as f:
                    res = await sa.send_message("application/octet-stream", f)
                assert res.size == len(payload)
                msg = await sb.receive()
                assert msg.size == len(payload)
        got = (tmp / "dest.bin").read_bytes()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()

    with tempfile.TemporaryDirectory() as d:
        run(main(Path(d)))


def test_async_iterator_source_and_success_report() -> None:
    async def chunks():
        for i in range(10):
            yield bytes([i]) * 1000

    async def main() -> None:
        async with MsrpEndpoint() as a, MsrpEndpoint() as b:
            sa, sb = await pair(a, b)
            await sa.send_message("application/octet-stream", chunks(), success_report=True)
            assert len(sa.reports) == 1
            rep = sa.reports[0]
            assert rep.method == "REPORT" and rep.status is not None and rep.status.code == 200
            assert str(rep.byte_range) == "1-10000/10000"
            assert (await sb.receive()).body == b"".join(bytes([i]) * 1000 for i in range(10))
    run(main())


def test_413_on_max_size() -> None:
    async def main() -> None:
        async with MsrpEndpoint() as a, MsrpEndpoint() as b:
            sa, sb = await pair(a, b, max_size=10_000)
            with pytest.raises(MsrpStatusError) as info:
                await sa.send_message("text/plain", b"x" * 20_000)
            assert info.value.status == 413
            await sa.send_message("text/plain", b"small")  # session still usable
            assert (await sb.receive()).body == b"small"
    run(main())


def test_481_on_unknown_session_path() -> None:
    async def main() -> None:
        async with MsrpEndpoint() as a, MsrpEndpoint() as b:
            bogus = MsrpUri("msrp", "127.0.0.1", b.port, "nosuchsession")
            sa = a.create_session(remote_path=[bogus], setup="active")
            with pytest.raises(MsrpStatusError) as info:
                await sa.start()
            assert info.value.status == 481
    run(main())


def test_shared_connection_two_sessions_interleaved() -> None:
    async def main() -> None:
        async with MsrpEndpoint() as a, MsrpEndpoint() as b:
            s1a, s1b = await pair(a, b)
            s2a, s2b = await pair(a, b)
            assert s1a.connection is s2a.connection is not None
            assert s1b.connection is s2b.connection is not None
            p1, p2 = os.urandom(300_000), os.urandom(200_000)
            await asyncio.gather(s1a.send_message("application/octet-stream", p1),
                                 s2a.send_message("application/octet-stream", p2))
            assert (await s1b.receive()).body == p1
            assert (await s2b.receive()).body == p2
    run(main())


def test_cema_connects_to_sdp_address_not_path() -> None:
    async def main() -> None:
        async with MsrpEndpoint() as a, MsrpEndpoint() as b:
            sb = b.create_session()
            # the path names an unreachable authority (as behind a middlebox)
            far = MsrpUri("msrp", "192.0.2.1", 9, sb.session_id)
            sa = a.create_session(remote_path=[far], setup="active",
                                  cema_address=("127.0.0.1", b.port))
            sb.set_remote_path([sa.local_uri])
            await sa.start()
            await sa.send_message("text/plain", "via cema")
            assert (await sb.receive()).body == b"via cema"
    run(main())


def test_broken_frame_closes_only_that_connection() -> None:
    async def main() -> None:
        async with MsrpEndpoint() as a, MsrpEndpoint() as b:
            sa, sb = await pair(a, b)
            r, w = await asyncio.open_connection("127.0.0.1", b.port)
            # framed but malformed: answered 400, connection stays
            w.write(b"MSRP bad1 SEND\r\nTo-Path: " + str(sb.local_uri).encode()
                    + b"\r\nFrom-Path: msrp://127.0.0.1:1/x;tcp\r\nByte-Range: ?\r\n-------bad1$\r\n")
            line = await r.readline()
            assert line.startswith(b"MSRP bad1 400")
            w.write(b"garbage that is not MSRP\r\n")
            rest = await r.read()  # returns only at EOF: the endpoint closed this connection
            assert r.at_eof() and b"-------bad1$" in rest
            w.close()
            await sa.send_message("text/plain", "still fine")
            assert (await sb.receive()).body == b"still fine"
    run(main())


def test_408_when_peer_never_answers() -> None:
    async def main() -> None:
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        async with MsrpEndpoint() as a:
            sa = a.create_session(remote_path=[MsrpUri("msrp", "127.0.0.1", port, "abcd")],
                                  setup="active", transaction_timeout=0.2)
            with pytest.raises(TransactionTimeout) as info:
                await sa.start()
            assert info.value.status == 408
        silent.close()
    run(main())


def test_keepalive_and_idle_close() -> None:
    """B closes a connection idle for 0.3 s; A's keep-alive empty SENDs every
    0.1 s hold its own connection to B open, C's (none) does not."""
    async def main() -> None:
        async with MsrpEndpoint(keepalive_interval=0.1) as a, \
                MsrpEndpoint(idle_timeout=0.3) as b, MsrpEndpoint() as c:
            sa, _ = await pair(a, b)
            sc, _ = await pair(c, b)
            assert sc.connection is not None
            await asyncio.wait_for(asyncio.shield(sc.connection.closed), 3)
            await asyncio.sleep(0.3)
            assert sa.connection is not None and not sa.connection.closed.done()
    run(main())


def make_tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    d = tempfile.mkdtemp()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    Path(d, "c.pem").write_bytes(cert_pem)
    Path(d, "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(Path(d, "c.pem"), Path(d, "k.pem"))
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


def test_tls_msrps() -> None:
    server, client = make_tls()

    async def main() -> None:
        async with MsrpEndpoint(ssl=server, client_ssl=client) as a, \
                MsrpEndpoint(ssl=server, client_ssl=client) as b:
            sa, sb = await pair(a, b)
            assert sa.local_uri.scheme == "msrps"
            payload = os.urandom(100_000)
            await sa.send_message("application/octet-stream", io.BytesIO(payload),
                                  success_report=True)
            assert (await sb.receive()).body == payload
    run(main())


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        return
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        return  # no IPv6 loopback in this environment

    async def main() -> None:
        async with MsrpEndpoint("::1") as a, MsrpEndpoint("::1") as b:
            sa, sb = await pair(a, b)
            assert str(sa.local_uri).startswith("msrp://[::1]:")
            await sa.send_message("text/plain", "v6")
            assert (await sb.receive()).body == b"v6"
    run(main())


def test_connection_lost_mid_send_leaves_no_unretrieved_future(
        caplog: pytest.LogCaptureFixture) -> None:
    """issue 9 item 6: the connection dies while a big SEND waits for the transport
    to drain; send_message raises, and no future is left with an exception nobody
    retrieves ("Future exception was never retrieved" in the sender's log)."""
    async def main() -> None:
        async with MsrpEndpoint() as a, MsrpEndpoint() as b:
            sa, sb = await pair(a, b)
            assert sb.connection is not None and sb.connection.transport is not None
            sb.connection.transport.pause_reading()  # the sender's buffer fills up
            conn = sa.connection
            assert conn is not None and conn.transport is not None

            async def cut() -> None:
                while not conn.paused:
                    await asyncio.sleep(0.01)
                conn.transport.abort()
            cutter = asyncio.ensure_future(cut())
            try:
                await sa.send_message("application/octet-stream", os.urandom(32 << 20))
            except SessionClosed:
                pass
            await cutter

    run(main())
    gc.collect()
    assert "never retrieved" not in caplog.text, caplog.text
