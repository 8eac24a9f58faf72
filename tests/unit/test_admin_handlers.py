"""Admin/topic API handlers, called directly on a real BrokerCore (real storage in a temp dir).

Every version of every admin API is built, handled and encoded; the semantics (errors, config
sources, validate_only, list operations) are checked on the response objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nerve.broker import BrokerCore
from nerve.config import TOPIC_CONFIGS, BrokerConfig
from nerve.handlers import REGISTRY, RequestContext, load_handlers
from nerve.protocol.errors import ErrorCode
from nerve.protocol.framing import RequestHeader
from nerve.protocol.messages import (
    ZERO_UUID,
    build,
    decode_request,
    encode_response,
    request_class,
)

E = ErrorCode


@pytest.fixture
def core(tmp_path: Path) -> Iterator[BrokerCore]:
    load_handlers()
    c = BrokerCore(tmp_path / "data", BrokerConfig({"num.partitions": "2",
                                                     "log.segment.bytes": "2000000"}),
                   advertised_host="127.0.0.1", advertised_port=9092)
    c.load()
    yield c
    c.logs.close()


async def call(core: BrokerCore, key: int, version: int, body: dict[str, Any]) -> Any:
    """Build the request, round-trip it through kio's codec, handle it, encode the answer."""
    import io

    from kio.serial import entity_writer

    req = build(request_class(key, version), body)
    out = io.BytesIO()
    entity_writer(type(req))(out, req)
    req = decode_request(key, version, out.getvalue(), 0)
    ctx = RequestContext(core, RequestHeader(key, version, 7, "unit", 0), "127.0.0.1", 1, 1)
    resp = await REGISTRY[key].handler(ctx, req)
    assert encode_response(resp)
    return resp


def topic(name: str, partitions: int = -1, rf: int = -1, configs: dict[str, str | None] | None
          = None, assignments: list[tuple[int, list[int]]] | None = None) -> dict[str, Any]:
    return {
        "name": name, "num_partitions": partitions, "replication_factor": rf,
        "assignments": [{"partition_index": p, "broker_ids": b} for p, b in assignments or []],
        "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()],
    }


async def create(core: BrokerCore, *topics: dict[str, Any], version: int = 7,
                 validate_only: bool = False) -> list[Any]:
    resp = await call(core, 19, version, {"topics": topics, "timeout": 5000,
                                          "validate_only": validate_only})
    return list(resp.topics)


# ---------------------------------------------------------------- every version encodes


@pytest.mark.parametrize("version", range(2, 8))
async def test_create_topics_every_version(core: BrokerCore, version: int) -> None:
    (r,) = await create(core, topic(f"t{version}", 3, 1, {"retention.ms": "1000"}),
                        version=version)
    assert r.error_code == E.none
    assert core.logs.topics[f"t{version}"].num_partitions == 3
    if version >= 5:
        assert r.num_partitions == 3 and r.replication_factor == 1
        got = {c.name: (c.value, c.config_source) for c in r.configs}
        assert got["retention.ms"] == ("1000", 1)
        assert got["segment.bytes"] == ("2000000", 4)
        assert got["flush.ms"][1] == 5
    if version >= 7:
        assert r.topic_id == core.logs.topics[f"t{version}"].topic_id != ZERO_UUID


@pytest.mark.parametrize("version", range(1, 7))
async def test_delete_topics_every_version(core: BrokerCore, version: int) -> None:
    await create(core, topic("gone"))
    if version >= 6:
        body: dict[str, Any] = {"topics": [{"name": "gone", "topic_id": ZERO_UUID},
                                           {"name": None, "topic_id": uuid.uuid4()},
                                           {"name": "nope", "topic_id": ZERO_UUID}]}
    else:
        body = {"topic_names": ["gone", "nope"]}
    resp = await call(core, 20, version, {**body, "timeout": 1000})
    codes = [r.error_code for r in resp.responses]
    if version >= 6:
        assert codes == [E.none, E.unknown_topic_id, E.unknown_topic_or_partition]
    else:
        assert codes == [E.none, E.unknown_topic_or_partition]
    assert "gone" not in core.logs.topics


