"""Kafka's own Java tools against `nerve serve`: kafka-topics, kafka-configs, kafka-log-dirs,
and the console producer (idempotent by default in Kafka 4, so it calls InitProducerId)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.test_admin_clients import consume_all

pytestmark = pytest.mark.java


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, f"{r.args} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def test_kafka_topics_lifecycle(nerve: Any, unique_topic: Any, kafka_run: Any) -> None:
    topic, other = unique_topic(), unique_topic()
    b = ["--bootstrap-server", nerve.bootstrap]
    admin = AdminClient({"bootstrap.servers": nerve.bootstrap})
    admin.create_topics([NewTopic(other, 1, 1)])[other].result(15)

    out = ok(kafka_run("topics", *b, "--create", "--topic", topic, "--partitions", "2",
                       "--config", "retention.ms=3600000"))
    assert f"Created topic {topic}." in out.stdout

    ok(kafka_run("topics", *b, "--alter", "--topic", topic, "--partitions", "4"))
    desc = ok(kafka_run("topics", *b, "--describe", "--topic", topic)).stdout
    assert "PartitionCount: 4" in desc and "ReplicationFactor: 1" in desc
    assert "retention.ms=3600000" in desc
    assert desc.count("Leader: 1") == 4

    ok(kafka_run("topics", *b, "--delete", "--topic", topic))
    listed = ok(kafka_run("topics", *b, "--list")).stdout.split()
    assert other in listed and topic not in listed


def test_kafka_topics_refuses_replication(nerve: Any, unique_topic: Any, kafka_run: Any) -> None:
    topic = unique_topic()
    out = kafka_run("topics", "--bootstrap-server", nerve.bootstrap, "--create", "--topic",
                    topic, "--replication-factor", "3", )
    assert out.returncode != 0
    assert "replication factor of 3 cannot be reached" in out.stdout + out.stderr


def test_kafka_configs_and_log_dirs(nerve: Any, unique_topic: Any, kafka_run: Any) -> None:
    topic = unique_topic()
    b = ["--bootstrap-server", nerve.bootstrap]
    ok(kafka_run("topics", *b, "--create", "--topic", topic, "--partitions", "1"))
    # kafka-configs --alter uses IncrementalAlterConfigs; --describe uses DescribeConfigs
    ok(kafka_run("configs", *b, "--entity-type", "topics", "--entity-name", topic, "--alter",
                 "--add-config", "retention.ms=120000,cleanup.policy=[delete,compact]"))
    desc = ok(kafka_run("configs", *b, "--entity-type", "topics", "--entity-name", topic,
                        "--describe")).stdout
    assert "retention.ms=120000" in desc
    assert "cleanup.policy=delete,compact" in desc
    assert "DYNAMIC_TOPIC_CONFIG:retention.ms=120000" in desc

    # the console producer: idempotent by default (InitProducerId), acks=all. The topic is
    # compacted now, so every record needs a key (keyless ones are INVALID_RECORD, as on Kafka).
    lines = [f"line-{i}" for i in range(20)]
    ok(kafka_run("console-producer", *b, "--topic", topic, "--reader-property",
                 "parse.key=true", "--reader-property", "key.separator=:",
                 input="".join(f"k{i}:{s}\n" for i, s in enumerate(lines))))
    assert [v for _, v in consume_all(nerve.bootstrap, topic, idle_s=1)] == [
        s.encode() for s in lines]

    out = ok(kafka_run("log-dirs", *b, "--describe", "--topic-list", topic)).stdout
    report = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    (broker,) = report["brokers"]
    (log_dir,) = broker["logDirs"]
    (part,) = log_dir["partitions"]
    assert part["partition"] == f"{topic}-0" and part["size"] > 0
