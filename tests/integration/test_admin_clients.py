"""Admin/topic APIs through real clients (confluent-kafka, kafka-python) against `nerve serve`.

CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs, AlterConfigs,
IncrementalAlterConfigs, DeleteRecords, DescribeLogDirs, DescribeCluster and InitProducerId
(through idempotent producers), each checked by its effect, not only by "no error".
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

T = 15  # seconds for any single admin call


def rdk_admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def error_code(fut: Any) -> int:
    """The Kafka error code a future failed with (0: it succeeded)."""
    try:
        fut.result(T)
    except KafkaException as e:
        return e.args[0].code()
    return 0


def topic_configs(admin: AdminClient, topic: str) -> dict[str, ConfigEntry]:
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res])[res].result(T)


def partition_count(admin: AdminClient, topic: str) -> int:
    return len(admin.list_topics(topic, timeout=T).topics[topic].partitions)


def produce(bootstrap: str, topic: str, n: int, partition: int = 0, pad: int = 0,
            **conf: Any) -> list[int]:
    offsets: list[int] = []
    errors: list[Any] = []

    def done(err: Any, msg: Any) -> None:
        (errors.append(err) if err is not None else offsets.append(msg.offset()))

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, **conf})
    for i in range(n):
        p.produce(topic, value=f"v{i}".encode() + b"x" * pad, partition=partition,
                  on_delivery=done)
        if i % 200 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    assert not errors, errors
    return offsets


def consume_all(bootstrap: str, topic: str, partition: int = 0,
                offset: int = -2, idle_s: float = 2.0) -> list[tuple[int, bytes]]:
    """Everything readable from `offset` (-2: the beginning) until the partition goes quiet."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, partition, offset)])
    out: list[tuple[int, bytes]] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < idle_s:
        msg = c.poll(0.2)
        if msg is None or (msg.error() and msg.error().code() == KafkaError._PARTITION_EOF):
            continue
        if msg.error():
            raise KafkaException(msg.error())
        out.append((msg.offset(), msg.value()))
        quiet_since = time.monotonic()
    c.close()
    return out


# ---------------------------------------------------------------- confluent-kafka