@pytest.mark.parametrize("version", range(0, 4))
async def test_create_partitions_every_version(core: BrokerCore, version: int) -> None:
    await create(core, topic("grow", 1))
    resp = await call(core, 37, version, {
        "topics": [{"name": "grow", "count": 3, "assignments": None},
                   {"name": "nope", "count": 3, "assignments": None}],
        "timeout": 1000, "validate_only": False})
    assert [r.error_code for r in resp.results] == [E.none, E.unknown_topic_or_partition]
    assert core.logs.topics["grow"].num_partitions == 3
    assert core.logs.get_log("grow", 2) is not None


@pytest.mark.parametrize("version", range(1, 5))
async def test_describe_configs_every_version(core: BrokerCore, version: int) -> None:
    await create(core, topic("dc", configs={"cleanup.policy": "compact"}))
    resp = await call(core, 32, version, {
        "resources": [{"resource_type": 2, "resource_name": "dc", "configuration_keys": None},
                      {"resource_type": 4, "resource_name": "1",
                       "configuration_keys": ["num.partitions"]}],
        "include_synonyms": True, "include_documentation": True})
    t, b = resp.results
    assert t.error_code == E.none
    entries = {c.name: c for c in t.configs}
    assert entries["cleanup.policy"].value == "compact"
    assert entries["cleanup.policy"].config_source == 1
    assert [s.source for s in entries["cleanup.policy"].synonyms] == [1, 5]
    assert [s.name for s in entries["segment.bytes"].synonyms] == ["log.segment.bytes"] * 2
    (np,) = b.configs
    assert (np.name, np.value, np.config_source, np.read_only) == ("num.partitions", "2", 4, True)
    if version >= 3:
        assert entries["cleanup.policy"].config_type == 7
        assert entries["retention.ms"].config_type == 5
        assert entries["retention.ms"].documentation


@pytest.mark.parametrize("version", range(0, 3))
async def test_alter_configs_every_version(core: BrokerCore, version: int) -> None:
    await create(core, topic("ac", configs={"retention.ms": "1000"}))
    resp = await call(core, 33, version, {"validate_only": False, "resources": [
        {"resource_type": 2, "resource_name": "ac",
         "configs": [{"name": "segment.bytes", "value": "100000"}]}]})
    assert resp.responses[0].error_code == E.none
    # replace semantics: retention.ms is back to its default
    assert dict(core.logs.topics["ac"].overrides) == {"segment.bytes": "100000"}


@pytest.mark.parametrize("version", range(0, 2))
async def test_incremental_alter_configs_every_version(core: BrokerCore, version: int) -> None:
    await create(core, topic("iac", configs={"retention.ms": "1000"}))
    resp = await call(core, 44, version, {"validate_only": False, "resources": [
        {"resource_type": 2, "resource_name": "iac", "configs": [
            {"name": "segment.bytes", "config_operation": 0, "value": "100000"},
            {"name": "cleanup.policy", "config_operation": 2, "value": "compact"}]}]})
    assert resp.responses[0].error_code == E.none
    assert dict(core.logs.topics["iac"].overrides) == {
        "retention.ms": "1000", "segment.bytes": "100000", "cleanup.policy": "delete,compact"}


@pytest.mark.parametrize("version", range(0, 6))
async def test_init_producer_id_every_version(core: BrokerCore, version: int) -> None:
    a = await call(core, 22, version, {"transactional_id": None, "transaction_timeout": 1000})
    b = await call(core, 22, version, {"transactional_id": None, "transaction_timeout": 1000})
    assert a.error_code == b.error_code == E.none
    assert a.producer_epoch == 0 and b.producer_id != a.producer_id


@pytest.mark.parametrize("version", range(2, 5))
async def test_offset_for_leader_epoch_every_version(core: BrokerCore, version: int) -> None:
    await create(core, topic("ofle", 1))
    resp = await call(core, 23, version, {"replica_id": -1, "topics": [
        {"topic": "ofle", "partitions": [
            {"partition": 0, "current_leader_epoch": 0, "leader_epoch": 0},
            {"partition": 0, "current_leader_epoch": 3, "leader_epoch": 0},
            {"partition": 0, "current_leader_epoch": -1, "leader_epoch": -1},
            {"partition": 5, "current_leader_epoch": -1, "leader_epoch": 0}]}]})
    p = resp.topics[0].partitions
    assert (p[0].error_code, p[0].leader_epoch, p[0].end_offset) == (E.none, 0, 0)
    assert p[1].error_code == E.unknown_leader_epoch
    assert (p[2].error_code, p[2].leader_epoch, p[2].end_offset) == (E.none, -1, -1)
    assert p[3].error_code == E.unknown_topic_or_partition


