"""DescribeLogDirs (key 35), versions 1-4.

Behaviour: one log dir, the broker's data directory (absolute path), holding every partition.
A null topic list describes all topics; otherwise only the named topics and partitions that
exist (unknown ones are left out, as Kafka does). Each partition reports its size on disk
(partition_size), offset_lag 0 (no replication) and is_future_key false. v4 adds the file
system's total and usable bytes (os.statvfs; -1 if that fails).
Known gaps: none known for a single data dir.
"""

from __future__ import annotations

import os
from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import CLUSTER, AclOperation, authorize


def _partitions(ctx: RequestContext, topic: str, wanted: Any) -> list[dict[str, Any]]:
    info = ctx.broker.logs.topics.get(topic)
    if info is None:
        return []
    indexes = range(info.num_partitions) if wanted is None else wanted
    out = []
    for p in indexes:
        plog = ctx.broker.logs.get_log(topic, p)
        if plog is not None:
            out.append({"partition_index": p, "partition_size": plog.size_bytes,
                        "offset_lag": 0, "is_future_key": False})
    return out


def _disk_bytes(path: str) -> tuple[int, int]:
    try:
        st = os.statvfs(path)
    except OSError:
        return -1, -1
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


@api(35, "DescribeLogDirs", 1, 4)
async def handle_describe_log_dirs(ctx: RequestContext, request: Any) -> Any:
    if not authorize(ctx, AclOperation.DESCRIBE, CLUSTER):  # Kafka: no results, and from v3
        return build(response_class(35, ctx.version), throttle_time=0, results=(),
                     error_code=ErrorCode.cluster_authorization_failed)
    if request.topics is None:
        wanted = [(name, None) for name in list(ctx.broker.logs.topics)]
    else:
        wanted = [(t.topic, t.partitions) for t in request.topics]
    topics = []
    for name, parts in wanted:
        found = _partitions(ctx, name, parts)
        if found:
            topics.append({"name": name, "partitions": found})
    log_dir = str(ctx.broker.data_dir.resolve())
    total, usable = _disk_bytes(log_dir)
    result = {"error_code": ErrorCode.none, "log_dir": log_dir, "topics": topics,
              "total_bytes": total, "usable_bytes": usable}
    return build(response_class(35, ctx.version), throttle_time=0, error_code=ErrorCode.none,
                 results=[result])
