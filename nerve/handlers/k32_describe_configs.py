"""DescribeConfigs (key 32), versions 1-4; also the config-description helpers shared by the
admin handlers (CreateTopics reports a new topic's configs with them; the alter handlers use
the resource constants).

Behaviour:
- Topic resources (type 2): every topic config nerve knows (`nerve.config.TOPIC_CONFIGS`) with
  its effective value and source: 1 DYNAMIC_TOPIC_CONFIG for a topic override, 4
  STATIC_BROKER_CONFIG when the broker's `log.*` counterpart was set with --set/--config, else 5
  DEFAULT_CONFIG. read_only is false, is_sensitive false. With include_synonyms each entry lists
  the topic override, the broker config and the default, most specific first, as Kafka does.
  An unknown topic: UNKNOWN_TOPIC_OR_PARTITION; an invalid name INVALID_TOPIC_EXCEPTION.
- Broker resources (type 4) named with this node's id: every config in `BROKER_CONFIGS`,
  read_only true (nerve has no dynamic broker configs), source 4 or 5; PASSWORD configs
  (ssl.key.password, sasl.jaas.config, ...) are is_sensitive with a null value, as in Kafka.
  The listener.name.<l>.* overrides are not listed. An empty name asks for
  the cluster-wide dynamic defaults, which never exist here: an empty list, as Kafka answers on
  a fresh cluster. Another id or a non-integer name: INVALID_REQUEST.
- `configuration_keys` filters by name (null or empty: every config); unknown names are left
  out silently (as Kafka).
- config_type (v3+: BOOLEAN 1, STRING 2, INT 3, SHORT 4, LONG 5, DOUBLE 6, LIST 7, CLASS 8,
  PASSWORD 9) and documentation (only when include_documentation) from the config definitions.
Known gaps: other resource types (broker loggers 8, client metrics 16, groups 32) get
INVALID_REQUEST; Kafka's topic configs that nerve does not know are not listed;
`log.retention.hours` set on the broker is reported as the source of retention.ms's value only
through the value, not as a synonym.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nerve.config import BROKER_CONFIGS, TOPIC_CONFIGS, BrokerConfig, ConfigDef, TopicConfig
from nerve.handlers import RequestContext, api
from nerve.protocol.errors import ErrorCode
from nerve.protocol.messages import build, response_class
from nerve.security.acl import AclOperation, config_resource_denied
from nerve.storage.errors import InvalidTopicError
from nerve.storage.log_manager import validate_topic_name

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4

# Kafka's ConfigSource numbers.
SOURCE_DYNAMIC_TOPIC = 1
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5
_SOURCES = {"topic": SOURCE_DYNAMIC_TOPIC, "static_broker": SOURCE_STATIC_BROKER,
            "default": SOURCE_DEFAULT}

# Kafka's ConfigType numbers (DescribeConfigs v3+).
CONFIG_TYPES = {"boolean": 1, "string": 2, "int": 3, "short": 4, "long": 5, "double": 6,
                "list": 7, "class": 8, "password": 9}


def _wanted(defs: Iterable[ConfigDef], keys: Iterable[str] | None) -> list[ConfigDef]:
    if not keys:  # null and empty both mean every key, as in Kafka's ConfigHelper
        return list(defs)
    want = set(keys)
    return [d for d in defs if d.name in want]


def _entry(defn: ConfigDef, value: str | None, source: int, read_only: bool,
           synonyms: list[dict[str, Any]], documentation: bool) -> dict[str, Any]:
    sensitive = defn.type == "password"  # as Kafka: never sent, reported as sensitive
    if sensitive:
        value = None
        synonyms = [{**s, "value": None} for s in synonyms]
    return {
        "name": defn.name,
        "value": value,
        "read_only": read_only,
        "config_source": source,
        "is_sensitive": sensitive,
        "synonyms": synonyms,
        "config_type": CONFIG_TYPES.get(defn.type, 0),
        "documentation": defn.doc if documentation else None,
    }


def topic_config_entries(
    config: TopicConfig, keys: Iterable[str] | None = None, *,
    synonyms: bool = False, documentation: bool = False,
) -> list[dict[str, Any]]:
    """One DescribeConfigs/CreateTopics config entry per topic config (dicts for `build`)."""
    out = []
    broker = config.broker
    for defn in _wanted(TOPIC_CONFIGS.values(), keys):
        syns: list[dict[str, Any]] = []
        if synonyms:
            if defn.name in config.overrides:
                syns.append({"name": defn.name, "value": config.overrides[defn.name],
                             "source": SOURCE_DYNAMIC_TOPIC})
            bname = defn.broker_name
            if bname and bname in broker.overrides:
                syns.append({"name": bname, "value": broker.overrides[bname],
                             "source": SOURCE_STATIC_BROKER})
            default = BROKER_CONFIGS[bname].default if bname in BROKER_CONFIGS else defn.default
            syns.append({"name": bname or defn.name, "value": default, "source": SOURCE_DEFAULT})
        out.append(_entry(defn, config.get(defn.name), _SOURCES[config.source(defn.name)],
                          False, syns, documentation))
    return out


def broker_config_entries(
    config: BrokerConfig, keys: Iterable[str] | None = None, *,
    synonyms: bool = False, documentation: bool = False,
) -> list[dict[str, Any]]:
    out = []
    for defn in _wanted(BROKER_CONFIGS.values(), keys):
        source = _SOURCES[config.source(defn.name)]
        syns: list[dict[str, Any]] = []
        if synonyms:
            if source == SOURCE_STATIC_BROKER:
                syns.append({"name": defn.name, "value": config.overrides[defn.name],
                             "source": SOURCE_STATIC_BROKER})
            syns.append({"name": defn.name, "value": defn.default, "source": SOURCE_DEFAULT})
        # read_only: no broker config can be changed while nerve runs.
        out.append(_entry(defn, config.get(defn.name), source, True, syns, documentation))
    return out


# Errors.INVALID_REQUEST's default message, which Kafka sends where it has no other.
INVALID_REQUEST_TEXT = ("This most likely occurs because of a request being malformed by the "
                        "client library or the message was sent to an incompatible broker. See "
                        "the broker logs for more details.")


def broker_resource_error(ctx: RequestContext, name: str, altering: bool = False) -> str | None:
    """Why a broker resource name is not this broker ('' is the cluster default), or None.
    Kafka's texts, which differ between DescribeConfigs and the two AlterConfigs."""
    if name == "":
        return None
    try:
        node = int(name)
    except ValueError:
        return (f"Node id must be an integer, but it is: {name}" if altering
                else f"Broker id must be an integer, but it is: {name}")
    if node != ctx.broker.node_id:
        return (f"Unexpected broker id, expected {ctx.broker.node_id}"
                f"{'' if altering else ' or empty string'}, but received {node}")
    return None


