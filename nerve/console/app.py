"""The console's Starlette app: server-rendered pages, SSE streams, JSON for the map, /metrics.

Every Kafka call is blocking (confluent-kafka), so each goes to a thread (`_run`): inside
`nerve serve` this app shares the broker's event loop and must never stall it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nerve.console import auth, guard, pages, security_pages, session, stories
from nerve.console.accounting import Accounting
from nerve.tools.base import ToolError, UnknownGroup, UnknownTopic, Unreachable
from nerve.tools.kafka import Cluster

STATIC_DIR = Path(__file__).parent / "static"
SAMPLE_INTERVAL_S = 1.0
# Clients of the console itself: left out of the backbone map (browsing is not consuming).
CONSOLE_CLIENT_ID = "nerve-console"

T = TypeVar("T")


async def _run(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kw)


def _groups(cluster: Cluster) -> tuple[list[Any], str | None]:
    """Every group, described; or the error, so pages still show topics when groups fail
    (a broker without a group coordinator answers COORDINATOR_NOT_AVAILABLE)."""
    try:
        summaries = cluster.list_groups()
    except ToolError as e:
        if isinstance(e, Unreachable):
            raise
        return [], str(e)
    out = []
    for g in summaries:
        with contextlib.suppress(ToolError):
            out.append(cluster.describe_group(g.group_id))
    return out, None


class Sampler:
    """Samples end offsets and group lag once a second while someone watches the overview.

    One sampler per app, shared by every SSE client; it stops when the last one leaves, so an
    idle console makes no Kafka requests at all.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.history: deque[dict[str, Any]] = deque(maxlen=120)
        self.queues: set[asyncio.Queue[dict[str, Any]]] = set()
        self.task: asyncio.Task[None] | None = None
        self._prev: tuple[float, dict[str, int]] | None = None

    def _sample(self) -> dict[str, Any]:
        topics = self.cluster.topics()
        groups = {d.group_id: {"lag": d.total_lag, "state": d.state, "members": len(d.members)}
                  for d in _groups(self.cluster)[0]}
        return {"topics": {t.name: {"end": t.end_offset_total, "messages": t.messages}
                           for t in topics}, "groups": groups}

    async def _loop(self) -> None:
        while self.queues:
            started = time.monotonic()
            try:
                snap = await _run(self._sample)
                now = time.time()
                ends = {n: t["end"] for n, t in snap["topics"].items()}
                rates: dict[str, float] = {}
                if self._prev is not None:
                    dt = max(now - self._prev[0], 1e-3)
                    rates = {n: max(0.0, (e - self._prev[1].get(n, e)) / dt)
                             for n, e in ends.items()}
                self._prev = (now, ends)
                for n, t in snap["topics"].items():
                    t["rate"] = round(rates.get(n, 0.0), 2)
                event = {"t": int(now * 1000), "rate_total": round(sum(rates.values()), 2),
                         **snap}
                self.history.append({"t": event["t"], "rate_total": event["rate_total"]})
            except ToolError as e:
                event = {"t": int(time.time() * 1000), "error": str(e)}
            for q in list(self.queues):
                q.put_nowait(event)
            await asyncio.sleep(max(0.0, SAMPLE_INTERVAL_S - (time.monotonic() - started)))
        self.task = None

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=100)
        self.queues.add(q)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._loop())
        try:
            yield q
        finally:
            self.queues.discard(q)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def _form(request: Request) -> dict[str, str]:
    # Forms are posted urlencoded; parsing them here saves the python-multipart dependency.
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _parse_time(s: str) -> int | None:
    """A seek time: milliseconds since the epoch, or an ISO date-time (UTC unless given)."""
    s = s.strip()
    if not s:
        return None
    if s.lstrip("-").isdigit():
        return int(s)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ToolError(f"bad time {s!r}: use milliseconds or YYYY-MM-DDTHH:MM") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _int(s: str | None, what: str) -> int | None:
    if s is None or not s.strip():
        return None
    try:
        return int(s)
    except ValueError:
        raise ToolError(f"{what} must be a number, got {s!r}") from None


