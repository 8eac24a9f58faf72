"""Disk faults on append, roll and fsync: rolled back, reported as KafkaStorageError, logged
once per burst, and the log keeps working once the disk does.

Faults are injected by making one OS call fail with the errno a real disk gives (the
integration tests in tests/integration/test_disk_faults.py use real full and unwritable
filesystems); the checks are on the files the log leaves behind.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nerve.config import BrokerConfig
from nerve.protocol.records import build_batch
from nerve.storage import KafkaStorageError, LogManager, PartitionLog
from nerve.storage import files as storage_files
from nerve.storage import index as storage_index
from nerve.storage import log as storage_log
from tests.unit.test_storage_log import append, batch, make_log, read_batches


@pytest.fixture(autouse=True)
def _collect() -> Iterator[None]:
    # Raised errors keep frames (and the file handles in them) alive in cycles; close them
    # now, not during a later test that counts the process's descriptors.
    yield
    gc.collect()


def files_of(path: Path) -> dict[str, int]:
    return {e.name: e.stat().st_size for e in os.scandir(path)}


def failing(real: Callable[..., Any], err: int, when: Callable[..., bool]) -> Callable[..., Any]:
    """`real`, except that calls for which `when(*args)` holds raise OSError(err)."""
    def call(*args: Any, **kw: Any) -> Any:
        if when(*args):
            raise OSError(err, os.strerror(err))
        return real(*args, **kw)
    return call


def idempotent(seq: int, n: int = 2) -> bytearray:
    return bytearray(build_batch([(None, b"v")] * n, timestamp_ms=1_000, producer_id=7,
                                 producer_epoch=0, base_sequence=seq))


def test_failed_write_rolls_back_and_appends_resume(tmp_path: Path, monkeypatch, caplog) -> None:
    log = make_log(tmp_path, index_interval_bytes="1")  # an index entry per batch
    append(log, idempotent(0))
    append(log, idempotent(2))
    before = files_of(tmp_path)
    real_write = os.write

    def short_write(fd: int, data: Any) -> int:  # half the batch, then the disk is full
        if len(data) > 20:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage_files.os, "write", short_write)
    caplog.set_level(logging.INFO, "nerve.storage")
    for _ in range(5):  # a producer retrying: one log line for the whole burst
        with pytest.raises(KafkaStorageError, match="No space left"):
            append(log, idempotent(4), now_ms=2_000)
    assert files_of(tmp_path) == before and log.log_end_offset == 4
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    monkeypatch.undo()

    # The retried batch is in sequence (nothing of it was kept) and lands at offset 4.
    assert append(log, idempotent(4), now_ms=3_500).base_offset == 4
    assert [h.base_offset for h in read_batches(log, 0)] == [0, 2, 4]
    assert any("appends work again (5 failed" in r.getMessage() for r in caplog.records)
    log.close()
    again = PartitionLog(tmp_path, "t", 0, log.config, clean=False)
    assert again.log_end_offset == 6 and len(again.active_segment.offset_index) == 2
    again.close()


def test_failed_index_entry_rolls_back_the_batch_too(tmp_path: Path, monkeypatch) -> None:
    log = make_log(tmp_path, index_interval_bytes="1")
    append(log, batch(2))
    append(log, batch(2))
    before = files_of(tmp_path)
    monkeypatch.setattr(storage_index, "write_all", failing(
        storage_index.write_all, errno.EIO, lambda fd, data: True))
    with pytest.raises(KafkaStorageError, match="Input/output error"):
        append(log, batch(2))
    assert files_of(tmp_path) == before
    seg = log.active_segment
    assert (len(seg.offset_index), seg.size, log.log_end_offset) == (1, before[seg.path.name], 4)
    monkeypatch.undo()
    assert append(log, batch(2)).base_offset == 4
    assert [h.base_offset for h in read_batches(log, 0)] == [0, 2, 4]
    log.close()


@pytest.mark.parametrize("fails", ["create", "seal"])
def test_failed_roll_keeps_the_active_segment_and_leaves_no_files(
    tmp_path: Path, monkeypatch, fails: str
) -> None:
    log = make_log(tmp_path, segment_bytes="300")
    size = len(batch(2, size=40))
    while len(log.segments) < 2 or log.active_segment.size + size <= 300:
        append(log, batch(2, size=40))  # up to where the next batch needs a roll
    before, active, end = files_of(tmp_path), log.active_segment, log.log_end_offset
    if fails == "create":  # the new .log exists, then its time index cannot be opened
        monkeypatch.setattr("nerve.storage.handles.os.open", failing(
            os.open, errno.EMFILE, lambda path, *a: str(path).endswith(".timeindex")))
    else:  # the new segment exists, then the old one's final time index entry does not fit
        monkeypatch.setattr(storage_index, "write_all", failing(
            storage_index.write_all, errno.ENOSPC, lambda fd, data: True))
    with pytest.raises(KafkaStorageError):
        append(log, batch(2, size=40))
    assert files_of(tmp_path) == before, "the failed roll left files behind"
    assert log.active_segment is active and not active.sealed and log.log_end_offset == end
    monkeypatch.undo()
    assert append(log, batch(2, size=40)).base_offset == end  # rolls now
    assert log.active_segment is not active and len(log.segments) == 3
    assert [h.base_offset for h in read_batches(log, 0)][-1] == end
    log.close()


def manager(path: Path) -> LogManager:
    m = LogManager(path, BrokerConfig({}))
    m.load()
    return m


async def test_failed_fsync_cuts_back_to_the_recovery_point(tmp_path: Path, monkeypatch) -> None:
    m = manager(tmp_path)
    m.create_topic("t", 1, {"segment.bytes": "400"})
    log = m.get_log("t", 0)
    assert log is not None
    for seq in range(0, 10, 2):
        append(log, idempotent(seq))
    await m.flush([log])
    durable, durable_files = log.log_end_offset, files_of(log.directory)
    assert log.recovery_point == durable == 10
    gen = log.truncations
    for seq in range(10, 60, 2):  # enough to roll a few segments past the durable point
        append(log, idempotent(seq))
    assert len(log.segments) > 2
    ends = log.log_end_offset
    monkeypatch.setattr(storage_log.os, "fsync", failing(
        os.fsync, errno.EIO, lambda fd: True))
    await m.flush([log])
    assert not log.acknowledged(ends, gen)
    assert log.log_end_offset == durable and log.truncations == gen + 1
    # The later segments are retired (renamed, deleted later); the cut one's log and offset
    # index are as they were when fsynced (its time index may keep the entry of its seal).
    def logs_and_indexes(files: dict[str, int]) -> dict[str, int]:
        return {k: v for k, v in files.items() if k.endswith((".log", ".index"))}
    assert logs_and_indexes(files_of(log.directory)) == logs_and_indexes(durable_files)
    assert log.needs_flush(log._now_ms())
    monkeypatch.undo()
    # The producer's retry of its first unacknowledged batch is in sequence again.
    assert append(log, idempotent(10)).base_offset == durable
    await m.flush([log])
    assert log.acknowledged(durable + 2, log.truncations)
    assert [h.base_offset for h in read_batches(log, 0)] == list(range(0, 12, 2))
    await m.stop()
    again = manager(tmp_path)
    reopened = again.get_log("t", 0)
    assert reopened is not None and reopened.log_end_offset == 12
    again.close()


async def test_fsync_failure_of_one_log_spares_the_others(tmp_path: Path, monkeypatch) -> None:
    m = manager(tmp_path)
    m.create_topic("t", 2)
    bad, good = m.get_log("t", 0), m.get_log("t", 1)
    assert bad is not None and good is not None
    append(bad, batch(2))
    append(good, batch(2))
    bad_fd = bad.active_segment.handle().fd
    monkeypatch.setattr(storage_log.os, "fsync", failing(
        os.fsync, errno.EIO, lambda fd: fd == bad_fd))
    await asyncio.wait_for(m.flush([bad, good]), 10)
    assert not bad.acknowledged(2, 0) and bad.log_end_offset == 0
    assert good.acknowledged(2, 0) and good.log_end_offset == 2
    monkeypatch.undo()
    await m.stop()


async def test_acks_all_retry_of_an_unflushed_batch_waits_for_its_fsync(
    tmp_path: Path, monkeypatch
) -> None:
    """An idempotent retry (a duplicate) of a batch first sent with acks=1 is answered with
    the original offsets only once they are fsynced; when that fsync fails, the original is
    cut and the retry is answered KAFKA_STORAGE_ERROR, not success."""
    from nerve.broker import BrokerCore
    from nerve.handlers import DeferredResponse, RequestContext, k00_produce, load_handlers
    from nerve.protocol.errors import ErrorCode
    from nerve.protocol.framing import RequestHeader

    load_handlers()
    core = BrokerCore(tmp_path / "data", BrokerConfig({}), advertised_host="127.0.0.1",
                      advertised_port=9092)
    core.load()
    core.logs.create_topic("t", 1)
    answers: list[Any] = []
    monkeypatch.setattr(k00_produce, "encode_produce_response",
                        lambda version, responses, **_: answers.append(responses) or b"")

    async def produce(acks: int) -> int:
        class Part:
            index = 0
            records = bytes(idempotent(0))

        class Topic:
            name = "t"
            partition_data = [Part()]

        class Request:
            topic_data = [Topic()]
            transactional_id = None

        Request.acks = acks  # type: ignore[attr-defined]
        ctx = RequestContext(core, RequestHeader(0, 9, 1, "unit", 0), "127.0.0.1", 1, 1)
        result = await k00_produce.handle_produce(ctx, Request())
        if isinstance(result, DeferredResponse):
            await result.ready
        return answers[-1][0][1][0].error_code

    assert await produce(1) == ErrorCode.none  # written, not fsynced
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", failing(real_fsync, errno.EIO, lambda fd: True))
    assert await produce(-1) == ErrorCode.kafka_storage_error  # its retry
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert await produce(-1) == ErrorCode.none  # appended again (it was cut), now durable
    log = core.logs.get_log("t", 0)
    assert log is not None and log.log_end_offset == 2 and log.recovery_point == 2
    core.logs.close()
    core.lock.release()
