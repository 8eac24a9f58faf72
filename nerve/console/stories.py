# ruff: noqa: E501  (HTML templates read better unwrapped)
"""Story pages: `/stories/shop` and `/stories/rides`, live views of the two reference systems.

They read ONLY through the Kafka protocol: a background thread per story consumes the story's
topics from the beginning (a plain assigned consumer, no group, nothing committed) into an
in-memory projection, so the pages work against Apache Kafka too and never open a service's
SQLite file. What a service keeps only in SQLite is derived from the topics instead (the shop's
stock levels: initial stock minus the units in product-sold, as inventory computes them).

A feed starts when its page or stream is first requested and stops after IDLE_S without a
viewer (a later viewer replays the topics again), so an idle console consumes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from nerve.apps.common import merge_latency
from nerve.apps.rides import METRICS_TOPIC as RIDES_METRICS
from nerve.apps.rides import TOPICS as RIDES_TOPICS
from nerve.apps.rides import ZONE_SIZE, ZONES_PER_SIDE
from nerve.apps.shop import INITIAL_STOCK, LOW_STOCK
from nerve.apps.shop import METRICS_TOPIC as SHOP_METRICS
from nerve.apps.shop import TOPICS as SHOP_TOPICS
from nerve.console import pages, session
from nerve.console.pages import card, h, layout
from nerve.tools.base import ToolError
from nerve.tools.kafka import Cluster

STORY_TOPICS: dict[str, tuple[str, ...]] = {
    "shop": tuple(SHOP_TOPICS),
    "rides": tuple(RIDES_TOPICS),
}
TITLES = {"shop": "Shop story", "rides": "Rides story"}
IDLE_S = 120.0          # no viewer for this long: the feed stops and forgets its projection
TOPICS_TTL_S = 5.0      # how stale the "which stories exist" answer for the nav may be
NAV_WAIT_S = 1.0        # longest a page waits for that answer before rendering without it
WINDOW_S = 60           # seconds of events/s history kept and charted
RECENT = 12             # rows in the "recent" tables
MATCH_SHOW_MS = 6_000   # how long a match stays on the rides map


def _percentile(values: Iterable[float], q: float) -> float:
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))]) if s else 0.0


# ---------------------------------------------------------------------------- projections
class ServiceLatency:
    """The latest latency figures each service instance published to the story's metrics
    topic, merged per action (the services measure event time to effect; see nerve/apps)."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}

    def apply(self, ev: dict[str, Any]) -> None:
        self.latest[f"{ev['service']}-{ev['instance']}"] = ev

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"action": a, **f} for a, f in
                merge_latency(ev for _, ev in sorted(self.latest.items())).items()]


