"""Produce (key 0): accepts versions 3-11, advertises 0-11.

Behaviour:
- Each partition's records must be exactly one RecordBatch v2 (Kafka's rule for v3+); its
  header and CRC-32C are checked, and its records only on compacted topics (cleanup.policy
  with compact): a record without a key is INVALID_RECORD with Kafka's message and, v8+, one
  record_errors entry per keyless record (its batch index); compressed batches are
  decompressed for that walk. Bad CRC or a torn batch:
  CORRUPT_MESSAGE; magic other than 2, or several batches: INVALID_RECORD; larger than the
  topic's max.message.bytes: MESSAGE_TOO_LARGE; unknown topic or partition:
  UNKNOWN_TOPIC_OR_PARTITION (Produce never auto-creates, as in Kafka).
- Offsets are assigned by patching the batch's base offset; the bytes are stored as sent.
- Idempotent producers: a duplicate batch answers with its original offsets and no error; a
  sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER; a stale epoch is INVALID_PRODUCER_EPOCH.
- Transactional batches: the producer's transaction must be Ongoing and hold the partition
  (AddPartitionsToTxn), else INVALID_TXN_STATE; a fenced (older) epoch is
  INVALID_PRODUCER_EPOCH, an unknown producer id INVALID_PRODUCER_ID_MAPPING; a request
  without transactional_id carrying one: TRANSACTIONAL_ID_AUTHORIZATION_FAILED (as Kafka).
- acks=0: no response at all. acks=1: answered once the write reached the OS. acks=-1 (all):
  answered after an fsync when `acks.all.fsync` is true (the default), one fsync round for
  every request waiting at that moment (group commit); the answer is deferred, so the
  connection keeps handling the requests behind it. Other acks: INVALID_REQUIRED_ACKS.
- A disk fault (no space, no permission, EIO, no file descriptor) on append or roll is rolled
  back and answered KAFKA_STORAGE_ERROR for that partition only (Kafka's retriable error; the
  connection stays open). A failed fsync cuts the log back to its last fsynced offset, and
  the acks=all requests past it are answered KAFKA_STORAGE_ERROR, never acknowledged.
Version notes: v0-2 are advertised but refused (the connection is closed), because librdkafka
< 2.11.1 turns compression off when Produce's advertised minimum is above 0.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from nerve import trace
from nerve.coordinator.transactions import transactions_of
from nerve.handlers import DeferredResponse, RawResponse, RequestContext, api
from nerve.protocol import records as rb
from nerve.protocol.errors import ErrorCode
from nerve.protocol.fastcodec import ProducePartitionResult, encode_produce_response
from nerve.security.acl import TOPIC, TRANSACTIONAL_ID, AclOperation, authorize
from nerve.security.quotas import enforcer
from nerve.storage.errors import (
    DuplicateSequenceError,
    InvalidProducerEpochError,
    KafkaStorageError,
    OutOfOrderSequenceError,
    RecordTooLargeError,
)
from nerve.storage.log import PartitionLog

log = logging.getLogger("nerve.produce")


# An append waiting for acks=all: (log, its end offset, the log's fault truncations then,
# the partition results holding it, the position there).
_Appended = tuple[PartitionLog, int, int, list[ProducePartitionResult], int]


def _append(
    ctx: RequestContext, topic: str, index: int, records: bytes | None, touched: list[_Appended],
    parts: list[ProducePartitionResult], transactional_id: str | None = None,
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
    first = headers[0][1]
    if plog.config.compacted and not first.is_control:
        refused = _keyless(plog, index, buf, first)
        if refused is not None:
            return refused
    if first.is_transactional:
        if transactional_id is None:  # Kafka's authorization check needs the id
            return ProducePartitionResult(index, ErrorCode.transactional_id_authorization_failed)
        code = _check_transactional(ctx, first.producer_id, first.producer_epoch, topic, index)
        if code is not ErrorCode.none:
            return ProducePartitionResult(index, code)
    try:
        info = plog.append(buf, headers, now_ms=ctx.now_ms())
    except DuplicateSequenceError as e:
        # Kafka answers a retried batch with the offsets it got the first time, and (acks=all)
        # only once the original is durable: it may still wait for its fsync, which may fail.
        if e.last_offset >= 0:
            touched.append((plog, e.last_offset + 1, plog.truncations, parts, len(parts)))
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
    except KafkaStorageError as e:
        return ProducePartitionResult(index, ErrorCode.kafka_storage_error, error_message=str(e))
    touched.append((plog, info.last_offset + 1, plog.truncations, parts, len(parts)))
    ctx.broker.waiters.notify(topic, index)
    ctx.broker.stats.produced(topic, len(buf), info.last_offset - info.base_offset + 1)
    return ProducePartitionResult(index, ErrorCode.none, info.base_offset, info.log_append_time,
                                  info.log_start_offset)


def _keyless(
    plog: PartitionLog, index: int, buf: bytearray, header: rb.BatchHeader
) -> ProducePartitionResult | None:
    """Kafka's LogValidator refuses records without a key on a compacted topic: INVALID_RECORD
    with one record error per such record and Kafka's texts. Only compacted topics pay for
    this walk over the records (decompressed first, as Kafka must)."""
    try:
        found = rb.keyless_records(rb.records_section(buf, header), header.records_count)
    except rb.CorruptRecordError as e:
        return ProducePartitionResult(index, ErrorCode.corrupt_message, error_message=str(e))
    except rb.RecordBatchError as e:
        return ProducePartitionResult(index, ErrorCode.invalid_record, error_message=str(e))
    if not found:
        return None
    why = f"Compacted topic cannot accept message without key in topic partition {plog.name}"
    shown = ", ".join(f"RecordError(batchIndex={i}, message='{why}')" for i in found[:3])
    return ProducePartitionResult(
        index, ErrorCode.invalid_record, log_start_offset=plog.log_start_offset,
        error_message=(f"One or more records have been rejected due to {len(found)} record "
                       f"errors in total, and only showing the first three errors at most: "
                       f"[{shown}]"),
        record_errors=tuple((i, why) for i in found))


def _check_transactional(
    ctx: RequestContext, producer_id: int, epoch: int, topic: str, index: int
) -> ErrorCode:
    """A transactional batch needs its producer's Ongoing transaction to hold the partition
    (INVALID_TXN_STATE otherwise, as Kafka's partition verification answers); an older epoch
    is INVALID_PRODUCER_EPOCH."""
    txn = transactions_of(ctx.broker)
    if txn is None:
        return ErrorCode.coordinator_not_available
    return txn.check_produce(producer_id, epoch, (topic, index))


@api(0, "Produce", 3, 11, advertised_min=0)
async def handle_produce(ctx: RequestContext, request: Any) -> Any:
    acks = request.acks
    touched: list[_Appended] = []
    responses: list[tuple[str, list[ProducePartitionResult]]] = []
    acct = ctx.broker.extensions.get("accounting")
    # Kafka: WRITE on the transactional id, else the whole request fails; WRITE per topic.
    tid = request.transactional_id
    denied_all = tid is not None and not authorize(ctx, AclOperation.WRITE, TRANSACTIONAL_ID, tid)
    for topic_data in request.topic_data:
        name = topic_data.name
        parts: list[ProducePartitionResult] = []
        denied = (ErrorCode.transactional_id_authorization_failed if denied_all else
                  None if authorize(ctx, AclOperation.WRITE, TOPIC, name) else
                  ErrorCode.topic_authorization_failed)
        if denied is not None:
            parts = [ProducePartitionResult(p.index, denied) for p in topic_data.partition_data]
        elif acks not in (0, 1, -1):
            parts = [ProducePartitionResult(p.index, ErrorCode.invalid_required_acks)
                     for p in topic_data.partition_data]
        else:
            for p in topic_data.partition_data:
                parts.append(_append(ctx, name, p.index, p.records, touched, parts,
                                     request.transactional_id))
        if acct is not None:  # who writes where, for the console's backbone map
            acct.record_produce(ctx.header.client_id, ctx.client_host, name,
                                sum(len(p.records or b"") for p in topic_data.partition_data))
        responses.append((name, parts))
    if trace.ENABLED:
        trace.mark("appended")
    # producer_byte_rate (Kafka counts the request's bytes): throttle_time_ms, and the
    # connection is muted that long.
    throttle = 0
    quotas = enforcer(ctx.broker)
    if quotas.store.quotas:  # nothing to count unless some quota is set
        ctx.throttle_ms = throttle = quotas.record(
            ctx.principal, ctx.header.client_id, "producer_byte_rate",
            sum(len(p.records or b"") for t in request.topic_data for p in t.partition_data),
            time.monotonic())
    if acks == 0:
        return None
    if acks == -1 and touched and ctx.broker.config.get_bool("acks.all.fsync"):
        # Joins the group commit now; the connection handles its next requests meanwhile, so
        # a client's pipelined produce requests share fsync rounds instead of queueing.
        logs = [t[0] for t in touched]
        if trace.ENABLED:  # a task, so that the round's stages mark this request's trace
            flushed = asyncio.ensure_future(ctx.broker.logs.flush(logs))
            return DeferredResponse(_after(flushed, ctx.version, responses, touched, throttle))
        round_done = ctx.broker.logs.join_round(logs)
        if round_done is None:  # every log closed meanwhile (deleted): nothing to wait for
            return _answer(ctx.version, responses, touched, throttle)
        # Answered from the round's callback: no task per request (bench/request_cost.py).
        answer: asyncio.Future[RawResponse] = asyncio.get_running_loop().create_future()
        round_done.add_done_callback(functools.partial(
            _answer_after_round, answer, ctx.version, responses, touched, throttle))
        return DeferredResponse(answer)
    return RawResponse([encode_produce_response(ctx.version, responses,
                                                throttle_time_ms=throttle)])


def _answer(
    version: int, responses: list[tuple[str, list[ProducePartitionResult]]],
    touched: list[_Appended], throttle: int,
) -> RawResponse:
    """The answer once the fsync round is over: a partition whose append the round did not
    make durable (its fsync failed and cut the log) is KAFKA_STORAGE_ERROR."""
    for plog, end_offset, truncations, parts, i in touched:
        if not plog.closed and not plog.acknowledged(end_offset, truncations):
            parts[i] = ProducePartitionResult(
                parts[i].index, ErrorCode.kafka_storage_error,
                error_message=f"{plog.name}: fsync failed; the append was rolled back")
    return RawResponse([encode_produce_response(version, responses, throttle_time_ms=throttle)])


def _answer_after_round(
    answer: asyncio.Future[RawResponse], version: int,
    responses: list[tuple[str, list[ProducePartitionResult]]], touched: list[_Appended],
    throttle: int, round_done: asyncio.Future[Any],
) -> None:
    if answer.done():  # the connection closed and dropped it
        return
    if round_done.cancelled():
        answer.cancel()
        return
    error = round_done.exception()
    if error is not None:
        answer.set_exception(error)
        return
    try:
        answer.set_result(_answer(version, responses, touched, throttle))
    except Exception as e:  # a nerve bug: the connection logs it and closes
        answer.set_exception(e)


async def _after(
    flushed: asyncio.Future[None], version: int,
    responses: list[tuple[str, list[ProducePartitionResult]]], touched: list[_Appended],
    throttle: int = 0,
) -> RawResponse:
    await flushed
    return _answer(version, responses, touched, throttle)
