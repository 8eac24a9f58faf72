"""Click commands: `nerve topics|produce|consume|groups|console`, registered by nerve.cli.

Tables for people, `--json` for scripts. Every failure a person can act on is one line on
stderr ("Error: cannot reach broker at 127.0.0.1:9092") and exit code 1; usage errors exit 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from nerve.tools.base import DEFAULT_BOOTSTRAP, ToolError, text

if TYPE_CHECKING:
    from nerve.tools.kafka import Cluster, Record


def _cluster(bootstrap: str, timeout: float, client_id: str = "nerve-cli") -> Cluster:
    # Imported on use: `nerve serve` should not pay for confluent-kafka at start-up.
    from nerve.tools.kafka import Cluster as _Cluster

    return _Cluster(bootstrap, timeout, client_id)

F = TypeVar("F", bound=Callable[..., Any])


def _bootstrap_options(fn: F) -> F:
    fn = click.option("--timeout", type=float, default=5.0, show_default=True,
                      help="Seconds to wait for the broker.")(fn)
    fn = click.option("--bootstrap-server", "-b", "bootstrap", envvar="NERVE_BOOTSTRAP_SERVER",
                      default=DEFAULT_BOOTSTRAP, show_default=True, metavar="HOST:PORT",
                      help="Kafka bootstrap address (env NERVE_BOOTSTRAP_SERVER).")(fn)
    return fn


def _json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")(fn)


def _tool_errors(fn: F) -> F:
    """ToolError -> one line on stderr and exit 1 (click's ClickException)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ToolError as e:
            raise click.ClickException(str(e)) from None

    return wrapper  # type: ignore[return-value]


def _kv(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint=what)
        out[k] = v
    return out


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    return "\n".join(lines)


def _dump(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


# ============================================================================ topics
@click.group()
def topics() -> None:
    """List, describe, create, alter and delete topics."""


@topics.command("list")
@_bootstrap_options
@_json_option
@click.option("--internal", is_flag=True, help="Include internal topics (__...).")
@_tool_errors
def topics_list(bootstrap: str, timeout: float, as_json: bool, internal: bool) -> None:
    """Topics with their partition count and message count."""
    infos = _cluster(bootstrap, timeout).topics(include_internal=internal)
    if as_json:
        _dump([{"name": t.name, "partitions": len(t.partitions), "messages": t.messages,
                "end_offset_total": t.end_offset_total} for t in infos])
        return
    click.echo(table(["TOPIC", "PARTITIONS", "MESSAGES", "END OFFSETS"],
                     [[t.name, len(t.partitions), t.messages, t.end_offset_total]
                      for t in infos]))


@topics.command("describe")
@click.argument("topic")
@_bootstrap_options
@_json_option
@click.option("--all-configs", is_flag=True, help="Also show configs left at their default.")
@_tool_errors
def topics_describe(topic: str, bootstrap: str, timeout: float, as_json: bool,
                    all_configs: bool) -> None:
    """Partitions (leader, replicas, start/end offsets) and configs of TOPIC."""
    info = _cluster(bootstrap, timeout).describe_topic(topic)
    if as_json:
        _dump(info.to_json())
        return
    click.echo(f"Topic: {info.name}  partitions: {len(info.partitions)}  "
               f"messages: {info.messages}")
    click.echo(table(["PARTITION", "LEADER", "REPLICAS", "ISR", "START", "END", "MESSAGES"],
                     [[p.partition, p.leader, ",".join(map(str, p.replicas)),
                       ",".join(map(str, p.isr)), p.start, p.end, p.messages]
                      for p in info.partitions]))
    shown = [c for c in info.configs if all_configs or not c["default"]]
    click.echo("Configs:" + ("" if shown else " (all default; --all-configs shows them)"))
    if shown:
        click.echo(table(["NAME", "VALUE", "SOURCE"],
                         [[c["name"], c["value"], c["source"]] for c in shown]))


@topics.command("create")
@click.argument("topic")
@_bootstrap_options
@click.option("--partitions", "-p", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--replication-factor", "-r", type=click.IntRange(min=1), default=1,
              show_default=True)
@click.option("--config", "-c", "configs", multiple=True, metavar="KEY=VALUE",
              help="A topic config (repeatable), e.g. retention.ms=60000.")
@_tool_errors
def topics_create(topic: str, bootstrap: str, timeout: float, partitions: int,
                  replication_factor: int, configs: tuple[str, ...]) -> None:
    """Create TOPIC."""
    _cluster(bootstrap, timeout).create_topic(topic, partitions, replication_factor,
                                             _kv(configs, "--config"))
    click.echo(f"created topic {topic} ({partitions} partition(s))")


@topics.command("alter")
@click.argument("topic")
@_bootstrap_options
@click.option("--partitions", "-p", type=click.IntRange(min=1), default=None,
              help="New (larger) partition count.")
@click.option("--config", "-c", "configs", multiple=True, metavar="KEY=VALUE",
              help="Set a topic config (repeatable).")
@click.option("--delete-config", "deletes", multiple=True, metavar="KEY",
              help="Return a config to its default (repeatable).")
@_tool_errors
def topics_alter(topic: str, bootstrap: str, timeout: float, partitions: int | None,
                 configs: tuple[str, ...], deletes: tuple[str, ...]) -> None:
    """Add partitions to TOPIC or change its configs."""
    if partitions is None and not configs and not deletes:
        raise click.UsageError("nothing to alter: give --partitions, --config or --delete-config")
    _cluster(bootstrap, timeout).alter_topic(topic, partitions, _kv(configs, "--config"),
                                            deletes)
    click.echo(f"altered topic {topic}")


@topics.command("delete")
@click.argument("topic")
@_bootstrap_options
@_tool_errors
def topics_delete(topic: str, bootstrap: str, timeout: float) -> None:
    """Delete TOPIC and all its messages."""
    _cluster(bootstrap, timeout).delete_topic(topic)
    click.echo(f"deleted topic {topic}")


# ============================================================================ produce
@click.command()
@click.argument("topic")
@_bootstrap_options
@click.option("--file", "-f", "file", type=click.Path(exists=True, dir_okay=False,
                                                      path_type=Path),
              help="Read lines from FILE instead of stdin.")
@click.option("--key-separator", "-K", default=None, metavar="SEP",
              help="Each line is KEY<SEP>VALUE (split at the first SEP).")
@click.option("--header", "-H", "headers", multiple=True, metavar="KEY=VALUE",
              help="A header added to every message (repeatable).")
@click.option("--partition", type=int, default=None, help="Produce to this partition only.")
@_json_option
@_tool_errors
def produce(topic: str, bootstrap: str, timeout: float, file: Path | None,
            key_separator: str | None, headers: tuple[str, ...], partition: int | None,
            as_json: bool) -> None:
    """Produce one message per line of stdin (or --file) to TOPIC.

    Values are sent as written: a JSON document on one line stays that JSON document.
    """
    hdrs = [(k, v.encode()) for k, v in _kv(headers, "--header").items()]
    source = file.open("rb") if file else sys.stdin.buffer
    try:
        lines = [ln.rstrip(b"\r\n") for ln in source]
    finally:
        if file:
            source.close()
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
    sep = key_separator.encode() if key_separator else None
    for ln in lines:
        if not ln:
            continue  # kafka-console-producer skips empty lines too
        key: bytes | None = None
        value = ln
        if sep is not None:
            k, found, v = ln.partition(sep)
            if found:
                key, value = k, v
        records.append((key, value, hdrs))
    acks = _cluster(bootstrap, timeout).produce(topic, records, partition)
    if as_json:
        _dump([{"partition": p, "offset": o} for p, o in acks])
    else:
        click.echo(f"produced {len(acks)} message(s) to {topic}", err=True)


# ============================================================================ consume
_FORMAT_HELP = ("Python format string with {topic} {partition} {offset} {timestamp} {key} "
                "{value} {headers}; default '{value}'.")


@click.command()
@click.argument("topic")
@_bootstrap_options
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message.")
@click.option("--offset", type=int, default=None, help="Start at this offset (each partition).")
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
@_json_option
@_tool_errors
def consume(topic: str, bootstrap: str, timeout: float, from_beginning: bool,
            offset: int | None, timestamp: int | None, partition: int | None,
            group: str | None, limit: int | None, exit_at_end: bool, fmt: str,
            as_json: bool) -> None:
    """Print messages of TOPIC as they arrive (from the end unless told otherwise)."""
    starts = sum([from_beginning, offset is not None, timestamp is not None])
    if starts > 1:
        raise click.UsageError("give at most one of --from-beginning, --offset, --timestamp")
    if group and (offset is not None or timestamp is not None or partition is not None):
        raise click.UsageError("--offset, --timestamp and --partition cannot be combined with "
                               "--group (the group's committed offsets decide where to start)")
    cluster = _cluster(bootstrap, timeout)
    t = cluster.require_topic(topic)
    count = 0
    try:
        for rec in _records(cluster, topic, sorted(t.partitions), from_beginning, offset,
                            timestamp, partition, group, exit_at_end):
            if as_json:
                click.echo(json.dumps(rec.to_json()))
            else:
                click.echo(_format(fmt, rec))
            count += 1
            if limit is not None and count >= limit:
                break
    except KeyboardInterrupt:
        pass
    finally:
        sys.stdout.flush()


def _format(fmt: str, r: Record) -> str:
    try:
        return fmt.format(
            topic=r.topic, partition=r.partition, offset=r.offset, timestamp=r.timestamp,
            key=text(r.key) if r.key is not None else "",
            value=text(r.value) if r.value is not None else "",
            headers=",".join(f"{k}={text(v) or ''}" for k, v in r.headers),
        )
    except (KeyError, IndexError, ValueError) as e:
        raise ToolError(f"bad --format {fmt!r}: {e}") from None


def _records(cluster: Cluster, topic: str, partitions: list[int], from_beginning: bool,
             offset: int | None, timestamp: int | None, partition: int | None,
             group: str | None, exit_at_end: bool) -> Iterator[Record]:
    from confluent_kafka import KafkaError, TopicPartition

    from nerve.tools.kafka import Record

    if group:
        c = cluster.consumer(**{
            "group.id": group, "enable.auto.commit": True, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
        })
        c.subscribe([topic])
    else:
        parts = partitions if partition is None else [partition]
        if partition is not None and partition not in partitions:
            raise ToolError(f"topic '{topic}' has no partition {partition}")
        mode = ("beginning" if from_beginning else "offset" if offset is not None
                else "timestamp" if timestamp is not None else "end")
        pos = cluster.start_positions(topic, parts, mode,
                                      offset if offset is not None else timestamp)
        c = cluster.consumer()
        c.assign([TopicPartition(topic, p, o) for p, o in pos.items()])
    at_end: set[int] = set()
    try:
        while True:
            for m in c.consume(500, 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                        assigned = {tp.partition for tp in c.assignment()}
                        if exit_at_end and assigned and assigned <= at_end:
                            return
                        continue
                    if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise ToolError(f"unknown topic '{topic}'")
                    if err.fatal():
                        raise ToolError(f"consumer error: {err.str()}")
                    continue
                at_end.discard(m.partition())
                if group:
                    # Stored before the yield: a caller that stops after this record (--limit)
                    # never resumes the generator, and close() commits what was stored.
                    c.store_offsets(m)
                yield Record.from_message(m)
    finally:
        c.close()  # with a group, commits what was stored (= what was printed)


# ============================================================================ groups
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


@groups.command("reset-offsets")
@click.argument("group")
@_bootstrap_options
@click.option("--topic", "-t", "topics_", multiple=True,
              help="Only these topics (repeatable; default: every topic the group committed).")
@click.option("--to-earliest", "to", flag_value="earliest", help="Reset to the oldest message.")
@click.option("--to-latest", "to", flag_value="latest", help="Reset to the end.")
@click.option("--to-offset", "to_offset", type=int, default=None,
              help="Reset to this offset (clamped to each partition's range).")
@click.option("--execute", is_flag=True, help="Apply the change (default: dry run).")
@_json_option
@_tool_errors
def groups_reset_offsets(group: str, bootstrap: str, timeout: float, topics_: tuple[str, ...],
                         to: str | None, to_offset: int | None, execute: bool,
                         as_json: bool) -> None:
    """Move GROUP's committed offsets. A dry run unless --execute, as in Kafka."""
    if (to is None) == (to_offset is None):
        raise click.UsageError("give exactly one of --to-earliest, --to-latest, --to-offset")
    cluster = _cluster(bootstrap, timeout)
    rows = cluster.plan_reset(group, to or "offset", to_offset, topics_)
    if execute:
        cluster.execute_reset(group, rows)
    if as_json:
        _dump({"group": group, "executed": execute, "partitions": [r.__dict__ for r in rows]})
        return
    click.echo(table(["TOPIC", "PARTITION", "CURRENT", "NEW"],
                     [[r.topic, r.partition, r.current, r.new] for r in rows]))
    click.echo(f"offsets of group {group} reset" if execute
               else "dry run: nothing changed (add --execute to apply)", err=True)


@groups.command("delete")
@click.argument("group")
@_bootstrap_options
@_tool_errors
def groups_delete(group: str, bootstrap: str, timeout: float) -> None:
    """Delete GROUP (it must have no active members)."""
    _cluster(bootstrap, timeout).delete_group(group)
    click.echo(f"deleted group {group}")


# ============================================================================ console
@click.command("console")
@_bootstrap_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "-p", type=int, default=8080, show_default=True)
@click.option("--read-only", is_flag=True, help="Hide every action (produce, reset, delete).")
@click.option("--password", envvar="NERVE_CONSOLE_PASSWORD", default=None,
              help="HTTP basic auth password (any user name); required for a writable "
                   "console on a non-loopback --host. Prefer the env variable.")
@click.option("--allowed-hosts", envvar="NERVE_CONSOLE_ALLOWED_HOSTS", default="",
              help="Comma-separated extra Host names the console answers to.")
@_tool_errors
def console(bootstrap: str, timeout: float, host: str, port: int, read_only: bool,
            password: str | None, allowed_hosts: str) -> None:
    """Run the web console for any Kafka cluster (nerve or Apache Kafka)."""
    from nerve.console.server import run_standalone

    cluster = _cluster(bootstrap, timeout, client_id="nerve-console")
    cluster.metadata()  # fail now, with one line, if the cluster is unreachable
    run_standalone(cluster, host, port, read_only, password or None,
                   tuple(allowed_hosts.split(",")))


# ---- nerve log dump|verify (nerve/tools/logtool.py): files of a stopped broker, no network


@click.group("log")
def log_() -> None:
    """Look into segment files (like kafka-dump-log), check a data dir."""


@log_.command("dump")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--print-data-log", is_flag=True,
              help="Also print each record: offset, timestamp, key, payload, header keys.")
@_tool_errors
def log_dump(paths: tuple[Path, ...], print_data_log: bool) -> None:
    """Print the batches of .log files (and the entries of .index/.timeindex files)."""
    from nerve.tools.logtool import broker_running, dump

    for path in paths:
        if broker_running(path.resolve().parent.parent):
            click.echo(f"warning: a broker is running on {path.resolve().parent.parent}: "
                       f"{path.name} may change while it is read", err=True)
        dump(path, print_data_log, click.echo)


@log_.command("verify")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A stopped broker's data dir.")
@_tool_errors
def log_verify(data_dir: Path) -> None:
    """Check every segment's batches (CRC-32C included) and indexes; exit 1 on damage.

    Refuses (exit 2) a data dir a running broker holds."""
    from nerve.storage.errors import DataDirLockedError
    from nerve.tools.logtool import verify

    try:
        result = verify(data_dir, click.echo)
    except DataDirLockedError as e:
        click.echo(f"Error: {e}; stop the broker first", err=True)
        sys.exit(2)
    state = f"{result.problems} problem(s)" if result.problems else "no damage"
    click.echo(f"checked {result.partitions} partition(s), {result.segments} segment(s), "
               f"{result.batches} batch(es): {state}", err=bool(result.problems))
    if result.problems:
        sys.exit(1)


COMMANDS = [topics, produce, consume, groups, console, log_]
