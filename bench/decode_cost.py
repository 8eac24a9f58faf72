"""Microbenchmark: what the bounds pre-scan adds to decoding a Produce or Fetch request.

    python -m bench.decode_cost [--rounds N]

For each request shape it times kio's decode alone (before) and the scan plus the decode
(after), per request, as the dispatcher does them (nerve/handlers/dispatch.py): the fastest
of `--rounds` rounds of 2,000 requests each (the least disturbed on a shared machine). One
process, no broker, no network.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable

from nerve.protocol import records as rb
from nerve.protocol.bounds import scanner
from nerve.protocol.framing import parse_request_header
from nerve.protocol.messages import build, decode_request, request_class
from tests.fuzz.corpus import frame_of

BATCH_1K = rb.build_batch([(None, b"x" * 1000)] * 16)  # ~16 KiB, like a librdkafka batch


def produce(version: int, partitions: int) -> bytes:
    body = build(request_class(0, version), transactional_id=None, acks=-1, timeout=30000,
                 topic_data=[{"name": "bench-topic", "partition_data": [
                     {"index": i, "records": BATCH_1K} for i in range(partitions)]}])
    return frame_of(0, version, body)


def fetch(version: int, partitions: int) -> bytes:
    topic = ({"topic_id": uuid.uuid4()} if version >= 13 else {"topic": "bench-topic"})
    body = build(request_class(1, version), max_wait=500, min_bytes=1, max_bytes=52428800,
                 isolation_level=0, session_id=0, session_epoch=-1, rack_id="",
                 topics=[{**topic, "partitions": [
                     {"partition": i, "fetch_offset": 12345, "partition_max_bytes": 1048576,
                      "current_leader_epoch": -1, "log_start_offset": -1,
                      "last_fetched_epoch": -1} for i in range(partitions)]}],
                 forgotten_topics_data=[])
    return frame_of(1, version, body)


def per_request_us(fn: Callable[[], object], n: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return min(samples)  # the least disturbed round: the machine is shared


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--n", type=int, default=2000)
    a = ap.parse_args()
    shapes = [("Produce v10, 1 partition x 16 KiB", 0, 10, produce(10, 1)),
              ("Produce v10, 8 partitions x 16 KiB", 0, 10, produce(10, 8)),
              ("Produce v7 (classic), 8 partitions", 0, 7, produce(7, 8)),
              ("Fetch v16, 1 partition", 1, 16, fetch(16, 1)),
              ("Fetch v16, 8 partitions", 1, 16, fetch(16, 8)),
              ("Fetch v11 (classic), 8 partitions", 1, 11, fetch(11, 8))]
    print(f"{'request':40} {'frame':>8} {'decode':>9} {'scan+decode':>12} {'scan':>8} {'added':>7}")
    for label, api, version, frame in shapes:
        flexible = request_class(api, version).__flexible__
        offset = parse_request_header(frame, flexible=flexible).body_offset
        scan = scanner(api, version)

        def before(frame: bytes = frame, offset: int = offset, key: int = api,
                   v: int = version) -> object:
            return decode_request(key, v, frame, offset)

        def after(frame: bytes = frame, offset: int = offset, key: int = api, v: int = version,
                  scan: Callable[[bytes, int], int] = scan) -> object:
            scan(frame, offset)
            return decode_request(key, v, frame, offset)

        def scan_only(frame: bytes = frame, offset: int = offset,
                      scan: Callable[[bytes, int], int] = scan) -> object:
            return scan(frame, offset)

        b = per_request_us(before, a.n, a.rounds)
        t = per_request_us(after, a.n, a.rounds)
        s = per_request_us(scan_only, a.n, a.rounds)
        print(f"{label:40} {len(frame):>7}B {b:>7.2f}us {t:>10.2f}us {s:>6.2f}us "
              f"{(t - b) / b * 100:>6.0f}%")


if __name__ == "__main__":
    main()
