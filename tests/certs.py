"""Test certificates made with `cryptography`: a CA, a server certificate for 127.0.0.1 and
localhost, client certificates (valid, expired, from an untrusted CA), as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_NOW = datetime.datetime.now(datetime.UTC)


def _name(cn: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nerve-test")]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls, cn: str = "nerve-test-ca") -> CA:
        key = _key()
        name = _name(cn)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(_NOW - datetime.timedelta(days=1))
                .not_valid_after(_NOW + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def issue(self, cn: str, ou: str | None = None, *, server: bool = False,
              expired: bool = False) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = _key()
        start = _NOW - datetime.timedelta(days=10 if expired else 1)
        end = _NOW - datetime.timedelta(days=2) if expired else _NOW + datetime.timedelta(days=30)
        b = (x509.CertificateBuilder().subject_name(_name(cn, ou))
             .issuer_name(self.cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(end))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        return key, b.sign(self.key, hashes.SHA256())


@dataclass
class CertFiles:
    ca: Path  # the trusted CA (truststore for both sides)
    server_keystore: Path  # key + chain in one PEM file (ssl.keystore.location)
    server_key: Path
    server_cert: Path
    client_key: Path  # CN=alice,OU=eng
    client_cert: Path
    expired_key: Path
    expired_cert: Path
    rogue_key: Path  # from a CA nobody trusts
    rogue_cert: Path
    rogue_ca: Path


def make_cert_files(d: Path) -> CertFiles:
    d.mkdir(parents=True, exist_ok=True)
    ca, rogue = CA.make(), CA.make("rogue-ca")
    skey, scert = ca.issue("localhost", server=True)
    ckey, ccert = ca.issue("alice", "eng")
    ekey, ecert = ca.issue("old", "eng", expired=True)
    rkey, rcert = rogue.issue("mallory", "eng")
    files = {
        "ca.pem": _pem(ca.cert), "rogue-ca.pem": _pem(rogue.cert),
        "server.pem": _pem_key(skey) + _pem(scert) + _pem(ca.cert),
        "server.key": _pem_key(skey), "server.crt": _pem(scert) + _pem(ca.cert),
        "client.key": _pem_key(ckey), "client.crt": _pem(ccert),
        "expired.key": _pem_key(ekey), "expired.crt": _pem(ecert),
        "rogue.key": _pem_key(rkey), "rogue.crt": _pem(rcert),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return CertFiles(d / "ca.pem", d / "server.pem", d / "server.key", d / "server.crt",
                     d / "client.key", d / "client.crt", d / "expired.key", d / "expired.crt",
                     d / "rogue.key", d / "rogue.crt", d / "rogue-ca.pem")
