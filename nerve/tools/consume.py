"""`nerve consume`: print records of one or more topics (names, globs or ^regexes).

Where to start and stop follows kcat's `-o`: beginning, end, N, -N (the last N of each
partition), s@MS (first record at or after a time), e@MS (stop before a time), A:B (offsets A
up to B, exclusive). Bytes that are not UTF-8 print as hex or base64 (--binary), never lossy.
"""

from __future__ import annotations

import fnmatch
import json
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from nerve.tools.base import ToolError, UnknownTopic
from nerve.tools.common import (
    BINARY_CHOICES,
    _bootstrap_options,
    _cluster,
    _json_option,
    _tool_errors,
    is_pattern,
    match_topics,
    show,
    unescape,
)

if TYPE_CHECKING:
    from nerve.tools.kafka import Cluster, Record

_FORMAT_HELP = ("Python format string with {topic} {partition} {offset} {timestamp} {key} "
                "{value} {headers} (k=v,...) {headers_json} {key_encoding} {value_encoding}; "
                "escapes \\t \\n; default '{value}'.")


@dataclass
class Span:
    """Where each partition starts (mode, value) and where it stops (None: never)."""

    start: str = "end"  # beginning, end, offset, last, timestamp
    start_value: int = 0
    stop_offset: int | None = None  # exclusive
    stop_time: int | None = None  # ms, exclusive

    @property
    def bounded(self) -> bool:
        return self.stop_offset is not None or self.stop_time is not None


def _int(s: str, spec: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise click.BadParameter(
            f"{spec!r}: expected beginning, end, N, -N, s@MS, e@MS or A:B",
            param_hint="--offset") from None


def parse_offsets(specs: tuple[str, ...], from_beginning: bool,
                  timestamp: int | None) -> Span:
    span = Span()
    starts = int(from_beginning) + int(timestamp is not None)
    if from_beginning:
        span.start = "beginning"
    if timestamp is not None:
        span.start, span.start_value = "timestamp", timestamp
    for spec in specs:
        s = spec.strip().lower()
        if s.startswith("e@"):
            span.stop_time = _int(s[2:], spec)
            continue
        starts += 1
        if s in ("beginning", "earliest", "oldest"):
            span.start = "beginning"
        elif s in ("end", "latest", "newest"):
            span.start = "end"
        elif s.startswith("s@"):
            span.start, span.start_value = "timestamp", _int(s[2:], spec)
        elif ":" in s:
            a, _, b = s.partition(":")
            span.start, span.start_value = ("offset", _int(a, spec)) if a else ("beginning", 0)
            if b:
                span.stop_offset = _int(b, spec)
        elif s.startswith("-"):
            span.start, span.start_value = "last", -_int(s, spec)
        else:
            span.start, span.start_value = "offset", _int(s, spec)
    if starts > 1:
        raise click.UsageError("give one start: --from-beginning, --timestamp or one --offset "
                               "(plus an e@MS end)")
    return span


@click.command()
@click.argument("topics", nargs=-1, required=True, metavar="TOPIC|PATTERN...")
@_bootstrap_options
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message.")
@click.option("--offset", "-o", "offsets", multiple=True, metavar="SPEC",
              help="beginning, end, N, -N (last N per partition), s@MS, e@MS (stop before "
                   "that time), A:B (offsets A to B, exclusive). An end implies --exit at it.")
@click.option("--timestamp", type=int, default=None, metavar="MS",
              help="Start at the first message at or after this time (ms since epoch).")
@click.option("--partition", type=int, default=None, help="Read this partition only.")
@click.option("--group", "-g", default=None,
              help="Consume as this consumer group (committed offsets decide the start; "
                   "what is printed is committed).")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=None,
              help="Stop after this many messages.")
@click.option("--exit", "-e", "exit_at_end", is_flag=True,
              help="Stop when the end of every partition is reached.")
@click.option("--format", "fmt", default="{value}", show_default=False, help=_FORMAT_HELP)
@click.option("--binary", type=click.Choice(BINARY_CHOICES), default="hex", show_default=True,
              help="How keys and values that are not UTF-8 are printed.")
@click.option("--null", "-Z", "show_null", is_flag=True,
              help="Print null keys and values as NULL (not as nothing), as kcat -Z.")
@_json_option
@_tool_errors
def consume(topics: tuple[str, ...], bootstrap: str, timeout: float, from_beginning: bool,
            offsets: tuple[str, ...], timestamp: int | None, partition: int | None,
            group: str | None, limit: int | None, exit_at_end: bool, fmt: str, binary: str,
            show_null: bool, as_json: bool) -> None:
    """Print messages of TOPIC(s) as they arrive (from the end unless told otherwise).

    A TOPIC may be a glob ('orders-*') or a regex ('^orders-.*')."""
    span = parse_offsets(offsets, from_beginning, timestamp)
    if group and (offsets or timestamp is not None or partition is not None):
        raise click.UsageError("--offset, --timestamp and --partition cannot be combined with "
                               "--group (the group's committed offsets decide where to start)")
    fmt = unescape(fmt)
    cluster = _cluster(bootstrap, timeout)
    names = cluster.topic_names(include_internal=True)
    if group:
        chosen = [t for t in topics if is_pattern(t) or t in names]
        missing = [t for t in topics if t not in chosen]
    else:
        chosen = match_topics(topics, names)
        missing = [t for t in chosen if t not in names]
    if missing:
        raise UnknownTopic(f"unknown topic '{missing[0]}'")
    if not chosen:
        raise ToolError(f"no topic matches {' '.join(topics)}")
    count = 0

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM leaves the group as Ctrl-C does (close() below)

    signal.signal(signal.SIGTERM, stop)
    try:
        for rec in _records(cluster, chosen, span, partition, group, from_beginning,
                            exit_at_end):
            click.echo(json.dumps(to_json(rec, binary)) if as_json
                       else _format(fmt, rec, binary, show_null))
            count += 1
            if limit is not None and count >= limit:
                break
    except KeyboardInterrupt:
        pass
    finally:
        sys.stdout.flush()


