"""What a client without credentials can cost nerve: the memory budget, connection limits, idle
reaping, fair service and one-line start-up failures, each against a real `nerve serve`.

docs/security.md lists the limits these tests hold nerve to.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Producer

from nerve.protocol.messages import build, request_class
from tests.helpers import REPO_ROOT, NerveProcess
from tests.integration.test_bad_input import read_frame, request_frame

MiB = 1 << 20


def _status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _api_versions(cid: int = 1) -> bytes:
    return request_frame(18, 3, cid, build(request_class(18, 3), client_software_name="t",
                                           client_software_version="1"))


def _metadata(cid: int) -> bytes:
    return request_frame(3, 12, cid, build(request_class(3, 12), topics=None,
                                           allow_auto_topic_creation=False,
                                           include_topic_authorized_operations=False))


def _connect(broker: NerveProcess, source: str | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source is not None:
        s.bind((source, 0))
    s.settimeout(10)
    s.connect((broker.host, broker.port))
    return s


def _answers_api_versions(s: socket.socket) -> bool:
    try:
        s.sendall(_api_versions(7))
        return struct.unpack_from(">i", read_frame(s))[0] == 7
    except OSError:
        return False


def _closed_by_broker(s: socket.socket, within_s: float) -> bool:
    s.settimeout(within_s)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _sets(*settings: str) -> list[str]:
    return [a for kv in settings for a in ("--set", kv)]


# ---------------------------------------------------------------- 4. memory budget
def test_concurrent_large_requests_stay_within_the_memory_budget(nerve_factory):
    """Eight clients each send a 40 MiB Produce request at once. With a 64 MiB budget the
    broker reads one at a time (the others wait, unread, in their sockets), so its peak RSS
    stays near one frame (held once) plus its decoded copy; all eight are answered."""
    budget = 64 * MiB
    broker = nerve_factory(*_sets(f"queued.max.request.bytes={budget}"))
    time.sleep(0.5)
    baseline = _status(broker.proc.pid)["VmRSS"]
    records = b"\x00" * (40 * MiB)
    frame = request_frame(0, 9, 1, build(
        request_class(0, 9), transactional_id=None, acks=1, timeout=30000,
        topic_data=[{"name": "big", "partition_data": [{"index": 0, "records": records}]}]))
    del records
    answers: list[bytes | Exception] = []

    def client() -> None:
        try:
            with _connect(broker) as s:
                s.settimeout(60)
                s.sendall(frame)
                answers.append(read_frame(s))
        except Exception as e:  # reported by the assertion below
            answers.append(e)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 8 and all(isinstance(a, bytes) for a in answers), answers
    # Produce v9 answer: the topic's partition error is MESSAGE_TOO_LARGE (10), the batch
    # being far above max.message.bytes; the point is that each request was read and answered.
    assert all(struct.unpack_from(">i", a)[0] == 1 for a in answers)
    grown = _status(broker.proc.pid)["VmHWM"] - baseline
    print(f"peak RSS {baseline / MiB:.0f} + {grown / MiB:.0f} MiB")
    # One 40 MiB frame plus kio's 40 MiB copy of its records, plus slack; without the budget
    # eight frames (and their growth copies) are read at once: ~700 MB.
    assert grown < 160 * MiB, f"peak RSS grew {grown / MiB:.0f} MiB over {baseline / MiB:.0f}"
    assert _answers_api_versions(_connect(broker))


# ---------------------------------------------------------------- 5. connections
def test_idle_connections_are_reaped_and_active_ones_kept(nerve_factory):
    broker = nerve_factory(*_sets("connections.max.idle.ms=1000"))
    silent = _connect(broker)
    trickler = _connect(broker)
    trickler.sendall(struct.pack(">i", 100) + b"\x00\x12")  # a request it never finishes
    active = _connect(broker)
    started = time.monotonic()
    for _ in range(10):  # 3 s of a request every 300 ms
        assert _answers_api_versions(active)
        time.sleep(0.3)
        with contextlib.suppress(OSError):
            trickler.sendall(b"\x00")  # bytes, but never a whole request
    assert _closed_by_broker(silent, 0.1), "a silent connection outlived the idle limit"
    assert _closed_by_broker(trickler, 0.1), "a trickling request outlived the idle limit"
    assert time.monotonic() - started > 1.0
    assert _answers_api_versions(active)
    assert "idle for 1000 ms (connections.max.idle.ms)" in broker.log_text()


def test_max_connections_and_per_ip_are_refused_at_accept(nerve_factory):
    broker = nerve_factory(*_sets("max.connections=6", "max.connections.per.ip=4"))
    local = [_connect(broker) for _ in range(4)]
    assert all(_answers_api_versions(s) for s in local)
    fifth = _connect(broker)  # the kernel accepts it; the broker closes it at once
    assert _closed_by_broker(fifth, 5)
    # Another address is not held to 127.0.0.1's share, only to the broker's total.
    other = [_connect(broker, source="127.0.0.2") for _ in range(2)]
    assert all(_answers_api_versions(s) for s in other)
    seventh = _connect(broker, source="127.0.0.3")
    assert _closed_by_broker(seventh, 5)
    local.pop().close()  # a slot frees when a connection closes
    time.sleep(0.3)
    again = _connect(broker)
    assert _answers_api_versions(again)
    log = broker.log_text()
    assert "max.connections.per.ip (4) reached" in log
    assert "max.connections (6) reached" in log
    for s in [*local, *other, again]:
        s.close()


def test_a_client_that_never_reads_answers_costs_bounded_memory(nerve_factory):
    """A client pipelines Fetch requests for 1 MiB of records each and reads nothing: the
    broker stops reading it once its answers back up, its RSS stays flat, others are served."""
    broker = nerve_factory()
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(1024):
        producer.produce("fill", value=b"x" * 1024, key=b"%d" % i)
    assert producer.flush(30) == 0
    time.sleep(0.3)
    baseline = _status(broker.proc.pid)["VmRSS"]
    fetch = request_frame(1, 12, 1, build(
        request_class(1, 12), replica_id=-1, max_wait=0, min_bytes=1, max_bytes=MiB,
        isolation_level=0, session_id=0, session_epoch=-1,
        topics=[{"topic": "fill", "partitions": [{
            "partition": 0, "current_leader_epoch": -1, "fetch_offset": 0, "last_fetched_epoch": -1,
            "log_start_offset": -1, "partition_max_bytes": MiB}]}],
        forgotten_topics_data=[], rack_id="r" * 16384))  # 16 KiB: kernel buffers hold few
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.connect((broker.host, broker.port))
    hog.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 5
    burst = fetch * 200
    view = memoryview(burst)
    while time.monotonic() < deadline and sent < 5000 * len(fetch):
        try:
            sent += hog.send(view[sent % len(burst):])
        except BlockingIOError:
            time.sleep(0.05)
    requests_sent = sent // len(fetch)
    # What the kernel's buffers hold plus the broker's bound of read-ahead requests; without
    # the stop it would read all of them and queue an answer (1 MiB each) per request.
    assert requests_sent < 2000, f"the broker read {requests_sent} requests of a non-reader"
    grown = _status(broker.proc.pid)["VmRSS"] - baseline
    assert grown < 64 * MiB, f"RSS grew {grown / MiB:.0f} MiB"
    assert _answers_api_versions(_connect(broker))
    producer.produce("fill", value=b"more")
    assert producer.flush(10) == 0
    hog.close()


def test_accept_errors_back_off_and_log_once_a_second(nerve_factory):
    broker = nerve_factory()
    pid = broker.proc.pid
    open_fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    before = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds + 4, before[1]))
    socks = []
    try:
        for _ in range(40):  # the kernel completes them; the broker runs out of descriptors
            s = socket.socket()
            s.settimeout(5)
            s.connect((broker.host, broker.port))
            socks.append(s)
        time.sleep(3)
        log = broker.log_text()
        lines = [ln for ln in log.splitlines() if "cannot accept connections" in ln]
        assert 1 <= len(lines) <= 5, lines
        assert "Traceback" not in log
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, before)
        for s in socks:
            s.close()
    time.sleep(0.5)
    assert _answers_api_versions(_connect(broker))


# ---------------------------------------------------------------- 6. fair service
def _paced_produce_p99(bootstrap: str, topic: str, count: int, interval_s: float) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1})
    latencies: list[float] = []

    def done(err: object, msg: object, sent_at: float) -> None:
        assert err is None, err
        latencies.append(time.monotonic() - sent_at)

    producer.produce(topic, b"warm-up")
    producer.flush(10)
    for i in range(count):
        now = time.monotonic()
        producer.produce(topic, b"%d" % i, on_delivery=lambda e, m, t=now: done(e, m, t))
        producer.poll(interval_s)
    assert producer.flush(30) == 0
    latencies.sort()
    return latencies[int(len(latencies) * 0.99) - 1]


def test_a_greedy_client_does_not_slow_a_paced_producer(nerve_factory):
    """A raw client pipelines Metadata requests as fast as the broker answers; a paced
    confluent-kafka producer's p99 stays within max(2x its quiet p99, quiet + 50 ms). Both
    phases run in the same test, so a loaded machine raises both alike; the 50 ms floor keeps
    a quiet p99 of a few ms from failing on one scheduler hiccup."""
    broker = nerve_factory()
    quiet = _paced_produce_p99(broker.bootstrap, "paced", 150, 0.02)
    stop = threading.Event()
    answered = [0]

    def greedy() -> None:
        with _connect(broker) as s:
            s.settimeout(30)
            burst = b"".join(_metadata(i) for i in range(2000))

            def drain() -> None:
                with contextlib.suppress(OSError):
                    while True:
                        read_frame(s)
                        answered[0] += 1

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            for _ in range(100):  # at most 200,000 requests
                if stop.is_set():
                    break
                s.sendall(burst)
            stop.wait(60)

    hog = threading.Thread(target=greedy, daemon=True)
    hog.start()
    time.sleep(0.5)
    loaded = _paced_produce_p99(broker.bootstrap, "paced", 150, 0.02)
    stop.set()
    hog.join(30)
    assert answered[0] > 2000, "the greedy client was not served at all"
    limit = max(2 * quiet, quiet + 0.05)
    print(f"paced p99: quiet {quiet * 1000:.1f} ms, greedy {loaded * 1000:.1f} ms, "
          f"{answered[0]} greedy requests answered")
    assert loaded <= limit, (
        f"paced p99 {loaded * 1000:.1f} ms with a greedy client, quiet {quiet * 1000:.1f} ms")


# ---------------------------------------------------------------- 8. start-up failures
def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nerve", "serve", "--no-console", "--data-dir",
         str(tmp_path / "d"), *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_busy_port_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _serve(tmp_path, "--host", "127.0.0.1", "--port", str(port))
    assert r.returncode == 2, r
    assert r.stderr.strip().splitlines() == [
        f"nerve: cannot listen on 127.0.0.1:{port}: address already in use (use --port)"], r
    assert r.stdout == ""


def test_bad_port_is_one_line_and_exit_2(tmp_path):
    r = _serve(tmp_path, "--host", "127.0.0.1", "--port", "70000")
    assert r.returncode == 2, r
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("nerve: cannot listen on 127.0.0.1:70000: "), line
    assert line.endswith("(use --port)"), line
