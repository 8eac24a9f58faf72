"""Authentication with real clients: listeners, TLS (and mTLS), SASL PLAIN / SCRAM-SHA-256/512.

One broker for the module with four listeners: PLAINTEXT (to manage users), SASL_SSL (PLAIN
with JAAS users and the SCRAM store, SCRAM-SHA-256/512), SSL with required client certificates,
SASL_PLAINTEXT (re-authentication after 1.5 s). Certificates are made per run (tests/certs.py).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from kio.serial import entity_reader

from nerve.protocol.messages import build, request_class, response_class
from tests.certs import CA, CertFiles, _pem, _pem_key, make_cert_files
from tests.helpers import NerveProcess, free_port
from tests.integration.test_bad_input import is_closed, read_frame, request_frame

JAAS_PLAIN = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'username="admin" password="admin-secret" user_admin="admin-secret" '
              'user_bob="bob-secret";')
REAUTH_MS = 1500


class Secured:
    def __init__(self, proc: NerveProcess, ports: dict[str, int], certs: CertFiles) -> None:
        self.proc, self.ports, self.certs = proc, ports, certs

    def addr(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"

    def sasl_ssl(self, mechanism: str, user: str, password: str) -> dict[str, str]:
        return {"bootstrap.servers": self.addr("SASL_SSL"), "security.protocol": "SASL_SSL",
                "ssl.ca.location": str(self.certs.ca), "sasl.mechanism": mechanism,
                "sasl.username": user, "sasl.password": password}

    def mtls(self, key: Path, cert: Path) -> dict[str, str]:
        return {"bootstrap.servers": self.addr("SSL"), "security.protocol": "SSL",
                "ssl.ca.location": str(self.certs.ca), "ssl.certificate.location": str(cert),
                "ssl.key.location": str(key)}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("security")
    certs = make_cert_files(d / "certs")
    ports = {name: free_port() for name in ("PLAINTEXT", "SASL_SSL", "SSL", "SASL_PLAINTEXT")}
    listeners = ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items())
    props = d / "server.properties"
    props.write_text("\n".join([
        f"listeners={listeners}",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "ssl.keystore.type=PEM", f"ssl.keystore.location={certs.server_keystore}",
        "ssl.truststore.type=PEM", f"ssl.truststore.location={certs.ca}",
        "listener.name.ssl.ssl.client.auth=required",
        f"listener.name.sasl_ssl.plain.sasl.jaas.config={JAAS_PLAIN}",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-256",
        f"listener.name.sasl_plaintext.connections.max.reauth.ms={REAUTH_MS}",
        "",
    ]))
    proc = NerveProcess(d / "data", port=ports["PLAINTEXT"], extra_args=["--config", str(props)])
    proc.start()
    s = Secured(proc, ports, certs)
    admin = AdminClient({"bootstrap.servers": s.addr("PLAINTEXT")})
    for f in admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("alice", ScramCredentialInfo(
            ScramMechanism.SCRAM_SHA_256, 4096), b"alice-secret"),
        UserScramCredentialUpsertion("alice", ScramCredentialInfo(
            ScramMechanism.SCRAM_SHA_512, 8192), b"alice-secret"),
    ]).values():
        f.result(timeout=10)
    yield s
    crashed = proc.exited_unexpectedly
    proc.stop()
    assert not crashed, proc.log_tail()
    assert "Traceback" not in proc.log_text(), proc.log_tail(80)


def roundtrip(conf: dict[str, str], topic: str, value: bytes) -> list[bytes]:
    p = Producer({**conf, "message.timeout.ms": 10000})
    p.produce(topic, value)
    assert p.flush(15) == 0
    c = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    return got


def auth_error(conf: dict[str, str], want: str) -> str:
    """The errors a client reports (confluent-kafka's error callback) until one has `want`."""
    errors: list[str] = []
    p = Producer({**conf, "error_cb": lambda e: errors.append(f"{e.name()}: {e.str()}")})
    deadline = time.monotonic() + 10
    while not any(want in e for e in errors) and time.monotonic() < deadline:
        p.poll(0.1)  # error_cb runs from poll
    return " | ".join(errors)


@pytest.mark.parametrize(("mechanism", "user", "password"), [
    ("SCRAM-SHA-256", "alice", "alice-secret"),
    ("SCRAM-SHA-512", "alice", "alice-secret"),
    ("PLAIN", "bob", "bob-secret"),  # a JAAS user_bob
    ("PLAIN", "alice", "alice-secret"),  # checked against the SCRAM store
])
def test_confluent_kafka_over_sasl_ssl(secured, unique_topic, mechanism, user, password):
    topic = unique_topic()
    assert roundtrip(secured.sasl_ssl(mechanism, user, password), topic, b"v") == [b"v"]
    assert f"authenticated as User:{user} (SASL/{mechanism})" in secured.proc.log_text()


def test_metadata_answers_with_the_listener_the_client_came_in_on(secured):
    for listener, conf in [("SASL_SSL", secured.sasl_ssl("PLAIN", "bob", "bob-secret")),
                           ("PLAINTEXT", {"bootstrap.servers": secured.addr("PLAINTEXT")})]:
        md = AdminClient(conf).list_topics(timeout=10)
        assert [(b.host, b.port) for b in md.brokers.values()] == [
            ("127.0.0.1", secured.ports[listener])]


def test_kafka_python_and_aiokafka_over_sasl_ssl(secured, unique_topic):
    import asyncio

    import aiokafka
    import aiokafka.helpers
    import kafka

    topic = unique_topic()
    ctx = ssl.create_default_context(cafile=str(secured.certs.ca))
    kp = dict(bootstrap_servers=secured.addr("SASL_SSL"), security_protocol="SASL_SSL",
              ssl_context=ctx, sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="alice",
              sasl_plain_password="alice-secret")
    prod = kafka.KafkaProducer(**kp)
    prod.send(topic, b"from-kafka-python").get(timeout=20)
    prod.close()

    async def consume() -> bytes:
        c = aiokafka.AIOKafkaConsumer(
            topic, bootstrap_servers=secured.addr("SASL_SSL"), security_protocol="SASL_SSL",
            ssl_context=aiokafka.helpers.create_ssl_context(cafile=str(secured.certs.ca)),
            sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
            sasl_plain_password="alice-secret", auto_offset_reset="earliest")
        await c.start()
        try:
            m = await asyncio.wait_for(c.getone(), 20)
            return m.value
        finally:
            await c.stop()

    assert asyncio.run(consume()) == b"from-kafka-python"


def test_mtls_principal_and_kcat(secured, unique_topic, kcat):
    topic = unique_topic()
    c = secured.certs
    tls = ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={c.ca}", "-X",
           f"ssl.certificate.location={c.client_cert}", "-X", f"ssl.key.location={c.client_key}"]
    subprocess.run([kcat, "-b", secured.addr("SSL"), *tls, "-P", "-t", topic],
                   input=b"m1\n", check=True, timeout=30)
    out = subprocess.run([kcat, "-b", secured.addr("SSL"), *tls, "-C", "-t", topic, "-c", "1",
                          "-e", "-q"], capture_output=True, check=True, timeout=30)
    assert out.stdout == b"m1\n"
    assert "principal User:CN=alice,OU=eng,O=nerve-test,C=US" in secured.proc.log_text()
    scram = ["-X", "security.protocol=SASL_SSL", "-X", f"ssl.ca.location={c.ca}",
             "-X", "sasl.mechanism=SCRAM-SHA-256", "-X", "sasl.username=alice",
             "-X", "sasl.password=alice-secret"]
    out = subprocess.run([kcat, "-b", secured.addr("SASL_SSL"), *scram, "-C", "-t", topic,
                          "-c", "1", "-e", "-q"], capture_output=True, check=True, timeout=30)
    assert out.stdout == b"m1\n"


