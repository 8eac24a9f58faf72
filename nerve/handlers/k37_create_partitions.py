"""CreatePartitions (key 37), versions 0-3.

Behaviour: raises a topic's partition count to `count`. A count that is not above the current
one is INVALID_PARTITIONS with Kafka's message; an unknown topic UNKNOWN_TOPIC_OR_PARTITION; a
topic named twice in one request one INVALID_REQUEST result (as Kafka). Messages are Kafka's.
Assignments, when given, must list one entry per new partition, each naming exactly this
node, else INVALID_REPLICA_ASSIGNMENT.
validate_only checks without changing anything. Existing partitions keep their data; new ones
start empty at offset 0. Growing past the broker's `max.partitions` is POLICY_VIOLATION (as
CreateTopics), and so is adding more than 10,000 partitions in one request (with Kafka 4.4's
message); new partitions whose files cannot
be created are removed again and the topic keeps its count: KAFKA_STORAGE_ERROR.
Known gaps: the request timeout is ignored (the change is synchronous).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from nerve import heap
from nerve.handlers import RequestContext, api
from nerve.handlers.k19_create_topics import AdminError, check_assignments
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import TOPIC, AclOperation, authorize
from nerve.storage.errors import (
    InvalidPartitionsError,
    LogCreationError,
    PartitionLimitError,
    UnknownTopicError,
)

log = logging.getLogger("nerve.admin")

# Kafka's QuorumController.MAX_RECORDS_PER_USER_OP: one record per new partition.
MAX_NEW_PARTITIONS = 10_000


def _grow(ctx: RequestContext, t: Any, validate_only: bool) -> None:
    if not authorize(ctx, AclOperation.ALTER, TOPIC, t.name):
        raise AdminError(ErrorCode.topic_authorization_failed, "Topic authorization failed.")
    info = ctx.broker.logs.topics.get(t.name)
    if info is None:  # Kafka 4.4 gives no message here
        raise AdminError(ErrorCode.unknown_topic_or_partition, None)
    current = info.num_partitions
    if t.count == current:
        raise AdminError(ErrorCode.invalid_partitions,
                         f"Topic already has {current} partition(s).")
    if t.count < current:
        raise AdminError(ErrorCode.invalid_partitions,
                         f"The topic {t.name} currently has {current} partition(s); {t.count} "
                         "would not be an increase.")
    if t.count - current > MAX_NEW_PARTITIONS:
        # Kafka's controller refuses more than 10,000 new partitions in one request this way.
        raise AdminError(ErrorCode.policy_violation,
                         "Excessively large number of additional partitions per request.")
    if t.assignments is not None:
        if len(t.assignments) != t.count - current:
            raise AdminError(ErrorCode.invalid_replica_assignment,
                             f"Attempted to add {t.count - current} additional partition(s), "
                             f"but only {len(t.assignments)} assignment(s) were specified.")
        check_assignments(ctx.broker.node_id, [a.broker_ids for a in t.assignments])
    try:
        if validate_only:
            ctx.broker.logs.check_partition_limit(t.count - current)
            return
        ctx.broker.logs.create_partitions(t.name, t.count)
    except UnknownTopicError as e:
        raise AdminError(ErrorCode.unknown_topic_or_partition, str(e)) from None
    except InvalidPartitionsError as e:
        raise AdminError(ErrorCode.invalid_partitions, str(e)) from None
    except PartitionLimitError as e:
        raise AdminError(ErrorCode.policy_violation, str(e)) from None
    except LogCreationError as e:
        raise AdminError(ErrorCode.kafka_storage_error, str(e)) from None
    log.info("topic %s now has %d partitions", t.name, t.count)


@api(37, "CreatePartitions", 0, 3)
async def handle_create_partitions(ctx: RequestContext, request: Any) -> Any:
    names = Counter(t.name for t in request.topics)
    results = []
    answered: set[str] = set()
    for t in request.topics:
        if t.name in answered:
            continue  # Kafka answers a duplicated name once
        answered.add(t.name)
        result: dict[str, Any] = {"name": t.name, "error_code": ErrorCode.none,
                                  "error_message": None}
        try:
            if names[t.name] > 1:
                raise AdminError(ErrorCode.invalid_request, "Duplicate topic name.")
            _grow(ctx, t, request.validate_only)
        except AdminError as e:
            result.update(error_code=e.code, error_message=e.message)
        results.append(result)
    if not request.validate_only and sum(t.count for t in request.topics) >= \
            heap.SETTLE_MIN_PARTITIONS:
        heap.settle("partitions created")  # their logs: out of the GC's way
    return build(response_class(37, ctx.version), throttle_time=0, results=results)
