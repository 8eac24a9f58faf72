"""Log cleaner step (issue 17): `python -m bench --cleaner [--quick]`.

On nerve and on Apache Kafka, the same way:
1. a compacted topic (segment.bytes 1 MiB, min.compaction.lag.ms 1 h so nothing is cleaned
   yet) is filled with keyed records over a few thousand keys: a dirty log of DIRTY_MB;
2. a paced acks=all producer on another topic measures produce latency for PACED_S seconds
   (`produce_p99_ms_idle`);
3. min.compaction.lag.ms is set to 0 (the cleaner may start) and the paced producer runs again
   until the partition's `.log` files stop shrinking (`produce_p99_ms_cleaning`);
4. `clean_mb_per_s` = the dirty bytes / the time from the config change to the last size
   change (both brokers look for work every 200 ms: log.cleaner.backoff.ms).
The partition's size is read from its directory (both brokers run on this machine).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from bench.brokers import KafkaBroker, NerveBroker

TOPIC = "cleaner"
PACED = "cleaner-paced"
SETS = {"log.cleaner.backoff.ms": "200"}
Metrics = dict[str, float]


def _log_bytes(root: Path) -> int:
    total = 0
    for d in root.rglob(f"{TOPIC}-0"):
        if d.is_dir():
            total += sum(f.stat().st_size for f in d.iterdir() if f.name.endswith(".log"))
    return total


def _fill(bootstrap: str, mb: int, keys: int, value_bytes: int = 200) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 20,
                         "batch.size": 256 * 1024, "compression.type": "none"})
    value = os.urandom(value_bytes // 2).hex().encode()[:value_bytes]
    n = mb * 1024 * 1024 // (value_bytes + 80)
    for i in range(n):
        while True:
            try:
                producer.produce(TOPIC, value, key=b"key-%d" % (i % keys), partition=0)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(300)
    return n


def _paced(bootstrap: str, stop: threading.Event, rate: int = 200) -> list[float]:
    """acks=all produce latencies (ms) at `rate` records/s until `stop`."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    lat: list[float] = []

    def done(err: object, _msg: object, t0: float) -> None:
        if err is None:
            lat.append((time.monotonic() - t0) * 1000)

    start = time.monotonic()
    i = 0
    while not stop.is_set():
        due = start + i / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        t0 = time.monotonic()
        producer.produce(PACED, b"x" * 100, on_delivery=lambda e, m, t0=t0: done(e, m, t0))
        producer.poll(0)
        i += 1
    producer.flush(30)
    return lat


def _p99(lat: list[float]) -> float:
    return statistics.quantiles(lat, n=100)[98] if len(lat) >= 100 else max(lat, default=0)


def run(broker: NerveBroker | KafkaBroker, root: Path, dirty_mb: int, keys: int,
        paced_s: float) -> Metrics:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = [NewTopic(TOPIC, 1, 1, config={"cleanup.policy": "compact",
                                            "segment.bytes": "1048576",
                                            "min.compaction.lag.ms": "3600000",
                                            "min.cleanable.dirty.ratio": "0.01"}),
              NewTopic(PACED, 1, 1)]
    for f in admin.create_topics(topics).values():
        f.result(60)
    _fill(broker.bootstrap, dirty_mb, keys)
    warm = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    warm.produce(PACED, b"warm-up")  # metadata and leader known before latencies count
    warm.flush(60)
    time.sleep(1)
    before = _log_bytes(root)
    stop = threading.Event()
    out: dict[str, list[float]] = {}
    t = threading.Thread(target=lambda: out.__setitem__("idle", _paced(broker.bootstrap, stop)))
    t.start()
    time.sleep(paced_s)
    stop.set()
    t.join()
    stop = threading.Event()
    t = threading.Thread(target=lambda: out.__setitem__("busy", _paced(broker.bootstrap, stop)))
    t.start()
    res = ConfigResource("topic", TOPIC, incremental_configs=[ConfigEntry(
        "min.compaction.lag.ms", "0", incremental_operation=AlterConfigOpType.SET)])
    t0 = time.monotonic()
    admin.incremental_alter_configs([res])[res].result(30)
    # A pass swaps its segments in at its end: wait for the size to drop, then to settle.
    last, last_change = before, t0
    while time.monotonic() - t0 < 600:
        size = _log_bytes(root)
        if size != last:
            last, last_change = size, time.monotonic()
        if last < before and time.monotonic() - last_change > 3:
            break
        time.sleep(0.05)
    stop.set()
    t.join()
    seconds = max(last_change - t0, 1e-3)
    return {"dirty_mb": before / 2**20, "cleaned_mb": last / 2**20,
            "clean_s": seconds, "clean_mb_per_s": before / 2**20 / seconds,
            "produce_p99_ms_idle": _p99(out["idle"]),
            "produce_p99_ms_cleaning": _p99(out["busy"]),
            "p99_ratio": _p99(out["busy"]) / max(_p99(out["idle"]), 1e-3)}


def run_all(labels: list[str], quick: bool, src: Path) -> dict[str, Metrics]:
    dirty_mb, keys, paced_s = (24, 2000, 4.0) if quick else (200, 20000, 8.0)
    results: dict[str, Metrics] = {}
    for label in labels:
        broker: NerveBroker | KafkaBroker = (KafkaBroker(sets=SETS) if label == "kafka"
                                             else NerveBroker("nerve", SETS, src))
        broker.start()
        try:
            results[label] = run(broker, broker.tmp, dirty_mb, keys, paced_s)
        finally:
            broker.stop()
    return results
