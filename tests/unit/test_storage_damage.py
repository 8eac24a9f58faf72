"""Damage below the recovery point (bit rot) is reported and stepped over, never truncated."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from nerve.config import BrokerConfig, TopicConfig
from nerve.protocol.records import build_batch, iter_batches, valid_prefix
from nerve.storage import CorruptLogError, PartitionLog

CFG = TopicConfig({"segment.bytes": "2000", "index.interval.bytes": "300"}, BrokerConfig())


def batch(i: int) -> bytearray:
    return bytearray(build_batch([(b"k", f"v{i:04d}".encode() * 4)] * 5, timestamp_ms=1_000 + i))


def make(path: Path, batches: int = 60) -> tuple[list[int], list[tuple[int, int]]]:
    """A closed log; returns segment bases and (base offset, position) of each batch in the
    first segment."""
    log = PartitionLog(path, "t", 0, CFG)
    for i in range(batches):
        buf = batch(i)
        log.append(buf, list(iter_batches(buf)), now_ms=1_000)
    bases = [s.base_offset for s in log.segments]
    first = [(h.base_offset, p) for p, h in log.segments[0].iter_headers(0)]
    log.close()
    return bases, first


def damage(path: Path, position: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        f.write(data)


def all_offsets(log: PartitionLog, start: int) -> list[int]:
    """Every offset readable from `start`, seeking past CorruptLogError one offset at a time."""
    out: list[int] = []
    offset = start
    while offset < log.log_end_offset:
        try:
            data = log.read(offset, 1 << 20).read_bytes()
        except CorruptLogError:
            offset += 1
            continue
        # Like a client: what parses (damage nerve has not met yet may follow it).
        _, headers = valid_prefix(data)
        assert headers, f"an unreadable first batch at offset {offset} answered as data"
        for h in headers:
            out.extend(o for o in range(h.base_offset, h.next_offset) if o >= offset)
        offset = out[-1] + 1
    return out


@pytest.mark.parametrize("where", ["header", "body"])
@pytest.mark.parametrize("how", ["clean", "unclean"])
def test_damage_below_recovery_point_keeps_later_data(
    tmp_path: Path, where: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    bases, first = make(tmp_path)
    assert len(bases) >= 5
    end = 60 * 5
    victim_offset, victim_pos = first[3]
    seg0 = tmp_path / f"{bases[0]:020d}.log"
    size_before = seg0.stat().st_size
    at = victim_pos + (9 if where == "header" else 70)  # length field / inside the records
    damage(seg0, at, os.urandom(32) if where == "body" else b"\xff" * 32)
    with caplog.at_level(logging.WARNING, logger="nerve.storage"):
        log = PartitionLog(tmp_path, "t", 0, CFG, clean=how == "clean",
                           recovery_point=None if how == "clean" else end)
        assert log.log_end_offset == end
        assert [s.base_offset for s in log.segments] == bases
        assert seg0.stat().st_size == size_before
        with pytest.raises(CorruptLogError):
            log.read(victim_offset, 1 << 20)
        got = all_offsets(log, 0)
    lost = set(range(end)) - set(got)
    assert lost and min(lost) == victim_offset and max(lost) < victim_offset + 10
    assert got[-1] == end - 1
    damaged = [r for r in caplog.records if "damaged data" in r.getMessage()]
    assert len(damaged) == 1 and f"position {victim_pos}" in damaged[0].getMessage()
    assert not any("truncated" in r.getMessage() or "dropped" in r.getMessage()
                   for r in caplog.records)
    # A fetch that starts before the damage stops in front of it.
    data = log.read(0, 1 << 20).read_bytes()
    assert [h.base_offset for _, h in iter_batches(data)][-1] < victim_offset
    log.close()


def test_unclean_tail_past_recovery_point_is_still_cut(tmp_path: Path) -> None:
    bases, first = make(tmp_path)
    last = tmp_path / f"{bases[-1]:020d}.log"
    size = last.stat().st_size
    os.truncate(last, size - 3)
    # Damage in the first segment, below the recovery point: kept.
    damage(tmp_path / f"{bases[0]:020d}.log", first[2][1] + 9, b"\xff" * 16)
    log = PartitionLog(tmp_path, "t", 0, CFG, clean=False, recovery_point=bases[-1])
    assert log.log_end_offset == 60 * 5 - 5  # the torn last batch is gone
    assert [s.base_offset for s in log.segments] == bases
    with pytest.raises(CorruptLogError):
        log.read(first[2][0], 1 << 20)
    log.close()


def test_recovery_validates_from_the_recovery_point_inside_a_segment(tmp_path: Path) -> None:
    bases, first = make(tmp_path)
    seg0 = tmp_path / f"{bases[0]:020d}.log"
    # Bit rot below the recovery point (batch 1) and a corrupt batch past it (batch 4).
    damage(seg0, first[1][1] + 9, b"\xff" * 8)
    damage(seg0, first[4][1] + 70, b"\x00" * 8)
    log = PartitionLog(tmp_path, "t", 0, CFG, clean=False, recovery_point=first[3][0])
    # Past the recovery point the segment is validated and cut at batch 4; the later
    # segments follow the cut, so they go (they were not fsynced).
    assert log.log_end_offset == first[4][0] and len(log.segments) == 1
    with pytest.raises(CorruptLogError):
        log.read(first[1][0], 1 << 20)
    assert log.read(first[2][0], 1 << 20).size > 0
    log.close()


def test_resync_without_index_entries(tmp_path: Path) -> None:
    cfg = TopicConfig({"segment.bytes": "2000", "index.interval.bytes": "100000"},
                      BrokerConfig())
    log = PartitionLog(tmp_path, "t", 0, cfg)
    for i in range(30):
        buf = batch(i)
        log.append(buf, list(iter_batches(buf)), now_ms=1_000)
    first = [(h.base_offset, p) for p, h in log.segments[0].iter_headers(0)]
    log.close()
    assert len(log.segments) >= 3 and len(first) >= 4
    damage(tmp_path / f"{0:020d}.log", first[1][1] + 8, b"\x7f" * 20)  # length, epoch, magic
    log = PartitionLog(tmp_path, "t", 0, cfg, clean=True)
    got = all_offsets(log, 0)
    assert set(range(30 * 5)) - set(got) == set(range(first[1][0], first[2][0]))
    log.close()


def test_damaged_tail_of_the_last_segment_is_cut_after_a_clean_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bases, _ = make(tmp_path)
    last = tmp_path / f"{bases[-1]:020d}.log"
    tail_pos, tail = list(iter_batches(last.read_bytes()))[-1]
    damage(last, tail_pos + 8, b"\xff" * 4)  # the last batch's length: nothing after it
    with caplog.at_level(logging.WARNING, logger="nerve.storage"):
        log = PartitionLog(tmp_path, "t", 0, CFG, clean=True)
    assert log.log_end_offset == tail.base_offset
    assert [s.base_offset for s in log.segments] == bases
    assert any("damaged tail" in r.getMessage() for r in caplog.records)
    buf = batch(99)
    assert log.append(buf, list(iter_batches(buf)), now_ms=1_000).base_offset == tail.base_offset
    assert log.read(tail.base_offset, 1 << 20).size == len(buf)
    log.close()