class ShopProjection:
    """events/s by topic, stock per product, promos and tickets, from the shop's topics."""

    def __init__(self) -> None:
        topics = [t for t in SHOP_TOPICS if t != SHOP_METRICS]
        self.per_second: dict[str, dict[int, int]] = {t: {} for t in topics}
        self.totals: dict[str, int] = dict.fromkeys(topics, 0)
        self.service_latency = ServiceLatency()
        self.sold: dict[str, int] = {}
        self.stock_low: dict[str, int] = {}  # product -> stock it was reported at
        self.bugs: OrderedDict[str, dict[str, Any]] = OrderedDict()  # bug id -> report
        # Outbox rows can be published twice (docs/demos.md): event ids drop the copies.
        self.seen: set[str] = set()
        self.promos: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.tickets: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.promo_count = 0
        self.ticket_count = 0

    def apply(self, topic: str, ts_ms: int, ev: dict[str, Any]) -> None:
        if topic == SHOP_METRICS:
            self.service_latency.apply(ev)
            return
        self.totals[topic] = self.totals.get(topic, 0) + 1
        sec = ts_ms // 1000
        buckets = self.per_second.setdefault(topic, {})
        buckets[sec] = buckets.get(sec, 0) + 1
        if len(buckets) > WINDOW_S * 3:  # drop old seconds now and then
            for s in sorted(buckets)[:-WINDOW_S * 2]:
                del buckets[s]
        if topic == "product-sold":
            for item in ev.get("items", []):
                self.sold[item["product"]] = self.sold.get(item["product"], 0) + int(item["qty"])
        elif topic == "stock-low":
            self.stock_low[ev["product"]] = ev["qty"]
        elif topic == "bug-reported":
            self.bugs[ev["id"]] = ev
            while len(self.bugs) > 2000:
                self.bugs.popitem(last=False)
        elif topic == "promotions" and ev.get("id") not in self.seen:
            self.seen.add(ev["id"])
            self.promo_count += 1
            self.promos.appendleft({"product": ev.get("product"), "customer": ev.get("customer"),
                                    "discount_pct": ev.get("discount_pct"), "ts": ts_ms})
        elif topic == "support-tickets" and ev.get("id") not in self.seen:
            self.seen.add(ev["id"])
            self.ticket_count += 1
            self.tickets.appendleft({"ticket": ev.get("ticket"), "customer": ev.get("customer"),
                                     "bug": ev.get("bug"), "ts": ts_ms})

    def snapshot(self, now_ms: int) -> dict[str, Any]:
        # The last two seconds are still filling (producer linger, fetch wait): not shown.
        last = now_ms // 1000 - 2
        seconds = list(range(last - WINDOW_S + 1, last + 1))
        series = {t: [b.get(s, 0) for s in seconds] for t, b in self.per_second.items()}
        products = sorted(set(self.sold) | set(self.stock_low))
        return {
            "t": now_ms, "first_second": seconds[0], "series": series,
            "rates": {t: v[-1] for t, v in series.items()},
            "totals": self.totals,
            "stock": [{"product": p, "stock": INITIAL_STOCK - self.sold.get(p, 0),
                       "low": p in self.stock_low} for p in products],
            "initial_stock": INITIAL_STOCK, "low_stock": LOW_STOCK,
            "promos": {"count": self.promo_count, "recent": list(self.promos)},
            # The page comes from the bug report, joined here: another topic, so a ticket can
            # be read before its report.
            "tickets": {"count": self.ticket_count, "recent": [
                t | {"page": self.bugs.get(t["bug"], {}).get("page")} for t in self.tickets]},
            "service_latency": self.service_latency.snapshot(),
        }