def _describe(ctx: RequestContext, res: Any, synonyms: bool, docs: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"resource_type": res.resource_type, "resource_name": res.resource_name,
                           "error_code": ErrorCode.none, "error_message": None, "configs": ()}
    keys = res.configuration_keys
    denied = config_resource_denied(ctx, res.resource_type, res.resource_name,
                                    AclOperation.DESCRIBE_CONFIGS)
    if denied is not None:
        out["error_code"] = denied
    elif res.resource_type == RESOURCE_TOPIC:
        info = ctx.broker.logs.topics.get(res.resource_name)
        if info is not None:
            out["configs"] = topic_config_entries(info.config, keys, synonyms=synonyms,
                                                  documentation=docs)
        else:
            try:
                validate_topic_name(res.resource_name)
                out["error_code"] = ErrorCode.unknown_topic_or_partition
                out["error_message"] = ""  # what Kafka 4.4 says
            except InvalidTopicError as e:
                out["error_code"] = ErrorCode.invalid_topic_exception
                out["error_message"] = str(e)
    elif res.resource_type == RESOURCE_BROKER:
        problem = broker_resource_error(ctx, res.resource_name)
        if problem is not None:
            out["error_code"] = ErrorCode.invalid_request
            out["error_message"] = problem
        elif res.resource_name:
            out["configs"] = broker_config_entries(ctx.broker.config, keys, synonyms=synonyms,
                                                   documentation=docs)
    else:
        out["error_code"] = ErrorCode.invalid_request
        out["error_message"] = INVALID_REQUEST_TEXT  # Kafka answers with the error's own text
    return out


@api(32, "DescribeConfigs", 1, 4)
async def handle_describe_configs(ctx: RequestContext, request: Any) -> Any:
    synonyms = bool(getattr(request, "include_synonyms", False))
    docs = bool(getattr(request, "include_documentation", False))
    results = [_describe(ctx, res, synonyms, docs) for res in request.resources]
    return build(response_class(32, ctx.version), throttle_time=0, results=results)
