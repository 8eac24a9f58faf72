"""Bit rot below the recovery point: reported, contained, never a reason to delete later data.

Real faults on a real `nerve serve`: bytes of stored segments are overwritten while the broker
is stopped (cleanly or by SIGKILL), then real consumers read across the damage.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition
from kafka.errors import CorruptRecordError

from nerve.protocol.records import BatchHeader, iter_batches
from nerve.storage.files import RECOVERY_POINT_FILE
from tests.helpers import REPO_ROOT
from tests.integration.test_produce_consume import create_topic

RECORDS = 10_000
SEGMENT_BYTES = "20000"


def produce(bootstrap: str, topic: str, n: int = RECORDS) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.num.messages": 10})
    acked: list[int] = []
    for i in range(n):
        p.produce(topic, value=f"value-{i:06d}".encode(),
                  on_delivery=lambda err, msg: err is None and acked.append(msg.offset()))
        if i % 200 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    assert len(acked) == n


def wait_recovery_point(data_dir: Path, topic: str, offset: int, timeout: float = 15) -> None:
    """Until the broker's recovery-point-offset-checkpoint says `topic` 0 is durable to offset."""
    path = data_dir / RECOVERY_POINT_FILE
    want = f"{topic} 0 {offset}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and want in path.read_text().splitlines():
            return
        time.sleep(0.1)
    pytest.fail(f"{path} never said {want!r}: "
                f"{path.read_text() if path.exists() else 'missing'}")


def batches(path: Path) -> list[tuple[int, BatchHeader]]:
    return list(iter_batches(path.read_bytes()))


def overwrite(path: Path, position: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        f.write(data)


def damage_segments(part_dir: Path) -> list[tuple[Path, int, BatchHeader]]:
    """Two damaged places below the recovery point: 32 random bytes over a batch header in
    the oldest segment (its structure is gone) and over the records of a batch in the fourth
    (only its CRC can tell). Returns (file, position, original header) of each."""
    segs = sorted(part_dir.glob("*.log"))
    assert len(segs) >= 10, segs
    rng = random.Random(11)
    out = []
    for seg, into in ((segs[0], 8), (segs[3], 70)):
        found = batches(seg)
        pos, header = found[len(found) // 2]
        overwrite(seg, pos + into, rng.randbytes(32))
        out.append((seg, pos, header))
    return out


def read_all_seeking_past(bootstrap: str, topic: str, timeout: float = 60
                          ) -> tuple[dict[int, bytes], list[int]]:
    """kafka-python from offset 0 to the end; on CorruptRecordError seek one offset on.
    Returns {offset: value} and the offsets where the error came."""
    tp = KTopicPartition(topic, 0)
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      check_crcs=True, fetch_max_wait_ms=100)
    got: dict[int, bytes] = {}
    errors: list[int] = []
    try:
        c.assign([tp])
        c.seek(tp, 0)
        deadline = time.monotonic() + timeout
        while c.position(tp) < RECORDS:
            assert time.monotonic() < deadline, (
                f"stuck at offset {c.position(tp)} after {len(got)} records, errors {errors}")
            try:
                for records in c.poll(timeout_ms=500).values():
                    for r in records:
                        got[r.offset] = r.value
            except CorruptRecordError:
                at = c.position(tp)
                errors.append(at)
                c.seek(tp, at + 1)
    finally:
        c.close()
    return got, errors


def nerve_log(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nerve", "log", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("stop", ["clean", "sigkill"])
def test_bit_rot_below_recovery_point_is_contained(nerve_factory, unique_topic, tmp_path, stop):
    data_dir = tmp_path / "data"
    broker = nerve_factory("--set", f"log.segment.bytes={SEGMENT_BYTES}", data_dir=data_dir)
    topic = unique_topic()
    create_topic(broker.bootstrap, topic)
    produce(broker.bootstrap, topic)
    part_dir = data_dir / f"{topic}-0"
    if stop == "sigkill":
        wait_recovery_point(data_dir, topic, RECORDS)  # every fsync lands in the checkpoint
        broker.kill()
        # And a torn batch past the recovery point, as a crash mid-append leaves it.
        last = sorted(part_dir.glob("*.log"))[-1]
        _, tail = batches(last)[-1]
        with open(last, "ab") as f:
            f.write((RECORDS).to_bytes(8, "big") + (tail.size - 12).to_bytes(4, "big")
                    + b"\x00" * 40)
    else:
        broker.stop()
    damaged = damage_segments(part_dir)
    lost = {o for _, _, h in damaged for o in range(h.base_offset, h.next_offset)}
    sizes = {p.name: p.stat().st_size for p in part_dir.glob("*.log")}

    broker.start()
    got, errors = read_all_seeking_past(broker.bootstrap, topic)
    # Everything but the two damaged batches, byte for byte.
    assert set(range(RECORDS)) - set(got) == lost
    assert all(got[o] == f"value-{o:06d}".encode() for o in got)
    assert errors and all(o in lost for o in errors)
    # librdkafka (check.crcs off) sees the broker's CORRUPT_MESSAGE at the damaged batch.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g",
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, damaged[0][2].base_offset)])
        deadline = time.monotonic() + 20
        code = None
        while code is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                code = m.error().code() if m.error() else "record"
        assert code == KafkaError.INVALID_MSG  # error 2, CORRUPT_MESSAGE
    finally:
        c.close()
    log = broker.log_text()
    for seg, pos, _ in damaged:
        lines = [ln for ln in log.splitlines()
                 if f"damaged data in {seg.name} at position {pos}:" in ln]
        assert len(lines) == 1, log  # one line per damaged place
    assert "Traceback" not in log
    assert "segment(s) from offset" not in log  # no segment dropped
    if stop == "sigkill":
        assert "torn or corrupt batch" in log  # the torn tail past the recovery point went
    broker.stop()
    after = {p.name: p.stat().st_size for p in part_dir.glob("*.log")}
    if stop == "sigkill":
        last = max(after)
        assert after[last] < sizes[last]
        del after[last], sizes[last]
    assert after == sizes  # no segment lost, none cut

    r = nerve_log("verify", "--data-dir", str(data_dir))
    assert r.returncode == 1, r.stdout + r.stderr
    problems = r.stdout.splitlines()
    for seg, pos, _ in damaged:
        assert any(ln.startswith(f"{topic}-0 {seg.name} position {pos}:") for ln in problems), \
            problems
    assert len(problems) == 2, problems


