"""Restart at scale (issue 11): one topic of many partitions holding a few GB, then

1. a clean stop (SIGTERM) and start: time until every partition answers ListOffsets with its
   end offset (`clean_restart_s`), and how long the stop took (`clean_stop_s`);
2. one more record per partition, `kill -9`, start: the same wait (`unclean_restart_s`), the
   recovery of every partition's tail past its recovery point.

The same layout and client code run against nerve and Apache Kafka (scripts/kafka-broker for
the first start; the restarts relaunch its JVM on the same data dir and server.properties).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from bench.brokers import KAFKA_BROKER, READY_RE, ROOT, free_port

KAFKA_RUN = ROOT / "scripts" / "kafka-run"
Metrics = dict[str, float]
TOPIC = "restart"
RECORD = 4096


@dataclass(frozen=True)
class Layout:
    partitions: int
    bytes_per_partition: int

    @property
    def records_per_partition(self) -> int:
        return max(1, self.bytes_per_partition // RECORD)

    def describe(self) -> str:
        gb = self.partitions * self.records_per_partition * RECORD / 2**30
        return f"{self.partitions:,} partitions, {gb:.1f} GiB"


def quick_layout() -> Layout:
    return Layout(2000, 128 * 1024)  # 0.2 GiB


def full_layout() -> Layout:
    return Layout(10_000, 300 * 1024)  # 2.9 GiB


def fill(bootstrap: str, layout: Layout, rounds: int | None = None) -> int:
    """Write `rounds` records (default: the layout's) of RECORD bytes to every partition."""
    n = layout.records_per_partition if rounds is None else rounds
    producer = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 50,
                         "batch.size": 1 << 20, "queue.buffering.max.kbytes": 1 << 20,
                         "message.timeout.ms": 600_000})
    value = os.urandom(RECORD)
    errors: list[object] = []
    for _ in range(n):
        for p in range(layout.partitions):
            while True:
                try:
                    producer.produce(TOPIC, value, partition=p,
                                     on_delivery=lambda e, _m: e and errors.append(e))
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
    if producer.flush(600):
        raise RuntimeError("records still undelivered after 600 s")
    if errors:
        raise RuntimeError(f"{len(errors)} records failed, e.g. {errors[0]}")
    return n


def wait_ready(bootstrap: str, partitions: int, end: int, deadline: float) -> None:
    """Until ListOffsets(latest) answers `end` for every partition."""
    want = {TopicPartition(TOPIC, p): OffsetSpec.latest() for p in range(partitions)}
    while time.monotonic() < deadline:
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0,
                             "socket.connection.setup.timeout.ms": 1000,
                             "reconnect.backoff.max.ms": 100})
        try:
            got = {tp.partition: f.result(30).offset
                   for tp, f in admin.list_offsets(want, request_timeout=30).items()}
            if len(got) == partitions and all(o == end for o in got.values()):
                return
        except Exception:  # not up yet: connection refused, leader not ready
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{bootstrap}: partitions not all at offset {end}")


def create(bootstrap: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, partitions, 1)], operation_timeout=300,
                        request_timeout=300)[TOPIC].result(600)
    wait_ready(bootstrap, partitions, 0, time.monotonic() + 300)


class _Nerve:
    def __init__(self, src: Path) -> None:
        self.src = src
        self.tmp = Path(tempfile.mkdtemp(prefix="nerve-restart-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def launch(self) -> None:
        log = open(self.tmp / "nerve.log", "ab")  # noqa: SIM115 (handed to the child)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nerve", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--data-dir", str(self.tmp / "data"), "--no-console"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.src,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()
        deadline = time.monotonic() + 300
        while not READY_RE.search((self.tmp / "nerve.log").read_bytes()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nerve did not start:\n{(self.tmp / 'nerve.log').read_text()}")
            time.sleep(0.01)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(600)

    def close(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)


class _Kafka:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="kafka-restart-"))
        self.bootstrap = ""
        self.pid = 0

    def launch(self) -> None:
        if not self.bootstrap:  # first start: format storage, write server.properties
            r = subprocess.run([str(KAFKA_BROKER), "start", "--dir", str(self.tmp)],
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError(f"scripts/kafka-broker start failed:\n{r.stderr}")
            self.bootstrap = r.stdout.strip().splitlines()[-1]
        else:  # a restart: the same JVM command on the same data
            node = self.tmp / "node-1"
            log = open(node / "server.log", "ab")  # noqa: SIM115 (handed to the child)
            env = dict(os.environ)
            env.setdefault("KAFKA_HEAP_OPTS", "-Xmx1g -Xms256m")
            p = subprocess.Popen([str(KAFKA_RUN), "server", str(node / "server.properties")],
                                 stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                 cwd=node)
            log.close()
            (self.tmp / "node-1.pid").write_text(f"{p.pid}\n")
        self.pid = int((self.tmp / "node-1.pid").read_text())

    def _jvm_pid(self) -> int:
        """The java process (kafka-run may exec it or be its parent)."""
        r = subprocess.run(["pgrep", "-P", str(self.pid), "java"], capture_output=True,
                           text=True)
        children = [int(x) for x in r.stdout.split()]
        return children[0] if children else self.pid

    def stop(self, sig: int = signal.SIGTERM) -> None:
        pid = self._jvm_pid()
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def close(self) -> None:
        subprocess.run([str(KAFKA_BROKER), "stop", "--dir", str(self.tmp)],
                       capture_output=True, text=True, timeout=120)
        shutil.rmtree(self.tmp, ignore_errors=True)


def run(label: str, layout: Layout, nerve_src: Path = ROOT) -> Metrics:
    broker: _Nerve | _Kafka = _Kafka() if label == "kafka" else _Nerve(nerve_src)
    out: Metrics = {"partitions": layout.partitions}
    try:
        broker.launch()
        t = time.monotonic()
        create(broker.bootstrap, layout.partitions)
        out["create_topic_s"] = time.monotonic() - t
        t = time.monotonic()
        end = fill(broker.bootstrap, layout)
        out["fill_s"] = time.monotonic() - t
        out["log_gib"] = layout.partitions * end * RECORD / 2**30
        wait_ready(broker.bootstrap, layout.partitions, end, time.monotonic() + 300)
        t = time.monotonic()
        broker.stop()
        out["clean_stop_s"] = time.monotonic() - t
        t = time.monotonic()
        broker.launch()
        wait_ready(broker.bootstrap, layout.partitions, end, t + 900)
        out["clean_restart_s"] = time.monotonic() - t
        end += fill(broker.bootstrap, layout, rounds=1)  # a tail past the recovery point
        wait_ready(broker.bootstrap, layout.partitions, end, time.monotonic() + 300)
        broker.stop(signal.SIGKILL)
        t = time.monotonic()
        broker.launch()
        wait_ready(broker.bootstrap, layout.partitions, end, t + 900)
        out["unclean_restart_s"] = time.monotonic() - t
    finally:
        broker.close()
    return out