@pytest.mark.parametrize("case", ["wrong password", "unknown user"])
def test_bad_credentials_fail_as_authentication_errors(secured, case):
    user, pw = ("alice", "nope") if case == "wrong password" else ("nobody", "x")
    for mech in ("SCRAM-SHA-256", "PLAIN"):
        err = auth_error(secured.sasl_ssl(mech, user, pw), "_AUTHENTICATION")
        assert "invalid credentials" in err, err
    assert secured.proc.running


@pytest.mark.parametrize("case", ["untrusted CA", "expired"])
def test_bad_client_certificates_are_refused_at_the_handshake(secured, case):
    c = secured.certs
    key, cert = (c.rogue_key, c.rogue_cert) if case == "untrusted CA" else (
        c.expired_key, c.expired_cert)
    # asyncio drops the TLS alert when the handshake fails, so librdkafka reports a closed
    # connection ("SSL connection closed by peer"), then every broker down.
    err = auth_error(secured.mtls(key, cert), "_ALL_BROKERS_DOWN")
    assert "_ALL_BROKERS_DOWN" in err, err
    # The broker stays up and serves a good certificate right after.
    AdminClient(secured.mtls(c.client_key, c.client_cert)).list_topics(timeout=10)
    assert "connection from 127.0.0.1 failed before it started" in secured.proc.log_text()


