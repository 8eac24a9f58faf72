"""Workloads: each takes a bootstrap address and returns {metric: value}.

Metric names end in their unit: `_rec_s` and `_mb_s` (higher is better), `_ms`, `_s` and `_mb`
(lower is better). The same client code runs against every broker.
"""

from __future__ import annotations

import os
import re
import statistics
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.brokers import ROOT

KAFKA_RUN = ROOT / "scripts" / "kafka-run"
Metrics = dict[str, float]

# Same producer settings everywhere (the brief's ProducerPerformance settings).
PRODUCER_CONF = {"acks": "all", "linger.ms": 5, "batch.size": 131072}
# Same consumer settings for every broker. librdkafka stops fetching a partition for
# fetch.queue.backoff.ms (default 1000 ms) whenever its local queue is over
# queued.min.messages / queued.max.messages.kbytes, that is whenever the broker is faster
# than the application: with the default, 8 partitions of 100 B records were read at
# 130-170k records/s from nerve and from Kafka alike (10 fetches in 4 s, both brokers ~2%
# busy), a client timer rather than a broker figure. 10 ms keeps the client's back-pressure
# without the idle second.
CONSUMER_CONF = {"fetch.max.bytes": 52_428_800, "fetch.queue.backoff.ms": 10}


@dataclass(frozen=True)
class Sizes:
    java_records: int  # 1 KiB; 100 B runs send 3x as many
    rdk_records_1k: int
    rdk_records_100b: int
    e2e_rate: int
    e2e_seconds: float
    warmup_records: int
    reps: int  # librdkafka produce/consume steps: runs per figure (the median is kept)
    paced_seconds: float  # produce at half of Kafka's peak rate, for latency: one round
    paced_rounds: int  # rounds of paced_seconds, each with its own p99

    @staticmethod
    def quick() -> Sizes:
        # Each step still takes about a second: compare ratios, and expect +-30% noise.
        return Sizes(java_records=50_000, rdk_records_1k=50_000, rdk_records_100b=150_000,
                     e2e_rate=500, e2e_seconds=4,
                     warmup_records=50_000, reps=3, paced_seconds=2,
                     paced_rounds=3)

    @staticmethod
    def full() -> Sizes:
        return Sizes(java_records=200_000, rdk_records_1k=200_000, rdk_records_100b=600_000,
                     e2e_rate=1000, e2e_seconds=15,
                     warmup_records=100_000, reps=3, paced_seconds=6,
                     paced_rounds=5)


def median_run(runs: list[Metrics], key: str = "rec_s") -> Metrics:
    """The run with the median `key`, whole (its latencies stay with its throughput).

    One librdkafka step lasts about a second on loopback, so a single run mostly measures
    the moment (page cache after a produce burst, a JIT compile, the scheduler): +-40%
    between runs of the same broker. The median of a few runs is what we compare.
    """
    return sorted(runs, key=lambda m: m[key])[len(runs) // 2]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def new_topic(bootstrap: str, partitions: int, prefix: str = "bench") -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    # Wait for leaders (Kafka loads partitions just after the controller acknowledges).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=10).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == partitions and all(
                p.leader >= 0 for p in md.partitions.values()):
            break
        time.sleep(0.05)
    return topic


# ------------------------------------------------------------------ Kafka's Java perf tools
_PP_RE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")


def java_producer_perf(bootstrap: str, topic: str, records: int, size: int) -> Metrics:
    """Kafka's ProducerPerformance, unthrottled, keyless records (spread over the partitions
    by the client's sticky partitioner)."""
    r = subprocess.run(
        [str(KAFKA_RUN), "producer-perf-test", "--topic", topic, "--num-records", str(records),
         "--record-size", str(size), "--throughput", "-1", "--producer-props",
         f"bootstrap.servers={bootstrap}",
         *(f"{k}={v}" for k, v in PRODUCER_CONF.items())],
        capture_output=True, text=True, timeout=600)
    found = list(_PP_RE.finditer(r.stdout))
    m = found[-1] if found else None  # the last line is the summary
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"producer-perf-test failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return {
        "rec_s": float(m.group(2)), "mb_s": float(m.group(3)),
        "p50_ms": float(m.group(6)), "p99_ms": float(m.group(8)),
        "p999_ms": float(m.group(9)),
    }


