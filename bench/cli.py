"""`python -m bench [--quick] [--only SETUPS] [--out DIR] [--restart | --scale | --cleaner]`

--stories runs only the two reference systems at rising rates (bench/stories.py: every action's
p50/p99 and the invariants per rate, on nerve-fsync and Kafka by default; --quick: fewer, shorter
runs).

--scale runs only the scale curves (bench/scale.py): partitions 1-5,000, connections 10-5,000,
consumer groups 1-50, an idle consumer of 1,000 partitions with and without fetch sessions.
--restart runs only the restart-at-scale step (bench/restart.py: clean and unclean restart of
10,000 partitions holding ~3 GiB; --quick: 2,000 partitions, 0.5 GiB) for nerve and Kafka.

Runs the workloads against each broker in turn (same machine, same clients), prints each figure
with its nerve/Kafka ratio, writes bench/results/<timestamp>.json and a PNG chart next to it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import confluent_kafka

from bench import disk, scale
from bench import restart as rs
from bench import workloads as w
from bench.brokers import ROOT, Broker, KafkaBroker, NerveBroker, RssSampler, rss_mb

RESULTS = ROOT / "bench" / "results"
KAFKA = "kafka"
# The reference version scripts/kafka-broker runs (scripts/kafka-run's default).
KAFKA_VERSION = os.environ.get("KAFKA_VERSION") or "4.4.0"
NERVE_SETUPS = {
    # Default nerve: acks=all answered only after fsync (group commit).
    "nerve-fsync": {"acks.all.fsync": "true"},
    # Like Kafka's defaults: acks=all answered once written to the page cache.
    "nerve-nofsync": {"acks.all.fsync": "false"},
    # The default settings on uvloop instead of asyncio's own loop (`--only` to run it).
    "nerve-uvloop": {"acks.all.fsync": "true"},
}
NERVE_ARGS = {"nerve-uvloop": ["--event-loop", "uvloop"]}
ALL = [*NERVE_SETUPS, KAFKA]
DEFAULT = ["nerve-fsync", "nerve-nofsync", KAFKA]
T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:,.1f}" for k, v in metrics.items())


def make_broker(label: str, nerve_src: Path) -> Broker:
    if label == KAFKA:
        return KafkaBroker(label)
    # Same group timing as the reference broker (scripts/kafka-broker sets it to 0).
    return NerveBroker(label, {**NERVE_SETUPS[label], "group.initial.rebalance.delay.ms": "0"},
                       src=nerve_src, args=NERVE_ARGS.get(label, []))


def export_rev(rev: str) -> tuple[Path, str]:
    """`git archive` a revision's nerve/ into a temp dir: benchmark committed code only,
    whatever is being edited in the working tree."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev],
                            capture_output=True, text=True, check=True).stdout.strip()
    dest = Path(tempfile.mkdtemp(prefix=f"nerve-src-{commit}-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "nerve"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest, commit


PACED = "rdk-produce 1KiB x1p paced at half Kafka's peak"
PEAK = "rdk-produce 1KiB x1p"


def shapes(records_1k: int, records_100b: int) -> Iterator[tuple[int, int, int, str]]:
    """(record size, records, partitions, tag): 1 KiB and 100 B, on 1 and on 8 partitions."""
    for size, n in ((1024, records_1k), (100, records_100b)):
        for parts in (1, 8):
            yield size, n, parts, f"{'1KiB' if size == 1024 else '100B'} x{parts}p"


def run_broker(label: str, sizes: w.Sizes, nerve_src: Path,
               paced: dict[str, Any]) -> dict[str, Any]:
    """Every workload on one broker. `paced["rate"]` is the paced-latency step's rate: set
    from Kafka's own peak when Kafka runs (it runs first), else from this broker's."""
    broker = make_broker(label, nerve_src)
    out: dict[str, Any] = {"workloads": {}}
    progress(f"{label}: starting")
    try:
        broker.start()
        time.sleep(1.0)  # settle (JIT, first topic) before the idle sample
        out["startup"] = {"to_first_produce_s": broker.startup_s}
        out["memory"] = {"idle_rss_mb": rss_mb(broker.pid)}
        out["settings"] = broker.settings()
        progress(f"{label}: up at {broker.bootstrap} in {broker.startup_s:.2f}s "
                 f"(to first produce), idle RSS {out['memory']['idle_rss_mb']:.0f} MiB")
        bs = broker.bootstrap

        def step(name: str, fn: Callable[[], dict[str, float]]) -> None:
            t = time.monotonic()
            metrics = fn()
            out["workloads"][name] = metrics
            progress(f"{label}: {name}: {fmt(metrics)} ({time.monotonic() - t:.1f}s)")

        with RssSampler(broker.pid) as sampler:
            # Untimed warm-up, so the JVM's JIT (and nerve's caches) are not measured cold.
            warm = w.new_topic(bs, 1, "warmup")
            w.rdk_produce(bs, warm, 1, sizes.warmup_records, 1024)
            w.rdk_consume(bs, warm, 1, sizes.warmup_records, 1024)
            progress(f"{label}: warmed up ({sizes.warmup_records} x 1 KiB produced and read)")
            for size, n, parts, tag in shapes(sizes.java_records, 3 * sizes.java_records):
                topic = w.new_topic(bs, parts, "jpp")
                step(f"java-producer-perf {tag}", lambda t=topic, n=n, s=size: (
                    w.java_producer_perf(bs, t, n, s)))
                step(f"java-consumer-perf {tag}", lambda t=topic, n=n: (
                    w.java_consumer_perf(bs, t, n)))
            for size, n, parts, tag in shapes(sizes.rdk_records_1k, sizes.rdk_records_100b):
                topics = [w.new_topic(bs, parts) for _ in range(sizes.reps)]
                # Each produce run fills its own topic; each consume run reads one back.
                step(f"rdk-produce {tag}", lambda ts=topics, p=parts, n=n, s=size: (
                    w.median_run([w.rdk_produce(bs, t, p, n, s) for t in ts])))
                step(f"rdk-consume {tag}", lambda ts=topics, p=parts, n=n, s=size: (
                    w.median_run([w.rdk_consume(bs, t, p, n, s) for t in ts])))
            if not paced.get("fixed") and (label == KAFKA or "rate" not in paced):
                paced["rate"] = round(out["workloads"][PEAK]["rec_s"] / 2)
                paced["from"] = label
            rate = paced["rate"]
            progress(f"{label}: paced produce at {rate:,.0f} records/s "
                     f"(half of {paced['from']}'s {PEAK} peak)")
            topic = w.new_topic(bs, 1)
            step(PACED, lambda: w.rdk_produce_at_rate(bs, topic, rate, sizes.paced_seconds, 1024,
                                                     sizes.paced_rounds))
            step(f"end-to-end {sizes.e2e_rate}/s 100B",
                 lambda: w.end_to_end(bs, sizes.e2e_rate, sizes.e2e_seconds))
        out["memory"]["load_peak_rss_mb"] = sampler.peak
        progress(f"{label}: peak RSS under load {sampler.peak:.0f} MiB")
    finally:
        broker.stop()
    return out


def flat(res: dict[str, Any]) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for group in ("startup", "memory"):
        for k, v in res.get(group, {}).items():
            out[(group, k)] = v
    for wl, metrics in res.get("workloads", {}).items():
        for k, v in metrics.items():
            out[(wl, k)] = v
    return out


def higher_is_better(metric: str) -> bool:
    return metric.endswith(("rec_s", "mb_s"))


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (workload, metric): every broker's value and nerve/Kafka ratios."""
    flats = {label: flat(r) for label, r in results.items()}
    keys: list[tuple[str, str]] = []
    for f in flats.values():
        keys += [k for k in f if k not in keys]
    rows = []
    for wl, metric in keys:
        row: dict[str, Any] = {"workload": wl, "metric": metric,
                               "better": "higher" if higher_is_better(metric) else "lower"}
        kafka = flats.get(KAFKA, {}).get((wl, metric))
        for label, f in flats.items():
            v = f.get((wl, metric))
            row[label] = v
            if label != KAFKA and v is not None and kafka:
                row[f"{label}/kafka"] = v / kafka
        rows.append(row)
    return rows


def machine() -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "java": java.splitlines()[0] if java else "", "kafka": KAFKA_VERSION,
            "confluent_kafka": confluent_kafka.__version__,
            "librdkafka": confluent_kafka.libversion()[0], "nerve_commit": commit}


def ensure_matplotlib() -> bool:
    if importlib.util.find_spec("matplotlib") is None:
        progress("installing matplotlib (pip) for the chart")
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            progress(f"no chart: pip install matplotlib failed: {r.stderr[-300:]}")
            return False
    return True


def chart(rows: list[dict[str, Any]], labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [lb for lb in labels if lb != KAFKA]
    rows = [r for r in rows if any(r.get(f"{s}/kafka") for s in series)]
    fig, ax = plt.subplots(figsize=(12, max(4, 0.32 * len(rows) + 1.5)))
    height = 0.8 / max(1, len(series))
    for i, s in enumerate(series):
        vals = [r.get(f"{s}/kafka") or 0 for r in rows]
        ys = [j + i * height for j in range(len(rows))]
        ax.barh(ys, vals, height=height, label=f"{s} / kafka")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks([j + height * (len(series) - 1) / 2 for j in range(len(rows))])
    ax.set_yticklabels([f"{r['workload']}: {r['metric']} ({r['better']} better)" for r in rows],
                       fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("nerve / Apache Kafka (log scale; 1 = same)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(rows: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """One line per workload: its headline metric for every broker, with ratios."""
    lines = []
    seen: set[str] = set()
    for r in rows:
        wl = r["workload"]
        if wl in seen:
            continue
        seen.add(wl)
        vals = []
        for lb in labels:
            v = r.get(lb)
            if v is None:
                continue
            ratio = r.get(f"{lb}/kafka")
            vals.append(f"{lb} {v:,.2f}" + (f" ({ratio:.2f}x)" if ratio else ""))
        lines.append(f"{wl} [{r['metric']}, {r['better']} is better]: " + "; ".join(vals))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (under 2 minutes)")
    ap.add_argument("--only", default=",".join(DEFAULT),
                    help=f"comma-separated subset of {','.join(ALL)} (default: "
                         f"{','.join(DEFAULT)})")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    ap.add_argument("--nerve-rev", default=None,
                    help="benchmark nerve as committed at this git revision (default: the "
                         "working tree)")
    ap.add_argument("--paced-rate", type=int, default=None,
                    help="records/s of the paced-latency step (default: half of Kafka's peak, "
                         "or of the first broker's when Kafka does not run)")
    ap.add_argument("--scale", action="store_true",
                    help="only the scale curves (bench/scale.py: partitions, connections, "
                         "groups, idle fetch at 1,000 partitions), nerve's default setup and "
                         "Kafka")
    ap.add_argument("--restart", action="store_true",
                    help="only the restart-at-scale step (nerve's default setup and Kafka)")
    ap.add_argument("--stories", action="store_true",
                    help="only the stories at rising rates (default brokers: nerve-fsync,kafka)")
    ap.add_argument("--story-seconds", type=float, default=None,
                    help="--stories: seconds of simulation per rate (default 30, quick 10)")
    ap.add_argument("--rides-rates", default=None, help="--stories: e.g. 10,50,100,200,400")
    ap.add_argument("--shop-rates", default=None, help="--stories: e.g. 250,500,1000,2000")
    ap.add_argument("--story-only", default="rides,shop", help="--stories: rides,shop")
    ap.add_argument("--instances", type=int, default=None,
                    help="--stories: processes per service (matching: at least 2)")
    ap.add_argument("--cleaner", action="store_true",
                    help="only the log cleaner step (bench/cleaner.py: nerve and Kafka)")
    a = ap.parse_args(argv)
    if a.stories and a.only == ",".join(DEFAULT):
        a.only = f"nerve-fsync,{KAFKA}"
    labels = [x.strip() for x in a.only.split(",") if x.strip()]
    unknown = set(labels) - set(ALL)
    if unknown:
        ap.error(f"unknown broker setup(s): {sorted(unknown)}")
    if a.restart:
        return restart_main(a, labels)
    if a.stories:
        from bench import stories  # imports this module: not at the top

        def rates(arg: str | None) -> list[float] | None:
            return [float(x) for x in arg.split(",")] if arg else None

        return stories.main(labels, a.quick, a.out, a.story_seconds, rates(a.rides_rates),
                            rates(a.shop_rates), a.instances,
                            [s.strip() for s in a.story_only.split(",") if s.strip()])
    if a.cleaner:
        return cleaner_main(a, labels)
    if a.scale:
        return scale_main(a, labels)
    sizes = w.Sizes.quick() if a.quick else w.Sizes.full()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    progress(f"bench {'quick' if a.quick else 'full'}: {', '.join(labels)}; sizes {sizes}")

    nerve_src, nerve_rev = ROOT, "working tree"
    if a.nerve_rev:
        nerve_src, nerve_rev = export_rev(a.nerve_rev)
        progress(f"nerve from commit {nerve_rev} ({nerve_src})")
    # The disk's limit first (before any broker loads it): fsynced append bandwidth, latency.
    limit = disk.probe(Path(tempfile.gettempdir()))
    progress(f"disk ({tempfile.gettempdir()}): {fmt(limit)}")
    results: dict[str, Any] = {}
    paced: dict[str, Any] = {}
    if a.paced_rate:
        paced.update(rate=a.paced_rate, fixed=True, **{"from": "--paced-rate"})
    # Kafka first: its peak produce rate sets the rate of every broker's paced-latency step.
    order = sorted(labels, key=lambda lb: lb != KAFKA)
    try:
        for label in order:
            results[label] = run_broker(label, sizes, nerve_src, paced)
    finally:
        if nerve_src != ROOT:
            shutil.rmtree(nerve_src, ignore_errors=True)

    rows = ratios(results)
    print("\n== figures (ratio = nerve / Kafka) ==")
    for r in rows:
        parts = []
        for lb in labels:
            v = r.get(lb)
            if v is not None and not math.isnan(v):
                ratio = r.get(f"{lb}/kafka")
                parts.append(f"{lb}={v:,.2f}" + (f" ({ratio:.2f}x)" if ratio else ""))
        print(f"{r['workload']:<28} {r['metric']:<20} " + "  ".join(parts))
    print("\n== summary (headline metric per workload) ==")
    for line in summary(rows, labels):
        print(line)
    print("\n== durable produce as a fraction of the disk's fsynced append bandwidth "
          f"({limit['fsynced_mb_s']:,.0f} MB/s with 256 KiB writes) ==")
    for label in labels:
        for wl, m in results[label]["workloads"].items():
            if wl.startswith(("rdk-produce", "java-producer-perf")) and "mb_s" in m:
                print(f"{label:<14} {wl:<28} {m['mb_s']:8,.1f} MB/s = "
                      f"{m['mb_s'] / limit['fsynced_mb_s']:.0%}")

    a.out.mkdir(parents=True, exist_ok=True)
    doc = {"date": stamp, "mode": "quick" if a.quick else "full", "sizes": sizes.__dict__,
           "disk": limit,
           "machine": machine(), "producer_conf": w.PRODUCER_CONF,
           "consumer_conf": w.CONSUMER_CONF, "paced_produce": paced, "nerve_setups": NERVE_SETUPS,
           "nerve_source": nerve_rev, "results": results, "rows": rows}
    json_path = a.out / f"{stamp}.json"
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nwrote {json_path}")
    if ensure_matplotlib():
        png = a.out / f"{stamp}.png"
        info = doc["machine"]
        chart(rows, labels, png, f"nerve vs Apache Kafka {info['kafka']} ({doc['mode']}, "
              f"{stamp}, {info['cores']} cores)")
        print(f"wrote {png}")
    return 0


def cleaner_main(a: argparse.Namespace, labels: list[str]) -> int:
    from bench import cleaner

    runs = (["nerve"] if set(labels) - {KAFKA} else []) + ([KAFKA] if KAFKA in labels else [])
    progress(f"log cleaner: {', '.join(runs)}")
    results = cleaner.run_all(runs, a.quick, ROOT)
    for label, m in results.items():
        progress(f"{label}: {fmt(m)}")
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = a.out / f"{stamp}-cleaner.json"
    path.write_text(json.dumps({"date": stamp, "mode": "quick" if a.quick else "full",
                                "machine": machine(), "results": results}, indent=1) + "\n")
    print(f"\nwrote {path}")
    return 0


def restart_main(a: argparse.Namespace, labels: list[str]) -> int:
    layout = rs.quick_layout() if a.quick else rs.full_layout()
    nerve_src, nerve_rev = ROOT, "working tree"
    if a.nerve_rev:
        nerve_src, nerve_rev = export_rev(a.nerve_rev)
    runs = (["nerve"] if set(labels) - {KAFKA} else []) + ([KAFKA] if KAFKA in labels else [])
    progress(f"restart at scale: {layout.describe()}; {', '.join(runs)}")
    results: dict[str, Any] = {}
    try:
        for label in runs:
            progress(f"{label}: filling {layout.describe()}")
            results[label] = {"workloads": {"restart": rs.run(label, layout, nerve_src)}}
            progress(f"{label}: {fmt(results[label]['workloads']['restart'])}")
    finally:
        if nerve_src != ROOT:
            shutil.rmtree(nerve_src, ignore_errors=True)
    rows = ratios(results)
    for r in rows:
        print(f"{r['metric']:<20} " + "  ".join(
            f"{lb}={r[lb]:,.2f}" + (f" ({r[f'{lb}/kafka']:.2f}x)" if r.get(f"{lb}/kafka") else "")
            for lb in runs if r.get(lb) is not None))
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = a.out / f"{stamp}-restart.json"
    path.write_text(json.dumps({"date": stamp, "mode": "quick" if a.quick else "full",
                                "layout": layout.__dict__, "record_bytes": rs.RECORD,
                                "machine": machine(), "nerve_source": nerve_rev,
                                "results": results, "rows": rows}, indent=1) + "\n")
    print(f"\nwrote {path}")
    return 0


def scale_main(a: argparse.Namespace, labels: list[str]) -> int:
    sizes = scale.ScaleSizes.quick() if a.quick else scale.ScaleSizes.full()
    nerve_src, nerve_rev = ROOT, "working tree"
    if a.nerve_rev:
        nerve_src, nerve_rev = export_rev(a.nerve_rev)
    runs = (["nerve"] if set(labels) - {KAFKA} else []) + (
        [KAFKA] if KAFKA in labels else [])
    progress(f"scale: {sizes}; {', '.join(runs)}")
    results: dict[str, Any] = {}
    try:
        for label in runs:
            results[label] = scale.run(label, sizes, nerve_src, progress)
    finally:
        if nerve_src != ROOT:
            shutil.rmtree(nerve_src, ignore_errors=True)
    lines = scale.tables(results)
    print("\n".join(lines))
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = a.out / f"{stamp}-scale.json"
    path.write_text(json.dumps({"date": stamp, "mode": "quick" if a.quick else "full",
                                "sizes": sizes.__dict__, "machine": machine(),
                                "nerve_source": nerve_rev, "results": results,
                                "tables": lines}, indent=1) + "\n")
    print(f"\nwrote {path}")
    if ensure_matplotlib():
        png = a.out / f"{stamp}-scale.png"
        scale.chart(results, png)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
