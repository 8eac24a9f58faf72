"""Produce (key 0): accepts versions 3-11, advertises 0-11.

Behaviour:
- Each partition's records must be exactly one RecordBatch v2 (Kafka's rule for v3+); its
  header and CRC-32C are checked, never its records. Bad CRC or a torn batch:
  CORRUPT_MESSAGE; magic other than 2, or several batches: INVALID_RECORD; larger than the
  topic's max.message.bytes: MESSAGE_TOO_LARGE; unknown topic or partition:
  UNKNOWN_TOPIC_OR_PARTITION (Produce never auto-creates, as in Kafka).
- Offsets are assigned by patching the batch's base offset; the bytes are stored as sent.
- Idempotent producers: a duplicate batch answers with its original offsets and no error; a
  sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER; a stale epoch is INVALID_PRODUCER_EPOCH.
- acks=0: no response at all. acks=1: answered once the write reached the OS. acks=-1 (all):
  answered after an fsync when `acks.all.fsync` is true (the default), one fsync round for
  every request waiting at that moment (group commit). Other acks: INVALID_REQUIRED_ACKS.
Version notes: v0-2 are advertised but refused (the connection is closed), because librdkafka
< 2.11.1 turns compression off when Produce's advertised minimum is above 0.
"""

from __future__ import annotations

import logging
from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol import records as rb
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.storage.errors import (
    DuplicateSequenceError,
    InvalidProducerEpochError,
    OutOfOrderSequenceError,
    RecordTooLargeError,
)
from nerve.storage.log import PartitionLog

log = logging.getLogger("nerve.produce")


def _append(
    ctx: RequestContext, topic: str, index: int, records: bytes | None, touched: list[PartitionLog]
) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "base_offset": -1, "log_append_time": -1,
                           "log_start_offset": -1, "record_errors": (), "error_message": None}
    plog = ctx.broker.logs.get_log(topic, index)
    if plog is None:
        out["error_code"] = ErrorCode.unknown_topic_or_partition
        return out
    if not records:
        out["error_code"] = ErrorCode.invalid_record
        out["error_message"] = "no record batch"
        return out
    if len(records) > plog.config.max_message_bytes:
        out["error_code"] = ErrorCode.message_too_large
        out["error_message"] = (
            f"batch of {len(records)} bytes exceeds max.message.bytes "
            f"{plog.config.max_message_bytes}"
        )
        return out
    buf = bytearray(records)
    try:
        headers = list(rb.iter_batches(buf))
        if len(headers) != 1:
            raise rb.InvalidRecordError("Produce v3+ carries exactly one record batch")
    except rb.CorruptRecordError as e:
        out["error_code"] = ErrorCode.corrupt_message
        out["error_message"] = str(e)
        return out
    except rb.RecordBatchError as e:  # magic != 2 and structural errors
        out["error_code"] = ErrorCode.invalid_record
        out["error_message"] = str(e)
        return out
    try:
        info = plog.append(buf, headers, now_ms=ctx.now_ms())
    except DuplicateSequenceError as e:
        out.update(error_code=ErrorCode.none, base_offset=e.base_offset,
                   log_append_time=e.log_append_time, log_start_offset=plog.log_start_offset)
        return out
    except OutOfOrderSequenceError as e:
        out["error_code"] = ErrorCode.out_of_order_sequence_number
        out["error_message"] = str(e)
        return out
    except InvalidProducerEpochError as e:
        out["error_code"] = ErrorCode.invalid_producer_epoch
        out["error_message"] = str(e)
        return out
    except RecordTooLargeError as e:
        out["error_code"] = ErrorCode.message_too_large
        out["error_message"] = str(e)
        return out
    touched.append(plog)
    ctx.broker.waiters.notify(topic, index)
    out.update(error_code=ErrorCode.none, base_offset=info.base_offset,
               log_append_time=info.log_append_time, log_start_offset=info.log_start_offset)
    return out


@api(0, "Produce", 3, 11, advertised_min=0)
async def handle_produce(ctx: RequestContext, request: Any) -> Any:
    acks = request.acks
    touched: list[PartitionLog] = []
    responses = []
    for topic_data in request.topic_data:
        name = topic_data.name
        if acks not in (0, 1, -1):
            parts = [{"index": p.index, "error_code": ErrorCode.invalid_required_acks,
                      "base_offset": -1, "log_append_time": -1, "log_start_offset": -1}
                     for p in topic_data.partition_data]
        else:
            parts = [_append(ctx, name, p.index, p.records, touched)
                     for p in topic_data.partition_data]
        responses.append({"name": name, "partition_responses": parts})
    if acks == 0:
        return None
    if acks == -1 and touched and ctx.broker.config.get_bool("acks.all.fsync"):
        await ctx.broker.logs.flush(touched)
    return build(response_class(0, ctx.version), responses=responses, throttle_time=0)
