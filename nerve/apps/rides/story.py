"""The rides story for the runner: which processes, how to report progress, what to check."""

from __future__ import annotations

from pathlib import Path

from nerve.apps.common import merge_latency, read_json, service_stats
from nerve.apps.rides import PARTITIONS, TOPICS
from nerve.apps.rides.invariants import check
from nerve.apps.rides.simulator import SEES_MATCH
from nerve.apps.runner import ServiceSpec, Story, instances

MATCHING_INSTANCES = 2
# The order the latency figures are printed in.
ACTIONS = ("request -> match", "match -> pickup notification", "completion -> charge",
           SEES_MATCH)


def latency(root: Path) -> dict[str, dict[str, float]]:
    stats = [st for d in sorted(root.glob("matching-*")) for st in service_stats(d)]
    for name in ("tracking", "payments", "simulator"):
        stats += service_stats(root / name)
    merged = merge_latency(stats)
    return {a: merged[a] for a in ACTIONS if a in merged}


def progress(root: Path) -> str:
    sim = read_json(root / "simulator" / "stats.json") or {}
    pay = sum(st.get("charges", 0) for st in service_stats(root / "payments")[:1])
    lat = latency(root)
    figures = ", ".join(f"{a} p99 {f['p99']:.0f} ms (last {f['recent_p99']:.0f})"
                        for a, f in lat.items() if a != SEES_MATCH)
    return (f"requested {sim.get('requested', 0)}, matched {sim.get('matched', 0)}, "
            f"completed {sim.get('completed', 0)}, charged {pay} | {figures}")


def matchers_ready(root: Path, n: int) -> bool:
    """Every matching instance owns partitions and together they own them all."""
    owned = [(read_json(root / f"matching-{i}" / "stats.json") or {}).get("partitions", [])
             for i in range(n)]
    busy = [o for o in owned if o]
    # More instances than partitions: the extra ones stand by.
    return (len(busy) == min(n, PARTITIONS)
            and sorted(p for o in owned for p in o) == list(range(PARTITIONS)))


def story(matching_instances: int = MATCHING_INSTANCES, instances_each: int = 1,
          matching_args: tuple[str, ...] = (), service_args: tuple[str, ...] = ()) -> Story:
    """`matching_instances` matching processes, `instances_each` of tracking and payments
    (`service_args` go to each of those)."""
    services = [ServiceSpec(f"matching-{i}", "nerve.apps.rides.matching", matching_args,
                            instance=str(i)) for i in range(matching_instances)]
    for s in ("tracking", "payments"):
        services += instances(s, f"nerve.apps.rides.{s}", instances_each, service_args)
    return Story(
        name="rides",
        topics=TOPICS,
        services=services,
        simulator=ServiceSpec("simulator", "nerve.apps.rides.simulator"),
        check=check,
        progress=progress,
        ready=lambda root: matchers_ready(root, matching_instances),
        latency=latency,
    )
