"""FetchSessionCache and FetchSession (nerve/coordinator/fetch_sessions.py): epochs, slots,
eviction of idle sessions, fetch order. The wire behaviour is in tests/compat and
tests/integration/test_fetch_sessions.py."""

from __future__ import annotations

from nerve.coordinator.fetch_sessions import EVICTION_MS, FetchSessionCache, next_epoch


def test_next_epoch_wraps_to_one_and_keeps_final() -> None:
    assert (next_epoch(0), next_epoch(41), next_epoch(2**31 - 1), next_epoch(-1)) == (
        1, 42, 1, -1)


def test_full_cache_evicts_only_sessions_idle_past_the_eviction_time() -> None:
    now = [0]
    cache = FetchSessionCache(2, lambda: now[0])
    a, b = cache.create(False), cache.create(False)
    assert a is not None and b is not None and a.id != b.id and a.epoch == 1
    now[0] = EVICTION_MS
    cache.touch(b)
    assert cache.create(False) is None  # a idle exactly EVICTION_MS: not yet
    now[0] = EVICTION_MS + 1
    c = cache.create(False)
    assert c is not None and cache.get(a.id) is None and cache.get(b.id) is b
    assert FetchSessionCache(0, lambda: 0).create(False) is None


def test_partitions_that_returned_records_go_last() -> None:
    s = FetchSessionCache(1, lambda: 0).create(False)
    assert s is not None
    s.update([("t", 0, 0, 100), ("t", 1, 0, 100), ("u", 0, 5, 100)], [])
    s.served(("t", 0))
    assert [(t, [p.partition for p in ps]) for t, ps in s.by_topic()] == [
        ("t", [1]), ("u", [0]), ("t", [0])]
    s.update([("u", 0, 7, 50)], [("t", 1)])
    assert [(k, p.fetch_offset, p.partition_max_bytes) for k, p in s.partitions.items()] == [
        (("u", 0), 7, 50), (("t", 0), 0, 100)]
