"""100 B records, produce and consume, on nerve revisions and Kafka in alternation (issue 14).

    python -m bench.small_records [--rounds 3] [--records 300000]
        [--nerve before=f966ce4,after=HEAD] [--no-kafka] [--set acks.all.fsync=false]

Every broker runs at once (started once, warmed up once); each round then runs, broker after
broker (the order rotates every round), librdkafka produce of `--records` x 100 B to a new
topic of 1 and of 8 partitions (the `python -m bench` producer settings) and a consumer reading
each topic back. Besides records/s it reports the broker's CPU time per record, read from
/proc/PID/stat (user + system, every thread) around each step: on a shared, loaded machine
records/s moves with the neighbours, the CPU the broker spent per record much less.
Prints one line per step and a summary (medians over the rounds, ratio against Kafka).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import workloads as w
from bench.brokers import ROOT, KafkaBroker, NerveBroker
from bench.cli import export_rev

TICK = os.sysconf("SC_CLK_TCK")
SIZE = 100


def cpu_s(pid: int) -> float:
    """utime + stime of the whole process (all threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def measured(pid: int, fn: Any) -> dict[str, float]:
    """fn's figures, plus the broker's and this client process's CPU per record, and the
    client's CPU as a share of the step's wall time (near 1.0 or above: the client, one
    Python thread producing plus librdkafka's threads, is what limits the rate)."""
    c0, me0, t0 = cpu_s(pid), cpu_s(os.getpid()), time.perf_counter()
    m = fn()
    wall = time.perf_counter() - t0
    mine = cpu_s(os.getpid()) - me0
    m["cpu_us_rec"] = (cpu_s(pid) - c0) / m["records"] * 1e6
    m["client_cpu_us_rec"] = mine / m["records"] * 1e6
    m["client_busy"] = mine / wall
    return m


def produce(bs: str, topic: str, parts: int, n: int) -> dict[str, float]:
    m = w.rdk_produce(bs, topic, parts, n, SIZE)
    return {"rec_s": m["rec_s"], "records": n}


def consume(bs: str, topic: str, parts: int, n: int) -> dict[str, float]:
    m = w.rdk_consume(bs, topic, parts, n, SIZE)
    return {"rec_s": m["rec_s"], "records": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--nerve", default="nerve=WORKTREE",
                    help="label=REV,... (REV a git revision, or WORKTREE for the checkout)")
    ap.add_argument("--no-kafka", action="store_true")
    ap.add_argument("--set", action="append", default=[], help="nerve config k=v")
    a = ap.parse_args()
    sets = dict(s.split("=", 1) for s in a.set)
    sets.setdefault("group.initial.rebalance.delay.ms", "0")
    brokers: dict[str, NerveBroker | KafkaBroker] = {}
    for spec in a.nerve.split(","):
        label, _, rev = spec.partition("=")
        src: Path = ROOT
        if rev and rev != "WORKTREE":
            src, commit = export_rev(rev)
            label = f"{label}@{commit}"
        brokers[label] = NerveBroker(label, sets, src=src)
    if not a.no_kafka:
        brokers["kafka"] = KafkaBroker("kafka")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for label, b in brokers.items():
            b.start()
            warm = w.new_topic(b.bootstrap, 1, "warmup")
            w.rdk_produce(b.bootstrap, warm, 1, 100_000, SIZE)
            w.rdk_consume(b.bootstrap, warm, 1, 100_000, SIZE)
            print(f"{label}: up at {b.bootstrap}, warmed up", flush=True)
        labels = list(brokers)
        for r in range(a.rounds):
            order = labels[r % len(labels):] + labels[: r % len(labels)]
            for label in order:
                b = brokers[label]
                for parts in (1, 8):
                    topic = w.new_topic(b.bootstrap, parts)
                    for step, fn in (("produce", produce), ("consume", consume)):
                        name = f"{step} 100B x{parts}p"
                        m = measured(b.pid, lambda fn=fn, t=topic, p=parts, bs=b.bootstrap: (
                            fn(bs, t, p, a.records)))
                        results.setdefault((label, name), []).append(m)
                        print(f"round {r + 1} {label:18} {name:18} {m['rec_s']:>11,.0f} rec/s "
                              f"{m['cpu_us_rec']:6.2f} us CPU/record, client "
                              f"{m['client_cpu_us_rec']:5.2f} us ({m['client_busy']:.2f} busy) "
                              f"(load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        for b in brokers.values():
            b.stop()
    print(f"\nmedians of {a.rounds} rounds, {a.records:,} x 100 B per step; "
          f"nerve settings {sets}")
    names = sorted({n for _, n in results}, key=lambda n: (n.split()[2], n))
    for name in names:
        kafka = results.get(("kafka", name))
        k_rate = statistics.median(m["rec_s"] for m in kafka) if kafka else None
        for label in brokers:
            ms = results[(label, name)]
            rate = statistics.median(m["rec_s"] for m in ms)
            cpu = statistics.median(m["cpu_us_rec"] for m in ms)
            ratio = f" {rate / k_rate:5.2f}x Kafka" if k_rate and label != "kafka" else ""
            spread = f"{min(m['rec_s'] for m in ms):,.0f}-{max(m['rec_s'] for m in ms):,.0f}"
            client = statistics.median(m["client_busy"] for m in ms)
            print(f"{name:18} {label:18} {rate:>11,.0f} rec/s ({spread}){ratio}  "
                  f"CPU {cpu:5.2f} us/record; client {client:.2f} cores busy")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    print(f"worktree at {commit}; load average {os.getloadavg()}; "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
