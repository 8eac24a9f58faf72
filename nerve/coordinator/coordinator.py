"""GroupCoordinator: the classic consumer groups of this broker, on the broker's event loop.

It owns the `Group` state machines (nerve.coordinator.group) and the committed offsets
(nerve.coordinator.offsets), and adds the asyncio parts: JoinGroup/SyncGroup answers are
futures the handlers await; each group has at most one timer, set to the group's next deadline
(session expiry, join round, pending sync), which calls `Group.tick()`; a sweeper expires
committed offsets per `offsets.retention.minutes`. No locks: everything runs on one loop.

Membership is not persisted (clients re-join after a restart, as they do after a Kafka
coordinator failover). Offsets are, and so is a small per-group record (protocol type,
generation, "empty since"), so a group that has committed offsets exists, Empty, after a
restart and its retention clock does not restart.

Registers broker start/stop hooks: importing this module (the group handlers do) enables groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nerve.broker import on_drain, on_start, on_stop
from nerve.config import BrokerConfig
from nerve.coordinator.group import (
    Group,
    GroupConfig,
    GroupState,
    GroupSummary,
    JoinRequest,
    JoinResult,
    SyncResult,
)
from nerve.coordinator.offsets import (
    GroupRecord,
    OffsetAndMetadata,
    OffsetStore,
    Op,
    TopicPartition,
    commit_op,
    delete_group_op,
    delete_op,
    expired_offsets,
    group_op,
)
from nerve.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from nerve.broker import BrokerCore

log = logging.getLogger("nerve.groups")

# Kafka's offset.metadata.max.bytes and offsets.retention.check.interval.ms defaults.
OFFSET_METADATA_MAX_BYTES = 4096
RETENTION_CHECK_INTERVAL_MS = 600_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class GroupCoordinator:
    def __init__(
        self,
        data_dir: Path,
        config: BrokerConfig,
        *,
        partition_count: Callable[[str], int | None] = lambda topic: None,
        clock: Callable[[], int] = wall_clock_ms,
        retention_check_interval_ms: int = RETENTION_CHECK_INTERVAL_MS,
    ) -> None:
        self.group_config = GroupConfig(
            min_session_timeout_ms=config.get_int("group.min.session.timeout.ms"),
            max_session_timeout_ms=config.get_int("group.max.session.timeout.ms"),
            initial_rebalance_delay_ms=config.get_int("group.initial.rebalance.delay.ms"),
            max_size=config.get_int("group.max.size"),
        )
        self.offsets_retention_ms = config.get_int("offsets.retention.minutes") * 60_000
        self.partition_count = partition_count
        self.clock = clock
        self.retention_check_interval_ms = retention_check_interval_ms
        self.store = OffsetStore(data_dir)
        self.groups: dict[str, Group] = {}
        self._timers: dict[str, tuple[int, asyncio.TimerHandle]] = {}
        self._recorded_generation: dict[str, int] = {}
        self._sweeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.store.load()
        now = self.clock()
        for gid in set(self.store.groups) | set(self.store.offsets):
            group = self._new_group(gid)
            rec = self.store.groups.get(gid)
            if rec is not None:
                group.generation_id = rec.generation_id
                group.protocol_type = rec.protocol_type or None
                if rec.member_count == 0:
                    group.state_timestamp = rec.state_timestamp
                else:
                    # It had members when we stopped: they are gone now, so it became
                    # empty now. Recorded so the retention clock does not restart again.
                    group.state_timestamp = now
                    self._record(group)
                self._recorded_generation[gid] = rec.generation_id
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())
        log.info("group coordinator started: %d group(s)", len(self.groups))

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self.release_waiters()
        await self.store.close()

    def release_waiters(self) -> None:
        """Answer every JoinGroup/SyncGroup parked in a rebalance with COORDINATOR_NOT_AVAILABLE.

        Called before the broker drains its connections at shutdown, so a member waiting for a
        rebalance does not hold the drain for its whole timeout; it re-finds the coordinator.
        """
        for group in self.groups.values():
            for m in group.members.values():
                for waiter, result in ((m.join_waiter, JoinResult(
                        ErrorCode.coordinator_not_available, m.member_id)),
                        (m.sync_waiter, SyncResult(ErrorCode.coordinator_not_available))):
                    if isinstance(waiter, asyncio.Future) and not waiter.done():
                        waiter.set_result(result)

    # ------------------------------------------------------------------ plumbing

    def _new_group(self, group_id: str) -> Group:
        group = Group(group_id, self.group_config, self.clock)
        self.groups[group_id] = group
        return group

    def _record(self, group: Group) -> None:
        """Queue the group record (not awaited: membership itself is not durable)."""
        self._recorded_generation[group.group_id] = group.generation_id
        self.store.append_nowait([group_op(group.group_id, GroupRecord(
            group.protocol_type or "", group.generation_id, len(group.members),
            group.state_timestamp))])

    def _after(self, group: Group) -> None:
        """After any call into a group: deliver answers, persist, re-arm the timer."""
        outbox, group.outbox = group.outbox, []
        for waiter, result in outbox:
            if isinstance(waiter, asyncio.Future) and not waiter.done():
                waiter.set_result(result)
        gid = group.group_id
        if self.groups.get(gid) is not group:
            return
        if group.generation_id != self._recorded_generation.get(gid, 0):
            self._record(group)
        self._reschedule(group)

    def _reschedule(self, group: Group) -> None:
        gid = group.group_id
        deadline = group.next_deadline()
        current = self._timers.get(gid)
        if current is not None and current[0] == deadline:
            return
        if current is not None:
            current[1].cancel()
            del self._timers[gid]
        if deadline is None:
            return
        # +1 ms: the loop's monotonic clock and our wall clock may disagree by a hair.
        delay = max(deadline - self.clock() + 1, 0) / 1000
        handle = asyncio.get_running_loop().call_later(delay, self._on_timer, gid)
        self._timers[gid] = (deadline, handle)

    def _on_timer(self, group_id: str) -> None:
        self._timers.pop(group_id, None)
        group = self.groups.get(group_id)
        if group is not None:
            group.tick()
            self._after(group)

    def _drop(self, group_id: str) -> None:
        group = self.groups.pop(group_id, None)
        if group is not None:
            group.transition_to_dead()
        timer = self._timers.pop(group_id, None)
        if timer is not None:
            timer[1].cancel()
        self._recorded_generation.pop(group_id, None)

    # ------------------------------------------------------------------ group membership

    async def join_group(self, group_id: str, req: JoinRequest) -> JoinResult:
        if not group_id:
            return JoinResult(ErrorCode.invalid_group_id, req.member_id)
        cfg = self.group_config
        if not cfg.min_session_timeout_ms <= req.session_timeout_ms <= cfg.max_session_timeout_ms:
            return JoinResult(ErrorCode.invalid_session_timeout, req.member_id)
        group = self.groups.get(group_id)
        if group is None:
            if req.member_id:
                return JoinResult(ErrorCode.unknown_member_id, req.member_id)
            group = self._new_group(group_id)
        fut: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        group.join(fut, req)
        self._after(group)
        return await fut

    async def sync_group(
        self, group_id: str, *, member_id: str, group_instance_id: str | None,
        generation_id: int, protocol_type: str | None, protocol_name: str | None,
        assignments: dict[str, bytes],
    ) -> SyncResult:
        if not group_id:
            return SyncResult(ErrorCode.invalid_group_id)
        group = self.groups.get(group_id)
        if group is None:
            return SyncResult(ErrorCode.unknown_member_id)
        fut: asyncio.Future[SyncResult] = asyncio.get_running_loop().create_future()
        group.sync(fut, member_id=member_id, group_instance_id=group_instance_id,
                   generation_id=generation_id, protocol_type=protocol_type,
                   protocol_name=protocol_name, assignments=assignments)
        self._after(group)
        return await fut

    def heartbeat(
        self, group_id: str, *, member_id: str, group_instance_id: str | None,
        generation_id: int,
    ) -> ErrorCode:
        if not group_id:
            return ErrorCode.invalid_group_id
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.unknown_member_id
        error = group.heartbeat(member_id=member_id, group_instance_id=group_instance_id,
                                generation_id=generation_id)
        self._after(group)
        return error

    def leave_group(
        self, group_id: str, members: list[tuple[str, str | None]]
    ) -> tuple[ErrorCode, list[ErrorCode]]:
        if not group_id:
            return ErrorCode.invalid_group_id, [ErrorCode.invalid_group_id] * len(members)
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.none, [ErrorCode.unknown_member_id] * len(members)
        if group.state is GroupState.DEAD:
            return ErrorCode.coordinator_not_available, []
        errors = group.leave(members)
        self._after(group)
        return ErrorCode.none, errors

    # ------------------------------------------------------------------ offsets

    async def commit_offsets(
        self, group_id: str, *, member_id: str, group_instance_id: str | None,
        generation_id: int, offsets: list[tuple[str, int, OffsetAndMetadata]],
        api_version: int,
    ) -> list[ErrorCode]:
        """Validate and durably store `offsets`; one error per entry, in order."""
        group = self.groups.get(group_id)
        if group is None:
            if generation_id < 0:
                # A "simple" group: offsets only (assign() consumers, admin tools).
                group = self._new_group(group_id)
                error = ErrorCode.none
            elif api_version >= 9:
                error = ErrorCode.group_id_not_found
            else:
                error = ErrorCode.illegal_generation  # what older versions always returned
        else:
            error = group.validate_offset_commit(
                member_id=member_id, group_instance_id=group_instance_id,
                generation_id=generation_id)
            self._after(group)
        if error is not ErrorCode.none:
            return [error] * len(offsets)
        errors: list[ErrorCode] = []
        ops: list[Op] = []
        for topic, partition, om in offsets:
            count = self.partition_count(topic)
            if count is None or not 0 <= partition < count:
                errors.append(ErrorCode.unknown_topic_or_partition)
            elif len(om.metadata.encode()) > OFFSET_METADATA_MAX_BYTES:
                errors.append(ErrorCode.offset_metadata_too_large)
            else:
                errors.append(ErrorCode.none)
                ops.append(commit_op(group_id, (topic, partition), om))
        try:
            await self.store.append(ops)
        except OSError:
            return [ErrorCode.coordinator_not_available if e is ErrorCode.none else e
                    for e in errors]
        if ops and group_id not in self.groups:
            self._new_group(group_id)  # deleted while this commit was being written
        return errors

    def fetch_offsets(
        self, group_id: str, topics: Iterable[tuple[str, Iterable[int]]] | None
    ) -> list[tuple[str, list[tuple[int, OffsetAndMetadata | None]]]]:
        """Committed offsets per topic; None where nothing is committed. `topics` None: all."""
        committed = self.store.get(group_id)
        if topics is None:
            by_topic: dict[str, list[tuple[int, OffsetAndMetadata | None]]] = {}
            for (topic, partition), om in sorted(committed.items()):
                by_topic.setdefault(topic, []).append((partition, om))
            return list(by_topic.items())
        return [(topic, [(p, committed.get((topic, p))) for p in partitions])
                for topic, partitions in topics]

    # ------------------------------------------------------------------ admin

    def describe_group(self, group_id: str) -> GroupSummary | None:
        group = self.groups.get(group_id)
        return None if group is None else group.summary()

    def list_groups(self) -> list[tuple[str, str, str]]:
        """(group id, protocol type, state) of every live group."""
        return [(gid, g.protocol_type or "", g.state.value) for gid, g in self.groups.items()
                if g.state is not GroupState.DEAD]

    async def delete_groups(self, group_ids: list[str]) -> dict[str, ErrorCode]:
        out: dict[str, ErrorCode] = {}
        ops: list[Op] = []
        for gid in group_ids:
            group = self.groups.get(gid)
            if group is None or group.state is GroupState.DEAD:
                out[gid] = ErrorCode.group_id_not_found
            elif group.state is not GroupState.EMPTY or not group.is_empty:
                out[gid] = ErrorCode.non_empty_group
            else:
                self._drop(gid)
                ops.append(delete_group_op(gid))
                out[gid] = ErrorCode.none
        try:
            await self.store.append(ops)
        except OSError:
            for gid, error in out.items():
                if error is ErrorCode.none:
                    out[gid] = ErrorCode.coordinator_not_available
                    if self.store.has_offsets(gid) and gid not in self.groups:
                        self._new_group(gid)
        return out

    async def delete_offsets(
        self, group_id: str, partitions: list[TopicPartition]
    ) -> tuple[ErrorCode, dict[TopicPartition, ErrorCode]]:
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            return ErrorCode.group_id_not_found, {}
        if group.protocol_type != "consumer" and group.state is not GroupState.EMPTY:
            return ErrorCode.non_empty_group, {}
        out: dict[TopicPartition, ErrorCode] = {}
        ops: list[Op] = []
        for tp in partitions:
            count = self.partition_count(tp[0])
            if group.is_subscribed_to(tp[0]):
                out[tp] = ErrorCode.group_subscribed_to_topic
            elif count is None or not 0 <= tp[1] < count:
                out[tp] = ErrorCode.unknown_topic_or_partition
            else:
                out[tp] = ErrorCode.none
                ops.append(delete_op(group_id, tp))
        try:
            await self.store.append(ops)
        except OSError:
            return ErrorCode.coordinator_not_available, {}
        return ErrorCode.none, out

    async def on_topics_deleted(self, topics: Iterable[str]) -> int:
        """Drop committed offsets of deleted topics, as Kafka does, so a topic re-created
        under the same name starts without stale positions. Returns how many were dropped."""
        names = set(topics)
        ops: list[Op] = [delete_op(gid, tp) for gid, committed in self.store.offsets.items()
                         for tp in committed if tp[0] in names]
        await self.store.append(ops)
        return len(ops)

    # ------------------------------------------------------------------ retention

    async def expire_offsets(self) -> int:
        """One retention pass; returns how many offsets expired."""
        now = self.clock()
        ops: list[Op] = []
        expired_count = 0
        for gid, group in list(self.groups.items()):
            committed = self.store.get(gid)
            expired = expired_offsets(
                committed, now=now, retention_ms=self.offsets_retention_ms,
                protocol_type=group.protocol_type, is_empty=group.state is GroupState.EMPTY,
                is_stable=group.state is GroupState.STABLE, empty_since=group.state_timestamp,
                subscribed_topics=group.subscribed_topics,
            )
            expired_count += len(expired)
            ops.extend(delete_op(gid, tp) for tp in expired)
            if (group.state is GroupState.EMPTY and group.is_empty
                    and len(expired) == len(committed)):
                # An empty group without offsets is gone (Kafka: Dead, then removed).
                self._drop(gid)
                ops.append(delete_group_op(gid))
        if ops:
            await self.store.append(ops)
            log.info("offset retention: expired %d offset(s)", expired_count)
        return expired_count

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retention_check_interval_ms / 1000)
            try:
                await self.expire_offsets()
            except OSError as e:
                log.error("offset retention pass failed: %s", e)


def coordinator_of(broker: Any) -> GroupCoordinator | None:
    """The broker's GroupCoordinator, or None while it is not running."""
    groups = getattr(broker, "groups", None)
    return groups if isinstance(groups, GroupCoordinator) else None


def _partition_count_of(core: BrokerCore) -> Callable[[str], int | None]:
    def count(topic: str) -> int | None:
        info = core.logs.topics.get(topic)
        return None if info is None else info.num_partitions

    return count


@on_start
async def _start_group_coordinator(core: BrokerCore) -> None:
    coordinator = GroupCoordinator(core.data_dir, core.config,
                                   partition_count=_partition_count_of(core))
    await coordinator.start()
    core.groups = coordinator


@on_drain
async def _release_group_waiters(core: BrokerCore) -> None:
    coordinator = coordinator_of(core)
    if coordinator is not None:
        coordinator.release_waiters()


@on_stop
async def _stop_group_coordinator(core: BrokerCore) -> None:
    coordinator = coordinator_of(core)
    if coordinator is not None:
        await coordinator.stop()
        core.groups = None
