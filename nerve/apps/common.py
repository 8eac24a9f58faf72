"""What every service of the reference systems shares.

The processing model of the SQLite services (matching uses Kafka transactions instead, see
nerve/apps/rides/matching.py):

1. poll a batch of events with an ordinary consumer in a consumer group, auto-commit off;
2. apply the batch to the service's SQLite state in ONE SQLite transaction that also records
   the ids of the applied events (`processed`) and any events to publish (`outbox`);
3. commit the Kafka offsets of the batch only after that transaction is durable;
4. publish the outbox, mark rows sent once the broker acknowledged them.

`--instances N` runs N processes of a service in one consumer group; they share its SQLite
file (WAL, one writer at a time), so the `processed` table dedupes across a rebalance too.

A crash anywhere means at-least-once redelivery: a redelivered event finds its id in
`processed` and is skipped, so the state changes exactly once. An outbox row can be published
twice (crash between ack and `sent=1`); its event id lets consumers drop the copy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

Event = dict[str, Any]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def encode(event: Event) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def decode(raw: bytes | None) -> Event:
    return json.loads(raw) if raw else {}


def percentile(values: Iterable[float], q: float) -> float:
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))]) if s else 0.0


class Latency:
    """Event-time-to-effect latency per action (ms): every sample up to MAX, then a uniform
    reservoir of MAX (so p50/p99 cover the whole run), and the last RECENT for a live view."""

    MAX = 100_000
    RECENT = 500

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.recent: dict[str, deque[float]] = {}
        self.count: dict[str, int] = {}
        self.max: dict[str, float] = {}
        self._rng = random.Random(0)

    def add(self, action: str, ms: float) -> None:
        n = self.count.get(action, 0) + 1
        self.count[action] = n
        self.max[action] = max(self.max.get(action, ms), ms)
        self.recent.setdefault(action, deque(maxlen=self.RECENT)).append(ms)
        s = self.samples.setdefault(action, [])
        if len(s) < self.MAX:
            s.append(ms)
        else:
            i = self._rng.randrange(n)
            if i < self.MAX:
                s[i] = ms

    def summary(self) -> dict[str, dict[str, float]]:
        return {a: {"n": self.count[a], "p50": percentile(s, 0.5), "p99": percentile(s, 0.99),
                    "max": self.max[a], "recent_p99": percentile(self.recent[a], 0.99)}
                for a, s in self.samples.items()}


def merge_latency(stats: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """One figure per action over several instances' stats: count summed, p50/p99 weighted by
    count (an approximation: each instance reports percentiles, not samples), max of maxes."""
    out: dict[str, dict[str, float]] = {}
    for st in stats:
        for action, f in (st.get("latency_ms") or {}).items():
            o = out.setdefault(action, {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0,
                                        "recent_p99": 0.0})
            n = f.get("n", 0)
            total = o["n"] + n
            if total:
                for k in ("p50", "p99"):
                    o[k] = (o[k] * o["n"] + f.get(k, 0) * n) / total
            o["n"] = total
            o["max"] = max(o["max"], f.get("max", 0))
            o["recent_p99"] = max(o["recent_p99"], f.get("recent_p99", 0))
    return out


def format_latency(lat: dict[str, dict[str, float]]) -> list[str]:
    return [f"{action}: p50 {f['p50']:.0f} ms, p99 {f['p99']:.0f} ms, max {f['max']:.0f} ms "
            f"({int(f['n'])} events)" for action, f in lat.items()]


# ----------------------------------------------------------------------------- clients


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "nerve-apps",
        # Idempotent producer: retries through a broker restart never duplicate or reorder.
        "enable.idempotence": True,
        "linger.ms": 2,
        # Java's partitioner, so a key lands on the same partition whatever client produced it
        # (co-partitioning of topics keyed alike relies on it).
        "partitioner": "murmur2_random",
        # Ride through a broker restart instead of failing deliveries.
        "message.timeout.ms": 120_000,
        **extra,
    }


def consumer_config(
    bootstrap: str, group: str, instance: str | None, **extra: Any
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": group,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        # range: partition N of every subscribed topic goes to the same member, which keeps
        # co-partitioned topics (same key, same partition count) together.
        "partition.assignment.strategy": "range",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
    }
    if instance is not None:
        # Static membership: a restarted instance takes its old place at once instead of
        # waiting for the dead member's session to expire.
        cfg["group.instance.id"] = f"{group}-{instance}"
    cfg.update(extra)
    return cfg


def create_topics(bootstrap: str, topics: dict[str, int], timeout: float = 30,
                  replication_factor: int = -1) -> None:
    """Create topics (name -> partitions); existing ones are left alone. Replication factor
    -1 is the cluster's default.replication.factor (KIP-464)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, n, replication_factor)
                                   for t, n in topics.items()],
                                  operation_timeout=timeout)
    for topic, fut in futures.items():
        try:
            fut.result(timeout=timeout)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"creating {topic}: {e}") from e


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: Event


