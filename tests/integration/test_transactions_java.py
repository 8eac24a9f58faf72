"""Transactions with Kafka's Java clients and tools against a real `nerve serve`: the Java
transactional producer (producer-perf-test --transactional-id) and `kafka-transactions`
(list, describe, describe-producers, find-hanging, abort)."""

from __future__ import annotations

from confluent_kafka import Producer

from tests.integration.test_transactions import consume_all, create_topic, txn_producer


def test_java_transactional_producer_commits(nerve, unique_topic, kafka_run):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic, 2)
    r = kafka_run("producer-perf-test", "--topic", topic, "--num-records", "3000",
                  "--record-size", "50", "--throughput", "-1",
                  "--transactional-id", "java-perf", "--transaction-duration-ms", "100",
                  "--command-property", f"bootstrap.servers={nerve.bootstrap}", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3000 records sent" in r.stdout, r.stdout
    assert len(consume_all(nerve.bootstrap, topic, 2, "read_committed", expect=3000,
                           timeout=30)) == 3000


def test_kafka_transactions_tool(nerve, unique_topic, kafka_run):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    b = ("--bootstrap-server", nerve.bootstrap)
    done = txn_producer(nerve.bootstrap, "tool-done")
    done.begin_transaction()
    done.produce(topic, value=b"ok")
    done.commit_transaction(30)
    open_ = txn_producer(nerve.bootstrap, "tool-open")
    open_.begin_transaction()
    open_.produce(topic, value=b"open")
    open_.flush(10)

    r = kafka_run("transactions", *b, "list", timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert rows["tool-done"][3] == "CompleteCommit" and rows["tool-open"][3] == "Ongoing", r.stdout

    r = kafka_run("transactions", *b, "describe", "--transactional-id", "tool-open", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Ongoing" in r.stdout and f"{topic}-0" in r.stdout, r.stdout

    r = kafka_run("transactions", *b, "describe-producers", "--topic", topic, "--partition", "0",
                  timeout=60)
    assert r.returncode == 0, r.stderr
    starts = [line.split()[-1] for line in r.stdout.splitlines()[1:]]
    assert sorted(starts) == ["-1", "2"] or sorted(starts) == ["2", "None"], r.stdout

    r = kafka_run("transactions", *b, "find-hanging", "--broker-id", "1",
                  "--max-transaction-timeout", "1", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "tool-open" not in r.stdout  # open, but its coordinator knows it: not hanging

    # abort closes the open transaction in the partition: read_committed moves past it.
    plain = Producer({"bootstrap.servers": nerve.bootstrap})
    plain.produce(topic, value=b"after")
    plain.flush(10)
    assert consume_all(nerve.bootstrap, topic, 1, "read_committed", timeout=5) == [b"ok"]
    r = kafka_run("transactions", *b, "abort", "--topic", topic, "--partition", "0",
                  "--start-offset", "2", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert consume_all(nerve.bootstrap, topic, 1, "read_committed", expect=2) == [b"ok",
                                                                                 b"after"]
