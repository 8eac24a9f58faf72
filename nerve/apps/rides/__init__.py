"""Ride hailing: riders request rides, drivers stream positions, matching pairs them.

The city is a grid of zones. Each driver works one zone. ride-requests, driver-locations,
ride-matched and ride-completed are all keyed by zone and have the same partition count: one
zone's events share a partition number in every topic, and so do each ride's and each driver's
(a ride and a driver stay in one zone), which keeps every entity's events in order and lets one
matching instance own a zone outright (see nerve/apps/rides/matching.py).
"""

PARTITIONS = 6
TOPICS: dict[str, int] = {
    "ride-requests": PARTITIONS,
    "driver-locations": PARTITIONS,
    "ride-matched": PARTITIONS,
    "ride-completed": PARTITIONS,
    "payments": 3,
}
SERVICES = ("matching", "tracking", "payments")
ZONES_PER_SIDE = 4          # 4 x 4 zones, named z00 .. z33
ZONE_SIZE = 10.0            # km
DRIVERS_PER_ZONE = 3
FARE_BASE_CENTS = 250
FARE_PER_KM_CENTS = 120


def zone_of(x: float, y: float) -> str:
    zx = min(int(x // ZONE_SIZE), ZONES_PER_SIDE - 1)
    zy = min(int(y // ZONE_SIZE), ZONES_PER_SIDE - 1)
    return zone_name(zx, zy)


def zone_name(zx: int, zy: int) -> str:
    # Short keys hash unevenly; with these names murmur2 spreads the 16 zones over all 6
    # partitions (6 zones on partitions 0-2, 10 on 3-5).
    return f"z{zx}{zy}"


def fare_cents(distance_km: float) -> int:
    return FARE_BASE_CENTS + round(distance_km * FARE_PER_KM_CENTS)
