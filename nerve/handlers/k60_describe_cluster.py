"""DescribeCluster (key 60), versions 0-1.

Behaviour: the cluster is this node: brokers = [this node with the advertised host and port of the
listener the client came in on],
controller_id = this node (as Metadata reports), cluster_id from meta.properties. v1's
endpoint_type 1 (brokers) is answered; 2 (controllers) is UNSUPPORTED_ENDPOINT_TYPE, as a Kafka
broker answers it (clients ask controllers directly for that). Cluster authorized operations are
filled in when asked (include_cluster_authorized_operations): 0 without DESCRIBE on the
cluster, as Kafka answers.
"""

from __future__ import annotations

from typing import Any

from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import NO_OPERATIONS, cluster_authorized_operations

ENDPOINT_BROKERS = 1


@api(60, "DescribeCluster", 0, 1)
async def handle_describe_cluster(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    host, port = broker.endpoint(ctx.listener_name)  # the listener this client came in on
    cls = response_class(60, ctx.version)
    endpoint_type = getattr(request, "endpoint_type", ENDPOINT_BROKERS)
    if endpoint_type != ENDPOINT_BROKERS:
        return build(cls, throttle_time=0, error_code=ErrorCode.unsupported_endpoint_type,
                     error_message=f"endpoint type {endpoint_type}: this is a broker endpoint",
                     endpoint_type=endpoint_type, cluster_id=broker.cluster_id,
                     controller_id=-1, brokers=[], cluster_authorized_operations=NO_OPERATIONS)
    return build(
        cls,
        throttle_time=0,
        error_code=ErrorCode.none,
        error_message=None,
        endpoint_type=ENDPOINT_BROKERS,
        cluster_id=broker.cluster_id,
        controller_id=broker.node_id,
        brokers=[{"broker_id": broker.node_id, "host": host, "port": port, "rack": None}],
        cluster_authorized_operations=cluster_authorized_operations(
            ctx, bool(getattr(request, "include_cluster_authorized_operations", False))),
    )