def test_create_topics_validates_like_kafka(nerve: Any, unique_topic: Any) -> None:
    admin = rdk_admin(nerve.bootstrap)
    good, rf3, badcfg, dry, dflt = (unique_topic() for _ in range(5))
    futs = admin.create_topics([
        NewTopic(good, 3, 1, config={"retention.ms": "3600000", "cleanup.policy": "compact"}),
        NewTopic(rf3, 1, 3),
        NewTopic(badcfg, 1, 1, config={"retention.ms": "forever"}),
        NewTopic(dflt),  # num_partitions and replication_factor -1: the broker's defaults
    ], operation_timeout=T)
    assert error_code(futs[good]) == 0
    assert error_code(futs[rf3]) == KafkaError.INVALID_REPLICATION_FACTOR
    assert error_code(futs[badcfg]) == KafkaError.INVALID_CONFIG
    assert error_code(futs[dflt]) == 0
    assert partition_count(admin, good) == 3
    assert partition_count(admin, dflt) == 1  # num.partitions default
    again = admin.create_topics([NewTopic(good, 1, 1)])[good]
    assert error_code(again) == KafkaError.TOPIC_ALREADY_EXISTS
    bad = admin.create_topics([NewTopic("no spaces allowed", 1, 1)])["no spaces allowed"]
    assert error_code(bad) == KafkaError.TOPIC_EXCEPTION

    # validate_only: every check runs, nothing is created
    assert error_code(admin.create_topics([NewTopic(dry, 2, 1)], validate_only=True)[dry]) == 0
    assert error_code(admin.create_topics([NewTopic(dry, 2, 3)], validate_only=True)[dry]) \
        == KafkaError.INVALID_REPLICATION_FACTOR
    assert dry not in admin.list_topics(timeout=T).topics

    cfg = topic_configs(admin, good)
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["cleanup.policy"].value == "compact"
    assert cfg["segment.bytes"].value == "1073741824"
    assert cfg["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value


def test_alter_configs_replace_and_incremental(nerve: Any, unique_topic: Any) -> None:
    admin = rdk_admin(nerve.bootstrap)
    topic = unique_topic()
    admin.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "1000"})])[topic] \
        .result(T)
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"segment.bytes": "1048576"})
    admin.alter_configs([res])[res].result(T)
    cfg = topic_configs(admin, topic)
    assert cfg["segment.bytes"].value == "1048576"
    # AlterConfigs replaces the whole override set: retention.ms is back to its default
    assert cfg["retention.ms"].value == "604800000"
    assert cfg["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    ops = [
        ConfigEntry("retention.ms", "120000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
        ConfigEntry("segment.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
    ]
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=ops)
    admin.incremental_alter_configs([res])[res].result(T)
    cfg = topic_configs(admin, topic)
    assert cfg["retention.ms"].value == "120000"
    assert cfg["cleanup.policy"].value == "delete,compact"
    assert cfg["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value

    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT)])
    admin.incremental_alter_configs([res])[res].result(T)
    assert topic_configs(admin, topic)["cleanup.policy"].value == "compact"

    # validate_only and invalid values change nothing
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "5", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res], validate_only=True)[res].result(T)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)])
    assert error_code(admin.incremental_alter_configs([res])[res]) == KafkaError.INVALID_CONFIG
    assert topic_configs(admin, topic)["retention.ms"].value == "120000"

    # a missing topic, and a broker config (nerve has no dynamic broker configs)
    res = ConfigResource(ResourceType.TOPIC, unique_topic())
    assert error_code(admin.describe_configs([res])[res]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    res = ConfigResource(ResourceType.BROKER, "1", set_config={"num.partitions": "4"})
    assert error_code(admin.alter_configs([res])[res]) == KafkaError.INVALID_CONFIG


def test_segment_bytes_change_takes_effect(nerve: Any, unique_topic: Any) -> None:
    """A smaller segment.bytes makes the log roll: DeleteRecords can then free whole segments,
    which DescribeLogDirs shows as a smaller partition."""
    from kafka import KafkaAdminClient

    admin = rdk_admin(nerve.bootstrap)
    topic = unique_topic()
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(T)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(T)
    # 4 MB in small batches: four or five 1 MB segments (Kafka 4's smallest segment.bytes)
    produce(nerve.bootstrap, topic, 4000, pad=1000, **{"batch.size": 20000})

    kp = KafkaAdminClient(bootstrap_servers=nerve.bootstrap)
    try:
        def size() -> int:
            (broker,) = kp.describe_log_dirs()
            (d,) = broker["log_dirs"]
            (t,) = [t for t in d["topics"] if t["name"] == topic]
            return t["partitions"][0]["partition_size"]

        before = size()
        assert before > 4_000_000
        tp = TopicPartition(topic, 0, 3000)
        low = admin.delete_records([tp])[tp].result(T)
        assert low.low_watermark == 3000
        # the segments wholly below offset 3000 are gone: only a rolled log can shrink so
        assert size() < before / 2
    finally:
        kp.close()


def test_create_partitions_and_delete_topics(nerve: Any, unique_topic: Any) -> None:
    admin = rdk_admin(nerve.bootstrap)
    topic, other = unique_topic(), unique_topic()
    for f in admin.create_topics([NewTopic(topic, 1, 1), NewTopic(other, 1, 1)]).values():
        f.result(T)
    produce(nerve.bootstrap, topic, 5)
    admin.create_partitions([NewPartitions(topic, 3)])[topic].result(T)
    assert partition_count(admin, topic) == 3
    # the new partitions take writes; the old one kept its data
    assert produce(nerve.bootstrap, topic, 2, partition=2) == [0, 1]
    assert [o for o, _ in consume_all(nerve.bootstrap, topic, 0, idle_s=1)] == list(range(5))

    shrink = admin.create_partitions([NewPartitions(topic, 2)])[topic]
    assert error_code(shrink) == KafkaError.INVALID_PARTITIONS
    dry = admin.create_partitions([NewPartitions(topic, 6)], validate_only=True)[topic]
    assert error_code(dry) == 0
    assert partition_count(admin, topic) == 3

    futs = admin.delete_topics([topic, other, unique_topic()], operation_timeout=T)
    codes = sorted(error_code(f) for f in futs.values())
    assert codes == [0, 0, KafkaError.UNKNOWN_TOPIC_OR_PART]
    names = admin.list_topics(timeout=T).topics
    assert topic not in names and other not in names
    # the name is free again, and starts empty
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(T)
    assert consume_all(nerve.bootstrap, topic, idle_s=1) == []


def test_delete_records_moves_log_start(nerve: Any, unique_topic: Any) -> None:
    admin = rdk_admin(nerve.bootstrap)
    topic = unique_topic()
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(T)
    produce(nerve.bootstrap, topic, 10)

    tp = TopicPartition(topic, 0, 4)
    assert admin.delete_records([tp])[tp].result(T).low_watermark == 4
    earliest = admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.earliest()},
                                  isolation_level=IsolationLevel.READ_UNCOMMITTED)
    assert next(iter(earliest.values())).result(T).offset == 4
    got = consume_all(nerve.bootstrap, topic, idle_s=1)
    assert [o for o, _ in got] == list(range(4, 10))

    beyond = TopicPartition(topic, 0, 11)
    assert error_code(admin.delete_records([beyond])[beyond]) == KafkaError.OFFSET_OUT_OF_RANGE
    hw = TopicPartition(topic, 0, -1)  # -1: up to the high watermark
    assert admin.delete_records([hw])[hw].result(T).low_watermark == 10
    assert consume_all(nerve.bootstrap, topic, idle_s=1) == []


