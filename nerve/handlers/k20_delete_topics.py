"""DeleteTopics (key 20), versions 1-6.

Behaviour: deletes each named topic (v6: named or by topic id) with all its partitions. An
unknown name is UNKNOWN_TOPIC_OR_PARTITION, an unknown id UNKNOWN_TOPIC_ID; a v6 entry with
both a name and an id, or with neither, is INVALID_REQUEST; a topic named twice in one request
is INVALID_REQUEST for each copy. With `delete.topic.enable=false` every entry is
TOPIC_DELETION_DISABLED. Error messages from v5.
Known gaps: the request timeout is ignored (deletion is synchronous; files may be removed in
the background by storage).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import ZERO_UUID, build, response_class
from nerve.security.acl import TOPIC, AclOperation, authorize
from nerve.storage.errors import UnknownTopicError

log = logging.getLogger("nerve.admin")


def _targets(request: Any, version: int) -> list[tuple[str | None, Any]]:
    """(name, topic_id) per entry; topic_id None before v6."""
    if version >= 6:
        return [(t.name, t.topic_id) for t in request.topics]
    return [(name, None) for name in request.topic_names]


def _delete(ctx: RequestContext, name: str | None, topic_id: Any, dupes: set[Any]) -> dict:
    logs = ctx.broker.logs
    out: dict[str, Any] = {"name": name, "topic_id": topic_id or ZERO_UUID,
                           "error_code": ErrorCode.none, "error_message": None}

    def fail(code: ErrorCode, message: str) -> dict[str, Any]:
        out.update(error_code=code, error_message=message)
        return out

    has_id = topic_id is not None and topic_id != ZERO_UUID
    if (name is None) == (not has_id):
        return fail(ErrorCode.invalid_request, "give a topic name or a topic id, not both")
    if (name if name is not None else topic_id) in dupes:
        return fail(ErrorCode.invalid_request, "topic appears more than once in the request")
    if not ctx.broker.config.get_bool("delete.topic.enable"):
        return fail(ErrorCode.topic_deletion_disabled,
                    "topic deletion is disabled (delete.topic.enable=false)")
    if has_id:
        info = logs.topic_by_id(topic_id)
        if info is None:
            return fail(ErrorCode.unknown_topic_id, f"no topic has id {topic_id}")
        out["name"] = name = info.name
        if not authorize(ctx, AclOperation.DESCRIBE, TOPIC, name):
            out["name"] = None
            return fail(ErrorCode.topic_authorization_failed, "Topic authorization failed.")
    if not authorize(ctx, AclOperation.DELETE, TOPIC, name):
        return fail(ErrorCode.topic_authorization_failed, "Topic authorization failed.")
    if not has_id:
        info = logs.topics.get(name)
        if info is None:
            return fail(ErrorCode.unknown_topic_or_partition,
                        f"This server does not host this topic: {name}")
        out["topic_id"] = info.topic_id
    try:
        logs.delete_topic(name)
    except UnknownTopicError as e:
        return fail(ErrorCode.unknown_topic_or_partition, str(e))
    log.info("deleted topic %s for %s", name, ctx.header.client_id)
    return out


@api(20, "DeleteTopics", 1, 6)
async def handle_delete_topics(ctx: RequestContext, request: Any) -> Any:
    targets = _targets(request, ctx.version)
    counts = Counter(name if name is not None else tid for name, tid in targets)
    dupes = {key for key, n in counts.items() if n > 1}
    responses = [_delete(ctx, name, tid, dupes) for name, tid in targets]
    deleted = [r["name"] for r in responses if r.get("error_code", 0) == 0 and r.get("name")]
    if deleted and ctx.broker.groups is not None:
        # Kafka drops committed offsets of deleted topics, so a re-created topic starts clean.
        await ctx.broker.groups.on_topics_deleted(deleted)
    return build(response_class(20, ctx.version), throttle_time=0, responses=responses)
