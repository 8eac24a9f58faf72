"""Broker and topic configuration, named exactly as Apache Kafka names them.

Topic-level configs (`segment.bytes`, `retention.ms`, ...) default to a broker-level config
(`log.segment.bytes`, `log.retention.ms`, ...), as in Kafka. DescribeConfigs reports each value
with its source: a topic override, a broker override (from --config/--set), or the default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ConfigType = Literal["int", "long", "boolean", "string", "list", "double", "short", "class",
                     "password"]


@dataclass(frozen=True)
class ConfigDef:
    name: str
    type: ConfigType
    default: str | None
    doc: str
    broker_name: str | None = None  # for topic configs: the broker config it defaults to


# Topic configs we honour (or report faithfully). Defaults are Kafka 4's.
TOPIC_CONFIGS: dict[str, ConfigDef] = {
    c.name: c
    for c in (
        ConfigDef("cleanup.policy", "list", "delete", "delete or compact", "log.cleanup.policy"),
        ConfigDef("compression.type", "string", "producer", "stored as produced",
                  "compression.type"),
        ConfigDef("delete.retention.ms", "long", "86400000", "tombstone retention",
                  "log.cleaner.delete.retention.ms"),
        ConfigDef("file.delete.delay.ms", "long", "60000", "delay before deleting files",
                  "log.segment.delete.delay.ms"),
        ConfigDef("flush.messages", "long", "9223372036854775807",
                  "fsync after this many messages", "log.flush.interval.messages"),
        ConfigDef("flush.ms", "long", "9223372036854775807", "fsync at least this often",
                  "log.flush.interval.ms"),
        ConfigDef("index.interval.bytes", "int", "4096", "bytes between offset index entries",
                  "log.index.interval.bytes"),
        ConfigDef("max.compaction.lag.ms", "long", "9223372036854775807",
                  "longest a record stays uncompacted", "log.cleaner.max.compaction.lag.ms"),
        ConfigDef("max.message.bytes", "int", "1048588", "largest batch accepted",
                  "message.max.bytes"),
        ConfigDef("min.cleanable.dirty.ratio", "double", "0.5",
                  "dirty share of the log that starts a cleaning",
                  "log.cleaner.min.cleanable.ratio"),
        ConfigDef("min.compaction.lag.ms", "long", "0", "shortest a record stays uncompacted",
                  "log.cleaner.min.compaction.lag.ms"),
        ConfigDef("message.timestamp.type", "string", "CreateTime",
                  "CreateTime or LogAppendTime", "log.message.timestamp.type"),
        ConfigDef("min.insync.replicas", "int", "1", "single node: always 1",
                  "min.insync.replicas"),
        ConfigDef("retention.bytes", "long", "-1", "per-partition size limit",
                  "log.retention.bytes"),
        ConfigDef("retention.ms", "long", "604800000", "age limit (-1: forever)",
                  "log.retention.ms"),
        ConfigDef("segment.bytes", "int", "1073741824", "segment size before a roll",
                  "log.segment.bytes"),
        ConfigDef("segment.index.bytes", "int", "10485760", "max index size",
                  "log.index.size.max.bytes"),
        ConfigDef("segment.ms", "long", "604800000", "segment age before a roll", "log.roll.ms"),
        ConfigDef("unclean.leader.election.enable", "boolean", "false", "single node",
                  "unclean.leader.election.enable"),
        # Accepted and reported with Kafka 4.4's defaults, without effect on nerve (no
        # replication, no tiered storage; batches are stored as produced), so a framework or
        # a copied topic config that sets one is not refused. Listed in docs/compatibility.md.
        *(
            ConfigDef(name, typ, default, f"accepted, no effect in nerve: {why}", broker)
            for name, typ, default, broker, why in (
                ("compression.gzip.level", "int", "-1", "compression.gzip.level",
                 "batches are stored as produced"),
                ("compression.lz4.level", "int", "9", "compression.lz4.level",
                 "batches are stored as produced"),
                ("compression.zstd.level", "int", "3", "compression.zstd.level",
                 "batches are stored as produced"),
                ("errors.deadletterqueue.group.enable", "boolean", "false", None,
                 "share groups are not served"),
                ("follower.replication.throttled.replicas", "list", "", None,
                 "no replication"),
                ("leader.replication.throttled.replicas", "list", "", None, "no replication"),
                ("local.retention.bytes", "long", "-2", "log.local.retention.bytes",
                 "no tiered storage"),
                ("local.retention.ms", "long", "-2", "log.local.retention.ms",
                 "no tiered storage"),
                ("max.decompressed.message.bytes", "int", "2147483639",
                 "max.decompressed.message.bytes", "batches are not decompressed on produce"),
                ("message.timestamp.after.max.ms", "long", "3600000",
                 "log.message.timestamp.after.max.ms", "timestamps are not range-checked"),
                ("message.timestamp.before.max.ms", "long", "9223372036854775807",
                 "log.message.timestamp.before.max.ms", "timestamps are not range-checked"),
                ("preallocate", "boolean", "false", "log.preallocate",
                 "segments are not preallocated"),
                ("remote.copy.lag.bytes", "long", "-1", "log.remote.copy.lag.bytes",
                 "no tiered storage"),
                ("remote.copy.lag.ms", "long", "0", "log.remote.copy.lag.ms",
                 "no tiered storage"),
                ("remote.log.copy.disable", "boolean", "false", None, "no tiered storage"),
                ("remote.log.delete.on.disable", "boolean", "false", None,
                 "no tiered storage"),
                ("remote.storage.enable", "boolean", "false", None, "no tiered storage"),
                ("segment.jitter.ms", "long", "0", "log.roll.jitter.ms",
                 "segments roll without jitter"),
            )
        ),
    )
}

# Listeners, TLS and SASL (nerve/security). The ssl.*, sasl.enabled.mechanisms and
# connections.max.reauth.ms settings may also be given per listener as
# `listener.name.<listener>.<key>`, JAAS lines as `listener.name.<l>.<mechanism>.sasl.jaas.config`.
SECURITY_CONFIGS: tuple[ConfigDef, ...] = (
    ConfigDef("listeners", "string", None,
              "NAME://host:port,...; default: one PLAINTEXT listener from --host/--port"),
    ConfigDef("advertised.listeners", "string", None, "addresses told to clients, per listener"),
    ConfigDef("listener.security.protocol.map", "string",
              "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
              "listener name -> security protocol"),
    ConfigDef("inter.broker.listener.name", "string", None, "single node: unused"),
    ConfigDef("security.inter.broker.protocol", "string", "PLAINTEXT", "single node: unused"),
    ConfigDef("sasl.mechanism.inter.broker.protocol", "string", "GSSAPI", "single node: unused"),
    ConfigDef("sasl.enabled.mechanisms", "list", "GSSAPI",
              "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (Kafka's default GSSAPI is not supported)"),
    ConfigDef("sasl.jaas.config", "password", None, "JAAS line for every SASL listener"),
    ConfigDef("connections.max.reauth.ms", "long", "0",
              "SASL session lifetime before re-authentication (KIP-368; 0: forever)"),
    ConfigDef("ssl.keystore.type", "string", "JKS", "PEM only"),
    ConfigDef("ssl.keystore.location", "string", None, "PEM file: private key + chain"),
    ConfigDef("ssl.keystore.password", "password", None, "key password (PEM)"),
    ConfigDef("ssl.keystore.key", "password", None, "inline PEM private key"),
    ConfigDef("ssl.keystore.certificate.chain", "password", None, "inline PEM chain"),
    ConfigDef("ssl.key.password", "password", None, "password of an encrypted key"),
    ConfigDef("ssl.truststore.type", "string", "JKS", "PEM only"),
    ConfigDef("ssl.truststore.location", "string", None, "PEM file of trusted CAs"),
    ConfigDef("ssl.truststore.password", "password", None, "unused with PEM"),
    ConfigDef("ssl.truststore.certificates", "password", None, "inline PEM trusted CAs"),
    ConfigDef("ssl.client.auth", "string", "none", "none, requested or required (mTLS)"),
    ConfigDef("ssl.enabled.protocols", "list", "TLSv1.2,TLSv1.3", "TLS versions"),
    ConfigDef("ssl.protocol", "string", "TLSv1.3", "reported only"),
    ConfigDef("ssl.cipher.suites", "list", "", "TLS 1.2 cipher suites (empty: OpenSSL's)"),
    ConfigDef("ssl.endpoint.identification.algorithm", "string", "https",
              "broker side: unused"),
    ConfigDef("ssl.principal.mapping.rules", "string", "DEFAULT",
              "RULE:regex/replacement/[LU],... on the client certificate's DN"),
)

# Broker configs. Only these keys are accepted by --set/--config (typos fail loudly).
BROKER_CONFIGS: dict[str, ConfigDef] = {
    c.name: c
    for c in (
        ConfigDef("node.id", "int", "1", "this broker's id"),
        ConfigDef("num.partitions", "int", "1", "partitions of auto-created topics"),
        ConfigDef("default.replication.factor", "short", "1", "single node: 1"),
        ConfigDef("auto.create.topics.enable", "boolean", "true", "create topics on Metadata"),
        ConfigDef("delete.topic.enable", "boolean", "true", "allow DeleteTopics"),
        ConfigDef("socket.request.max.bytes", "int", "104857600", "largest request frame"),
        ConfigDef("queued.max.request.bytes", "long", "209715200",
                  "request bytes read or held at once, all connections (-1: unbounded)"),
        ConfigDef("max.connections", "int", "2147483647",
                  "connections at once (also bounded by the open file limit)"),
        ConfigDef("max.connections.per.ip", "int", "2147483647",
                  "connections at once from one address"),
        ConfigDef("connections.max.idle.ms", "long", "600000",
                  "close connections idle this long (-1: never)"),
        ConfigDef("max.incremental.fetch.session.cache.slots", "int", "1000",
                  "fetch sessions kept (KIP-227 incremental fetch; 0: none)"),
        ConfigDef("log.retention.check.interval.ms", "long", "300000", "retention sweep period"),
        ConfigDef("log.retention.hours", "int", "168", "age limit in hours"),
        ConfigDef("offsets.retention.minutes", "int", "10080", "committed offset retention"),
        ConfigDef("group.initial.rebalance.delay.ms", "int", "3000",
                  "wait for more members before the first rebalance"),
        ConfigDef("group.min.session.timeout.ms", "int", "6000", "lowest session timeout"),
        ConfigDef("group.max.session.timeout.ms", "int", "1800000", "highest session timeout"),
        ConfigDef("group.max.size", "int", "2147483647", "members per group"),
        ConfigDef("offsets.topic.num.partitions", "int", "50", "reported only"),
        ConfigDef("transactional.id.expiration.ms", "int", "604800000",
                  "forget a transactional id idle (no transaction) this long"),
        ConfigDef("transaction.max.timeout.ms", "int", "900000",
                  "largest transaction.timeout.ms a producer may ask for"),
        ConfigDef("transaction.abort.timed.out.transaction.cleanup.interval.ms", "int", "10000",
                  "how often transactions past their timeout are aborted"),
        ConfigDef("transaction.remove.expired.transaction.cleanup.interval.ms", "int",
                  "3600000", "how often expired transactional ids are removed"),
        ConfigDef("producer.id.expiration.ms", "int", "86400000",
                  "forget idle producer ids after this long"),
        ConfigDef("log.cleaner.enable", "boolean", "true", "run the log cleaner"),
        ConfigDef("log.cleaner.threads", "int", "1", "cleaner threads (worker processes)"),
        ConfigDef("log.cleaner.backoff.ms", "long", "15000", "sleep when no log needs cleaning"),
        ConfigDef("log.cleaner.dedupe.buffer.size", "long", "134217728",
                  "offset map memory, all cleaner threads"),
        ConfigDef("log.cleaner.io.max.bytes.per.second", "double", "1.7976931348623157E308",
                  "cleaner read+write rate limit"),
        ConfigDef("producer.id.expiration.check.interval.ms", "int", "600000",
                  "how often expired producer ids are removed"),
        ConfigDef("acks.all.fsync", "boolean", "true",
                  "nerve: answer acks=all only after fsync (group commit)"),
        ConfigDef("authorizer.class.name", "class", "",
                  "org.apache.kafka.metadata.authorizer.StandardAuthorizer turns ACLs on"),
        ConfigDef("super.users", "list", "", "principals allowed everything, ;-separated"),
        ConfigDef("allow.everyone.if.no.acl.found", "boolean", "false",
                  "allow an action on a resource that has no ACL at all"),
        ConfigDef("max.partitions", "int", "0",
                  "nerve (KIP-578's name): most partitions this broker holds; 0: 4 x the open "
                  "file limit"),
        *SECURITY_CONFIGS,
        *(
            ConfigDef(t.broker_name, t.type, t.default, t.doc)
            for t in TOPIC_CONFIGS.values()
            if t.broker_name
        ),
    )
}


class ConfigError(ValueError):
    pass


# Kafka's validators (ConfigDef.Range / ValidString / ValidList in LogConfig), keyed by topic
# config name; their messages are Kafka's, which admin clients show and frameworks match on.
# One deliberate gap: segment.bytes has no 1 MiB minimum (Kafka's tests use the internal
# internal.segment.bytes for small segments; nerve's tests and demos use segment.bytes).
_AT_LEAST = {"delete.retention.ms": 0, "file.delete.delay.ms": 0, "flush.messages": 1,
             "flush.ms": 0, "index.interval.bytes": 0, "max.compaction.lag.ms": 1,
             "max.message.bytes": 0, "min.compaction.lag.ms": 0, "min.insync.replicas": 1,
             "retention.ms": -1, "segment.index.bytes": 4,
             "segment.ms": 1, "min.cleanable.dirty.ratio": 0}
_NO_MORE_THAN = {"min.cleanable.dirty.ratio": 1}
_ONE_OF = {"cleanup.policy": ("compact", "delete"),
           "compression.type": ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"),
           "message.timestamp.type": ("CreateTime", "LogAppendTime"),
           "log.message.timestamp.type": ("CreateTime", "LogAppendTime")}
_INT_BITS = {"int": 32, "long": 64, "short": 16}
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DOUBLE = re.compile(r"[+-]?(NaN|Infinity|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[fFdD]?)")


def invalid_value(name: str, value: object, why: str) -> ConfigError:
    """Kafka's ConfigException text."""
    return ConfigError(f"Invalid value {value} for configuration {name}: {why}")