class RidesProjection:
    """Drivers' latest positions, waiting riders, matches as they happen, payments."""

    def __init__(self) -> None:
        self.drivers: dict[str, dict[str, Any]] = {}
        self.waiting: OrderedDict[str, dict[str, Any]] = OrderedDict()  # ride -> request
        self.matched: set[str] = set()
        self.matches: deque[dict[str, Any]] = deque(maxlen=200)
        self.latencies: deque[int] = deque(maxlen=1000)
        self.completed: set[str] = set()
        self.charges: set[str] = set()
        self.payments: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.revenue_cents = 0
        self.requests = 0
        self.service_latency = ServiceLatency()
        self.extent = 0.0  # the farthest driver position: the city grows with the rate

    def apply(self, topic: str, ts_ms: int, ev: dict[str, Any]) -> None:
        if topic == RIDES_METRICS:
            self.service_latency.apply(ev)
        elif topic == "driver-locations":
            self.extent = max(self.extent, ev["x"], ev["y"])
            d = self.drivers.get(ev["driver"])
            if d is None or ev["ts"] >= d["ts"]:  # several partitions: keep the newest
                self.drivers[ev["driver"]] = {
                    "x": ev["x"], "y": ev["y"], "ts": ev["ts"], "zone": ev.get("zone"),
                    "ride": ev.get("ride"), "rider": ev.get("rider")}
        elif topic == "ride-requests":
            self.requests += 1
            # The request can arrive after its match (separate topics): no waiting rider then.
            if ev["id"] not in self.matched:
                self.waiting[ev["id"]] = ev
        elif topic == "ride-matched":
            if ev["ride"] in self.matched:
                return
            self.matched.add(ev["ride"])
            req = self.waiting.pop(ev["ride"], None)
            d = self.drivers.get(ev["driver"], {})
            pickup = req["pickup"] if req else None
            self.matches.append({
                "ride": ev["ride"], "driver": ev["driver"], "rider": ev.get("rider"),
                "ts": ev["ts"], "from": [d["x"], d["y"]] if d else None, "to": pickup,
                "zone": ev.get("zone"), "latency_ms": ev["ts"] - ev.get("request_ts", ev["ts"])})
            if "request_ts" in ev:
                self.latencies.append(ev["ts"] - ev["request_ts"])
        elif topic == "ride-completed":
            self.completed.add(ev["ride"])
        elif topic == "payments" and ev.get("id") not in self.charges:
            self.charges.add(ev["id"])
            self.revenue_cents += int(ev.get("amount_cents", 0))
            self.payments.appendleft({"ride": ev.get("ride"), "rider": ev.get("rider"),
                                      "amount_cents": ev.get("amount_cents"), "ts": ts_ms})

    def snapshot(self, now_ms: int) -> dict[str, Any]:
        recent = list(self.latencies)[-200:]
        return {
            "t": now_ms, "zone_size": ZONE_SIZE,
            "zones_per_side": max(ZONES_PER_SIDE, math.ceil(self.extent / ZONE_SIZE)),
            "drivers": self.drivers,
            "waiting": [{"ride": r, "rider": q["rider"], "x": q["pickup"][0],
                         "y": q["pickup"][1]} for r, q in self.waiting.items()],
            "riding": sum(1 for d in self.drivers.values() if d.get("rider")),
            "matches": [m for m in self.matches if now_ms - m["ts"] < MATCH_SHOW_MS],
            "counts": {"requests": self.requests, "matched": len(self.matched),
                       "completed": len(self.completed), "charged": len(self.charges)},
            "latency_ms": {"p50": _percentile(self.latencies, 0.5),
                           "p99": _percentile(self.latencies, 0.99),
                           "recent_p50": _percentile(recent, 0.5),
                           "recent_p99": _percentile(recent, 0.99)},
            "payments": {"count": len(self.charges), "total_cents": self.revenue_cents,
                         "recent": list(self.payments)},
            "service_latency": self.service_latency.snapshot(),
        }


Projection = ShopProjection | RidesProjection


