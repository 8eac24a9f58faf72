"""The hand-written hot-path encoders produce exactly the bytes kio's generated writers do."""

from __future__ import annotations

import uuid

import pytest

from nerve.protocol.fastcodec import (
    FetchPartitionData,
    ProducePartitionResult,
    encode_fetch_response,
    encode_produce_response,
)
from nerve.protocol.messages import build, encode_response, response_class
from nerve.protocol.records import build_batch


@pytest.mark.parametrize("version", range(3, 12))
def test_produce_response_matches_kio(version: int) -> None:
    parts = [
        ProducePartitionResult(0, 0, 42, -1, 7),
        ProducePartitionResult(3, 45, error_message="sequence gap"),
        ProducePartitionResult(1, 0, 9, 1_700_000_000_123, 0),
        ProducePartitionResult(2, 87, log_start_offset=5, error_message="keyless",
                               record_errors=((0, "no key"), (3, None))),
    ]
    ours = encode_produce_response(version, [("orders", parts), ("clicks", [])])
    theirs = encode_response(build(
        response_class(0, version),
        throttle_time=0,
        responses=[
            {"name": "orders", "partition_responses": [
                {"index": p.index, "error_code": p.error_code, "base_offset": p.base_offset,
                 "log_append_time": p.log_append_time, "log_start_offset": p.log_start_offset,
                 "record_errors": [{"batch_index": i, "batch_index_error_message": m}
                                   for i, m in p.record_errors],
                 "error_message": p.error_message}
                for p in parts
            ]},
            {"name": "clicks", "partition_responses": []},
        ],
    ))
    assert ours == theirs


@pytest.mark.parametrize("version", range(4, 17))
def test_fetch_response_matches_kio(version: int) -> None:
    batch = build_batch([(b"k", b"v"), (None, b"w")])
    topic_id = uuid.UUID(int=0x1234)
    topic: str | uuid.UUID = topic_id if version >= 13 else "orders"
    data = [
        FetchPartitionData(0, 0, 10, 10, 0, [batch[:20], batch[20:]], len(batch)),
        FetchPartitionData(1, 1, 5, 5, 2, (), 0, aborted_transactions=[(7, 3)]),
    ]
    ours = b"".join(encode_fetch_response(version, [(topic, data)]))

    def part(p: FetchPartitionData, records: bytes) -> dict:
        aborted = (None if p.aborted_transactions is None else
                   [{"producer_id": a, "first_offset": b} for a, b in p.aborted_transactions])
        return {"partition_index": p.partition, "error_code": p.error_code,
                "high_watermark": p.high_watermark, "last_stable_offset": p.last_stable_offset,
                "log_start_offset": p.log_start_offset, "aborted_transactions": aborted,
                "preferred_read_replica": -1, "records": records}

    theirs = encode_response(build(
        response_class(1, version),
        throttle_time=0, error_code=0, session_id=0,
        responses=[{"topic": "orders", "topic_id": topic_id,
                    "partitions": [part(data[0], batch), part(data[1], b"")]}],
    ))
    assert ours == theirs
