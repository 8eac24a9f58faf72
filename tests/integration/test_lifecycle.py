"""Topic deletion drops committed offsets; shutdown does not wait for parked rebalances."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.integration.test_produce_consume import create_topic, rdk_produce


def test_deleting_a_topic_drops_its_committed_offsets(nerve, unique_topic):
    topic = unique_topic()
    create_topic(nerve.bootstrap, topic)
    rdk_produce(nerve.bootstrap, topic, [b"x"] * 5)
    c = Consumer({"bootstrap.servers": nerve.bootstrap, "group.id": "deleted-topic-group",
                  "enable.auto.commit": False})
    deadline = time.monotonic() + 20
    while True:  # a new consumer may not know its coordinator yet (_WAIT_COORD): retry
        try:
            c.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 4
    admin = AdminClient({"bootstrap.servers": nerve.bootstrap})
    admin.delete_topics([topic])[topic].result(10)
    create_topic(nerve.bootstrap, topic)
    assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset < 0
    c.close()


def test_stop_does_not_wait_for_a_parked_join(nerve_factory, unique_topic):
    # A long initial rebalance delay parks the first JoinGroup in the coordinator.
    broker = nerve_factory("--set", "group.initial.rebalance.delay.ms=60000")
    topic = unique_topic()
    create_topic(broker.bootstrap, topic)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "parked",
                  "session.timeout.ms": 45000})
    c.subscribe([topic])
    # Give the consumer time to find the coordinator and send its JoinGroup.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert c.poll(0.2) is None  # no assignment can arrive: the join is parked
    started = time.monotonic()
    assert broker.stop() == 0
    took = time.monotonic() - started
    c.close()
    # The drain timeout is 10 s; releasing the parked join lets shutdown finish well before.
    assert took < 5, f"shutdown took {took:.1f} s"
