"""Unit tests of nerve/security: SCRAM against RFC 7677's example, principal mapping rules,
JAAS lines, properties continuation lines, listener parsing."""

from __future__ import annotations

import base64

import pytest

from nerve.config import BrokerConfig, ConfigError, parse_properties
from nerve.security import scram
from nerve.security.listeners import parse_listeners
from nerve.security.sasl import parse_jaas
from nerve.security.tls import PrincipalMapper, subject_dn


def test_scram_sha_256_rfc7677_example(monkeypatch):
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    cred = scram.new_credential("SCRAM-SHA-256", "pencil", 4096, salt)
    monkeypatch.setattr(scram.secrets, "token_urlsafe", lambda n: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    server = scram.ScramServer("SCRAM-SHA-256", lambda u, m: cred if u == "user" else None)
    first = server.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first == (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    final = server.step(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert server.complete and server.username == "user"
    assert scram.password_matches("SCRAM-SHA-256", cred, "pencil")
    assert not scram.password_matches("SCRAM-SHA-256", cred, "pencil2")


def test_scram_wrong_proof_and_unknown_user_fail():
    cred = scram.new_credential("SCRAM-SHA-512", "pw")
    server = scram.ScramServer("SCRAM-SHA-512", lambda u, m: cred if u == "a" else None)
    with pytest.raises(scram.ScramError):
        scram.ScramServer("SCRAM-SHA-512", lambda u, m: None).step(b"n,,n=b,r=x")
    first = server.step(b"n,,n=a,r=x").decode()
    nonce = first.split(",")[0][2:]
    with pytest.raises(scram.ScramError):
        server.step(f"c=biws,r={nonce},p={base64.b64encode(b'0' * 64).decode()}".encode())


def test_principal_mapping_rules():
    dn = "CN=alice,OU=eng,O=nerve-test,C=US"
    assert PrincipalMapper(None).name(dn) == dn
    m = PrincipalMapper("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,"
                        "RULE:^CN=(.*?),OU=(.*?),O=(.*?),C=(.*?)$/$1@$2/U,DEFAULT")
    assert m.name(dn) == "ALICE@ENG"
    assert m.name("CN=svc,OU=ServiceUsers,O=x") == "svc"
    assert m.name("CN=x") == "CN=x"
    with pytest.raises(ConfigError):
        PrincipalMapper("RULE:broken")
    cert = {"subject": ((("countryName", "US"),), (("organizationName", "a,b"),),
                        (("commonName", "bob"),))}
    assert subject_dn(cert) == "CN=bob,O=a\\,b,C=US"


def test_jaas_line_and_continued_properties():
    text = ('listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.'
            'plain.PlainLoginModule required \\\n'
            '    username="admin" password="a b" \\\n'
            '    user_admin="a b" user_alice=alice-secret;\n'
            'ssl.keystore.type=PEM\n')
    props = parse_properties(text)
    assert props["ssl.keystore.type"] == "PEM"
    opts = parse_jaas(props["listener.name.sasl_ssl.plain.sasl.jaas.config"])
    assert opts == {"username": "admin", "password": "a b", "user_admin": "a b",
                    "user_alice": "alice-secret"}
    BrokerConfig(dict(props))  # listener-prefixed keys are accepted
    with pytest.raises(ConfigError):
        BrokerConfig({"listener.name.x.no.such.key": "1"})


def test_listeners_and_advertised_listeners():
    cfg = BrokerConfig({
        "listeners": "PLAINTEXT://127.0.0.1:9092,SECURE://:9093",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SECURE:SASL_SSL",
        "advertised.listeners": "PLAINTEXT://a.example:19092,SECURE://b.example:19093",
    })
    specs = parse_listeners(cfg, "ignored", 1, None)
    assert [(s.name, s.protocol, s.host, s.port, s.advertised_host, s.advertised_port)
            for s in specs] == [
        ("PLAINTEXT", "PLAINTEXT", "127.0.0.1", 9092, "a.example", 19092),
        ("SECURE", "SASL_SSL", "0.0.0.0", 9093, "b.example", 19093)]
    assert [s.name for s in parse_listeners(BrokerConfig(), "127.0.0.1", 9, None)] == [
        "PLAINTEXT"]
    with pytest.raises(ConfigError):
        parse_listeners(BrokerConfig({"listeners": "OTHER://:1"}), "h", 1, None)
