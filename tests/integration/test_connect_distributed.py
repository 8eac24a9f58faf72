"""Kafka Connect in distributed mode against a real `nerve serve`: one worker (Kafka 4.4.0's
ConnectDistributed) keeps its connector configs, source offsets and statuses in compacted topics
on nerve; a file-lines source moves a file's lines to a topic and a sink writes them to another
file. After a SIGTERM of the worker, lines appended meanwhile and a restart, both connectors
resume from their committed offsets: the sink file holds every line exactly once, in order.
Small segments and an eager cleaner make nerve's LogCleaner compact Connect's topics before the
restart, so the worker reads its state back from cleaned logs.

The connectors are tests/integration/frameworks/LineFileConnectors.java (javac against
connect-api): Kafka's connect-file is not in the Maven repository this project reaches.

Slow (JVM start-ups, a Connect group rebalance per start): run by scripts/test-slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from tests.helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.java]

BROKER_ARGS = ("--set", "group.initial.rebalance.delay.ms=0", "--set", "log.segment.bytes=1024",
               "--set", "log.cleaner.backoff.ms=200",
               "--set", "log.cleaner.min.cleanable.ratio=0.01")


def _kafka_dir() -> Path:
    cache = Path(os.environ.get("NERVE_CACHE") or Path.home() / ".cache" / "nerve")
    return cache / f"kafka-{os.environ.get('KAFKA_VERSION') or '4.4.0'}"


@pytest.fixture(scope="module")
def connect_cp(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Kafka's libs (connect-runtime, -json, -transforms are there) plus the compiled connectors."""
    libs = _kafka_dir() / "libs"
    if not list(libs.glob("connect-runtime-*.jar")):
        pytest.fail(f"no connect-runtime jar in {libs}: run scripts/install-test-deps jars")
    out = tmp_path_factory.mktemp("connectors")
    src = Path(__file__).parent / "frameworks" / "LineFileConnectors.java"
    r = subprocess.run(["javac", "-d", str(out), "-cp", f"{libs}/*", str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return f"{libs}/*:{out}"


class Worker:
    def __init__(self, cp: str, bootstrap: str, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        props = tmp / "worker.properties"
        props.write_text("\n".join([
            f"bootstrap.servers={bootstrap}",
            "group.id=nerve-connect",
            "config.storage.topic=connect-configs",
            "offset.storage.topic=connect-offsets",
            "status.storage.topic=connect-status",
            "config.storage.replication.factor=1",
            "offset.storage.replication.factor=1",
            "status.storage.replication.factor=1",
            "offset.flush.interval.ms=300",
            "key.converter=org.apache.kafka.connect.storage.StringConverter",
            "value.converter=org.apache.kafka.connect.storage.StringConverter",
            f"listeners=http://127.0.0.1:{self.port}",
            "rest.advertised.host.name=127.0.0.1",
            f"rest.advertised.port={self.port}",
            "plugin.discovery=only_scan",
            "",
        ]))
        # CONNECT_LOG4J: another log4j2 config, e.g. INFO for o.a.k.connect.runtime.distributed.
        log4j = os.environ.get("CONNECT_LOG4J") or _kafka_dir() / "config" / "log4j2.properties"
        self.cmd = ["java", "-Xmx384m", f"-Dlog4j2.configurationFile={log4j}",
                    "-cp", cp, "org.apache.kafka.connect.cli.ConnectDistributed", str(props)]
        self.log = tmp / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def start(self, timeout: float = 120) -> None:
        with self.log.open("ab") as f:
            f.write(b"---- start\n")
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.text()[-6000:]
            try:
                self.request("GET", "/connectors")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise AssertionError(f"Connect REST not up after {timeout} s:\n{self.text()[-6000:]}")

    def request(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def put_connector(self, name: str, config: dict[str, str], timeout: float = 60) -> None:
        # The REST API answers 409 while the worker is still joining or rebalancing.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("PUT", f"/connectors/{name}/config", config)
                return
            except urllib.error.HTTPError as e:
                if e.code != 409 or time.monotonic() > deadline:
                    raise AssertionError(f"{e.code} {e.read()!r}\n{self.text()[-4000:]}") from e
                time.sleep(0.5)

    def wait_running(self, name: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        status: object = None
        while time.monotonic() < deadline:
            try:
                status = self.request("GET", f"/connectors/{name}/status")
            except urllib.error.HTTPError:
                status = None
            if (isinstance(status, dict) and status["connector"]["state"] == "RUNNING"
                    and status["tasks"] and all(t["state"] == "RUNNING" for t in status["tasks"])):
                return
            time.sleep(0.5)
        raise AssertionError(f"{name} not RUNNING: {status}\n{self.text()[-4000:]}")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            tail = self.text()[-4000:]
            raise AssertionError(f"worker ignored SIGTERM for 60 s:\n{tail}") from None


def _wait_lines(path: Path, want: list[str], timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    got: list[str] = []
    while time.monotonic() < deadline:
        got = path.read_text().splitlines() if path.exists() else []
        if len(got) >= len(want):
            break
        time.sleep(0.3)
    time.sleep(1.0)  # let any duplicate arrive too
    return path.read_text().splitlines() if path.exists() else got


def test_connect_distributed_file_source_and_sink_resume_after_restart(
        nerve_factory, connect_cp, tmp_path):
    broker = nerve_factory(*BROKER_ARGS)
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    first = [f"line-{i}" for i in range(50)]
    src.write_text("".join(f"{line}\n" for line in first))
    worker = Worker(connect_cp, broker.bootstrap, tmp_path)
    try:
        worker.start()
        worker.put_connector("lines-in", {
            "connector.class": "LineFileConnectors$Source", "tasks.max": "1",
            "file": str(src), "topic": "lines"})
        worker.put_connector("lines-out", {
            "connector.class": "LineFileConnectors$Sink", "tasks.max": "1",
            "file": str(dst), "topics": "lines"})
        worker.wait_running("lines-in")
        worker.wait_running("lines-out")
        assert _wait_lines(dst, first) == first, worker.text()[-4000:]
        time.sleep(2.5)  # past offset.flush.interval.ms: the source offset is committed
        assert worker.stop() in (0, 143), worker.text()[-4000:]
        deadline = time.monotonic() + 30
        while "nerve.cleaner: connect-" not in broker.log_text():
            assert time.monotonic() < deadline, f"no Connect topic cleaned:\n{broker.log_tail()}"
            time.sleep(0.3)

        second = [f"line-{i}" for i in range(50, 80)]
        with src.open("a") as f:
            f.write("".join(f"{line}\n" for line in second))
        worker.start()
        worker.wait_running("lines-in")
        worker.wait_running("lines-out")
        # Both sides committed before the graceful stop (source offsets are flushed and sink
        # offsets committed on task stop), so at-least-once leaves no duplicate here.
        assert _wait_lines(dst, first + second) == first + second, worker.text()[-4000:]
        assert "LINESOURCE resume at line 50" in worker.text()
    finally:
        worker.stop()

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for topic in ("connect-configs", "connect-offsets", "connect-status"):
        res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = admin.describe_configs([res])[res].result(timeout=30)
        assert configs["cleanup.policy"].value == "compact", topic
    assert "Traceback" not in broker.log_text(), broker.log_tail()


def _replays_only(got: list[str], want: list[str]) -> bool:
    """At-least-once after a kill: `got` is `want` with replays, i.e. ascending contiguous runs,
    each starting at or before the line after the previous run's end, the last ending at the end."""
    index = {line: i for i, line in enumerate(want)}
    if not got or any(line not in index for line in got) or index[got[0]] != 0:
        return False
    reached = 0
    prev = 0
    for line in got[1:]:
        i = index[line]
        if i != prev + 1 and i > reached + 1:
            return False  # a gap: a line lost
        prev = i
        reached = max(reached, i)
    return reached == len(want) - 1


def test_connect_distributed_worker_kill_mid_stream_loses_nothing(
        nerve_factory, connect_cp, tmp_path):
    broker = nerve_factory(*BROKER_ARGS)
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    want = [f"line-{i}" for i in range(300)]
    src.write_text("".join(f"{line}\n" for line in want[:100]))
    worker = Worker(connect_cp, broker.bootstrap, tmp_path)
    try:
        worker.start()
        worker.put_connector("lines-in", {
            "connector.class": "LineFileConnectors$Source", "tasks.max": "1",
            "file": str(src), "topic": "lines"})
        worker.put_connector("lines-out", {
            "connector.class": "LineFileConnectors$Sink", "tasks.max": "1",
            "file": str(dst), "topics": "lines"})
        worker.wait_running("lines-in")
        worker.wait_running("lines-out")
        _wait_lines(dst, want[:100])
        # Lines keep arriving while the worker is killed: its last offsets are not committed.
        with src.open("a") as f:
            for i in range(100, 200):
                f.write(f"{want[i]}\n")
                f.flush()
                if i == 150:
                    assert worker.proc is not None
                    worker.proc.kill()
                    worker.proc.wait()
                time.sleep(0.01)
            f.write("".join(f"{line}\n" for line in want[200:]))
        worker.start()
        worker.wait_running("lines-in")
        worker.wait_running("lines-out")
        got = _wait_lines(dst, want, timeout=90)
        deadline = time.monotonic() + 30
        while want[-1] not in got and time.monotonic() < deadline:
            time.sleep(0.5)
            got = dst.read_text().splitlines()
        assert _replays_only(got, want), (len(got), got[95:], worker.text()[-3000:])
        # The first 100 were delivered more than 1 s (> offset.flush.interval.ms) before the
        # kill, so both sides had committed them: the replay starts after them.
        assert got[:100] == want[:100] and set(got[100:]) == set(want[100:]), got[95:]
        print(f"sink lines after kill -9: {len(got)} for {len(want)}")
    finally:
        worker.stop()
    assert "Traceback" not in broker.log_text(), broker.log_tail()


def test_replays_only_rules() -> None:
    want = ["a", "b", "c", "d"]
    assert _replays_only(want, want)
    assert _replays_only(["a", "b", "c", "b", "c", "d"], want)
    assert not _replays_only(["a", "b", "d"], want)
    assert not _replays_only(["a", "b", "c"], want)
    assert not _replays_only(["a", "c", "b", "d"], want)
