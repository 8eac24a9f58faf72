"""TransactionCoordinator through the handlers (kio round trip): error codes per misuse, the
epoch rules, markers and the LSO in the partitions, and completion of a PrepareCommit found at
start. Real clients over TCP: tests/integration/test_transactions.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nerve.broker import BrokerCore
from nerve.config import BrokerConfig
from nerve.coordinator.transactions import TransactionCoordinator, TxnState
from nerve.handlers import load_handlers
from nerve.protocol.errors import ErrorCode as E
from nerve.protocol.records import build_batch, iter_batches
from tests.unit.test_admin_handlers import call

TXN = 0x10


async def _core(data: Path) -> BrokerCore:
    load_handlers()
    core = BrokerCore(data, BrokerConfig({"transaction.max.timeout.ms": "60000"}),
                      advertised_host="127.0.0.1", advertised_port=9092)
    core.load()
    await core.logs.start()
    if "t" not in core.logs.topics:
        core.logs.create_topic("t", 2)
    txn = TransactionCoordinator(core)
    await txn.start()
    core.extensions["transactions"] = txn
    return core


async def _close(core: BrokerCore) -> None:
    await core.extensions.pop("transactions").stop()
    await core.logs.stop()
    core.lock.release()


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[BrokerCore]:
    c = await _core(tmp_path / "data")
    yield c
    await _close(c)


async def init(core: BrokerCore, tid: str = "tx", version: int = 4, timeout: int = 10000,
               pid: int = -1, epoch: int = -1) -> Any:
    return await call(core, 22, version, {"transactional_id": tid, "transaction_timeout": timeout,
                                          "producer_id": pid, "producer_epoch": epoch})


async def add(core: BrokerCore, pid: int, epoch: int, version: int = 3, tid: str = "tx",
              partitions: tuple[int, ...] = (0,)) -> list[int]:
    r = await call(core, 24, version, {
        "v3_and_below_transactional_id": tid, "v3_and_below_producer_id": pid,
        "v3_and_below_producer_epoch": epoch,
        "v3_and_below_topics": [{"name": "t", "partitions": list(partitions)}]})
    return [p.partition_error_code for t in r.results_by_topic_v3_and_below
            for p in t.results_by_partition]


async def end(core: BrokerCore, pid: int, epoch: int, commit: bool, version: int = 3) -> int:
    r = await call(core, 26, version, {"transactional_id": "tx", "producer_id": pid,
                                       "producer_epoch": epoch, "committed": commit})
    return r.error_code


def produce(core: BrokerCore, pid: int, epoch: int, seq: int, partition: int = 0) -> int:
    plog = core.logs.get_log("t", partition)
    assert plog is not None
    buf = bytearray(build_batch([(None, b"v")], producer_id=pid, producer_epoch=epoch,
                                base_sequence=seq, attributes=TXN))
    return plog.append(buf, list(iter_batches(buf)), now_ms=0).base_offset


async def test_error_codes_of_misuse(core: BrokerCore) -> None:
    assert (await init(core, timeout=60001)).error_code == E.invalid_transaction_timeout
    assert (await init(core, timeout=0)).error_code == E.invalid_transaction_timeout
    first = await init(core)
    assert (first.error_code, first.producer_epoch) == (E.none, 0)
    pid = first.producer_id
    # No transaction yet: EndTxn is INVALID_TXN_STATE; an unknown id INVALID_PRODUCER_ID_MAPPING.
    assert await end(core, pid, 0, True) == E.invalid_txn_state
    assert await add(core, pid + 1, 0) == [E.invalid_producer_id_mapping]
    second = await init(core)  # a new instance: epoch 1 fences epoch 0
    assert (second.producer_id, second.producer_epoch) == (pid, 1)
    assert await add(core, pid, 0) == [E.producer_fenced]
    assert await add(core, pid, 0, version=1) == [E.invalid_producer_epoch]  # before KIP-588
    assert await end(core, pid, 0, True) == E.producer_fenced
    assert await end(core, pid, 0, True, version=1) == E.invalid_producer_epoch
    r = await call(core, 24, 3, {
        "v3_and_below_transactional_id": "tx", "v3_and_below_producer_id": pid,
        "v3_and_below_producer_epoch": 1,
        "v3_and_below_topics": [{"name": "t", "partitions": [0, 7]}]})
    codes = {p.partition_index: p.partition_error_code
             for t in r.results_by_topic_v3_and_below for p in t.results_by_partition}
    assert codes == {0: E.operation_not_attempted, 7: E.unknown_topic_or_partition}
    # KIP-360: only the current producer may re-initialise with its id and epoch (or retry
    # its last bump: epoch 1 again answers 2, as Kafka's lastProducerEpoch rule).
    bumped = await init(core, pid=pid, epoch=1)
    assert (bumped.error_code, bumped.producer_epoch) == (E.none, 2)
    retried = await init(core, pid=pid, epoch=1)
    assert (retried.error_code, retried.producer_epoch) == (E.none, 2)
    assert (await init(core, pid=pid, epoch=0)).error_code == E.producer_fenced
    assert (await init(core, pid=pid, epoch=0, version=3)).error_code == E.invalid_producer_epoch
    assert (await init(core, pid=pid + 5, epoch=2)).error_code == E.producer_fenced


async def test_produce_checks_and_markers_move_the_lso(core: BrokerCore) -> None:
    txn = core.extensions["transactions"]
    pid = (await init(core)).producer_id
    assert txn.check_produce(pid, 0, ("t", 0)) == E.invalid_txn_state  # not added yet
    assert await add(core, pid, 0, partitions=(0, 1)) == [E.none, E.none]
    assert txn.check_produce(pid, 0, ("t", 0)) == E.none
    plog = core.logs.get_log("t", 0)
    assert plog is not None
    first = produce(core, pid, 0, 0)
    produce(core, pid, 0, 1)
    assert plog.last_stable_offset == first < plog.high_watermark
    assert await end(core, pid, 0, False) == E.none
    assert txn.txns["tx"].state is TxnState.COMPLETE_ABORT
    assert plog.last_stable_offset == plog.high_watermark == 3  # 2 records + the marker
    assert plog.txn.aborted_between(0, 3) == [(pid, first)]
    assert await end(core, pid, 0, False) == E.none  # a retried abort
    assert await end(core, pid, 0, True) == E.invalid_txn_state
    other = core.logs.get_log("t", 1)
    assert other is not None and other.high_watermark == 1  # its marker, no data
    assert other.txn.aborted_between(0, 1) == []
    # A new instance: the zombie's epoch is refused on produce.
    await init(core)
    assert txn.check_produce(pid, 0, ("t", 0)) == E.invalid_producer_epoch


async def test_prepare_commit_found_at_start_is_completed(tmp_path: Path) -> None:
    core = await _core(tmp_path / "data")
    txn = core.extensions["transactions"]
    pid = (await init(core)).producer_id
    await add(core, pid, 0)
    produce(core, pid, 0, 0)
    meta = txn.txns["tx"]
    meta.state = TxnState.PREPARE_COMMIT  # as if killed after PrepareCommit was written
    await txn.log.write([meta])
    plog = core.logs.get_log("t", 0)
    assert plog is not None and plog.last_stable_offset == 0
    await _close(core)
    core = await _core(tmp_path / "data")
    try:
        meta = core.extensions["transactions"].txns["tx"]
        assert meta.state is TxnState.COMPLETE_COMMIT
        plog = core.logs.get_log("t", 0)
        assert plog is not None and plog.last_stable_offset == plog.high_watermark == 2
        assert plog.txn.aborted_between(0, 2) == []
    finally:
        await _close(core)


async def test_an_open_transaction_past_its_timeout_is_aborted(core: BrokerCore) -> None:
    txn = core.extensions["transactions"]
    pid = (await init(core, timeout=1000)).producer_id
    await add(core, pid, 0)
    produce(core, pid, 0, 0)
    assert await txn.abort_timed_out() == 0
    txn.txns["tx"].start_ms -= 5000
    assert await txn.abort_timed_out() == 1
    meta = txn.txns["tx"]
    assert (meta.state, meta.producer_epoch) == (TxnState.COMPLETE_ABORT, 1)  # fenced
    assert await end(core, pid, 0, True) == E.producer_fenced
    plog = core.logs.get_log("t", 0)
    assert plog is not None and plog.last_stable_offset == plog.high_watermark
    await asyncio.sleep(0)


async def test_idle_transactional_ids_expire_and_stay_forgotten(tmp_path: Path) -> None:
    core = await _core(tmp_path / "data")
    txn = core.extensions["transactions"]
    pid = (await init(core, tid="idle")).producer_id
    busy = (await init(core, tid="busy")).producer_id
    await call(core, 24, 3, {
        "v3_and_below_transactional_id": "busy", "v3_and_below_producer_id": busy,
        "v3_and_below_producer_epoch": 0,
        "v3_and_below_topics": [{"name": "t", "partitions": [0]}]})
    assert await txn.remove_expired() == 0  # 7 days by default
    txn.id_expiration_ms = 0
    assert await txn.remove_expired() == 1  # the Ongoing one stays
    assert set(txn.txns) == {"busy"} and pid not in txn.by_pid
    await _close(core)
    core = await _core(tmp_path / "data")
    try:
        assert set(core.extensions["transactions"].txns) == {"busy"}
        again = await init(core, tid="idle")
        assert (again.producer_id, again.producer_epoch) != (pid, 1)  # a fresh start
    finally:
        await _close(core)
