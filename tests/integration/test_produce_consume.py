"""Produce and consume through real clients against a real `nerve serve` process.

Every codec is produced by one client and read back by another; offsets, keys, values,
headers and timestamps must survive unchanged.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def create_topic(bootstrap: str, topic: str, partitions: int = 1, **configs: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, partitions, 1, config=configs)])[topic]
    fut.result(timeout=10)


def rdk_produce(bootstrap: str, topic: str, values: list[bytes], **conf: object) -> list[int]:
    """Produce with librdkafka and return the acknowledged offsets, in order."""
    offsets: list[int] = []
    errors: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(err)
        else:
            offsets.append(msg.offset())  # type: ignore[attr-defined]

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **conf})
    for i, v in enumerate(values):
        p.produce(topic, value=v, key=str(i).encode(), headers=[("h", b"x")],
                  on_delivery=on_delivery)
    assert p.flush(30) == 0
    assert not errors, errors
    return offsets


def rdk_consume(bootstrap: str, topic: str, n: int, partition: int = 0, offset: int = 0,
                timeout_s: float = 20) -> list[tuple[int, bytes | None, bytes | None]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, offset)])
    out: list[tuple[int, bytes | None, bytes | None]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        out.append((msg.offset(), msg.key(), msg.value()))
    c.close()
    return out


def kp_consume(bootstrap: str, topic: str, n: int) -> list[tuple[int, bytes | None, bytes]]:
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=15000)
    c.assign([KTP(topic, 0)])
    c.seek_to_beginning()
    out = []
    for msg in c:
        out.append((msg.offset, msg.key, msg.value))
        if len(out) >= n:
            break
    c.close()
    return out


@pytest.mark.parametrize("codec", CODECS)
def test_librdkafka_produces_each_codec_and_two_clients_read_it(nerve, unique_topic, codec):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    values = [f"value-{i}-{codec}".encode() * 3 for i in range(200)]
    offsets = rdk_produce(nerve.bootstrap, topic, values, **{"compression.type": codec,
                                                             "acks": "all"})
    assert offsets == list(range(200))
    got = rdk_consume(nerve.bootstrap, topic, 200)
    assert [(o, v) for o, _k, v in got] == list(enumerate(values))
    assert [k for _o, k, _v in got] == [str(i).encode() for i in range(200)]
    got_kp = kp_consume(nerve.bootstrap, topic, 200)
    assert [(o, v) for o, _k, v in got_kp] == list(enumerate(values))


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd", None])
def test_kafka_python_produces_and_aiokafka_reads(nerve, unique_topic, codec):
    from kafka import KafkaProducer

    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    p = KafkaProducer(bootstrap_servers=nerve.bootstrap, compression_type=codec, acks="all",
                      linger_ms=5)
    futures = [p.send(topic, key=b"k%d" % i, value=b"v%d" % i, headers=[("n", b"%d" % i)])
               for i in range(100)]
    metas = [f.get(timeout=20) for f in futures]
    p.close()
    assert [m.offset for m in metas] == list(range(100))

    async def consume() -> list[tuple[int, bytes, bytes, list]]:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition as ATP

        c = AIOKafkaConsumer(bootstrap_servers=nerve.bootstrap, enable_auto_commit=False)
        await c.start()
        try:
            tp = ATP(topic, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            out = []
            while len(out) < 100:
                batch = await asyncio.wait_for(c.getmany(timeout_ms=1000), 20)
                for msgs in batch.values():
                    out.extend((m.offset, m.key, m.value, list(m.headers)) for m in msgs)
            return out
        finally:
            await c.stop()

    got = asyncio.run(consume())
    assert [(o, k, v) for o, k, v, _h in got] == [(i, b"k%d" % i, b"v%d" % i) for i in range(100)]
    assert got[7][3] == [("n", b"7")]


def test_aiokafka_round_trip_with_auto_created_topic(nerve, unique_topic):
    topic = unique_topic()

    async def run() -> list[bytes]:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        p = AIOKafkaProducer(bootstrap_servers=nerve.bootstrap, compression_type="gzip")
        await p.start()
        try:
            for i in range(20):
                await p.send_and_wait(topic, b"m%d" % i)
        finally:
            await p.stop()
        c = AIOKafkaConsumer(topic, bootstrap_servers=nerve.bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        try:
            out = []
            while len(out) < 20:
                batch = await asyncio.wait_for(c.getmany(timeout_ms=1000), 20)
                for msgs in batch.values():
                    out.extend(m.value for m in msgs)
            return out
        finally:
            await c.stop()

    assert asyncio.run(run()) == [b"m%d" % i for i in range(20)]


def test_fetch_from_mid_batch_offset_returns_the_rest(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    # One produce call with linger: librdkafka packs all ten records into a single batch.
    rdk_produce(nerve.bootstrap, topic, [b"r%d" % i for i in range(10)], **{"linger.ms": 50})
    got = rdk_consume(nerve.bootstrap, topic, 5, offset=5)
    assert [(o, v) for o, _k, v in got] == [(i, b"r%d" % i) for i in range(5, 10)]


def test_batch_larger_than_fetch_limits_is_still_delivered(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    big = b"x" * 300_000
    rdk_produce(nerve.bootstrap, topic, [big])
    # librdkafka refuses fetch.max.bytes below message.max.bytes; kafka-python lets us ask for
    # 1 KiB, so the broker must hand out the whole 300 KB batch anyway (KIP-74).
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    c = KafkaConsumer(bootstrap_servers=nerve.bootstrap, enable_auto_commit=False,
                      fetch_max_bytes=1024, max_partition_fetch_bytes=1024,
                      consumer_timeout_ms=15000)
    c.assign([KTP(topic, 0)])
    c.seek_to_beginning()
    msg = next(iter(c), None)
    c.close()
    assert msg is not None
    assert msg.value == big


def test_long_poll_returns_as_soon_as_data_arrives(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    c = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": "g-lp",
                  "fetch.wait.max.ms": 5000, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    c.poll(1.0)  # the consumer is now parked in a long poll on an empty partition
    sent = time.monotonic()
    rdk_produce(nerve.bootstrap, topic, [b"wake"], **{"linger.ms": 0})
    msg = None
    while msg is None and time.monotonic() - sent < 10:
        msg = c.poll(0.1)
    waited = time.monotonic() - sent
    c.close()
    assert msg is not None and msg.value() == b"wake"
    # Far below fetch.wait.max.ms: the append woke the waiting fetch.
    assert waited < 3.0


def test_list_offsets_earliest_latest_and_by_timestamp(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    p = Producer({"bootstrap.servers": nerve.bootstrap, "linger.ms": 0})
    base = 1_700_000_000_000
    for i in range(5):
        p.produce(topic, value=b"t%d" % i, timestamp=base + i * 1000)
        p.flush(10)
    c = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": "g-lo"})
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (low, high) == (0, 5)
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 2500)], timeout=10)
    assert found[0].offset == 3
    after = c.offsets_for_times([TopicPartition(topic, 0, base + 99_000)], timeout=10)
    assert after[0].offset == -1
    c.close()


def test_unknown_topic_without_auto_create(nerve_factory, unique_topic):
    broker = nerve_factory("--set", "auto.create.topics.enable=false")
    topic = unique_topic()
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 3000})
    errors: list[object] = []
    p.produce(topic, b"x", on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert len(errors) == 1 and errors[0] is not None
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=10)
    assert md.topics[topic].error is not None
    assert md.topics[topic].error.code() == 3  # UNKNOWN_TOPIC_OR_PARTITION


def test_message_too_large_is_refused(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic, **{"max.message.bytes": "10000"})
    p = Producer({"bootstrap.servers": nerve.bootstrap, "message.max.bytes": 200_000})
    errors: list[object] = []
    p.produce(topic, b"y" * 50_000, on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert errors and errors[0] is not None
    assert errors[0].code() == 10 or "too large" in str(errors[0]).lower()


def test_huge_batch_goes_out_zero_copy_and_arrives_intact(nerve, unique_topic):
    """A fetch region above SENDFILE_MIN_BYTES is sent with sendfile; bytes must be exact."""
    from nerve.server.connection import SENDFILE_MIN_BYTES

    topic = unique_topic()
    size = SENDFILE_MIN_BYTES + 1_000_000
    create_topic(nerve.bootstrap, topic, **{"max.message.bytes": str(size + 10_000)})
    big = bytes(range(256)) * (size // 256)
    rdk_produce(nerve.bootstrap, topic, [big], **{"message.max.bytes": size + 10_000,
                                                  "compression.type": "none"})
    c = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": "g-huge",
                  "enable.auto.commit": False, "fetch.max.bytes": size * 2,
                  "max.partition.fetch.bytes": size * 2,
                  "receive.message.max.bytes": size * 2 + 10_000})
    c.assign([TopicPartition(topic, 0, 0)])
    msg = None
    deadline = time.monotonic() + 30
    while msg is None and time.monotonic() < deadline:
        msg = c.poll(0.5)
    c.close()
    assert msg is not None and not msg.error()
    assert msg.value() == big


def test_concurrent_fetches_each_get_their_own_bytes(nerve, unique_topic):
    """Fetch answers are read into buffers a broker lends and takes back: consumers reading
    at the same time must each get exactly their records (CRCs checked by the client)."""
    import threading

    topics = [unique_topic() for _ in range(3)]
    per_partition = 3000
    for t in topics:
        create_topic(nerve.bootstrap, t, partitions=4)
        p = Producer({"bootstrap.servers": nerve.bootstrap, "linger.ms": 5,
                      "compression.type": "none"})
        for part in range(4):
            for i in range(per_partition):
                p.produce(t, f"{t}/{part}/{i}/".encode().ljust(1024, b"."), partition=part)
        assert p.flush(30) == 0

    failures: list[str] = []

    def read_all(topic: str) -> None:
        c = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": f"g-{topic}",
                      "enable.auto.commit": False, "check.crcs": True,
                      # Big answers into a small receive buffer: the broker's writes stall
                      # half-way, so several answers are in flight at once.
                      "socket.receive.buffer.bytes": 8192,
                      "max.partition.fetch.bytes": 4 << 20})
        c.assign([TopicPartition(topic, part, 0) for part in range(4)])
        seen = 0
        deadline = time.monotonic() + 60
        while seen < 4 * per_partition and time.monotonic() < deadline:
            for msg in c.consume(500, timeout=0.5):
                if msg.error():
                    failures.append(str(msg.error()))
                    continue
                want = f"{topic}/{msg.partition()}/{msg.offset()}/".encode().ljust(1024, b".")
                if msg.value() != want:
                    failures.append(f"{topic}[{msg.partition()}]@{msg.offset()}: wrong bytes")
                seen += 1
        c.close()
        if seen != 4 * per_partition:
            failures.append(f"{topic}: read {seen} of {4 * per_partition}")

    threads = [threading.Thread(target=read_all, args=(t,)) for t in topics * 2]
    for th in threads:
        th.start()
    for th in threads:
        th.join(90)
    assert not failures, failures[:5]
