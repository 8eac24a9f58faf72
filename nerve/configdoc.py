"""docs/configuration.md, generated from the config table (nerve/config.py).

    python -m nerve.configdoc          # rewrite docs/configuration.md
    python -m nerve.configdoc --check  # exit 1 if it is out of date

tests/unit/test_configuration_doc.py fails when the file and the table differ. A setting added
to nerve/config.py appears here by itself; its Kafka meaning comes from KAFKA_MEANING below
(add one line there; a setting Kafka lacks goes in NERVE_ONLY).
"""

from __future__ import annotations

import sys
from pathlib import Path

from nerve.config import BROKER_CONFIGS, TOPIC_CONFIGS, ConfigDef

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
REGENERATE = "python -m nerve.configdoc"

# What each setting means in Apache Kafka 4 (its documentation, in a line).
KAFKA_MEANING: dict[str, str] = {
    # topic configs
    "cleanup.policy": "delete: old segments are removed by retention; compact: only the "
                      "latest record per key is kept",
    "compression.type": "codec of stored batches; producer keeps the producer's codec",
    "delete.retention.ms": "how long tombstones stay in a compacted log",
    "file.delete.delay.ms": "delay before a deleted segment's files are removed",
    "flush.messages": "fsync after this many messages (Kafka leaves it to the OS)",
    "flush.ms": "fsync at least this often (Kafka leaves it to the OS)",
    "index.interval.bytes": "bytes between offset-index entries",
    "max.message.bytes": "largest record batch accepted",
    "message.timestamp.type": "CreateTime (producer's) or LogAppendTime (broker's)",
    "min.insync.replicas": "replicas that must have a write for acks=all",
    "retention.bytes": "size limit of a partition's log (-1: none)",
    "retention.ms": "age limit of a log's segments (-1: forever)",
    "segment.bytes": "segment size at which a new one is rolled",
    "segment.index.bytes": "size of a segment's offset index",
    "segment.ms": "segment age at which a new one is rolled",
    "unclean.leader.election.enable": "let an out-of-sync replica become leader",
    # broker configs
    "node.id": "this broker's id in the cluster",
    "num.partitions": "partitions of a topic created without a count (auto-creation, -1)",
    "default.replication.factor": "replication factor of a topic created without one",
    "auto.create.topics.enable": "create a topic when a client asks Metadata for it",
    "delete.topic.enable": "allow DeleteTopics",
    "socket.request.max.bytes": "largest request the broker reads",
    "queued.max.request.bytes": "request bytes queued at once before reading pauses",
    "max.connections": "connections the broker accepts at once",
    "max.connections.per.ip": "connections accepted at once from one address",
    "connections.max.idle.ms": "idle connections are closed after this long",
    "log.retention.check.interval.ms": "how often retention is applied",
    "log.retention.hours": "log.retention.ms in hours",
    "offsets.retention.minutes": "committed offsets of an empty group are kept this long",
    "group.initial.rebalance.delay.ms": "wait for more members before a new group's first "
                                        "rebalance",
    "group.min.session.timeout.ms": "smallest session.timeout.ms a consumer may ask for",
    "group.max.session.timeout.ms": "largest session.timeout.ms a consumer may ask for",
    "group.max.size": "members a group may have",
    "offsets.topic.num.partitions": "partitions of __consumer_offsets",
    "transactional.id.expiration.ms": "an idle transactional id is forgotten after this long",
    "transaction.max.timeout.ms": "largest transaction.timeout.ms a producer may ask for",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms":
        "how often timed-out transactions are aborted",
    "transaction.remove.expired.transaction.cleanup.interval.ms":
        "how often expired transactional ids are removed",
    "producer.id.expiration.ms": "an idle producer id's state is dropped after this long",
    "producer.id.expiration.check.interval.ms": "how often expired producer ids are removed",
    "allow.everyone.if.no.acl.found": "allow a request on a resource no ACL names",
    "authorizer.class.name": "the authorizer that checks ACLs (empty: none)",
    "super.users": "principals every operation is allowed to",
    "log.cleanup.policy": "default cleanup.policy",
    "log.cleaner.delete.retention.ms": "default delete.retention.ms",
    "log.segment.delete.delay.ms": "default file.delete.delay.ms",
    "log.flush.interval.messages": "default flush.messages",
    "log.flush.interval.ms": "default flush.ms",
    "log.index.interval.bytes": "default index.interval.bytes",
    "message.max.bytes": "default max.message.bytes",
    "log.message.timestamp.type": "default message.timestamp.type",
    "log.retention.bytes": "default retention.bytes",
    "log.retention.ms": "default retention.ms",
    "log.segment.bytes": "default segment.bytes",
    "log.index.size.max.bytes": "default segment.index.bytes",
    "log.roll.ms": "default segment.ms",
    "log.cleaner.backoff.ms": "how long the cleaner sleeps when no log needs cleaning",
    "log.cleaner.dedupe.buffer.size": "memory for the cleaner's offset map, all threads",
    "log.cleaner.enable": "run the log cleaner (compacted topics need it)",
    "log.cleaner.io.max.bytes.per.second": "cleaner I/O limit (read + write)",
    "log.cleaner.max.compaction.lag.ms": "default max.compaction.lag.ms",
    "log.cleaner.min.cleanable.ratio": "default min.cleanable.dirty.ratio",
    "log.cleaner.min.compaction.lag.ms": "default min.compaction.lag.ms",
    "log.cleaner.threads": "cleaner threads",
    "max.incremental.fetch.session.cache.slots": "incremental fetch sessions kept (KIP-227)",
    "max.compaction.lag.ms": "longest a record may stay uncompacted",
    "min.cleanable.dirty.ratio": "dirty share of a log that makes it eligible for cleaning",
    "min.compaction.lag.ms": "shortest a record stays uncompacted",
    "listeners": "the addresses and listener names the broker binds",
    "advertised.listeners": "the addresses clients are told, per listener",
    "listener.security.protocol.map": "listener name -> security protocol",
    "inter.broker.listener.name": "listener brokers talk to each other on",
    "security.inter.broker.protocol": "security protocol between brokers",
    "sasl.mechanism.inter.broker.protocol": "SASL mechanism between brokers",
    "sasl.enabled.mechanisms": "SASL mechanisms the broker offers",
    "sasl.jaas.config": "JAAS login module line",
    "connections.max.reauth.ms": "SASL session lifetime; clients re-authenticate (KIP-368)",
    "ssl.keystore.type": "key store format (JKS, PKCS12, PEM)",
    "ssl.keystore.location": "key store file",
    "ssl.keystore.password": "key store password",
    "ssl.keystore.key": "PEM private key, inline",
    "ssl.keystore.certificate.chain": "PEM certificate chain, inline",
    "ssl.key.password": "password of the private key",
    "ssl.truststore.type": "trust store format (JKS, PKCS12, PEM)",
    "ssl.truststore.location": "trust store file",
    "ssl.truststore.password": "trust store password",
    "ssl.truststore.certificates": "PEM trusted certificates, inline",
    "ssl.client.auth": "none, requested or required client certificates",
    "ssl.enabled.protocols": "TLS versions enabled",
    "ssl.protocol": "TLS protocol of the SSLContext",
    "ssl.cipher.suites": "cipher suites enabled (empty: the JVM's)",
    "ssl.endpoint.identification.algorithm": "host name verification of the peer",
    "ssl.principal.mapping.rules": "rules mapping a certificate DN to a principal name",
}
# Settings Apache Kafka does not have.
NERVE_ONLY = {"acks.all.fsync", "max.partitions"}


