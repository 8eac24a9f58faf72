"""Thousands of partitions within the open file limit, and the max.partitions cap (issue 11).

Each broker runs with RLIMIT_NOFILE lowered (soft = hard, so `nerve serve` cannot raise it):
segment and index files are opened through a bounded handle cache, so the partition count is
not bounded by the file limit; a CreateTopics or CreatePartitions past `max.partitions`
(default 4 x the file limit) is refused with POLICY_VIOLATION before anything is created.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from tests.helpers import NerveProcess


def _broker(tmp_path: Path, limit: int, *extra: str) -> NerveProcess:
    return NerveProcess(tmp_path / "data", open_file_limit=limit, extra_args=extra,
                        start_timeout=120).start()


def _open_fds(proc: NerveProcess) -> int:
    assert proc.proc is not None
    return len(os.listdir(f"/proc/{proc.proc.pid}/fd"))


def _create(bootstrap: str, *topics: NewTopic, validate_only: bool = False) -> dict:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(list(topics), validate_only=validate_only,
                                  operation_timeout=120, request_timeout=120)
    out = {}
    for name, fut in futures.items():
        try:
            fut.result(timeout=180)
            out[name] = None
        except KafkaException as e:
            out[name] = e.args[0]
    return out


def _partition_dirs(data_dir: Path, topic: str) -> list[str]:
    return [p.name for p in data_dir.iterdir() if p.name.rsplit("-", 1)[0] == topic]


def _produce_to_all(bootstrap: str, topic: str, partitions: int, tag: bytes) -> None:
    delivered: list[int] = []
    errors: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        (errors if err is not None else delivered).append(err or msg.partition())  # type: ignore[attr-defined]

    # acks=1: in the page cache is enough to survive kill -9, and an fsync per partition
    # would make this a disk benchmark.
    producer = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 20})
    for p in range(partitions):
        producer.produce(topic, value=tag + b"-%d" % p, partition=p, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(120) == 0
    assert not errors, errors[:5]
    assert sorted(delivered) == list(range(partitions))


def _consume_all(bootstrap: str, topic: str, partitions: int, per_partition: int) -> dict:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}",
                         "enable.auto.commit": False, "fetch.queue.backoff.ms": 10})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen: dict[int, list[bytes]] = {}
    want = partitions * per_partition
    got = 0
    deadline = time.monotonic() + 180
    try:
        while got < want and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 1.0):
                assert msg.error() is None, msg.error()
                seen.setdefault(msg.partition(), []).append(msg.value())
                got += 1
    finally:
        consumer.close()
    return seen


def _thousands_of_partitions(tmp_path: Path, partitions: int, limit: int) -> None:
    broker = _broker(tmp_path, limit)
    topic = "many"
    try:
        assert _create(broker.bootstrap, NewTopic(topic, partitions, 1)) == {topic: None}
        assert len(_partition_dirs(broker.data_dir, topic)) == partitions
        _produce_to_all(broker.bootstrap, topic, partitions, b"one")
        assert _open_fds(broker) < limit * 3 // 4  # the cache keeps half the limit at most
        assert broker.stop(timeout=120) == 0
        broker.start()  # clean restart
        assert f"{partitions} partition(s) from {broker.data_dir} (clean shutdown)" \
            in broker.log_text()
        _produce_to_all(broker.bootstrap, topic, partitions, b"two")
        broker.kill()
        broker.start()  # unclean: every partition's tail is recovered
        assert "(unclean shutdown)" in broker.log_text()
        seen = _consume_all(broker.bootstrap, topic, partitions, 2)
        assert sorted(seen) == list(range(partitions))
        for p, values in seen.items():
            assert values == [b"one-%d" % p, b"two-%d" % p], p
        assert _open_fds(broker) < limit * 3 // 4
        text = broker.log_text()
        assert "Too many open files" not in text
        assert "Traceback" not in text
        assert f"open file limit {limit}" in text
        assert broker.stop(timeout=120) == 0
    finally:
        broker.stop()


def test_thousands_of_partitions_run_and_restart_under_ulimit_1024(tmp_path: Path) -> None:
    _thousands_of_partitions(tmp_path, 2000, 1024)


@pytest.mark.slow
def test_ten_thousand_partitions_run_and_restart_under_ulimit_4096(tmp_path: Path) -> None:
    _thousands_of_partitions(tmp_path, 10_000, 4096)


def test_oversize_create_topics_is_refused_and_leaves_nothing_behind(tmp_path: Path) -> None:
    broker = _broker(tmp_path, 1024)  # max.partitions: 4 x 1024
    try:
        results = _create(broker.bootstrap, NewTopic("small", 100, 1), NewTopic("big", 5000, 1))
        assert results["small"] is None
        err = results["big"]
        assert err is not None and err.code() == 44, err  # POLICY_VIOLATION
        assert "max.partitions 4096" in err.str()
        # Kafka's per-request cap: more than 10,000 partitions fail every topic of the request.
        results = _create(broker.bootstrap, NewTopic("a", 2, 1), NewTopic("huge", 100_000, 1))
        assert {n: e.code() for n, e in results.items()} == {"a": 44, "huge": 44}
        assert "Excessively large number of partitions per request" in results["huge"].str()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        fut = admin.create_partitions([NewPartitions("small", 5000)])["small"]
        with pytest.raises(KafkaException) as info:
            fut.result(timeout=60)
        assert info.value.args[0].code() == 44
        # validate_only counts the same way (100 + 1000 + 3000 > 4096) and creates nothing.
        results = _create(broker.bootstrap, NewTopic("v1", 1000, 1), NewTopic("v2", 3000, 1),
                          validate_only=True)
        assert results["v1"] is None and results["v2"].code() == 44
        for name in ("big", "a", "huge", "v1", "v2"):
            assert _partition_dirs(broker.data_dir, name) == [], name
        meta = admin.list_topics(timeout=30)
        assert "big" not in meta.topics and "huge" not in meta.topics and "a" not in meta.topics
        assert len(meta.topics["small"].partitions) == 100
        broker.restart()
        meta = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=30)
        assert set(meta.topics) == {"small"}
        assert "Traceback" not in broker.log_text()
    finally:
        broker.stop()


@pytest.mark.parametrize("limit", [256, 1024])
def test_300_partitions_under_a_tight_limit_are_created_whole_or_not_at_all(
    tmp_path: Path, limit: int
) -> None:
    broker = _broker(tmp_path, limit)
    try:
        err = _create(broker.bootstrap, NewTopic("t300", 300, 1))["t300"]
        dirs = _partition_dirs(broker.data_dir, "t300")
        meta = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=30)
        if err is None:
            assert len(dirs) == 300
            assert len(meta.topics["t300"].partitions) == 300
            _produce_to_all(broker.bootstrap, "t300", 300, b"x")
            assert len(_consume_all(broker.bootstrap, "t300", 300, 1)) == 300
        else:
            assert err.code() in (44, 56), err
            assert dirs == [] and "t300" not in meta.topics
        assert "Traceback" not in broker.log_text()
    finally:
        broker.stop()


def test_configured_max_partitions_counts_every_topic(tmp_path: Path) -> None:
    broker = _broker(tmp_path, 1024, "--set", "max.partitions=100")
    try:
        assert _create(broker.bootstrap, NewTopic("first", 60, 1)) == {"first": None}
        err = _create(broker.bootstrap, NewTopic("second", 41, 1))["second"]
        assert err.code() == 44 and "max.partitions 100 (max.partitions)" in err.str()
        assert _create(broker.bootstrap, NewTopic("second", 40, 1)) == {"second": None}
        assert len(_partition_dirs(broker.data_dir, "second")) == 40
    finally:
        broker.stop()
