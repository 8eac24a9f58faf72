"""A deterministic compaction workload and a reader, shared by the nerve-only integration
tests (tests/integration/test_compaction.py) and the differential one against Kafka
(tests/compat/test_compaction_differential.py)."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

# segment.ms rolls the segments (Kafka 4 refuses a segment.bytes below 1 MiB); a low ratio
# makes every pass-worthy log clean at once.
TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": "100",
                "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "1500"}
Contents = dict[bytes, tuple[int, bytes | None]]


def create_topic(bootstrap: str, topic: str, config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, 1, 1, config=config or TOPIC_CONFIG)])[topic]
    fut.result(30)


def produce_rounds(bootstrap: str, topic: str, rounds: int = 4, keys: int = 12,
                   prefix: str = "k", tombstone_every: int = 7, start: int = 0) -> Contents:
    """`rounds` rounds of one update per key (every `tombstone_every`-th a tombstone), each
    round in its own segment(s); returns key -> (offset, value) of the latest records,
    counting offsets from `start` (the topic's log end before)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    latest: Contents = {}
    offset = start
    for r in range(rounds):
        for k in range(keys):
            key = f"{prefix}{k}".encode()
            n = r * keys + k
            value = None if n % tombstone_every == tombstone_every - 1 else f"v{r}-{k}".encode()
            producer.produce(topic, key=key, value=value, partition=0)
            latest[key] = (offset, value)
            offset += 1
        producer.flush(30)
        time.sleep(0.15)  # past segment.ms: the next round starts a segment
    return latest


def produce_one(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, key=key, value=value, partition=0)
    producer.flush(30)


def read_all(bootstrap: str, topic: str) -> tuple[list[tuple[int, bytes, bytes | None]], int]:
    """Every record of partition 0 from the start: (offset, key, value); and the end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "none",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[tuple[int, bytes, bytes | None]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    if msg.offset() >= high:
                        break
                    continue
                raise AssertionError(msg.error())
            out.append((msg.offset(), msg.key(), msg.value()))
            if msg.offset() >= high - 1:
                break
        return out, high
    finally:
        consumer.close()


def wait_compacted(bootstrap: str, topic: str, expect: Contents, timeout: float = 45) -> list:
    """Read until the partition holds exactly `expect` (one record per key); the records."""
    deadline = time.monotonic() + timeout
    while True:
        records, _ = read_all(bootstrap, topic)
        got = {k: (o, v) for o, k, v in records}
        if got == expect and len(records) == len(expect):
            return records
        if time.monotonic() > deadline:
            diff = {k: (got.get(k), expect.get(k)) for k in set(got) | set(expect)
                    if got.get(k) != expect.get(k)}
            raise AssertionError(f"not compacted to {len(expect)} records within {timeout} s: "
                                 f"{len(records)} records, differences {diff}")
        time.sleep(0.5)