def test_verify_refuses_a_running_broker_and_passes_a_clean_dir(
    nerve_factory, unique_topic, tmp_path
):
    data_dir = tmp_path / "data"
    broker = nerve_factory("--set", f"log.segment.bytes={SEGMENT_BYTES}", data_dir=data_dir)
    topic = unique_topic()
    create_topic(broker.bootstrap, topic, partitions=2)
    produce(broker.bootstrap, topic, 3000)
    running = nerve_log("verify", "--data-dir", str(data_dir))
    assert running.returncode == 2, running.stdout + running.stderr
    assert "in use" in running.stderr and "stop the broker first" in running.stderr
    broker.stop()
    r = nerve_log("verify", "--data-dir", str(data_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("checked 2 partition(s)"), r.stdout


# ---- nerve log dump against Kafka's DumpLogSegments (kafka-dump-log) on the same files


def _dump_lines(text: str) -> list[str]:
    # Kafka's tool adds a "Mismatches in ..." section for indexes: nerve's offset index holds
    # base offsets where Kafka's holds last offsets (documented in nerve/storage/index.py).
    return text.split("Mismatches in")[0].splitlines()


def test_dump_matches_kafka_dump_log(nerve_factory, unique_topic, tmp_path, kafka_run):
    data_dir = tmp_path / "data"
    broker = nerve_factory("--set", "log.segment.bytes=8000", "--set",
                           "log.index.interval.bytes=600", data_dir=data_dir)
    files: list[Path] = []
    first_segments: list[Path] = []
    rng = random.Random(5)
    # One topic per codec (librdkafka's framing of each); the uncompressed one LogAppendTime.
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        topic = unique_topic(codec)
        configs = {"message.timestamp.type": "LogAppendTime"} if codec == "none" else {}
        create_topic(broker.bootstrap, topic, **configs)
        p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                      "compression.type": codec, "linger.ms": 5, "batch.num.messages": 20})
        for i in range(600):
            noise = rng.randbytes(16).hex()  # keeps compressed batches big enough to roll
            p.produce(topic, key=None if i % 3 else f"key-{i}".encode(),
                      value=None if i % 7 == 0 else f"value-{i}-é-{noise}".encode() * (1 + i % 4),
                      headers=[("h1", b"x"), ("h2", None)] if i % 5 == 0 else None)
            if i % 100 == 99:
                p.flush(10)  # several batches, more than one segment
        assert p.flush(10) == 0
        del p  # no reconnect attempts once the broker is gone
        part = data_dir / f"{topic}-0"
        segs = sorted(part.glob("*.log"))
        assert len(segs) >= 2, codec
        first_segments.append(segs[0])
        files += [segs[0], part / f"{segs[0].stem}.index", part / f"{segs[0].stem}.timeindex",
                  segs[-1]]
    broker.stop()

    ours = nerve_log("dump", "--print-data-log", *map(str, files))
    assert ours.returncode == 0, ours.stderr
    theirs = kafka_run("dump-log", "--print-data-log", "--files", ",".join(map(str, files)),
                       timeout=120)
    assert theirs.returncode == 0, theirs.stderr
    assert _dump_lines(ours.stdout) == _dump_lines(theirs.stdout)
    assert ours.stdout.count("compresscodec: ") > 5 * 4 and "isvalid: false" not in ours.stdout
    assert all(f"compresscodec: {c}" in ours.stdout for c in ("gzip", "snappy", "lz4", "zstd"))

    # Batches whose records were overwritten: both tools say isvalid: false for them.
    for seg in first_segments:
        pos, h = batches(seg)[1]
        overwrite(seg, pos + h.size - 8, b"\x00\x01\x02\x03\x04\x05\x06\x07")
    ours = nerve_log("dump", *map(str, first_segments))
    theirs = kafka_run("dump-log", "--files", ",".join(map(str, first_segments)))
    assert _dump_lines(ours.stdout) == _dump_lines(theirs.stdout)
    assert ours.stdout.count("isvalid: false") == len(first_segments)


