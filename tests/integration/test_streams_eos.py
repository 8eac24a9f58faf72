"""Kafka Streams with processing.guarantee=exactly_once_v2 against a real `nerve serve`: a word
count (tests/integration/frameworks/WordCount.java, built here with javac) must give exact counts
after a kill -9 of the app in mid-stream (its open transaction aborted, its work redone once)
and after its state dir is wiped (the counts restored from the changelog, read_committed).

Slow (JVM start-ups, Streams rebalances): run by scripts/test-slow."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from tests.helpers import REPO_ROOT
from tests.integration.test_transactions import create_topic

pytestmark = [pytest.mark.slow, pytest.mark.java]

GROUP_ARGS = ("--set", "group.initial.rebalance.delay.ms=0")
WORDS = [f"w{i}" for i in range(40)]


def _kafka_dir() -> Path:
    cache = Path(os.environ.get("NERVE_CACHE") or Path.home() / ".cache" / "nerve")
    return cache / f"kafka-{os.environ.get('KAFKA_VERSION') or '4.4.0'}"


@pytest.fixture(scope="module")
def wordcount_cp(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The classpath of the compiled WordCount app (Kafka Streams jars from install-test-deps)."""
    kdir = _kafka_dir()
    if not (kdir / ".streams-complete").is_file():
        r = subprocess.run([str(REPO_ROOT / "scripts" / "install-test-deps"), "jars"],
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"scripts/install-test-deps jars failed:\n{r.stderr}"
    out = tmp_path_factory.mktemp("wordcount")
    cp = f"{kdir / 'streams-libs'}/*"
    src = Path(__file__).parent / "frameworks" / "WordCount.java"
    r = subprocess.run(["javac", "-d", str(out), "-cp", cp, str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return f"{cp}:{out}"


class StreamsApp:
    def __init__(self, cp: str, bootstrap: str, app_id: str, state_dir: Path, log: Path,
                 src: str, dst: str) -> None:
        self.cmd = ["java", "-Xmx256m",
                    f"-Dlog4j2.configurationFile={_kafka_dir() / 'config' / 'log4j2.properties'}",
                    "-cp", cp, "WordCount", bootstrap, app_id, str(state_dir), src, dst,
                    "exactly_once_v2"]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StreamsApp:
        with self.log.open("ab") as f:
            f.write(b"---- start\n")
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_running(self, timeout: float = 90) -> None:
        start = self.text().rfind("---- start")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.text()[-4000:]
            if "STATE RUNNING" in self.text()[start:]:
                return
            time.sleep(0.3)
        raise AssertionError(f"app not RUNNING after {timeout} s:\n{self.text()[-4000:]}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and sig == signal.SIGTERM:
            assert self.proc.returncode in (0, 143), self.text()[-4000:]


def produce_lines(bootstrap: str, topic: str, lines: list[str]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, line in enumerate(lines):
        p.produce(topic, key=str(i).encode(), value=line.encode())
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(30) == 0


def lines_for(seed: int, n: int) -> list[str]:
    return [" ".join(WORDS[(seed * 7 + i * k) % len(WORDS)] for k in (1, 3, 5)) for i in range(n)]


class Counts:
    """The output topic read read_committed from the start: each word's latest count."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.time()}",
                           "isolation.level": "read_committed", "enable.auto.commit": False})
        self.c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.latest: dict[str, int] = {}
        self.history: dict[str, list[int]] = {}

    def wait_for(self, want: Counter[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.c.consume(500, 0.5):
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    continue
                word, (count,) = m.key().decode(), struct.unpack(">q", m.value())
                self.latest[word] = count
                self.history.setdefault(word, []).append(count)
            over = {w: c for w, c in self.latest.items() if c > want.get(w, 0)}
            assert not over, f"counted twice: {over} (want {dict(want)})"
            if self.latest == dict(want):
                return
        missing = {w: (self.latest.get(w), c) for w, c in want.items() if self.latest.get(w) != c}
        raise AssertionError(f"counts never became exact: (got, want) {missing}")

    def close(self) -> None:
        self.c.close()


def test_streams_exactly_once_word_count_survives_kill_and_state_wipe(
        nerve_factory, unique_topic, wordcount_cp, tmp_path):
    broker = nerve_factory(*GROUP_ARGS)
    src, dst = unique_topic("wc-in"), unique_topic("wc-out")
    create_topic(broker.bootstrap, src, 3)
    create_topic(broker.bootstrap, dst, 3)
    state = tmp_path / "streams-state"
    app = StreamsApp(wordcount_cp, broker.bootstrap, unique_topic("wc"), state,
                     tmp_path / "wordcount.log", src, dst)
    counts = Counts(broker.bootstrap, dst, 3)
    want: Counter[str] = Counter()

    def feed(seed: int, n: int) -> None:
        lines = lines_for(seed, n)
        produce_lines(broker.bootstrap, src, lines)
        for line in lines:
            want.update(line.split())

    t0 = time.monotonic()
    try:
        # 1. A first batch, counted exactly.
        feed(1, 3000)
        app.start().wait_running()
        counts.wait_for(want)
        print(f"phase done at {time.monotonic() - t0:.1f} s")

        # 2. kill -9 in mid-stream: the open transaction is aborted when the restarted app
        # (same state dir, so the same transactional.id) fences it; nothing is counted twice.
        feed(2, 20000)
        time.sleep(1.0)
        app.stop(signal.SIGKILL)
        feed(3, 2000)
        app.start().wait_running()
        counts.wait_for(want)
        print(f"phase done at {time.monotonic() - t0:.1f} s")

        # 3. A clean stop, the state dir wiped: the store is restored from the changelog.
        app.stop()
        shutil.rmtree(state)
        feed(4, 2000)
        app.start().wait_running()
        counts.wait_for(want)
        print(f"phase done at {time.monotonic() - t0:.1f} s")
        for word, seen in counts.history.items():
            assert seen == sorted(seen), f"{word}: counts went backwards {seen}"
    finally:
        app.stop(signal.SIGKILL)
        counts.close()
    assert "Traceback" not in broker.log_text()
