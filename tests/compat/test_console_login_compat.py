"""The console's login and its users/ACLs/quotas pages against nerve and a Kafka 4.4.0 broker
(StandardAuthorizer, SCRAM-SHA-256 on a SASL_PLAINTEXT listener), through `nerve console
--command-config` (security.protocol=SASL_PLAINTEXT): the same steps, the same outcome.

Setup goes over each broker's PLAINTEXT listener as User:ANONYMOUS, a super user there (Kafka's
broker and controller talk to each other as ANONYMOUS over PLAINTEXT too).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from tests.compat.conftest import KafkaProcess, KafkaStartError, _kafka_libs_ready
from tests.helpers import REPO_ROOT, NerveProcess, free_port

pytestmark = [pytest.mark.compat, pytest.mark.slow]

TOKEN_RE = re.compile(r'name="csrf" value="([0-9a-f]+)"')
SETS = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": "User:ANONYMOUS;User:admin",
    "sasl.enabled.mechanisms": "SCRAM-SHA-256",
    "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config":
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
}
USERS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}


@dataclass
class Console:
    name: str
    plaintext: str
    sasl: str
    url: str
    topics: dict[str, str]

    def conf(self, user: str, password: str) -> dict[str, str]:
        return {"bootstrap.servers": self.sasl, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": user,
                "sasl.password": password}


def _setup(plaintext: str, suffix: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": plaintext})
    for f in admin.alter_user_scram_credentials([
            UserScramCredentialUpsertion(u, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256,
                                                                4096), p.encode())
            for u, p in USERS.items()]).values():
        f.result(30)
    topics = {u: f"{u}-only-{suffix}" for u in ("alice", "bob")}
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics.values()]).values():
        f.result(30)
    for f in admin.create_acls([
            AclBinding(ResourceType.TOPIC, t, ResourcePatternType.LITERAL, f"User:{u}", "*",
                       AclOperation.DESCRIBE, AclPermissionType.ALLOW)
            for u, t in topics.items()]).values():
        f.result(30)
    return topics


def _console(sasl: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    props = tmp / "console.properties"
    props.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n")
    port = free_port()
    log = tmp / "console.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nerve", "console", "--bootstrap-server", sasl,
             "--command-config", str(props), "--port", str(port)],
            cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while "nerve console for" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module", params=["nerve", "kafka"])
def console(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp(f"console-{request.param}")
    sasl_port = free_port()
    if request.param == "kafka":
        if not _kafka_libs_ready():
            pytest.fail("Kafka jars missing: scripts/install-test-deps jars", pytrace=False)
        broker = KafkaProcess(tmp / "kafka", sets=SETS,
                              listeners=[f"SASL_PLAINTEXT:SASL_PLAINTEXT:{sasl_port}"])
        try:
            broker.start()
        except KafkaStartError as e:
            pytest.fail(str(e), pytrace=False)
        plaintext, stop = broker.bootstrap, broker.stop
    else:
        port = free_port()
        sets = {**SETS, "listeners": f"PLAINTEXT://127.0.0.1:{port},"
                                     f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
                "listener.security.protocol.map":
                    "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"}
        nerve = NerveProcess(tmp / "data", port=port, extra_args=[
            a for k, v in sets.items() for a in ("--set", f"{k}={v}")])
        nerve.start()
        plaintext, stop = nerve.bootstrap, nerve.stop
    sasl = f"127.0.0.1:{sasl_port}"
    topics = _setup(plaintext, uuid.uuid4().hex[:6])
    proc, url = _console(sasl, tmp)
    yield Console(request.param, plaintext, sasl, url, topics)
    proc.terminate()
    proc.wait(10)
    stop()
    text = (tmp / "console.log").read_text()
    assert "Traceback" not in text, text[-4000:]
    assert not any(p in text for p in (*USERS.values(), "dave-secret")), text[-4000:]


@contextlib.contextmanager
def login(url: str, user: str, password: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as http:
        page = http.get("/login")
        r = http.post("/login", headers={"origin": url}, data={
            "username": user, "password": password, "csrf": TOKEN_RE.findall(page.text)[0]})
        assert r.status_code == 303, (r.status_code, r.text)
        yield http


def _produce_error(conf: dict[str, str], topic: str) -> str | None:
    errors: list[str | None] = []
    p = Producer({**conf, "message.timeout.ms": 10000, "allow.auto.create.topics": False})
    p.produce(topic, b"v", on_delivery=lambda err, _m: errors.append(
        None if err is None else err.name()))
    p.flush(20)
    return errors[0] if errors else "no delivery report"


def test_each_user_sees_what_acls_allow(console: Console) -> None:
    seen = {}
    for user in ("alice", "bob"):
        with login(console.url, user, USERS[user]) as http:
            names = {t["name"] for t in http.get("/api/overview").json()["topics"]}
            seen[user] = names & set(console.topics.values())
            page = http.get("/security/acls")
            assert "CLUSTER_AUTHORIZATION_FAILED" in page.text, console.name
    assert seen == {"alice": {console.topics["alice"]}, "bob": {console.topics["bob"]}}
    with httpx.Client(base_url=console.url, timeout=60) as http:
        page = http.get("/login")
        r = http.post("/login", headers={"origin": console.url}, data={
            "username": "alice", "password": "wrong", "csrf": TOKEN_RE.findall(page.text)[0]})
        assert r.status_code == 401 and "invalid credentials" in r.text, (console.name, r.text)


def test_admin_pages_change_the_cluster(console: Console) -> None:
    url, topic = console.url, console.topics["bob"]
    dave = console.conf("dave", "dave-secret")
    with login(url, "admin", USERS["admin"]) as http:
        csrf = TOKEN_RE.findall(http.get("/security/users").text)[0]
        r = http.post("/security/users", headers={"origin": url}, data={
            "name": "dave", "password": "dave-secret", "mechanism": "SCRAM-SHA-256",
            "iterations": "4096", "csrf": csrf})
        assert r.status_code == 303, r.text
        assert "dave" in http.get("/security/users").text
        assert _produce_error(dave, topic) == "TOPIC_AUTHORIZATION_FAILED"
        for op in ("DESCRIBE", "WRITE"):
            r = http.post("/security/acls", headers={"origin": url}, data={
                "resource_type": "TOPIC", "name": topic, "pattern": "LITERAL",
                "principal": "User:dave", "host": "*", "operation": op,
                "permission": "ALLOW", "csrf": csrf})
            assert r.status_code == 303, r.text
        listed = http.get("/security/acls", params={"principal": "User:dave"}).text
        assert listed.count("<td>User:dave</td>") == 2, listed
        assert _produce_error(dave, topic) is None
        r = http.post("/security/acls/delete", headers={"origin": url}, data={
            "resource_type": "TOPIC", "name": topic, "pattern": "LITERAL",
            "principal": "User:dave", "host": "*", "operation": "WRITE", "permission": "ALLOW",
            "csrf": csrf})
        assert r.status_code == 303 and "deleted+1" in r.headers["location"]
        deadline = time.monotonic() + 20  # Kafka's authorizer applies metadata asynchronously
        while _produce_error(dave, topic) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _produce_error(dave, topic) == "TOPIC_AUTHORIZATION_FAILED"
        r = http.post("/security/quotas", headers={"origin": url}, data={
            "user": "dave", "client-id": "<default>", "producer_byte_rate": "1048576",
            "request_percentage": "50", "csrf": csrf})
        assert r.status_code == 303, r.text
        deadline = time.monotonic() + 20
        page = http.get("/security/quotas").text
        while "1048576" not in page and time.monotonic() < deadline:
            time.sleep(0.5)
            page = http.get("/security/quotas").text
        row = re.search(r"<tr><td>dave</td><td>&lt;default&gt;</td>(.*?)</tr>", page)
        assert row is not None, page
        assert re.findall(r'<td class="num">([^<]*)</td>', row.group(1)) == [
            "1048576", "-", "50"], row.group(1)
        bad = http.post("/security/quotas", headers={"origin": url}, data={
            "user": "dave", "producer_byte_rate": "1.5", "csrf": csrf})
        assert bad.status_code == 400 and "INVALID_REQUEST" in bad.text, bad.text