def test_read_error_is_kafka_storage_error_for_that_partition_only(
    nerve_factory, unique_topic, tmp_path
):
    data_dir = tmp_path / "data"
    broker = nerve_factory("--set", "log.segment.bytes=4000", data_dir=data_dir)
    topic = unique_topic()
    create_topic(broker.bootstrap, topic, partitions=2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5,
                  "batch.num.messages": 20})
    for i in range(3000):
        p.produce(topic, value=f"value-{i:06d}".encode(), partition=i % 2)
    assert p.flush(30) == 0
    del p
    broker.stop()
    broker.start()  # clean start: sealed segments are opened on first read
    segments = sorted((data_dir / f"{topic}-0").glob("*.log"))
    assert len(segments) >= 2  # the oldest is sealed, not opened yet
    oldest = segments[0]
    oldest.rename(tmp_path / "moved.log")
    oldest.mkdir()  # the next open succeeds and every read fails (EISDIR), like a bad disk
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                      fetch_max_wait_ms=100)
    got: dict[int, int] = {0: 0, 1: 0}
    try:
        tps = [KTopicPartition(topic, 0), KTopicPartition(topic, 1)]
        c.assign(tps)
        c.seek_to_beginning()
        started = time.monotonic()
        deadline = started + 20
        while got[1] < 1500 and time.monotonic() < deadline:
            for tp, records in c.poll(timeout_ms=500).items():
                got[tp.partition] += len(records)
        time.sleep(1)  # a few more fetches of partition 0
        c.poll(timeout_ms=500)
        elapsed = time.monotonic() - started
    finally:
        c.close()
    assert got == {0: 0, 1: 1500}
    log = broker.log_text()
    # Dozens of failed fetches, one log line per partition per 10 s.
    lines = log.count(f"{topic}-0: reading the log failed")
    assert 1 <= lines <= 1 + elapsed // 10, log
    assert "KAFKA_STORAGE_ERROR" in log
    assert "Traceback" not in log and "internal error" not in log
