"""Every group API at every version we advertise: the handler answers, and the answer encodes.

Requests are kio objects built for each version; the broker is a stand-in holding a real
GroupCoordinator (fake clock, temp dir), so no sockets are involved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nerve.config import BrokerConfig
from nerve.coordinator.coordinator import GroupCoordinator
from nerve.handlers import REGISTRY, RequestContext, load_handlers
from nerve.protocol.errors import ErrorCode
from nerve.protocol.framing import RequestHeader
from nerve.protocol.messages import build, encode_response, request_class

GROUP_KEYS = (8, 9, 10, 11, 12, 13, 14, 15, 16, 42, 47)


@dataclasses.dataclass
class FakeBroker:
    groups: GroupCoordinator
    node_id: int = 1
    advertised_host: str = "127.0.0.1"
    advertised_port: int = 9092

    def endpoint(self, listener_name: str) -> tuple[str, int]:
        return self.advertised_host, self.advertised_port


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[FakeBroker]:
    config = BrokerConfig({"group.initial.rebalance.delay.ms": "0"})
    gc = GroupCoordinator(tmp_path, config, partition_count={"t": 3}.get)
    await gc.start()
    yield FakeBroker(gc)
    await gc.stop()


async def call(broker: FakeBroker, key: int, version: int, data: dict[str, Any]) -> Any:
    load_handlers()
    request = build(request_class(key, version), data)
    ctx = RequestContext(broker, RequestHeader(key, version, 1, "client-x", 0),  # type: ignore[arg-type]
                         "127.0.0.1", 50000, 1)
    response = await REGISTRY[key].handler(ctx, request)
    encode_response(response)  # must be valid for this version
    return response


def test_advertised_ranges() -> None:
    load_handlers()
    assert {k: (REGISTRY[k].min_version, REGISTRY[k].max_version) for k in GROUP_KEYS} == {
        8: (2, 9), 9: (1, 9), 10: (0, 6), 11: (0, 9), 12: (0, 4), 13: (0, 5), 14: (0, 5),
        15: (0, 5), 16: (0, 5), 42: (0, 2), 47: (0, 0)}


def protocols() -> list[dict[str, Any]]:
    return [{"name": "range", "metadata": b"\x00\x01meta"}]


async def join_and_sync(broker: FakeBroker, group: str, jv: int, sv: int) -> tuple[str, int]:
    base = {"group_id": group, "session_timeout": 10_000, "rebalance_timeout": 10_000,
            "member_id": "", "protocol_type": "consumer", "protocols": protocols()}
    r = await call(broker, 11, jv, base)
    if jv >= 4:
        assert r.error_code is ErrorCode.member_id_required
        r = await call(broker, 11, jv, {**base, "member_id": r.member_id})
    assert r.error_code is ErrorCode.none, (jv, r)
    assert r.leader == r.member_id and len(r.members) == 1
    assert r.members[0].metadata == b"\x00\x01meta"
    member, generation = r.member_id, r.generation_id
    s = await call(broker, 14, sv, {
        "group_id": group, "generation_id": generation, "member_id": member,
        "protocol_type": "consumer", "protocol_name": "range",
        "assignments": [{"member_id": member, "assignment": b"assigned"}]})
    assert (s.error_code, s.assignment) == (ErrorCode.none, b"assigned")
    return member, generation


@pytest.mark.parametrize("jv", range(10))
async def test_join_sync_heartbeat_leave_every_version(broker: FakeBroker, jv: int) -> None:
    group = f"g{jv}"
    member, generation = await join_and_sync(broker, group, jv, min(jv, 5))
    for hv in range(5):
        r = await call(broker, 12, hv, {"group_id": group, "generation_id": generation,
                                        "member_id": member})
        assert r.error_code is ErrorCode.none
    r = await call(broker, 12, 4, {"group_id": group, "generation_id": generation + 1,
                                   "member_id": member})
    assert r.error_code is ErrorCode.illegal_generation
    lv = min(jv, 5)
    leave = {"group_id": group, "member_id": member,
             "members": [{"member_id": member, "group_instance_id": None}]}
    r = await call(broker, 13, lv, leave)
    assert r.error_code is ErrorCode.none
    r = await call(broker, 13, lv, leave)  # gone now
    if lv >= 3:
        assert [m.error_code for m in r.members] == [ErrorCode.unknown_member_id]
    else:
        assert r.error_code is ErrorCode.unknown_member_id


async def test_offset_commit_and_fetch_every_version(broker: FakeBroker) -> None:
    for cv in range(2, 10):
        group = f"simple{cv}"
        r = await call(broker, 8, cv, {
            "group_id": group, "generation_id_or_member_epoch": -1, "member_id": "",
            "retention_time": -1,
            "topics": [{"name": "t", "partitions": [
                {"partition_index": 0, "committed_offset": 10 + cv, "committed_leader_epoch": 4,
                 "committed_metadata": f"m{cv}"},
                {"partition_index": 7, "committed_offset": 1, "committed_metadata": None}]}]})
        assert [p.error_code for p in r.topics[0].partitions] == [
            ErrorCode.none, ErrorCode.unknown_topic_or_partition]
        for fv in range(1, 10):
            topics = [{"name": "t", "partition_indexes": [0, 1]}]
            if fv >= 8:
                r = await call(broker, 9, fv, {"groups": [
                    {"group_id": group, "topics": topics},
                    {"group_id": "nothing", "topics": None}]})
                parts = r.groups[0].topics[0].partitions
                assert r.groups[1].topics == ()
            else:
                r = await call(broker, 9, fv, {"group_id": group, "topics": topics})
                parts = r.topics[0].partitions
            assert [(p.committed_offset, p.metadata) for p in parts] == [
                (10 + cv, f"m{cv}"), (-1, "")]
            if fv >= 5:
                want = 4 if cv >= 6 else -1
                assert [p.committed_leader_epoch for p in parts] == [want, -1]
        # all topics (null) from v2
        r = await call(broker, 9, 7, {"group_id": group, "topics": None})
        assert [t.name for t in r.topics] == ["t"]


async def test_find_coordinator_every_version(broker: FakeBroker) -> None:
    for v in range(7):
        r = await call(broker, 10, v, {"key": "g", "key_type": 0, "coordinator_keys": ["a", "b"]})
        if v >= 4:
            assert [(c.key, c.node_id, c.port) for c in r.coordinators] == [
                ("a", 1, 9092), ("b", 1, 9092)]
        else:
            assert (r.error_code, r.node_id, r.host) == (ErrorCode.none, 1, "127.0.0.1")
    # Transactional ids: this node once its transaction coordinator runs (none here).
    r = await call(broker, 10, 6, {"key_type": 1, "coordinator_keys": ["txn"]})
    assert (r.coordinators[0].error_code, r.coordinators[0].node_id) == (
        ErrorCode.coordinator_not_available, -1)


async def test_describe_list_delete_every_version(broker: FakeBroker) -> None:
    member, _ = await join_and_sync(broker, "live", 9, 5)
    await call(broker, 8, 9, {"group_id": "empty", "generation_id_or_member_epoch": -1,
                              "member_id": "", "topics": [{"name": "t", "partitions": [
                                  {"partition_index": 1, "committed_offset": 3}]}]})
    for v in range(6):
        r = await call(broker, 15, v, {"groups": ["live", "empty", "missing"]})
        live, empty, missing = r.groups
        assert (live.group_state, live.protocol_type, live.protocol_data) == (
            "Stable", "consumer", "range")
        assert live.members[0].member_id == member
        assert live.members[0].client_host == "/127.0.0.1"
        assert live.members[0].member_assignment == b"assigned"
        assert (empty.group_state, empty.protocol_type) == ("Empty", "")
        assert missing.group_state == "Dead"
    for v in range(6):
        r = await call(broker, 16, v, {"states_filter": ["stable"], "types_filter": []})
        names = sorted(g.group_id for g in r.groups)
        assert names == (["live"] if v >= 4 else ["empty", "live"])
    r = await call(broker, 16, 5, {"types_filter": ["consumer"]})
    assert r.groups == ()
    r = await call(broker, 47, 0, {"group_id": "live", "topics": [
        {"name": "t", "partitions": [{"partition_index": 1}]}]})
    assert r.error_code is ErrorCode.none  # subscription metadata unparseable: not subscribed
    for v in range(3):
        r = await call(broker, 42, v, {"groups_names": ["live", "missing"]})
        assert [x.error_code for x in r.results] == [
            ErrorCode.non_empty_group, ErrorCode.group_id_not_found]
    r = await call(broker, 42, 2, {"groups_names": ["empty"]})
    assert r.results[0].error_code is ErrorCode.none
    r = await call(broker, 47, 0, {"group_id": "empty", "topics": []})
    assert r.error_code is ErrorCode.group_id_not_found


async def test_join_errors(broker: FakeBroker) -> None:
    base = {"group_id": "", "session_timeout": 10_000, "member_id": "",
            "protocol_type": "consumer", "protocols": protocols()}
    r = await call(broker, 11, 5, base)
    assert r.error_code is ErrorCode.invalid_group_id
    r = await call(broker, 11, 5, {**base, "group_id": "x", "session_timeout": 10})
    assert r.error_code is ErrorCode.invalid_session_timeout
    r = await call(broker, 11, 5, {**base, "group_id": "x", "member_id": "ghost"})
    assert r.error_code is ErrorCode.unknown_member_id
    r = await call(broker, 11, 6, {**base, "group_id": "x", "protocols": []})
    assert r.error_code is ErrorCode.inconsistent_group_protocol


async def test_request_level_errors_match_kafka(broker: FakeBroker) -> None:
    # Checked against Apache Kafka 4.1.1 with raw requests.
    r = await call(broker, 14, 5, {"group_id": "nope", "generation_id": 1, "member_id": "m",
                                   "protocol_type": None, "protocol_name": None})
    assert r.error_code is ErrorCode.inconsistent_group_protocol
    r = await call(broker, 14, 4, {"group_id": "nope", "generation_id": 1, "member_id": "m"})
    assert r.error_code is ErrorCode.unknown_member_id
    await call(broker, 8, 9, {"group_id": "e", "generation_id_or_member_epoch": -1,
                              "member_id": "", "topics": [{"name": "t", "partitions": [
                                  {"partition_index": 0, "committed_offset": 3}]}]})
    r = await call(broker, 47, 0, {"group_id": "e", "topics": [
        {"name": "t", "partitions": [{"partition_index": 0}, {"partition_index": 9}]},
        {"name": "other", "partitions": [{"partition_index": 0}]}]})
    assert [[p.error_code for p in t.partitions] for t in r.topics] == [
        [ErrorCode.none, ErrorCode.unknown_topic_or_partition],
        [ErrorCode.unknown_topic_or_partition]]
