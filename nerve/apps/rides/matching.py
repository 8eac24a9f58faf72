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
A request's offset is committed only after its ride-matched was acknowledged, so a crash at any
point re-reads the request and either finds it matched in ride-matched or matches it.
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
    Stopper,
    base_args,
    consumer_config,
    decode,
    encode,
    log,
    now_ms,
    producer_config,
    write_json_atomic,
)
from nerve.apps.rides.simulator import percentile

INPUTS = ("ride-requests", "driver-locations", "ride-completed")
POSITION_MAX_AGE_MS = 10_000  # a driver silent for longer is not offered rides
REPLAY_LOCATIONS_MS = 5_000


@dataclass
class Position:
    x: float
    y: float
    ts: int
    zone: str


@dataclass
class PartitionState:
    """Everything matching knows about the zones of one partition number."""

    drivers: dict[str, Position] = field(default_factory=dict)
    busy: dict[str, str] = field(default_factory=dict)  # driver -> ride
    matched: set[str] = field(default_factory=set)
    pending: OrderedDict[str, tuple[int, dict[str, Any]]] = field(default_factory=OrderedDict)
    next_offset: dict[str, int] = field(default_factory=dict)  # topic -> next offset to read


class Matching:
    def __init__(self, bootstrap: str, state_dir: Path, instance: str) -> None:
        self.bootstrap = bootstrap
        self.state_dir = state_dir
        self.instance = instance
        state_dir.mkdir(parents=True, exist_ok=True)
        self.name = f"matching-{instance}"
        self.consumer = Consumer(consumer_config(bootstrap, "matching", instance))
        self.producer = Producer(producer_config(bootstrap))
        self.parts: dict[int, PartitionState] = {}
        self.matches = 0
        self.latencies: list[float] = []
        self.restores = 0

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
        self.producer.flush(30)
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
                    if m.offset() + 1 >= ends[m.topic()]:
                        todo.discard(m.topic())
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
            st.drivers[ev["driver"]] = Position(ev["x"], ev["y"], ev["ts"], ev["zone"])
        elif st.busy.get(ev["driver"]) == ev["ride"]:  # ride-completed
            del st.busy[ev["driver"]]

    def match(self, st: PartitionState) -> int:
        """Match waiting requests, oldest first, each to the nearest free driver of its zone."""
        made = 0
        fresh = now_ms() - POSITION_MAX_AGE_MS
        for ride_id, (_, req) in list(st.pending.items()):
            px, py = req["pickup"]
            free = [(math.hypot(pos.x - px, pos.y - py), d) for d, pos in st.drivers.items()
                    if pos.zone == req["zone"] and d not in st.busy and pos.ts >= fresh]
            if not free:
                continue
            dist, driver = min(free)
            ts = now_ms()
            self.producer.produce("ride-matched", key=req["zone"], value=encode({
                "id": ride_id, "ride": ride_id, "ts": ts, "driver": driver, "rider": req["rider"],
                "zone": req["zone"], "request_ts": req["ts"], "pickup_km": round(dist, 3),
                "matcher": self.name}))
            st.busy[driver] = ride_id
            st.matched.add(ride_id)
            del st.pending[ride_id]
            self.latencies.append(ts - req["ts"])
            made += 1
        return made

    def _commit(self, asynchronous: bool) -> None:
        offsets = []
        for p, st in self.parts.items():
            for topic, nxt in st.next_offset.items():
                if topic == "ride-requests" and st.pending:
                    # The oldest unmatched request: a successor re-reads from there.
                    nxt = min(off for off, _ in st.pending.values())
                offsets.append(TopicPartition(topic, p, nxt))
        if offsets:
            with contextlib.suppress(KafkaException):
                self.consumer.commit(offsets=offsets, asynchronous=asynchronous)

    def run(self, stopper: Stopper) -> None:
        self.consumer.subscribe(list(INPUTS), on_assign=self.on_assign, on_revoke=self.on_revoke)
        log(self.name, f"consuming {', '.join(INPUTS)} from {self.bootstrap}")
        last_commit = last_stats = 0.0
        try:
            while not stopper.stopping:
                for m in self.consumer.consume(500, 0.05):
                    if not m.error():
                        self.handle(m)
                made = sum(self.match(st) for st in self.parts.values())
                if made:
                    self.matches += made
                    # Durable before the requests' offsets may move past them.
                    self.producer.flush(60)
                now = time.monotonic()
                if now - last_commit >= 0.5:
                    self._commit(asynchronous=True)
                    last_commit = now
                if now - last_stats >= 0.5:
                    self._write_stats()
                    last_stats = now
        finally:
            self.producer.flush(30)
            self._commit(asynchronous=False)
            self._write_stats()
            self.consumer.close()
            log(self.name, f"stopped after {self.matches} matches")

    def _write_stats(self) -> None:
        write_json_atomic(self.state_dir / "stats.json", {
            "service": self.name, "pid": os.getpid(), "matches": self.matches,
            "partitions": sorted(self.parts), "restores": self.restores,
            "pending": sum(len(s.pending) for s in self.parts.values()),
            "match_latency_ms": {"p50": percentile(self.latencies, 0.5),
                                 "p99": percentile(self.latencies, 0.99)}})


def main(argv: list[str] | None = None) -> None:
    args = base_args(__doc__ or "matching").parse_args(argv)
    Matching(args.bootstrap_server, args.state_dir, args.instance).run(Stopper())


if __name__ == "__main__":
    main()
