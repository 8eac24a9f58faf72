"""WriteTxnMarkers (key 27), versions 1-2: write COMMIT/ABORT markers for a producer id to
partitions directly. Kafka's coordinators send it to partition leaders; the admin client sends
it for `kafka-transactions abort` (KIP-664) to close a hanging transaction.

Behaviour: for each marker and partition, a control batch is appended (and fsynced before the
answer); it closes the producer's open transaction in that partition (an ABORT enters the
aborted-transaction index) and moves the last stable offset on. An epoch older than the one the
partition knows for the producer: INVALID_PRODUCER_EPOCH; unknown partition:
UNKNOWN_TOPIC_OR_PARTITION. nerve's own coordinator writes its markers in-process, not through
this API. v0 (not flexible, removed in Kafka 4) is not served.
"""

from __future__ import annotations

from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import CLUSTER, AclOperation, authorize
from nerve.storage.log import PartitionLog


@api(27, "WriteTxnMarkers", 1, 2)
async def handle_write_txn_markers(ctx: RequestContext, request: Any) -> Any:
    logs = ctx.broker.logs
    now = ctx.now_ms()
    touched: list[PartitionLog] = []
    results = []
    allowed = authorize(ctx, AclOperation.CLUSTER_ACTION, CLUSTER)
    for marker in request.markers:
        pid, epoch = int(marker.producer_id), int(marker.producer_epoch)
        topics = []
        for t in marker.topics:
            parts = []
            for index in t.partition_indexes:
                plog = logs.get_log(t.name, int(index))
                code = ErrorCode.none
                if not allowed:
                    code = ErrorCode.cluster_authorization_failed
                elif plog is None:
                    code = ErrorCode.unknown_topic_or_partition
                elif pid < 0 or epoch < 0:
                    code = ErrorCode.invalid_request
                else:
                    known = plog.producer_state().get(pid)
                    if known is not None and epoch < known.epoch:
                        code = ErrorCode.invalid_producer_epoch
                    else:
                        plog.append_marker(pid, epoch, bool(marker.transaction_result),
                                           coordinator_epoch=int(marker.coordinator_epoch),
                                           now_ms=now)
                        touched.append(plog)
                        ctx.broker.waiters.notify(t.name, int(index))
                parts.append({"partition_index": int(index), "error_code": code})
            topics.append({"name": t.name, "partitions": parts})
        results.append({"producer_id": pid, "topics": topics})
    if touched:
        try:
            await logs.flush(touched)
        except OSError:
            for r in results:
                for t in r["topics"]:
                    for p in t["partitions"]:
                        if p["error_code"] is ErrorCode.none:
                            p["error_code"] = ErrorCode.kafka_storage_error
    return build(response_class(27, ctx.version), markers=results)
