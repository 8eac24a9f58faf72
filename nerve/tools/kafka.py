"""A small, synchronous admin layer over confluent-kafka, shared by the CLI and the web console.

Only the Kafka protocol is used (AdminClient, Producer, Consumer), so everything here works
against nerve and against Apache Kafka alike. Calls block: the console runs them in threads.
Errors a person can act on are raised as `ToolError` with a one-line message.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from nerve.tools.base import (
    DEFAULT_BOOTSTRAP,
    ToolError,
    UnknownGroup,
    UnknownTopic,
    Unreachable,
    text,
)

# librdkafka logs every refused connection to stderr; a CLI prints one clear line instead.
_rdkafka_log = logging.getLogger("nerve.tools.librdkafka")
_rdkafka_log.addHandler(logging.NullHandler())
_rdkafka_log.propagate = False

_UNREACHABLE = {
    KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
}


def _code(e: BaseException) -> int | None:
    if isinstance(e, KafkaException) and e.args and isinstance(e.args[0], KafkaError):
        return int(e.args[0].code())
    return None


def _msg(e: BaseException) -> str:
    if isinstance(e, KafkaException) and e.args and isinstance(e.args[0], KafkaError):
        err = e.args[0]
        return f"{err.name()}: {err.str()}"
    return str(e)


# ---------------------------------------------------------------------------- results
@dataclass
class PartitionInfo:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    start: int = -1
    end: int = -1

    @property
    def messages(self) -> int:
        return max(0, self.end - self.start) if self.start >= 0 and self.end >= 0 else 0


@dataclass
class TopicInfo:
    name: str
    internal: bool
    partitions: list[PartitionInfo]
    configs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def end_offset_total(self) -> int:
        return sum(max(p.end, 0) for p in self.partitions)

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.partitions)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "internal": self.internal,
            "partitions": [p.__dict__ | {"messages": p.messages} for p in self.partitions],
            "messages": self.messages, "end_offset_total": self.end_offset_total,
        }
        if self.configs:
            out["configs"] = self.configs
        return out


@dataclass
class GroupSummary:
    group_id: str
    state: str
    simple: bool
    group_type: str


@dataclass
class GroupPartition:
    topic: str
    partition: int
    committed: int | None  # None: nothing committed
    end: int
    start: int
    member: str | None = None  # member id it is assigned to, if any

    @property
    def lag(self) -> int | None:
        if self.committed is None or self.end < 0:
            return None
        return max(0, self.end - self.committed)


@dataclass
class Member:
    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    assignment: list[tuple[str, int]]


@dataclass
class GroupInfo:
    group_id: str
    state: str
    protocol: str
    coordinator: str
    members: list[Member]
    partitions: list[GroupPartition]

    @property
    def total_lag(self) -> int:
        return sum(p.lag or 0 for p in self.partitions)

    @property
    def topics(self) -> list[str]:
        return sorted({p.topic for p in self.partitions})

    def to_json(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id, "state": self.state, "protocol": self.protocol,
            "coordinator": self.coordinator,
            "members": [m.__dict__ | {"assignment": [list(a) for a in m.assignment]}
                        for m in self.members],
            "partitions": [p.__dict__ | {"lag": p.lag} for p in self.partitions],
            "total_lag": self.total_lag,
        }


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    @staticmethod
    def from_message(m: Any) -> Record:
        return Record(m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(),
                      m.value(), list(m.headers() or []))

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "timestamp": self.timestamp, "key": text(self.key), "value": text(self.value),
            "headers": {k: text(v) for k, v in self.headers},
        }


@dataclass
class ResetRow:
    topic: str
    partition: int
    current: int | None
    new: int


# ---------------------------------------------------------------------------- the cluster
class Cluster:
    """One bootstrap address and the clients for it. Thread-safe: the console shares one."""

    def __init__(self, bootstrap: str = DEFAULT_BOOTSTRAP, timeout: float = 5.0,
                 client_id: str = "nerve-cli",
                 client_config: dict[str, str] | None = None) -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout
        self.client_id = client_id
        # librdkafka settings for a secured cluster (--command-config: security.protocol,
        # sasl.*, ssl.*), added to every client made here.
        self.client_config = dict(client_config or {})
        self._admin: AdminClient | None = None
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def conf(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, "client.id": self.client_id,
                "logger": _rdkafka_log, **self.client_config, **extra}

    @property
    def admin(self) -> AdminClient:
        with self._lock:
            if self._admin is None:
                self._admin = AdminClient(self.conf())
            return self._admin

    @property
    def producer(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(self.conf(**{"linger.ms": 5}))
            return self._producer

    def consumer(self, **extra: Any) -> Consumer:
        conf = self.conf(**{
            "group.id": f"nerve-browse-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "enable.partition.eof": True,
            "auto.offset.reset": "latest", **extra,
        })
        return Consumer(conf)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(self.timeout)
            self._producer = None
            self._admin = None

    def _result(self, fut: Any) -> Any:
        try:
            return fut.result(timeout=self.timeout * 2)
        except KafkaException as e:
            if _code(e) in _UNREACHABLE:
                raise Unreachable(f"cannot reach broker at {self.bootstrap}") from None
            raise
        except TimeoutError:
            raise Unreachable(f"cannot reach broker at {self.bootstrap} (timed out)") from None

    # ------------------------------------------------------------------ metadata
    def metadata(self) -> Any:
        try:
            return self.admin.list_topics(timeout=self.timeout)
        except KafkaException as e:
            raise Unreachable(f"cannot reach broker at {self.bootstrap}") from e

    def cluster_info(self) -> dict[str, Any]:
        md = self.metadata()
        brokers = [{"id": b.id, "host": b.host, "port": b.port}
                   for b in sorted(md.brokers.values(), key=lambda b: b.id)]
        return {"cluster_id": md.cluster_id, "controller_id": md.controller_id,
                "brokers": brokers, "bootstrap": self.bootstrap}

    def topic_names(self, include_internal: bool = False) -> list[str]:
        md = self.metadata()
        return sorted(t for t in md.topics
                      if include_internal or not t.startswith("__"))

    def require_topic(self, topic: str) -> Any:
        md = self.metadata()
        t = md.topics.get(topic)
        if t is None or (t.error is not None
                         and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            raise UnknownTopic(f"unknown topic '{topic}'")
        return t

    # ------------------------------------------------------------------ offsets
    def offsets(self, tps: Iterable[tuple[str, int]], spec: str = "latest",
                timestamp: int | None = None) -> dict[tuple[str, int], int]:
        """One ListOffsets round for many partitions; -1 where the broker had no answer."""
        tps = list(tps)
        if not tps:
            return {}
        if spec == "earliest":
            s = OffsetSpec.earliest()
        elif spec == "timestamp":
            assert timestamp is not None
            s = OffsetSpec.for_timestamp(timestamp)
        else:
            s = OffsetSpec.latest()
        futs = self.admin.list_offsets({TopicPartition(t, p): s for t, p in tps},
                                       request_timeout=self.timeout)
        out: dict[tuple[str, int], int] = {}
        for tp, fut in futs.items():
            try:
                out[(tp.topic, tp.partition)] = int(self._result(fut).offset)
            except KafkaException:
                out[(tp.topic, tp.partition)] = -1
        return out

    def watermarks(self, tps: Sequence[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        start = self.offsets(tps, "earliest")
        end = self.offsets(tps, "latest")
        return {tp: (start.get(tp, -1), end.get(tp, -1)) for tp in tps}

    # ------------------------------------------------------------------ topics
    def topics(self, include_internal: bool = False, names: Sequence[str] | None = None
               ) -> list[TopicInfo]:
        md = self.metadata()
        out = []
        for name in sorted(md.topics):
            if names is not None and name not in names:
                continue
            if not include_internal and name.startswith("__") and names is None:
                continue
            t = md.topics[name]
            parts = [PartitionInfo(p.id, p.leader, list(p.replicas), list(p.isrs))
                     for p in sorted(t.partitions.values(), key=lambda p: p.id)]
            out.append(TopicInfo(name, name.startswith("__"), parts))
        marks = self.watermarks([(t.name, p.partition) for t in out for p in t.partitions])
        for t in out:
            for p in t.partitions:
                p.start, p.end = marks.get((t.name, p.partition), (-1, -1))
        return out

    def describe_topic(self, topic: str, configs: bool = True) -> TopicInfo:
        self.require_topic(topic)
        info = self.topics(include_internal=True, names=[topic])[0]
        if configs:
            info.configs = self.topic_configs(topic)
        return info

    def topic_configs(self, topic: str) -> list[dict[str, Any]]:
        res = ConfigResource(ResourceType.TOPIC, topic)
        entries = self._result(self.admin.describe_configs([res])[res])
        return [
            {"name": e.name, "value": None if e.is_sensitive else e.value,
             "source": _source_name(e.source), "default": bool(e.is_default),
             "read_only": bool(e.is_read_only)}
            for e in sorted(entries.values(), key=lambda e: e.name)
        ]

    def create_topic(self, topic: str, partitions: int = 1, replication_factor: int = 1,
                     configs: dict[str, str] | None = None) -> None:
        new = NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor,
                       config=dict(configs or {}))
        fut = self.admin.create_topics([new], request_timeout=self.timeout)[topic]
        try:
            self._result(fut)
        except KafkaException as e:
            if _code(e) == KafkaError.TOPIC_ALREADY_EXISTS:
                raise ToolError(f"topic '{topic}' already exists") from None
            raise ToolError(f"cannot create topic '{topic}': {_msg(e)}") from None

    def alter_topic(self, topic: str, partitions: int | None = None,
                    set_configs: dict[str, str] | None = None,
                    delete_configs: Sequence[str] = ()) -> None:
        self.require_topic(topic)
        if partitions is not None:
            fut = self.admin.create_partitions([NewPartitions(topic, partitions)],
                                               request_timeout=self.timeout)[topic]
            try:
                self._result(fut)
            except KafkaException as e:
                raise ToolError(f"cannot set partitions of '{topic}': {_msg(e)}") from None
        entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                   for k, v in (set_configs or {}).items()]
        entries += [ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE)
                    for k in delete_configs]
        if entries:
            res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
            try:
                self._result(self.admin.incremental_alter_configs([res])[res])
            except KafkaException as e:
                raise ToolError(f"cannot alter configs of '{topic}': {_msg(e)}") from None

    def delete_topic(self, topic: str) -> None:
        self.require_topic(topic)
        fut = self.admin.delete_topics([topic], request_timeout=self.timeout)[topic]
        try:
            self._result(fut)
        except KafkaException as e:
            if _code(e) == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise UnknownTopic(f"unknown topic '{topic}'") from None
            raise ToolError(f"cannot delete topic '{topic}': {_msg(e)}") from None

    # ------------------------------------------------------------------ groups
    def list_groups(self) -> list[GroupSummary]:
        self.metadata()  # an unreachable cluster lists no groups and no errors: fail instead
        res = self._result(self.admin.list_consumer_groups(request_timeout=self.timeout))
        if res.errors and not res.valid:
            raise ToolError(f"cannot list groups: {res.errors[0]}")
        out = []
        for g in res.valid:
            gtype = getattr(g, "type", None)
            out.append(GroupSummary(
                g.group_id, _enum_name(g.state), bool(g.is_simple_consumer_group),
                _enum_name(gtype) if gtype is not None else "CLASSIC"))
        return sorted(out, key=lambda g: g.group_id)

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        req = ConsumerGroupTopicPartitions(group)
        try:
            res = self._result(self.admin.list_consumer_group_offsets(
                [req], request_timeout=self.timeout)[group])
        except KafkaException as e:
            raise ToolError(f"cannot fetch offsets of group '{group}': {_msg(e)}") from None
        return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions or []
                if tp.offset >= 0}

    def describe_group(self, group: str, offsets: bool = True) -> GroupInfo:
        try:
            d = self._result(self.admin.describe_consumer_groups(
                [group], request_timeout=self.timeout)[group])
        except KafkaException as e:
            if _code(e) == KafkaError.GROUP_ID_NOT_FOUND:
                raise UnknownGroup(f"unknown group '{group}'") from None
            raise ToolError(f"cannot describe group '{group}': {_msg(e)}") from None
        state = _enum_name(d.state)
        members = []
        owner: dict[tuple[str, int], str] = {}
        for m in d.members or []:
            parts = [(tp.topic, tp.partition)
                     for tp in (m.assignment.topic_partitions if m.assignment else [])]
            for tp in parts:
                owner[tp] = m.member_id
            members.append(Member(m.member_id, m.client_id, m.host,
                                  getattr(m, "group_instance_id", None), sorted(parts)))
        coord = d.coordinator
        info = GroupInfo(group, state, d.partition_assignor or "",
                         f"{coord.host}:{coord.port} (id {coord.id})" if coord else "",
                         members, [])
        if offsets:
            committed = self.committed(group)
            if state == "DEAD" and not committed:
                raise UnknownGroup(f"unknown group '{group}'")
            tps = sorted(set(committed) | set(owner))
            marks = self.watermarks(tps)
            info.partitions = [
                GroupPartition(t, p, committed.get((t, p)), marks[(t, p)][1], marks[(t, p)][0],
                               owner.get((t, p)))
                for t, p in tps
            ]
        elif state == "DEAD":
            raise UnknownGroup(f"unknown group '{group}'")
        return info

    def plan_reset(self, group: str, to: str, offset: int | None = None,
                   topics: Sequence[str] = ()) -> list[ResetRow]:
        """Where each partition's committed offset would move (Kafka's dry run)."""
        committed = self.committed(group)
        tps = sorted(tp for tp in committed if not topics or tp[0] in topics)
        for topic in topics:
            if not any(t == topic for t, _ in tps):
                # A topic the group never committed for: all its partitions, as Kafka's tool.
                t = self.require_topic(topic)
                tps += [(topic, p) for p in sorted(t.partitions)]
        if not tps:
            raise ToolError(f"group '{group}' has no committed offsets (name topics with --topic)")
        marks = self.watermarks(tps)
        rows = []
        for tp in tps:
            start, end = marks[tp]
            if to == "earliest":
                new = start
            elif to == "latest":
                new = end
            else:
                assert offset is not None
                new = min(max(offset, start), end)  # Kafka clamps to the log's range
            rows.append(ResetRow(tp[0], tp[1], committed.get(tp), new))
        return rows

    def execute_reset(self, group: str, rows: Sequence[ResetRow]) -> None:
        d = self.describe_group(group, offsets=False) if rows else None
        if d is not None and d.members:
            raise ToolError(
                f"group '{group}' is {d.state} with {len(d.members)} member(s): "
                f"stop its consumers before resetting offsets")
        req = ConsumerGroupTopicPartitions(
            group, [TopicPartition(r.topic, r.partition, r.new) for r in rows])
        try:
            self._result(self.admin.alter_consumer_group_offsets(
                [req], request_timeout=self.timeout)[group])
        except KafkaException as e:
            raise ToolError(f"cannot reset offsets of group '{group}': {_msg(e)}") from None

    def delete_group(self, group: str) -> None:
        fut = self.admin.delete_consumer_groups([group], request_timeout=self.timeout)[group]
        try:
            self._result(fut)
        except KafkaException as e:
            if _code(e) == KafkaError.GROUP_ID_NOT_FOUND:
                raise UnknownGroup(f"unknown group '{group}'") from None
            if _code(e) == KafkaError.NON_EMPTY_GROUP:
                raise ToolError(f"group '{group}' has active members: stop them first") from None
            raise ToolError(f"cannot delete group '{group}': {_msg(e)}") from None

    # ------------------------------------------------------------------ records
    def produce(self, topic: str,
                records: Iterable[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
                partition: int | None = None) -> list[tuple[int, int]]:
        """Produce and wait for every acknowledgement; returns (partition, offset) of each."""
        self.require_topic(topic)
        return send_and_wait(self.producer, topic, records, partition,
                             self.timeout * 4, self.bootstrap)

    def start_positions(self, topic: str, partitions: Sequence[int], mode: str,
                        value: int | None = None) -> dict[int, int]:
        """Offsets to start reading each partition from: beginning, end, offset, timestamp."""
        tps = [(topic, p) for p in partitions]
        marks = self.watermarks(tps)
        out = {}
        by_time = self.offsets(tps, "timestamp", value) if mode == "timestamp" else {}
        for tp in tps:
            start, end = marks[tp]
            if mode == "beginning":
                out[tp[1]] = start
            elif mode == "offset":
                assert value is not None
                out[tp[1]] = min(max(value, start), end)
            elif mode == "timestamp":
                off = by_time.get(tp, -1)
                out[tp[1]] = off if off >= 0 else end
            else:
                out[tp[1]] = end
        return out

    def browse(self, topic: str, limit: int = 50, partition: int | None = None,
               offset: int | None = None, timestamp: int | None = None,
               contains: str | None = None, scan: int = 2000) -> list[Record]:
        """Recent records, newest first; or, with offset/timestamp, `limit` records from there
        (in order). `contains` keeps records whose key, value or headers contain the text,
        looking at up to `scan` records per partition."""
        t = self.require_topic(topic)
        parts = sorted(t.partitions) if partition is None else [partition]
        tps = [(topic, p) for p in parts]
        marks = self.watermarks(tps)
        window = scan if contains else limit
        if offset is not None or timestamp is not None:
            starts = self.start_positions(topic, parts, "offset" if offset is not None
                                          else "timestamp", offset if offset is not None
                                          else timestamp)
            ranges = {p: (starts[p], min(marks[(topic, p)][1], starts[p] + window))
                      for p in parts}
        else:
            ranges = {p: (max(marks[(topic, p)][0], marks[(topic, p)][1] - window),
                          marks[(topic, p)][1]) for p in parts}
        recs = self._read_ranges(topic, ranges)
        if contains:
            needle = contains.encode()
            recs = [r for r in recs if needle in (r.value or b"") or needle in (r.key or b"")
                    or any(needle in (v or b"") or needle in k.encode() for k, v in r.headers)]
        if offset is not None or timestamp is not None:
            recs.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
            return recs[:limit]
        recs.sort(key=lambda r: (r.timestamp, r.offset, r.partition), reverse=True)
        return recs[:limit]

    def _read_ranges(self, topic: str, ranges: dict[int, tuple[int, int]]) -> list[Record]:
        todo = {p: r for p, r in ranges.items() if r[0] < r[1] and r[0] >= 0}
        if not todo:
            return []
        c = self.consumer()
        out: list[Record] = []
        try:
            c.assign([TopicPartition(topic, p, r[0]) for p, r in todo.items()])
            deadline = time.monotonic() + self.timeout * 2
            left = set(todo)
            while left and time.monotonic() < deadline:
                for m in c.consume(500, 0.2):
                    if m.error():
                        if m.error().code() == KafkaError._PARTITION_EOF:
                            left.discard(m.partition())
                        continue
                    stop = todo[m.partition()][1]
                    if m.offset() < stop:
                        out.append(Record.from_message(m))
                    if m.offset() >= stop - 1:
                        left.discard(m.partition())
        finally:
            c.close()
        return out


def _source_name(v: Any) -> str:
    try:
        return ConfigSource(v).name if isinstance(v, int) else _enum_name(v)
    except ValueError:
        return str(v)


def _enum_name(v: Any) -> str:
    return getattr(v, "name", str(v)).upper()


def send_and_wait(p: Any, topic: str,
                  records: Iterable[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
                  partition: int | None, timeout: float,
                  bootstrap: str) -> list[tuple[int, int]]:
    """Produce with librdkafka producer `p` and wait for every acknowledgement; returns the
    (partition, offset) of each; the first delivery error is a ToolError."""
    acks: list[tuple[int, int]] = []
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{err.name()}: {err.str()}")
        else:
            acks.append((msg.partition(), msg.offset()))

    kw: dict[str, Any] = {} if partition is None else {"partition": partition}
    for key, value, headers in records:
        while True:
            try:
                p.produce(topic, value=value, key=key, headers=headers or None,
                          on_delivery=on_delivery, **kw)
                break
            except BufferError:  # local queue full: let deliveries drain
                p.poll(0.1)
    left = p.flush(timeout)
    if errors:
        raise ToolError(f"produce to '{topic}' failed: {errors[0]}")
    if left:
        raise Unreachable(f"cannot reach broker at {bootstrap}: "
                          f"{left} message(s) not acknowledged")
    return acks
