# ruff: noqa: E501  (HTML templates read better unwrapped)
"""Server-rendered HTML for the console, and the Prometheus text format.

Plain f-strings with `h()` escaping every value that came from Kafka or the user: no template
engine to install. In read-only mode no form is rendered at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from nerve import __version__
from nerve.console import session
from nerve.console.guard import CSRF_FIELD, current_token
from nerve.tools.base import text
from nerve.tools.kafka import GroupInfo, Record, ResetRow, TopicInfo


@dataclass(frozen=True)
class Ctx:
    bootstrap: str
    console_read_only: bool  # the whole console (--console-read-only)
    # Stories whose topics exist (nerve/console/stories.py): linked from the nav.
    stories: Callable[[], Sequence[str]] = lambda: ()

    @property
    def read_only(self) -> bool:
        """No write forms: the console is read-only, or the logged-in user has that role."""
        return self.console_read_only or session.read_only_role()


def h(v: object) -> str:
    return escape("-" if v is None else str(v), quote=True)


def _u(s: str) -> str:
    return quote(s, safe="")


def _ts(ms: int) -> str:
    if ms is None or ms < 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


_POST_FORM = re.compile(r'(<form method="post"[^>]*>)')


def layout(ctx: Ctx, title: str, body: str, active: str = "", msg: str | None = None) -> str:
    # Every form that posts carries this session's CSRF token (nerve/console/guard.py).
    field = f'<input type="hidden" name="{CSRF_FIELD}" value="{h(current_token.get())}">'
    body = _POST_FORM.sub(lambda m: m.group(1) + field, body)
    def nav(href: str, label: str, key: str) -> str:
        cls = ' class="active"' if key == active else ""
        return f'<a href="{href}"{cls}>{label}</a>'

    ro = '<span class="badge ro">read-only</span>' if ctx.read_only else ""
    flash = f'<div class="flash">{h(msg)}</div>' if msg else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{h(title)} · nerve console</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head><body data-read-only="{'1' if ctx.read_only else '0'}">
<header><a class="brand" href="/">nerve<span>console</span></a>
<nav>{nav('/', 'Overview', 'overview')}{nav('/map', 'Backbone map', 'map')}
{nav('/metrics', 'Metrics', 'metrics')}{security_nav(nav)}
{''.join(nav(f'/stories/{s}', f'{s.capitalize()} story', f'story-{s}') for s in ctx.stories())}</nav>
<div class="cluster">{ro}{who(field)}<code>{h(ctx.bootstrap)}</code></div></header>
<main>{flash}{body}</main>
<footer>nerve {h(__version__)} · speaks only the Kafka protocol: works with any Kafka cluster
</footer></body></html>"""


def security_nav(nav: Callable[[str, str, str], str]) -> str:
    return (nav('/security/users', 'Users', 'users') + nav('/security/acls', 'ACLs', 'acls')
            + nav('/security/quotas', 'Quotas', 'quotas'))


def who(csrf_field: str) -> str:
    """The logged-in user and a log-out button (nerve/console/auth.py), when there is a login."""
    current = session.login()
    if current is None:
        return ""
    return (f'<span class="who">{h(current.principal)}</span>'
            f'<form method="post" action="/logout" class="logout">{csrf_field}'
            '<button type="submit">Log out</button></form>')


def error(ctx: Ctx, message: str) -> str:
    return layout(ctx, "Error", f'<h1>Error</h1><p class="error">{h(message)}</p>'
                  '<p><a href="/">Back to the overview</a></p>')


def card(k: str, v: object, small: bool = False, id: str = "") -> str:
    ida = f' id="{id}"' if id else ""
    cls = "v small" if small else "v"
    return f'<div class="card"><div class="k">{k}</div><div class="{cls}"{ida}>{v}</div></div>'


