"""`python -m bench --scale [--quick]`: curves as the work grows, nerve beside Kafka.

Each workload is a curve over one size, run on a fresh broker per point (nerve's default
setup, acks=all fsynced, and Kafka 4.4.0 via scripts/kafka-broker):

- partitions (1 / 100 / 1,000 / 5,000 across 1-100 topics; --quick stops at 1,000): produce
  `MB` of 1 KiB records round-robin over every partition (acks=all, linger 5 ms), then read
  them all back with one assigned consumer: MB/s, produce p99, peak RSS, broker CPU seconds
  per GB produced and per GB consumed (utime + stime from /proc/<pid>/stat).
- connections (10 / 1,000 / 5,000; --quick 10 / 1,000): that many idle TCP connections, each
  having sent one ApiVersions request, plus one producer paced at 2,000 records/s: RSS and
  the active producer's p99.
- groups (1 / 20 / 50 groups of 3 members; --quick 1 / 10): time until every member holds
  an assignment (rebalance), then every member commits synchronously for a few seconds:
  commits/s and the broker's CPU seconds per 1,000 commits.
- idle fetch (1,000 partitions, caught up): Kafka's Java console consumer polls an empty
  topic for a few seconds; the broker's CPU % meanwhile. Java clients use fetch sessions
  (KIP-227), so nerve runs it twice: with sessions, and with
  `max.incremental.fetch.session.cache.slots=0` (every fetch names all 1,000 partitions).

Figures on a shared machine are noisy: read the ratios, and rerun on a quiet one.
"""

from __future__ import annotations

import os
import resource
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench import workloads as w
from bench.brokers import ROOT, KafkaBroker, NerveBroker, RssSampler, rss_mb

Metrics = dict[str, float]
KAFKA_RUN = ROOT / "scripts" / "kafka-run"


@dataclass(frozen=True)
class ScaleSizes:
    partitions: tuple[int, ...]
    produce_mb: int  # per partitions point
    connections: tuple[int, ...]
    groups: tuple[int, ...]
    commit_seconds: float
    idle_fetch_seconds: float

    @staticmethod
    def quick() -> ScaleSizes:
        return ScaleSizes((1, 100, 1000), 5, (10, 1000), (1, 10), 3.0, 6.0)

    @staticmethod
    def full() -> ScaleSizes:
        return ScaleSizes((1, 100, 1000, 5000), 300, (10, 1000, 5000), (1, 20, 50), 5.0, 10.0)


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_topics(bootstrap: str, partitions: int, prefix: str) -> list[tuple[str, int]]:
    """`partitions` spread over 1-100 topics (10 partitions each up to 1,000, then 50)."""
    per = 1 if partitions < 10 else 10 if partitions <= 1000 else 50
    topics = [f"{prefix}-{uuid.uuid4().hex[:6]}-{i}" for i in range(max(1, partitions // per))]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for i in range(0, len(topics), 20):  # Kafka caps one request's partitions
        futures = admin.create_topics([NewTopic(t, per, 1) for t in topics[i:i + 20]])
        for f in futures.values():
            f.result(120)
    # Wait until every partition has a leader (Kafka loads them after acknowledging).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=30).topics
        if all(t in md and len(md[t].partitions) == per and all(
                p.leader >= 0 for p in md[t].partitions.values()) for t in topics):
            break
        time.sleep(0.2)
    return [(t, p) for t in topics for p in range(per)]


def partitions_point(broker: Any, partitions: int, mb: int) -> Metrics:
    bs = broker.bootstrap
    t0 = time.monotonic()
    tps = create_topics(bs, partitions, "sp")
    create_s = time.monotonic() - t0
    records = mb * 1024
    value = os.urandom(1024)
    lat: list[float] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            lat.append(msg.latency())

    p = Producer({"bootstrap.servers": bs, **w.PRODUCER_CONF,
                  "queue.buffering.max.messages": 200_000})
    with RssSampler(broker.pid) as rss:
        c0 = cpu_s(broker.pid)
        t = time.perf_counter()
        for i in range(records):
            topic, part = tps[i % len(tps)]
            while True:
                try:
                    p.produce(topic, value, partition=part, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.005)
            if i % 1000 == 0:
                p.poll(0)
        left = p.flush(300)
        produce_s = time.perf_counter() - t
        c1 = cpu_s(broker.pid)
        if left or len(lat) < records:
            raise RuntimeError(f"partitions {partitions}: {records - len(lat)} undelivered")
        c = Consumer({"bootstrap.servers": bs, "group.id": f"sc-{uuid.uuid4().hex[:6]}",
                      "enable.auto.commit": False, **w.CONSUMER_CONF})
        c.assign([TopicPartition(topic, part, 0) for topic, part in tps])
        got = 0
        t = time.perf_counter()
        deadline = time.monotonic() + 300
        while got < records and time.monotonic() < deadline:
            got += sum(1 for m in c.consume(10_000, 1.0) if m.error() is None)
        consume_s = time.perf_counter() - t
        c.close()
        c2 = cpu_s(broker.pid)
    if got < records:
        raise RuntimeError(f"partitions {partitions}: consumed {got}/{records}")
    gb = records * 1024 / 1e9
    return {"produce_mb_s": records * 1024 / produce_s / 1e6,
            "produce_p99_ms": w.percentile(lat, 99) * 1e3,
            "consume_mb_s": records * 1024 / consume_s / 1e6,
            "peak_rss_mb": rss.peak, "create_s": create_s,
            "cpu_s_per_gb_produced": (c1 - c0) / gb, "cpu_s_per_gb_consumed": (c2 - c1) / gb}


API_VERSIONS_V0 = struct.pack(">ihhih", 10, 18, 0, 1, 0)  # size, key, version, corr, ""


def connections_point(broker: Any, connections: int) -> Metrics:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, connections + 1000), hard))
    host, port = broker.bootstrap.rsplit(":", 1)
    socks = []
    try:
        for _ in range(connections):
            s = socket.create_connection((host, int(port)), timeout=30)
            s.sendall(API_VERSIONS_V0)
            socks.append(s)
        for s in socks:  # each has been answered: the broker holds a live connection
            (size,) = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))
            s.recv(size, socket.MSG_WAITALL)
        time.sleep(1.0)
        idle_rss = rss_mb(broker.pid)
        topic = w.new_topic(broker.bootstrap, 1, "conn")
        m = w.rdk_produce_at_rate(broker.bootstrap, topic, 2000, 3.0, 1024)
        return {"rss_mb": idle_rss, "active_p99_ms": m["p99_ms"], "active_p50_ms": m["p50_ms"]}
    finally:
        for s in socks:
            s.close()


