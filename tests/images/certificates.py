"""Keys and certificates the test registries need, made with `cryptography`:
a CA and a server certificate for 127.0.0.1 and localhost (the TLS
registry), and a self-signed signing certificate (the token server's key,
which the token registry trusts as its `rootcertbundle`).

Everything is written as PEM under a directory the caller owns; private keys
are 0600.
"""

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=2)


@dataclass(frozen=True)
class ServerCertificates:
    """A CA (ca.crt) and the server certificate it signed (server.crt, server.key)."""

    ca: str
    cert: str
    key: str


@dataclass(frozen=True)
class SigningKey:
    """A private key and its self-signed certificate (the token signer)."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    cert_path: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "capsa tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALID_FOR))  # fmt: skip


def _write_cert(path: str, cert: x509.Certificate) -> str:
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: str, key) -> str:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def write_server_certificates(directory: str) -> ServerCertificates:
    """A CA and a server certificate for IP 127.0.0.1 and DNS localhost, in DIRECTORY."""
    os.makedirs(directory, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("capsa test CA")
    ca_usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                             content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False,
                             encipher_only=False, decipher_only=False)  # fmt: skip
    ca_cert = (_builder(ca_name, ca_name, ca_key.public_key())
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(ca_usage, critical=True)
               .sign(ca_key, hashes.SHA256()))  # fmt: skip
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (_builder(_name("127.0.0.1"), ca_name, server_key.public_key())
                   .add_extension(x509.SubjectAlternativeName([
                       x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                       x509.DNSName("localhost")]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False)
                   .sign(ca_key, hashes.SHA256()))  # fmt: skip
    return ServerCertificates(
        ca=_write_cert(os.path.join(directory, "ca.crt"), ca_cert),
        cert=_write_cert(os.path.join(directory, "server.crt"), server_cert),
        key=_write_key(os.path.join(directory, "server.key"), server_key))


def write_signing_key(directory: str) -> SigningKey:
    """An RSA key and its self-signed certificate (DIRECTORY/signer.crt).

    No extended key usage: distribution verifies the token's x5c chain with
    ExtKeyUsageAny, and a certificate without the extension passes for any use.
    """
    os.makedirs(directory, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = _name("capsa test token signer")
    cert = (_builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))  # fmt: skip
    cert_path = _write_cert(os.path.join(directory, "signer.crt"), cert)
    _write_key(os.path.join(directory, "signer.key"), key)
    return SigningKey(key=key, cert=cert, cert_path=cert_path)