# ---------------------------------------------------------------------------- overview
def overview(ctx: Ctx, info: dict[str, Any], topics: list[TopicInfo], groups: list[GroupInfo],
             groups_error: str | None = None, msg: str | None = None) -> str:
    brokers = "".join(
        f"<tr><td>{h(b['id'])}{' (controller)' if b['id'] == info['controller_id'] else ''}"
        f"</td><td><code>{h(b['host'])}:{h(b['port'])}</code></td></tr>"
        for b in info["brokers"])
    trows = "".join(
        f'<tr><td><a href="/topics/{_u(t.name)}">{h(t.name)}</a></td>'
        f'<td class="num">{len(t.partitions)}</td>'
        f'<td class="num" data-topic-messages="{h(t.name)}">{t.messages}</td>'
        f'<td class="num" data-topic-end="{h(t.name)}">{t.end_offset_total}</td>'
        f'<td class="num" data-topic-rate="{h(t.name)}">-</td></tr>'
        for t in topics) or '<tr><td colspan="5" class="empty">no topics yet</td></tr>'
    grows = "".join(
        f'<tr><td><a href="/groups/{_u(g.group_id)}">{h(g.group_id)}</a></td>'
        f'<td><span class="state {h(g.state.lower())}">{h(g.state.lower())}</span></td>'
        f'<td class="num">{len(g.members)}</td><td>{h(", ".join(g.topics))}</td>'
        f'<td class="num lag" data-group-lag="{h(g.group_id)}">{g.total_lag}</td></tr>'
        for g in groups) or (
        f'<tr><td colspan="5" class="error">{h(groups_error)}</td></tr>' if groups_error
        else '<tr><td colspan="5" class="empty">no consumer groups</td></tr>')
    create = "" if ctx.read_only else """
<details class="action"><summary>Create a topic</summary>
<form method="post" action="/topics" class="grid">
<label>Name <input name="name" required pattern="[A-Za-z0-9._-]+"></label>
<label>Partitions <input name="partitions" type="number" min="1" value="1"></label>
<label class="wide">Configs (key=value per line)
<textarea name="configs" rows="2" placeholder="retention.ms=604800000"></textarea></label>
<button>Create</button></form></details>"""
    total = sum(t.messages for t in topics)
    body = f"""
<h1>Overview</h1>
<section class="cards">
{card("cluster id", h(info['cluster_id']), small=True)}
{card("brokers", len(info['brokers']))}
{card("topics", len(topics))}
{card("messages", total)}
{card("groups", len(groups))}
{card("total lag", sum(g.total_lag for g in groups))}
</section>
<section><h2>Throughput <small id="rate-now">messages/s, live</small></h2>
<canvas id="throughput" width="1200" height="160" data-events="/events/overview"></canvas>
</section>
<div class="cols">
<section><h2>Topics</h2><table><thead><tr><th>topic</th><th>partitions</th><th>messages</th>
<th>end offsets</th><th>msg/s</th></tr></thead><tbody>{trows}</tbody></table>{create}</section>
<section><h2>Consumer groups</h2><table><thead><tr><th>group</th><th>state</th>
<th>members</th><th>topics</th><th>lag</th></tr></thead><tbody>{grows}</tbody></table>
<h2>Brokers</h2><table><thead><tr><th>id</th><th>address</th></tr></thead>
<tbody>{brokers}</tbody></table></section>
</div>"""
    return layout(ctx, "Overview", body, "overview", msg)


# ---------------------------------------------------------------------------- topic
def _pretty(b: bytes | None) -> str:
    s = text(b)
    if s is None:
        return '<span class="null">null</span>'
    st = s.lstrip()
    if st[:1] in ("{", "["):
        try:
            return f'<pre class="json">{h(json.dumps(json.loads(s), indent=2))}</pre>'
        except ValueError:
            pass
    return f"<pre>{h(s)}</pre>"


def record_json(m: Any) -> dict[str, Any]:
    """A consumed message as the tail stream sends it (value pretty-printed when JSON)."""
    r = Record.from_message(m)
    return r.to_json() | {"time": _ts(r.timestamp), "value_html": _pretty(r.value)}


def _record_rows(records: Iterable[Record]) -> str:
    return "".join(
        f'<tr><td class="num">{r.partition}</td><td class="num">{r.offset}</td>'
        f'<td class="ts" title="{r.timestamp}">{_ts(r.timestamp)}</td>'
        f"<td><code>{h(text(r.key))}</code></td><td class=\"value\">{_pretty(r.value)}</td>"
        f'<td class="headers">'
        f'{"<br>".join(f"{h(k)}={h(text(v))}" for k, v in r.headers)}</td></tr>'
        for r in records)


def _cleaning(states: list[dict[str, Any]] | None) -> str:
    """The log cleaner's state of a compacted topic's partitions (in-process brokers)."""
    if not states:
        return ""
    rows = "".join(
        f'<tr><td class="num">{c["partition"]}</td><td class="num">{c["dirty_ratio"]:.2f}</td>'
        f'<td class="num">{c["first_dirty_offset"]}</td>'
        f'<td>{h(_when(c["last_clean_ms"]))}</td><td class="num">{c["passes"]}</td>'
        f'<td class="num">{c["bytes_reclaimed"]}</td></tr>' for c in states)
    return ('<section id="cleaning"><h2>Cleaning <small>log compaction</small></h2><table>'
            "<thead><tr><th>partition</th><th>dirty ratio</th><th>first dirty offset</th>"
            "<th>last clean (UTC)</th><th>passes</th><th>bytes reclaimed</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")