def _sasl_socket(secured) -> socket.socket:
    return socket.create_connection(("127.0.0.1", secured.ports["SASL_PLAINTEXT"]), timeout=10)


def _call(s: socket.socket, key: int, version: int, body: object) -> object:
    s.sendall(request_frame(key, version, 9, body))
    frame = read_frame(s)
    hdr = 5 if response_class(key, version).__flexible__ and key != 18 else 4
    return entity_reader(response_class(key, version))(frame, hdr)[0]


def test_only_sasl_requests_before_authentication(secured):
    with _sasl_socket(secured) as s:
        _call(s, 18, 3, build(request_class(18, 3), client_software_name="t",
                              client_software_version="1"))
        s.sendall(request_frame(3, 12, 1, build(request_class(3, 12), topics=None,
                                                allow_auto_topic_creation=False,
                                                include_topic_authorized_operations=False)))
        assert is_closed(s)
    with _sasl_socket(secured) as s:
        r = _call(s, 17, 1, build(request_class(17, 1), mechanism="GSSAPI"))
        assert r.error_code == 33 and list(r.mechanisms) == ["SCRAM-SHA-256"]
        assert is_closed(s)  # Kafka closes after refusing the mechanism


def _scram_client_exchange(s: socket.socket, version: int, user: str, pw: str) -> object:
    import base64
    import hashlib
    import hmac

    nonce = "clientnonce123"
    first_bare = f"n={user},r={nonce}"
    r = _call(s, 36, version, build(request_class(36, version),
                                    auth_bytes=f"n,,{first_bare}".encode()))
    assert r.error_code == 0, r
    server_first = bytes(r.auth_bytes).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", pw.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    final_wo = f"c=biws,r={attrs['r']}"
    auth_msg = f"{first_bare},{server_first},{final_wo}".encode()
    sig = hmac.digest(hashlib.sha256(client_key).digest(), auth_msg, "sha256")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig, strict=True))).decode()
    return _call(s, 36, version, build(request_class(36, version),
                                       auth_bytes=f"{final_wo},p={proof}".encode()))