@pytest.mark.parametrize("version", range(1, 5))
async def test_describe_log_dirs_every_version(core: BrokerCore, version: int) -> None:
    await create(core, topic("ld", 2))
    resp = await call(core, 35, version, {"topics": None})
    (d,) = resp.results
    assert d.log_dir == str(core.data_dir.resolve())
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in d.topics] == [
        ("ld", [0, 1])]
    if version >= 4:
        assert d.total_bytes > 0 and d.usable_bytes >= 0
    resp = await call(core, 35, version, {"topics": [{"topic": "ld", "partitions": [1, 9]},
                                                     {"topic": "nope", "partitions": [0]}]})
    assert [(t.name, [p.partition_index for p in t.partitions])
            for t in resp.results[0].topics] == [("ld", [1])]


@pytest.mark.parametrize("version", range(0, 2))
async def test_describe_cluster_every_version(core: BrokerCore, version: int) -> None:
    resp = await call(core, 60, version, {"include_cluster_authorized_operations": False,
                                          "endpoint_type": 1})
    assert resp.error_code == E.none
    assert resp.controller_id == 1 and resp.cluster_id == core.cluster_id
    assert [(b.broker_id, b.host, b.port) for b in resp.brokers] == [(1, "127.0.0.1", 9092)]
    if version >= 1:
        resp = await call(core, 60, 1, {"include_cluster_authorized_operations": False,
                                        "endpoint_type": 2})
        assert resp.error_code == E.unsupported_endpoint_type


@pytest.mark.parametrize("version", range(0, 3))
async def test_delete_records_every_version(core: BrokerCore, version: int) -> None:
    await create(core, topic("dr", 1))
    resp = await call(core, 21, version, {"timeout": 1000, "topics": [
        {"name": "dr", "partitions": [{"partition_index": 0, "offset": -1},
                                      {"partition_index": 3, "offset": 0}]}]})
    p = resp.topics[0].partitions
    assert (p[0].error_code, p[0].low_watermark) == (E.none, 0)
    assert p[1].error_code == E.unknown_topic_or_partition
    resp = await call(core, 21, version, {"timeout": 1000, "topics": [
        {"name": "dr", "partitions": [{"partition_index": 0, "offset": 5}]}]})
    assert resp.topics[0].partitions[0].error_code == E.offset_out_of_range


# ---------------------------------------------------------------- semantics


async def test_create_topics_errors(core: BrokerCore) -> None:
    await create(core, topic("exists"))
    results = await create(
        core,
        topic("exists"),
        topic("rf3", 1, 3),
        topic("zero", 0),
        topic("bad name!"),
        topic("badcfg", configs={"retention.ms": "soon"}),
        topic("unknowncfg", configs={"no.such.config": "1"}),
        topic("nullcfg", configs={"retention.ms": None}),
        topic("twice"),
        topic("twice"),
        topic("both", 1, assignments=[(0, [1])]),
        topic("elsewhere", assignments=[(0, [2])]),
        topic("gap", assignments=[(0, [1]), (2, [1])]),
    )
    got = {(r.name, r.error_code) for r in results}
    assert got == {
        ("exists", E.topic_already_exists), ("rf3", E.invalid_replication_factor),
        ("zero", E.invalid_partitions), ("bad name!", E.invalid_topic_exception),
        ("badcfg", E.invalid_config), ("unknowncfg", E.invalid_config),
        ("nullcfg", E.invalid_config), ("twice", E.invalid_request),
        ("both", E.invalid_request), ("elsewhere", E.invalid_replica_assignment),
        ("gap", E.invalid_replica_assignment),
    }
    assert all(r.error_message for r in results)
    assert "only 1 broker(s)" in next(r for r in results if r.name == "rf3").error_message
    assert set(core.logs.topics) == {"exists"}


async def test_create_topics_defaults_and_assignments(core: BrokerCore) -> None:
    a, b = await create(core, topic("dflt"), topic("manual", assignments=[(1, [1]), (0, [1])]))
    assert (a.error_code, a.num_partitions) == (E.none, 2)  # num.partitions=2 on this broker
    assert (b.error_code, b.num_partitions) == (E.none, 2)
    assert core.logs.topics["manual"].num_partitions == 2


