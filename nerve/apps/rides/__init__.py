"""Ride hailing: riders request rides, drivers stream positions, matching pairs them.

The city is a grid of zones. Each driver works one zone. ride-requests, driver-locations,
ride-matched and ride-completed are all keyed by zone and have the same partition count: one
zone's events share a partition number in every topic, and so do each ride's and each driver's
(a ride and a driver stay in one zone), which keeps every entity's events in order and lets one
matching instance own a zone outright (see nerve/apps/rides/matching.py).
"""

import math

PARTITIONS = 6
TOPICS: dict[str, int] = {
    "ride-requests": PARTITIONS,
    "driver-locations": PARTITIONS,
    "ride-matched": PARTITIONS,
    "ride-completed": PARTITIONS,
    "payments": 3,
    # Every service's latency figures, once a second (the console's story page reads them).
    "rides-metrics": 1,
}
METRICS_TOPIC = "rides-metrics"
SERVICES = ("matching", "tracking", "payments")
ZONES_PER_SIDE = 4          # the smallest city: 4 x 4 zones, named z00 .. z33
MAX_ZONES_PER_SIDE = 10     # zone names have one digit per axis
ZONE_SIZE = 10.0            # km
DRIVERS_PER_ZONE = 3        # the fewest
FARE_BASE_CENTS = 250
FARE_PER_KM_CENTS = 120
SPEED_KM_S = 8.0            # simulated time runs fast: trips take a second or two
# A driver is busy for about this long per ride: drive to the pickup (the nearest free driver,
# a few km), the trip (~5 km on average in a 10 km zone), and until matching reads the
# completion.
BUSY_S_PER_RIDE = 1.3
HEADROOM = 2.0              # drivers per zone = HEADROOM x the busy ones on average


def city_for(rate: float, zones_per_side: int | None = None,
             drivers: int | None = None) -> tuple[int, int]:
    """(zones per side, drivers in all) for `rate` requests/s: more zones as the rate grows
    (up to 10 x 10), and enough drivers in each that supply meets demand with headroom (a
    zone sees rate / zones requests/s, each keeping a driver busy ~BUSY_S_PER_RIDE)."""
    side = zones_per_side or min(MAX_ZONES_PER_SIDE,
                                 max(ZONES_PER_SIDE, math.ceil(math.sqrt(rate / 4))))
    side = max(1, min(MAX_ZONES_PER_SIDE, side))
    if drivers is None:
        per_zone = max(DRIVERS_PER_ZONE,
                       math.ceil(HEADROOM * rate * BUSY_S_PER_RIDE / (side * side)))
        drivers = per_zone * side * side
    return side, max(1, drivers)


def zone_name(zx: int, zy: int) -> str:
    # Short keys hash unevenly; with these names murmur2 spreads the 16 zones of the smallest
    # city over all 6 partitions (6 zones on partitions 0-2, 10 on 3-5).
    return f"z{zx}{zy}"


def fare_cents(distance_km: float) -> int:
    return FARE_BASE_CENTS + round(distance_km * FARE_PER_KM_CENTS)
