"""Differential tests of transactions: the error code of every misuse, the last stable offset
and aborted_transactions in Fetch, ListOffsets under read_committed; the same raw requests to
nerve and to Apache Kafka 4.4.0, one expectation (see test_differential.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from nerve.protocol import records as rb
from tests.compat.conftest import Broker
from tests.compat.test_differential import create_topic
from tests.compat.wire import WireClient

pytestmark = [pytest.mark.compat, pytest.mark.slow]

NONE = 0
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
CONCURRENT_TRANSACTIONS = 51
RETRIABLE = {COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
             CONCURRENT_TRANSACTIONS}
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
INVALID_TRANSACTION_TIMEOUT = 50
PRODUCER_FENCED = 90
TRANSACTIONAL_ID_NOT_FOUND = 105
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53


def retry(fn: Callable[[], Any], code_of: Callable[[Any], int], timeout: float = 30) -> Any:
    """Kafka loads __transaction_state on first use: retry what clients retry."""
    deadline = time.monotonic() + timeout
    while True:
        resp = fn()
        if code_of(resp) not in RETRIABLE or time.monotonic() > deadline:
            return resp
        time.sleep(0.2)


def find_coordinator(c: WireClient, tid: str) -> None:
    """FindCoordinator key_type 1, as clients send first: Kafka creates __transaction_state
    on it and answers NOT_COORDINATOR to transaction requests until then."""
    resp = retry(lambda: c.call(10, 4, key_type=1, coordinator_keys=[tid]),
                 lambda r: int(r.coordinators[0].error_code), timeout=60)
    assert int(resp.coordinators[0].error_code) == NONE, resp


def init(c: WireClient, tid: str, timeout_ms: int = 60000, pid: int = -1,
         epoch: int = -1) -> tuple[int, int, int]:
    find_coordinator(c, tid)
    resp = retry(lambda: c.call(22, 4, transactional_id=tid, transaction_timeout=timeout_ms,
                                producer_id=pid, producer_epoch=epoch),
                 lambda r: int(r.error_code))
    return int(resp.error_code), int(resp.producer_id), int(resp.producer_epoch)


def add(c: WireClient, tid: str, pid: int, epoch: int, topic: str, partition: int = 0) -> int:
    resp = retry(lambda: c.call(24, 3, v3_and_below_transactional_id=tid,
                                v3_and_below_producer_id=pid, v3_and_below_producer_epoch=epoch,
                                v3_and_below_topics=[{"name": topic,
                                                      "partitions": [partition]}]),
                 lambda r: int(r.results_by_topic_v3_and_below[0]
                               .results_by_partition[0].partition_error_code))
    return int(resp.results_by_topic_v3_and_below[0].results_by_partition[0]
               .partition_error_code)


def end(c: WireClient, tid: str, pid: int, epoch: int, commit: bool) -> int:
    resp = retry(lambda: c.call(26, 3, transactional_id=tid, producer_id=pid,
                                producer_epoch=epoch, committed=commit),
                 lambda r: int(r.error_code))
    return int(resp.error_code)


def txn_batch(pid: int, epoch: int, seq: int, n: int = 2) -> bytes:
    return rb.build_batch([(None, b"t%d" % (seq + i)) for i in range(n)], producer_id=pid,
                          producer_epoch=epoch, base_sequence=seq, attributes=0x10,
                          timestamp_ms=int(time.time() * 1000))


def produce_raw(bootstrap: str, topic: str, batch: bytes, client: WireClient,
                transactional_id: str | None) -> tuple[int, int]:
    """A raw Produce v9 of one batch: (error_code, base_offset)."""
    resp = client.call(0, 9, transactional_id=transactional_id, acks=-1, timeout=10000,
                       topic_data=[{"name": topic, "partition_data": [
                           {"index": 0, "records": batch}]}])
    part = resp.responses[0].partition_responses[0]
    return int(part.error_code), int(part.base_offset)


def fetch_committed(c: WireClient, topic: str, offset: int = 0) -> tuple[int, int, list, bool]:
    """Raw Fetch v12, read_committed: (high watermark, LSO, aborted txns, has records)."""
    resp = c.call(1, 12, replica_id=-1, max_wait=0, min_bytes=1, max_bytes=1 << 20,
                  isolation_level=1, session_id=0, session_epoch=-1,
                  topics=[{"topic": topic, "partitions": [{
                      "partition": 0, "current_leader_epoch": -1, "fetch_offset": offset,
                      "last_fetched_epoch": -1, "log_start_offset": -1,
                      "partition_max_bytes": 1 << 20}]}],
                  forgotten_topics_data=[], rack_id="")
    p = resp.responses[0].partitions[0]
    aborted = [(int(a.producer_id), int(a.first_offset)) for a in (p.aborted_transactions or ())]
    return int(p.high_watermark), int(p.last_stable_offset), aborted, bool(p.records)


def latest(c: WireClient, topic: str, isolation: int) -> int:
    resp = c.call(2, 7, replica_id=-1, isolation_level=isolation, topics=[{
        "name": topic, "partitions": [{"partition_index": 0, "current_leader_epoch": -1,
                                       "timestamp": -1}]}])
    return int(resp.topics[0].partitions[0].offset)


def test_coordinator_error_codes(broker: Broker, unique: Callable[[str], str]) -> None:
    topic, tid = unique("txe"), unique("tid")
    create_topic(broker.bootstrap, topic)
    with WireClient(broker.bootstrap) as c:
        seen: dict[str, Any] = {}
        seen["timeout_too_long"] = init(c, tid, timeout_ms=900001)[0]
        code, pid, epoch = init(c, tid)
        seen["first_init"] = (code, epoch)
        seen["end_without_txn"] = end(c, tid, pid, epoch, True)
        seen["add_unknown_pid"] = add(c, tid, pid + 1000, epoch, topic)
        code, pid2, epoch2 = init(c, tid)
        seen["second_init"] = (code, pid2 == pid, epoch2)
        seen["add_stale_epoch"] = add(c, tid, pid, epoch, topic)
        seen["end_stale_epoch"] = end(c, tid, pid, epoch, False)
        seen["init_other_pid"] = init(c, tid, pid=pid + 1000, epoch=epoch2)[0]
        seen["add"] = add(c, tid, pid, epoch2, topic)
        seen["abort"] = end(c, tid, pid, epoch2, False)
        seen["abort_again"] = end(c, tid, pid, epoch2, False)
        seen["commit_after_abort"] = end(c, tid, pid, epoch2, True)
        described = c.call(65, 0, transactional_ids=[unique("nope")])
        seen["describe_unknown"] = int(described.transaction_states[0].error_code)
    assert seen == {
        "timeout_too_long": INVALID_TRANSACTION_TIMEOUT,
        "first_init": (NONE, 0),
        "end_without_txn": INVALID_TXN_STATE,
        "add_unknown_pid": INVALID_PRODUCER_ID_MAPPING,
        "second_init": (NONE, True, 1),
        "add_stale_epoch": PRODUCER_FENCED,
        "end_stale_epoch": PRODUCER_FENCED,
        "init_other_pid": PRODUCER_FENCED,
        "add": NONE,
        "abort": NONE,
        "abort_again": NONE,
        "commit_after_abort": INVALID_TXN_STATE,
        "describe_unknown": TRANSACTIONAL_ID_NOT_FOUND,
    }


def test_transactional_produce_errors(broker: Broker, unique: Callable[[str], str]) -> None:
    topic, tid = unique("txp"), unique("tid")
    create_topic(broker.bootstrap, topic)
    with WireClient(broker.bootstrap) as c:
        _, pid, epoch = init(c, tid)
        not_added = produce_raw(broker.bootstrap, topic, txn_batch(pid, epoch, 0), c, tid)[0]
        assert add(c, tid, pid, epoch, topic) == NONE
        ok = produce_raw(broker.bootstrap, topic, txn_batch(pid, epoch, 0), c, tid)
        _, _, epoch2 = init(c, tid)  # fences epoch `epoch`, aborting its transaction
        stale = produce_raw(broker.bootstrap, topic, txn_batch(pid, epoch, 2), c, tid)[0]
    assert (not_added, ok, stale) == (INVALID_TXN_STATE, (NONE, 0), INVALID_PRODUCER_EPOCH)
    assert epoch2 == epoch + 2  # one bump fences and aborts, one answers the new producer


def test_transactional_batch_without_transactional_id(broker: Broker,
                                                      unique: Callable[[str], str]) -> None:
    topic, tid = unique("txn"), unique("tid")
    create_topic(broker.bootstrap, topic)
    with WireClient(broker.bootstrap) as c:
        _, pid, epoch = init(c, tid)
        assert add(c, tid, pid, epoch, topic) == NONE
        code = produce_raw(broker.bootstrap, topic, txn_batch(pid, epoch, 0), c, None)[0]
    assert code == TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def test_lso_aborted_transactions_and_list_offsets(broker: Broker,
                                                   unique: Callable[[str], str]) -> None:
    topic, tid = unique("txl"), unique("tid")
    create_topic(broker.bootstrap, topic)
    with WireClient(broker.bootstrap) as c:
        _, pid, epoch = init(c, tid)
        assert add(c, tid, pid, epoch, topic) == NONE
        assert produce_raw(broker.bootstrap, topic, txn_batch(pid, epoch, 0), c, tid) == (0, 0)
        seen: dict[str, Any] = {"open": fetch_committed(c, topic),
                                "open_latest": (latest(c, topic, 1), latest(c, topic, 0))}
        assert end(c, tid, pid, epoch, False) == NONE
        deadline = time.monotonic() + 10  # Kafka writes markers asynchronously
        while fetch_committed(c, topic)[1] < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        seen["aborted"] = fetch_committed(c, topic)
        seen["aborted_latest"] = (latest(c, topic, 1), latest(c, topic, 0))
        assert add(c, tid, pid, epoch, topic) == NONE
        assert produce_raw(broker.bootstrap, topic, txn_batch(pid, epoch, 2), c, tid) == (0, 3)
        assert end(c, tid, pid, epoch, True) == NONE
        while fetch_committed(c, topic, 3)[1] < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        seen["committed_from_3"] = fetch_committed(c, topic, 3)
    assert seen == {
        "open": (2, 0, [], False),  # nothing below the LSO yet
        "open_latest": (0, 2),
        "aborted": (3, 3, [(pid, 0)], True),  # 2 records and the ABORT marker
        "aborted_latest": (3, 3),
        "committed_from_3": (6, 6, [], True),
    }
