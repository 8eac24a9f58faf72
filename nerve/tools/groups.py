"""`nerve groups list|describe|reset-offsets|delete-offsets|delete`."""

from __future__ import annotations

import csv
import datetime as dt
import re
import time
from pathlib import Path

import click

from nerve.tools.base import ToolError
from nerve.tools.common import (
    _bootstrap_options,
    _cluster,
    _dump,
    _json_option,
    _tool_errors,
    parse_partitions,
    table,
)


@click.group()
def groups() -> None:
    """List, describe, reset and delete consumer groups."""


@groups.command("list")
@_bootstrap_options
@_json_option
@_tool_errors
def groups_list(bootstrap: str, timeout: float, as_json: bool) -> None:
    """Consumer groups and their state."""
    gs = _cluster(bootstrap, timeout).list_groups()
    if as_json:
        _dump([g.__dict__ for g in gs])
        return
    click.echo(table(["GROUP", "STATE", "TYPE"],
                     [[g.group_id, g.state, "simple" if g.simple else g.group_type.lower()]
                      for g in gs]))


@groups.command("describe")
@click.argument("group")
@_bootstrap_options
@_json_option
@_tool_errors
def groups_describe(group: str, bootstrap: str, timeout: float, as_json: bool) -> None:
    """Members, and committed offset, end offset and lag of every partition of GROUP."""
    info = _cluster(bootstrap, timeout).describe_group(group)
    if as_json:
        _dump(info.to_json())
        return
    click.echo(f"Group: {info.group_id}  state: {info.state}  members: {len(info.members)}  "
               f"total lag: {info.total_lag}")
    client_of = {m.member_id: f"{m.client_id}/{m.host}" for m in info.members}
    click.echo(table(
        ["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "CONSUMER"],
        [[p.topic, p.partition, p.committed, p.end, p.lag, client_of.get(p.member or "")]
         for p in info.partitions]))


_DURATION = re.compile(r"^(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration(s: str) -> float:
    """ISO-8601 duration as Kafka's --by-duration takes it (java.time.Duration): PnDTnHnMn.nS,
    e.g. PT15M, P1DT2H, PT0.5S. Returns seconds."""
    m = _DURATION.match(s.strip().upper())
    if not m or s.strip().upper() in ("P", "PT", "-P", "-PT"):
        raise click.BadParameter(f"expected an ISO-8601 duration like PT15M or P1DT2H, got "
                                 f"{s!r}", param_hint="--by-duration")
    sign, d, h, mi, sec = m.groups()
    total = int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(sec or 0)
    return -total if sign else total


def parse_datetime(s: str) -> int:
    """Kafka's --to-datetime 'YYYY-MM-DDTHH:mm:SS.sss', optionally with a zone (Z, +01:00);
    without one, local time as Kafka's tool. Returns ms since the epoch."""
    try:
        t = dt.datetime.fromisoformat(s.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"expected YYYY-MM-DDTHH:mm:SS[.sss][zone], got {s!r}",
                                 param_hint="--to-datetime") from None
    return int(t.timestamp() * 1000)


def read_offsets_file(path: Path) -> dict[tuple[str, int], int]:
    """Kafka's --from-file CSV: topic,partition,offset per line (as --export writes it)."""
    out = {}
    with path.open(newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip() or row[0].startswith("#"):
                continue
            try:
                topic, part, off = (c.strip() for c in row[-3:])
                out[(topic, int(part))] = int(off)
            except ValueError:
                raise ToolError(f"{path}:{n}: expected topic,partition,offset") from None
    if not out:
        raise ToolError(f"{path}: no offsets in it")
    return out


@groups.command("reset-offsets")
@click.argument("group")
@_bootstrap_options
@click.option("--topic", "-t", "topics_", multiple=True, metavar="TOPIC[:P1,P2]",
              help="Only these topics, or these partitions of them (repeatable; default: "
                   "every topic the group committed).")
@click.option("--to-earliest", is_flag=True, help="Reset to the oldest message.")
@click.option("--to-latest", is_flag=True, help="Reset to the end.")
@click.option("--to-current", is_flag=True, help="Reset to the committed offset (a no-op "
              "that fills in partitions with none).")
@click.option("--to-offset", type=int, default=None,
              help="Reset to this offset (clamped to each partition's range).")
@click.option("--shift-by", type=int, default=None, metavar="N",
              help="Move the committed offset by N (negative: back).")
@click.option("--to-datetime", default=None, metavar="YYYY-MM-DDTHH:mm:SS.sss",
              help="Reset to the first message at or after this time.")
@click.option("--by-duration", default=None, metavar="PnDTnHnMnS",
              help="Reset to the first message at or after now minus this ISO-8601 duration.")
@click.option("--from-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Reset to the offsets of a CSV file: topic,partition,offset.")
@click.option("--execute", is_flag=True, help="Apply the change (default: dry run).")
@click.option("--export", is_flag=True, help="Print the plan as CSV (for --from-file).")
@_json_option
@_tool_errors
def groups_reset_offsets(group: str, bootstrap: str, timeout: float, topics_: tuple[str, ...],
                         to_earliest: bool, to_latest: bool, to_current: bool,
                         to_offset: int | None, shift_by: int | None, to_datetime: str | None,
                         by_duration: str | None, from_file: Path | None, execute: bool,
                         export: bool, as_json: bool) -> None:
    """Move GROUP's committed offsets. A dry run unless --execute, as in Kafka."""
    from nerve.tools.ops import plan_reset

    given = {"--to-earliest": to_earliest, "--to-latest": to_latest,
             "--to-current": to_current, "--to-offset": to_offset is not None,
             "--shift-by": shift_by is not None, "--to-datetime": to_datetime is not None,
             "--by-duration": by_duration is not None, "--from-file": from_file is not None}
    chosen = [k for k, v in given.items() if v]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of " + ", ".join(given)
                               + (f" (got {', '.join(chosen)})" if chosen else ""))
    selection = [parse_partitions(t) for t in topics_]
    value: int | None = None
    file_offsets = None
    if to_earliest:
        mode = "earliest"
    elif to_latest:
        mode = "latest"
    elif to_current:
        mode = "current"
    elif to_offset is not None:
        mode, value = "offset", to_offset
    elif shift_by is not None:
        mode, value = "shift", shift_by
    elif to_datetime is not None:
        mode, value = "timestamp", parse_datetime(to_datetime)
    elif by_duration is not None:
        mode = "timestamp"
        value = int((time.time() - parse_duration(by_duration)) * 1000)
    else:
        assert from_file is not None
        mode, file_offsets = "file", read_offsets_file(from_file)
        if selection:
            raise click.UsageError("--from-file names its own partitions: drop --topic")
    cluster = _cluster(bootstrap, timeout)
    rows = plan_reset(cluster, group, mode, value, selection, file_offsets)
    if execute:
        cluster.execute_reset(group, rows)
    if export:
        for r in rows:
            click.echo(f"{r.topic},{r.partition},{r.new}")
    elif as_json:
        _dump({"group": group, "executed": execute, "partitions": [r.__dict__ for r in rows]})
    else:
        click.echo(table(["TOPIC", "PARTITION", "CURRENT", "NEW"],
                         [[r.topic, r.partition, r.current, r.new] for r in rows]))
    click.echo(f"offsets of group {group} reset" if execute
               else "dry run: nothing changed (add --execute to apply)", err=True)


@groups.command("delete-offsets")
@click.argument("group")
@_bootstrap_options
@click.option("--topic", "-t", "topics_", multiple=True, required=True,
              metavar="TOPIC[:P1,P2]", help="Topic, or some of its partitions (repeatable).")
@_json_option
@_tool_errors
def groups_delete_offsets(group: str, bootstrap: str, timeout: float,
                          topics_: tuple[str, ...], as_json: bool) -> None:
    """Forget GROUP's committed offsets of some topics or partitions (OffsetDelete).

    Kafka refuses it for a topic that an active member of the group is subscribed to."""
    from nerve.tools.ops import delete_offsets

    cluster = _cluster(bootstrap, timeout)
    committed = cluster.committed(group)
    tps: list[tuple[str, int]] = []
    for topic, parts in (parse_partitions(t) for t in topics_):
        if parts is None:
            parts = sorted({p for t, p in committed if t == topic}) or sorted(
                cluster.require_topic(topic).partitions)
        tps += [(topic, p) for p in parts]
    result = delete_offsets(cluster, group, tps)
    if as_json:
        _dump([{"topic": t, "partition": p, "error": e} for (t, p), e in sorted(result.items())])
    else:
        click.echo(table(["TOPIC", "PARTITION", "RESULT"],
                         [[t, p, e or "deleted"] for (t, p), e in sorted(result.items())]))
    failed = [e for e in result.values() if e]
    if failed:
        raise ToolError(f"{len(failed)} partition(s) not deleted: {failed[0]}")


@groups.command("delete")
@click.argument("group")
@_bootstrap_options
@_tool_errors
def groups_delete(group: str, bootstrap: str, timeout: float) -> None:
    """Delete GROUP (it must have no active members)."""
    _cluster(bootstrap, timeout).delete_group(group)
    click.echo(f"deleted group {group}")
