"""The console's story pages (/stories/shop, /stories/rides) against the real stories.

Each test runs a story's simulator and services (separate processes, tests/apps' runner) against
`nerve serve --console-port N` and reads the story page's JSON and SSE endpoints: the page sees
events, stock, promos and tickets (shop) or drivers, matches and payments (rides), and once the
story is stopped its figures equal what the topics hold. The slow test takes the screenshots in
docs/screenshots/ with headless Chromium.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nerve.apps.common import read_topic
from nerve.apps.rides.story import ACTIONS as RIDES_ACTIONS
from nerve.apps.rides.story import story as rides_story
from nerve.apps.runner import StoryRun
from nerve.apps.shop import INITIAL_STOCK
from nerve.apps.shop.story import ACTIONS as SHOP_ACTIONS
from nerve.apps.shop.story import story as shop_story
from tests.apps.conftest import story_run  # noqa: F401  (the fixture)
from tests.apps.test_stories import RIDES_ARGS, SHOP_ARGS
from tests.helpers import NerveProcess, free_port
from tests.integration.test_console import _standalone, sse_events
from tests.integration.test_console_browser import MAX_PNG_BYTES, SHOTS, chromium, screenshot
from tests.integration.test_tools_cli import kafka_bootstrap  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(180)


class StoryConsole:
    def __init__(self, broker: NerveProcess | None, url: str) -> None:
        self.broker = broker  # None: a standalone console (Apache Kafka)
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=20)

    def snapshot(self, story: str) -> dict[str, Any]:
        r = self.http.get(f"/api/stories/{story}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_for(self, story: str, cond: Callable[[dict[str, Any]], bool], run: StoryRun,
                 timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot(story)
            if cond(snap):
                return snap
            assert not run.crashed(), run.crashed()
            assert time.monotonic() < deadline, (
                f"the {story} page never showed {what}; last snapshot: {snap}; "
                f"progress: {run.progress()}")
            time.sleep(0.5)


@pytest.fixture
def console(nerve_factory: Callable[..., NerveProcess]) -> Iterator[StoryConsole]:
    port = free_port()
    broker = nerve_factory("--console-port", str(port), "--set",
                           "group.initial.rebalance.delay.ms=0")
    c = StoryConsole(broker, f"http://127.0.0.1:{port}")
    yield c
    c.http.close()


def first_snapshot(console: StoryConsole, story: str) -> dict[str, Any]:
    with console.http.stream("GET", f"/stories/{story}/events") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for event, data in sse_events(resp):
            assert event == "snapshot"
            return dict(data)
    raise AssertionError("the story stream ended without a snapshot")


# ---------------------------------------------------------------------------- shop
def test_shop_page_shows_events_stock_promos_and_tickets(
        console: StoryConsole, story_run: Callable[..., StoryRun]) -> None:  # noqa: F811
    # No shop topics yet: no nav link, and the page says what to run.
    assert "/stories/shop" not in console.http.get("/").text
    assert console.http.get("/api/stories/shop").status_code == 404
    assert "nerve demo shop" in console.http.get("/stories/shop").text

    assert console.broker is not None
    run = story_run(shop_story(), console.broker.bootstrap)
    run.start(("--duration", "8", *SHOP_ARGS))
    snap = console.wait_for(
        "shop", lambda s: (sum(s["series"]["product-viewed"]) > 0
                           and sum(s["series"]["product-sold"]) > 0
                           and s["stock"] and s["promos"]["count"] > 0
                           and s["tickets"]["count"] > 0),
        run, 30, "views, sales, stock, promos and tickets")
    assert snap["promos"]["recent"][0]["product"].startswith("P-")
    # Every service's latency figures, read from the story's metrics topic.
    lat = console.wait_for(
        "shop", lambda s: {f["action"] for f in s["service_latency"]} >= set(SHOP_ACTIONS),
        run, 30, "every shop action's latency")["service_latency"]
    assert all(0 <= f["p50"] <= f["p99"] <= f["max"] and f["n"] > 0 for f in lat), lat
    assert 'id="latency"' in console.http.get("/stories/shop").text
    assert any(t["page"] in ("/cart", "/checkout", "/search", "/product")  # joined from the bug
               for t in snap["tickets"]["recent"]), snap["tickets"]

    page = console.http.get("/stories/shop").text
    assert 'id="story-rates"' in page and "/static/stories.js" in page
    assert 'href="/stories/shop"' in console.http.get("/").text  # linked now
    live = first_snapshot(console, "shop")
    assert live["totals"]["product-viewed"] >= snap["totals"]["product-viewed"]

    # Stopped: the page's stock and promo figures are exactly what the topics hold.
    run.stop()
    units: dict[str, int] = defaultdict(int)
    for r in read_topic(console.broker.bootstrap, "product-sold"):
        for item in r.value["items"]:
            units[item["product"]] += item["qty"]
    expected = {p: INITIAL_STOCK - n for p, n in units.items()}
    promos = {r.value["id"] for r in read_topic(console.broker.bootstrap, "promotions")}
    final = console.wait_for(
        "shop", lambda s: ({p["product"]: p["stock"] for p in s["stock"]} == expected
                           and s["promos"]["count"] == len(promos)),
        run, 10, f"the topics' stock {expected} and {len(promos)} promos")
    assert min(p["stock"] for p in final["stock"]) < INITIAL_STOCK


# ---------------------------------------------------------------------------- rides
def test_rides_page_shows_drivers_matches_and_payments(
        console: StoryConsole, story_run: Callable[..., StoryRun]) -> None:  # noqa: F811
    assert console.broker is not None
    run = story_run(rides_story(), console.broker.bootstrap)
    run.start(("--duration", "8", *RIDES_ARGS))
    snap = console.wait_for(
        "rides", lambda s: (len(s["drivers"]) == 48 and s["matches"]
                            and s["payments"]["count"] > 0),
        run, 30, "48 drivers, a recent match and a payment")
    for d in snap["drivers"].values():
        assert 0 <= d["x"] <= 40 and 0 <= d["y"] <= 40, d
    m = snap["matches"][-1]
    assert m["from"] is not None and m["to"] is not None, m  # drawable: driver -> pickup
    assert snap["latency_ms"]["p99"] >= snap["latency_ms"]["p50"] > 0
    assert snap["zones_per_side"] == 4  # the smallest city, sized to RIDES_ARGS' rate
    lat = console.wait_for(
        "rides", lambda s: {f["action"] for f in s["service_latency"]} >= set(RIDES_ACTIONS),
        run, 30, "every rides action's latency")["service_latency"]
    assert all(0 <= f["p50"] <= f["p99"] <= f["max"] and f["n"] > 0 for f in lat), lat
    assert 'id="latency"' in console.http.get("/stories/rides").text
    assert snap["payments"]["total_cents"] > 0 and snap["payments"]["recent"]
    assert 'id="city"' in console.http.get("/stories/rides").text
    assert 'href="/stories/rides"' in console.http.get("/").text
    assert "/stories/shop" not in console.http.get("/").text  # only stories that exist
    assert first_snapshot(console, "rides")["counts"]["matched"] > 0

    run.stop()
    charges = {r.value["id"]: r.value["amount_cents"]
               for r in read_topic(console.broker.bootstrap, "payments")}
    console.wait_for(
        "rides", lambda s: (s["payments"]["count"] == len(charges)
                            and s["payments"]["total_cents"] == sum(charges.values())),
        run, 10, f"{len(charges)} payments totalling {sum(charges.values())} cents")


# ---------------------------------------------------------------------------- screenshots
@pytest.mark.slow
def test_screenshots_of_story_pages(console: StoryConsole, story_run: Callable[..., StoryRun],  # noqa: F811
                                    tmp_path: Path) -> None:
    chromium()
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, story, args, ready in (
            ("shop", shop_story(), SHOP_ARGS,
             # ~25 s of events: the chart has history, the tables have rows.
             lambda s: s["totals"]["product-viewed"] >= 1000 and s["tickets"]["count"] >= 3),
            ("rides", rides_story(), RIDES_ARGS,
             lambda s: len(s["drivers"]) == 48 and s["payments"]["count"] >= 10)):
        assert console.broker is not None
        run = story_run(story, console.broker.bootstrap)
        run.start(("--duration", "60", *args))
        console.wait_for(name, ready, run, 60, "enough to show")
        time.sleep(4)  # a few more seconds of history for the chart
        out = tmp_path / f"{name}.png"
        screenshot(f"{console.url}/stories/{name}", out, tmp_path / f"profile-{name}", 4000)
        size = out.stat().st_size
        assert 5_000 < size <= MAX_PNG_BYTES, f"{name}.png is {size} bytes"
        shutil.copy(out, SHOTS / f"{name}.png")
        run.stop()


@pytest.mark.slow
@pytest.mark.java
def test_story_pages_on_apache_kafka(kafka_bootstrap: str,  # noqa: F811
                                     story_run: Callable[..., StoryRun]) -> None:  # noqa: F811
    """`nerve console --bootstrap-server` on Apache Kafka: the pages read only Kafka."""
    proc, url = _standalone(kafka_bootstrap)
    console = StoryConsole(None, url)
    try:
        shop = story_run(shop_story(), kafka_bootstrap)
        shop.start(("--duration", "8", *SHOP_ARGS))
        console.wait_for("shop", lambda s: (sum(s["series"]["product-viewed"]) > 0
                                            and s["stock"] and s["tickets"]["count"] > 0),
                         shop, 40, "views, stock and tickets")
        shop.stop()
        rides = story_run(rides_story(), kafka_bootstrap)
        rides.start(("--duration", "8", *RIDES_ARGS))
        console.wait_for("rides", lambda s: (len(s["drivers"]) == 48 and s["counts"]["matched"]
                                             and s["payments"]["count"] > 0),
                         rides, 40, "drivers, matches and payments")
        assert 'href="/stories/rides"' in console.http.get("/").text
    finally:
        console.http.close()
        proc.terminate()
        proc.wait(15)