def _java_double(x: float) -> str:
    """How Java prints a double (Kafka shows the parsed value): 2.0, -0.5, 1.0E-5."""
    if x != x or x in (float("inf"), float("-inf")):
        return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")
    if x == 0 or 1e-3 <= abs(x) < 1e7:
        return repr(x)
    mantissa, exponent = f"{x:.15e}".split("e")
    mantissa = mantissa.rstrip("0")
    return f"{mantissa}{'0' if mantissa.endswith('.') else ''}E{int(exponent)}"


_PER_LISTENER = ("ssl.", "sasl.enabled.mechanisms", "connections.max.reauth.ms")


def listener_key_base(key: str) -> str | None:
    """`listener.name.<l>.<key>` -> the broker config it overrides (None: not such a key)."""
    if not key.startswith("listener.name."):
        return None
    _, _, rest = key[len("listener.name."):].partition(".")
    if rest.endswith(".sasl.jaas.config"):
        return "sasl.jaas.config"
    if rest.startswith(_PER_LISTENER) and rest in BROKER_CONFIGS:
        return rest
    return None


def _check_value(defn: ConfigDef, value: str) -> str:
    name, raw = defn.name, value.strip()  # Kafka trims before parsing
    parsed: int | float | None = None
    if defn.type in _INT_BITS:
        bits = _INT_BITS[defn.type]
        if not _INTEGER.fullmatch(raw) or not -(1 << bits - 1) <= int(raw) < 1 << bits - 1:
            raise invalid_value(name, value, f"Not a number of type {defn.type.upper()}")
        parsed = int(raw)
    elif defn.type == "double":
        if not _DOUBLE.fullmatch(raw):
            raise invalid_value(name, value, "Not a number of type DOUBLE")
        parsed = float(raw.rstrip("fFdD").replace("Infinity", "inf"))
    elif defn.type == "boolean" and raw.lower() not in ("true", "false"):
        raise invalid_value(name, value, "Expected value to be either true or false")
    if parsed is not None:
        shown = _java_double(parsed) if defn.type == "double" else parsed
        if name in _AT_LEAST and parsed < _AT_LEAST[name]:
            raise invalid_value(name, shown, f"Value must be at least {_AT_LEAST[name]}")
        if name in _NO_MORE_THAN and parsed > _NO_MORE_THAN[name]:
            raise invalid_value(name, shown, f"Value must be no more than {_NO_MORE_THAN[name]}")
    if name in _ONE_OF:
        items = [v.strip() for v in raw.split(",")] if defn.type == "list" else [raw]
        for item in items:
            if item not in _ONE_OF[name] and not (defn.type == "list" and item == ""):
                raise invalid_value(name, item,
                                    f"String must be one of: {', '.join(_ONE_OF[name])}")
    if defn.name == "authorizer.class.name" and value.strip() and value.strip() not in (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "kafka.security.authorizer.AclAuthorizer",
    ):
        raise ConfigError(f"authorizer.class.name {value!r} is not supported (use "
                          "org.apache.kafka.metadata.authorizer.StandardAuthorizer)")
    if name == "remote.storage.enable" and raw.lower() == "true":
        # Accepting it would promise tiering that never happens.
        raise invalid_value(name, value, "nerve has no tiered storage")
    if defn.type == "boolean":
        return raw.lower()
    return raw if parsed is not None else value


