"""`nerve topics list|describe|create|alter|delete|trim`."""

from __future__ import annotations

import time

import click

from nerve.tools.base import ToolError
from nerve.tools.common import (
    _bootstrap_options,
    _cluster,
    _dump,
    _json_option,
    _kv,
    _tool_errors,
    is_pattern,
    match_topics,
    table,
)


@click.group()
def topics() -> None:
    """List, describe, create, alter, trim and delete topics."""


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
@click.option("--metrics-url", envvar="NERVE_METRICS_URL", metavar="URL",
              help="A nerve broker's metrics endpoint, read for the cleaning state of a "
                   "compacted topic [default: port 9464 of the bootstrap host].")
@_tool_errors
def topics_describe(topic: str, bootstrap: str, timeout: float, as_json: bool,
                    all_configs: bool, metrics_url: str | None) -> None:
    """Partitions (leader, replicas, start/end offsets) and configs of TOPIC, and the
    cleaning state of a compacted topic on nerve."""
    info = _cluster(bootstrap, timeout).describe_topic(topic)
    policy = next((c["value"] for c in info.configs if c["name"] == "cleanup.policy"), "")
    cleaning: list[dict[str, float]] | None = None
    url = metrics_url or f"http://{bootstrap.split(',')[0].rsplit(':', 1)[0]}:9464/metrics"
    if "compact" in (policy or ""):
        cleaning = cleaning_state(url, topic, min(timeout, 2.0))
    if as_json:
        out = info.to_json()
        if "compact" in (policy or ""):
            out["cleaning"] = cleaning
        _dump(out)
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
    if "compact" in (policy or ""):
        if cleaning is None:
            click.echo(f"Cleaning: not known (no nerve metrics at {url}; Kafka shows its "
                       "cleaner over JMX)")
        else:
            click.echo("Cleaning:")
            click.echo(table(
                ["PARTITION", "DIRTY RATIO", "FIRST DIRTY", "LAST CLEAN", "PASSES", "RECLAIMED"],
                [[int(c["partition"]), f"{c['dirty_ratio']:.2f}", int(c["first_dirty_offset"]),
                  _when(c["last_clean_ms"]), int(c["passes"]), int(c["bytes_reclaimed"])]
                 for c in cleaning]))


def cleaning_state(url: str, topic: str, timeout: float) -> list[dict[str, float]] | None:
    """Per-partition cleaning state of `topic` from a nerve broker's Prometheus endpoint
    (the Kafka protocol has no field for it); None when there is none to read."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            text = r.read().decode()
    except (OSError, ValueError):
        return None
    parts: dict[int, dict[str, float]] = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("nerve_cleaner_"):
            continue
        key = fam.name.removeprefix("nerve_cleaner_partition_").removeprefix("nerve_cleaner_")
        for sample in fam.samples:
            if sample.labels.get("topic") == topic and "partition" in sample.labels:
                p = int(sample.labels["partition"])
                parts.setdefault(p, {"partition": p})[key] = sample.value
    if not parts:
        return None
    keys = ("dirty_ratio", "first_dirty_offset", "last_clean_ms", "passes", "bytes_reclaimed")
    return [{k: parts[p].get(k, 0.0) for k in ("partition", *keys)} for p in sorted(parts)]


def _when(ms: float) -> str:
    if ms < 0:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


@topics.command("create")
@click.argument("topic")
@_bootstrap_options
@click.option("--partitions", "-p", type=int, default=-1, show_default=True,
              help="Partition count; -1: the broker's num.partitions (KIP-464).")
@click.option("--replication-factor", "-r", type=int, default=-1, show_default=True,
              help="Replicas per partition; -1: the broker's default.replication.factor.")
@click.option("--config", "-c", "configs", multiple=True, metavar="KEY=VALUE",
              help="A topic config (repeatable), e.g. retention.ms=60000.")
@click.option("--if-not-exists", is_flag=True,
              help="Succeed (and change nothing) when TOPIC exists already.")
@_tool_errors
def topics_create(topic: str, bootstrap: str, timeout: float, partitions: int,
                  replication_factor: int, configs: tuple[str, ...],
                  if_not_exists: bool) -> None:
    """Create TOPIC (with the cluster's default partitions and replication factor)."""
    for name, v in (("--partitions", partitions), ("--replication-factor", replication_factor)):
        if v == 0 or v < -1:
            raise click.BadParameter("must be at least 1, or -1 for the broker's default",
                                     param_hint=name)
    cluster = _cluster(bootstrap, timeout)
    try:
        cluster.create_topic(topic, partitions, replication_factor, _kv(configs, "--config"))
    except ToolError as e:
        if if_not_exists and "already exists" in str(e):
            click.echo(f"topic {topic} exists already")
            return
        raise
    if partitions == -1:
        try:
            partitions = len(cluster.require_topic(topic).partitions)
        except ToolError:
            partitions = -1
    shown = f"{partitions} partition(s)" if partitions > 0 else "broker default partitions"
    click.echo(f"created topic {topic} ({shown})")


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
@click.argument("names", nargs=-1, required=True, metavar="TOPIC|PATTERN...")
@_bootstrap_options
@click.option("--dry-run", is_flag=True, help="Only print which topics a pattern names.")
@_tool_errors
def topics_delete(names: tuple[str, ...], bootstrap: str, timeout: float,
                  dry_run: bool) -> None:
    """Delete topics and all their messages.

    Each argument is a topic name, a glob ('orders-*') or a regex ('^tmp-.*'); patterns never
    match internal topics (__...)."""
    cluster = _cluster(bootstrap, timeout)
    patterns = any(is_pattern(n) for n in names)
    existing = cluster.topic_names(include_internal=True) if patterns else []
    chosen = match_topics(names, existing)
    if not chosen:
        raise ToolError(f"no topic matches {' '.join(names)}")
    for topic in chosen:
        if dry_run:
            click.echo(f"would delete topic {topic}")
            continue
        cluster.delete_topic(topic)
        click.echo(f"deleted topic {topic}")


@topics.command("trim")
@click.argument("topic")
@_bootstrap_options
@click.option("--offset", "-o", "offset", required=True, type=int,
              help="Delete every record below this offset (-1: up to the end).")
@click.option("--partition", "-p", "partitions", multiple=True, type=int,
              help="Only this partition (repeatable; default: all).")
@_json_option
@_tool_errors
def topics_trim(topic: str, bootstrap: str, timeout: float, offset: int,
                partitions: tuple[int, ...], as_json: bool) -> None:
    """Delete the records of TOPIC below --offset (DeleteRecords, as rpk's trim-prefix)."""
    from nerve.tools.ops import delete_records

    if offset < -1:
        raise click.BadParameter("must be an offset, or -1 for the end", param_hint="--offset")
    cluster = _cluster(bootstrap, timeout)
    t = cluster.require_topic(topic)
    parts = sorted(partitions) if partitions else sorted(t.partitions)
    missing = [p for p in parts if p not in t.partitions]
    if missing:
        raise ToolError(f"topic '{topic}' has no partition {missing[0]}")
    low = delete_records(cluster, topic, {p: offset for p in parts})
    if as_json:
        _dump([{"partition": p, "low_watermark": w} for p, w in sorted(low.items())])
        return
    click.echo(table(["PARTITION", "START"], [[p, w] for p, w in sorted(low.items())]))
