"""kill -9 of the broker with transactions open and in the middle of EndTxn.

The hook NERVE_TEST_PAUSE_AFTER_PREPARE=<prefix> makes a client's EndTxn for a transactional.id
with that prefix hang once its PrepareCommit/PrepareAbort record is fsynced, before any marker
is written: the kill lands exactly between the two. After the restart a read_committed consumer
must see every committed transaction whole and nothing of an aborted or timed-out one, and the
LSO must move past the open transactions once their timeout aborts them.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from tests.helpers import NerveProcess
from tests.integration.test_transactions import create_topic, txn_producer

PARTS = 3
ARGS = ("--set", "transaction.abort.timed.out.transaction.cleanup.interval.ms=300")
HOOK = {"NERVE_TEST_PAUSE_AFTER_PREPARE": "pause-"}


@pytest.fixture
def broker(request, tmp_path):
    proc = NerveProcess(tmp_path / "nerve-data", extra_args=ARGS, env=HOOK)
    request.node._nerve_processes = [proc]
    proc.start()
    yield proc
    proc.stop()


def fill(p: Producer, topic: str, tag: str, n: int = 3 * PARTS) -> set[bytes]:
    values = {f"{tag}-{i}".encode() for i in range(n)}
    for i, v in enumerate(sorted(values)):
        p.produce(topic, value=v, partition=i % PARTS)
    assert p.flush(15) == 0
    return values


def wait_for_log(broker: NerveProcess, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in broker.log_text():
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{broker.log_tail()}"
        time.sleep(0.05)


_HELD_PRODUCER = """
import sys
from confluent_kafka import Producer
bootstrap, tid, topic, tag, parts, commit = sys.argv[1:]
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5})
p.init_transactions(30)
p.begin_transaction()
for i in range(3 * int(parts)):
    p.produce(topic, value=f"{tag}-{i}".encode(), partition=i % int(parts))
assert p.flush(15) == 0
(p.commit_transaction if commit == "1" else p.abort_transaction)(60)
"""


def held_end_txn(broker: NerveProcess, tid: str, topic: str, tag: str,
                 commit: bool) -> tuple[subprocess.Popen[bytes], set[bytes]]:
    """A producer in its own process whose EndTxn the hook holds; killed with the broker, so
    no client retry can finish the transaction: only the coordinator's recovery can."""
    proc = subprocess.Popen([sys.executable, "-c", _HELD_PRODUCER, broker.bootstrap, tid,
                             topic, tag, str(PARTS), "1" if commit else "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_log(broker, f"{'PrepareCommit' if commit else 'PrepareAbort'} of {tid!r}")
    return proc, {f"{tag}-{i}".encode() for i in range(3 * PARTS)}


def read_committed_until(bootstrap: str, topic: str, want: set[bytes], never: set[bytes],
                         timeout: float = 30) -> None:
    """Read the topic read_committed from the start until exactly `want` was seen; any value
    of `never` (aborted, or of a transaction seen only in part) fails at once."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chk-{time.time()}",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTS)])
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for m in c.consume(200, 0.3):
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(m.error())
                    continue
                assert m.value() not in never, f"read_committed saw aborted {m.value()!r}"
                seen.append(m.value())
            if set(seen) >= want:
                break
    finally:
        c.close()
    assert len(seen) == len(set(seen)), "a record was delivered twice"
    assert set(seen) == want, (f"missing {sorted(want - set(seen))[:5]}, "
                               f"unexpected {sorted(set(seen) - want)[:5]}")


def test_kill_during_prepare_commit_and_with_an_open_transaction(broker, unique_topic):
    topic = unique_topic()
    create_topic(broker.bootstrap, topic, PARTS)
    plain = Producer({"bootstrap.servers": broker.bootstrap})

    early = fill(plain, topic, "plain-early")
    open_ = txn_producer(broker.bootstrap, "open", **{"transaction.timeout.ms": 2000})
    open_.begin_transaction()
    aborted = fill(open_, topic, "open")
    held, in_prepare = held_end_txn(broker, "pause-commit", topic, "prepared", commit=True)
    late = fill(plain, topic, "plain-late")
    # Before the kill: the LSO holds at the open transactions, nothing of them is visible.
    read_committed_until(broker.bootstrap, topic, early, aborted | in_prepare | late, 5)

    held.kill()
    broker.kill()
    held.wait(10)
    broker.start()
    # PrepareCommit completed at start; the open one aborted by its 2 s timeout: LSO moves on.
    read_committed_until(broker.bootstrap, topic, early | in_prepare | late, aborted, timeout=30)
    assert "completing transaction 'pause-commit' (PrepareCommit) found at start" in (
        broker.log_text())
    assert "Traceback" not in broker.log_text()


@pytest.mark.slow
def test_kill_loop_with_transactions_in_every_phase(broker, unique_topic):
    """Many rounds (seed printed) of: transactions committed, aborted, open, held in
    PrepareCommit or PrepareAbort, then kill -9 and restart; after each, read_committed shows
    exactly the committed ones."""
    seed = int(time.time())
    print(f"kill loop seed {seed}")
    rng = random.Random(seed)
    topic = unique_topic()
    create_topic(broker.bootstrap, topic, PARTS)
    committed: set[bytes] = set()
    aborted: set[bytes] = set()
    rounds = 25
    for r in range(rounds):
        plain = Producer({"bootstrap.servers": broker.bootstrap})
        committed.update(fill(plain, topic, f"r{r}-plain"))

        def run_txn(kind: str, r: int = r) -> subprocess.Popen[bytes] | None:
            if kind.startswith("prepare"):
                commit = kind == "prepare-commit"
                proc, values = held_end_txn(broker, f"pause-{r}", topic, f"r{r}-{kind}", commit)
                (committed if commit else aborted).update(values)
                return proc
            p = txn_producer(broker.bootstrap, f"{kind}-{r % 3}",
                             **{"transaction.timeout.ms": 2000})
            p.begin_transaction()
            values = fill(p, topic, f"r{r}-{kind}")
            if kind == "commit":
                p.commit_transaction(15)
                committed.update(values)
            elif kind == "abort":
                p.abort_transaction(15)
                aborted.update(values)
            else:  # left open: aborted by its timeout after the restart
                aborted.update(values)
            return None

        kinds = ["commit", "abort", "open", rng.choice(["prepare-commit", "prepare-abort"])]
        rng.shuffle(kinds)
        held = [p for p in map(run_txn, kinds) if p is not None]
        for p in held:
            p.kill()
        broker.kill()
        for p in held:
            p.wait(10)
        broker.start()
        read_committed_until(broker.bootstrap, topic, committed, aborted, timeout=40)
    assert "Traceback" not in broker.log_text()