# ---------------------------------------------------------------------------- feeds
class Feed:
    """One story's topics consumed from the beginning into its projection, on a thread."""

    def __init__(self, cluster: Cluster, story: str) -> None:
        self.cluster = cluster
        self.story = story
        self.projection: Projection = ShopProjection() if story == "shop" else RidesProjection()
        self.lock = threading.Lock()
        self.caught_up = threading.Event()  # replayed what was there when the feed started
        self.stop = threading.Event()
        self.error: str | None = None
        self.last_seen = time.monotonic()
        self.records = 0
        # In the creating request's context: with logins, the feed reads as that user.
        self.thread = threading.Thread(target=contextvars.copy_context().run,
                                       args=(self._run,), name=f"nerve-story-{story}",
                                       daemon=True)
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            snap = self.projection.snapshot(time.time_ns() // 1_000_000)
            # Copied under the lock: the thread keeps mutating these dicts.
            return json.loads(json.dumps(snap)) | {"records": self.records,
                                                   "error": self.error}

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        topics = STORY_TOPICS[self.story]
        try:
            consumer = self.cluster.consumer(**{"enable.partition.eof": False})
        except ToolError as e:  # a login that ended meanwhile (nerve/console/auth.py)
            self.error = f"reading the {self.story} topics failed: {e}"
            self.caught_up.set()
            return
        try:
            md = consumer.list_topics(timeout=self.cluster.timeout)
            if missing := [t for t in topics if t not in md.topics]:
                raise ToolError(f"no topic {', '.join(missing)} (or no DESCRIBE on it)")
            tps = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics
                   for p in md.topics[t].partitions]
            ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(
                tp, timeout=self.cluster.timeout)[1] for tp in tps}
            todo = {k for k, end in ends.items() if end > 0}
            consumer.assign(tps)
            if not todo:
                self.caught_up.set()
            while not self.stop.is_set() and time.monotonic() - self.last_seen < IDLE_S:
                msgs = consumer.consume(1000, 0.3)
                with self.lock:
                    for m in msgs:
                        if m.error():
                            continue
                        self.records += 1
                        try:
                            ev = json.loads(m.value() or b"{}")
                            self.projection.apply(m.topic(), m.timestamp()[1], ev)
                        except (ValueError, KeyError, TypeError, IndexError):
                            pass  # not a story event (someone else produced here): skip it
                        key = (m.topic(), m.partition())
                        if key in todo and m.offset() + 1 >= ends[key]:
                            todo.discard(key)
                            if not todo:
                                self.caught_up.set()
        except Exception as e:  # shown on the page; a new viewer retries
            self.error = f"reading the {self.story} topics failed: {e}"
        finally:
            self.caught_up.set()
            with contextlib.suppress(Exception):
                consumer.close()


class _Found:
    """Which stories have their topics, as one viewer sees them: the hub's, or a login's
    (users may be allowed different topics)."""

    def __init__(self) -> None:
        self.available: list[str] = []
        self.checked = 0.0
        self.task: asyncio.Task[None] | None = None


class StoryHub:
    """Which stories have their topics, and their feeds (started on demand)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.feeds: dict[str, Feed] = {}
        self._others: list[Feed] = []  # the logins' feeds (stopped on close too)
        self._shared = _Found()
        self._lock = threading.Lock()

    def _found(self) -> _Found:
        current = session.login()
        if current is None:
            return self._shared
        return current.parts.setdefault("stories_found", _Found())  # type: ignore[no-any-return]

    def available(self) -> list[str]:
        """Stories whose topics all exist (as of the last refresh; for the nav)."""
        return list(self._found().available)

    def _check(self) -> list[str]:
        names = set(self.cluster.topic_names())
        return [s for s, ts in STORY_TOPICS.items() if set(ts) <= names]

    async def refresh(self, force: bool = False, wait_s: float | None = None) -> list[str]:
        """Re-check which stories exist if the answer is stale; wait at most `wait_s` for it
        (the check goes on in the background: an unreachable cluster must not slow every page
        by a metadata timeout on top of the page's own)."""
        found = self._found()
        if found.task is None and (force or time.monotonic() - found.checked > TOPICS_TTL_S):
            found.checked = time.monotonic()
            found.task = asyncio.get_running_loop().create_task(self._recheck(found))
        if found.task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(found.task), wait_s)
        return list(found.available)

    async def _recheck(self, found: _Found) -> None:
        try:
            found.available = await asyncio.to_thread(self._check)
        except ToolError:
            pass
        finally:
            found.task = None

    def feed(self, story: str) -> Feed:
        # With logins (nerve/console/auth.py) each has its own feeds: users may be allowed
        # different topics.
        current = session.login()
        feeds = self.feeds if current is None else current.parts.setdefault("story_feeds", {})
        with self._lock:
            f = feeds.get(story)
            if f is None or not f.alive:
                f = feeds[story] = Feed(self.cluster, story)
                self._others = [o for o in self._others if o.alive]
                if current is not None:
                    self._others.append(f)
            f.touch()
            return f

    def close(self) -> None:
        for f in [*self.feeds.values(), *self._others]:
            f.stop.set()