def _when(ms: int) -> str:
    if ms < 0:
        return "never"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


POLICY_WARNING = ("Changing cleanup.policy: compact removes all but the latest record of each "
                  "key (and tombstones after delete.retention.ms); delete removes whole "
                  "segments by age and size. Records removed cannot be brought back. Go on?")


def topic(ctx: Ctx, info: TopicInfo, records: list[Record], seek: dict[str, str],
          newest_first: bool, msg: str | None = None,
          cleaning: list[dict[str, Any]] | None = None) -> str:
    name = info.name
    prows = "".join(
        f'<tr><td class="num">{p.partition}</td><td class="num">{p.leader}</td>'
        f'<td>{h(",".join(map(str, p.replicas)))}</td><td class="num">{p.start}</td>'
        f'<td class="num">{p.end}</td><td class="num">{p.messages}</td></tr>'
        for p in info.partitions)
    crows = "".join(
        f'<tr class="{"default" if c["default"] else "set"}"><td>{h(c["name"])}</td>'
        f'<td><code>{h(c["value"])}</code></td><td>{h(c["source"].lower())}</td></tr>'
        for c in info.configs)
    opts = "".join(
        f'<option value="{p.partition}"{" selected" if seek["partition"] == str(p.partition) else ""}>'
        f"{p.partition}</option>" for p in info.partitions)
    rows = _record_rows(records) or (
        '<tr class="none"><td colspan="6" class="empty">no messages here</td></tr>')
    order = ("newest first" if newest_first
             else "from the seek position, oldest first")
    actions = "" if ctx.read_only else f"""
<section class="action-panel"><h2>Produce</h2>
<form method="post" action="/topics/{_u(name)}/produce" class="grid" id="produce-form">
<label>Key <input name="key" placeholder="optional"></label>
<label>Partition <select name="partition"><option value="">any</option>{opts}</select></label>
<label class="wide">Value <textarea name="value" rows="3" placeholder='{{"hello": "world"}}'></textarea></label>
<label class="wide">Headers (key=value per line) <textarea name="headers" rows="2"></textarea></label>
<button>Produce</button></form></section>
<details class="action"><summary>Alter or delete this topic</summary>
<form method="post" action="/topics/{_u(name)}/alter" class="grid"
 data-confirm-if="cleanup.policy" data-confirm-text="{h(POLICY_WARNING)}">
<label>Partitions (increase) <input name="partitions" type="number" min="{len(info.partitions)}"></label>
<label class="wide">Set configs (key=value per line) <textarea name="configs" rows="2"></textarea></label>
<label>Reset configs to default (comma separated) <input name="delete"></label>
<button>Alter</button></form>
<form method="post" action="/topics/{_u(name)}/delete" class="grid danger"
 data-confirm="Delete topic {h(name)} and all its messages?">
<label>Type <code>{h(name)}</code> to confirm <input name="confirm" required></label>
<button class="danger">Delete topic</button></form></details>"""
    body = f"""
<h1><small>topic</small> {h(name)}</h1>
<section class="cards">
{card("partitions", len(info.partitions))}
{card("messages", info.messages)}
{card("end offsets", info.end_offset_total)}
</section>
<section><h2>Messages <small>{order}</small></h2>
<form method="get" class="seek">
<label>Partition <select name="partition"><option value="">all</option>{opts}</select></label>
<label>From offset <input name="offset" type="number" min="0" value="{h(seek['offset'])}"></label>
<label>From time <input name="time" placeholder="ms or 2025-01-31T12:00" value="{h(seek['time'])}"></label>
<label>Contains <input name="q" value="{h(seek['q'])}"></label>
<label>Limit <input name="limit" type="number" min="1" max="1000" value="{h(seek['limit'])}"></label>
<button>Show</button> <a href="/topics/{_u(name)}">newest</a>
<button type="button" id="tail-toggle" data-tail="/topics/{_u(name)}/tail">Live tail</button>
<span id="tail-status"></span>
</form>
<table id="messages"><thead><tr><th>partition</th><th>offset</th><th>timestamp (UTC)</th>
<th>key</th><th>value</th><th>headers</th></tr></thead><tbody>{rows}</tbody></table>
</section>
{actions}
{_cleaning(cleaning)}
<div class="cols">
<section><h2>Partitions</h2><table><thead><tr><th>partition</th><th>leader</th><th>replicas</th>
<th>start</th><th>end</th><th>messages</th></tr></thead><tbody>{prows}</tbody></table></section>
<section><h2>Configs</h2><table class="configs"><thead><tr><th>name</th><th>value</th>
<th>source</th></tr></thead><tbody>{crows}</tbody></table></section>
</div>"""
    return layout(ctx, name, body, "", msg)


