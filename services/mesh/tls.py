"""Mutual TLS between the mesh's internal gRPC services (opt-in: CROSSDOCK_TLS_DIR).

A folder holds the mesh CA (``ca.pem``) and one certificate per identity
(``<name>.pem``, ``<name>.key``, keys mode 0600): every service, plus ``cli`` (the
operator's client: the CLI and the launcher's probes). ``ensure`` makes what is
missing (one machine; on Kubernetes they would come from Secrets). Every internal
server asks for a client certificate signed by the CA; every client shows its own.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

import grpc

from .config import SERVICES

OPERATOR = "cli"
IDENTITIES = (*SERVICES, OPERATOR)
_VALIDITY = datetime.timedelta(days=365)

# Who this process is when it opens a channel: set by a service at start, else the operator.
_identity = OPERATOR


def set_identity(name: str) -> None:
    global _identity
    _identity = name


def identity() -> str:
    return _identity


def _write_key(path: Path, pem: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Crossdock mesh"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(folder: Path, common_name: str = "Crossdock mesh CA") -> None:
    """A new CA in ``folder`` (ca.pem, ca.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_key(folder / "ca.key", key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    (folder / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_cert(folder: Path, name: str) -> None:
    """``<name>.pem`` / ``<name>.key`` signed by the CA in ``folder``, for server and client
    use, SAN localhost, 127.0.0.1 and ``name``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName(name),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(san, critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(folder / f"{name}.key", key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure(folder: Path, names: tuple[str, ...] = IDENTITIES) -> Path:
    """The CA and a certificate per name in ``folder``, made when missing (a new CA
    re-issues every certificate). Returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    fresh_ca = not ((folder / "ca.pem").exists() and (folder / "ca.key").exists())
    if fresh_ca:
        make_ca(folder)
    for name in names:
        if fresh_ca or not ((folder / f"{name}.pem").exists() and (folder / f"{name}.key").exists()):
            make_cert(folder, name)
    return folder


def _read(folder: Path, name: str) -> tuple[bytes, bytes, bytes]:
    folder = Path(folder)
    return ((folder / "ca.pem").read_bytes(), (folder / f"{name}.key").read_bytes(),
            (folder / f"{name}.pem").read_bytes())


def server_credentials(folder: Path | str, name: str) -> grpc.ServerCredentials:
    """A server that serves only clients with a certificate signed by the mesh CA."""
    ca, key, cert = _read(Path(folder), name)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(folder: Path | str, name: str | None = None) -> grpc.ChannelCredentials:
    """A client that trusts only the mesh CA and shows ``name``'s certificate (this process's)."""
    ca, key, cert = _read(Path(folder), name or identity())
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
