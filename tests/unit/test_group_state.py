"""The classic group state machine, driven with a fake clock (no sleeps, no I/O)."""

from __future__ import annotations

import itertools
import struct

import pytest

from nerve.coordinator.group import (
    NEW_MEMBER_JOIN_TIMEOUT_MS,
    Group,
    GroupConfig,
    GroupState,
    JoinRequest,
    JoinResult,
    SyncResult,
    parse_subscription_topics,
)
from nerve.protocol.errors import ErrorCode

SESSION = 10_000
REBALANCE = 30_000
RANGE = (("range", b"meta-range"),)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


def make_group(delay: int = 0, **kw: int) -> tuple[Group, Clock]:
    clock = Clock()
    counter = itertools.count(1)
    cfg = GroupConfig(min_session_timeout_ms=1000, max_session_timeout_ms=60_000,
                      initial_rebalance_delay_ms=delay, **kw)
    group = Group("g", cfg, clock, new_member_id=lambda prefix: f"{prefix}-{next(counter)}")
    return group, clock


def advance(group: Group, clock: Clock, ms: int) -> None:
    clock.now += ms
    group.tick()


def req(member_id: str = "", *, client: str = "c", instance: str | None = None,
        protocols: tuple[tuple[str, bytes], ...] = RANGE, session: int = SESSION,
        rebalance: int = REBALANCE, protocol_type: str = "consumer", v4: bool = True,
        v9: bool = False) -> JoinRequest:
    return JoinRequest(member_id, instance, client, "/127.0.0.1", session, rebalance,
                       protocol_type, protocols, require_known_member_id=v4 and instance is None,
                       supports_skip_assignment=v9)


def drain(group: Group) -> dict[object, JoinResult | SyncResult]:
    out = dict(group.outbox)
    group.outbox.clear()
    return out


