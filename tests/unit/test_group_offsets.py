"""Committed offsets: the durable log (reload, torn tail, compaction), retention rules, and the
GroupCoordinator's offset rules, with a fake clock."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from nerve.config import BrokerConfig
from nerve.coordinator import offsets as offsets_mod
from nerve.coordinator.coordinator import GroupCoordinator
from nerve.coordinator.group import GroupState, JoinRequest
from nerve.coordinator.offsets import (
    GroupRecord,
    OffsetAndMetadata,
    OffsetStore,
    commit_op,
    delete_group_op,
    delete_op,
    expired_offsets,
    group_op,
)
from nerve.protocol.errors import ErrorCode

DAY = 86_400_000


async def reopen(store: OffsetStore, data_dir: Path) -> OffsetStore:
    await store.close()
    fresh = OffsetStore(data_dir)
    fresh.load()
    return fresh


async def test_offsets_survive_reload_with_metadata_and_epoch(tmp_path: Path) -> None:
    store = OffsetStore(tmp_path)
    store.load()
    om = OffsetAndMetadata(42, 7, "meta ✓", 1000, -1)
    await store.append([commit_op("g", ("t", 0), om),
                        commit_op("g", ("t", 1), OffsetAndMetadata(5)),
                        group_op("g", GroupRecord("consumer", 3, 0, 999))])
    await store.append([commit_op("g", ("t", 1), OffsetAndMetadata(6))])
    store = await reopen(store, tmp_path)
    assert store.get("g") == {("t", 0): om, ("t", 1): OffsetAndMetadata(6)}
    assert store.groups["g"] == GroupRecord("consumer", 3, 0, 999)
    await store.close()


async def test_tombstones_survive_reload(tmp_path: Path) -> None:
    store = OffsetStore(tmp_path)
    store.load()
    await store.append([commit_op("a", ("t", 0), OffsetAndMetadata(1)),
                        commit_op("a", ("t", 1), OffsetAndMetadata(2)),
                        commit_op("b", ("t", 0), OffsetAndMetadata(3))])
    await store.append([delete_op("a", ("t", 0)), delete_group_op("b")])
    store = await reopen(store, tmp_path)
    assert store.offsets == {"a": {("t", 1): OffsetAndMetadata(2)}}
    await store.close()


@pytest.mark.parametrize("damage", ["torn", "crc"])
async def test_torn_or_corrupt_tail_is_truncated(tmp_path: Path, damage: str) -> None:
    store = OffsetStore(tmp_path)
    store.load()
    await store.append([commit_op("g", ("t", 0), OffsetAndMetadata(10))])
    await store.append([commit_op("g", ("t", 0), OffsetAndMetadata(11))])
    await store.close()
    path = store.path
    data = path.read_bytes()
    last = len(offsets_mod.encode_op(commit_op("g", ("t", 0), OffsetAndMetadata(11))))
    if damage == "torn":
        path.write_bytes(data[:-3])  # the last write stopped half way
    else:
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    fresh = OffsetStore(tmp_path)
    fresh.load()
    assert fresh.get("g") == {("t", 0): OffsetAndMetadata(10)}
    assert fresh.truncated_bytes == (last - 3 if damage == "torn" else last)
    assert path.stat().st_size == len(data) - last
    # and the log keeps working after the truncation
    await fresh.append([commit_op("g", ("t", 0), OffsetAndMetadata(12))])
    fresh = await reopen(fresh, tmp_path)
    assert fresh.get("g")[("t", 0)].offset == 12
    await fresh.close()


async def test_compaction_on_load_and_while_running(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = OffsetStore(tmp_path)
    store.load()
    for i in range(1500):
        await store.append([commit_op("g", ("t", i % 2), OffsetAndMetadata(i))])
    big = store.path.stat().st_size
    store = await reopen(store, tmp_path)  # mostly dead records: rewritten at load
    assert store.path.stat().st_size < big // 100
    assert store.get("g") == {("t", 0): OffsetAndMetadata(1498),
                              ("t", 1): OffsetAndMetadata(1499)}
    monkeypatch.setattr(offsets_mod, "COMPACT_MIN_RECORDS", 50)
    for i in range(60):
        await store.append([commit_op("g", ("t", 0), OffsetAndMetadata(2000 + i))])
    assert store.path.stat().st_size < 40 * 60
    store = await reopen(store, tmp_path)
    assert store.get("g")[("t", 0)].offset == 2059
    assert not (store.directory / "offsets.log.tmp").exists()
    await store.close()


async def test_concurrent_commits_share_fsync_rounds(tmp_path: Path) -> None:
    store = OffsetStore(tmp_path)
    store.load()
    await asyncio.gather(*(
        store.append([commit_op("g", ("t", i), OffsetAndMetadata(i))]) for i in range(50)
    ))
    assert len(store.get("g")) == 50
    assert store.rounds < 50
    await store.close()


def test_retention_rules() -> None:
    offs = {("a", 0): OffsetAndMetadata(1, commit_timestamp=0),
            ("b", 0): OffsetAndMetadata(1, commit_timestamp=5 * DAY),
            ("c", 0): OffsetAndMetadata(1, commit_timestamp=0, expire_timestamp=2 * DAY)}
    common = {"retention_ms": 7 * DAY, "subscribed_topics": None, "is_stable": False}
    # An emptied consumer group: retention counts from when it became empty (KIP-211).
    assert expired_offsets(offs, now=8 * DAY, protocol_type="consumer", is_empty=True,
                           empty_since=2 * DAY, **common) == [("c", 0)]
    assert sorted(expired_offsets(offs, now=9 * DAY, protocol_type="consumer", is_empty=True,
                                  empty_since=2 * DAY, **common)) == [
        ("a", 0), ("b", 0), ("c", 0)]
    # A simple group: from each commit.
    assert sorted(expired_offsets(offs, now=7 * DAY, protocol_type=None, is_empty=True,
                                  empty_since=0, **common)) == [("a", 0), ("c", 0)]
    # A group with members keeps everything, unless it is a stable consumer group that no
    # longer subscribes to a topic (KIP-496).
    assert expired_offsets(offs, now=30 * DAY, protocol_type="consumer", is_empty=False,
                           empty_since=0, **common) == []
    assert sorted(expired_offsets(offs, now=30 * DAY, protocol_type="consumer", is_empty=False,
                                  is_stable=True, empty_since=0, retention_ms=7 * DAY,
                                  subscribed_topics={"a"})) == [("b", 0), ("c", 0)]


# ---------------------------------------------------------------- the coordinator


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


def coordinator(tmp_path: Path, clock: Clock, **sets: str) -> GroupCoordinator:
    config = BrokerConfig({"group.initial.rebalance.delay.ms": "0",
                           "group.min.session.timeout.ms": "1000", **sets})
    topics = {"t": 2}
    return GroupCoordinator(tmp_path, config, partition_count=topics.get, clock=clock)


async def test_simple_commits_fetch_restart_and_retention(tmp_path: Path) -> None:
    clock = Clock()
    gc = coordinator(tmp_path, clock, **{"offsets.retention.minutes": "60"})
    await gc.start()
    om = OffsetAndMetadata(100, 3, "m", clock.now)
    errors = await gc.commit_offsets(
        "simple", member_id="", group_instance_id=None, generation_id=-1,
        offsets=[("t", 0, om), ("t", 9, om), ("nope", 0, om),
                 ("t", 1, OffsetAndMetadata(1, metadata="x" * 5000))], api_version=9)
    assert errors == [ErrorCode.none, ErrorCode.unknown_topic_or_partition,
                      ErrorCode.unknown_topic_or_partition, ErrorCode.offset_metadata_too_large]
    assert gc.fetch_offsets("simple", [("t", [0, 1])]) == [("t", [(0, om), (1, None)])]
    assert gc.fetch_offsets("simple", None) == [("t", [(0, om)])]
    assert gc.fetch_offsets("missing", None) == []
    # a generation for a group that does not exist
    for version, expected in ((8, ErrorCode.illegal_generation),
                              (9, ErrorCode.group_id_not_found)):
        assert await gc.commit_offsets(
            "nogroup", member_id="m", group_instance_id=None, generation_id=1,
            offsets=[("t", 0, om)], api_version=version) == [expected]
    await gc.stop()

    gc = coordinator(tmp_path, clock, **{"offsets.retention.minutes": "60"})
    await gc.start()
    assert gc.groups["simple"].state is GroupState.EMPTY
    assert ("simple", "", "Empty") in gc.list_groups()
    assert gc.fetch_offsets("simple", [("t", [0])]) == [("t", [(0, om)])]
    clock.now += 59 * 60_000
    assert await gc.expire_offsets() == 0
    clock.now += 60_000
    assert await gc.expire_offsets() == 1
    assert "simple" not in gc.groups  # empty and without offsets: gone
    await gc.stop()
    gc = coordinator(tmp_path, clock)
    await gc.start()
    assert gc.groups == {}
    await gc.stop()


async def join(gc: GroupCoordinator, group: str, member_id: str = "") -> tuple[str, int]:
    req = JoinRequest(member_id, None, "client", "/127.0.0.1", 10_000, 10_000, "consumer",
                      (("range", b"meta"),), require_known_member_id=False)
    result = await gc.join_group(group, req)
    assert result.error is ErrorCode.none
    return result.member_id, result.generation_id


async def test_consumer_group_commit_rules_and_delete(tmp_path: Path) -> None:
    clock = Clock()
    gc = coordinator(tmp_path, clock)
    await gc.start()
    member, generation = await join(gc, "g")  # initial delay 0: answered via a 0 s timer
    sync = await gc.sync_group("g", member_id=member, group_instance_id=None,
                               generation_id=generation, protocol_type="consumer",
                               protocol_name="range", assignments={member: b"A"})
    assert (sync.error, sync.assignment) == (ErrorCode.none, b"A")
    om = OffsetAndMetadata(5, commit_timestamp=clock.now)

    async def commit(member_id: str, gen: int) -> ErrorCode:
        (error,) = await gc.commit_offsets("g", member_id=member_id, group_instance_id=None,
                                           generation_id=gen, offsets=[("t", 0, om)],
                                           api_version=9)
        return error

    assert await commit(member, generation) is ErrorCode.none
    assert await commit(member, generation + 1) is ErrorCode.illegal_generation
    assert await commit("other", generation) is ErrorCode.unknown_member_id
    assert await commit("", -1) is ErrorCode.unknown_member_id  # members exist
    assert await gc.delete_groups(["g", "none"]) == {
        "g": ErrorCode.non_empty_group, "none": ErrorCode.group_id_not_found}
    assert await gc.delete_offsets("g", [("t", 0)]) == (ErrorCode.none, {("t", 0): ErrorCode.none})
    assert gc.fetch_offsets("g", None) == []
    assert await commit(member, generation) is ErrorCode.none
    assert gc.leave_group("g", [(member, None)]) == (ErrorCode.none, [ErrorCode.none])
    assert gc.groups["g"].state is GroupState.EMPTY
    assert gc.describe_group("g").state == "Empty"  # type: ignore[union-attr]
    assert await gc.delete_groups(["g"]) == {"g": ErrorCode.none}
    assert gc.describe_group("g") is None and gc.fetch_offsets("g", None) == []
    await gc.stop()
    gc = coordinator(tmp_path, clock)
    await gc.start()
    assert gc.groups == {}
    await gc.stop()


async def test_emptied_group_retention_counts_from_empty_since_across_restart(
    tmp_path: Path,
) -> None:
    clock = Clock()
    gc = coordinator(tmp_path, clock, **{"offsets.retention.minutes": "10"})
    await gc.start()
    member, generation = await join(gc, "g")
    await gc.sync_group("g", member_id=member, group_instance_id=None,
                        generation_id=generation, protocol_type=None, protocol_name=None,
                        assignments={})
    await gc.commit_offsets("g", member_id=member, group_instance_id=None,
                            generation_id=generation,
                            offsets=[("t", 0, OffsetAndMetadata(1, commit_timestamp=clock.now))],
                            api_version=9)
    clock.now += 20 * 60_000  # long after the commit, but the group still has a member
    assert await gc.expire_offsets() == 0
    gc.leave_group("g", [(member, None)])
    await asyncio.sleep(0)  # let the group record reach the log
    await gc.stop()
    gc = coordinator(tmp_path, clock, **{"offsets.retention.minutes": "10"})
    await gc.start()
    assert gc.groups["g"].protocol_type == "consumer"
    assert gc.groups["g"].generation_id == 2
    clock.now += 9 * 60_000
    assert await gc.expire_offsets() == 0
    clock.now += 60_000
    assert await gc.expire_offsets() == 1
    await gc.stop()


async def test_deleted_topics_lose_their_committed_offsets(tmp_path: Path) -> None:
    clock = Clock()
    gc = coordinator(tmp_path, clock)
    await gc.start()
    for group in ("a", "b"):
        await gc.commit_offsets(group, member_id="", group_instance_id=None, generation_id=-1,
                                offsets=[("t", 0, OffsetAndMetadata(1)),
                                         ("t", 1, OffsetAndMetadata(2))], api_version=9)
    assert await gc.on_topics_deleted(["t", "other"]) == 4
    assert gc.fetch_offsets("a", None) == gc.fetch_offsets("b", None) == []
    await gc.stop()


def test_store_files_live_in_their_own_directory(tmp_path: Path) -> None:
    store = OffsetStore(tmp_path)
    store.load()
    assert store.path == tmp_path / "__consumer_offsets" / "offsets.log"
    assert os.path.exists(store.path)