def groups_point(broker: Any, groups: int, commit_seconds: float) -> Metrics:
    bs = broker.bootstrap
    topic = w.new_topic(bs, 6, "grp")
    w.rdk_produce(bs, topic, 6, 6000, 100)
    members: list[tuple[Consumer, list[Any]]] = []
    t0 = time.perf_counter()
    for g in range(groups):
        gid = f"sg-{uuid.uuid4().hex[:6]}-{g}"
        for _ in range(3):
            assigned: list[Any] = []
            c = Consumer({"bootstrap.servers": bs, "group.id": gid, "enable.auto.commit": False,
                          "auto.offset.reset": "earliest", "session.timeout.ms": 45000})
            c.subscribe([topic], on_assign=lambda _c, parts, a=assigned: a.append(parts))
            members.append((c, assigned))
    # Until every group's rebalance settled: each of its 6 partitions assigned to a member.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for c, _ in members:
            c.poll(0)
        if all(a and len(a[-1]) >= 1 for _, a in members[:]) and sum(
                len(a[-1]) for _, a in members) == 6 * groups:
            break
        time.sleep(0.01)
    rebalance_s = time.perf_counter() - t0
    c0 = cpu_s(broker.pid)
    commits = 0
    stop = time.monotonic() + commit_seconds
    i = 0
    while time.monotonic() < stop:
        c, a = members[i % len(members)]
        i += 1
        if not a or not a[-1]:
            continue
        c.commit(offsets=[TopicPartition(tp.topic, tp.partition, commits % 1000)
                          for tp in a[-1]], asynchronous=False)
        commits += 1
    cpu = cpu_s(broker.pid) - c0
    for c, _ in members:
        c.close()
    return {"rebalance_s": rebalance_s, "commits_s": commits / commit_seconds,
            "cpu_s_per_1k_commits": cpu / max(commits, 1) * 1000}


