"""CreateTopics (key 19), versions 2-7.

Behaviour:
- num_partitions -1 takes the broker's `num.partitions`; 0 or below -1 is INVALID_PARTITIONS.
- replication_factor -1 or 1 is fine; 0 or below -1 is INVALID_REPLICATION_FACTOR, and so is
  anything above 1, with Kafka's message (this is a single node).
- Manual assignments are accepted when every partition names exactly this node and the
  partition indexes are 0..n-1 (then num_partitions and replication_factor must be -1, else
  INVALID_REQUEST); anything else is INVALID_REPLICA_ASSIGNMENT.
- Configs are checked against `nerve.config.TOPIC_CONFIGS`: unknown names, bad or null values
  are INVALID_CONFIG with an error message. Bad names: INVALID_TOPIC_EXCEPTION; an existing
  topic: TOPIC_ALREADY_EXISTS; a name given twice in one request: one INVALID_REQUEST result.
  Error messages are Kafka 4.4's (admin clients show them; frameworks match on some).
- Partition limits, both POLICY_VIOLATION: more than 10,000 partitions in one request (Kafka's
  MAX_PARTITIONS_PER_BATCH, with its message; every topic of the request fails), and a topic
  that would take the broker past `max.partitions` (nerve's cap, KIP-578's name; default 4 x
  the open file limit). Creation is all or nothing: a partition whose files cannot be created
  (disk full, EMFILE) removes the topic's other new partitions and answers
  KAFKA_STORAGE_ERROR.
- validate_only runs every check, creates nothing, and still reports the would-be partitions,
  replication factor and configs (v5+), with a zero topic id (v7).
- v5+ results carry num_partitions, replication_factor (1) and the topic's configs with their
  sources (the DescribeConfigs helper in k32); v7 the topic id.
Known gaps: the request timeout is ignored (creation is synchronous); no CreateTopicPolicy.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from nerve import heap
from nerve.config import ConfigError, TopicConfig, validate_topic_configs
from nerve.handlers import RequestContext, api
from nerve.handlers.k32_describe_configs import topic_config_entries
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import ZERO_UUID, build, response_class
from nerve.security.acl import CLUSTER, TOPIC, AclOperation, authorize
from nerve.storage.errors import (
    InvalidPartitionsError,
    InvalidTopicError,
    LogCreationError,
    PartitionLimitError,
    TopicExistsError,
)

log = logging.getLogger("nerve.admin")

# Kafka's ReplicationControlManager.MAX_PARTITIONS_PER_BATCH.
MAX_PARTITIONS_PER_REQUEST = 10_000


class AdminError(Exception):
    """A per-topic rejection: the error code and message for that topic's result."""

    def __init__(self, code: ErrorCode, message: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def replication_error(replicas: int) -> AdminError:
    return AdminError(
        ErrorCode.invalid_replication_factor,
        f"Unable to replicate the partition {replicas} time(s): The target replication factor "
        f"of {replicas} cannot be reached because only 1 broker(s) are registered or some "
        "brokers have all their log directories cordoned.",
    )


def check_assignments(node_id: int, assignments: list[tuple[int, ...]]) -> None:
    """Manual replica assignments: only 'every partition on this node' can be honoured.
    Kafka's checks and messages (ReplicationControlManager), this node being the only one."""
    for replicas in assignments:
        if not replicas:
            raise AdminError(ErrorCode.invalid_replica_assignment,
                             "The manual partition assignment includes an empty replica list.")
        previous = None
        for broker in sorted(replicas):
            if broker != node_id:
                raise AdminError(ErrorCode.invalid_replica_assignment,
                                 f"The manual partition assignment includes broker {broker}, "
                                 "but no such broker is registered.")
            if broker == previous:
                raise AdminError(ErrorCode.invalid_replica_assignment,
                                 f"The manual partition assignment includes the broker "
                                 f"{broker} more than once.")
            previous = broker


def _partition_count(ctx: RequestContext, t: Any) -> int:
    node = ctx.broker.node_id
    if t.assignments:
        if t.replication_factor != -1:
            raise AdminError(ErrorCode.invalid_request, "A manual partition assignment was "
                             "specified, but replication factor was not set to -1.")
        if t.num_partitions != -1:
            raise AdminError(ErrorCode.invalid_request, "A manual partition assignment was "
                             "specified, but numPartitions was not set to -1.")
        indexes = sorted(a.partition_index for a in t.assignments)
        if indexes != list(range(len(indexes))):
            raise AdminError(ErrorCode.invalid_replica_assignment,
                             "partitions should be a consecutive 0-based integer sequence")
        check_assignments(node, [a.broker_ids for a in t.assignments])
        return len(indexes)
    rf = t.replication_factor
    if rf == 0 or rf < -1:
        raise AdminError(ErrorCode.invalid_replication_factor, "Replication factor must be "
                         "larger than 0, or -1 to use the default value.")
    if rf > 1:
        raise replication_error(rf)
    n = t.num_partitions
    if n == 0 or n < -1:
        raise AdminError(ErrorCode.invalid_partitions,
                         "Number of partitions was set to an invalid non-positive value.")
    return ctx.broker.config.get_int("num.partitions") if n == -1 else n


def _overrides(t: Any) -> dict[str, str]:
    nulls = [c.name for c in t.configs if c.value is None]
    if nulls:
        raise AdminError(ErrorCode.invalid_config,
                         f"Null value not supported for topic configs: {', '.join(nulls)}")
    try:
        return validate_topic_configs({c.name: c.value for c in t.configs})
    except ConfigError as e:
        raise AdminError(ErrorCode.invalid_config, str(e)) from None


_STORAGE_ERRORS: dict[type[Exception], ErrorCode] = {
    TopicExistsError: ErrorCode.topic_already_exists,
    InvalidTopicError: ErrorCode.invalid_topic_exception,
    InvalidPartitionsError: ErrorCode.invalid_partitions,
    ConfigError: ErrorCode.invalid_config,
    PartitionLimitError: ErrorCode.policy_violation,
    LogCreationError: ErrorCode.kafka_storage_error,
}


def _requested_partitions(ctx: RequestContext, topics: list[Any]) -> int:
    """Kafka's upper bound for the per-request check (bad counts count as 0)."""
    total = 0
    for t in topics:
        if t.assignments:
            total += len(t.assignments)
        elif t.num_partitions == -1:
            total += ctx.broker.config.get_int("num.partitions")
        elif t.num_partitions > 0:
            total += t.num_partitions
    return total


def _create(
    ctx: RequestContext, t: Any, validate_only: bool, pending: list[int]
) -> dict[str, Any]:
    logs = ctx.broker.logs
    try:
        # Kafka's error precedence: a bad name wins over bad partitions or configs.
        logs.check_new_topic_name(t.name)
        num = _partition_count(ctx, t)
        overrides = _overrides(t)
        if validate_only:
            logs.check_partition_limit(num, pending[0])
            pending[0] += num
            topic_id, config = ZERO_UUID, TopicConfig(overrides, ctx.broker.config)
        else:
            info = logs.create_topic(t.name, num, overrides)
            topic_id, config = info.topic_id, info.config
            log.info("created topic %s (%d partitions) for %s", t.name, num,
                     ctx.header.client_id)
    except tuple(_STORAGE_ERRORS) as e:
        code = next(c for cls, c in _STORAGE_ERRORS.items() if isinstance(e, cls))
        raise AdminError(code, str(e)) from None
    return {"name": t.name, "topic_id": topic_id, "error_code": ErrorCode.none,
            "error_message": None, "num_partitions": num, "replication_factor": 1,
            "configs": topic_config_entries(config)}


@api(19, "CreateTopics", 2, 7)
async def handle_create_topics(ctx: RequestContext, request: Any) -> Any:
    names = Counter(t.name for t in request.topics)
    too_many = _requested_partitions(
        ctx, [t for t in request.topics if names[t.name] == 1]) > MAX_PARTITIONS_PER_REQUEST
    pending = [0]  # partitions a validate_only request has counted so far
    results = []
    # Kafka: CREATE on the cluster or on the topic; configs are returned with DESCRIBE_CONFIGS.
    cluster_create = authorize(ctx, AclOperation.CREATE, CLUSTER)
    answered: set[str] = set()
    for t in request.topics:
        if t.name in answered:
            continue  # Kafka answers a duplicated name once
        answered.add(t.name)
        try:
            if names[t.name] > 1:
                raise AdminError(ErrorCode.invalid_request, "Duplicate topic name.")
            if not cluster_create and not authorize(ctx, AclOperation.CREATE, TOPIC, t.name):
                raise AdminError(ErrorCode.topic_authorization_failed, "Authorization failed.")
            if too_many:
                raise AdminError(ErrorCode.policy_violation,
                                 "Excessively large number of partitions per request.")
            results.append(_create(ctx, t, request.validate_only, pending))
            if not authorize(ctx, AclOperation.DESCRIBE_CONFIGS, TOPIC, t.name):
                results[-1].update(configs=(), topic_config_error_code=(
                    ErrorCode.topic_authorization_failed))
        except AdminError as r:
            results.append({"name": t.name, "topic_id": ZERO_UUID, "error_code": r.code,
                            "error_message": r.message, "num_partitions": -1,
                            "replication_factor": -1, "configs": None})
    created = sum(r["num_partitions"] for r in results if r["error_code"] == ErrorCode.none)
    if not request.validate_only and created >= heap.SETTLE_MIN_PARTITIONS:
        heap.settle(f"{created} partitions created")  # their logs: out of the GC's way
    return build(response_class(19, ctx.version), throttle_time=0, topics=results)
