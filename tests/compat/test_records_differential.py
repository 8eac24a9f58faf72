"""Differential tests of the answers that need a look inside a batch (issue 17): keyless records
on compacted topics, and ListOffsets by timestamp / MAX_TIMESTAMP inside multi-record batches.

Each test runs against nerve and Apache Kafka 4.4.0 (the `broker` fixture) with one
expectation, so the Kafka run proves it is Kafka's behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from nerve.protocol import records as rb
from nerve.protocol.messages import ms
from tests.compat.conftest import Broker
from tests.compat.test_differential import create_topic, list_offset
from tests.compat.wire import WireClient

pytestmark = [pytest.mark.compat, pytest.mark.slow]

INVALID_RECORD = 87
UNSUPPORTED_VERSION = 35
KEEP = {"retention.ms": "-1"}  # old timestamps must not be swept by retention meanwhile


def produce(client: WireClient, topic: str, batch: bytes, version: int = 9) -> Any:
    resp = client.call(0, version, transactional_id=None, acks=-1, timeout=10000,
                       topic_data=[{"name": topic,
                                    "partition_data": [{"index": 0, "records": batch}]}])
    return resp.responses[0].partition_responses[0]


def keyless_texts(topic: str, indexes: list[int]) -> tuple[list[tuple[int, str]], str]:
    """Kafka's record_errors and error message for keyless records at these batch indexes."""
    why = f"Compacted topic cannot accept message without key in topic partition {topic}-0"
    shown = ", ".join(f"RecordError(batchIndex={i}, message='{why}')" for i in indexes[:3])
    return [(i, why) for i in indexes], (
        f"One or more records have been rejected due to {len(indexes)} record errors in "
        f"total, and only showing the first three errors at most: [{shown}]")


# ------------------------------------------------------------------ keyless records
@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_keyless_records_on_a_compacted_topic_are_refused(
        broker: Broker, unique: Callable[[str], str], policy: str) -> None:
    topic = unique("keyless")
    create_topic(broker.bootstrap, topic, **{"cleanup.policy": policy})
    mixed = [(b"k", b"v"), (None, b"x"), (b"k2", b"y"), (None, None), (b"k3", b"z"),
             (None, b"w"), (None, b"u")]
    batch = rb.build_batch(mixed, timestamp_ms=int(time.time() * 1000))
    with WireClient(broker.bootstrap) as c:
        answers = {v: produce(c, topic, batch, v) for v in (3, 7, 8, 9, 11)}
        keyed = produce(c, topic, rb.build_batch([(b"a", b"1"), (b"b", b"2")]))
    errors, message = keyless_texts(topic, [1, 3, 5, 6])
    for v, p in answers.items():
        assert (v, int(p.error_code), int(p.base_offset)) == (v, INVALID_RECORD, -1)
        if v >= 5:
            assert int(p.log_start_offset) == 0
        if v >= 8:
            assert [(int(e.batch_index), e.batch_index_error_message)
                    for e in p.record_errors] == errors
            assert p.error_message == message
    # Nothing of the refused batches was written; a keyed batch goes in at offset 0.
    assert (int(keyed.error_code), int(keyed.base_offset)) == (0, 0)
    assert list_offset(broker.bootstrap, topic, -1) == (0, 2, -1)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_keyless_records_in_compressed_batches(broker: Broker, unique: Callable[[str], str],
                                               codec: str) -> None:
    """librdkafka sends one compressed batch holding a keyed and a keyless record: the whole
    batch is refused (both records fail), and the application sees Kafka's message."""
    topic = unique("keyless-" + codec)
    create_topic(broker.bootstrap, topic, **{"cleanup.policy": "compact"})
    results: list[tuple[str | None, str]] = []

    def on_delivery(err: Any, msg: Any) -> None:
        results.append((msg.key().decode() if msg.key() else None,
                        "ok" if err is None else err.name() + ": " + err.str()))

    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200, "acks": "all",
                  "compression.type": codec, "retries": 0})
    # Metadata first: records queued before the partition's leader is known can leave one by
    # one once it is (their linger has run out), and then `a` is a batch of its own.
    p.list_topics(topic, timeout=20)
    p.produce(topic, key=b"a", value=b"v" * 100, partition=0, on_delivery=on_delivery)
    p.produce(topic, value=b"w" * 100, partition=0, on_delivery=on_delivery)
    assert p.flush(30) == 0
    p.produce(topic, key=b"b", value=b"later", partition=0, on_delivery=on_delivery)
    assert p.flush(30) == 0
    why = "INVALID_RECORD: Broker: Broker failed to validate record"  # librdkafka's text
    assert sorted(results[:2], key=str) == sorted([("a", why), (None, why)], key=str)
    assert results[2] == ("b", "ok")
    assert list_offset(broker.bootstrap, topic, -1) == (0, 1, -1)