# ---------------------------------------------------------------------------- group
def group(ctx: Ctx, g: GroupInfo, msg: str | None = None) -> str:
    mrows = "".join(
        f"<tr><td><code>{h(m.member_id)}</code></td><td>{h(m.client_id)}</td>"
        f"<td>{h(m.host)}</td><td>{h(m.instance_id)}</td>"
        f'<td>{h(", ".join(f"{t}-{p}" for t, p in m.assignment))}</td></tr>'
        for m in g.members) or '<tr><td colspan="5" class="empty">no active members</td></tr>'
    max_lag = max([p.lag or 0 for p in g.partitions] + [1])
    client_of = {m.member_id: f"{m.client_id} ({m.host})" for m in g.members}
    orows = "".join(
        f'<tr><td><a href="/topics/{_u(p.topic)}">{h(p.topic)}</a></td>'
        f'<td class="num">{p.partition}</td><td class="num">{h(p.committed)}</td>'
        f'<td class="num">{p.end}</td><td class="num lag">{h(p.lag)}</td>'
        f'<td><div class="bar"><span style="width:{100 * (p.lag or 0) // max_lag}%"></span>'
        f"</div></td><td>{h(client_of.get(p.member or ''))}</td></tr>"
        for p in g.partitions) or (
        '<tr><td colspan="7" class="empty">no committed offsets</td></tr>')
    topics = "".join(f'<option value="{h(t)}">{h(t)}</option>' for t in g.topics)
    actions = "" if ctx.read_only else f"""
<section class="action-panel"><h2>Reset offsets</h2>
<p>Consumers of the group must be stopped first (Kafka refuses to move the offsets of an
active group). You will see what changes before anything is applied.</p>
<form method="post" action="/groups/{_u(g.group_id)}/reset" class="grid">
<label>Topic <select name="topic"><option value="">all topics of the group</option>{topics}</select></label>
<label>To <select name="to"><option value="earliest">earliest</option>
<option value="latest">latest</option><option value="offset">offset</option></select></label>
<label>Offset <input name="offset" type="number" min="0"></label>
<button>Preview reset</button></form>
<form method="post" action="/groups/{_u(g.group_id)}/delete" class="inline"
 data-confirm="Delete group {h(g.group_id)} and its committed offsets?">
<button class="danger">Delete group</button></form></section>"""
    body = f"""
<h1><small>consumer group</small> {h(g.group_id)}</h1>
<section class="cards">
{card("state", f'<span class="state {h(g.state.lower())}">{h(g.state.lower())}</span>')}
{card("members", len(g.members))}
{card("total lag", g.total_lag, id="total-lag")}
{card("assignor", h(g.protocol or '-'), small=True)}
{card("coordinator", h(g.coordinator), small=True)}
</section>
<section><h2>Offsets and lag</h2><table id="offsets"><thead><tr><th>topic</th><th>partition</th>
<th>committed</th><th>end</th><th>lag</th><th></th><th>consumer</th></tr></thead>
<tbody>{orows}</tbody></table></section>
<section><h2>Members</h2><table><thead><tr><th>member id</th><th>client id</th><th>host</th>
<th>instance id</th><th>assignment</th></tr></thead><tbody>{mrows}</tbody></table></section>
{actions}"""
    return layout(ctx, g.group_id, body, "", msg)


def reset_preview(ctx: Ctx, gid: str, rows: list[ResetRow], form: dict[str, str]) -> str:
    trs = "".join(
        f"<tr><td>{h(r.topic)}</td><td class=\"num\">{r.partition}</td>"
        f'<td class="num">{h(r.current)}</td><td class="num">{r.new}</td></tr>' for r in rows)
    hidden = "".join(f'<input type="hidden" name="{h(k)}" value="{h(v)}">'
                     for k, v in form.items() if k not in ("execute", CSRF_FIELD))
    body = f"""
<h1><small>reset offsets of</small> {h(gid)}</h1>
<p>Nothing has changed yet. Confirm to move these committed offsets:</p>
<table><thead><tr><th>topic</th><th>partition</th><th>current</th><th>new</th></tr></thead>
<tbody>{trs}</tbody></table>
<form method="post" action="/groups/{_u(gid)}/reset" class="inline">{hidden}
<input type="hidden" name="execute" value="1"><button class="danger">Confirm reset</button>
<a href="/groups/{_u(gid)}">Cancel</a></form>"""
    return layout(ctx, f"reset {gid}", body)


