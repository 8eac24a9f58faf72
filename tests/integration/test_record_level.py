"""Answers that look inside a batch, through real clients against `nerve serve` (issue 17):
keyless records refused on compacted topics, ListOffsets by timestamp and MAX_TIMESTAMP at
record level. One broker for the module; the differential twins are in
tests/compat/test_records_differential.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)

from nerve.protocol import records as rb
from tests.compat.wire import WireClient
from tests.helpers import NerveProcess

INVALID_RECORD = 87


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NerveProcess]:
    proc = NerveProcess(tmp_path_factory.mktemp("records") / "data")
    proc.start()
    yield proc
    log = proc.log_tail(400)
    proc.stop()
    assert "Traceback" not in log, log


def topic_named(prefix: str, bootstrap: str, **configs: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1, 1, config=configs)])[name].result(15)
    return name


def rdk_send(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]],
             **conf: Any) -> list[str]:
    """librdkafka: one batch (linger) of these records; each one's outcome."""
    out: list[str] = []
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 100, "retries": 0, **conf})
    for key, value in records:
        p.produce(topic, key=key, value=value, partition=0,
                  on_delivery=lambda err, _m: out.append("ok" if err is None else err.name()))
    assert p.flush(20) == 0
    return out


def latest(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        c.close()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_keyless_records_refused_on_a_compacted_topic(broker: NerveProcess, codec: str) -> None:
    topic = topic_named("keyless", broker.bootstrap, **{"cleanup.policy": "compact"})
    refused = rdk_send(broker.bootstrap, topic, [(b"k", b"v" * 200), (None, b"w" * 200)],
                       **{"compression.type": codec})
    assert refused == ["INVALID_RECORD", "INVALID_RECORD"]
    assert rdk_send(broker.bootstrap, topic, [(b"k", b"1"), (b"k2", b"2")],
                    **{"compression.type": codec}) == ["ok", "ok"]
    assert latest(broker.bootstrap, topic) == 2


def test_keyless_refused_for_kafka_python_and_aiokafka(broker: NerveProcess) -> None:
    from aiokafka import AIOKafkaProducer
    from kafka import KafkaProducer

    topic = topic_named("keyless-py", broker.bootstrap, **{"cleanup.policy": "compact,delete"})
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, retries=0)
    try:
        with pytest.raises(Exception) as failed:
            kp.send(topic, value=b"no key", partition=0).get(timeout=15)
        assert "InvalidRecord" in type(failed.value).__name__
        assert kp.send(topic, key=b"k", value=b"keyed", partition=0).get(timeout=15).offset == 0
    finally:
        kp.close()

    async def aio() -> tuple[str, int]:
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await p.start()
        try:
            try:
                await p.send_and_wait(topic, value=b"no key", partition=0)
                name = "accepted"
            except Exception as e:
                name = type(e).__name__
            meta = await p.send_and_wait(topic, key=b"k", value=b"again", partition=0)
            return name, meta.offset
        finally:
            await p.stop()

    # aiokafka has no class for error 87 (it says UnknownError); refused is what counts.
    name, offset = asyncio.run(aio())
    assert (name != "accepted", offset) == (True, 1), name


def test_record_errors_name_each_keyless_record(broker: NerveProcess) -> None:
    topic = topic_named("keyless-raw", broker.bootstrap, **{"cleanup.policy": "compact"})
    batch = rb.build_batch([(None, b"a"), (b"k", b"b"), (None, b"c")])
    with WireClient(broker.bootstrap) as c:
        resp = c.call(0, 8, transactional_id=None, acks=1, timeout=5000,
                      topic_data=[{"name": topic,
                                   "partition_data": [{"index": 0, "records": batch}]}])
    p = resp.responses[0].partition_responses[0]
    why = f"Compacted topic cannot accept message without key in topic partition {topic}-0"
    assert int(p.error_code) == INVALID_RECORD
    assert [(int(e.batch_index), e.batch_index_error_message) for e in p.record_errors] == [
        (0, why), (2, why)]
    assert p.error_message.startswith("One or more records have been rejected due to 2 record")


