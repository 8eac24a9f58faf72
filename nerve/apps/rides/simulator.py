"""Rides simulator: riders request rides, drivers stream positions and drive matched trips.

    python -m nerve.apps.rides.simulator --bootstrap-server HOST:PORT --state-dir D \
        [--rate 5] [--duration 20]

Riders: --rate ride-requests per second. Drivers: DRIVERS_PER_ZONE per zone, each sending its
position to driver-locations every 0.5 s; a driver that receives a ride-matched drives to the
pickup and the drop-off, then sends ride-completed. All keyed by zone. After --duration no
new requests are made; the simulator waits (up to --drain s) until every request was matched
and every trip completed, then exits. It measures request-to-match latency (request `ts` to
the moment it sees the ride-matched) and counts double bookings it is handed.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from nerve.apps.common import (
    Stopper,
    base_args,
    decode,
    encode,
    log,
    now_ms,
    producer_config,
    write_json_atomic,
)
from nerve.apps.rides import DRIVERS_PER_ZONE, ZONE_SIZE, ZONES_PER_SIDE, zone_name

SPEED_KM_S = 8.0  # simulated time runs fast: trips take a second or two
LOCATION_EVERY_S = 0.5


@dataclass
class Driver:
    id: str
    zone: str
    x: float
    y: float
    ride: dict[str, Any] | None = None
    leg: str = ""  # "pickup" | "dropoff"
    seq: int = 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main(argv: list[str] | None = None) -> None:
    ap = base_args("rides simulator")
    ap.add_argument("--rate", type=float, default=5.0, help="ride requests per second")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds; 0 = until stopped")
    ap.add_argument("--drain", type=float, default=60.0,
                    help="seconds to wait for outstanding matches and trips at the end")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    Simulator(args.bootstrap_server, args.state_dir, args.seed).run(
        args.rate, args.duration, args.drain)


class Simulator:
    def __init__(self, bootstrap: str, state_dir: Path, seed: int | None) -> None:
        self.rng = random.Random(seed)
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = uuid.uuid4().hex[:6]
        self.producer = Producer(producer_config(bootstrap))
        # No consumer group: the simulator reads every ride-matched partition from "now".
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "rides-simulator",
                                  "enable.auto.commit": False})
        parts = self.consumer.list_topics("ride-matched", timeout=30).topics["ride-matched"]
        self.consumer.assign([TopicPartition("ride-matched", p, OFFSET_END)
                              for p in parts.partitions])
        self.drivers: dict[str, Driver] = {}
        for zx in range(ZONES_PER_SIDE):
            for zy in range(ZONES_PER_SIDE):
                for i in range(DRIVERS_PER_ZONE):
                    d = Driver(f"D-{zx}{zy}-{i}", zone_name(zx, zy), *self._point(zx, zy))
                    self.drivers[d.id] = d
        self.requests: dict[str, dict[str, Any]] = {}  # ride id -> request, until matched
        self.matched: dict[str, int] = {}  # ride id -> times we were told it was matched
        self.completed = 0
        self.latencies: list[float] = []
        self.double_booked = 0
        self.failed = 0
        self.n = 0

    def _point(self, zx: int, zy: int) -> tuple[float, float]:
        return (zx * ZONE_SIZE + self.rng.uniform(0.5, ZONE_SIZE - 0.5),
                zy * ZONE_SIZE + self.rng.uniform(0.5, ZONE_SIZE - 0.5))

    def _emit(self, topic: str, key: str, event: dict[str, Any]) -> None:
        def cb(err: object, _m: object) -> None:
            if err is not None:
                self.failed += 1
        self.producer.produce(topic, key=key, value=encode(event), on_delivery=cb)

    def request_ride(self) -> None:
        zx, zy = self.rng.randrange(ZONES_PER_SIDE), self.rng.randrange(ZONES_PER_SIDE)
        self.n += 1
        ride = {"id": f"ride-{self.run_id}-{self.n}", "ts": now_ms(),
                "rider": f"R-{self.rng.randrange(1, 1000):04d}", "zone": zone_name(zx, zy),
                "pickup": self._point(zx, zy), "dropoff": self._point(zx, zy)}
        self.requests[ride["id"]] = ride
        self._emit("ride-requests", ride["zone"], ride)

    def on_matched(self, m: dict[str, Any]) -> None:
        ride_id = m["ride"]
        if ride_id not in self.requests and ride_id not in self.matched:
            return  # not one of ours (an earlier run on the same topics)
        self.matched[ride_id] = self.matched.get(ride_id, 0) + 1
        if self.matched[ride_id] > 1:
            return  # a duplicate match: the invariant check reports it
        req = self.requests.pop(ride_id)
        self.latencies.append(now_ms() - req["ts"])
        d = self.drivers[m["driver"]]
        if d.ride is not None:
            self.double_booked += 1
            return
        d.ride, d.leg = req, "pickup"

    def move(self, dt: float) -> None:
        for d in self.drivers.values():
            if d.ride is None:
                continue
            tx, ty = d.ride["pickup"] if d.leg == "pickup" else d.ride["dropoff"]
            dist = math.hypot(tx - d.x, ty - d.y)
            step = SPEED_KM_S * dt
            if dist > step:
                d.x += (tx - d.x) * step / dist
                d.y += (ty - d.y) * step / dist
                continue
            d.x, d.y = tx, ty
            if d.leg == "pickup":
                d.leg = "dropoff"
                continue
            ride = d.ride
            self._emit("ride-completed", ride["zone"], {
                "id": ride["id"], "ride": ride["id"], "ts": now_ms(), "driver": d.id,
                "rider": ride["rider"], "zone": ride["zone"],
                "distance_km": round(math.dist(ride["pickup"], ride["dropoff"]), 3)})
            self.completed += 1
            d.ride = None

    def send_locations(self) -> None:
        for d in self.drivers.values():
            d.seq += 1
            self._emit("driver-locations", d.zone, {
                "id": f"{d.id}-{self.run_id}-{d.seq}", "ts": now_ms(), "driver": d.id,
                "zone": d.zone, "x": round(d.x, 4), "y": round(d.y, 4),
                "ride": d.ride["id"] if d.ride else None,
                "rider": d.ride["rider"] if d.ride and d.leg == "dropoff" else None})

    def stats(self, done: bool, phase: str) -> dict[str, Any]:
        recent = self.latencies[-200:]
        return {"service": "simulator", "phase": phase, "done": done, "requested": self.n,
                "matched": len(self.matched), "completed": self.completed,
                "waiting": len(self.requests), "double_booked": self.double_booked,
                "duplicate_matches": sum(n - 1 for n in self.matched.values()),
                "failed_deliveries": self.failed,
                "latency_ms": {"p50": percentile(self.latencies, 0.5),
                               "p99": percentile(self.latencies, 0.99),
                               "max": max(self.latencies, default=0),
                               "recent_p50": percentile(recent, 0.5),
                               "recent_p99": percentile(recent, 0.99)}}

    def run(self, rate: float, duration: float, drain: float) -> None:
        stopper = Stopper()
        log("rides-simulator", f"{len(self.drivers)} drivers, ~{rate:g} requests/s")
        start = last = last_loc = last_stats = time.monotonic()
        # Drivers go online first: requests start once matching can know where they are.
        self.send_locations()
        next_req = start + 2 * LOCATION_EVERY_S
        phase = "running"
        while not stopper.stopping:
            now = time.monotonic()
            if phase == "running" and duration > 0 and now - start >= duration:
                phase, drain_until = "draining", now + drain
            if phase == "draining" and (
                    (not self.requests and all(d.ride is None for d in self.drivers.values()))
                    or now > drain_until):
                break
            if phase == "running":
                while next_req <= now:
                    self.request_ride()
                    next_req += 1.0 / rate
            for msg in self.consumer.consume(500, 0.02):
                if not msg.error():
                    self.on_matched(decode(msg.value()))
            self.move(now - last)
            last = now
            if now - last_loc >= LOCATION_EVERY_S:
                self.send_locations()
                last_loc = now
            self.producer.poll(0)
            if now - last_stats >= 0.5:
                write_json_atomic(self.state_dir / "stats.json", self.stats(False, phase))
                last_stats = now
        undelivered = self.producer.flush(120)
        self.consumer.close()
        st = self.stats(True, phase)
        st["undelivered"] = undelivered
        write_json_atomic(self.state_dir / "stats.json", st)
        log("rides-simulator", f"done: {st}")


if __name__ == "__main__":
    main()