# ---------------------------------------------------------------------------- map
def backbone_map(ctx: Ctx, graph: dict[str, Any]) -> str:
    # "</" cannot appear inside the script element: JSON escapes it as "<\\/".
    data = json.dumps(graph).replace("</", "<\\/")
    body = f"""<script type="application/json" id="map-data">{data}</script>
<h1>Backbone map <small>producers → topics → consumer groups, live</small></h1>
<p id="map-note" class="note"></p>
<div class="map-wrap"><svg id="map" data-src="/api/map" width="1200" height="600"
 role="img" aria-label="backbone map"></svg></div>
<p class="legend"><span class="lg producer"></span>producer <span class="lg topic"></span>topic
<span class="lg group"></span>consumer group <span class="lg consumer"></span>consumer outside
a group · animated edges: traffic in the last 10 s · edge labels: bytes moved, or lag</p>"""
    return layout(ctx, "Backbone map", body, "map")


# ---------------------------------------------------------------------------- metrics
def _label(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus(topics: list[TopicInfo], groups: list[GroupInfo],
               acct: dict[str, list[dict[str, Any]]] | None) -> str:
    """Prometheus text exposition format 0.0.4."""
    out: list[str] = []

    def metric(name: str, kind: str, help_: str,
               samples: Iterable[tuple[dict[str, object], float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lbl = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{lbl}}} {value}" if lbl else f"{name} {value}")

    metric("nerve_up", "gauge", "1 if the console could read the cluster.", [({}, 1)])
    metric("nerve_topic_partitions", "gauge", "Partitions of each topic.",
           [({"topic": t.name}, len(t.partitions)) for t in topics])
    metric("nerve_topic_partition_end_offset", "gauge",
           "Offset the next message of the partition will get (high watermark).",
           [({"topic": t.name, "partition": p.partition}, p.end)
            for t in topics for p in t.partitions])
    metric("nerve_topic_partition_start_offset", "gauge",
           "Oldest offset still in the partition (log start offset).",
           [({"topic": t.name, "partition": p.partition}, p.start)
            for t in topics for p in t.partitions])
    metric("nerve_topic_records_in_total", "counter",
           "Records ever appended to the topic (sum of end offsets).",
           [({"topic": t.name}, t.end_offset_total) for t in topics])
    metric("nerve_topic_records", "gauge", "Records the topic holds now.",
           [({"topic": t.name}, t.messages) for t in topics])
    metric("nerve_consumer_group_members", "gauge", "Active members of each group.",
           [({"group": g.group_id}, len(g.members)) for g in groups])
    metric("nerve_consumer_group_state", "gauge", "1 for the group's current state.",
           [({"group": g.group_id, "state": g.state.lower()}, 1) for g in groups])
    metric("nerve_consumer_group_committed_offset", "gauge", "Committed offset per partition.",
           [({"group": g.group_id, "topic": p.topic, "partition": p.partition}, p.committed)
            for g in groups for p in g.partitions if p.committed is not None])
    metric("nerve_consumer_group_lag", "gauge",
           "Messages between the committed offset and the end of the partition.",
           [({"group": g.group_id, "topic": p.topic, "partition": p.partition}, p.lag)
            for g in groups for p in g.partitions if p.lag is not None])
    metric("nerve_consumer_group_total_lag", "gauge", "Lag of the group over all partitions.",
           [({"group": g.group_id}, g.total_lag) for g in groups])
    if acct is not None:
        for kind, verb in (("produced", "produce"), ("fetched", "fetch")):
            rows = acct[kind]
            metric(f"nerve_client_{kind}_bytes_total", "counter",
                   f"Bytes in {verb} requests per client and topic (broker accounting).",
                   [({"client_id": r["client_id"], "host": r["host"], "topic": r["topic"]},
                     r["bytes"]) for r in rows])
            metric(f"nerve_client_{verb}_requests_total", "counter",
                   f"{verb.capitalize()} requests per client and topic (broker accounting).",
                   [({"client_id": r["client_id"], "host": r["host"], "topic": r["topic"]},
                     r["requests"]) for r in rows])
    return "\n".join(out) + "\n"
