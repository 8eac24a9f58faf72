"""producer.id.expiration.ms: a partition forgets idle idempotent producers (not those with an
open transaction there), also after a restart, and a forgotten producer that comes back is
accepted as an unknown one, as in Kafka."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from tests.compat.wire import call
from tests.integration.test_transactions import consume_all, create_topic, txn_producer


def producers_of(bootstrap: str, topic: str) -> dict[int, int]:
    """DescribeProducers of partition 0: producer id -> current_txn_start_offset."""
    resp = call(bootstrap, 61, 0, topics=[{"name": topic, "partition_indexes": [0]}])
    (part,) = resp.topics[0].partitions
    assert part.error_code == 0, part
    return {p.producer_id: p.current_txn_start_offset for p in part.active_producers}


def test_idle_producer_ids_expire_but_open_transactions_stay(nerve_factory, unique_topic):
    broker = nerve_factory("--set", "producer.id.expiration.ms=2000",
                           "--set", "producer.id.expiration.check.interval.ms=300")
    topic = unique_topic()
    create_topic(broker.bootstrap, topic)
    idem = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                     "linger.ms": 5})
    for i in range(10):
        idem.produce(topic, value=f"idem-{i}".encode(), partition=0)
    assert idem.flush(15) == 0
    txn = txn_producer(broker.bootstrap, "expiry-open", **{"transaction.timeout.ms": 60000})
    txn.begin_transaction()
    txn.produce(topic, value=b"open", partition=0)
    assert txn.flush(15) == 0
    known = producers_of(broker.bootstrap, topic)
    assert len(known) == 2, known
    (open_pid,) = [pid for pid, first in known.items() if first >= 0]

    deadline = time.monotonic() + 20
    while (now := producers_of(broker.bootstrap, topic)) != {open_pid: known[open_pid]}:
        assert time.monotonic() < deadline, f"idle producer never expired: {now}"
        time.sleep(0.3)
    assert "expired producer id" in broker.log_text()

    txn.commit_transaction(30)
    broker.stop()
    broker.start()
    # After a restart (state from the snapshot), the committed one expires too.
    deadline = time.monotonic() + 20
    while (now := producers_of(broker.bootstrap, topic)):
        assert time.monotonic() < deadline, f"producers still known after restart: {now}"
        time.sleep(0.3)

    # The forgotten idempotent producer comes back: accepted as an unknown producer.
    for i in range(10, 15):
        idem.produce(topic, value=f"idem-{i}".encode(), partition=0)
    assert idem.flush(15) == 0
    got = consume_all(broker.bootstrap, topic, 1, "read_committed", expect=16)
    assert sorted(got) == sorted([f"idem-{i}".encode() for i in range(15)] + [b"open"])
    assert "Traceback" not in broker.log_text()
