"""Real disk faults against a real `nerve serve`: a full filesystem and an unwritable partition
directory. Storage errors are answered KAFKA_STORAGE_ERROR per partition, rolled back (no
unacknowledged record stays in the log), and appends resume once the disk takes writes again,
without a restart.

The full disk is a small tmpfs (mounting needs root; the test skips, saying so, when it
cannot mount). The unwritable directory needs a broker that file permissions apply to: the
interpreter lives under /root (0700), which `nobody` cannot reach, so the broker runs as root
without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (`setpriv`), which is what a non-root owner of
the data dir is.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.helpers import NerveProcess
from tests.integration.test_produce_consume import create_topic

STORAGE_ERROR = KafkaError._KAFKA_STORAGE_ERROR if hasattr(
    KafkaError, "_KAFKA_STORAGE_ERROR") else KafkaError.KAFKA_STORAGE_ERROR
PAD = "x" * 500


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted at teardown (the data dir itself: the broker's log goes
    beside it, not into it)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


class _Deliveries:
    """A producer's delivery reports: acknowledged values and errors."""

    def __init__(self) -> None:
        self.acked: dict[str, tuple[int, int]] = {}  # value -> (partition, offset)
        self.errors: list[tuple[int, str]] = []  # (error code, value)
        self.acked_after_errors = 0

    def __call__(self, err: KafkaError | None, msg: object) -> None:
        value = msg.value().decode()  # type: ignore[attr-defined]
        if err is not None:
            self.errors.append((err.code(), value))
        else:
            self.acked[value] = (msg.partition(), msg.offset())  # type: ignore[attr-defined]
            if self.errors:
                self.acked_after_errors += 1


class _LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def consume_all(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int, str]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False})
    highs = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
             for p in range(partitions)}
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[tuple[int, int, str]] = []
    deadline = time.monotonic() + 60
    while len(out) < sum(highs.values()) and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        assert not msg.error(), msg.error()
        out.append((msg.partition(), msg.offset(), msg.value().decode()))
    c.close()
    assert len(out) == sum(highs.values()), (len(out), highs)
    return out


def check_log_matches_acks(stored: list[tuple[int, int, str]], *acks: _Deliveries) -> None:
    """Every acknowledged record is stored where it was acknowledged, and every stored record
    was acknowledged (so nothing a client saw fail, or never heard of, is in the log), once."""
    acked: dict[str, tuple[int, int]] = {}
    for d in acks:
        acked.update(d.acked)
    counts = collections.Counter(v for _, _, v in stored)
    dups = [v for v, n in counts.items() if n > 1]
    assert not dups, f"{len(dups)} duplicated record(s), e.g. {dups[:3]}"
    where = {v: (p, o) for p, o, v in stored}
    unacked = sorted(set(where) - set(acked))
    assert not unacked, f"{len(unacked)} stored record(s) never acknowledged: {unacked[:3]}"
    missing = sorted(set(acked) - set(where))
    assert not missing, f"{len(missing)} acknowledged record(s) missing: {missing[:3]}"
    moved = [v for v in acked if acked[v] != where[v]]
    assert not moved, f"acknowledged at one offset, stored at another: {moved[:3]}"