async def test_create_topics_validate_only(core: BrokerCore) -> None:
    (r,) = await create(core, topic("dry", 4, configs={"segment.bytes": "50000"}),
                        validate_only=True)
    assert (r.error_code, r.num_partitions, r.topic_id) == (E.none, 4, ZERO_UUID)
    assert {c.name: c.value for c in r.configs}["segment.bytes"] == "50000"
    assert "dry" not in core.logs.topics
    await create(core, topic("a.b"))
    results = await create(core, topic("bad/name"), topic("a_b"), topic("a.b"),
                           topic("bad name", 1, 3), validate_only=True)
    assert [r.error_code for r in results] == [
        E.invalid_topic_exception, E.invalid_topic_exception,  # a_b collides with a.b
        E.topic_already_exists, E.invalid_topic_exception]  # the name is checked first


async def test_delete_topics_disabled(tmp_path: Path) -> None:
    load_handlers()
    c = BrokerCore(tmp_path, BrokerConfig({"delete.topic.enable": "false"}),
                   advertised_host="h", advertised_port=1)
    c.load()
    await create(c, topic("keep"))
    resp = await call(c, 20, 4, {"topic_names": ["keep"], "timeout": 1000})
    assert resp.responses[0].error_code == E.topic_deletion_disabled
    assert "keep" in c.logs.topics
    c.logs.close()


async def test_create_partitions_errors(core: BrokerCore) -> None:
    await create(core, topic("cp", 2))
    resp = await call(core, 37, 3, {"timeout": 1000, "validate_only": False, "topics": [
        {"name": "cp", "count": 1, "assignments": None}]})
    assert resp.results[0].error_code == E.invalid_partitions
    assert "2 partition(s); 1 would not be an increase" in resp.results[0].error_message
    resp = await call(core, 37, 3, {"timeout": 1000, "validate_only": False, "topics": [
        {"name": "cp", "count": 2, "assignments": None}]})
    assert resp.results[0].error_code == E.invalid_partitions
    resp = await call(core, 37, 3, {"timeout": 1000, "validate_only": True, "topics": [
        {"name": "cp", "count": 5, "assignments": None}]})
    assert resp.results[0].error_code == E.none
    assert core.logs.topics["cp"].num_partitions == 2
    resp = await call(core, 37, 3, {"timeout": 1000, "validate_only": False, "topics": [
        {"name": "cp", "count": 4, "assignments": [{"broker_ids": [1]}]}]})
    assert resp.results[0].error_code == E.invalid_replica_assignment
    resp = await call(core, 37, 3, {"timeout": 1000, "validate_only": False, "topics": [
        {"name": "cp", "count": 4, "assignments": [{"broker_ids": [1]}, {"broker_ids": [1]}]}]})
    assert resp.results[0].error_code == E.none
    assert core.logs.topics["cp"].num_partitions == 4


async def test_describe_configs_errors_and_filters(core: BrokerCore) -> None:
    await create(core, topic("f"))
    resp = await call(core, 32, 4, {"include_synonyms": False, "include_documentation": False,
                                    "resources": [
        {"resource_type": 2, "resource_name": "f",
         "configuration_keys": ["retention.ms", "no.such"]},
        {"resource_type": 2, "resource_name": "missing", "configuration_keys": []},
        {"resource_type": 2, "resource_name": "bad name", "configuration_keys": None},
        {"resource_type": 2, "resource_name": "f", "configuration_keys": []},
        {"resource_type": 4, "resource_name": "", "configuration_keys": None},
        {"resource_type": 4, "resource_name": "7", "configuration_keys": None},
        {"resource_type": 8, "resource_name": "1", "configuration_keys": None}]})
    f, missing, bad, every, default, other, logger = resp.results
    assert [(c.name, c.value, c.config_source, c.synonyms, c.documentation)
            for c in f.configs] == [("retention.ms", "604800000", 5, (), None)]
    assert missing.error_code == E.unknown_topic_or_partition
    assert bad.error_code == E.invalid_topic_exception
    assert len(every.configs) == len(TOPIC_CONFIGS)  # an empty key list means all, as in Kafka
    assert (default.error_code, default.configs) == (E.none, ())
    assert other.error_code == E.invalid_request
    assert logger.error_code == E.invalid_request


