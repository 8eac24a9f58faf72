"""The acks=all answer path: the fsync thread, and answers made from callbacks (issue 14).

A Produce with acks=all waits for its group-commit round. Its answer is built from the
round's done-callback, not by a task per request, and the round's fsyncs run on one
long-lived thread (nerve/storage/fsync_thread.py), not through asyncio.to_thread.
"""

from __future__ import annotations

import asyncio
import errno
import os
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from nerve.broker import BrokerCore
from nerve.config import BrokerConfig
from nerve.handlers import load_handlers
from nerve.handlers.dispatch import Dispatcher
from nerve.protocol import records as rb
from nerve.protocol.messages import ErrorCode, build, is_flexible, request_class
from nerve.storage.fsync_thread import FsyncThread
from tests.fuzz.corpus import frame_of


async def test_fsync_thread_runs_jobs_in_order_on_one_thread() -> None:
    worker = FsyncThread()
    seen: list[tuple[int, int]] = []

    def job(i: int) -> int:
        seen.append((i, threading.get_ident()))
        return i * 10

    futures = [worker.run(job, i) for i in range(20)]
    assert await asyncio.gather(*futures) == [i * 10 for i in range(20)]
    assert [i for i, _ in seen] == list(range(20))
    assert len({t for _, t in seen}) == 1 and seen[0][1] != threading.get_ident()
    worker.stop()


async def test_fsync_thread_hands_errors_back_and_restarts_after_stop() -> None:
    worker = FsyncThread()

    def fail() -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        await worker.run(fail)
    worker.stop()
    assert await worker.run(lambda: "again") == "again"  # a new thread
    worker.stop()


async def test_fsync_thread_result_for_a_cancelled_waiter_is_dropped() -> None:
    worker = FsyncThread()
    gate = threading.Event()
    errors: list[Any] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    fut = worker.run(gate.wait, 5)
    fut.cancel()
    gate.set()
    assert await worker.run(lambda: 1) == 1  # the first job's result arrived before this one
    await asyncio.sleep(0)
    assert fut.cancelled() and errors == []
    worker.stop()


def _produce(version: int, acks: int, topic: str = "t") -> bytes:
    body = build(request_class(0, version), transactional_id=None, acks=acks, timeout=30000,
                 topic_data=[{"name": topic, "partition_data": [
                     {"index": 0, "records": rb.build_batch([(None, b"v" * 100)] * 3)}]}])
    return frame_of(0, version, body, correlation_id=7)


def _answer(parts: list[bytes]) -> tuple[int, int, int]:
    """(correlation id, error code, base offset) of a one-partition ProduceResponse v9."""
    data = b"".join(parts)
    assert struct.unpack_from(">i", data)[0] == len(data) - 4
    correlation_id = struct.unpack_from(">i", data, 4)[0]
    # header tag byte, topics count, name "t", partitions count, then index + error + offset
    pos = 4 + 4 + 1 + 1 + 2 + 1
    _index, error, base = struct.unpack_from(">ihq", data, pos)
    return correlation_id, error, base


@pytest.fixture
async def core(tmp_path: Path) -> Any:
    load_handlers()
    c = BrokerCore(tmp_path / "data", BrokerConfig({}), advertised_host="127.0.0.1",
                   advertised_port=9092)
    c.load()
    await c.logs.start()
    c.logs.create_topic("t", 1)
    yield c
    await c.logs.stop()


async def test_acks_all_answer_is_a_future_not_a_task(core: BrokerCore) -> None:
    assert is_flexible(0, 9)
    dispatcher = Dispatcher(core)
    tasks_before = len(asyncio.all_tasks())
    answers = [await dispatcher.handle(_produce(9, -1), "127.0.0.1", 1, 1) for _ in range(5)]
    assert all(isinstance(a, asyncio.Future) and not isinstance(a, asyncio.Task)
               for a in answers)
    # At most the group commit's own round task runs beside the test: none per request.
    assert len(asyncio.all_tasks()) - tasks_before <= 1
    results = [_answer(await a) for a in answers]  # type: ignore[misc]
    assert results == [(7, 0, 3 * i) for i in range(5)]
    plog = core.logs.get_log("t", 0)
    assert plog is not None and plog.recovery_point == 15  # answered only once fsynced


async def test_acks_all_after_a_failed_fsync_is_a_storage_error(
    core: BrokerCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher = Dispatcher(core)
    assert _answer(await await_answer(dispatcher, _produce(9, -1)))[1] == 0
    real_fsync = os.fsync

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    _, error, _ = _answer(await await_answer(dispatcher, _produce(9, -1)))
    assert error == ErrorCode.kafka_storage_error
    monkeypatch.setattr(os, "fsync", real_fsync)
    _, error, base = _answer(await await_answer(dispatcher, _produce(9, -1)))
    assert (error, base) == (0, 3)  # the failed append was cut: its offsets are reused


async def await_answer(dispatcher: Dispatcher, frame: bytes) -> list[bytes]:
    answer = await dispatcher.handle(frame, "127.0.0.1", 1, 1)
    if isinstance(answer, asyncio.Future):
        answer = await answer
    assert answer is not None
    return answer  # type: ignore[return-value]
