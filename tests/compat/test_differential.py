"""Differential tests: what clients observe from nerve must match what Apache Kafka 4.4.0 does.

Each test runs once per broker (the `broker` fixture) with one expectation; the Kafka run proves
the expectation is Kafka's behaviour, the nerve run that nerve matches it. Tests that need both
answers side by side (config defaults) take `nerve_broker` and `kafka_broker` directly.
Intended differences are listed in docs/oracle.md; nerve bugs are strict xfails on nerve only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)

from nerve.config import TOPIC_CONFIGS
from nerve.protocol import records as rb
from tests.compat.conftest import Broker, KafkaProcess
from tests.compat.wire import WireClient, call
from tests.helpers import NerveProcess

pytestmark = [pytest.mark.compat, pytest.mark.slow]

UNKNOWN_TOPIC_OR_PARTITION = 3
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
OUT_OF_ORDER_SEQUENCE_NUMBER = 45


# ------------------------------------------------------------------ helpers
def create_topic(bootstrap: str, topic: str, partitions: int = 1, **configs: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1, config=configs)])[topic].result(20)
    wait_for_leaders(bootstrap, topic, partitions)


def wait_for_leaders(bootstrap: str, topic: str, partitions: int, timeout: float = 20) -> None:
    # Kafka's controller acknowledges CreateTopics before the broker has loaded the partitions;
    # a raw Produce right after would get NOT_LEADER_OR_FOLLOWER. Clients retry; raw tests wait.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=10).topics.get(topic)
        # The Metadata cache can lead the log manager by a moment: probe with ListOffsets too.
        if (md is not None and md.error is None and len(md.partitions) == partitions
                and all(p.leader >= 0 for p in md.partitions.values())
                and all(list_offset(bootstrap, topic, -1, p)[0] == 0
                        for p in range(partitions))):
            return
        time.sleep(0.1)
    raise AssertionError(f"{topic}: partitions without a leader after {timeout}s")


def produce_values(bootstrap: str, topic: str, batches: list[list[bytes]],
                   partition: int = 0, **conf: Any) -> list[int]:
    """Produce each inner list as its own batch (flush between) and return the offsets."""
    offsets: list[int] = []
    errors: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            offsets.append(msg.offset())

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", **conf})
    for batch in batches:
        for v in batch:
            p.produce(topic, value=v, partition=partition, on_delivery=on_delivery)
        assert p.flush(30) == 0
    assert not errors, errors
    return offsets


def produce_raw(bootstrap: str, topic: str, batch: bytes, partition: int = 0,
                client: WireClient | None = None) -> tuple[int, int]:
    """A raw Produce v9 of one batch: (error_code, base_offset)."""
    fields: dict[str, Any] = dict(
        transactional_id=None, acks=-1, timeout=10000,
        topic_data=[{"name": topic,
                     "partition_data": [{"index": partition, "records": batch}]}])
    resp = client.call(0, 9, **fields) if client else call(bootstrap, 0, 9, **fields)
    part = resp.responses[0].partition_responses[0]
    return int(part.error_code), int(part.base_offset)


def list_offset(bootstrap: str, topic: str, timestamp: int,
                partition: int = 0, version: int = 7) -> tuple[int, int, int]:
    """Raw ListOffsets: (error_code, offset, timestamp) for the given spec timestamp."""
    resp = call(bootstrap, 2, version, replica_id=-1, isolation_level=0,
                topics=[{"name": topic, "partitions": [
                    {"partition_index": partition, "current_leader_epoch": -1,
                     "timestamp": timestamp}]}])
    p = resp.topics[0].partitions[0]
    return int(p.error_code), int(p.offset), int(p.timestamp)


def init_producer_id(bootstrap: str) -> tuple[int, int]:
    resp = call(bootstrap, 22, 4, transactional_id=None, transaction_timeout=60000,
                producer_id=-1, producer_epoch=-1)
    assert int(resp.error_code) == 0, resp
    return int(resp.producer_id), int(resp.producer_epoch)


# ------------------------------------------------------------------ offsets
def test_offsets_assigned_for_a_produce_sequence(broker: Broker,
                                                 unique: Callable[[str], str]) -> None:
    topic = unique("offsets")
    create_topic(broker.bootstrap, topic)
    first = produce_values(broker.bootstrap, topic, [[b"a"] * 5, [b"b"], [b"c"] * 10])
    # A second, idempotent producer continues where the first stopped.
    second = produce_values(broker.bootstrap, topic, [[b"d"] * 3],
                            **{"enable.idempotence": True})
    assert (first, second) == (list(range(16)), [16, 17, 18])


def test_list_offsets_earliest_latest_by_timestamp_and_max(
        broker: Broker, unique: Callable[[str], str]) -> None:
    topic = unique("lo")
    create_topic(broker.bootstrap, topic)
    now = int(time.time() * 1000)
    # Out of order timestamps, so "max timestamp" (-3) is not simply the last record.
    stamps = [now - 5000, now - 3000, now - 1000, now - 4000, now - 2000]
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "acks": "all"})
    for i, ts in enumerate(stamps):
        p.produce(topic, value=b"v%d" % i, partition=0, timestamp=ts)
        p.flush(20)  # one batch per record: timestamp lookups then see batch boundaries
    assert p.flush(20) == 0

    raw = {
        "earliest": list_offset(broker.bootstrap, topic, -2),
        "latest": list_offset(broker.bootstrap, topic, -1),
        "max_timestamp": list_offset(broker.bootstrap, topic, -3),
        "by_ts_exact": list_offset(broker.bootstrap, topic, now - 3000),
        "by_ts_between": list_offset(broker.bootstrap, topic, now - 3500),
        "by_ts_after_all": list_offset(broker.bootstrap, topic, now + 60_000),
        "earliest_v1": list_offset(broker.bootstrap, topic, -2, version=1),
        "latest_v1": list_offset(broker.bootstrap, topic, -1, version=1),
    }
    assert raw == {
        "earliest": (0, 0, -1),
        "latest": (0, 5, -1),
        "max_timestamp": (0, 2, now - 1000),
        "by_ts_exact": (0, 1, now - 3000),
        # The first record whose timestamp is >= the target, in offset order.
        "by_ts_between": (0, 1, now - 3000),
        "by_ts_after_all": (0, -1, -1),
        "earliest_v1": (0, 0, -1),
        "latest_v1": (0, 5, -1),
    }

    # The same through librdkafka's admin API.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    tp = TopicPartition(topic, 0)
    specs = {"earliest": OffsetSpec.earliest(), "latest": OffsetSpec.latest(),
             "max": OffsetSpec.max_timestamp(), "ts": OffsetSpec.for_timestamp(now - 3500)}
    got = {name: admin.list_offsets({tp: spec})[tp].result(20).offset
           for name, spec in specs.items()}
    assert got == {"earliest": 0, "latest": 5, "max": 2, "ts": 1}


# ------------------------------------------------------------------ error codes
def test_metadata_unknown_topic_without_auto_create(broker: Broker,
                                                    unique: Callable[[str], str]) -> None:
    topic = unique("missing")
    resp = call(broker.bootstrap, 3, 12, topics=[{"name": topic}],
                allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    t = resp.topics[0]
    again = call(broker.bootstrap, 3, 12, topics=None, allow_auto_topic_creation=False,
                 include_topic_authorized_operations=False)
    assert (t.name, int(t.error_code), len(t.partitions)) == (topic,
                                                               UNKNOWN_TOPIC_OR_PARTITION, 0)
    assert topic not in {x.name for x in again.topics}  # and it was not created


def test_metadata_auto_create_makes_the_topic(broker: Broker,
                                              unique: Callable[[str], str]) -> None:
    topic = unique("auto")
    resp = call(broker.bootstrap, 3, 12, topics=[{"name": topic}],
                allow_auto_topic_creation=True, include_topic_authorized_operations=False)
    # Kafka 4.1 answers the creating request with UNKNOWN_TOPIC_OR_PARTITION (creation goes
    # through the controller); nerve creates synchronously and answers 0 with the partition.
    # Intended difference (docs/oracle.md): clients retry on 3 either way.
    first = resp.topics[0]
    assert (first.name, int(first.error_code)) in {(topic, 0), (topic, UNKNOWN_TOPIC_OR_PARTITION)}
    deadline = time.monotonic() + 15
    while True:
        t = call(broker.bootstrap, 3, 12, topics=[{"name": topic}],
                 allow_auto_topic_creation=False,
                 include_topic_authorized_operations=False).topics[0]
        if int(t.error_code) == 0 and t.partitions and t.partitions[0].leader_id >= 0:
            break
        assert time.monotonic() < deadline, t
        time.sleep(0.1)
    assert (len(t.partitions), int(t.partitions[0].error_code)) == (1, 0)  # num.partitions=1


def fetch_one(bootstrap: str, topic: str, offset: int) -> tuple[int, int, int, bool]:
    """Raw Fetch v12: (error_code, high_watermark, log_start_offset, has_records)."""
    resp = call(bootstrap, 1, 12, replica_id=-1, max_wait=0, min_bytes=1,
                max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
                topics=[{"topic": topic, "partitions": [{
                    "partition": 0, "current_leader_epoch": -1, "fetch_offset": offset,
                    "last_fetched_epoch": -1, "log_start_offset": -1,
                    "partition_max_bytes": 1 << 20}]}],
                forgotten_topics_data=[], rack_id="")
    p = resp.responses[0].partitions[0]
    return (int(p.error_code), int(p.high_watermark), int(p.log_start_offset), bool(p.records))


def test_fetch_out_of_range_offset(broker: Broker, unique: Callable[[str], str]) -> None:
    topic = unique("oor")
    create_topic(broker.bootstrap, topic)
    produce_values(broker.bootstrap, topic, [[b"x"] * 3])
    got = {o: fetch_one(broker.bootstrap, topic, o) for o in (0, 3, 4, 100, -5)}
    assert {o: (e, recs) for o, (e, _hw, _ls, recs) in got.items()} == {
        0: (0, True),
        3: (0, False),  # the log end offset itself is valid, just empty
        4: (OFFSET_OUT_OF_RANGE, False),
        100: (OFFSET_OUT_OF_RANGE, False),
        -5: (OFFSET_OUT_OF_RANGE, False),
    }
    assert (got[0][1:3], got[3][1:3]) == ((3, 0), (3, 0))

    # What librdkafka reports with auto.offset.reset=error.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("g"),
                  "auto.offset.reset": "error", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 100)])
    err = None
    deadline = time.monotonic() + 15
    while err is None and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and msg.error():
            err = msg.error().code()
    c.close()
    assert err == KafkaError._AUTO_OFFSET_RESET


def test_fetch_error_partition_has_no_watermarks(broker: Broker,
                                                 unique: Callable[[str], str]) -> None:
    # Kafka answers an errored partition with high_watermark = log_start_offset = -1
    # (FetchResponse.partitionResponse(error)).
    topic = unique("oorhw")
    create_topic(broker.bootstrap, topic)
    produce_values(broker.bootstrap, topic, [[b"x"] * 3])
    assert fetch_one(broker.bootstrap, topic, 100) == (OFFSET_OUT_OF_RANGE, -1, -1, False)


def test_oversize_batch_vs_max_message_bytes(broker: Broker,
                                             unique: Callable[[str], str]) -> None:
    topic = unique("big")
    create_topic(broker.bootstrap, topic, **{"max.message.bytes": "1024"})
    small = rb.build_batch([(None, b"s" * 900)])
    big = rb.build_batch([(None, b"b" * 2000)])
    assert len(small) <= 1024 < len(big)
    results = [produce_raw(broker.bootstrap, topic, big)[0],
               produce_raw(broker.bootstrap, topic, small)]
    assert results == [MESSAGE_TOO_LARGE, (0, 0)]

    # librdkafka's own limit is 1 MB, so the broker's answer is what the application sees.
    errs: list[int] = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    p.produce(topic, value=b"z" * 4000,
              on_delivery=lambda err, _m: errs.append(err.code() if err else 0))
    p.flush(20)
    assert errs == [KafkaError.MSG_SIZE_TOO_LARGE]


def test_bad_crc_is_corrupt_message(broker: Broker, unique: Callable[[str], str]) -> None:
    topic = unique("crc")
    create_topic(broker.bootstrap, topic)
    batch = bytearray(rb.build_batch([(b"k", b"v")]))
    batch[-1] ^= 0xFF  # last byte of the last record: inside the CRC'd range
    with WireClient(broker.bootstrap) as c:
        bad = produce_raw(broker.bootstrap, topic, bytes(batch), client=c)
        good = produce_raw(broker.bootstrap, topic, rb.build_batch([(b"k", b"ok")]), client=c)
    assert (bad[0], good) == (CORRUPT_MESSAGE, (0, 0))


def test_duplicate_idempotent_batch_and_sequence_gap(broker: Broker,
                                                     unique: Callable[[str], str]) -> None:
    topic = unique("idem")
    create_topic(broker.bootstrap, topic)
    pid, epoch = init_producer_id(broker.bootstrap)

    def batch(seq: int, n: int) -> bytes:
        return rb.build_batch([(None, b"r%d" % (seq + i)) for i in range(n)],
                              producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                              timestamp_ms=int(time.time() * 1000))

    with WireClient(broker.bootstrap) as c:
        seen = {
            "first": produce_raw(broker.bootstrap, topic, batch(0, 3), client=c),
            "duplicate": produce_raw(broker.bootstrap, topic, batch(0, 3), client=c),
            "next": produce_raw(broker.bootstrap, topic, batch(3, 2), client=c),
            "older_duplicate": produce_raw(broker.bootstrap, topic, batch(0, 3), client=c),
            "gap": produce_raw(broker.bootstrap, topic, batch(9, 1), client=c)[0],
            "after_gap": produce_raw(broker.bootstrap, topic, batch(5, 1), client=c),
        }
    assert seen == {
        "first": (0, 0),
        "duplicate": (0, 0),  # same offsets, no error, nothing appended
        "next": (0, 3),
        "older_duplicate": (0, 0),  # still among the last 5 batches
        "gap": OUT_OF_ORDER_SEQUENCE_NUMBER,
        "after_gap": (0, 5),  # the gap was rejected, not stored
    }
    assert list_offset(broker.bootstrap, topic, -1)[1] == 6


def test_first_sequence_of_an_unknown_producer(broker: Broker, request: pytest.FixtureRequest,
                                               unique: Callable[[str], str]) -> None:
    # A producer id the partition has never seen, starting at sequence 7 (as after its state
    # expired): Kafka 4 accepts it (no state to check against) rather than OUT_OF_ORDER.
    topic = unique("seq")
    create_topic(broker.bootstrap, topic)
    pid, epoch = init_producer_id(broker.bootstrap)
    b = rb.build_batch([(None, b"x")], producer_id=pid, producer_epoch=epoch, base_sequence=7,
                       timestamp_ms=int(time.time() * 1000))
    assert produce_raw(broker.bootstrap, topic, b) == (0, 0)


# ------------------------------------------------------------------ configs
# ------------------------------------------------------------------ retention
def test_retention_deletes_expired_records_from_the_active_segment_too(
        broker: Broker, unique: Callable[[str], str]) -> None:
    """Once every record is older than retention.ms, Kafka rolls an empty segment and deletes
    the old one, active or not: earliest == latest, and producing continues at the end."""
    topic = unique("ret")
    create_topic(broker.bootstrap, topic, **{"retention.ms": "1500"})
    assert produce_values(broker.bootstrap, topic, [[b"x"] * 5, [b"y"] * 5]) == list(range(10))
    assert list_offset(broker.bootstrap, topic, -2)[1] == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and list_offset(broker.bootstrap, topic, -2)[1] != 10:
        time.sleep(0.25)
    earliest, latest = (list_offset(broker.bootstrap, topic, t)[1] for t in (-2, -1))
    assert (earliest, latest) == (10, 10)
    assert produce_values(broker.bootstrap, topic, [[b"z"]]) == [10]


def test_retention_leaves_a_compact_only_topic_alone(broker: Broker,
                                                    unique: Callable[[str], str]) -> None:
    """cleanup.policy=compact: retention.ms does not apply (Kafka compacts instead, which
    never touches the active segment; nerve does not compact at all)."""
    topic = unique("cmp")
    create_topic(broker.bootstrap, topic, **{"retention.ms": "500", "cleanup.policy": "compact"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(3):  # a compacted topic takes keyed records only
        p.produce(topic, key=b"k%d" % i, value=b"x", partition=0)
    assert p.flush(30) == 0
    time.sleep(4)  # four retention sweeps on both brokers (RETENTION_SWEEP)
    assert (list_offset(broker.bootstrap, topic, -2)[1],
            list_offset(broker.bootstrap, topic, -1)[1]) == (0, 3)


def describe_topic(bootstrap: str, topic: str) -> dict[str, tuple[str | None, int, bool]]:
    """name -> (value, source, is_default-ish) for every config of the topic."""
    resp = call(bootstrap, 32, 4, resources=[{"resource_type": 2, "resource_name": topic,
                                              "configuration_keys": None}],
                include_synonyms=False, include_documentation=False)
    res = resp.results[0]
    assert int(res.error_code) == 0, res
    return {c.name: (c.value, int(c.config_source), bool(c.read_only)) for c in res.configs}


def test_topic_config_defaults_match_kafka(nerve_broker: NerveProcess,
                                           kafka_broker: KafkaProcess,
                                           unique: Callable[[str], str]) -> None:
    topic = unique("cfg")
    seen = {}
    for name, bootstrap in (("nerve", nerve_broker.bootstrap),
                            ("kafka", kafka_broker.bootstrap)):
        create_topic(bootstrap, topic, **{"retention.ms": "1234567"})
        seen[name] = describe_topic(bootstrap, topic)
    claimed = set(TOPIC_CONFIGS)
    assert claimed <= set(seen["nerve"]), claimed - set(seen["nerve"])
    assert set(seen["nerve"]) <= set(seen["kafka"]), set(seen["nerve"]) - set(seen["kafka"])
    # A fresh KRaft 4.x cluster stores a cluster-level min.insync.replicas (for ELR), so Kafka
    # reports it as DYNAMIC_DEFAULT_BROKER_CONFIG (3); nerve says DEFAULT_CONFIG. docs/oracle.md.
    for side in seen.values():
        value, _source, read_only = side["min.insync.replicas"]
        side["min.insync.replicas"] = (value, -1, read_only)
    # Every config nerve claims is one Kafka has, with Kafka's value, source and read-only flag.
    assert {k: seen["nerve"][k] for k in sorted(claimed)} == {
        k: seen["kafka"].get(k) for k in sorted(claimed)}


def test_describe_configs_via_admin_client(broker: Broker,
                                           unique: Callable[[str], str]) -> None:
    topic = unique("cfg")
    create_topic(broker.bootstrap, topic, **{"cleanup.policy": "compact"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([res])[res].result(20)
    got = {k: (entries[k].value, entries[k].is_default, entries[k].source)
           for k in ("cleanup.policy", "max.message.bytes", "retention.ms")}
    assert got == {
        "cleanup.policy": ("compact", False, 1),  # 1 TOPIC_CONFIG, 5 DEFAULT_CONFIG
        "max.message.bytes": ("1048588", True, 5),
        "retention.ms": ("604800000", True, 5),
    }


# ------------------------------------------------------------------ groups
def test_range_assignment_and_committed_offsets(broker: Broker,
                                                unique: Callable[[str], str]) -> None:
    topic, group = unique("grp"), unique("g")
    create_topic(broker.bootstrap, topic, partitions=4)
    conf = {"bootstrap.servers": broker.bootstrap, "group.id": group,
            "partition.assignment.strategy": "range", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500}
    consumers = [Consumer(conf), Consumer(conf)]
    try:
        for c in consumers:
            c.subscribe([topic])
        deadline = time.monotonic() + 40
        while True:
            for c in consumers:
                c.poll(0.2)
            assigned = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
            if sorted(map(len, assigned)) == [2, 2]:
                break
            assert time.monotonic() < deadline, assigned
        # Range: the member with the lower member id gets the first half.
        members = [c.memberid() for c in consumers]
        by_member = [a for _m, a in sorted(zip(members, assigned, strict=True))]
        commits = {0: 5, 1: 7, 2: 11, 3: 0}
        for c, parts in zip(consumers, assigned, strict=True):
            c.commit(offsets=[TopicPartition(topic, p, commits[p]) for p in parts],
                     asynchronous=False)
        # OffsetFetch from an outsider.
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        from confluent_kafka import ConsumerGroupTopicPartitions

        req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(4)])
        fetched = admin.list_consumer_group_offsets([req])[group].result(20)
        got = {tp.partition: tp.offset for tp in fetched.topic_partitions}
    finally:
        for c in consumers:
            c.close()
    assert (by_member, got) == ([[0, 1], [2, 3]], commits)
