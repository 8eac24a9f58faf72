"""Microbenchmark: CPU time of one Produce or Fetch request through the dispatcher (issue 14).

    python -m bench.request_cost [--rounds N] [--n N] [--only SUBSTRING]

An in-process broker (BrokerCore in a temp dir, no sockets) gets request frames shaped like
the bench's librdkafka clients send for 100 B records (`python -m bench.small_records`
counted them: a 1-partition produce of 300k records is ~250 requests of ~1,190 records, an
8-partition one ~890 requests of ~40 records per partition) and small ones (10 records, where
the fixed per-request cost shows). Each request goes through Dispatcher.handle as the
connection calls it (framing, bounds scan, decode, handler, storage append, response
encoding); acks=all answers are awaited, so each one pays its own fsync round.

Reported per request: CPU time of the event-loop thread (`time.thread_time`: what limits the
broker, which runs one loop) and of the whole process (`time.process_time`: plus the fsync
thread's system time), the minimum over `--rounds` rounds (the least disturbed on a shared
machine). Fetch requests read from a log filled beforehand; the time to send the regions
(pread + writev in the connection) is not included.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kio.serial import entity_writer

from nerve.broker import BrokerCore
from nerve.config import BrokerConfig
from nerve.handlers import load_handlers
from nerve.handlers.dispatch import Dispatcher
from nerve.protocol import records as rb
from nerve.protocol.messages import build, is_flexible, request_class

VALUE = b"v" * 100
TICK = os.sysconf("SC_CLK_TCK")
PRODUCE_VERSION = 10  # what librdkafka 2.16 sends
FETCH_VERSION = 16


def frame_of(api: int, version: int, body: Any) -> bytes:
    header = struct.pack(">hhih", api, version, 1, 5) + b"bench"
    if is_flexible(api, version):
        header += b"\x00"
    out = io.BytesIO()
    entity_writer(type(body))(out, body)
    return header + out.getvalue()


def batch(records: int) -> bytes:
    return rb.build_batch([(None, VALUE)] * records, timestamp_ms=int(time.time() * 1000))


def produce_frame(topic: str, partitions: int, records: int, acks: int) -> bytes:
    body = build(request_class(0, PRODUCE_VERSION), transactional_id=None, acks=acks,
                 timeout=30000, topic_data=[{"name": topic, "partition_data": [
                     {"index": i, "records": batch(records)} for i in range(partitions)]}])
    return frame_of(0, PRODUCE_VERSION, body)


def fetch_frame(topic_id: Any, partitions: int, offset: int) -> bytes:
    body = build(request_class(1, FETCH_VERSION), replica_id=-1, max_wait=0, min_bytes=1,
                 max_bytes=52428800, isolation_level=0, session_id=0, session_epoch=-1,
                 rack_id="", topics=[{"topic_id": topic_id, "partitions": [
                     {"partition": i, "fetch_offset": offset, "partition_max_bytes": 1048576,
                      "current_leader_epoch": -1, "log_start_offset": -1,
                      "last_fetched_epoch": -1} for i in range(partitions)]}],
                 forgotten_topics_data=[])
    return frame_of(1, FETCH_VERSION, body)


async def one(dispatcher: Dispatcher, frame: bytes) -> Any:
    result = await dispatcher.handle(frame, "127.0.0.1", 1, 1)
    if isinstance(result, asyncio.Future):
        result = await result
    return result


def thread_user_s() -> float:
    """User CPU of the calling thread (the rest of its thread_time is system time)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[11]) / TICK


async def cost(dispatcher: Dispatcher, frame: bytes, n: int,
               rounds: int) -> tuple[float, float, float]:
    threads, users, procs = [], [], []
    for _ in range(rounds):
        t0, u0, p0 = time.thread_time(), thread_user_s(), time.process_time()
        for _ in range(n):
            await one(dispatcher, frame)
        threads.append((time.thread_time() - t0) / n * 1e6)
        users.append((thread_user_s() - u0) / n * 1e6)
        procs.append((time.process_time() - p0) / n * 1e6)
    best = min(range(rounds), key=threads.__getitem__)  # the least disturbed round
    return threads[best], users[best], procs[best]


async def run(a: argparse.Namespace) -> None:
    load_handlers()
    tmp = Path(tempfile.mkdtemp(prefix="nerve-request-cost-"))
    core = BrokerCore(tmp / "data", BrokerConfig({}), advertised_host="127.0.0.1",
                      advertised_port=9092)
    core.load()
    await core.logs.start()
    dispatcher = Dispatcher(core)
    try:
        ids = {parts: core.logs.create_topic(f"p{parts}", parts).topic_id for parts in (1, 8)}
        shapes: list[tuple[str, bytes]] = [
            ("Produce acks=all 1 x 1,190 records", produce_frame("p1", 1, 1190, -1)),
            ("Produce acks=all 8 x 40 records", produce_frame("p8", 8, 40, -1)),
            ("Produce acks=1 1 x 1,190 records", produce_frame("p1", 1, 1190, 1)),
            ("Produce acks=1 8 x 40 records", produce_frame("p8", 8, 40, 1)),
            ("Produce acks=1 1 x 10 records", produce_frame("p1", 1, 10, 1)),
            ("Produce acks=1 8 x 10 records", produce_frame("p8", 8, 10, 1)),
        ]
        shapes = [s for s in shapes if a.only in s[0]]
        rows = []
        for label, frame in shapes:
            await one(dispatcher, frame)  # warm: the topic's caches, the first segment
            rows.append((label, len(frame), *await cost(dispatcher, frame, a.n, a.rounds)))
        # Fetches read what the produce shapes wrote: ~1 MiB per partition from offset 0.
        for parts in (1, 8):
            label = f"Fetch 1 MiB x {parts} partition{'s' if parts > 1 else ''}"
            if a.only not in label:
                continue
            frame = fetch_frame(ids[parts], parts, 0)
            await one(dispatcher, frame)
            rows.append((label, len(frame), *await cost(dispatcher, frame, a.n, a.rounds)))
        print(f"{'request':38} {'frame':>9} {'loop CPU':>10} {'(user)':>8} {'process CPU':>12}")
        for label, size, thread_us, user_us, proc_us in rows:
            print(f"{label:38} {size:>8}B {thread_us:>8.1f}us {user_us:>6.0f}us "
                  f"{proc_us:>10.1f}us")
    finally:
        await core.logs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--only", default="", help="run the shapes whose name has this")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
