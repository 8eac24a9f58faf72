"""LogManager: catalog, topic lifecycle, group commit, background policy, clean marker."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from nerve.config import BrokerConfig, ConfigError
from nerve.protocol.records import build_batch, iter_batches
from nerve.storage import (
    DataDirLockedError,
    InvalidPartitionsError,
    InvalidTopicError,
    LogManager,
    PartitionLog,
    TopicExistsError,
    UnknownTopicError,
)
from nerve.storage.files import CATALOG_FILE, CLEAN_SHUTDOWN_FILE


def append(log: PartitionLog, n: int = 1, now_ms: int = 1_000) -> int:
    buf = bytearray(build_batch([(None, b"v")] * n, timestamp_ms=now_ms))
    return log.append(buf, list(iter_batches(buf)), now_ms=now_ms).base_offset


def manager(path: Path, **broker: str) -> LogManager:
    m = LogManager(path, BrokerConfig(dict(broker)))
    m.load()
    return m


def test_catalog_persists_across_reopen(tmp_path: Path) -> None:
    m = manager(tmp_path)
    info = m.create_topic("orders", 3, {"retention.ms": "1000"})
    m.create_topic("payments", 1)
    assert info.config.retention_ms == 1000 and info.num_partitions == 3
    for p in range(3):
        append(m.get_log("orders", p) or pytest.fail("no log"), 2)
    m.close()
    assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    catalog = json.loads((tmp_path / CATALOG_FILE).read_text())
    assert {t["name"] for t in catalog["topics"]} == {"orders", "payments"}

    m2 = manager(tmp_path)
    assert m2.clean_load is True and not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    again = m2.topics["orders"]
    assert again.topic_id == info.topic_id and again.overrides == {"retention.ms": "1000"}
    assert m2.topic_by_id(info.topic_id) is again and m2.topic_by_id(uuid.uuid4()) is None
    assert [lg.log_end_offset for lg in m2.all_logs() if lg.topic == "orders"] == [2, 2, 2]
    assert m2.get_log("orders", 3) is None
    m2.close()


def test_create_topic_validation(tmp_path: Path) -> None:
    m = manager(tmp_path)
    m.create_topic("a.b", 1)
    for bad in ("", ".", "..", "x" * 250, "bad/name", "sp ace", "ünï"):
        with pytest.raises(InvalidTopicError):
            m.create_topic(bad, 1)
    m.create_topic("x" * 249, 1)
    with pytest.raises(InvalidTopicError):
        m.create_topic("a_b", 1)  # collides with a.b in metric names, as Kafka refuses
    with pytest.raises(TopicExistsError):
        m.create_topic("a.b", 2)
    with pytest.raises(InvalidPartitionsError):
        m.create_topic("zero", 0)
    with pytest.raises(ConfigError):
        m.create_topic("cfg", 1, {"no.such.config": "1"})
    assert set(m.topics) == {"a.b", "x" * 249}
    m.close()


def test_create_partitions_and_alter_config(tmp_path: Path) -> None:
    m = manager(tmp_path)
    m.create_topic("t", 2)
    with pytest.raises(InvalidPartitionsError):
        m.create_partitions("t", 2)
    with pytest.raises(UnknownTopicError):
        m.create_partitions("nope", 3)
    m.create_partitions("t", 4)
    assert m.topics["t"].num_partitions == 4 and m.get_log("t", 3) is not None
    m.alter_topic_config("t", {"segment.bytes": "100"})
    assert all(lg.config.segment_bytes == 100 for lg in m.all_logs())
    log0 = m.get_log("t", 0)
    assert log0 is not None
    append(log0)
    append(log0)
    assert len(log0.segments) == 2  # the new config applies to later rolls
    with pytest.raises(ConfigError):
        m.alter_topic_config("t", {"segment.bytes": "big"})
    m.close()
    m2 = manager(tmp_path)
    assert m2.topics["t"].num_partitions == 4
    assert m2.topics["t"].overrides == {"segment.bytes": "100"}
    assert m2.get_log("t", 0).config.segment_bytes == 100  # type: ignore[union-attr]
    m2.close()


async def test_delete_topic_in_background(tmp_path: Path) -> None:
    m = manager(tmp_path)
    gone_id = m.create_topic("gone", 2, {"file.delete.delay.ms": "0"}).topic_id
    m.create_topic("kept", 1)
    log = m.get_log("gone", 0)
    assert log is not None
    append(log, 3)
    region = log.read(0, 1000).regions[0]
    m.delete_topic("gone")
    with pytest.raises(UnknownTopicError):
        m.delete_topic("gone")
    assert "gone" not in m.topics and m.get_log("gone", 0) is None
    assert not (tmp_path / "gone-0").exists()
    assert len(list(tmp_path.glob("gone-0.*-delete"))) == 1
    assert region.read_bytes()  # still readable until the reaper runs
    await m.reaper.run_due()
    assert not list(tmp_path.glob("gone-*"))
    # The name is free again, with a new id and empty logs.
    again = m.create_topic("gone", 1)
    assert again.topic_id != gone_id and m.get_log("gone", 0).log_end_offset == 0  # type: ignore
    m.close()
    assert set(manager(tmp_path).topics) == {"gone", "kept"}


async def test_group_commit_few_rounds(tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from nerve.storage import log_manager as lm

    m = manager(tmp_path)
    m.create_topic("t", 4)
    logs = list(m.all_logs())
    jobs: list[int] = []  # tokens per thread job
    gate = threading.Event()
    original = lm._run_tokens

    def gated_run(tokens: list[lm.FlushToken]) -> tuple[list[OSError | None], float, float]:
        jobs.append(len(tokens))
        gate.wait(5)
        return original(tokens)

    monkeypatch.setattr(lm, "_run_tokens", gated_run)

    async def producer(i: int) -> None:
        lg = logs[i % 4]
        append(lg)
        await m.flush([lg])
        assert lg.unflushed_messages() == 0 or lg.recovery_point >= 1

    first = [asyncio.create_task(producer(i)) for i in range(50)]
    await asyncio.sleep(0.05)  # round 1 (all 50) is now blocked in its thread
    assert m.fsync_rounds == 1
    second = [asyncio.create_task(producer(i)) for i in range(50, 100)]
    await asyncio.sleep(0.05)
    assert m.fsync_rounds == 1 and not any(t.done() for t in first + second)
    gate.set()
    await asyncio.gather(*first, *second)
    assert m.fsync_rounds == 2  # 100 callers, 2 rounds: the second wave shared one
    assert jobs == [4, 4]  # one token per log per round, one thread job per round
    assert all(lg.unflushed_messages() == 0 and lg.recovery_point == lg.log_end_offset
               for lg in logs)
    await m.flush([])  # nothing to wait for
    await m.flush(logs)  # already durable: no fsync round
    assert m.fsync_rounds == 2
    await m.stop()


async def test_flush_policy_and_retention_tasks(tmp_path: Path) -> None:
    m = LogManager(tmp_path, BrokerConfig({"log.retention.check.interval.ms": "50"}))
    await m.start()
    m.create_topic("msgs", 1, {"flush.messages": "3"})
    m.create_topic("ms", 1, {"flush.ms": "50"})
    m.create_topic("old", 1, {"segment.bytes": "100", "retention.ms": "1000",
                              "file.delete.delay.ms": "0"})
    by_msgs, by_ms, old = (m.get_log(t, 0) for t in ("msgs", "ms", "old"))
    assert by_msgs and by_ms and old
    append(by_msgs, 1)
    append(by_ms, 1)
    for _ in range(5):
        append(old, 1, now_ms=1_000)  # ancient timestamps: retention deletes them
    await asyncio.sleep(0.3)
    assert by_msgs.unflushed_messages() == 1  # below flush.messages
    assert by_ms.unflushed_messages() == 0  # flushed by flush.ms
    append(by_msgs, 3)
    deadline = time.monotonic() + 2
    while (by_msgs.unflushed_messages() or list(tmp_path.glob("old-0/*.deleted"))
           or len(old.segments) > 1) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert by_msgs.unflushed_messages() == 0
    # All five expired, the active segment too (Kafka rolls an empty one and deletes it).
    assert len(old.segments) == 1 and old.log_start_offset == old.log_end_offset == 5
    assert not list(tmp_path.glob("old-0/*.deleted"))
    await m.stop()
    assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()


async def test_unclean_restart_recovers_through_manager(tmp_path: Path) -> None:
    m = manager(tmp_path)
    m.create_topic("t", 1)
    log = m.get_log("t", 0)
    assert log is not None
    for _ in range(3):
        append(log, 2)
    await m.flush([log])
    path = log.active_segment.path
    # Simulate a crash: no stop(), a torn tail, no clean marker.
    with open(path, "ab") as f:
        f.write(b"\x00" * 30)
    assert m.lock is not None
    m.lock.release()  # the process died: the kernel drops its lock
    m2 = manager(tmp_path)
    assert m2.clean_load is False
    log2 = m2.get_log("t", 0)
    assert log2 is not None and log2.log_end_offset == 6
    assert os.path.getsize(path) == log2.size_bytes
    assert append(log2) == 6
    await m2.stop()
    m3 = manager(tmp_path)
    assert m3.clean_load is True and m3.get_log("t", 0).log_end_offset == 7  # type: ignore
    m3.close()


def test_second_manager_on_a_locked_dir_is_refused(tmp_path: Path) -> None:
    m = manager(tmp_path)
    with pytest.raises(DataDirLockedError, match=f"pid {os.getpid()}"):
        manager(tmp_path)
    m.close()
    assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    manager(tmp_path).close()  # released by close()


async def test_recovery_checkpoint_follows_fsync_rounds(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import nerve.storage.log_manager as lm

    monkeypatch.setattr(lm, "RECOVERY_CHECKPOINT_MIN_INTERVAL_S", 0.2)
    m = manager(tmp_path)
    m.create_topic("t", 2)
    await m.start()
    path = tmp_path / lm.RECOVERY_POINT_FILE

    async def checkpoint_says(line: str) -> list[str]:
        for _ in range(100):
            lines = path.read_text().splitlines() if path.exists() else []
            if line in lines:
                return lines
            await asyncio.sleep(0.02)
        raise AssertionError(f"{path} never said {line!r}")

    lg = m.get_log("t", 1)
    assert lg is not None
    for n in range(1, 6):  # rounds 0.2 s apart at most: every one lands, none written twice
        append(lg, 3)
        await m.flush([lg])
        lines = await checkpoint_says(f"t 1 {3 * n}")
        assert lines[:2] == ["0", "2"] and "t 0 0" in lines  # Kafka's format
    assert not (tmp_path / (lm.RECOVERY_POINT_FILE + ".tmp")).exists()
    await m.stop()
