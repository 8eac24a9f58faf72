"""Transactional produce beside Apache Kafka: `python -m bench.txn [--rounds N] [--records N]`.

One librdkafka transactional producer (acks=all, linger.ms 5, batch.num.messages 100) sends
transactions of 1, 10 and 100 batches (100 records of 100 B per batch, over 4 partitions), each
ended by commit_transaction(). Reported per transaction size: records/s over the whole step,
and the commit latency (commit_transaction() after flush(): EndTxn with its markers) p50/p99.
nerve (default settings: acks=all after fsync), nerve with acks.all.fsync=false (Kafka's
durability) and Kafka run side by side and the steps alternate between them round by round,
so a noisy neighbour hits all; every round's figure is printed and the median kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from typing import Any

from confluent_kafka import Producer

from bench import workloads as w
from bench.brokers import ROOT, KafkaBroker, NerveBroker

RESULTS = ROOT / "bench" / "results"
RECORDS_PER_BATCH = 100
PARTITIONS = 4
SIZES = (1, 10, 100)  # batches per transaction


def txn_produce(bootstrap: str, topic: str, batches: int, records: int) -> dict[str, float]:
    p = Producer({"bootstrap.servers": bootstrap, **w.PRODUCER_CONF,
                  "batch.num.messages": RECORDS_PER_BATCH,
                  "transactional.id": f"bench-{uuid.uuid4().hex[:8]}"})
    p.init_transactions(30)
    value = b"x" * 100
    per_txn = batches * RECORDS_PER_BATCH
    commits: list[float] = []
    sent = 0
    t0 = time.perf_counter()
    while sent < records:
        p.begin_transaction()
        for i in range(per_txn):
            # Whole batches to one partition at a time: a transaction of N batches is N batches.
            p.produce(topic, value, partition=(i // RECORDS_PER_BATCH) % PARTITIONS)
            if i % 1000 == 0:
                p.poll(0)
        p.flush(60)
        c0 = time.perf_counter()
        p.commit_transaction(60)
        commits.append(time.perf_counter() - c0)
        sent += per_txn
    elapsed = time.perf_counter() - t0
    return {"rec_s": sent / elapsed, "commit_p50_ms": w.percentile(commits, 50) * 1e3,
            "commit_p99_ms": w.percentile(commits, 99) * 1e3, "txns": len(commits)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.txn", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=100_000, help="records per step")
    a = ap.parse_args(argv)
    # nerve as by default (acks=all answered after fsync) and with Kafka's durability
    # (acks=all answered from the page cache), the bench's nerve-fsync and nerve-nofsync.
    brokers = {"nerve": NerveBroker("nerve-txn", {}),
               "nerve-nofsync": NerveBroker("nerve-txn-nofsync", {"acks.all.fsync": "false"}),
               "kafka": KafkaBroker()}
    runs: dict[str, dict[int, list[dict[str, float]]]] = {
        b: {s: [] for s in SIZES} for b in brokers}
    try:
        for b in brokers.values():
            b.start()
        for label, b in brokers.items():  # warm-up (JIT, first transaction)
            txn_produce(b.bootstrap, w.new_topic(b.bootstrap, PARTITIONS, "txnwarm"), 10,
                        20_000)
            print(f"{label}: up at {b.bootstrap}, warmed up", flush=True)
        for r in range(a.rounds):
            for size in SIZES:
                # Alternate which broker goes first, so neither always gets the quieter slot.
                order = list(brokers.items()) if r % 2 == 0 else list(brokers.items())[::-1]
                for label, b in order:
                    topic = w.new_topic(b.bootstrap, PARTITIONS, "txn")
                    m = txn_produce(b.bootstrap, topic, size, a.records)
                    runs[label][size].append(m)
                    print(f"round {r + 1} {label:<13} {size:>3} batches/txn: "
                          f"{m['rec_s']:>9,.0f} rec/s  commit p50 {m['commit_p50_ms']:6.1f} ms"
                          f"  p99 {m['commit_p99_ms']:6.1f} ms  ({m['txns']:.0f} txns)",
                          flush=True)
    finally:
        for b in brokers.values():
            b.stop()

    summary: dict[str, Any] = {}
    print("\n== medians over rounds (spread: min-max rec/s) ==")
    for size in SIZES:
        row = {}
        for label in brokers:
            ms = runs[label][size]
            row[label] = {k: statistics.median(m[k] for m in ms)
                          for k in ("rec_s", "commit_p50_ms", "commit_p99_ms")}
            row[label]["rec_s_min"] = min(m["rec_s"] for m in ms)
            row[label]["rec_s_max"] = max(m["rec_s"] for m in ms)
        summary[str(size)] = row
        k = row["kafka"]
        for label, n in row.items():
            print(f"{size:>3} batches/txn {label:<13} {n['rec_s']:>8,.0f} rec/s "
                  f"({n['rec_s_min']:,.0f}-{n['rec_s_max']:,.0f}), commit p50/p99 "
                  f"{n['commit_p50_ms']:.1f}/{n['commit_p99_ms']:.1f} ms, "
                  f"{n['rec_s'] / k['rec_s']:.2f}x Kafka's rec/s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"txn-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"records_per_step": a.records, "rounds": a.rounds,
                                "runs": {b: {str(s): v for s, v in d.items()}
                                         for b, d in runs.items()},
                                "medians": summary}, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
