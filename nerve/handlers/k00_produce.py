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
  every request waiting at that moment (group commit); the answer is deferred, so the
  connection keeps handling the requests behind it. Other acks: INVALID_REQUIRED_ACKS.
Version notes: v0-2 are advertised but refused (the connection is closed), because librdkafka
< 2.11.1 turns compression off when Produce's advertised minimum is above 0.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nerve.handlers import DeferredResponse, RawResponse, RequestContext, api
from nerve.protocol import records as rb
from nerve.protocol.errors import ErrorCode
from nerve.protocol.fastcodec import ProducePartitionResult, encode_produce_response
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
) -> ProducePartitionResult:
    plog = ctx.broker.logs.get_log(topic, index)
    if plog is None:
        return ProducePartitionResult(index, ErrorCode.unknown_topic_or_partition)
    if not records:
        return ProducePartitionResult(index, ErrorCode.invalid_record,
                                      error_message="no record batch")
    max_bytes = plog.config.max_message_bytes
    if len(records) > max_bytes:
        return ProducePartitionResult(
            index, ErrorCode.message_too_large,
            error_message=f"batch of {len(records)} bytes exceeds max.message.bytes {max_bytes}",
        )
    buf = bytearray(records)
    try:
        headers = list(rb.iter_batches(buf))
        if len(headers) != 1:
            raise rb.InvalidRecordError("Produce v3+ carries exactly one record batch")
    except rb.CorruptRecordError as e:
        return ProducePartitionResult(index, ErrorCode.corrupt_message, error_message=str(e))
    except rb.RecordBatchError as e:  # magic != 2 and structural errors
        return ProducePartitionResult(index, ErrorCode.invalid_record, error_message=str(e))
    try:
        info = plog.append(buf, headers, now_ms=ctx.now_ms())
    except DuplicateSequenceError as e:
        # Kafka answers a retried batch with the offsets it got the first time.
        return ProducePartitionResult(index, ErrorCode.none, e.base_offset, e.log_append_time,
                                      plog.log_start_offset)
    except OutOfOrderSequenceError as e:
        return ProducePartitionResult(index, ErrorCode.out_of_order_sequence_number,
                                      error_message=str(e))
    except InvalidProducerEpochError as e:
        return ProducePartitionResult(index, ErrorCode.invalid_producer_epoch,
                                      error_message=str(e))
    except RecordTooLargeError as e:
        return ProducePartitionResult(index, ErrorCode.message_too_large, error_message=str(e))
    touched.append(plog)
    ctx.broker.waiters.notify(topic, index)
    return ProducePartitionResult(index, ErrorCode.none, info.base_offset, info.log_append_time,
                                  info.log_start_offset)


@api(0, "Produce", 3, 11, advertised_min=0)
async def handle_produce(ctx: RequestContext, request: Any) -> Any:
    acks = request.acks
    touched: list[PartitionLog] = []
    responses: list[tuple[str, list[ProducePartitionResult]]] = []
    acct = ctx.broker.extensions.get("accounting")
    for topic_data in request.topic_data:
        name = topic_data.name
        if acks not in (0, 1, -1):
            parts = [ProducePartitionResult(p.index, ErrorCode.invalid_required_acks)
                     for p in topic_data.partition_data]
        else:
            parts = [_append(ctx, name, p.index, p.records, touched)
                     for p in topic_data.partition_data]
        if acct is not None:  # who writes where, for the console's backbone map
            acct.record_produce(ctx.header.client_id, ctx.client_host, name,
                                sum(len(p.records or b"") for p in topic_data.partition_data))
        responses.append((name, parts))
    if acks == 0:
        return None
    response = RawResponse([encode_produce_response(ctx.version, responses)])
    if acks == -1 and touched and ctx.broker.config.get_bool("acks.all.fsync"):
        # Joins the group commit now; the connection handles its next requests meanwhile, so
        # a client's pipelined produce requests share fsync rounds instead of queueing.
        flushed = asyncio.ensure_future(ctx.broker.logs.flush(touched))
        return DeferredResponse(_after(flushed, response))
    return response


async def _after(flushed: asyncio.Future[None], response: RawResponse) -> RawResponse:
    await flushed
    return response