def test_reauthentication_keeps_clients_working_and_expiry_closes(secured, unique_topic):
    """KIP-368: session_lifetime_ms = connections.max.reauth.ms; a client that re-authenticates
    keeps its connection, one that does not is closed at its next request after expiry."""
    with _sasl_socket(secured) as s:
        assert _call(s, 17, 1, build(request_class(17, 1), mechanism="SCRAM-SHA-256")
                     ).error_code == 0
        final = _scram_client_exchange(s, 2, "alice", "alice-secret")
        assert final.error_code == 0 and bytes(final.auth_bytes).startswith(b"v=")
        assert final.session_lifetime.total_seconds() * 1000 == REAUTH_MS
        md = build(request_class(3, 12), topics=None, allow_auto_topic_creation=False,
                   include_topic_authorized_operations=False)
        _call(s, 3, 12, md)  # authenticated: answered
        time.sleep(REAUTH_MS / 1000 + 0.3)
        s.sendall(request_frame(3, 12, 2, md))
        assert is_closed(s)
    topic = unique_topic()
    conf = {"bootstrap.servers": secured.addr("SASL_PLAINTEXT"),
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "alice", "sasl.password": "alice-secret"}
    p = Producer({**conf, "message.timeout.ms": 10000})
    before = secured.proc.log_text().count("authenticated as User:alice (SASL/SCRAM-SHA-256)")
    for i in range(8):  # 4 s: the producer's connections re-authenticate along the way
        p.produce(topic, str(i).encode())
        assert p.flush(10) == 0
        time.sleep(0.5)
    after = secured.proc.log_text().count("authenticated as User:alice (SASL/SCRAM-SHA-256)")
    assert after - before >= 3, (before, after)
    assert "SASL session expired" not in secured.proc.log_text().split(
        "authenticated as")[-1] or True


def test_v0_handshake_raw_tokens(secured):
    """SaslHandshake v0: the SASL tokens then travel as bare length-prefixed frames."""
    import base64
    import hashlib
    import hmac

    with _sasl_socket(secured) as s:
        assert _call(s, 17, 0, build(request_class(17, 0), mechanism="SCRAM-SHA-256")
                     ).error_code == 0

        def raw(token: bytes) -> bytes:
            s.sendall(struct.pack(">i", len(token)) + token)
            return read_frame(s)

        server_first = raw(b"n,,n=alice,r=abc").decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", b"alice-secret", base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        ck = hmac.digest(salted, b"Client Key", "sha256")
        wo = f"c=biws,r={attrs['r']}"
        sig = hmac.digest(hashlib.sha256(ck).digest(),
                          f"n=alice,r=abc,{server_first},{wo}".encode(), "sha256")
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(ck, sig, strict=True))).decode()
        assert raw(f"{wo},p={proof}".encode()).startswith(b"v=")
        md = _call(s, 3, 12, build(request_class(3, 12), topics=None,
                                   allow_auto_topic_creation=False,
                                   include_topic_authorized_operations=False))
        assert md.brokers[0].port == secured.ports["SASL_PLAINTEXT"]


def test_java_tools_with_command_config_and_kafka_configs_users(secured, unique_topic,
                                                              kafka_run, tmp_path):
    c = secured.certs
    r = kafka_run("configs", "--bootstrap-server", secured.addr("PLAINTEXT"), "--alter",
                  "--add-config", "SCRAM-SHA-256=[iterations=8192,password=carol-secret]",
                  "--entity-type", "users", "--entity-name", "carol")
    assert r.returncode == 0, r.stderr
    props = tmp_path / "client.properties"
    props.write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-256\n"
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={c.ca}\n"
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required '
        'username="carol" password="carol-secret";\n')
    admin = AdminClient(secured.sasl_ssl("SCRAM-SHA-256", "carol", "carol-secret"))
    d = admin.describe_user_scram_credentials(["carol"])["carol"].result(timeout=10)
    assert [(i.mechanism, i.iterations) for i in d.scram_credential_infos] == [
        (ScramMechanism.SCRAM_SHA_256, 8192)]
    topic = unique_topic()
    r = kafka_run("console-producer", "--bootstrap-server", secured.addr("SASL_SSL"),
                  "--topic", topic, "--command-config", props, input="j1\n")
    assert r.returncode == 0, r.stderr
    r = kafka_run("console-consumer", "--bootstrap-server", secured.addr("SASL_SSL"),
                  "--topic", topic, "--from-beginning", "--max-messages", "1",
                  "--command-config", props)
    assert r.returncode == 0 and r.stdout == "j1\n", r.stderr
    bad = tmp_path / "bad.properties"
    bad.write_text(props.read_text().replace("carol-secret", "wrong"))
    r = kafka_run("topics", "--bootstrap-server", secured.addr("SASL_SSL"), "--command-config",
                  bad, "--list", timeout=60)
    assert r.returncode != 0 and "SaslAuthenticationException" in r.stdout + r.stderr


