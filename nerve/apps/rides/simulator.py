"""Rides simulator: riders request rides, drivers stream positions and drive matched trips.

    python -m nerve.apps.rides.simulator --bootstrap-server HOST:PORT --state-dir D \
        [--rate 5] [--duration 20]

Riders: --rate ride-requests per second. The city is sized to the rate (nerve.apps.rides.
city_for: more zones and more drivers per zone as the rate grows, so supply meets demand);
--zones N (an N x N grid) and --drivers D (in all) override it. Each driver sends its position
to driver-locations every 0.5 s (staggered, so driver-locations is the largest topic and
arrives evenly); a driver that receives a ride-matched drives to the pickup and the drop-off,
then sends ride-completed. All keyed by zone. After --duration no new requests are made; the
simulator waits (up to --drain s) until every request was matched and every trip completed,
then exits. It measures request-to-match latency as the rider sees it (request `ts` to the
moment it reads the ride-matched) and counts double bookings it is handed.
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
    Latency,
    Stopper,
    base_args,
    decode,
    encode,
    log,
    now_ms,
    percentile,
    producer_config,
    publish_metrics,
    write_json_atomic,
)
from nerve.apps.rides import METRICS_TOPIC, SPEED_KM_S, ZONE_SIZE, city_for, zone_name

LOCATION_EVERY_S = 0.5
SEES_MATCH = "request -> rider sees match"
__all__ = ["percentile"]  # re-exported for older importers


@dataclass
class Driver:
    id: str
    zone: str
    x: float
    y: float
    ride: dict[str, Any] | None = None
    leg: str = ""  # "pickup" | "dropoff"
    seq: int = 0


def main(argv: list[str] | None = None) -> None:
    ap = base_args("rides simulator")
    ap.add_argument("--rate", type=float, default=5.0, help="ride requests per second")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds; 0 = until stopped")
    ap.add_argument("--drain", type=float, default=60.0,
                    help="seconds to wait for outstanding matches and trips at the end")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--zones", type=int, default=None,
                    help="an N x N city (default: sized to --rate, 4 x 4 to 10 x 10)")
    ap.add_argument("--drivers", type=int, default=None,
                    help="drivers in all, spread over the zones (default: sized to --rate)")
    args = ap.parse_args(argv)
    side, drivers = city_for(args.rate, args.zones, args.drivers)
    Simulator(args.bootstrap_server, args.state_dir, args.seed, side, drivers).run(
        args.rate, args.duration, args.drain)


class Simulator:
    def __init__(self, bootstrap: str, state_dir: Path, seed: int | None,
                 zones_per_side: int = 4, drivers: int = 48) -> None:
        self.rng = random.Random(seed)
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = uuid.uuid4().hex[:6]
        self.producer = Producer(producer_config(bootstrap, **{
            "client.id": "rides-simulator", "linger.ms": 5}))
        # No consumer group: the simulator reads every ride-matched partition from "now".
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "rides-simulator",
                                  "client.id": "rides-simulator", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 50})
        parts = self.consumer.list_topics("ride-matched", timeout=30).topics["ride-matched"]
        self.consumer.assign([TopicPartition("ride-matched", p, OFFSET_END)
                              for p in parts.partitions])
        self.side = zones_per_side
        self.drivers: dict[str, Driver] = {}
        zones = [(zx, zy) for zx in range(self.side) for zy in range(self.side)]
        for n in range(drivers):
            zx, zy = zones[n % len(zones)]
            d = Driver(f"D-{zx}{zy}-{n // len(zones)}", zone_name(zx, zy),
                       *self._point(zx, zy))
            self.drivers[d.id] = d
        self.order = list(self.drivers.values())  # location round-robin
        self.cursor = 0
        self.busy: set[str] = set()  # drivers on a ride
        self.requests: dict[str, dict[str, Any]] = {}  # ride id -> request, until matched
        self.matched: dict[str, int] = {}  # ride id -> times we were told it was matched
        self.completed = 0
        self.latency = Latency()
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
        zx, zy = self.rng.randrange(self.side), self.rng.randrange(self.side)
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
        self.latency.add(SEES_MATCH, now_ms() - req["ts"])
        d = self.drivers[m["driver"]]
        if d.ride is not None:
            self.double_booked += 1
            return
        d.ride, d.leg = req, "pickup"
        self.busy.add(d.id)

    def move(self, dt: float) -> None:
        for d in [self.drivers[i] for i in self.busy]:
            assert d.ride is not None
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
            self.busy.discard(d.id)

    def send_locations(self, count: int) -> None:
        """The next `count` drivers in round-robin order send their position."""
        for _ in range(min(count, len(self.order))):
            d = self.order[self.cursor]
            self.cursor = (self.cursor + 1) % len(self.order)
            d.seq += 1
            self._emit("driver-locations", d.zone, {
                "id": f"{d.id}-{self.run_id}-{d.seq}", "ts": now_ms(), "driver": d.id,
                "zone": d.zone, "x": round(d.x, 4), "y": round(d.y, 4),
                "ride": d.ride["id"] if d.ride else None,
                "rider": d.ride["rider"] if d.ride and d.leg == "dropoff" else None})

    def stats(self, done: bool, phase: str) -> dict[str, Any]:
        return {"service": "simulator", "phase": phase, "done": done, "requested": self.n,
                "matched": len(self.matched), "completed": self.completed,
                "waiting": len(self.requests), "double_booked": self.double_booked,
                "duplicate_matches": sum(n - 1 for n in self.matched.values()),
                "failed_deliveries": self.failed, "zones": self.side ** 2,
                "drivers": len(self.drivers), "busy": len(self.busy),
                "latency_ms": self.latency.summary()}

    def run(self, rate: float, duration: float, drain: float) -> None:
        stopper = Stopper()
        log("rides-simulator", f"{self.side} x {self.side} zones, {len(self.drivers)} drivers, "
                               f"~{rate:g} requests/s")
        start = last = last_stats = time.monotonic()
        # Drivers go online first: requests start once matching can know where they are.
        self.send_locations(len(self.order))
        sent_locations = len(self.order)
        next_req = start + 2 * LOCATION_EVERY_S
        phase = "running"
        while not stopper.stopping:
            now = time.monotonic()
            if phase == "running" and duration > 0 and now - start >= duration:
                phase, drain_until = "draining", now + drain
            if phase == "draining" and ((not self.requests and not self.busy)
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
            due = len(self.order) + int((now - start) / LOCATION_EVERY_S * len(self.order))
            if due > sent_locations:
                self.send_locations(due - sent_locations)
                sent_locations = due
            self.producer.poll(0)
            if now - last_stats >= 0.5:
                st = self.stats(False, phase)
                write_json_atomic(self.state_dir / "stats.json", st)
                publish_metrics(self.producer, METRICS_TOPIC, "simulator", "0", st["latency_ms"])
                last_stats = now
        undelivered = self.producer.flush(120)
        self.consumer.close()
        st = self.stats(True, phase)
        st["undelivered"] = undelivered
        write_json_atomic(self.state_dir / "stats.json", st)
        log("rides-simulator", f"done: {st}")


if __name__ == "__main__":
    main()
