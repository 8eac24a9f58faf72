"""SASL and SCRAM users: the same raw requests against nerve and a Kafka 4.4.0 broker with a
SASL_PLAINTEXT listener (SCRAM-SHA-256 and PLAIN); error codes and answers must match.

Users are managed over PLAINTEXT (AlterUserScramCredentials / DescribeUserScramCredentials);
the SASL listener is asked for an unknown mechanism, a wrong password, and a request before
authentication.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.compat.conftest import KafkaProcess, KafkaStartError, _kafka_libs_ready
from tests.compat.wire import WireClient
from tests.helpers import NerveProcess, free_port

pytestmark = [pytest.mark.compat, pytest.mark.slow]

SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
PLAIN_JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
              'user_bob="bob-secret";')
SETS = {
    "sasl.enabled.mechanisms": "SCRAM-SHA-256,PLAIN",
    "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": SCRAM_JAAS,
    "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN_JAAS,
}


@dataclass
class SaslBroker:
    name: str
    plaintext: str
    sasl: str


@pytest.fixture(scope="module", params=["nerve", "kafka"])
def broker(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    sasl_port = free_port()
    if request.param == "kafka":
        if not _kafka_libs_ready():
            pytest.fail("Kafka jars missing: scripts/install-test-deps jars", pytrace=False)
        proc = KafkaProcess(tmp_path_factory.mktemp("kafka-sasl"), sets=SETS,
                            listeners=[f"SASL_PLAINTEXT:SASL_PLAINTEXT:{sasl_port}"])
        try:
            proc.start()
        except KafkaStartError as e:
            pytest.fail(str(e), pytrace=False)
        yield SaslBroker("kafka", proc.bootstrap, f"127.0.0.1:{sasl_port}")
        proc.stop()
        return
    base = tmp_path_factory.mktemp("nerve-sasl")
    port = free_port()
    sets = {**SETS, "listeners": f"PLAINTEXT://127.0.0.1:{port},"
                                 f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}"}
    nerve = NerveProcess(base / "data", port=port,
                         extra_args=[a for k, v in sets.items() for a in ("--set", f"{k}={v}")])
    nerve.start()
    yield SaslBroker("nerve", nerve.bootstrap, f"127.0.0.1:{sasl_port}")
    nerve.stop()
    assert "Traceback" not in nerve.log_text()


def _salted(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def _alter(b: SaslBroker, deletions: list[dict[str, Any]],
           upsertions: list[dict[str, Any]]) -> list[tuple[str, int]]:
    with WireClient(b.plaintext) as c:
        r = c.call(51, 0, deletions=deletions, upsertions=upsertions)
    return sorted((x.user, int(x.error_code)) for x in r.results)


def _describe(b: SaslBroker, users: list[str] | None) -> list[tuple[str, int, list[Any]]]:
    with WireClient(b.plaintext) as c:
        r = c.call(50, 0, users=None if users is None else [{"name": u} for u in users])
    return sorted((x.user, int(x.error_code),
                   [(int(i.mechanism), int(i.iterations)) for i in x.credential_infos])
                  for x in r.results)


def _closed(c: WireClient) -> bool:
    try:
        return c.sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return True


def _scram_login(b: SaslBroker, user: str, password: str) -> tuple[int, str | None]:
    with WireClient(b.sasl) as c:
        assert int(c.call(17, 1, mechanism="SCRAM-SHA-256").error_code) == 0
        first = f"n={user},r={uuid.uuid4().hex}"
        r = c.call(36, 2, auth_bytes=f"n,,{first}".encode())
        if int(r.error_code) != 0:
            return int(r.error_code), r.error_message
        server_first = bytes(r.auth_bytes).decode()
        a = dict(kv.split("=", 1) for kv in server_first.split(","))
        salted = _salted(password, base64.b64decode(a["s"]), int(a["i"]))
        ck = hmac.digest(salted, b"Client Key", "sha256")
        wo = f"c=biws,r={a['r']}"
        sig = hmac.digest(hashlib.sha256(ck).digest(), f"{first},{server_first},{wo}".encode(),
                          "sha256")
        proof = base64.b64encode(bytes(x ^ y for x, y in zip(ck, sig, strict=True))).decode()
        r = c.call(36, 2, auth_bytes=f"{wo},p={proof}".encode())
        return int(r.error_code), r.error_message


def test_scram_credentials_and_sasl_errors_match_kafka(broker: SaslBroker) -> None:
    u = f"u{uuid.uuid4().hex[:6]}"
    salt = os.urandom(16)
    up = {"name": u, "mechanism": 1, "iterations": 4096, "salt": salt,
          "salted_password": _salted("secret", salt, 4096)}
    got: dict[str, Any] = {}
    got["upsert"] = _alter(broker, [], [up])
    got["too_few_iterations"] = _alter(broker, [], [{**up, "name": u + "x", "iterations": 100}])
    got["unknown_mechanism"] = _alter(broker, [], [{**up, "name": u + "y", "mechanism": 0}])
    got["delete_missing"] = _alter(broker, [{"name": u + "z", "mechanism": 1}], [])
    got["duplicate"] = _alter(broker, [{"name": u, "mechanism": 1}], [up])
    deadline = time.monotonic() + 10  # Kafka applies it through its controller: wait for it
    while _describe(broker, [u])[0][1] != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    got["describe"] = _describe(broker, [u, u + "missing"])
    got["describe_twice"] = _describe(broker, [u, u])
    got["login_ok"] = _scram_login(broker, u, "secret")[0]
    got["login_wrong_password"] = _scram_login(broker, u, "nope")
    got["login_unknown_user"] = _scram_login(broker, u + "nobody", "secret")[0]
    with WireClient(broker.sasl) as c:
        r = c.call(17, 1, mechanism="GSSAPI")
        got["unknown_mechanism_handshake"] = (int(r.error_code), sorted(r.mechanisms))
        got["closed_after_unknown_mechanism"] = _closed(c)
    with WireClient(broker.sasl) as c:
        c.sock.settimeout(10)
        try:
            c.call(3, 12, topics=None, allow_auto_topic_creation=False,
                   include_topic_authorized_operations=False)
            got["metadata_before_auth"] = "answered"
        except ConnectionError:
            got["metadata_before_auth"] = "closed"
    assert got == {
        "upsert": [(u, 0)],
        "too_few_iterations": [(u + "x", 93)],
        "unknown_mechanism": [(u + "y", 33)],
        "delete_missing": [(u + "z", 91)],
        "duplicate": [(u, 92)],
        "describe": [(u, 0, [(1, 4096)]), (u + "missing", 91, [])],
        "describe_twice": [(u, 92, [])],
        "login_ok": 0,
        "login_wrong_password": (58, "Authentication failed during authentication due to "
                                     "invalid credentials with SASL mechanism SCRAM-SHA-256"),
        "login_unknown_user": 58,
        "unknown_mechanism_handshake": (33, ["PLAIN", "SCRAM-SHA-256"]),
        "closed_after_unknown_mechanism": True,
        "metadata_before_auth": "closed",
    }, broker.name


