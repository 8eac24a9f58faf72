"""Crash recovery: torn and corrupt tails are truncated; idempotence state survives."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from nerve.config import BrokerConfig, TopicConfig
from nerve.protocol.records import build_batch, iter_batches
from nerve.storage import (
    DuplicateSequenceError,
    InvalidProducerEpochError,
    OutOfOrderSequenceError,
    PartitionLog,
)

CFG = TopicConfig({"index.interval.bytes": "64"}, BrokerConfig())


def batch(n: int = 1, *, size: int = 10, **kw: int) -> bytearray:
    return bytearray(build_batch([(b"k", b"v" * size)] * n, timestamp_ms=1_000, **kw))


def append(log: PartitionLog, buf: bytearray, now_ms: int = 1_000):
    return log.append(buf, list(iter_batches(buf)), now_ms=now_ms)


def idem(pid: int, epoch: int, seq: int, n: int = 1) -> bytearray:
    return batch(n, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


# ---- crash recovery ----


@pytest.fixture(scope="module")
def crashed_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int, int]:
    """A one-segment log of 5 batches; returns (dir, size before last batch, size, end)."""
    path = tmp_path_factory.mktemp("template")
    log = PartitionLog(path, "t", 0, CFG)
    for i in range(4):
        append(log, batch(3, size=20 + i))
    before = log.size_bytes
    append(log, batch(4, size=50))
    size, end = log.size_bytes, log.log_end_offset
    log.close()
    return path, before, size, end


def _reopen_damaged(template: Path, target: Path, damage) -> PartitionLog:
    target.mkdir()
    for name in ("00000000000000000000.log",):
        (target / name).write_bytes((template / name).read_bytes())
    damage(target / "00000000000000000000.log")
    return PartitionLog(target, "t", 0, CFG, clean=False)


def test_truncation_at_every_byte_of_last_batch(
    tmp_path: Path, crashed_template: tuple[Path, int, int, int], caplog: pytest.LogCaptureFixture
) -> None:
    template, before, size, end = crashed_template
    last_batch_base = end - 4
    for cut in range(before, size):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nerve.storage"):
            log = _reopen_damaged(template, tmp_path / f"cut{cut}",
                                  lambda p, c=cut: os.truncate(p, c))
        assert log.log_end_offset == last_batch_base, cut
        assert log.size_bytes == before
        if cut > before:
            assert any("truncated" in r.getMessage() and f"dropped {cut - before}" in r.getMessage()
                       for r in caplog.records)
        headers = [h for _, h in iter_batches(log.read(0, 1 << 20).read_bytes())]
        assert [h.base_offset for h in headers] == [0, 3, 6, 9]
        info = append(log, batch(2))
        assert info.base_offset == last_batch_base
        assert log.read(last_batch_base, 1 << 20).size > 0
        log.close()


def test_flipped_byte_in_last_batch(
    tmp_path: Path, crashed_template: tuple[Path, int, int, int], caplog: pytest.LogCaptureFixture
) -> None:
    template, before, size, end = crashed_template

    # Positions past the CRC field, in the header and in the records (covered by the CRC).
    for pos in (before + 21, before + 40, before + 70, size - 1):
        def flip(p: Path, pos: int = pos) -> None:
            data = bytearray(p.read_bytes())
            data[pos] ^= 0x5A
            p.write_bytes(data)

        with caplog.at_level(logging.WARNING, logger="nerve.storage"):
            log = _reopen_damaged(template, tmp_path / f"flip{pos}", flip)
        assert log.log_end_offset == end - 4 and log.size_bytes == before
        assert append(log, batch()).base_offset == end - 4
        log.close()
    assert any("truncated" in r.getMessage() for r in caplog.records)


def test_clean_marker_trusts_files(tmp_path: Path,
                                   crashed_template: tuple[Path, int, int, int]) -> None:
    template, _, size, end = crashed_template
    target = tmp_path / "clean"
    target.mkdir()
    for f in template.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    log = PartitionLog(target, "t", 0, CFG, clean=True)
    assert log.log_end_offset == end and log.size_bytes == size
    log.close()


def test_unclean_recovery_drops_segments_after_a_truncation(tmp_path: Path) -> None:
    cfg = TopicConfig({"segment.bytes": "300"}, BrokerConfig())
    log = PartitionLog(tmp_path, "t", 0, cfg)
    for _ in range(10):
        append(log, batch(2, size=60))
    bases = [s.base_offset for s in log.segments]
    assert len(bases) >= 3
    log.close()
    mid = tmp_path / f"{bases[1]:020d}.log"
    os.truncate(mid, mid.stat().st_size - 1)
    log = PartitionLog(tmp_path, "t", 0, cfg, clean=False, recovery_point=bases[1])
    assert [s.base_offset for s in log.segments] == bases[:2]
    assert log.log_end_offset == log.segments[-1].next_offset < bases[2]
    assert append(log, batch()).base_offset == log.log_end_offset - 1
    log.close()


# ---- idempotence ----


def test_idempotent_sequence_rules(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path, "t", 0, CFG)
    assert append(log, idem(7, 0, 0, 3)).base_offset == 0      # unknown producer: accepted
    assert append(log, idem(7, 0, 3, 2)).base_offset == 3
    with pytest.raises(DuplicateSequenceError) as dup:
        append(log, idem(7, 0, 0, 3))                           # retry of the first batch
    assert dup.value.base_offset == 0 and dup.value.log_append_time == -1
    with pytest.raises(DuplicateSequenceError) as dup:
        append(log, idem(7, 0, 3, 2))
    assert dup.value.base_offset == 3
    with pytest.raises(OutOfOrderSequenceError):
        append(log, idem(7, 0, 6))                              # gap: expected 5
    with pytest.raises(OutOfOrderSequenceError):
        append(log, idem(7, 0, 4))                              # overlap, not a duplicate
    assert append(log, idem(7, 0, 5)).base_offset == 5
    with pytest.raises(OutOfOrderSequenceError):
        append(log, idem(7, 1, 3))                              # new epoch must start at 0
    assert append(log, idem(7, 1, 0)).base_offset == 6          # new epoch at 0: ok
    with pytest.raises(InvalidProducerEpochError):
        append(log, idem(7, 0, 6))                              # older epoch
    assert append(log, idem(8, 0, 42)).base_offset == 7         # another unknown producer
    assert append(log, batch()).base_offset == 8                # non-idempotent: no checks
    assert log.log_end_offset == 9
    log.close()


def test_rejected_append_writes_nothing(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path, "t", 0, CFG)
    append(log, idem(1, 0, 0))
    two = idem(2, 0, 0) + idem(1, 0, 5)  # the second batch is out of order
    with pytest.raises(OutOfOrderSequenceError):
        append(log, two)
    assert log.log_end_offset == 1 and 2 not in log.producer_state()
    assert append(log, idem(2, 0, 0) + idem(2, 0, 1)).last_offset == 2  # same pid twice
    log.close()


def test_sequence_wraps_at_int32(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path, "t", 0, CFG)
    append(log, idem(3, 0, 0x7FFFFFFF - 1, 2))
    assert log.producer_state()[3].last_seq == 0x7FFFFFFF
    assert append(log, idem(3, 0, 0)).base_offset == 2
    log.close()


def test_only_last_five_batches_are_duplicates(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path, "t", 0, CFG)
    for seq in range(7):
        append(log, idem(4, 0, seq))
    with pytest.raises(DuplicateSequenceError):
        append(log, idem(4, 0, 2))
    with pytest.raises(OutOfOrderSequenceError):
        append(log, idem(4, 0, 1))
    log.close()


def test_duplicate_reports_log_append_time(tmp_path: Path) -> None:
    cfg = TopicConfig({"message.timestamp.type": "LogAppendTime"}, BrokerConfig())
    log = PartitionLog(tmp_path, "t", 0, cfg)
    info = append(log, idem(5, 2, 0), now_ms=77_000)
    with pytest.raises(DuplicateSequenceError) as dup:
        append(log, idem(5, 2, 0), now_ms=99_000)
    assert dup.value.base_offset == 0 and dup.value.log_append_time == info.log_append_time
    log.close()


@pytest.mark.parametrize("how", ["clean", "snapshot_then_unclean", "no_snapshot"])
def test_producer_state_survives_reopen(tmp_path: Path, how: str) -> None:
    cfg = TopicConfig({"segment.bytes": "400"}, BrokerConfig())
    log = PartitionLog(tmp_path, "t", 0, cfg)
    for seq in range(0, 30, 3):
        append(log, idem(9, 1, seq, 3))
    log.close()
    if how != "clean":
        log = PartitionLog(tmp_path, "t", 0, cfg, clean=True)
        append(log, idem(9, 1, 30, 3))  # after the snapshot: found by the header scan
        log.flush()  # no close: an unclean stop
        for seg in log.segments:
            seg.close()
    if how == "no_snapshot":
        for p in tmp_path.glob("*.snapshot"):
            p.unlink()
    reopened = PartitionLog(tmp_path, "t", 0, cfg, clean=how == "clean")
    last = 30 if how == "clean" else 33
    with pytest.raises(DuplicateSequenceError) as dup:
        append(reopened, idem(9, 1, last - 3, 3))
    assert dup.value.base_offset == last - 3
    with pytest.raises(OutOfOrderSequenceError):
        append(reopened, idem(9, 1, last + 1))
    with pytest.raises(InvalidProducerEpochError):
        append(reopened, idem(9, 0, 0))
    assert append(reopened, idem(9, 1, last)).base_offset == last
    reopened.close()
