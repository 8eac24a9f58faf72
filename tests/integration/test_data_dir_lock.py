"""One owner per data dir: a second broker on a live data dir is refused and touches nothing.

Before the lock, a second `nerve serve` started on the same directory and wrote the
clean-shutdown marker when it exited, so the owner's restart after `kill -9` skipped tail
recovery ("clean shutdown").
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from nerve.broker import Broker
from nerve.storage import DataDirLockedError
from nerve.storage.files import CLEAN_SHUTDOWN_FILE
from tests.helpers import REPO_ROOT, free_port
from tests.integration.test_produce_consume import create_topic


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2})
    for v in values:
        p.produce(topic, value=v)
    assert p.flush(30) == 0


def _consume_all(bootstrap: str, topic: str) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lock-check",
                  "enable.auto.commit": False})
    tp = TopicPartition(topic, 0, 0)
    high = c.get_watermark_offsets(tp, timeout=10)[1]
    c.assign([tp])
    out: list[bytes] = []
    while len(out) < high:
        msg = c.poll(10)
        assert msg is not None, f"read {len(out)} of {high}"
        assert not msg.error(), msg.error()
        out.append(msg.value())
    c.close()
    return out


def test_second_broker_is_refused_and_the_owner_recovers_its_tail(nerve_factory, unique_topic):
    owner = nerve_factory()
    topic = unique_topic()
    create_topic(owner.bootstrap, topic)
    first = [f"a{i}".encode() for i in range(200)]
    _produce(owner.bootstrap, topic, first)

    second = subprocess.Popen(
        [sys.executable, "-m", "nerve", "serve", "--no-console", "--port", str(free_port()),
         "--data-dir", str(owner.data_dir)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = second.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        # Old behaviour: it serves. A SIGTERM then makes it write the clean marker.
        second.terminate()
        out, err = second.communicate(timeout=20)
    pid = owner.proc.pid  # type: ignore[union-attr]
    assert second.returncode == 2, (second.returncode, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"pid {pid}" in lines[0], err
    assert "Traceback" not in err and "serving Kafka protocol" not in out
    assert not (owner.data_dir / CLEAN_SHUTDOWN_FILE).exists()
    assert (owner.data_dir / ".lock").read_text().strip() == str(pid)

    # The embeddable Broker takes the same lock.
    with pytest.raises(DataDirLockedError, match=f"pid {pid}"), \
            Broker(owner.data_dir, port=0):
        pass
    assert not (owner.data_dir / CLEAN_SHUTDOWN_FILE).exists()

    # The owner is untouched: it still takes writes; then it crashes.
    more = [f"b{i}".encode() for i in range(200)]
    _produce(owner.bootstrap, topic, more)
    owner.kill()
    log_len = len(owner.log_text())
    owner.start()
    restart_log = owner.log_text()[log_len:]
    assert "(unclean shutdown)" in restart_log, restart_log
    assert _consume_all(owner.bootstrap, topic) == first + more


def test_lock_is_released_by_a_clean_stop(tmp_path):
    data = tmp_path / "d"
    with Broker(data, port=0):
        pass
    with Broker(data, port=0) as broker:  # the first one released it
        assert broker.core is not None and broker.core.logs.clean_load is True
