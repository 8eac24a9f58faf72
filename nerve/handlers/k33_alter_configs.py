"""AlterConfigs (key 33), versions 0-2; also the resource checks shared with
IncrementalAlterConfigs (k44).

Behaviour:
- Topic resources (type 2): the given configs REPLACE the topic's overrides (the legacy
  semantics: a config left out returns to its default). Names and values are checked against
  `nerve.config.TOPIC_CONFIGS`: an unknown name or a bad value is INVALID_CONFIG, a null value
  INVALID_REQUEST, with Kafka's messages, and nothing changes. validate_only checks without
  changing anything.
  Unknown topic: UNKNOWN_TOPIC_OR_PARTITION.
- Broker resources (type 4): nerve has no dynamic broker configs (they are set at start with
  --set/--config), so any config change is INVALID_CONFIG with a message saying so; an empty
  change to this broker (or the '' default resource) succeeds as the no-op it is. Another
  broker id: INVALID_REQUEST.
- A resource named twice in one request: INVALID_REQUEST for each copy (as Kafka).
Known gaps: other resource types (broker loggers, client metrics, groups): INVALID_REQUEST.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from nerve.config import ConfigError, validate_topic_configs
from nerve.handlers import RequestContext, api
from nerve.handlers.k32_describe_configs import (
    RESOURCE_BROKER,
    RESOURCE_TOPIC,
    broker_resource_error,
)
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import AclOperation, config_resource_denied
from nerve.storage.errors import UnknownTopicError

log = logging.getLogger("nerve.admin")

Outcome = tuple[ErrorCode, str | None]
OK: Outcome = (ErrorCode.none, None)


def duplicate_resources(resources: Any) -> set[tuple[int, str]]:
    counts = Counter((r.resource_type, r.resource_name) for r in resources)
    return {key for key, n in counts.items() if n > 1}


def check_resource(ctx: RequestContext, res: Any) -> Outcome | None:
    """The error for a resource that cannot be altered at all, or None for a known topic.

    Broker resources never reach the caller's topic logic: they get their final answer here.
    """
    denied = config_resource_denied(ctx, res.resource_type, res.resource_name,
                                    AclOperation.ALTER_CONFIGS)
    if denied is not None:
        return denied, None
    if res.resource_type == RESOURCE_TOPIC:
        if res.resource_name not in ctx.broker.logs.topics:
            return (ErrorCode.unknown_topic_or_partition,
                    f"The topic '{res.resource_name}' does not exist.")
        return None
    if res.resource_type == RESOURCE_BROKER:
        problem = broker_resource_error(ctx, res.resource_name, altering=True)
        if problem is not None:
            return ErrorCode.invalid_request, problem
        if res.configs:
            names = ", ".join(sorted(c.name for c in res.configs))
            return (ErrorCode.invalid_config,
                    f"dynamic broker configs are not supported by nerve ({names}); "
                    "set them at start with --set or --config")
        return OK
    return ErrorCode.invalid_request, f"Unknown resource type {res.resource_type}"


def set_topic_overrides(
    ctx: RequestContext, topic: str, overrides: Mapping[str, str], validate_only: bool,
) -> Outcome:
    """Check `overrides` and, unless validate_only, make them the topic's whole override set."""
    try:
        checked = validate_topic_configs(overrides)
    except ConfigError as e:
        return ErrorCode.invalid_config, str(e)
    if validate_only:
        return OK
    try:
        ctx.broker.logs.alter_topic_config(topic, checked)
    except UnknownTopicError as e:  # deleted meanwhile
        return ErrorCode.unknown_topic_or_partition, str(e)
    except ConfigError as e:
        return ErrorCode.invalid_config, str(e)
    log.info("topic %s config overrides now %s", topic, checked)
    return OK


def resource_result(res: Any, outcome: Outcome) -> dict[str, Any]:
    return {"resource_type": res.resource_type, "resource_name": res.resource_name,
            "error_code": outcome[0], "error_message": outcome[1]}


DUPLICATE: Outcome = (ErrorCode.invalid_request, "Each resource must appear at most once.")


def alter_each(
    ctx: RequestContext, resources: Any, alter_topic: Callable[[Any], Outcome]
) -> list[dict[str, Any]]:
    """Per-resource results, shared with IncrementalAlterConfigs: duplicates and resources
    other than an existing topic are refused first; `alter_topic` handles the rest."""
    dupes = duplicate_resources(resources)
    results = []
    for res in resources:
        outcome = DUPLICATE if (res.resource_type, res.resource_name) in dupes else None
        outcome = outcome or check_resource(ctx, res) or alter_topic(res)
        results.append(resource_result(res, outcome))
    return results


def _replace_topic_configs(ctx: RequestContext, res: Any, validate_only: bool) -> Outcome:
    nulls = [c.name for c in res.configs if c.value is None]
    if nulls:  # Kafka's text, its odd ": " included
        return ErrorCode.invalid_request, f"Null value not supported for : {nulls[0]}"
    return set_topic_overrides(ctx, res.resource_name, {c.name: c.value for c in res.configs},
                               validate_only)


@api(33, "AlterConfigs", 0, 2)
async def handle_alter_configs(ctx: RequestContext, request: Any) -> Any:
    responses = alter_each(
        ctx, request.resources,
        lambda res: _replace_topic_configs(ctx, res, request.validate_only),
    )
    return build(response_class(33, ctx.version), throttle_time=0, responses=responses)