def to_json(r: Record, binary: str) -> dict[str, Any]:
    key, kenc = show(r.key, binary)
    value, venc = show(r.value, binary)
    out: dict[str, Any] = {
        "topic": r.topic, "partition": r.partition, "offset": r.offset,
        "timestamp": r.timestamp, "key": key, "value": value,
        "headers": {k: show(v, binary)[0] for k, v in r.headers},
    }
    if kenc != "utf-8":
        out["key_encoding"] = kenc
    if venc != "utf-8":
        out["value_encoding"] = venc
    return out


def _format(fmt: str, r: Record, binary: str, show_null: bool) -> str:
    null = "NULL" if show_null else ""
    key, kenc = show(r.key, binary)
    value, venc = show(r.value, binary)
    try:
        return fmt.format(
            topic=r.topic, partition=r.partition, offset=r.offset, timestamp=r.timestamp,
            key=null if key is None else key, value=null if value is None else value,
            key_encoding=kenc, value_encoding=venc,
            headers=",".join(f"{k}={show(v, binary)[0] or ''}" for k, v in r.headers),
            headers_json=json.dumps({k: show(v, binary)[0] for k, v in r.headers}),
        )
    except (KeyError, IndexError, ValueError) as e:
        raise ToolError(f"bad --format {fmt!r}: {e}") from None


def _start_offsets(cluster: Cluster, tps: list[tuple[str, int]], span: Span
                   ) -> dict[tuple[str, int], int]:
    marks = cluster.watermarks(tps)
    by_time = (cluster.offsets(tps, "timestamp", span.start_value)
               if span.start == "timestamp" else {})
    out = {}
    for tp in tps:
        start, end = marks[tp]
        if span.start == "beginning":
            out[tp] = start
        elif span.start == "offset":
            out[tp] = min(max(span.start_value, start), end)
        elif span.start == "last":
            out[tp] = max(start, end - span.start_value)
        elif span.start == "timestamp":
            off = by_time.get(tp, -1)
            out[tp] = off if off >= 0 else end
        else:
            out[tp] = end
    return out


def _records(cluster: Cluster, topics: list[str], span: Span, partition: int | None,
             group: str | None, from_beginning: bool, exit_at_end: bool) -> Iterator[Record]:
    from confluent_kafka import KafkaError, TopicPartition

    from nerve.tools.kafka import _UNREACHABLE, Record

    down: list[bool] = [False]

    def on_error(err: Any) -> None:
        # Reported once while the broker is away; librdkafka keeps reconnecting meanwhile.
        if err.code() in _UNREACHABLE and not down[0]:
            down[0] = True
            click.echo(f"warning: cannot reach broker at {cluster.bootstrap}; retrying",
                       err=True)

    done: set[tuple[str, int]] = set()
    if group:
        c = cluster.consumer(**{
            "group.id": group, "enable.auto.commit": True, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "error_cb": on_error,
        })
        c.subscribe([t if not is_pattern(t) or t.startswith("^")
                     else "^" + fnmatch.translate(t) for t in topics])
    else:
        md = cluster.metadata()
        tps = []
        for t in topics:
            parts = sorted(md.topics[t].partitions)
            if partition is not None:
                if partition not in parts:
                    raise ToolError(f"topic '{t}' has no partition {partition}")
                parts = [partition]
            tps += [(t, p) for p in parts]
        pos = _start_offsets(cluster, tps, span)
        if span.stop_offset is not None:
            done = {tp for tp, o in pos.items() if o >= span.stop_offset}
            if len(done) == len(tps):
                return
        c = cluster.consumer(error_cb=on_error)
        c.assign([TopicPartition(t, p, o) for (t, p), o in pos.items() if (t, p) not in done])
    at_end: set[tuple[str, int]] = set()
    bounded = span.bounded
    try:
        while True:
            for m in c.consume(500, 0.2):
                tp = (m.topic(), m.partition())
                err = m.error()
                if down[0] and err is None:
                    # A record: the broker answers again. (Not an end-of-partition event:
                    # one queued before the outage may be handed out after its warning.)
                    down[0] = False
                    click.echo(f"reconnected to {cluster.bootstrap}", err=True)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(tp)
                        assigned = {(a.topic, a.partition) for a in c.assignment()}
                        if exit_at_end and assigned and assigned <= at_end | done:
                            return
                        continue
                    if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise ToolError(f"unknown topic '{m.topic()}'")
                    if err.fatal():
                        raise ToolError(f"consumer error: {err.str()}")
                    continue
                at_end.discard(tp)
                if tp in done:
                    continue
                if bounded and ((span.stop_offset is not None
                                 and m.offset() >= span.stop_offset)
                                or (span.stop_time is not None
                                    and m.timestamp()[1] >= span.stop_time)):
                    done.add(tp)
                    if len(done) == len(c.assignment()):
                        return
                    continue
                if group:
                    # Stored before the yield: a caller that stops after this record (--limit)
                    # never resumes the generator, and close() commits what was stored.
                    c.store_offsets(m)
                yield Record.from_message(m)
                if span.stop_offset is not None and m.offset() + 1 >= span.stop_offset:
                    done.add(tp)
                    if len(done) == len(c.assignment()):
                        return
    finally:
        c.close()  # leaves the group; with a group, commits what was stored (= printed)
