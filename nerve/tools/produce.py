"""`nerve produce`: lines (or a whole file, binary included) from stdin or --file to a topic.

The topic is looked up with a producer's Metadata request, so a cluster that creates topics
automatically (auto.create.topics.enable) creates it, as kcat and Kafka's console producer do.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from nerve.tools.base import ToolError, Unreachable
from nerve.tools.common import (
    _bootstrap_options,
    _cluster,
    _dump,
    _json_option,
    _kv,
    _tool_errors,
    unescape,
)
from nerve.tools.kafka import send_and_wait

Message = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
COMPRESSION = ("none", "gzip", "snappy", "lz4", "zstd")
ACKS = ("0", "1", "all", "-1")


def split_input(data: bytes, delimiter: bytes | None, key_sep: bytes | None,
                fixed_key: bytes | None, null_empty: bool,
                headers: list[tuple[str, bytes]]) -> list[Message]:
    """Messages of the input: one per delimiter-separated piece (the whole input when
    delimiter is None). Empty pieces are skipped unless null_empty (kcat -Z), which also makes
    empty keys and values null."""
    if delimiter is None:
        pieces = [data]
    else:
        pieces = data.split(delimiter)
        if pieces and pieces[-1] == b"":
            pieces.pop()  # the delimiter ends the last message, it does not start another
        if delimiter == b"\n":
            pieces = [p[:-1] if p.endswith(b"\r") else p for p in pieces]
    out: list[Message] = []
    for piece in pieces:
        if not piece and not null_empty:
            continue  # kafka-console-producer skips empty lines too
        key: bytes | None = fixed_key
        value: bytes | None = piece
        if key_sep is not None:
            k, found, v = piece.partition(key_sep)
            if found:
                key, value = k, v
        if null_empty:
            key = key or None
            value = value or None
        out.append((key, value, headers))
    return out


@click.command()
@click.argument("topic")
@_bootstrap_options
@click.option("--file", "-f", "file", type=click.Path(exists=True, dir_okay=False,
                                                      path_type=Path),
              help="Read FILE instead of stdin.")
@click.option("--whole", "-l", is_flag=True,
              help="The whole input (stdin or --file) is one message, byte for byte (binary "
                   "values, JSON documents over several lines).")
@click.option("--delimiter", "-D", default="\\n", show_default=True, metavar="DELIM",
              help="What separates messages (escapes: \\n \\t \\r \\0).")
@click.option("--key-separator", "-K", default=None, metavar="SEP",
              help="Each message is KEY<SEP>VALUE (split at the first SEP; escapes allowed).")
@click.option("--key", "-k", "fixed_key", default=None, help="The key of every message.")
@click.option("--null", "-Z", "null_empty", is_flag=True,
              help="Empty keys and values are sent as null (empty lines: null values, "
                   "i.e. tombstones), as kcat -Z.")
@click.option("--header", "-H", "headers", multiple=True, metavar="KEY=VALUE",
              help="A header added to every message (repeatable).")
@click.option("--partition", type=int, default=None, help="Produce to this partition only.")
@click.option("--compression", "-z", type=click.Choice(COMPRESSION), default="none",
              show_default=True, help="Batch compression (compression.type).")
@click.option("--acks", type=click.Choice(ACKS), default="all", show_default=True,
              help="Acknowledgements to wait for (0: none).")
@_json_option
@_tool_errors
def produce(topic: str, bootstrap: str, timeout: float, file: Path | None, whole: bool,
            delimiter: str, key_separator: str | None, fixed_key: str | None,
            null_empty: bool, headers: tuple[str, ...], partition: int | None,
            compression: str, acks: str, as_json: bool) -> None:
    """Produce one message per line of stdin (or --file) to TOPIC.

    Values are sent as written: a JSON document on one line stays that JSON document."""
    if fixed_key is not None and key_separator is not None:
        raise click.UsageError("give --key or --key-separator, not both")
    if not unescape(delimiter):
        raise click.BadParameter("must not be empty", param_hint="--delimiter")
    hdrs = [(k, v.encode()) for k, v in _kv(headers, "--header").items()]
    data = file.read_bytes() if file else sys.stdin.buffer.read()
    records = split_input(
        data, None if whole else unescape(delimiter).encode(),
        unescape(key_separator).encode() if key_separator else None,
        fixed_key.encode() if fixed_key is not None else None, null_empty, hdrs)
    offsets = send(_cluster(bootstrap, timeout), topic, records, partition, compression, acks)
    if as_json:
        _dump([{"partition": p, "offset": o} for p, o in offsets])
    else:
        click.echo(f"produced {len(offsets)} message(s) to {topic}", err=True)


def send(cluster: Any, topic: str, records: list[Message], partition: int | None,
         compression: str, acks: str) -> list[tuple[int, int]]:
    """Produce and wait for every acknowledgement; (partition, offset) of each (-1 offsets
    with acks=0)."""
    from confluent_kafka import KafkaError, KafkaException, Producer

    p = Producer(cluster.conf(**{
        "linger.ms": 5, "compression.type": compression, "acks": acks,
        "message.timeout.ms": int(cluster.timeout * 4000),
    }))
    unknown = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED,
               KafkaError._UNKNOWN_TOPIC)
    # Apache Kafka (KRaft) answers UNKNOWN_TOPIC_OR_PARTITION to the Metadata request that
    # starts an auto-creation, and knows the topic a moment later: ask again for a while.
    deadline = time.monotonic() + min(cluster.timeout, 3.0)
    while True:
        try:
            md = p.list_topics(topic, timeout=cluster.timeout)
        except KafkaException:
            raise Unreachable(f"cannot reach broker at {cluster.bootstrap}") from None
        t = md.topics.get(topic)
        err = t.error if t is not None else None
        if t is not None and (err is None or err.code() not in unknown):
            break
        if time.monotonic() > deadline:
            raise ToolError(f"unknown topic '{topic}' (the cluster does not create topics on "
                            f"produce: nerve topics create {topic})")
        time.sleep(0.25)
    if partition is not None and t.partitions and partition not in t.partitions:
        raise ToolError(f"topic '{topic}' has no partition {partition}")
    return send_and_wait(p, topic, records, partition, cluster.timeout * 5, cluster.bootstrap)
