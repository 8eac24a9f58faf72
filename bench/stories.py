"""`python -m bench --stories`: the two reference systems (nerve/apps) at rising rates.

For each broker (nerve, Apache Kafka) and each rate, a fresh broker, the story's services and
its simulator as separate processes (the same `StoryRun` that `nerve demo` uses), run for
--story-seconds; then the invariant check and every action's event-to-effect latency
(p50/p99/max, from the services' stats). Also the CPU share of the broker and of every
process over the run, to say what saturates first. The headline per broker and story: the
highest rate at which every invariant holds and every action's p99 stays under 500 ms.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.brokers import Broker
from bench.cli import ensure_matplotlib, machine, make_broker, progress
from nerve.apps.rides.story import story as rides_story
from nerve.apps.runner import Story, StoryRun
from nerve.apps.shop.story import story as shop_story

P99_LIMIT_MS = 500.0
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Plan:
    seconds: float
    rides_rates: list[float]
    shop_rates: list[float]
    instances: int  # of each SQLite service (matching runs max(2, instances))

    @classmethod
    def full(cls) -> Plan:
        return cls(20, [10, 50, 100, 200, 400], [250, 500, 1000, 2000, 3000], 1)

    @classmethod
    def quick(cls) -> Plan:
        return cls(10, [10, 100], [250, 1000], 1)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children: the JVM's threads are its own)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def events_in(story: str, figures: dict[str, Any]) -> int:
    if story == "rides":
        return int(figures["ride requests"] + figures["driver locations"]
                   + figures["matched"] + figures["completed"] + figures["charged"])
    return int(figures["views"] + figures["orders"] + figures["bug reports"])


def run_one(label: str, story: Story, rate: float, plan: Plan) -> dict[str, Any]:
    broker: Broker = make_broker(label, Path(__file__).resolve().parent.parent)
    root = Path(tempfile.mkdtemp(prefix=f"bench-{story.name}-"))
    out: dict[str, Any] = {"rate": rate}
    try:
        broker.start()
        run = StoryRun(story, broker.bootstrap, root)
        try:
            run.start(("--duration", str(plan.seconds), "--rate", str(rate), "--seed", "7"))
            pids = {"broker": broker.pid, **{n: p.popen.pid for n, p in run.procs.items()}}
            cpu0 = {n: cpu_seconds(pid) for n, pid in pids.items()}
            last = dict(cpu0)  # the last reading of each: the simulator exits before the end
            busy0, total0 = machine_busy()
            t0 = time.monotonic()
            deadline = t0 + plan.seconds + 120
            while not run.simulator_done():
                if time.monotonic() > deadline:
                    raise TimeoutError("the simulator did not finish")
                for n, pid in pids.items():
                    last[n] = max(last[n], cpu_seconds(pid))
                time.sleep(0.5)
            wall = time.monotonic() - t0
            cpu = {n: round((last[n] - cpu0[n]) / wall, 3) for n in pids}
            busy1, total1 = machine_busy()
            report = run.check(timeout=90)
            crashed = run.crashed()
        finally:
            run.stop()
        out.update({
            "ok": report.ok and not crashed,
            "violations": report.violations[:5], "behind": report.behind, "crashed": crashed,
            "figures": {k: v for k, v in report.figures.items() if isinstance(v, int | float)},
            "events": events_in(story.name, report.figures),
            "events_per_s": round(events_in(story.name, report.figures) / plan.seconds),
            "latency_ms": report.latency,
            "worst_p99_ms": max((f["p99"] for f in report.latency.values()), default=0.0),
            "cpu_cores": cpu,  # CPU seconds per second of the run, per process
            "machine_busy": round((busy1 - busy0) / max(1, total1 - total0), 3),
            "loadavg": os.getloadavg()[0],
        })
    except Exception as e:  # one failed run is a figure too; the others go on
        out.update({"ok": False, "error": f"{type(e).__name__}: {e}"})
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    return out


def headline(runs: list[dict[str, Any]], limit: float = P99_LIMIT_MS) -> float:
    """The highest rate whose run held every invariant with every p99 under `limit`."""
    good = [r["rate"] for r in runs if r.get("ok") and r.get("worst_p99_ms", 1e9) < limit]
    return max(good, default=0.0)


def describe(label: str, name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{label} {name} @ {r['rate']:g}/s: FAILED {r['error']}"
    lat = "; ".join(f"{a} {f['p50']:.0f}/{f['p99']:.0f}" for a, f in r["latency_ms"].items())
    top = sorted(r["cpu_cores"].items(), key=lambda kv: -kv[1])[:3]
    verdict = ("invariants hold" if r["ok"] else
               f"NOT OK {r['violations'][:2] + r['behind'][:2] + r['crashed'][:1]}")
    return (f"{label} {name} @ {r['rate']:g}/s ({r['events_per_s']:,} events/s): {verdict}"
            f" | p50/p99 ms: {lat} | CPU cores: "
            + ", ".join(f"{n} {c:.2f}" for n, c in top)
            + f" | machine busy {r['machine_busy']:.0%}, load {r['loadavg']:.1f}")


def chart(results: dict[str, dict[str, list[dict[str, Any]]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, name, xlabel in ((axes[0], "rides", "ride requests/s"),
                             (axes[1], "shop", "simulated events/s (views + bug reports)")):
        for label, stories in results.items():
            runs = [r for r in stories.get(name, []) if "latency_ms" in r]
            if not runs:
                continue
            xs = [r["rate"] for r in runs]
            ax.plot(xs, [max(r["worst_p99_ms"], 1) for r in runs], marker="o",
                    label=f"{label}: worst p99")
            ax.plot(xs, [max(max((f["p50"] for f in r["latency_ms"].values()), default=1), 1)
                         for r in runs], linestyle="--", marker=".", label=f"{label}: worst p50")
            for r in runs:
                if not r["ok"]:
                    ax.annotate("x", (r["rate"], max(r["worst_p99_ms"], 1)), color="red",
                                ha="center", va="bottom")
        ax.axhline(P99_LIMIT_MS, color="black", linewidth=1, linestyle=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("event-to-effect latency, ms (log)")
        ax.set_title(f"{name}: worst action's latency per rate (x: invariant broken)",
                     fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(labels: list[str], quick: bool, out_dir: Path, seconds: float | None,
         rides_rates: list[float] | None, shop_rates: list[float] | None,
         instances: int | None, stories: list[str]) -> int:
    plan = Plan.quick() if quick else Plan.full()
    if seconds:
        plan.seconds = seconds
    if rides_rates:
        plan.rides_rates = rides_rates
    if shop_rates:
        plan.shop_rates = shop_rates
    if instances:
        plan.instances = instances
    makers: dict[str, Callable[[], Story]] = {
        "rides": lambda: rides_story(max(2, plan.instances), plan.instances),
        "shop": lambda: shop_story(plan.instances),
    }
    rates = {"rides": plan.rides_rates, "shop": plan.shop_rates}
    progress(f"stories at rising rates: {', '.join(labels)}; {plan}")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for label in labels:
        results[label] = {}
        for name in stories:
            runs = results[label].setdefault(name, [])
            for rate in rates[name]:
                r = run_one(label, makers[name](), rate, plan)
                runs.append(r)
                progress(describe(label, name, r))
    heads = {label: {name: headline(results[label][name]) for name in stories}
             for label in labels}
    print("\n== highest rate with every invariant holding and every p99 < 500 ms ==")
    for label, h in heads.items():
        print(f"{label}: " + ", ".join(f"{n} {v:g}/s" for n, v in h.items()))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}-stories.json"
    path.write_text(json.dumps({"date": stamp, "plan": plan.__dict__, "machine": machine(),
                                "p99_limit_ms": P99_LIMIT_MS, "headline": heads,
                                "results": results}, indent=1) + "\n")
    print(f"\nwrote {path}")
    if ensure_matplotlib():
        png = out_dir / f"{stamp}-stories.png"
        info = machine()
        chart(results, png, f"nerve stories vs Apache Kafka {info['kafka']} ({stamp}, "
                            f"{info['cores']} cores, {plan.seconds:g} s per rate)")
        print(f"wrote {png}")
    return 0

