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


def listed_transactional_ids(bootstrap: str) -> set[str]:
    resp = call(bootstrap, 66, 0, state_filters=[], producer_id_filters=[])
    assert resp.error_code == 0, resp
    return {t.transactional_id for t in resp.transaction_states}


def test_idle_transactional_ids_expire_and_stay_forgotten(nerve_factory, unique_topic):
    every = "cleanup.interval.ms=300"
    broker = nerve_factory("--set", "transactional.id.expiration.ms=1500",
                           "--set", f"transaction.remove.expired.transaction.{every}",
                           "--set", f"transaction.abort.timed.out.transaction.{every}")
    topic = unique_topic()
    create_topic(broker.bootstrap, topic)
    done = txn_producer(broker.bootstrap, "expire-done")
    done.begin_transaction()
    done.produce(topic, value=b"v")
    done.commit_transaction(30)
    held = txn_producer(broker.bootstrap, "expire-open", **{"transaction.timeout.ms": 60000})
    held.begin_transaction()
    held.produce(topic, value=b"open")
    assert held.flush(15) == 0
    assert {"expire-done", "expire-open"} <= listed_transactional_ids(broker.bootstrap)
    deadline = time.monotonic() + 20
    while "expire-done" in (ids := listed_transactional_ids(broker.bootstrap)):
        assert time.monotonic() < deadline, f"idle transactional id never expired: {ids}"
        time.sleep(0.3)
    assert "expire-open" in ids  # an open transaction is never expired
    broker.kill()
    broker.start()
    assert "expire-done" not in listed_transactional_ids(broker.bootstrap)
