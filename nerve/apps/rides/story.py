"""The rides story for the runner: which processes, how to report progress, what to check."""

from __future__ import annotations

from pathlib import Path

from nerve.apps.common import read_json
from nerve.apps.rides import PARTITIONS, TOPICS
from nerve.apps.rides.invariants import check
from nerve.apps.runner import ServiceSpec, Story

MATCHING_INSTANCES = 2


def progress(root: Path) -> str:
    sim = read_json(root / "simulator" / "stats.json") or {}
    pay = read_json(root / "payments" / "stats.json") or {}
    lat = sim.get("latency_ms", {})
    return (f"requested {sim.get('requested', 0)}, matched {sim.get('matched', 0)}, "
            f"completed {sim.get('completed', 0)}, charged {pay.get('charges', 0)} | "
            f"request->match p50 {lat.get('p50', 0):.0f} ms, p99 {lat.get('p99', 0):.0f} ms "
            f"(last 200: p50 {lat.get('recent_p50', 0):.0f}, p99 {lat.get('recent_p99', 0):.0f})")


def matchers_ready(root: Path, instances: int) -> bool:
    """Every matching instance owns partitions and together they own them all."""
    owned = [(read_json(root / f"matching-{i}" / "stats.json") or {}).get("partitions", [])
             for i in range(instances)]
    return all(owned) and sorted(p for o in owned for p in o) == list(range(PARTITIONS))


def story(matching_instances: int = MATCHING_INSTANCES) -> Story:
    services = [ServiceSpec(f"matching-{i}", "nerve.apps.rides.matching", instance=str(i))
                for i in range(matching_instances)]
    services += [ServiceSpec(s, f"nerve.apps.rides.{s}") for s in ("tracking", "payments")]
    return Story(
        name="rides",
        topics=TOPICS,
        services=services,
        simulator=ServiceSpec("simulator", "nerve.apps.rides.simulator"),
        check=check,
        progress=progress,
        ready=lambda root: matchers_ready(root, matching_instances),
    )
