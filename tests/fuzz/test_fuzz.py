"""Fuzzing a real `nerve serve` with mutated client frames while a good producer/consumer work.

Seeds: frames recorded from confluent-kafka, kafka-python and Kafka's Java tools
(corpus.jsonl, `python -m tests.fuzz.record`), plus a kio-built frame for every served API
version no client sent. Each mutation (mutate.py) goes to the broker on a fresh connection.
Throughout: the broker never exits, a fresh ApiVersions is answered, RSS stays bounded, the
good pair sees no error and gets every record in order; afterwards, no traceback in the log
and no bad connection costs more than one log line.

    NERVE_FUZZ_SEED=1234 NERVE_FUZZ_MUTATIONS=20000 python -m pytest tests/fuzz -q
replays a run (the seed is printed, and named in every failure).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import re
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from tests.fuzz.corpus import FUZZ_TOPIC, seeds
from tests.fuzz.mutate import mutate
from tests.helpers import NerveProcess

DEFAULT_MUTATIONS = 3000
SLOW_MUTATIONS = 40000
CONCURRENCY = 16
ANSWER_WAIT_S = 0.25  # a mutated request that is valid may wait (Fetch, JoinGroup): move on
PROBE_EVERY = 250
PROBE_TIMEOUT_S = 15.0
RSS_GROWTH_LIMIT = 256 * 1024 * 1024
CLOSE_RE = re.compile(r"closing connection (\d+) from ")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


API_VERSIONS_V3 = struct.pack(">hhih", 18, 3, 77, 5) + b"probe" + b"\x00" + b"\x06probe\x040.1\x00"


async def api_versions_probe(host: str, port: int) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT_S)
    try:
        writer.write(struct.pack(">i", len(API_VERSIONS_V3)) + API_VERSIONS_V3)
        size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), PROBE_TIMEOUT_S))
        body = await asyncio.wait_for(reader.readexactly(size[0]), PROBE_TIMEOUT_S)
        assert struct.unpack_from(">ih", body) == (77, 0), body[:16].hex()
    finally:
        writer.close()


@dataclass
class GoodPair:
    """A confluent-kafka producer (acks=all, idempotent) and a group consumer, in a thread."""

    bootstrap: str
    topic: str
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    acked: int = 0
    received: list[bytes] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    broken: threading.Event = field(default_factory=threading.Event)  # no use waiting

    def _error(self, err: KafkaError) -> None:
        self.errors.append(f"client error: {err}")

    def _delivered(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self.errors.append(f"delivery failed: {err}")
        else:
            self.acked += 1

    def run(self) -> None:
        common = {"bootstrap.servers": self.bootstrap, "error_cb": self._error,
                  "socket.timeout.ms": 30000, "logger": logging.getLogger("fuzz.good-pair")}
        producer = Producer({**common, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 2})
        consumer = Consumer({**common, "group.id": f"{self.topic}-group",
                             "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})
        consumer.subscribe([self.topic])
        try:
            while not self.stop.is_set():
                producer.produce(self.topic, value=b"good-%d" % self.sent,
                                 on_delivery=self._delivered)
                self.sent += 1
                producer.poll(0)
                self._consume(consumer, 0.005)
                time.sleep(0.005)
            wait = 2 if self.broken.is_set() else 30
            if producer.flush(wait) != 0:
                self.errors.append(f"producer could not flush within {wait} s")
            deadline = time.monotonic() + wait
            while len(self.received) < self.sent and time.monotonic() < deadline:
                self._consume(consumer, 0.2)
        finally:
            consumer.close()

    def _consume(self, consumer: Consumer, timeout: float) -> None:
        msg = consumer.poll(timeout)
        if msg is None:
            return
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                self.errors.append(f"consume error: {msg.error()}")
            return
        self.received.append(msg.value())


@dataclass
class Outcome:
    seed: int
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    recent: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=24))
    max_rss: int = 0
    failures: list[str] = field(default_factory=list)


async def send_one(host: str, port: int, data: bytes) -> str:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        return f"connect failed: {e}"
    try:
        writer.write(data)
        await writer.drain()
        got = await asyncio.wait_for(reader.read(65536), ANSWER_WAIT_S)
        return "answered" if got else "closed"
    except TimeoutError:
        return "pending"
    except (ConnectionError, OSError):
        return "reset"
    finally:
        writer.close()


async def fuzz(broker: NerveProcess, count: int, seed: int) -> Outcome:
    out = Outcome(seed)
    rng = random.Random(seed)
    pool = seeds()
    host, port = broker.host, broker.port
    assert broker.proc is not None
    pid = broker.proc.pid
    baseline = rss_bytes(pid)
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int, label: str, data: bytes) -> None:
        async with sem:
            result = await send_one(host, port, data)
            out.counts[result] += 1

    tasks: list[asyncio.Task[None]] = []
    for i in range(count):
        s = rng.choice(pool)
        kind, data = mutate(s.frame, rng)
        label = f"#{i} {kind} of {s.source} api {s.api} v{s.version}: {data[:96].hex()}"
        out.recent.append(label)
        tasks.append(asyncio.create_task(one(i, label, data)))
        if len(tasks) >= CONCURRENCY * 4:
            await asyncio.gather(*tasks)
            tasks.clear()
        if i % PROBE_EVERY == 0:
            await asyncio.gather(*tasks)
            tasks.clear()
            if not broker.running:
                out.failures.append(f"broker exited with code {broker.returncode} after mutation "
                                    f"#{i}")
                return out
            try:
                await api_versions_probe(host, port)
            except (TimeoutError, OSError, AssertionError, asyncio.IncompleteReadError) as e:
                out.failures.append(f"fresh ApiVersions not answered after mutation #{i}: {e!r}")
                return out
            rss = rss_bytes(pid)
            out.max_rss = max(out.max_rss, rss)
            if rss - baseline > RSS_GROWTH_LIMIT:
                out.failures.append(f"RSS grew from {baseline >> 20} MiB to {rss >> 20} MiB "
                                    f"by mutation #{i}")
                return out
    await asyncio.gather(*tasks)
    if not broker.running:
        out.failures.append(f"broker exited with code {broker.returncode} at the end")
        return out
    try:
        await api_versions_probe(host, port)
    except (TimeoutError, OSError, AssertionError, asyncio.IncompleteReadError) as e:
        out.failures.append(f"fresh ApiVersions not answered at the end: {e!r}")
    out.max_rss = max(out.max_rss, rss_bytes(pid))
    return out


def traceback_summaries(lines: list[str]) -> list[str]:
    """One line per traceback in the log: where it was raised and the exception."""
    out = []
    for i, line in enumerate(lines):
        if "internal error" in line and not any("Traceback" in x for x in lines[i + 1 : i + 2]):
            out.append(line)
        if not line.startswith("Traceback"):
            continue
        j = i + 1
        while j < len(lines) and lines[j].startswith(" "):
            j += 1
        where = [x.strip() for x in lines[i + 1 : j] if x.strip().startswith("File")]
        out.append(f"{where[-1] if where else '?'}: {lines[j] if j < len(lines) else '?'}")
    return out


def run_fuzz(tmp_path: Path, count: int) -> None:
    seed = int(os.environ.get("NERVE_FUZZ_SEED") or random.SystemRandom().getrandbits(32))
    count = int(os.environ.get("NERVE_FUZZ_MUTATIONS") or count)
    print(f"\nfuzz seed {seed} ({count} mutations; replay: NERVE_FUZZ_SEED={seed} "
          f"NERVE_FUZZ_MUTATIONS={count})", file=sys.stderr)
    broker = NerveProcess(tmp_path / "nerve-data")
    broker.start()
    try:
        for topic, parts in ((FUZZ_TOPIC, "3"), ("fuzz-good", "1")):
            subprocess.run([sys.executable, "-m", "nerve", "topics", "create", topic,
                            "--partitions", parts, "-b", broker.bootstrap],
                           check=True, capture_output=True)
        good = GoodPair(broker.bootstrap, "fuzz-good")
        thread = threading.Thread(target=good.run, daemon=True)
        thread.start()
        time.sleep(1.0)  # the pair joins its group before the storm
        log_before = len(broker.log_text().splitlines())
        t0 = time.monotonic()
        outcome = asyncio.run(fuzz(broker, count, seed))
        elapsed = time.monotonic() - t0
        if outcome.failures:
            good.broken.set()
        good.stop.set()
        thread.join(90)
        lines = broker.log_text().splitlines()[log_before:]
    finally:
        broker.stop()
    print(f"fuzz: {count} mutations in {elapsed:.1f}s, {dict(outcome.counts)}, "
          f"max RSS {outcome.max_rss >> 20} MiB, {len(lines)} log lines; good pair sent "
          f"{good.sent}, received {len(good.received)}", file=sys.stderr)
    where = f"(seed {seed}; last mutations sent:\n  " + "\n  ".join(outcome.recent) + ")"
    assert not outcome.failures, f"{outcome.failures} {where}"
    tracebacks = traceback_summaries(lines)
    assert not tracebacks, (f"{len(tracebacks)} tracebacks in the broker log (seed {seed}):\n"
                            + "\n".join(sorted(set(tracebacks))))
    per_connection = collections.Counter(m.group(1) for ln in lines if (m := CLOSE_RE.search(ln)))
    noisy = {c: n for c, n in per_connection.items() if n > 1}
    assert not noisy, f"connections logged more than once: {noisy} (seed {seed})"
    connections = sum(outcome.counts.values())
    assert len(lines) <= connections + 50, (
        f"{len(lines)} log lines for {connections} bad connections (seed {seed})")
    assert not thread.is_alive(), f"the good pair did not finish (seed {seed})"
    assert not good.errors, f"the good pair saw errors: {good.errors[:5]} (seed {seed})"
    assert good.acked == good.sent, f"acked {good.acked} of {good.sent} (seed {seed})"
    expected = [b"good-%d" % i for i in range(good.sent)]
    assert good.received == expected, (
        f"consumer got {len(good.received)} of {good.sent} records, or out of order (seed {seed})")


def test_fuzz_mutated_client_frames(tmp_path: Path) -> None:
    run_fuzz(tmp_path, DEFAULT_MUTATIONS)


@pytest.mark.slow
def test_fuzz_mutated_client_frames_long(tmp_path: Path) -> None:
    run_fuzz(tmp_path, SLOW_MUTATIONS)