def _logical_lines(text: str) -> list[str]:
    """Physical lines joined where one ends in an odd number of backslashes (Java's
    continuation: inline PEM keys and JAAS lines span several)."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip() if pending else raw
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending += line[:-1]
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return out


def parse_properties(text: str) -> dict[str, str]:
    """Java-properties-style `key=value` lines; `#` and `!` start comments; a trailing `\\`
    continues the line."""
    out: dict[str, str] = {}
    for raw in _logical_lines(text):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep:
            raise ConfigError(f"not a key=value line: {raw!r}")
        out[key.strip()] = value.strip()
    return out


@dataclass
class BrokerConfig:
    """Broker settings: explicit overrides on top of Kafka's defaults."""

    overrides: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in list(self.overrides.items()):
            defn = BROKER_CONFIGS.get(key)
            base = listener_key_base(key) if defn is None else None
            if base is not None:
                defn = BROKER_CONFIGS[base]
            if defn is None:
                raise ConfigError(f"unknown broker config {key!r}")
            self.overrides[key] = _check_value(defn, value)

    @classmethod
    def load(cls, config_file: Path | None = None, sets: Mapping[str, str] = ()) -> BrokerConfig:
        values: dict[str, str] = {}
        if config_file is not None:
            values.update(parse_properties(Path(config_file).read_text()))
        values.update(dict(sets))
        return cls(values)

    def get(self, key: str) -> str | None:
        if key in self.overrides:
            return self.overrides[key]
        if key == "log.retention.ms" and "log.retention.hours" in self.overrides:
            return str(int(self.overrides["log.retention.hours"]) * 3_600_000)
        return BROKER_CONFIGS[key].default

    def get_int(self, key: str) -> int:
        value = self.get(key)
        assert value is not None
        return int(value)

    def for_listener(self, listener: str, key: str) -> str | None:
        """`key` as `listener` sees it: its listener.name.<l>.<key> override, else the
        broker's value."""
        prefixed = f"listener.name.{listener.lower()}.{key}"
        if prefixed in self.overrides:
            return self.overrides[prefixed]
        return self.get(key)

    def get_bool(self, key: str) -> bool:
        return (self.get(key) or "false").lower() == "true"

    def source(self, key: str) -> Literal["static_broker", "default"]:
        return "static_broker" if key in self.overrides else "default"


