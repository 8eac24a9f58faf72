"""Fetch sessions (KIP-227, incremental fetch), as Kafka's FetchSession and FetchSessionCache.

A consumer fetching many partitions sends the whole list once (a full fetch, epoch 0); the
broker answers with a session id and remembers the partitions, their fetch offsets and the
watermarks it last reported. Every later (incremental) request names only the partitions
whose fetch position changed, and the forgotten ones; the answer carries only partitions with
records, changed watermarks or errors. Kafka's rules, which clients rely on:

- epoch 0 (INITIAL) or -1 (FINAL) is a full fetch; a session id given with it is closed. 0
  creates a new session (when the cache has a slot), -1 does not (answered with session 0).
- epoch > 0: the session must exist (else FETCH_SESSION_ID_NOT_FOUND) and expect exactly this
  epoch (else INVALID_FETCH_SESSION_EPOCH); each request moves its epoch on by one (after
  2^31-1 comes 1). An incremental request that leaves the session empty closes it.
- A session made with topic names (Fetch < 13) is not continued by topic ids or the other way
  round: FETCH_SESSION_TOPIC_ID_ERROR.
- `max.incremental.fetch.session.cache.slots` sessions at most. When full, a new session
  takes the slot of the least recently used one idle for more than EVICTION_MS (Kafka's
  two minutes), else none is created: the client then keeps sending full fetches.

Pure state, no I/O: the Fetch handler (k01_fetch.py) reads the logs and calls `respond()`.
"""

from __future__ import annotations

import collections
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

INITIAL_EPOCH = 0
FINAL_EPOCH = -1
INVALID_SESSION_ID = 0
# Kafka's FetchSessionCache evicts an idle session for a new one after this long.
EVICTION_MS = 120_000

TopicKey = str | uuid.UUID  # a topic name (Fetch < 13) or its id (13+)
PartitionKey = tuple[TopicKey, int]


def next_epoch(epoch: int) -> int:
    """Kafka's FetchMetadata.nextEpoch."""
    if epoch < 0:
        return epoch
    return 1 if epoch == 2**31 - 1 else epoch + 1


@dataclass(slots=True)
class CachedPartition:
    """What the session knows of one partition: the client's fetch position (the attribute
    names of a Fetch request's partition, so reads treat both alike) and what it was told."""

    partition: int
    fetch_offset: int
    partition_max_bytes: int
    high_watermark: int = -1
    log_start_offset: int = -1

    def must_respond(self, error_code: int, high_watermark: int, log_start_offset: int,
                     records_size: int) -> bool:
        """Kafka's CachedPartition.maybeUpdateResponseData: whether an incremental answer
        includes the partition; remembers what it then reports."""
        respond = records_size > 0
        if self.high_watermark != high_watermark:
            respond = True
            self.high_watermark = high_watermark
        if self.log_start_offset != log_start_offset:
            respond = True
            self.log_start_offset = log_start_offset
        if error_code:
            # Forget the watermark: when the error goes away, the partition is sent again.
            self.high_watermark = -1
            respond = True
        return respond


class FetchSession:
    def __init__(self, session_id: int, by_id: bool, now_ms: int) -> None:
        self.id = session_id
        self.epoch = next_epoch(INITIAL_EPOCH)
        self.by_id = by_id  # topics named by id (Fetch 13+) rather than by name
        self.last_used_ms = now_ms
        # Insertion order is fetch priority: a partition that returned records moves to the
        # end, so the others get their turn under max_bytes next time (as Kafka does).
        self.partitions: collections.OrderedDict[PartitionKey, CachedPartition] = (
            collections.OrderedDict())
        self._by_topic: list[tuple[TopicKey, list[CachedPartition]]] | None = None

    def update(self, wanted: Iterable[tuple[TopicKey, int, int, int]],
               forgotten: Iterable[PartitionKey]) -> None:
        """Add or update (topic, partition, fetch_offset, partition_max_bytes), drop the
        forgotten partitions."""
        for topic, partition, offset, max_bytes in wanted:
            cached = self.partitions.get((topic, partition))
            if cached is None:
                self.partitions[(topic, partition)] = CachedPartition(partition, offset,
                                                                      max_bytes)
            else:
                cached.fetch_offset = offset
                cached.partition_max_bytes = max_bytes
        for key in forgotten:
            self.partitions.pop(key, None)
        self._by_topic = None

    def by_topic(self) -> list[tuple[TopicKey, list[CachedPartition]]]:
        """The session's partitions in fetch order, consecutive ones of a topic together
        (kept until the order or the partitions change: idle fetches reuse it)."""
        if self._by_topic is not None:
            return self._by_topic
        out: list[tuple[TopicKey, list[CachedPartition]]] = []
        for (topic, _), cached in self.partitions.items():
            if out and out[-1][0] == topic:
                out[-1][1].append(cached)
            else:
                out.append((topic, [cached]))
        self._by_topic = out
        return out

    def served(self, key: PartitionKey) -> None:
        """The partition returned records: it goes last next time."""
        self.partitions.move_to_end(key)
        self._by_topic = None


class FetchSessionCache:
    def __init__(self, slots: int, clock_ms: Callable[[], int],
                 rng: random.Random | None = None) -> None:
        self.slots = slots
        self.clock_ms = clock_ms
        self._rng = rng or random.Random()
        # Least recently used first.
        self._sessions: collections.OrderedDict[int, FetchSession] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: int) -> FetchSession | None:
        return self._sessions.get(session_id)

    def remove(self, session_id: int) -> FetchSession | None:
        return self._sessions.pop(session_id, None)

    def touch(self, session: FetchSession) -> None:
        session.last_used_ms = self.clock_ms()
        self._sessions.move_to_end(session.id)

    def create(self, by_id: bool) -> FetchSession | None:
        """A new session, or None when every slot is held by a session used in the last
        EVICTION_MS (the client then goes on with full fetches)."""
        if self.slots <= 0:
            return None
        now = self.clock_ms()
        if len(self._sessions) >= self.slots:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.last_used_ms <= EVICTION_MS:
                return None
            del self._sessions[oldest.id]
        while True:
            session_id = self._rng.randint(1, 2**31 - 1)
            if session_id not in self._sessions:
                break
        session = FetchSession(session_id, by_id, now)
        self._sessions[session_id] = session
        return session