def fill(path: Path) -> Path:
    """Take every free block of the filesystem with one file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def broker_storage_lines(broker: NerveProcess) -> list[str]:
    return [ln for ln in broker.log_text().splitlines() if "KAFKA_STORAGE_ERROR" in ln]


def test_full_disk_answers_storage_error_rolls_back_and_resumes(
    nerve_factory, unique_topic, tmpfs
) -> None:
    broker = nerve_factory("--set", "log.segment.bytes=1048576", data_dir=tmpfs)
    topic = unique_topic()
    create_topic(broker.bootstrap, topic, partitions=2)
    filler = tmpfs / "filler"  # nerve ignores files it does not know in its data dir
    filler.write_bytes(b"\0" * (4 << 20))  # the producers fill the rest

    librdkafka = logging.getLogger(f"rdkafka-{topic}")
    librdkafka.propagate = False
    librdkafka.setLevel(logging.DEBUG)
    client_log = _LogLines()
    librdkafka.addHandler(client_log)
    idem = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                     "linger.ms": 5, "message.timeout.ms": 120000, "debug": "msg"},
                    logger=librdkafka)
    plain = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False,
                      "acks": 1, "retries": 0, "linger.ms": 5, "message.timeout.ms": 120000})
    idem_d, plain_d = _Deliveries(), _Deliveries()
    group = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic}-g",
                      "enable.auto.commit": False})
    group.commit(offsets=[TopicPartition(topic, p, 1) for p in range(2)], asynchronous=False)
    n = 0

    def produce(count: int) -> None:
        nonlocal n
        for _ in range(count):
            for p, d, name in ((idem, idem_d, "i"), (plain, plain_d, "p")):
                while True:
                    try:
                        p.produce(topic, value=f"{name}{n}-{PAD}".encode(), on_delivery=d)
                        break
                    except BufferError:
                        p.poll(0.05)
            n += 1
        idem.poll(0)
        plain.poll(0)

    deadline = time.monotonic() + 60
    while not plain_d.errors and time.monotonic() < deadline:
        produce(50)
        time.sleep(0.01)
    assert plain_d.errors, "the disk never filled up"
    produce(200)  # more while it is full
    for p in (idem, plain):
        p.poll(1)
    assert {code for code, _ in plain_d.errors} == {STORAGE_ERROR}, plain_d.errors[:3]
    assert not idem_d.errors, idem_d.errors[:3]  # retried, not failed
    # An offset commit on the full disk is refused and the last acknowledged one stays
    # (metadata big enough to need new pages; the rest of the space is taken first).
    top_up = fill(tmpfs / "filler2")
    with pytest.raises(KafkaException) as refused:
        group.commit(offsets=[TopicPartition(topic, p, 9, metadata="m" * 3000)
                              for p in range(2)], asynchronous=False)
    assert refused.value.args[0].code() == KafkaError.COORDINATOR_NOT_AVAILABLE
    # So is DeleteRecords (its log-start-offset file cannot be written): nothing changes.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    deleted = admin.delete_records([TopicPartition(topic, 0, 1)])
    with pytest.raises(KafkaException) as refused:
        next(iter(deleted.values())).result(timeout=30)
    assert refused.value.args[0].code() == STORAGE_ERROR

    filler.unlink()  # space comes back: no restart
    top_up.unlink()
    produce(300)
    assert idem.flush(60) == 0 and plain.flush(60) == 0
    assert not idem_d.errors, idem_d.errors[:3]
    assert plain_d.acked_after_errors >= 300, "appends did not resume after space came back"
    # The idempotent producer saw KAFKA_STORAGE_ERROR answers and retried them.
    # (librdkafka's debug log: "... encountered error: Broker: Disk error when trying to
    # access log file on disk (actions Refresh,Retry,MsgNotPersisted)").
    said = KafkaError(STORAGE_ERROR).str()
    assert any("encountered error: " + said in ln for ln in client_log.lines), said

    # The broker: one line per partition per failure burst, not one per failed request.
    lines = broker_storage_lines(broker)
    assert 1 <= len(lines) <= 2 * 4, lines
    assert len(plain_d.errors) > len(lines)
    assert "Traceback" not in broker.log_text()

    broker.kill()
    broker.start()
    stored = consume_all(broker.bootstrap, topic, 2)
    check_log_matches_acks(stored, idem_d, plain_d)
    assert len(idem_d.acked) == n  # every idempotent record made it, once
    group = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic}-g"})
    committed = group.committed([TopicPartition(topic, p) for p in range(2)], timeout=10)
    assert [tp.offset for tp in committed] == [1, 1]
    group.close()

    # A clean stop on a full disk: one line, exit 1, not marked clean; the next start recovers.
    fill(tmpfs / "filler3")
    seen = len(broker.log_text())
    assert broker.stop() == 1
    stop_log = broker.log_text()[seen:]
    assert "shutdown failed: [Errno 28]" in stop_log and "Traceback" not in stop_log, stop_log
    (tmpfs / "filler3").unlink()
    seen = len(broker.log_text())
    broker.start()
    assert "(unclean shutdown)" in broker.log_text()[seen:]
    assert sorted(consume_all(broker.bootstrap, topic, 2)) == sorted(stored)


def test_unwritable_partition_dir_fails_rolls_then_resumes(nerve_factory, unique_topic, tmp_path):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    check = subprocess.run(["setpriv", *_DROP_CAPS, "--", "true"], capture_output=True)
    if check.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {check.stderr!r}")
    data = tmp_path / "data"
    broker = _Unprivileged(data, extra_args=["--set", "log.segment.bytes=20000"])
    broker.start()
    try:
        _unwritable_scenario(broker, unique_topic(), data)
    finally:
        for d in data.glob("*-0"):
            d.chmod(0o755)
        broker.stop()


_DROP_CAPS = ["--bounding-set=-dac_override,-dac_read_search",
              "--inh-caps=-dac_override,-dac_read_search"]


class _Unprivileged(NerveProcess):
    def command(self) -> list[str]:
        return ["setpriv", *_DROP_CAPS, "--", *super().command()]


def _files(d: Path) -> set[str]:
    return {e.name for e in os.scandir(d)}


def _unwritable_scenario(broker: NerveProcess, topic: str, data: Path) -> None:
    create_topic(broker.bootstrap, topic, partitions=2)
    p0 = data / f"{topic}-0"
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False,
                         "acks": "all", "retries": 0, "linger.ms": 2})
    by_part = {0: _Deliveries(), 1: _Deliveries()}
    n = 0

    def produce(count: int) -> None:
        nonlocal n
        for _ in range(count):
            for part, d in by_part.items():
                producer.produce(topic, value=f"{part}-{n}-{PAD}".encode(), partition=part,
                                 on_delivery=d)
            n += 1
        producer.flush(30)

    produce(20)
    assert not by_part[0].errors and not by_part[1].errors
    p0.chmod(0o555)  # the next roll of partition 0 cannot create its files
    before = _files(p0)
    deadline = time.monotonic() + 30
    while not by_part[0].errors and time.monotonic() < deadline:
        produce(20)
    assert by_part[0].errors, "no append failed in an unwritable directory"
    acked_1 = len(by_part[1].acked)
    produce(40)  # still unwritable
    assert {code for code, _ in by_part[0].errors} == {STORAGE_ERROR}
    assert not by_part[1].errors and len(by_part[1].acked) >= acked_1 + 40  # untouched
    assert _files(p0) == before, "a failed roll left files behind"
    assert broker.running

    p0.chmod(0o755)
    failed = len(by_part[0].errors)
    produce(60)  # appends resume, no restart (and partition 0 rolls now)
    assert len(by_part[0].errors) == failed
    assert by_part[0].acked_after_errors >= 60
    assert len([f for f in _files(p0) if f.endswith(".log")]) > \
        len([f for f in before if f.endswith(".log")])
    assert len([ln for ln in broker_storage_lines(broker) if f"{topic}-0" in ln]) == 1
    assert "Traceback" not in broker.log_text()
    stored = consume_all(broker.bootstrap, topic, 2)
    check_log_matches_acks(stored, *by_part.values())


def test_failed_fsync_is_never_acknowledged(tmp_path, monkeypatch, unique_topic) -> None:
    """fsync cannot be made to fail on a real filesystem here (tmpfs never fails it), so
    this one runs the embeddable Broker in-process with os.fsync failing (EIO) for the
    topic's files; the clients and the wire are real."""
    from nerve.broker import Broker

    topic = unique_topic()
    failing = {"on": False}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if failing["on"] and f"/{topic}-0/" in os.readlink(f"/proc/self/fd/{fd}") + "/":
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with Broker(tmp_path / "data", port=0) as broker:
        create_topic(broker.bootstrap_servers, topic)
        conf = {"bootstrap.servers": broker.bootstrap_servers, "acks": "all", "retries": 0,
                "enable.idempotence": False, "linger.ms": 2}
        d = _Deliveries()
        producer = Producer(conf)

        def produce(tag: str, count: int) -> None:
            for i in range(count):
                producer.produce(topic, value=f"{tag}{i}".encode(), on_delivery=d)
            assert producer.flush(30) == 0

        produce("a", 100)
        failing["on"] = True
        produce("b", 50)
        assert len(d.errors) == 50 and {c for c, _ in d.errors} == {STORAGE_ERROR}
        failing["on"] = False
        produce("c", 50)
        assert len(d.errors) == 50 and len(d.acked) == 150
        assert broker.core is not None
        plog = broker.core.logs.get_log(topic, 0)
        assert plog is not None and plog.log_end_offset == 150
        stored = consume_all(broker.bootstrap_servers, topic, 1)
    check_log_matches_acks(stored, d)
    assert [o for _, o, _ in stored] == list(range(150))
    with Broker(tmp_path / "data", port=0) as broker:
        assert consume_all(broker.bootstrap_servers, topic, 1) == stored
