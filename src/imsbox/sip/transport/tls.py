"""TLS helpers: SSL contexts for SIP over TLS and a self-signed certificate maker."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["server_context", "client_context", "ensure_self_signed",
           "CERT_FILE", "KEY_FILE"]

log = logging.getLogger(__name__)

CERT_FILE = "sip-cert.pem"
KEY_FILE = "sip-key.pem"
_VALIDITY = datetime.timedelta(days=3650)
_RENEW_MARGIN = datetime.timedelta(days=7)


def server_context(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                   *, cafile: str | os.PathLike[str] | None = None,
                   require_client_cert: bool = False) -> ssl.SSLContext:
    """Context for a listening TLS socket (TLS 1.2+)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.fspath(cert_path), os.fspath(key_path))
    if cafile is not None:
        ctx.load_verify_locations(os.fspath(cafile))
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cafile: str | os.PathLike[str] | None = None, *,
                   cert_path: str | os.PathLike[str] | None = None,
                   key_path: str | os.PathLike[str] | None = None,
                   verify: bool = True) -> ssl.SSLContext:
    """Context for outgoing TLS: trusts ``cafile`` (or the system store)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile is not None:
        ctx.load_verify_locations(os.fspath(cafile))
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_path is not None:
        ctx.load_cert_chain(os.fspath(cert_path), os.fspath(key_path) if key_path else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def ensure_self_signed(directory: str | os.PathLike[str],
                       hostnames: list[str] | tuple[str, ...]) -> tuple[Path, Path]:
    """Return (cert, key) paths in ``directory``, generating them if missing,
    expiring or not covering every name in ``hostnames`` (DNS names or IPs)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    if key_path.exists() and _cert_still_good(cert_path, hostnames):
        return cert_path, key_path
    cert_pem, key_pem = _generate(hostnames)
    _write_private(key_path, key_pem)
    cert_path.write_bytes(cert_pem)
    log.info("generated self-signed certificate %s for %s", cert_path, ", ".join(hostnames))
    return cert_path, key_path


def _san_entries(hostnames: list[str] | tuple[str, ...]) -> list[x509.GeneralName]:
    from cryptography import x509

    entries: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def _generate(hostnames: list[str] | tuple[str, ...]) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    common_name = hostnames[0] if hostnames else "imsbox"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imsbox")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        # Self-signed: it is its own trust anchor, so it must be a CA too.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=True, key_cert_sign=True,
            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
    )
    sans = _san_entries(hostnames)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _cert_still_good(cert_path: Path, hostnames: list[str] | tuple[str, ...]) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc - _RENEW_MARGIN < now:
        return False
    present = set(sans)
    return all(entry in present for entry in _san_entries(hostnames))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