def test_keyless_records_accepted_on_a_delete_topic(broker: Broker,
                                                    unique: Callable[[str], str]) -> None:
    topic = unique("keyless-ok")
    create_topic(broker.bootstrap, topic)
    with WireClient(broker.bootstrap) as c:
        p = produce(c, topic, rb.build_batch([(None, b"x"), (b"k", b"v")]))
    assert (int(p.error_code), int(p.base_offset), list(p.record_errors)) == (0, 0, [])


# ------------------------------------------------------------------ timestamps in batches
def lookups(bootstrap: str, topic: str, targets: list[int],
            version: int = 8) -> dict[int, tuple[int, int, int]]:
    return {t: list_offset(bootstrap, topic, t, version=version) for t in targets}


def test_list_offsets_by_timestamp_finds_the_record_inside_a_batch(
        broker: Broker, unique: Callable[[str], str]) -> None:
    topic = unique("ts-inside")
    create_topic(broker.bootstrap, topic, **KEEP)
    with WireClient(broker.bootstrap) as c:
        first = produce(c, topic, rb.build_batch([(b"a", b"1"), (b"b", b"2")],
                                                 timestamps=[1234, 999_999_999_999]))
        second = produce(c, topic, rb.build_batch(
            [(b"k%d" % i, b"v") for i in range(5)],
            timestamps=[1_000_000_005_000, 1_000_000_009_000, 1_000_000_007_000,
                        1_000_000_009_000, 1_000_000_000_100]))
    assert (int(first.base_offset), int(second.base_offset)) == (0, 2)
    got = lookups(broker.bootstrap, topic, [
        0, 1234, 1235, 999_999_999_999, 1_000_000_000_000, 1_000_000_006_000,
        1_000_000_008_000, 1_000_000_009_000, 1_000_000_009_001, -3])
    assert got == {
        0: (0, 0, 1234),
        1234: (0, 0, 1234),
        1235: (0, 1, 999_999_999_999),  # the example: Kafka answers 1, not 0
        999_999_999_999: (0, 1, 999_999_999_999),
        1_000_000_000_000: (0, 2, 1_000_000_005_000),
        1_000_000_006_000: (0, 3, 1_000_000_009_000),
        1_000_000_008_000: (0, 3, 1_000_000_009_000),  # offset order, not timestamp order
        1_000_000_009_000: (0, 3, 1_000_000_009_000),
        1_000_000_009_001: (0, -1, -1),
        # MAX_TIMESTAMP: the first record carrying the largest timestamp, not the batch's end
        -3: (0, 3, 1_000_000_009_000),
    }


def test_max_timestamp_in_the_middle_of_a_batch(broker: Broker,
                                                unique: Callable[[str], str]) -> None:
    topic = unique("ts-max")
    create_topic(broker.bootstrap, topic, **KEEP)
    now = int(time.time() * 1000)
    with WireClient(broker.bootstrap) as c:
        produce(c, topic, rb.build_batch([(b"x", b"1")], timestamps=[now - 9000]))
        produce(c, topic, rb.build_batch([(b"k%d" % i, b"v") for i in range(4)],
                                         timestamps=[now - 5000, now - 1000, now - 3000,
                                                     now - 2000]))
        produce(c, topic, rb.build_batch([(b"y", b"2")], timestamps=[now - 4000]))
    assert list_offset(broker.bootstrap, topic, -3) == (0, 2, now - 1000)
    assert list_offset(broker.bootstrap, topic, now - 2500) == (0, 2, now - 1000)
    # The same through librdkafka's admin API.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    tp = TopicPartition(topic, 0)
    got = {name: admin.list_offsets({tp: spec})[tp].result(20).offset
           for name, spec in {"max": OffsetSpec.max_timestamp(),
                              "ts": OffsetSpec.for_timestamp(now - 4500)}.items()}
    assert got == {"max": 2, "ts": 2}


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_timestamps_inside_a_client_batch(broker: Broker, unique: Callable[[str], str],
                                          codec: str) -> None:
    """librdkafka batches three records (linger) with out-of-order timestamps."""
    topic = unique("ts-client")
    create_topic(broker.bootstrap, topic, **KEEP)
    now = int(time.time() * 1000)
    stamps = [now - 3000, now - 1000, now - 2000]
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 200, "acks": "all",
                  "compression.type": codec})
    for i, ts in enumerate(stamps):
        p.produce(topic, key=b"k%d" % i, value=b"v" * 50, partition=0, timestamp=ts)
    assert p.flush(30) == 0
    with WireClient(broker.bootstrap) as c:
        fetched = c.call(1, 12, replica_id=-1, max_wait=500, min_bytes=1, max_bytes=1 << 20,
                         isolation_level=0, session_id=0, session_epoch=-1, topics=[
                             {"topic": topic, "partitions": [
                                 {"partition": 0, "fetch_offset": 0, "partition_max_bytes":
                                  1 << 20, "current_leader_epoch": -1, "last_fetched_epoch":
                                  -1, "log_start_offset": -1}]}], forgotten_topics_data=[],
                         rack_id="")
    records = fetched.responses[0].partitions[0].records
    assert len(list(rb.iter_batches(records))) == 1  # one batch holds all three
    assert lookups(broker.bootstrap, topic, [now - 2500, now - 1500, -3]) == {
        now - 2500: (0, 1, now - 1000), now - 1500: (0, 1, now - 1000),
        -3: (0, 1, now - 1000)}