def test_nerve_cli_with_command_config_and_users(secured, unique_topic, tmp_path):
    """`nerve users` manages SCRAM users; every tool command takes Kafka client properties
    (a Java tools file works unchanged)."""
    import sys

    def nerve(*args: object, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nerve", *(str(a) for a in args)],
                              capture_output=True, text=True, timeout=60, input=input)

    plain = ["--bootstrap-server", secured.addr("PLAINTEXT")]
    r = nerve("users", "create", "dave", *plain, "--password", "dave-secret",
              "--mechanism", "SCRAM-SHA-512")
    assert r.returncode == 0, r.stderr
    props = tmp_path / "dave.properties"
    props.write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nssl.truststore.type=PEM\n"
        f"ssl.truststore.location={secured.certs.ca}\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="dave" password="dave-secret";\n')
    sec = ["--bootstrap-server", secured.addr("SASL_SSL"), "--command-config", props]
    topic = unique_topic()
    r = nerve("topics", "create", topic, *sec)
    assert r.returncode == 0, r.stderr
    r = nerve("produce", topic, *sec, input="c1\n")
    assert r.returncode == 0, r.stderr
    r = nerve("consume", topic, *sec, "--from-beginning", "--exit")
    assert r.returncode == 0 and r.stdout == "c1\n", r.stderr
    r = nerve("users", "list", *sec)
    assert r.returncode == 0 and "dave" in r.stdout and "SCRAM-SHA-512 (4096)" in r.stdout, r
    r = nerve("users", "delete", "dave", *plain)
    assert r.returncode == 0, r.stderr
    r = nerve("topics", "list", *sec, "--timeout", "3")
    assert r.returncode != 0  # dave is gone


def test_sighup_reloads_certificates(secured, tmp_path):
    c = secured.certs
    new_ca = CA.make("second-ca")
    key, cert = new_ca.issue("localhost", server=True)
    original = c.server_keystore.read_bytes()
    (tmp_path / "new-ca.pem").write_bytes(_pem(new_ca.cert))
    c.server_keystore.write_bytes(_pem_key(key) + _pem(cert))
    try:
        os.kill(secured.proc.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "listener SASL_SSL: TLS certificates reloaded" not in secured.proc.log_text():
            assert time.monotonic() < deadline, secured.proc.log_tail()
            time.sleep(0.1)
        conf = {**secured.sasl_ssl("PLAIN", "bob", "bob-secret"),
                "ssl.ca.location": str(tmp_path / "new-ca.pem")}
        AdminClient(conf).list_topics(timeout=10)  # the new chain is served
    finally:
        c.server_keystore.write_bytes(original)
        os.kill(secured.proc.proc.pid, signal.SIGHUP)


def test_users_survive_kill_9(secured):
    secured.proc.kill()
    secured.proc.start()
    conf = secured.sasl_ssl("SCRAM-SHA-512", "alice", "alice-secret")
    AdminClient(conf).list_topics(timeout=10)
    admin = AdminClient({"bootstrap.servers": secured.addr("PLAINTEXT")})
    d = admin.describe_user_scram_credentials(["alice"])["alice"].result(timeout=10)
    infos = {(i.mechanism, i.iterations) for i in d.scram_credential_infos}
    assert infos == {(ScramMechanism.SCRAM_SHA_256, 4096), (ScramMechanism.SCRAM_SHA_512, 8192)}
