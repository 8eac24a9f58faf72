"""Consumer groups with real clients against a real `nerve serve` process.

Brokers run with group.initial.rebalance.delay.ms=0 and group.min.session.timeout.ms=1000, so
session expiry can be tested with ~2 s sessions instead of Kafka's 6 s minimum.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.helpers import NerveProcess

pytestmark = pytest.mark.timeout(90)

GROUP_ARGS = ("--set", "group.initial.rebalance.delay.ms=0",
              "--set", "group.min.session.timeout.ms=1000")


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=15)


def produce(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(count):
        p.produce(topic, value=f"v{i}".encode(), partition=i % partitions)
    assert p.flush(15) == 0


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `cond` until true; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# A consumer in its own process, so it can die by SIGKILL. It writes its current assignment
# to a file whenever it changes.
CHILD_CONSUMER = textwrap.dedent(
    """
    import json, os, sys
    from confluent_kafka import Consumer
    bootstrap, topic, group, out = sys.argv[1:5]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "session.timeout.ms": 2000, "heartbeat.interval.ms": 300,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    last = None
    while True:
        c.poll(0.05)
        now = sorted(tp.partition for tp in c.assignment())
        if now != last:
            with open(out + ".tmp", "w") as f:
                json.dump(now, f)
            os.replace(out + ".tmp", out)
            last = now
    """
)


def read_assignment(path: Path) -> list[int] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_three_consumers_split_six_partitions_and_survivors_take_over_a_killed_one(
    nerve_factory: Callable[..., NerveProcess], unique_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    broker = nerve_factory(*GROUP_ARGS)
    topic, group = unique_topic(), unique_topic("g")
    create_topic(broker.bootstrap, topic, 6)
    outs = [tmp_path / f"assign-{i}.json" for i in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", CHILD_CONSUMER, broker.bootstrap, topic,
                               group, str(out)]) for out in outs]
    try:
        def split_evenly() -> bool:
            got = [read_assignment(o) for o in outs]
            return all(g is not None and len(g) == 2 for g in got) and sorted(
                itertools.chain.from_iterable(g or [] for g in got)) == list(range(6))

        wait_for(split_evenly, 30, "three consumers with two partitions each")
        procs[0].send_signal(signal.SIGKILL)  # no LeaveGroup: only the session timeout tells
        procs[0].wait(10)
        killed_at = time.monotonic()

        def survivors_own_all() -> bool:
            got = [read_assignment(o) for o in outs[1:]]
            return sorted(itertools.chain.from_iterable(g or [] for g in got)) == list(range(6))

        wait_for(survivors_own_all, 30, "the survivors to take over all six partitions")
        took = time.monotonic() - killed_at
        # the session timeout (2 s) must pass first; then one rebalance round
        print(f"takeover after SIGKILL of a member: {took:.2f}s (session.timeout.ms=2000)")
        assert 1.5 < took < 15, took
        assert all(len(read_assignment(o) or []) == 3 for o in outs[1:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def poll_all(consumers: list[Consumer], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for c in consumers:
            c.poll(0.02)


def test_cooperative_sticky_new_member_does_not_revoke_kept_partitions(
    nerve_factory: Callable[..., NerveProcess], unique_topic: Callable[..., str],
) -> None:
    broker = nerve_factory(*GROUP_ARGS)
    topic, group = unique_topic(), unique_topic("g")
    create_topic(broker.bootstrap, topic, 4)
    revoked: dict[str, list[int]] = {"a": [], "b": []}
    conf = {"bootstrap.servers": broker.bootstrap, "group.id": group,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 300}

    def consumer(name: str) -> Consumer:
        c = Consumer(conf)

        def on_revoke(cons: Consumer, parts: list[TopicPartition]) -> None:
            revoked[name].extend(tp.partition for tp in parts)
            cons.incremental_unassign(parts)

        c.subscribe([topic], on_revoke=on_revoke)
        return c

    a = consumer("a")
    try:
        wait_for(lambda: (a.poll(0.05), len(a.assignment()) == 4)[1], 20, "a owns everything")
        before = {tp.partition for tp in a.assignment()}
        b = consumer("b")
        try:
            def balanced() -> bool:
                poll_all([a, b], 0.1)
                return len(a.assignment()) == 2 and len(b.assignment()) == 2
            wait_for(balanced, 30, "two partitions each")
            after_a = {tp.partition for tp in a.assignment()}
            after_b = {tp.partition for tp in b.assignment()}
            assert after_a | after_b == before and not after_a & after_b
            # incremental: a gave up exactly what b got, and kept the rest all along
            assert sorted(revoked["a"]) == sorted(after_b)
        finally:
            b.close()
    finally:
        a.close()


def test_static_member_restart_gets_its_partitions_back_without_rebalance(
    nerve_factory: Callable[..., NerveProcess], unique_topic: Callable[..., str],
) -> None:
    broker = nerve_factory(*GROUP_ARGS)
    topic, group = unique_topic(), unique_topic("g")
    create_topic(broker.bootstrap, topic, 4)
    events: list[str] = []

    def consumer(instance: str) -> Consumer:
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                      "group.instance.id": instance, "session.timeout.ms": 10_000,
                      "heartbeat.interval.ms": 300})
        c.subscribe([topic], on_assign=lambda *_: events.append(f"{instance}:assign"),
                    on_revoke=lambda *_: events.append(f"{instance}:revoke"))
        return c

    a, b = consumer("static-a"), consumer("static-b")
    try:
        def split() -> bool:
            poll_all([a, b], 0.1)
            return len(a.assignment()) == 2 and len(b.assignment()) == 2
        wait_for(split, 30, "two static members with two partitions each")
        b_parts = sorted(tp.partition for tp in b.assignment())
        old_member_id = b.memberid()
        b.close()  # a static member does not leave the group on close (KIP-345)
        events.clear()  # close() revokes locally in the client
        b = consumer("static-b")

        def back() -> bool:
            poll_all([a, b], 0.1)
            return sorted(tp.partition for tp in b.assignment()) == b_parts
        wait_for(back, 8, "the restarted static member to get its partitions back")
        poll_all([a, b], 1.0)
        assert b.memberid() != old_member_id
        # no rebalance: a saw nothing, b was only assigned
        assert events == ["static-b:assign"], events
    finally:
        a.close()
        b.close()


def test_clients_resume_exactly_from_each_others_commits(
    nerve_factory: Callable[..., NerveProcess], unique_topic: Callable[..., str],
) -> None:
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata as KOffset
    from kafka.structs import TopicPartition as KTP

    broker = nerve_factory(*GROUP_ARGS)
    topic, group = unique_topic(), unique_topic("g")
    create_topic(broker.bootstrap, topic, 1)
    produce(broker.bootstrap, topic, 30, 1)

    # kafka-python reads 10 and commits offset 10 with metadata
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                       auto_offset_reset="earliest", enable_auto_commit=False,
                       session_timeout_ms=6000, heartbeat_interval_ms=500,
                       consumer_timeout_ms=15000)
    kc.subscribe([topic])
    first = []
    for msg in kc:
        first.append(msg.value.decode())
        if len(first) == 10:
            break
    kc.commit({KTP(topic, 0): KOffset(10, "from kafka-python", -1)})
    kc.close()
    assert first == [f"v{i}" for i in range(10)]

    # aiokafka resumes at 10, reads 10, commits 20
    async def aio() -> tuple[list[str], str]:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import OffsetAndMetadata as AOffset
        from aiokafka.structs import TopicPartition as ATP

        ac = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                              enable_auto_commit=False, auto_offset_reset="earliest")
        await ac.start()
        try:
            tp = ATP(topic, 0)
            committed = await ac.committed(tp)
            got: list[str] = []
            while len(got) < 10:
                batch = await ac.getmany(timeout_ms=1000, max_records=10 - len(got))
                for msgs in batch.values():
                    got.extend(m.value.decode() for m in msgs)
            await ac.commit({tp: AOffset(20, "from aiokafka")})
            return got, f"{committed}"
        finally:
            await ac.stop()

    second, committed_seen = asyncio.run(aio())
    assert committed_seen == "10"
    assert second == [f"v{i}" for i in range(10, 20)]

    # confluent-kafka sees offset 20 and metadata, and reads the rest
    cc = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                   "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        (tp,) = cc.committed([TopicPartition(topic, 0)], timeout=10)
        assert (tp.offset, tp.metadata) == (20, "from aiokafka")
        cc.subscribe([topic])
        third: list[str] = []
        deadline = time.monotonic() + 20
        while len(third) < 10 and time.monotonic() < deadline:
            m = cc.poll(0.2)
            if m is not None and m.error() is None:
                third.append(m.value().decode())
        assert third == [f"v{i}" for i in range(20, 30)]
        cc.commit(offsets=[TopicPartition(topic, 0, 30)], asynchronous=False)
    finally:
        cc.close()

    # and kafka-python sees the metadata strings round-trip
    kc2 = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group)
    try:
        assert kc2.committed(KTP(topic, 0)) == 30
    finally:
        kc2.close()


def test_manual_assign_consumer_commits_without_joining(
    nerve_factory: Callable[..., NerveProcess], unique_topic: Callable[..., str],
) -> None:
    broker = nerve_factory(*GROUP_ARGS)
    topic, group = unique_topic(), unique_topic("g")
    create_topic(broker.bootstrap, topic, 2)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
        c.commit(offsets=[TopicPartition(topic, 0, 7, metadata="m0"),
                          TopicPartition(topic, 1, 9)], asynchronous=False)
        got = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
        # librdkafka reports Kafka's "" (no metadata) as None
        assert [(tp.offset, tp.metadata or "") for tp in got] == [(7, "m0"), (9, "")]
        with pytest.raises(KafkaException, match="UNKNOWN_TOPIC_OR_PART"):
            c.commit(offsets=[TopicPartition(topic, 5, 1)], asynchronous=False)
    finally:
        c.close()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    listed = admin.list_consumer_groups().result(timeout=10)
    assert group in {g.group_id for g in listed.valid}


def test_committed_offsets_survive_broker_kill_9(
    nerve_factory: Callable[..., NerveProcess], unique_topic: Callable[..., str],
) -> None:
    broker = nerve_factory(*GROUP_ARGS)
    topic, group = unique_topic(), unique_topic("g")
    create_topic(broker.bootstrap, topic, 3)
    produce(broker.bootstrap, topic, 300, 3)
    conf = {"bootstrap.servers": broker.bootstrap, "group.id": group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 300}
    c = Consumer(conf)
    c.subscribe([topic])
    committed: dict[int, int] = {}
    seen = 0
    deadline = time.monotonic() + 30
    while seen < 150 and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None or m.error() is not None:
            continue
        seen += 1
        c.commit(message=m, asynchronous=False)  # acknowledged = durable
        committed[m.partition()] = m.offset() + 1
    assert seen == 150
    broker.kill()  # SIGKILL right after the last acknowledged commit
    c.close()
    broker.start()

    c = Consumer(conf)
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=15)
        assert {tp.partition: tp.offset for tp in got if tp.offset >= 0} == committed
        c.subscribe([topic])
        first: dict[int, int] = {}
        count = 0
        deadline = time.monotonic() + 30
        while count < 150 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error() is not None:
                continue
            first.setdefault(m.partition(), m.offset())
            count += 1
        # nothing committed is read again, nothing after the commits is lost
        assert count == 150
        assert first == {p: committed.get(p, 0) for p in first}
    finally:
        c.close()


def test_running_consumer_rejoins_after_broker_kill_9_and_reads_on_without_gaps(
    nerve_factory: Callable[..., NerveProcess], unique_topic: Callable[..., str],
) -> None:
    broker = nerve_factory(*GROUP_ARGS)
    topic, group = unique_topic(), unique_topic("g")
    create_topic(broker.bootstrap, topic, 3)
    produce(broker.bootstrap, topic, 600, 3)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 300,
                  "reconnect.backoff.max.ms": 200})
    c.subscribe([topic])
    seen: list[tuple[int, int]] = []
    committed: dict[int, int] = {}
    killed = False
    try:
        deadline = time.monotonic() + 60
        while len(set(seen)) < 600 and time.monotonic() < deadline:
            m = c.poll(0.1)
            if m is None or m.error() is not None:
                continue
            seen.append((m.partition(), m.offset()))
            try:
                c.commit(message=m, asynchronous=False)
                committed[m.partition()] = m.offset() + 1
            except KafkaException:
                pass  # the broker is down or the group rebalances: retried by later commits
            if len(seen) == 200 and not killed:
                broker.kill()
                broker.start()
                killed = True
    finally:
        c.close()
    assert killed and len(set(seen)) == 600  # nothing lost
    # Re-reads after the restart start at a committed offset: only records whose commit
    # was not acknowledged can come again (at-least-once), and never more than one each.
    dupes = [r for r in set(seen) if seen.count(r) > 1]
    assert len(dupes) <= 3, dupes


# Commits synchronously after every record, logging each attempt before and each
# acknowledgement after, while the broker is killed under it.
COMMITTING_CHILD = textwrap.dedent(
    """
    import sys
    from confluent_kafka import Consumer, KafkaException
    bootstrap, topic, group, log_path = sys.argv[1:5]
    log = open(log_path, "w", buffering=1)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 300})
    c.subscribe([topic])
    while True:
        m = c.poll(0.1)
        if m is None or m.error() is not None:
            continue
        log.write(f"try {m.partition()} {m.offset() + 1}\\n")
        try:
            c.commit(message=m, asynchronous=False)
        except KafkaException:
            continue
        log.write(f"ack {m.partition()} {m.offset() + 1}\\n")
    """
)


def test_commits_in_flight_during_kill_9_acknowledged_ones_are_never_lost(
    nerve_factory: Callable[..., NerveProcess], unique_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    broker = nerve_factory(*GROUP_ARGS)
    topic, group = unique_topic(), unique_topic("g")
    create_topic(broker.bootstrap, topic, 2)
    produce(broker.bootstrap, topic, 5000, 2)
    log_path = tmp_path / "commits.log"
    child = subprocess.Popen([sys.executable, "-c", COMMITTING_CHILD, broker.bootstrap, topic,
                              group, str(log_path)])
    try:
        def acks() -> int:
            return log_path.read_text().count("ack") if log_path.exists() else 0
        wait_for(lambda: acks() >= 300, 30, "300 acknowledged commits")
        broker.kill()
    finally:
        child.kill()
        child.wait(10)
    tried: dict[int, int] = {}
    acked: dict[int, int] = {}
    for line in log_path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            target = acked if parts[0] == "ack" else tried
            target[int(parts[1])] = max(target.get(int(parts[1]), 0), int(parts[2]))
    broker.start()
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(2)], timeout=15)
    finally:
        c.close()
    recovered = {tp.partition: tp.offset for tp in got if tp.offset >= 0}
    for p, offset in acked.items():
        assert offset <= recovered[p] <= tried[p], (p, acked, recovered, tried)


@pytest.mark.java
def test_java_console_consumer_in_a_group_commits_and_resumes(
    nerve_factory: Callable[..., NerveProcess], unique_topic: Callable[..., str],
    kafka_run: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    broker = nerve_factory(*GROUP_ARGS)
    topic, group = unique_topic(), unique_topic("g")
    create_topic(broker.bootstrap, topic, 2)
    produce(broker.bootstrap, topic, 10, 2)
    args = ("--bootstrap-server", broker.bootstrap, "--topic", topic, "--group", group,
            "--max-messages", "5", "--command-property", "max.poll.records=1")
    r = kafka_run("console-consumer", *args, "--from-beginning")
    assert r.returncode == 0 and len(r.stdout.split()) == 5, r.stdout + r.stderr
    # a second run of the group continues from what the first committed on close
    r2 = kafka_run("console-consumer", *args)
    assert r2.returncode == 0, r2.stderr
    assert sorted(r.stdout.split() + r2.stdout.split()) == sorted(f"v{i}" for i in range(10))


@pytest.mark.java
def test_kafka_consumer_groups_describe_and_reset_offsets(
    nerve_factory: Callable[..., NerveProcess], unique_topic: Callable[..., str],
    kafka_run: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    broker = nerve_factory(*GROUP_ARGS)
    topic, group = unique_topic(), unique_topic("g")
    create_topic(broker.bootstrap, topic, 2)
    produce(broker.bootstrap, topic, 20, 2)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "client.id": "describe-me", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    try:
        got = 0
        deadline = time.monotonic() + 20
        while got < 12 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got += 1
        c.commit(offsets=[TopicPartition(topic, 0, 6), TopicPartition(topic, 1, 4)],
                 asynchronous=False)
        r = kafka_run("consumer-groups", "--bootstrap-server", broker.bootstrap,
                      "--describe", "--group", group)
        assert r.returncode == 0, r.stderr
        rows = [line.split() for line in r.stdout.splitlines() if topic in line]
        by_partition = {int(row[2]): row for row in rows}
        # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID
        assert by_partition[0][3:6] == ["6", "10", "4"]
        assert by_partition[1][3:6] == ["4", "10", "6"]
        assert all(row[8] == "describe-me" for row in rows), r.stdout
        r = kafka_run("consumer-groups", "--bootstrap-server", broker.bootstrap,
                      "--describe", "--members", "--group", group)
        assert r.returncode == 0 and "describe-me" in r.stdout, r.stdout + r.stderr
    finally:
        c.close()  # leaves the group: now empty
    r = kafka_run("consumer-groups", "--bootstrap-server", broker.bootstrap, "--group", group,
                  "--reset-offsets", "--to-earliest", "--topic", topic, "--execute")
    assert r.returncode == 0, r.stdout + r.stderr
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
        assert [tp.offset for tp in got] == [0, 0]
    finally:
        c.close()
    r = kafka_run("consumer-groups", "--bootstrap-server", broker.bootstrap, "--list")
    assert group in r.stdout.split()
    r = kafka_run("consumer-groups", "--bootstrap-server", broker.bootstrap, "--delete",
                  "--group", group)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.exists(broker.data_dir)  # type: ignore[attr-defined]
