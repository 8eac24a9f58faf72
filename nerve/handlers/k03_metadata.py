"""Metadata (key 3), versions 0-12.

Behaviour: one broker (this one) that leads every partition, with itself as controller. A null
topic list (or an empty one at v0) means every topic. A requested topic that does not exist is
created when the request allows it (always below v4) and `auto.create.topics.enable` is true,
with `num.partitions` partitions; otherwise UNKNOWN_TOPIC_OR_PARTITION. Topics can be named by
id from v10; an unknown id gets UNKNOWN_TOPIC_ID. Invalid names get INVALID_TOPIC_EXCEPTION.
Authorization (Kafka's): topics without DESCRIBE are left out of an all-topics answer and
answered TOPIC_AUTHORIZATION_FAILED when named; auto-creation needs CREATE on the cluster or
the topic (else TOPIC_AUTHORIZATION_FAILED). Authorized operations are filled in when asked
(every supported operation with no authorizer), else -2147483648.
Version notes: topic ids from v10; cluster authorized operations only up to v10.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import ZERO_UUID, build, response_class
from nerve.security.acl import (
    CLUSTER,
    NO_OPERATIONS,
    TOPIC,
    AclOperation,
    authorize,
    authorized_operations,
    cluster_authorized_operations,
)
from nerve.storage.errors import (
    InvalidTopicError,
    LogCreationError,
    PartitionLimitError,
    TopicExistsError,
)
from nerve.storage.log_manager import TopicInfo

log = logging.getLogger("nerve.metadata")


def topic_entry(ctx: RequestContext, info: TopicInfo, include_ops: bool = False
                ) -> dict[str, Any]:
    node = ctx.broker.node_id
    return {
        "error_code": ErrorCode.none,
        "name": info.name,
        "topic_id": info.topic_id,
        "is_internal": info.name.startswith("__"),
        "partitions": [
            {
                "error_code": ErrorCode.none,
                "partition_index": p,
                "leader_id": node,
                "leader_epoch": 0,
                "replica_nodes": (node,),
                "isr_nodes": (node,),
                "offline_replicas": (),
            }
            for p in range(info.num_partitions)
        ],
        "topic_authorized_operations": authorized_operations(ctx, TOPIC, info.name, include_ops),
    }


def _error_entry(name: str | None, topic_id: uuid.UUID | None, code: ErrorCode) -> dict[str, Any]:
    return {
        "error_code": code,
        "name": name,
        "topic_id": topic_id or ZERO_UUID,
        "partitions": (),
        "topic_authorized_operations": NO_OPERATIONS,
    }


def auto_create(ctx: RequestContext, name: str) -> TopicInfo | ErrorCode:
    """Create `name` with the broker's defaults, or say why not (shared with Produce/Fetch)."""
    logs = ctx.broker.logs
    try:
        info = logs.create_topic(name, ctx.broker.config.get_int("num.partitions"))
    except TopicExistsError:
        return logs.topics[name]
    except InvalidTopicError:
        return ErrorCode.invalid_topic_exception
    except PartitionLimitError as e:
        log.warning("not auto-creating topic %s: %s", name, e)
        return ErrorCode.policy_violation
    except LogCreationError:  # logged by storage
        return ErrorCode.kafka_storage_error
    log.info("auto-created topic %s for %s", name, ctx.header.client_id)
    return info


@api(3, "Metadata", 0, 12)
async def handle_metadata(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    logs = broker.logs
    version = ctx.version
    requested = request.topics
    topics: list[dict[str, Any]] = []
    ops = bool(getattr(request, "include_topic_authorized_operations", False))
    describe = AclOperation.DESCRIBE
    if requested is None or (version == 0 and not requested):
        topics = [topic_entry(ctx, info, ops) for info in list(logs.topics.values())
                  if authorize(ctx, describe, TOPIC, info.name)]
    else:
        allow = version < 4 or bool(getattr(request, "allow_auto_topic_creation", True))
        allow = allow and broker.auto_create_topics()
        for t in requested:
            name = t.name
            topic_id = getattr(t, "topic_id", None)
            if name is None and version < 12:
                # Below v12 a topic's name is not nullable in the answer, and Kafka looks
                # topics up by id only from v12 ("Topic name can not be null").
                topics.append(_error_entry("", None, ErrorCode.invalid_request))
                continue
            if name is None and topic_id is not None and topic_id != ZERO_UUID:
                info = logs.topic_by_id(topic_id)
                if info is None:
                    topics.append(_error_entry(None, topic_id, ErrorCode.unknown_topic_id))
                elif not authorize(ctx, describe, TOPIC, info.name):
                    topics.append(_error_entry(None, topic_id,
                                               ErrorCode.topic_authorization_failed))
                else:
                    topics.append(topic_entry(ctx, info, ops))
                continue
            if name is None:
                topics.append(_error_entry(None, None, ErrorCode.invalid_request))
                continue
            if not authorize(ctx, describe, TOPIC, name):
                topics.append(_error_entry(name, None, ErrorCode.topic_authorization_failed))
                continue
            found = logs.topics.get(name)
            if found is None and allow and not (
                    authorize(ctx, AclOperation.CREATE, CLUSTER)
                    or authorize(ctx, AclOperation.CREATE, TOPIC, name)):
                topics.append(_error_entry(name, None, ErrorCode.topic_authorization_failed))
                continue
            if found is None and allow:
                created = auto_create(ctx, name)
                if isinstance(created, ErrorCode):
                    topics.append(_error_entry(name, None, created))
                    continue
                found = created
            if found is None:
                topics.append(
                    _error_entry(name, None, ErrorCode.unknown_topic_or_partition)
                )
            else:
                topics.append(topic_entry(ctx, found, ops))
    return build(
        response_class(3, version),
        throttle_time=0,
        brokers=[
            {
                "node_id": broker.node_id,
                # The addresses of the listener this client came in on.
                "host": broker.endpoint(ctx.listener_name)[0],
                "port": broker.endpoint(ctx.listener_name)[1],
                "rack": None,
            }
        ],
        cluster_id=broker.cluster_id,
        controller_id=broker.node_id,
        topics=topics,
        cluster_authorized_operations=cluster_authorized_operations(
            ctx, bool(getattr(request, "include_cluster_authorized_operations", False))),
    )
