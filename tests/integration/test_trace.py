"""NERVE_TRACE_SLOW_MS: the stages of slow requests in the broker's log (nerve/trace.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.helpers import NerveProcess


def test_slow_acks_all_produce_logs_its_stages(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # A threshold no request beats: every answer is "slow", so every stage shows.
    monkeypatch.setenv("NERVE_TRACE_SLOW_MS", "0.001")
    broker = NerveProcess(tmp_path / "data").start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("traced", 1, 1)])["traced"].result(30)
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        for i in range(20):
            p.produce("traced", b"x" * 100, key=str(i).encode())
        assert p.flush(30) == 0
    finally:
        broker.stop()
    text = broker.log_text()
    assert "tracing requests slower than 0.0 ms" in text
    lines = [ln for ln in text.splitlines() if "slow Produce on connection" in ln]
    assert lines, broker.log_tail()
    stages = re.findall(r"([a-z-]+) ([\d.]+)", lines[-1].split("ms: ", 1)[1])
    names = [s for s, _ in stages]
    # Frame read -> decoded -> appended -> group commit -> fsync in its thread -> answered.
    assert names == ["read", "decoded", "appended", "handled", "fsync-queued", "round-start",
                     "fsync-start", "fsync-end", "round-end", "flushed", "ready",
                     "answered"], lines[-1]
    times = [float(t) for _, t in stages]
    assert times == sorted(times), lines[-1]
    assert "Traceback" not in text