def _kv_lines(s: str) -> dict[str, str]:
    out = {}
    for line in s.splitlines():
        if line.strip():
            k, sep, v = line.partition("=")
            if not sep or not k.strip():
                raise ToolError(f"expected key=value, got {line.strip()!r}")
            out[k.strip()] = v.strip()
    return out


def _redirect(path: str, msg: str | None = None) -> RedirectResponse:
    return RedirectResponse(path + (f"?{urlencode({'msg': msg})}" if msg else ""),
                            status_code=303)


def create_app(cluster: Cluster, *, read_only: bool = False,
               accounting: Callable[[], Accounting | None] = lambda: None,
               hosts: set[str] | None = None, password: str | None = None,
               cleaning: Callable[[str], list[dict[str, Any]] | None] = lambda _t: None,
               logins: auth.Logins | None = None,
               ) -> Starlette:
    """`hosts`: the Host names served (default: the loopback names); `password`: HTTP basic
    auth for every request (nerve/console/guard.py); `logins`: a login per person, each
    acting as its own Kafka principal (`cluster` is then an auth.SessionCluster)."""
    samplers = [Sampler(cluster)]

    def sampler_now() -> Sampler:
        # With logins each has its own: users may see different topics.
        current = session.login()
        if current is None:
            return samplers[0]
        if "sampler" not in current.parts:
            # Samplers of ended logins that nobody watches any more are dropped.
            samplers[1:] = [s for s in samplers[1:] if s.queues]
            current.parts["sampler"] = Sampler(cluster)
            samplers.append(current.parts["sampler"])
        return current.parts["sampler"]

    story_hub = stories.StoryHub(cluster)
    ctx = pages.Ctx(bootstrap=cluster.bootstrap, console_read_only=read_only,
                    stories=story_hub.available)
    # Set on shutdown: the endless SSE streams end by themselves, so the server can close
    # their connections cleanly instead of cancelling them after its grace period.
    stopping = asyncio.Event()

    def shutdown() -> None:
        stopping.set()
        story_hub.close()
        for q in [q for s in samplers for q in s.queues]:
            q.put_nowait({"shutdown": True})

    def error_page(e: ToolError) -> HTMLResponse:
        status = 404 if isinstance(e, UnknownTopic | UnknownGroup) else (
            502 if isinstance(e, Unreachable) else 400)
        return HTMLResponse(pages.error(ctx, str(e)), status_code=status)

    def guard_write(request: Request) -> Response | None:
        """Refuse actions in read-only mode (Host, Origin and CSRF token: guard.Guard)."""
        if read_only:
            return PlainTextResponse("read-only console: actions are disabled\n",
                                     status_code=403)
        if session.read_only_role():
            return PlainTextResponse("your user has the read-only role: actions are "
                                     "disabled\n", status_code=403)
        return None

    # ------------------------------------------------------------------ pages
    async def overview(request: Request) -> Response:
        def load() -> dict[str, Any]:
            info = cluster.cluster_info()
            topics = cluster.topics()
            groups, groups_error = _groups(cluster)
            return {"info": info, "topics": topics, "groups": groups,
                    "groups_error": groups_error}

        try:
            data = await _run(load)
        except ToolError as e:
            return error_page(e)
        return HTMLResponse(pages.overview(ctx, msg=request.query_params.get("msg"), **data))

    async def topic_page(request: Request) -> Response:
        name = request.path_params["name"]
        qp = request.query_params
        try:
            partition = _int(qp.get("partition"), "partition")
            offset = _int(qp.get("offset"), "offset")
            ts = _parse_time(qp.get("time", ""))
            limit = min(_int(qp.get("limit"), "limit") or 50, 1000)
            text = qp.get("q") or None

            def load() -> dict[str, Any]:
                info = cluster.describe_topic(name)
                recs = cluster.browse(name, limit=limit, partition=partition, offset=offset,
                                      timestamp=ts, contains=text)
                return {"info": info, "records": recs}

            data = await _run(load)
        except ToolError as e:
            return error_page(e)
        seek = {"partition": qp.get("partition", ""), "offset": qp.get("offset", ""),
                "time": qp.get("time", ""), "q": qp.get("q", ""), "limit": str(limit)}
        return HTMLResponse(pages.topic(ctx, data["info"], data["records"], seek,
                                        newest_first=offset is None and ts is None,
                                        msg=qp.get("msg"), cleaning=cleaning(name)))

    async def group_page(request: Request) -> Response:
        gid = request.path_params["group"]
        try:
            info = await _run(cluster.describe_group, gid)
        except ToolError as e:
            return error_page(e)
        return HTMLResponse(pages.group(ctx, info, msg=request.query_params.get("msg")))

    async def map_page(request: Request) -> Response:
        # The first graph is in the page itself: drawn without waiting for /api/map.
        graph = await map_data()
        return HTMLResponse(pages.backbone_map(ctx, graph))

    async def map_data() -> dict[str, Any]:
        def load() -> dict[str, Any]:
            return {"topics": cluster.topics(), "groups": _groups(cluster)[0]}

        try:
            data = await _run(load)
        except ToolError as e:
            return {"error": str(e)}
        acct = accounting()
        return build_map(data["topics"], data["groups"],
                         acct.snapshot() if acct is not None else None)

    # ------------------------------------------------------------------ actions
    async def create_topic(request: Request) -> Response:
        if (refused := guard_write(request)) is not None:
            return refused
        f = await _form(request)
        try:
            name = f.get("name", "").strip()
            if not name:
                raise ToolError("a topic needs a name")
            await _run(cluster.create_topic, name, _int(f.get("partitions"), "partitions") or 1,
                       1, _kv_lines(f.get("configs", "")))
        except ToolError as e:
            return error_page(e)
        return _redirect(f"/topics/{quote(name, safe='')}", f"created topic {name}")

    async def produce(request: Request) -> Response:
        if (refused := guard_write(request)) is not None:
            return refused
        name = request.path_params["name"]
        f = await _form(request)
        try:
            headers = [(k, v.encode()) for k, v in _kv_lines(f.get("headers", "")).items()]
            key = f.get("key") or None
            acks = await _run(cluster.produce, name,
                              [(key.encode() if key else None, f.get("value", "").encode(),
                                headers)],
                              _int(f.get("partition"), "partition"))
        except ToolError as e:
            return error_page(e)
        p, o = acks[0]
        return _redirect(f"/topics/{quote(name, safe='')}",
                         f"produced to partition {p} at offset {o}")

    async def alter_topic(request: Request) -> Response:
        if (refused := guard_write(request)) is not None:
            return refused
        name = request.path_params["name"]
        f = await _form(request)
        try:
            await _run(cluster.alter_topic, name, _int(f.get("partitions"), "partitions"),
                       _kv_lines(f.get("configs", "")),
                       [k.strip() for k in f.get("delete", "").split(",") if k.strip()])
        except ToolError as e:
            return error_page(e)
        return _redirect(f"/topics/{quote(name, safe='')}", f"altered topic {name}")

    async def delete_topic(request: Request) -> Response:
        if (refused := guard_write(request)) is not None:
            return refused
        name = request.path_params["name"]
        f = await _form(request)
        if f.get("confirm") != name:
            return error_page(ToolError("type the topic's name to confirm its deletion"))
        try:
            await _run(cluster.delete_topic, name)
        except ToolError as e:
            return error_page(e)
        acct = accounting()
        if acct is not None:
            acct.forget_topic(name)
        return _redirect("/", f"deleted topic {name}")

    async def reset_group(request: Request) -> Response:
        if (refused := guard_write(request)) is not None:
            return refused
        gid = request.path_params["group"]
        f = await _form(request)
        try:
            to = f.get("to", "earliest")
            if to not in ("earliest", "latest", "offset"):
                raise ToolError(f"unknown reset target {to!r}")
            offset = _int(f.get("offset"), "offset")
            if to == "offset" and offset is None:
                raise ToolError("give the offset to reset to")
            topics = [f["topic"]] if f.get("topic") else []
            rows = await _run(cluster.plan_reset, gid, to, offset, topics)
            if f.get("execute") != "1":  # the confirmation step: show what would change
                return HTMLResponse(pages.reset_preview(ctx, gid, rows, f))
            await _run(cluster.execute_reset, gid, rows)
        except ToolError as e:
            return error_page(e)
        return _redirect(f"/groups/{quote(gid, safe='')}",
                         f"reset {len(rows)} partition(s) to {to}")

    async def delete_group(request: Request) -> Response:
        if (refused := guard_write(request)) is not None:
            return refused
        gid = request.path_params["group"]
        try:
            await _run(cluster.delete_group, gid)
        except ToolError as e:
            return error_page(e)
        return _redirect("/", f"deleted group {gid}")

    # ------------------------------------------------------------------ streams
    async def overview_events(request: Request) -> Response:
        sampler = sampler_now()

        async def stream() -> AsyncIterator[str]:
            async with sampler.subscribe() as q:
                yield _sse("history", list(sampler.history))
                while not stopping.is_set() and not await request.is_disconnected():
                    try:
                        event = await asyncio.wait_for(q.get(), 15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if event.get("shutdown"):
                        break
                    yield _sse("sample", event)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def tail(request: Request) -> Response:
        """Live tail: SSE `ready` once positioned at the end, then one `record` per message."""
        name = request.path_params["name"]
        try:
            partition = _int(request.query_params.get("partition"), "partition")
            t = await _run(cluster.require_topic, name)
        except ToolError as e:
            return error_page(e)
        parts = sorted(t.partitions) if partition is None else [partition]

        async def stream() -> AsyncIterator[str]:
            from confluent_kafka import TopicPartition

            pos = await _run(cluster.start_positions, name, parts, "end")
            consumer = cluster.consumer(**{"enable.partition.eof": False})
            try:
                await _run(consumer.assign, [TopicPartition(name, p, o) for p, o in pos.items()])
                yield _sse("ready", {"positions": pos})
                idle = 0.0
                while not stopping.is_set() and not await request.is_disconnected():
                    msgs = await _run(consumer.consume, 100, 0.5)
                    out = [pages.record_json(m) for m in msgs if not m.error()]
                    for rec in out:
                        yield _sse("record", rec)
                    idle = 0.0 if out else idle + 0.5
                    if idle >= 15:
                        yield ": keep-alive\n\n"
                        idle = 0.0
            finally:
                await _run(consumer.close)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ JSON + metrics
    async def api_overview(request: Request) -> Response:
        try:
            topics = await _run(cluster.topics)
            groups, groups_error = await _run(_groups, cluster)
        except ToolError as e:
            return JSONResponse({"error": str(e)}, status_code=502)
        return JSONResponse({"topics": [t.to_json() for t in topics],
                             "groups": [g.to_json() for g in groups],
                             "groups_error": groups_error})

    async def api_map(request: Request) -> Response:
        graph = await map_data()
        return JSONResponse(graph, status_code=502 if "error" in graph else 200)

    async def metrics(request: Request) -> Response:
        def load() -> tuple[Any, Any]:
            return cluster.topics(include_internal=True), _groups(cluster)[0]

        try:
            topics, groups = await _run(load)
        except ToolError as e:
            return PlainTextResponse(f"# {e}\nnerve_up 0\n", status_code=502)
        acct = accounting()
        body = pages.prometheus(topics, groups, acct.snapshot() if acct is not None else None)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [
        Route("/", overview),
        Route("/map", map_page),
        Route("/metrics", metrics),
        Route("/api/overview", api_overview),
        Route("/api/map", api_map),
        Route("/events/overview", overview_events),
        Route("/topics", create_topic, methods=["POST"]),
        Route("/topics/{name}", topic_page),
        Route("/topics/{name}/tail", tail),
        Route("/topics/{name}/produce", produce, methods=["POST"]),
        Route("/topics/{name}/alter", alter_topic, methods=["POST"]),
        Route("/topics/{name}/delete", delete_topic, methods=["POST"]),
        Route("/groups/{group}", group_page),
        Route("/groups/{group}/reset", reset_group, methods=["POST"]),
        Route("/groups/{group}/delete", delete_group, methods=["POST"]),
        # Story pages (nerve demo shop|rides): nerve/console/stories.py
        *stories.routes(story_hub, ctx, stopping),
        # Users, ACLs, quotas: nerve/console/security_pages.py; the login: auth.py
        *security_pages.routes(ctx, cluster, guard_write, error_page),
        *(auth.routes(logins, ctx) if logins is not None else []),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[
        Middleware(guard.Guard, hosts=hosts or guard.allowed_hosts("127.0.0.1"),
                   password=password),
        *([Middleware(auth.LoginGate, logins=logins)] if logins is not None else []),
        Middleware(stories.NavRefresh, hub=story_hub)])
    app.state.cluster = cluster
    app.state.story_hub = story_hub
    app.state.shutdown = shutdown
    return app


def build_map(topics: list[Any], groups: list[Any],
              acct: dict[str, list[dict[str, Any]]] | None) -> dict[str, Any]:
    """producers -> topics -> groups (and consumers outside groups), as nodes and edges.

    Without accounting (Apache Kafka, or a broker whose handlers do not feed it) there are no
    producer nodes: the graph is topics and the groups that read them.
    """
    now_ms = time.time_ns() // 1_000_000
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    names = {t.name for t in topics}
    for t in topics:
        nodes.append({"id": f"t:{t.name}", "kind": "topic", "label": t.name,
                      "detail": f"{len(t.partitions)} partition(s), {t.messages} msgs",
                      "end": t.end_offset_total, "href": f"/topics/{quote(t.name, safe='')}"})
    members: dict[tuple[str, str], str] = {}
    for g in groups:
        nodes.append({"id": f"g:{g.group_id}", "kind": "group", "label": g.group_id,
                      "detail": f"{g.state.lower()}, {len(g.members)} member(s), "
                                f"lag {g.total_lag}",
                      "lag": g.total_lag, "href": f"/groups/{quote(g.group_id, safe='')}"})
        for m in g.members:
            members[(m.client_id, m.host.lstrip("/"))] = g.group_id
        for topic in g.topics:
            if topic in names:
                lag = sum(p.lag or 0 for p in g.partitions if p.topic == topic)
                edges.append({"from": f"t:{topic}", "to": f"g:{g.group_id}",
                              "label": f"lag {lag}", "lag": lag, "bytes": None,
                              "active": bool(g.members)})
    if acct is not None:
        producers: dict[str, dict[str, Any]] = {}
        for row in acct["produced"]:
            if row["topic"] not in names:
                continue
            pid = f"p:{row['client_id']}@{row['host']}"
            producers.setdefault(pid, {"id": pid, "kind": "producer",
                                       "label": row["client_id"] or "(no client id)",
                                       "detail": row["host"]})
            edges.append({"from": pid, "to": f"t:{row['topic']}", "bytes": row["bytes"],
                          "label": _size(row["bytes"]),
                          "active": now_ms - row["last_ms"] < 10_000})
        nodes.extend(producers.values())
        by_group_edge = {(e["from"], e["to"]): e for e in edges}
        for row in acct["fetched"]:
            if row["topic"] not in names or row["client_id"] == CONSOLE_CLIENT_ID:
                continue
            active = now_ms - row["last_ms"] < 10_000
            group = members.get((row["client_id"], row["host"]))
            if group is not None and (f"t:{row['topic']}", f"g:{group}") in by_group_edge:
                e = by_group_edge[(f"t:{row['topic']}", f"g:{group}")]
                e["bytes"] = (e["bytes"] or 0) + row["bytes"]
                e["active"] = e["active"] or active
                continue
            cid = f"c:{row['client_id']}@{row['host']}"
            if not any(n["id"] == cid for n in nodes):
                nodes.append({"id": cid, "kind": "consumer",
                              "label": row["client_id"] or "(no client id)",
                              "detail": f"{row['host']} (no group)"})
            edges.append({"from": f"t:{row['topic']}", "to": cid, "bytes": row["bytes"],
                          "label": _size(row["bytes"]), "active": active})
    return {"nodes": nodes, "edges": edges, "accounting": acct is not None,
            "t": now_ms}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
