"""kcat and Kafka's Java command-line tools against a real nerve process."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.helpers import NerveProcess
from tests.integration.test_produce_consume import create_topic, rdk_consume, rdk_produce


@pytest.mark.java
@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_kcat_produces_each_codec_and_java_console_consumer_reads(
    nerve, unique_topic, kcat, kafka_run, codec
):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    lines = "".join(f"k{i}:line-{i}-{codec}\n" for i in range(50))
    r = subprocess.run([kcat, "-b", nerve.bootstrap, "-P", "-t", topic, "-z", codec, "-K:"],
                       input=lines, text=True, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r = kafka_run("console-consumer", "--bootstrap-server", nerve.bootstrap, "--topic", topic,
                  "--partition", "0", "--offset", "earliest", "--max-messages", "50",
                  "--formatter-property", "print.key=true",
                  "--formatter-property", "key.separator=:",
                  timeout=90)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == lines.splitlines()


@pytest.mark.java
@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd", "snappy"])
def test_java_console_producer_each_codec_and_kcat_reads(
    nerve, unique_topic, kcat, kafka_run, codec
):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    lines = "".join(f"java-{codec}-{i}\n" for i in range(40))
    r = kafka_run("console-producer", "--bootstrap-server", nerve.bootstrap, "--topic", topic,
                  "--command-property", f"compression.type={codec}",
                  "--command-property", "linger.ms=20", input=lines, timeout=90)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([kcat, "-b", nerve.bootstrap, "-C", "-t", topic, "-o", "beginning",
                        "-e", "-f", "%o %s\\n"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{i} java-{codec}-{i}" for i in range(40)]


@pytest.mark.java
def test_producer_perf_test_all_records_acknowledged_and_stored(nerve, unique_topic, kafka_run):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic, partitions=2)
    r = kafka_run("producer-perf-test", "--topic", topic, "--num-records", "20000",
                  "--record-size", "512", "--throughput", "-1", "--producer-props",
                  f"bootstrap.servers={nerve.bootstrap}", "acks=all", "linger.ms=5",
                  "compression.type=lz4", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "20000 records sent" in r.stdout
    c = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": "perf-check"})
    total = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(2))
    c.close()
    assert total == 20000


def test_log_append_time_topic_stamps_broker_time(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic, **{"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": nerve.bootstrap})
    p.produce(topic, b"stamped", timestamp=1_000)  # a client time far in the past
    p.flush(10)
    c = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": "lat",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    msg = None
    for _ in range(30):
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            break
    c.close()
    assert msg is not None
    ts_type, ts = msg.timestamp()
    assert ts_type == 2  # TIMESTAMP_LOG_APPEND_TIME
    assert before - 1000 <= ts <= int(time.time() * 1000) + 1000


def test_sigterm_exits_with_an_error_when_the_final_flush_fails(tmp_path, unique_topic):
    """The data dir vanishes under a running broker: SIGTERM must still end the process
    (status 1, the reason logged) instead of waiting forever for a clean stop."""
    data = tmp_path / "doomed"
    proc = NerveProcess(data, extra_args=["--no-console"]).start()
    try:
        topic = unique_topic()
        create_topic(proc.bootstrap, topic, partitions=1)
        rdk_produce(proc.bootstrap, topic, [b"x"] * 10)
        # The broker keeps writing while it goes (the recovery-point checkpoint is replaced by
        # a .tmp rename after fsync rounds), so a file can vanish between rmtree's listing and
        # its unlink: remove until the directory is gone.
        for _ in range(50):
            shutil.rmtree(data, ignore_errors=True)
            if not data.exists():
                break
            time.sleep(0.05)
        assert not data.exists()
        assert proc.stop(timeout=20) == 1
        assert "shutdown failed" in proc.log_text()
        assert "did not exit" not in proc.log_text()
    finally:
        proc.kill()


def test_graceful_restart_keeps_data_without_recovery(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic, partitions=2)
    rdk_produce(nerve.bootstrap, topic, [b"a%d" % i for i in range(100)])
    assert nerve.stop() == 0
    nerve.restart()
    got = rdk_consume(nerve.bootstrap, topic, 100, partition=0) + rdk_consume(
        nerve.bootstrap, topic, 100, partition=1, timeout_s=5)
    assert sorted(v for _o, _k, v in got) == sorted(b"a%d" % i for i in range(100))
    log = nerve.log_text()
    restart_log = log[log.rindex("nerve start #2"):]
    assert "truncat" not in restart_log
    assert "clean shutdown" in restart_log or "(clean)" in restart_log