def idle_fetch_point(broker: Any, seconds: float) -> Metrics:
    tps = create_topics(broker.bootstrap, 1000, "idle")
    topics = sorted({t for t, _ in tps})
    # The JVM's start and the group join take seconds (more on a loaded machine): CPU is
    # sampled only over `seconds` once the consumer is polling.
    settle = 15.0
    proc = subprocess.Popen(
        [str(KAFKA_RUN), "console-consumer", "--bootstrap-server", broker.bootstrap,
         "--include", "|".join(topics), "--timeout-ms", str(int((settle + seconds) * 1000))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle)
        c0 = cpu_s(broker.pid)
        time.sleep(seconds)
        cpu = cpu_s(broker.pid) - c0
    finally:
        proc.wait(settle + seconds + 120)
    return {"broker_cpu_pct": cpu / seconds * 100}


def run(label: str, sizes: ScaleSizes, nerve_src: Path,
        progress: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def point(name: str, key: str, fn: Callable[[Any], Metrics],
              sets: dict[str, str] | None = None) -> None:
        broker: Any = (KafkaBroker(label) if label == "kafka" else NerveBroker(
            label, {"acks.all.fsync": "true", "group.initial.rebalance.delay.ms": "0",
                    **(sets or {})}, src=nerve_src))
        broker.label = f"{label}-{name}-{key}".replace(" ", "_")  # its log: last-<label>.log
        try:
            broker.start()
            m = fn(broker)
        except Exception as e:  # one point failing (a limit) must not lose the others
            m = {"error": 1.0}
            progress(f"{label}: {name} {key}: failed: {type(e).__name__}: {e}")
        finally:
            broker.stop()
        out.setdefault(name, {})[key] = m
        progress(f"{label}: {name} {key}: " + ", ".join(f"{k}={v:,.1f}" for k, v in m.items()))

    for n in sizes.partitions:
        point("partitions", str(n), lambda b, n=n: partitions_point(b, n, sizes.produce_mb))
    for n in sizes.connections:
        point("connections", str(n), lambda b, n=n: connections_point(b, n))
    for n in sizes.groups:
        point("groups", str(n), lambda b, n=n: groups_point(b, n, sizes.commit_seconds))
    point("idle_fetch_1000p", "sessions", lambda b: idle_fetch_point(b, sizes.idle_fetch_seconds))
    if label != "kafka":
        point("idle_fetch_1000p", "no sessions",
              lambda b: idle_fetch_point(b, sizes.idle_fetch_seconds),
              {"max.incremental.fetch.session.cache.slots": "0"})
    return out


def tables(results: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown tables: one per curve, a row per (point, metric), nerve / Kafka ratio."""
    lines: list[str] = []
    labels = list(results)
    curves: list[str] = []
    for r in results.values():
        curves += [c for c in r if c not in curves]
    for curve in curves:
        lines += ["", f"**{curve}**", "", "| point | metric | " + " | ".join(labels) +
                  (" | nerve/kafka |" if "kafka" in labels and len(labels) > 1 else " |"),
                  "|---|---|" + "---|" * len(labels) +
                  ("---|" if "kafka" in labels and len(labels) > 1 else "")]
        points: list[str] = []
        for r in results.values():
            points += [p for p in r.get(curve, {}) if p not in points]
        for pt in points:
            metrics: list[str] = []
            for r in results.values():
                metrics += [m for m in r.get(curve, {}).get(pt, {}) if m not in metrics]
            for m in metrics:
                vals = [results[lb].get(curve, {}).get(pt, {}).get(m) for lb in labels]
                row = f"| {pt} | {m} | " + " | ".join(
                    "" if v is None else f"{v:,.2f}" for v in vals)
                if "kafka" in labels and len(labels) > 1:
                    k = results["kafka"].get(curve, {}).get(pt, {}).get(m)
                    n = next((v for lb, v in zip(labels, vals, strict=True)
                              if lb != "kafka" and v is not None), None)
                    row += f" | {n / k:.2f}x |" if k and n is not None else " | |"
                else:
                    row += " |"
                lines.append(row)
    return lines


def chart(results: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per (curve, metric) over its points, a line per broker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("partitions", "produce_mb_s"), ("partitions", "consume_mb_s"),
              ("partitions", "produce_p99_ms"), ("partitions", "peak_rss_mb"),
              ("partitions", "cpu_s_per_gb_produced"), ("connections", "rss_mb"),
              ("connections", "active_p99_ms"), ("groups", "rebalance_s"),
              ("groups", "commits_s")]
    fig, axes = plt.subplots(3, 3, figsize=(13, 10))
    for ax, (curve, metric) in zip(axes.flat, panels, strict=True):
        for label, r in results.items():
            pts = [(p, m.get(metric)) for p, m in r.get(curve, {}).items()
                   if m.get(metric) is not None]
            if pts:
                ax.plot([p for p, _ in pts], [v for _, v in pts], marker="o", label=label)
        ax.set_title(f"{curve}: {metric}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