def test_describe_cluster_both_clients(nerve: Any) -> None:
    from kafka import KafkaAdminClient

    admin = rdk_admin(nerve.bootstrap)  # kept referenced until the future completes
    desc = admin.describe_cluster(include_authorized_operations=False).result(T)
    host, port = nerve.bootstrap.rsplit(":", 1)
    assert desc.controller.id == 1
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(1, host, int(port))]
    kp = KafkaAdminClient(bootstrap_servers=nerve.bootstrap)
    try:
        info = kp.describe_cluster()
        assert info["cluster_id"] == desc.cluster_id
        assert info["controller_id"] == 1
    finally:
        kp.close()


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_idempotent_producer_no_duplicates(nerve: Any, unique_topic: Any,
                                           compression: str) -> None:
    """enable.idempotence makes librdkafka call InitProducerId before producing."""
    admin = rdk_admin(nerve.bootstrap)
    topic = unique_topic()
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(T)
    offsets = produce(nerve.bootstrap, topic, 1000, **{
        "enable.idempotence": True, "compression.type": compression, "acks": "all"})
    assert offsets == list(range(1000))
    got = consume_all(nerve.bootstrap, topic, idle_s=1)
    assert [v for _, v in got] == [f"v{i}".encode() for i in range(1000)]


# ---------------------------------------------------------------- kafka-python


def test_kafka_python_admin_round_trip(nerve: Any, unique_topic: Any) -> None:
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType
    from kafka.admin import NewPartitions as KNewPartitions
    from kafka.admin import NewTopic as KNewTopic
    from kafka.errors import TopicAlreadyExistsError

    topic = unique_topic()
    kp = KafkaAdminClient(bootstrap_servers=nerve.bootstrap)
    try:
        kp.create_topics([KNewTopic(topic, 2, 1, topic_configs={"retention.ms": "86400000"})])
        with pytest.raises(TopicAlreadyExistsError):
            kp.create_topics([KNewTopic(topic, 2, 1)])
        res = KConfigResource(ConfigResourceType.TOPIC, topic)
        modified = kp.describe_configs([res])  # default filter: modified configs only
        assert modified["topic"][topic]["retention.ms"]["value"] == "86400000"
        assert list(modified["topic"][topic]) == ["retention.ms"]
        # IncrementalAlterConfigs (kafka-python's default when the broker has it) adds...
        kp.alter_configs([KConfigResource(ConfigResourceType.TOPIC, topic,
                                          configs={"max.message.bytes": "200000"})])
        modified = kp.describe_configs([res])["topic"][topic]
        assert {k: v["value"] for k, v in modified.items()} == {
            "max.message.bytes": "200000", "retention.ms": "86400000"}
        # ...and the legacy AlterConfigs, which replaces every override (kafka-python sends
        # the other modified keys along to keep them)
        kp.alter_configs([KConfigResource(ConfigResourceType.TOPIC, topic,
                                          configs={"segment.ms": "3600000"})], incremental=False)
        modified = kp.describe_configs([res])["topic"][topic]
        assert {k: v["value"] for k, v in modified.items()} == {
            "max.message.bytes": "200000", "retention.ms": "86400000", "segment.ms": "3600000"}

        kp.create_partitions({topic: KNewPartitions(4)})
        assert len(kp.describe_topics([topic])[0]["partitions"]) == 4

        # kafka-python's idempotent producer: InitProducerId then sequenced batches
        p = KafkaProducer(bootstrap_servers=nerve.bootstrap, enable_idempotence=True,
                          acks="all")
        for i in range(50):
            p.send(topic, value=f"k{i}".encode(), partition=3)
        p.flush(20)
        p.close()
        assert [v for _, v in consume_all(nerve.bootstrap, topic, 3, idle_s=1)] == [
            f"k{i}".encode() for i in range(50)]

        kp.delete_topics([topic])
        assert topic not in kp.list_topics()
    finally:
        kp.close()


