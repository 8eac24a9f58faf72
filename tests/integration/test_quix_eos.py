"""Quix Streams with processing_guarantee="exactly-once" against a real `nerve serve`: a
windowed count (tests/integration/frameworks/quix_window_count.py, 10 s tumbling windows per
key, each published once when it closes) gives every window exactly once with its exact count
although the app is killed with SIGKILL in mid-stream and restarted, then stopped and
restarted cleanly.

Quix Streams pins confluent-kafka < 2.13, older than the test venv's, so it lives in its own
venv, made here on first use ($NERVE_CACHE/quixstreams-VERSION, a few minutes cold) and reused.
Slow: run by scripts/test-slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from tests.integration.test_transactions import create_topic

# The first run builds the venv (minutes) inside the fixture, which the timeout counts.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

QUIX_VERSION = "3.28.1"
GROUP_ARGS = ("--set", "group.initial.rebalance.delay.ms=0")
KEYS = [f"k{i}" for i in range(6)]
WINDOW_MS = 10_000
APP = Path(__file__).parent / "frameworks" / "quix_window_count.py"


@pytest.fixture(scope="module")
def quix_python() -> str:
    cache = Path(os.environ.get("NERVE_CACHE") or Path.home() / ".cache" / "nerve")
    venv = cache / f"quixstreams-{QUIX_VERSION}"
    py = venv / "bin" / "python"
    stamp = venv / ".complete"
    if not stamp.is_file():
        r = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            f"quixstreams=={QUIX_VERSION}"],
                           capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, f"pip install quixstreams=={QUIX_VERSION} failed:\n{r.stderr}"
        stamp.write_text(f"quixstreams {QUIX_VERSION}\n")
    return str(py)


class QuixApp:
    def __init__(self, python: str, bootstrap: str, group: str, state: Path, log: Path,
                 src: str, dst: str) -> None:
        self.cmd = [python, str(APP), bootstrap, group, str(state), src, dst]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> QuixApp:
        with self.log.open("ab") as f:
            f.write(b"---- start\n")
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_processing(self, timeout: float = 120) -> None:
        start = self.text().rfind("---- start")
        deadline = time.monotonic() + timeout
        while "now processing incoming messages" not in self.text()[start:]:
            assert self.proc is not None and self.proc.poll() is None, self.text()[-4000:]
            assert time.monotonic() < deadline, f"app not processing:\n{self.text()[-4000:]}"
            time.sleep(0.3)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Windows:
    """The output topic read read_committed: (key, window start) -> every count published."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.time()}",
                           "isolation.level": "read_committed", "enable.auto.commit": False})
        self.c.assign([TopicPartition(topic, p, 0) for p in range(2)])
        self.seen: dict[tuple[str, int], list[int]] = {}

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for m in self.c.consume(500, 0.3):
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    continue
                v = json.loads(m.value())
                assert v["end"] - v["start"] == WINDOW_MS, v
                self.seen.setdefault((m.key().decode(), v["start"]), []).append(v["value"])

    def close(self) -> None:
        self.c.close()


def test_quix_exactly_once_window_counts_survive_kill_and_restart(
        nerve_factory, unique_topic, quix_python, tmp_path):
    broker = nerve_factory(*GROUP_ARGS)
    src, dst = unique_topic("q-in"), unique_topic("q-out")
    create_topic(broker.bootstrap, src, 2)
    create_topic(broker.bootstrap, dst, 2)
    app = QuixApp(quix_python, broker.bootstrap, unique_topic("qg"), tmp_path / "quix-state",
                  tmp_path / "quix.log", src, dst)
    # Record j of every key is stamped base + j s: each 10 s window holds 10 per key.
    base = (int(time.time() * 1000) // WINDOW_MS) * WINDOW_MS - 3_600_000
    steps = 600

    def feed(first: int, last: int, pace: float = 0.0) -> None:
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        for j in range(first, last):
            for k in KEYS:
                p.produce(src, key=k, value=json.dumps({"j": j}), timestamp=base + j * 1000)
            if pace:
                p.poll(0)
                time.sleep(pace)
        assert p.flush(30) == 0

    windows = Windows(broker.bootstrap, dst)
    try:
        feed(0, 100)
        app.start().wait_processing()
        # Records keep coming while the app is killed in mid-stream and restarted.
        feeder = threading.Thread(target=feed, args=(100, steps, 0.01))
        feeder.start()
        time.sleep(3)
        app.stop(signal.SIGKILL)
        app.start().wait_processing()
        feeder.join(120)
        windows.poll(5)
        app.stop()  # a clean stop and start as well
        app.start().wait_processing()
        # One record per key far ahead closes every window before it.
        feed(steps + 100, steps + 101)
        want = {(k, base + w * WINDOW_MS): [10] for k in KEYS for w in range(steps // 10)}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and set(windows.seen) < set(want):
            windows.poll(1)
        twice = {kw: v for kw, v in windows.seen.items() if len(v) > 1}
        assert not twice, f"windows published more than once: {dict(list(twice.items())[:5])}"
        wrong = {kw: (windows.seen.get(kw), v) for kw, v in want.items()
                 if windows.seen.get(kw) != v}
        assert not wrong, f"{len(wrong)} window(s) wrong (got, want): {list(wrong.items())[:5]}"
        assert set(windows.seen) == set(want)
    finally:
        app.stop(signal.SIGKILL)
        windows.close()
    assert "Traceback" not in broker.log_text()