async def test_alter_configs_errors(core: BrokerCore) -> None:
    await create(core, topic("ae", configs={"retention.ms": "1000"}))
    resp = await call(core, 33, 2, {"validate_only": False, "resources": [
        {"resource_type": 2, "resource_name": "ae",
         "configs": [{"name": "segment.bytes", "value": "lots"}]},
        {"resource_type": 2, "resource_name": "missing", "configs": []},
        {"resource_type": 4, "resource_name": "1",
         "configs": [{"name": "num.partitions", "value": "3"}]},
        {"resource_type": 4, "resource_name": "1", "configs": []}]})
    codes = [r.error_code for r in resp.responses]
    assert codes[:2] == [E.invalid_config, E.unknown_topic_or_partition]
    # the same broker resource twice: both are rejected
    assert codes[2:] == [E.invalid_request, E.invalid_request]
    assert dict(core.logs.topics["ae"].overrides) == {"retention.ms": "1000"}
    resp = await call(core, 33, 2, {"validate_only": False, "resources": [
        {"resource_type": 4, "resource_name": "1",
         "configs": [{"name": "num.partitions", "value": "3"}]}]})
    assert resp.responses[0].error_code == E.invalid_config
    assert "not supported" in resp.responses[0].error_message
    resp = await call(core, 33, 2, {"validate_only": True, "resources": [
        {"resource_type": 2, "resource_name": "ae", "configs": []}]})
    assert resp.responses[0].error_code == E.none
    assert dict(core.logs.topics["ae"].overrides) == {"retention.ms": "1000"}


async def test_incremental_alter_configs_operations(core: BrokerCore) -> None:
    await create(core, topic("io", configs={"retention.ms": "1000",
                                            "cleanup.policy": "delete,compact"}))

    async def alter(*ops: tuple[str, int, str | None], validate_only: bool = False) -> Any:
        resp = await call(core, 44, 1, {"validate_only": validate_only, "resources": [
            {"resource_type": 2, "resource_name": "io", "configs": [
                {"name": n, "config_operation": op, "value": v} for n, op, v in ops]}]})
        return resp.responses[0]

    assert (await alter(("cleanup.policy", 3, "delete"), ("retention.ms", 1, None))
            ).error_code == E.none
    assert dict(core.logs.topics["io"].overrides) == {"cleanup.policy": "compact"}
    assert (await alter(("segment.bytes", 2, "5"))).error_code == E.invalid_config
    assert (await alter(("segment.bytes", 9, "5"))).error_code == E.invalid_request
    assert (await alter(("retention.ms", 0, "1"), ("retention.ms", 0, "2"))
            ).error_code == E.invalid_request
    assert (await alter(("retention.ms", 0, "x"))).error_code == E.invalid_config
    assert (await alter(("retention.ms", 0, "5"), validate_only=True)).error_code == E.none
    assert dict(core.logs.topics["io"].overrides) == {"cleanup.policy": "compact"}


async def test_init_producer_id_reinit_and_transactions(core: BrokerCore) -> None:
    first = await call(core, 22, 4, {"transactional_id": None, "transaction_timeout": 1000,
                                     "producer_id": -1, "producer_epoch": -1})
    again = await call(core, 22, 4, {"transactional_id": None, "transaction_timeout": 1000,
                                     "producer_id": first.producer_id, "producer_epoch": 0})
    assert (again.producer_id, again.producer_epoch) == (first.producer_id, 1)
    worn = await call(core, 22, 4, {"transactional_id": None, "transaction_timeout": 1000,
                                    "producer_id": first.producer_id, "producer_epoch": 32766})
    assert worn.producer_id != first.producer_id and worn.producer_epoch == 0
    half = await call(core, 22, 4, {"transactional_id": None, "transaction_timeout": 1000,
                                    "producer_id": 5, "producer_epoch": -1})
    assert half.error_code == E.invalid_request
    # No transaction coordinator running in this core (tests/unit/test_transactions.py has one).
    txn = await call(core, 22, 4, {"transactional_id": "tx", "transaction_timeout": 1000})
    assert (txn.error_code, txn.producer_id) == (E.coordinator_not_available, -1)
