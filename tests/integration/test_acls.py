"""ACLs (StandardAuthorizer semantics) against a real `nerve serve`, with real clients.

One broker for the module, with `allow.everyone.if.no.acl.found=true`: a resource without any
ACL stays open (so User:ANONYMOUS, the only principal over PLAINTEXT, may manage ACLs on the
cluster), and each test puts ACLs on its own topics and groups.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from tests.helpers import NerveProcess

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
ANON = "User:ANONYMOUS"
ANY_FILTER = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                              AclOperation.ANY, AclPermissionType.ANY)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NerveProcess]:
    base = tmp_path_factory.mktemp("acl")
    proc = NerveProcess(base / "data", extra_args=[
        "--set", f"authorizer.class.name={AUTHORIZER}",
        "--set", "allow.everyone.if.no.acl.found=true",
        "--set", "group.initial.rebalance.delay.ms=0"])
    proc.start()
    yield proc
    proc.stop()
    assert "Traceback" not in proc.log_text()


@pytest.fixture
def name() -> Callable[[str], str]:
    return lambda prefix="t": f"{prefix}-{uuid.uuid4().hex[:8]}"


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def acl(rtype: ResourceType, rname: str, op: AclOperation, *, principal: str = ANON,
        host: str = "*", allow: bool = True,
        pattern: ResourcePatternType = ResourcePatternType.LITERAL) -> AclBinding:
    perm = AclPermissionType.ALLOW if allow else AclPermissionType.DENY
    return AclBinding(rtype, rname, pattern, principal, host, op, perm)


def add(bootstrap: str, *acls: AclBinding) -> None:
    a = admin(bootstrap)
    for f in a.create_acls(list(acls)).values():
        f.result(15)


def create_topic(bootstrap: str, topic: str) -> None:
    a = admin(bootstrap)
    a.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)


def produce_error(bootstrap: str, topic: str) -> KafkaError | None:
    errors: list[KafkaError | None] = []
    p = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 5000,
                  "allow.auto.create.topics": False})
    p.produce(topic, b"v", on_delivery=lambda err, _msg: errors.append(err))
    p.flush(10)
    return errors[0] if errors else None


def test_kafka_acls_adds_lists_and_removes(secured: NerveProcess, kafka_run, name) -> None:
    topic, group = name("acl-cli"), name("acl-grp")
    b = ["--bootstrap-server", secured.bootstrap]
    r = kafka_run("acls", *b, "--add", "--allow-principal", "User:alice", "--allow-principal",
                  "User:bob", "--allow-host", "10.0.0.1", "--operation", "Read",
                  "--operation", "Describe", "--topic", topic, "--group", group)
    assert r.returncode == 0, r.stderr
    listed = kafka_run("acls", *b, "--list", "--topic", topic)
    assert listed.returncode == 0, listed.stderr
    assert f"name={topic}, patternType=LITERAL" in listed.stdout
    for who in ("User:alice", "User:bob"):
        for op in ("READ", "DESCRIBE"):
            assert (f"principal={who}, host=10.0.0.1, operation={op}, permissionType=ALLOW"
                    in listed.stdout)
    assert group not in listed.stdout
    a = admin(secured.bootstrap)
    mine = [x for x in a.describe_acls(ANY_FILTER).result(15) if x.name in (topic, group)]
    assert len(mine) == 8
    r = kafka_run("acls", *b, "--remove", "--force", "--topic", topic, "--group", group)
    assert r.returncode == 0, r.stderr
    assert not [x for x in a.describe_acls(ANY_FILTER).result(15) if x.name in (topic, group)]


def test_prefixed_acls_match_filters(secured: NerveProcess, name) -> None:
    b = secured.bootstrap
    prefix = name("pre") + "-"
    a = admin(b)
    add(b, acl(ResourceType.TOPIC, prefix, AclOperation.WRITE, principal="User:bob",
               host="10.0.0.1", allow=False, pattern=ResourcePatternType.PREFIXED))
    match = AclBindingFilter(ResourceType.TOPIC, prefix + "xyz", ResourcePatternType.MATCH,
                             None, None, AclOperation.ANY, AclPermissionType.ANY)
    found = a.describe_acls(match).result(15)
    assert [(x.name, x.resource_pattern_type) for x in found] == [
        (prefix, ResourcePatternType.PREFIXED)]
    literal = AclBindingFilter(ResourceType.TOPIC, prefix + "xyz", ResourcePatternType.LITERAL,
                               None, None, AclOperation.ANY, AclPermissionType.ANY)
    assert a.describe_acls(literal).result(15) == []
    gone = a.delete_acls([match])[match].result(15)
    assert len(gone) == 1 and gone[0].permission_type == AclPermissionType.DENY


def test_invalid_acls_are_refused_with_invalid_request(secured: NerveProcess) -> None:
    a = admin(secured.bootstrap)
    bad = AclBinding(ResourceType.BROKER, "not-the-cluster", ResourcePatternType.LITERAL, ANON,
                     "*", AclOperation.ALTER, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as e:
        a.create_acls([bad])[bad].result(15)
    assert e.value.args[0].code() == KafkaError.INVALID_REQUEST
    assert "kafka-cluster" in e.value.args[0].str()


def test_produce_consume_and_metadata_follow_the_acls(secured: NerveProcess, name) -> None:
    b = secured.bootstrap
    open_topic, secret, read_only = name("open"), name("secret"), name("ro")
    for t in (open_topic, secret, read_only):
        create_topic(b, t)
    # secret: an ACL for someone else only, so no fallback to allow-everyone for ANONYMOUS.
    add(b, acl(ResourceType.TOPIC, secret, AclOperation.ALL, principal="User:alice"),
        # read_only: ALL allowed to everyone, WRITE denied to ANONYMOUS: deny wins.
        acl(ResourceType.TOPIC, read_only, AclOperation.ALL, principal="User:*"),
        acl(ResourceType.TOPIC, read_only, AclOperation.WRITE, allow=False))
    assert produce_error(b, open_topic) is None
    err = produce_error(b, secret)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    err = produce_error(b, read_only)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Metadata hides the topic without DESCRIBE; READ (implied by ALL) shows read_only.
    a = admin(b)
    topics = a.list_topics(timeout=10).topics
    assert open_topic in topics and read_only in topics and secret not in topics
    md = a.list_topics(secret, timeout=10).topics[secret]
    assert md.error is not None and md.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_consumer_group_denied(secured: NerveProcess, name) -> None:
    b = secured.bootstrap
    topic, group = name("g-topic"), name("grp")
    create_topic(b, topic)
    add(b, acl(ResourceType.GROUP, group, AclOperation.READ, principal="User:alice"))
    c = Consumer({"bootstrap.servers": b, "group.id": group, "auto.offset.reset": "earliest",
                  "session.timeout.ms": 6000})
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 15
        code = None
        while time.monotonic() < deadline and code is None:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is not None:
                code = msg.error().code()
    finally:
        c.close()
    assert code == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_prefixed_and_host_acls(secured: NerveProcess, name) -> None:
    b = secured.bootstrap
    prefix = name("pfx") + "-"
    here, elsewhere = name("host-here"), name("host-elsewhere")
    for t in (prefix + "a", here, elsewhere):
        create_topic(b, t)
    add(b, acl(ResourceType.TOPIC, prefix, AclOperation.DESCRIBE, principal="User:alice",
               pattern=ResourcePatternType.PREFIXED),
        acl(ResourceType.TOPIC, here, AclOperation.WRITE, host="127.0.0.1"),
        acl(ResourceType.TOPIC, elsewhere, AclOperation.WRITE, host="127.0.0.2"))
    err = produce_error(b, prefix + "a")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_error(b, here) is None
    err = produce_error(b, elsewhere)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_authorized_operations(secured: NerveProcess, name) -> None:
    b = secured.bootstrap
    topic = name("ops")
    create_topic(b, topic)
    add(b, acl(ResourceType.TOPIC, topic, AclOperation.READ),
        acl(ResourceType.TOPIC, topic, AclOperation.ALTER_CONFIGS))
    a = admin(b)
    desc = a.describe_topics(TopicCollection([topic]),
                             include_authorized_operations=True)[topic].result(15)
    # READ implies DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS.
    assert set(desc.authorized_operations) == {
        AclOperation.READ, AclOperation.DESCRIBE, AclOperation.ALTER_CONFIGS,
        AclOperation.DESCRIBE_CONFIGS}
    cluster = a.describe_cluster(include_authorized_operations=True).result(15)
    # No ACL on the cluster: allow.everyone.if.no.acl.found gives every cluster operation.
    assert AclOperation.ALTER in set(cluster.authorized_operations)
    assert len(cluster.authorized_operations) == 7


def test_acls_survive_kill_9(tmp_path: Path) -> None:
    proc = NerveProcess(tmp_path / "data", extra_args=[
        "--set", f"authorizer.class.name={AUTHORIZER}", "--set", f"super.users={ANON}"])
    proc.start()
    try:
        binding = acl(ResourceType.GROUP, "g-durable", AclOperation.READ, principal="User:alice")
        add(proc.bootstrap, binding)
        proc.kill()
        proc.start()
        a = admin(proc.bootstrap)
        assert binding in a.describe_acls(ANY_FILTER).result(15)
    finally:
        proc.stop()


def test_no_acl_and_no_fallback_denies_everything_but_super_users(tmp_path: Path) -> None:
    proc = NerveProcess(tmp_path / "data", extra_args=[
        "--set", f"authorizer.class.name={AUTHORIZER}"])
    proc.start()
    try:
        a = admin(proc.bootstrap)
        binding = acl(ResourceType.TOPIC, "t", AclOperation.READ)
        with pytest.raises(KafkaException) as e:
            a.create_acls([binding])[binding].result(15)
        assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
        with pytest.raises(KafkaException) as e:
            a.create_topics([NewTopic("nope", 1, 1)])["nope"].result(15)
        assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        proc.stop()
    proc.extra_args += ["--set", f"super.users=User:bob;{ANON}"]
    proc.start()
    try:
        a = admin(proc.bootstrap)
        a.create_topics([NewTopic("yes", 1, 1)])["yes"].result(15)
        assert produce_error(proc.bootstrap, "yes") is None
    finally:
        proc.stop()


def test_damaged_acl_file_stops_the_broker_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    (data / "acls.json").write_text('{"version": 1, "acls": [{"resource_type": "TOP')
    r = subprocess.run([sys.executable, "-m", "nerve", "serve", "--data-dir", str(data),
                        "--port", "0", "--no-console", "--set",
                        f"authorizer.class.name={AUTHORIZER}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "acls.json" in r.stderr and "Traceback" not in r.stderr