class Waiter:
    """A distinct token per request, named for readable failures."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def join(group: Group, r: JoinRequest, name: str = "w") -> Waiter:
    w = Waiter(name)
    group.join(w, r)
    return w


def new_member(group: Group, client: str, **kw: object) -> tuple[str, Waiter]:
    """The v4+ dance: MEMBER_ID_REQUIRED, then the real join (left waiting)."""
    w = join(group, req(client=client, **kw))  # type: ignore[arg-type]
    first = drain(group)[w]
    assert isinstance(first, JoinResult)
    assert first.error is ErrorCode.member_id_required
    w2 = join(group, req(first.member_id, client=client, **kw))  # type: ignore[arg-type]
    return first.member_id, w2


def stable_group(n: int, delay: int = 0, **kw: object) -> tuple[Group, Clock, list[str]]:
    """A Stable group of n dynamic members; member i is assigned b"assign-i"."""
    group, clock = make_group(delay)
    ids, waiters = [], []
    for i in range(n):
        mid, w = new_member(group, f"c{i}", **kw)
        ids.append(mid)
        waiters.append(w)
    advance(group, clock, delay)
    results = drain(group)
    assert all(results[w].error is ErrorCode.none for w in waiters)
    leader = results[waiters[0]]
    assert isinstance(leader, JoinResult)
    sync(group, leader.leader_id, leader.generation_id,
         {m: f"assign-{i}".encode() for i, m in enumerate(ids)})
    for m in ids:
        if m != leader.leader_id:
            sync(group, m, leader.generation_id)
    drain(group)
    assert group.state is GroupState.STABLE
    return group, clock, ids


def sync(group: Group, member_id: str, generation: int,
         assignments: dict[str, bytes] | None = None, instance: str | None = None) -> Waiter:
    w = Waiter(f"sync-{member_id}")
    group.sync(w, member_id=member_id, group_instance_id=instance, generation_id=generation,
               assignments=assignments)
    return w


def hb(group: Group, member_id: str, generation: int | None = None,
       instance: str | None = None) -> ErrorCode:
    gen = group.generation_id if generation is None else generation
    return group.heartbeat(member_id=member_id, group_instance_id=instance, generation_id=gen)


# ---------------------------------------------------------------- join / sync


def test_member_id_required_then_initial_delay_then_sync() -> None:
    group, clock = make_group(delay=3000)
    mid, w = new_member(group, "client-a")
    assert mid.startswith("client-a-")
    assert group.state is GroupState.PREPARING_REBALANCE
    advance(group, clock, 2999)
    assert drain(group) == {}
    advance(group, clock, 1)
    res = drain(group)[w]
    assert isinstance(res, JoinResult)
    assert (res.error, res.generation_id, res.leader_id, res.member_id) == (
        ErrorCode.none, 1, mid, mid)
    assert res.protocol_name == "range" and res.protocol_type == "consumer"
    assert [(m.member_id, m.metadata) for m in res.members] == [(mid, b"meta-range")]
    assert group.state is GroupState.COMPLETING_REBALANCE
    s = sync(group, mid, 1, {mid: b"A"})
    out = drain(group)[s]
    assert out == SyncResult(ErrorCode.none, "consumer", "range", b"A")
    assert group.state is GroupState.STABLE


def test_initial_delay_is_extended_while_new_members_arrive() -> None:
    group, clock = make_group(delay=3000)
    a, wa = new_member(group, "a")
    advance(group, clock, 2000)
    b, wb = new_member(group, "b")
    advance(group, clock, 1000)  # first delay over, but a member arrived during it
    assert drain(group) == {}
    advance(group, clock, 2999)
    assert drain(group) == {}
    advance(group, clock, 1)
    res = drain(group)
    ra, rb = res[wa], res[wb]
    assert isinstance(ra, JoinResult) and isinstance(rb, JoinResult)
    assert ra.generation_id == rb.generation_id == 1
    assert ra.leader_id == rb.leader_id == a
    assert {m.member_id for m in ra.members} == {a, b}
    assert rb.members == ()  # only the leader gets the members


def test_follower_sync_waits_for_leader_and_missing_members_get_empty() -> None:
    group, clock = make_group()
    a, _ = new_member(group, "a")
    b, _ = new_member(group, "b")
    advance(group, clock, 0)
    drain(group)
    sb = sync(group, b, 1)
    assert drain(group) == {}
    sa = sync(group, a, 1, {a: b"A"})  # the leader forgot b
    out = drain(group)
    assert out[sa].assignment == b"A"  # type: ignore[union-attr]
    assert out[sb] == SyncResult(ErrorCode.none, "consumer", "range", b"")


def test_v3_join_has_no_member_id_required() -> None:
    group, clock = make_group()
    w = join(group, req(client="old", v4=False))
    advance(group, clock, 0)
    res = drain(group)[w]
    assert isinstance(res, JoinResult)
    assert res.error is ErrorCode.none and res.member_id.startswith("old-")


def test_invalid_session_timeout() -> None:
    group, _ = make_group()
    for session in (999, 60_001):
        w = join(group, req(session=session))
        assert drain(group)[w].error is ErrorCode.invalid_session_timeout
    assert group.state is GroupState.EMPTY


def test_inconsistent_protocols_are_rejected() -> None:
    group, clock, _ids = stable_group(1)
    w = join(group, req(protocols=(("roundrobin", b""),)))
    assert drain(group)[w].error is ErrorCode.inconsistent_group_protocol
    w = join(group, req(protocol_type="connect"))
    assert drain(group)[w].error is ErrorCode.inconsistent_group_protocol
    w = join(Group("e", GroupConfig(), clock), req(protocols=()))
    # an empty group needs a protocol type and at least one protocol


def test_protocol_selection_by_votes() -> None:
    group, clock = make_group()
    both_rr = (("roundrobin", b"r"), ("range", b"g"))
    both_range = (("range", b"g"), ("roundrobin", b"r"))
    _a, wa = new_member(group, "a", protocols=both_range)
    new_member(group, "b", protocols=both_rr)
    new_member(group, "c", protocols=both_rr)
    advance(group, clock, 0)
    res = drain(group)[wa]
    assert isinstance(res, JoinResult)
    assert res.protocol_name == "roundrobin"
    assert {m.metadata for m in res.members} == {b"r"}


def test_pending_member_blocks_round_until_it_expires() -> None:
    group, clock, (a, b) = stable_group(2)
    # a third member gets its id but never comes back
    w = join(group, req(client="ghost"))
    assert drain(group)[w].error is ErrorCode.member_id_required
    wa = join(group, req(a, client="c0"))  # leader rejoins: rebalance
    wb = join(group, req(b, client="c1"))
    assert drain(group) == {}  # waits for the pending member
    advance(group, clock, SESSION)
    res = drain(group)
    assert res[wa].error is ErrorCode.none and res[wb].error is ErrorCode.none  # type: ignore
    assert group.generation_id == 2 and len(group.members) == 2


def test_group_max_size() -> None:
    group, _ = make_group(max_size=1)
    new_member(group, "a")
    w = join(group, req(client="b"))
    assert drain(group)[w].error is ErrorCode.group_max_size_reached


# ---------------------------------------------------------------- rejoin rules


def test_follower_rejoin_with_same_metadata_in_stable_needs_no_rebalance() -> None:
    group, _, (a, b) = stable_group(2)
    w = join(group, req(b, client="c1"))
    res = drain(group)[w]
    assert isinstance(res, JoinResult)
    assert (res.error, res.generation_id, res.leader_id, res.members) == (
        ErrorCode.none, 1, a, ())
    assert group.state is GroupState.STABLE


def test_leader_rejoin_in_stable_triggers_rebalance() -> None:
    group, _, (a, b) = stable_group(2)
    wa = join(group, req(a, client="c0"))
    assert group.state is GroupState.PREPARING_REBALANCE
    assert hb(group, b) is ErrorCode.rebalance_in_progress
    wb = join(group, req(b, client="c1"))
    res = drain(group)  # all members joined: completes at once
    assert res[wa].generation_id == res[wb].generation_id == 2  # type: ignore[union-attr]


def test_metadata_change_triggers_rebalance_and_interrupts_sync() -> None:
    group, clock = make_group()
    _a, _ = new_member(group, "a")
    b, _ = new_member(group, "b")
    advance(group, clock, 0)
    drain(group)
    sb = sync(group, b, 1)  # b waits for the leader's assignment
    w = join(group, req(b, client="b", protocols=(("range", b"new-topics"),)))
    out = drain(group)
    assert out[sb] == SyncResult(ErrorCode.rebalance_in_progress)
    assert w not in out and group.state is GroupState.PREPARING_REBALANCE


def test_rejoin_in_completing_rebalance_repeats_the_answer() -> None:
    group, clock = make_group()
    a, _ = new_member(group, "a")
    advance(group, clock, 0)
    drain(group)
    w = join(group, req(a, client="a"))
    res = drain(group)[w]
    assert isinstance(res, JoinResult)
    assert res.generation_id == 1 and res.leader_id == a and len(res.members) == 1
    assert group.state is GroupState.COMPLETING_REBALANCE


# ---------------------------------------------------------------- timers


def test_session_expiry_removes_member_and_rebalances() -> None:
    group, clock, (a, b) = stable_group(2)
    advance(group, clock, SESSION // 2)
    assert hb(group, b) is ErrorCode.none  # only b heartbeats
    advance(group, clock, SESSION // 2 - 1)
    assert a in group.members
    advance(group, clock, 1)
    assert a not in group.members
    assert group.state is GroupState.PREPARING_REBALANCE
    assert hb(group, b) is ErrorCode.rebalance_in_progress
    assert hb(group, a) is ErrorCode.unknown_member_id
    w = join(group, req(b, client="c1"))
    res = drain(group)[w]
    assert isinstance(res, JoinResult)
    assert res.generation_id == 2 and res.leader_id == b


def test_rebalance_timeout_removes_members_that_do_not_rejoin() -> None:
    group, clock, (a, b) = stable_group(2)
    wa = join(group, req(a, client="c0"))
    for _ in range(5):  # b is alive (heartbeats) but stuck: never rejoins
        advance(group, clock, REBALANCE // 6)
        assert hb(group, b) is ErrorCode.rebalance_in_progress
    assert drain(group) == {}
    advance(group, clock, REBALANCE // 6)
    res = drain(group)[wa]
    assert isinstance(res, JoinResult)
    assert [m.member_id for m in res.members] == [a]
    assert b not in group.members
    assert hb(group, b) is ErrorCode.unknown_member_id


def test_members_waiting_in_a_rebalance_are_not_expired_by_session() -> None:
    group, clock, (a, _b) = stable_group(2)
    wa = join(group, req(a, client="c0"))
    advance(group, clock, SESSION * 2)  # a waits in join; b is silent and expires
    res = drain(group)[wa]
    assert isinstance(res, JoinResult) and res.error is ErrorCode.none
    assert list(group.members) == [a]


def test_members_that_never_sync_are_removed_after_rebalance_timeout() -> None:
    group, clock = make_group()
    a, _ = new_member(group, "a")
    b, _ = new_member(group, "b")
    advance(group, clock, 0)
    drain(group)
    sync(group, a, 1, {a: b"A", b: b"B"})
    drain(group)
    assert group.state is GroupState.STABLE
    for _ in range(5):  # b heartbeats but never syncs
        advance(group, clock, REBALANCE // 5)
        hb(group, a)
        hb(group, b)
    assert b not in group.members
    assert group.state is GroupState.PREPARING_REBALANCE


def test_new_member_that_never_completes_a_join_expires() -> None:
    group, clock, (a,) = stable_group(1)
    # a v3 member with a 10-minute rebalance timeout joins, then its connection dies
    w = join(group, req(client="slow", v4=False, rebalance=600_000))
    assert group.state is GroupState.PREPARING_REBALANCE
    for _ in range(NEW_MEMBER_JOIN_TIMEOUT_MS // (SESSION // 2) - 1):
        advance(group, clock, SESSION // 2)
        hb(group, a)  # a is alive but never rejoins either
    assert drain(group) == {}
    advance(group, clock, SESSION // 2)
    assert drain(group)[w].error is ErrorCode.unknown_member_id
    assert list(group.members) == [a]


# ---------------------------------------------------------------- leave


def test_leave_triggers_rebalance_and_reports_unknown_members() -> None:
    group, _, (a, b) = stable_group(2)
    assert group.leave([(b, None), ("nobody", None)]) == [
        ErrorCode.none, ErrorCode.unknown_member_id]
    assert group.state is GroupState.PREPARING_REBALANCE
    assert list(group.members) == [a]


def test_last_member_leaving_empties_the_group() -> None:
    group, _, (a,) = stable_group(1)
    assert group.leave([(a, None)]) == [ErrorCode.none]
    assert group.state is GroupState.EMPTY
    assert group.generation_id == 2 and group.protocol_name is None


# ---------------------------------------------------------------- static membership


def static_group(v9: bool = False) -> tuple[Group, Clock, dict[str, str]]:
    group, clock = make_group()
    w1 = join(group, req(client="c", instance="i1", v9=v9))
    w2 = join(group, req(client="c", instance="i2", v9=v9))
    advance(group, clock, 0)
    res = drain(group)
    m1 = res[w1].member_id  # type: ignore[union-attr]
    m2 = res[w2].member_id  # type: ignore[union-attr]
    assert m1.startswith("i1-") and m2.startswith("i2-")
    sync(group, m1, 1, {m1: b"P1", m2: b"P2"}, instance="i1")
    sync(group, m2, 1, instance="i2")
    drain(group)
    assert group.state is GroupState.STABLE
    return group, clock, {"i1": m1, "i2": m2}


def test_static_member_restart_keeps_assignment_without_rebalance() -> None:
    group, _, ids = static_group()
    w = join(group, req(instance="i2"))  # restarted: empty member id, same instance
    res = drain(group)[w]
    assert isinstance(res, JoinResult)
    new_id = res.member_id
    assert new_id != ids["i2"] and res.error is ErrorCode.none
    assert res.generation_id == 1 and res.leader_id == ids["i1"]
    assert group.state is GroupState.STABLE
    s = sync(group, new_id, 1, instance="i2")
    assert drain(group)[s].assignment == b"P2"  # type: ignore[union-attr]
    # the old incarnation is fenced everywhere
    old = ids["i2"]
    assert hb(group, old, instance="i2") is ErrorCode.fenced_instance_id
    assert group.validate_offset_commit(member_id=old, group_instance_id="i2",
                                        generation_id=1) is ErrorCode.fenced_instance_id
    assert group.leave([(old, "i2")]) == [ErrorCode.fenced_instance_id]
    assert hb(group, new_id, instance="i2") is ErrorCode.none


def test_static_leader_restart_v9_skips_assignment() -> None:
    group, _, _ids = static_group(v9=True)
    w = join(group, req(instance="i1", v9=True))
    res = drain(group)[w]
    assert isinstance(res, JoinResult)
    assert res.leader_id == res.member_id and res.skip_assignment
    assert len(res.members) == 2
    assert group.state is GroupState.STABLE


def test_static_leader_restart_before_v9_is_not_told_it_leads() -> None:
    group, _, ids = static_group()
    w = join(group, req(instance="i1"))
    res = drain(group)[w]
    assert isinstance(res, JoinResult)
    assert res.leader_id == ids["i1"] != res.member_id and res.members == ()
    assert group.leader_id == res.member_id and group.state is GroupState.STABLE


def test_static_member_protocol_change_rebalances_only_if_selection_changes() -> None:
    group, _, _ids = static_group()
    w = join(group, req(instance="i2", protocols=(("roundrobin", b""), ("range", b"x"))))
    assert drain(group)[w].error is ErrorCode.none  # i1 only speaks range: selection stays
    assert group.state is GroupState.STABLE
    assert group.members[group.static_members["i2"]].protocols[1] == ("range", b"x")

    group, clock = make_group()
    join(group, req(client="c", instance="solo"))
    advance(group, clock, 0)
    drain(group)
    sync(group, group.static_members["solo"], 1, {}, instance="solo")
    drain(group)
    w = join(group, req(instance="solo", protocols=(("roundrobin", b""), ("range", b""))))
    res = drain(group)[w]  # roundrobin now wins the vote: a real (one-member) rebalance
    assert isinstance(res, JoinResult)
    assert (res.generation_id, res.protocol_name) == (2, "roundrobin")
    assert group.state is GroupState.COMPLETING_REBALANCE


def test_static_member_rejoin_with_unknown_member_id() -> None:
    group, _, _ids = static_group()
    w = join(group, req("i2-bogus", instance="i2"))
    assert drain(group)[w].error is ErrorCode.fenced_instance_id
    w = join(group, req("x-1", instance="i9"))
    assert drain(group)[w].error is ErrorCode.unknown_member_id


def test_static_member_leave_by_instance_id() -> None:
    group, _, ids = static_group()
    assert group.leave([("", "i2"), ("", "nope")]) == [
        ErrorCode.none, ErrorCode.unknown_member_id]
    assert list(group.members) == [ids["i1"]]


def test_static_member_not_rejoining_stays_until_session_timeout() -> None:
    group, clock, ids = static_group()
    wa = join(group, req(ids["i1"], instance="i1"))  # leader rejoins: round starts
    for _ in range(6):  # i2 heartbeats but never rejoins; static, so it stays
        advance(group, clock, REBALANCE // 6)
        hb(group, ids["i2"], instance="i2")
    res = drain(group)[wa]
    assert isinstance(res, JoinResult)
    assert {m.member_id for m in res.members} == set(ids.values())


# ---------------------------------------------------------------- generations, commits


def test_generation_and_member_checks() -> None:
    group, _, (a, b) = stable_group(2)
    assert hb(group, a, generation=0) is ErrorCode.illegal_generation
    assert hb(group, "stranger") is ErrorCode.unknown_member_id
    s = sync(group, a, 7)
    assert drain(group)[s] == SyncResult(ErrorCode.illegal_generation)
    group.join(Waiter("x"), req(a, client="c0"))  # rebalance
    s = sync(group, b, 1)
    assert drain(group)[s] == SyncResult(ErrorCode.rebalance_in_progress)


def test_offset_commit_rules() -> None:
    empty, _ = make_group()
    assert empty.validate_offset_commit(member_id="", group_instance_id=None,
                                        generation_id=-1) is ErrorCode.none
    assert empty.validate_offset_commit(member_id="m", group_instance_id=None,
                                        generation_id=3) is ErrorCode.unknown_member_id
    group, clock = make_group()
    a, _ = new_member(group, "a")
    new_member(group, "b")
    advance(group, clock, 0)
    drain(group)
    assert group.validate_offset_commit(member_id=a, group_instance_id=None,
                                        generation_id=1) is ErrorCode.rebalance_in_progress
    sync(group, a, 1, {a: b""})
    assert group.validate_offset_commit(member_id=a, group_instance_id=None,
                                        generation_id=1) is ErrorCode.none
    assert group.validate_offset_commit(member_id=a, group_instance_id=None,
                                        generation_id=0) is ErrorCode.illegal_generation
    # a "simple" commit is refused while the group has members
    assert group.validate_offset_commit(member_id="", group_instance_id=None,
                                        generation_id=-1) is ErrorCode.unknown_member_id
    group.join(Waiter("x"), req(a, client="a"))
    assert group.state is GroupState.PREPARING_REBALANCE
    assert group.validate_offset_commit(member_id=a, group_instance_id=None,
                                        generation_id=1) is ErrorCode.none


def test_describe_summary_shows_metadata_only_when_stable() -> None:
    group, _, (a, _b) = stable_group(2)
    s = group.summary()
    assert (s.state, s.protocol_type, s.protocol_name) == ("Stable", "consumer", "range")
    assert [m.assignment for m in s.members] == [b"assign-0", b"assign-1"]
    group.join(Waiter("x"), req(a, client="c0"))
    s = group.summary()
    assert s.state == "PreparingRebalance" and s.protocol_name == ""
    assert all(m.metadata == b"" and m.assignment == b"" for m in s.members)


def test_subscription_topics_parsing_and_tracking() -> None:
    def subscription(*topics: str) -> bytes:
        body = struct.pack(">hi", 1, len(topics))
        for t in topics:
            body += struct.pack(">h", len(t)) + t.encode()
        return body + struct.pack(">i", -1) + struct.pack(">i", 0)

    assert parse_subscription_topics(subscription("a", "bb")) == ["a", "bb"]
    with pytest.raises((ValueError, struct.error)):
        parse_subscription_topics(b"\x00")
    group, _, _ = stable_group(1, protocols=(("range", subscription("orders")),))
    assert group.is_subscribed_to("orders") and not group.is_subscribed_to("other")
