"""Fetch sessions (KIP-227) against a real `nerve serve`: the raw story that
tests/compat/test_fetch_sessions.py proves on Apache Kafka too, and Kafka's Java consumer
(which fetches incrementally) reading many partitions while they grow."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.compat.fetch_session_story import EXPECTED, fetch, session_story
from tests.compat.wire import WireClient

PARTITIONS = 30


def test_fetch_session_story(nerve, unique_topic):
    assert session_story(nerve.bootstrap, unique_topic()) == EXPECTED


def test_no_session_slots_means_full_fetches(tmp_path):
    from tests.helpers import NerveProcess

    broker = NerveProcess(tmp_path / "data", extra_args=[
        "--set", "max.incremental.fetch.session.cache.slots=1"]).start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("slots", 1, 1)])["slots"].result(30)
        with WireClient(broker.bootstrap) as c:
            first = int(fetch(c, 0, 0, "slots", {0: 0}).session_id)
            second = int(fetch(c, 0, 0, "slots", {0: 0}).session_id)  # the one slot is taken
            # Closing the first (FINAL epoch) frees its slot.
            assert int(fetch(c, first, -1, "slots", {0: 0}).session_id) == 0
            third = int(fetch(c, 0, 0, "slots", {0: 0}).session_id)
        assert (first != 0, second, third != 0) == (True, 0, True)
    finally:
        broker.stop()
    assert "Traceback" not in broker.log_text()


@pytest.mark.slow  # a JVM and ~10 s of waves: scripts/test-slow
def test_java_consumer_reads_growing_partitions(nerve, unique_topic, kafka_run):
    topic = unique_topic()
    admin = AdminClient({"bootstrap.servers": nerve.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": nerve.bootstrap, "linger.ms": 2})
    total = 0

    def wave(n: int) -> None:
        nonlocal total
        for i in range(n):
            p.produce(topic, value=f"{total + i}".encode(), partition=(total + i) % PARTITIONS)
        assert p.flush(30) == 0
        total += n

    wave(300)
    expected = 900
    result: dict[str, subprocess.CompletedProcess[str]] = {}

    def consume() -> None:
        result["r"] = kafka_run(
            "console-consumer", "--bootstrap-server", nerve.bootstrap, "--topic", topic,
            "--from-beginning", "--max-messages", str(expected), "--timeout-ms", "30000",
            timeout=120)

    t = threading.Thread(target=consume)
    t.start()
    # More records while the consumer fetches incrementally: a partition that grows must be
    # answered even when the request does not name it.
    for _ in range(2):
        time.sleep(3)
        wave(300)
    t.join(150)
    r = result["r"]
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    values = sorted(int(v) for v in r.stdout.split())
    assert values == list(range(expected)), (len(values), r.stderr[-2000:])
