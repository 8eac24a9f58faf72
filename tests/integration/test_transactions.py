"""Transactions end to end: confluent-kafka (librdkafka) transactional producers and
read_committed / read_uncommitted consumers against a real `nerve serve`."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=15)


def txn_producer(bootstrap: str, txn_id: str, **conf: object) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                  "linger.ms": 5, **conf})
    p.init_transactions(30)
    return p


def consume_all(bootstrap: str, topic: str, partitions: int, isolation: str,
                expect: int | None = None, timeout: float = 15.0) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{isolation}-{time.time()}",
                  "isolation.level": isolation, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[bytes] = []
    eof: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    if len(eof) == partitions and (expect is None or len(out) >= expect):
                        break
                    continue
                raise KafkaException(m.error())
            out.append(m.value())
    finally:
        c.close()
    return out


def test_commit_and_abort_across_partitions(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic, 3)
    p = txn_producer(nerve.bootstrap, "txn-commit-abort")
    p.begin_transaction()
    for i in range(30):
        p.produce(topic, value=f"committed-{i}".encode(), partition=i % 3)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(30):
        p.produce(topic, value=f"aborted-{i}".encode(), partition=i % 3)
    p.flush(10)
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(6):
        p.produce(topic, value=f"late-{i}".encode(), partition=i % 3)
    p.commit_transaction(30)

    committed = consume_all(nerve.bootstrap, topic, 3, "read_committed", expect=36)
    assert sorted(committed) == sorted([f"committed-{i}".encode() for i in range(30)]
                                       + [f"late-{i}".encode() for i in range(6)])
    everything = consume_all(nerve.bootstrap, topic, 3, "read_uncommitted", expect=66)
    assert len(everything) == 66
    assert sum(v.startswith(b"aborted-") for v in everything) == 30


def test_read_committed_stops_at_the_open_transaction(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    plain = Producer({"bootstrap.servers": nerve.bootstrap})
    plain.produce(topic, value=b"before")
    plain.flush(10)
    p = txn_producer(nerve.bootstrap, "txn-open")
    p.begin_transaction()
    p.produce(topic, value=b"open")
    p.flush(10)
    plain.produce(topic, value=b"after")  # behind the open transaction: not stable yet
    plain.flush(10)
    assert consume_all(nerve.bootstrap, topic, 1, "read_committed", timeout=6) == [b"before"]
    assert consume_all(nerve.bootstrap, topic, 1, "read_uncommitted", expect=3) == [
        b"before", b"open", b"after"]
    c = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": "lso",
                  "isolation.level": "read_committed"})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()
    assert (lo, hi) == (0, 1)  # latest for read_committed is the last stable offset
    p.commit_transaction(30)
    assert consume_all(nerve.bootstrap, topic, 1, "read_committed", expect=3) == [
        b"before", b"open", b"after"]


def test_consume_transform_produce_commits_offsets_with_the_transaction(nerve, unique_topic):
    src, dst = unique_topic(), unique_topic()
    create_topic(nerve.bootstrap, src)
    create_topic(nerve.bootstrap, dst)
    plain = Producer({"bootstrap.servers": nerve.bootstrap})
    for i in range(10):
        plain.produce(src, value=f"in-{i}".encode())
    plain.flush(10)
    group = "ctp"
    c = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed"})
    c.subscribe([src])
    p = txn_producer(nerve.bootstrap, "txn-ctp")
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 5 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    assert len(got) >= 5
    got = got[:5]

    def positions() -> list[TopicPartition]:
        return [TopicPartition(src, 0, got[-1].offset() + 1)]

    p.begin_transaction()
    for m in got:
        p.produce(dst, value=m.value().upper())
    p.send_offsets_to_transaction(positions(), c.consumer_group_metadata(), 30)
    # Staged, not committed: OffsetFetch does not show it; with require_stable (librdkafka's
    # read_committed consumers) it answers UNSTABLE_OFFSET_COMMIT, so committed() waits.
    loose = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": group,
                      "isolation.level": "read_uncommitted"})
    stable = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": group,
                       "isolation.level": "read_committed"})
    tp = [TopicPartition(src, 0)]
    try:
        assert loose.committed(tp, timeout=10)[0].offset < 0
        with pytest.raises(KafkaException):
            stable.committed(tp, timeout=3)
        p.abort_transaction(30)
        assert stable.committed(tp, timeout=10)[0].offset < 0
        p.begin_transaction()
        for m in got:
            p.produce(dst, value=m.value().upper())
        p.send_offsets_to_transaction(positions(), c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        assert stable.committed(tp, timeout=10)[0].offset == 5
        assert loose.committed(tp, timeout=10)[0].offset == 5
    finally:
        loose.close()
        stable.close()
        c.close()
    assert consume_all(nerve.bootstrap, dst, 1, "read_committed", expect=5) == [
        f"IN-{i}".encode() for i in range(5)]


def test_a_new_producer_with_the_same_id_fences_the_zombie(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    zombie = txn_producer(nerve.bootstrap, "txn-zombie")
    zombie.begin_transaction()
    zombie.produce(topic, value=b"zombie")
    zombie.flush(10)
    fresh = txn_producer(nerve.bootstrap, "txn-zombie")  # aborts the zombie's transaction
    fresh.begin_transaction()
    fresh.produce(topic, value=b"fresh")
    fresh.commit_transaction(30)
    with pytest.raises(KafkaException) as e:
        zombie.commit_transaction(10)
    assert e.value.args[0].code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                      KafkaError.INVALID_PRODUCER_EPOCH), e.value
    assert consume_all(nerve.bootstrap, topic, 1, "read_committed", expect=1) == [b"fresh"]


def test_transactions_survive_a_restart(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic, 2)
    p = txn_producer(nerve.bootstrap, "txn-restart")
    p.begin_transaction()
    p.produce(topic, value=b"kept", partition=0)
    p.commit_transaction(30)
    p.begin_transaction()
    p.produce(topic, value=b"dropped", partition=1)
    p.flush(10)
    p.abort_transaction(30)
    del p
    nerve.kill()
    nerve.start()
    assert consume_all(nerve.bootstrap, topic, 2, "read_committed", expect=1) == [b"kept"]
    p = txn_producer(nerve.bootstrap, "txn-restart")  # the id is remembered: epoch bumps
    p.begin_transaction()
    p.produce(topic, value=b"again", partition=1)
    p.commit_transaction(30)
    assert sorted(consume_all(nerve.bootstrap, topic, 2, "read_committed", expect=2)) == [
        b"again", b"kept"]


def test_an_open_transaction_is_aborted_after_kill_and_its_timeout(nerve_factory, unique_topic):
    nerve = nerve_factory(
        "--set", "transaction.abort.timed.out.transaction.cleanup.interval.ms=500")
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    p = txn_producer(nerve.bootstrap, "txn-timeout", **{"transaction.timeout.ms": 3000})
    p.begin_transaction()
    p.produce(topic, value=b"never-committed")
    p.flush(10)
    plain = Producer({"bootstrap.servers": nerve.bootstrap})
    plain.produce(topic, value=b"plain")
    plain.flush(10)
    nerve.kill()
    nerve.start()
    # After the timeout the coordinator aborts: the LSO moves on past the open transaction.
    assert consume_all(nerve.bootstrap, topic, 1, "read_committed", expect=1,
                       timeout=20) == [b"plain"]


def test_a_timeout_above_the_broker_maximum_is_refused_clearly(nerve_factory):
    nerve = nerve_factory("--set", "transaction.max.timeout.ms=5000")
    p = Producer({"bootstrap.servers": nerve.bootstrap, "transactional.id": "txn-too-long",
                  "transaction.timeout.ms": 60000})
    with pytest.raises(KafkaException) as e:
        p.init_transactions(10)
    assert e.value.args[0].code() == KafkaError.INVALID_TRANSACTION_TIMEOUT, e.value


def test_kafka_python_transactional_producer(nerve, unique_topic):
    from kafka import KafkaProducer

    topic = unique_topic()
    create_topic(nerve.bootstrap, topic, 2)
    p = KafkaProducer(bootstrap_servers=nerve.bootstrap, transactional_id="kp-txn")
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(10):
            p.send(topic, f"kp-commit-{i}".encode(), partition=i % 2)
        p.commit_transaction()
        p.begin_transaction()
        for i in range(10):
            p.send(topic, f"kp-abort-{i}".encode(), partition=i % 2)
        p.flush()
        p.abort_transaction()
    finally:
        p.close(timeout=10)
    got = consume_all(nerve.bootstrap, topic, 2, "read_committed", expect=10)
    assert sorted(got) == sorted(f"kp-commit-{i}".encode() for i in range(10))


async def test_aiokafka_transactional_producer(nerve, unique_topic):
    from aiokafka import AIOKafkaProducer

    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    p = AIOKafkaProducer(bootstrap_servers=nerve.bootstrap, transactional_id="aio-txn")
    await p.start()
    try:
        async with p.transaction():
            for i in range(5):
                await p.send(topic, f"aio-commit-{i}".encode())
        await p.begin_transaction()
        await p.send_and_wait(topic, b"aio-abort")
        await p.abort_transaction()
    finally:
        await p.stop()
    got = consume_all(nerve.bootstrap, topic, 1, "read_committed", expect=5)
    assert got == [f"aio-commit-{i}".encode() for i in range(5)]
