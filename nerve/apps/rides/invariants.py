"""The rides story's invariants, checked from the topics and the services' SQLite files.

Used by `nerve demo rides` for its final summary and by tests/apps.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from nerve.apps.common import Report, query, read_json, read_topic, redelivered
from nerve.apps.rides import fare_cents


def check(bootstrap: str, state_root: Path) -> Report:
    viol: list[str] = []
    behind: list[str] = []
    sim = read_json(state_root / "simulator" / "stats.json") or {}
    if not sim.get("done"):
        behind.append("the simulator is still running")
    requests = {r.value["id"]: r.value for r in read_topic(bootstrap, "ride-requests")}
    matched_recs = read_topic(bootstrap, "ride-matched")
    completed = {r.value["ride"]: r.value for r in read_topic(bootstrap, "ride-completed")}
    locations = read_topic(bootstrap, "driver-locations")

    # --- matching: every request matched exactly once, no driver double-booked
    times_matched = Counter(r.value["ride"] for r in matched_recs)
    viol += [f"ride {r} matched {n} times" for r, n in times_matched.items() if n > 1]
    viol += [f"match for unknown ride {r}" for r in times_matched if r not in requests]
    unmatched = [r for r in requests if r not in times_matched]
    if unmatched:
        viol.append(f"{len(unmatched)} requests never matched, e.g. {unmatched[:3]}")
    by_driver: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in matched_recs:
        by_driver[r.value["driver"]].append(r.value)
    for driver, rides in by_driver.items():
        rides.sort(key=lambda m: m["ts"])
        for prev, nxt in itertools.pairwise(rides):
            done = completed.get(prev["ride"])
            if done is None or done["ts"] > nxt["ts"]:
                viol.append(f"driver {driver} double-booked: {nxt['ride']} matched at "
                            f"{nxt['ts']} before {prev['ride']} completed "
                            f"({done['ts'] if done else 'never'})")
    if sim.get("double_booked"):
        viol.append(f"the simulator's drivers were handed {sim['double_booked']} rides while busy")
    not_completed = [r for r in times_matched if r not in completed]
    if not_completed:
        viol.append(f"{len(not_completed)} matched rides never completed")

    # --- payments: every completed ride charged exactly once, at its fare
    pay_db = state_root / "payments" / "payments.sqlite"
    charges: dict[str, list[int]] = defaultdict(list)
    for ride, amount in query(pay_db, "SELECT ride_id, amount_cents FROM charges"):
        charges[ride].append(amount)
    uncharged = set(completed) - set(charges)
    if uncharged:
        behind.append(f"payments has not charged {len(uncharged)} completed rides")
    if query(pay_db, "SELECT 1 FROM outbox WHERE sent = 0 LIMIT 1"):
        behind.append("payments has unpublished charges")
    for ride, amounts in charges.items():
        if ride not in completed:
            viol.append(f"charge for ride {ride} that never completed")
        elif len(amounts) != 1:
            viol.append(f"ride {ride} charged {len(amounts)} times")
        elif amounts[0] != fare_cents(float(completed[ride]["distance_km"])):
            viol.append(f"ride {ride} charged {amounts[0]}, fare is "
                        f"{fare_cents(float(completed[ride]['distance_km']))}")

    # --- tracking: the stored position of each driver is its latest one
    trk_db = state_root / "tracking" / "tracking.sqlite"
    (applied,) = query(trk_db, "SELECT COUNT(*) FROM processed")[0] or (0,)
    total = len(locations) + len(requests) + len(matched_recs) + len(completed)
    if applied < total:
        behind.append(f"tracking applied {applied} of {total} events")
    else:
        latest: dict[str, dict[str, Any]] = {}
        for r in locations:
            ev = r.value
            if ev["driver"] not in latest or ev["ts"] >= latest[ev["driver"]]["ts"]:
                latest[ev["driver"]] = ev
        stored = {d: (x, y, ts) for d, x, y, ts in
                  query(trk_db, "SELECT driver, x, y, ts FROM drivers")}
        for d, ev in latest.items():
            if stored.get(d) != (ev["x"], ev["y"], ev["ts"]):
                viol.append(f"tracking has {stored.get(d)} for {d}, latest is "
                            f"{(ev['x'], ev['y'], ev['ts'])}")

    matchers, aborted = {}, 0
    for d in sorted(p for p in state_root.glob("matching-*") if p.is_dir()):
        st = read_json(d / "stats.json") or {}
        matchers[d.name] = st.get("matches", 0)
        aborted += st.get("aborted", 0)
    figures = {
        "ride requests": len(requests), "matched": len(times_matched),
        "completed": len(completed), "charged": sum(len(a) for a in charges.values()),
        "revenue": f"{sum(sum(a) for a in charges.values()) / 100:.2f}",
        "driver locations": len(locations),
        "zones, drivers": f"{sim.get('zones', 0)}, {sim.get('drivers', 0)}",
        "matches per matching instance (current processes)": matchers,
        "matching transactions aborted (fenced or failed)": aborted,
        "redelivered events skipped (current processes)": redelivered(
            state_root, ("tracking", "payments")),
    }
    return Report(figures, viol, behind)