def _cell(s: str | None) -> str:
    return "-" if s is None or s == "" else s.replace("|", "\\|").replace("\n", " ")


def _kafka(d: ConfigDef) -> str:
    if d.name in NERVE_ONLY:
        return "nerve only"
    return KAFKA_MEANING.get(d.name, "as in Kafka's documentation")


def render() -> str:
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from nerve/config.py by `python -m nerve.configdoc`; do not edit. -->",
        "",
        "Every setting nerve accepts, named as Apache Kafka names it. Broker settings come from",
        "`nerve serve --set KEY=VALUE` (repeatable) or `--config FILE` (server.properties",
        "style); an unknown key or a value of the wrong type stops the broker with one line.",
        "Topic settings are given at creation (`nerve topics create T -c KEY=VALUE`, or any",
        "client's CreateTopics) or changed later (`nerve topics alter`, IncrementalAlterConfigs);",
        "each defaults to the broker setting named beside it, as in Kafka. DescribeConfigs",
        "reports every value with its source (topic, static broker config, default).",
        "",
        "Command-line options of `nerve serve` itself (ports, data dir, console, metrics) are",
        "in `nerve serve --help`.",
        "",
        f"## Broker settings ({len(BROKER_CONFIGS)})",
        "",
        "| setting | type | default | in Kafka | in nerve |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(BROKER_CONFIGS):
        d = BROKER_CONFIGS[name]
        lines.append(f"| `{name}` | {d.type} | {_cell(d.default)} | {_cell(_kafka(d))} | "
                     f"{_cell(d.doc)} |")
    lines += [
        "",
        f"## Topic settings ({len(TOPIC_CONFIGS)})",
        "",
        "| setting | type | default | broker default from | in Kafka | in nerve |",
        "|---|---|---|---|---|---|",
    ]
    for name in sorted(TOPIC_CONFIGS):
        d = TOPIC_CONFIGS[name]
        broker = f"`{d.broker_name}`" if d.broker_name else "-"
        lines.append(f"| `{name}` | {d.type} | {_cell(d.default)} | {broker} | "
                     f"{_cell(_kafka(d))} | {_cell(d.doc)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
