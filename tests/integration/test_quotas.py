"""Client quotas (DescribeClientQuotas/AlterClientQuotas, byte-rate enforcement) against a real
`nerve serve`: Kafka's kafka-configs sets them, raw requests see throttle_time_ms and the
muted connection, a throttled producer's rate follows its quota, and quotas survive kill -9.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from nerve.protocol import records as rb
from tests.compat.wire import WireClient
from tests.helpers import NerveProcess


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NerveProcess]:
    proc = NerveProcess(tmp_path_factory.mktemp("quotas") / "data")
    proc.start()
    yield proc
    proc.stop()
    assert "Traceback" not in proc.log_text()


def describe(bootstrap: str, components: list[dict[str, Any]], strict: bool = False
             ) -> dict[tuple[tuple[str, str | None], ...], dict[str, float]]:
    with WireClient(bootstrap) as c:
        r = c.call(48, 1, components=components, strict=strict)
    assert int(r.error_code) == 0, r.error_message
    return {tuple((e.entity_type, e.entity_name) for e in entry.entity):
            {v.key: v.value for v in entry.values} for entry in r.entries}


def alter(bootstrap: str, entity: list[tuple[str, str | None]], **values: float) -> list[int]:
    with WireClient(bootstrap) as c:
        r = c.call(49, 1, validate_only=False, entries=[{
            "entity": [{"entity_type": t, "entity_name": n} for t, n in entity],
            "ops": [{"key": k, "value": v, "remove": False}
                    for k, v in values.items()]}])
    return [int(e.error_code) for e in r.entries]


def test_kafka_configs_sets_and_describes_quotas(broker: NerveProcess, kafka_run) -> None:
    b = ["--bootstrap-server", broker.bootstrap]
    r = kafka_run("configs", *b, "--alter", "--entity-type", "users", "--entity-name", "alice",
                  "--entity-type", "clients", "--entity-name", "app1", "--add-config",
                  "producer_byte_rate=1048576,consumer_byte_rate=2097152")
    assert r.returncode == 0, r.stdout + r.stderr
    assert alter(broker.bootstrap, [("client-id", None)], request_percentage=50) == [0]
    r = kafka_run("configs", *b, "--describe", "--entity-type", "users", "--entity-name",
                  "alice", "--entity-type", "clients", "--entity-name", "app1")
    assert r.returncode == 0, r.stderr
    assert "producer_byte_rate=1048576" in r.stdout and "consumer_byte_rate=2097152" in r.stdout
    found = describe(broker.bootstrap, [{"entity_type": "client-id", "match_type": 1,
                                         "match": None}], strict=True)
    assert found == {(("client-id", None),): {"request_percentage": 50.0}}


def test_invalid_quota_changes_are_refused(broker: NerveProcess) -> None:
    assert alter(broker.bootstrap, [("user", "x")], no_such_key=1) == [42]
    assert alter(broker.bootstrap, [("user", "x")], producer_byte_rate=1.5) == [42]
    assert alter(broker.bootstrap, [("ip", "1.2.3.4"), ("user", "x")],
                 connection_creation_rate=1) == [42]
    assert alter(broker.bootstrap, [("group", "x")], producer_byte_rate=1) == [42]
    assert describe(broker.bootstrap, [{"entity_type": "user", "match_type": 0,
                                        "match": "x"}]) == {}


def _produce(c: WireClient, topic: str, size: int) -> tuple[int, int, float]:
    batch = rb.build_batch([(None, b"x" * size)], timestamp_ms=int(time.time() * 1000))
    start = time.monotonic()
    r = c.call(0, 9, transactional_id=None, acks=1, timeout=10000, topic_data=[
        {"name": topic, "partition_data": [{"index": 0, "records": batch}]}])
    return (int(r.responses[0].partition_responses[0].error_code),
            round(r.throttle_time.total_seconds() * 1000), time.monotonic() - start)


def test_producer_over_its_quota_is_throttled_and_muted(broker: NerveProcess) -> None:
    client = f"slow-{uuid.uuid4().hex[:6]}"
    topic = f"q-{uuid.uuid4().hex[:6]}"
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
    assert alter(broker.bootstrap, [("client-id", client)], producer_byte_rate=100_000) == [0]
    with WireClient(broker.bootstrap) as c:
        c.client_id = client.encode()
        # 600 KB within Kafka's 10 s measuring window is 60 KB/s: under the quota.
        code, throttle, _ = _produce(c, topic, 600_000)
        assert (code, throttle) == (0, 0)
        # 1.2 MB: 120 KB/s, 20 % over: throttled (20 % of the window, ~2 s) and muted.
        code, throttle, _ = _produce(c, topic, 600_000)
        assert code == 0 and 1000 <= throttle <= 3000, throttle
        code, _, waited = _produce(c, topic, 100)
        assert code == 0 and waited >= throttle / 1000 * 0.8, (waited, throttle)


@pytest.mark.slow
def test_throttled_producer_rate_follows_its_quota(broker: NerveProcess) -> None:
    quota = 300_000
    client = f"rate-{uuid.uuid4().hex[:6]}"
    topic = f"rate-{uuid.uuid4().hex[:6]}"
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
    assert alter(broker.bootstrap, [("client-id", client)], producer_byte_rate=quota) == [0]
    acked = [0]
    p = Producer({"bootstrap.servers": broker.bootstrap, "client.id": client,
                  "linger.ms": 5, "compression.type": "none"})

    def done(err: Any, msg: Any) -> None:
        if err is None:
            acked[0] += len(msg.value())

    value = b"v" * 10_000
    start = time.monotonic()
    mark: tuple[float, int] | None = None
    while time.monotonic() - start < 25:
        try:
            p.produce(topic, value, on_delivery=done)
        except BufferError:
            p.poll(0.05)
        p.poll(0)
        if mark is None and time.monotonic() - start >= 12:
            mark = (time.monotonic(), acked[0])  # past the first 10 s window
    p.flush(30)
    assert mark is not None
    rate = (acked[0] - mark[1]) / (time.monotonic() - mark[0])
    assert 0.4 * quota <= rate <= 1.6 * quota, rate


def test_quotas_survive_kill_9(tmp_path: Path) -> None:
    proc = NerveProcess(tmp_path / "data")
    proc.start()
    try:
        assert alter(proc.bootstrap, [("user", "bob")], consumer_byte_rate=4096) == [0]
        proc.kill()
        proc.start()
        assert describe(proc.bootstrap, [{"entity_type": "user", "match_type": 2,
                                          "match": None}]) == {
            (("user", "bob"),): {"consumer_byte_rate": 4096.0}}
    finally:
        proc.stop()
