"""The console's login on a secured cluster (issue 13), against a real `nerve serve` with
SASL_PLAINTEXT + SCRAM + StandardAuthorizer, with httpx and confluent-kafka.

One broker for the module: a SASL_PLAINTEXT listener (SCRAM-SHA-256 and PLAIN; `admin` is a
JAAS PLAIN user and the super user) and a SASL_SSL one; the embedded console logs people in on
the SASL_PLAINTEXT one, `carol` with the read-only role. alice and bob are SCRAM users with
DESCRIBE on different topics. `nerve console --command-config` logs in over SASL_SSL.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import KafkaException, Producer
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

from tests.certs import make_cert_files
from tests.helpers import REPO_ROOT, NerveProcess, free_port

TOKEN_RE = re.compile(r'name="csrf" value="([0-9a-f]+)"')
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
        'username="admin" password="admin-secret" user_admin="admin-secret";')
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}


class Secured:
    def __init__(self, proc: NerveProcess, url: str, topics: dict[str, str],
                 ssl_port: int, ca: Path) -> None:
        self.proc, self.url, self.topics = proc, url, topics
        self.ssl_port, self.ca = ssl_port, ca

    def conf(self, user: str, password: str, mechanism: str = "SCRAM-SHA-256") -> dict[str, str]:
        return {"bootstrap.servers": self.proc.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}

    @property
    def admin(self) -> AdminClient:
        return AdminClient(self.conf("admin", "admin-secret", "PLAIN"))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    d = tmp_path_factory.mktemp("console-login")
    port, console_port, ssl_port = free_port(), free_port(), free_port()
    certs = make_cert_files(d / "certs")
    (d / "server.properties").write_text("\n".join([
        f"listeners=SASL_PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{ssl_port}",
        "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        "ssl.keystore.type=PEM", f"ssl.keystore.location={certs.server_keystore}",
        "sasl.enabled.mechanisms=SCRAM-SHA-256,PLAIN",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}",
        f"authorizer.class.name={AUTHORIZER}", "super.users=User:admin", ""]))
    proc = NerveProcess(d / "data", port=port, extra_args=[
        "--config", str(d / "server.properties"), "--console-port", str(console_port),
        "--console-read-only-users", "User:carol"])
    proc.start()
    s = Secured(proc, f"http://127.0.0.1:{console_port}", {}, ssl_port, certs.ca)
    admin = s.admin
    for f in admin.alter_user_scram_credentials([
            UserScramCredentialUpsertion(u, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256,
                                                                4096), p.encode())
            for u, p in PASSWORDS.items()]).values():
        f.result(15)
    suffix = uuid.uuid4().hex[:6]
    s.topics = {u: f"{u}-only-{suffix}" for u in ("alice", "bob")}
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in s.topics.values()]).values():
        f.result(15)
    acls = [AclBinding(ResourceType.TOPIC, t, ResourcePatternType.LITERAL, f"User:{u}", "*",
                       AclOperation.DESCRIBE, AclPermissionType.ALLOW)
            for u, t in s.topics.items()]
    # carol may do anything on the cluster: only the console's role stops her writes.
    acls.append(AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL,
                           "User:carol", "*", AclOperation.ALL, AclPermissionType.ALLOW))
    acls.append(AclBinding(ResourceType.TOPIC, "*", ResourcePatternType.LITERAL,
                           "User:carol", "*", AclOperation.ALL, AclPermissionType.ALLOW))
    for f in admin.create_acls(acls).values():
        f.result(15)
    yield s
    proc.stop()
    text = proc.log_text()
    assert "Traceback" not in text, proc.log_tail(80)
    for password in (*PASSWORDS.values(), "admin-secret", "dave-secret"):
        assert password not in text  # credentials are never logged


def login(url: str, user: str, password: str, mechanism: str = "SCRAM-SHA-256",
          expect: int = 303) -> tuple[httpx.Client, httpx.Response]:
    http = httpx.Client(base_url=url, timeout=30)
    page = http.get("/login")
    assert page.status_code == 200 and 'type="password"' in page.text
    r = http.post("/login", headers={"origin": url}, data={
        "username": user, "password": password, "mechanism": mechanism,
        "csrf": TOKEN_RE.findall(page.text)[0], "next": "/"})
    assert r.status_code == expect, (r.status_code, r.text)
    return http, r


def token(http: httpx.Client, path: str = "/") -> str:
    return TOKEN_RE.findall(http.get(path).text)[0]


def test_users_with_different_acls_see_different_topics(secured: Secured) -> None:
    url = secured.url
    # Without a session: the login form for pages, 401 for scripts and streams.
    r = httpx.get(url + "/", timeout=20)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert httpx.get(url + "/api/overview", timeout=20).status_code == 401
    seen = {}
    for user in ("alice", "bob"):
        http, r = login(url, user, PASSWORDS[user])
        cookie = r.headers["set-cookie"]
        assert "nerve_console_login=" in cookie and "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower() and "Max-Age=" in cookie
        page = http.get("/")
        assert page.status_code == 200 and f"User:{user}" in page.text
        seen[user] = {t["name"] for t in http.get("/api/overview").json()["topics"]}
        # The other user's topic is hidden from Metadata, so its page is "unknown topic".
        other = secured.topics["bob" if user == "alice" else "alice"]
        assert http.get(f"/topics/{other}").status_code == 404
        http.close()
    assert seen == {"alice": {secured.topics["alice"]}, "bob": {secured.topics["bob"]}}
    log = secured.proc.log_text()
    assert "authenticated as User:alice (SASL/SCRAM-SHA-256)" in log
    assert "authenticated as User:bob (SASL/SCRAM-SHA-256)" in log


def test_wrong_password_is_a_clear_error_and_logout_ends_the_session(secured: Secured) -> None:
    url = secured.url
    before = secured.proc.log_text().count("authentication from")
    http, r = login(url, "alice", "not-her-password", expect=401)
    assert "invalid credentials" in r.text and "nerve_console_login" not in r.headers.get(
        "set-cookie", "")
    assert http.get("/").status_code == 303  # still logged out
    http.close()
    time.sleep(0.5)
    # One refused connection, no retry loop: exactly one failed authentication on the broker.
    assert secured.proc.log_text().count("authentication from") - before == 1
    http, r = login(url, "alice", PASSWORDS["alice"])
    stolen = http.cookies["nerve_console_login"]
    assert http.get("/").status_code == 200
    r = http.post("/logout", headers={"origin": url}, data={"csrf": token(http)})
    assert r.status_code == 303
    assert http.get("/").status_code == 303
    http.close()
    # The old cookie is dead on the server too, not only forgotten by the browser.
    r = httpx.get(url + "/", cookies={"nerve_console_login": stolen}, timeout=20)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    # Logging in needs the CSRF token like every form.
    r = httpx.post(url + "/login", headers={"origin": url},
                   data={"username": "alice", "password": PASSWORDS["alice"]}, timeout=20)
    assert r.status_code == 403


def test_read_only_user_sees_no_forms_and_gets_403(secured: Secured) -> None:
    url, topic = secured.url, f"carol-{uuid.uuid4().hex[:6]}"
    http, _ = login(url, "carol", PASSWORDS["carol"])
    page = http.get(f"/topics/{secured.topics['alice']}")
    assert page.status_code == 200 and "read-only" in page.text
    # The only form left is the log-out button.
    assert re.findall(r'<form method="post" action="([^"]+)"', page.text) == ["/logout"]
    csrf = token(http)
    for path, data in [("/topics", {"name": topic}),
                       (f"/topics/{secured.topics['alice']}/produce", {"value": "x"}),
                       ("/security/users", {"name": "eve", "password": "eve-secret"})]:
        r = http.post(path, headers={"origin": url}, data={**data, "csrf": csrf})
        assert r.status_code == 403 and "read-only role" in r.text, (path, r.text)
    http.close()
    md = secured.admin.list_topics(timeout=10)
    assert topic not in md.topics
    assert "eve" not in secured.admin.describe_user_scram_credentials().result(15)


def _produce_error(conf: dict[str, str], topic: str) -> str | None:
    errors: list[str | None] = []
    p = Producer({**conf, "message.timeout.ms": 5000, "allow.auto.create.topics": False})
    p.produce(topic, b"v", on_delivery=lambda err, _m: errors.append(
        None if err is None else err.name()))
    p.flush(10)
    return errors[0] if errors else "no delivery report"


def test_admin_creates_a_user_an_acl_and_a_quota_through_the_pages(
        secured: Secured, kafka_run, tmp_path: Path) -> None:
    url, topic = secured.url, secured.topics["bob"]
    dave = secured.conf("dave", "dave-secret")
    # A user who is not a super user sees the cluster's refusal as a message.
    http, _ = login(url, "alice", PASSWORDS["alice"])
    page = http.get("/security/acls")
    assert page.status_code == 200 and "CLUSTER_AUTHORIZATION_FAILED" in page.text, page.text
    http.close()
    http, _ = login(url, "admin", "admin-secret", mechanism="PLAIN")  # a JAAS PLAIN user
    csrf = token(http, "/security/users")
    r = http.post("/security/users", headers={"origin": url}, data={
        "name": "dave", "password": "dave-secret", "mechanism": "SCRAM-SHA-256",
        "iterations": "4096", "csrf": csrf})
    assert r.status_code == 303, r.text
    assert "dave" in http.get("/security/users").text
    # dave authenticates; without an ACL the topic is hidden and producing is refused.
    assert topic not in AdminClient(dave).list_topics(timeout=10).topics
    assert _produce_error(dave, topic) == "TOPIC_AUTHORIZATION_FAILED"
    for op in ("DESCRIBE", "WRITE"):
        r = http.post("/security/acls", headers={"origin": url}, data={
            "resource_type": "TOPIC", "name": topic, "pattern": "LITERAL",
            "principal": "User:dave", "host": "*", "operation": op, "permission": "ALLOW",
            "csrf": csrf})
        assert r.status_code == 303, r.text
    listed = http.get("/security/acls", params={"principal": "User:dave"}).text
    assert listed.count("User:dave") >= 2 and topic in listed
    assert _produce_error(dave, topic) is None
    # Deleting the WRITE ACL through its row's form: refused again.
    r = http.post("/security/acls/delete", headers={"origin": url}, data={
        "resource_type": "TOPIC", "name": topic, "pattern": "LITERAL", "principal": "User:dave",
        "host": "*", "operation": "WRITE", "permission": "ALLOW", "csrf": csrf})
    assert r.status_code == 303 and "deleted+1" in r.headers["location"], r.headers
    assert _produce_error(dave, topic) == "TOPIC_AUTHORIZATION_FAILED"
    r = http.post("/security/quotas", headers={"origin": url}, data={
        "user": "dave", "client-id": "", "producer_byte_rate": "1048576",
        "consumer_byte_rate": "", "request_percentage": "50", "csrf": csrf})
    assert r.status_code == 303, r.text
    page = http.get("/security/quotas").text
    assert "1048576" in page and "dave" in page
    bad = http.post("/security/quotas", headers={"origin": url}, data={
        "user": "dave", "producer_byte_rate": "1.5", "csrf": csrf})
    assert bad.status_code == 400 and "INVALID_REQUEST" in bad.text
    http.close()
    # Kafka's own tool sees the quota.
    props = tmp_path / "admin.properties"
    props.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                     f"sasl.jaas.config={JAAS}\n")
    r = kafka_run("configs", "--bootstrap-server", secured.proc.bootstrap, "--command-config",
                  props, "--describe", "--entity-type", "users", "--entity-name", "dave")
    assert r.returncode == 0, r.stderr
    assert "producer_byte_rate=1048576.0" in r.stdout or "producer_byte_rate=1048576" in r.stdout
    assert "request_percentage=50" in r.stdout
    with pytest.raises(KafkaException):
        AdminClient({**dave, "sasl.password": "wrong"}).list_topics(timeout=3)


def test_nerve_console_logs_in_over_sasl_ssl_with_command_config(
        secured: Secured, tmp_path: Path) -> None:
    props = tmp_path / "console.properties"
    props.write_text("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-256\n"
                     f"ssl.truststore.type=PEM\nssl.truststore.location={secured.ca}\n")
    port = free_port()
    log = tmp_path / "console.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nerve", "console", "--bootstrap-server",
             f"127.0.0.1:{secured.ssl_port}", "--command-config", str(props), "--port",
             str(port), "--read-only-users", "bob"],
            cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "nerve console for" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        http, _ = login(url, "alice", PASSWORDS["alice"])
        names = {t["name"] for t in http.get("/api/overview").json()["topics"]}
        assert names == {secured.topics["alice"]}
        # DescribeClientQuotas over TLS + SCRAM (the console's own wire client): refused to a
        # user without DESCRIBE_CONFIGS on the cluster, as a message.
        assert "CLUSTER_AUTHORIZATION_FAILED" in http.get("/security/quotas").text
        http.close()
        http, _ = login(url, "bob", PASSWORDS["bob"])
        r = http.post("/topics", headers={"origin": url},
                      data={"name": "bob-new", "csrf": token(http)})
        assert r.status_code == 403 and "read-only role" in r.text
        http.close()
        http, r = login(url, "alice", "wrong", expect=401)
        assert "invalid credentials" in r.text
        http.close()
    finally:
        proc.terminate()
        proc.wait(10)
    text = log.read_text()
    assert "Traceback" not in text and PASSWORDS["alice"] not in text, text
    assert secured.proc.log_text().count("authenticated as User:alice (SASL/SCRAM-SHA-256)") >= 2


def _first_sample(http: httpx.Client, got: threading.Event | None = None,
                  hold: threading.Event | None = None) -> dict[str, Any]:
    """The first `sample` event of the live overview; with `hold`, the stream stays open
    (its sampler running) until it is set."""
    with http.stream("GET", "/events/overview") as r:
        assert r.status_code == 200
        event = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "sample":
                if got is not None and hold is not None:
                    got.set()
                    hold.wait(30)
                return json.loads(line[6:])
    raise AssertionError("no sample event")


def test_live_overview_streams_are_per_user(secured: Secured) -> None:
    alice, _ = login(secured.url, "alice", PASSWORDS["alice"])
    bob, _ = login(secured.url, "bob", PASSWORDS["bob"])
    samples: dict[str, dict[str, Any]] = {}
    got, hold = threading.Event(), threading.Event()
    # alice's stream stays open while bob's starts: one shared sampler would hand bob hers.
    t = threading.Thread(target=lambda: samples.setdefault(
        "alice", _first_sample(alice, got, hold)))
    t.start()
    try:
        assert got.wait(20)
        samples["bob"] = _first_sample(bob)
    finally:
        hold.set()
        t.join(30)
        alice.close()
        bob.close()
    assert set(samples["alice"]["topics"]) == {secured.topics["alice"]}
    assert set(samples["bob"]["topics"]) == {secured.topics["bob"]}


def test_story_pages_read_as_the_logged_in_user(secured: Secured) -> None:
    """Last in the module: it creates the shop story's topics, which alice may then see."""
    from nerve.apps.shop import TOPICS as SHOP_TOPICS

    admin = secured.admin
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in SHOP_TOPICS]).values():
        f.result(15)
    for f in admin.create_acls([
            AclBinding(ResourceType.TOPIC, t, ResourcePatternType.LITERAL, "User:alice", "*",
                       op, AclPermissionType.ALLOW)
            for t in SHOP_TOPICS for op in (AclOperation.DESCRIBE, AclOperation.READ)]).values():
        f.result(15)
    p = Producer(secured.conf("admin", "admin-secret", "PLAIN"))
    for i in range(5):
        p.produce("product-viewed", json.dumps({"product": f"p{i}", "user": "u"}).encode())
    assert p.flush(15) == 0
    alice, _ = login(secured.url, "alice", PASSWORDS["alice"])
    bob, _ = login(secured.url, "bob", PASSWORDS["bob"])
    try:
        deadline = time.monotonic() + 20
        while True:
            snap = alice.get("/api/stories/shop").json()
            if snap.get("records") == 5 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert snap.get("records") == 5 and not snap.get("error"), snap
        # bob may not DESCRIBE the shop topics: for him the story does not exist.
        r = bob.get("/api/stories/shop")
        assert r.status_code == 404 and "do not exist" in r.text, r.text
    finally:
        alice.close()
        bob.close()

