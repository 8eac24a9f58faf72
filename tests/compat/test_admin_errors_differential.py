"""Differential tests of the admin error answers clients show: CreateTopics, AlterConfigs,
IncrementalAlterConfigs, DescribeConfigs, CreatePartitions, DeleteRecords. Same raw requests to
nerve and Apache Kafka 4.4.0, same expected (error code, error message); admin clients put the
message in their exceptions and frameworks match on some (Kafka Streams on "Unknown topic
config name"). The few places Kafka answers differently on purpose are in docs/oracle.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from nerve.protocol import records as rb
from tests.compat.conftest import Broker
from tests.compat.test_differential import create_topic
from tests.compat.wire import WireClient

pytestmark = [pytest.mark.compat, pytest.mark.slow]

INVALID_REQUEST_TEXT = (
    "This most likely occurs because of a request being malformed by the client library or "
    "the message was sent to an incompatible broker. See the broker logs for more details.")
CHARS = "contains one or more characters other than ASCII alphanumerics, '.', '_' and '-'"


def create(c: WireClient, name: str, n: int = 1, rf: int = 1, configs: Any = (),
           assignments: Any = (), validate_only: bool = True) -> Any:
    r = c.call(19, 7, timeout=10000, validate_only=validate_only, topics=[
        {"name": name, "num_partitions": n, "replication_factor": rf,
         "assignments": list(assignments),
         "configs": [{"name": k, "value": v} for k, v in configs]}])
    return [(int(t.error_code), t.error_message) for t in r.topics]


def alter(c: WireClient, name: str, configs: Any, rtype: int = 2) -> tuple[int, str | None]:
    r = c.call(33, 2, validate_only=True, resources=[
        {"resource_type": rtype, "resource_name": name,
         "configs": [{"name": k, "value": v} for k, v in configs]}])
    return int(r.responses[0].error_code), r.responses[0].error_message


def incremental(c: WireClient, name: str, configs: Any, rtype: int = 2) -> Any:
    r = c.call(44, 1, validate_only=True, resources=[
        {"resource_type": rtype, "resource_name": name,
         "configs": [{"name": k, "config_operation": op, "value": v} for k, op, v in configs]}])
    return [(int(x.error_code), x.error_message) for x in r.responses]


def describe(c: WireClient, name: str, rtype: int = 2) -> tuple[int, str | None]:
    r = c.call(32, 4, include_synonyms=False, include_documentation=False, resources=[
        {"resource_type": rtype, "resource_name": name, "configuration_keys": None}])
    return int(r.results[0].error_code), r.results[0].error_message


def grow(c: WireClient, names: list[str], count: int, assignments: Any = None) -> Any:
    r = c.call(37, 3, timeout=5000, validate_only=True, topics=[
        {"name": n, "count": count, "assignments": assignments} for n in names])
    return [(int(x.error_code), x.error_message) for x in r.results]


def test_create_topics_config_errors(broker: Broker, unique: Callable[[str], str]) -> None:
    cases: dict[tuple[str, str], tuple[int, str | None]] = {
        ("no.such.config", "1"): (40, "Unknown topic config name: no.such.config"),
        ("retention.ms", "abc"): (
            40, "Invalid value abc for configuration retention.ms: Not a number of type LONG"),
        ("retention.ms", "1_000"): (
            40, "Invalid value 1_000 for configuration retention.ms: Not a number of type LONG"),
        ("retention.ms", "-2"): (
            40, "Invalid value -2 for configuration retention.ms: Value must be at least -1"),
        ("retention.ms", " 100 "): (0, None),
        ("segment.index.bytes", "3"): (40, "Invalid value 3 for configuration "
                                           "segment.index.bytes: Value must be at least 4"),
        ("segment.bytes", "99999999999"): (40, "Invalid value 99999999999 for configuration "
                                               "segment.bytes: Not a number of type INT"),
        ("cleanup.policy", "bogus"): (40, "Invalid value bogus for configuration cleanup.policy:"
                                          " String must be one of: compact, delete"),
        ("cleanup.policy", "compact, delete"): (0, None),
        ("compression.type", "ZSTD"): (
            40, "Invalid value ZSTD for configuration compression.type: String must be one of:"
                " uncompressed, zstd, lz4, snappy, gzip, producer"),
        ("unclean.leader.election.enable", "maybe"): (
            40, "Invalid value maybe for configuration unclean.leader.election.enable: "
                "Expected value to be either true or false"),
        ("min.insync.replicas", "0"): (40, "Invalid value 0 for configuration "
                                           "min.insync.replicas: Value must be at least 1"),
        ("message.timestamp.type", "createtime"): (
            40, "Invalid value createtime for configuration message.timestamp.type: String "
                "must be one of: CreateTime, LogAppendTime"),
        ("min.cleanable.dirty.ratio", "2"): (
            40, "Invalid value 2.0 for configuration min.cleanable.dirty.ratio: Value must be "
                "no more than 1"),
        ("min.cleanable.dirty.ratio", "1e-3"): (0, None),
        ("max.compaction.lag.ms", "0"): (40, "Invalid value 0 for configuration "
                                             "max.compaction.lag.ms: Value must be at least 1"),
        ("flush.messages", "0"): (
            40, "Invalid value 0 for configuration flush.messages: Value must be at least 1"),
        ("retention.ms", None): (
            40, "Null value not supported for topic configs: retention.ms"),
    }
    with WireClient(broker.bootstrap) as c:
        got = {case: create(c, unique("cfg"), configs=[case])[0] for case in cases}
        # Every name is checked before any value.
        both = create(c, unique("cfg"), configs=[("retention.ms", "abc"), ("no.such", "1")])
    assert got == cases
    assert both == [(40, "Unknown topic config name: no.such")]

    # The message reaches the application through librdkafka's admin API.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    name = unique("cfg")
    with pytest.raises(KafkaException) as e:
        admin.create_topics([NewTopic(name, 1, 1, config={"bogus.key": "1"})])[name].result(20)
    assert "Unknown topic config name: bogus.key" in str(e.value)


def test_create_topics_name_and_layout_errors(broker: Broker,
                                              unique: Callable[[str], str]) -> None:
    dotted = unique("a.b")
    create_topic(broker.bootstrap, dotted)
    clash = dotted.replace(".", "_")
    long_name = "x" * 250
    dup = unique("dup")
    with WireClient(broker.bootstrap) as c:
        got = {
            "exists": create(c, dotted),
            "collides": create(c, clash),
            "slash": create(c, "bad/name"),
            "dot": create(c, "."),
            "dotdot": create(c, ".."),
            "empty": create(c, ""),
            "long": create(c, long_name),
            "rf3": create(c, unique("rf"), rf=3),
            "assign+rf": create(c, unique("as"), n=-1, rf=1,
                                assignments=[{"partition_index": 0, "broker_ids": [1]}]),
            "assign+n": create(c, unique("as"), n=1, rf=-1,
                               assignments=[{"partition_index": 0, "broker_ids": [1]}]),
            "assign gap": create(c, unique("as"), n=-1, rf=-1,
                                 assignments=[{"partition_index": 1, "broker_ids": [1]}]),
            "assign broker": create(c, unique("as"), n=-1, rf=-1,
                                    assignments=[{"partition_index": 0, "broker_ids": [7]}]),
            "assign twice": create(c, unique("as"), n=-1, rf=-1,
                                   assignments=[{"partition_index": 0, "broker_ids": [1, 1]}]),
            "assign empty": create(c, unique("as"), n=-1, rf=-1,
                                   assignments=[{"partition_index": 0, "broker_ids": []}]),
        }
        r = c.call(19, 7, timeout=10000, validate_only=True, topics=[
            {"name": dup, "num_partitions": 1, "replication_factor": 1, "assignments": [],
             "configs": []}] * 2)
        got["duplicate"] = [(int(t.error_code), t.error_message) for t in r.topics]
    assert got == {
        "exists": [(36, f"Topic '{dotted}' already exists.")],
        "collides": [(17, f"Topic '{clash}' collides with existing topic: {dotted}")],
        "slash": [(17, f"Topic name is invalid: 'bad/name' {CHARS}")],
        "dot": [(17, "Topic name is invalid: '.' is not allowed")],
        "dotdot": [(17, "Topic name is invalid: '..' is not allowed")],
        "empty": [(17, "Topic name is invalid: the empty string is not allowed")],
        "long": [(17, f"Topic name is invalid: the length of '{long_name}' is longer than the "
                      "max allowed length 249")],
        "rf3": [(38, "Unable to replicate the partition 3 time(s): The target replication "
                     "factor of 3 cannot be reached because only 1 broker(s) are registered or "
                     "some brokers have all their log directories cordoned.")],
        "assign+rf": [(42, "A manual partition assignment was specified, but replication "
                           "factor was not set to -1.")],
        "assign+n": [(42, "A manual partition assignment was specified, but numPartitions was "
                          "not set to -1.")],
        "assign gap": [(39, "partitions should be a consecutive 0-based integer sequence")],
        "assign broker": [(39, "The manual partition assignment includes broker 7, but no such "
                               "broker is registered.")],
        "assign twice": [(39, "The manual partition assignment includes the broker 1 more than "
                              "once.")],
        "assign empty": [(39, "The manual partition assignment includes an empty replica "
                              "list.")],
        "duplicate": [(42, "Duplicate topic name.")],  # one answer for the name
    }


def test_alter_and_describe_config_errors(broker: Broker, unique: Callable[[str], str]) -> None:
    topic = unique("alter")
    create_topic(broker.bootstrap, topic)
    missing = unique("missing")
    with WireClient(broker.bootstrap) as c:
        got = {
            "ac unknown topic": alter(c, missing, [("retention.ms", "1000")]),
            "ac unknown config": alter(c, topic, [("no.such.config", "1")]),
            "ac bad value": alter(c, topic, [("retention.ms", "abc")]),
            "ac bad policy": alter(c, topic, [("cleanup.policy", "bogus")]),
            "ac null": alter(c, topic, [("retention.ms", None)]),
            "ac other broker": alter(c, "7", [], rtype=4),
            "ac bad broker": alter(c, "abc", [], rtype=4),
            "ac bad type": alter(c, "x", [], rtype=99),
            "iac unknown topic": incremental(c, missing, [("retention.ms", 0, "1")]),
            "iac unknown config": incremental(c, topic, [("no.such.config", 0, "1")]),
            "iac delete unknown": incremental(c, topic, [("no.such.config", 1, None)]),
            "iac bad value": incremental(c, topic, [("retention.ms", 0, "abc")]),
            "iac append": incremental(c, topic, [("retention.ms", 2, "5")]),
            "iac subtract": incremental(c, topic, [("retention.ms", 3, "5")]),
            "iac twice": incremental(c, topic, [("retention.ms", 0, "5"),
                                                ("retention.ms", 0, "6")]),
            "iac null": incremental(c, topic, [("cleanup.policy", 2, None)]),
            "iac append bogus": incremental(c, topic, [("cleanup.policy", 2, "bogus")]),
            "iac duplicate": [x for x in c.call(44, 1, validate_only=True, resources=[
                {"resource_type": 2, "resource_name": topic, "configs": []}] * 2).responses
                if int(x.error_code) == 42 and x.error_message ==
                "Each resource must appear at most once."],
            "dc unknown topic": describe(c, missing),
            "dc other broker": describe(c, "7", 4),
            "dc bad broker": describe(c, "abc", 4),
            "dc bad type": describe(c, "x", 99),
        }
    got["iac duplicate"] = len(got["iac duplicate"])
    assert got == {
        "ac unknown topic": (3, f"The topic '{missing}' does not exist."),
        "ac unknown config": (40, "Unknown topic config name: no.such.config"),
        "ac bad value": (40, "Invalid value abc for configuration retention.ms: Not a number "
                             "of type LONG"),
        "ac bad policy": (40, "Invalid value bogus for configuration cleanup.policy: String "
                              "must be one of: compact, delete"),
        "ac null": (42, "Null value not supported for : retention.ms"),
        "ac other broker": (42, "Unexpected broker id, expected 1, but received 7"),
        "ac bad broker": (42, "Node id must be an integer, but it is: abc"),
        "ac bad type": (42, "Unknown resource type 99"),
        "iac unknown topic": [(3, f"The topic '{missing}' does not exist.")],
        "iac unknown config": [(40, "Unknown topic config name: no.such.config")],
        "iac delete unknown": [(0, None)],
        "iac bad value": [(40, "Invalid value abc for configuration retention.ms: Not a number "
                               "of type LONG")],
        "iac append": [(40, "Can't APPEND to key retention.ms because its type is not LIST.")],
        "iac subtract": [(40, "Can't SUBTRACT to key retention.ms because its type is not "
                              "LIST.")],
        "iac twice": [(42, "Error due to duplicate config keys")],
        "iac null": [(42, "Null value not supported for : cleanup.policy")],
        "iac append bogus": [(40, "Invalid value bogus for configuration cleanup.policy: "
                                  "String must be one of: compact, delete")],
        "iac duplicate": 2,
        "dc unknown topic": (3, ""),
        "dc other broker": (42, "Unexpected broker id, expected 1 or empty string, but "
                                "received 7"),
        "dc bad broker": (42, "Broker id must be an integer, but it is: abc"),
        "dc bad type": (42, INVALID_REQUEST_TEXT),
    }


def test_create_partitions_and_delete_records_errors(broker: Broker,
                                                     unique: Callable[[str], str]) -> None:
    topic = unique("grow")
    create_topic(broker.bootstrap, topic, partitions=2)
    missing = unique("missing")
    with WireClient(broker.bootstrap) as c:
        c.call(0, 9, transactional_id=None, acks=-1, timeout=5000, topic_data=[
            {"name": topic, "partition_data": [
                {"index": 0, "records": rb.build_batch([(b"k", b"v")] * 3,
                                                       timestamp_ms=int(time.time() * 1000))}]}])
        got = {
            "decrease": grow(c, [topic], 1),
            "zero": grow(c, [topic], 0),
            "same": grow(c, [topic], 2),
            "unknown": grow(c, [missing], 3),
            "assignments": grow(c, [topic], 4, [{"broker_ids": [1]}]),
            "bad broker": grow(c, [topic], 3, [{"broker_ids": [9]}]),
            "twice": grow(c, [topic], 3, [{"broker_ids": [1, 1]}]),
            "huge": grow(c, [topic], 20_000),
            "duplicate": grow(c, [topic, topic], 5),
        }

        def delete(part: int, offset: int, name: str = topic) -> tuple[int, int]:
            r = c.call(21, 2, timeout=5000, topics=[
                {"name": name, "partitions": [{"partition_index": part, "offset": offset}]}])
            p = r.topics[0].partitions[0]
            return int(p.error_code), int(p.low_watermark)

        deletes = [delete(0, 10), delete(5, 1), delete(0, 1, missing), delete(1, -1),
                   delete(0, -7), delete(0, 2)]
    assert got == {
        "decrease": [(37, f"The topic {topic} currently has 2 partition(s); 1 would not be an "
                          "increase.")],
        "zero": [(37, f"The topic {topic} currently has 2 partition(s); 0 would not be an "
                      "increase.")],
        "same": [(37, "Topic already has 2 partition(s).")],
        "unknown": [(3, None)],
        "assignments": [(39, "Attempted to add 2 additional partition(s), but only 1 "
                             "assignment(s) were specified.")],
        "bad broker": [(39, "The manual partition assignment includes broker 9, but no such "
                            "broker is registered.")],
        "twice": [(39, "The manual partition assignment includes the broker 1 more than "
                       "once.")],
        "huge": [(44, "Excessively large number of additional partitions per request.")],
        "duplicate": [(42, "Duplicate topic name.")],
    }
    # DeleteRecords has no message field: its codes and low watermarks are what clients see.
    assert deletes == [(1, -1), (3, -1), (3, -1), (0, 0), (1, -1), (0, 2)]


def test_every_kafka_topic_config_is_known(broker: Broker, unique: Callable[[str], str]) -> None:
    """A topic's DescribeConfigs lists the same names with the same defaults as Kafka 4.4, and
    each of them is accepted by CreateTopics (a framework or a config copied from a Kafka
    cluster may set any; nerve refused preallocate, segment.jitter.ms, local.retention.ms ...).
    """
    from confluent_kafka.admin import ConfigResource

    topic = unique("cfgnames")
    create_topic(broker.bootstrap, topic)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = ConfigResource("topic", topic)
    described = admin.describe_configs([res])[res].result(20)
    defaults = {name: entry.value for name, entry in described.items()}
    # min.insync.replicas is a broker setting in both compat sessions; values only for the rest
    assert "preallocate" in defaults and "segment.jitter.ms" in defaults
    assert {k: v for k, v in defaults.items() if k != "min.insync.replicas"} == {
        "cleanup.policy": "delete", "compression.gzip.level": "-1",
        "compression.lz4.level": "9", "compression.type": "producer",
        "compression.zstd.level": "3", "delete.retention.ms": "86400000",
        "errors.deadletterqueue.group.enable": "false", "file.delete.delay.ms": "60000",
        "flush.messages": "9223372036854775807", "flush.ms": "9223372036854775807",
        "follower.replication.throttled.replicas": "", "index.interval.bytes": "4096",
        "leader.replication.throttled.replicas": "", "local.retention.bytes": "-2",
        "local.retention.ms": "-2", "max.compaction.lag.ms": "9223372036854775807",
        "max.decompressed.message.bytes": "2147483639", "max.message.bytes": "1048588",
        "message.timestamp.after.max.ms": "3600000",
        "message.timestamp.before.max.ms": "9223372036854775807",
        "message.timestamp.type": "CreateTime", "min.cleanable.dirty.ratio": "0.5",
        "min.compaction.lag.ms": "0", "preallocate": "false", "remote.copy.lag.bytes": "-1",
        "remote.copy.lag.ms": "0", "remote.log.copy.disable": "false",
        "remote.log.delete.on.disable": "false", "remote.storage.enable": "false",
        "retention.bytes": "-1", "retention.ms": "604800000", "segment.bytes": "1073741824",
        "segment.index.bytes": "10485760", "segment.jitter.ms": "0",
        "segment.ms": "604800000", "unclean.leader.election.enable": "false"}
    # every name accepted with its default value (validate_only: nothing is created)
    settable = [(k, v) for k, v in defaults.items()
                if v not in ("", None) and k != "min.insync.replicas"]
    with WireClient(broker.bootstrap) as c:
        assert create(c, unique("cfgall"), configs=settable) == [(0, None)]
