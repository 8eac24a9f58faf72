"""PartitionLog: append/read, rolls, indexes, timestamps, retention, DeleteRecords."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nerve.config import BrokerConfig, TopicConfig
from nerve.protocol.records import build_batch, iter_batches, validate_batch
from nerve.storage import OffsetOutOfRangeError, PartitionLog, RecordTooLargeError
from nerve.storage.files import LOG_START_OFFSET_FILE


def config(**overrides: str) -> TopicConfig:
    return TopicConfig({k.replace("_", "."): v for k, v in overrides.items()}, BrokerConfig())


def make_log(path: Path, **overrides: str) -> PartitionLog:
    return PartitionLog(path, "t", 0, config(**overrides), clean=False)


def batch(n: int = 1, *, ts: int = 1_000, size: int = 10, **kw: int) -> bytearray:
    return bytearray(build_batch([(b"k", b"x" * size)] * n, timestamp_ms=ts, **kw))


def append(log: PartitionLog, buf: bytearray, now_ms: int = 1_000):
    return log.append(buf, list(iter_batches(buf)), now_ms=now_ms)


def read_batches(log: PartitionLog, offset: int, max_bytes: int = 1 << 20, **kw: bool):
    data = log.read(offset, max_bytes, **kw).read_bytes()
    return [h for _, h in iter_batches(data)]


def test_append_assigns_offsets_and_reads_back(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    originals = [batch(3, size=i) for i in range(5)]
    infos = [append(log, bytearray(b)) for b in originals]
    assert [(i.base_offset, i.last_offset) for i in infos] == [(3 * k, 3 * k + 2)
                                                              for k in range(5)]
    assert infos[0].log_append_time == -1 and infos[0].log_start_offset == 0
    assert log.log_end_offset == log.high_watermark == 15
    data = log.read(0, 1 << 20).read_bytes()
    # Byte-identical except for the rewritten base offset.
    expected = b"".join(
        (3 * k).to_bytes(8, "big") + bytes(b[8:]) for k, b in enumerate(originals))
    assert data == expected
    assert log.size_bytes == len(expected)
    log.close()


def test_mid_batch_offset_returns_whole_batch(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    for _ in range(4):
        append(log, batch(5))
    for offset in range(20):
        first = read_batches(log, offset)[0]
        assert first.base_offset == offset - offset % 5
    log.close()


def test_out_of_range_and_end(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    assert log.read(0, 100).regions == ()
    append(log, batch(2))
    assert log.read(2, 100).size == 0
    with pytest.raises(OffsetOutOfRangeError):
        log.read(3, 100)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)
    log.close()


def test_max_bytes_whole_batches_and_min_one(tmp_path: Path) -> None:
    log = make_log(tmp_path, index_interval_bytes="50")
    sizes = [validate_batch(append_and_get(log, 100)).size for _ in range(10)]
    one = sizes[0]
    assert log.read(0, one - 1, min_one=True).size == one  # bigger than max_bytes: still one
    assert log.read(0, one - 1, min_one=False).size == 0
    assert log.read(0, 3 * one + 5).size == 3 * one  # never a partial batch
    assert len(read_batches(log, 0, 3 * one + 5)) == 3
    assert log.read(4, 10 * one).size == 10 * one - 4 * one
    log.close()


def append_and_get(log: PartitionLog, size: int) -> bytearray:
    b = batch(1, size=size)
    append(log, b)
    return b


def test_roll_by_segment_bytes_and_reads_across_segments(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_bytes="1000", index_interval_bytes="100")
    for i in range(200):
        append(log, batch(2, size=20, ts=1_000 + i))
    assert len(log.segments) > 10
    for seg in log.segments[:-1]:
        assert seg.size <= 1000
    assert [s.base_offset for s in log.segments] == sorted(s.base_offset for s in log.segments)
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".log")
    assert names[0] == "00000000000000000000.log" and len(names) == len(log.segments)
    assert len(log.segments[0].offset_index) > 0
    # Every offset is found, through the sparse index, in the right segment.
    for offset in range(0, 400, 7):
        assert read_batches(log, offset, 1)[0].base_offset == offset - offset % 2
    # A large read continues into the following segments.
    everything = read_batches(log, 0)
    assert [h.base_offset for h in everything] == list(range(0, 400, 2))
    log.close()


def test_roll_by_segment_ms(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_ms="1000")
    append(log, batch(ts=10_000), now_ms=10_000)
    append(log, batch(ts=10_500), now_ms=10_500)
    assert len(log.segments) == 1
    append(log, batch(ts=11_001), now_ms=11_001)
    assert len(log.segments) == 2 and log.segments[1].base_offset == 2
    log.close()


def test_roll_by_segment_ms_without_timestamps_uses_clock(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_ms="1000")
    append(log, batch(ts=-1), now_ms=5_000)
    append(log, batch(ts=-1), now_ms=5_900)
    assert len(log.segments) == 1
    append(log, batch(ts=-1), now_ms=6_001)
    assert len(log.segments) == 2
    log.close()


def test_offset_for_timestamp_and_max_timestamp(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_bytes="2000", index_interval_bytes="64")
    assert log.offset_for_timestamp(0) is None
    assert log.max_timestamp() == (-1, -1)
    timestamps = [1_000 + 10 * i for i in range(100)]
    timestamps[40] = 99_999  # an out-of-order maximum in the middle
    for ts in timestamps:
        append(log, batch(3, ts=ts))
    assert len(log.segments) > 3
    assert log.offset_for_timestamp(0) == (0, 1_000)
    assert log.offset_for_timestamp(1_000) == (0, 1_000)
    assert log.offset_for_timestamp(1_001) == (3, 1_010)
    assert log.offset_for_timestamp(1_500) == (120, 99_999)  # first batch with max >= target
    assert log.offset_for_timestamp(1_990) == (120, 99_999)
    assert log.offset_for_timestamp(99_999) == (120, 99_999)
    assert log.offset_for_timestamp(100_000) is None
    assert log.max_timestamp() == (120, 99_999)  # the first record carrying it
    log.close()
    reopened = PartitionLog(tmp_path, "t", 0, config(segment_bytes="2000"), clean=True)
    assert reopened.offset_for_timestamp(1_500) == (120, 99_999)
    assert reopened.max_timestamp() == (120, 99_999)
    reopened.close()


def test_timestamp_lookups_find_the_record_inside_a_batch(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_bytes="2000", index_interval_bytes="64")
    for i in range(30):  # rolls several segments; each batch's records are out of order
        base = 10_000 * i
        append(log, bytearray(build_batch([(b"k", b"x" * 20)] * 4,
                                          timestamps=[base + 5, base + 9, base + 7, base + 1])))
    assert len(log.segments) >= 3
    assert log.offset_for_timestamp(0) == (0, 5)
    assert log.offset_for_timestamp(6) == (1, 9)
    assert log.offset_for_timestamp(10) == (4, 10_005)
    assert log.offset_for_timestamp(150_006) == (61, 150_009)
    assert log.offset_for_timestamp(290_010) is None
    assert log.max_timestamp() == (117, 290_009)  # mid-batch, not the batch's last offset
    # The log start offset inside a batch: records below it are not answered.
    log.delete_records_before(61)
    assert log.offset_for_timestamp(150_000) == (61, 150_009)
    log.delete_records_before(62)
    assert log.offset_for_timestamp(150_000) == (62, 150_007)
    log.close()


def test_log_append_time_stamps_and_keeps_crc_valid(tmp_path: Path) -> None:
    log = make_log(tmp_path, message_timestamp_type="LogAppendTime")
    info = append(log, batch(3, ts=5), now_ms=123_456)
    assert info.log_append_time == 123_456
    data = log.read(0, 1 << 20).read_bytes()
    header = validate_batch(data)  # CRC checked
    assert header.is_log_append_time and header.max_timestamp == 123_456
    assert log.offset_for_timestamp(100_000) == (0, 123_456)
    log.close()


def test_record_too_large(tmp_path: Path) -> None:
    log = make_log(tmp_path, max_message_bytes="200")
    with pytest.raises(RecordTooLargeError):
        append(log, batch(size=300))
    assert log.log_end_offset == 0
    log.close()


def test_retention_by_bytes(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_bytes="1000", retention_bytes="3000",
                   file_delete_delay_ms="0")
    for _ in range(100):
        append(log, batch(2, size=30))
    before = len(log.segments)
    deleted = log.apply_retention(now_ms=2_000)
    assert deleted == before - len(log.segments) > 0
    assert log.size_bytes - log.segments[0].size < 3000 <= log.size_bytes
    assert log.log_start_offset == log.segments[0].base_offset > 0
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)
    assert read_batches(log, log.log_start_offset)[0].base_offset == log.log_start_offset
    log.reaper.run(log.reaper.pop_due(now_ms=10**15))
    assert not list(tmp_path.glob("*.deleted"))
    log.close()


def test_retention_by_time_oldest_first_then_the_active_segment_too(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_bytes="500", retention_ms="10000",
                   file_delete_delay_ms="0")
    for i in range(30):
        append(log, batch(1, size=100, ts=1_000 + i * 1_000))
    segments = [(s.base_offset, s.max_timestamp) for s in log.segments]
    assert log.apply_retention(now_ms=1_000) == 0
    now = 25_500
    expected = sum(1 for _, ts in segments[:-1] if now - ts > 10_000)
    assert log.apply_retention(now_ms=now) == expected > 0
    assert all(now - s.max_timestamp <= 10_000 for s in log.segments[:-1])
    # Everything expired: like Kafka, an empty segment is rolled and the active one goes too.
    remaining = len(log.segments)
    assert log.apply_retention(now_ms=10**12) == remaining
    assert [(s.base_offset, s.size) for s in log.segments] == [(30, 0)]
    assert log.log_start_offset == log.log_end_offset == 30
    assert log.apply_retention(now_ms=10**12) == 0  # an empty active segment stays
    assert append(log, batch(1, size=100, ts=10**12)).base_offset == 30
    log.close()
    reopened = make_log(tmp_path, segment_bytes="500", retention_ms="10000")
    assert (reopened.log_start_offset, reopened.log_end_offset) == (30, 31)
    reopened.close()


@pytest.mark.parametrize("policy, deletes", [("compact", False), ("delete", True),
                                              ("compact,delete", True)])
def test_retention_only_with_delete_in_cleanup_policy(tmp_path: Path, policy: str,
                                                      deletes: bool) -> None:
    log = make_log(tmp_path, segment_bytes="300", retention_ms="10", retention_bytes="0",
                   cleanup_policy=policy, file_delete_delay_ms="0")
    for _ in range(5):
        append(log, batch(1, size=150))
    assert (log.apply_retention(now_ms=10**12) > 0) is deletes
    assert (log.log_start_offset == 5) is deletes
    log.close()


def test_deleted_segment_fd_survives_until_delay(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_bytes="300", retention_bytes="0",
                   file_delete_delay_ms="60000")
    for _ in range(5):
        append(log, batch(1, size=150))
    region = log.read(0, 1 << 20).regions[0]
    log.apply_retention(now_ms=0)
    assert list(tmp_path.glob("*.log.deleted"))
    assert validate_batch(region.read_bytes()).base_offset == 0  # in-flight send still works
    log.close()  # a log with its own reaper deletes everything pending at close
    assert not list(tmp_path.glob("*.deleted"))


def test_delete_records_before_persists(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_bytes="400", file_delete_delay_ms="0")
    for _ in range(40):
        append(log, batch(2, size=40))
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records_before(81)
    segments = len(log.segments)
    assert log.delete_records_before(33) == 33
    assert log.log_start_offset == 33 and len(log.segments) < segments
    assert log.segments[0].base_offset <= 33 < log.segments[0].next_offset
    assert log.delete_records_before(10) == 33  # never moves backwards
    with pytest.raises(OffsetOutOfRangeError):
        log.read(32, 100)
    assert read_batches(log, 33)[0].base_offset == 32  # the batch holding 33
    assert (tmp_path / LOG_START_OFFSET_FILE).read_text().strip() == "33"
    log.flush()
    log.close()
    for clean in (True, False):
        reopened = PartitionLog(tmp_path, "t", 0, config(segment_bytes="400"), clean=clean)
        assert reopened.log_start_offset == 33 and reopened.log_end_offset == 80
        reopened.close()


def test_delete_all_records(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_bytes="400")
    for _ in range(10):
        append(log, batch(2, size=40))
    assert log.delete_records_before(20) == 20
    assert log.read(20, 100).size == 0
    assert append(log, batch()).base_offset == 20
    log.close()


def test_flush_tracks_unflushed_messages(tmp_path: Path) -> None:
    log = make_log(tmp_path, flush_messages="5")
    append(log, batch(3))
    assert log.unflushed_messages() == 3 and not log.needs_flush(1_000)
    append(log, batch(3))
    assert log.needs_flush(1_000)
    log.flush()
    assert log.unflushed_messages() == 0 and log.recovery_point == 6
    log.close()


def test_reopen_clean_keeps_everything(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_bytes="700", index_interval_bytes="100")
    for i in range(50):
        append(log, batch(i % 4 + 1, size=i, ts=i))
    data = log.read(0, 1 << 22).read_bytes()
    end = log.log_end_offset
    log.close()
    for clean in (True, False):
        reopened = PartitionLog(tmp_path, "t", 0, config(segment_bytes="700"), clean=clean)
        assert reopened.log_end_offset == end
        assert reopened.read(0, 1 << 22).read_bytes() == data
        assert append(reopened, batch()).base_offset == end
        end += 1
        data = reopened.read(0, 1 << 22).read_bytes()
        reopened.close()


def test_missing_indexes_are_rebuilt(tmp_path: Path) -> None:
    log = make_log(tmp_path, segment_bytes="1000", index_interval_bytes="100")
    for _ in range(60):
        append(log, batch(2, size=30))
    log.close()
    for p in tmp_path.glob("*.index"):
        p.unlink()
    for p in list(tmp_path.glob("*.timeindex"))[:2]:
        p.write_bytes(b"garbage")
    reopened = PartitionLog(tmp_path, "t", 0,
                            config(segment_bytes="1000", index_interval_bytes="100"), clean=True)
    # Sealed segments read their indexes on first use (lazily), rebuilding them then.
    assert not any(s.offset_index.path.exists() for s in reopened.segments[:-1])
    for offset in range(0, 120, 5):
        assert read_batches(reopened, offset, 1)[0].base_offset == offset - offset % 2
    assert all(len(s.offset_index) > 0 for s in reopened.segments[:-1])
    reopened.close()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 400)), min_size=1,
                      max_size=30),
       segment_bytes=st.integers(300, 3000), interval=st.integers(1, 500))
def test_property_round_trip(tmp_path_factory: pytest.TempPathFactory,
                             sizes: list[tuple[int, int]], segment_bytes: int,
                             interval: int) -> None:
    path = tmp_path_factory.mktemp("prop")
    log = PartitionLog(path, "t", 0, config(segment_bytes=str(segment_bytes),
                                            index_interval_bytes=str(interval)))
    expected = []
    for count, size in sizes:
        b = batch(count, size=size)
        info = append(log, b)
        expected.append((info.base_offset, bytes(b)))  # patched in place = what is stored
    everything = b"".join(b for _, b in expected)
    assert log.read(0, 1 << 30).read_bytes() == everything
    for base, data in expected:
        got = log.read(base, 1, min_one=True).read_bytes()
        assert got == data
    log.close()
    reopened = PartitionLog(path, "t", 0, config(), clean=False)
    assert reopened.read(0, 1 << 30).read_bytes() == everything
    reopened.close()


def test_file_names_and_index_format(tmp_path: Path) -> None:
    log = make_log(tmp_path, index_interval_bytes="10")
    for _ in range(5):
        append(log, batch(2, size=20))
    log.close()
    raw = (tmp_path / "00000000000000000000.index").read_bytes()
    assert len(raw) % 8 == 0 and len(raw) >= 8
    rel, pos = int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:8], "big")
    data = (tmp_path / "00000000000000000000.log").read_bytes()
    assert validate_batch(data, pos).base_offset == rel
    assert os.path.getsize(tmp_path / "00000000000000000000.timeindex") % 12 == 0