def java_consumer_perf(bootstrap: str, topic: str, records: int) -> Metrics:
    r = subprocess.run(
        [str(KAFKA_RUN), "consumer-perf-test", "--bootstrap-server", bootstrap, "--topic", topic,
         "--messages", str(records), "--timeout", "60000"],
        capture_output=True, text=True, timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    if r.returncode != 0 or len(lines) < 2:
        raise RuntimeError(f"consumer-perf-test failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    head = [h.strip() for h in lines[-2].split(",")]
    vals = dict(zip(head, (v.strip() for v in lines[-1].split(",")), strict=False))
    if int(vals["data.consumed.in.nMsg"]) < records:
        raise RuntimeError(f"consumer-perf-test read {vals['data.consumed.in.nMsg']}/{records}")
    # fetch.* exclude the group join (rebalance.time.ms), which is reported separately.
    return {"rec_s": float(vals["fetch.nMsg.sec"]), "mb_s": float(vals["fetch.MB.sec"]),
            "join_ms": float(vals["rebalance.time.ms"])}


# ------------------------------------------------------------------ confluent-kafka
class _Deliveries:
    """A producer's delivery reports: latency (produce() -> report) of each, and errors."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: list[object] = []

    def on_delivery(self, err: object, msg: object) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.latencies.append(msg.latency())  # type: ignore[attr-defined]

    def check(self, undelivered: int) -> None:
        if undelivered or self.errors:
            raise RuntimeError(f"{undelivered} undelivered, {len(self.errors)} errors: "
                               f"{self.errors[:3]}")

    def latency_ms(self) -> Metrics:
        lat = self.latencies
        return {"p50_ms": percentile(lat, 50) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
                "p999_ms": percentile(lat, 99.9) * 1e3}


def rdk_produce(bootstrap: str, topic: str, partitions: int, records: int,
                size: int) -> Metrics:
    """Produce as fast as librdkafka takes them; latency is produce() -> delivery report."""
    reports = _Deliveries()
    on_delivery = reports.on_delivery
    p = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONF,
                  "queue.buffering.max.messages": 200_000,
                  "queue.buffering.max.kbytes": 262_144})
    value = os.urandom(size)
    t0 = time.perf_counter()
    for i in range(records):
        while True:
            try:
                p.produce(topic, value, partition=i % partitions, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                p.poll(0.005)
        if i % 1000 == 0:
            p.poll(0)
    reports.check(p.flush(120))
    elapsed = time.perf_counter() - t0
    return {"rec_s": records / elapsed, "mb_s": records * size / elapsed / 1e6,
            **reports.latency_ms()}


def rdk_consume(bootstrap: str, topic: str, partitions: int, records: int,
                size: int) -> Metrics:
    """Read the topic from offset 0 with a new consumer."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"b-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, **CONSUMER_CONF})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + 120
    while got < records and time.monotonic() < deadline:
        for msg in c.consume(num_messages=min(10_000, records - got), timeout=1.0):
            if msg.error() is None:
                got += 1
    elapsed = time.perf_counter() - t0
    c.close()
    if got < records:
        raise RuntimeError(f"consumed {got}/{records}")
    return {"rec_s": records / elapsed, "mb_s": records * size / elapsed / 1e6}


def rdk_produce_at_rate(bootstrap: str, topic: str, rate: float, seconds: float,
                        size: int, rounds: int = 1) -> Metrics:
    """Produce `rate` records/s (paced every millisecond) with the same producer settings, for
    `rounds` rounds of `seconds` each on one producer; latency = produce() -> delivery report.
    Unlike the unthrottled runs, the client's queue stays short, so this is the broker's
    answer time plus linger.ms. Each round's p99 is reported (`p99_rN_ms`) beside the worst
    round's and the whole run's, so one stalled round cannot hide in a median."""
    p = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONF})
    value = os.urandom(size)
    per_round = int(rate * seconds)
    results: list[_Deliveries] = []
    start = time.perf_counter()
    for _ in range(rounds):
        reports = _Deliveries()  # each record reports to the round it was produced in
        results.append(reports)
        on_delivery = reports.on_delivery
        sent = 0
        round_start = time.perf_counter()
        while sent < per_round:
            due = min(per_round, int((time.perf_counter() - round_start) * rate) + 1)
            while sent < due:
                try:
                    p.produce(topic, value, on_delivery=on_delivery)
                except BufferError:  # the broker is behind the rate: wait for deliveries
                    p.poll(0.005)
                    continue
                sent += 1
            p.poll(0)
            time.sleep(0.001)
    elapsed = time.perf_counter() - start
    undelivered = p.flush(60)
    everything = _Deliveries()
    for r in results:
        everything.latencies += r.latencies
        everything.errors += r.errors
    everything.check(undelivered)
    lat = everything.latency_ms()
    by_round = [r.latency_ms()["p99_ms"] for r in results]
    # p99 first: the summary's headline for this step (the latency target).
    out = {"p99_ms": lat["p99_ms"], "p99_worst_round_ms": max(by_round),
           "p50_ms": lat["p50_ms"], "p999_ms": lat["p999_ms"],
           "achieved_rec_s": per_round * rounds / elapsed}
    if rounds > 1:
        out.update({f"p99_r{i + 1}_ms": v for i, v in enumerate(by_round)})
    return out


def end_to_end(bootstrap: str, rate: int, seconds: float) -> Metrics:
    """Produce at a fixed rate (acks=all, linger 0); latency = consumer receive - send time."""
    topic = new_topic(bootstrap, 1, "e2e")
    lat: list[float] = []
    n = int(rate * seconds)
    ready = threading.Event()

    def consume() -> None:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"e-{uuid.uuid4().hex[:8]}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 500})
        c.assign([TopicPartition(topic, 0, 0)])
        c.poll(0.5)  # connect and fetch once before the producer starts
        ready.set()
        deadline = time.monotonic() + seconds + 30
        while len(lat) < n and time.monotonic() < deadline:
            # poll() hands over each record as it arrives; consume(n) may hold records back
            # to fill its batch.
            msg = c.poll(0.05)
            if msg is not None and msg.error() is None:
                (sent,) = struct.unpack_from(">q", msg.value())
                lat.append((time.time_ns() - sent) / 1e6)
        c.close()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    ready.wait(30)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    pad = b"\0" * 92  # 100-byte records
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        p.produce(topic, struct.pack(">q", time.time_ns()) + pad, partition=0)
        p.poll(0)
    p.flush(30)
    t.join(seconds + 40)
    if len(lat) < n:
        raise RuntimeError(f"end-to-end: received {len(lat)}/{n}")
    return {"p50_ms": statistics.median(lat), "p99_ms": percentile(lat, 99)}