class NavRefresh:
    """ASGI middleware: before a page is rendered, refresh (at most every TOPICS_TTL_S) which
    stories exist, so the nav links them without the templates doing any I/O."""

    def __init__(self, app: ASGIApp, hub: StoryHub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and not path.startswith(
                ("/static/", "/api/", "/events/", "/metrics")) and not path.endswith("/tail"):
            await self.hub.refresh(wait_s=NAV_WAIT_S)
        await self.app(scope, receive, send)


# ---------------------------------------------------------------------------- pages
def _head() -> str:
    return ('<link rel="stylesheet" href="/static/stories.css">'
            '<script src="/static/stories.js" defer></script>')


def _missing(ctx: pages.Ctx, story: str) -> str:
    topics = ", ".join(STORY_TOPICS[story])
    body = f"""{_head()}<h1>{h(TITLES[story])}</h1>
<p class="note">Waiting for the story's topics ({h(topics)}). Start it with
<code>nerve demo {h(story)}</code> (or <code>nerve demo {h(story)} --bootstrap-server
{h(ctx.bootstrap)}</code>); this page reloads by itself.</p>
<meta http-equiv="refresh" content="2">"""
    return layout(ctx, TITLES[story], body, f"story-{story}")


def shop_page(ctx: pages.Ctx, snap: dict[str, Any]) -> str:
    data = json.dumps(snap).replace("</", "<\\/")
    body = f"""{_head()}<script type="application/json" id="story-data">{data}</script>
<h1>Shop story <small>customers view, buy and report bugs; inventory, marketing and support react</small></h1>
<p class="note" id="story-note">Read from the story's topics over the Kafka protocol (no service's database is opened):
stock is the initial {INITIAL_STOCK} units minus the units in <code>product-sold</code>, as inventory computes it
(inventory keeps stock in SQLite and publishes only <code>stock-low</code>).</p>
<section class="cards">
{card("views", 0, id="c-views")}{card("orders", 0, id="c-orders")}{card("bug reports", 0, id="c-bugs")}
{card("promos", 0, id="c-promos")}{card("tickets", 0, id="c-tickets")}{card("stock-low", 0, id="c-low")}
</section>
<section><h2>Events/s by type <small id="rate-legend">last {WINDOW_S} s, by event time</small></h2>
<canvas id="story-rates" width="1200" height="170" data-events="/stories/shop/events"></canvas>
<p class="legend" id="rates-legend"></p></section>
<div class="cols3">
<section><h2>Stock levels <small>per product; dashed: stock-low threshold ({LOW_STOCK}); below 0: sold past the initial stock (nothing restocks)</small></h2>
<svg id="stock" width="420" height="300" role="img" aria-label="stock levels"></svg></section>
<section><h2>Promos <small id="promo-count"></small></h2>
<table id="promos"><thead><tr><th>product</th><th>customer</th><th>discount</th><th>time</th></tr></thead><tbody></tbody></table></section>
<section><h2>Support tickets <small id="ticket-count"></small></h2>
<table id="tickets"><thead><tr><th>ticket</th><th>customer</th><th>page</th><th>time</th></tr></thead><tbody></tbody></table>
</section></div>
<section><h2>Latency <small>event time to effect, as each service measures it (all instances; from the story's metrics topic)</small></h2>
<table id="latency"><thead><tr><th>action</th><th>p50</th><th>p99</th><th>max</th><th>events</th></tr></thead><tbody></tbody></table></section>"""
    return layout(ctx, "Shop story", body, "story-shop")


def rides_page(ctx: pages.Ctx, snap: dict[str, Any]) -> str:
    data = json.dumps(snap).replace("</", "<\\/")
    body = f"""{_head()}<script type="application/json" id="story-data">{data}</script>
<h1>Rides story <small>riders request, drivers stream positions; matching, tracking, payments</small></h1>
<p class="note" id="story-note">Read from the story's topics over the Kafka protocol: positions from
<code>driver-locations</code>, riders from <code>ride-requests</code>, matches from <code>ride-matched</code>
(latency: match time minus request time), charges from <code>payments</code>.</p>
<section class="cards">
{card("drivers", 0, id="c-drivers")}{card("waiting riders", 0, id="c-waiting")}{card("riding", 0, id="c-riding")}
{card("matched", 0, id="c-matched")}{card("match latency p50 / p99", "-", id="c-latency")}
{card("payments collected", "-", id="c-revenue")}
</section>
<div class="cols rides">
<section><h2>Live map <small>zones of 10 km (the city grows with the rate); lines: matches as they happen (driver → pickup)</small></h2>
<div class="map-box"><svg id="city" viewBox="0 0 420 420" data-events="/stories/rides/events" role="img" aria-label="live map"></svg></div>
<p class="legend"><span class="dot free"></span>free driver <span class="dot pickup"></span>driving to a pickup
<span class="dot riding"></span>driving a rider <span class="dot rider"></span>waiting rider
<span class="dot match"></span>new match</p></section>
<section><h2>Payments <small id="pay-count"></small></h2>
<table id="payments"><thead><tr><th>ride</th><th>rider</th><th>amount</th><th>time</th></tr></thead><tbody></tbody></table>
<h2>Recent matches</h2>
<table id="matches"><thead><tr><th>ride</th><th>driver</th><th>zone</th><th>latency</th></tr></thead><tbody></tbody></table>
</section></div>
<section><h2>Latency <small>event time to effect, as each service measures it (all instances; from the story's metrics topic)</small></h2>
<table id="latency"><thead><tr><th>action</th><th>p50</th><th>p99</th><th>max</th><th>events</th></tr></thead><tbody></tbody></table></section>"""
    return layout(ctx, "Rides story", body, "story-rides")


def routes(hub: StoryHub, ctx: pages.Ctx, stopping: asyncio.Event,
           wait_s: float = 3.0) -> list[Route]:
    render: dict[str, Callable[[pages.Ctx, dict[str, Any]], str]] = {
        "shop": shop_page, "rides": rides_page}

    async def ready_feed(story: str) -> Feed | None:
        if story not in await hub.refresh(force=story not in hub.available()):
            return None
        f = hub.feed(story)
        # First paint with data: give the replay a moment to catch up.
        await asyncio.to_thread(f.caught_up.wait, wait_s)
        return f

    async def page(request: Request) -> Response:
        story = request.path_params["story"]
        if story not in render:
            return HTMLResponse(pages.error(ctx, f"no story {story!r}"), status_code=404)
        f = await ready_feed(story)
        if f is None:
            return HTMLResponse(_missing(ctx, story))
        return HTMLResponse(render[story](ctx, f.snapshot()))

    async def api(request: Request) -> Response:
        story = request.path_params["story"]
        if story not in render:
            return JSONResponse({"error": f"no story {story!r}"}, status_code=404)
        f = await ready_feed(story)
        if f is None:
            return JSONResponse({"error": f"the {story} topics do not exist"}, status_code=404)
        return JSONResponse(f.snapshot())

    async def events(request: Request) -> Response:
        """One `snapshot` event per interval while the page is open (the feed stays alive)."""
        story = request.path_params["story"]
        if story not in render:
            return JSONResponse({"error": f"no story {story!r}"}, status_code=404)
        interval = 0.5 if story == "rides" else 1.0  # drivers move every 0.5 s

        async def stream() -> AsyncIterator[str]:
            while not stopping.is_set() and not await request.is_disconnected():
                f = await ready_feed(story)
                snap = f.snapshot() if f is not None else {
                    "error": f"waiting for the {story} topics"}
                yield f"event: snapshot\ndata: {json.dumps(snap)}\n\n"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), interval)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    return [
        Route("/stories/{story}", page),
        Route("/stories/{story}/events", events),
        Route("/api/stories/{story}", api),
    ]
