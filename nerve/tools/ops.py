"""Cluster operations the CLI adds on top of nerve.tools.kafka: DeleteRecords, reset plans
for every kind of Kafka's `kafka-consumer-groups --reset-offsets`, OffsetDelete, and a
description of the cluster (`nerve cluster info`)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from nerve.tools.base import ToolError, Unreachable
from nerve.tools.kafka import Cluster, ResetRow, _msg


def delete_records(cluster: Cluster, topic: str, below: dict[int, int]) -> dict[int, int]:
    """DeleteRecords: each partition's records below the offset (-1: all); returns the new
    low watermark of each partition."""
    futs = cluster.admin.delete_records(
        [TopicPartition(topic, p, o) for p, o in below.items()],
        request_timeout=cluster.timeout, operation_timeout=cluster.timeout)
    out = {}
    for tp, fut in futs.items():
        try:
            out[tp.partition] = int(cluster._result(fut).low_watermark)
        except KafkaException as e:
            raise ToolError(f"cannot trim {topic}/{tp.partition}: {_msg(e)}") from None
    return out


def plan_reset(cluster: Cluster, group: str, mode: str, value: int | None,
               selection: Sequence[tuple[str, list[int] | None]],
               from_file: dict[tuple[str, int], int] | None = None) -> list[ResetRow]:
    """Where each partition's committed offset would move (Kafka's dry run).

    mode: earliest, latest, current, offset (value), shift (value), timestamp (value, ms),
    file (from_file). selection: (topic, partitions or None for all); empty: every partition
    the group committed for. New offsets are clamped to each log's range, as Kafka does."""
    committed = cluster.committed(group)
    tps: list[tuple[str, int]]
    if mode == "file":
        assert from_file is not None
        tps = sorted(from_file)
    elif not selection:
        tps = sorted(committed)
    else:
        tps = []
        for topic, parts in selection:
            have = sorted(tp for tp in committed if tp[0] == topic)
            if parts is None:
                # A topic the group never committed for: all its partitions, as Kafka's tool.
                tps += have or [(topic, p) for p in sorted(cluster.require_topic(topic)
                                                               .partitions)]
            else:
                known = cluster.require_topic(topic).partitions
                for p in parts:
                    if p not in known:
                        raise ToolError(f"topic '{topic}' has no partition {p}")
                tps += [(topic, p) for p in parts]
    if not tps:
        raise ToolError(f"group '{group}' has no committed offsets (name topics with --topic)")
    marks = cluster.watermarks(tps)
    by_time = cluster.offsets(tps, "timestamp", value) if mode == "timestamp" else {}
    rows = []
    for tp in tps:
        start, end = marks[tp]
        current = committed.get(tp)
        if mode == "earliest":
            new = start
        elif mode == "latest":
            new = end
        elif mode == "current":
            new = current if current is not None else end
        elif mode == "shift":
            assert value is not None
            new = (current if current is not None else end) + value
        elif mode == "timestamp":
            off = by_time.get(tp, -1)
            new = off if off >= 0 else end  # nothing at or after that time: the end, as Kafka
        elif mode == "file":
            assert from_file is not None
            new = from_file[tp]
        else:
            assert value is not None
            new = value
        rows.append(ResetRow(tp[0], tp[1], current, min(max(new, start), end)))
    return rows


def cluster_info(cluster: Cluster) -> dict[str, Any]:
    """Brokers, controller, and every topic's partitions with their leader and replicas."""
    md = cluster.metadata()
    brokers = [{"id": b.id, "host": b.host, "port": b.port,
                "controller": b.id == md.controller_id}
               for b in sorted(md.brokers.values(), key=lambda b: b.id)]
    topics = []
    for name in sorted(md.topics):
        t = md.topics[name]
        parts = [{"partition": p.id, "leader": p.leader, "replicas": list(p.replicas),
                  "isr": list(p.isrs)}
                 for p in sorted(t.partitions.values(), key=lambda p: p.id)]
        topics.append({"name": name, "internal": name.startswith("__"), "partitions": parts})
    return {"cluster_id": md.cluster_id, "controller_id": md.controller_id,
            "bootstrap": cluster.bootstrap, "brokers": brokers, "topics": topics}


# ---------------------------------------------------------------------------- OffsetDelete
# confluent-kafka has no OffsetDelete (key 47), so it is sent here: FindCoordinator v1, then
# OffsetDelete v0 to the coordinator, both non-flexible, over plain TCP.
def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class _Reader:
    def __init__(self, b: bytes) -> None:
        self.b, self.p = b, 0

    def take(self, fmt: str) -> Any:
        v = struct.unpack_from(fmt, self.b, self.p)
        self.p += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        s = self.b[self.p:self.p + n].decode()
        self.p += n
        return s


def _call(addr: tuple[str, int], api: int, version: int, body: bytes, timeout: float) -> bytes:
    header = struct.pack(">hhi", api, version, 1) + _str("nerve-cli")
    msg = header + body
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(msg)) + msg)
        size = struct.unpack(">i", _recv(s, 4))[0]
        return _recv(s, size)[4:]  # past the correlation id (response header v0)


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


_ERRORS = {25: "UNKNOWN_MEMBER_ID", 3: "UNKNOWN_TOPIC_OR_PARTITION", 15:
           "COORDINATOR_NOT_AVAILABLE", 16: "NOT_COORDINATOR", 30: "GROUP_AUTHORIZATION_FAILED",
           69: "GROUP_ID_NOT_FOUND", 86: "GROUP_SUBSCRIBED_TO_TOPIC", 29:
           "TOPIC_AUTHORIZATION_FAILED", 68: "NON_EMPTY_GROUP"}


def delete_offsets(cluster: Cluster, group: str, tps: Sequence[tuple[str, int]]
                   ) -> dict[tuple[str, int], str | None]:
    """OffsetDelete: forget GROUP's committed offsets of these partitions; per partition None
    or the error's name (GROUP_SUBSCRIBED_TO_TOPIC while a member reads the topic)."""
    host, _, port = cluster.bootstrap.split(",")[0].strip().rpartition(":")
    try:
        r = _Reader(_call((host, int(port)), 10, 1, _str(group) + b"\x00", cluster.timeout))
        r.take(">i")
        err = r.take(">h")
        r.string()
        r.take(">i")
        chost, cport = r.string(), r.take(">i")
        if err:
            raise ToolError(f"cannot find the coordinator of group '{group}': "
                            f"{_ERRORS.get(err, err)}")
        by_topic: dict[str, list[int]] = {}
        for t, p in tps:
            by_topic.setdefault(t, []).append(p)
        body = _str(group) + struct.pack(">i", len(by_topic))
        for t, ps in by_topic.items():
            body += _str(t) + struct.pack(">i", len(ps)) + b"".join(struct.pack(">i", p)
                                                                   for p in ps)
        r = _Reader(_call((chost or host, cport), 47, 0, body, cluster.timeout))
    except OSError as e:
        raise Unreachable(f"cannot reach broker at {cluster.bootstrap}: {e}") from None
    err = r.take(">h")
    r.take(">i")
    if err:
        name = _ERRORS.get(err, str(err))
        raise ToolError(f"cannot delete offsets of group '{group}': {name}")
    out: dict[tuple[str, int], str | None] = {}
    for _ in range(r.take(">i")):
        t = r.string() or ""
        for _ in range(r.take(">i")):
            p, e = r.take(">ih")
            out[(t, p)] = _ERRORS.get(e, str(e)) if e else None
    return out