def read_topic(bootstrap: str, topic: str, timeout: float = 60) -> list[Record]:
    """Every record of `topic` up to its current end, partition by partition in log order."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "nerve-apps-reader",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        md = c.list_topics(topic, timeout=timeout)
        parts = sorted(md.topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                for p in parts}
        todo = {p for p in parts if ends[p] > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        out: dict[int, list[Record]] = {p: [] for p in parts}
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: partitions {sorted(todo)} not at end")
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                p, off = m.partition(), m.offset()
                if off < ends[p]:
                    key = m.key()
                    out[p].append(Record(topic, p, off, key.decode() if key else None,
                                         decode(m.value())))
            todo -= at_end(c, topic, todo, ends)
        return [r for p in parts for r in out[p]]
    finally:
        c.close()


def at_end(c: Consumer, topic: str, parts: Iterable[int], ends: dict[int, int]) -> set[int]:
    """The partitions whose position reached `ends` (by position, not by the last message's
    offset: a transaction's commit marker ends a partition without a message to deliver)."""
    pos = c.position([TopicPartition(topic, p) for p in parts])
    return {tp.partition for tp in pos if tp.offset >= ends[tp.partition]}


# ----------------------------------------------------------------------------- process plumbing


class Stopper:
    """SIGTERM/SIGINT set a flag the main loop checks, so a service closes cleanly."""

    def __init__(self) -> None:
        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, *_: object) -> None:
        self.stopping = True


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def base_args(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--bootstrap-server", required=True, help="HOST:PORT of nerve or Kafka")
    ap.add_argument("--state-dir", required=True, type=Path,
                    help="where this service keeps its SQLite state and stats.json")
    ap.add_argument("--instance", default="0", help="instance name within the consumer group")
    return ap


def stats_path(state_dir: Path, instance: str) -> Path:
    """Instance 0 writes stats.json, instance N stats-N.json (one state dir per service)."""
    return state_dir / ("stats.json" if instance == "0" else f"stats-{instance}.json")


def service_stats(state_dir: Path) -> list[dict[str, Any]]:
    """The stats of every instance of the service whose state dir this is."""
    return [st for p in sorted(state_dir.glob("stats*.json")) if (st := read_json(p))]


def log(name: str, msg: str) -> None:
    print(f"[{name}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- SQLite services


SCHEMA_COMMON = """
CREATE TABLE IF NOT EXISTS processed (event_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key TEXT, value TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(sent) WHERE sent = 0;
"""


def open_db(path: Path, schema: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Instances of a service share the file: wait for the writer instead of failing.
    db = sqlite3.connect(path, isolation_level=None, timeout=60)  # explicit BEGIN/COMMIT
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # committed state survives kill -9 and power loss
    db.executescript(SCHEMA_COMMON + schema)
    return db


def enqueue(db: sqlite3.Connection, topic: str, key: str, event: Event) -> None:
    """Queue an event for publishing; call inside the apply transaction."""
    db.execute("INSERT INTO outbox(topic, key, value) VALUES (?, ?, ?)",
               (topic, key, json.dumps(event, separators=(",", ":"))))


class SqliteService:
    """A consumer-group service whose state lives in one SQLite file (see module docstring).

    Subclasses set `name` (also the consumer group id) and `topics`, define `schema` and
    implement `apply(db, record)`, calling `effect(action, event_ts)` for what the latency
    figures measure; `stats(db)` feeds stats.json.
    """

    name: str = ""
    topics: tuple[str, ...] = ()
    schema: str = ""
    batch: int = 1000
    metrics_topic: str = ""  # where the latency figures go once a second (the console's)

    def __init__(self, bootstrap: str, state_dir: Path, instance: str = "0",
                 commit_interval: float = 0.0) -> None:
        self.bootstrap = bootstrap
        self.commit_interval = commit_interval
        self.state_dir = state_dir
        self.instance = instance
        state_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_db(state_dir / f"{self.name}.sqlite", self.schema)
        self.applied = 0
        self.redelivered = 0
        self.batches = 0
        self.latency = Latency()
        self._effects: list[tuple[str, int]] = []
        self.producer: Producer | None = None

    # -- to override
    def apply(self, db: sqlite3.Connection, rec: Record) -> None:
        raise NotImplementedError

    def after_batch(self, db: sqlite3.Connection) -> None:
        """Called inside the batch's transaction after every record was applied."""

    def stats(self, db: sqlite3.Connection) -> dict[str, Any]:
        return {}

    def effect(self, action: str, event_ts: int) -> None:
        """`action` took effect in this batch for an event stamped `event_ts` (ms): its
        latency is measured when the batch's SQLite transaction has committed."""
        self._effects.append((action, event_ts))

    # -- the loop
    def run(self, stopper: Stopper) -> None:
        consumer = Consumer(consumer_config(self.bootstrap, self.name, self.instance))
        producer = self.producer = Producer(producer_config(
            self.bootstrap, **{"client.id": f"{self.name}-{self.instance}"}))
        consumer.subscribe(list(self.topics))
        log(self.name, f"consuming {', '.join(self.topics)} from {self.bootstrap}")
        last_stats = last_commit = 0.0
        uncommitted: dict[tuple[str, int], int] = {}
        try:
            while not stopper.stopping:
                msgs = [m for m in consumer.consume(self.batch, 0.1) if not m.error()]
                if msgs:
                    self._apply_batch(msgs)
                    for tp in next_offsets(msgs):
                        uncommitted[(tp.topic, tp.partition)] = tp.offset
                # Only now, with the batch's state durable, tell the group we are past it.
                if uncommitted and time.monotonic() - last_commit >= self.commit_interval:
                    with contextlib.suppress(KafkaException):
                        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o
                                                 in uncommitted.items()], asynchronous=True)
                    uncommitted.clear()
                    last_commit = time.monotonic()
                self._publish_outbox(producer)
                if time.monotonic() - last_stats > 1.0:
                    self._write_stats()
                    last_stats = time.monotonic()
        finally:
            self._publish_outbox(producer)
            self._write_stats()
            with contextlib.suppress(KafkaException):
                consumer.commit(asynchronous=False)
            consumer.close()
            log(self.name, f"stopped: applied {self.applied}, skipped {self.redelivered} "
                           f"redelivered, {self.batches} batches")

    def _apply_batch(self, msgs: list[Message]) -> None:
        db = self.db
        self._effects.clear()
        db.execute("BEGIN IMMEDIATE")
        try:
            for m in msgs:
                key = m.key()
                rec = Record(m.topic(), m.partition(), m.offset(),
                             key.decode() if key else None, decode(m.value()))
                event_id = f"{rec.topic}/{rec.value.get('id')}"
                if db.execute("INSERT OR IGNORE INTO processed VALUES (?)",
                              (event_id,)).rowcount == 0:
                    self.redelivered += 1  # applied before a crash or rebalance: skip
                    continue
                self.apply(db, rec)
                self.applied += 1
            self.after_batch(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.batches += 1
        done = now_ms()
        for action, ts in self._effects:
            self.latency.add(action, done - ts)

    def _publish_outbox(self, producer: Producer) -> None:
        rows = self.db.execute(
            "SELECT seq, topic, key, value FROM outbox WHERE sent = 0 ORDER BY seq LIMIT 5000"
        ).fetchall()
        if not rows:
            return
        acked: list[int] = []

        def delivered(seq: int) -> Callable[[KafkaError | None, Message], None]:
            def cb(err: KafkaError | None, _msg: Message) -> None:
                if err is None:
                    acked.append(seq)
            return cb

        for seq, topic, key, value in rows:
            producer.produce(topic, key=key, value=value, on_delivery=delivered(seq))
        producer.flush(10)
        if acked:
            # One transaction: each autocommitted UPDATE would be an fsync of its own
            # (synchronous=FULL), which was most of marketing's time at 1,000 events/s.
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("UPDATE outbox SET sent = 1 WHERE seq = ?",
                                [(s,) for s in acked])
            self.db.execute("COMMIT")

    def _write_stats(self) -> None:
        data = {"service": self.name, "instance": self.instance, "pid": os.getpid(),
                "applied": self.applied, "redelivered": self.redelivered,
                "batches": self.batches, "latency_ms": self.latency.summary(), "at": time.time(),
                **self.stats(self.db)}
        write_json_atomic(stats_path(self.state_dir, self.instance), data)
        if self.producer is not None and self.metrics_topic:
            publish_metrics(self.producer, self.metrics_topic, self.name, self.instance,
                            data["latency_ms"])


def publish_metrics(producer: Producer, topic: str, service: str, instance: str,
                    latency: dict[str, dict[str, float]]) -> None:
    """A service's latency figures, for readers that see only the topics (the console)."""
    with contextlib.suppress(KafkaException, BufferError):
        producer.produce(topic, key=f"{service}-{instance}", value=encode(
            {"service": service, "instance": instance, "ts": now_ms(), "latency_ms": latency}))


def next_offsets(msgs: Iterable[Message]) -> list[TopicPartition]:
    """The offsets to commit after `msgs`: one past the last message of each partition."""
    last: dict[tuple[str, int], int] = {}
    for m in msgs:
        k = (m.topic(), m.partition())
        last[k] = max(last.get(k, -1), m.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def service_main(cls: type[SqliteService], argv: list[str] | None = None) -> None:
    ap = base_args(cls.__doc__ or cls.name)
    ap.add_argument("--commit-interval", type=float, default=0.0,
                    help="least seconds between offset commits (0: after every batch; a "
                         "crash re-delivers what was applied since the last one)")
    args = ap.parse_args(argv)
    stopper = Stopper()
    cls(args.bootstrap_server, args.state_dir, args.instance, args.commit_interval).run(stopper)


# ----------------------------------------------------------------------------- checking


def query(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read a service's SQLite file (WAL: safe while the service runs)."""
    if not db_path.exists():
        return []
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # the service has not created its tables yet
        return []
    finally:
        db.close()


@dataclass
class Report:
    """What a story's invariant check found: figures and violations (empty = all good)."""

    figures: dict[str, Any]
    violations: list[str]
    behind: list[str]  # services that have not caught up with the topics yet
    # action -> {n, p50, p99, max, recent_p99} in ms (StoryRun.check fills it in)
    latency: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.behind

    def summary(self) -> str:
        lines = [f"  {k}: {v}" for k, v in self.figures.items()]
        lines += [f"  latency {line}" for line in format_latency(self.latency)]
        lines += [f"  BEHIND: {b}" for b in self.behind]
        lines += [f"  VIOLATION: {v}" for v in self.violations[:20]]
        if len(self.violations) > 20:
            lines.append(f"  ... {len(self.violations) - 20} more violations")
        verdict = ("all invariants hold" if self.ok else
                   f"{len(self.violations)} violations, {len(self.behind)} services behind")
        return "\n".join([*lines, f"  => {verdict}"])


def redelivered(state_root: Path, services: Iterable[str]) -> int:
    """Redelivered events the services' current processes skipped (from their stats.json)."""
    return sum(int(st.get("redelivered", 0)) for name in services
               for st in service_stats(state_root / name))


def wait_for_report(check: Callable[[], Report], timeout: float) -> Report:
    """Re-run `check` until no service is behind (or `timeout` s); return the last report."""
    deadline = time.monotonic() + timeout
    while True:
        report = check()
        if not report.behind or time.monotonic() > deadline:
            return report
        time.sleep(0.5)
