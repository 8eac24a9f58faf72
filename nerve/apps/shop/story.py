"""The shop story for the runner: which processes, how to report progress, what to check."""

from __future__ import annotations

from pathlib import Path

from nerve.apps.common import read_json
from nerve.apps.runner import ServiceSpec, Story
from nerve.apps.shop import SERVICES, TOPICS
from nerve.apps.shop.invariants import check


def progress(root: Path) -> str:
    sim = read_json(root / "simulator" / "stats.json") or {}
    produced = sim.get("produced", {})
    inv = read_json(root / "inventory" / "stats.json") or {}
    mkt = read_json(root / "marketing" / "stats.json") or {}
    sup = read_json(root / "support" / "stats.json") or {}
    return (f"views {produced.get('product-viewed', 0)}, orders {produced.get('product-sold', 0)}"
            f", bugs {produced.get('bug-reported', 0)} | inventory: {inv.get('units_sold', 0)} "
            f"units sold, {inv.get('stock_low', 0)} stock-low | marketing: "
            f"{mkt.get('promos', 0)} promos | support: {sup.get('tickets', 0)} tickets")


def story() -> Story:
    return Story(
        name="shop",
        topics=TOPICS,
        services=[ServiceSpec(s, f"nerve.apps.shop.{s}") for s in SERVICES],
        simulator=ServiceSpec("simulator", "nerve.apps.shop.simulator"),
        check=check,
        progress=progress,
    )