def test_broker_overrides_are_reported_and_obeyed(nerve_factory: Any, unique_topic: Any) -> None:
    broker = nerve_factory("--set", "num.partitions=3", "--set", "log.retention.ms=7200000",
                           "--set", "delete.topic.enable=false")
    admin = rdk_admin(broker.bootstrap)
    topic = unique_topic()
    admin.create_topics([NewTopic(topic)])[topic].result(T)
    assert partition_count(admin, topic) == 3
    cfg = topic_configs(admin, topic)
    assert cfg["retention.ms"].value == "7200000"
    assert cfg["retention.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    res = ConfigResource(ResourceType.BROKER, "1")
    entries = admin.describe_configs([res])[res].result(T)
    assert entries["num.partitions"].value == "3"
    assert entries["num.partitions"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert entries["num.partitions"].is_read_only
    assert error_code(admin.delete_topics([topic])[topic]) == KafkaError.TOPIC_DELETION_DISABLED
    assert topic in admin.list_topics(timeout=T).topics


def test_librdkafka_validates_position_with_offset_for_leader_epoch(
        nerve: Any, unique_topic: Any) -> None:
    """Assigning an offset with a leader epoch makes librdkafka validate it (KIP-320)."""
    import logging

    admin = rdk_admin(nerve.bootstrap)
    topic = unique_topic()
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(T)
    produce(nerve.bootstrap, topic, 10)

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger(f"rdkafka-{topic}")
    logger.addHandler(Collect())
    logger.setLevel(logging.DEBUG)
    c = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": f"g-{topic}",
                  "enable.auto.commit": False, "debug": "fetch", "logger": logger})
    c.assign([TopicPartition(topic, 0, 5, leader_epoch=0)])
    got: list[int] = []
    deadline = time.monotonic() + 15
    while len(got) < 5 and time.monotonic() < deadline:
        msg = c.poll(0.2)
        if msg is not None and not msg.error():
            got.append(msg.offset())
    c.poll(0.1)  # deliver the remaining log lines
    c.close()
    assert got == [5, 6, 7, 8, 9]
    assert any("epoch validation succeeded: broker end offset 10" in s for s in lines), lines


# ---------------------------------------------------------------- aiokafka (low versions)


async def test_aiokafka_admin_low_versions(nerve: Any, unique_topic: Any) -> None:
    """aiokafka's admin client picks old versions (CreateTopics v3, DescribeConfigs v2,
    AlterConfigs v1, CreatePartitions v1, DeleteTopics v3)."""
    from aiokafka import TopicPartition as ATP
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from aiokafka.admin import NewPartitions as ANewPartitions
    from aiokafka.admin import NewTopic as ANewTopic
    from aiokafka.admin.config_resource import ConfigResource as AConfigResource
    from aiokafka.admin.config_resource import ConfigResourceType as AType

    topic = unique_topic()
    admin = AIOKafkaAdminClient(bootstrap_servers=nerve.bootstrap)
    await admin.start()
    try:
        resp = await admin.create_topics([ANewTopic(topic, 1, 1,
                                                    topic_configs={"retention.ms": "5000"})])
        assert [e[1] for e in resp.topic_errors] == [0]
        await admin.alter_configs([AConfigResource(AType.TOPIC, topic,
                                                   configs={"segment.ms": "100000"})])
        (resp,) = await admin.describe_configs([AConfigResource(AType.TOPIC, topic)])
        entries = {e[0]: e[1] for e in resp.resources[0][4]}
        assert entries["segment.ms"] == "100000"
        assert entries["retention.ms"] == "604800000"  # AlterConfigs replaced the overrides
        await admin.create_partitions({topic: ANewPartitions(2)})
        produce(nerve.bootstrap, topic, 3, partition=1)
        low = await admin.delete_records({ATP(topic, 1): RecordsToDelete(2)})
        assert low == {ATP(topic, 1): 2}
        await admin.delete_topics([topic])
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()