def test_switching_a_topic_to_compact_refuses_keyless_records(broker: NerveProcess) -> None:
    topic = topic_named("keyless-alter", broker.bootstrap)
    assert rdk_send(broker.bootstrap, topic, [(None, b"x")]) == ["ok"]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def policy(op: AlterConfigOpType) -> None:
        res = ConfigResource("TOPIC", topic, incremental_configs=[
            ConfigEntry("cleanup.policy", "compact", incremental_operation=op)])
        admin.incremental_alter_configs([res])[res].result(15)

    policy(AlterConfigOpType.APPEND)  # delete,compact
    assert rdk_send(broker.bootstrap, topic, [(None, b"y")]) == ["INVALID_RECORD"]
    policy(AlterConfigOpType.SUBTRACT)  # delete again
    assert rdk_send(broker.bootstrap, topic, [(None, b"z")]) == ["ok"]
    assert latest(broker.bootstrap, topic) == 2


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_offsets_for_times_inside_a_batch(broker: NerveProcess, codec: str) -> None:
    topic = topic_named("ts", broker.bootstrap, **{"retention.ms": "-1"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200,
                  "compression.type": codec})
    stamps = [1234, 999_999_999_999, 500_000_000_000]  # one batch, out of order
    for i, ts in enumerate(stamps):
        p.produce(topic, key=b"k%d" % i, value=b"v", partition=0, timestamp=ts)
    assert p.flush(20) == 0

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-ts"})
    try:
        found = [c.offsets_for_times([TopicPartition(topic, 0, t)], timeout=10)[0].offset
                 for t in (1234, 999_999_999_999, 400_000_000_000, 10**13)]
    finally:
        c.close()
    assert found == [0, 1, 1, -1]

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    tp = TopicPartition(topic, 0)
    top = admin.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(15)
    assert (top.offset, top.timestamp) == (1, 999_999_999_999)

    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        got = kc.offsets_for_times({KTP(topic, 0): 999_999_999_999})[KTP(topic, 0)]
    finally:
        kc.close()
    assert (got.offset, got.timestamp) == (1, 999_999_999_999)


def test_timestamp_lookup_survives_a_restart(tmp_path: Path) -> None:
    """Sealed segments reopened lazily still answer at record level."""
    proc = NerveProcess(tmp_path / "data", extra_args=["--set", "log.segment.bytes=1048576"])
    proc.start()
    try:
        topic = topic_named("ts-restart", proc.bootstrap, **{"retention.ms": "-1",
                                                              "segment.bytes": "1048576"})
        with WireClient(proc.bootstrap) as c:
            for i in range(3):
                base = 1_000_000 * (i + 1)
                c.call(0, 9, transactional_id=None, acks=-1, timeout=5000, topic_data=[
                    {"name": topic, "partition_data": [{"index": 0, "records": rb.build_batch(
                        [(b"k", b"x" * 400_000), (b"k", b"y"), (b"k", b"z")],
                        timestamps=[base, base + 900, base + 500])}]}])
        proc.stop()
        time.sleep(0.2)
        proc.start()
        with WireClient(proc.bootstrap) as c:
            def lookup(ts: int) -> tuple[int, int]:
                r = c.call(2, 8, replica_id=-1, isolation_level=0, topics=[
                    {"name": topic, "partitions": [
                        {"partition_index": 0, "current_leader_epoch": -1, "timestamp": ts}]}])
                part = r.topics[0].partitions[0]
                return int(part.offset), int(part.timestamp)

            assert lookup(2_000_001) == (4, 2_000_900)
            assert lookup(-3) == (7, 3_000_900)
    finally:
        proc.stop()


def test_admin_errors_carry_kafkas_messages(broker: NerveProcess) -> None:
    """What applications see from the admin APIs: Kafka's texts (frameworks match on the
    first); the differential twins are in tests/compat/test_admin_errors_differential.py."""
    from confluent_kafka import KafkaException
    from kafka.admin import KafkaAdminClient
    from kafka.admin import NewTopic as KNewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    name = f"bad-{uuid.uuid4().hex[:8]}"
    with pytest.raises(KafkaException) as e:
        admin.create_topics([NewTopic(name, 1, 1, config={"no.such.config": "1"})])[
            name].result(15)
    assert "Unknown topic config name: no.such.config" in str(e.value)
    topic = topic_named("cfg", broker.bootstrap)
    res = ConfigResource("TOPIC", topic, set_config={"retention.ms": "-2"})
    with pytest.raises(KafkaException) as e:
        admin.alter_configs([res])[res].result(15)
    assert ("Invalid value -2 for configuration retention.ms: Value must be at least -1"
            in str(e.value))

    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        with pytest.raises(Exception) as ke:
            ka.create_topics([KNewTopic("bad/name", 1, 1)])
    finally:
        ka.close()
    assert "Topic name is invalid: 'bad/name' contains one or more characters" in str(ke.value)