def test_log_append_time_answers_at_batch_level(broker: Broker,
                                                unique: Callable[[str], str]) -> None:
    topic = unique("ts-lat")
    create_topic(broker.bootstrap, topic, **KEEP, **{"message.timestamp.type": "LogAppendTime"})
    with WireClient(broker.bootstrap) as c:
        a = produce(c, topic, rb.build_batch([(b"a", b"1"), (b"b", b"2")],
                                             timestamps=[1234, 999_999_999_999]))
        time.sleep(0.05)
        b = produce(c, topic, rb.build_batch([(b"c", b"3"), (b"d", b"4"), (b"e", b"5")]))
    t_a, t_b = ms(a.log_append_time), ms(b.log_append_time)
    assert t_a < t_b
    # Every record of a LogAppendTime batch carries the batch's time: the first one answers.
    assert lookups(broker.bootstrap, topic, [0, t_a, t_a + 1, t_b, t_b + 1, -3]) == {
        0: (0, 0, t_a), t_a: (0, 0, t_a), t_a + 1: (0, 2, t_b), t_b: (0, 2, t_b),
        t_b + 1: (0, -1, -1), -3: (0, 2, t_b)}


def test_special_timestamps_by_version(broker: Broker, unique: Callable[[str], str]) -> None:
    """MAX_TIMESTAMP (-3) from v7, EARLIEST_LOCAL (-4) from v8, LATEST_TIERED (-5) from v9,
    EARLIEST_PENDING_UPLOAD (-6) from v11; before that, and for other negative timestamps,
    UNSUPPORTED_VERSION. Without tiered storage -5 and -6 answer offset -1. An empty
    partition has no MAX_TIMESTAMP record."""
    topic = unique("ts-special")
    empty = unique("ts-empty")
    create_topic(broker.bootstrap, topic, **KEEP)
    create_topic(broker.bootstrap, empty, **KEEP)
    now = int(time.time() * 1000)
    with WireClient(broker.bootstrap) as c:
        produce(c, topic, rb.build_batch([(b"a", b"1"), (b"b", b"2")],
                                         timestamps=[now - 2000, now - 1000]))

    def row(t: str, ts: int) -> list[tuple[int, int, int, int]]:
        out = []
        for v in (1, 6, 7, 8, 9, 10, 11):
            with WireClient(broker.bootstrap) as c:
                resp = c.call(2, v, replica_id=-1, isolation_level=0, timeout_ms=5000,
                              topics=[{"name": t, "partitions": [
                                  {"partition_index": 0, "current_leader_epoch": -1,
                                   "timestamp": ts}]}])
            p = resp.topics[0].partitions[0]
            out.append((int(p.error_code), int(p.offset), int(p.timestamp),
                        int(getattr(p, "leader_epoch", -9))))
        return out

    got = {(name, ts): row(t, ts) for name, t in (("data", topic), ("empty", empty))
           for ts in (-3, -4, -5, -6, -7, -100, now + 60_000)}
    u = (UNSUPPORTED_VERSION, -1, -1, -1)
    u1 = (UNSUPPORTED_VERSION, -1, -1, -9)  # v1 has no leader_epoch field
    none = (0, -1, -1, -1)
    assert got == {
        ("data", -3): [u1, u, (0, 1, now - 1000, 0), *[(0, 1, now - 1000, 0)] * 4],
        ("data", -4): [u1, u, u, *[(0, 0, -1, 0)] * 4],
        ("data", -5): [u1, u, u, u, none, none, none],
        ("data", -6): [u1, u, u, u, u, u, none],
        ("data", -7): [u1, *[u] * 6],
        ("data", -100): [u1, *[u] * 6],
        ("data", now + 60_000): [(0, -1, -1, -9), *[none] * 6],
        ("empty", -3): [u1, u, *[none] * 5],
        ("empty", -4): [u1, u, u, *[(0, 0, -1, 0)] * 4],
        ("empty", -5): [u1, u, u, u, none, none, none],
        ("empty", -6): [u1, u, u, u, u, u, none],
        ("empty", -7): [u1, *[u] * 6],
        ("empty", -100): [u1, *[u] * 6],
        ("empty", now + 60_000): [(0, -1, -1, -9), *[none] * 6],
    }
