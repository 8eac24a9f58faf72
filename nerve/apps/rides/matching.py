"""Matching: pairs each ride request with the nearest free driver of its zone.

    python -m nerve.apps.rides.matching --bootstrap-server HOST:PORT --state-dir D --instance N

Run several instances in consumer group `matching`; they share the zone partitions.

Why a driver is never double-booked: ride-requests, driver-locations, ride-matched and
ride-completed are keyed by zone with the same partition count, each driver works one zone, and
the range assignor gives partition N of every input topic to one instance. So exactly one
instance decides for a zone's drivers at a time: no cross-instance coordination is needed.

State (which drivers are busy, which rides are matched, waiting requests) is not kept locally
but rebuilt from the topics whenever a partition is assigned, so it moves with the partition:
- busy drivers and matched rides: replay ride-matched and ride-completed partition N (the
  decisions this service published; in Kafka terms a changelog, a compacted topic in
  production);
- waiting requests: the committed offset of ride-requests is the oldest request not yet matched
  (not the last one read), so unmatched requests are read again; matched ones are skipped;
- driver positions: driver-locations from 5 s ago (ListOffsets by timestamp).

Consume-transform-produce in one Kafka transaction per batch (transactional.id
`matching-<instance>`): a batch's ride-matched records and the input offsets that account for
them (send_offsets_to_transaction with the consumer's group metadata, KIP-447) commit together
or not at all. An instance that stalls (SIGSTOP, a long GC, a VM pause) past its session loses
its zones to another instance; when it comes back, its transaction's offset commit carries the
old generation and is refused (or the coordinator already aborted it on transaction.timeout.ms),
so its matches are aborted and no read_committed reader (the simulator, tracking, the restore
above, the invariant check) ever sees them: the zombie is fenced. The in-memory decisions of an
aborted batch are undone, the rides wait again. A crash at any point re-reads the request and
either finds it matched in ride-matched or matches it.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from nerve.apps.common import (
    Latency,
    Stopper,
    base_args,
    consumer_config,
    decode,
    encode,
    log,
    now_ms,
    producer_config,
    publish_metrics,
    stats_path,
    write_json_atomic,
)
from nerve.apps.rides import METRICS_TOPIC

INPUTS = ("ride-requests", "driver-locations", "ride-completed")
POSITION_MAX_AGE_MS = 10_000  # a driver silent for longer is not offered rides
REPLAY_LOCATIONS_MS = 5_000
# A stalled instance's open transaction is aborted by the coordinator after this long, so the
# instance that took its zones over never waits longer for the partition's stable offset.
TRANSACTION_TIMEOUT_MS = 15_000
ACTION = "request -> match"


@dataclass
class Position:
    x: float
    y: float
    ts: int
    zone: str


@dataclass
class PartitionState:
    """Everything matching knows about the zones of one partition number."""

    zones: dict[str, dict[str, Position]] = field(default_factory=dict)  # zone -> drivers
    busy: dict[str, str] = field(default_factory=dict)  # driver -> ride
    matched: set[str] = field(default_factory=set)
    pending: OrderedDict[str, tuple[int, dict[str, Any]]] = field(default_factory=OrderedDict)
    next_offset: dict[str, int] = field(default_factory=dict)  # topic -> next offset to read


@dataclass
class Decision:
    """One match of the open transaction, kept to undo it if the transaction aborts."""

    st: PartitionState
    ride: str
    driver: str
    entry: tuple[int, dict[str, Any]]  # (request offset, request)


class Matching:
    def __init__(self, bootstrap: str, state_dir: Path, instance: str,
                 txn_linger_ms: float = 0.0) -> None:
        self.bootstrap = bootstrap
        self.state_dir = state_dir
        self.instance = instance
        self.txn_linger_s = txn_linger_ms / 1000
        state_dir.mkdir(parents=True, exist_ok=True)
        self.name = f"matching-{instance}"
        self.consumer = Consumer(consumer_config(bootstrap, "matching", instance,
                                                 **{"client.id": self.name}))
        self.producer = self._new_producer()
        # Not transactional: the latency figures go out whatever happens to the matches.
        self.metrics = Producer(producer_config(bootstrap, **{"client.id": f"{self.name}-m"}))
        self.parts: dict[int, PartitionState] = {}
        self.matches = 0
        self.latency = Latency()
        self.restores = 0
        self.transactions = 0
        self.aborted = 0  # transactions aborted: fenced (stalled past the session) or failed
        self.txn: list[Decision] = []  # the open transaction's matches
        self.txn_started = 0.0

    def _new_producer(self) -> Producer:
        p = Producer(producer_config(self.bootstrap, **{
            "client.id": self.name, "transactional.id": self.name,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "message.timeout.ms": TRANSACTION_TIMEOUT_MS,
            # librdkafka 2.x re-bootstraps when every broker was down (a single broker's
            # restart) and can then hang send_offsets_to_transaction forever on the
            # decommissioned group coordinator (librdkafka issue #5511); the same broker
            # address comes back, so reconnecting to the known broker is enough.
            "metadata.recovery.strategy": "none"}))
        # Fences any earlier producer with this transactional.id (aborts its open transaction).
        self._retry(lambda: p.init_transactions(30))
        return p

    # ------------------------------------------------------------------ rebalance
    def on_assign(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in tps})
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in self._retry(lambda: consumer.committed(tps, timeout=10))}
        since = [TopicPartition("driver-locations", p, now_ms() - REPLAY_LOCATIONS_MS)
                 for p in numbers]
        by_time = {tp.partition: tp.offset for tp in
                   self._retry(lambda: consumer.offsets_for_times(since, timeout=10))}
        for p in numbers:
            self.parts[p] = st = PartitionState()
            completed_end = self._restore(p, st)
            for tp in tps:
                if tp.partition != p:
                    continue
                if tp.topic == "ride-completed":
                    tp.offset = completed_end  # the replay covered everything before
                elif tp.topic == "driver-locations":
                    tp.offset = by_time[p] if by_time[p] >= 0 else OFFSET_END
                else:
                    c = committed.get((tp.topic, p), -1)
                    tp.offset = c if c >= 0 else OFFSET_BEGINNING
        self.restores += 1
        log(self.name, f"assigned partitions {numbers}: restored "
            + ", ".join(f"p{p}: {len(self.parts[p].matched)} matched, "
                        f"{len(self.parts[p].busy)} busy" for p in numbers))
        consumer.assign(tps)

    def on_revoke(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        self._end_transaction()  # commits, or aborts (and undoes) if we were fenced
        self._commit(asynchronous=False)
        for p in {tp.partition for tp in tps}:
            self.parts.pop(p, None)
        log(self.name, f"revoked partitions {sorted({tp.partition for tp in tps})}")

    def _retry(self, fn: Any, attempts: int = 30) -> Any:
        for i in range(attempts):
            try:
                return fn()
            except KafkaException:
                if i + 1 == attempts:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def _restore(self, p: int, st: PartitionState) -> int:
        """Replay ride-matched and ride-completed partition p; returns ride-completed's end."""
        reader = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "matching-restore",
                           "enable.auto.commit": False})
        try:
            matched: dict[str, str] = {}  # ride -> driver
            completed: set[str] = set()
            ends = {}
            for topic in ("ride-matched", "ride-completed"):
                tp = TopicPartition(topic, p)
                ends[topic] = self._retry(
                    lambda tp=tp: reader.get_watermark_offsets(tp, timeout=10))[1]
            todo = {t for t, end in ends.items() if end > 0}
            reader.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in todo])
            while todo:
                for m in reader.consume(1000, 1.0):
                    if m.error():
                        continue
                    ev = decode(m.value())
                    if m.topic() == "ride-matched":
                        matched[ev["ride"]] = ev["driver"]
                    else:
                        completed.add(ev["ride"])
                # By position: ride-matched ends with a transaction marker, not a message.
                for tp in reader.position([TopicPartition(t, p) for t in todo]):
                    if tp.offset >= ends[tp.topic]:
                        todo.discard(tp.topic)
            st.matched = set(matched)
            st.busy = {d: r for r, d in matched.items() if r not in completed}
            return ends["ride-completed"]
        finally:
            reader.close()

    # ------------------------------------------------------------------ processing
    def handle(self, m: Message) -> None:
        st = self.parts.get(m.partition())
        if st is None:
            return  # revoked meanwhile
        ev = decode(m.value())
        st.next_offset[m.topic()] = m.offset() + 1
        if m.topic() == "ride-requests":
            if ev["id"] not in st.matched and ev["id"] not in st.pending:
                st.pending[ev["id"]] = (m.offset(), ev)
        elif m.topic() == "driver-locations":
            st.zones.setdefault(ev["zone"], {})[ev["driver"]] = Position(
                ev["x"], ev["y"], ev["ts"], ev["zone"])
        elif st.busy.get(ev["driver"]) == ev["ride"]:  # ride-completed
            del st.busy[ev["driver"]]

    def match(self, st: PartitionState) -> int:
        """Match waiting requests, oldest first, each to the nearest free driver of its zone,
        inside the open transaction."""
        made = 0
        fresh = now_ms() - POSITION_MAX_AGE_MS
        full: set[str] = set()  # zones found without a free driver in this pass
        for ride_id, entry in list(st.pending.items()):
            req = entry[1]
            if req["zone"] in full:
                continue
            px, py = req["pickup"]
            free = [(math.hypot(pos.x - px, pos.y - py), d)
                    for d, pos in st.zones.get(req["zone"], {}).items()
                    if d not in st.busy and pos.ts >= fresh]
            if not free:
                full.add(req["zone"])
                continue
            dist, driver = min(free)
            if not self.txn:
                self.producer.begin_transaction()
                self.txn_started = time.monotonic()
            self.producer.produce("ride-matched", key=req["zone"], value=encode({
                "id": ride_id, "ride": ride_id, "ts": now_ms(), "driver": driver,
                "rider": req["rider"], "zone": req["zone"], "request_ts": req["ts"],
                "pickup_km": round(dist, 3), "matcher": self.name}))
            st.busy[driver] = ride_id
            st.matched.add(ride_id)
            del st.pending[ride_id]
            self.txn.append(Decision(st, ride_id, driver, entry))
            made += 1
        return made

    def _offsets(self) -> list[TopicPartition]:
        offsets = []
        for p, st in self.parts.items():
            for topic, nxt in st.next_offset.items():
                if topic == "ride-requests" and st.pending:
                    # The oldest unmatched request: a successor re-reads from there.
                    nxt = min(off for off, _ in st.pending.values())
                offsets.append(TopicPartition(topic, p, nxt))
        return offsets

    def _commit(self, asynchronous: bool) -> None:
        """Offsets outside a transaction: progress over batches that matched nothing."""
        offsets = self._offsets()
        if offsets:
            with contextlib.suppress(KafkaException):
                self.consumer.commit(offsets=offsets, asynchronous=asynchronous)

    def _end_transaction(self) -> None:
        """Commit the open transaction's matches with the offsets that account for them."""
        if not self.txn:
            return
        decisions, self.txn = self.txn, []
        try:
            self.producer.send_offsets_to_transaction(
                self._offsets(), self.consumer.consumer_group_metadata(), 30)
            self.producer.commit_transaction(30)
        except KafkaException as e:
            self.aborted += 1
            log(self.name, f"transaction of {len(decisions)} matches aborted: {e.args[0]}")
            self._abort(e.args[0])
            self._undo(decisions)
            return
        self.transactions += 1
        self.matches += len(decisions)
        done = now_ms()
        for d in decisions:
            self.latency.add(ACTION, done - d.entry[1]["ts"])

    def _abort(self, err: Any) -> None:
        if not err.fatal():
            try:
                self.producer.abort_transaction(30)
                return
            except KafkaException as e:
                log(self.name, f"abort failed: {e.args[0]}; starting a new producer")
        # Fenced for good (a newer epoch): a new producer bumps the epoch again and goes on.
        with contextlib.suppress(Exception):
            self.producer.flush(0)
        self.producer = self._new_producer()

    def _undo(self, decisions: list[Decision]) -> None:
        """The aborted matches never happened: their rides wait again, their drivers are free."""
        touched = set()
        for d in reversed(decisions):
            if d.st.busy.get(d.driver) == d.ride:
                del d.st.busy[d.driver]
            d.st.matched.discard(d.ride)
            d.st.pending[d.ride] = d.entry
            touched.add(id(d.st))
        for st in self.parts.values():
            if id(st) in touched:
                st.pending = OrderedDict(sorted(st.pending.items(), key=lambda kv: kv[1][0]))

    def run(self, stopper: Stopper) -> None:
        self.consumer.subscribe(list(INPUTS), on_assign=self.on_assign, on_revoke=self.on_revoke)
        log(self.name, f"consuming {', '.join(INPUTS)} from {self.bootstrap}")
        last_commit = last_stats = 0.0
        try:
            while not stopper.stopping:
                for m in self.consumer.consume(1000, 0.02 if self.txn else 0.05):
                    if not m.error():
                        self.handle(m)
                for st in self.parts.values():
                    self.match(st)
                now = time.monotonic()
                if self.txn and now - self.txn_started >= self.txn_linger_s:
                    self._end_transaction()
                elif not self.txn and now - last_commit >= 0.5:
                    self._commit(asynchronous=True)
                    last_commit = now
                if now - last_stats >= 0.5:
                    self._write_stats()
                    last_stats = now
        finally:
            self._end_transaction()
            self._commit(asynchronous=False)
            self._write_stats()
            self.consumer.close()
            self.metrics.flush(5)
            log(self.name, f"stopped after {self.matches} matches in {self.transactions} "
                           f"transactions, {self.aborted} aborted")

    def _write_stats(self) -> None:
        write_json_atomic(stats_path(self.state_dir, "0"), {
            "service": "matching", "instance": self.instance, "pid": os.getpid(),
            "matches": self.matches, "transactions": self.transactions,
            "aborted": self.aborted, "partitions": sorted(self.parts),
            "restores": self.restores,
            "pending": sum(len(s.pending) for s in self.parts.values()),
            # The open transaction (its matches, since when, wall clock) for the stall test.
            "open_transaction": len(self.txn),
            "open_since": time.time() - (time.monotonic() - self.txn_started) if self.txn else 0,
            "latency_ms": self.latency.summary()})
        publish_metrics(self.metrics, METRICS_TOPIC, "matching", self.instance,
                        self.latency.summary())
        self.metrics.poll(0)


def main(argv: list[str] | None = None) -> None:
    ap = base_args(__doc__ or "matching")
    ap.add_argument("--txn-linger-ms", type=float, default=0.0,
                    help="keep a transaction open this long to gather more matches (0: one "
                         "transaction per consumed batch)")
    args = ap.parse_args(argv)
    Matching(args.bootstrap_server, args.state_dir, args.instance,
             args.txn_linger_ms).run(Stopper())


if __name__ == "__main__":
    main()
