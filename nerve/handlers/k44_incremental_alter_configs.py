"""IncrementalAlterConfigs (key 44), versions 0-1.

Behaviour: for topic resources (type 2), each config names an operation on the topic's
overrides: SET (0) sets it, DELETE (1) removes the override (back to the broker's value),
APPEND (2) and SUBTRACT (3) add or remove items of a list config (cleanup.policy), starting
from the effective value. The result is checked like AlterConfigs and applied at once, or not
at all: an unknown config, a bad value or a list operation on a non-list config is
INVALID_CONFIG; a null value for SET/APPEND/SUBTRACT, an unknown operation or a config named
twice in one resource is INVALID_REQUEST; DELETE of an unknown name changes nothing (as in
Kafka). Messages are Kafka 4.4's. validate_only checks without changing anything. Broker resources
and duplicates are answered as in AlterConfigs (k33).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from nerve.config import TOPIC_CONFIGS
from nerve.handlers import RequestContext, api
from nerve.handlers.k33_alter_configs import Outcome, alter_each, set_topic_overrides
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _alter_topic(ctx: RequestContext, res: Any, validate_only: bool) -> Outcome:
    info = ctx.broker.logs.topics[res.resource_name]
    twice = [n for n, k in Counter(c.name for c in res.configs).items() if k > 1]
    if twice:
        return ErrorCode.invalid_request, "Error due to duplicate config keys"
    overrides = dict(info.overrides)
    for c in res.configs:
        op, name, value = c.config_operation, c.name, c.value
        if op not in (SET, DELETE, APPEND, SUBTRACT):
            return ErrorCode.invalid_request, f"unknown config operation {op} for {name}"
        defn = TOPIC_CONFIGS.get(name)
        if op == DELETE:  # deleting an override that cannot exist is a no-op in Kafka too
            overrides.pop(name, None)
            continue
        if value is None:  # Kafka's text, its odd ": " included
            return ErrorCode.invalid_request, f"Null value not supported for : {name}"
        if defn is None:
            return ErrorCode.invalid_config, f"Unknown topic config name: {name}"
        if op == SET:
            overrides[name] = value
            continue
        if defn.type != "list":
            verb = "APPEND" if op == APPEND else "SUBTRACT"
            return (ErrorCode.invalid_config,
                    f"Can't {verb} to key {name} because its type is not LIST.")
        current = _split(overrides.get(name, info.config.get(name)))
        if op == APPEND:
            items = current + [v for v in _split(value) if v not in current]
        else:
            drop = set(_split(value))
            items = [v for v in current if v not in drop]
        overrides[name] = ",".join(items)
    return set_topic_overrides(ctx, res.resource_name, overrides, validate_only)


@api(44, "IncrementalAlterConfigs", 0, 1)
async def handle_incremental_alter_configs(ctx: RequestContext, request: Any) -> Any:
    responses = alter_each(
        ctx, request.resources, lambda res: _alter_topic(ctx, res, request.validate_only)
    )
    return build(response_class(44, ctx.version), throttle_time=0, responses=responses)
