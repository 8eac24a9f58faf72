"""The shop story for the runner: which processes, how to report progress, what to check."""

from __future__ import annotations

from pathlib import Path

from nerve.apps.common import merge_latency, read_json, service_stats
from nerve.apps.runner import ServiceSpec, Story, instances
from nerve.apps.shop import SERVICES, TOPICS
from nerve.apps.shop.invariants import check

ACTIONS = ("view -> promo decision", "sale -> stock update", "bug report -> ticket")


def latency(root: Path) -> dict[str, dict[str, float]]:
    merged = merge_latency(st for s in SERVICES for st in service_stats(root / s))
    return {a: merged[a] for a in ACTIONS if a in merged}


def progress(root: Path) -> str:
    sim = read_json(root / "simulator" / "stats.json") or {}
    produced = sim.get("produced", {})

    def total(service: str, key: str) -> int:
        # Instances share the SQLite file, so any one of them reports the service's totals.
        return max((int(st.get(key, 0)) for st in service_stats(root / service)), default=0)

    figures = ", ".join(f"{a} p99 {f['p99']:.0f} ms" for a, f in latency(root).items())
    return (f"views {produced.get('product-viewed', 0)}, orders {produced.get('product-sold', 0)}"
            f", bugs {produced.get('bug-reported', 0)} | {total('inventory', 'units_sold')} "
            f"units sold, {total('inventory', 'stock_low')} stock-low, "
            f"{total('marketing', 'promos')} promos, {total('support', 'tickets')} tickets | "
            f"{figures}")


def story(instances_each: int = 1, service_args: tuple[str, ...] = ()) -> Story:
    """`instances_each` processes of every service; `service_args` go to each of them."""
    services = [spec for s in SERVICES
                for spec in instances(s, f"nerve.apps.shop.{s}", instances_each, service_args)]
    return Story(
        name="shop",
        topics=TOPICS,
        services=services,
        simulator=ServiceSpec("simulator", "nerve.apps.shop.simulator"),
        check=check,
        progress=progress,
        latency=latency,
    )
