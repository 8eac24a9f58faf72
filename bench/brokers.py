"""The brokers under test: nerve (subprocess, temp dir) and Apache Kafka (scripts/kafka-broker).

Both expose `bootstrap`, `pid` (the process whose RSS is measured: the Python process or the
JVM) and `startup_s` (launch until the first acks=all produce to a new topic is acknowledged).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
KAFKA_BROKER = ROOT / "scripts" / "kafka-broker"
READY_RE = re.compile(rb"serving Kafka protocol on ([\d.]+):(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size of one process, from /proc (MiB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def first_produce(bootstrap: str, deadline: float) -> None:
    """Block until one acks=all record to a fresh (auto-created) topic is acknowledged."""
    topic = f"startup-{uuid.uuid4().hex[:8]}"
    while time.monotonic() < deadline:
        done: list[object] = []  # one fresh list per attempt; the callback is called in flush
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                      "message.timeout.ms": 5000, "socket.connection.setup.timeout.ms": 1000,
                      "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 50,
                      "retry.backoff.ms": 20, "topic.metadata.refresh.fast.interval.ms": 20})
        p.produce(topic, b"x", on_delivery=lambda err, _m, d=done: d.append(err))
        p.flush(max(0.1, deadline - time.monotonic()))
        if done and done[0] is None:
            return
        time.sleep(0.02)
    raise TimeoutError(f"no acknowledged produce on {bootstrap}")


class RssSampler:
    """Peak RSS of a pid, sampled every 0.2 s in a thread while `with` is active."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return
            self._stop.wait(0.2)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class NerveBroker:
    def __init__(self, label: str, sets: dict[str, str], src: Path = ROOT,
                 args: list[str] | None = None) -> None:
        self.label = label
        self.sets = sets
        self.args = args or []  # extra `nerve serve` flags
        self.src = src  # `python -m nerve` runs from here (sys.path[0] is the cwd)
        self.tmp = Path(tempfile.mkdtemp(prefix="nerve-bench-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.bootstrap = ""
        self.startup_s = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def settings(self) -> dict[str, str]:
        return {**self.sets, **({"flags": " ".join(self.args)} if self.args else {})}

    def start(self) -> None:
        port = free_port()
        args = [sys.executable, "-m", "nerve", "serve", "--host", "127.0.0.1", "--port",
                str(port), "--data-dir", str(self.tmp / "data"), *self.args]
        for k, v in self.sets.items():
            args += ["--set", f"{k}={v}"]
        log = open(self.tmp / "nerve.log", "wb")  # noqa: SIM115 (handed to the child)
        t0 = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.src,
                                     stdin=subprocess.DEVNULL,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()
        deadline = t0 + 30
        while not READY_RE.search((self.tmp / "nerve.log").read_bytes()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nerve did not start:\n{(self.tmp / 'nerve.log').read_text()}")
            time.sleep(0.01)
        self.bootstrap = f"127.0.0.1:{port}"
        first_produce(self.bootstrap, deadline)
        self.startup_s = time.monotonic() - t0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # The broker's log outlives its data (with NERVE_TRACE_SLOW_MS: the slow requests).
        log = self.tmp / "nerve.log"
        if log.exists():
            RESULTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, RESULTS / f"last-{self.label}.log")
        shutil.rmtree(self.tmp, ignore_errors=True)


class KafkaBroker:
    def __init__(self, label: str = "kafka", sets: dict[str, str] | None = None) -> None:
        self.label = label
        self.sets = dict(sets or {})  # broker configs for scripts/kafka-broker --set
        self.tmp = Path(tempfile.mkdtemp(prefix="kafka-bench-"))
        self.bootstrap = ""
        self.startup_s = 0.0
        self.format_s = 0.0
        self._pid = 0

    @property
    def pid(self) -> int:
        return self._pid

    def settings(self) -> dict[str, str]:
        props = (self.tmp / "node-1" / "server.properties").read_text().splitlines()
        keep = ("num.network.threads", "num.io.threads", "log.flush", "group.initial")
        return {k: v for k, _, v in (p.partition("=") for p in props) if k.startswith(keep)}

    def start(self) -> None:
        t0 = time.monotonic()
        sets = [a for k, v in self.sets.items() for a in ("--set", f"{k}={v}")]
        r = subprocess.run([str(KAFKA_BROKER), "start", "--dir", str(self.tmp), *sets],
                           capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise RuntimeError(f"scripts/kafka-broker start failed:\n{r.stdout}{r.stderr}")
        self.bootstrap = r.stdout.strip().splitlines()[-1]
        self._pid = int((self.tmp / "node-1.pid").read_text())
        self.format_s = float(json.loads((self.tmp / "state.json").read_text())["format_s"])
        first_produce(self.bootstrap, time.monotonic() + 60)
        self.startup_s = time.monotonic() - t0

    def stop(self) -> None:
        subprocess.run([str(KAFKA_BROKER), "stop", "--dir", str(self.tmp)],
                       capture_output=True, text=True, timeout=120)
        shutil.rmtree(self.tmp, ignore_errors=True)


Broker = NerveBroker | KafkaBroker
