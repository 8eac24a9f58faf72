"""Counters the hot paths keep for the metrics endpoint (nerve/metrics.py reads them).

Plain Python numbers, no locks and no prometheus-client on the request path: a request costs
one dict lookup, a few additions and one bisect; a produced batch adds its byte count and its
record count (from the batch header's offsets, never per record). Everything runs on the
broker's event loop, and so does the scrape that reads them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Seconds. Kafka's request latencies run from well under a millisecond (Metadata) to the
# fetch wait (500 ms by default) and long polls.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FSYNC_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Histogram:
    """Bucket counts (the last one past every bound), a sum and a count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs as Prometheus wants them, +Inf last."""
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class ApiStats:
    __slots__ = ("errors", "latency", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency = Histogram(LATENCY_BUCKETS)


class BrokerStats:
    """Per (API key, version): requests, errors, latency. Per topic: bytes and records in,
    bytes out."""

    def __init__(self) -> None:
        self.apis: dict[tuple[int, int], ApiStats] = {}
        self.bytes_in: dict[str, int] = {}
        self.records_in: dict[str, int] = {}
        self.bytes_out: dict[str, int] = {}

    def request(self, api_key: int, version: int, seconds: float, error: bool) -> None:
        s = self.apis.get((api_key, version))
        if s is None:
            s = self.apis[(api_key, version)] = ApiStats()
        s.requests += 1
        if error:
            s.errors += 1
        s.latency.observe(seconds)

    def produced(self, topic: str, nbytes: int, records: int) -> None:
        self.bytes_in[topic] = self.bytes_in.get(topic, 0) + nbytes
        self.records_in[topic] = self.records_in.get(topic, 0) + records

    def fetched(self, topic: str, nbytes: int) -> None:
        self.bytes_out[topic] = self.bytes_out.get(topic, 0) + nbytes

    def forget_topic(self, topic: str) -> None:
        for d in (self.bytes_in, self.records_in, self.bytes_out):
            d.pop(topic, None)


class FlushStats:
    """Group commit: how long each fsync round took, and how many logs it covered."""

    def __init__(self) -> None:
        self.seconds = Histogram(FSYNC_BUCKETS)
        self.logs = Histogram(BATCH_BUCKETS)
