"""Log compaction against Kafka 4.4.0: the same keys, updates and tombstones leave the same
key -> (offset, value) map after cleaning, and the tombstones are gone after
delete.retention.ms once a later pass runs, on both brokers (tests/compaction.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.compaction import create_topic, produce_one, produce_rounds, wait_compacted
from tests.compat.conftest import Broker

pytestmark = [pytest.mark.compat, pytest.mark.slow]


def test_compaction_keeps_the_same_records(broker: Broker, unique: Callable[[str], str]) -> None:
    topic = unique("compacted")
    create_topic(broker.bootstrap, topic)
    expect = produce_rounds(broker.bootstrap, topic)
    end = 4 * 12
    produce_one(broker.bootstrap, topic, b"roll1", b"r")  # every workload segment inactive
    expect[b"roll1"] = (end, b"r")
    first = wait_compacted(broker.bootstrap, topic, expect)
    tombstones = sum(v is None for _, v in expect.values())
    assert tombstones and sum(v is None for _, _, v in first) == tombstones  # kept for now
    time.sleep(2)  # past delete.retention.ms (1.5 s)
    more = produce_rounds(broker.bootstrap, topic, rounds=1, prefix="later", start=end + 1)
    produce_one(broker.bootstrap, topic, b"roll2", b"r")
    final = {k: v for k, v in expect.items() if v[1] is not None}
    final.update(more)  # (its tombstone is kept by its first pass)
    final[b"roll2"] = (end + 1 + len(more), b"r")
    wait_compacted(broker.bootstrap, topic, final)