def validate_topic_configs(configs: Mapping[str, str]) -> dict[str, str]:
    """Checked copy of topic config overrides; raises ConfigError on unknown keys or values."""
    unknown = [key for key in configs if key not in TOPIC_CONFIGS]
    if unknown:  # Kafka checks every name before any value
        raise ConfigError(f"Unknown topic config name: {unknown[0]}")
    return {key: _check_value(TOPIC_CONFIGS[key], value) for key, value in configs.items()}


@dataclass(frozen=True)
class TopicConfig:
    """The effective config of one topic: its overrides over the broker's values."""

    overrides: Mapping[str, str]
    broker: BrokerConfig
    # Resolved values: a TopicConfig is replaced, never changed, when the topic's configs
    # change, so each key is looked up once (append reads several per batch).
    _ints: dict[str, int] = field(default_factory=dict, init=False, compare=False, repr=False)

    def get(self, key: str) -> str:
        if key in self.overrides:
            return self.overrides[key]
        defn = TOPIC_CONFIGS[key]
        if defn.broker_name is not None:
            value = self.broker.get(defn.broker_name)
            if value is not None:
                return value
        assert defn.default is not None
        return defn.default

    def get_int(self, key: str) -> int:
        value = self._ints.get(key)
        if value is None:
            value = self._ints[key] = int(self.get(key))
        return value

    def source(self, key: str) -> Literal["topic", "static_broker", "default"]:
        if key in self.overrides:
            return "topic"
        defn = TOPIC_CONFIGS[key]
        if defn.broker_name and defn.broker_name in self.broker.overrides:
            return "static_broker"
        return "default"

    @property
    def segment_bytes(self) -> int:
        return self.get_int("segment.bytes")

    @property
    def segment_ms(self) -> int:
        """segment.ms, or max.compaction.lag.ms when shorter on a compacted topic (Kafka rolls
        then so the records can be cleaned in time)."""
        ms = self.get_int("segment.ms")
        if "compact" in self.get("cleanup.policy"):
            ms = min(ms, max(self.get_int("max.compaction.lag.ms"), 1))
        return ms

    @property
    def retention_ms(self) -> int:
        return self.get_int("retention.ms")

    @property
    def retention_bytes(self) -> int:
        return self.get_int("retention.bytes")

    @property
    def max_message_bytes(self) -> int:
        return self.get_int("max.message.bytes")

    @property
    def index_interval_bytes(self) -> int:
        return self.get_int("index.interval.bytes")

    @property
    def flush_messages(self) -> int:
        return self.get_int("flush.messages")

    @property
    def flush_ms(self) -> int:
        return self.get_int("flush.ms")

    @property
    def log_append_time(self) -> bool:
        value = self._ints.get("message.timestamp.type")
        if value is None:
            value = self._ints["message.timestamp.type"] = int(
                self.get("message.timestamp.type") == "LogAppendTime")
        return bool(value)

    @property
    def compacted(self) -> bool:
        """cleanup.policy includes compact (compact or compact,delete)."""
        return "compact" in self.get("cleanup.policy")
