"""A consumer's fetch session (KIP-227) told with raw Fetch v12 requests: the session id a
full fetch opens, what incremental fetches answer (only partitions that changed), forgotten
partitions, and the error codes. Run against Apache Kafka and nerve by
tests/compat/test_fetch_sessions.py and against nerve alone by
tests/integration/test_fetch_sessions.py (the default suite)."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.compat.wire import WireClient


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(20)
    # Kafka loads the partitions just after its controller acknowledges: wait until a fetch
    # of each is answered without error.
    deadline = time.monotonic() + 20
    with WireClient(bootstrap) as c:
        while True:
            r = fetch(c, 0, -1, topic, dict.fromkeys(range(partitions), 0))
            if all(int(p.error_code) == 0 for t in r.responses for p in t.partitions):
                return
            assert time.monotonic() < deadline, r
            time.sleep(0.1)


def produce(bootstrap: str, topic: str, partition: int, value: bytes) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    p.produce(topic, value=value, partition=partition)
    assert p.flush(30) == 0


FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71


def fetch(c: WireClient, session_id: int, epoch: int, topic: str,
          partitions: dict[int, int], forgotten: list[int] | None = None) -> Any:
    """Raw Fetch v12 (topics by name) of `partitions` {partition: fetch offset}."""
    return c.call(1, 12, replica_id=-1, max_wait=0, min_bytes=1, max_bytes=1 << 20,
                  isolation_level=0, session_id=session_id, session_epoch=epoch,
                  topics=[{"topic": topic, "partitions": [{
                      "partition": p, "current_leader_epoch": -1, "fetch_offset": off,
                      "last_fetched_epoch": -1, "log_start_offset": -1,
                      "partition_max_bytes": 1 << 20} for p, off in partitions.items()]}]
                  if partitions else [],
                  forgotten_topics_data=[{"topic": topic, "partitions": forgotten}]
                  if forgotten else [], rack_id="")


def seen(resp: Any) -> list[tuple[int, int, bool]]:
    """(partition, high watermark, has records) of every partition in the answer."""
    return sorted((int(p.partition_index), int(p.high_watermark), bool(p.records))
                  for t in resp.responses for p in t.partitions)


def session_story(bootstrap: str, topic: str) -> list[Any]:
    """One consumer's fetch session, step by step; returns what each step observed."""
    create_topic(bootstrap, topic, 3)
    produce(bootstrap, topic, 0, b"a")
    out: list[Any] = []
    with WireClient(bootstrap) as c:
        full = fetch(c, 0, 0, topic, {0: 0, 1: 0, 2: 0})  # opens a session
        sid = int(full.session_id)
        out.append(("full", int(full.error_code), sid != 0, seen(full)))
        # Incremental, p0 moved on past its record: nothing changed, nothing answered.
        r = fetch(c, sid, 1, topic, {0: 1})
        out.append(("unchanged", int(r.error_code), int(r.session_id) == sid, seen(r)))
        # A record on p2: only p2 is answered, though the request names no partition.
        produce(bootstrap, topic, 2, b"b")
        r = fetch(c, sid, 2, topic, {})
        out.append(("p2 grew", int(r.error_code), int(r.session_id) == sid, seen(r)))
        # The same epoch again: the session expects 3 now.
        r = fetch(c, sid, 2, topic, {})
        out.append(("stale epoch", int(r.error_code), int(r.session_id), seen(r)))
        # Forget p2 (and move p2's position in the same breath: forgetting wins).
        r = fetch(c, sid, 3, topic, {}, forgotten=[2])
        out.append(("forgot p2", int(r.error_code), int(r.session_id) == sid, seen(r)))
        produce(bootstrap, topic, 2, b"c")
        produce(bootstrap, topic, 1, b"d")
        r = fetch(c, sid, 4, topic, {})
        out.append(("p1 and p2 grew", int(r.error_code), int(r.session_id) == sid, seen(r)))
        r = fetch(c, 12345, 1, topic, {})
        out.append(("unknown session", int(r.error_code), int(r.session_id), seen(r)))
        # A FINAL-epoch full fetch closes the session and opens none.
        r = fetch(c, sid, -1, topic, {0: 1})
        out.append(("final", int(r.error_code), int(r.session_id), seen(r)))
        r = fetch(c, sid, 5, topic, {})
        out.append(("closed", int(r.error_code), int(r.session_id), seen(r)))
    return out


EXPECTED = [
    ("full", 0, True, [(0, 1, True), (1, 0, False), (2, 0, False)]),
    ("unchanged", 0, True, []),
    ("p2 grew", 0, True, [(2, 1, True)]),
    ("stale epoch", INVALID_FETCH_SESSION_EPOCH, 0, []),
    ("forgot p2", 0, True, []),
    ("p1 and p2 grew", 0, True, [(1, 1, True)]),
    ("unknown session", FETCH_SESSION_ID_NOT_FOUND, 0, []),
    ("final", 0, 0, [(0, 1, False)]),
    ("closed", FETCH_SESSION_ID_NOT_FOUND, 0, []),
]
