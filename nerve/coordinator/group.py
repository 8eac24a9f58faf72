"""The classic consumer-group state machine: pure, with an injected clock and no I/O.

Kafka's GroupMetadata plus the classic GroupCoordinator rules, re-expressed. A `Group` moves
between Empty, PreparingRebalance, CompletingRebalance, Stable and Dead:

  Empty --join--> PreparingRebalance (waits group.initial.rebalance.delay.ms, extended while new
  members keep arriving, up to the rebalance timeout) --all known members joined, or rebalance
  timeout--> CompletingRebalance (join answers sent, the leader got every member's metadata)
  --leader's SyncGroup--> Stable. Any membership or metadata change in Stable or
  CompletingRebalance goes back to PreparingRebalance; a join round that ends with no member
  goes to Empty; DeleteGroups or offset expiry of an empty group goes to Dead.

Blocking calls (JoinGroup, SyncGroup) take an opaque `waiter`; their answers are appended to
`group.outbox` as (waiter, result) pairs, now or later (when the round completes or a timer
fires), and the caller delivers them. Timers are deadlines in milliseconds: the caller asks
`next_deadline()`, and calls `tick()` once the clock has reached it. Nothing here sleeps, so the
whole protocol is unit-tested with a fake clock.
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from nerve.protocol.errors import ErrorCode

# Kafka's GroupCoordinator.NewMemberJoinTimeoutMs: a new member whose first join never
# completes (its connection died mid-rebalance) is dropped after this long.
NEW_MEMBER_JOIN_TIMEOUT_MS = 300_000
CONSUMER_PROTOCOL_TYPE = "consumer"


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class GroupConfig:
    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1_800_000
    initial_rebalance_delay_ms: int = 3000
    max_size: int = 2**31 - 1


@dataclass(frozen=True, slots=True)
class JoinMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinResult:
    error: ErrorCode
    member_id: str = ""
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    members: tuple[JoinMember, ...] = ()
    skip_assignment: bool = False


@dataclass(frozen=True, slots=True)
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(frozen=True, slots=True)
class JoinRequest:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    # JoinGroup v4+ without group.instance.id: a new member first gets MEMBER_ID_REQUIRED.
    require_known_member_id: bool = True
    # JoinGroup v9+: a static leader that rejoins a stable group is told to skip assignment.
    supports_skip_assignment: bool = False


@dataclass(eq=False, slots=True)
class MemberMetadata:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    assignment: bytes = b""
    join_waiter: object | None = None
    sync_waiter: object | None = None
    # Joined but never completed a round: expires on its own timer, not the rebalance's.
    is_new: bool = False
    heartbeat_deadline: int | None = None

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    def metadata_for(self, protocol: str | None) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return b""

    def matches(self, protocols: Sequence[tuple[str, bytes]]) -> bool:
        return tuple(protocols) == self.protocols


@dataclass(frozen=True, slots=True)
class MemberSummary:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupSummary:
    state: str
    protocol_type: str
    protocol_name: str
    members: tuple[MemberSummary, ...]


def parse_subscription_topics(metadata: bytes) -> list[str]:
    """Topics of a ConsumerProtocolSubscription (any version: the topic list comes first)."""
    buf = memoryview(metadata)
    (count,) = struct.unpack_from(">i", buf, 2)  # after the int16 version
    pos = 6
    topics = []
    for _ in range(max(count, 0)):
        (size,) = struct.unpack_from(">h", buf, pos)
        pos += 2
        if size < 0 or pos + size > len(buf):
            raise ValueError("bad subscription")
        topics.append(bytes(buf[pos : pos + size]).decode())
        pos += size
    return topics


def default_member_id(prefix: str) -> str:
    # Kafka's format: client id (or group.instance.id) + "-" + a random UUID.
    return f"{prefix}-{uuid.uuid4()}"


Outbox = list[tuple[object, "JoinResult | SyncResult"]]


class Group:
    """One consumer group. Owned by a single thread; every method is synchronous."""

    def __init__(
        self,
        group_id: str,
        config: GroupConfig,
        clock: Callable[[], int],
        *,
        new_member_id: Callable[[str], str] = default_member_id,
    ) -> None:
        self.group_id = group_id
        self.config = config
        self.clock = clock
        self.new_member_id = new_member_id
        self.state = GroupState.EMPTY
        self.state_timestamp = clock()
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, MemberMetadata] = {}
        self.static_members: dict[str, str] = {}  # group.instance.id -> member id
        # Member ids handed out with MEMBER_ID_REQUIRED, not yet joined: id -> expiry deadline.
        self.pending_members: dict[str, int] = {}
        # Members of this generation that have not sent SyncGroup yet.
        self.pending_sync: set[str] = set()
        self.subscribed_topics: set[str] | None = None
        self.outbox: Outbox = []
        # Timers (absolute ms). The join round's deadline and, during the initial delay,
        # Kafka's InitialDelayedJoin bookkeeping.
        self.join_deadline: int | None = None
        self.sync_deadline: int | None = None
        self._initial_delay = False
        self._initial_delay_ms = 0
        self._initial_remaining_ms = 0
        self._new_member_added = False

    # ------------------------------------------------------------------ queries

    def is_(self, state: GroupState) -> bool:
        return self.state is state

    @property
    def is_empty(self) -> bool:
        return not self.members and not self.pending_members

    def has_member(self, member_id: str) -> bool:
        return member_id in self.members

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def is_subscribed_to(self, topic: str) -> bool:
        return self.subscribed_topics is not None and topic in self.subscribed_topics

    def next_deadline(self) -> int | None:
        deadlines = [d for d in self.pending_members.values()]
        deadlines += [m.heartbeat_deadline for m in self.members.values()
                      if m.heartbeat_deadline is not None]
        if self.join_deadline is not None:
            deadlines.append(self.join_deadline)
        if self.sync_deadline is not None:
            deadlines.append(self.sync_deadline)
        return min(deadlines, default=None)

    def summary(self) -> GroupSummary:
        """DescribeGroups: metadata and assignments only when Stable, as Kafka reports them."""
        stable = self.state is GroupState.STABLE
        members = tuple(
            MemberSummary(
                m.member_id, m.group_instance_id, m.client_id, m.client_host,
                m.metadata_for(self.protocol_name) if stable else b"",
                m.assignment if stable else b"",
            )
            for m in self.members.values()
        )
        return GroupSummary(
            self.state.value, self.protocol_type or "",
            (self.protocol_name or "") if stable else "", members,
        )

    # ------------------------------------------------------------------ JoinGroup

    def join(self, waiter: object, req: JoinRequest) -> None:
        cfg = self.config
        if not cfg.min_session_timeout_ms <= req.session_timeout_ms <= cfg.max_session_timeout_ms:
            self._answer_join(waiter, JoinResult(ErrorCode.invalid_session_timeout, req.member_id))
        elif self.state is GroupState.DEAD:
            # The group was just deleted: the client looks the coordinator up again and retries.
            self._answer_join(waiter, JoinResult(ErrorCode.coordinator_not_available,
                                                 req.member_id))
        elif not self._supports_protocols(req.protocol_type, [n for n, _ in req.protocols]):
            self._answer_join(waiter, JoinResult(ErrorCode.inconsistent_group_protocol,
                                                 req.member_id))
        elif req.member_id == "":
            self._new_member_join(waiter, req)
        else:
            self._current_member_join(waiter, req)
        if self.state is GroupState.PREPARING_REBALANCE:
            self._try_complete_join()

    def _supports_protocols(self, protocol_type: str, names: list[str]) -> bool:
        if self.state is GroupState.EMPTY:
            return bool(protocol_type) and bool(names)
        if protocol_type != self.protocol_type:
            return False
        return any(all(n in dict(m.protocols) for m in self.members.values()) for n in names)

    def _new_member_join(self, waiter: object, req: JoinRequest) -> None:
        if len(self.members) + len(self.pending_members) >= self.config.max_size:
            self._answer_join(waiter, JoinResult(ErrorCode.group_max_size_reached))
            return
        iid = req.group_instance_id
        if iid is not None:
            member_id = self.new_member_id(iid)
            old_id = self.static_members.get(iid)
            if old_id is None:
                self._add_member_and_rebalance(waiter, member_id, req)
            else:
                self._update_static_member_and_rebalance(waiter, old_id, member_id, req)
        elif req.require_known_member_id:
            # KIP-394: hand out the id first, so a client that times out on its first
            # JoinGroup does not leave an anonymous member behind to stall the rebalance.
            member_id = self.new_member_id(req.client_id)
            self.pending_members[member_id] = self.clock() + req.session_timeout_ms
            self._answer_join(waiter, JoinResult(ErrorCode.member_id_required, member_id))
        else:
            self._add_member_and_rebalance(waiter, self.new_member_id(req.client_id), req)

    def _current_member_join(self, waiter: object, req: JoinRequest) -> None:
        mid, iid = req.member_id, req.group_instance_id
        if mid in self.pending_members:
            self._add_member_and_rebalance(waiter, mid, req)
            return
        if self._is_fenced(iid, mid):
            self._answer_join(waiter, JoinResult(ErrorCode.fenced_instance_id, mid))
            return
        if mid not in self.members or (iid is not None and iid not in self.static_members):
            self._answer_join(waiter, JoinResult(ErrorCode.unknown_member_id, mid))
            return
        member = self.members[mid]
        state = self.state
        if state is GroupState.PREPARING_REBALANCE:
            self._update_member_and_rebalance(waiter, member, req)
        elif state is GroupState.COMPLETING_REBALANCE:
            if member.matches(req.protocols):
                # Same metadata: it probably lost our join answer; repeat it.
                self._answer_join(waiter, self._join_result(member))
            else:
                self._update_member_and_rebalance(waiter, member, req)
        elif state is GroupState.STABLE:
            if mid == self.leader_id or not member.matches(req.protocols):
                # The leader rejoins to trigger a rebalance for changes the group cannot see
                # (e.g. new partitions of a subscribed topic).
                self._update_member_and_rebalance(waiter, member, req)
            else:
                self._answer_join(waiter, self._join_result(member, with_members=False))
        else:
            self._answer_join(waiter, JoinResult(ErrorCode.unknown_member_id, mid))

    def _add_member_and_rebalance(self, waiter: object, member_id: str, req: JoinRequest) -> None:
        self.pending_members.pop(member_id, None)
        member = MemberMetadata(
            member_id, req.group_instance_id, req.client_id, req.client_host,
            req.rebalance_timeout_ms, req.session_timeout_ms, req.protocol_type,
            tuple(req.protocols), is_new=True,
        )
        # Kafka extends the initial delay only for a brand-new group (generation 0).
        if self.state is GroupState.PREPARING_REBALANCE and self.generation_id == 0:
            self._new_member_added = True
        if not self.members:
            self.protocol_type = req.protocol_type
        if self.leader_id is None:
            self.leader_id = member_id
        self.members[member_id] = member
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member_id
        member.join_waiter = waiter
        member.heartbeat_deadline = self.clock() + NEW_MEMBER_JOIN_TIMEOUT_MS
        self._maybe_prepare_rebalance()

    def _update_member_and_rebalance(
        self, waiter: object, member: MemberMetadata, req: JoinRequest
    ) -> None:
        self._update_member(member, req, waiter)
        self._maybe_prepare_rebalance()

    def _update_member(self, member: MemberMetadata, req: JoinRequest, waiter: object) -> None:
        old = member.join_waiter
        if old is not None and old is not waiter:
            # A retried JoinGroup replaces the earlier one; that one is answered so it ends.
            self.outbox.append((old, JoinResult(ErrorCode.rebalance_in_progress,
                                                member.member_id)))
        member.protocols = tuple(req.protocols)
        member.rebalance_timeout_ms = req.rebalance_timeout_ms
        member.session_timeout_ms = req.session_timeout_ms
        member.client_id = req.client_id
        member.client_host = req.client_host
        member.join_waiter = waiter

    def _update_static_member_and_rebalance(
        self, waiter: object, old_id: str, new_id: str, req: JoinRequest
    ) -> None:
        old_leader = self.leader_id
        member = self._replace_static_member(old_id, new_id)
        self._update_member(member, req, waiter)
        self._schedule_heartbeat(member)  # a fresh session for the new incarnation
        if self.state is GroupState.STABLE:
            if self.protocol_name == self._select_protocol():
                # A restarted static member with unchanged protocols: no rebalance; it keeps
                # its assignment and fetches it with SyncGroup.
                is_leader = self.leader_id == new_id
                if is_leader and req.supports_skip_assignment:
                    result = self._join_result(member, skip_assignment=True)
                elif is_leader:
                    # Before v9 there is no skip_assignment: name the old leader id, so the
                    # client does not compute an assignment the stable group would discard.
                    result = replace_leader(self._join_result(member, with_members=False),
                                            old_leader or "")
                else:
                    result = self._join_result(member, with_members=False)
                member.join_waiter = None
                self.outbox.append((waiter, result))
            else:
                self._prepare_rebalance()
        elif self.state is GroupState.COMPLETING_REBALANCE:
            self._prepare_rebalance()
        # PreparingRebalance: the member now counts as joined; join() checks completion.

    def _fail_waiters(self, member: MemberMetadata, code: ErrorCode) -> None:
        """Answer the member's parked JoinGroup/SyncGroup, if any, with `code`."""
        if member.join_waiter is not None:
            self.outbox.append((member.join_waiter, JoinResult(code, member.member_id)))
            member.join_waiter = None
        if member.sync_waiter is not None:
            self.outbox.append((member.sync_waiter, SyncResult(code)))
            member.sync_waiter = None

    def _replace_static_member(self, old_id: str, new_id: str) -> MemberMetadata:
        member = self.members.pop(old_id)
        # Whoever still waits under the old id is a zombie of the same instance: fence it.
        self._fail_waiters(member, ErrorCode.fenced_instance_id)
        member.member_id = new_id
        self.members[new_id] = member
        if self.leader_id == old_id:
            self.leader_id = new_id
        assert member.group_instance_id is not None
        self.static_members[member.group_instance_id] = new_id
        if old_id in self.pending_sync:
            self.pending_sync.discard(old_id)
            self.pending_sync.add(new_id)
        return member

    def _is_fenced(self, instance_id: str | None, member_id: str) -> bool:
        if instance_id is None:
            return False
        current = self.static_members.get(instance_id)
        return current is not None and current != member_id

    def _join_result(
        self, member: MemberMetadata, *, with_members: bool | None = None,
        skip_assignment: bool = False,
    ) -> JoinResult:
        if with_members is None:
            with_members = member.member_id == self.leader_id
        members = ()
        if with_members:
            members = tuple(
                JoinMember(m.member_id, m.group_instance_id, m.metadata_for(self.protocol_name))
                for m in self.members.values()
            )
        return JoinResult(
            ErrorCode.none, member.member_id, self.generation_id, self.protocol_type,
            self.protocol_name, self.leader_id or "", members, skip_assignment,
        )

    def _answer_join(self, waiter: object, result: JoinResult) -> None:
        self.outbox.append((waiter, result))

    # ------------------------------------------------------------------ rebalance rounds

    def _maybe_prepare_rebalance(self) -> None:
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY):
            self._prepare_rebalance()

    def _prepare_rebalance(self) -> None:
        if self.state is GroupState.COMPLETING_REBALANCE:
            # Members waiting on SyncGroup must rejoin instead.
            self._reset_and_propagate_assignment(ErrorCode.rebalance_in_progress)
        self.sync_deadline = None
        self.pending_sync.clear()
        now = self.clock()
        was_empty = self.state is GroupState.EMPTY
        self._transition(GroupState.PREPARING_REBALANCE)
        if was_empty:
            # Kafka's InitialDelayedJoin: wait for more members before the first round, so
            # a fleet starting together does not rebalance once per member.
            delay = self.config.initial_rebalance_delay_ms
            self._initial_delay = True
            self._initial_delay_ms = delay
            self._initial_remaining_ms = max(self.rebalance_timeout_ms() - delay, 0)
            self.join_deadline = now + delay
        else:
            self._initial_delay = False
            self.join_deadline = now + self.rebalance_timeout_ms()
            self._try_complete_join()

    def _all_joined(self) -> bool:
        return not self.pending_members and all(
            m.join_waiter is not None for m in self.members.values()
        )

    def _try_complete_join(self) -> None:
        if (self.state is GroupState.PREPARING_REBALANCE and not self._initial_delay
                and self._all_joined()):
            self._complete_join()

    def _on_join_deadline(self) -> None:
        if self._initial_delay and self._new_member_added and self._initial_remaining_ms > 0:
            self._new_member_added = False
            delay = min(self.config.initial_rebalance_delay_ms, self._initial_remaining_ms)
            self._initial_remaining_ms = max(self._initial_remaining_ms - self._initial_delay_ms,
                                             0)
            self._initial_delay_ms = delay
            self.join_deadline = self.clock() + delay
            return
        self._complete_join()

    def _complete_join(self) -> None:
        self.join_deadline = None
        self._initial_delay = False
        self._new_member_added = False
        # Dynamic members that did not rejoin in time are out; static ones keep their place
        # (only their session timeout removes them).
        for m in list(self.members.values()):
            if m.join_waiter is None and not m.is_static:
                self._remove(m.member_id)
        if self.members and not self._elect_joined_leader():
            # Only silent static members are left: wait another round for them.
            self.join_deadline = self.clock() + self.rebalance_timeout_ms()
            return
        self._init_next_generation()
        if self.state is GroupState.COMPLETING_REBALANCE:
            for m in self.members.values():
                if m.join_waiter is not None:
                    self.outbox.append((m.join_waiter, self._join_result(m)))
                    m.join_waiter = None
                self._schedule_heartbeat(m)
                m.is_new = False

    def _elect_joined_leader(self) -> bool:
        if self.leader_id is None:
            return False
        if self.members[self.leader_id].join_waiter is not None:
            return True
        for m in self.members.values():
            if m.join_waiter is not None:
                self.leader_id = m.member_id
                return True
        return False

    def _init_next_generation(self) -> None:
        self.generation_id += 1
        if self.members:
            self.protocol_name = self._select_protocol()
            self.subscribed_topics = self._compute_subscribed_topics()
            self._transition(GroupState.COMPLETING_REBALANCE)
            # Members that never send SyncGroup are removed after the rebalance timeout.
            self.pending_sync = set(self.members)
            self.sync_deadline = self.clock() + self.rebalance_timeout_ms()
        else:
            self.protocol_name = None
            self.subscribed_topics = None
            self._transition(GroupState.EMPTY)

    def _select_protocol(self) -> str:
        members = list(self.members.values())
        candidates = [n for n, _ in members[0].protocols
                      if all(n in dict(m.protocols) for m in members)]
        votes = dict.fromkeys(candidates, 0)
        for m in members:
            for n, _ in m.protocols:
                if n in votes:
                    votes[n] += 1
                    break
        return max(candidates, key=lambda n: votes[n])  # ties: the first member's preference

    def _compute_subscribed_topics(self) -> set[str] | None:
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE:
            return None
        topics: set[str] = set()
        try:
            for m in self.members.values():
                topics.update(parse_subscription_topics(m.metadata_for(self.protocol_name)))
        except (ValueError, struct.error, UnicodeDecodeError):
            return None
        return topics

    def _transition(self, state: GroupState) -> None:
        self.state = state
        self.state_timestamp = self.clock()

    # ------------------------------------------------------------------ SyncGroup

    def sync(
        self, waiter: object, *, member_id: str, group_instance_id: str | None,
        generation_id: int, protocol_type: str | None = None, protocol_name: str | None = None,
        assignments: dict[str, bytes] | None = None,
    ) -> None:
        error = self._check_member(member_id, group_instance_id, generation_id)
        if error is ErrorCode.none and (
            (protocol_type is not None and protocol_type != self.protocol_type)
            or (protocol_name is not None and protocol_name != self.protocol_name)
        ):
            error = ErrorCode.inconsistent_group_protocol
        if error is ErrorCode.none:
            if self.state is GroupState.EMPTY:
                error = ErrorCode.unknown_member_id
            elif self.state is GroupState.PREPARING_REBALANCE:
                error = ErrorCode.rebalance_in_progress
        if error is not ErrorCode.none:
            self.outbox.append((waiter, SyncResult(error)))
            return
        member = self.members[member_id]
        self._sync_received(member_id)
        if self.state is GroupState.STABLE:
            self.outbox.append((waiter, SyncResult(ErrorCode.none, self.protocol_type,
                                                   self.protocol_name, member.assignment)))
            self._schedule_heartbeat(member)
            return
        # CompletingRebalance: followers wait for the leader's assignment.
        if member.sync_waiter is not None and member.sync_waiter is not waiter:
            self.outbox.append((member.sync_waiter, SyncResult(ErrorCode.rebalance_in_progress)))
        member.sync_waiter = waiter
        if member_id == self.leader_id:
            given = assignments or {}
            for m in self.members.values():
                m.assignment = given.get(m.member_id, b"")  # missing members: empty
            self._propagate_assignment(ErrorCode.none)
            self._transition(GroupState.STABLE)

    def _sync_received(self, member_id: str) -> None:
        self.pending_sync.discard(member_id)
        if not self.pending_sync:
            self.sync_deadline = None

    def _reset_and_propagate_assignment(self, error: ErrorCode) -> None:
        for m in self.members.values():
            m.assignment = b""
        self._propagate_assignment(error)

    def _propagate_assignment(self, error: ErrorCode) -> None:
        for m in self.members.values():
            if m.sync_waiter is not None:
                if error is ErrorCode.none:
                    result = SyncResult(error, self.protocol_type, self.protocol_name,
                                        m.assignment)
                else:
                    result = SyncResult(error)
                self.outbox.append((m.sync_waiter, result))
                m.sync_waiter = None
                self._schedule_heartbeat(m)

    # ------------------------------------------------------------------ Heartbeat, Leave

    def _check_member(
        self, member_id: str, group_instance_id: str | None, generation_id: int
    ) -> ErrorCode:
        if self.state is GroupState.DEAD:
            return ErrorCode.coordinator_not_available
        if self._is_fenced(group_instance_id, member_id):
            return ErrorCode.fenced_instance_id
        if member_id not in self.members:
            return ErrorCode.unknown_member_id
        if generation_id != self.generation_id:
            return ErrorCode.illegal_generation
        return ErrorCode.none

    def heartbeat(
        self, *, member_id: str, group_instance_id: str | None, generation_id: int
    ) -> ErrorCode:
        error = self._check_member(member_id, group_instance_id, generation_id)
        if error is not ErrorCode.none:
            return error
        if self.state is GroupState.EMPTY:
            return ErrorCode.unknown_member_id
        self._schedule_heartbeat(self.members[member_id])
        if self.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        # CompletingRebalance counts as a normal heartbeat: clients may start heartbeating
        # right after the join answer.
        return ErrorCode.none

    def leave(self, members: Iterable[tuple[str, str | None]]) -> list[ErrorCode]:
        """LeaveGroup for (member_id, group_instance_id) pairs; one error per pair."""
        out = []
        for member_id, instance_id in members:
            if member_id == "" and instance_id is not None:
                current = self.static_members.get(instance_id)
                if current is None:
                    out.append(ErrorCode.unknown_member_id)
                else:
                    self._remove_member_and_update_group(current)
                    out.append(ErrorCode.none)
            elif member_id in self.pending_members:
                self._remove_pending_member(member_id)
                out.append(ErrorCode.none)
            elif self._is_fenced(instance_id, member_id):
                out.append(ErrorCode.fenced_instance_id)
            elif member_id in self.members:
                self._remove_member_and_update_group(member_id)
                out.append(ErrorCode.none)
            else:
                out.append(ErrorCode.unknown_member_id)
        return out

    def _remove_pending_member(self, member_id: str) -> None:
        del self.pending_members[member_id]
        if self.state is GroupState.PREPARING_REBALANCE:
            self._try_complete_join()

    def _remove(self, member_id: str) -> MemberMetadata:
        member = self.members.pop(member_id)
        iid = member.group_instance_id
        if iid is not None and self.static_members.get(iid) == member_id:
            del self.static_members[iid]
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        self.pending_sync.discard(member_id)
        return member

    def _remove_member_and_update_group(self, member_id: str) -> None:
        self._fail_waiters(self.members[member_id], ErrorCode.unknown_member_id)
        self._remove(member_id)
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._maybe_prepare_rebalance()
        elif self.state is GroupState.PREPARING_REBALANCE:
            self._try_complete_join()

    # ------------------------------------------------------------------ OffsetCommit rules

    def validate_offset_commit(
        self, *, member_id: str, group_instance_id: str | None, generation_id: int
    ) -> ErrorCode:
        """Kafka 4's classic-group rules; generation -1 on an empty group is a "simple" commit
        (assign() consumers, admin tools)."""
        if self.state is GroupState.DEAD:
            return ErrorCode.coordinator_not_available
        if generation_id < 0 and self.state is GroupState.EMPTY:
            return ErrorCode.none
        if generation_id >= 0 or member_id or group_instance_id is not None:
            if self._is_fenced(group_instance_id, member_id):
                return ErrorCode.fenced_instance_id
            if member_id not in self.members:
                return ErrorCode.unknown_member_id
            if generation_id != self.generation_id:
                return ErrorCode.illegal_generation
        elif self.state is not GroupState.EMPTY:
            return ErrorCode.unknown_member_id
        if self.state is GroupState.COMPLETING_REBALANCE:
            # Valid member and generation, but it has not got its assignment yet.
            return ErrorCode.rebalance_in_progress
        member = self.members.get(member_id)
        if member is not None:
            self._schedule_heartbeat(member)  # a commit shows the member is alive
        return ErrorCode.none

    def transition_to_dead(self) -> None:
        self._transition(GroupState.DEAD)
        self.join_deadline = self.sync_deadline = None

    # ------------------------------------------------------------------ timers

    def _schedule_heartbeat(self, member: MemberMetadata) -> None:
        member.heartbeat_deadline = self.clock() + member.session_timeout_ms

    def tick(self) -> None:
        """Fire every timer whose deadline has passed, earliest first."""
        now = self.clock()
        while True:
            due = self._earliest_due(now)
            if due is None:
                return
            kind, key = due
            if kind == "pending":
                self._remove_pending_member(key)
            elif kind == "heartbeat":
                self._on_heartbeat_expired(key)
            elif kind == "join":
                self._on_join_deadline()
            else:
                self._on_sync_deadline()

    def _earliest_due(self, now: int) -> tuple[str, str] | None:
        best: tuple[int, str, str] | None = None
        for mid, d in self.pending_members.items():
            if d <= now and (best is None or d < best[0]):
                best = (d, "pending", mid)
        for m in self.members.values():
            d = m.heartbeat_deadline
            if d is not None and d <= now and (best is None or d < best[0]):
                best = (d, "heartbeat", m.member_id)
        if self.join_deadline is not None and self.join_deadline <= now and (
            best is None or self.join_deadline < best[0]
        ):
            best = (self.join_deadline, "join", "")
        if self.sync_deadline is not None and self.sync_deadline <= now and (
            best is None or self.sync_deadline < best[0]
        ):
            best = (self.sync_deadline, "sync", "")
        return None if best is None else (best[1], best[2])

    def _on_heartbeat_expired(self, member_id: str) -> None:
        member = self.members[member_id]
        member.heartbeat_deadline = None
        if not member.is_new and (member.join_waiter is not None
                                  or member.sync_waiter is not None):
            # Waiting in a rebalance counts as alive; the rebalance timeout governs it.
            return
        self._remove_member_and_update_group(member_id)

    def _on_sync_deadline(self) -> None:
        self.sync_deadline = None
        if self.state in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE) and \
                self.pending_sync:
            for mid in list(self.pending_sync):
                if mid in self.members:
                    self._remove(mid)
            self.pending_sync.clear()
            self._prepare_rebalance()


def replace_leader(result: JoinResult, leader_id: str) -> JoinResult:
    return JoinResult(result.error, result.member_id, result.generation_id, result.protocol_type,
                      result.protocol_name, leader_id, result.members, result.skip_assignment)


__all__ = [
    "CONSUMER_PROTOCOL_TYPE",
    "Group",
    "GroupConfig",
    "GroupState",
    "GroupSummary",
    "JoinMember",
    "JoinRequest",
    "JoinResult",
    "MemberMetadata",
    "MemberSummary",
    "SyncResult",
    "parse_subscription_topics",
]
